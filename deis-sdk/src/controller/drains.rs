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

use axum::extract::{Path, State};
use axum::response::IntoResponse;
use deis_core::controller::{DRAINS_PREFIX, Drain, drains_prefix};
use deis_core::store::records;
use deis_core::store::{Store, StoreError, Watch};
use http::StatusCode;
use serde::Deserialize;

use super::error::{ApiError, ApiResult};
use super::extract::{AppPath, AuthUser, JsonBody, Page};
use super::{ApiState, json};
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

pub(super) async fn add(
    State(s): State<ApiState>,
    AuthUser(user): AuthUser,
    AppPath(app): AppPath,
    JsonBody(b): JsonBody<AddBody>,
) -> ApiResult {
    let url = b.url.filter(|u| !u.trim().is_empty()).ok_or_else(|| ApiError::required("url"))?;
    let url = DrainUrl::parse(&url)
        .map_err(|e| ApiError::from(deis_core::controller::ControllerError::validation("url", e.to_string())))?;
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
const MAX_BACKOFF: Duration = Duration::from_secs(5);

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
                tokio::select! {
                    () = &mut shutdown => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
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
        tokio::select! {
            () = &mut shutdown => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drain_keys_name_their_app() {
        assert_eq!(app_of("drains/hello/1234"), Some("hello"));
        assert_eq!(app_of("drains/hello"), None);
        assert_eq!(app_of("apps/hello"), None);
    }
}
