//! `deisd`: the Deis platform on embedded defaults (controller API, router, local
//! scheduler, embedded store) in one process and one data directory.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use deis_sdk::daemon::{Daemon, DaemonConfig, LogStoreChoice, MIN_TTY_SECRET_BYTES};
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
    /// Secret signing `deis run` session tokens: any string of 32+ bytes (e.g. `openssl
    /// rand -hex 32`), used as is; give the same to a standalone `deis-tty-broker
    /// --secret`. Default: random at each start (tokens then don't survive a restart).
    #[arg(long, env = "DEIS_TTY_SECRET", hide_env_values = true)]
    tty_secret: Option<String>,
    /// End `deis run` sessions without input or output for this long (`30m`, `1h`).
    #[arg(long, env = "DEIS_TTY_IDLE_TIMEOUT", default_value = "30m", value_parser = duration)]
    tty_idle_timeout: Duration,
    /// End `deis run` sessions after this long (`12h`).
    #[arg(long, env = "DEIS_TTY_MAX_SESSION", default_value = "12h", value_parser = duration)]
    tty_max_session: Duration,
    /// A browser `Origin` allowed to open `deis run` sessions besides the platform's own
    /// host (repeatable; e.g. `https://console.example.com`).
    #[arg(long = "tty-allowed-origin", value_name = "ORIGIN")]
    tty_allowed_origins: Vec<String>,
}

/// A positive duration (`90s`, `30m`, `12h`, or seconds).
fn duration(s: &str) -> Result<Duration, String> {
    deis_sdk::deis_core::time::parse_duration(s)
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
    c.log_store = match args.log_store.as_str() {
        "ring" => LogStoreChoice::Ring,
        "redis" if cfg!(feature = "redis") => LogStoreChoice::Redis(args.redis_url.clone()),
        "redis" => return Err("--log-store redis: this deisd was built without Redis support (feature redis)".into()),
        other => return Err(format!("--log-store: unknown store {other:?}: use ring or redis")),
    };
    if args.log_lines_per_app == 0 {
        return Err("--log-lines-per-app must be at least 1".into());
    }
    c.log_lines_per_app = args.log_lines_per_app;
    if let Some(secret) = &args.tty_secret {
        if secret.len() < MIN_TTY_SECRET_BYTES {
            return Err(format!(
                "--tty-secret has {} bytes; it needs at least {MIN_TTY_SECRET_BYTES} (e.g. `openssl rand -hex 32`)",
                secret.len()
            ));
        }
        c.tty_secret = Some(secret.as_bytes().to_vec());
    }
    c.tty.idle_timeout = args.tty_idle_timeout;
    c.tty.max_session = args.tty_max_session;
    c.tty.allowed_origins = args.tty_allowed_origins.clone();
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
    deis_sdk::daemon::shutdown_signal().await;
    daemon.shutdown().await;
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tty_flag_tests {
    use super::*;

    fn parse(extra: &[&str]) -> Result<DaemonConfig, String> {
        let args = Args::try_parse_from(["deisd"].iter().chain(extra)).map_err(|e| e.to_string())?;
        config(&args)
    }

    #[test]
    fn tty_flags_configure_the_embedded_broker() {
        let c = parse(&[]).unwrap();
        assert_eq!((c.tty.idle_timeout, c.tty.max_session), (Duration::from_secs(1800), Duration::from_secs(43200)));
        assert_eq!(c.tty_secret, None, "random per start by default");
        let secret = "0123456789abcdef0123456789abcdef";
        let c = parse(&[
            "--tty-secret",
            secret,
            "--tty-idle-timeout",
            "90s",
            "--tty-max-session",
            "2h 30m",
            "--tty-allowed-origin",
            "https://a.example",
            "--tty-allowed-origin",
            "https://b.example",
        ])
        .unwrap();
        assert_eq!(c.tty_secret.as_deref(), Some(secret.as_bytes()), "used as is, like deis-tty-broker --secret");
        assert_eq!(c.tty.idle_timeout, Duration::from_secs(90));
        assert_eq!(c.tty.max_session, Duration::from_secs(9000));
        assert_eq!(c.tty.allowed_origins, ["https://a.example", "https://b.example"]);

        let e = parse(&["--tty-secret", "short"]).unwrap_err();
        assert!(e.contains("--tty-secret has 5 bytes; it needs at least 32"), "{e}");
        let e = parse(&["--tty-idle-timeout", "soon"]).unwrap_err();
        assert!(e.contains("--tty-idle-timeout") && e.contains("30m"), "{e}");
        assert!(parse(&["--tty-max-session", "0s"]).unwrap_err().contains("more than 0"));
    }
}
