//! The broker's own figures: sessions started, open and ended (by how), and attaches
//! refused; served on the standalone broker's `GET /metrics` and in deisd's telemetry.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::telemetry::{Kind, MetricFamily};

/// How a session ended, as counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEnd {
    /// The command exited and reported its status.
    Exited,
    /// The client went away first.
    ClientGone,
    /// No input or output for the idle timeout.
    Idle,
    /// The maximum session length (or a batch command's timeout) was reached.
    TimedOut,
    /// The backend failed (no exit status, or the session could not start).
    Failed,
}

impl SessionEnd {
    const ALL: [Self; 5] = [Self::Exited, Self::ClientGone, Self::Idle, Self::TimedOut, Self::Failed];

    /// The `reason` label value.
    pub fn label(self) -> &'static str {
        match self {
            Self::Exited => "exited",
            Self::ClientGone => "client_gone",
            Self::Idle => "idle",
            Self::TimedOut => "timed_out",
            Self::Failed => "failed",
        }
    }
}

/// Counters of a [`TtyService`](super::TtyService), updated as sessions come and go.
#[derive(Debug, Default)]
pub struct TtyCounters {
    started: AtomicU64,
    ended: [AtomicU64; SessionEnd::ALL.len()],
    refused: AtomicU64,
}

impl TtyCounters {
    pub(crate) fn started(&self) {
        self.started.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn ended(&self, how: SessionEnd) {
        self.ended[how as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn refused(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    /// Sessions running now (started and not ended yet).
    pub fn open(&self) -> u64 {
        let ended: u64 = self.ended.iter().map(|n| n.load(Ordering::Relaxed)).sum();
        self.started.load(Ordering::Relaxed).saturating_sub(ended)
    }

    /// The counters as metric families.
    pub fn families(&self) -> Vec<MetricFamily> {
        let mut ended = MetricFamily::new(
            "deis_tty_sessions_ended",
            "Sessions (attached or batch) that ended, by reason.",
            Kind::Counter,
        );
        for how in SessionEnd::ALL {
            ended.push(&[("reason", how.label())], self.ended[how as usize].load(Ordering::Relaxed) as f64);
        }
        let counter = |name: &str, help: &str, n: &AtomicU64| {
            MetricFamily::single(name, help, Kind::Counter, n.load(Ordering::Relaxed) as f64)
        };
        vec![
            counter("deis_tty_sessions_started", "Sessions (attached or batch) whose command started.", &self.started),
            ended,
            MetricFamily::single("deis_tty_sessions_open", "Sessions running now.", Kind::Gauge, self.open() as f64),
            counter(
                "deis_tty_attach_refused",
                "Attach requests refused before the upgrade (bad token, origin, protocol, unknown session).",
                &self.refused,
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_is_started_minus_ended() {
        let c = TtyCounters::default();
        c.started();
        c.started();
        c.ended(SessionEnd::Idle);
        c.refused();
        assert_eq!(c.open(), 1);
        let (_, text) = crate::telemetry::exposition::render(c.families(), None);
        assert!(text.contains("deis_tty_sessions_started_total 2.0\n"), "{text}");
        assert!(text.contains("deis_tty_sessions_ended_total{reason=\"idle\"} 1.0\n"), "{text}");
        assert!(text.contains("deis_tty_sessions_open 1.0\n"), "{text}");
        assert!(text.contains("deis_tty_attach_refused_total 1.0\n"), "{text}");
    }
}
