use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{AppName, ProcessType};
use crate::time::Timestamp;

/// What a build runs: an OCI image or a source artifact with a Procfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildSource<'a> {
    /// A container image reference (`deis pull`).
    Image(&'a str),
    /// A content-addressed source tarball (`deis deploy DIR`), `sha256:<hex>`.
    Source(&'a str),
}

/// A build, as the controller API returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Build {
    /// Identity; releases point at it.
    pub uuid: Uuid,
    /// App id.
    pub app: AppName,
    /// Username of whoever made the build.
    pub owner: String,
    /// Image reference for image builds; empty for source builds.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub image: String,
    /// For source builds, the artifact digest `sha256:<hex>`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sha: String,
    /// Process types and their commands.
    #[serde(default)]
    pub procfile: BTreeMap<ProcessType, String>,
    /// Unused; kept for API compatibility.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub dockerfile: String,
    /// Creation time.
    pub created: Timestamp,
    /// Same as `created`.
    pub updated: Timestamp,
}

impl Build {
    /// What this build runs.
    pub fn source(&self) -> BuildSource<'_> {
        if self.sha.is_empty() { BuildSource::Image(&self.image) } else { BuildSource::Source(&self.sha) }
    }
}
