//! End-to-end: `deisd` as operators run it: every flag combination it accepts serves the
//! quickstart, bad flags get one-line errors, and SIGTERM during traffic loses no
//! request.

use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use deis_e2e::*;

const T: Duration = Duration::from_secs(60);

fn web_units_up(cli: &Cli, app: &str, n: usize) -> bool {
    let v = cli.run(&["ps", "-a", app, "--json"]).json();
    let pods = v.as_array().cloned().unwrap_or_default();
    pods.iter().filter(|p| p["type"] == "web" && p["state"] == "up").count() == n
        && pods.iter().filter(|p| p["type"] == "web").count() == n
}

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
    wait_for(T, "two web units up", || web_units_up(&cli, app, 2).then_some(()));
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
    use std::io::{Read, Write};
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else { return Outcome::NotTaken };
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let auth = token.map(|t| format!("Authorization: token {t}\r\n")).unwrap_or_default();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{auth}Connection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return Outcome::NotTaken;
    }
    let mut raw = Vec::new();
    match s.read_to_end(&mut raw) {
        Err(_) | Ok(_) if raw.is_empty() => Outcome::NotTaken,
        Err(e) => Outcome::Lost(format!("{e} after {} bytes", raw.len())),
        Ok(_) => {
            let text = String::from_utf8_lossy(&raw);
            let Some((head, body)) = text.split_once("\r\n\r\n") else { return Outcome::Lost(text.into()) };
            let length = head.lines().find_map(|l| {
                l.to_ascii_lowercase().strip_prefix("content-length:").and_then(|v| v.trim().parse::<usize>().ok())
            });
            if !head.starts_with("HTTP/1.1 200") || length.is_some_and(|n| n != body.len()) {
                Outcome::Lost(text.into())
            } else {
                Outcome::Served
            }
        }
    }
}

#[test]
fn sigterm_during_a_stream_of_requests_loses_none() {
    let mut d = Deisd::start();
    let cli = d.cli();
    cli.register(&d, "alice");
    let token = cli.token();
    let app = "sigterm";
    let dir = hello_app();
    cli.run(&["create", app]).ok();
    cli.run_in(&["deploy", "-a", app], Some(dir.path())).ok();
    cli.run(&["scale", "web=2", "-a", app]).ok();
    wait_for(T, "two web units up", || web_units_up(&cli, app, 2).then_some(()));
    wait_for(T, "the app answers", || d.get_app(app, "/").ok().filter(|r| r.status == 200));

    // Eight clients: six through the router to the app, two on the API, each request
    // on its own connection. Before the SIGTERM every request must be served; after
    // it, each client stops at its first request the daemon no longer takes.
    let terminating = Arc::new(AtomicBool::new(false));
    let host = format!("{app}.{}", d.domain);
    let clients: Vec<_> = (0..8)
        .map(|i| {
            let (terminating, host, token) = (terminating.clone(), host.clone(), token.clone());
            let (addr, api) = if i < 6 { (d.router, false) } else { (d.api, true) };
            std::thread::spawn(move || {
                let mut outcomes = Vec::new();
                loop {
                    let late = terminating.load(Ordering::SeqCst);
                    let outcome = if api {
                        request(addr, &addr.to_string(), "/v2/apps", Some(&token))
                    } else {
                        request(addr, &host, "/", None)
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

    std::thread::sleep(Duration::from_millis(500)); // traffic flowing
    let pid = d.child.as_ref().expect("deisd runs").id();
    terminating.store(true, Ordering::SeqCst);
    // SAFETY: plain kill(2) of our own child process.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
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
