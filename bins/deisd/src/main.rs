//! `deisd`: the Deis platform in one process: controller API, router, scheduler, logs
//! and `deis run`, on embedded defaults (one data directory, no outside service) or on
//! the adapters its flags pick.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use deis_sdk::adapters::{LogStoreUri, SchedulerUri, StoreUri};
use deis_sdk::controller::ApiLimits;
use deis_sdk::controller::RegistrationMode;
use deis_sdk::daemon::{LogFormat, init_tracing, parse_flags};
use deis_sdk::deis_core::model::limits;
use deis_sdk::deis_core::scheduler::Capacity;
use deis_sdk::tty::TtyConfig;
use deis_sdk::{MIN_TTY_SECRET_BYTES, Platform, PlatformBuilder, SyslogListen};

/// The Deis platform daemon: controller API, router, scheduler, logs and `deis run` in
/// one process.
#[derive(Debug, Parser)]
#[command(name = "deisd", version, about)]
struct Args {
    /// Directory holding all platform state (store, builds, scheduler state).
    #[arg(long, env = "DEIS_DATA_DIR", default_value = ".deis/data")]
    data_dir: PathBuf,
    /// Where records are kept: `redb:PATH` (default: `redb:<data-dir>/store.redb`).
    #[arg(long, env = "DEIS_STORE")]
    store: Option<StoreUri>,
    /// What runs units: local (child processes on this machine).
    #[arg(long, env = "DEIS_SCHEDULER", default_value = "local")]
    scheduler: SchedulerUri,
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
    #[arg(long, env = "DEIS_CPU", value_parser = cpu)]
    cpu: Option<u64>,
    /// Memory this node offers to units (`8G`, `512M`); default: all memory.
    #[arg(long, env = "DEIS_MEMORY", value_parser = memory)]
    memory: Option<u64>,
    /// Who may register: enabled, admin_only or disabled.
    #[arg(long, env = "DEIS_REGISTRATION", default_value = "enabled")]
    registration: RegistrationMode,
    /// Largest source upload accepted by `deis deploy`, in MiB.
    #[arg(long, env = "DEIS_MAX_UPLOAD_MB", default_value_t = 256)]
    max_upload_mb: usize,
    /// Log format of deisd itself: text or json.
    #[arg(long, env = "DEIS_LOG_FORMAT", default_value = "text")]
    log_format: LogFormat,
    /// Where apps' syslog lines are taken, on UDP and TCP (`off` for no listener).
    #[arg(long, env = "DEIS_SYSLOG_ADDR", default_value = "127.0.0.1:5514", value_parser = syslog_addr)]
    syslog_addr: SyslogAddr,
    /// Log lines kept per app.
    #[arg(long, env = "DEIS_LOG_LINES_PER_APP", default_value_t = 1000, value_parser = at_least_one)]
    log_lines_per_app: usize,
    /// Where app logs are kept: `ring` (in memory) or `redis://HOST[:PORT][/DB]` (survives
    /// restarts); `redis` alone means the server of --redis-url.
    #[arg(long, env = "DEIS_LOG_STORE", default_value = "ring", value_parser = log_store)]
    log_store: LogStoreArg,
    /// Redis server of `--log-store redis`.
    #[arg(long, env = "DEIS_REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    /// Secret signing `deis run` session tokens: any string of 32+ bytes (e.g. `openssl
    /// rand -hex 32`), used as is; give the same to a standalone `deis-tty-broker
    /// --secret`. Default: random at each start (tokens then don't survive a restart).
    #[arg(long, env = "DEIS_TTY_SECRET", hide_env_values = true, value_parser = tty_secret)]
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
    /// On SIGTERM, how long requests in flight get to finish (`30s`).
    #[arg(long, env = "DEIS_SHUTDOWN_GRACE", default_value = "30s", value_parser = duration)]
    shutdown_grace: Duration,
    /// Uids (and gids) for apps when running as root, one each: `FIRST-LAST`, ids no
    /// one else on this machine uses (default 200000-299999). Unprivileged, units run
    /// as deisd's own user.
    #[arg(long, env = "DEIS_APP_UID_RANGE")]
    app_uid_range: Option<deis_sdk::deis_core::model::IdentityRange>,
    /// A load balancer in front of the router whose X-Forwarded-For, X-Forwarded-Proto
    /// and X-Real-IP are believed (repeat for several); from anyone else they are
    /// replaced with what the connection says.
    #[arg(long = "trusted-proxy", value_name = "IP")]
    trusted_proxies: Vec<std::net::IpAddr>,
    /// Most units the apps of one non-admin user may run together.
    #[arg(long, env = "DEIS_MAX_UNITS_PER_USER", default_value_t = 100)]
    max_units_per_user: u32,
}

/// `--log-store`: a log store URI, or `redis` for the server of `--redis-url`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum LogStoreArg {
    Uri(LogStoreUri),
    RedisUrlFlag,
}

fn log_store(s: &str) -> Result<LogStoreArg, deis_sdk::adapters::UriError> {
    match s {
        "redis" => Ok(LogStoreArg::RedisUrlFlag),
        _ => s.parse().map(LogStoreArg::Uri),
    }
}

/// A positive duration (`90s`, `30m`, `12h`, or seconds).
fn duration(s: &str) -> Result<Duration, String> {
    deis_sdk::deis_core::time::parse_duration(s).map_err(|e| e.to_string())
}

fn cpu(s: &str) -> Result<u64, String> {
    limits::parse_cpu(s).map(|c| c.0).map_err(|e| e.message)
}

fn memory(s: &str) -> Result<u64, String> {
    limits::parse_memory(s).map(|m| m.0).map_err(|e| e.message)
}

fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("{e} (want a whole number, at least 1)")),
    }
}

/// `--syslog-addr`: an address, or none for `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SyslogAddr(Option<SocketAddr>);

fn syslog_addr(s: &str) -> Result<SyslogAddr, String> {
    match s {
        "off" | "none" | "" => Ok(SyslogAddr(None)),
        a => a.parse().map(|a| SyslogAddr(Some(a))).map_err(|e| format!("{e} (want IP:PORT, or off)")),
    }
}

fn tty_secret(s: &str) -> Result<String, String> {
    if s.len() < MIN_TTY_SECRET_BYTES {
        return Err(format!(
            "{} bytes; it needs at least {MIN_TTY_SECRET_BYTES} (e.g. `openssl rand -hex 32`)",
            s.len()
        ));
    }
    Ok(s.to_string())
}

impl Args {
    fn store(&self) -> StoreUri {
        self.store.clone().unwrap_or_else(|| StoreUri::Redb(self.data_dir.join("store.redb")))
    }

    fn log_store(&self) -> Result<LogStoreUri, deis_sdk::adapters::UriError> {
        match &self.log_store {
            LogStoreArg::Uri(uri) => Ok(uri.clone()),
            LogStoreArg::RedisUrlFlag => self.redis_url.parse(),
        }
    }

    fn tty_config(&self) -> TtyConfig {
        let mut tty = TtyConfig::default();
        tty.idle_timeout = self.tty_idle_timeout;
        tty.max_session = self.tty_max_session;
        tty.allowed_origins = self.tty_allowed_origins.clone();
        tty
    }

    /// The platform these flags describe, with its adapters opened.
    async fn builder(&self) -> Result<PlatformBuilder, String> {
        let mut capacity = Capacity::of_this_machine();
        capacity.cpu_millis = self.cpu.unwrap_or(capacity.cpu_millis);
        capacity.memory_bytes = self.memory.unwrap_or(capacity.memory_bytes);
        let limits = ApiLimits { max_upload_bytes: self.max_upload_mb.saturating_mul(1 << 20), ..ApiLimits::default() };
        let store_uri = self.store();
        let store = store_uri.open().await.map_err(|e| format!("--store {store_uri}: {e}"))?;
        let log_uri = self.log_store().map_err(|e| format!("--redis-url: {e}"))?;
        let logs = log_uri.open(self.log_lines_per_app).await.map_err(|e| format!("--log-store {log_uri}: {e}"))?;
        let mut b = Platform::builder(&self.data_dir)
            .store(store)
            .log_store(logs)
            .api(self.api_addr)
            .router(self.router_addr)
            .syslog(self.syslog_addr.0.map_or(SyslogListen::Off, SyslogListen::Addr))
            .domain(&self.domain)
            .registration(self.registration)
            .capacity(capacity)
            .api_limits(limits)
            .log_lines_per_app(self.log_lines_per_app)
            .tty_config(self.tty_config())
            .shutdown_grace(self.shutdown_grace)
            .max_units_per_user(self.max_units_per_user)
            .trusted_proxies(self.trusted_proxies.clone());
        if let Some(range) = self.app_uid_range {
            b = b.app_identities(Some(range));
        }
        match self.scheduler {
            // The embedded default, with the capacity above.
            SchedulerUri::Local => {}
            other => return Err(format!("--scheduler {other}: not supported by this deisd")),
        }
        if let Some(secret) = &self.tty_secret {
            b = b.tty_secret(secret.as_bytes());
        }
        Ok(b)
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Args = parse_flags("deisd");
    init_tracing(args.log_format);
    let platform = match args.builder().await {
        Ok(builder) => builder.start().await.map_err(|e| e.to_string()),
        Err(e) => Err(e),
    };
    let platform = match platform {
        Ok(p) => p,
        Err(e) => {
            eprintln!("deisd: {e}");
            return ExitCode::FAILURE;
        }
    };
    let show = |a: Option<SocketAddr>| a.map_or_else(|| "off".to_string(), |a| format!("http://{a}"));
    eprintln!(
        "deisd is up: controller API {}  router {}  (apps at http://<app>.{}:{})",
        show(platform.api_addr()),
        show(platform.router_addr()),
        platform.domain(),
        platform.router_addr().map_or(0, |a| a.port())
    );
    deis_sdk::shutdown_signal().await;
    platform.shutdown().await;
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &[&str]) -> Result<Args, String> {
        Args::try_parse_from(["deisd"].iter().chain(extra)).map_err(|e| e.to_string())
    }

    #[test]
    fn tty_flags_configure_the_embedded_broker() {
        let a = parse(&[]).unwrap();
        let c = a.tty_config();
        assert_eq!((c.idle_timeout, c.max_session), (Duration::from_secs(1800), Duration::from_secs(43200)));
        assert_eq!(a.tty_secret, None, "random per start by default");
        let secret = "0123456789abcdef0123456789abcdef";
        let a = parse(&[
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
        assert_eq!(a.tty_secret.as_deref(), Some(secret), "used as is, like deis-tty-broker --secret");
        let c = a.tty_config();
        assert_eq!(c.idle_timeout, Duration::from_secs(90));
        assert_eq!(c.max_session, Duration::from_secs(9000));
        assert_eq!(c.allowed_origins, ["https://a.example", "https://b.example"]);

        let e = parse(&["--tty-secret", "short"]).unwrap_err();
        assert!(e.contains("--tty-secret") && e.contains("5 bytes; it needs at least 32"), "{e}");
        let e = parse(&["--tty-idle-timeout", "soon"]).unwrap_err();
        assert!(e.contains("--tty-idle-timeout") && e.contains("30m"), "{e}");
        assert!(parse(&["--tty-max-session", "0s"]).unwrap_err().contains("more than 0"));
    }

    #[test]
    fn adapters_are_picked_by_uri() {
        let a = parse(&["--data-dir", "/d"]).unwrap();
        assert_eq!(a.store(), StoreUri::Redb("/d/store.redb".into()));
        assert_eq!(a.log_store().unwrap(), LogStoreUri::Ring);
        assert_eq!(a.scheduler, SchedulerUri::Local);
        let a = parse(&["--store", "redb:/elsewhere/s.redb", "--log-store", "redis://10.0.0.1:6380/1"]).unwrap();
        assert_eq!(a.store(), StoreUri::Redb("/elsewhere/s.redb".into()));
        assert_eq!(a.log_store().unwrap(), LogStoreUri::Redis("redis://10.0.0.1:6380/1".into()));
        // The older spelling: `redis` plus --redis-url.
        let a = parse(&["--log-store", "redis", "--redis-url", "redis://10.0.0.2"]).unwrap();
        assert_eq!(a.log_store().unwrap(), LogStoreUri::Redis("redis://10.0.0.2".into()));
    }

    #[test]
    fn bad_values_name_the_flag_and_the_accepted_forms() {
        for (flag, value, wanted) in [
            ("--store", "etcd2://x", "accepted forms are redb:PATH"),
            ("--log-store", "kafka://x", "accepted forms are ring, redis://"),
            ("--scheduler", "fleet", "accepted forms are local"),
            ("--registration", "sometimes", "use enabled, admin_only or disabled"),
            ("--syslog-addr", "loud", "want IP:PORT, or off"),
            ("--cpu", "lots", ""),
            ("--log-lines-per-app", "0", "at least 1"),
            ("--log-format", "xml", "use text or json"),
        ] {
            let e = parse(&[flag, value]).unwrap_err();
            let first = e.lines().next().unwrap();
            assert!(first.contains(flag) && first.contains(wanted), "{flag} {value}: {e}");
        }
    }
}
