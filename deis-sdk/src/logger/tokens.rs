//! The apps' syslog ingest tokens as the listener checks them: [`IngestTokens`], an
//! in-memory copy of the `ingesttokens/` records, and [`sync_ingest_tokens`], which
//! keeps it in step with a [`Store`] (list, then watch), so a token made or rotated
//! through any replica's API is checked by every listener within moments.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use deis_core::controller::{INGEST_TOKENS_PREFIX, IngestToken};
use deis_core::store::{EventKind, Store, StoreError, Watch, records};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The ingest token of each app, by app id. Lines for an app that has none are refused.
#[derive(Debug, Default)]
pub struct IngestTokens {
    tokens: RwLock<HashMap<String, String>>,
}

impl IngestTokens {
    /// No tokens yet (every app's lines are refused until they are loaded).
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// Sets (`Some`) or forgets (`None`) the token of `app`.
    pub fn set(&self, app: &str, token: Option<String>) {
        let mut tokens = self.tokens.write().unwrap_or_else(|e| e.into_inner());
        match token {
            Some(t) => tokens.insert(app.to_string(), t),
            None => tokens.remove(app),
        };
    }

    /// The token of `app`, for senders the platform configures (Docker's log tag).
    pub fn get(&self, app: &str) -> Option<String> {
        self.tokens.read().unwrap_or_else(|e| e.into_inner()).get(app).cloned()
    }

    /// Whether `given` is the token of `app`. The comparison takes the same time
    /// whatever the bytes (both sides are hashed to equal lengths first), so timing
    /// tells a sender nothing about how much of a guess was right.
    pub fn verify(&self, app: &str, given: Option<&str>) -> bool {
        let Some(given) = given else { return false };
        let tokens = self.tokens.read().unwrap_or_else(|e| e.into_inner());
        let Some(want) = tokens.get(app) else { return false };
        Sha256::digest(given.as_bytes()).ct_eq(&Sha256::digest(want.as_bytes())).into()
    }

    fn replace_all(&self, all: HashMap<String, String>) {
        *self.tokens.write().unwrap_or_else(|e| e.into_inner()) = all;
    }

    /// Loads every token record of `store`, replacing what was there; returns the
    /// store revision read, to watch from.
    pub async fn load(&self, store: &dyn Store) -> Result<u64, StoreError> {
        let listing = store.list(INGEST_TOKENS_PREFIX).await?;
        let mut all = HashMap::new();
        for kv in &listing.kvs {
            match records::decode::<IngestToken>(kv) {
                Ok(t) => {
                    all.insert(t.app.to_string(), t.token);
                }
                Err(e) => tracing::warn!(key = %kv.key, error = %e, "ignoring an unreadable ingest token record"),
            }
        }
        self.replace_all(all);
        Ok(listing.revision)
    }
}

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Applies watch events to `tokens` until the watch ends.
async fn follow(tokens: &IngestTokens, mut watch: Watch) -> Option<StoreError> {
    loop {
        let ev = match watch.next().await? {
            Ok(ev) => ev,
            Err(e) => return Some(e),
        };
        let Some(app) = ev.kv.key.strip_prefix(INGEST_TOKENS_PREFIX) else { continue };
        match ev.kind {
            EventKind::Delete => tokens.set(app, None),
            EventKind::Put => match records::decode::<IngestToken>(&ev.kv) {
                Ok(t) => tokens.set(app, Some(t.token)),
                Err(e) => tracing::warn!(key = %ev.kv.key, error = %e, "ignoring an unreadable ingest token record"),
            },
        }
    }
}

/// Keeps `tokens` in step with the token records of `store` (list, then watch;
/// reloads with backoff when the watch breaks) until `shutdown` completes.
pub async fn sync_ingest_tokens(store: Arc<dyn Store>, tokens: Arc<IngestTokens>, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    let mut backoff = FIRST_BACKOFF;
    loop {
        let watched = async {
            let revision = tokens.load(&*store).await?;
            store.watch(INGEST_TOKENS_PREFIX, revision + 1).await
        };
        let ended = tokio::select! {
            () = &mut shutdown => return,
            w = watched => match w {
                Ok(watch) => {
                    backoff = FIRST_BACKOFF;
                    tokio::select! {
                        () = &mut shutdown => return,
                        e = follow(&tokens, watch) => e,
                    }
                }
                Err(e) => Some(e),
            },
        };
        match ended {
            Some(e) => tracing::warn!(error = %e, retry_in = ?backoff, "ingest tokens: store unreadable; reloading"),
            None => tracing::info!("ingest tokens: store watch ended; reloading"),
        }
        if !pause(&mut backoff, shutdown.as_mut()).await {
            return;
        }
    }
}

/// Waits `backoff` (then doubles it, up to 5 s) before a store is read again; false
/// if `shutdown` completed first.
pub(crate) async fn pause(backoff: &mut Duration, shutdown: std::pin::Pin<&mut impl Future<Output = ()>>) -> bool {
    tokio::select! {
        () = shutdown => return false,
        () = tokio::time::sleep(*backoff) => {}
    }
    *backoff = (*backoff * 2).min(MAX_BACKOFF);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_apps_own_token_verifies() {
        let t = IngestTokens::new();
        assert!(!t.verify("hello", Some("x")), "no token yet: refused");
        t.set("hello", Some("s3cret".into()));
        t.set("other", Some("0ther".into()));
        assert!(t.verify("hello", Some("s3cret")));
        for wrong in [None, Some(""), Some("s3cre"), Some("s3cret "), Some("0ther")] {
            assert!(!t.verify("hello", wrong), "{wrong:?}");
        }
        assert_eq!(t.get("hello").as_deref(), Some("s3cret"));
        t.set("hello", None);
        assert!(!t.verify("hello", Some("s3cret")));
    }

    #[tokio::test]
    async fn follows_the_store() {
        let store = deis_core::store::RedbStore::in_memory();
        let tokens = IngestTokens::new();
        let app = deis_core::AppName::new("hello").unwrap();
        let put = |t: &IngestToken| {
            let (store, key, v) = (store.clone(), deis_core::controller::ingest_token_key("hello"), records::encode(t));
            async move { store.put(&key, v).await.unwrap() }
        };
        let first = IngestToken::generate(&app);
        put(&first).await;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(sync_ingest_tokens(store.clone(), tokens.clone(), async {
            let _ = stopped.await;
        }));
        let until = |want: Option<String>| {
            let tokens = tokens.clone();
            async move {
                tokio::time::timeout(Duration::from_secs(10), async {
                    while tokens.get("hello") != want {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                })
                .await
                .expect("the token copy follows the store");
            }
        };
        until(Some(first.token.clone())).await;
        let second = IngestToken::generate(&app);
        put(&second).await;
        until(Some(second.token.clone())).await;
        assert!(!tokens.verify("hello", Some(&first.token)), "the old token is refused after rotation");
        store.delete(&deis_core::controller::ingest_token_key("hello")).await.unwrap();
        until(None).await;
        let _ = stop.send(());
        task.await.unwrap();
    }
}
