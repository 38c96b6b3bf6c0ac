//! End-to-end: app logs with the real `deisd` and `deis` binaries on loopback: units'
//! output, platform events, syslog ingest from util-linux `logger`, `deis logs -f`
//! across a daemon restart, drains, and forgetting a destroyed app's log.

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use deis_e2e::*;
use deis_test_support::Service;
use deis_test_support::redis::RedisServer;
use serde_json::Value;

/// A daemon with its syslog listener on a free port and `alice` logged in; returns
/// them and that port.
fn start() -> (Deisd, Cli, u16) {
    let port = free_port();
    let (d, cli) = daemon_with_user(&["--syslog-addr", &format!("127.0.0.1:{port}")]);
    (d, cli, port)
}

/// `deis logs ARGS -a APP` lines.
fn logs(cli: &Cli, app: &str, extra: &[&str]) -> Vec<String> {
    let mut args = vec!["logs", "-a", app];
    args.extend_from_slice(extra);
    cli.run(&args).ok().lines().map(str::to_string).collect()
}

/// Waits until `deis logs` has a line containing `needle`.
fn wait_line(cli: &Cli, app: &str, needle: &str) -> String {
    wait_for(T, &format!("a log line with {needle:?}"), || {
        logs(cli, app, &["-n", "1000"]).into_iter().find(|l| l.contains(needle))
    })
}

/// `2026-11-25T14:47:21.123Z <app>[web.1]: message` (or `deis[controller]: ...`):
/// checks the timestamp shape and the source label of `app`'s line.
fn assert_line_format(line: &str, app: &str) {
    let (ts, rest) = line.split_once(' ').unwrap_or_else(|| panic!("no space in {line:?}"));
    let b = ts.as_bytes();
    assert_eq!(b.len(), 24, "timestamp {ts:?} in {line:?}");
    for (i, c) in b.iter().enumerate() {
        let ok = match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'.',
            23 => *c == b'Z',
            _ => c.is_ascii_digit(),
        };
        assert!(ok, "timestamp {ts:?} in {line:?}");
    }
    let src = rest.split_once(": ").map(|x| x.0).unwrap_or_else(|| panic!("no source in {line:?}"));
    let labelled = src.starts_with(&format!("{app}[")) || src.starts_with("deis[");
    assert!(labelled && src.ends_with(']'), "source {src:?} in {line:?}");
}

/// Reads the JSON follow endpoint until `done` says so (or panics after `T`).
fn follow_json(d: &Deisd, token: &str, app: &str, query: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let path = format!("/v2/apps/{app}/logs/follow?format=json&{query}");
    let mut stream = Request::get(&path).header("Authorization", &format!("token {token}")).open(d.api).unwrap();
    let values = stream.wait_until(T, "the followed JSON lines", |text| {
        // Chunked framing aside, every JSON object is one line starting with '{'.
        let values: Vec<Value> =
            text.lines().filter(|l| l.starts_with('{')).filter_map(|l| serde_json::from_str(l).ok()).collect();
        done(&values).then_some(values)
    });
    assert!(stream.received().starts_with("HTTP/1.1 200"), "{}", stream.received());
    values
}

#[test]
fn logs_show_unit_output_events_and_syslog_lines() {
    let (d, cli, syslog_port) = start();
    let _dir = deploy_hello(&d, &cli, "hello");
    cli.run(&["scale", "worker=1", "-a", "hello"]).ok();
    cli.run(&["config:set", "GREETING=Howdy", "-a", "hello"]).ok();
    wait_units(&cli, "hello", "web", 1, "v3");
    for _ in 0..3 {
        let _ = d.get_app("hello", "/from-test");
    }

    wait_line(&cli, "hello", "hello[web.1]: GET /from-test 200");
    wait_line(&cli, "hello", "still working");
    let all = logs(&cli, "hello", &["-n", "1000"]);
    let text = all.join("\n");
    for needle in [
        "deis[controller]: App hello created by alice",
        "deis[controller]: Release v1 created by alice: alice created initial release",
        "deis[controller]: Release v2 created by alice: alice deployed",
        "deis[controller]: Release v3 created by alice: alice added GREETING",
        "deis[controller]: Scaled to web=1 worker=1 by alice",
        "deis[scheduler]: hello.web.1 up (v2)",
        "hello[worker.1]: hello.worker.1: Hello, still working",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
    }
    all.iter().for_each(|l| assert_line_format(l, "hello"));

    // -n N gives exactly N lines, the newest; filters by type and source.
    let five = logs(&cli, "hello", &["-n", "5"]);
    assert_eq!(five.len(), 5, "{five:?}");
    let workers = logs(&cli, "hello", &["--type", "worker", "-n", "1000"]);
    assert!(!workers.is_empty());
    assert!(workers.iter().all(|l| l.contains(" hello[worker.")), "{workers:?}");
    let deis = logs(&cli, "hello", &["--source", "deis", "-n", "1000"]);
    assert!(deis.iter().all(|l| l.contains(" deis[")), "{deis:?}");
    assert!(deis.iter().any(|l| l.contains("Release v3 created")), "{deis:?}");
    let app_only = logs(&cli, "hello", &["--source", "app", "-n", "1000"]);
    assert!(app_only.iter().all(|l| l.contains(" hello[")), "{app_only:?}");

    // The Workflow endpoint: text/plain, every line ending in a real newline.
    let r = Request::get("/v2/apps/hello/logs?log_lines=3")
        .headers(&[("Authorization", &format!("token {}", cli.token()))])
        .send(d.api)
        .unwrap();
    assert_eq!(r.status, 200);
    assert!(r.headers["content-type"].starts_with("text/plain"), "{:?}", r.headers);
    assert_eq!(r.body.matches('\n').count(), 3, "{:?}", r.body);
    assert!(r.body.ends_with('\n'));

    // Real syslog emitters: util-linux logger over TCP (octet counting) and UDP.
    if Command::new("logger").arg("--version").output().is_err() {
        assert!(std::env::var_os("CI").is_none(), "logger (bsdutils) is missing");
        eprintln!("SKIPPING the logger part: `logger` is not installed (apt-get install bsdutils)");
    } else {
        let port = syslog_port.to_string();
        // Lines need the app's ingest token: in the tag here (and in the structured
        // data over UDP below).
        let token = cli.run(&["logs:token", "-a", "hello"]).ok().trim().to_string();
        let tag = format!("hello.web.1/{token}");
        let tcp = Command::new("logger")
            .args(["--rfc5424", "--octet-count", "-T", "-n", "127.0.0.1", "-P", &port, "-t", &tag])
            .arg("hello from logger")
            .status()
            .unwrap();
        assert!(tcp.success());
        let udp = Command::new("logger")
            .args(["--rfc5424", "-d", "-n", "127.0.0.1", "-P", &port, "-t", "hello.worker.2"])
            .args(["--sd-id", "deis@32473", "--sd-param", &format!("token=\"{token}\"")])
            .arg("hello over udp")
            .status()
            .unwrap();
        assert!(udp.success());
        let l = wait_line(&cli, "hello", "hello from logger");
        assert!(l.ends_with(" hello[web.1]: hello from logger"), "{l}");
        assert_line_format(&l, "hello");
        let l = wait_line(&cli, "hello", "hello over udp");
        assert!(l.ends_with(" hello[worker.2]: hello over udp"), "{l}");
    }

    // stdout and stderr are told apart (the JSON follow endpoint says which).
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("Procfile"), "noisy: sh -c 'echo to-out; echo to-err >&2; exec sleep 1000'\n")
        .unwrap();
    cli.run(&["create", "streams"]).ok();
    cli.run_in(&["deploy", "-a", "streams"], Some(dir.path())).ok();
    cli.run(&["scale", "noisy=1", "-a", "streams"]).ok();
    let token = cli.token();
    let got = follow_json(&d, &token, "streams", "log_lines=100&type=noisy", |v| {
        v.iter().any(|x| x["message"] == "to-out") && v.iter().any(|x| x["message"] == "to-err")
    });
    let out = got.iter().find(|x| x["message"] == "to-out").unwrap();
    let err = got.iter().find(|x| x["message"] == "to-err").unwrap();
    assert_eq!((out["stream"].as_str(), out["source"].as_str()), (Some("stdout"), Some("streams[noisy.1]")));
    assert_eq!((err["stream"].as_str(), err["source"].as_str()), (Some("stderr"), Some("streams[noisy.1]")));
    assert!(out["seq"].as_u64().unwrap() > 0);
}

/// A running `deis logs -f` with its output collected by threads.
struct Follower {
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    stderr: Arc<Mutex<String>>,
}

impl Follower {
    fn start(cli: &Cli, args: &[&str]) -> Self {
        let mut child = Command::new(binary("deis"))
            .args(args)
            .env("DEIS_PROFILE", &cli.profile)
            .env_remove("DEIS_APP")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let (err, sink) = (child.stderr.take().unwrap(), stderr.clone());
        std::thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                let mut s = sink.lock().unwrap();
                s.push_str(&l);
                s.push('\n');
            }
        });
        Self { child, lines, seen: vec![], stderr }
    }

    /// Waits up to `timeout` for a line containing `needle`.
    fn expect(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self.seen.iter().find(|l| l.contains(needle)) {
                return l.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => self.seen.push(l),
                Err(_) => panic!(
                    "no line with {needle:?} within {timeout:?}; stdout: {:?}; stderr: {}",
                    self.seen,
                    self.stderr.lock().unwrap()
                ),
            }
        }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Ctrl-C; returns the exit code.
    fn interrupt(mut self) -> i32 {
        deis_test_support::proc::signal(self.child.id(), "INT");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st.code().unwrap_or(-1);
            }
            assert!(Instant::now() < deadline, "deis logs -f did not stop on SIGINT");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn follow_sees_new_lines_fast_and_survives_a_restart() {
    let (mut d, cli, _) = start();
    let _dir = deploy_hello(&d, &cli, "hello");
    wait_line(&cli, "hello", "hello.web.1 up (v2)");

    let mut f = Follower::start(&cli, &["logs", "-f", "-n", "3", "-a", "hello"]);
    // The last lines first, then live ones within a second of being written.
    f.expect("deis[", T);
    let sent = Instant::now();
    d.get_app("hello", "/live-1").unwrap();
    let line = f.expect("GET /live-1 200", Duration::from_secs(5));
    assert!(sent.elapsed() < Duration::from_secs(1), "follow latency {:?}", sent.elapsed());
    assert!(line.contains(" hello[web.1]: GET /live-1 200"), "{line}");
    assert_line_format(&line, "hello");

    // The daemon restarts: the follower says so, reconnects and continues.
    d.stop();
    wait_for(T, "the reconnecting message", || {
        f.stderr().contains("-- connection lost, reconnecting... --").then_some(())
    });
    d.spawn();
    wait_for(T, "hello web up again", || d.get_app("hello", "/").ok().filter(|r| r.status == 200));
    d.get_app("hello", "/live-2").unwrap();
    f.expect("GET /live-2 200", T);
    assert_eq!(f.seen.iter().filter(|l| l.contains("GET /live-1 ")).count(), 1, "no duplicates: {:?}", f.seen);
    // The new daemon's log started over: the follower is told, and gets all of it.
    wait_for(Duration::from_secs(5), "the reconnected notice", || {
        let err = f.stderr();
        (err.contains("-- reconnected --") && err.contains("the log started over")).then_some(())
    });
    f.expect("hello[web.1]: hello.web.1 listening on", T);
    assert_eq!(f.interrupt(), 0, "Ctrl-C stops cleanly");
}

#[test]
fn with_redis_logs_survive_a_restart_and_follow_resumes_without_gaps() {
    let Some(redis) = RedisServer::start() else { return };
    let url = redis.url();
    let (mut d, cli) = daemon_with_user(&["--log-store", "redis", "--redis-url", &url]);
    let _dir = deploy_hello(&d, &cli, "hello");
    d.get_app("hello", "/before").unwrap();
    wait_line(&cli, "hello", "GET /before 200");

    let mut f = Follower::start(&cli, &["logs", "-f", "-n", "1", "-a", "hello"]);
    f.expect("", T);
    d.stop();
    wait_for(T, "the reconnecting message", || f.stderr().contains("reconnecting").then_some(()));
    d.spawn();
    // The log outlived the daemon.
    assert!(logs(&cli, "hello", &["-n", "1000"]).iter().any(|l| l.contains("GET /before 200")));
    wait_for(T, "hello web up again", || d.get_app("hello", "/").ok().filter(|r| r.status == 200));
    d.get_app("hello", "/after").unwrap();
    f.expect("GET /after 200", T);
    // The shutdown's own lines (units stopping) were written while the follower was
    // away: it resumed after its last line, so it got them, and nothing twice.
    assert!(f.seen.iter().any(|l| l.contains("hello.web.1 stopped")), "{:?}", f.seen);
    let mut sorted: Vec<String> = f.seen.iter().filter(|l| !l.contains("GET / ")).cloned().collect();
    let n = sorted.len();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), n, "no line twice: {:?}", f.seen);
    assert_eq!(f.interrupt(), 0);
}

#[test]
fn drains_forward_rfc5424_and_destroy_forgets_the_log() {
    let (d, cli, _) = start();
    cli.run(&["create", "drained"]).ok();
    // Only the owner (or an admin) reads an app's log, and its drains.
    let bob = d.cli();
    bob.register(&d, "bob");
    for args in [&["logs", "-a", "drained"][..], &["logs", "-f", "-a", "drained"], &["drains", "-a", "drained"]] {
        let r = bob.run(args);
        assert_ne!(r.code, 0, "{args:?}: {}", r.stdout);
        assert!(r.stderr.contains("permission"), "{args:?}: {}", r.stderr);
    }

    // A syslog collector of our own on loopback.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let received = Arc::new(Mutex::new(Vec::<u8>::new()));
    let sink = received.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { break };
            let sink = sink.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = conn.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    sink.lock().unwrap().extend_from_slice(&buf[..n]);
                }
            });
        }
    });

    let url = format!("syslog://127.0.0.1:{port}");
    let out = cli.run(&["drains:add", &url, "-a", "drained"]).ok();
    assert!(out.contains("done"), "{out}");
    let list = cli.run(&["drains:list", "-a", "drained", "--json"]).json();
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    assert_eq!(list[0]["url"], url.as_str());
    let dup = cli.run(&["drains:add", &url, "-a", "drained"]);
    assert_ne!(dup.code, 0, "the same drain twice is refused");
    let bad = cli.run(&["drains:add", "http://example.com", "-a", "drained"]);
    assert_ne!(bad.code, 0);
    assert!(bad.stderr.contains("syslog://HOST:PORT"), "{}", bad.stderr);

    cli.run(&["config:set", "FOO=bar", "-a", "drained"]).ok();
    let got = wait_for(T, "the drain to receive the release line", || {
        let text = String::from_utf8_lossy(&received.lock().unwrap()).into_owned();
        text.contains("Release v2 created by alice: alice added FOO").then_some(text)
    });
    // Octet-counted RFC 5424: `<len> <pri>1 <time> <host> <app> ...`.
    let frame_start = got.find(|c: char| c.is_ascii_digit()).unwrap();
    let (len, rest) = got[frame_start..].split_once(' ').unwrap();
    assert!(len.parse::<usize>().is_ok(), "{got}");
    assert!(rest.starts_with('<') && rest.contains(">1 "), "{got}");
    assert!(rest.contains(" drained "), "APP-NAME is the app: {got}");

    // Removing the drain (by URL) stops forwarding.
    cli.run(&["drains:remove", &url, "-a", "drained"]).ok();
    let list = cli.run(&["drains:list", "-a", "drained", "--json"]).json();
    assert_eq!(list.as_array().map(Vec::len), Some(0), "{list}");
    std::thread::sleep(Duration::from_millis(300));
    let before = received.lock().unwrap().len();
    cli.run(&["config:set", "BAR=baz", "-a", "drained"]).ok();
    wait_line(&cli, "drained", "alice added BAR");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(received.lock().unwrap().len(), before, "a removed drain gets nothing");

    // Destroy forgets the log: the same name again starts from a clean log.
    cli.run(&["destroy", "-a", "drained", "--confirm=drained"]).ok();
    cli.run(&["create", "drained"]).ok();
    let fresh = logs(&cli, "drained", &["-n", "1000"]);
    assert!(fresh.iter().any(|l| l.contains("App drained created by alice")), "{fresh:?}");
    assert!(!fresh.iter().any(|l| l.contains("FOO") || l.contains("BAR")), "old lines are gone: {fresh:?}");
    let list = cli.run(&["drains:list", "-a", "drained", "--json"]).json();
    assert_eq!(list.as_array().map(Vec::len), Some(0), "destroy removed the drains: {list}");
}
