//! Migration of a Deis v1 keyspace of 100,000 keys: `deis-migrate` (live through
//! etcd's v2 API, and from a dump) vs `ETCDCTL_API=3 etcdctl migrate` on the same data,
//! in the same run.
//!
//! ```sh
//! cargo build --release -p deis-migrate && cargo bench -p deis-e2e --bench migrate
//! ```
//!
//! The keyspace (`MIGRATE_BENCH_APPS`, default 1000 apps: 100,000 keys): per app 90
//! config keys, 3 domains and 5 service registrations with a one-hour TTL; a
//! certificate for every tenth app; 0.9 builder users per app with two SSH keys each.
//! It is seeded through the v2 API of one etcd 3.4 (`--enable-v2`); `deis-migrate`
//! writes into a second etcd (`--ttl lease`: registrations under leases). Then the
//! source is stopped and `etcdctl migrate` converts a copy of its data dir in place.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Instant;

use deis_e2e::binary;
use deis_test_support::etcd::{EtcdCluster, v2_set_async};
use futures_util::StreamExt;

type V1Key = (String, String, Option<u64>);

fn keyspace(apps: usize) -> Vec<V1Key> {
    let mut keys = Vec::new();
    // Real certificates (the migration checks each as `deis certs:add` does).
    let ca = deis_test_support::tls::TestCa::new("Deis v1 bench CA");
    for i in 0..apps {
        let app = format!("app{i:04}");
        for j in 0..90 {
            keys.push((format!("/deis/config/{app}/var_{j}"), format!("value-{i}-{j}-0123456789abcdef"), None));
        }
        for j in 0..3 {
            keys.push((format!("/deis/domains/d{j}.{app}.example.com"), app.clone(), None));
        }
        for j in 1..=5 {
            let addr = format!("10.0.{}.{}:{}", i / 250, i % 250, 5000 + j);
            keys.push((format!("/deis/services/{app}/{app}_v7.web.{j}"), addr, Some(3600)));
        }
        if i % 10 == 0 {
            let issued = ca.issue(&[&format!("d0.{app}.example.com")]);
            keys.push((format!("/deis/certs/d0.{app}.example.com/cert"), issued.cert, None));
            keys.push((format!("/deis/certs/d0.{app}.example.com/key"), issued.key, None));
        }
    }
    for u in 0..apps * 9 / 10 {
        for k in 0..2 {
            let public = ed25519_line(u * 2 + k, &format!("user{u}@host{k}"));
            keys.push((format!("/deis/builder/users/user{u}/{u:02x}:{k:02x}:aa:bb"), public, None));
        }
    }
    keys
}

/// An OpenSSH ed25519 public key line whose key bytes are derived from `seed`.
fn ed25519_line(seed: usize, comment: &str) -> String {
    let mut blob = 11u32.to_be_bytes().to_vec();
    blob.extend_from_slice(b"ssh-ed25519");
    blob.extend_from_slice(&32u32.to_be_bytes());
    blob.extend_from_slice(&(seed as u64).to_be_bytes());
    blob.extend((8..32).map(|i| (i * 37) as u8));
    format!("ssh-ed25519 {} {comment}", base64(&blob))
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            out.push(if i <= chunk.len() { ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char } else { '=' });
        }
    }
    out
}

/// Seeds `keys` through the v2 API, 64 writes in flight.
fn seed(addr: SocketAddr, keys: &[V1Key]) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let mut writes = futures_util::stream::iter(keys)
            .map(|(k, v, ttl)| async move {
                for _ in 0..5 {
                    if v2_set_async(addr, k, v, *ttl).await.is_ok() {
                        return;
                    }
                }
                panic!("seeding {k} failed five times");
            })
            .buffer_unordered(64);
        while writes.next().await.is_some() {}
    });
}

/// `GET /v2/keys/?recursive=true` as HTTP/1.0 (never chunked): the dump.
fn dump(addr: SocketAddr) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(s, "GET /v2/keys/?recursive=true HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let body = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("a response head") + 4;
    assert!(raw.starts_with(b"HTTP/1.0 200") || raw.starts_with(b"HTTP/1.1 200"), "dump failed");
    raw.split_off(body)
}

fn etcdctl(endpoint: &str, args: &[&str]) {
    let out =
        Command::new("etcdctl").env("ETCDCTL_API", "3").arg("--endpoints").arg(endpoint).args(args).output().unwrap();
    assert!(out.status.success(), "etcdctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Runs deis-migrate; returns seconds and its summary line.
fn deis_migrate(args: &[&str]) -> (f64, String) {
    let started = Instant::now();
    let out = Command::new(binary("deis-migrate")).args(args).stderr(Stdio::inherit()).output().unwrap();
    let secs = started.elapsed().as_secs_f64();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "deis-migrate {args:?} failed:\n{}",
        stdout.lines().rev().take(20).collect::<Vec<_>>().join("\n")
    );
    (secs, stdout.lines().last().unwrap_or_default().to_string())
}

fn main() {
    let apps: usize = std::env::var("MIGRATE_BENCH_APPS").ok().and_then(|s| s.parse().ok()).unwrap_or(1000);
    let Some(mut source) = EtcdCluster::start(1) else { return };
    let Some(target) = EtcdCluster::start(1) else { return };
    let keys = keyspace(apps);
    let n = keys.len();
    let started = Instant::now();
    seed(source.addr(0), &keys);
    println!("seeded {n} v1 keys through the v2 API in {:.1} s", started.elapsed().as_secs_f64());
    let dir = tempfile::tempdir().unwrap();
    let dump_path = dir.path().join("v1.json");
    std::fs::write(&dump_path, dump(source.addr(0))).unwrap();

    let from = source.endpoints()[0].clone();
    let host = target.endpoints()[0].trim_start_matches("http://").to_string();
    let user = r#"{"username":"admin","email":"","is_superuser":true,"password_hash":"x","date_joined":"2026-01-01T00:00:00Z"}"#;
    let mut rows = vec![];
    for (name, prefix, source_args) in [
        ("deis-migrate --from (live, v2 API)", "live/", ["--from", from.as_str()]),
        ("deis-migrate --from-dump", "dump/", ["--from-dump", dump_path.to_str().unwrap()]),
    ] {
        etcdctl(&target.endpoints()[0], &["put", &format!("{prefix}users/admin"), user]);
        let to = format!("etcd://{host}?prefix={prefix}");
        let mut args = source_args.to_vec();
        args.extend(["--to", &to, "--ttl", "lease", "--owner", "admin"]);
        let (secs, summary) = deis_migrate(&args);
        println!("{name}: {summary}");
        rows.push((name.to_string(), secs, "kept (leases of the remaining TTL)"));
        if prefix == "live/" {
            let (secs, summary) = deis_migrate(&args);
            println!("{name}, second run: {summary}");
            rows.push((format!("{name}, second run (nothing to do)"), secs, "kept"));
        }
    }

    source.stop(0);
    let copy = dir.path().join("etcd-data");
    let cp = Command::new("cp").arg("-a").arg(source.dir().join("m0.data")).arg(&copy).status().unwrap();
    assert!(cp.success());
    let started = Instant::now();
    let out = Command::new("etcdctl").env("ETCDCTL_API", "3").arg("migrate").arg("--data-dir").arg(&copy).output();
    let secs = started.elapsed().as_secs_f64();
    match out {
        Ok(out)
            if out.status.success() && String::from_utf8_lossy(&out.stdout).contains("finished transforming keys") =>
        {
            rows.push((
                "ETCDCTL_API=3 etcdctl migrate (offline, data dir)".into(),
                secs,
                "dropped (TTL'd keys become permanent)",
            ));
        }
        Ok(out) => println!(
            "etcdctl migrate failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => println!("etcdctl migrate could not run: {e}"),
    }

    println!("\n{n} v1 keys ({apps} apps)\n");
    println!("| migrator | seconds | keys/s | TTL semantics |");
    println!("|---|---:|---:|---|");
    for (name, secs, ttl) in &rows {
        println!("| {name} | {secs:.2} | {:.0} | {ttl} |", n as f64 / secs);
    }
}
