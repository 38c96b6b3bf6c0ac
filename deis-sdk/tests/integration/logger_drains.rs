//! Log drains against real receivers on loopback: TCP, UDP, TLS; dead drains.

use std::sync::Arc;
use std::time::{Duration, Instant};

use deis_sdk::deis_core::logs::syslog::{FrameDecoder, SyslogMessage, parse};
use deis_sdk::deis_core::logs::{LogLine, LogStore, LogStream, RingLogStore};
use deis_sdk::logger::{DrainSet, DrainSetConfig, DrainUrl, DrainingLogStore};
use deis_test_support::eventually;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, UdpSocket};

const T: Duration = Duration::from_secs(5);

fn config() -> DrainSetConfig {
    DrainSetConfig {
        min_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
        ..Default::default()
    }
}

fn line(msg: &str) -> LogLine {
    LogLine::from_unit("hello", "web", 1, LogStream::Stderr, msg)
}

/// Reads `n` octet-counted messages from the first connection to `listener`.
async fn receive_stream<S: tokio::io::AsyncRead + Unpin>(mut s: S, n: usize) -> Vec<SyslogMessage> {
    let mut dec = FrameDecoder::new(64 * 1024);
    let mut out = Vec::new();
    let mut buf = vec![0u8; 8192];
    while out.len() < n {
        let k = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.expect("drain lines").unwrap();
        assert!(k > 0, "drain closed the connection after {} messages", out.len());
        dec.push(&buf[..k]);
        while let Some(f) = dec.next_frame() {
            out.push(parse(f.unwrap(), std::time::SystemTime::now()));
        }
    }
    out
}

fn check(msgs: &[SyslogMessage], expected: &[&str]) {
    assert_eq!(msgs.iter().map(|m| m.message.as_str()).collect::<Vec<_>>(), expected);
    for m in msgs {
        assert!(!m.raw);
        assert_eq!(m.app_name.as_deref(), Some("hello"));
        assert_eq!(m.procid.as_deref(), Some("web.1"));
        assert_eq!(m.severity, 3, "stderr is severity error");
    }
}

#[tokio::test]
async fn tcp_and_udp_drains_receive_rfc5424() {
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let drains = Arc::new(DrainSet::new(config()));
    let urls = vec![
        DrainUrl::parse(&format!("syslog://{}", tcp.local_addr().unwrap())).unwrap(),
        DrainUrl::parse(&format!("syslog+udp://{}", udp.local_addr().unwrap())).unwrap(),
    ];
    drains.set_drains("hello", urls.clone());
    let mut sorted = urls.clone();
    sorted.sort();
    assert_eq!(drains.drains("hello"), sorted);
    let store = DrainingLogStore::new(Arc::new(RingLogStore::new()), drains.clone());
    store
        .append(vec![line("one"), line("two"), LogLine::from_unit("other", "web", 1, LogStream::Stdout, "not drained")])
        .await
        .unwrap();

    let (conn, _) = tokio::time::timeout(Duration::from_secs(5), tcp.accept()).await.unwrap().unwrap();
    check(&receive_stream(conn, 2).await, &["one", "two"]);
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65536];
    for _ in 0..2 {
        let n = tokio::time::timeout(Duration::from_secs(5), udp.recv(&mut buf)).await.unwrap().unwrap();
        got.push(parse(&buf[..n], std::time::SystemTime::now()));
    }
    check(&got, &["one", "two"]);
    let stats = drains.stats();
    assert_eq!(stats.iter().map(|s| s.sent).sum::<u64>(), 4);
    let (_, metrics) = deis_sdk::telemetry::exposition::render(drains.families(), None);
    assert!(metrics.contains("deis_logger_drain_sent_total{app=\"hello\",drain=\"syslog+udp://"), "{metrics}");

    // Removing the drains stops forwarding.
    drains.set_drains("hello", vec![]);
    assert!(drains.drains("hello").is_empty());
    store.append(vec![line("after removal")]).await.unwrap();
    assert!(tokio::time::timeout(Duration::from_millis(300), udp.recv(&mut buf)).await.is_err());
}

#[tokio::test]
async fn tls_drain_verifies_the_server_with_a_custom_ca() {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(deis_sdk::logger::server_config_from_pem(&cert, &key).unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();

    let mut c = config();
    c.tls_roots = Some(deis_sdk::logger::load_root_certs(&cert).unwrap());
    let drains = Arc::new(DrainSet::new(c));
    drains.set_drains("hello", vec![DrainUrl::parse(&format!("syslog+tls://localhost:{port}")).unwrap()]);
    drains.forward(&line("secret line"));
    let (conn, _) = tokio::time::timeout(Duration::from_secs(5), listener.accept()).await.unwrap().unwrap();
    let tls = acceptor.accept(conn).await.unwrap();
    check(&receive_stream(tls, 1).await, &["secret line"]);

    // A drain whose server isn't trusted never gets the line and reports why.
    let untrusted = Arc::new(DrainSet::new(config()));
    untrusted.set_drains("hello", vec![DrainUrl::parse(&format!("syslog+tls://localhost:{port}")).unwrap()]);
    untrusted.forward(&line("never sent"));
    let accept = tokio::spawn(async move {
        let (conn, _) = listener.accept().await.unwrap();
        acceptor.accept(conn).await.is_err()
    });
    assert!(tokio::time::timeout(Duration::from_secs(5), accept).await.unwrap().unwrap());
    let err = eventually(T, "the drain's TLS error", || async { untrusted.stats()[0].last_error.clone() }).await;
    assert!(err.contains("TLS handshake"), "{err}");
    assert_eq!(untrusted.stats()[0].sent, 0);
}

/// A dead drain costs ingest nothing: appends run at full speed, the queue stays
/// bounded (oldest dropped, counted), and when the drain comes back it gets the newest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_drain_never_slows_ingest_and_catches_up_when_back() {
    let port = deis_test_support::free_port();
    let mut c = config();
    c.queue_lines = 1000;
    let drains = Arc::new(DrainSet::new(c));
    drains.set_drains("hello", vec![DrainUrl::parse(&format!("syslog://127.0.0.1:{port}")).unwrap()]);
    let store = DrainingLogStore::new(Arc::new(RingLogStore::new()), drains.clone());
    let started = Instant::now();
    for chunk in 0..100 {
        store.append((0..1000).map(|i| line(&format!("{}", chunk * 1000 + i))).collect()).await.unwrap();
    }
    let took = started.elapsed();
    assert!(took < Duration::from_secs(10), "100k appends with a dead drain took {took:?}");
    let s = &drains.stats()[0];
    assert_eq!((s.queued, s.dropped, s.sent, s.connected), (1000, 99_000, 0, false));
    assert!(s.last_error.as_deref().unwrap_or("").contains("connecting to"), "{s:?}");

    // The drain comes back: the 1000 newest lines arrive, oldest first.
    let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let (conn, _) = tokio::time::timeout(Duration::from_secs(5), listener.accept()).await.unwrap().unwrap();
    let got = receive_stream(conn, 1000).await;
    assert_eq!(got[0].message, "99000");
    assert_eq!(got[999].message, "99999");
    eventually(T, "1000 lines sent", || async { (drains.stats()[0].sent == 1000).then_some(()) }).await;
}
