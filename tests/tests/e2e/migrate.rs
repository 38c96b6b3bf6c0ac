//! End-to-end migration: a Deis v1 keyspace seeded into etcd 3.4 through its v2 API
//! (as the v1 controller, builder, router settings and publisher wrote it),
//! `deis-migrate` onto the v3 store of a running `deisd`, which, restarted with the
//! settings the migration wrote for it, serves the apps' config, domains and
//! certificates (over SNI), applies their allow-lists and HTTPS redirect, and knows
//! the users' SSH keys.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use deis_e2e::git::{KeyPair, git, init_and_commit, push_url};
use deis_e2e::tls::{curl, subject};
use deis_e2e::*;
use deis_test_support::etcd::{EtcdCluster, v2_set};
use deis_test_support::tls::{Issued, TestCa};

const BOB_KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUm bob@desk";
/// How long the v1 unit's registration has left: long enough to route to it after
/// deisd restarted with the migrated settings, short enough to watch it lapse.
const SERVICE_TTL: u64 = 25;

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

/// What a v1 cluster held besides plain values: certificates from a test CA and
/// alice's SSH key pair.
struct V1Secrets {
    ca: TestCa,
    /// `www.example.com`'s certificate (`/deis/certs/www.example.com`).
    www: Issued,
    /// The platform certificate for `*.example.com` (`/deis/router/sslCert`).
    platform: Issued,
    alice: KeyPair,
    _dir: tempfile::TempDir,
}

impl V1Secrets {
    fn new() -> Self {
        let ca = TestCa::new("Deis v1 CA");
        let (www, platform) = (ca.issue(&["www.example.com"]), ca.issue(&["*.example.com", "example.com"]));
        let dir = tempfile::tempdir().unwrap();
        let alice = KeyPair::generate(dir.path(), "alice");
        Self { ca, www, platform, alice, _dir: dir }
    }
}

/// Seeds the keyspace a Deis v1 cluster had, with the v1 unit at `unit`.
fn seed_v1(etcd: SocketAddr, unit: SocketAddr, v1: &V1Secrets) {
    let alice_key = std::fs::read_to_string(&v1.alice.public).unwrap();
    let keys: &[(&str, &str, Option<u64>)] = &[
        ("/deis/config/hello/database_url", "postgres://db.internal/hello", None),
        ("/deis/config/hello/greeting", "Hello from v1", None),
        ("/deis/config/hello/deis_whitelist", "127.0.0.0/8:loopback,10.0.0.0/8:office", None),
        ("/deis/config/shop/stripe_key", "sk_test_123", None),
        ("/deis/config/shop/deis_whitelist", "192.0.2.10:office", None),
        ("/deis/domains/www.example.com", "hello", None),
        ("/deis/domains/api.example.com", "hello", None),
        ("/deis/domains/shop.example.org", "shop", None),
        ("/deis/certs/www.example.com/cert", &v1.www.cert, None),
        ("/deis/certs/www.example.com/key", &v1.www.key, None),
        ("/deis/builder/users/alice/3d:4e:5f:60", alice_key.trim(), None),
        ("/deis/builder/users/bob/aa:bb:cc:dd", BOB_KEY, None),
        ("/deis/platform/domain", "example.com", None),
        ("/deis/controller/registrationMode", "admin_only", None),
        ("/deis/router/sslCert", &v1.platform.cert, None),
        ("/deis/router/sslKey", &v1.platform.key, None),
        ("/deis/router/enforceHTTPS", "true", None),
        ("/deis/router/bodySize", "1m", None),
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

/// The variables of a `deisd.env` file.
fn env_file(path: &Path) -> std::collections::BTreeMap<String, String> {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect()
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
fn a_v1_keyspace_migrates_live_and_the_platform_serves_its_apps_certificates_and_settings() {
    let Some(etcd) = EtcdCluster::start(1) else { return };
    let v1 = etcd.addr(0);
    let unit = v1_unit();
    let secrets = V1Secrets::new();
    seed_v1(v1, unit, &secrets);
    let host = etcd.endpoints()[0].trim_start_matches("http://").to_string();
    let store = format!("etcd://{host}?prefix=platform/");
    // The new platform, with its admin registered first: migrated apps belong to it.
    let mut d = Deisd::start_with(&["--store", &store]);
    let admin = d.cli();
    admin.register(&d, "admin");

    let from = etcd.endpoints()[0].clone();
    let settings_dir = tempfile::tempdir().unwrap();
    let env_dir = settings_dir.path().to_str().unwrap();
    let args = ["--from", &from, "--to", &store, "--ttl", "lease", "--owner", "admin", "--deisd-env-dir", env_dir];
    let verify: Vec<&str> = args.iter().copied().chain(["--verify"]).collect();
    let (code, report) = migrate(&verify);
    assert_eq!(code, 0, "{report}");
    assert!(line(&report, "/deis/config/hello/database_url").starts_with("migrated"), "{report}");
    assert!(line(&report, "/deis/config/hello/database_url").contains("DATABASE_URL"), "{report}");
    assert!(line(&report, "/deis/config/hello/deis_whitelist").contains("settings.whitelist"), "{report}");
    let cert_line = line(&report, "/deis/certs/www.example.com/cert");
    assert!(
        cert_line.contains("certs/www-example-com") && cert_line.contains("certdomains/www.example.com"),
        "{report}"
    );
    assert!(line(&report, "/deis/router/enforceHTTPS").contains("HTTPS enforced for hello, shop"), "{report}");
    assert!(line(&report, "/deis/platform/domain").contains("deisd.env"), "{report}");
    assert!(line(&report, "/deis/router/sslKey").contains("deisd.env"), "{report}");
    assert!(line(&report, "/deis/router/bodySize").starts_with("skipped"), "{report}");
    assert!(line(&report, "/deis/services/hello/hello_v3.web.1").contains("lease of"), "{report}");
    assert!(line(&report, "/deis/scheduler/fleet/hosts").starts_with("skipped"), "{report}");
    assert!(report.contains("verify: 0 v1 keys differ"), "{report}");

    // The certificate is the controller's record: the certificates API shows it attached.
    let cert = admin.run(&["certs:info", "www-example-com", "--json"]).json();
    assert_eq!(cert["domains"], serde_json::json!(["www.example.com"]), "{cert}");
    assert_eq!(cert["san"], serde_json::json!(["www.example.com"]), "{cert}");

    // deisd takes the platform settings from its environment: restart it with them
    // (as flags here: the harness passes --domain itself, and flags win over DEIS_*).
    let env = env_file(&settings_dir.path().join("deisd.env"));
    assert_eq!(env["DEIS_DOMAIN"], "example.com");
    d.stop();
    d.domain = env["DEIS_DOMAIN"].clone();
    d.extra_args.extend(
        [("--registration", "DEIS_REGISTRATION"), ("--tls-cert", "DEIS_TLS_CERT"), ("--tls-key", "DEIS_TLS_KEY")]
            .into_iter()
            .flat_map(|(flag, var)| [flag.to_string(), env[var].clone()]),
    );
    d.spawn();
    let ca = settings_dir.path().join("ca.pem");
    secrets.ca.write(&ca);
    let tls = d.router_tls().unwrap().port();

    // The app's own certificate over SNI, routed to the v1 unit while its registration
    // lives; the migrated platform certificate for the platform domain.
    let routed = wait_for(T, "www.example.com over HTTPS to the v1 unit", || {
        curl(&ca, tls, "www.example.com").filter(|(status, _)| *status == 200)
    });
    assert_eq!(routed.1, "v1 unit hello_v3.web.1");
    assert!(subject(&ca, tls, "www.example.com").contains("CN = www.example.com"));
    assert!(subject(&ca, tls, "hello.example.com").contains("*.example.com"));
    // enforceHTTPS: plain HTTP is redirected; the allow-lists apply.
    let r = Request::get("/x").host("www.example.com").send(d.router).unwrap();
    assert_eq!(r.status, 301, "{}", r.body);
    let refused = Request::get("/").host("shop.example.org").send(d.router).unwrap();
    assert_eq!(refused.status, 403, "shop allows 192.0.2.10 only: {}", refused.body);
    let settings = admin.run(&["whitelist", "-a", "hello", "--json"]).ok();
    assert!(settings.contains("10.0.0.0/8") && settings.contains("127.0.0.0/8"), "{settings}");
    // registrationMode admin_only: strangers can't register.
    let stranger = d.cli();
    let url = d.url();
    let r = stranger.run(&["register", &url, "--username=eve", "--password=pw-eve", "--email=eve@example.com"]);
    assert_ne!(r.code, 0, "registration is admin only: {r:?}");

    // Alice's v1 key is hers: the builder knows her by it, and, as a collaborator, she
    // pushes to shop, whose migrated config the new release keeps.
    let out = secrets.alice.ssh(d.builder, &[]).failed();
    assert!(out.contains("hi alice"), "{out}");
    admin.run(&["perms:create", "alice", "-a", "shop"]).ok();
    let repo = hello_app();
    init_and_commit(repo.path());
    let ssh = secrets.alice.ssh_command(d.builder.port());
    let pushed = git(repo.path(), Some(&ssh), &["push", &push_url(d.builder, "shop"), "main"]).ok();
    assert!(pushed.contains("remote: -----> shop deployed to"), "{pushed}");
    assert_eq!(admin.run(&["config", "-a", "shop", "--json"]).json()["values"]["STRIPE_KEY"], "sk_test_123");

    // The platform serves the apps' config and domains.
    let config = admin.run(&["config", "-a", "hello", "--json"]).json();
    assert_eq!(config["values"]["DATABASE_URL"], "postgres://db.internal/hello", "{config}");
    assert_eq!(config["values"]["GREETING"], "Hello from v1");
    assert!(config["values"].get("DEIS_WHITELIST").is_none(), "an allow-list now, not config: {config}");
    let domains = admin.run(&["domains", "-a", "hello"]).ok();
    assert!(domains.contains("www.example.com") && domains.contains("api.example.com"), "{domains}");
    assert!(admin.run(&["domains", "-a", "shop"]).ok().contains("shop.example.org"));
    let releases = admin.run(&["releases", "-a", "hello"]).ok();
    assert!(releases.contains("migrated from Deis v1"), "{releases}");
    // Users with their keys, certificates; registrations only under a lease.
    let users: Vec<String> = v3_keys(&etcd, "platform/users/").into_iter().map(|(k, _)| k).collect();
    assert_eq!(users, ["platform/users/admin", "platform/users/alice", "platform/users/bob"]);
    // Keys as `deis keys:add` files them: by their comment, with the builder's index.
    assert_eq!(v3_keys(&etcd, "platform/keys/alice/"), [("platform/keys/alice/alice@test".to_string(), 0)]);
    assert_eq!(v3_keys(&etcd, "platform/keyprints/").len(), 2);
    assert!(v3_keys(&etcd, "platform/settings/").is_empty(), "no records nobody reads");
    let registrations = v3_keys(&etcd, "platform/registrations/builder/");
    assert_eq!(registrations.len(), 2);
    assert!(registrations.iter().all(|(_, lease)| *lease != 0), "registrations are leased: {registrations:?}");

    // Run twice: the same result, nothing written.
    let releases_before = admin.run(&["releases", "-a", "hello", "--json"]).json();
    let (code, again) = migrate(&verify);
    assert_eq!(code, 0, "{again}");
    assert!(again.contains(" 0 migrated,"), "{again}");
    for key in ["/deis/config/hello/greeting", "/deis/domains/www.example.com", "/deis/certs/www.example.com/key"] {
        assert!(line(&again, key).starts_with("unchanged"), "{again}");
    }
    assert!(line(&again, "/deis/router/sslCert").starts_with("unchanged"), "{again}");
    assert_eq!(admin.run(&["releases", "-a", "hello", "--json"]).json(), releases_before);

    // The registration keeps its TTL semantics: when it lapses, the route goes.
    wait_for(Duration::from_secs(SERVICE_TTL * 3), "the v1 unit's route lapses with its lease", || {
        curl(&ca, tls, "www.example.com").filter(|(status, _)| *status != 200)
    });
    assert!(v3_keys(&etcd, "platform/endpoints/hello/").is_empty());
}

#[test]
fn a_dump_migrates_onto_the_embedded_store_with_dry_run_and_ttl_skip() {
    let Some(etcd) = EtcdCluster::start(1) else { return };
    seed_v1(etcd.addr(0), "127.0.0.1:1".parse().unwrap(), &V1Secrets::new());
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
