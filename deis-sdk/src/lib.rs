//! # deis-sdk
//!
//! The Deis platform as a toolkit. Start with [`Platform::builder`]: the whole
//! platform (controller API, router, scheduler, logs, `deis run`) in your process,
//! every part an `Arc<dyn Trait>` you may supply, embedded defaults for the rest:
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let platform = deis_sdk::Platform::builder("/var/lib/deis").domain("deis.example.com").start().await?;
//! deis_sdk::shutdown_signal().await;
//! platform.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! The parts, each usable on its own:
//!
//! - [`assembly`]: the [`Platform`] builder and its listeners;
//! - [`adapters`]: parts picked by URI (`redb:PATH`, `ring`, `redis://…`, `local`), as
//!   the reference binaries take them;
//! - [`controller`]: the controller's REST API (Deis Workflow v2.3 compatible) as an
//!   axum router over the controller logic ([`deis_core::controller`]);
//! - [`client`]: a typed client of that API (what the `deis` CLI uses);
//! - [`router`]: the HTTP reverse proxy routing `<app>.<domain>` to web units, over
//!   plain HTTP and TLS (SNI, per-domain certificates);
//! - [`certs`]: reading the TLS certificates users add and the platform's own;
//! - [`publisher`]: writes units' endpoints into the store for routers;
//! - [`logger`]: syslog listeners, drains, the Redis log store, the logger's HTTP API;
//! - [`tty`]: `deis run` sessions over WebSockets, client and broker;
//! - `builder` (feature `builder`): `git push` over SSH, built by the controller.
//! - [`telemetry`]: collectors, Prometheus `/metrics`, StatsD/InfluxDB/webhook sinks,
//!   the dashboard and autoscaling;
//! - [`scheduler`]: [`deis_core::scheduler`] plus the container backends (`docker`) and
//!   the previews driving an orchestrator (`kubernetes`, `marathon`).
//! - `registry` (feature `registry`): images pushed with `deis push`, the platform
//!   registry and the embedded `docker-registry`.
//!
//! Everything of [`deis_core`] (the traits, the model, the embedded defaults and, with
//! feature `test-util`, the conformance suites) is re-exported here, so one dependency
//! is enough. Production adapters come behind cargo features (`redis`, `docker`,
//! `etcd`, and the `kubernetes` and `marathon` previews).

pub use deis_core;
pub use deis_core::*;

pub mod adapters;
pub mod addons;
pub mod assembly;
#[cfg(feature = "builder")]
pub mod builder;
pub mod certs;
pub mod client;
pub mod controller;
#[cfg(feature = "daemon")]
pub mod daemon;
#[cfg(feature = "etcd")]
pub mod etcd;
pub mod logger;
pub mod migrate;
pub mod osb;
pub mod publisher;
#[cfg(feature = "registry")]
pub mod registry;
pub mod replica;
pub mod router;
pub mod scheduler;
pub mod telemetry;
pub mod tty;
pub mod update;

/// The README's Rust examples compile (`cargo test --doc`).
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;

pub use assembly::{
    Listen, MIN_TTY_SECRET_BYTES, Platform, PlatformBuilder, SchedulerContext, StartError, SyslogListen,
};

/// Resolves on the first SIGTERM or SIGINT (and says which): what the reference daemons
/// wait for before a graceful [`Platform::shutdown`]. See [`deis_core::sys::signals`].
pub use deis_core::sys::signals::shutdown_signal;
