//! The test support itself: polling, the HTTP client against a raw server, the service
//! starters against the real programs, and the process helpers.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use deis_test_support::etcd::EtcdServer;
use deis_test_support::http::{Request, Response};
use deis_test_support::redis::RedisServer;
use deis_test_support::{Service, eventually, free_port, proc, wait_for};

const T: Duration = Duration::from_secs(10);

#[test]
fn wait_for_returns_the_value_once_ready() {
    let start = Instant::now();
    let v = wait_for(T, "50 ms to pass", || (start.elapsed() > Duration::from_millis(50)).then_some(7));
    assert_eq!(v, 7);
}

#[test]
#[should_panic(expected = "waiting for the impossible; last seen: \"still 1\"")]
fn wait_for_names_what_it_waited_for_and_what_it_saw() {
    wait_for(Duration::from_millis(100), "the impossible", || Err::<(), _>("still 1"));
}

#[tokio::test]
#[should_panic(expected = "timed out after 100ms waiting for nothing")]
async fn eventually_times_out_by_the_deadline() {
    eventually(Duration::from_millis(100), "nothing", || async { None::<()> }).await;
}

#[test]
fn free_ports_are_bindable() {
    let port = free_port();
    TcpListener::bind(("127.0.0.1", port)).expect("the free port binds");
}

/// Serves one connection with `response` (after reading the request head); returns the
/// address and a handle yielding the request.
fn one_shot_server(response: &'static [u8]) -> (std::net::SocketAddr, std::thread::JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut req = Vec::new();
        let mut buf = [0u8; 1024];
        while !req.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = conn.read(&mut buf).unwrap();
            req.extend_from_slice(&buf[..n]);
        }
        conn.write_all(response).unwrap();
        String::from_utf8(req).unwrap()
    });
    (addr, handle)
}

#[test]
fn http_send_parses_chunked_responses_and_sends_what_was_built() {
    let chunked =
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n5\r\nhello\r\n6;x=y\r\n world\r\n0\r\n\r\n";
    let (addr, server) = one_shot_server(chunked);
    let r = Request::get("/p?q=1").host("app.test").bearer(Some("tok")).send(addr).unwrap();
    assert_eq!((r.status, r.body.as_str(), r.headers["x-a"].as_str()), (200, "hello world", "1"));
    let req = server.join().unwrap();
    assert!(req.starts_with("GET /p?q=1 HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n"), "{req}");
    assert!(req.contains("Authorization: Bearer tok\r\n"), "{req}");
}

#[tokio::test]
async fn http_send_async_and_streams() {
    let (addr, _server) = one_shot_server(b"HTTP/1.1 404 Not Found\r\nContent-Length: 4\r\n\r\nnope");
    let r = Request::post("/x").body("{}").send_async(addr).await.unwrap();
    assert_eq!((r.status, r.body.as_str()), (404, "nope"));

    let (addr, _server) = one_shot_server(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nline\r\n");
    let mut s = Request::get("/follow").open_async(addr).await.unwrap();
    s.wait_for("line", T).await;
    assert!(s.received().starts_with("HTTP/1.1 200"));
    let mut s = {
        let (addr, _server) = one_shot_server(b"HTTP/1.1 200 OK\r\n\r\nfirst");
        Request::get("/follow").open(addr).unwrap()
    };
    s.wait_for("first", T);
}

#[test]
fn malformed_responses_are_errors() {
    assert!(Response::parse(b"HTTP/1.1 200 OK\r\n").is_err(), "no end of head");
    assert!(Response::parse(b"SSH-2.0\r\n\r\n").is_err(), "not HTTP");
    assert!(Response::parse(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel").is_err(), "cut short");
    assert!(Response::parse(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel").is_err(), "shorter than said");
}

#[test]
fn a_server_closing_without_answering_is_told_apart() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || drop(listener.accept().unwrap()));
    let err = Request::get("/").send(addr).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof, "{err}");
    server.join().unwrap();
    let err = Request::get("/").send(addr).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
}

#[test]
fn redis_starter_answers_and_stops_on_drop() {
    let Some(redis) = RedisServer::start() else { return };
    let mut s = std::net::TcpStream::connect(redis.addr()).unwrap();
    s.write_all(b"SET k v\r\nGET k\r\n").unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    while !got.ends_with(b"v\r\n") {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "{got:?}");
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(got, b"+OK\r\n$1\r\nv\r\n");
    assert!(redis.url().starts_with("redis://127.0.0.1:"));
    let pid = redis.process().unwrap().pid();
    let dir = redis.process().unwrap().dir().to_path_buf();
    drop(redis);
    assert!(proc::gone(pid), "redis-server still runs after drop");
    assert!(!dir.exists(), "its temp dir is removed");
}

#[test]
fn shared_services_are_started_once() {
    let Some(a) = RedisServer::shared() else { return };
    let b = RedisServer::shared().unwrap();
    assert!(std::ptr::eq(a, b));
}

#[test]
fn etcd_starter_serves_the_v3_api() {
    let Some(etcd) = EtcdServer::start() else { return };
    // The JSON gateway: keys and values are base64 ("a2V5" = "key", "dmFsdWU=" = "value").
    let put = Request::post("/v3/kv/put").body(r#"{"key":"a2V5","value":"dmFsdWU="}"#).send(etcd.addr()).unwrap();
    assert_eq!(put.status, 200, "{}", put.body);
    let get = Request::post("/v3/kv/range").body(r#"{"key":"a2V5"}"#).send(etcd.addr()).unwrap();
    assert!(get.body.contains("dmFsdWU="), "{}", get.body);
    let pid = etcd.process().unwrap().pid();
    drop(etcd);
    assert!(proc::gone(pid));
}

#[test]
fn processes_are_found_by_environment_and_stopped_by_pid() {
    let marker = format!("m{}", std::process::id());
    let mut child =
        Command::new("sleep").arg("60").env("DEIS_TEST_SUPPORT_MARKER", &marker).stdout(Stdio::null()).spawn().unwrap();
    let pid = child.id();
    assert_eq!(proc::processes_with_env("DEIS_TEST_SUPPORT_MARKER", &marker), [pid]);
    assert_eq!(proc::env_var(pid, "DEIS_TEST_SUPPORT_MARKER").as_deref(), Some(marker.as_str()));
    assert_eq!(proc::stat(pid).unwrap().ppid, std::process::id());
    proc::stop_pid(pid);
    assert!(proc::gone(pid));
    assert_eq!(proc::zombies_of(std::process::id()), [pid], "stopped, not yet reaped");
    child.wait().unwrap();
    assert!(proc::stat(pid).is_none());
}
