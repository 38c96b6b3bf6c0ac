//! The WebSocket TTY broker on loopback, with the real local backend: sessions both
//! ways, the Kubernetes channel protocol (v5 and v4), refusals, timeouts, audit, and
//! the Workflow batch run.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use deis_sdk::deis_core::scheduler::Artifact;
use deis_sdk::deis_core::testing::{app_name, process_type};
use deis_sdk::deis_core::tty::channel::Protocol;
use deis_sdk::deis_core::tty::token::{Claims, TokenSigner};
use deis_sdk::deis_core::tty::{ExitStatus, LocalTtyBroker, SessionInput, SessionOutput, SessionSpec, TermSize};
use deis_sdk::tty::client::{AttachError, AttachOptions, RemoteSession, attach, attach_url_raw};
use deis_sdk::tty::{AuditEvent, AuditSink, SessionTicket, TtyConfig, TtyService, ViaRouter, attach_router};

const SECRET: &[u8] = b"test secret for the tty broker tests, 32+ bytes";

#[derive(Debug, Default)]
struct Recorder(Mutex<Vec<AuditEvent>>);

#[async_trait]
impl AuditSink for Recorder {
    async fn record(&self, event: &AuditEvent) {
        self.0.lock().unwrap().push(event.clone());
    }
}

struct Broker {
    url: String,
    service: Arc<TtyService>,
    audit: Arc<Recorder>,
    dir: tempfile::TempDir,
}

async fn start(config: TtyConfig) -> Broker {
    let audit = Arc::new(Recorder::default());
    let service = Arc::new(
        TtyService::embedded(Arc::new(LocalTtyBroker::default()), TokenSigner::new(SECRET), config)
            .with_audit(audit.clone()),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let router = attach_router(service.clone());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    Broker { url, service, audit, dir: tempfile::tempdir().unwrap() }
}

impl Broker {
    fn spec(&self, app: &str, command: &[&str], tty: bool) -> SessionSpec {
        SessionSpec {
            app: app_name(app),
            proc_type: process_type("web"),
            artifact: Artifact::Source { dir: self.dir.path().to_path_buf() },
            release: 1,
            env: BTreeMap::from([("GREETING".to_string(), "hello".to_string())]),
            command: command.iter().map(|s| s.to_string()).collect(),
            tty,
            size: None,
            user: "alice".into(),
            identity: None,
            limits: Default::default(),
        }
    }

    fn ticket(&self, app: &str, command: &[&str], tty: bool) -> SessionTicket {
        self.service.create_session(self.spec(app, command, tty)).unwrap()
    }

    async fn attach(&self, ticket: &SessionTicket, opts: AttachOptions) -> Result<RemoteSession, AttachError> {
        attach(&self.url, ticket, opts).await
    }
}

/// Collects output until the exit status; (stdout, stderr, status).
async fn finish(remote: &mut RemoteSession) -> (Vec<u8>, Vec<u8>, Result<ExitStatus, AttachError>) {
    let (mut out, mut err) = (vec![], vec![]);
    while let Some(ev) = remote.output.recv().await {
        match ev {
            Ok(SessionOutput::Stdout(b)) => out.extend(b),
            Ok(SessionOutput::Stderr(b)) => err.extend(b),
            Ok(SessionOutput::Exit(s)) => return (out, err, Ok(s)),
            Err(e) => return (out, err, Err(e)),
        }
    }
    (out, err, Err(AttachError::Lost("no status".into())))
}

/// Reads terminal output until it contains `needle`.
async fn read_until(remote: &mut RemoteSession, needle: &str) -> String {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !String::from_utf8_lossy(&seen).contains(needle) {
        match tokio::time::timeout_at(deadline, remote.output.recv()).await {
            Ok(Some(Ok(SessionOutput::Stdout(b)))) => seen.extend(b),
            other => panic!("waiting for {needle:?}: {other:?}; saw {:?}", String::from_utf8_lossy(&seen)),
        }
    }
    String::from_utf8_lossy(&seen).into_owned()
}

#[tokio::test]
async fn batch_session_streams_stdin_stdout_stderr_and_exit_code() {
    let b = start(TtyConfig::default()).await;
    let t = b.ticket("a", &["sh", "-c", "cat; echo \"$GREETING $DEIS_APP\" >&2; exit 7"], false);
    let mut remote = b.attach(&t, AttachOptions::default()).await.unwrap();
    assert_eq!(remote.protocol, Protocol::V5);
    let payload: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let input = remote.input.clone();
    let sent = payload.clone();
    tokio::spawn(async move {
        for chunk in sent.chunks(10_000) {
            input.send(SessionInput::Stdin(chunk.to_vec())).await.unwrap();
        }
        input.send(SessionInput::Eof).await.unwrap();
    });
    let (out, err, status) = finish(&mut remote).await;
    assert_eq!(status.unwrap(), ExitStatus::Code(7));
    assert!(out == payload, "binary stdin must come back unchanged ({} of {} bytes)", out.len(), payload.len());
    assert_eq!(String::from_utf8_lossy(&err), "hello a\n");

    let events = b.audit.0.lock().unwrap().clone();
    assert!(matches!(&events[0], AuditEvent::Started { user, app, tty: false, .. } if user == "alice" && app == "a"));
    assert!(
        matches!(&events[1], AuditEvent::Ended { exit: Some(ExitStatus::Code(7)), .. }),
        "end audited with the exit code: {events:?}"
    );
}

#[tokio::test]
async fn tty_session_echoes_resizes_and_exits() {
    let b = start(TtyConfig::default()).await;
    let t = b.ticket("a", &["sh"], true);
    let opts = AttachOptions { size: Some(TermSize { cols: 91, rows: 33 }), ..AttachOptions::default() };
    let mut remote = b.attach(&t, opts).await.unwrap();
    remote.input.send(SessionInput::Stdin(b"stty size; echo mark1\n".to_vec())).await.unwrap();
    let seen = read_until(&mut remote, "\r\nmark1").await;
    assert!(seen.contains("33 91"), "initial size: {seen:?}");
    remote.input.send(SessionInput::Resize(TermSize { cols: 120, rows: 40 })).await.unwrap();
    remote.input.send(SessionInput::Stdin(b"stty size; echo mark2\n".to_vec())).await.unwrap();
    let seen = read_until(&mut remote, "\r\nmark2").await;
    assert!(seen.contains("40 120"), "after resize: {seen:?}");
    remote.input.send(SessionInput::Stdin(b"exit 3\n".to_vec())).await.unwrap();
    let (_, _, status) = finish(&mut remote).await;
    assert_eq!(status.unwrap(), ExitStatus::Code(3));
}

#[tokio::test]
async fn v4_clients_are_served() {
    let b = start(TtyConfig::default()).await;
    let t = b.ticket("a", &["echo v4"], false);
    let opts = AttachOptions { protocol: Some(Protocol::V4), ..AttachOptions::default() };
    let mut remote = b.attach(&t, opts).await.unwrap();
    assert_eq!(remote.protocol, Protocol::V4);
    let (out, _, status) = finish(&mut remote).await;
    assert_eq!((out, status.unwrap()), (b"v4\n".to_vec(), ExitStatus::Code(0)));
}

fn refused(r: Result<RemoteSession, AttachError>) -> (u16, String) {
    match r {
        Err(AttachError::Refused { status, message }) => (status, message),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn bad_tokens_and_origins_are_refused_with_clear_messages() {
    let b = start(TtyConfig::default()).await;

    // Reuse.
    let t = b.ticket("a", &["true"], false);
    let mut first = b.attach(&t, AttachOptions::default()).await.unwrap();
    assert_eq!(finish(&mut first).await.2.unwrap(), ExitStatus::Code(0));
    let (status, msg) = refused(b.attach(&t, AttachOptions::default()).await);
    assert_eq!(status, 403);
    assert!(msg.contains("already used"), "{msg}");

    // Expired: a token for a real session, signed with the shared secret, expired.
    let t = b.ticket("a", &["true"], false);
    let mut claims = Claims::new("alice", app_name("a"), vec!["true".into()], false, process_type("web"));
    claims.session = t.id.clone();
    let old = SystemTime::now() - Duration::from_secs(300);
    let expired = SessionTicket { token: TokenSigner::new(SECRET).issue_at(claims, Duration::from_secs(60), old), ..t };
    let (status, msg) = refused(b.attach(&expired, AttachOptions::default()).await);
    assert_eq!(status, 403);
    assert!(msg.contains("expired"), "{msg}");

    // A token of app a on a session of app b.
    let ta = b.ticket("a", &["true"], false);
    let tb = b.ticket("b", &["true"], false);
    let cross = SessionTicket { token: ta.token.clone(), ..tb.clone() };
    let (status, msg) = refused(b.attach(&cross, AttachOptions::default()).await);
    assert_eq!(status, 403);
    assert!(msg.contains("is for app \"a\", not \"b\""), "{msg}");

    // Forged signature.
    let forged = SessionTicket { token: format!("{}00", ta.token), ..ta.clone() };
    let (status, msg) = refused(b.attach(&forged, AttachOptions::default()).await);
    assert_eq!(status, 403, "{msg}");

    // Foreign Origin; same-host Origin is fine.
    let opts = AttachOptions { origin: Some("https://evil.example".into()), ..AttachOptions::default() };
    let (status, msg) = refused(b.attach(&ta, opts).await);
    assert_eq!(status, 403);
    assert!(msg.contains("Origin https://evil.example is not allowed"), "{msg}");
    let opts = AttachOptions { origin: Some(b.url.clone()), ..AttachOptions::default() };
    let mut ok = b.attach(&ta, opts).await.unwrap();
    assert_eq!(finish(&mut ok).await.2.unwrap(), ExitStatus::Code(0));

    // Unknown session, missing token.
    let url = format!("{}/v2/sessions/nope/attach?token=x", b.url.replace("http", "ws"));
    let (status, msg) = refused(attach_url_raw(&url, AttachOptions::default()).await);
    assert_eq!(status, 404, "{msg}");
    let url = format!("{}{}", b.url.replace("http", "ws"), tb.url);
    let (status, msg) = refused(attach_url_raw(&url, AttachOptions::default()).await);
    assert_eq!(status, 401);
    assert!(msg.contains("no session token"), "{msg}");
}

#[tokio::test]
async fn subprotocol_and_upgrade_are_required() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let b = start(TtyConfig::default()).await;
    let t = b.ticket("a", &["true"], false);
    let url = format!("{}{}?token={}", b.url.replace("http", "ws"), t.url, t.token);
    let mut req = url.as_str().into_client_request().unwrap();
    req.headers_mut().insert("Sec-WebSocket-Protocol", "base64.channel.k8s.io".parse().unwrap());
    match tokio_tungstenite::connect_async(req).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 400);
            let body = String::from_utf8_lossy(resp.body().as_deref().unwrap()).to_string();
            assert!(body.contains("v5.channel.k8s.io"), "{body}");
        }
        other => panic!("{other:?}"),
    }
    // A plain GET is told what this endpoint is.
    let addr = b.url.trim_start_matches("http://").parse().unwrap();
    let resp = deis_test_support::http::Request::get(&t.url).send_async(addr).await.unwrap();
    assert!(resp.status == 400 && resp.body.contains("WebSocket"), "{resp:?}");
}

#[tokio::test]
async fn idle_sessions_are_ended() {
    let mut config = TtyConfig::default();
    config.idle_timeout = Duration::from_millis(600);
    let b = start(config).await;
    let t = b.ticket("a", &["sleep", "60"], false);
    let mut remote = b.attach(&t, AttachOptions::default()).await.unwrap();
    let started = std::time::Instant::now();
    let (_, _, status) = tokio::time::timeout(Duration::from_secs(10), finish(&mut remote)).await.unwrap();
    match status {
        Err(AttachError::Failed(msg)) => assert!(msg.contains("without input or output"), "{msg}"),
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    // The end is audited without an exit code.
    deis_test_support::eventually(Duration::from_secs(5), "the idle end in the audit log", || async {
        let events = b.audit.0.lock().unwrap().clone();
        let idle =
            |e: &AuditEvent| matches!(e, AuditEvent::Ended { exit: None, reason, .. } if reason.starts_with("idle"));
        if events.iter().any(idle) { Ok(()) } else { Err(events) }
    })
    .await;
}

#[tokio::test]
async fn batch_runs_answer_exit_code_and_output_within_limits() {
    let mut config = TtyConfig::default();
    config.batch_output_cap = 1000;
    config.batch_timeout = Duration::from_millis(800);
    let b = start(config).await;
    let out = b.service.run_batch(b.spec("a", &["echo $DEIS_APP-$GREETING; echo e >&2; exit 4"], false)).await.unwrap();
    assert_eq!(out.exit_code, 4);
    assert!(out.output.contains("a-hello\n") && out.output.contains("e\n"), "{out:?}");

    let out = b.service.run_batch(b.spec("a", &["head -c 5000 /dev/zero | tr '\\0' x"], false)).await.unwrap();
    assert_eq!(out.exit_code, 0);
    assert!(out.output.starts_with(&"x".repeat(1000)));
    assert!(out.output.contains("4000 more bytes of output were dropped"), "{}", &out.output[1000..]);

    let out = b.service.run_batch(b.spec("a", &["sleep", "30"], false)).await.unwrap();
    assert_eq!(out.exit_code, 124);
    assert!(out.output.contains("timed out"), "{}", out.output);
}

/// A router serving on `listener` whose platform host `deis.tty.test` goes to
/// `broker_url`'s address, once it has loaded its routes.
async fn router_to(listener: tokio::net::TcpListener, broker_url: &str) -> deis_sdk::router::Router {
    use deis_sdk::router::{Router, RouterConfig};
    let broker: std::net::SocketAddr = broker_url.trim_start_matches("http://").parse().unwrap();
    let mut config = RouterConfig::new("tty.test").with_platform_backend(broker);
    config.workers = 1;
    let router = Router::new(deis_sdk::deis_core::store::RedbStore::in_memory(), config);
    let r = router.clone();
    tokio::spawn(async move { r.serve(listener, std::future::pending()).await.unwrap() });
    router.synced().await;
    router
}

#[tokio::test]
async fn sessions_attach_through_the_router_at_the_platform_host() {
    let router_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let router_addr = router_listener.local_addr().unwrap();
    let mut config = TtyConfig::default();
    config.via_router = Some(ViaRouter { router: router_addr.to_string(), host: "deis.tty.test".into() });
    let b = start(config).await;
    let router = router_to(router_listener, &b.url).await;

    let t = b.ticket("a", &["sh", "-c", "cat; exit 4"], false);
    assert_eq!(t.router.as_deref(), Some(router_addr.to_string().as_str()));
    assert_eq!(t.host.as_deref(), Some("deis.tty.test"));
    // The controller address given is dead: only the router can have carried the session.
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let mut remote = attach(&format!("http://{dead}"), &t, AttachOptions::default()).await.unwrap();
    remote.input.send(SessionInput::Stdin(b"via the mesh".to_vec())).await.unwrap();
    remote.input.send(SessionInput::Eof).await.unwrap();
    let (out, _, status) = finish(&mut remote).await;
    assert_eq!((out.as_slice(), status.unwrap()), (&b"via the mesh"[..], ExitStatus::Code(4)));
    assert_eq!(router.stats().upgrades, 1, "the WebSocket went through the router");

    // Refusals come back through the router as the broker's, not the router's.
    let err = attach(&format!("http://{dead}"), &t, AttachOptions::default()).await.unwrap_err();
    assert!(matches!(&err, AttachError::Refused { status: 403, message } if message.contains("already used")), "{err}");
}

#[tokio::test]
async fn an_unreachable_router_falls_back_to_the_controller_address() {
    let gone = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let mut config = TtyConfig::default();
    config.via_router = Some(ViaRouter { router: gone.to_string(), host: "deis.tty.test".into() });
    let b = start(config).await;
    let t = b.ticket("a", &["true"], false);
    let mut remote = b.attach(&t, AttachOptions::default()).await.unwrap();
    let (_, _, status) = finish(&mut remote).await;
    assert_eq!(status.unwrap(), ExitStatus::Code(0));
}

/// The session ends with a closing handshake: the broker keeps reading what the client
/// still sends until the client's close, so the status and the close frame reach a
/// client that is slow to read. (Closing the socket with unread input makes the kernel
/// send a reset, and a reset throws away what the client had not read yet.)
#[tokio::test]
async fn the_status_survives_input_sent_after_the_command_exited() {
    use deis_sdk::deis_core::tty::channel::{self, Frame};
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    let b = start(TtyConfig::default()).await;
    let t = b.ticket("a", &["sh", "-c", "exit 3"], false);
    let url = format!("{}{}?token={}", b.url.replace("http", "ws"), t.url, t.token);
    let mut req = url.as_str().into_client_request().unwrap();
    req.headers_mut().insert("Sec-WebSocket-Protocol", "v5.channel.k8s.io".parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    // Input the command will never read, some of it arriving after it exited.
    for _ in 0..50 {
        let frame = channel::encode(&Frame::Stdin(vec![b'x'; 16 * 1024]));
        ws.send(Message::Binary(frame.into())).await.unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // A slow reader: the broker has long sent the status and its close by now.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut status = None;
    let mut closed = false;
    while let Some(msg) = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.expect("broker answers") {
        match msg.expect("no reset: the broker waits for our close") {
            Message::Binary(b) => {
                if let Ok(Frame::Status(json)) = channel::decode(&b, Protocol::V5) {
                    status = Some(channel::parse_status(&json).unwrap());
                }
            }
            Message::Close(frame) => {
                assert_eq!(frame.map(|f| u16::from(f.code)), Some(1000), "a normal close");
                closed = true;
            }
            _ => {}
        }
    }
    let status = status.expect("the exit status arrived");
    assert_eq!(status, channel::RemoteStatus::Exited(ExitStatus::Code(3)));
    assert!(closed, "the broker's close frame arrived");
}
