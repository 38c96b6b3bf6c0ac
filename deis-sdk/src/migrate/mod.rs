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
//! | `/deis/certs/<domain>/{cert,key}` | `certs/<domain with - for .>` ([`layout::Certificate`]) |
//! | `/deis/builder/users/<user>/<fingerprint>` | `users/<user>` (no password until an admin sets one) and its SSH key `keys/<user>/<comment>` with the key's index entry, as `deis keys:add` makes them |
//! | `/deis/{platform,logs,router}/…` without TTL | `settings/…` |
//! | `/deis/services/<app>/<app>_v<N>.<type>.<n>` (TTL) | with [`TtlMode::Lease`]: `endpoints/<app>/<app>.<type>.<n>#0` under a lease of the remaining TTL, so the router reaches the v1 units until their registrations lapse |
//! | other keys with a TTL (component registrations) | with [`TtlMode::Lease`]: `registrations/…` under a lease |
//!
//! Keys with a TTL never become permanent: [`TtlMode::Skip`] leaves them out. The
//! migration reads the target once, plans only what the target lacks (so a second run
//! writes nothing), and writes in transactions with conditions on what it read: a
//! record changed meanwhile fails its keys, never overwrites. Apps, domains and
//! certificates, which v1 kept without an owner, belong to the `owner` given.

pub mod classify;
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
        let plan = plan::plan(&keyspace, &snapshot, &self.owner, self.ttl)?;
        let mut outcomes = write::execute(store, plan, self.dry_run).await?;
        outcomes.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(Report { outcomes, dry_run: self.dry_run, elapsed: started.elapsed() })
    }

    /// Compares `keys` with the target: plans the migration again and returns every
    /// key it would still write (empty when the target holds the whole v1 keyspace,
    /// short of the keys skipped or failed).
    pub async fn verify(&self, keys: Vec<V1Key>, store: &dyn Store) -> Result<Vec<Outcome>, MigrateError> {
        let snapshot = Snapshot::read(store).await?;
        let plan = plan::plan(&V1Keyspace::classify(keys), &snapshot, &self.owner, self.ttl)?;
        let mut differ: Vec<Outcome> = plan
            .changes
            .iter()
            .flat_map(|c| {
                c.sources.iter().map(|s| Outcome {
                    key: s.clone(),
                    status: Status::Failed,
                    detail: format!("the target lacks or differs at {}", c.target),
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
