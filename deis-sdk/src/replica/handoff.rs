//! The leader's hand-off on a graceful stop: after resigning, a leading replica keeps
//! its units running and its endpoints published until the next leader serves every
//! app it served, so a rolling restart of the replicas (an update) drops no request.

use std::collections::BTreeSet;
use std::time::Duration;

use deis_core::AppName;
use deis_core::store::lock;
use deis_core::store::records::{self, ENDPOINTS_PREFIX, Endpoint};
use tokio::time::Instant;

use super::{ELECTION, ReplicatedScheduler};

/// How often the store is read while waiting.
const POLL: Duration = Duration::from_millis(100);

/// Waits until another replica leads (up to the leadership TTL: when nobody else
/// campaigns, there is no one to hand off to), then until each app this replica routes
/// to has a routed endpoint on another node (up to [`ReplicaConfig::handoff_timeout`](
/// super::ReplicaConfig::handoff_timeout)). Gives up with a warning, never fails: the
/// stop goes on either way.
pub(super) async fn hand_off(s: &ReplicatedScheduler) {
    let id = &s.config.id;
    let started = Instant::now();
    let successor = started + s.config.ttl;
    loop {
        match lock::leader(&*s.store, ELECTION).await {
            Ok(Some(leader)) if leader != *id => break,
            _ if Instant::now() >= successor => {
                tracing::info!(replica = %id, "no other replica took the lead: stopping without a hand-off");
                return;
            }
            _ => tokio::time::sleep(POLL).await,
        }
    }
    let deadline = started + s.config.handoff_timeout;
    loop {
        match uncovered_apps(s).await {
            Ok(apps) if apps.is_empty() => {
                tracing::info!(replica = %id, took = ?started.elapsed(), "handed off: the new leader serves every app");
                return;
            }
            Ok(apps) if Instant::now() >= deadline => {
                tracing::warn!(replica = %id, ?apps, "hand-off timed out: these apps lose their units until the new leader starts them");
                return;
            }
            Err(e) if Instant::now() >= deadline => {
                tracing::warn!(replica = %id, error = %e, "hand-off timed out: the store can't be read");
                return;
            }
            _ => tokio::time::sleep(POLL).await,
        }
    }
}

/// Apps with a routed endpoint on this replica and none on another node.
async fn uncovered_apps(s: &ReplicatedScheduler) -> deis_core::store::Result<BTreeSet<AppName>> {
    let listing = s.store.list(ENDPOINTS_PREFIX).await?;
    let routed: Vec<Endpoint> = listing
        .kvs
        .iter()
        .filter_map(|kv| records::decode::<Endpoint>(kv).ok())
        .filter(|e| crate::router::ROUTED_PROC_TYPES.contains(&e.proc_type.as_str()))
        .collect();
    let (ours, theirs): (Vec<&Endpoint>, Vec<&Endpoint>) = routed.iter().partition(|e| e.node == s.config.id);
    let covered: BTreeSet<&AppName> = theirs.iter().map(|e| &e.app).collect();
    Ok(ours.iter().map(|e| &e.app).filter(|app| !covered.contains(app)).cloned().collect())
}
