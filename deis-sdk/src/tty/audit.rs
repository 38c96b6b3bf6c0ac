//! Audit of TTY sessions: who ran what, when, for how long, and how it ended.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deis_core::AppName;
use deis_core::logs::{LogLine, LogStore};
use deis_core::tty::ExitStatus;

/// One audited moment of a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditEvent {
    /// A session started.
    Started {
        /// Session id.
        id: String,
        /// Who runs it.
        user: String,
        /// App id.
        app: AppName,
        /// argv.
        command: Vec<String>,
        /// With a terminal.
        tty: bool,
    },
    /// A session ended.
    Ended {
        /// Session id.
        id: String,
        /// Who ran it.
        user: String,
        /// App id.
        app: AppName,
        /// argv.
        command: Vec<String>,
        /// How the command ended; `None` when it was killed by the broker (client
        /// gone, idle timeout, maximum length) before reporting.
        exit: Option<ExitStatus>,
        /// Why the session ended (`exited`, `client disconnected`, `idle timeout`, ...).
        reason: String,
        /// How long it ran.
        duration: Duration,
    },
}

impl AuditEvent {
    /// The app the event belongs to.
    pub fn app(&self) -> &str {
        match self {
            Self::Started { app, .. } | Self::Ended { app, .. } => app,
        }
    }
}

impl fmt::Display for AuditEvent {
    /// One line for an app's log, e.g. `alice ran "bash" (session 1b2c..., tty)` and
    /// `session 1b2c... of alice ("bash") ended: exit code 3 after 12.5s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Started { id, user, command, tty, .. } => {
                let mode = if *tty { "tty" } else { "batch" };
                write!(f, "{user} ran {:?} (session {id}, {mode})", command.join(" "))
            }
            Self::Ended { id, user, command, exit, reason, duration, .. } => {
                let how = exit.map_or_else(|| reason.clone(), |e| e.to_string());
                write!(
                    f,
                    "session {id} of {user} ({:?}) ended: {how} after {:.1}s",
                    command.join(" "),
                    duration.as_secs_f64()
                )
            }
        }
    }
}

/// Where audit events go (the app's log, a file, ...).
#[async_trait]
pub trait AuditSink: Send + Sync + fmt::Debug {
    /// Records `event`. To ensure correctness: must not block for long (the session
    /// waits for it) and must not fail the session: errors are the sink's to report.
    async fn record(&self, event: &AuditEvent);
}

/// The default sink: an `info` event on `tracing` (target `deis::audit`).
#[derive(Debug, Clone, Copy, Default)]
pub struct TracingAudit;

#[async_trait]
impl AuditSink for TracingAudit {
    async fn record(&self, event: &AuditEvent) {
        match event {
            AuditEvent::Started { id, user, app, command, tty } => {
                tracing::info!(target: "deis::audit", session = %id, user, %app, ?command, tty, "tty session started");
            }
            AuditEvent::Ended { id, user, app, command, exit, reason, duration } => {
                tracing::info!(
                    target: "deis::audit",
                    session = %id, user, %app, ?command,
                    exit_code = exit.map(ExitStatus::code),
                    reason,
                    duration_ms = duration.as_millis() as u64,
                    "tty session ended"
                );
            }
        }
    }
}

/// How long [`LogAudit`] waits for the log store before giving up on a line.
const LOG_APPEND_TIMEOUT: Duration = Duration::from_secs(2);

/// A sink writing each event into the app's log as a platform line from component
/// `tty` (`deis[tty]: alice ran "bash" (session ..., tty)`), so `deis logs` shows who
/// ran what, when, and how it ended. Every event also goes to [`TracingAudit`].
#[derive(Debug, Clone)]
pub struct LogAudit {
    logs: Arc<dyn LogStore>,
}

impl LogAudit {
    /// A sink appending to `logs`.
    pub fn new(logs: Arc<dyn LogStore>) -> Self {
        Self { logs }
    }
}

#[async_trait]
impl AuditSink for LogAudit {
    /// Logs the event on `tracing`, then appends it to the app's log; a failing or slow
    /// (over 2 s) log store is reported as a `tracing` warning, never to the session.
    async fn record(&self, event: &AuditEvent) {
        TracingAudit.record(event).await;
        let line = LogLine::platform(event.app(), "tty", &event.to_string());
        match tokio::time::timeout(LOG_APPEND_TIMEOUT, self.logs.append(vec![line])).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(app = event.app(), error = %e, "tty audit: could not append to the app's log"),
            Err(_) => tracing::warn!(
                app = event.app(),
                "tty audit: the log store did not take the line within {LOG_APPEND_TIMEOUT:?}"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deis_core::logs::{LogFilter, LogSource, RingLogStore};
    use deis_core::testing::app_name;

    #[tokio::test]
    async fn log_audit_appends_platform_lines_to_the_apps_log() {
        let store = Arc::new(RingLogStore::default());
        let sink = LogAudit::new(store.clone());
        let cmd = vec!["bash".to_string()];
        sink.record(&AuditEvent::Started {
            id: "s9".into(),
            user: "bob".into(),
            app: app_name("web1"),
            command: cmd.clone(),
            tty: true,
        })
        .await;
        sink.record(&AuditEvent::Ended {
            id: "s9".into(),
            user: "bob".into(),
            app: app_name("web1"),
            command: cmd,
            exit: None,
            reason: "idle timeout".into(),
            duration: Duration::from_secs(2),
        })
        .await;
        let lines = store.tail("web1", 10, &LogFilter::default()).await.unwrap();
        let text: Vec<_> = lines.iter().map(|e| e.line.message.clone()).collect();
        assert_eq!(
            text,
            [r#"bob ran "bash" (session s9, tty)"#, r#"session s9 of bob ("bash") ended: idle timeout after 2.0s"#]
        );
        assert!(lines.iter().all(|e| e.line.source == LogSource::Deis { component: "tty".into() }));
        assert!(store.tail("other", 10, &LogFilter::default()).await.unwrap().is_empty());
    }

    #[test]
    fn lines_say_who_ran_what_and_how_it_ended() {
        let cmd = vec!["sh".to_string(), "-c".into(), "exit 3".into()];
        let start = AuditEvent::Started {
            id: "s1".into(),
            user: "alice".into(),
            app: app_name("a"),
            command: cmd.clone(),
            tty: false,
        };
        assert_eq!(start.to_string(), r#"alice ran "sh -c exit 3" (session s1, batch)"#);
        let end = AuditEvent::Ended {
            id: "s1".into(),
            user: "alice".into(),
            app: app_name("a"),
            command: cmd,
            exit: Some(ExitStatus::Code(3)),
            reason: "exited".into(),
            duration: Duration::from_millis(1500),
        };
        assert_eq!(end.to_string(), r#"session s1 of alice ("sh -c exit 3") ended: exit code 3 after 1.5s"#);
        assert_eq!(end.app(), "a");
    }
}
