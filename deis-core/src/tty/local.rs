//! [`LocalTtyBroker`]: sessions as child processes on this machine, the embedded default
//! [`TtyBroker`].
//!
//! A session runs `spec.command` (a single element as `/bin/sh -c <it>`, otherwise as
//! argv, looked up in `PATH`) in the build directory of an [`Artifact::Source`];
//! images are refused with [`TtyError::Unsupported`]. Like the units of the
//! [`LocalScheduler`](crate::scheduler::LocalScheduler), the environment is cleared
//! except for [`INHERITED_ENV`](crate::sys::process::INHERITED_ENV) (`PATH`, `HOME`,
//! `LANG`, `TZ`), then gets `spec.env`
//! (plus `DEIS_APP` and `DEIS_RELEASE` if the spec lacks them) and, with a terminal,
//! `TERM=xterm-256color` unless the spec sets `TERM`.
//!
//! - **TTY sessions** get a fresh pseudo-terminal of `spec.size` (80x24 by default) as
//!   stdin, stdout and stderr and as their controlling terminal; output is one stream
//!   ([`SessionOutput::Stdout`]); [`SessionInput::Resize`] sets the window size (the
//!   kernel sends `SIGWINCH`); [`SessionInput::Eof`] types the terminal's EOF character
//!   (`^D`, which ends input at the start of a line).
//! - **Batch sessions** get three pipes; [`SessionInput::Eof`] (or dropping the input
//!   sender) closes stdin; resizes are ignored.
//!
//! Each session leads its own session and process group and dies with the broker's
//! thread that started it (`PR_SET_PDEATHSIG`; see [`crate::sys::process`]); if the
//! broker's process dies, a watchdog process kills the rest of the group at once
//! ([`crate::sys::GroupWatchdog`]). When its command ends, what it left running is
//! ended too (`SIGHUP`, `SIGTERM`, `SIGCONT` to every process of
//! the session, `SIGKILL` after [`LocalTtyConfig::kill_grace`]); then its output is
//! drained to the end and [`SessionOutput::Exit`] is sent. When the caller drops the
//! output receiver, the same happens without the `Exit`. A thread per session reaps the
//! command. With [`LocalTtyConfig::state_file`] set, the process groups of live
//! sessions are listed there and [`LocalTtyBroker::new`] kills those a crashed
//! predecessor left behind.
//!
//! Output is read from the process only when the output channel has room, so a caller
//! that stops reading makes the command block on its writes.
//!
//! Sessions are confined like the app's units ([`LocalTtyConfig::isolation`], see
//! [`crate::sys::isolation`]): as root they run as the app's identity
//! ([`SessionSpec::identity`]), each in a cgroup with the limits of its process type
//! ([`SessionSpec::limits`]), with `no_new_privs`, no capabilities, a private `/tmp`
//! and only the app's build visible (read-only) in the data directory.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::Interest;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};
use tokio::task::JoinSet;

use super::{
    CHANNEL_CAPACITY, ExitStatus, MAX_CHUNK, Session, SessionInput, SessionOutput, SessionSpec, TermSize, TtyBroker,
    TtyError,
};
use crate::scheduler::Artifact;
use crate::sys::cgroup::UnitCgroup;
use crate::sys::{
    AsyncFdIo, Confined, Confinement, ExitInfo, GroupRegistry, Isolation, Signal, SpawnSpec, Stdio, TrackedGroup,
    group, pty, term,
};

#[cfg(test)]
mod tests;

/// Default most sessions at once.
pub const DEFAULT_MAX_SESSIONS: usize = 256;
/// Default time between the polite signals and `SIGKILL` when a session ends.
pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(2);
/// Default [`LocalTtyConfig::drain_idle`].
pub const DEFAULT_DRAIN_IDLE: Duration = Duration::from_secs(2);
/// Name of the state file under a state directory ([`LocalTtyConfig::with_state_dir`]).
pub const TTY_STATE_FILE: &str = "tty-sessions.json";
/// Terminal size of TTY sessions that give none.
pub const DEFAULT_SIZE: TermSize = TermSize { cols: 80, rows: 24 };
/// `TERM` of TTY sessions.
pub const TERM: &str = "xterm-256color";
/// How long to wait for `SIGKILL`ed processes to disappear.
const KILL_WAIT: Duration = Duration::from_secs(5);
/// How long `new` waits for the killed leftovers of a previous broker to exit.
const LEFTOVER_WAIT: Duration = Duration::from_secs(5);

/// Settings of a [`LocalTtyBroker`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalTtyConfig {
    /// Most sessions at once; more are refused with [`TtyError::Busy`].
    pub max_sessions: usize,
    /// Time between `SIGHUP`/`SIGTERM` and `SIGKILL` when a session ends.
    pub kill_grace: Duration,
    /// After the command ended and its processes were killed, output is drained until
    /// end of file; if none comes for this long (a process escaped into another
    /// session still holds the terminal or pipe), the session ends anyway.
    pub drain_idle: Duration,
    /// Where to list the process groups of live sessions (see the module docs).
    pub state_file: Option<PathBuf>,
    /// How sessions are confined (default: everything this machine allows, hiding
    /// nothing; the platform hides its data directory).
    pub isolation: Isolation,
}

impl Default for LocalTtyConfig {
    fn default() -> Self {
        Self {
            max_sessions: DEFAULT_MAX_SESSIONS,
            kill_grace: DEFAULT_KILL_GRACE,
            drain_idle: DEFAULT_DRAIN_IDLE,
            state_file: None,
            isolation: Isolation::default(),
        }
    }
}

impl LocalTtyConfig {
    /// Defaults, with the state file [`TTY_STATE_FILE`] in `dir` (e.g. deisd's data
    /// directory).
    pub fn with_state_dir(dir: impl AsRef<Path>) -> Self {
        Self { state_file: Some(dir.as_ref().join(TTY_STATE_FILE)), ..Self::default() }
    }
}

/// The embedded default [`TtyBroker`]: sessions as child processes. See the module docs.
#[derive(Debug)]
pub struct LocalTtyBroker {
    config: Arc<LocalTtyConfig>,
    slots: Arc<Semaphore>,
    groups: Option<Arc<GroupRegistry>>,
    confinement: Arc<Confinement>,
    next_cgroup: std::sync::atomic::AtomicU64,
}

impl Default for LocalTtyBroker {
    /// Default settings, no state file.
    fn default() -> Self {
        Self::without_state(LocalTtyConfig::default())
    }
}

impl LocalTtyBroker {
    /// A broker with `config`. With a state file, first kills the session processes a
    /// previous broker using the same file left running, and waits for them to exit.
    pub async fn new(config: LocalTtyConfig) -> Result<Self, TtyError> {
        let Some(path) = config.state_file.clone() else { return Ok(Self::without_state(config)) };
        let (registry, killed) = GroupRegistry::take_over(&path, LEFTOVER_WAIT)
            .await
            .map_err(|e| backend_error("cannot take over the TTY broker's state file", e))?;
        if killed > 0 {
            tracing::info!(killed, path = %path.display(), "killed TTY sessions left running by a previous broker");
        }
        let tag = crate::sys::isolation::tag_for("tty", &path);
        let mut broker = tokio::task::spawn_blocking(move || Self::with_tag(config, &tag))
            .await
            .map_err(|e| backend_error("cannot start the TTY broker", io::Error::other(e)))?;
        broker.groups = Some(Arc::new(registry));
        Ok(broker)
    }

    /// A broker with `config`, ignoring its state file (and so the cgroups a crashed
    /// predecessor left: its sessions' cgroups are its own).
    pub fn without_state(config: LocalTtyConfig) -> Self {
        static ANONYMOUS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = ANONYMOUS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tag = format!("tty-{}-{n}", std::process::id());
        Self::with_tag(config, &tag)
    }

    fn with_tag(config: LocalTtyConfig, tag: &str) -> Self {
        let slots = Arc::new(Semaphore::new(config.max_sessions));
        let confinement = Arc::new(Confinement::start(config.isolation.clone(), tag));
        Self { config: Arc::new(config), slots, groups: None, confinement, next_cgroup: Default::default() }
    }

    /// The settings.
    pub fn config(&self) -> &LocalTtyConfig {
        &self.config
    }

    /// Sessions running now (until their processes are gone).
    pub fn running(&self) -> usize {
        self.config.max_sessions - self.slots.available_permits()
    }
}

#[async_trait]
impl TtyBroker for LocalTtyBroker {
    async fn open(&self, spec: SessionSpec) -> Result<Session, TtyError> {
        let dir = match &spec.artifact {
            Artifact::Source { dir } => dir.clone(),
            Artifact::Image { reference } => {
                return Err(TtyError::Unsupported(format!(
                    "the local TTY broker runs commands of source builds only; release v{} of {} is the image \
                     {reference}, which needs a container TTY backend (Docker)",
                    spec.release, spec.app
                )));
            }
        };
        validate(&spec, &dir)?;
        let permit = self.slots.clone().try_acquire_owned().map_err(|_| TtyError::Busy(self.running()))?;
        let n = self.next_cgroup.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let cgroup = self
            .confinement
            .cgroup(&format!("session-{n}"), spec.limits)
            .map_err(|e| backend_error("cannot make the session's cgroup", e))?
            .map(Arc::new);
        let confine = |command: SpawnSpec| {
            self.confinement.apply(command, Confined { identity: spec.identity, dir: &dir, cgroup: cgroup.as_deref() })
        };
        let started = match start(&spec, &dir, &confine) {
            Ok(s) => s,
            Err(e) => {
                if let Some(cg) = &cgroup {
                    cg.remove();
                }
                return Err(e);
            }
        };
        let pid = started.pid;
        let label = format!("tty session of {} by {}", spec.app, spec.user);
        let tracked = TrackedGroup::start(pid, &label, self.groups.clone());
        // Listed in the state file before the caller has the session. (If this future
        // is dropped here, so is `tracked`: its watchdog kills the session.)
        if let Err(e) = tracked.recorded().await {
            tracing::warn!(pid, error = %e, "cannot list a TTY session in the state file");
        }
        tracing::debug!(pid, app = %spec.app, user = %spec.user, tty = spec.tty, "started a TTY session");
        let (input_tx, input_rx) = mpsc::channel(CHANNEL_CAPACITY);
        let (output_tx, output_rx) = mpsc::channel(CHANNEL_CAPACITY);
        let driver = Driver { pid, config: self.config.clone(), tracked, cgroup, _permit: permit };
        tokio::spawn(driver.run(started, input_rx, output_tx));
        Ok(Session { input: input_tx, output: output_rx })
    }
}

fn validate(spec: &SessionSpec, dir: &Path) -> Result<(), TtyError> {
    let invalid = |m: String| Err(TtyError::Invalid(m));
    if spec.command.is_empty() || spec.command[0].is_empty() {
        return invalid("empty command: give the program to run and its arguments".into());
    }
    if spec.command.iter().any(|a| a.contains('\0')) {
        return invalid("the command contains a NUL byte".into());
    }
    for (k, v) in &spec.env {
        if k.is_empty() || k.contains(['=', '\0']) || v.contains('\0') {
            return invalid(format!("environment variable {k:?} has an invalid name or value"));
        }
    }
    if !dir.is_dir() {
        return invalid(format!(
            "the build directory {} of {} v{} does not exist; push or rebuild the app",
            dir.display(),
            spec.app,
            spec.release
        ));
    }
    Ok(())
}

/// The whole environment of a session (see the module docs).
fn session_env(spec: &SessionSpec) -> BTreeMap<String, String> {
    let mut env = crate::sys::process::inherited_env();
    env.extend(spec.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    env.entry("DEIS_APP".into()).or_insert_with(|| spec.app.to_string());
    env.entry("DEIS_RELEASE".into()).or_insert_with(|| format!("v{}", spec.release));
    if spec.tty {
        env.entry("TERM".into()).or_insert_with(|| TERM.into());
    }
    env
}

/// The process's side of a session.
enum Io {
    /// The pseudo-terminal's master (read and written).
    Pty(Arc<AsyncFdIo>),
    /// The parent's ends of the pipes.
    Pipes { stdin: AsyncFdIo, stdout: AsyncFdIo, stderr: AsyncFdIo },
}

/// A started session command.
struct Started {
    pid: u32,
    io: Io,
    exited: oneshot::Receiver<ExitInfo>,
}

fn backend_error(what: &str, e: io::Error) -> TtyError {
    TtyError::Backend(Box::new(io::Error::new(e.kind(), format!("{what}: {e}"))))
}

/// Starts the command of `spec` as the leader of a new session, confined by `confine`.
fn start(spec: &SessionSpec, dir: &Path, confine: &dyn Fn(SpawnSpec) -> SpawnSpec) -> Result<Started, TtyError> {
    let command = SpawnSpec::from_argv(&spec.command)
        .ok_or_else(|| TtyError::Invalid("empty command: give the program to run and its arguments".into()))?
        .dir(dir)
        .env(session_env(spec));
    let command = confine(command);
    let (command, master) = if spec.tty {
        let pty = pty::open(spec.size.unwrap_or(DEFAULT_SIZE))
            .map_err(|e| backend_error("cannot allocate a pseudo-terminal", e))?;
        (command.terminal(pty.slave), Some(pty.master))
    } else {
        (command.stdin(Stdio::Piped).stdout(Stdio::Piped).stderr(Stdio::Piped), None)
    };
    let child = crate::sys::spawn(command).map_err(|e| TtyError::Spawn(e.into()))?;
    let pid = child.pid;
    let io = match (master, child.stdin, child.stdout, child.stderr) {
        (Some(master), ..) => AsyncFdIo::new(master).map(|m| Io::Pty(Arc::new(m))),
        (None, Some(stdin), Some(stdout), Some(stderr)) => (|| {
            Ok(Io::Pipes {
                stdin: AsyncFdIo::with_interest(stdin, Interest::WRITABLE)?,
                stdout: AsyncFdIo::with_interest(stdout, Interest::READABLE)?,
                stderr: AsyncFdIo::with_interest(stderr, Interest::READABLE)?,
            })
        })(),
        _ => Err(io::Error::other("the child's pipes are missing")),
    };
    match io {
        Ok(io) => Ok(Started { pid, io, exited: child.exited }),
        Err(e) => {
            // Its reaper reaps it.
            group::signal_session(pid, Signal::KILL);
            Err(backend_error("cannot watch the session's I/O", e))
        }
    }
}

/// How a session's command ended, as a session reports it (`-1` when unknown).
fn exit_status(info: ExitInfo) -> ExitStatus {
    match (info.code, info.signal) {
        (Some(c), _) => ExitStatus::Code(c),
        (None, Some(s)) => ExitStatus::Signal(s),
        (None, None) => ExitStatus::Code(-1),
    }
}

/// Moves output from `fd` to `tx`, reading only when `tx` has room, until end of file
/// (or `EIO`, a terminal whose every slave is closed), the receiver is gone, or, once
/// `draining` is set, nothing came for `idle`.
async fn pump_out(
    fd: Arc<AsyncFdIo>,
    tx: mpsc::Sender<SessionOutput>,
    stderr: bool,
    mut draining: watch::Receiver<bool>,
    idle: Duration,
) {
    let mut buf = vec![0u8; MAX_CHUNK];
    let mut drain = false;
    loop {
        let Ok(permit) = tx.reserve().await else { return };
        let read = loop {
            if drain {
                match tokio::time::timeout(idle, fd.read(&mut buf)).await {
                    Ok(r) => break r,
                    Err(_) => {
                        tracing::debug!("giving up draining a TTY session: an escaped process holds its output open");
                        return;
                    }
                }
            }
            tokio::select! {
                r = fd.read(&mut buf) => break r,
                _ = draining.changed() => drain = true,
            }
        };
        match read {
            Ok(0) => return,
            Ok(mut n) => {
                // Take what else is there already (a terminal hands out at most 4 KiB
                // per read), so bulk output travels in fewer, bigger messages; an end
                // of file or error shows up again on the next read.
                while n < buf.len() {
                    match fd.read_now(&mut buf[n..]) {
                        Some(more) if more > 0 => n += more,
                        _ => break,
                    }
                }
                let chunk = buf[..n].to_vec();
                permit.send(if stderr { SessionOutput::Stderr(chunk) } else { SessionOutput::Stdout(chunk) });
            }
            Err(e) => {
                if e.raw_os_error() != Some(rustix::io::Errno::IO.raw_os_error()) {
                    tracing::warn!(error = %e, "reading a TTY session's output failed");
                }
                return;
            }
        }
    }
}

/// Where input goes.
enum Sink {
    Pty(Arc<AsyncFdIo>),
    Pipe(Option<AsyncFdIo>),
}

/// Applies input in order until the sender is gone (which closes a batch session's
/// stdin). Writes wait while the process does not read: the input channel then fills up
/// and the caller's sends wait too.
async fn pump_in(mut sink: Sink, mut rx: mpsc::Receiver<SessionInput>) {
    while let Some(input) = rx.recv().await {
        match (&mut sink, input) {
            (Sink::Pty(m), SessionInput::Stdin(bytes)) => {
                if let Err(e) = m.write_all(&bytes).await {
                    tracing::debug!(error = %e, "writing to a TTY session's terminal failed");
                }
            }
            (Sink::Pty(m), SessionInput::Eof) => {
                if let Err(e) = m.write_all(&[term::eof_char(&**m)]).await {
                    tracing::debug!(error = %e, "writing EOF to a TTY session's terminal failed");
                }
            }
            (Sink::Pty(m), SessionInput::Resize(size)) => {
                if let Err(e) = term::set_window_size(&**m, size) {
                    tracing::debug!(error = %e, "resizing a TTY session's terminal failed");
                }
            }
            (Sink::Pipe(stdin), SessionInput::Stdin(bytes)) => {
                if let Some(fd) = stdin
                    && let Err(e) = fd.write_all(&bytes).await
                {
                    // Typically EPIPE: the command closed its stdin. Drop further input.
                    tracing::debug!(error = %e, "writing to a session's stdin failed; discarding further input");
                    *stdin = None;
                }
            }
            (Sink::Pipe(stdin), SessionInput::Eof) => *stdin = None,
            (Sink::Pipe(_), SessionInput::Resize(_)) => {}
        }
    }
}

/// Ends every process of session `sid` (see [`group::end_session`]) and of its cgroup
/// (processes that left the session); logs survivors.
async fn end_tree(sid: u32, grace: Duration, cgroup: Option<&Arc<UnitCgroup>>) -> bool {
    let mut gone = group::end_session(sid, grace, KILL_WAIT).await;
    if let Some(cg) = cgroup.cloned() {
        gone &= tokio::task::spawn_blocking(move || {
            cg.kill_all(KILL_WAIT);
            let empty = cg.is_empty();
            cg.remove();
            empty
        })
        .await
        .unwrap_or(false);
    }
    if !gone {
        tracing::warn!(sid, "processes of a TTY session survived SIGKILL");
    }
    gone
}

/// Kills a session's processes if its driver is dropped before it finished (runtime
/// shutdown).
struct TreeGuard {
    sid: u32,
    cgroup: Option<Arc<UnitCgroup>>,
    armed: bool,
}

impl Drop for TreeGuard {
    fn drop(&mut self) {
        if self.armed {
            group::signal_session(self.sid, Signal::KILL);
            if let Some(cg) = &self.cgroup {
                cg.signal_all(Signal::KILL);
            }
        }
    }
}

/// Runs one session to its end.
struct Driver {
    pid: u32,
    config: Arc<LocalTtyConfig>,
    tracked: TrackedGroup,
    cgroup: Option<Arc<UnitCgroup>>,
    _permit: OwnedSemaphorePermit,
}

impl Driver {
    async fn run(self, started: Started, input: mpsc::Receiver<SessionInput>, output: mpsc::Sender<SessionOutput>) {
        let mut guard = TreeGuard { sid: self.pid, cgroup: self.cgroup.clone(), armed: true };
        let Started { io, mut exited, .. } = started;
        let (drain_tx, drain_rx) = watch::channel(false);
        let idle = self.config.drain_idle;
        let mut pumps = JoinSet::new();
        let sink = match io {
            Io::Pty(master) => {
                pumps.spawn(pump_out(master.clone(), output.clone(), false, drain_rx, idle));
                Sink::Pty(master)
            }
            Io::Pipes { stdin, stdout, stderr } => {
                pumps.spawn(pump_out(Arc::new(stdout), output.clone(), false, drain_rx.clone(), idle));
                pumps.spawn(pump_out(Arc::new(stderr), output.clone(), true, drain_rx, idle));
                Sink::Pipe(Some(stdin))
            }
        };
        let input = tokio::spawn(pump_in(sink, input));
        let status = tokio::select! {
            st = &mut exited => Some(exit_status(st.unwrap_or(ExitInfo::UNKNOWN))),
            () = output.closed() => None,
        };
        let gone = match status {
            Some(status) => {
                // The command ended: end what it left behind, then deliver the rest of
                // its output (unless the caller goes away), then the exit.
                let gone = end_tree(self.pid, self.config.kill_grace, self.cgroup.as_ref()).await;
                let _ = drain_tx.send(true);
                tokio::select! {
                    () = async { while pumps.join_next().await.is_some() {} } => {}
                    () = output.closed() => {}
                }
                input.abort();
                pumps.abort_all();
                let _ = output.send(SessionOutput::Exit(status)).await;
                tracing::debug!(pid = self.pid, %status, "TTY session ended");
                gone
            }
            None => {
                // The caller went away: kill the session.
                input.abort();
                pumps.abort_all();
                let gone = end_tree(self.pid, self.config.kill_grace, self.cgroup.as_ref()).await;
                let _ = exited.await;
                tracing::debug!(pid = self.pid, "TTY session dropped by its caller; killed it");
                gone
            }
        };
        guard.armed = !gone;
        if gone {
            self.tracked.release().await;
        }
        // Otherwise the tracked group is dropped armed: its watchdog kills the group,
        // and its state file entry stays for a successor.
    }
}
