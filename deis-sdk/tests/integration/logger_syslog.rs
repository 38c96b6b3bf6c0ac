//! Syslog ingest over real sockets: framing, real emitters (util-linux `logger`), TLS,
//! garbage and limits, slow followers, and the logger HTTP API.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use deis_sdk::deis_core::logs::syslog::UNROUTED_APP;
use deis_sdk::deis_core::logs::{
    Cursor, FollowItem, LogEntry, LogError, LogFilter, LogFollow, LogLine, LogSource, LogStore, LogStream, RingConfig,
    RingLogStore,
};
use deis_sdk::logger::http::{self, LoggerApi};
use deis_sdk::logger::{SyslogConfig, SyslogServer, TlsListenerConfig};
use deis_test_support::http::{Request, Response};
use deis_test_support::{eventually, skip_without};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

fn local() -> Option<SocketAddr> {
    Some("127.0.0.1:0".parse().unwrap())
}

async fn start(store: Arc<dyn LogStore>, tweak: impl FnOnce(&mut SyslogConfig)) -> SyslogServer {
    let mut config = SyslogConfig { udp_addr: local(), tcp_addr: local(), ..SyslogConfig::default() };
    tweak(&mut config);
    SyslogServer::start(config, store).await.unwrap()
}

/// Waits until `app` holds `n` lines and returns them.
async fn lines(store: &RingLogStore, app: &str, n: usize) -> Vec<LogEntry> {
    eventually(Duration::from_secs(5), &format!("{n} lines of {app}"), || async {
        let got = store.tail(app, usize::MAX, &LogFilter::default()).await.unwrap();
        (got.len() >= n).then_some(got)
    })
    .await
}

fn messages(entries: &[LogEntry]) -> Vec<&str> {
    entries.iter().map(|e| e.line.message.as_str()).collect()
}

#[tokio::test]
async fn tcp_detects_octet_counting_and_lf_framing_per_connection() {
    let store = RingLogStore::new();
    let server = start(Arc::new(store.clone()), |_| {}).await;
    let addr = server.tcp_addr().unwrap();

    // Docker's rfc5424 format, LF-framed, written in awkward pieces.
    let mut lf = TcpStream::connect(addr).await.unwrap();
    let docker = "<30>1 2026-11-25T14:47:21Z vm hello.web.1 2905 hello.web.1 - line one\n\
                  <27>1 2026-11-25T14:47:22Z vm hello.web.1 2905 hello.web.1 - line two\n";
    for piece in docker.as_bytes().chunks(7) {
        lf.write_all(piece).await.unwrap();
    }
    // Octet counting, several frames in one write.
    let mut oc = TcpStream::connect(addr).await.unwrap();
    let frame = |m: &str| format!("{} {m}", m.len());
    let msgs = [
        "<14>1 2026-11-25T14:47:23.5Z vm hello.worker.2 - - - with\nnewline",
        "<14>Nov 25 14:47:24 vm hello.worker.2: bsd",
    ];
    oc.write_all(format!("{}{}", frame(msgs[0]), frame(msgs[1])).as_bytes()).await.unwrap();

    let got = lines(&store, "hello", 4).await;
    let web: Vec<_> = got.iter().filter(|e| e.line.source.proc_type() == Some("web")).collect();
    assert_eq!(web.len(), 2);
    assert_eq!(web[0].line.message, "line one");
    assert_eq!(web[0].line.stream, LogStream::Severity(6));
    assert_eq!(web[1].line.message, "line two");
    assert_eq!(web[1].line.stream, LogStream::Severity(3));
    assert_eq!(web[0].line.to_string(), "2026-11-25T14:47:21.000Z hello[web.1]: line one");
    let worker: Vec<_> = got.iter().filter(|e| e.line.source.proc_type() == Some("worker")).map(|e| &e.line).collect();
    assert_eq!(worker.iter().map(|l| l.message.as_str()).collect::<Vec<_>>(), ["with\nnewline", "bsd"]);
    let c = server.counters().snapshot();
    assert_eq!((c.received, c.parsed, c.unparsed), (4, 4, 0));
    assert_eq!(c.connections_accepted, 2);
    server.shutdown().await;
}

#[tokio::test]
async fn udp_is_one_message_per_datagram() {
    let store = RingLogStore::new();
    let server = start(Arc::new(store.clone()), |_| {}).await;
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let target = server.udp_addr().unwrap();
    for m in [
        "<30>1 2026-11-25T14:47:21.123456Z vm hello.web.1 2905 hello.web.1 - micro",
        "<27>Nov 25 14:47:26 vm hello.web.1[2905]: bsd with host",
        "<27>Nov 25 14:47:27 hello.web.1: bsd without host\n",
    ] {
        sock.send_to(m.as_bytes(), target).await.unwrap();
    }
    let got = lines(&store, "hello", 3).await;
    let mut msgs = messages(&got);
    msgs.sort();
    assert_eq!(msgs, ["bsd with host", "bsd without host", "micro"]);
    assert!(got.iter().all(|e| e.line.source == LogSource::App { proc_type: "web".into(), number: 1 }));
    server.shutdown().await;
}

/// util-linux `logger`, a real emitter, over TCP (octet counting) and UDP.
#[tokio::test]
async fn util_linux_logger_over_tcp_and_udp() {
    if skip_without("logger", "bsdutils") {
        return;
    }
    let store = RingLogStore::new();
    let server = start(Arc::new(store.clone()), |_| {}).await;
    let run = |transport: &'static str, port: u16, tag: &'static str, msg: &'static str| async move {
        let out = tokio::process::Command::new("logger")
            .args(["--rfc5424", "--octet-count", "-n", "127.0.0.1", "-P", &port.to_string(), transport, "-t", tag, msg])
            .output()
            .await
            .unwrap();
        assert!(out.status.success(), "logger failed: {}", String::from_utf8_lossy(&out.stderr));
    };
    run("-T", server.tcp_addr().unwrap().port(), "myapp", "hi over tcp").await;
    run("-d", server.udp_addr().unwrap().port(), "myapp", "hi over udp").await;
    run("-T", server.tcp_addr().unwrap().port(), "myapp.web.1", "from a unit").await;

    let got = lines(&store, "myapp", 3).await;
    let mut shown: Vec<String> =
        got.iter().map(|e| e.line.to_string().split_once(' ').unwrap().1.to_string()).collect();
    shown.sort();
    assert_eq!(shown, ["myapp[syslog]: hi over tcp", "myapp[syslog]: hi over udp", "myapp[web.1]: from a unit"]);
    // logger --rfc5424 sends severity notice (user.notice = <13>).
    assert!(got.iter().all(|e| e.line.stream == LogStream::Severity(5) && !e.line.raw));
    let c = server.counters().snapshot();
    assert_eq!((c.received, c.parsed, c.unparsed), (3, 3, 0));
    server.shutdown().await;
}

fn tls_material(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf, rustls::RootCertStore) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ck.cert.der().clone()).unwrap();
    (cert, key, roots)
}

#[tokio::test]
async fn tls_listener_takes_octet_counted_frames_and_survives_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, roots) = tls_material(dir.path());
    let store = RingLogStore::new();
    let tls = TlsListenerConfig::from_pem_files("127.0.0.1:0".parse().unwrap(), &cert, &key).unwrap();
    let server = start(Arc::new(store.clone()), |c| {
        c.udp_addr = None;
        c.tcp_addr = None;
        c.tls = Some(tls);
    })
    .await;
    let addr = server.tls_addr().unwrap();

    // A client speaking plaintext to the TLS port is dropped and counted.
    let mut plain = TcpStream::connect(addr).await.unwrap();
    plain.write_all(b"<13>1 - - hello - - - not tls\n").await.unwrap();
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut sink)).await;

    let connector = tokio_rustls::TlsConnector::from(deis_sdk::logger::client_config_with_roots(roots));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut s = connector.connect("localhost".try_into().unwrap(), tcp).await.unwrap();
    for m in
        ["<30>1 2026-11-25T14:47:21Z vm hello.web.1 1 hello.web.1 - over tls", "<27>1 - vm hello.web.1 1 - - second"]
    {
        s.write_all(format!("{} {m}", m.len()).as_bytes()).await.unwrap();
    }
    s.flush().await.unwrap();
    let got = lines(&store, "hello", 2).await;
    assert_eq!(messages(&got), ["over tls", "second"]);
    let c = server.counters().snapshot();
    assert_eq!(c.dropped_tls_handshake, 1);
    assert_eq!(c.parsed, 2);
    server.shutdown().await;
}

/// Garbage, oversized and truncated input: counted, kept raw or rejected with a reason;
/// the listener keeps serving.
#[tokio::test]
async fn garbage_oversized_and_truncated_are_counted_and_the_listener_survives() {
    let store = RingLogStore::new();
    let server = start(Arc::new(store.clone()), |c| c.max_message_bytes = 1024).await;
    let (tcp, udp) = (server.tcp_addr().unwrap(), server.udp_addr().unwrap());

    // LF connection: garbage (kept raw), an oversized line (dropped), then a good line.
    let mut s = TcpStream::connect(tcp).await.unwrap();
    s.write_all(b"\xff\xfe total garbage \x01\n").await.unwrap();
    s.write_all(&[b'x'; 5000]).await.unwrap();
    s.write_all(b"\n<13>1 - - hello.web.1 - - - after oversized\n").await.unwrap();
    drop(s);
    // Octet counting: an oversized frame is skipped, the next one still read.
    let mut s = TcpStream::connect(tcp).await.unwrap();
    let good = "<13>1 - - hello.web.1 - - - after big frame";
    s.write_all(format!("2000 {}{} {good}", "y".repeat(2000), good.len()).as_bytes()).await.unwrap();
    drop(s);
    // A bad length closes that connection; a truncated frame at EOF is reported.
    let mut s = TcpStream::connect(tcp).await.unwrap();
    s.write_all(b"12ab <13>1 - - hello - - - x").await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await.unwrap().unwrap();
    let mut s = TcpStream::connect(tcp).await.unwrap();
    s.write_all(b"50 <13>1 - - hello - - - cut short").await.unwrap();
    drop(s);
    // UDP: an oversized datagram is dropped; garbage is kept raw.
    let u = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    u.send_to(&[b'z'; 2000], udp).await.unwrap();
    u.send_to(b"\x00\x00binary\x00", udp).await.unwrap();
    // Random bytes on several connections never take the listener down.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..20 {
        let mut s = TcpStream::connect(tcp).await.unwrap();
        let junk: Vec<u8> = (0..4096)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        let _ = s.write_all(&junk).await;
    }

    let got = lines(&store, "hello", 2).await;
    assert_eq!(messages(&got), ["after oversized", "after big frame"]);
    let c =
        eventually(Duration::from_secs(5), "the truncated frame, bad length and UDP lines to be counted", || async {
            let c = server.counters().snapshot();
            (c.dropped_framing_error >= 2 && c.dropped_oversized >= 3 && c.unparsed >= 2).then_some(c)
        })
        .await;
    let raw = store.tail(UNROUTED_APP, usize::MAX, &LogFilter::default()).await.unwrap();
    assert!(raw.iter().any(|e| e.line.raw && e.line.message.contains("total garbage")), "{raw:?}");
    assert!(raw.iter().any(|e| e.line.raw && e.line.message.contains("binary")), "{raw:?}");
    // Every message received was kept (parsed or raw) or dropped for being oversized.
    eventually(Duration::from_secs(5), "every received message accounted for", || async {
        let c = server.counters().snapshot();
        if c.received == c.parsed + c.unparsed + c.dropped_oversized { Ok(()) } else { Err(c) }
    })
    .await;
    assert!(c.dropped_oversized >= 3);

    // Still serving.
    let mut s = TcpStream::connect(tcp).await.unwrap();
    s.write_all(b"<13>1 - - hello.web.1 - - - still alive\n").await.unwrap();
    let got = lines(&store, "hello", 3).await;
    assert_eq!(got.last().unwrap().line.message, "still alive");
    server.shutdown().await;
}

#[tokio::test]
async fn connections_over_the_limit_are_refused_and_counted() {
    let store = RingLogStore::new();
    let server = start(Arc::new(store.clone()), |c| c.max_tcp_connections = 2).await;
    let tcp = server.tcp_addr().unwrap();
    let mut held = Vec::new();
    for i in 0..2 {
        let mut s = TcpStream::connect(tcp).await.unwrap();
        s.write_all(format!("<13>1 - - hello - - - conn {i}\n").as_bytes()).await.unwrap();
        held.push(s);
    }
    lines(&store, "hello", 2).await;
    let mut third = TcpStream::connect(tcp).await.unwrap();
    let mut buf = [0u8; 1];
    let n = tokio::time::timeout(Duration::from_secs(5), third.read(&mut buf)).await.unwrap().unwrap_or(0);
    assert_eq!(n, 0, "the third connection is closed at once");
    assert_eq!(server.counters().snapshot().dropped_too_many_connections, 1);
    // Freeing a slot lets a new connection in.
    drop(held.pop());
    eventually(Duration::from_secs(5), "the freed slot", || async {
        (server.counters().snapshot().connections_open == 1).then_some(())
    })
    .await;
    let mut s = TcpStream::connect(tcp).await.unwrap();
    s.write_all(b"<13>1 - - hello - - - conn 3\n").await.unwrap();
    lines(&store, "hello", 3).await;
    server.shutdown().await;
}

#[tokio::test]
async fn idle_connections_are_closed() {
    let store = RingLogStore::new();
    let server = start(Arc::new(store.clone()), |c| c.idle_timeout = Some(Duration::from_millis(300))).await;
    let mut s = TcpStream::connect(server.tcp_addr().unwrap()).await.unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 1];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.unwrap().unwrap_or(0);
    assert_eq!(n, 0);
    assert!(started.elapsed() >= Duration::from_millis(250));
    server.shutdown().await;
}

/// A store that refuses every append.
#[derive(Debug)]
struct BrokenStore;

#[async_trait]
impl LogStore for BrokenStore {
    async fn append(&self, _: Vec<LogLine>) -> Result<Vec<u64>, LogError> {
        Err(LogError::Closed)
    }
    async fn tail(&self, _: &str, _: usize, _: &LogFilter) -> Result<Vec<LogEntry>, LogError> {
        Err(LogError::Closed)
    }
    async fn follow(&self, _: &str, _: Cursor, _: LogFilter) -> Result<LogFollow, LogError> {
        Err(LogError::Closed)
    }
    async fn forget(&self, _: &str) -> Result<(), LogError> {
        Err(LogError::Closed)
    }
}

#[tokio::test]
async fn store_errors_are_counted() {
    let server = start(Arc::new(BrokenStore), |_| {}).await;
    let mut s = TcpStream::connect(server.tcp_addr().unwrap()).await.unwrap();
    s.write_all(b"<13>1 - - hello - - - one\n<13>1 - - hello - - - two\n").await.unwrap();
    drop(s);
    let c = eventually(Duration::from_secs(5), "store errors", || async {
        let c = server.counters().snapshot();
        (c.dropped_store_error == 2).then_some(c)
    })
    .await;
    assert_eq!(c.parsed, 2);
    server.shutdown().await;
}

/// A follower that stops reading must not slow ingest: 50k lines go in at full speed
/// and the follower, when it reads again, is told what it missed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_that_stops_reading_does_not_slow_ingest() {
    let store = RingLogStore::with_config(RingConfig { follower_buffer: 16, ..RingConfig::default() });
    let server = start(Arc::new(store.clone()), |_| {}).await;
    let mut stuck = store.follow("hello", Cursor::Now, LogFilter::default()).await.unwrap();
    const N: usize = 50_000;
    let started = Instant::now();
    let mut s = TcpStream::connect(server.tcp_addr().unwrap()).await.unwrap();
    let mut payload = Vec::new();
    for i in 0..N {
        let m = format!("<13>1 - - hello.web.1 - - - line {i}");
        payload.extend_from_slice(format!("{} {m}", m.len()).as_bytes());
    }
    s.write_all(&payload).await.unwrap();
    drop(s);
    eventually(Duration::from_secs(30), "50k lines parsed", || async {
        (server.counters().snapshot().parsed == N as u64).then_some(())
    })
    .await;
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(20), "ingest took {elapsed:?} with a stuck follower");
    let tail = store.tail("hello", 1, &LogFilter::default()).await.unwrap();
    assert_eq!(tail[0].seq, N as u64);
    assert_eq!(tail[0].line.message, format!("line {}", N - 1));
    // The follower got its buffer's worth, then a gap, then the newest lines.
    let mut lines_seen = 0u64;
    let mut missed = 0;
    let mut last = 0;
    while last < N as u64 {
        match tokio::time::timeout(Duration::from_secs(5), stuck.next()).await.unwrap().unwrap().unwrap() {
            FollowItem::Line(e) => {
                assert!(e.seq > last);
                last = e.seq;
                lines_seen += 1;
            }
            FollowItem::Missed(n) => missed += n,
        }
    }
    assert!(missed > 0);
    assert_eq!(lines_seen + missed, N as u64);
    server.shutdown().await;
}

#[tokio::test]
async fn http_api_serves_tail_follow_metrics_with_bearer_auth() {
    let store = RingLogStore::new();
    let server = start(Arc::new(store.clone()), |_| {}).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api_addr = listener.local_addr().unwrap();
    let api = LoggerApi {
        store: Arc::new(store.clone()),
        counters: Some(server.counters().clone()),
        drains: None,
        token: Some("s3cret".into()),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let limits = deis_sdk::controller::ApiLimits::default();
    let http_task = tokio::spawn(http::serve(listener, api, limits, async {
        let _ = stopped.await;
    }));

    let mut s = TcpStream::connect(server.tcp_addr().unwrap()).await.unwrap();
    s.write_all(b"<30>1 2026-11-25T14:47:21.123Z vm hello.web.1 - - - first\n").await.unwrap();
    s.write_all(b"<30>1 2026-11-25T14:47:22Z vm hello.worker.1 - - - second\n").await.unwrap();
    lines(&store, "hello", 2).await;

    let get = async |path: &str, token: Option<&str>| {
        let Response { status, body, .. } = Request::get(path).bearer(token).send_async(api_addr).await.unwrap();
        (status, body)
    };
    assert_eq!(get("/healthz", None).await, (200, "OK".into()));
    assert_eq!(get("/logs/hello", None).await.0, 401);
    assert_eq!(get("/logs/hello", Some("wrong")).await.0, 401);
    let (status, body) = get("/logs/hello?log_lines=10", Some("s3cret")).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        "2026-11-25T14:47:21.123Z hello[web.1]: first\n2026-11-25T14:47:22.000Z hello[worker.1]: second\n"
    );
    let (_, body) = get("/logs/hello?log_lines=1", Some("s3cret")).await;
    assert_eq!(body.lines().count(), 1);
    let (_, body) = get("/logs/hello?type=web", Some("s3cret")).await;
    assert_eq!(body, "2026-11-25T14:47:21.123Z hello[web.1]: first\n");
    assert_eq!(get("/logs/hello?log_lines=x", Some("s3cret")).await.0, 400);

    let follow = Request::get("/logs/hello/follow?log_lines=1").bearer(Some("s3cret"));
    let mut follow = follow.open_async(api_addr).await.unwrap();
    follow.wait_for("hello[worker.1]: second\n", Duration::from_secs(5)).await;
    let sent = Instant::now();
    s.write_all(b"<30>1 2026-11-25T14:47:23Z vm hello.web.1 - - - live one\n").await.unwrap();
    follow.wait_for("hello[web.1]: live one\n", Duration::from_secs(5)).await;
    assert!(sent.elapsed() < Duration::from_secs(1), "a followed line took {:?}", sent.elapsed());
    assert!(!follow.received().contains("first"));

    let (status, metrics) = get("/metrics", None).await;
    assert_eq!(status, 200);
    assert!(metrics.contains("deis_logger_messages_parsed_total 3.0\n"), "{metrics}");
    drop(follow);
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(5), http_task).await.unwrap().unwrap().unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn shutdown_releases_the_ports() {
    let store = RingLogStore::new();
    let server = start(Arc::new(store), |_| {}).await;
    let (tcp, udp) = (server.tcp_addr().unwrap(), server.udp_addr().unwrap());
    let _open = TcpStream::connect(tcp).await.unwrap();
    server.shutdown().await;
    let again = SyslogConfig { udp_addr: Some(udp), tcp_addr: Some(tcp), ..SyslogConfig::default() };
    let server = SyslogServer::start(again, Arc::new(RingLogStore::new())).await.unwrap();
    assert_eq!(server.tcp_addr(), Some(tcp));
    server.shutdown().await;
    // Nothing listens any more.
    assert!(TcpStream::connect(tcp).await.is_err());
}
