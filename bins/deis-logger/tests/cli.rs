//! The `deis-logger` binary end to end: real emitters in, HTTP out, graceful shutdown,
//! and the Redis store surviving a restart.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use deis_test_support::http::Request;
use deis_test_support::redis::RedisServer;
use deis_test_support::{Service, eventually, skip_without};

const T: Duration = Duration::from_secs(5);

struct Logger {
    child: Child,
    udp: SocketAddr,
    tcp: SocketAddr,
    http: SocketAddr,
}

fn field(line: &str, key: &str) -> SocketAddr {
    let at = line.find(key).unwrap_or_else(|| panic!("no {key:?} in {line:?}")) + key.len();
    line[at..].split_whitespace().next().unwrap().trim_start_matches("http://").parse().unwrap()
}

impl Logger {
    fn start(extra: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_deis-logger"))
            .args([
                "--syslog-udp-addr",
                "127.0.0.1:0",
                "--syslog-tcp-addr",
                "127.0.0.1:0",
                "--http-addr",
                "127.0.0.1:0",
            ])
            .args(["--token", "t0ken"])
            .args(extra)
            .env_remove("DEIS_LOGGER_STORE")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        loop {
            line.clear();
            assert!(stderr.read_line(&mut line).unwrap() > 0, "deis-logger exited before it was up");
            if line.contains("deis-logger is up") {
                break;
            }
        }
        // Keep draining its log so it never blocks on a full pipe.
        std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
        Self { udp: field(&line, "udp "), tcp: field(&line, "tcp "), http: field(&line, "http "), child }
    }

    /// SIGTERM, and the exit status must be success.
    fn stop(mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "deis-logger exited with {status}");
    }
}

impl Drop for Logger {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn emit(transport: &str, port: u16, tag: &str, msg: &str) {
    let out = Command::new("logger")
        .args(["--rfc5424", "--octet-count", "-n", "127.0.0.1", "-P", &port.to_string(), transport, "-t", tag, msg])
        .output()
        .unwrap();
    assert!(out.status.success(), "logger: {}", String::from_utf8_lossy(&out.stderr));
}

async fn logs(http: SocketAddr, app: &str, n: usize) -> String {
    eventually(T, &format!("{n} lines of {app}"), || async {
        let r = Request::get(&format!("/logs/{app}?log_lines=100")).bearer(Some("t0ken")).send_async(http).await;
        let body = r.map(|r| (r.status == 200).then_some(r.body)).ok().flatten()?;
        (body.lines().count() >= n).then_some(body)
    })
    .await
}

fn without_time(body: &str) -> Vec<String> {
    let mut v: Vec<String> = body.lines().map(|l| l.split_once(' ').unwrap().1.to_string()).collect();
    v.sort();
    v
}

#[tokio::test]
async fn util_linux_logger_in_http_out() {
    if skip_without("logger", "bsdutils") {
        return;
    }
    let logger = Logger::start(&[]);
    let metrics = Request::get("/metrics").send_async(logger.http).await.unwrap().body;
    assert!(metrics.contains("deis_logger_messages_parsed_total 0.0\n"), "{metrics}");
    emit("-T", logger.tcp.port(), "myapp.web.1", "hello over tcp");
    emit("-d", logger.udp.port(), "myapp", "hello over udp");
    let body = logs(logger.http, "myapp", 2).await;
    assert_eq!(without_time(&body), ["myapp[syslog]: hello over udp", "myapp[web.1]: hello over tcp"]);
    assert_eq!(Request::get("/logs/myapp").send_async(logger.http).await.unwrap().status, 401);

    let follow = Request::get("/logs/myapp/follow").bearer(Some("t0ken"));
    let mut follow = follow.open_async(logger.http).await.unwrap();
    follow.wait_for("\r\n\r\n", T).await;
    emit("-T", logger.tcp.port(), "myapp.worker.2", "followed");
    follow.wait_for("myapp[worker.2]: followed\n", T).await;

    let metrics = Request::get("/metrics").send_async(logger.http).await.unwrap();
    assert!(metrics.headers["content-type"].starts_with("text/plain; version=0.0.4"), "{:?}", metrics.headers);
    assert!(metrics.body.contains("deis_logger_messages_parsed_total 3.0\n"), "{}", metrics.body);
    assert!(metrics.body.contains("deis_logger_connections_accepted_total 2.0\n"), "{}", metrics.body);
    // Prometheus asks for OpenMetrics, and gets it.
    let om = Request::get("/metrics").header("Accept", "application/openmetrics-text; version=1.0.0");
    let om = om.send_async(logger.http).await.unwrap();
    assert!(om.headers["content-type"].starts_with("application/openmetrics-text"), "{:?}", om.headers);
    assert!(om.body.ends_with("# EOF\n") && om.body.contains("deis_logger_messages_parsed_total 3.0\n"), "{}", om.body);
    drop(follow);
    logger.stop();
}

#[tokio::test]
async fn redis_store_keeps_logs_across_a_restart() {
    if skip_without("logger", "bsdutils") {
        return;
    }
    let Some(redis) = RedisServer::shared() else { return };
    let args = ["--store", "redis", "--redis-url", &redis.url()];
    let first = Logger::start(&args);
    emit("-T", first.tcp.port(), "myapp.web.1", "before restart");
    logs(first.http, "myapp", 1).await;
    first.stop();

    let second = Logger::start(&args);
    let body = logs(second.http, "myapp", 1).await;
    assert_eq!(without_time(&body), ["myapp[web.1]: before restart"]);
    let follow = Request::get("/logs/myapp/follow?after=1").bearer(Some("t0ken"));
    let mut follow = follow.open_async(second.http).await.unwrap();
    emit("-T", second.tcp.port(), "myapp.web.1", "after restart");
    follow.wait_for("myapp[web.1]: after restart\n", T).await;
    assert!(!follow.received().contains("before restart"));
    drop(follow);
    second.stop();
}

#[test]
fn bad_flags_say_what_to_do() {
    let out = Command::new(env!("CARGO_BIN_EXE_deis-logger"))
        .args(["--syslog-udp-addr", "nonsense", "--http-addr", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--syslog-udp-addr \"nonsense\"") && err.contains("IP:PORT or `off`"), "{err}");
    let out = Command::new(env!("CARGO_BIN_EXE_deis-logger"))
        .args(["--drain", "nourl", "--http-addr", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected APP=URL"));
}

/// With `--platform-store`, an app's lines need its ingest token (read from the
/// platform's etcd and followed there): a spoofed line is dropped and counted, the
/// token in the tag or the structured data lets a line in, a rotated-out token does not.
#[tokio::test]
async fn with_a_platform_store_lines_need_the_apps_ingest_token() {
    use deis_sdk::deis_core::AppName;
    use deis_sdk::deis_core::controller::{IngestToken, ingest_token_key};
    use deis_sdk::deis_core::store::records;
    use deis_test_support::etcd::EtcdServer;
    if skip_without("logger", "bsdutils") {
        return;
    }
    let Some(etcd) = EtcdServer::start() else { return };
    let uri: deis_sdk::adapters::StoreUri = format!("etcd://{}", etcd.addr()).parse().unwrap();
    let store = uri.open().await.unwrap();
    let app = AppName::new("myapp").unwrap();
    let first = IngestToken::generate(&app);
    store.put(&ingest_token_key("myapp"), records::encode(&first)).await.unwrap();

    let logger = Logger::start(&["--platform-store", &uri.to_string()]);
    let tcp = logger.tcp.port();
    emit("-T", tcp, "myapp.web.1", "spoofed");
    emit("-T", tcp, &format!("myapp.web.1/{}", first.token), "with the token in the tag");
    let sd = format!("[deis@32473 token=\"{}\"]", first.token);
    let out = Command::new("logger")
        .args(["--rfc5424", "--octet-count", "-T", "-n", "127.0.0.1", "-P", &tcp.to_string(), "-t", "myapp.worker.1"])
        .args(["--sd-id", "deis@32473", "--sd-param", &format!("token=\"{}\"", first.token), "in the sd"])
        .output()
        .unwrap();
    assert!(out.status.success(), "logger {sd}: {}", String::from_utf8_lossy(&out.stderr));
    let body = logs(logger.http, "myapp", 2).await;
    assert_eq!(without_time(&body), ["myapp[web.1]: with the token in the tag", "myapp[worker.1]: in the sd"]);

    // Rotated in the store: the old token is refused once the logger has seen it.
    let second = IngestToken::generate(&app);
    store.put(&ingest_token_key("myapp"), records::encode(&second)).await.unwrap();
    // Each attempt reads the log once (no nested wait), under a longer bound than T:
    // the watch of a loaded machine's etcd may take a while.
    let now = || async {
        let r = Request::get("/logs/myapp?log_lines=100").bearer(Some("t0ken")).send_async(logger.http).await;
        r.map(|r| r.body).unwrap_or_default()
    };
    eventually(6 * T, "the rotated token to be taken", || async {
        emit("-T", tcp, &format!("myapp.web.1/{}", second.token), "after rotation");
        now().await.contains("after rotation").then_some(())
    })
    .await;
    emit("-T", tcp, &format!("myapp.web.1/{}", first.token), "old token");
    emit("-T", tcp, &format!("myapp.web.1/{}", second.token), "sentinel");
    let body = eventually(6 * T, "the sentinel", || async {
        let body = now().await;
        body.contains("sentinel").then_some(body)
    })
    .await;
    assert!(!body.contains("old token") && !body.contains("spoofed"), "{body}");
    let metrics = Request::get("/metrics").send_async(logger.http).await.unwrap().body;
    let dropped = metrics
        .lines()
        .find_map(|l| l.strip_prefix("deis_logger_messages_dropped_total{reason=\"bad_token\"} "))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no bad_token counter: {metrics}"));
    // The spoofed line and the old token's; rotation attempts before the logger saw it may add.
    assert!(dropped >= 2.0, "{metrics}");
    logger.stop();
}
