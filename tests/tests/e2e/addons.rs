//! End-to-end: `deis addons:*` on the real `deisd` with its embedded PostgreSQL broker
//! (`--broker-postgres`) on a real PostgreSQL; the apps' units use the injected
//! `DATABASE_URL`.

use std::process::Command;

use deis_e2e::*;
use deis_test_support::postgres::PostgresServer;
use deis_test_support::service::Service;
use serde_json::Value;

/// A web process that counts its hits in PostgreSQL (through `psql` and `DATABASE_URL`)
/// and answers the count, or `error: ...`.
const COUNTER: &str = r#"
import os, subprocess
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Counter(BaseHTTPRequestHandler):
    def do_GET(self):
        sql = "CREATE TABLE IF NOT EXISTS hits (n int); INSERT INTO hits VALUES (1); SELECT count(*) FROM hits;"
        r = subprocess.run(["psql", os.environ.get("DATABASE_URL", ""), "-qtAc", sql], capture_output=True, text=True)
        body = (r.stdout.strip().splitlines() or [""])[-1] if r.returncode == 0 else "error: " + r.stderr.strip()
        body = (body + "\n").encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Counter).serve_forever()
"#;

fn counter_app() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("Procfile"), "web: python3 web.py\n").unwrap();
    std::fs::write(dir.path().join("web.py"), COUNTER).unwrap();
    dir
}

/// Whether `psql` gets in with `url`.
fn psql_works(url: &str) -> bool {
    Command::new("psql").args([url, "-qtAc", "SELECT 1"]).output().is_ok_and(|o| o.status.success())
}

fn config(cli: &Cli, app: &str) -> Value {
    cli.run(&["config", "-a", app, "--json"]).json()["values"].clone()
}

#[test]
fn postgres_addon_is_provisioned_shared_detached_and_destroyed() {
    let Some(pg) = PostgresServer::shared() else { return };
    if deis_test_support::skip_without("psql", "postgresql-client") {
        return;
    }
    let admin = pg.admin_url();
    let (d, cli) = daemon_with_user(&["--broker-postgres", &admin]);
    let services = cli.run(&["services", "--json"]).json();
    assert!(services.to_string().contains("\"postgresql\""), "{services}");

    let dir = counter_app();
    cli.run(&["create", "counter"]).ok();
    cli.run_in(&["deploy", "-a", "counter"], Some(dir.path())).ok();
    wait_units(&cli, "counter", "web", 1, "v2");

    // Create: provisioned asynchronously, bound, DATABASE_URL set in release v3.
    let created = cli.run(&["addons:create", "postgresql:shared", "-a", "counter", "--wait", "--json"]).json();
    assert_eq!(created["state"], "ready", "{created}");
    let name = created["name"].as_str().unwrap().to_string();
    let url = config(&cli, "counter")["DATABASE_URL"].as_str().unwrap().to_string();
    assert!(url.starts_with("postgres://") && psql_works(&url), "{url}");
    wait_units(&cli, "counter", "web", 1, "v3");
    // The unit connects with the injected URL, writes and reads.
    let first = wait_for(T, "the unit to count in PostgreSQL", || {
        d.get_app("counter", "/").ok().filter(|r| r.status == 200 && !r.body.starts_with("error")).map(|r| r.body)
    });
    let second = d.get_app("counter", "/").unwrap().body;
    assert_eq!(second.trim().parse::<u32>().unwrap(), first.trim().parse::<u32>().unwrap() + 1, "{first} {second}");
    // Credentials never show in release summaries.
    let password = url.split(':').nth(2).unwrap().split('@').next().unwrap().to_string();
    let releases = cli.run(&["releases", "-a", "counter", "--json"]).json().to_string();
    assert!(releases.contains("DATABASE_URL") && !releases.contains(&password), "{releases}");

    // A second app attached to the same instance gets a role of its own, same data.
    cli.run(&["create", "reader", "--no-remote"]).ok();
    cli.run(&["addons:attach", &name, "-a", "reader"]).ok();
    let other = config(&cli, "reader")["DATABASE_URL"].as_str().unwrap().to_string();
    assert_ne!(other.split('@').next(), url.split('@').next(), "the second app got the first's role");
    let count = Command::new("psql").args([other.as_str(), "-qtAc", "SELECT count(*) FROM hits"]).output().unwrap();
    assert!(count.status.success(), "{}", String::from_utf8_lossy(&count.stderr));
    assert!(String::from_utf8_lossy(&count.stdout).trim().parse::<u32>().unwrap() >= 2);

    // Detach revokes access: the variable goes and the old credentials fail.
    cli.run(&["addons:detach", &name, "-a", "reader"]).ok();
    assert!(config(&cli, "reader").get("DATABASE_URL").is_none());
    assert!(!psql_works(&other), "detached credentials still work");
    assert!(psql_works(&url), "detaching one app revoked another's credentials");

    // Destroy drops the database.
    let database = url.rsplit('/').next().unwrap().to_string();
    cli.run(&["addons:destroy", &name, "--confirm", &name, "-a", "counter"]).ok();
    assert!(config(&cli, "counter").get("DATABASE_URL").is_none());
    let left = Command::new("psql")
        .args([admin.as_str(), "-qtAc", &format!("SELECT count(*) FROM pg_database WHERE datname = '{database}'")])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&left.stdout).trim(), "0", "the database is still there");
    assert!(cli.run(&["addons", "-a", "counter", "--json"]).json().as_array().unwrap().is_empty());
}
