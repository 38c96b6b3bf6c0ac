//! [`ControllerError`]: why a platform operation failed, by meaning.
//!
//! The variants say what went wrong with the fields a caller needs to act on it; the
//! errors of the backends (store, scheduler, artifacts, logs) are kept as sources. How
//! each one is shown to an HTTP client (status code and Workflow-compatible body) is
//! the controller's business (`deis_sdk::controller`), not the platform's.

use std::fmt;

use crate::artifact::ArtifactError;
use crate::logs::LogError;
use crate::model::{AppName, ConfigError, SettingsError, ValidationError};
use crate::scheduler::SchedulerError;
use crate::store::StoreError;

/// The kinds of records a request can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResourceKind {
    /// An app.
    App,
    /// A user.
    User,
    /// A domain of an app.
    Domain,
    /// A release of an app.
    Release,
    /// A build of an app.
    Build,
    /// A config of an app.
    Config,
    /// A log drain of an app.
    Drain,
    /// An SSH key of a user.
    Key,
    /// A TLS certificate.
    Certificate,
}

impl ResourceKind {
    /// The kind's name as the Workflow API writes it (`App`, `Release`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::App => "App",
            Self::User => "User",
            Self::Domain => "Domain",
            Self::Release => "Release",
            Self::Build => "Build",
            Self::Config => "Config",
            Self::Drain => "Drain",
            Self::Key => "Key",
            Self::Certificate => "Certificate",
        }
    }
}

impl fmt::Display for ResourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a rollback was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RollbackRefusal {
    /// The version asked for is 0 or negative (or there is nothing to go back to).
    #[error("version cannot be below 0")]
    BelowZero,
    /// v1 is the empty initial release: it has nothing to run.
    #[error("Cannot roll back to initial release.")]
    InitialRelease,
    /// The release asked for never ran.
    #[error("Cannot roll back to failed release.")]
    FailedRelease,
}

/// A command line (`deis run`) that can't be run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// No command, or only blanks.
    #[error("command is a required field")]
    Missing,
    /// More than [`MAX_COMMAND_ARGS`](super::MAX_COMMAND_ARGS) arguments.
    #[error("command has more than {max} arguments")]
    TooManyArgs {
        /// The limit.
        max: usize,
    },
    /// Longer than [`MAX_COMMAND_BYTES`](super::MAX_COMMAND_BYTES), all arguments together.
    #[error("command is longer than {max} bytes")]
    TooLong {
        /// The limit.
        max: usize,
    },
    /// An argument contains a NUL byte (it can't be passed to a process).
    #[error("command contains a NUL byte")]
    NulByte,
}

/// What `restart` named that the app does not have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnknownRestartTarget {
    /// A process type the current build does not have.
    #[error("Container type {0} does not exist in application")]
    ProcessType(String),
    /// A unit the scheduler does not report.
    #[error("Pod {0} does not exist in application")]
    Unit(String),
}

/// Errors of [`Controller`](super::Controller) operations.
///
/// Match on the variant to learn what went wrong; `Display` is a sentence for the user
/// (Workflow's wording where the Workflow CLI recognises it), and
/// [`source`](std::error::Error::source) leads to the backend's error where there is
/// one.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControllerError {
    /// An input field is invalid (`id`, `username`, `domain`, `url`, `procfile`, ...).
    #[error(transparent)]
    Validation(#[from] ValidationError),
    /// A field the operation needs was not given (`command`, `password`, `new_password`).
    #[error("{field} is a required field")]
    Required {
        /// The missing field.
        field: &'static str,
    },
    /// The token is unknown, revoked or malformed.
    #[error("Invalid token.")]
    InvalidToken,
    /// The user was disabled by an administrator (`deis users:disable`).
    #[error("User account is disabled.")]
    AccountDisabled,
    /// The current password given to change it is wrong.
    #[error("Current password does not match")]
    WrongPassword,
    /// The caller may not do this (not the app's owner nor an admin, ...).
    #[error("You do not have permission to perform this action.")]
    Forbidden,
    /// The platform accepts no registrations.
    #[error("Registration is disabled")]
    RegistrationDisabled,
    /// Only admins may register users on this platform.
    #[error("Only an administrator can register users on this platform")]
    RegistrationAdminOnly,
    /// The named record does not exist (or the caller can't see it).
    #[error("No {kind} matches the given query.")]
    NotFound {
        /// What was looked for.
        kind: ResourceKind,
        /// Its name as given (app id, username, domain, `v3`, drain id or URL).
        name: String,
    },
    /// A process type the app's current build does not have.
    #[error("Container type {proc_type} does not exist in application")]
    UnknownProcessType {
        /// The type as given.
        proc_type: String,
    },
    /// `restart` named a process type or unit the app does not have.
    #[error(transparent)]
    UnknownRestartTarget(UnknownRestartTarget),
    /// The app has no build yet, so there is nothing to scale.
    #[error("No build associated with this release")]
    NoBuild,
    /// The app has no build yet, so there is nothing to run a command in.
    #[error("No build associated with this release to run this command")]
    NoBuildToRun,
    /// A scale request asks for too many units of one type.
    #[error("Invalid scaling format: at most {max} units per process type")]
    TooManyUnits {
        /// The process type.
        proc_type: String,
        /// The most units of one type.
        max: u32,
    },
    /// Another app holds the domain.
    #[error("Domain {domain} is already in use by another application")]
    DomainTaken {
        /// The domain.
        domain: String,
    },
    /// A scale request would give the apps of one user more units than the platform
    /// allows a user.
    #[error(
        "{owner}'s apps may run at most {max} units together; this would make {asked}: scale other apps down or ask an admin"
    )]
    UnitQuota {
        /// The owner of the app.
        owner: String,
        /// The most units of one user's apps.
        max: u32,
        /// How many the request would make.
        asked: u64,
    },
    /// The command of `deis run` can't be run.
    #[error(transparent)]
    Command(#[from] CommandError),
    /// A rollback that can't be done.
    #[error(transparent)]
    Rollback(#[from] RollbackRefusal),
    /// The app already has the most drains it may have.
    #[error("An app may have at most {max} drains; remove one with `deis drains:remove` first")]
    TooManyDrains {
        /// The most drains of one app.
        max: usize,
    },
    /// A config patch unsets something that is not set.
    #[error("{key} does not exist under {section}")]
    NotSet {
        /// What was to be unset.
        key: String,
        /// Where it was looked for (`values`, `healthcheck`, ...).
        section: String,
    },
    /// A config change that changes nothing (no release is made).
    #[error("{user} changed nothing - release stopped")]
    NothingChanged {
        /// Who asked for it.
        user: String,
    },
    /// The change would leave the platform without an active administrator.
    #[error("{username} is the last active administrator; make another user an administrator first")]
    LastAdmin {
        /// The administrator who would be demoted, disabled or removed.
        username: String,
    },
    /// A membership that already exists (collaborator, administrator).
    #[error("{username} is already {role}")]
    AlreadyMember {
        /// The user.
        username: String,
        /// What they already are (`a collaborator on hello`, `an administrator`).
        role: String,
    },
    /// The user can't be removed while they own apps.
    #[error("{username} still has applications assigned. Delete or transfer ownership")]
    OwnsApps {
        /// The user.
        username: String,
    },
    /// Another request changed the same record at the same time, every retry.
    #[error("The {} was changed by another request at the same time; try again", kind.as_str().to_ascii_lowercase())]
    Concurrent {
        /// The contended record.
        kind: ResourceKind,
    },
    /// The scheduler refused for lack of capacity; nothing was changed.
    #[error("{0}")]
    Capacity(#[source] SchedulerError),
    /// The scheduler refused or failed otherwise.
    #[error("{0}")]
    Scheduler(#[source] SchedulerError),
    /// A source archive was refused, or the artifact store failed.
    #[error("{0}")]
    Artifact(#[source] ArtifactError),
    /// The store failed.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// The log store refused or failed.
    #[error("Error accessing logs for {app}: {source}")]
    Logs {
        /// The app whose log was asked for.
        app: AppName,
        /// What the log store said.
        #[source]
        source: LogError,
    },
    /// The platform was built without a log store.
    #[error("this controller has no log store configured, so it keeps no logs")]
    NoLogStore,
    /// The app has no release that did not fail (the store is inconsistent: v1 is made
    /// with the app).
    #[error("app {app} has no release; its records are incomplete")]
    NoRelease {
        /// The app.
        app: AppName,
    },
    /// A record another record points at is missing (the store is inconsistent).
    #[error("{} {id} of app {app} is missing", kind.as_str().to_ascii_lowercase())]
    MissingRecord {
        /// What is missing.
        kind: ResourceKind,
        /// Its id.
        id: String,
        /// The app it belongs to.
        app: AppName,
    },
    /// Every id of the platform's identity range is taken by an app.
    #[error("no app identity is free in {range}; destroy unused apps or widen the range (deisd --app-uid-range)")]
    IdentitiesExhausted {
        /// The range (`FIRST-LAST`).
        range: String,
    },
    /// A blocking worker (password hashing, archive checks) panicked or was cancelled.
    #[error("{task} worker failed: {source}")]
    Worker {
        /// What the worker did.
        task: &'static str,
        /// Why it ended.
        #[source]
        source: tokio::task::JoinError,
    },
}

impl ControllerError {
    /// `No <kind> matches the given query.` for `name`.
    pub fn not_found(kind: ResourceKind, name: impl fmt::Display) -> Self {
        Self::NotFound { kind, name: name.to_string() }
    }

    /// A validation error of `field`.
    pub fn validation(field: impl fmt::Display, message: impl fmt::Display) -> Self {
        Self::Validation(ValidationError::new(field, message))
    }
}

impl From<SchedulerError> for ControllerError {
    fn from(e: SchedulerError) -> Self {
        match e {
            SchedulerError::Capacity(_) => Self::Capacity(e),
            other => Self::Scheduler(other),
        }
    }
}

impl From<ArtifactError> for ControllerError {
    fn from(e: ArtifactError) -> Self {
        Self::Artifact(e)
    }
}

impl From<SettingsError> for ControllerError {
    fn from(e: SettingsError) -> Self {
        match e {
            SettingsError::Invalid(e) => Self::Validation(e),
            SettingsError::Missing { key, section } => Self::NotSet { key, section: section.to_string() },
        }
    }
}

impl From<ConfigError> for ControllerError {
    fn from(e: ConfigError) -> Self {
        match e {
            ConfigError::Invalid(e) => Self::Validation(e),
            ConfigError::NotSet { key, section } => Self::NotSet { key, section },
        }
    }
}

/// Result of platform operations.
pub type Result<T, E = ControllerError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[test]
    fn sources_are_kept() {
        let e = ControllerError::from(StoreError::Corrupt { key: "apps/x".into(), message: "eof".into() });
        assert!(matches!(e, ControllerError::Store(StoreError::Corrupt { .. })));
        assert_eq!(e.to_string(), "corrupt record at apps/x: eof");
        let source = e.source().expect("the store error is the source");
        assert!(source.downcast_ref::<StoreError>().is_some());

        let e = ControllerError::from(SchedulerError::Capacity("no room".into()));
        assert!(matches!(e, ControllerError::Capacity(_)), "{e:?}");
        assert_eq!(e.to_string(), "not enough capacity: no room");
        assert!(e.source().unwrap().downcast_ref::<SchedulerError>().is_some());
        assert!(matches!(
            ControllerError::from(SchedulerError::Unsupported("no images".into())),
            ControllerError::Scheduler(SchedulerError::Unsupported(_))
        ));

        let app = AppName::new("hello").unwrap();
        let e = ControllerError::Logs { app, source: LogError::Closed };
        assert_eq!(e.to_string(), "Error accessing logs for hello: log store is closed");
        assert!(e.source().unwrap().downcast_ref::<LogError>().is_some());
    }

    #[test]
    fn messages_are_workflows() {
        assert_eq!(ControllerError::not_found(ResourceKind::App, "x").to_string(), "No App matches the given query.");
        assert_eq!(ControllerError::Forbidden.to_string(), "You do not have permission to perform this action.");
        assert_eq!(ControllerError::Required { field: "command" }.to_string(), "command is a required field");
        assert_eq!(ControllerError::from(RollbackRefusal::BelowZero).to_string(), "version cannot be below 0");
        assert_eq!(
            ControllerError::Concurrent { kind: ResourceKind::App }.to_string(),
            "The app was changed by another request at the same time; try again"
        );
        let missing = ControllerError::MissingRecord {
            kind: ResourceKind::Config,
            id: "c1".into(),
            app: AppName::new("hello").unwrap(),
        };
        assert_eq!(missing.to_string(), "config c1 of app hello is missing");
        let e = ControllerError::from(ConfigError::NotSet { key: "A".into(), section: "values".into() });
        assert!(matches!(&e, ControllerError::NotSet { key, .. } if key == "A"));
        assert_eq!(e.to_string(), "A does not exist under values");
    }
}
