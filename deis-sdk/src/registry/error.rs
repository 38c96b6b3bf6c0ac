//! What can go wrong reading and pushing images, said so that the user knows what to do.

use std::path::{Path, PathBuf};

/// Why an image could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// A document or the archive is larger than its limit.
    #[error("the image is too large: {0}")]
    TooLarge(String),
    /// A document is not what it should be.
    #[error("the image is malformed: {0}")]
    Malformed(String),
    /// The archive (or a blob) ends early or is corrupt.
    #[error("{0}")]
    Truncated(String),
    /// The manifest names a blob that is not there.
    #[error("the image's manifest refers to {0}, which is not in the image; save or copy the image again")]
    MissingBlob(String),
    /// A blob's bytes do not match its digest.
    #[error("the image is corrupt: {blob} does not match its digest (its bytes hash to {found})")]
    DigestMismatch {
        /// The digest it should have.
        blob: String,
        /// The digest of its bytes.
        found: String,
    },
    /// Reading a file failed.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
}

impl ImageError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io { path: path.to_path_buf(), source }
    }
}

/// Why a push or a registry request failed.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// The image could not be read.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// Reading a blob's bytes failed while pushing it.
    #[error("reading blob {blob} failed: {source}")]
    Read {
        /// The blob.
        blob: String,
        /// What failed.
        source: std::io::Error,
    },
    /// The registry refused the credentials.
    #[error("the registry {registry} refused the credentials{}: check the username and password", user.as_ref().map(|u| format!(" of {u}")).unwrap_or_default())]
    Unauthorized {
        /// The registry.
        registry: String,
        /// The username sent, if any.
        user: Option<String>,
    },
    /// The registry refused the token the platform issued for this push.
    #[error(
        "the registry {registry} refused the push token: it has expired or does not cover this repository; \
         run the push again for a new one"
    )]
    TokenRefused {
        /// The registry.
        registry: String,
    },
    /// The registry found that a blob's bytes do not match its digest.
    #[error("the image is corrupt: blob {0} does not match its digest (the registry refused it); nothing was recorded")]
    DigestMismatch(String),
    /// Anything else the registry said.
    #[error("registry {registry}: {context}: {message}")]
    Registry {
        /// The registry.
        registry: String,
        /// What was being done.
        context: String,
        /// What it said.
        message: String,
    },
}
