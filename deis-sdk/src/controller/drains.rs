//! Log drains (our extension): `GET/POST /v2/apps/<app>/drains/`,
//! `DELETE /v2/apps/<app>/drains/<id or url-encoded url>`, and [`sync_drains`], which
//! keeps a [`DrainSet`] in step with the drain records so forwarding starts and stops
//! live.
//!
//! `POST` takes `{"url": "syslog+tls://host:port"}` (checked with [`DrainUrl::parse`],
//! stored in canonical form) and answers `201` with the drain
//! `{"uuid", "app", "owner", "url", "created", "updated"}`; the list is a page of them.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use std::net::{IpAddr, SocketAddr};

use axum::Extension;
use axum::extract::{Path, State};
use axum::response::IntoResponse;
use deis_core::controller::{ControllerError, DRAINS_PREFIX, Drain, drains_prefix};
use deis_core::store::records;
use deis_core::store::{Store, StoreError, Watch};
use http::StatusCode;
use serde::Deserialize;

use super::error::{ApiError, ApiResult};
use super::extract::{AppPath, AuthUser, JsonBody, Page};
use super::{ApiState, json};
use crate::logger::tokens::pause;
use crate::logger::{DrainSet, DrainUrl};

pub(super) async fn list(
    State(s): State<ApiState>,
    AuthUser(user): AuthUser,
    AppPath(app): AppPath,
    page: Page,
) -> ApiResult {
    Ok(page.render(s.controller.drains(&user, &app).await?))
}

#[derive(Debug, Deserialize)]
pub(super) struct AddBody {
    url: Option<String>,
}

/// The addresses the platform itself listens on (syslog, API, router, builder):
/// drains may not point at them, or every line would come back and be forwarded again.
/// Add it to the API as an `axum::Extension`; without it only the check of the URL's
/// form is made.
#[derive(Debug, Clone, Default)]
pub struct PlatformListeners(pub Vec<SocketAddr>);

/// Longest a drain's host name may take to resolve when it is added.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(2);

impl PlatformListeners {
    /// Whether `target` reaches one of the listeners: same port, and an address of
    /// this host (loopback, unspecified, or one a socket can be bound to here).
    /// A listener bound to one address is taken to answer on all of the host's, which
    /// errs on the safe side.
    fn reaches(&self, target: SocketAddr) -> bool {
        let local = |ip: IpAddr| {
            ip.is_loopback()
                || ip.is_unspecified()
                || ip.to_canonical().is_loopback()
                || std::net::UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
        };
        self.0.iter().any(|l| l.port() == target.port()) && local(target.ip())
    }

    /// Refuses (400) a drain whose host is, or resolves to, one of our listeners.
    async fn check(&self, url: &DrainUrl) -> Result<(), ApiError> {
        if self.0.is_empty() {
            return Ok(());
        }
        let refuse = |why: String| ApiError::from(ControllerError::validation("url", why));
        let authority = url.authority();
        // A name that does not resolve (yet) is accepted, as on Heroku: if it later
        // resolves to us, the hop marker drops the lines that come back.
        let targets: Vec<SocketAddr> =
            match tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host(&authority)).await {
                Ok(Ok(addrs)) => addrs.collect(),
                Ok(Err(_)) | Err(_) => return Ok(()),
            };
        match targets.into_iter().find(|t| self.reaches(*t)) {
            Some(t) => Err(refuse(format!(
                "{url} reaches the platform's own listener on {t}: its lines would come back in an endless loop; \
                 drain to a log service outside the platform"
            ))),
            None => Ok(()),
        }
    }
}

pub(super) async fn add(
    State(s): State<ApiState>,
    AuthUser(user): AuthUser,
    AppPath(app): AppPath,
    listeners: Option<Extension<PlatformListeners>>,
    JsonBody(b): JsonBody<AddBody>,
) -> ApiResult {
    let url = b.url.filter(|u| !u.trim().is_empty()).ok_or_else(|| ApiError::required("url"))?;
    let url = DrainUrl::parse(&url).map_err(|e| ApiError::from(ControllerError::validation("url", e.to_string())))?;
    // Permission first: strangers learn nothing about our listeners.
    s.controller.drains(&user, &app).await?;
    if let Some(Extension(listeners)) = listeners {
        listeners.check(&url).await?;
    }
    Ok(json(StatusCode::CREATED, s.controller.add_drain(&user, &app, &url.to_string()).await?))
}

pub(super) async fn remove(
    State(s): State<ApiState>,
    AuthUser(user): AuthUser,
    AppPath(app): AppPath,
    Path((_, drain)): Path<(String, String)>,
) -> ApiResult {
    // A URL may be given in any accepted spelling: match its canonical form.
    let key = DrainUrl::parse(&drain).map(|u| u.to_string()).unwrap_or(drain);
    s.controller.remove_drain(&user, &app, &key).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// The app of a drain key `drains/<app>/<uuid>`.
fn app_of(key: &str) -> Option<&str> {
    key.strip_prefix(DRAINS_PREFIX)?.split_once('/').map(|(app, _)| app)
}

fn urls(drains: &[Drain]) -> Vec<DrainUrl> {
    drains
        .iter()
        .filter_map(|d| match DrainUrl::parse(&d.url) {
            Ok(u) => Some(u),
            Err(e) => {
                tracing::warn!(app = %d.app, url = %d.url, error = %e, "ignoring a stored drain with an invalid URL");
                None
            }
        })
        .collect()
}

/// Loads every drain into `set` (clearing apps in `applied` that have none any more)
/// and opens a watch from the listing.
async fn load(store: &dyn Store, set: &DrainSet, applied: &mut BTreeSet<String>) -> Result<Watch, StoreError> {
    let listing = store.list(DRAINS_PREFIX).await?;
    let mut by_app: BTreeMap<String, Vec<Drain>> = BTreeMap::new();
    for kv in &listing.kvs {
        match records::decode::<Drain>(kv) {
            Ok(d) => by_app.entry(d.app.to_string()).or_default().push(d),
            Err(e) => tracing::warn!(key = %kv.key, error = %e, "ignoring an unreadable drain record"),
        }
    }
    for app in applied.iter().filter(|a| !by_app.contains_key(*a)) {
        set.set_drains(app, vec![]);
    }
    applied.clear();
    for (app, drains) in &by_app {
        set.set_drains(app, urls(drains));
        applied.insert(app.clone());
    }
    store.watch(DRAINS_PREFIX, listing.revision + 1).await
}

/// Re-reads one app's drains into `set`.
async fn refresh(
    store: &dyn Store,
    set: &DrainSet,
    applied: &mut BTreeSet<String>,
    app: &str,
) -> Result<(), StoreError> {
    let drains: Vec<Drain> = records::list_json(store, &drains_prefix(app)).await?;
    set.set_drains(app, urls(&drains));
    if drains.is_empty() {
        applied.remove(app);
    } else {
        applied.insert(app.to_string());
    }
    Ok(())
}

/// Keeps `set` in step with the drain records of `store` (list, then watch; reloads
/// with backoff when the watch breaks) until `shutdown` completes. Adding a drain
/// through the API starts forwarding within moments; removing it (or destroying the
/// app) stops it.
pub async fn sync_drains(store: Arc<dyn Store>, set: Arc<DrainSet>, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    let mut applied = BTreeSet::new();
    let mut backoff = FIRST_BACKOFF;
    loop {
        let loaded = tokio::select! {
            () = &mut shutdown => return,
            r = load(&*store, &set, &mut applied) => r,
        };
        let mut watch = match loaded {
            Ok(w) => {
                backoff = FIRST_BACKOFF;
                w
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "drains: cannot load drain records");
                if !pause(&mut backoff, shutdown.as_mut()).await {
                    return;
                }
                continue;
            }
        };
        loop {
            let ev = tokio::select! {
                () = &mut shutdown => return,
                ev = watch.next() => ev,
            };
            let app = match ev {
                Some(Ok(ev)) => app_of(&ev.kv.key).map(str::to_string),
                Some(Err(e)) => {
                    tracing::info!(error = %e, "drains: store watch ended; reloading");
                    break;
                }
                None => break,
            };
            if let Some(app) = app
                && let Err(e) = refresh(&*store, &set, &mut applied, &app).await
            {
                tracing::warn!(app, error = %e, "drains: cannot re-read the app's drains; reloading");
                break;
            }
        }
        if !pause(&mut backoff, shutdown.as_mut()).await {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listeners_are_reached_through_any_local_address() {
        let ours = PlatformListeners(vec!["127.0.0.1:5514".parse().unwrap(), "0.0.0.0:8000".parse().unwrap()]);
        for hit in ["127.0.0.1:5514", "127.1.2.3:5514", "0.0.0.0:5514", "[::1]:5514", "[::ffff:127.0.0.1]:8000"] {
            assert!(ours.reaches(hit.parse().unwrap()), "{hit}");
        }
        // Another port, or a host elsewhere (TEST-NET-3, never an address of ours).
        for miss in ["127.0.0.1:5515", "203.0.113.9:5514"] {
            assert!(!ours.reaches(miss.parse().unwrap()), "{miss}");
        }
    }

    #[test]
    fn drain_keys_name_their_app() {
        assert_eq!(app_of("drains/hello/1234"), Some("hello"));
        assert_eq!(app_of("drains/hello"), None);
        assert_eq!(app_of("apps/hello"), None);
    }
}
