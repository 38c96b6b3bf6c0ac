//! The standalone broker binary: a token signed with the shared secret opens a session
//! in `--dir`; one signed with another secret is refused; `GET /metrics` counts both.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use deis_sdk::deis_core::testing::{app_name, process_type};
use deis_sdk::deis_core::tty::token::{Claims, TokenSigner};
use deis_sdk::deis_core::tty::{ExitStatus, SessionOutput};
use deis_sdk::tty::client::{AttachError, AttachOptions, attach_url_raw};

const SECRET: &str = "standalone broker test secret, 32+ chars";

/// The value of the sample line starting with `prefix` in the broker's `/metrics`.
async fn scrape(port: u16, prefix: &str) -> f64 {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let r = deis_test_support::http::Request::get("/metrics").send_async(addr).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let line = r.body.lines().find(|l| l.starts_with(prefix));
    let line = line.unwrap_or_else(|| panic!("{prefix} missing from\n{}", r.body));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn serves_sessions_signed_with_the_shared_secret() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hello.txt"), "hi from dir\n").unwrap();
    let port = deis_test_support::free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_deis-tty-broker"))
        .args(["--listen", &format!("127.0.0.1:{port}"), "--dir"])
        .arg(dir.path())
        .env("DEIS_TTY_SECRET", SECRET)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _kill = Kill(child);
    deis_test_support::eventually(Duration::from_secs(10), "the broker to listen", || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()
    })
    .await;
    assert_eq!(scrape(port, "deis_tty_sessions_started_total ").await, 0.0);
    assert_eq!(scrape(port, "deis_tty_attach_refused_total ").await, 0.0);
    let claims = Claims::new(
        "alice",
        app_name("hello"),
        vec!["cat hello.txt; echo $DEIS_APP; exit 2".into()],
        false,
        process_type("web"),
    );
    let url = |claims: &Claims, token: &str| {
        format!("ws://127.0.0.1:{port}/v2/sessions/{}/attach?app=hello&token={token}", claims.session)
    };
    let token = TokenSigner::new(SECRET).issue(claims.clone(), Duration::from_secs(60));
    let mut remote = attach_url_raw(&url(&claims, &token), AttachOptions::default()).await.unwrap();
    let mut out = vec![];
    let status = loop {
        match remote.output.recv().await.unwrap().unwrap() {
            SessionOutput::Stdout(b) => out.extend(b),
            SessionOutput::Stderr(_) => {}
            SessionOutput::Exit(s) => break s,
        }
    };
    assert_eq!((String::from_utf8_lossy(&out).as_ref(), status), ("hi from dir\nhello\n", ExitStatus::Code(2)));

    let claims = Claims::new("mallory", app_name("hello"), vec!["id".into()], false, process_type("web"));
    let token =
        TokenSigner::new("another secret entirely, 32+ characters").issue(claims.clone(), Duration::from_secs(60));
    match attach_url_raw(&url(&claims, &token), AttachOptions::default()).await {
        Err(AttachError::Refused { status: 403, message }) => assert!(message.contains("signature"), "{message}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(scrape(port, "deis_tty_sessions_started_total ").await, 1.0);
    assert_eq!(scrape(port, "deis_tty_attach_refused_total ").await, 1.0);
    // The session's end is counted once the broker has seen its socket close.
    deis_test_support::eventually(Duration::from_secs(10), "the session to be counted as ended", || async {
        (scrape(port, "deis_tty_sessions_ended_total{reason=\"exited\"}").await == 1.0).then_some(())
    })
    .await;
    assert_eq!(scrape(port, "deis_tty_sessions_open ").await, 0.0);
}
