//! `deis-broker-redis`: the reference Redis service broker (service `redis`, plans
//! `prefix` and `db`) for the Redis 6+ server at `--admin-url`.

use std::process::ExitCode;
use std::sync::Arc;

use deis_brokers::{CommonArgs, serve};
use deis_sdk::osb::redis::RedisBackend;

/// Redis service broker (Open Service Broker API v2.17).
#[derive(Debug, clap::Parser)]
#[command(name = "deis-broker-redis", version, about)]
struct Args {
    /// The managed server, as a user allowed ACL and CLIENT KILL: `redis://[user:password@]host:port`.
    #[arg(long, env = "DEIS_BROKER_ADMIN_URL", hide_env_values = true)]
    admin_url: String,
    /// The server's number of logical databases (plan `db` hands out 1 to N-1).
    #[arg(long, env = "DEIS_BROKER_DATABASES", default_value_t = 16)]
    databases: u32,
    #[command(flatten)]
    common: CommonArgs,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Args = deis_sdk::daemon::parse_flags("deis-broker-redis");
    let backend = match RedisBackend::new(&args.admin_url, args.databases) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("deis-broker-redis: --admin-url: {e}");
            return ExitCode::from(2);
        }
    };
    serve("deis-broker-redis", &args.common, Arc::new(backend)).await
}
