//! End-to-end migration: a Deis v1 keyspace seeded into etcd 3.4 through its v2 API
//! (as the v1 controller, builder and publisher wrote it), `deis-migrate` onto the v3
//! store of a running `deisd`, which then serves the apps' config and domains.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::Command;
use std::time::Duration;

use deis_e2e::*;
use deis_test_support::etcd::{EtcdCluster, v2_set};

const CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUW\n-----END CERTIFICATE-----\n";
const KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49\n-----END PRIVATE KEY-----\n";
const ALICE_KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINW5R8RtYHiAX3r5dVVBw3NTlJwrlyHOujxFlgie4Yrw alice@laptop";
const BOB_KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUm bob@desk";
/// How long the v1 unit's registration has left: long enough to route to it, short
/// enough to watch it lapse.
const SERVICE_TTL: u64 = 8;

/// A v1 unit: answers every request with its name.
fn v1_unit() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let body = "v1 unit hello_v3.web.1";
            let _ =
                write!(conn, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
        }
    });
    addr
}

/// Seeds the keyspace a Deis v1 cluster had, with the v1 unit at `unit`.
fn seed_v1(etcd: SocketAddr, unit: SocketAddr) {
    let keys: &[(&str, &str, Option<u64>)] = &[
        ("/deis/config/hello/database_url", "postgres://db.internal/hello", None),
        ("/deis/config/hello/greeting", "Hello from v1", None),
        ("/deis/config/shop/stripe_key", "sk_test_123", None),
        ("/deis/domains/www.example.com", "hello", None),
        ("/deis/domains/api.example.com", "hello", None),
        ("/deis/domains/shop.example.org", "shop", None),
        ("/deis/certs/www.example.com/cert", CERT, None),
        ("/deis/certs/www.example.com/key", KEY, None),
        ("/deis/builder/users/alice/3d:4e:5f:60", ALICE_KEY, None),
        ("/deis/builder/users/bob/aa:bb:cc:dd", BOB_KEY, None),
        ("/deis/platform/domain", "example.com", None),
        ("/deis/logs/drain", "syslog://logs.example.com:514", None),
        ("/deis/builder/host", "10.21.1.5", Some(300)),
        ("/deis/builder/port", "2223", Some(300)),
        ("/deis/scheduler/fleet/hosts", "10.21.1.5", None),
    ];
    for (key, value, ttl) in keys {
        v2_set(etcd, key, value, *ttl).unwrap();
    }
    v2_set(etcd, "/deis/services/hello/hello_v3.web.1", &unit.to_string(), Some(SERVICE_TTL)).unwrap();
}

/// Runs deis-migrate; returns its exit code and stdout.
fn migrate(args: &[&str]) -> (i32, String) {
    let out = Command::new(binary("deis-migrate")).args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.code().is_some(), "deis-migrate died: {stderr}");
    (out.status.code().unwrap(), format!("{stdout}{stderr}"))
}

/// The report line of a v1 key.
fn line<'a>(report: &'a str, key: &str) -> &'a str {
    report.lines().find(|l| l.contains(&format!(" {key}"))).unwrap_or_else(|| panic!("no line for {key}:\n{report}"))
}

/// `etcdctl get --prefix` on the v3 store: (key, lease) pairs.
fn v3_keys(etcd: &EtcdCluster, prefix: &str) -> Vec<(String, u64)> {
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", &etcd.endpoints()[0], "get", "--prefix", prefix, "-w", "json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let decode = |s: &serde_json::Value| {
        let b64 = s.as_str().unwrap();
        String::from_utf8(base64_decode(b64)).unwrap()
    };
    v["kvs"]
        .as_array()
        .map(|kvs| kvs.iter().map(|kv| (decode(&kv["key"]), kv["lease"].as_u64().unwrap_or(0))).collect())
        .unwrap_or_default()
}

fn base64_decode(s: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let digits: Vec<u8> = s.bytes().filter(|c| *c != b'=').map(value).collect();
    digits
        .chunks(4)
        .flat_map(|c| {
            let n = c.iter().enumerate().fold(0u32, |n, (i, d)| n | (u32::from(*d) << (18 - 6 * i)));
            n.to_be_bytes()[1..c.len()].to_vec()
        })
        .collect()
}

#[test]
fn a_v1_keyspace_migrates_live_and_the_platform_serves_its_apps_config_and_domains() {
    let Some(etcd) = EtcdCluster::start(1) else { return };
    let v1 = etcd.addr(0);
    let unit = v1_unit();
    seed_v1(v1, unit);
    let host = etcd.endpoints()[0].trim_start_matches("http://").to_string();
    let store = format!("etcd://{host}?prefix=platform/");
    // The new platform, with its admin registered first: migrated apps belong to it.
    let d = Deisd::start_with(&["--store", &store]);
    let admin = d.cli();
    admin.register(&d, "admin");

    let from = etcd.endpoints()[0].clone();
    let args = ["--from", &from, "--to", &store, "--ttl", "lease", "--owner", "admin", "--verify"];
    let (code, report) = migrate(&args);
    assert_eq!(code, 0, "{report}");
    assert!(line(&report, "/deis/config/hello/database_url").starts_with("migrated"), "{report}");
    assert!(line(&report, "/deis/config/hello/database_url").contains("DATABASE_URL"), "{report}");
    assert!(line(&report, "/deis/certs/www.example.com/cert").contains("certs/www-example-com"), "{report}");
    assert!(line(&report, "/deis/services/hello/hello_v3.web.1").contains("lease of"), "{report}");
    assert!(line(&report, "/deis/scheduler/fleet/hosts").starts_with("skipped"), "{report}");
    assert!(report.contains("verify: 0 v1 keys differ"), "{report}");

    // The platform serves the apps' config and domains.
    let config = admin.run(&["config", "-a", "hello", "--json"]).json();
    assert_eq!(config["values"]["DATABASE_URL"], "postgres://db.internal/hello", "{config}");
    assert_eq!(config["values"]["GREETING"], "Hello from v1");
    assert_eq!(admin.run(&["config", "-a", "shop", "--json"]).json()["values"]["STRIPE_KEY"], "sk_test_123");
    let domains = admin.run(&["domains", "-a", "hello"]).ok();
    assert!(domains.contains("www.example.com") && domains.contains("api.example.com"), "{domains}");
    assert!(admin.run(&["domains", "-a", "shop"]).ok().contains("shop.example.org"));
    let releases = admin.run(&["releases", "-a", "hello"]).ok();
    assert!(releases.contains("migrated from Deis v1"), "{releases}");
    // The router follows the store: the custom domain reaches the v1 unit while its
    // registration lives.
    let routed = wait_for(T, "www.example.com routed to the v1 unit", || {
        Request::get("/").host("www.example.com").send(d.router).ok().filter(|r| r.status == 200)
    });
    assert_eq!(routed.body, "v1 unit hello_v3.web.1");
    // Users with their keys, certificates, settings; registrations only under a lease.
    let users: Vec<String> = v3_keys(&etcd, "platform/users/").into_iter().map(|(k, _)| k).collect();
    assert_eq!(users, ["platform/users/admin", "platform/users/alice", "platform/users/bob"]);
    // Keys as `deis keys:add` files them: by their comment, with the builder's index.
    assert_eq!(v3_keys(&etcd, "platform/keys/alice/"), [("platform/keys/alice/alice@laptop".to_string(), 0)]);
    assert_eq!(v3_keys(&etcd, "platform/keyprints/").len(), 2);
    assert_eq!(v3_keys(&etcd, "platform/certs/").len(), 1);
    assert_eq!(v3_keys(&etcd, "platform/settings/").len(), 2);
    let registrations = v3_keys(&etcd, "platform/registrations/builder/");
    assert_eq!(registrations.len(), 2);
    assert!(registrations.iter().all(|(_, lease)| *lease != 0), "registrations are leased: {registrations:?}");

    // Run twice: the same result, nothing written.
    let releases_before = admin.run(&["releases", "-a", "hello", "--json"]).json();
    let (code, again) = migrate(&args);
    assert_eq!(code, 0, "{again}");
    assert!(again.contains(" 0 migrated,"), "{again}");
    assert!(line(&again, "/deis/config/hello/greeting").starts_with("unchanged"), "{again}");
    assert!(line(&again, "/deis/domains/www.example.com").starts_with("unchanged"), "{again}");
    assert_eq!(admin.run(&["releases", "-a", "hello", "--json"]).json(), releases_before);

    // The registration keeps its TTL semantics: when it lapses, the route goes.
    wait_for(Duration::from_secs(SERVICE_TTL * 4), "the v1 unit's route lapses with its lease", || {
        Request::get("/").host("www.example.com").send(d.router).ok().filter(|r| r.status != 200)
    });
    assert!(v3_keys(&etcd, "platform/endpoints/hello/").is_empty());
}

#[test]
fn a_dump_migrates_onto_the_embedded_store_with_dry_run_and_ttl_skip() {
    let Some(etcd) = EtcdCluster::start(1) else { return };
    seed_v1(etcd.addr(0), "127.0.0.1:1".parse().unwrap());
    let dump = Request::get("/v2/keys/?recursive=true").send(etcd.addr(0)).unwrap();
    assert_eq!(dump.status, 200);
    let dir = tempfile::tempdir().unwrap();
    let dump_path = dir.path().join("v1.json");
    std::fs::write(&dump_path, &dump.body).unwrap();
    let store_path = dir.path().join("store.redb");
    // The owner must exist: registering through a daemon on that store.
    let store = format!("redb:{}", store_path.display());
    let mut d = Deisd::start_with(&["--store", &store]);
    d.cli().register(&d, "admin");
    d.stop();

    let dump_arg = dump_path.to_str().unwrap();
    let (code, plan) = migrate(&["--from-dump", dump_arg, "--to", &store, "--dry-run"]);
    assert_eq!(code, 0, "{plan}");
    assert!(line(&plan, "/deis/config/shop/stripe_key").starts_with("would migrate"), "{plan}");
    assert!(line(&plan, "/deis/services/hello/hello_v3.web.1").starts_with("skipped"), "{plan}");
    let (_, after_dry_run) = migrate(&["--from-dump", dump_arg, "--to", &store, "--dry-run"]);
    assert!(line(&after_dry_run, "/deis/config/shop/stripe_key").starts_with("would migrate"), "nothing written");

    let (code, report) = migrate(&["--from-dump", dump_arg, "--to", &store]);
    assert_eq!(code, 0, "{report}");
    assert!(line(&report, "/deis/builder/host").contains("TTL"), "{report}");
    let (code, again) = migrate(&["--from-dump", dump_arg, "--to", &store, "--verify"]);
    assert_eq!(code, 0, "{again}");
    assert!(again.contains(" 0 migrated,") && again.contains("verify: 0 v1 keys differ"), "{again}");

    // A dump over the limit is refused with advice, before anything is written.
    let (code, refused) = migrate(&["--from-dump", dump_arg, "--to", &store, "--max-dump-bytes", "100"]);
    assert_eq!(code, 1, "{refused}");
    assert!(refused.contains("--max-dump-bytes"), "{refused}");
    // An owner the platform does not have is refused the same way.
    let (code, refused) = migrate(&["--from-dump", dump_arg, "--to", &store, "--owner", "nobody"]);
    assert_eq!(code, 1, "{refused}");
    assert!(refused.contains("register it there first"), "{refused}");

    d.spawn();
    let cli = d.cli();
    cli.run(&["login", &d.url(), "--username=admin", "--password=pw-admin"]).ok();
    assert_eq!(cli.run(&["config", "-a", "shop", "--json"]).json()["values"]["STRIPE_KEY"], "sk_test_123");
}
