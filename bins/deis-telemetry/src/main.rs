//! `deis-telemetry`: the telemetry agent for hosts that run units but no deisd. It
//! reads the host (`/proc`, `/sys`) and the units running here (found by their
//! `DEIS_UNIT` variable; cgroups v1/v2 or `/proc`), serves them on `GET /metrics`
//! (Prometheus, OpenMetrics or 0.0.4 by `Accept`) and pushes them to the sinks it is
//! given (StatsD, InfluxDB, a JSON webhook), like deisd's own telemetry.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use clap::Parser;
use deis_sdk::daemon::{LogFormat, init_tracing, parse_flags};
use deis_sdk::telemetry::config::{SinkUri, TelemetryConfig};
use deis_sdk::telemetry::http::prometheus_response;
use deis_sdk::telemetry::{Telemetry, UnitCollector, sinks};
use http::{HeaderMap, StatusCode, header};

/// The Deis telemetry agent: host and unit metrics on /metrics and to sinks.
#[derive(Debug, Parser)]
#[command(name = "deis-telemetry", version, about)]
struct Args {
    /// Where `GET /metrics` and `GET /healthz` are served.
    #[arg(long, env = "DEIS_TELEMETRY_LISTEN", default_value = "127.0.0.1:9109")]
    listen: SocketAddr,
    /// A token `/metrics` requires (`Authorization: token T` or `Bearer T`); without
    /// it `/metrics` is open, so listen on a private address.
    #[arg(long, env = "DEIS_TELEMETRY_TOKEN", hide_env_values = true)]
    metrics_token: Option<String>,
    /// Where snapshots are pushed (repeatable): `statsd://HOST:PORT`,
    /// `influxdb://HOST:PORT/DB`, `webhook+http://HOST:PORT/PATH`.
    #[arg(long = "telemetry-sink", value_name = "URI")]
    sinks: Vec<SinkUri>,
    /// How often units are read and snapshots pushed (`10s`).
    #[arg(long = "telemetry-interval", env = "DEIS_TELEMETRY_INTERVAL", value_parser = duration)]
    interval: Option<Duration>,
    /// A config file (`interval = 10s`, `queue = 8`, `sink = URI` lines); flags add to it.
    #[arg(long = "telemetry-config", env = "DEIS_TELEMETRY_CONFIG")]
    config: Option<PathBuf>,
    /// Log format: text or json.
    #[arg(long, env = "DEIS_LOG_FORMAT", default_value = "text")]
    log_format: LogFormat,
    #[command(flatten)]
    listener: deis_sdk::daemon::ListenerFlags,
}

fn duration(s: &str) -> Result<Duration, String> {
    deis_sdk::deis_core::time::parse_duration(s).map_err(|e| e.to_string())
}

impl Args {
    fn config(&self) -> Result<TelemetryConfig, String> {
        let mut config = TelemetryConfig::default();
        if let Some(path) = &self.config {
            config = config.merge_path(path).map_err(|e| format!("--telemetry-config {e}"))?;
        }
        config.sinks.extend(self.sinks.iter().cloned());
        if let Some(i) = self.interval {
            config.interval = i;
        }
        Ok(config)
    }
}

#[derive(Clone)]
struct Agent {
    telemetry: Arc<Telemetry>,
    token: Option<Arc<str>>,
}

/// Whether `headers` carry the token (compared in constant time).
fn authorized(headers: &HeaderMap, token: &str) -> bool {
    use subtle::ConstantTimeEq as _;
    let Some(value) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else { return false };
    let Some((scheme, given)) = value.split_once(' ') else { return false };
    (scheme.eq_ignore_ascii_case("token") || scheme.eq_ignore_ascii_case("bearer"))
        && bool::from(given.trim().as_bytes().ct_eq(token.as_bytes()))
}

async fn metrics(State(agent): State<Agent>, headers: HeaderMap) -> Response {
    if let Some(token) = &agent.token
        && !authorized(&headers, token)
    {
        return (StatusCode::UNAUTHORIZED, "Give the agent's --metrics-token: Authorization: token <t>\n")
            .into_response();
    }
    prometheus_response(&agent.telemetry, &headers)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Args = parse_flags("deis-telemetry");
    init_tracing(args.log_format);
    let config = match args.config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("deis-telemetry: {e}");
            return ExitCode::FAILURE;
        }
    };
    let telemetry = Arc::new(Telemetry::new(true));
    telemetry.set_units(Arc::new(UnitCollector::local_processes("/proc")));
    for sink in &config.sinks {
        telemetry.add_sink(sinks::spawn(sink.open(), config.sink_settings()));
    }
    let listener = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("deis-telemetry: listening on {}: {e}; pick another with --listen", args.listen);
            return ExitCode::FAILURE;
        }
    };
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut rx = stopped.clone();
    let collecting = tokio::spawn(telemetry.clone().run(config.interval, async move {
        let _ = rx.wait_for(|s| *s).await;
    }));
    let agent = Agent { telemetry, token: args.metrics_token.as_deref().map(Arc::from) };
    let app =
        Router::new().route("/metrics", get(metrics)).route("/healthz", get(|| async { "ok\n" })).with_state(agent);
    eprintln!(
        "deis-telemetry is up: http://{}/metrics, {} sink(s), every {:?}",
        args.listen,
        config.sinks.len(),
        config.interval
    );
    deis_sdk::daemon::serve_until_signal(listener, app, &args.listener).await;
    let _ = stop.send(true);
    let _ = collecting.await;
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_checked() {
        let mut h = HeaderMap::new();
        assert!(!authorized(&h, "s3cret"));
        h.insert(header::AUTHORIZATION, "token s3cret".parse().unwrap());
        assert!(authorized(&h, "s3cret"));
        h.insert(header::AUTHORIZATION, "Bearer s3cret".parse().unwrap());
        assert!(authorized(&h, "s3cret"));
        h.insert(header::AUTHORIZATION, "Bearer s3cre".parse().unwrap());
        assert!(!authorized(&h, "s3cret"));
    }

    #[test]
    fn flags_and_file_make_the_config() {
        let a = Args::try_parse_from([
            "deis-telemetry",
            "--telemetry-sink",
            "statsd://127.0.0.1:8125",
            "--telemetry-interval",
            "2s",
        ])
        .unwrap();
        let c = a.config().unwrap();
        assert_eq!((c.interval, c.sinks.len()), (Duration::from_secs(2), 1));
        let e = Args::try_parse_from(["deis-telemetry", "--telemetry-sink", "x://y"]).unwrap_err().to_string();
        assert!(e.contains("accepted forms"), "{e}");
    }
}
