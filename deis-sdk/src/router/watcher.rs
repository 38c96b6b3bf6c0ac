//! Keeps the routing table in step with the store: list, then watch from the listing.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use deis_core::store::records::{self, ENDPOINTS_PREFIX, Endpoint};
use deis_core::store::{EventKind, Store, StoreError, Watch, WatchEvent};
use deis_core::{App, Domain};
use futures_util::FutureExt;
use tokio::sync::watch;

use super::Shared;
use super::backend::Backend;
use super::policy::TrafficPolicy;
use super::table::{AppTraffic, RouteState, RoutingTable};

const APPS_PREFIX: &str = "apps/";
const DOMAINS_PREFIX: &str = "domains/";
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

#[derive(Clone, Copy)]
enum Prefix {
    Apps,
    Domains,
    Endpoints,
}

struct Watches {
    apps: Watch,
    domains: Watch,
    endpoints: Watch,
}

/// Runs forever: loads the table, then applies every change; on a broken watch
/// (compaction, store restart) it lists again and re-watches, with backoff.
/// `synced` turns true after the first successful load.
pub(crate) async fn run(store: Arc<dyn Store>, shared: Arc<Shared>, synced: watch::Sender<bool>) {
    let mut backends: HashMap<SocketAddr, Arc<Backend>> = HashMap::new();
    let mut backoff = FIRST_BACKOFF;
    loop {
        let (mut state, mut watches) = match load(&*store).await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "router: could not load routes from the store");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        publish(&shared, &state, &mut backends);
        synced.send_replace(true);
        let watching_since = Instant::now();
        let err = loop {
            let (prefix, ev) = tokio::select! {
                ev = watches.apps.next() => (Prefix::Apps, ev),
                ev = watches.domains.next() => (Prefix::Domains, ev),
                ev = watches.endpoints.next() => (Prefix::Endpoints, ev),
            };
            if let Err(e) = apply(&mut state, prefix, ev) {
                break e;
            }
            // Apply whatever else is already queued before rebuilding once.
            if let Err(e) = drain(&mut state, &mut watches) {
                break e;
            }
            publish(&shared, &state, &mut backends);
        };
        if watching_since.elapsed() > MAX_BACKOFF {
            backoff = FIRST_BACKOFF;
        }
        tracing::info!(reason = %err, "router: store watch ended; reloading routes");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Lists the three prefixes and opens watches from each listing's revision.
async fn load(store: &dyn Store) -> Result<(RouteState, Watches), StoreError> {
    let mut state = RouteState::default();
    let apps = store.list(APPS_PREFIX).await?;
    for kv in &apps.kvs {
        put(&mut state, Prefix::Apps, &kv.key, kv);
    }
    let domains = store.list(DOMAINS_PREFIX).await?;
    for kv in &domains.kvs {
        put(&mut state, Prefix::Domains, &kv.key, kv);
    }
    let endpoints = store.list(ENDPOINTS_PREFIX).await?;
    for kv in &endpoints.kvs {
        put(&mut state, Prefix::Endpoints, &kv.key, kv);
    }
    let watches = Watches {
        apps: store.watch(APPS_PREFIX, apps.revision + 1).await?,
        domains: store.watch(DOMAINS_PREFIX, domains.revision + 1).await?,
        endpoints: store.watch(ENDPOINTS_PREFIX, endpoints.revision + 1).await?,
    };
    Ok((state, watches))
}

fn drain(state: &mut RouteState, w: &mut Watches) -> Result<(), String> {
    for (prefix, watch) in
        [(Prefix::Apps, &mut w.apps), (Prefix::Domains, &mut w.domains), (Prefix::Endpoints, &mut w.endpoints)]
    {
        while let Some(ev) = watch.next().now_or_never() {
            apply(state, prefix, ev)?;
        }
    }
    Ok(())
}

/// Applies one watch result; an error or the end of the stream means "reload".
fn apply(state: &mut RouteState, prefix: Prefix, ev: Option<Result<WatchEvent, StoreError>>) -> Result<(), String> {
    match ev {
        Some(Ok(ev)) => {
            match ev.kind {
                EventKind::Put => put(state, prefix, &ev.kv.key, &ev.kv),
                EventKind::Delete => remove(state, prefix, &ev.kv.key),
            }
            Ok(())
        }
        Some(Err(e)) => Err(e.to_string()),
        None => Err("the store closed the watch".into()),
    }
}

fn put(state: &mut RouteState, prefix: Prefix, key: &str, kv: &deis_core::store::KeyValue) {
    match prefix {
        Prefix::Apps => {
            if let Some(app) = key.strip_prefix(APPS_PREFIX) {
                let traffic = match records::decode::<App>(kv) {
                    Ok(record) => AppTraffic {
                        routable: record.settings.routable,
                        policy: TrafficPolicy::of(&record.settings).map(Arc::new),
                    },
                    Err(e) => {
                        tracing::warn!(app, error = %e, "router: app record unreadable; routing it without settings");
                        AppTraffic::default()
                    }
                };
                state.apps.insert(app.to_string(), traffic);
            }
        }
        Prefix::Domains => match records::decode::<Domain>(kv) {
            Ok(d) => {
                let suffix = key.strip_prefix(DOMAINS_PREFIX).unwrap_or(key);
                state.domains.insert(suffix.to_string(), (d.domain, d.app.into_string()));
            }
            Err(e) => tracing::warn!(error = %e, "router: ignoring a domain record"),
        },
        Prefix::Endpoints => match records::decode::<Endpoint>(kv) {
            Ok(ep) => {
                state.endpoints.insert(key.to_string(), ep);
            }
            Err(e) => {
                tracing::warn!(error = %e, "router: ignoring an endpoint record");
                state.endpoints.remove(key);
            }
        },
    }
}

fn remove(state: &mut RouteState, prefix: Prefix, key: &str) {
    match prefix {
        Prefix::Apps => {
            if let Some(app) = key.strip_prefix(APPS_PREFIX) {
                state.apps.remove(app);
            }
        }
        Prefix::Domains => {
            state.domains.remove(key.strip_prefix(DOMAINS_PREFIX).unwrap_or(key));
        }
        Prefix::Endpoints => {
            state.endpoints.remove(key);
        }
    }
}

fn publish(shared: &Shared, state: &RouteState, backends: &mut HashMap<SocketAddr, Arc<Backend>>) {
    let previous = shared.table.load();
    let table = RoutingTable::build(
        state,
        &shared.config.domain,
        shared.config.platform_host.as_ref(),
        &previous,
        backends,
        shared.pool,
    );
    tracing::debug!(hosts = table.host_count(), endpoints = state.endpoints.len(), "router: routes updated");
    shared.table.store(Arc::new(table));
}
