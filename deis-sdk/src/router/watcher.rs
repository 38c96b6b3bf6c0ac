//! Keeps the routing table in step with the store: list, then watch from the listing.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use deis_core::store::records::{self, CERT_DOMAINS_PREFIX, CERTS_PREFIX, ENDPOINTS_PREFIX, Endpoint};
use deis_core::store::{EventKind, Store, StoreError, Watch, WatchEvent};
use deis_core::{App, CertAttachment, Certificate, Domain};
use futures_util::FutureExt;
use tokio::sync::watch;

use super::Shared;
use super::backend::Backend;
use super::policy::TrafficPolicy;
use super::table::{AppTraffic, RouteState, RoutingTable};
use super::tls::CertState;

const APPS_PREFIX: &str = "apps/";
const DOMAINS_PREFIX: &str = "domains/";
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

#[derive(Clone, Copy)]
enum Prefix {
    Apps,
    Domains,
    Endpoints,
    Certs,
    CertDomains,
}

impl Prefix {
    const ALL: [Prefix; 5] = [Prefix::Apps, Prefix::Domains, Prefix::Endpoints, Prefix::Certs, Prefix::CertDomains];

    fn path(self) -> &'static str {
        match self {
            Prefix::Apps => APPS_PREFIX,
            Prefix::Domains => DOMAINS_PREFIX,
            Prefix::Endpoints => ENDPOINTS_PREFIX,
            Prefix::Certs => CERTS_PREFIX,
            Prefix::CertDomains => CERT_DOMAINS_PREFIX,
        }
    }
}

/// Routes and certificates, as the records say.
#[derive(Default)]
struct State {
    routes: RouteState,
    certs: CertState,
}

/// One watch per [`Prefix`], in [`Prefix::ALL`] order.
struct Watches([Watch; 5]);

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
            let [apps, domains, endpoints, certs, cert_domains] = &mut watches.0;
            let (prefix, ev) = tokio::select! {
                ev = apps.next() => (Prefix::Apps, ev),
                ev = domains.next() => (Prefix::Domains, ev),
                ev = endpoints.next() => (Prefix::Endpoints, ev),
                ev = certs.next() => (Prefix::Certs, ev),
                ev = cert_domains.next() => (Prefix::CertDomains, ev),
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

/// Lists every prefix and opens watches from each listing's revision.
async fn load(store: &dyn Store) -> Result<(State, Watches), StoreError> {
    let mut state = State::default();
    let mut watches = Vec::with_capacity(Prefix::ALL.len());
    for prefix in Prefix::ALL {
        let listing = store.list(prefix.path()).await?;
        for kv in &listing.kvs {
            put(&mut state, prefix, &kv.key, kv);
        }
        watches.push(store.watch(prefix.path(), listing.revision + 1).await?);
    }
    let watches = Watches(watches.try_into().unwrap_or_else(|_| unreachable!("one watch per prefix")));
    Ok((state, watches))
}

fn drain(state: &mut State, w: &mut Watches) -> Result<(), String> {
    for (prefix, watch) in Prefix::ALL.into_iter().zip(w.0.iter_mut()) {
        while let Some(ev) = watch.next().now_or_never() {
            apply(state, prefix, ev)?;
        }
    }
    Ok(())
}

/// Applies one watch result; an error or the end of the stream means "reload".
fn apply(state: &mut State, prefix: Prefix, ev: Option<Result<WatchEvent, StoreError>>) -> Result<(), String> {
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

fn put(state: &mut State, prefix: Prefix, key: &str, kv: &deis_core::store::KeyValue) {
    let (certs, state) = (&mut state.certs, &mut state.routes);
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
        Prefix::Certs => {
            let name = key.strip_prefix(CERTS_PREFIX).unwrap_or(key);
            certs.put_cert(name, records::decode::<Certificate>(kv).map_err(|e| e.to_string()));
        }
        Prefix::CertDomains => {
            let domain = key.strip_prefix(CERT_DOMAINS_PREFIX).unwrap_or(key);
            match records::decode::<CertAttachment>(kv) {
                Ok(a) => {
                    certs.attachments.insert(domain.to_string(), a);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "router: ignoring a certificate attachment");
                    certs.attachments.remove(domain);
                }
            }
        }
    }
}

fn remove(state: &mut State, prefix: Prefix, key: &str) {
    let (certs, state) = (&mut state.certs, &mut state.routes);
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
        Prefix::Certs => {
            certs.certs.remove(key.strip_prefix(CERTS_PREFIX).unwrap_or(key));
        }
        Prefix::CertDomains => {
            certs.attachments.remove(key.strip_prefix(CERT_DOMAINS_PREFIX).unwrap_or(key));
        }
    }
}

fn publish(shared: &Shared, all: &State, backends: &mut HashMap<SocketAddr, Arc<Backend>>) {
    let state = &all.routes;
    // Certificates only for domains that still belong to the app that attached them.
    let sni = all.certs.table(|domain| state.domains.get(domain).map(|(_, app)| app.as_str()));
    tracing::debug!(domains = sni.len(), "router: certificates updated");
    shared.sni.store(Arc::new(sni));
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
