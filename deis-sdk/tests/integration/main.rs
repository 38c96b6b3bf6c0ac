//! deis-sdk integration tests against real peers on loopback (etcd, Docker engines and
//! swarm, the registry, PostgreSQL, Redis, OSB and TTY peers) and in-process fakes where no
//! engine can run here (the Kubernetes and Marathon previews).
//!
//! One test binary with a module per suite: each integration-test binary links the whole
//! SDK with its adapters, so one binary instead of seventeen saves minutes of linking and
//! gigabytes of disk. nextest still runs every test in its own process. A suite that needs
//! an adapter is compiled with that adapter's feature.

#[cfg(feature = "docker")]
mod busybox;
#[cfg(feature = "etcd")]
mod etcd_controller;
#[cfg(feature = "etcd")]
mod etcd_store;
mod logger_docker;
mod logger_drains;
mod logger_redis;
mod logger_syslog;
mod osb;
mod osb_peers;
#[cfg(feature = "postgres")]
mod osb_postgres;
#[cfg(feature = "redis")]
mod osb_redis;
#[cfg(feature = "registry")]
mod registry_push;
mod scheduler_docker;
#[cfg(all(feature = "kubernetes", feature = "marathon"))]
mod scheduler_previews;
#[cfg(feature = "swarm")]
mod scheduler_swarm;
mod telemetry_docker;
mod tty_broker;
mod tty_docker;
