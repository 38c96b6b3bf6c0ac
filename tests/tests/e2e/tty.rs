//! End to end: `deis run` against the real `deisd` (embedded TTY broker), interactive
//! under tmux and batch through pipes; the attach WebSocket driven directly for the
//! refusals; deisd killed mid-session.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use deis_e2e::{Cli, Deisd, Request, daemon_with_user, wait_for};
use deis_test_support::proc;

/// A daemon, a logged-in user and a deployed app whose only process type is a worker
/// scaled to 0 (so nothing else runs). The app directory holds `data.txt`.
fn setup(app: &str) -> (Deisd, Cli) {
    let (d, cli) = daemon_with_user(&["--syslog-addr", "off"]);
    cli.run(&["create", app]).ok();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("Procfile"), "worker: sleep 1000\n").unwrap();
    std::fs::write(dir.path().join("data.txt"), "from the build\n").unwrap();
    cli.run_in(&["deploy", "--no-wait", "-a", app], Some(dir.path())).ok();
    (d, cli)
}

fn tmux(sock: &str, args: &[&str]) -> String {
    let out = Command::new("tmux").arg("-L").arg(sock).args(args).output().expect("tmux (scripts/install-deps)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn pane(sock: &str) -> String {
    tmux(sock, &["capture-pane", "-p", "-J", "-t", "t"])
}

#[test]
fn interactive_bash_sees_the_app_follows_resizes_and_exits_with_its_status() {
    if Command::new("tmux").arg("-V").output().is_err() {
        assert!(std::env::var_os("CI").is_none(), "tmux is missing: run scripts/install-deps");
        eprintln!("SKIPPING: tmux is not installed (scripts/install-deps installs it)");
        return;
    }
    let (d, cli) = setup("ttyapp");
    let tmp = tempfile::tempdir().unwrap();
    let status_file = tmp.path().join("status");
    let stty_file = tmp.path().join("stty");
    let deis = deis_e2e::binary("deis");
    let script = format!(
        "DEIS_PROFILE={} HOME={} {} run -a ttyapp bash; echo $? > {}; stty -a > {}; sleep 60",
        cli.profile.display(),
        cli.profile.parent().unwrap().display(),
        deis.display(),
        status_file.display(),
        stty_file.display()
    );
    let sock = format!("deis-tty-test-{}", std::process::id());
    tmux(&sock, &["new-session", "-d", "-s", "t", "-x", "100", "-y", "30", &script]);
    struct Kill(String);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = Command::new("tmux").args(["-L", &self.0, "kill-server"]).status();
        }
    }
    let _kill = Kill(sock.clone());

    let wait_pane = |what: &str, f: &dyn Fn(&str) -> bool| {
        wait_for(Duration::from_secs(15), what, || {
            let p = pane(&sock);
            f(&p).then_some(p)
        })
    };
    // The prompt ends in `$ ` (an app identity) or `# ` (root).
    wait_pane("the remote prompt", &|p| p.contains("$ ") || p.contains("# "));
    tmux(&sock, &["send-keys", "-t", "t", "echo \"app is <$DEIS_APP>\"", "Enter"]);
    wait_pane("echo $DEIS_APP", &|p| p.contains("app is <ttyapp>"));
    tmux(&sock, &["send-keys", "-t", "t", "echo \"cols=$(tput cols)\"", "Enter"]);
    wait_pane("tput cols = 100", &|p| p.contains("cols=100"));
    tmux(&sock, &["resize-window", "-t", "t", "-x", "120", "-y", "40"]);
    // The new size travels CLI -> broker -> terminal: the remote shell waits for it.
    let until_resized = "until [ \"$(tput cols)\" = 120 ]; do sleep 0.05; done; echo \"cols=$(tput cols)\"";
    tmux(&sock, &["send-keys", "-t", "t", until_resized, "Enter"]);
    wait_pane("tput cols = 120 after the resize", &|p| p.contains("cols=120"));
    tmux(&sock, &["send-keys", "-t", "t", "exit 3", "Enter"]);
    let status = wait_for(Duration::from_secs(15), "the CLI to exit", || {
        std::fs::read_to_string(&status_file).ok().filter(|s| s.ends_with('\n'))
    });
    assert_eq!(status.trim(), "3", "the CLI exits with the remote status; pane:\n{}", pane(&sock));
    let stty = wait_for(Duration::from_secs(5), "stty -a", || {
        std::fs::read_to_string(&stty_file).ok().filter(|s| !s.is_empty())
    });
    assert!(
        stty.split_whitespace().any(|w| w == "icanon") && stty.split_whitespace().any(|w| w == "echo"),
        "the terminal is back in cooked mode: {stty}"
    );
    assert!(d.log().contains("tty session ended"), "audited");
}

#[test]
fn batch_runs_pass_exit_codes_and_binary_data() {
    let (d, cli) = setup("batchapp");
    // Exit status.
    let r = cli.run(&["run", "-a", "batchapp", "--", "sh", "-c", "exit 7"]);
    assert_eq!(r.code, 7, "{r:?}");
    // Environment and working directory of the release.
    let r = cli.run(&[
        "run",
        "-a",
        "batchapp",
        "--",
        "sh",
        "-c",
        "echo $DEIS_APP $DEIS_RELEASE; cat data.txt; echo oops >&2",
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.stdout, "batchapp v2\nfrom the build\n");
    assert_eq!(r.stderr, "oops\n");
    // echo hi | deis run cat
    let mut child =
        cli.command(&["run", "-a", "batchapp", "cat"]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(b"hi\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!((out.status.code(), out.stdout.as_slice()), (Some(0), &b"hi\n"[..]));

    // 10 MiB of random bytes through cat come back unchanged.
    let mut data = vec![0u8; 10 << 20];
    let mut f = std::fs::File::open("/dev/urandom").unwrap();
    std::io::Read::read_exact(&mut f, &mut data).unwrap();
    let mut child = cli
        .command(&["run", "-a", "batchapp", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let sent = data.clone();
    let writer = std::thread::spawn(move || stdin.write_all(&sent).unwrap());
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.stdout.len(), data.len());
    assert!(out.stdout == data, "the bytes (and so their sha256) must be identical");

    // The Workflow batch endpoint.
    let token = cli.token();
    let auth = format!("token {token}");
    let r = Request::post("/v2/apps/batchapp/run")
        .headers(&[("Authorization", &auth), ("Content-Type", "application/json")])
        .body(br#"{"command":"echo $DEIS_APP; exit 5"}"#)
        .send(d.api)
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json(), serde_json::json!({"exit_code": 5, "output": "batchapp\n"}));
}

#[test]
fn fifty_sessions_at_once() {
    let (_d, cli) = setup("manyapp");
    let cli = std::sync::Arc::new(cli);
    let handles: Vec<_> = (0..50)
        .map(|i| {
            let cli = cli.clone();
            std::thread::spawn(move || {
                let script = format!("sleep 0.5; echo session-{i}; exit {}", i % 5);
                let r = cli.run(&["run", "-a", "manyapp", "--", "sh", "-c", &script]);
                (i, r)
            })
        })
        .collect();
    for h in handles {
        let (i, r) = h.join().unwrap();
        assert_eq!(r.code, i % 5, "session {i}: {r:?}");
        assert_eq!(r.stdout, format!("session-{i}\n"), "session {i}: {r:?}");
    }
}

/// Creates a session through the API; (id, token, url).
fn create_session(d: &Deisd, token: &str, app: &str) -> (String, String, String) {
    let v = create_session_json(d, token, app);
    let s = |k: &str| v[k].as_str().unwrap().to_string();
    (s("id"), s("token"), s("url"))
}

/// Creates a session through the API; the whole ticket.
fn create_session_json(d: &Deisd, token: &str, app: &str) -> serde_json::Value {
    let auth = format!("token {token}");
    let r = Request::post(&format!("/v2/apps/{app}/sessions"))
        .headers(&[("Authorization", &auth), ("Content-Type", "application/json")])
        .body(br#"{"command":["true"],"tty":false}"#)
        .send(d.api)
        .unwrap();
    assert_eq!(r.status, 201, "{}", r.body);
    let v = r.json();
    let s = |k: &str| v[k].as_str().unwrap().to_string();
    assert_eq!(s("url"), format!("/v2/sessions/{}/attach", s("id")));
    v
}

/// Opens the attach WebSocket on the API; Ok(exit status JSON) or Err((status, body)).
fn ws_attach(d: &Deisd, path: &str, token: &str, origin: Option<&str>) -> Result<String, (u16, String)> {
    ws_attach_at(d.api, None, path, token, origin)
}

/// Opens the attach WebSocket at `addr`, sending `host` as `Host` if given.
fn ws_attach_at(
    addr: std::net::SocketAddr,
    host: Option<&str>,
    path: &str,
    token: &str,
    origin: Option<&str>,
) -> Result<String, (u16, String)> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::{Error, Message};
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let url = format!("ws://{addr}{path}?token={token}");
        let mut req = url.as_str().into_client_request().unwrap();
        if let Some(h) = host {
            req.headers_mut().insert("Host", h.parse().unwrap());
        }
        req.headers_mut().insert("Sec-WebSocket-Protocol", "v5.channel.k8s.io".parse().unwrap());
        if let Some(o) = origin {
            req.headers_mut().insert("Origin", o.parse().unwrap());
        }
        match tokio_tungstenite::connect_async(req).await {
            Ok((mut ws, resp)) => {
                assert_eq!(resp.headers()["sec-websocket-protocol"], "v5.channel.k8s.io");
                use futures_util::StreamExt;
                while let Some(msg) = ws.next().await {
                    if let Ok(Message::Binary(b)) = msg
                        && b.first() == Some(&3)
                    {
                        return Ok(String::from_utf8_lossy(&b[1..]).into_owned());
                    }
                }
                Ok(String::new())
            }
            Err(Error::Http(resp)) => {
                Err((resp.status().as_u16(), String::from_utf8_lossy(resp.body().as_deref().unwrap_or(&[])).into()))
            }
            Err(e) => panic!("attach: {e}"),
        }
    })
}

#[test]
fn attach_refuses_reuse_other_apps_and_foreign_origins() {
    let (d, cli) = setup("appa");
    cli.run(&["create", "appb"]).ok();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("Procfile"), "worker: sleep 1000\n").unwrap();
    cli.run_in(&["deploy", "--no-wait", "-a", "appb"], Some(dir.path())).ok();
    let user_token = cli.token();

    let (_, token, url) = create_session(&d, &user_token, "appa");
    let status = ws_attach(&d, &url, &token, None).expect("first use attaches");
    assert_eq!(status, r#"{"metadata":{},"status":"Success"}"#);
    let (code, msg) = ws_attach(&d, &url, &token, None).unwrap_err();
    assert_eq!(code, 403);
    assert!(msg.contains("already used"), "{msg}");

    let (_, token_a, _) = create_session(&d, &user_token, "appa");
    let (_, _, url_b) = create_session(&d, &user_token, "appb");
    let (code, msg) = ws_attach(&d, &url_b, &token_a, None).unwrap_err();
    assert_eq!(code, 403);
    assert!(msg.contains("is for app \"appa\", not \"appb\""), "{msg}");

    let (_, token, url) = create_session(&d, &user_token, "appa");
    let (code, msg) = ws_attach(&d, &url, &token, Some("https://evil.example")).unwrap_err();
    assert_eq!(code, 403);
    assert!(msg.contains("Origin https://evil.example is not allowed"), "{msg}");
    // Expired tokens are refused too: see deis-sdk/tests/integration/tty_broker.rs (the 60 s TTL is
    // not worth waiting for here; that test signs an expired token with a known secret).

    // Another user may not create sessions on alice's app.
    let bob = d.cli();
    bob.register(&d, "bob");
    let auth = format!("token {}", bob.token());
    let r = Request::post("/v2/apps/appa/sessions")
        .headers(&[("Authorization", &auth)])
        .body(br#"{"command":["true"]}"#)
        .send(d.api)
        .unwrap();
    assert_eq!(r.status, 403, "{}", r.body);
    let r = bob.run(&["run", "-a", "appa", "true"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("permission"), "{r:?}");

    // A session created with a token that is then regenerated (leaked, say) attaches
    // nothing; one created with the new token does.
    let (_, old_session_token, url) = create_session(&d, &cli.token(), "appa");
    let r = cli.run(&["auth:regenerate"]);
    assert_eq!(r.code, 0, "{r:?}");
    let (code, msg) = ws_attach(&d, &url, &old_session_token, None).unwrap_err();
    assert_eq!(code, 404, "{msg}");
    let (_, token, url) = create_session(&d, &cli.token(), "appa");
    ws_attach(&d, &url, &token, None).expect("a session of the new token attaches");
}

/// Processes whose command line contains `needle`: (pid, state).
fn processes_with(needle: &str) -> Vec<(u32, char)> {
    proc::pids()
        .into_iter()
        .filter(|pid| proc::cmdline(*pid).contains(needle))
        .filter_map(|pid| Some((pid, proc::stat(pid)?.state)))
        .collect()
}

#[test]
fn killing_the_broker_mid_session_is_a_clear_error_and_leaves_nothing_behind() {
    let (mut d, cli) = setup("killapp");
    let marker = format!("4{}", std::process::id());
    // A background child too: it is not the session's leader, so only the broker's
    // watchdog can end it when the broker is killed.
    let script = format!("sleep {marker}1 & echo started; exec sleep {marker}");
    let mut child = cli
        .command(&["run", "-a", "killapp", "--", "sh", "-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
    assert_eq!(line, "started\n");
    let needle = format!("sleep {marker}");
    let pids = wait_for(Duration::from_secs(5), "the remote command and its background child", || {
        let found = processes_with(&needle);
        (found.len() >= 2).then_some(found)
    });

    d.kill9();
    let out = wait_for(Duration::from_secs(15), "the CLI to notice", || child.try_wait().unwrap());
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert_eq!(out.code(), Some(1), "{stderr}");
    assert!(stderr.contains("lost the connection to the session broker"), "{stderr}");
    // The session's command dies with the broker, its background child by the
    // watchdog, and both are reaped (by init, deisd being gone): their /proc entries
    // disappear, so they are neither orphans nor zombies.
    wait_for(Duration::from_secs(10), "the session's processes to be gone", || {
        pids.iter().all(|(pid, _)| !Path::new(&format!("/proc/{pid}")).exists()).then_some(())
    });
    assert!(processes_with(&needle).is_empty());
}

/// `deis run` goes CLI -> router (`deis.<domain>`) -> embedded broker, and every session
/// lands in the app's log.
#[test]
fn sessions_go_through_the_routing_mesh_and_are_audited_in_the_app_log() {
    let (d, cli) = setup("meshapp");
    let platform_host = format!("deis.{}", d.domain);
    // The ticket names the router and the platform host.
    let ticket = create_session_json(&d, &cli.token(), "meshapp");
    assert_eq!(ticket["router"], d.router.to_string(), "{ticket}");
    assert_eq!(ticket["host"], platform_host, "{ticket}");
    // The router passes the attach WebSocket to the broker at the platform host...
    let url = ticket["url"].as_str().unwrap();
    let token = ticket["token"].as_str().unwrap();
    let status = ws_attach_at(d.router, Some(&platform_host), url, token, None).expect("attach through the router");
    assert_eq!(status, r#"{"metadata":{},"status":"Success"}"#);
    // ...and the rest of the controller API too.
    let r = Request::get("/v2/").host(&platform_host).send(d.router).unwrap();
    assert_ne!(r.status, 404, "the platform host is routed: {}", r.body);
    assert!(!r.body.contains("No app is routed"), "{}", r.body);

    // `deis run` attaches through the router: the broker sees the router's
    // X-Forwarded-For (its log says `via="router"`, or `via="direct"` without one).
    let attaches = |via: &str| {
        let log = d.log();
        log.lines().filter(|l| l.contains("tty session attached") && l.contains(&format!("\"{via}\""))).count()
    };
    let (routed, direct) = (attaches("router"), attaches("direct"));
    assert_eq!(direct, 0, "nothing attached directly so far");
    let r = cli.run(&["run", "-a", "meshapp", "--", "true"]);
    assert_eq!(r.code, 0, "{r:?}");
    wait_for(Duration::from_secs(5), "the broker to log the attach", || (attaches("router") > routed).then_some(()));
    assert_eq!(attaches("direct"), 0, "`deis run` did not bypass the router");

    // Audit: who ran what, and how it ended, in the app's log.
    let audit = wait_for(Duration::from_secs(5), "the session's end in the app log", || {
        let r = cli.run(&["logs", "-a", "meshapp"]);
        let lines: Vec<String> = r.stdout.lines().filter(|l| l.contains("deis[tty]:")).map(str::to_string).collect();
        lines
            .iter()
            .any(|l| l.contains("alice") && l.contains("\"true\"") && l.contains("ended: exit code 0"))
            .then_some(lines)
    });
    assert!(
        audit.iter().any(|l| l.contains("alice ran \"true\"") && l.contains("batch")),
        "the start is audited too: {audit:?}"
    );
}
