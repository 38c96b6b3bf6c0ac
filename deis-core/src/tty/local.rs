//! [`LocalTtyBroker`]: sessions as child processes on this machine, the embedded default
//! [`TtyBroker`].
//!
//! A session runs `spec.command` (a single element as `/bin/sh -c <it>`, otherwise as
//! argv, looked up in `PATH`) in the build directory of an [`Artifact::Source`];
//! images are refused with [`TtyError::Unsupported`]. Like the units of the
//! [`LocalScheduler`](crate::scheduler::LocalScheduler), the environment is cleared
//! except for [`INHERITED_ENV`] (`PATH`, `HOME`, `LANG`, `TZ`), then gets `spec.env`
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
//! Each session leads its own session and process group (`setsid`) and dies with the
//! broker's thread that started it (`PR_SET_PDEATHSIG`); if the broker's process dies,
//! a watchdog process kills the rest of the group at once (see
//! `scheduler::local::watchdog`). When its command ends, what
//! it left running is ended too (`SIGHUP`, `SIGTERM`, `SIGCONT` to every process of
//! the session, `SIGKILL` after [`LocalTtyConfig::kill_grace`]); then its output is
//! drained to the end and [`SessionOutput::Exit`] is sent. When the caller drops the
//! output receiver, the same happens without the `Exit`. A thread per session reaps the
//! command. With [`LocalTtyConfig::state_file`] set, the process groups of live
//! sessions are listed there and [`LocalTtyBroker::new`] kills those a crashed
//! predecessor left behind.
//!
//! Output is read from the process only when the output channel has room, so a caller
//! that stops reading makes the command block on its writes.

use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::{
    CHANNEL_CAPACITY, ExitStatus, MAX_CHUNK, Session, SessionInput, SessionOutput, SessionSpec, TermSize, TtyBroker,
    TtyError,
};
use crate::scheduler::Artifact;
use crate::scheduler::local::INHERITED_ENV;
use crate::scheduler::local::groups::{self, GroupRegistry};
use crate::scheduler::local::watchdog::GroupWatchdog;

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
/// `PATH` of sessions when the broker itself has none.
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";
/// How often a session's processes are checked while it is being ended.
const TREE_POLL: Duration = Duration::from_millis(20);
/// How long to wait for `SIGKILL`ed processes to disappear.
const KILL_WAIT: Duration = Duration::from_secs(5);
/// Stack of the thread that reaps a session's command (it only calls `waitpid`).
const REAPER_STACK: usize = 128 * 1024;
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
}

impl Default for LocalTtyConfig {
    fn default() -> Self {
        Self {
            max_sessions: DEFAULT_MAX_SESSIONS,
            kill_grace: DEFAULT_KILL_GRACE,
            drain_idle: DEFAULT_DRAIN_IDLE,
            state_file: None,
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
        let killed = groups::kill_leftovers(&path, LEFTOVER_WAIT).await;
        if killed > 0 {
            tracing::info!(killed, path = %path.display(), "killed TTY sessions left running by a previous broker");
        }
        let registry = GroupRegistry::create(path.clone()).map_err(|e| {
            TtyError::Backend(Box::new(io::Error::new(
                e.kind(),
                format!("cannot write the TTY broker's state file {}: {e}", path.display()),
            )))
        })?;
        let mut broker = Self::without_state(config);
        broker.groups = Some(Arc::new(registry));
        Ok(broker)
    }

    /// A broker with `config`, ignoring its state file.
    pub fn without_state(config: LocalTtyConfig) -> Self {
        let slots = Arc::new(Semaphore::new(config.max_sessions));
        Self { config: Arc::new(config), slots, groups: None }
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
        let started = start(&spec, &dir)?;
        let pid = started.pid;
        if let Some(g) = &self.groups {
            g.add(pid, &format!("tty session of {} by {}", spec.app, spec.user));
        }
        tracing::debug!(pid, app = %spec.app, user = %spec.user, tty = spec.tty, "started a TTY session");
        let (input_tx, input_rx) = mpsc::channel(CHANNEL_CAPACITY);
        let (output_tx, output_rx) = mpsc::channel(CHANNEL_CAPACITY);
        let driver = Driver { pid, config: self.config.clone(), groups: self.groups.clone(), _permit: permit };
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
    let mut env: BTreeMap<String, String> =
        INHERITED_ENV.iter().filter_map(|k| Some((k.to_string(), std::env::var(k).ok()?))).collect();
    env.entry("PATH".into()).or_insert_with(|| DEFAULT_PATH.into());
    env.extend(spec.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    env.entry("DEIS_APP".into()).or_insert_with(|| spec.app.clone());
    env.entry("DEIS_RELEASE".into()).or_insert_with(|| format!("v{}", spec.release));
    if spec.tty {
        env.entry("TERM".into()).or_insert_with(|| TERM.into());
    }
    env
}

/// The process's side of a session.
enum Io {
    /// The pseudo-terminal's master (read and written).
    Pty(Arc<AsyncFd<OwnedFd>>),
    /// The parent's ends of the pipes.
    Pipes { stdin: AsyncFd<OwnedFd>, stdout: AsyncFd<OwnedFd>, stderr: AsyncFd<OwnedFd> },
}

/// A started session command.
struct Started {
    pid: u32,
    io: Io,
    exited: oneshot::Receiver<ExitStatus>,
    /// Kills the session's process group if the broker dies while it runs.
    watchdog: Option<GroupWatchdog>,
}

fn spawn_error(spec: &SessionSpec, dir: &Path, e: &io::Error) -> TtyError {
    let program = if spec.command.len() == 1 { "sh -c" } else { spec.command[0].as_str() };
    TtyError::Spawn(io::Error::new(e.kind(), format!("cannot run `{program}` in {}: {e}", dir.display())))
}

/// Starts the command of `spec` as the leader of a new session, with a reaper thread.
fn start(spec: &SessionSpec, dir: &Path) -> Result<Started, TtyError> {
    let mut cmd = if spec.command.len() == 1 {
        let mut c = std::process::Command::new("/bin/sh");
        c.arg("-c").arg(&spec.command[0]);
        c
    } else {
        let mut c = std::process::Command::new(&spec.command[0]);
        c.args(&spec.command[1..]);
        c
    };
    cmd.current_dir(dir).env_clear().envs(session_env(spec));
    let master = if spec.tty {
        let (master, slave) = open_pty(spec.size.unwrap_or(DEFAULT_SIZE)).map_err(|e| {
            TtyError::Backend(Box::new(io::Error::new(e.kind(), format!("cannot allocate a pseudo-terminal: {e}"))))
        })?;
        let clone = |fd: &OwnedFd| fd.try_clone().map_err(|e| spawn_error(spec, dir, &e));
        cmd.stdin(Stdio::from(clone(&slave)?)).stdout(Stdio::from(clone(&slave)?)).stderr(Stdio::from(slave));
        Some(master)
    } else {
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        None
    };
    let tty = spec.tty;
    // SAFETY: getpid can't fail.
    let parent = unsafe { libc::getpid() };
    // SAFETY: the closure runs between fork and exec and only makes async-signal-safe
    // calls (setsid, ioctl, prctl, getppid) without allocating.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            // stdin is the terminal's slave by now: make it the controlling terminal.
            if tty && libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(io::Error::last_os_error());
            }
            crate::scheduler::local::groups::die_with_parent(parent)
        });
    }
    let spawned = cmd.spawn();
    // Closes our copies of the terminal's slave, so reads of the master end (EIO) once
    // the session's processes are gone.
    drop(cmd);
    let mut child = spawned.map_err(|e| spawn_error(spec, dir, &e))?;
    let pid = child.id();
    let pipes = (child.stdin.take(), child.stdout.take(), child.stderr.take());
    let (tx, exited) = oneshot::channel();
    let reaper =
        std::thread::Builder::new().name(format!("deis-tty-reap-{pid}")).stack_size(REAPER_STACK).spawn(move || {
            let status = match child.wait() {
                Ok(st) => match (st.code(), st.signal()) {
                    (Some(c), _) => ExitStatus::Code(c),
                    (None, Some(s)) => ExitStatus::Signal(s),
                    (None, None) => ExitStatus::Code(-1),
                },
                Err(e) => {
                    tracing::warn!(pid, error = %e, "waiting for a TTY session's command failed");
                    ExitStatus::Code(-1)
                }
            };
            let _ = tx.send(status);
        });
    if let Err(e) = reaper {
        // The child was dropped with the closure: kill and reap it here.
        groups::signal_group(pid, libc::SIGKILL);
        // SAFETY: waitpid on our own child; a null status pointer is allowed.
        unsafe { libc::waitpid(pid as libc::pid_t, std::ptr::null_mut(), 0) };
        return Err(TtyError::Spawn(io::Error::new(e.kind(), format!("cannot start a reaper thread: {e}"))));
    }
    let io = match master {
        Some(master) => async_fd(master, Interest::READABLE | Interest::WRITABLE).map(|m| Io::Pty(Arc::new(m))),
        None => match pipes {
            (Some(stdin), Some(stdout), Some(stderr)) => (|| {
                Ok(Io::Pipes {
                    stdin: async_fd(stdin.into(), Interest::WRITABLE)?,
                    stdout: async_fd(stdout.into(), Interest::READABLE)?,
                    stderr: async_fd(stderr.into(), Interest::READABLE)?,
                })
            })(),
            _ => Err(io::Error::other("the child's pipes are missing")),
        },
    };
    let watchdog = GroupWatchdog::arm(pid)
        .inspect_err(|e| tracing::warn!(pid, error = %e, "cannot start a TTY session's watchdog"))
        .ok();
    match io {
        Ok(io) => Ok(Started { pid, io, exited, watchdog }),
        Err(e) => {
            // The reaper thread reaps it.
            groups::signal_group(pid, libc::SIGKILL);
            Err(TtyError::Backend(Box::new(io::Error::new(e.kind(), format!("cannot watch the session's I/O: {e}")))))
        }
    }
}

fn cvt(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(rc) }
}

fn cvt_size(rc: isize) -> io::Result<usize> {
    usize::try_from(rc).map_err(|_| io::Error::last_os_error())
}

fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own.
    unsafe {
        let flags = cvt(libc::fcntl(fd.as_raw_fd(), libc::F_GETFL))?;
        cvt(libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK))?;
    }
    Ok(())
}

fn async_fd(fd: OwnedFd, interest: Interest) -> io::Result<AsyncFd<OwnedFd>> {
    set_nonblocking(&fd)?;
    // SAFETY: an `OwnedFd` stays open, and the same descriptor, for as long as it lives.
    Ok(unsafe { AsyncFd::register_with_interest(fd, interest) }?)
}

/// Opens a pseudo-terminal of `size`: (non-blocking master, slave). Both are
/// close-on-exec from the start, so no other child inherits them.
fn open_pty(size: TermSize) -> io::Result<(OwnedFd, OwnedFd)> {
    // SAFETY: plain libc calls on descriptors we own; the name buffer is large enough
    // and ptsname_r NUL-terminates it.
    unsafe {
        let master = cvt(libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC))?;
        let master = OwnedFd::from_raw_fd(master);
        cvt(libc::grantpt(master.as_raw_fd()))?;
        cvt(libc::unlockpt(master.as_raw_fd()))?;
        let mut name = [0 as libc::c_char; 128];
        let rc = libc::ptsname_r(master.as_raw_fd(), name.as_mut_ptr(), name.len());
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        let slave = cvt(libc::open(name.as_ptr(), libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC))?;
        let slave = OwnedFd::from_raw_fd(slave);
        // UTF-8 aware line editing (backspace over multi-byte characters).
        let mut tio: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(slave.as_raw_fd(), &mut tio) == 0 {
            tio.c_iflag |= libc::IUTF8;
            libc::tcsetattr(slave.as_raw_fd(), libc::TCSANOW, &tio);
        }
        set_winsize(&master, size)?;
        set_nonblocking(&master)?;
        Ok((master, slave))
    }
}

/// Sets the window size of the terminal of `master` (the kernel sends `SIGWINCH` to its
/// foreground process group).
fn set_winsize(master: &OwnedFd, size: TermSize) -> io::Result<()> {
    let ws = libc::winsize { ws_row: size.rows, ws_col: size.cols, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCSWINSZ reads a winsize from the pointer.
    cvt(unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) }).map(drop)
}

/// The terminal's EOF character (`^D` unless the program changed it).
fn eof_char(master: &OwnedFd) -> u8 {
    // SAFETY: tcgetattr fills the termios; on a master it reports the slave's settings.
    unsafe {
        let mut tio: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(master.as_raw_fd(), &mut tio) == 0 && tio.c_cc[libc::VEOF] != 0 {
            tio.c_cc[libc::VEOF]
        } else {
            4
        }
    }
}

/// Reads once into `buf` when `fd` is readable.
async fn read_some(fd: &AsyncFd<OwnedFd>, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        let mut guard = fd.readable().await?;
        // SAFETY: read(2) into a buffer of the given length.
        let res = guard
            .try_io(|inner| cvt_size(unsafe { libc::read(inner.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) }));
        match res {
            Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
            Ok(r) => return r,
            Err(_would_block) => continue,
        }
    }
}

/// Reads what is available right now from the non-blocking `fd`, without waiting;
/// `None` when nothing is (or on an error).
fn read_now(fd: &AsyncFd<OwnedFd>, buf: &mut [u8]) -> Option<usize> {
    // SAFETY: read(2) into a buffer of the given length. A stale readiness left by an
    // `EAGAIN` here only costs the next `read_some` one extra read.
    let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    usize::try_from(n).ok()
}

/// Writes all of `bytes` to `fd`, waiting whenever it is full.
async fn write_all(fd: &AsyncFd<OwnedFd>, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        let mut guard = fd.writable().await?;
        // SAFETY: write(2) from a buffer of the given length.
        let res = guard
            .try_io(|inner| cvt_size(unsafe { libc::write(inner.as_raw_fd(), bytes.as_ptr().cast(), bytes.len()) }));
        match res {
            Ok(Ok(n)) => bytes = &bytes[n..],
            Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
            Ok(Err(e)) => return Err(e),
            Err(_would_block) => {}
        }
    }
    Ok(())
}

/// Moves output from `fd` to `tx`, reading only when `tx` has room, until end of file
/// (or `EIO`, a terminal whose every slave is closed), the receiver is gone, or, once
/// `draining` is set, nothing came for `idle`.
async fn pump_out(
    fd: Arc<AsyncFd<OwnedFd>>,
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
                match tokio::time::timeout(idle, read_some(&fd, &mut buf)).await {
                    Ok(r) => break r,
                    Err(_) => {
                        tracing::debug!("giving up draining a TTY session: an escaped process holds its output open");
                        return;
                    }
                }
            }
            tokio::select! {
                r = read_some(&fd, &mut buf) => break r,
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
                    match read_now(&fd, &mut buf[n..]) {
                        Some(more) if more > 0 => n += more,
                        _ => break,
                    }
                }
                let chunk = buf[..n].to_vec();
                permit.send(if stderr { SessionOutput::Stderr(chunk) } else { SessionOutput::Stdout(chunk) });
            }
            Err(e) => {
                if e.raw_os_error() != Some(libc::EIO) {
                    tracing::warn!(error = %e, "reading a TTY session's output failed");
                }
                return;
            }
        }
    }
}

/// Where input goes.
enum Sink {
    Pty(Arc<AsyncFd<OwnedFd>>),
    Pipe(Option<AsyncFd<OwnedFd>>),
}

/// Applies input in order until the sender is gone (which closes a batch session's
/// stdin). Writes wait while the process does not read: the input channel then fills up
/// and the caller's sends wait too.
async fn pump_in(mut sink: Sink, mut rx: mpsc::Receiver<SessionInput>) {
    while let Some(input) = rx.recv().await {
        match (&mut sink, input) {
            (Sink::Pty(m), SessionInput::Stdin(bytes)) => {
                if let Err(e) = write_all(m, &bytes).await {
                    tracing::debug!(error = %e, "writing to a TTY session's terminal failed");
                }
            }
            (Sink::Pty(m), SessionInput::Eof) => {
                let eof = eof_char(m.get_ref());
                if let Err(e) = write_all(m, &[eof]).await {
                    tracing::debug!(error = %e, "writing EOF to a TTY session's terminal failed");
                }
            }
            (Sink::Pty(m), SessionInput::Resize(size)) => {
                if let Err(e) = set_winsize(m.get_ref(), size) {
                    tracing::debug!(error = %e, "resizing a TTY session's terminal failed");
                }
            }
            (Sink::Pipe(stdin), SessionInput::Stdin(bytes)) => {
                if let Some(fd) = stdin
                    && let Err(e) = write_all(fd, &bytes).await
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

/// Live (not zombie) processes of session `sid` or of process group `sid`.
fn tree_members(sid: u32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return vec![] };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
            // Fields after the command name: state ppid pgrp session ...
            let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else { return false };
            let f: Vec<&str> = rest.split_whitespace().take(4).collect();
            let [state, _ppid, pgrp, session] = f[..] else { return false };
            let ours = |s: &str| s.parse::<u32>().ok() == Some(sid);
            !matches!(state, "Z" | "X") && (ours(pgrp) || ours(session))
        })
        .collect()
}

/// Sends `sig` to every process of the session `sid` (its leader's group, and the
/// groups a shell with job control made in it).
fn signal_tree(sid: u32, members: &[i32], sig: i32) {
    groups::signal_group(sid, sig);
    for &pid in members {
        // SAFETY: plain kill(2) of a process of a session we started.
        unsafe { libc::kill(pid, sig) };
    }
}

/// Waits until session `sid` has no live process; false after `wait`.
async fn tree_gone(sid: u32, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    loop {
        if tree_members(sid).is_empty() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(TREE_POLL).await;
    }
}

/// Ends every process of session `sid`: `SIGHUP`, `SIGTERM` and `SIGCONT`, then
/// `SIGKILL` after `grace`. Returns whether they are all gone.
async fn end_tree(sid: u32, grace: Duration) -> bool {
    let members = tree_members(sid);
    if members.is_empty() {
        return true;
    }
    for sig in [libc::SIGHUP, libc::SIGTERM, libc::SIGCONT] {
        signal_tree(sid, &members, sig);
    }
    if tree_gone(sid, grace).await {
        return true;
    }
    signal_tree(sid, &tree_members(sid), libc::SIGKILL);
    let gone = tree_gone(sid, KILL_WAIT).await;
    if !gone {
        tracing::warn!(sid, "processes of a TTY session survived SIGKILL");
    }
    gone
}

/// Kills a session's processes if its driver is dropped before it finished (runtime
/// shutdown).
struct TreeGuard {
    sid: u32,
    armed: bool,
}

impl Drop for TreeGuard {
    fn drop(&mut self) {
        if self.armed {
            signal_tree(self.sid, &tree_members(self.sid), libc::SIGKILL);
        }
    }
}

/// Runs one session to its end.
struct Driver {
    pid: u32,
    config: Arc<LocalTtyConfig>,
    groups: Option<Arc<GroupRegistry>>,
    _permit: OwnedSemaphorePermit,
}

impl Driver {
    async fn run(self, started: Started, input: mpsc::Receiver<SessionInput>, output: mpsc::Sender<SessionOutput>) {
        let mut guard = TreeGuard { sid: self.pid, armed: true };
        let Started { io, mut exited, watchdog, .. } = started;
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
            st = &mut exited => Some(st.unwrap_or(ExitStatus::Code(-1))),
            () = output.closed() => None,
        };
        let gone = match status {
            Some(status) => {
                // The command ended: end what it left behind, then deliver the rest of
                // its output (unless the caller goes away), then the exit.
                let gone = end_tree(self.pid, self.config.kill_grace).await;
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
                let gone = end_tree(self.pid, self.config.kill_grace).await;
                let _ = exited.await;
                tracing::debug!(pid = self.pid, "TTY session dropped by its caller; killed it");
                gone
            }
        };
        guard.armed = !gone;
        if gone {
            if let Some(g) = &self.groups {
                g.remove(self.pid);
            }
            if let Some(w) = watchdog {
                w.disarm().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{SpecHarness, TtyHarness, tty_suite};

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
        spec.env.insert(crate::testing::MARKER_VAR.into(), marker.into());
        spec
    }

    fn marked_running(marker: &str) -> bool {
        !crate::testing::processes_with_env(crate::testing::MARKER_VAR, marker).is_empty()
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
            wait_until("the session runs", || tree_members(pid as u32).len() >= 2).await;
            drop(s);
            // Gone means reaped too: a zombie still has its /proc entry.
            wait_until("leader reaped", || !Path::new(&format!("/proc/{pid}")).exists()).await;
            wait_until("group gone", || tree_members(pid as u32).is_empty()).await;
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
        for pid in crate::testing::processes_with_env(crate::testing::MARKER_VAR, &m) {
            // SAFETY: killing the escaped test process.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
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
        let (dir, sp) =
            (state.path().to_path_buf(), marked(spec(&h, &["sleep 1000 & echo up; sleep 1000"], false), &m));
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
            let pids = crate::testing::processes_with_env(crate::testing::MARKER_VAR, &m);
            let comm = |p: &u32| std::fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default();
            !pids.is_empty() && pids.iter().all(|p| comm(p).trim() == "sleep")
        })
        .await;
        let b = LocalTtyBroker::new(LocalTtyConfig::with_state_dir(state.path())).await.unwrap();
        assert!(!marked_running(&m), "the new broker killed the leftover");
        assert_eq!(b.running(), 0);
    }
}
