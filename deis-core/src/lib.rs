//! # deis-core
//!
//! The domain model of the Deis platform and the small, pluggable traits that every
//! component is built on, together with their embedded default implementations:
//!
//! | trait | job | embedded default |
//! |---|---|---|
//! | [`Store`] | revisioned keys, compare-and-swap, prefix watch, leases | [`RedbStore`](store::RedbStore) (one file, survives restarts) |
//! | [`Scheduler`] | run an app's units as its release and formation say | [`LocalScheduler`](scheduler::LocalScheduler) (child processes) |
//! | [`LogStore`] | recent log lines per app, tail and follow | [`RingLogStore`](logs::RingLogStore) (a bounded ring per app) |
//! | [`TtyBroker`] | `deis run` sessions in an app's environment | [`LocalTtyBroker`](tty::LocalTtyBroker) (PTYs and pipes) |
//! | [`UpdateChannel`] | update service: packages, channels, groups, rollout decisions | [`StoreUpdateChannel`](update::StoreUpdateChannel) (on the `Store`) |
//!
//! [`controller::Controller`] is the controller's logic (users, apps, config, builds,
//! releases, scaling) on top of a `Store` and a `Scheduler`, with no HTTP in it, so an
//! integrator can embed it as is. Network servers and clients live in `deis-sdk`.
//!
//! Every trait comes with a conformance suite in [`testing`] (feature `test-util`) that
//! each implementation, in this crate or elsewhere, runs in its own tests.
//!
//! ## Features
//!
//! - `embedded` (default): the embedded defaults (`RedbStore`, `LocalScheduler`,
//!   `LocalTtyBroker`, `ArtifactStore`), the [`controller`] on top of them and the OS layer
//!   [`sys`]. An adapter author who needs only the traits, the model and the suites
//!   depends on `deis-core` with `default-features = false`.
//! - `test-util`: the conformance suites in [`testing`].

#[cfg(feature = "embedded")]
pub mod artifact;
pub mod auth;
pub mod broker;
#[cfg(feature = "embedded")]
pub mod controller;
pub mod logs;
pub mod model;
pub mod scheduler;
pub mod store;
#[cfg(feature = "embedded")]
pub mod sys;
#[cfg(any(test, feature = "test-util"))]
pub mod testing;
pub mod time;
pub mod tty;
pub mod update;

pub use broker::{BrokerError, ServiceBroker};
pub use logs::{LogError, LogStore};
pub use model::*;
pub use scheduler::{Scheduler, SchedulerError};
pub use store::{Store, StoreError};
pub use tty::{TtyBroker, TtyError};
pub use update::{UpdateChannel, UpdateError};
