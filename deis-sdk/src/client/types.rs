//! Response types the controller API returns that are not domain records of
//! `deis_core` (those — [`App`](deis_core::App), [`Build`](deis_core::Build),
//! [`Config`](deis_core::Config), [`Release`](deis_core::Release),
//! [`Domain`](deis_core::Domain) — are reused as they are).
//!
//! Each type keeps fields it does not know in `extra`, so printing it back as JSON
//! (`deis --json`) loses nothing the server sent.

use std::collections::BTreeMap;

use deis_core::ProcessType;
use deis_core::time::Timestamp;
use serde::{Deserialize, Serialize};

/// A user as `GET /v2/auth/whoami/` returns it (Workflow `User` object).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserInfo {
    /// Login name.
    pub username: String,
    /// Email address (may be empty).
    #[serde(default)]
    pub email: String,
    /// Whether the user is an admin.
    #[serde(default)]
    pub is_superuser: bool,
    /// Registration time.
    #[serde(default)]
    pub date_joined: Option<Timestamp>,
    /// Last login, if any.
    #[serde(default)]
    pub last_login: Option<Timestamp>,
    /// Every other field (`first_name`, `is_staff`, ...).
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// One unit of an app as `GET /v2/apps/<app>/pods/` lists it (with our extra fields).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pod {
    /// Unit name `<app>.<type>.<n>`.
    pub name: String,
    /// `up`, `created`, `crashed`, `down`, `error`, ...
    pub state: String,
    /// Release it runs, `v<N>`.
    #[serde(default)]
    pub release: String,
    /// Process type.
    #[serde(rename = "type", default)]
    pub proc_type: String,
    /// When the current process started.
    #[serde(default)]
    pub started: Option<Timestamp>,
    /// Where it listens (`127.0.0.1:40123`), if it has a port.
    #[serde(default)]
    pub address: Option<String>,
    /// How often it was restarted after crashing.
    #[serde(default)]
    pub restarts: u32,
    /// The node it runs on.
    #[serde(default)]
    pub node: String,
    /// Fields this client does not know.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl Pod {
    /// The release number this unit runs (`v3` -> 3).
    pub fn release_version(&self) -> Option<u64> {
        self.release.strip_prefix('v').and_then(|n| n.parse().ok())
    }

    /// The `n` of a `<app>.<type>.<n>` unit name, for sorting `web.2` before `web.10`.
    pub fn number(&self) -> Option<u64> {
        self.name.rsplit('.').next().and_then(|n| n.parse().ok())
    }
}

/// `POST /v2/apps/<app>/builds/` answer: the build, plus the scheduler's warning when it
/// recorded a build it cannot run (image builds on the local scheduler).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuildCreated {
    /// The build record.
    #[serde(flatten)]
    pub build: deis_core::Build,
    /// Why the build's release could not be deployed, if it could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

/// What `GET /healthz` says about the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerVersion {
    /// `DEIS_API_VERSION` header (`2.3`).
    pub api_version: Option<String>,
    /// `DEIS_PLATFORM_VERSION` header (`2.3.0`).
    pub platform_version: Option<String>,
}

/// Which units `ps:restart` restarts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestartTarget {
    /// Every unit of the app.
    All,
    /// Every unit of one process type.
    Type(ProcessType),
    /// One unit, by type and name (`web`, `hello.web.1`).
    Unit {
        /// Its process type.
        proc_type: ProcessType,
        /// Its name.
        name: String,
    },
}

/// Whose token `auth:regenerate` replaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenTarget {
    /// The caller's own token.
    Own,
    /// Another user's token (admins only).
    User(String),
    /// Every user's token (admins only).
    All,
}
