//! Ingest counters of the syslog listeners, and their metric families.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::telemetry::{Kind, MetricFamily};

/// Counters of a [`SyslogServer`](super::SyslogServer), updated atomically by its
/// listeners. Every message received is either appended (parsed, or unparsed and kept
/// raw) or dropped with a reason: nothing disappears without being counted.
#[derive(Debug, Default)]
pub struct IngestCounters {
    /// Messages received (datagrams, TCP/TLS frames), before any check.
    pub received: AtomicU64,
    /// Messages parsed as RFC 5424 or RFC 3164.
    pub parsed: AtomicU64,
    /// Messages that could not be parsed and were kept raw (flagged).
    pub unparsed: AtomicU64,
    /// Messages dropped because they were larger than the configured maximum.
    pub dropped_oversized: AtomicU64,
    /// TCP/TLS connections refused because the connection limit was reached.
    pub dropped_too_many_connections: AtomicU64,
    /// TCP/TLS connections closed on a framing error (bad octet count, TLS failure);
    /// counts connections, the bytes after the error cannot be framed.
    pub dropped_framing_error: AtomicU64,
    /// Messages lost because the store refused the append.
    pub dropped_store_error: AtomicU64,
    /// TLS connections closed because the handshake failed or timed out.
    pub dropped_tls_handshake: AtomicU64,
    /// Messages dropped because a drain sent them back to us (our own `origin`) or
    /// they went through [`MAX_DRAIN_HOPS`](deis_core::logs::syslog::MAX_DRAIN_HOPS)
    /// drains: a drain loop.
    pub dropped_loop: AtomicU64,
    /// Messages for an app without that app's ingest token (a missing, wrong or
    /// rotated-out token): spoofing attempts, or senders to reconfigure.
    pub dropped_bad_token: AtomicU64,
    /// TCP/TLS connections accepted.
    pub connections_accepted: AtomicU64,
    /// TCP/TLS connections open now.
    pub connections_open: AtomicU64,
    /// Payload bytes received on all transports.
    pub bytes_received: AtomicU64,
}

/// A point-in-time copy of [`IngestCounters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[allow(missing_docs)] // Same fields as IngestCounters.
pub struct CounterSnapshot {
    pub received: u64,
    pub parsed: u64,
    pub unparsed: u64,
    pub dropped_oversized: u64,
    pub dropped_too_many_connections: u64,
    pub dropped_framing_error: u64,
    pub dropped_store_error: u64,
    pub dropped_tls_handshake: u64,
    pub dropped_loop: u64,
    pub dropped_bad_token: u64,
    pub connections_accepted: u64,
    pub connections_open: u64,
    pub bytes_received: u64,
}

impl IngestCounters {
    /// Reads every counter (each atomically; the set is not a single snapshot).
    pub fn snapshot(&self) -> CounterSnapshot {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CounterSnapshot {
            received: r(&self.received),
            parsed: r(&self.parsed),
            unparsed: r(&self.unparsed),
            dropped_oversized: r(&self.dropped_oversized),
            dropped_too_many_connections: r(&self.dropped_too_many_connections),
            dropped_framing_error: r(&self.dropped_framing_error),
            dropped_store_error: r(&self.dropped_store_error),
            dropped_tls_handshake: r(&self.dropped_tls_handshake),
            dropped_loop: r(&self.dropped_loop),
            dropped_bad_token: r(&self.dropped_bad_token),
            connections_accepted: r(&self.connections_accepted),
            connections_open: r(&self.connections_open),
            bytes_received: r(&self.bytes_received),
        }
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// The counters as metric families (what the logger's `/metrics` and deisd's
    /// telemetry expose).
    pub fn families(&self) -> Vec<MetricFamily> {
        let s = self.snapshot();
        let by_reason = |name: &str, help: &str, samples: &[(&str, u64)]| {
            let mut f = MetricFamily::new(name, help, Kind::Counter);
            for (reason, n) in samples {
                f.push(&[("reason", reason)], *n as f64);
            }
            f
        };
        let c = |name: &str, help: &str, v: u64| MetricFamily::single(name, help, Kind::Counter, v as f64);
        vec![
            c("deis_logger_messages_received", "Syslog messages received (datagrams and TCP/TLS frames).", s.received),
            c("deis_logger_messages_parsed", "Syslog messages parsed as RFC 5424 or RFC 3164.", s.parsed),
            c(
                "deis_logger_messages_unparsed",
                "Syslog messages that could not be parsed and were kept raw.",
                s.unparsed,
            ),
            by_reason(
                "deis_logger_messages_dropped",
                "Syslog messages dropped, by reason.",
                &[
                    ("oversized", s.dropped_oversized),
                    ("store_error", s.dropped_store_error),
                    ("loop", s.dropped_loop),
                    ("bad_token", s.dropped_bad_token),
                ],
            ),
            by_reason(
                "deis_logger_connections_dropped",
                "TCP/TLS connections refused or closed by the logger, by reason.",
                &[
                    ("too_many_connections", s.dropped_too_many_connections),
                    ("framing_error", s.dropped_framing_error),
                    ("tls_handshake", s.dropped_tls_handshake),
                ],
            ),
            c("deis_logger_connections_accepted", "TCP/TLS connections accepted.", s.connections_accepted),
            MetricFamily::single(
                "deis_logger_connections_open",
                "TCP/TLS connections open now.",
                Kind::Gauge,
                s.connections_open as f64,
            ),
            c("deis_logger_received_bytes", "Syslog payload bytes received.", s.bytes_received),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::exposition;

    #[test]
    fn renders_every_counter_with_help_and_type() {
        let c = IngestCounters::default();
        IngestCounters::add(&c.received, 5);
        IngestCounters::add(&c.dropped_oversized, 2);
        IngestCounters::add(&c.dropped_loop, 4);
        IngestCounters::add(&c.dropped_too_many_connections, 1);
        let (_, out) = exposition::render(c.families(), None);
        assert!(out.contains("deis_logger_messages_received_total 5.0\n"), "{out}");
        assert!(out.contains("deis_logger_messages_dropped_total{reason=\"oversized\"} 2.0\n"), "{out}");
        assert!(out.contains("deis_logger_messages_dropped_total{reason=\"loop\"} 4.0\n"), "{out}");
        assert!(out.contains("deis_logger_connections_dropped_total{reason=\"too_many_connections\"} 1.0\n"), "{out}");
        assert!(out.contains("# TYPE deis_logger_connections_open gauge\ndeis_logger_connections_open 0.0\n"), "{out}");
        // Every sample line belongs to a family declared just before it.
        let mut declared = Vec::new();
        for line in out.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                declared.push(rest.split(' ').next().unwrap().to_string());
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                assert_eq!(declared.last().map(String::as_str), Some(name), "{line}");
            }
        }
        assert_eq!(declared.len(), 8);
    }
}
