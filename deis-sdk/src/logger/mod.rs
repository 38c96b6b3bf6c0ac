//! The logger: syslog ingest into a [`LogStore`](deis_core::logs::LogStore), log drains,
//! and the logger's own HTTP API.
//!
//! - [`SyslogServer`]: UDP (RFC 5426), TCP (RFC 6587, octet counting or LF framing,
//!   detected per connection) and TLS (RFC 5425) listeners that parse what real emitters
//!   send (Docker's syslog driver, util-linux `logger`) and append it, batched, to a store;
//! - [`IngestTokens`] and [`sync_ingest_tokens`]: the apps' ingest tokens, which
//!   network syslog lines must carry when the listener checks them;
//! - [`IngestCounters`]: what the listeners received, parsed, kept raw and dropped, and why;
//! - [`DrainSet`] and [`DrainingLogStore`]: per-app log drains forwarding lines as RFC 5424
//!   over UDP, TCP or TLS, with a bounded queue each, so a dead drain never slows ingest;
//! - [`http`]: `GET /logs/<app>`, `GET /logs/<app>/follow`, `GET /metrics`, `GET /healthz`;
//! - `RedisLogStore` (feature `redis`): logs in Redis, shared by several loggers and
//!   surviving their restarts.
//!
//! `deis-logger` serves all of it; `deisd` embeds the listener and the store.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use deis_sdk::logger::{SyslogConfig, SyslogServer};
//! # let store: Arc<dyn deis_sdk::deis_core::logs::LogStore> = unimplemented!();
//! let config = SyslogConfig {
//!     udp_addr: Some("127.0.0.1:5514".parse()?),
//!     tcp_addr: Some("127.0.0.1:5514".parse()?),
//!     ..SyslogConfig::default()
//! };
//! let server = SyslogServer::start(config, store).await?;
//! println!("syslog on udp {:?} tcp {:?}", server.udp_addr(), server.tcp_addr());
//! server.shutdown().await;
//! # Ok(()) }
//! ```

mod counters;
mod drains;
pub mod http;
mod listener;
#[cfg(feature = "redis")]
mod redis;
mod tls;
pub(crate) mod tokens;

pub use counters::{CounterSnapshot, IngestCounters};
pub use drains::{DrainError, DrainScheme, DrainSet, DrainSetConfig, DrainStats, DrainUrl, DrainingLogStore};
pub use listener::{SyslogConfig, SyslogError, SyslogServer, SyslogSockets, TlsListenerConfig};
#[cfg(feature = "redis")]
pub use redis::{RedisLogStore, RedisLogStoreConfig};
pub use tls::{TlsError, client_config_with_roots, load_root_certs, server_config_from_pem};
pub use tokens::{IngestTokens, sync_ingest_tokens};
