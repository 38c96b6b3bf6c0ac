//! `deis-logger`: the standalone Deis logger. Receives syslog on UDP, TCP and
//! optionally TLS, keeps lines in a ring buffer or in Redis, forwards them to drains,
//! and serves them over HTTP (`/logs/<app>`, `/logs/<app>/follow`, `/metrics`,
//! `/healthz`). With `--platform-store` it takes an app's lines only with the app's
//! ingest token, read from the platform's store.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use deis_sdk::adapters::StoreUri;
use deis_sdk::daemon::{LogFormat, init_tracing, parse_flags};
use deis_sdk::deis_core::logs::{LogStore, RingConfig, RingLogStore};
use deis_sdk::logger::http::{self, LoggerApi};
use deis_sdk::logger::{
    DrainSet, DrainSetConfig, DrainUrl, DrainingLogStore, IngestTokens, RedisLogStore, RedisLogStoreConfig,
    SyslogConfig, SyslogServer, TlsListenerConfig, load_root_certs, sync_ingest_tokens,
};
use tokio::net::TcpListener;

/// The Deis logger: syslog in, `deis logs` out.
#[derive(Debug, Parser)]
#[command(name = "deis-logger", version, about)]
struct Args {
    /// Syslog UDP listen address (`off` to disable).
    #[arg(long, env = "DEIS_LOGGER_SYSLOG_UDP_ADDR", default_value = "127.0.0.1:5514")]
    syslog_udp_addr: String,
    /// Syslog TCP listen address (`off` to disable).
    #[arg(long, env = "DEIS_LOGGER_SYSLOG_TCP_ADDR", default_value = "127.0.0.1:5514")]
    syslog_tcp_addr: String,
    /// Syslog TLS listen address (RFC 5425); needs --tls-cert and --tls-key.
    #[arg(long, env = "DEIS_LOGGER_SYSLOG_TLS_ADDR", requires_all = ["tls_cert", "tls_key"])]
    syslog_tls_addr: Option<SocketAddr>,
    /// PEM certificate chain of the TLS listener.
    #[arg(long, env = "DEIS_LOGGER_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of the TLS listener.
    #[arg(long, env = "DEIS_LOGGER_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// HTTP API listen address.
    #[arg(long, env = "DEIS_LOGGER_HTTP_ADDR", default_value = "127.0.0.1:8088")]
    http_addr: SocketAddr,
    /// Log store: ring (in memory) or redis (shared, survives restarts).
    #[arg(long, env = "DEIS_LOGGER_STORE", default_value = "ring", value_parser = ["ring", "redis"])]
    store: String,
    /// Redis URL for --store redis.
    #[arg(long, env = "DEIS_LOGGER_REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    /// Lines kept per app.
    #[arg(long, env = "DEIS_LOGGER_LINES_PER_APP", default_value_t = 1000)]
    lines_per_app: usize,
    /// Memory budget of the ring store for all apps, in MiB.
    #[arg(long, env = "DEIS_LOGGER_MEMORY_MB", default_value_t = 256)]
    memory_mb: usize,
    /// Largest syslog message accepted, in bytes.
    #[arg(long, env = "DEIS_LOGGER_MAX_MESSAGE_BYTES", default_value_t = 64 * 1024)]
    max_message_bytes: usize,
    /// Most TCP/TLS syslog connections open at once.
    #[arg(long, env = "DEIS_LOGGER_MAX_CONNECTIONS", default_value_t = 1024)]
    max_connections: usize,
    /// Bearer token required by /logs (without one, /logs is open: keep it on loopback).
    #[arg(long, env = "DEIS_LOGGER_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// A log drain, `APP=URL` (e.g. `hello=syslog+tls://logs.example.com:6514`); repeatable.
    #[arg(long = "drain", env = "DEIS_LOGGER_DRAINS", value_delimiter = ',')]
    drains: Vec<String>,
    /// PEM CA bundle to verify syslog+tls:// drains (default: the system's).
    #[arg(long, env = "DEIS_LOGGER_DRAIN_CA")]
    drain_ca: Option<PathBuf>,
    /// The platform's store (e.g. the etcd deisd uses, `etcd://HOST:PORT`): when given,
    /// a syslog line for an app is taken only with that app's ingest token (`deis
    /// logs:token`), kept in step with the store. Without it, anyone who reaches the
    /// syslog listener can write any app's log: keep it on loopback.
    #[arg(long, env = "DEIS_LOGGER_PLATFORM_STORE", value_name = "URI")]
    platform_store: Option<StoreUri>,
    /// Log format: text or json.
    #[arg(long, env = "DEIS_LOG_FORMAT", default_value = "text")]
    log_format: LogFormat,
    /// Limits of the HTTP API's listener.
    #[command(flatten)]
    listener: deis_sdk::daemon::ListenerFlags,
}

fn optional_addr(flag: &str, v: &str) -> Result<Option<SocketAddr>, String> {
    match v.trim() {
        "" | "off" => Ok(None),
        v => v.parse().map(Some).map_err(|e| format!("--{flag} {v:?}: {e}; give IP:PORT or `off`")),
    }
}

fn parse_drains(specs: &[String]) -> Result<Vec<(String, DrainUrl)>, String> {
    specs
        .iter()
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            let (app, url) = s
                .split_once('=')
                .ok_or_else(|| format!("--drain {s:?}: expected APP=URL, e.g. hello=syslog://h:514"))?;
            Ok((app.trim().to_string(), DrainUrl::parse(url.trim()).map_err(|e| format!("--drain: {e}"))?))
        })
        .collect()
}

async fn run(args: Args) -> Result<(), String> {
    let udp = optional_addr("syslog-udp-addr", &args.syslog_udp_addr)?;
    let tcp = optional_addr("syslog-tcp-addr", &args.syslog_tcp_addr)?;
    let drains = parse_drains(&args.drains)?;
    let base: Arc<dyn LogStore> = match args.store.as_str() {
        "redis" => {
            let mut c = RedisLogStoreConfig::new(&args.redis_url);
            c.lines_per_app = args.lines_per_app;
            Arc::new(RedisLogStore::connect(c).await.map_err(|e| format!("--store redis: {e}"))?)
        }
        _ => Arc::new(RingLogStore::with_config(RingConfig {
            lines_per_app: args.lines_per_app,
            global_bytes: args.memory_mb.saturating_mul(1 << 20),
            ..RingConfig::default()
        })),
    };
    let mut drain_config = DrainSetConfig::default();
    if let Some(ca) = &args.drain_ca {
        drain_config.tls_roots = Some(load_root_certs(ca).map_err(|e| format!("--drain-ca: {e}"))?);
    }
    let origin = drain_config.origin.clone();
    let drain_set = Arc::new(DrainSet::new(drain_config));
    let mut by_app: std::collections::BTreeMap<String, Vec<DrainUrl>> = Default::default();
    for (app, url) in drains {
        by_app.entry(app).or_default().push(url);
    }
    for (app, urls) in by_app {
        drain_set.set_drains(&app, urls);
    }
    let store: Arc<dyn LogStore> = Arc::new(DrainingLogStore::new(base, drain_set.clone()));

    let tokens = match &args.platform_store {
        Some(uri) => {
            let platform = uri.open().await.map_err(|e| format!("--platform-store {uri}: {e}"))?;
            let tokens = IngestTokens::new();
            tokens.load(&*platform).await.map_err(|e| format!("--platform-store {uri}: reading ingest tokens: {e}"))?;
            tokio::spawn(sync_ingest_tokens(platform, tokens.clone(), std::future::pending()));
            Some(tokens)
        }
        None => {
            tracing::warn!("no --platform-store: syslog lines are taken for any app without an ingest token");
            None
        }
    };
    let mut config = SyslogConfig {
        udp_addr: udp,
        tcp_addr: tcp,
        max_message_bytes: args.max_message_bytes,
        max_tcp_connections: args.max_connections,
        own_origin: Some(origin),
        ingest_tokens: tokens,
        ..SyslogConfig::default()
    };
    if let (Some(addr), Some(cert), Some(key)) = (args.syslog_tls_addr, &args.tls_cert, &args.tls_key) {
        config.tls =
            Some(TlsListenerConfig::from_pem_files(addr, cert, key).map_err(|e| format!("--tls-cert/--tls-key: {e}"))?);
    }
    let syslog = SyslogServer::start(config, store.clone()).await.map_err(|e| e.to_string())?;
    let listener = TcpListener::bind(args.http_addr)
        .await
        .map_err(|e| format!("HTTP API on {}: {e}; pick another --http-addr", args.http_addr))?;
    let http_addr = listener.local_addr().map_err(|e| e.to_string())?;
    if args.token.is_none() {
        tracing::warn!("no --token: /logs is open to anyone who can reach {http_addr}");
    }
    let api = LoggerApi {
        store,
        counters: Some(syslog.counters().clone()),
        drains: Some(drain_set.clone()),
        token: args.token.clone(),
    };
    let (stop_http, stopped) = tokio::sync::oneshot::channel::<()>();
    let http_task = tokio::spawn(http::serve(listener, api, args.listener.limits(), async {
        let _ = stopped.await;
    }));
    let show = |a: Option<SocketAddr>| a.map_or("off".to_string(), |a| a.to_string());
    eprintln!(
        "deis-logger is up: syslog udp {} tcp {} tls {}  http http://{}  store {}",
        show(syslog.udp_addr()),
        show(syslog.tcp_addr()),
        show(syslog.tls_addr()),
        http_addr,
        args.store
    );
    deis_sdk::shutdown_signal().await;
    syslog.shutdown().await;
    let _ = stop_http.send(());
    // Followers hold their connections open; give requests a moment, then stop.
    match tokio::time::timeout(Duration::from_secs(2), http_task).await {
        Ok(Ok(Err(e))) => tracing::warn!("HTTP API: {e}"),
        Err(_) => tracing::info!("closing open follow streams"),
        _ => {}
    }
    drain_set.shutdown();
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Args = parse_flags("deis-logger");
    init_tracing(args.log_format);
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("deis-logger: {e}");
            ExitCode::FAILURE
        }
    }
}
