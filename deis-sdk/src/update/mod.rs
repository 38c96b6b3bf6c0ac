//! The update service: 100% automated, zero-downtime updates of the platform's control
//! plane from channels, over the Omaha v3 protocol (as CoreOS' CoreUpdate served it).
//!
//! - [`omaha`]: the wire format (bounded parser, renderer; client side too).
//! - [`OmahaServer`]: `POST /v1/update/` answered from an
//!   [`deis_core::UpdateChannel`] (records and rollout decisions in
//!   `deis_core::update`).
//! - [`admin_routes`]: the admin API behind `deis updates:*` (publish, promote, pause,
//!   resume, instances, status).
//!
//! - [`agent`]: the update agent (`deis-updater`): periodic checks, download with
//!   resume, verification, an [`Applier`](agent::Applier), one replica at a time.
//!
//! `deisd` serves both on its API address; `deis-update-server` serves them alone.

pub mod agent;
mod api;
pub mod omaha;
mod server;

pub use api::{GroupStatus, UpdateStatus, admin_routes};
pub use server::{OMAHA_PATH, OmahaServer, manifest};

use std::sync::Arc;

use deis_core::Store;
use deis_core::update::{StoreUpdateChannel, UpdateChannel};

/// The Omaha server and the admin API on the update records of `store` (users and
/// tokens are the platform's, in the same store): the routes to give
/// [`PlatformBuilder::api_routes`](crate::PlatformBuilder::api_routes).
pub fn routes(store: Arc<dyn Store>) -> axum::Router {
    let channel: Arc<dyn UpdateChannel> = Arc::new(StoreUpdateChannel::new(store.clone()));
    routes_on(store, channel)
}

/// [`routes`] on a channel of your own.
pub fn routes_on(store: Arc<dyn Store>, channel: Arc<dyn UpdateChannel>) -> axum::Router {
    OmahaServer::new(channel.clone()).routes().merge(admin_routes(store, channel))
}

#[cfg(test)]
mod tests;
