//! Conformance suite of the `TtyBroker` trait.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{app_name, process_type, run_cases};
use crate::scheduler::Artifact;
use crate::tty::{ExitStatus, MAX_CHUNK, Session, SessionInput, SessionOutput, SessionSpec, TermSize, TtyBroker};
use deis_test_support::proc::processes_with_env;

/// Name of the environment variable through which the suite recognises the processes
/// of its sessions (see [`TtyHarness::running_with_env`]).
pub const MARKER_VAR: &str = "DEIS_SUITE_MARKER";

/// What the suite needs besides the broker: session specs the backend under test can
/// run, and a way to see whether their processes are still running.
#[async_trait]
pub trait TtyHarness: Send + Sync {
    /// A spec of app `app` running `command` (argv; a single element runs with
    /// `sh -c`), with a terminal if `tty`. Its environment must make `DEIS_APP` equal
    /// `app` (the spec's `env` or the backend may set it). The suite then adds variables
    /// to `env` and may set `size`; both must reach the command.
    fn spec(&self, app: &str, command: Vec<String>, tty: bool) -> SessionSpec;

    /// Whether any live process started by the backend has `var=value` in its
    /// environment. The default scans `/proc` of this machine, which sees the processes
    /// of local sessions and of containers on a local Docker engine.
    async fn running_with_env(&self, var: &str, value: &str) -> bool {
        !processes_with_env(var, value).is_empty()
    }

    /// How long one step may take (default 30 s).
    fn timeout(&self) -> Duration {
        Duration::from_secs(30)
    }
}

/// A [`TtyHarness`] for backends that run what an [`Artifact`] holds: sessions of
/// process type `web` of release `release`, opened by user `suite`, with `DEIS_APP` set
/// in their environment. Processes are seen through this machine's `/proc`.
#[derive(Debug, Clone)]
pub struct SpecHarness {
    /// What sessions run in: a source build directory or an image.
    pub artifact: Artifact,
    /// The release sessions belong to.
    pub release: u64,
}

impl SpecHarness {
    /// Sessions in `artifact`, release 1.
    pub fn new(artifact: Artifact) -> Self {
        Self { artifact, release: 1 }
    }
}

impl TtyHarness for SpecHarness {
    fn spec(&self, app: &str, command: Vec<String>, tty: bool) -> SessionSpec {
        SessionSpec {
            app: app_name(app),
            proc_type: process_type("web"),
            artifact: self.artifact.clone(),
            release: self.release,
            env: BTreeMap::from([("DEIS_APP".into(), app.into())]),
            command,
            tty,
            size: None,
            user: "suite".into(),
            identity: None,
            limits: Default::default(),
        }
    }
}

/// Runs every case against fresh brokers from `make` (see the [module docs](super) for
/// the shape); each must allow at least 25 sessions at once. The commands the suite runs
/// need a POSIX `sh`, `cat`, `echo`, `sleep`, `stty`, `head`, `yes` and `kill` where the
/// backend runs them (a source build directory, or an image with busybox/coreutils).
///
/// Panics with the failing step and what was seen.
pub async fn tty_suite(make: impl AsyncFn() -> Arc<dyn TtyBroker>, harness: &dyn TtyHarness) {
    run_cases!(
        "tty",
        Suite: [
            env_visible_in_tty,
            exit_codes,
            signal_exit,
            pipe_roundtrip_binary,
            stderr_separate,
            tty_merges_and_is_a_terminal,
            resize,
            eof_ends_cat,
            drop_kills,
            concurrent,
            backpressure,
        ],
        |case| case(&Suite { b: make().await, h: harness, timeout: harness.timeout() }).await
    );
}

struct Suite<'a> {
    b: Arc<dyn TtyBroker>,
    h: &'a dyn TtyHarness,
    timeout: Duration,
}

/// Everything a session said.
#[derive(Debug, Default)]
struct Collected {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    stderr_msgs: usize,
    exit: Option<ExitStatus>,
}

fn argv(cmd: &[&str]) -> Vec<String> {
    cmd.iter().map(|s| s.to_string()).collect()
}

fn marker() -> String {
    crate::auth::random_hex(8)
}

fn random_bytes(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    getrandom::fill(&mut v).expect("the OS provides randomness");
    v
}

/// The session printed `needle` on stdout and exited with status 0.
fn assert_printed(step: &str, c: &Collected, needle: &str) {
    let out = String::from_utf8_lossy(&c.stdout);
    assert!(out.contains(needle), "{step}: {needle:?} not in the output {out:?}");
    assert_eq!(c.exit, Some(ExitStatus::Code(0)), "{step}");
}

fn show(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(bytes);
    if s.len() > 2000 { format!("{}... ({} bytes)", &s[..s.floor_char_boundary(2000)], bytes.len()) } else { s.into() }
}

impl Suite<'_> {
    fn spec(&self, app: &str, cmd: &[&str], tty: bool) -> SessionSpec {
        let spec = self.h.spec(app, argv(cmd), tty);
        assert_eq!(spec.app, app, "the harness must return a spec of the app asked for");
        assert_eq!(spec.tty, tty, "the harness must return a spec with the tty asked for");
        spec
    }

    async fn open(&self, step: &str, spec: SessionSpec) -> Session {
        match tokio::time::timeout(self.timeout, self.b.open(spec)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => panic!("{step}: open failed: {e}"),
            Err(_) => panic!("{step}: open did not return within {:?}", self.timeout),
        }
    }

    async fn send(&self, step: &str, s: &Session, input: SessionInput) {
        match tokio::time::timeout(self.timeout, s.input.send(input)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => panic!("{step}: the session stopped taking input"),
            Err(_) => panic!("{step}: input not taken within {:?}", self.timeout),
        }
    }

    /// Reads output to the end; checks that exactly one `Exit` comes, last.
    async fn collect(&self, step: &str, out: &mut mpsc::Receiver<SessionOutput>) -> Collected {
        collect(step, self.timeout, out).await
    }

    /// Reads stdout until it contains `needle`; returns everything read.
    async fn read_until(&self, step: &str, out: &mut mpsc::Receiver<SessionOutput>, needle: &str) -> Vec<u8> {
        let deadline = Instant::now() + self.timeout;
        let mut seen = vec![];
        while !String::from_utf8_lossy(&seen).contains(needle) {
            match tokio::time::timeout_at(deadline, out.recv()).await {
                Ok(Some(SessionOutput::Stdout(b) | SessionOutput::Stderr(b))) => seen.extend(b),
                Ok(other) => panic!("{step}: waiting for {needle:?}, got {other:?} after {:?}", show(&seen)),
                Err(_) => panic!("{step}: no {needle:?} within {:?}; output: {:?}", self.timeout, show(&seen)),
            }
        }
        seen
    }

    async fn run(&self, step: &str, spec: SessionSpec) -> Collected {
        let mut s = self.open(step, spec).await;
        self.collect(step, &mut s.output).await
    }

    async fn wait_gone(&self, step: &str, marker: &str) {
        let deadline = Instant::now() + self.timeout;
        while self.h.running_with_env(MARKER_VAR, marker).await {
            assert!(
                Instant::now() < deadline,
                "{step}: processes still running {:?} after the session ended",
                self.timeout
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn env_visible_in_tty(&self) {
        let step = "echo $DEIS_APP in a tty";
        let c = self.run(step, self.spec("suite-env", &["echo \"app=$DEIS_APP\""], true)).await;
        assert_printed(step, &c, "app=suite-env");

        let step = "spec.env reaches the command";
        let mut spec = self.spec("suite-env", &["printf '%s' \"$SUITE_VAR\""], false);
        spec.env.insert("SUITE_VAR".into(), "a b\tc".into());
        let c = self.run(step, spec).await;
        assert_eq!(show(&c.stdout), "a b\tc", "{step}");
    }

    async fn exit_codes(&self) {
        for (tty, cmd, code) in [(false, "exit 7", 7), (true, "exit 3", 3), (false, "true", 0)] {
            let step = format!("`{cmd}` (tty {tty})");
            let c = self.run(&step, self.spec("suite-exit", &[cmd], tty)).await;
            assert_eq!(c.exit, Some(ExitStatus::Code(code)), "{step}: output {:?}", show(&c.stdout));
        }
        let step = "argv command";
        let c = self.run(step, self.spec("suite-exit", &["sh", "-c", "exit $1", "sh", "5"], false)).await;
        assert_eq!(c.exit, Some(ExitStatus::Code(5)), "{step}: stderr {:?}", show(&c.stderr));
    }

    async fn signal_exit(&self) {
        let step = "killed by a signal";
        let c = self.run(step, self.spec("suite-signal", &["kill -KILL $$"], false)).await;
        assert_eq!(c.exit, Some(ExitStatus::Signal(9)), "{step}");
        assert_eq!(c.exit.unwrap().code(), 137);
    }

    async fn pipe_roundtrip_binary(&self) {
        let step = "1 MiB of random bytes through cat";
        let data = random_bytes(1 << 20);
        let mut s = self.open(step, self.spec("suite-cat", &["cat"], false)).await;
        let input = s.input.clone();
        let (feed, timeout) = (data.clone(), self.timeout);
        let writer = tokio::spawn(async move {
            for chunk in feed.chunks(MAX_CHUNK) {
                tokio::time::timeout(timeout, input.send(SessionInput::Stdin(chunk.to_vec())))
                    .await
                    .expect("stdin not taken in time")
                    .expect("session gone");
            }
            input.send(SessionInput::Eof).await.expect("session gone");
        });
        let c = self.collect(step, &mut s.output).await;
        writer.await.unwrap_or_else(|e| panic!("{step}: feeding stdin: {e}"));
        assert_eq!(c.stdout.len(), data.len(), "{step}: length");
        assert!(c.stdout == data, "{step}: the bytes differ");
        assert!(c.stderr.is_empty(), "{step}: stderr {:?}", show(&c.stderr));
        assert_eq!(c.exit, Some(ExitStatus::Code(0)), "{step}");
    }

    async fn stderr_separate(&self) {
        let step = "stdout and stderr without a tty";
        let cmd = "echo out; echo err >&2; test -t 0 || echo no-tty";
        let c = self.run(step, self.spec("suite-streams", &[cmd], false)).await;
        assert_eq!(show(&c.stdout), "out\nno-tty\n", "{step}: stdout");
        assert_eq!(show(&c.stderr), "err\n", "{step}: stderr");
        assert_eq!(c.exit, Some(ExitStatus::Code(0)), "{step}");
    }

    async fn tty_merges_and_is_a_terminal(&self) {
        let step = "one stream with a tty";
        let cmd = "echo out; echo err >&2; test -t 0 && test -t 1 && test -t 2 && echo is-a-tty; echo \"term=$TERM\"";
        let c = self.run(step, self.spec("suite-tty", &[cmd], true)).await;
        let out = String::from_utf8_lossy(&c.stdout);
        for want in ["out\r\n", "err\r\n", "is-a-tty", "term="] {
            assert!(out.contains(want), "{step}: no {want:?} in {out:?}");
        }
        assert!(!out.contains("term=\r\n"), "{step}: TERM must be set with a tty: {out:?}");
        assert_eq!(c.stderr_msgs, 0, "{step}: stderr messages with a tty: {:?}", show(&c.stderr));
        assert_eq!(c.exit, Some(ExitStatus::Code(0)), "{step}");
    }

    async fn resize(&self) {
        let step = "resize";
        let mut spec = self.spec("suite-resize", &["stty size; read x; stty size"], true);
        spec.size = Some(TermSize { cols: 100, rows: 30 });
        let mut s = self.open(step, spec).await;
        self.read_until(&format!("{step}: initial size"), &mut s.output, "30 100").await;
        self.send(step, &s, SessionInput::Resize(TermSize { cols: 120, rows: 40 })).await;
        self.send(step, &s, SessionInput::Stdin(b"go\n".to_vec())).await;
        let c = self.collect(step, &mut s.output).await;
        assert_printed(step, &c, "40 120");
    }

    async fn eof_ends_cat(&self) {
        for tty in [true, false] {
            let step = format!("EOF ends cat (tty {tty})");
            let mut s = self.open(&step, self.spec("suite-eof", &["cat"], tty)).await;
            self.send(&step, &s, SessionInput::Stdin(b"hello\n".to_vec())).await;
            self.send(&step, &s, SessionInput::Eof).await;
            let c = self.collect(&step, &mut s.output).await;
            assert_printed(&step, &c, "hello");
        }
    }

    async fn drop_kills(&self) {
        for tty in [false, true] {
            let step = format!("dropping a session kills it (tty {tty})");
            let m = marker();
            let mut spec = self.spec("suite-drop", &["sleep 1000 & echo started; sleep 1000"], tty);
            spec.env.insert(MARKER_VAR.into(), m.clone());
            let mut s = self.open(&step, spec).await;
            self.read_until(&step, &mut s.output, "started").await;
            assert!(self.h.running_with_env(MARKER_VAR, &m).await, "{step}: the harness can't see the processes");
            drop(s);
            self.wait_gone(&step, &m).await;
        }
        let step = "the end of a command ends what it left running";
        let m = marker();
        let mut spec = self.spec("suite-drop", &["sleep 1000 & echo bye"], false);
        spec.env.insert(MARKER_VAR.into(), m.clone());
        let c = self.run(step, spec).await;
        assert_eq!(show(&c.stdout), "bye\n", "{step}");
        assert_eq!(c.exit, Some(ExitStatus::Code(0)), "{step}");
        self.wait_gone(step, &m).await;
    }

    async fn concurrent(&self) {
        let step = "20 sessions at once";
        let mut sessions = vec![];
        for i in 0..20 {
            let tty = i % 2 == 0;
            sessions.push(
                self.open(&format!("{step}: #{i}"), self.spec("suite-many", &["read x; echo \"got $x\""], tty)).await,
            );
        }
        for (i, s) in sessions.iter().enumerate() {
            self.send(step, s, SessionInput::Stdin(format!("n{i}\n").into_bytes())).await;
        }
        let tasks: Vec<_> = sessions
            .into_iter()
            .map(|mut s| {
                let timeout = self.timeout;
                tokio::spawn(async move { collect(step, timeout, &mut s.output).await })
            })
            .collect();
        for (i, task) in tasks.into_iter().enumerate() {
            let c = task.await.unwrap_or_else(|e| panic!("{step}: session #{i}: {e}"));
            assert_printed(&format!("{step}: session #{i}"), &c, &format!("got n{i}"));
        }
    }

    async fn backpressure(&self) {
        let step = "a caller that stops reading blocks the command";
        const TOTAL: usize = 50 << 20;
        let m = marker();
        let mut spec = self.spec("suite-slow", &[&format!("yes | head -c {TOTAL}")], false);
        spec.env.insert(MARKER_VAR.into(), m.clone());
        let mut s = self.open(step, spec).await;
        // Unbounded buffering would let the command write its 50 MiB and exit in well
        // under this time.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(
            self.h.running_with_env(MARKER_VAR, &m).await,
            "{step}: the command finished although nobody read its output: it was buffered"
        );
        let c = self.collect(step, &mut s.output).await;
        assert_eq!(c.stdout.len(), TOTAL, "{step}: output once read");
        assert!(c.stdout.starts_with(b"y\ny\n"), "{step}");
        assert_eq!(c.exit, Some(ExitStatus::Code(0)), "{step}");

        let step = "a blocked session with a tty is killed when dropped";
        let m = marker();
        let mut spec = self.spec("suite-slow", &["yes"], true);
        spec.env.insert(MARKER_VAR.into(), m.clone());
        let s = self.open(step, spec).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(self.h.running_with_env(MARKER_VAR, &m).await, "{step}: `yes` is not running");
        drop(s);
        self.wait_gone(step, &m).await;
    }
}

/// Reads output to the end; checks that exactly one `Exit` comes, last.
async fn collect(step: &str, timeout: Duration, out: &mut mpsc::Receiver<SessionOutput>) -> Collected {
    let deadline = Instant::now() + timeout;
    let mut c = Collected::default();
    loop {
        let msg = match tokio::time::timeout_at(deadline, out.recv()).await {
            Ok(m) => m,
            Err(_) => panic!(
                "{step}: session not over within {:?}; stdout so far: {:?}, stderr: {:?}, exit: {:?}",
                timeout,
                show(&c.stdout),
                show(&c.stderr),
                c.exit
            ),
        };
        match msg {
            Some(SessionOutput::Stdout(b)) => {
                assert!(c.exit.is_none(), "{step}: output after the exit: {:?}", show(&b));
                c.stdout.extend(b);
            }
            Some(SessionOutput::Stderr(b)) => {
                assert!(c.exit.is_none(), "{step}: output after the exit: {:?}", show(&b));
                c.stderr.extend(b);
                c.stderr_msgs += 1;
            }
            Some(SessionOutput::Exit(st)) => {
                assert!(c.exit.is_none(), "{step}: a second exit {st:?} after {:?}", c.exit);
                c.exit = Some(st);
            }
            None => {
                assert!(c.exit.is_some(), "{step}: the output ended without an exit; stdout: {:?}", show(&c.stdout));
                return c;
            }
        }
    }
}
