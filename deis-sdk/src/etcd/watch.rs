//! Watches that survive reconnects: a task per [`Watch`] that re-creates the etcd watch
//! from the first revision not yet fully delivered, skipping what was delivered already.
//!
//! Why this is exact: etcd sends a watcher's events in revision order. The task keeps
//! the revision of the last event it delivered and the keys delivered at that revision;
//! after a lost stream it asks again from that revision and drops the events it already
//! passed on, so a revision split over two responses is neither lost nor repeated. An
//! empty response (etcd's progress notification) says every event up to its header's
//! revision was sent, which moves the resume point past quiet stretches, so that a
//! watcher idle for long does not resume from a revision compacted meanwhile. If the
//! history is compacted anyway, the watcher gets [`StoreError::Compacted`] and the watch
//! ends: the consumer lists again and re-watches.

use std::collections::HashSet;
use std::time::Duration;

use deis_core::store::{EventKind, KeyValue, Result, Revision, StoreError, Watch, WatchEvent};
use etcd_client::{EventType, WatchOptions, WatchStream};
use tokio::sync::mpsc;

use super::{EtcdStore, convert};

/// Events a watcher may leave unread; the task then waits (etcd buffers meanwhile).
const WATCH_BUFFER: usize = 1024;
/// First pause before re-creating a lost watch; doubled up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(20);
/// Longest pause between attempts while the cluster is unreachable.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Where a watch stands: what to ask etcd for next, and what not to deliver again.
#[derive(Debug, Default)]
struct Resume {
    /// Ask for events from this revision on.
    from: Revision,
    /// Keys already delivered at revision `from`.
    delivered_at_from: HashSet<String>,
}

impl Resume {
    /// Whether `event` is new (and records it as delivered).
    fn admit(&mut self, event: &WatchEvent) -> bool {
        let rev = event.kv.mod_revision;
        if rev < self.from || (rev == self.from && self.delivered_at_from.contains(&event.kv.key)) {
            return false;
        }
        if rev > self.from {
            self.from = rev;
            self.delivered_at_from.clear();
        }
        self.delivered_at_from.insert(event.kv.key.clone());
        true
    }

    /// Every event up to `revision` has been seen.
    fn progress(&mut self, revision: Revision) {
        if revision >= self.from {
            self.from = revision + 1;
            self.delivered_at_from.clear();
        }
    }
}

/// Starts a watch of `prefix` from `start` (0: after now). The first etcd watch is
/// created before this returns, so a compacted start is an error here.
pub(super) async fn start(store: EtcdStore, prefix: &str, start: Revision) -> Result<Watch> {
    let from = if start == 0 { store.status().await? + 1 } else { start };
    let mut resume = Resume { from, delivered_at_from: HashSet::new() };
    let full = store.full(prefix);
    let stream = open(&store, &full, &resume).await?;
    let (tx, rx) = mpsc::channel(WATCH_BUFFER);
    tokio::spawn(async move {
        let mut stream = Some(stream);
        let mut backoff = MIN_BACKOFF;
        loop {
            let mut current = match stream.take() {
                Some(s) => s,
                None => match open(&store, &full, &resume).await {
                    Ok(s) => s,
                    Err(e @ StoreError::Compacted { .. }) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, from = resume.from, "etcd watch: re-creating failed; retrying");
                        tokio::select! {
                            () = tokio::time::sleep(backoff) => {}
                            () = tx.closed() => return,
                        }
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        continue;
                    }
                },
            };
            match pump(&store, &mut current, &mut resume, &tx).await {
                Pumped::ReceiverGone => return,
                Pumped::Compacted(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
                Pumped::StreamLost(reason) => {
                    tracing::info!(%reason, from = resume.from, "etcd watch lost its stream; resuming");
                    backoff = MIN_BACKOFF;
                }
            }
        }
    });
    Ok(Watch::new(rx))
}

/// Creates the etcd watch for `resume`; a compacted start is [`StoreError::Compacted`].
async fn open(store: &EtcdStore, full_prefix: &str, resume: &Resume) -> Result<WatchStream> {
    let mut options =
        WatchOptions::new().with_start_revision(resume.from as i64).with_prev_key().with_progress_notify();
    options = if full_prefix.is_empty() { options.with_all_keys() } else { options.with_prefix() };
    let mut stream = store
        .call(true, || async {
            let mut client = store.inner.client.watch_client().max_decoding_message_size(super::MAX_MESSAGE_BYTES);
            client.watch(full_prefix, Some(options.clone())).await
        })
        .await
        .map_err(|e| store.error(e, "a watch"))?;
    // The first answer says whether the watch was created.
    match stream.message().await.map_err(|e| store.error(e, "a watch"))? {
        Some(r) if r.compact_revision() > 0 => Err(compacted(resume.from, r.compact_revision())),
        Some(r) if r.canceled() => {
            Err(StoreError::Unavailable(format!("etcd refused the watch: {}", r.cancel_reason())))
        }
        Some(_) => Ok(stream),
        None => Err(StoreError::Unavailable("etcd closed the watch stream at once".into())),
    }
}

fn compacted(requested: Revision, oldest: i64) -> StoreError {
    StoreError::Compacted { requested, oldest: oldest as u64 }
}

enum Pumped {
    ReceiverGone,
    Compacted(StoreError),
    StreamLost(String),
}

/// Delivers events until the stream ends or the receiver is dropped.
async fn pump(
    store: &EtcdStore,
    stream: &mut WatchStream,
    resume: &mut Resume,
    tx: &mpsc::Sender<Result<WatchEvent>>,
) -> Pumped {
    loop {
        let message = tokio::select! {
            m = stream.message() => m,
            () = tx.closed() => return Pumped::ReceiverGone,
        };
        let resp = match message {
            Ok(Some(resp)) => resp,
            Ok(None) => return Pumped::StreamLost("the stream ended".into()),
            Err(e) => return Pumped::StreamLost(e.to_string()),
        };
        if resp.compact_revision() > 0 {
            return Pumped::Compacted(compacted(resume.from, resp.compact_revision()));
        }
        if resp.canceled() {
            return Pumped::StreamLost(format!("etcd cancelled the watch: {}", resp.cancel_reason()));
        }
        if resp.events().is_empty() {
            if let Some(h) = resp.header() {
                resume.progress(h.revision() as u64);
            }
            continue;
        }
        for e in resp.events() {
            let event = match event(store, e) {
                Ok(event) => event,
                Err(err) => {
                    // A key that is not ours (not UTF-8): say so, and go on.
                    if tx.send(Err(err)).await.is_err() {
                        return Pumped::ReceiverGone;
                    }
                    continue;
                }
            };
            if resume.admit(&event) && tx.send(Ok(event)).await.is_err() {
                return Pumped::ReceiverGone;
            }
        }
    }
}

fn event(store: &EtcdStore, e: &etcd_client::Event) -> Result<WatchEvent> {
    let Some(kv) = e.kv() else {
        return Err(StoreError::Corrupt { key: String::new(), message: "etcd sent an event without a key".into() });
    };
    let prefix = &store.inner.prefix;
    match e.event_type() {
        EventType::Put => Ok(WatchEvent { kind: EventKind::Put, kv: convert(prefix, kv)? }),
        EventType::Delete => {
            // etcd's delete event carries only the key and the deletion's revision; the
            // previous version fills in what the key was (creation, version, lease).
            let deleted = convert(prefix, kv)?;
            let kv = match e.prev_kv() {
                Some(prev) => {
                    KeyValue { value: Vec::new(), mod_revision: deleted.mod_revision, ..convert(prefix, prev)? }
                }
                None => deleted,
            };
            Ok(WatchEvent { kind: EventKind::Delete, kv })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(key: &str, rev: Revision) -> WatchEvent {
        WatchEvent {
            kind: EventKind::Put,
            kv: KeyValue {
                key: key.into(),
                value: Vec::new(),
                create_revision: rev,
                mod_revision: rev,
                version: 1,
                lease: None,
            },
        }
    }

    #[test]
    fn resuming_inside_a_revision_delivers_each_event_once() {
        let mut r = Resume { from: 5, ..Resume::default() };
        assert!(r.admit(&ev("a", 5)));
        assert!(r.admit(&ev("b", 7)));
        // The stream broke after b; etcd sends revision 7 again, with c.
        assert_eq!(r.from, 7);
        assert!(!r.admit(&ev("b", 7)), "already delivered");
        assert!(r.admit(&ev("c", 7)), "the rest of revision 7");
        assert!(!r.admit(&ev("a", 5)), "older revisions never again");
        assert!(r.admit(&ev("a", 8)));
    }

    #[test]
    fn progress_moves_the_resume_point_past_quiet_stretches() {
        let mut r = Resume { from: 3, ..Resume::default() };
        assert!(r.admit(&ev("a", 3)));
        r.progress(10);
        assert_eq!(r.from, 11);
        assert!(r.delivered_at_from.is_empty());
        r.progress(4);
        assert_eq!(r.from, 11, "an older progress report changes nothing");
        assert!(r.admit(&ev("a", 11)));
    }
}
