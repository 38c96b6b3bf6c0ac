//! `deis-migrate`: moves a Deis v1 etcd keyspace onto this platform's store. See
//! [`deis_sdk::migrate`] for what each v1 key becomes.
//!
//! Exit status: 0 when every key was migrated, unchanged or skipped (and `--verify`
//! found the target matching), 1 when the source or target could not be used, 2 for
//! bad flags, 3 when some keys failed or `--verify` found differences.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::Parser;
use deis_sdk::adapters::StoreUri;
use deis_sdk::daemon::parse_flags;
use deis_sdk::migrate::source::{self, DEFAULT_MAX_DUMP_BYTES};
use deis_sdk::migrate::{MigrateError, Migration, Status, TtlBasis, TtlMode, V1Key};

/// Migrates a Deis v1 etcd keyspace (config, domains, certificates, users and their
/// SSH keys, allow-lists, settings, registrations) onto this platform's store and
/// deisd's settings. A second run changes nothing.
#[derive(Debug, Parser)]
#[command(name = "deis-migrate", version, about)]
struct Args {
    /// The v1 etcd, read live through its v2 HTTP API (`http://HOST:2379`; etcd 3.4 needs
    /// `--enable-v2`).
    #[arg(long, value_name = "URL", required_unless_present = "from_dump", conflicts_with = "from_dump")]
    from: Option<String>,
    /// A dump of the v1 keyspace: the JSON of `curl http://HOST:2379/v2/keys/?recursive=true`.
    #[arg(long, value_name = "FILE")]
    from_dump: Option<PathBuf>,
    /// The target store, as `deisd --store` takes it: `etcd://HOST:2379,…` or `redb:PATH`.
    #[arg(long, value_name = "STORE")]
    to: StoreUri,
    /// Keys that had a TTL (service and component registrations): `skip` them, or write
    /// them under a `lease` of the TTL they had left. Never made permanent.
    #[arg(long, default_value = "skip", value_name = "skip|lease")]
    ttl: TtlMode,
    /// The platform user owning the migrated apps, domains and certificates (Deis v1
    /// kept owners elsewhere); register it on the platform first.
    #[arg(long, default_value = "admin", value_name = "USERNAME")]
    owner: String,
    /// Write the settings deisd takes from its environment (`/deis/platform/domain`,
    /// `/deis/controller/registrationMode`, the platform certificate
    /// `/deis/router/sslCert` and `sslKey`) to DIR/deisd.env, DIR/platform.crt and
    /// DIR/platform.key; start deisd with that environment (systemd
    /// `EnvironmentFile=DIR/deisd.env`, or `set -a; . DIR/deisd.env`). Without it those
    /// keys are skipped.
    #[arg(long, value_name = "DIR")]
    deisd_env_dir: Option<PathBuf>,
    /// Print what would be written; write nothing.
    #[arg(long)]
    dry_run: bool,
    /// After migrating, compare the v1 keyspace with the target and list differences.
    #[arg(long)]
    verify: bool,
    /// Largest dump (or live answer) read, in bytes.
    #[arg(long, default_value_t = DEFAULT_MAX_DUMP_BYTES, value_name = "BYTES")]
    max_dump_bytes: usize,
    /// How long to wait for the v1 etcd's answer, in seconds.
    #[arg(long, default_value_t = 120, value_name = "SECONDS")]
    timeout: u64,
}

async fn read_source(args: &Args) -> Result<Vec<V1Key>, MigrateError> {
    let (json, basis) = match (&args.from, &args.from_dump) {
        (Some(url), _) => {
            (source::fetch_live(url, args.max_dump_bytes, Duration::from_secs(args.timeout)).await?, TtlBasis::Live)
        }
        (None, Some(path)) => (source::read_dump(path, args.max_dump_bytes).await?, TtlBasis::Dump(SystemTime::now())),
        (None, None) => unreachable!("clap requires --from or --from-dump"),
    };
    Ok(source::parse_dump(&json, args.max_dump_bytes, basis)?)
}

async fn run(args: Args) -> Result<bool, MigrateError> {
    let keys = read_source(&args).await?;
    let store = args.to.open().await?;
    let migration = Migration {
        owner: args.owner.clone(),
        ttl: args.ttl,
        dry_run: args.dry_run,
        deisd_env_dir: args.deisd_env_dir.clone(),
    };
    let report = migration.run(keys.clone(), &*store).await?;
    let mut out = std::io::stdout().lock();
    // A closed stdout (`| head`) is no reason to fail the migration that happened.
    let _ = write!(out, "{report}");
    let mut clean = report.count(Status::Failed) == 0;
    if args.verify {
        let differences = migration.verify(keys, &*store).await?;
        for d in &differences {
            let _ = writeln!(out, "differs       {}: {}", d.key, d.detail);
        }
        let _ = writeln!(out, "verify: {} v1 keys differ from the target", differences.len());
        clean &= differences.is_empty();
    }
    Ok(clean)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Args = parse_flags("deis-migrate");
    match run(args).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(3),
        Err(e) => {
            eprintln!("deis-migrate: {e}");
            ExitCode::FAILURE
        }
    }
}
