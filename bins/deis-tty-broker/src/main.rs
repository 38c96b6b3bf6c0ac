//! `deis-tty-broker`: the reference standalone TTY broker. It serves
//! `GET /v2/sessions/<id>/attach?app=<app>&token=<token>` WebSockets (Kubernetes
//! channel protocol) and runs each session's command, as its token says, with the local
//! backend in one working directory. Tokens are signed by a controller that shares
//! `--secret`; `deisd` embeds the same broker and needs none of this. `GET /metrics`
//! serves its session counters (Prometheus text 0.0.4, or OpenMetrics by `Accept`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use deis_sdk::deis_core::time::parse_duration;
use deis_sdk::deis_core::tty::token::TokenSigner;
use deis_sdk::deis_core::tty::{LocalTtyBroker, LocalTtyConfig};
use deis_sdk::telemetry::exposition;
use deis_sdk::tty::{LocalDirectory, TtyConfig, TtyService, attach_router};

/// Standalone TTY broker for `deis run` sessions.
#[derive(Debug, Parser)]
#[command(name = "deis-tty-broker", version, about)]
struct Args {
    /// Listen address.
    #[arg(long, env = "DEIS_TTY_ADDR", default_value = "127.0.0.1:8022")]
    listen: SocketAddr,
    /// Secret shared with the controller that signs session tokens (32+ random bytes).
    #[arg(long, env = "DEIS_TTY_SECRET", hide_env_values = true)]
    secret: String,
    /// Working directory of the sessions' commands.
    #[arg(long, env = "DEIS_TTY_DIR", default_value = ".")]
    dir: PathBuf,
    /// Where to list live sessions, so a restarted broker kills what a crashed one left.
    #[arg(long, env = "DEIS_TTY_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// An `Origin` allowed besides the broker's own host (repeatable).
    #[arg(long = "allowed-origin", value_name = "ORIGIN")]
    allowed_origins: Vec<String>,
    /// End sessions without input or output for this long (`30m`; a bare number is seconds).
    #[arg(long, env = "DEIS_TTY_IDLE_TIMEOUT", default_value = "30m", value_parser = parse_duration)]
    idle_timeout: Duration,
    /// End sessions after this long (`12h`; a bare number is seconds).
    #[arg(long, env = "DEIS_TTY_MAX_SESSION", default_value = "12h", value_parser = parse_duration)]
    max_session: Duration,
    #[command(flatten)]
    listener: deis_sdk::daemon::ListenerFlags,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    if args.secret.len() < 32 {
        eprintln!("deis-tty-broker: --secret must be at least 32 characters (the controller's session token secret)");
        return ExitCode::from(2);
    }
    let dir = match std::fs::canonicalize(&args.dir) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("deis-tty-broker: --dir {}: {e}", args.dir.display());
            return ExitCode::from(2);
        }
    };
    let backend = match &args.state_dir {
        Some(state) => match LocalTtyBroker::new(LocalTtyConfig::with_state_dir(state)).await {
            Ok(b) => b,
            Err(e) => {
                eprintln!("deis-tty-broker: {e}");
                return ExitCode::FAILURE;
            }
        },
        None => LocalTtyBroker::default(),
    };
    let mut config = TtyConfig::default();
    config.allowed_origins = args.allowed_origins.clone();
    config.idle_timeout = args.idle_timeout;
    config.max_session = args.max_session;
    let directory = Arc::new(LocalDirectory { dir, env: BTreeMap::new() });
    let service = TtyService::new(Arc::new(backend), TokenSigner::new(args.secret.as_bytes()), directory, config);
    let listener = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("deis-tty-broker: listening on {}: {e}; pick another with --listen", args.listen);
            return ExitCode::FAILURE;
        }
    };
    let addr = listener.local_addr().map_or_else(|_| args.listen.to_string(), |a| a.to_string());
    eprintln!("deis-tty-broker is up on ws://{addr}/v2/sessions/<id>/attach?app=<app>&token=<token>");
    let service = Arc::new(service);
    let app = attach_router(service.clone()).route(
        "/metrics",
        axum::routing::get(move |headers: axum::http::HeaderMap| async move {
            exposition::response(service.counters().families(), &headers)
        }),
    );
    deis_sdk::daemon::serve_until_signal(listener, app, &args.listener).await;
    ExitCode::SUCCESS
}
