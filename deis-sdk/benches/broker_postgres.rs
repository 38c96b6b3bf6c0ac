//! The PostgreSQL broker's provision + bind latency next to the same SQL sent with
//! `psql`, in the same run, and 100 concurrent provisions.
//!
//! ```sh
//! apt-get install -y postgresql postgresql-client   # scripts/install-deps does this
//! cargo bench -p deis-sdk --features postgres --bench broker_postgres
//! ```
//!
//! - **broker**: `deis-broker-postgres`'s stack in this process (`ManagedBroker` over
//!   `PostgresBackend`, state in an in-memory store, behind the OSB server on loopback),
//!   driven by `OsbClient` + `OsbDriver` as the controller drives it: provision
//!   (asynchronous: 202, then polling `last_operation` every 10 ms) and bind, to the
//!   credentials. `BENCH_RUNS` (default 50) sequential runs.
//! - **psql**: per run, one `psql` process with the statements the broker runs for a
//!   provision and a bind (`CREATE ROLE` owner, `CREATE DATABASE ... OWNER`, `REVOKE
//!   CONNECT`, `CREATE ROLE` app `IN ROLE` owner, `ALTER ROLE ... SET role`), so the
//!   difference is the broker's overhead (HTTP, state in the store, polling, separate
//!   connections) minus `psql`'s process start.
//! - **concurrent**: `BENCH_CONCURRENT` (default 100) provisions + binds at once through
//!   the same server; every one must succeed.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use deis_sdk::deis_core::broker::{BindRequest, ManagedBroker, ProvisionRequest, RequestContext};
use deis_sdk::deis_core::store::RedbStore;
use deis_sdk::osb::postgres::{POSTGRES_SERVICE_ID, POSTGRES_SHARED_PLAN_ID, PostgresBackend};
use deis_sdk::osb::server::{BasicAuth, OsbServerConfig, router};
use deis_sdk::osb::{OsbClient, OsbDriver, PollPolicy};
use deis_test_support::postgres::PostgresServer;
use deis_test_support::service::Service;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn report(label: &str, mut samples: Vec<Duration>) {
    samples.sort();
    println!(
        "{label:<28} p50 {:>8.2} ms   p99 {:>8.2} ms   (n={})",
        percentile(&samples, 0.5).as_secs_f64() * 1e3,
        percentile(&samples, 0.99).as_secs_f64() * 1e3,
        samples.len()
    );
}

async fn provision_and_bind(driver: &OsbDriver, id: &str) -> Result<(), String> {
    let ctx = RequestContext::default();
    let provision = ProvisionRequest {
        service_id: POSTGRES_SERVICE_ID.into(),
        plan_id: POSTGRES_SHARED_PLAN_ID.into(),
        organization_guid: "bench".into(),
        space_guid: "bench".into(),
        ..Default::default()
    };
    driver.provision(&ctx, id, provision, None).await.map_err(|e| e.to_string())?;
    let bind = BindRequest {
        service_id: POSTGRES_SERVICE_ID.into(),
        plan_id: POSTGRES_SHARED_PLAN_ID.into(),
        ..Default::default()
    };
    let binding = driver.bind(&ctx, id, &format!("{id}-app"), bind, None).await.map_err(|e| e.to_string())?;
    binding.credentials.filter(|c| c.contains_key("uri")).map(drop).ok_or_else(|| "no credentials".to_string())
}

fn main() {
    let Some(pg) = PostgresServer::shared() else { return };
    let runs = env("BENCH_RUNS", 50);
    let concurrent = env("BENCH_CONCURRENT", 100);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let backend = Arc::new(PostgresBackend::new(&pg.admin_url()).unwrap());
        let broker = ManagedBroker::start(RedbStore::in_memory(), "bench/", backend).await.unwrap();
        let auth = BasicAuth::new("bench", "bench-password");
        let config = OsbServerConfig { auth: Some(auth.clone()), ..Default::default() };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router(Arc::new(broker), config)).await });
        let client = OsbClient::new(&format!("http://{addr}"), Some(auth)).unwrap();
        let policy = PollPolicy { interval: Duration::from_millis(10), ..PollPolicy::default() };
        let driver = Arc::new(OsbDriver::new(Arc::new(client)).with_policy(policy));

        let (mut broker_times, mut psql_times) = (Vec::new(), Vec::new());
        for i in 0..runs {
            let started = Instant::now();
            provision_and_bind(&driver, &format!("seq-{i}")).await.unwrap();
            broker_times.push(started.elapsed());

            let (owner, db, app) = (format!("bench_owner_{i}"), format!("bench_db_{i}"), format!("bench_app_{i}"));
            let sql = format!(
                "CREATE ROLE {owner} LOGIN PASSWORD 'x0123456789abcdef'; CREATE DATABASE {db} OWNER {owner}; \
                 REVOKE ALL ON DATABASE {db} FROM PUBLIC; CREATE ROLE {app} LOGIN PASSWORD 'y0123456789abcdef' IN ROLE {owner}; \
                 ALTER ROLE {app} SET role = '{owner}'"
            );
            let started = Instant::now();
            // One `-c` per statement: psql runs a multi-statement `-c` as one
            // transaction, which `CREATE DATABASE` refuses.
            let mut psql = Command::new("psql");
            psql.args([pg.admin_url().as_str(), "-q"]);
            for statement in sql.split("; ") {
                psql.args(["-c", statement]);
            }
            let out = psql.output().expect("psql");
            psql_times.push(started.elapsed());
            assert!(out.status.success(), "psql: {}", String::from_utf8_lossy(&out.stderr));
        }
        println!("PostgreSQL shared plan, provision + bind, {runs} sequential runs:");
        report("broker (OSB over HTTP)", broker_times);
        report("psql (same statements)", psql_times);

        let started = Instant::now();
        let tasks: Vec<_> = (0..concurrent)
            .map(|i| {
                let driver = driver.clone();
                tokio::spawn(async move { provision_and_bind(&driver, &format!("par-{i}")).await })
            })
            .collect();
        let mut failures = Vec::new();
        for t in tasks {
            if let Err(e) = t.await.unwrap() {
                failures.push(e);
            }
        }
        println!(
            "{concurrent} concurrent provisions + binds: {} failed, all done in {:.2} s",
            failures.len(),
            started.elapsed().as_secs_f64()
        );
        assert!(failures.is_empty(), "{failures:?}");
    });
}
