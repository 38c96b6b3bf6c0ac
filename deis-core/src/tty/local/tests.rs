//! The local TTY broker on real processes: the conformance suite and what only a
//! process backend has (clean environment, process trees, crash recovery).

use super::*;
use crate::sys::procfs;
use crate::testing::{MARKER_VAR, SpecHarness, TtyHarness, tty_suite};
use tokio::time::Instant;

struct Harness {
    dir: tempfile::TempDir,
}

impl TtyHarness for Harness {
    fn spec(&self, app: &str, command: Vec<String>, tty: bool) -> SessionSpec {
        let artifact = Artifact::Source { dir: self.dir.path().to_path_buf() };
        SpecHarness { artifact, release: 3 }.spec(app, command, tty)
    }
}

fn harness() -> Harness {
    Harness { dir: tempfile::tempdir().unwrap() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_the_tty_suite() {
    let broker = Arc::new(LocalTtyBroker::default());
    tty_suite(async || broker.clone() as Arc<dyn TtyBroker>, &harness()).await;
    // Every session's slot was given back once its processes were gone.
    let deadline = Instant::now() + Duration::from_secs(10);
    while broker.running() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(broker.running(), 0);
}

fn spec(h: &Harness, cmd: &[&str], tty: bool) -> SessionSpec {
    h.spec("local-app", cmd.iter().map(|s| s.to_string()).collect(), tty)
}

async fn collect(s: &mut Session) -> (Vec<u8>, Vec<u8>, ExitStatus) {
    let (mut out, mut err, mut exit) = (vec![], vec![], None);
    let all = async {
        while let Some(msg) = s.output.recv().await {
            match msg {
                SessionOutput::Stdout(b) => out.extend(b),
                SessionOutput::Stderr(b) => err.extend(b),
                SessionOutput::Exit(st) => exit = Some(st),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), all).await.expect("session over in time");
    (out, err, exit.expect("an exit"))
}

async fn read_until(s: &mut Session, needle: &str) -> String {
    let mut seen = String::new();
    while !seen.contains(needle) {
        match tokio::time::timeout(Duration::from_secs(20), s.output.recv()).await {
            Ok(Some(SessionOutput::Stdout(b) | SessionOutput::Stderr(b))) => seen += &String::from_utf8_lossy(&b),
            other => panic!("waiting for {needle:?}: {other:?} after {seen:?}"),
        }
    }
    seen
}

async fn wait_until(what: &str, ok: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ok() {
        assert!(Instant::now() < deadline, "{what}: not within 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn marked(mut spec: SessionSpec, marker: &str) -> SessionSpec {
    spec.env.insert(MARKER_VAR.into(), marker.into());
    spec
}

fn marked_running(marker: &str) -> bool {
    !procfs::processes_with_env(MARKER_VAR, marker).is_empty()
}

#[tokio::test]
async fn refuses_what_it_cannot_run() {
    let h = harness();
    let b = LocalTtyBroker::default();
    let mut image = spec(&h, &["true"], false);
    image.artifact = Artifact::Image { reference: "registry/app:v3".into() };
    let e = b.open(image).await.unwrap_err();
    assert!(
        matches!(&e, TtyError::Unsupported(m) if m.contains("registry/app:v3") && m.contains("source builds")),
        "{e}"
    );

    let mut gone = spec(&h, &["true"], false);
    gone.artifact = Artifact::Source { dir: h.dir.path().join("nope") };
    let e = b.open(gone).await.unwrap_err();
    assert!(matches!(&e, TtyError::Invalid(m) if m.contains("does not exist")), "{e}");

    let e = b.open(spec(&h, &[], false)).await.unwrap_err();
    assert!(matches!(&e, TtyError::Invalid(m) if m.contains("empty command")), "{e}");
    let e = b.open(spec(&h, &["echo\0", "a\0b"], false)).await.unwrap_err();
    assert!(matches!(&e, TtyError::Invalid(m) if m.contains("NUL")), "{e}");
    let mut bad_env = spec(&h, &["true"], false);
    bad_env.env.insert("A=B".into(), "x".into());
    let e = b.open(bad_env).await.unwrap_err();
    assert!(matches!(&e, TtyError::Invalid(m) if m.contains("\"A=B\"")), "{e}");

    let e = b.open(spec(&h, &["no-such-program-here", "x"], true)).await.unwrap_err();
    assert!(matches!(&e, TtyError::Spawn(_)), "{e}");
    assert!(e.to_string().contains("cannot run `no-such-program-here`"), "{e}");
    assert_eq!(b.running(), 0, "failed opens give their slot back");
}

#[tokio::test]
async fn runs_in_the_build_directory_with_a_clean_environment() {
    let h = harness();
    std::fs::write(h.dir.path().join("Procfile"), "web: x").unwrap();
    let b = LocalTtyBroker::default();
    let mut s = b.open(spec(&h, &["ls"], false)).await.unwrap();
    assert_eq!(collect(&mut s).await.0, b"Procfile\n");

    // argv form, no shell in between: exactly the documented variables.
    for tty in [false, true] {
        let mut sp = spec(&h, &["env", "-0"], tty);
        sp.env.remove("DEIS_APP");
        sp.env.insert("CONFIG_VAR".into(), "a b".into());
        let mut s = b.open(sp).await.unwrap();
        let (out, _, exit) = collect(&mut s).await;
        assert_eq!(exit, ExitStatus::Code(0));
        let env: BTreeMap<String, String> = String::from_utf8(out)
            .unwrap()
            .split('\0')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.trim_start_matches(['\r', '\n']).to_string(), v.to_string()))
            .collect();
        let mut want: Vec<&str> = vec!["CONFIG_VAR", "DEIS_APP", "DEIS_RELEASE", "PATH"];
        want.extend(["HOME", "LANG", "TZ"].into_iter().filter(|k| std::env::var(k).is_ok()));
        if tty {
            want.push("TERM");
        }
        want.sort();
        assert_eq!(env.keys().map(String::as_str).collect::<Vec<_>>(), want, "tty {tty}: {env:?}");
        assert_eq!(env["CONFIG_VAR"], "a b");
        assert_eq!(env["DEIS_APP"], "local-app", "added when the spec lacks it");
        assert_eq!(env["DEIS_RELEASE"], "v3");
        if tty {
            assert_eq!(env["TERM"], TERM);
        }
    }
}

#[tokio::test]
async fn ten_mib_of_random_bytes_through_cat() {
    let h = harness();
    let mut data = vec![0u8; 10 << 20];
    getrandom::fill(&mut data).unwrap();
    let mut s = LocalTtyBroker::default().open(spec(&h, &["cat", "-"], false)).await.unwrap();
    let input = s.input.clone();
    let feed = data.clone();
    let writer = tokio::spawn(async move {
        for chunk in feed.chunks(MAX_CHUNK) {
            input.send(SessionInput::Stdin(chunk.to_vec())).await.unwrap();
        }
        input.send(SessionInput::Eof).await.unwrap();
    });
    let (out, err, exit) = collect(&mut s).await;
    writer.await.unwrap();
    assert_eq!(out.len(), data.len());
    assert!(out == data, "bytes differ");
    assert!(err.is_empty());
    assert_eq!(exit, ExitStatus::Code(0));
}

#[tokio::test]
async fn busy_beyond_the_limit() {
    let h = harness();
    let b = LocalTtyBroker::without_state(LocalTtyConfig { max_sessions: 2, ..LocalTtyConfig::default() });
    let s1 = b.open(spec(&h, &["sleep 1000"], false)).await.unwrap();
    let _s2 = b.open(spec(&h, &["sleep 1000"], true)).await.unwrap();
    let e = b.open(spec(&h, &["true"], false)).await.unwrap_err();
    assert!(matches!(e, TtyError::Busy(2)), "{e}");
    assert!(e.to_string().contains("try again later"));
    drop(s1);
    wait_until("a slot is free", || b.running() < 2).await;
    let mut s3 = b.open(spec(&h, &["exit 4"], false)).await.unwrap();
    assert_eq!(collect(&mut s3).await.2, ExitStatus::Code(4));
}

#[tokio::test]
async fn dropping_reaps_the_leader_and_kills_the_group() {
    let h = harness();
    let b = LocalTtyBroker::default();
    for tty in [false, true] {
        let mut s = b.open(spec(&h, &["sleep 1000 & echo pid=$$.; sleep 1000"], tty)).await.unwrap();
        let seen = read_until(&mut s, ".").await;
        let pid: i32 = seen.split("pid=").nth(1).unwrap().split('.').next().unwrap().parse().unwrap();
        // `sh` and the background `sleep`, and the last `sleep` (forked or exec'd).
        wait_until("the session runs", || procfs::session_members(pid as u32).len() >= 2).await;
        drop(s);
        // Gone means reaped too: a zombie still has its /proc entry.
        wait_until("leader reaped", || !Path::new(&format!("/proc/{pid}")).exists()).await;
        wait_until("group gone", || procfs::session_members(pid as u32).is_empty()).await;
    }
    wait_until("slots free", || b.running() == 0).await;
}

#[tokio::test]
async fn interactive_bash_with_job_control() {
    if !Path::new("/bin/bash").exists() {
        eprintln!("SKIPPED: no /bin/bash");
        return;
    }
    let h = harness();
    let m = crate::auth::random_hex(8);
    let mut s = LocalTtyBroker::default().open(marked(spec(&h, &["bash", "-i"], true), &m)).await.unwrap();
    // A background job gets its own process group; it must die with the session.
    s.input.send(SessionInput::Stdin(b"sleep 1000 &\necho \"answer=$((6*7))\"\n".to_vec())).await.unwrap();
    read_until(&mut s, "answer=42").await;
    s.input.send(SessionInput::Resize(TermSize { cols: 133, rows: 44 })).await.unwrap();
    s.input.send(SessionInput::Stdin(b"echo \"size=$(stty size)\"\n".to_vec())).await.unwrap();
    read_until(&mut s, "size=44 133").await;
    assert!(marked_running(&m));
    drop(s);
    wait_until("job killed", || !marked_running(&m)).await;

    let mut s = LocalTtyBroker::default().open(spec(&h, &["bash", "-i"], true)).await.unwrap();
    s.input.send(SessionInput::Stdin(b"exit 3\n".to_vec())).await.unwrap();
    assert_eq!(collect(&mut s).await.2, ExitStatus::Code(3));
}

#[tokio::test]
async fn an_escaped_process_does_not_hang_the_session() {
    let h = harness();
    let m = crate::auth::random_hex(8);
    let cfg = LocalTtyConfig { drain_idle: Duration::from_millis(200), ..LocalTtyConfig::default() };
    let b = LocalTtyBroker::without_state(cfg);
    // `setsid` leaves the session's process group and session but keeps stdout.
    let mut s = b.open(marked(spec(&h, &["setsid sleep 1000 & echo hi"], false), &m)).await.unwrap();
    let started = Instant::now();
    let (out, _, exit) = collect(&mut s).await;
    assert_eq!((out.as_slice(), exit), (&b"hi\n"[..], ExitStatus::Code(0)));
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    for pid in procfs::processes_with_env(MARKER_VAR, &m) {
        // The escaped process leads a session of its own.
        group::signal_session(pid, Signal::KILL);
    }
}

#[test]
fn a_runtime_shutting_down_kills_its_sessions() {
    let h = harness();
    let m = crate::auth::random_hex(8);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let session = rt.block_on(async {
        let mut s = LocalTtyBroker::default()
            .open(marked(spec(&h, &["sleep 1000 & echo up; sleep 1000"], false), &m))
            .await
            .unwrap();
        read_until(&mut s, "up").await;
        s
    });
    assert!(marked_running(&m));
    drop(rt);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while marked_running(&m) {
        assert!(std::time::Instant::now() < deadline, "processes survived the runtime");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(session);
}

#[tokio::test]
async fn leftovers_of_a_crashed_broker_are_killed() {
    let h = harness();
    let state = tempfile::tempdir().unwrap();
    let m = crate::auth::random_hex(8);
    // A broker on a thread that dies without cleaning up: its runtime is leaked, so
    // no driver runs again; the leader dies of PDEATHSIG with the thread, the
    // background `sleep` stays behind.
    let (dir, sp) = (state.path().to_path_buf(), marked(spec(&h, &["sleep 1000 & echo up; sleep 1000"], false), &m));
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let b = LocalTtyBroker::new(LocalTtyConfig::with_state_dir(&dir)).await.unwrap();
            let mut s = b.open(sp).await.unwrap();
            read_until(&mut s, "up").await;
            std::mem::forget(s);
            std::mem::forget(b);
        });
        std::mem::forget(rt);
    })
    .join()
    .unwrap();
    // Left behind: one or two `sleep`s (whether `sh` forked the last one varies).
    wait_until("the leader died with its thread", || {
        let pids = procfs::processes_with_env(MARKER_VAR, &m);
        let comm = |p: &u32| std::fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default();
        !pids.is_empty() && pids.iter().all(|p| comm(p).trim() == "sleep")
    })
    .await;
    let b = LocalTtyBroker::new(LocalTtyConfig::with_state_dir(state.path())).await.unwrap();
    assert!(!marked_running(&m), "the new broker killed the leftover");
    assert_eq!(b.running(), 0);
}
