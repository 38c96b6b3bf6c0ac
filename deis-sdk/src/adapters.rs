//! Parts picked by a URI, as operators name them on the command line: one parser per
//! part, shared by `deisd`, the role daemons and the examples.
//!
//! | part | forms |
//! |---|---|
//! | [`StoreUri`] | `redb:PATH`, `etcd://HOST:PORT[,HOST:PORT…][?…]`, `etcds://…?ca=PATH[…]` (feature `etcd`; see [`EtcdUri`]) |
//! | [`LogStoreUri`] | `ring`, `redis://HOST[:PORT][/DB]` (feature `redis`) |
//! | [`SchedulerUri`] | `local`, `docker` (feature `docker`), `swarm` (feature `swarm`), `kubernetes` and `marathon` (previews, features of the same names) |
//!
//! Parsing checks the form only; [`StoreUri::open`] and [`LogStoreUri::open`] connect.
//! An unknown form is a [`UriError`] naming the accepted ones:
//!
//! ```
//! use deis_sdk::adapters::{LogStoreUri, StoreUri};
//!
//! let store: StoreUri = "redb:/var/lib/deis/store.redb".parse().unwrap();
//! assert_eq!(store.to_string(), "redb:/var/lib/deis/store.redb");
//! let err = "mongodb://db".parse::<StoreUri>().unwrap_err();
//! assert!(err.to_string().starts_with(r#"unknown store "mongodb://db": accepted forms are redb:PATH, etcd://"#));
//! assert_eq!("ring".parse::<LogStoreUri>().unwrap(), LogStoreUri::Ring);
//! ```

mod etcd_uri;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use deis_core::logs::{LogError, LogStore, RingConfig, RingLogStore};
use deis_core::store::{RedbStore, Store, StoreError};

pub use etcd_uri::EtcdUri;

/// A URI that names no known form of its part.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason} {part} {given:?}: accepted forms are {accepted}")]
pub struct UriError {
    /// The part (`store`, `log store`, `scheduler`).
    pub part: &'static str,
    /// What was given.
    pub given: String,
    /// What is wrong (`unknown`, `incomplete`, `unsupported in this build:`).
    pub reason: &'static str,
    /// The accepted forms.
    pub accepted: &'static str,
}

/// Which [`Store`] to use.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreUri {
    /// `redb:PATH`: the embedded store, one file ([`RedbStore`]).
    Redb(PathBuf),
    /// `etcd://…` or `etcds://…`: an etcd v3 cluster (`EtcdStore`, feature `etcd`),
    /// as given and as parsed.
    Etcd(String, EtcdUri),
}

impl StoreUri {
    /// The accepted forms, for help texts and errors.
    pub const ACCEPTED: &'static str = "redb:PATH, etcd://HOST:PORT[,HOST:PORT...][?prefix=NS/&user=NAME&password-file=PATH], etcds://HOST:PORT[,...]?ca=PATH[&cert=PATH&key=PATH][&...]";

    /// Opens the store.
    pub async fn open(&self) -> Result<Arc<dyn Store>, StoreError> {
        match self {
            Self::Redb(path) => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    tokio::fs::create_dir_all(dir).await.map_err(StoreError::backend)?;
                }
                let store = RedbStore::open(path).await?;
                // Password hashes and tokens: readable by the platform's user only.
                tokio::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                    .await
                    .map_err(StoreError::backend)?;
                Ok(store)
            }
            #[cfg(feature = "etcd")]
            Self::Etcd(_, uri) => Ok(crate::etcd::EtcdStore::connect(uri.config().await?).await?),
            #[cfg(not(feature = "etcd"))]
            Self::Etcd(..) => unreachable!("parsing refuses etcd:// without the etcd feature"),
        }
    }
}

impl FromStr for StoreUri {
    type Err = UriError;

    fn from_str(s: &str) -> Result<Self, UriError> {
        let error = |reason| UriError { part: "store", given: s.to_string(), reason, accepted: Self::ACCEPTED };
        match s.split_once(':') {
            Some(("redb", "")) => Err(error("incomplete")),
            Some(("redb", path)) => Ok(Self::Redb(PathBuf::from(path))),
            _ => match EtcdUri::parse(s) {
                Some(Ok(_)) if !cfg!(feature = "etcd") => Err(error("unsupported in this build (feature etcd):")),
                Some(Ok(uri)) => Ok(Self::Etcd(s.to_string(), uri)),
                Some(Err(etcd_uri::EtcdUriError::Incomplete)) => Err(error("incomplete")),
                Some(Err(etcd_uri::EtcdUriError::Invalid)) => Err(error("invalid")),
                None => Err(error("unknown")),
            },
        }
    }
}

impl fmt::Display for StoreUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Redb(path) => write!(f, "redb:{}", path.display()),
            Self::Etcd(given, _) => f.write_str(given),
        }
    }
}

/// Which [`LogStore`] keeps app logs.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LogStoreUri {
    /// `ring`: in memory, a bounded ring per app ([`RingLogStore`]); lost on restart.
    Ring,
    /// `redis://…`: in Redis (capped list per app plus pub/sub); survives restarts and
    /// can be shared by several daemons. Needs feature `redis`.
    Redis(String),
}

impl LogStoreUri {
    /// The accepted forms, for help texts and errors.
    pub const ACCEPTED: &'static str = "ring, redis://HOST[:PORT][/DB]";

    /// Opens the log store, keeping `lines_per_app` lines per app.
    pub async fn open(&self, lines_per_app: usize) -> Result<Arc<dyn LogStore>, LogError> {
        match self {
            Self::Ring => {
                Ok(Arc::new(RingLogStore::with_config(RingConfig { lines_per_app, ..RingConfig::default() })))
            }
            #[cfg(feature = "redis")]
            Self::Redis(url) => {
                let mut config = crate::logger::RedisLogStoreConfig::new(url.clone());
                config.lines_per_app = lines_per_app;
                Ok(Arc::new(crate::logger::RedisLogStore::connect(config).await?))
            }
            #[cfg(not(feature = "redis"))]
            Self::Redis(_) => unreachable!("parsing refuses redis:// without the redis feature"),
        }
    }
}

impl FromStr for LogStoreUri {
    type Err = UriError;

    fn from_str(s: &str) -> Result<Self, UriError> {
        let error = |reason| UriError { part: "log store", given: s.to_string(), reason, accepted: Self::ACCEPTED };
        match s {
            "ring" => Ok(Self::Ring),
            _ if s.starts_with("redis://") || s.starts_with("rediss://") => {
                if s.split_once("://").is_some_and(|(_, rest)| rest.is_empty()) {
                    Err(error("incomplete"))
                } else if cfg!(feature = "redis") {
                    Ok(Self::Redis(s.to_string()))
                } else {
                    Err(error("unsupported in this build (feature redis):"))
                }
            }
            _ => Err(error("unknown")),
        }
    }
}

impl fmt::Display for LogStoreUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ring => f.write_str("ring"),
            Self::Redis(url) => f.write_str(url),
        }
    }
}

/// Which [`Scheduler`](deis_core::Scheduler) runs units.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum SchedulerUri {
    /// `local`: child processes on this machine ([`LocalScheduler`](deis_core::scheduler::LocalScheduler)).
    #[default]
    Local,
    /// `docker`: containers on one or more Docker engines, placed over them
    /// (`scheduler::docker::DockerScheduler`, feature `docker`).
    Docker,
    /// `swarm`: the services of a Docker Swarm, through a manager
    /// (`scheduler::swarm::SwarmScheduler`, feature `swarm`).
    Swarm,
    /// `kubernetes`: pods of a Kubernetes cluster (preview; `scheduler::kubernetes`,
    /// feature `kubernetes`).
    Kubernetes,
    /// `marathon`: tasks of Marathon apps (preview; `scheduler::marathon`, feature
    /// `marathon`).
    Marathon,
}

impl SchedulerUri {
    /// The accepted forms, for help texts and errors.
    pub const ACCEPTED: &'static str = "local, docker, swarm, kubernetes, marathon";
}

impl FromStr for SchedulerUri {
    type Err = UriError;

    fn from_str(s: &str) -> Result<Self, UriError> {
        match s {
            "local" => Ok(Self::Local),
            "docker" => Ok(Self::Docker),
            "swarm" => Ok(Self::Swarm),
            "kubernetes" => Ok(Self::Kubernetes),
            "marathon" => Ok(Self::Marathon),
            _ => Err(UriError { part: "scheduler", given: s.to_string(), reason: "unknown", accepted: Self::ACCEPTED }),
        }
    }
}

impl fmt::Display for SchedulerUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Local => f.write_str("local"),
            Self::Docker => f.write_str("docker"),
            Self::Swarm => f.write_str("swarm"),
            Self::Kubernetes => f.write_str("kubernetes"),
            Self::Marathon => f.write_str("marathon"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn store_forms() {
        assert_eq!("redb:store.redb".parse::<StoreUri>().unwrap(), StoreUri::Redb("store.redb".into()));
        let e = "redb:".parse::<StoreUri>().unwrap_err();
        assert!(e.to_string().starts_with(r#"incomplete store "redb:": accepted forms are redb:PATH, etcd://"#), "{e}");
        assert_eq!("/var/lib/x".parse::<StoreUri>().unwrap_err().reason, "unknown");
        let etcd = "etcd://10.0.0.1:2379,10.0.0.2:2379?prefix=deis/".parse::<StoreUri>();
        if cfg!(feature = "etcd") {
            let StoreUri::Etcd(_, uri) = etcd.unwrap() else { panic!("an etcd URI") };
            assert_eq!(uri.endpoints(), ["http://10.0.0.1:2379", "http://10.0.0.2:2379"]);
            assert_eq!(uri.prefix, "deis/");
        } else {
            assert!(etcd.unwrap_err().to_string().contains("feature etcd"));
        }
        assert_eq!("etcd://".parse::<StoreUri>().unwrap_err().reason, "incomplete");
        assert_eq!("etcds://h:1".parse::<StoreUri>().unwrap_err().reason, "invalid");
    }

    #[test]
    fn log_store_forms() {
        assert_eq!("ring".parse::<LogStoreUri>().unwrap(), LogStoreUri::Ring);
        let e = "redis://".parse::<LogStoreUri>().unwrap_err();
        assert_eq!(e.reason, "incomplete");
        let e = "memcached://x".parse::<LogStoreUri>().unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"unknown log store "memcached://x": accepted forms are ring, redis://HOST[:PORT][/DB]"#
        );
        let redis = "redis://127.0.0.1:6379/2".parse::<LogStoreUri>();
        if cfg!(feature = "redis") {
            assert_eq!(redis.unwrap(), LogStoreUri::Redis("redis://127.0.0.1:6379/2".into()));
        } else {
            assert!(redis.unwrap_err().to_string().contains("feature redis"));
        }
    }

    #[test]
    fn scheduler_forms() {
        assert_eq!("local".parse::<SchedulerUri>().unwrap(), SchedulerUri::Local);
        let e = "fleet".parse::<SchedulerUri>().unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"unknown scheduler "fleet": accepted forms are local, docker, swarm, kubernetes, marathon"#
        );
        assert_eq!("docker".parse::<SchedulerUri>().unwrap(), SchedulerUri::Docker);
        for form in ["swarm", "kubernetes", "marathon"] {
            assert_eq!(form.parse::<SchedulerUri>().unwrap().to_string(), form);
        }
    }

    #[tokio::test]
    async fn a_redb_store_opens_in_a_new_directory() {
        let dir = tempfile::tempdir().unwrap();
        let uri: StoreUri = format!("redb:{}", dir.path().join("a/b/store.redb").display()).parse().unwrap();
        let store = uri.open().await.unwrap();
        store.put("k", b"v".to_vec()).await.unwrap();
        assert_eq!(store.get("k").await.unwrap().unwrap().value, b"v");
    }

    proptest! {
        /// Whatever the input, parsing answers (never panics), and what parses prints back
        /// as itself.
        #[test]
        fn parse_display_round_trip(s in ".{0,40}") {
            if let Ok(u) = s.parse::<StoreUri>() { prop_assert_eq!(u.to_string(), s.clone()); }
            if let Ok(u) = s.parse::<LogStoreUri>() { prop_assert_eq!(u.to_string(), s.clone()); }
            if let Ok(u) = s.parse::<SchedulerUri>() { prop_assert_eq!(u.to_string(), s); }
        }
    }
}
