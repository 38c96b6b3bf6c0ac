//! # deis-sdk
//!
//! Everything of the Deis platform that talks over a network, on top of
//! [`deis_core`] (re-exported here, so one dependency is enough):
//!
//! - [`controller`]: the controller's REST API (Deis Workflow v2.3 compatible) as an
//!   axum router over a [`deis_core::platform::Platform`];
//! - [`client`]: a typed client of that API (what the `deis` CLI uses);
//! - [`router`]: the HTTP reverse proxy routing `<app>.<domain>` to web units;
//! - [`publisher`]: writes units' endpoints into the store for routers;
//! - [`daemon`]: assembles all of it on embedded defaults (what `deisd` runs).
//!
//! Production adapters (etcd, Docker, ...) come behind cargo features.

pub use deis_core;
pub use deis_core::*;

pub mod client;
pub mod controller;
pub mod daemon;
pub mod logger;
pub mod publisher;
pub mod router;
pub mod tty;
