//! The Open Service Broker API v2.17 over HTTP: serve any
//! [`ServiceBroker`](deis_core::ServiceBroker) ([`server`]), talk to any broker
//! ([`client`]), and drive operations to their end as a platform does ([`platform`]:
//! polling, orphan mitigation). The brokers of this workspace are
//! [`ManagedBroker`](deis_core::broker::ManagedBroker)s over a backend:
//! [`UserProvided`](deis_core::broker::UserProvided) and, behind features, PostgreSQL
//! (`postgres`) and Redis (`redis`).
//!
//! ```no_run
//! # async fn demo(store: std::sync::Arc<dyn deis_core::Store>) -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use deis_core::broker::{ManagedBroker, UserProvided};
//! use deis_sdk::osb::server::{BasicAuth, OsbServerConfig, router};
//!
//! let broker = ManagedBroker::start(store, "brokers/user-provided/", Arc::new(UserProvided)).await?;
//! let config = OsbServerConfig { auth: Some(BasicAuth::new("platform", "s3cret")), ..Default::default() };
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:9000").await?;
//! // With a header read timeout and a connection cap (plain `axum::serve` has neither).
//! let limits = deis_sdk::controller::ApiLimits::default();
//! deis_sdk::controller::serve(listener, router(Arc::new(broker), config), limits, std::future::pending()).await;
//! # Ok(()) }
//! ```

pub mod client;
pub mod platform;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "redis")]
pub mod redis;
pub mod request;
pub mod server;

pub use client::OsbClient;
pub use platform::{OsbDriver, PollPolicy};
pub use server::{BasicAuth, OsbServerConfig};
