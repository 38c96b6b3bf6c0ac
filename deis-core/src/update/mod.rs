//! The update service's model and the [`UpdateChannel`] trait: what the Omaha server
//! answers from, and what the `deis updates:*` commands change.
//!
//! An **application** (by its Omaha app id, e.g. deisd's) has **packages** (a version
//! with its download URL, size and hashes), **channels** (alpha, beta, stable or any
//! other name) each pointing at one package, and **groups** of instances (the Omaha
//! `track`), each following a channel under a [`RolloutPolicy`]: how many updates per
//! period, how long an update may take, office hours, and safe mode (the first failure
//! halts the group). **Instances** (machines, or deisd replicas) are recorded as they
//! check in, with their version and their last events.
//!
//! Whether an instance gets an update is decided by [`policy::decide`], a pure function
//! of the group, the instance and the time, so every implementation decides alike; an
//! implementation's job is to apply its decisions atomically (a grant counts against the
//! period's budget exactly once, even with several servers answering at the same time).
//!
//! The embedded default is [`StoreUpdateChannel`], on any [`Store`](crate::Store). To be
//! correct, an implementation must pass [`crate::testing::update_channel_suite`].

mod checkins;
mod config_cache;
pub mod policy;
mod store_channel;

use std::fmt::Debug;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub use checkins::{FLUSH_INTERVAL, FLUSH_RECORDS};
pub use config_cache::CONFIG_PREFIXES;
pub use policy::{Decision, NoUpdate, RolloutPolicy};
pub use store_channel::StoreUpdateChannel;

use crate::StoreError;
use crate::time::Timestamp;

/// The groups (and channels) every application starts with.
pub const DEFAULT_GROUPS: [&str; 3] = ["alpha", "beta", "stable"];
/// The group an instance that names no track belongs to.
pub const DEFAULT_GROUP: &str = "stable";
/// Events kept per instance (older ones are dropped).
pub const EVENTS_PER_INSTANCE: usize = 20;

/// Errors of an [`UpdateChannel`]. Each says what is wrong and what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UpdateError {
    /// A field is malformed (name, version, hash, URL, policy).
    #[error("invalid {field}: {message}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong and what would be right.
        message: String,
    },
    /// The application, channel, group or package does not exist.
    #[error("no {kind} {name:?}{hint}")]
    NotFound {
        /// What was looked for (`application`, `channel`, ...).
        kind: &'static str,
        /// Its name.
        name: String,
        /// What to do about it.
        hint: &'static str,
    },
    /// The thing exists already, differently (a package version is immutable).
    #[error("{0}")]
    Conflict(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl UpdateError {
    fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Self::Invalid { field, message: message.into() }
    }

    /// The application `id` is unknown.
    pub fn unknown_app(id: &str) -> Self {
        Self::NotFound { kind: "application", name: id.into(), hint: "; create it with `deis updates:apps:create`" }
    }
}

/// Result of update channel operations.
pub type Result<T, E = UpdateError> = std::result::Result<T, E>;

/// The canonical form of an Omaha app id: without braces, lowercase (clients send
/// `{87EFFACE-...}` and `87efface-...` alike). Ids are 1 to 128 characters of letters,
/// digits, `-`, `_` and `.`.
pub fn canonical_app_id(id: &str) -> Result<String> {
    let inner = id.trim().trim_start_matches('{').trim_end_matches('}');
    let ok = !inner.is_empty()
        && inner.len() <= 128
        && inner.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !ok {
        return Err(UpdateError::invalid(
            "app id",
            format!("{id:?}: use 1 to 128 letters, digits, '-', '_' or '.' (braces allowed around it)"),
        ));
    }
    Ok(inner.to_ascii_lowercase())
}

/// Checks a channel or group name: 1 to 63 lowercase letters, digits and `-`,
/// starting with a letter.
pub fn check_name(field: &'static str, name: &str) -> Result<()> {
    let ok = (1..=63).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(UpdateError::invalid(
            field,
            format!("{name:?}: use 1 to 63 lowercase letters, digits and '-', starting with a letter"),
        ))
    }
}

/// Checks a version or instance id: 1 to 128 printable ASCII characters without
/// spaces or `/` (it is part of store keys).
pub fn check_token(field: &'static str, value: &str) -> Result<()> {
    let ok = (1..=128).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_graphic() && b != b'/');
    if ok {
        Ok(())
    } else {
        Err(UpdateError::invalid(field, format!("{value:?}: use 1 to 128 printable characters, no spaces or '/'")))
    }
}

/// An application whose instances are updated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateApp {
    /// The Omaha app id, canonical ([`canonical_app_id`]).
    pub id: String,
    /// A name for people (`deisd`).
    pub name: String,
    /// When it was created.
    pub created: Timestamp,
}

/// A version of an application, as clients download it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Package {
    /// The version (`1.4.0`).
    pub version: String,
    /// Base URL the file is under (Omaha `codebase`), ending in `/`.
    pub url: String,
    /// File name under `url` (`deisd`, `update.gz`).
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the file, 64 lowercase hex digits.
    pub sha256: String,
    /// SHA-1 of the file, base64 (what old Omaha clients check); optional.
    #[serde(default)]
    pub sha1: Option<String>,
    /// When it was published.
    pub published: Timestamp,
}

impl Package {
    /// Checks the fields (and normalises the URL to end in `/` and the hash to
    /// lowercase).
    pub fn validate(mut self) -> Result<Self> {
        check_token("version", &self.version)?;
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) || self.url.len() > 2048 {
            return Err(UpdateError::invalid("url", format!("{:?}: give an http:// or https:// URL", self.url)));
        }
        if !self.url.ends_with('/') {
            self.url.push('/');
        }
        check_token("package name", &self.name)?;
        self.sha256 = self.sha256.to_ascii_lowercase();
        if self.sha256.len() != 64 || !self.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(UpdateError::invalid(
                "sha256",
                format!("{:?}: give 64 hex digits (`sha256sum FILE`)", self.sha256),
            ));
        }
        if let Some(sha1) = &self.sha1
            && (sha1.len() != 28 || !sha1.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=')))
        {
            return Err(UpdateError::invalid("sha1", format!("{sha1:?}: give the base64 SHA-1 (28 characters)")));
        }
        Ok(self)
    }

    /// Same file as `other` (same version, location, size and hashes)?
    pub fn same_file(&self, other: &Package) -> bool {
        (&self.version, &self.url, &self.name, self.size, &self.sha256, &self.sha1)
            == (&other.version, &other.url, &other.name, other.size, &other.sha256, &other.sha1)
    }
}

/// A channel: a name pointing at one package version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Channel {
    /// Name (`alpha`, `beta`, `stable`, ...).
    pub name: String,
    /// The version it offers, if any yet.
    pub version: Option<String>,
    /// When it last changed.
    pub updated: Timestamp,
}

/// A group of instances following a channel under a rollout policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    /// Name: the Omaha `track` its instances send.
    pub name: String,
    /// The channel it follows.
    pub channel: String,
    /// How updates roll out.
    pub policy: RolloutPolicy,
    /// Paused by an operator: no instance is offered an update.
    pub paused: bool,
    /// Halted by safe mode after a failure: why (until resumed).
    #[serde(default)]
    pub halted: Option<String>,
    /// Updates granted in the current period.
    #[serde(default)]
    pub window: RolloutWindow,
}

/// The rate-limit window of a group: updates granted since `start`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutWindow {
    /// Unix seconds the period started at.
    pub start: u64,
    /// Updates granted since.
    pub granted: u32,
}

/// What an instance is doing, from its last check or event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InstanceStatus {
    /// Checked in; nothing to do (or not allowed now).
    Idle,
    /// Was offered an update and has not reported yet.
    Granted,
    /// Downloading the update.
    Downloading,
    /// Downloaded it.
    Downloaded,
    /// Installed it (restarting).
    Installed,
    /// Runs the new version.
    Complete,
    /// Failed (see the last event's error code).
    Error,
}

impl std::fmt::Display for InstanceStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = serde_json::to_value(self).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
        f.write_str(&s)
    }
}

/// Omaha event types the server understands (others are recorded as they are).
pub mod event_type {
    /// The update is complete (or, with result 0, failed).
    pub const UPDATE_COMPLETE: u32 = 3;
    /// Download started.
    pub const DOWNLOAD_STARTED: u32 = 13;
    /// Download finished.
    pub const DOWNLOAD_FINISHED: u32 = 14;
    /// Installed (CoreOS/Flatcar extension): the new version runs after a restart.
    pub const INSTALLED: u32 = 800;
}

/// Omaha event results.
pub mod event_result {
    /// Failed.
    pub const ERROR: u32 = 0;
    /// Succeeded.
    pub const SUCCESS: u32 = 1;
    /// Succeeded, restart needed.
    pub const SUCCESS_REBOOT: u32 = 2;
    /// Deferred.
    pub const DEFERRED: u32 = 9;
}

/// One event an instance reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceEvent {
    /// Omaha `eventtype` ([`event_type`]).
    pub event_type: u32,
    /// Omaha `eventresult` ([`event_result`]).
    pub result: u32,
    /// Omaha `errorcode`, for failures.
    #[serde(default)]
    pub error_code: Option<i64>,
    /// The version the instance ran before (`previousversion`), if it said.
    #[serde(default)]
    pub previous_version: Option<String>,
    /// When it was received (the last time, when it came again: see `repeats`).
    pub at: Timestamp,
    /// Times the same event (type, result, error code, previous version) came again right
    /// after it: repeats are folded into one event, so a client that keeps reporting
    /// the same thing does not push the rest of its history out.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub repeats: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl InstanceEvent {
    /// Whether `other` reports the same thing (all but the time and repeats).
    pub fn same_as(&self, other: &InstanceEvent) -> bool {
        (self.event_type, self.result, self.error_code, &self.previous_version)
            == (other.event_type, other.result, other.error_code, &other.previous_version)
    }

    /// Whether this event reports a failure.
    pub fn is_error(&self) -> bool {
        self.result == event_result::ERROR
    }

    /// What the instance is doing after this event, or `None` for events that say
    /// nothing about it.
    pub fn status(&self) -> Option<InstanceStatus> {
        use event_type::*;
        if self.is_error() {
            return Some(InstanceStatus::Error);
        }
        match self.event_type {
            DOWNLOAD_STARTED => Some(InstanceStatus::Downloading),
            DOWNLOAD_FINISHED => Some(InstanceStatus::Downloaded),
            INSTALLED => Some(InstanceStatus::Installed),
            UPDATE_COMPLETE => Some(InstanceStatus::Complete),
            _ => None,
        }
    }
}

/// An update offered to an instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// The version offered.
    pub version: String,
    /// When (Unix seconds; the update timeout counts from here).
    pub at: u64,
}

/// An instance of an application: a machine or a deisd replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    /// Its id (Omaha `machineid`).
    pub id: String,
    /// The group it checked in with.
    pub group: String,
    /// The version it runs (as it last said).
    pub version: String,
    /// What it is doing.
    pub status: InstanceStatus,
    /// When it last checked in.
    pub last_check: Timestamp,
    /// The update it was offered and has not finished, if any.
    #[serde(default)]
    pub grant: Option<Grant>,
    /// A version it failed to update to (it is not offered again).
    #[serde(default)]
    pub failed_version: Option<String>,
    /// Its last events, oldest first (at most [`EVENTS_PER_INSTANCE`]).
    #[serde(default)]
    pub events: Vec<InstanceEvent>,
}

impl Instance {
    /// The last event, if any.
    pub fn last_event(&self) -> Option<&InstanceEvent> {
        self.events.last()
    }

    /// Adds `event` to the last events: folded into the last one when it is the same
    /// ([`InstanceEvent::repeats`]), else appended, the oldest dropped past
    /// [`EVENTS_PER_INSTANCE`].
    pub fn push_event(&mut self, event: InstanceEvent) {
        if let Some(last) = self.events.last_mut()
            && last.same_as(&event)
        {
            last.repeats = last.repeats.saturating_add(1).saturating_add(event.repeats);
            last.at = last.at.max(event.at);
            return;
        }
        self.events.push(event);
        let over = self.events.len().saturating_sub(EVENTS_PER_INSTANCE);
        self.events.drain(..over);
    }
}

/// Who checks in or reports: an instance of an application in a group, at a version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceRef {
    /// Application id (any form [`canonical_app_id`] accepts).
    pub app: String,
    /// Group (the Omaha `track`; empty: [`DEFAULT_GROUP`]).
    pub group: String,
    /// Instance id.
    pub instance: String,
    /// The version it runs.
    pub version: String,
}

impl InstanceRef {
    /// The group, [`DEFAULT_GROUP`] when none was named.
    pub fn group_or_default(&self) -> &str {
        if self.group.is_empty() { DEFAULT_GROUP } else { &self.group }
    }
}

/// The answer to an update check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckOutcome {
    /// Update to this package.
    Update(Package),
    /// No update, and why.
    NoUpdate(NoUpdate),
}

/// A group as created or changed by an operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupSpec {
    /// Name (the Omaha `track`).
    pub name: String,
    /// The channel it follows.
    pub channel: String,
    /// How updates roll out.
    pub policy: RolloutPolicy,
}

/// The update service's records: applications, packages, channels, groups and
/// instances, and the rollout decisions. See the [module docs](self).
#[async_trait]
pub trait UpdateChannel: Send + Sync + Debug {
    /// Creates an application with the [`DEFAULT_GROUPS`] as channels and groups
    /// (default policy). Creating an existing one again changes nothing.
    async fn create_app(&self, id: &str, name: &str) -> Result<UpdateApp>;

    /// One application.
    async fn app(&self, id: &str) -> Result<Option<UpdateApp>>;

    /// Every application, by id.
    async fn apps(&self) -> Result<Vec<UpdateApp>>;

    /// Adds `package` (once per version: the same file again is fine, another file
    /// under a published version is a [`UpdateError::Conflict`]) and points `channel`
    /// at it, creating the channel if needed.
    async fn publish(&self, app: &str, channel: &str, package: Package) -> Result<Channel>;

    /// Points channel `to` at the version channel `from` offers (alpha -> beta).
    async fn promote(&self, app: &str, from: &str, to: &str) -> Result<Channel>;

    /// The application's channels, by name.
    async fn channels(&self, app: &str) -> Result<Vec<Channel>>;

    /// One package.
    async fn package(&self, app: &str, version: &str) -> Result<Option<Package>>;

    /// Creates or changes a group (its channel must exist); keeps its paused/halted
    /// state and window.
    async fn put_group(&self, app: &str, spec: GroupSpec) -> Result<Group>;

    /// One group.
    async fn group(&self, app: &str, name: &str) -> Result<Option<Group>>;

    /// The application's groups, by name.
    async fn groups(&self, app: &str) -> Result<Vec<Group>>;

    /// Pauses (true) or resumes (false) a group; resuming also lifts a safe-mode halt.
    async fn set_paused(&self, app: &str, group: &str, paused: bool) -> Result<Group>;

    /// Records a check-in at `now` (Unix seconds); for an update check
    /// (`wants_update`), decides ([`policy::decide`]) whether the instance updates,
    /// counting a new grant against the group's period atomically. A ping only
    /// records the instance and answers [`NoUpdate::NotAsked`].
    async fn check(&self, who: &InstanceRef, wants_update: bool, now: u64) -> Result<CheckOutcome>;

    /// Records an event of an instance (creating its record if it never checked in);
    /// an error event marks the version it was offered as failed for it and, when its
    /// group is in safe mode, halts the group.
    async fn record_event(&self, who: &InstanceRef, event: InstanceEvent) -> Result<Instance>;

    /// The application's instances (of one group, if given), by id.
    async fn instances(&self, app: &str, group: Option<&str>) -> Result<Vec<Instance>>;

    /// Writes what the implementation keeps in memory (buffered check-ins) to its
    /// records; call it before shutting down. Implementations that buffer nothing
    /// need not override it.
    async fn flush(&self) -> Result<()> {
        Ok(())
    }
}
