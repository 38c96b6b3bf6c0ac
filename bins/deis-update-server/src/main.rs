//! `deis-update-server`: the update service as a role daemon of its own: Omaha v3 at
//! `POST /v1/update/` and the admin API under `/v2/updates/`, on the platform's store
//! (its users and tokens authenticate the admin API). `deisd` serves the same routes on
//! its API address; run this one to put the update service elsewhere.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;
use deis_sdk::adapters::StoreUri;
use deis_sdk::daemon::{ListenerFlags, LogFormat, init_tracing, parse_flags, serve_until_signal};
use deis_sdk::deis_core::update::{StoreUpdateChannel, UpdateChannel};

/// mimalloc: glibc's malloc and free took a fifth of deisd's CPU per request
/// (BENCHMARKS.md, update checks: 25-30% more checks per second with mimalloc).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The Deis update service: Omaha v3 server and update admin API.
#[derive(Debug, Parser)]
#[command(name = "deis-update-server", version, about)]
struct Args {
    /// The platform's store: `redb:PATH` or `etcd://HOST:PORT,...` (as deisd's --store).
    #[arg(long, env = "DEIS_STORE")]
    store: StoreUri,
    /// Listen address.
    #[arg(long, env = "DEIS_UPDATE_ADDR", default_value = "127.0.0.1:8001")]
    addr: SocketAddr,
    /// Log format: text or json.
    #[arg(long, env = "DEIS_LOG_FORMAT", default_value = "text")]
    log_format: LogFormat,
    #[command(flatten)]
    listener: ListenerFlags,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Args = parse_flags("deis-update-server");
    init_tracing(args.log_format);
    let store = match args.store.open().await {
        Ok(store) => store,
        Err(e) => {
            eprintln!("deis-update-server: --store {}: {e}", args.store);
            return ExitCode::FAILURE;
        }
    };
    let listener = match tokio::net::TcpListener::bind(args.addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("deis-update-server: listening on {}: {e}; pick another with --addr", args.addr);
            return ExitCode::FAILURE;
        }
    };
    let updates: std::sync::Arc<dyn UpdateChannel> = std::sync::Arc::new(StoreUpdateChannel::new(store.clone()));
    let app =
        deis_sdk::update::routes_on(store, updates.clone()).route("/healthz", axum::routing::get(|| async { "OK" }));
    eprintln!("deis-update-server is up: Omaha at http://{}/v1/update/", args.addr);
    serve_until_signal(listener, app, &args.listener).await;
    // Check-ins buffered in memory.
    if let Err(e) = updates.flush().await {
        eprintln!("deis-update-server: writing buffered update check-ins: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
