//! `deisd`: the Deis platform on embedded defaults (controller API, router, local
//! scheduler, embedded store) in one process and one data directory.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use deis_sdk::daemon::{Daemon, DaemonConfig, LogStoreChoice};
use deis_sdk::deis_core::model::limits;
use deis_sdk::deis_core::scheduler::Capacity;

/// The Deis platform daemon: controller API, router and local scheduler in one process.
#[derive(Debug, Parser)]
#[command(name = "deisd", version, about)]
struct Args {
    /// Directory holding all platform state (store, builds, scheduler state).
    #[arg(long, env = "DEIS_DATA_DIR", default_value = ".deis/data")]
    data_dir: PathBuf,
    /// Controller API listen address.
    #[arg(long, env = "DEIS_API_ADDR", default_value = "127.0.0.1:8000")]
    api_addr: SocketAddr,
    /// Router (app traffic) listen address.
    #[arg(long, env = "DEIS_ROUTER_ADDR", default_value = "127.0.0.1:8080")]
    router_addr: SocketAddr,
    /// Platform domain: app `hello` answers at `hello.<domain>`.
    #[arg(long, env = "DEIS_DOMAIN", default_value = "localhost")]
    domain: String,
    /// CPU this node offers to units (`4`, `3500m`); default: all cores.
    #[arg(long, env = "DEIS_CPU")]
    cpu: Option<String>,
    /// Memory this node offers to units (`8G`, `512M`); default: all memory.
    #[arg(long, env = "DEIS_MEMORY")]
    memory: Option<String>,
    /// Who may register: enabled, admin_only or disabled.
    #[arg(long, env = "DEIS_REGISTRATION", default_value = "enabled")]
    registration: String,
    /// Largest source upload accepted by `deis deploy`, in MiB.
    #[arg(long, env = "DEIS_MAX_UPLOAD_MB", default_value_t = 256)]
    max_upload_mb: usize,
    /// Log format: text or json.
    #[arg(long, env = "DEIS_LOG_FORMAT", default_value = "text")]
    log_format: String,
    /// Where apps' syslog lines are taken, on UDP and TCP (`off` for no listener).
    #[arg(long, env = "DEIS_SYSLOG_ADDR", default_value = "127.0.0.1:5514")]
    syslog_addr: String,
    /// Log lines kept per app.
    #[arg(long, env = "DEIS_LOG_LINES_PER_APP", default_value_t = 1000)]
    log_lines_per_app: usize,
    /// Where app logs are kept: ring (in memory) or redis (survives restarts; see --redis-url).
    #[arg(long, env = "DEIS_LOG_STORE", default_value = "ring")]
    log_store: String,
    /// Redis server of `--log-store redis`.
    #[arg(long, env = "DEIS_REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
}

fn config(args: &Args) -> Result<DaemonConfig, String> {
    let mut c = DaemonConfig::new(&args.data_dir);
    c.api_addr = args.api_addr;
    c.router_addr = args.router_addr;
    c.domain = args.domain.trim_end_matches('.').to_ascii_lowercase();
    let mut capacity = Capacity::of_this_machine();
    if let Some(cpu) = &args.cpu {
        capacity.cpu_millis = limits::parse_cpu(cpu).map_err(|e| format!("--cpu: {}", e.message))?.0;
    }
    if let Some(mem) = &args.memory {
        capacity.memory_bytes = limits::parse_memory(mem).map_err(|e| format!("--memory: {}", e.message))?.0;
    }
    c.capacity = capacity;
    c.registration = args.registration.parse().map_err(|e| format!("--registration: {e}"))?;
    c.max_upload_bytes = args.max_upload_mb.saturating_mul(1 << 20);
    c.syslog_addr = match args.syslog_addr.as_str() {
        "off" | "none" | "" => None,
        a => Some(a.parse().map_err(|e| format!("--syslog-addr {a:?}: {e} (want IP:PORT, or off)"))?),
    };
    if args.log_lines_per_app == 0 {
        return Err("--log-lines-per-app must be at least 1".into());
    }
    c.log_lines_per_app = args.log_lines_per_app;
    c.log_store = match args.log_store.as_str() {
        "ring" => LogStoreChoice::Ring,
        "redis" => LogStoreChoice::Redis(args.redis_url.clone()),
        other => return Err(format!("--log-store: unknown store {other:?}: use ring or redis")),
    };
    Ok(c)
}

fn init_tracing(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    init_tracing(&args.log_format);
    let config = match config(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("deisd: {e}");
            return ExitCode::from(2);
        }
    };
    let daemon = match Daemon::start(config).await {
        Ok(d) => d,
        Err(e) => {
            eprintln!("deisd: {e}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!(
        "deisd is up: controller API http://{}  router http://{}  (apps at http://<app>.{}:{})",
        daemon.api_addr(),
        daemon.router_addr(),
        args.domain,
        daemon.router_addr().port()
    );
    shutdown_signal().await;
    daemon.shutdown().await;
    ExitCode::SUCCESS
}
