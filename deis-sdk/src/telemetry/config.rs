//! Telemetry settings: sinks by URI and the interval, from flags or a config file.
//!
//! Sink URIs:
//!
//! | URI | sink |
//! |---|---|
//! | `statsd://HOST:PORT[?prefix=P]` | StatsD over UDP |
//! | `influxdb://HOST:PORT/DB` | InfluxDB 1.x, `POST http://HOST:PORT/write?db=DB` |
//! | `webhook+http://HOST:PORT/PATH` | JSON POSTed to `http://HOST:PORT/PATH` |
//!
//! The config file (`--telemetry-config`) has one `key = value` a line; `#` starts a
//! comment:
//!
//! ```text
//! interval = 10s
//! queue = 8
//! sink = statsd://127.0.0.1:8125
//! sink = influxdb://127.0.0.1:8086/deis
//! ```

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use super::sinks::influx::InfluxSink;
use super::sinks::statsd::StatsdSink;
use super::sinks::webhook::WebhookSink;
use super::sinks::{Sink, SinkSettings};

/// Largest config file read.
pub const MAX_CONFIG_BYTES: usize = 64 * 1024;

/// Where a sink sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkUri {
    /// StatsD over UDP, names under a prefix.
    Statsd {
        /// Receiver.
        addr: SocketAddr,
        /// Name prefix (default `deis`).
        prefix: String,
    },
    /// InfluxDB `/write` URL.
    Influx(String),
    /// JSON webhook URL.
    Webhook(String),
}

impl std::fmt::Display for SinkUri {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Statsd { addr, prefix } => write!(f, "statsd://{addr}?prefix={prefix}"),
            Self::Influx(url) => write!(f, "influxdb+{url}"),
            Self::Webhook(url) => write!(f, "webhook+{url}"),
        }
    }
}

const FORMS: &str = "accepted forms are statsd://HOST:PORT, influxdb://HOST:PORT/DB, webhook+http://HOST:PORT/PATH";

impl FromStr for SinkUri {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("sink {s:?}: {why}; {FORMS}");
        if let Some(rest) = s.strip_prefix("statsd://") {
            let (addr, query) = rest.split_once('?').unwrap_or((rest, ""));
            let addr = addr.parse().map_err(|_| bad("want an IP:PORT after statsd://"))?;
            let prefix = query.strip_prefix("prefix=").unwrap_or("deis");
            if !prefix.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) {
                return Err(bad("the prefix may hold letters, digits, '.', '_' and '-'"));
            }
            return Ok(Self::Statsd { addr, prefix: prefix.to_string() });
        }
        if let Some(rest) = s.strip_prefix("influxdb://") {
            let (host, db) = rest.split_once('/').ok_or_else(|| bad("name the database: influxdb://HOST:PORT/DB"))?;
            check_host(host).map_err(|e| bad(&e))?;
            if db.is_empty() || !db.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
                return Err(bad("the database name may hold letters, digits, '_' and '-'"));
            }
            return Ok(Self::Influx(format!("http://{host}/write?db={db}")));
        }
        if let Some(url) = s.strip_prefix("webhook+") {
            let rest = url.strip_prefix("http://").ok_or_else(|| bad("webhooks are plain http:// URLs"))?;
            let host = rest.split('/').next().unwrap_or_default();
            check_host(host).map_err(|e| bad(&e))?;
            if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(bad("the URL holds spaces or control characters"));
            }
            return Ok(Self::Webhook(url.to_string()));
        }
        Err(bad("unknown scheme"))
    }
}

fn check_host(host: &str) -> Result<(), String> {
    let (name, port) = host.rsplit_once(':').ok_or("want HOST:PORT")?;
    port.parse::<u16>().map_err(|_| "the port is not a number 0-65535")?;
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || ".-[]:".contains(c)) {
        return Err("the host is not a name or address".into());
    }
    Ok(())
}

impl SinkUri {
    /// The sink this URI names.
    pub fn open(&self) -> Arc<dyn Sink> {
        match self {
            Self::Statsd { addr, prefix } => Arc::new(StatsdSink::new(*addr, prefix)),
            Self::Influx(url) => Arc::new(InfluxSink::new(url.clone())),
            Self::Webhook(url) => Arc::new(WebhookSink::new(url.clone())),
        }
    }
}

/// Telemetry settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelemetryConfig {
    /// How often units are read and sinks are fed (default 10 s).
    pub interval: Duration,
    /// Sinks.
    pub sinks: Vec<SinkUri>,
    /// Queue of each sink, in snapshots (default 8).
    pub queue: usize,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self { interval: Duration::from_secs(10), sinks: Vec::new(), queue: 8 }
    }
}

impl TelemetryConfig {
    /// Settings of each sink's queue.
    pub fn sink_settings(&self) -> SinkSettings {
        SinkSettings { queue: self.queue, ..SinkSettings::default() }
    }

    /// Parses a config file's text (see the [module docs](self)) over `self`:
    /// `interval` and `queue` replace, `sink` lines add.
    pub fn merge_file(mut self, text: &str) -> Result<Self, String> {
        if text.len() > MAX_CONFIG_BYTES {
            return Err(format!("the file is {} bytes; at most {MAX_CONFIG_BYTES} are read", text.len()));
        }
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or_default().trim();
            if line.is_empty() {
                continue;
            }
            let at = |e: String| format!("line {}: {e}", n + 1);
            let (key, value) = line.split_once('=').ok_or_else(|| at("want `key = value`".into()))?;
            let value = value.trim();
            match key.trim() {
                "interval" => {
                    self.interval = deis_core::time::parse_duration(value).map_err(|e| at(format!("interval: {e}")))?
                }
                "queue" => {
                    self.queue = value
                        .parse::<usize>()
                        .ok()
                        .filter(|q| (1..=10_000).contains(q))
                        .ok_or_else(|| at("queue: want a whole number from 1 to 10000".into()))?
                }
                "sink" => self.sinks.push(value.parse().map_err(at)?),
                other => return Err(at(format!("unknown key {other:?}; keys are interval, queue and sink"))),
            }
        }
        Ok(self)
    }

    /// Reads a config file (at most [`MAX_CONFIG_BYTES`]) over `self`.
    pub fn merge_path(self, path: &std::path::Path) -> Result<Self, String> {
        use std::io::Read;
        let mut text = String::new();
        let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        file.take(MAX_CONFIG_BYTES as u64 + 1)
            .read_to_string(&mut text)
            .map_err(|e| format!("{}: {e} (want UTF-8 text)", path.display()))?;
        self.merge_file(&text).map_err(|e| format!("{}: {e}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn parses_sinks_and_files() {
        assert_eq!(
            "statsd://127.0.0.1:8125".parse::<SinkUri>().unwrap(),
            SinkUri::Statsd { addr: "127.0.0.1:8125".parse().unwrap(), prefix: "deis".into() }
        );
        assert_eq!(
            "influxdb://localhost:8086/deis".parse::<SinkUri>().unwrap(),
            SinkUri::Influx("http://localhost:8086/write?db=deis".into())
        );
        assert_eq!(
            "webhook+http://10.0.0.1:9000/hook".parse::<SinkUri>().unwrap(),
            SinkUri::Webhook("http://10.0.0.1:9000/hook".into())
        );
        for bad in ["kafka://x", "statsd://nowhere", "influxdb://h:1", "influxdb://h:1/a;b", "webhook+https://h:1/"] {
            let e = bad.parse::<SinkUri>().unwrap_err();
            assert!(e.contains("accepted forms are"), "{bad}: {e}");
        }
        let c = TelemetryConfig::default()
            .merge_file("# telemetry\ninterval = 2s\n\nsink = statsd://127.0.0.1:1  # udp\nqueue=3\n")
            .unwrap();
        assert_eq!((c.interval, c.queue, c.sinks.len()), (Duration::from_secs(2), 3, 1));
        let e = TelemetryConfig::default().merge_file("interval = 1s\ncolour = blue\n").unwrap_err();
        assert!(e.starts_with("line 2: unknown key \"colour\""), "{e}");
        assert!(TelemetryConfig::default().merge_file(&"#".repeat(MAX_CONFIG_BYTES + 1)).is_err());
    }

    proptest! {
        // Outside bytes: the parser never panics, and what it accepts is consistent.
        #[test]
        fn any_file_is_parsed_or_refused(text in "\\PC{0,600}") {
            if let Ok(c) = TelemetryConfig::default().merge_file(&text) {
                prop_assert!(c.queue >= 1);
            }
        }

        #[test]
        fn structured_files_round_trip(interval in 1u64..100_000, queue in 1usize..10_000, port in 1u16..65535) {
            let text = format!("interval = {interval}s\nqueue = {queue}\nsink = statsd://127.0.0.1:{port}\n");
            let c = TelemetryConfig::default().merge_file(&text).unwrap();
            prop_assert_eq!(c.interval, Duration::from_secs(interval));
            prop_assert_eq!(c.queue, queue);
            prop_assert_eq!(c.sinks.len(), 1);
        }

        #[test]
        fn any_sink_uri_is_parsed_or_refused_with_the_forms(s in "(statsd://|influxdb://|webhook\\+http://)?\\PC{0,80}") {
            if let Err(e) = s.parse::<SinkUri>() {
                prop_assert!(e.contains("accepted forms"));
            }
        }
    }
}
