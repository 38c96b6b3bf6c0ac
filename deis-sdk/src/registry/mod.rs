//! Image registries (feature `registry`): `deis push` and the platform registry.
//!
//! - [`RegistryAddress`] and [`RegistryLogin`]: a Docker Registry v2 / OCI
//!   distribution registry and the credentials for it (htpasswd basic auth, or a
//!   bearer token service the registry points at); [`RegistryClient`] talks to one with
//!   `oci-client`.
//! - [`image::LocalImage`]: an image read from a docker-archive tarball or an OCI image
//!   layout directory; the [JSON documents](manifest) are parsed with size limits.
//! - [`push::push_image`]: blobs the repository has are skipped, blobs another
//!   repository has are mounted, the rest uploaded; the manifest last, by digest.
//! - [`embedded::EmbeddedRegistry`]: `deisd --registry embedded` runs Debian's
//!   `docker-registry` on loopback with its own config and data dir, taking the
//!   tokens of [`token::TokenIssuer`].

pub mod embedded;
mod error;
pub mod image;
pub mod manifest;
pub mod push;
pub mod token;

use std::fmt;
use std::sync::Arc;

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use oci_client::{Reference, RegistryOperation};

pub use self::error::{ImageError, PushError};

/// Credentials for a registry (htpasswd basic auth, or those a bearer token service
/// takes). Debug output hides the password.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RegistryLogin {
    /// Username.
    pub username: String,
    /// Password or token.
    pub password: String,
}

impl fmt::Debug for RegistryLogin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryLogin").field("username", &self.username).field("password", &"<hidden>").finish()
    }
}

/// Where a registry is: `host[:port]` and whether it speaks plain HTTP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryAddress {
    /// `host[:port]`, as it appears in image references.
    pub host: String,
    /// Plain HTTP (an `http://` URL, or a loopback host without a scheme).
    pub insecure: bool,
}

impl RegistryAddress {
    /// Parses `http://host:port`, `https://host[:port]` or `host[:port]` (HTTPS unless
    /// the host is loopback, as Docker does).
    pub fn parse(url: &str) -> Result<Self, String> {
        let url = url.trim().trim_end_matches('/');
        let (insecure, rest) = if let Some(r) = url.strip_prefix("http://") {
            (Some(true), r)
        } else if let Some(r) = url.strip_prefix("https://") {
            (Some(false), r)
        } else {
            (None, url)
        };
        let valid = !rest.is_empty()
            && !rest.contains('/')
            && rest.chars().all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c));
        if !valid {
            return Err(format!(
                "{url:?} is not a registry address; expected http://HOST:PORT, https://HOST[:PORT] or HOST[:PORT]"
            ));
        }
        let host_only = rest.rsplit_once(':').map_or(rest, |(h, _)| h);
        let loopback = host_only == "localhost" || host_only.starts_with("127.") || host_only == "[::1]";
        Ok(Self { host: rest.to_string(), insecure: insecure.unwrap_or(loopback) })
    }

    /// The URL it was given as (with its scheme).
    pub fn url(&self) -> String {
        format!("{}://{}", if self.insecure { "http" } else { "https" }, self.host)
    }
}

/// A client of one registry: `oci-client` with the address's protocol and the login.
#[derive(Clone)]
pub struct RegistryClient {
    address: RegistryAddress,
    login: Option<RegistryLogin>,
    /// A token issued for this client (sent as is, instead of logging in).
    bearer: Option<String>,
    client: Arc<oci_client::Client>,
}

impl fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryClient").field("address", &self.address).field("login", &self.login).finish()
    }
}

impl RegistryClient {
    /// A client of `address` logging in as `login` (anonymous without).
    pub fn new(address: RegistryAddress, login: Option<RegistryLogin>) -> Self {
        // reqwest is built without a default TLS provider: use ring, like the rest.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let protocol = if address.insecure { ClientProtocol::Http } else { ClientProtocol::Https };
        let config = ClientConfig {
            protocol,
            // One streamed PUT per blob: the fastest on a near registry, and a blob is
            // either committed whole or not at all.
            use_monolithic_push: true,
            connect_timeout: Some(std::time::Duration::from_secs(10)),
            ..Default::default()
        };
        Self { address, login, bearer: None, client: Arc::new(oci_client::Client::new(config)) }
    }

    /// A client of `address` that sends `token` (a registry token the platform issued
    /// for the push) with every request.
    pub fn with_token(address: RegistryAddress, token: String) -> Self {
        Self { bearer: Some(token), ..Self::new(address, None) }
    }

    /// `host[:port]`.
    pub fn host(&self) -> &str {
        &self.address.host
    }

    /// The address.
    pub fn address(&self) -> &RegistryAddress {
        &self.address
    }

    /// `repository@digest` on this registry.
    pub fn reference(&self, repository: &str, digest: &str) -> Reference {
        Reference::with_digest(self.address.host.clone(), repository.to_string(), digest.to_string())
    }

    /// The `oci-client` client.
    pub fn inner(&self) -> &oci_client::Client {
        &self.client
    }

    fn auth(&self) -> RegistryAuth {
        match (&self.bearer, &self.login) {
            (Some(token), _) => RegistryAuth::Bearer(token.clone()),
            (None, Some(l)) => RegistryAuth::Basic(l.username.clone(), l.password.clone()),
            (None, None) => RegistryAuth::Anonymous,
        }
    }

    /// Logs in for `operation` on `reference`'s repository.
    pub async fn authenticate(&self, reference: &Reference, operation: RegistryOperation) -> Result<(), PushError> {
        self.client.auth(reference, &self.auth(), operation).await.map(drop).map_err(|e| self.error("logging in", e))
    }

    /// Whether the repository has the manifest `digest` (a pushed image is complete).
    pub async fn has_manifest(&self, repository: &str, digest: &str) -> Result<bool, PushError> {
        let reference = self.reference(repository, digest);
        self.authenticate(&reference, RegistryOperation::Pull).await?;
        match self.client.fetch_manifest_digest(&reference, &self.auth()).await {
            Ok(found) => Ok(found == digest),
            Err(OciDistributionError::ImageManifestNotFoundError(_)) => Ok(false),
            Err(e) if status_of(&e) == Some(404) || is_unknown(&e) => Ok(false),
            Err(e) => Err(self.error("looking up the manifest", e)),
        }
    }

    /// `e` as a [`PushError`], with `context`.
    pub fn error(&self, context: &str, e: OciDistributionError) -> PushError {
        let registry = self.address.host.clone();
        if status_of(&e) == Some(401) || status_of(&e) == Some(403) {
            if self.bearer.is_some() {
                return PushError::TokenRefused { registry };
            }
            return PushError::Unauthorized { registry, user: self.login.as_ref().map(|l| l.username.clone()) };
        }
        PushError::Registry { registry, context: context.into(), message: e.to_string() }
    }

    /// `e` from pushing blob `digest`.
    pub(crate) fn blob_error(&self, digest: &str, e: OciDistributionError) -> PushError {
        if push::is_digest_mismatch(&e) {
            return PushError::DigestMismatch(digest.to_string());
        }
        self.error(&format!("pushing blob {digest}"), e)
    }
}

/// Whether the registry said the repository or manifest is unknown.
fn is_unknown(e: &OciDistributionError) -> bool {
    use oci_client::errors::OciErrorCode as C;
    let OciDistributionError::RegistryError { envelope, .. } = e else { return false };
    envelope.errors.iter().any(|e| matches!(e.code, C::ManifestUnknown | C::NameUnknown | C::NotFound))
}

/// The HTTP status an `oci-client` error carries, if any.
fn status_of(e: &OciDistributionError) -> Option<u16> {
    match e {
        OciDistributionError::UnauthorizedError { .. } | OciDistributionError::AuthenticationFailure(_) => Some(401),
        OciDistributionError::ServerError { code, .. } => Some(*code),
        OciDistributionError::RequestError(r) => r.status().map(|s| s.as_u16()),
        OciDistributionError::RegistryError { envelope, .. } => envelope
            .errors
            .iter()
            .any(|e| {
                matches!(
                    e.code,
                    oci_client::errors::OciErrorCode::Unauthorized | oci_client::errors::OciErrorCode::Denied
                )
            })
            .then_some(401),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_default_to_https_except_loopback() {
        let a = RegistryAddress::parse("http://10.0.0.1:5000/").unwrap();
        assert_eq!((a.host.as_str(), a.insecure), ("10.0.0.1:5000", true));
        assert!(!RegistryAddress::parse("registry.example.com").unwrap().insecure);
        assert!(RegistryAddress::parse("127.0.0.1:5000").unwrap().insecure);
        assert!(!RegistryAddress::parse("https://127.0.0.1:5000").unwrap().insecure);
        assert!(RegistryAddress::parse("http://host/path").is_err());
        assert!(RegistryAddress::parse("").is_err());
    }

    #[test]
    fn logins_hide_their_password() {
        let l = RegistryLogin { username: "u".into(), password: "s3cret".into() };
        assert!(!format!("{l:?}").contains("s3cret"));
    }
}
