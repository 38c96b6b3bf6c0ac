//! Migration from a Deis v1 etcd keyspace to this platform's layout (what the
//! `deis-migrate` binary runs).
//!
//! The v1 keyspace comes from etcd's v2 API, live ([`source::fetch_live`], etcd 3.4
//! with `--enable-v2`) or as a dump of `GET /v2/keys/?recursive=true`
//! ([`source::read_dump`]); [`source::parse_dump`] reads either. Its keys become:
//!
//! | v1 key | on this platform |
//! |---|---|
//! | `/deis/config/<app>/<key>` | the app (created with release v1 if new) with a config and release holding `<KEY>` |
//! | `/deis/domains/<domain>` = app | `domains/<domain>` |
//! | `/deis/config/<app>/deis_whitelist` | the app's allow-list (`settings.whitelist` of `apps/<app>`, what `deis whitelist:add` sets) |
//! | `/deis/certs/<domain>/{cert,key}` | `certs/<domain with - for .>` as `deis certs:add` makes it, attached to the domain (`certdomains/<domain>`, what the router's SNI reads) |
//! | `/deis/builder/users/<user>/<fingerprint>` | `users/<user>` (no password until an admin sets one) and its SSH key `keys/<user>/<comment>` with the key's index entry, as `deis keys:add` makes them |
//! | `/deis/router/enforceHTTPS` = true | `settings.https_enforced` of every migrated app (`deis tls:enable`) |
//! | `/deis/platform/domain`, `/deis/controller/registrationMode`, `/deis/router/{sslCert,sslKey}` | with a `deisd_env_dir`: `deisd.env` (`DEIS_DOMAIN`, `DEIS_REGISTRATION`, `DEIS_TLS_CERT`, `DEIS_TLS_KEY`) and the platform certificate files there ([`deisd_env`]) |
//! | other `/deis/{platform,controller,logs,router}/…` without TTL | skipped, with the reason (nginx tunings, the v1 platform-wide drain) |
//! | `/deis/services/<app>/<app>_v<N>.<type>.<n>` (TTL) | with [`TtlMode::Lease`]: `endpoints/<app>/<app>.<type>.<n>#0` under a lease of the remaining TTL, so the router reaches the v1 units until their registrations lapse |
//! | other keys with a TTL (component registrations) | with [`TtlMode::Lease`]: `registrations/…` under a lease |
//!
//! Keys with a TTL never become permanent: [`TtlMode::Skip`] leaves them out. The
//! migration reads the target once, plans only what the target lacks (so a second run
//! writes nothing), and writes in transactions with conditions on what it read: a
//! record changed meanwhile fails its keys, never overwrites. Apps, domains and
//! certificates, which v1 kept without an owner, belong to the `owner` given.

pub mod classify;
pub mod deisd_env;
pub mod layout;
pub mod plan;
pub mod report;
pub mod source;
mod write;

use std::time::Instant;

use classify::V1Keyspace;
use plan::Snapshot;
pub use report::{Outcome, Report, Status};
pub use source::{SourceError, TtlBasis, V1Key};

use crate::deis_core::store::records::user_key;
use crate::deis_core::store::{Store, StoreError};

/// What becomes of keys that had a TTL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TtlMode {
    /// Left out (reported as skipped).
    Skip,
    /// Written under a lease of the TTL that was left.
    Lease,
}

impl std::str::FromStr for TtlMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "skip" => Ok(Self::Skip),
            "lease" => Ok(Self::Lease),
            _ => Err(format!("{s:?} is not a TTL mode: use skip or lease")),
        }
    }
}

/// Why a migration could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MigrateError {
    /// The v1 keyspace could not be read.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The target store failed.
    #[error("the target store: {0}")]
    Store(#[from] StoreError),
    /// The files for deisd could not be written.
    #[error("writing deisd's settings to {dir}: {source}; check that the directory is writable")]
    DeisdEnv {
        /// The directory.
        dir: std::path::PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The owner of migrated apps is not a user of the target.
    #[error(
        "the owner {0:?} of the migrated apps is not a user of the target platform: register it there first (deis register), or name another with --owner"
    )]
    NoOwner(String),
}

/// A migration's settings.
#[derive(Debug, Clone)]
pub struct Migration {
    /// Username owning the apps, domains and certificates migrated.
    pub owner: String,
    /// What becomes of keys with a TTL.
    pub ttl: TtlMode,
    /// Plan and report only.
    pub dry_run: bool,
    /// Where the settings `deisd` takes from its environment go ([`deisd_env`]);
    /// `None`: reported as skipped.
    pub deisd_env_dir: Option<std::path::PathBuf>,
}

impl Migration {
    /// Migrates `keys` onto `store` and reports what became of each.
    pub async fn run(&self, keys: Vec<V1Key>, store: &dyn Store) -> Result<Report, MigrateError> {
        let started = Instant::now();
        let snapshot = Snapshot::read(store).await?;
        if snapshot_lacks_owner(store, &self.owner).await? && !self.dry_run {
            return Err(MigrateError::NoOwner(self.owner.clone()));
        }
        let keyspace = V1Keyspace::classify(keys);
        let plan = plan::plan(&keyspace, &snapshot, &self.owner, self.ttl, self.deisd_env_dir.as_deref())?;
        let files = plan.files.clone();
        let mut outcomes = write::execute(store, plan, self.dry_run).await?;
        if let Some(files) = files {
            if !self.dry_run {
                let dir = self.deisd_env_dir.clone().unwrap_or_default();
                deisd_env::write(&files).map_err(|source| MigrateError::DeisdEnv { dir, source })?;
            }
            outcomes.extend(files.sources.iter().map(|s| Outcome {
                key: s.clone(),
                status: Status::Migrated,
                detail: files.target.clone(),
            }));
        }
        outcomes.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(Report { outcomes, dry_run: self.dry_run, elapsed: started.elapsed() })
    }

    /// Compares `keys` with the target: plans the migration again and returns every
    /// key it would still write (empty when the target holds the whole v1 keyspace,
    /// short of the keys skipped or failed).
    pub async fn verify(&self, keys: Vec<V1Key>, store: &dyn Store) -> Result<Vec<Outcome>, MigrateError> {
        let snapshot = Snapshot::read(store).await?;
        let keyspace = V1Keyspace::classify(keys);
        let plan = plan::plan(&keyspace, &snapshot, &self.owner, self.ttl, self.deisd_env_dir.as_deref())?;
        let store_changes = plan.changes.iter().map(|c| (&c.sources, &c.target));
        let file_changes = plan.files.iter().map(|f| (&f.sources, &f.target));
        let mut differ: Vec<Outcome> = store_changes
            .chain(file_changes)
            .flat_map(|(sources, target)| {
                sources.iter().map(move |s| Outcome {
                    key: s.clone(),
                    status: Status::Failed,
                    detail: format!("the target lacks or differs at {target}"),
                })
            })
            .collect();
        differ.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(differ)
    }
}

async fn snapshot_lacks_owner(store: &dyn Store, owner: &str) -> Result<bool, StoreError> {
    Ok(store.get(&user_key(owner)).await?.is_none())
}
