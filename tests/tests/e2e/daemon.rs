//! End-to-end: `deisd` as operators run it: every flag combination it accepts serves the
//! quickstart, bad flags get one-line errors, and SIGTERM during traffic loses no
//! request.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use deis_e2e::*;
use deis_test_support::Service;

/// The README's quickstart against `d`: deploy, reach, scale, logs, run.
fn quickstart(d: &Deisd, app: &str) {
    let cli = d.cli();
    cli.register(d, "alice");
    let dir = hello_app();
    cli.run(&["create", app]).ok();
    cli.run_in(&["deploy", "-a", app], Some(dir.path())).ok();
    let r = wait_for(T, "the app answers", || d.get_app(app, "/").ok().filter(|r| r.status == 200));
    assert!(r.body.contains(&format!("Hello from {app}.web.1 (v2)")), "{}", r.body);

    cli.run(&["scale", "web=2", "-a", app]).ok();
    wait_units(&cli, app, "web", 2, "v2");
    let units: std::collections::BTreeSet<String> = (0..20)
        .filter_map(|_| d.get_app(app, "/").ok())
        .filter(|r| r.status == 200)
        .filter_map(|r| r.body.split_whitespace().nth(2).map(str::to_string))
        .collect();
    assert_eq!(units.len(), 2, "both units serve: {units:?}");

    let line = wait_for(T, "the access log line", || {
        cli.run(&["logs", "-a", app]).ok().lines().find(|l| l.contains("GET / 200")).map(str::to_string)
    });
    assert!(line.contains("[web."), "{line}");

    let out = cli.run(&["run", "-a", app, "--", "sh", "-c", "echo $DEIS_APP"]).ok();
    assert!(out.contains(app), "deis run sees the app: {out}");
}

#[test]
fn default_flags_serve_the_quickstart() {
    let d = Deisd::start();
    quickstart(&d, "flags-default");
    assert!(d.data_dir.join("store.redb").exists(), "the embedded store lives in the data dir");
}

#[test]
fn explicit_adapters_serve_the_quickstart() {
    let elsewhere = tempfile::tempdir().unwrap();
    let store = elsewhere.path().join("nested/store.redb");
    let store_arg = format!("redb:{}", store.display());
    let d = Deisd::start_with(&[
        "--store",
        &store_arg,
        "--scheduler",
        "local",
        "--log-store",
        "ring",
        "--log-lines-per-app",
        "200",
        "--syslog-addr",
        "off",
        "--log-format",
        "json",
        "--registration",
        "admin_only",
        "--shutdown-grace",
        "5s",
    ]);
    quickstart(&d, "flags-explicit");
    assert!(store.exists(), "--store puts the store where it says");
    assert!(!d.data_dir.join("store.redb").exists(), "and not in the data dir");
    let log = d.log();
    assert!(log.lines().any(|l| l.starts_with('{') && l.contains("\"platform started\"")), "json log: {log}");
}

#[test]
fn redis_log_store_serves_the_quickstart() {
    let Some(redis) = deis_test_support::redis::RedisServer::shared() else { return };
    // A database of its own on the shared server.
    let url = format!("{}/3", redis.url());
    let d = Deisd::start_with(&["--log-store", &url]);
    quickstart(&d, "flags-redis");
    let log = d.log();
    assert!(!log.contains("ERROR"), "{log}");
}

#[test]
fn bad_flag_values_get_one_line_naming_the_flag_and_the_forms() {
    for (flag, value, wanted) in [
        ("--store", "etcd2://127.0.0.1:4001", "accepted forms are redb:PATH"),
        ("--log-store", "kafka://x", "accepted forms are ring, redis://HOST[:PORT][/DB]"),
        ("--scheduler", "fleet", "accepted forms are local"),
        ("--api-addr", "localhost", "invalid socket address"),
    ] {
        let out = std::process::Command::new(binary("deisd")).args([flag, value]).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag} {value}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr:?}");
        assert!(stderr.starts_with("deisd: ") && stderr.contains(flag) && stderr.contains(wanted), "{stderr:?}");
    }
}

/// How a request of the traffic below ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    /// A complete `200` response.
    Served,
    /// Not taken: the connection was refused, or closed before any byte of a response
    /// (a listener closing with the connection still in its backlog). A client knows
    /// nothing was done and may retry.
    NotTaken,
    /// Anything else: an error status, a cut response, a timeout: a lost request.
    Lost(String),
}

fn request(addr: SocketAddr, host: &str, path: &str, token: Option<&str>) -> Outcome {
    let mut request = Request::get(path).host(host).timeout(Duration::from_secs(20));
    if let Some(t) = token {
        request = request.header("Authorization", &format!("token {t}"));
    }
    match request.send(addr) {
        Ok(r) if r.status == 200 => Outcome::Served,
        Ok(r) => Outcome::Lost(format!("{} {}", r.status, r.body)),
        // Refused, or closed before a byte of a response: nothing was taken.
        Err(e) if matches!(e.kind(), ErrorKind::ConnectionRefused | ErrorKind::UnexpectedEof) => Outcome::NotTaken,
        // The request could not even be written: not taken either.
        Err(e) if matches!(e.kind(), ErrorKind::BrokenPipe | ErrorKind::ConnectionReset) => Outcome::NotTaken,
        Err(e) => Outcome::Lost(e.to_string()),
    }
}

#[test]
fn sigterm_during_a_stream_of_requests_loses_none() {
    let (mut d, cli) = daemon_with_user(&[]);
    let token = cli.token();
    let app = "sigterm";
    let dir = hello_app();
    cli.run(&["create", app]).ok();
    cli.run_in(&["deploy", "-a", app], Some(dir.path())).ok();
    cli.run(&["scale", "web=2", "-a", app]).ok();
    wait_units(&cli, app, "web", 2, "v2");
    wait_for(T, "the app answers", || d.get_app(app, "/").ok().filter(|r| r.status == 200));

    // Eight clients: six through the router to the app, two on the API, each request
    // on its own connection. Before the SIGTERM every request must be served; after
    // it, each client stops at its first request the daemon no longer takes.
    let terminating = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));
    let host = format!("{app}.{}", d.domain);
    let clients: Vec<_> = (0..8)
        .map(|i| {
            let (terminating, served, host, token) = (terminating.clone(), served.clone(), host.clone(), token.clone());
            let (addr, api) = if i < 6 { (d.router, false) } else { (d.api, true) };
            std::thread::spawn(move || {
                let mut outcomes = Vec::new();
                loop {
                    let outcome = if api {
                        request(addr, &addr.to_string(), "/v2/apps", Some(&token))
                    } else {
                        request(addr, &host, "/", None)
                    };
                    // Read after the request: one refused because the stop began while
                    // it was under way is not a refusal "while running".
                    let late = terminating.load(Ordering::SeqCst);
                    match outcome {
                        Outcome::Served => served.fetch_add(1, Ordering::SeqCst),
                        _ => 0,
                    };
                    match outcome {
                        Outcome::NotTaken if late => return outcomes,
                        Outcome::NotTaken => outcomes.push(Outcome::Lost("refused while running".into())),
                        other => outcomes.push(other),
                    }
                }
            })
        })
        .collect();

    wait_for(T, "traffic flowing", || (served.load(Ordering::SeqCst) >= 50).then_some(()));
    let pid = d.child.as_ref().expect("deisd runs").id();
    terminating.store(true, Ordering::SeqCst);
    assert!(deis_test_support::proc::signal(pid, "TERM"));
    let started = Instant::now();
    let status = d.stop().expect("deisd exits");
    let took = started.elapsed();
    let outcomes: Vec<Outcome> = clients.into_iter().flat_map(|c| c.join().unwrap()).collect();

    assert!(status.success(), "deisd exits 0 on SIGTERM: {status:?}\n{}", d.log());
    assert!(took < Duration::from_secs(20), "graceful stop took {took:?}");
    let served = outcomes.iter().filter(|o| **o == Outcome::Served).count();
    let lost: Vec<&Outcome> = outcomes.iter().filter(|o| matches!(o, Outcome::Lost(_))).collect();
    assert!(served > 50, "traffic flowed before the stop: {served} served");
    assert!(lost.is_empty(), "{} of {} requests lost: {:?}", lost.len(), outcomes.len(), &lost[..lost.len().min(5)]);
    assert!(unit_processes(app).is_empty(), "units stop with deisd: {:?}", unit_processes(app));
    let log = d.log();
    assert!(log.contains("SIGTERM: shutting down") && log.contains("platform stopped"), "{log}");
}
