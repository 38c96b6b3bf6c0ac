//! `deis-updater`: the update agent as a daemon. It runs one process (a deisd replica,
//! the command after `--`) and keeps it on the version its group's channel offers:
//! periodic Omaha checks with jitter, download with resume, SHA-256 verification, then
//! the binary is swapped and the process restarted; an unhealthy new version is rolled
//! back and reported (which halts the group in safe mode). With `--store`, replicas
//! update one at a time and a leading replica hands off before its restart.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use deis_sdk::adapters::StoreUri;
use deis_sdk::daemon::{LogFormat, init_tracing, parse_flags};
use deis_sdk::update::agent::{Agent, AgentConfig, ProcessApplier, ProcessConfig};

/// The Deis update agent.
#[derive(Debug, Parser)]
#[command(name = "deis-updater", version, about)]
struct Args {
    /// The Omaha endpoint, e.g. http://127.0.0.1:8000/v1/update/.
    #[arg(long, env = "DEIS_UPDATE_SERVER")]
    server: String,
    /// The Omaha app id of what is updated.
    #[arg(long, env = "DEIS_UPDATE_APP_ID")]
    app_id: String,
    /// The group (Omaha track).
    #[arg(long, env = "DEIS_UPDATE_TRACK", default_value = "stable")]
    track: String,
    /// This instance's id (default: the replica id, else the hostname).
    #[arg(long, env = "DEIS_UPDATE_INSTANCE_ID")]
    instance_id: Option<String>,
    /// The version the binary is now.
    #[arg(long = "current-version", env = "DEIS_UPDATE_VERSION")]
    current_version: String,
    /// Time between checks (`5m`).
    #[arg(long, default_value = "5m", value_parser = duration)]
    interval: Duration,
    /// Up to this much is added to each interval at random (`1m`).
    #[arg(long, default_value = "1m", value_parser = duration)]
    jitter: Duration,
    /// Where downloads go.
    #[arg(long, default_value = ".deis/updates")]
    download_dir: PathBuf,
    /// The store the replicas share (`etcd://...`): one replica updates at a time.
    #[arg(long, env = "DEIS_STORE")]
    store: Option<StoreUri>,
    /// The replica id of the deisd run (its --replica-id), for the leader hand-off.
    #[arg(long)]
    replica_id: Option<String>,
    /// The health check of the process (`http://127.0.0.1:8000/healthz`).
    #[arg(long)]
    health_url: String,
    /// How long a restarted process has to become healthy.
    #[arg(long, default_value = "30s", value_parser = duration)]
    health_timeout: Duration,
    /// Log format: text or json.
    #[arg(long, env = "DEIS_LOG_FORMAT", default_value = "text")]
    log_format: LogFormat,
    /// The binary to run and keep updated, and its arguments.
    #[arg(required = true, last = true, value_name = "BINARY [ARGS]...")]
    command: Vec<String>,
}

fn duration(s: &str) -> Result<Duration, String> {
    deis_sdk::deis_core::time::parse_duration(s).map_err(|e| e.to_string())
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Args = parse_flags("deis-updater");
    init_tracing(args.log_format);
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("deis-updater: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    let store = match &args.store {
        Some(uri) => Some(uri.open().await.map_err(|e| format!("--store {uri}: {e}"))?),
        None => None,
    };
    let (binary, rest) = args.command.split_first().ok_or("give the binary to run after --")?;
    let mut process = ProcessConfig::new(PathBuf::from(binary), rest.to_vec(), &args.health_url);
    process.health_timeout = args.health_timeout;
    if let (Some(store), Some(id)) = (&store, &args.replica_id) {
        process.handoff = Some((store.clone(), id.clone()));
    }
    let applier = ProcessApplier::start(process).await.map_err(|e| format!("starting {binary}: {e}"))?;
    let instance = args
        .instance_id
        .clone()
        .or(args.replica_id.clone())
        .unwrap_or_else(deis_sdk::deis_core::scheduler::local::hostname);
    let mut config =
        AgentConfig::new(&args.server, &args.app_id, &args.track, &instance, &args.current_version, args.download_dir);
    config.interval = args.interval;
    config.jitter = args.jitter;
    config.coordination = store;
    eprintln!("deis-updater is up: {binary} runs {} ({instance}, group {})", args.current_version, args.track);
    let agent = Agent::new(config, applier.clone());
    agent
        .run(async {
            deis_sdk::shutdown_signal().await;
        })
        .await;
    applier.stop().await;
    Ok(())
}
