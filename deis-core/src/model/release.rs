use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::AppName;
use crate::time::Timestamp;

/// An immutable, numbered release: one build with one config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    /// Identity.
    pub uuid: Uuid,
    /// App id.
    pub app: AppName,
    /// Username of whoever caused it.
    pub owner: String,
    /// 1, 2, 3, ... (shown as `v1`, `v2`, ...).
    pub version: u64,
    /// What changed (`alice added FOO`, `alice deployed sha256:...`).
    pub summary: String,
    /// Whether the release failed to deploy.
    #[serde(default)]
    pub failed: bool,
    /// uuid of the config.
    pub config: Uuid,
    /// uuid of the build, or none for the initial release.
    pub build: Option<Uuid>,
    /// Creation time.
    pub created: Timestamp,
    /// Last change.
    pub updated: Timestamp,
}
