//! What the reference service brokers share: the flags every one takes (listen address,
//! basic auth, the store its state lives in) and serving a backend over OSB v2.17.
//!
//! `deis-broker-postgres --admin-url postgres://…` and `deis-broker-redis --admin-url
//! redis://…` each add the admin URL of the server they manage; every flag has a
//! `DEIS_BROKER_*` environment equivalent. Besides the OSB API, each serves `GET
//! /metrics` (open, like a role daemon's): its requests by route, method and status
//! class, with latency, in the Prometheus text format 0.0.4 or OpenMetrics by `Accept`.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use deis_sdk::adapters::StoreUri;
use deis_sdk::broker::{Backend, ManagedBroker};
use deis_sdk::osb::server::{BasicAuth, OsbServerConfig, router};
use deis_sdk::telemetry::ApiMetrics;
use deis_sdk::telemetry::exposition;
use deis_sdk::telemetry::metered::count_api_requests;

/// The flags every broker takes.
#[derive(Debug, Clone, clap::Args)]
pub struct CommonArgs {
    /// Listen address.
    #[arg(long, env = "DEIS_BROKER_LISTEN", default_value = "127.0.0.1:9000")]
    pub listen: SocketAddr,
    /// Basic-auth user platforms must send.
    #[arg(long, env = "DEIS_BROKER_USERNAME")]
    pub username: String,
    /// Basic-auth password platforms must send.
    #[arg(long, env = "DEIS_BROKER_PASSWORD", hide_env_values = true)]
    pub password: String,
    /// Where instances and bindings are kept (`redb:PATH` or `etcd://…`), so a restart
    /// loses nothing and resumes operations in progress.
    #[arg(long, env = "DEIS_BROKER_STORE", default_value = "redb:deis-broker.redb")]
    pub store: String,
    #[command(flatten)]
    pub listener: deis_sdk::daemon::ListenerFlags,
}

/// Serves `backend` as `name` until SIGTERM or SIGINT; its state lives in the store
/// under `brokers/<name>/`.
pub async fn serve(name: &str, args: &CommonArgs, backend: Arc<dyn Backend>) -> ExitCode {
    deis_sdk::daemon::init_tracing(deis_sdk::daemon::LogFormat::Text);
    if args.password.is_empty() {
        eprintln!("{name}: --password must not be empty (platforms authenticate with basic auth)");
        return ExitCode::from(2);
    }
    let store = match args.store.parse::<StoreUri>() {
        Ok(uri) => match uri.open().await {
            Ok(store) => store,
            Err(e) => {
                eprintln!("{name}: opening --store {}: {e}", args.store);
                return ExitCode::FAILURE;
            }
        },
        Err(e) => {
            eprintln!("{name}: --store {}: {e}", args.store);
            return ExitCode::from(2);
        }
    };
    let broker = match ManagedBroker::start(store, format!("brokers/{name}/"), backend).await {
        Ok(b) => b,
        Err(e) => {
            eprintln!("{name}: resuming operations: {e}");
            return ExitCode::FAILURE;
        }
    };
    let listener = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{name}: listening on {}: {e}; pick another with --listen", args.listen);
            return ExitCode::FAILURE;
        }
    };
    let addr = listener.local_addr().map_or_else(|_| args.listen.to_string(), |a| a.to_string());
    eprintln!("{name} is up on http://{addr}/v2/catalog");
    let config = OsbServerConfig { auth: Some(BasicAuth::new(&args.username, &args.password)), ..Default::default() };
    let app = with_metrics(router(Arc::new(broker.clone()), config));
    deis_sdk::daemon::serve_until_signal(listener, app, &args.listener).await;
    broker.stop();
    ExitCode::SUCCESS
}

/// `api` with its requests counted, and `GET /metrics` serving the counts.
pub fn with_metrics(api: axum::Router) -> axum::Router {
    let metrics = Arc::new(ApiMetrics::default());
    let counted = metrics.clone();
    api.layer(axum::middleware::from_fn(move |req, next| count_api_requests(counted.clone(), req, next))).route(
        "/metrics",
        axum::routing::get(move |headers: axum::http::HeaderMap| async move {
            exposition::response(metrics.families(), &headers)
        }),
    )
}
