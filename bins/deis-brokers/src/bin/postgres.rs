//! `deis-broker-postgres`: the reference PostgreSQL service broker (service
//! `postgresql`, plan `shared`) for the PostgreSQL server at `--admin-url`.

use std::process::ExitCode;
use std::sync::Arc;

use deis_brokers::{CommonArgs, serve};
use deis_sdk::osb::postgres::PostgresBackend;

/// PostgreSQL service broker (Open Service Broker API v2.17).
#[derive(Debug, clap::Parser)]
#[command(name = "deis-broker-postgres", version, about)]
struct Args {
    /// The managed server, as a superuser: postgres://user:password@host:port/postgres.
    #[arg(long, env = "DEIS_BROKER_ADMIN_URL", hide_env_values = true)]
    admin_url: String,
    #[command(flatten)]
    common: CommonArgs,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Args = deis_sdk::daemon::parse_flags("deis-broker-postgres");
    let backend = match PostgresBackend::new(&args.admin_url) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("deis-broker-postgres: --admin-url: {e}");
            return ExitCode::from(2);
        }
    };
    serve("deis-broker-postgres", &args.common, Arc::new(backend)).await
}
