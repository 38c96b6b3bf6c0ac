//! App logs and log drains: platform events written into the app's log as
//! `deis[controller]` / `deis[scheduler]` lines (as Heroku and Deis did), reading and
//! following the log, and the drain records (`drains/<app>/<uuid>`) that forward it.
//!
//! Events are best effort: a log store that fails or is slow never fails or holds up
//! the request that made the event (each append waits at most [`EVENT_TIMEOUT`]).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::error::RecvError;
use uuid::Uuid;

use super::{Controller, ControllerError, ResourceKind, Result};
use crate::logs::{Cursor, LogEntry, LogFilter, LogFollow, LogLine, LogStore};
use crate::model::{AppName, ProcessType, UnitState, User};
use crate::scheduler::UnitEvent;
use crate::store::Txn;
use crate::store::records::{self, app_key};
use crate::time::Timestamp;

/// Longest a platform event waits for the log store.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(2);

/// Most drains one app may have.
pub const MAX_DRAINS_PER_APP: usize = 20;

/// Longest drain URL accepted.
pub const MAX_DRAIN_URL: usize = 1024;

/// Prefix of all drain records.
pub const DRAINS_PREFIX: &str = "drains/";

/// Key of a drain record.
pub fn drain_key(app: &str, uuid: &Uuid) -> String {
    format!("{DRAINS_PREFIX}{app}/{uuid}")
}

/// Prefix of an app's drains.
pub fn drains_prefix(app: &str) -> String {
    format!("{DRAINS_PREFIX}{app}/")
}

/// A log drain: the app's lines are forwarded to `url` as RFC 5424 syslog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drain {
    /// Drain id.
    pub uuid: Uuid,
    /// App id.
    pub app: AppName,
    /// Who added it.
    pub owner: String,
    /// Where lines go: `syslog://host:port` (TCP), `syslog+udp://...`, `syslog+tls://...`.
    pub url: String,
    /// When it was added.
    pub created: Timestamp,
    /// When it last changed.
    pub updated: Timestamp,
}

/// `web=3 worker=1`.
fn formation(structure: &std::collections::BTreeMap<ProcessType, u32>) -> String {
    structure.iter().map(|(t, n)| format!("{t}={n}")).collect::<Vec<_>>().join(" ")
}

/// The `deis[scheduler]` line for a unit event, if it is worth one.
pub fn unit_event_message(event: &UnitEvent) -> Option<String> {
    let u = &event.unit;
    let name = &u.name;
    Some(match u.state {
        UnitState::Initialized => return None,
        UnitState::Created if u.restarts > 0 => format!("{name} restarted (restart #{}, v{})", u.restarts, u.release),
        UnitState::Created => format!("{name} starting (v{})", u.release),
        UnitState::Up => format!("{name} up (v{})", u.release),
        UnitState::Down => format!("{name} stopping"),
        UnitState::Destroyed => format!("{name} stopped"),
        UnitState::Crashed => match &event.reason {
            Some(reason) => format!("{name} crashed ({reason}); restarting"),
            None => format!("{name} crashed; restarting"),
        },
        UnitState::Error => format!("{name} could not be started; retrying"),
    })
}

impl Controller {
    /// The log store, if the platform has one.
    pub fn logs(&self) -> Option<&Arc<dyn LogStore>> {
        self.logs.as_ref()
    }

    fn log_store(&self) -> Result<&Arc<dyn LogStore>> {
        self.logs.as_ref().ok_or(ControllerError::NoLogStore)
    }

    /// Appends a platform event line of `component` to `app`'s log (best effort).
    pub(crate) async fn log_as(&self, app: &str, component: &str, message: impl Into<String>) {
        let Some(logs) = &self.logs else { return };
        let line = LogLine::platform(app, component, &message.into());
        match tokio::time::timeout(EVENT_TIMEOUT, logs.append(vec![line])).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(app, error = %e, "cannot write a platform event to the app's log"),
            Err(_) => tracing::warn!(app, "the log store did not take a platform event within {EVENT_TIMEOUT:?}"),
        }
    }

    /// Appends a `deis[controller]` event line to `app`'s log (best effort).
    pub(crate) async fn log_event(&self, app: &str, message: impl Into<String>) {
        self.log_as(app, "controller", message).await;
    }

    /// `Scaled to web=3 worker=1 by alice`.
    pub(crate) async fn log_scaled(
        &self,
        app: &str,
        structure: &std::collections::BTreeMap<ProcessType, u32>,
        by: &str,
    ) {
        self.log_event(app, format!("Scaled to {} by {by}", formation(structure))).await;
    }

    /// Forgets `app`'s log (best effort; destroyed apps).
    pub(crate) async fn forget_logs(&self, app: &str) {
        let Some(logs) = &self.logs else { return };
        if let Err(e) = logs.forget(app).await {
            tracing::warn!(app, error = %e, "cannot forget the destroyed app's logs");
        }
    }

    /// The last `n` lines of the app's log that pass `filter`, oldest first (owner or
    /// admin).
    pub async fn app_logs(&self, user: &User, app: &AppName, n: usize, filter: &LogFilter) -> Result<Vec<LogEntry>> {
        self.app_for(user, app).await?;
        let logs = self.log_store()?;
        logs.tail(app, n, filter).await.map_err(|source| ControllerError::Logs { app: app.clone(), source })
    }

    /// Follows the app's log from `cursor` (owner or admin).
    pub async fn follow_app_logs(
        &self,
        user: &User,
        app: &AppName,
        cursor: Cursor,
        filter: LogFilter,
    ) -> Result<LogFollow> {
        self.app_for(user, app).await?;
        let logs = self.log_store()?;
        logs.follow(app, cursor, filter).await.map_err(|source| ControllerError::Logs { app: app.clone(), source })
    }

    /// Writes the scheduler's unit events into the apps' logs as `deis[scheduler]`
    /// lines (`hello.web.1 crashed; restarting`, `hello.web.1 up (v3)` ...) until
    /// `shutdown` completes or the scheduler goes away. Run it as a background task.
    /// Lines for an app destroyed meanwhile are forgotten again.
    pub async fn log_unit_events(&self, shutdown: impl Future<Output = ()>) {
        if self.logs.is_none() {
            return;
        }
        let mut events = self.scheduler.subscribe();
        tokio::pin!(shutdown);
        loop {
            let event = tokio::select! {
                () = &mut shutdown => {
                    // Log what the scheduler already said (units stopped at shutdown).
                    while let Ok(event) = events.try_recv() {
                        self.log_unit_event(&event).await;
                    }
                    return;
                }
                e = events.recv() => e,
            };
            match event {
                Ok(event) => self.log_unit_event(&event).await,
                Err(RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "unit events not logged: the logger fell behind")
                }
                Err(RecvError::Closed) => return,
            }
        }
    }

    async fn log_unit_event(&self, event: &UnitEvent) {
        let Some(message) = unit_event_message(event) else { return };
        let app = event.unit.app.as_str();
        self.log_as(app, "scheduler", message).await;
        // The app may have been destroyed (and its log forgotten) after the event:
        // don't leave a log behind for it.
        if let Ok(None) = self.store.get(&app_key(app)).await {
            self.forget_logs(app).await;
        }
    }

    /// The app's drains, oldest first (owner or admin).
    pub async fn drains(&self, user: &User, app: &AppName) -> Result<Vec<Drain>> {
        self.app_for(user, app).await?;
        let mut drains: Vec<Drain> = records::list_json(&*self.store, &drains_prefix(app)).await?;
        drains.sort_by_key(|d| (d.created, d.uuid));
        Ok(drains)
    }

    /// Every drain of every app (for whatever applies them).
    pub async fn all_drains(&self) -> Result<Vec<Drain>> {
        Ok(records::list_json(&*self.store, DRAINS_PREFIX).await?)
    }

    /// Adds a drain forwarding the app's log to `url`, which the caller has validated
    /// (the SDK checks it with `DrainUrl::parse`). 400 if the app already drains to
    /// `url` or has [`MAX_DRAINS_PER_APP`] drains.
    pub async fn add_drain(&self, user: &User, app: &AppName, url: &str) -> Result<Drain> {
        let url = url.trim();
        if url.is_empty() {
            return Err(ControllerError::validation("url", "This field may not be blank."));
        }
        if url.len() > MAX_DRAIN_URL || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(ControllerError::validation(
                "url",
                format!("invalid drain URL (at most {MAX_DRAIN_URL} bytes, no spaces)"),
            ));
        }
        self.app_for(user, app).await?;
        let _guard = self.lock_app(app).await;
        let (_, rev) = self.app_for(user, app).await?;
        let existing: Vec<Drain> = records::list_json(&*self.store, &drains_prefix(app)).await?;
        if existing.iter().any(|d| d.url == url) {
            return Err(ControllerError::validation("url", format!("The app already drains to {url}")));
        }
        if existing.len() >= MAX_DRAINS_PER_APP {
            return Err(ControllerError::TooManyDrains { max: MAX_DRAINS_PER_APP });
        }
        let now = Timestamp::now();
        let drain = Drain {
            uuid: Uuid::new_v4(),
            app: app.clone(),
            owner: user.username.clone(),
            url: url.to_string(),
            created: now,
            updated: now,
        };
        let key = drain_key(app, &drain.uuid);
        let txn = Txn::new().when(app_key(app), rev).when(&key, 0).put(&key, records::encode(&drain));
        if !self.commit(txn).await? {
            return Err(ControllerError::Concurrent { kind: ResourceKind::App });
        }
        tracing::info!(app = %app, url, "drain added");
        self.log_event(app, format!("Drain {url} added by {}", user.username)).await;
        Ok(drain)
    }

    /// Removes the drain with id or URL `id_or_url`; [`ControllerError::NotFound`] if the
    /// app has no such drain.
    pub async fn remove_drain(&self, user: &User, app: &AppName, id_or_url: &str) -> Result<Drain> {
        self.app_for(user, app).await?;
        let _guard = self.lock_app(app).await;
        let listing = self.store.list(&drains_prefix(app)).await?;
        for kv in listing.kvs {
            let drain: Drain = records::decode(&kv)?;
            if drain.uuid.to_string() == id_or_url || drain.url == id_or_url.trim() {
                if !self.commit(Txn::new().when(&kv.key, kv.mod_revision).delete(&kv.key)).await? {
                    return Err(ControllerError::Concurrent { kind: ResourceKind::Drain });
                }
                tracing::info!(app = %app, url = %drain.url, "drain removed");
                self.log_event(app, format!("Drain {} removed by {}", drain.url, user.username)).await;
                return Ok(drain);
            }
        }
        Err(ControllerError::not_found(ResourceKind::Drain, id_or_url))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Unit;
    use crate::testing::{app_name, process_type};

    fn event(state: UnitState, restarts: u32) -> UnitEvent {
        UnitEvent {
            unit: Unit {
                name: "hello.web.1".into(),
                instance: 1,
                app: app_name("hello"),
                proc_type: process_type("web"),
                number: 1,
                release: 3,
                state,
                address: None,
                node: "n".into(),
                started: None,
                restarts,
                pid: None,
            },
            reason: None,
        }
    }

    #[test]
    fn unit_events_read_like_heroku() {
        let m = |s, r| unit_event_message(&event(s, r));
        assert_eq!(m(UnitState::Initialized, 0), None);
        assert_eq!(m(UnitState::Created, 0).unwrap(), "hello.web.1 starting (v3)");
        assert_eq!(m(UnitState::Created, 2).unwrap(), "hello.web.1 restarted (restart #2, v3)");
        assert_eq!(m(UnitState::Up, 0).unwrap(), "hello.web.1 up (v3)");
        assert_eq!(m(UnitState::Crashed, 0).unwrap(), "hello.web.1 crashed; restarting");
        let killed = UnitEvent { reason: Some("killed by signal 9".into()), ..event(UnitState::Crashed, 0) };
        assert_eq!(unit_event_message(&killed).unwrap(), "hello.web.1 crashed (killed by signal 9); restarting");
        assert_eq!(m(UnitState::Down, 0).unwrap(), "hello.web.1 stopping");
        assert_eq!(m(UnitState::Destroyed, 0).unwrap(), "hello.web.1 stopped");
        assert_eq!(m(UnitState::Error, 0).unwrap(), "hello.web.1 could not be started; retrying");
    }

    #[test]
    fn formations_are_listed_by_type() {
        let ty = |t: &str| ProcessType::new(t).unwrap();
        let s = std::collections::BTreeMap::from([(ty("worker"), 1), (ty("web"), 3)]);
        assert_eq!(formation(&s), "web=3 worker=1");
        assert_eq!(drain_key("hello", &Uuid::nil()), "drains/hello/00000000-0000-0000-0000-000000000000");
    }
}
