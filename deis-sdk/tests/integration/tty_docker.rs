//! [`DockerTtyBroker`] against a real Docker engine (one that answers, or a private
//! dockerd) with a busybox image built offline: the `tty_suite` conformance suite on
//! one-off containers, and `docker exec` into a running unit container.
#![cfg(feature = "docker")]

use std::process::Stdio;
use std::sync::Arc;

use deis_sdk::deis_core::scheduler::Artifact;
use deis_sdk::deis_core::testing::{SpecHarness, TtyHarness, tty_suite};
use deis_sdk::deis_core::tty::{ExitStatus, SessionInput, SessionOutput, TermSize, TtyBroker};
use deis_sdk::tty::docker::{DockerTtyBroker, LABEL_APP, LABEL_TYPE};
use deis_test_support::Service;
use deis_test_support::docker::DockerEngine;
use deis_test_support::wait_for;

/// How long a step of the exec kill test may take.
const T: std::time::Duration = std::time::Duration::from_secs(15);

async fn broker(engine: &DockerEngine) -> DockerTtyBroker {
    DockerTtyBroker::connect_unix(&engine.socket_path()).await.expect("connect to the engine")
}

/// Sessions in `image`.
fn harness(image: &str) -> SpecHarness {
    SpecHarness::new(Artifact::Image { reference: image.into() })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_one_off_containers_pass_the_tty_suite() {
    let Some(engine) = DockerEngine::shared() else { return };
    let image = engine.busybox_image();
    let broker: Arc<dyn TtyBroker> = Arc::new(broker(engine).await);
    tty_suite(async || broker.clone(), &harness(&image)).await;
}

/// Starts a running unit container of `app` (type web); removed when the guard drops.
fn start_unit<'a>(engine: &'a DockerEngine, image: &str, app: &str) -> (String, impl Drop + 'a) {
    let out = engine
        .docker()
        .args(["run", "-d", "--network", "none", "--label"])
        .arg(format!("{LABEL_APP}={app}"))
        .arg("--label")
        .arg(format!("{LABEL_TYPE}=web"))
        .args([image, "sleep", "1000"])
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(out.status.success());
    let id = String::from_utf8(out.stdout).unwrap().trim().to_string();
    struct Rm<'a>(&'a DockerEngine, String);
    impl Drop for Rm<'_> {
        fn drop(&mut self) {
            let _ = self.0.docker().args(["rm", "-f", &self.1]).output();
        }
    }
    (id.clone(), Rm(engine, id))
}

/// Reads a session to its end: (stdout, stderr, exit status).
async fn collect(session: &mut deis_sdk::deis_core::tty::Session) -> (String, String, ExitStatus) {
    let (mut out, mut err) = (String::new(), String::new());
    loop {
        let msg = tokio::time::timeout(std::time::Duration::from_secs(30), session.output.recv())
            .await
            .unwrap_or_else(|_| panic!("session not over within 30 s; stdout {out:?}, stderr {err:?}"));
        match msg.expect("an exit status") {
            SessionOutput::Stdout(b) => out.push_str(&String::from_utf8_lossy(&b)),
            SessionOutput::Stderr(b) => err.push_str(&String::from_utf8_lossy(&b)),
            SessionOutput::Exit(s) => return (out, err, s),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_exec_into_a_running_unit() {
    let Some(engine) = DockerEngine::shared() else { return };
    let image = engine.busybox_image();
    let app = format!("execapp{}", std::process::id());
    let (id, _rm) = start_unit(engine, &image, &app);

    let broker = broker(engine).await;
    assert_eq!(broker.unit_container(&app, "web").await.unwrap().as_deref(), Some(id.as_str()));
    let spec = harness(&image).spec(&app, vec!["cat; hostname; echo $DEIS_APP >&2; exit 5".into()], false);
    let mut session = broker.open(spec).await.unwrap();
    session.input.send(SessionInput::Stdin(b"piped\n".to_vec())).await.unwrap();
    session.input.send(SessionInput::Eof).await.unwrap();
    let (out, err, status) = collect(&mut session).await;
    assert_eq!(status, ExitStatus::Code(5));
    assert_eq!(out, format!("piped\n{}\n", &id[..12]), "ran in the unit container (its hostname)");
    assert_eq!(err, format!("{app}\n"));
}

/// The command's first look at its terminal sees the size the session was opened with,
/// in an exec'd session as in a one-off container, every time (the engine sizes a
/// terminal only once the process runs, which races the command).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_tty_sessions_start_with_their_size() {
    let Some(engine) = DockerEngine::shared() else { return };
    let image = engine.busybox_image();
    let broker = broker(engine).await;
    let harness = harness(&image);
    let exec_app = format!("sizeapp{}", std::process::id());
    let (_id, _rm) = start_unit(engine, &image, &exec_app);
    for (i, app) in [exec_app.as_str(), "size-one-off"].into_iter().cycle().take(6).enumerate() {
        let rows = 20 + i as u16;
        let mut spec = harness.spec(app, vec!["stty size".into()], true);
        spec.size = Some(TermSize { cols: 90, rows });
        let mut session = broker.open(spec).await.unwrap();
        let (out, _, status) = collect(&mut session).await;
        assert_eq!(out, format!("{rows} 90\r\n"), "session #{i} in {app}");
        assert_eq!(status, ExitStatus::Code(0), "session #{i} in {app}");
    }
}

/// Pids, inside container `id`, of the processes whose environment holds `var=value`
/// (asked through the engine, as a remote engine would be asked).
fn marked_in_container(engine: &DockerEngine, id: &str, var: &str, value: &str) -> Vec<u32> {
    let script = "for d in /proc/[0-9]*; do tr '\\0' '\\n' 2>/dev/null <$d/environ | grep -qxF \"$1\" && echo ${d#/proc/}; done; true";
    let out = engine.docker().args(["exec", id, "sh", "-c", script, "sh", &format!("{var}={value}")]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().split_whitespace().map(|p| p.parse().unwrap()).collect()
}

/// Dropping an exec'd session kills what it runs inside the unit container, and only
/// that: the processes are found and killed through the engine (not by host pids,
/// which mean nothing when the engine runs elsewhere).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_dropped_exec_sessions_are_killed_through_the_engine() {
    let Some(engine) = DockerEngine::shared() else { return };
    let image = engine.busybox_image();
    let app = format!("killapp{}", std::process::id());
    let (id, _rm) = start_unit(engine, &image, &app);
    let broker = broker(engine).await;
    for tty in [false, true] {
        let marker = format!("{tty}-{}", deis_sdk::deis_core::auth::random_hex(4));
        let mut spec = harness(&image).spec(&app, vec!["sleep 1000 & sleep 1000".into()], tty);
        spec.env.insert("KILL_TEST".into(), marker.clone());
        let marked = || marked_in_container(engine, &id, "KILL_TEST", &marker);
        let session = broker.open(spec).await.unwrap();
        // `sh` and its background `sleep` (the last `sleep` may be `sh` itself, exec'd).
        wait_for(T, "the session runs", || Some(()).filter(|()| marked().len() >= 2));
        drop(session);
        wait_for(T, "the dropped session's processes to go", || {
            let left = marked();
            if left.is_empty() { Ok(()) } else { Err(left) }
        });
    }
    let running = engine.docker().args(["inspect", "-f", "{{.State.Running}}", &id]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&running.stdout).trim(), "true", "the unit itself was left alone");
}

/// Issue 9, the Docker side: a one-off container runs as the app's identity, without
/// capabilities or new privileges, with the limits of its process type, and read-only
/// where configured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_sessions_are_confined_and_limited() {
    use deis_sdk::deis_core::model::AppIdentity;
    use deis_sdk::deis_core::model::limits::Resources;
    use deis_sdk::tty::docker::DockerConfinement;
    let Some(engine) = DockerEngine::shared() else { return };
    let image = engine.busybox_image();
    let broker = broker(engine).await.with_confinement(DockerConfinement::default().with_read_only_root(true));
    let mut spec = harness(&image).spec(
        "confined",
        vec![
            "sh".into(),
            "-c".into(),
            "id -u; grep -E '^(CapEff|NoNewPrivs)' /proc/self/status; cat /sys/fs/cgroup/memory.max \
             /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/pids.max /sys/fs/cgroup/pids/pids.max \
             2>/dev/null; touch /root-fs 2>&1; grep -c ' /tmp tmpfs ' /proc/mounts"
                .into(),
        ],
        false,
    );
    spec.identity = Some(AppIdentity::of(200_123));
    spec.limits = Resources { cpu_millis: 500, memory_bytes: 64 << 20 };
    let mut session = broker.open(spec).await.expect("a confined one-off session");
    let (out, err, status) = collect(&mut session).await;
    assert_eq!(status, ExitStatus::Code(0), "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "200123", "{out}");
    assert!(out.contains("CapEff:\t0000000000000000"), "{out}");
    assert!(out.contains("NoNewPrivs:\t1"), "{out}");
    assert!(lines.contains(&"67108864"), "memory limit: {out}");
    assert!(lines.contains(&"512"), "pids limit: {out}");
    assert!(out.contains("Read-only file system"), "{out}");
    assert_eq!(lines.last(), Some(&"1"), "a tmpfs on /tmp: {out}");
}

/// A one-off container is on the network its broker is given: `host` reaches a
/// listener on this machine's loopback (as a unit with host networking would), the
/// default `none` reaches nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_one_off_sessions_get_the_network_they_are_given() {
    use deis_sdk::tty::docker::DockerConfinement;
    let Some(engine) = DockerEngine::shared() else { return };
    let image = engine.busybox_image();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        use std::io::Write;
        for mut conn in listener.incoming().flatten() {
            let _ = conn.write_all(b"reached\n");
        }
    });
    let command = vec!["sh".into(), "-c".into(), format!("nc -w 5 127.0.0.1 {port} </dev/null || echo unreachable")];
    let host = broker(engine).await.with_confinement(DockerConfinement::default().with_network("host"));
    let mut session = host.open(harness(&image).spec("net-host", command.clone(), false)).await.unwrap();
    let (out, err, status) = collect(&mut session).await;
    assert_eq!((out.trim(), status), ("reached", ExitStatus::Code(0)), "{err}");
    let none = broker(engine).await;
    let mut session = none.open(harness(&image).spec("net-none", command, false)).await.unwrap();
    let (out, err, _) = collect(&mut session).await;
    assert!(out.contains("unreachable") && !out.contains("reached\n"), "{out}{err}");
}
