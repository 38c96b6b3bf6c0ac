//! Starting a program as the leader of a new session.
//!
//! [`spawn`] starts what a [`SpawnSpec`] describes: always in a new session and process
//! group of its own (`setsid`, so its pid is its session and group id, and every signal
//! for "the unit" or "the session" can go to that group), with exactly the environment
//! the spec gives, and by default tied to our life (`PR_SET_PDEATHSIG(SIGKILL)`). A
//! [`reaper`] thread waits for it, so no child is left a zombie.
//!
//! The parent-death signal fires when the *thread* that forked the child ends, not
//! only the process: call [`spawn`] from a thread that lives as long as the children
//! should, e.g. a tokio worker (they live as long as the runtime), never from
//! `spawn_blocking` (its threads end when idle).
//!
//! # What the child does before `exec`
//!
//! The spec is turned into an ordered list of steps that the child runs between fork
//! and exec (`pre_exec`): new session, controlling terminal, parent-death signal. Each
//! step is one or two raw syscalls: async-signal-safe, no allocation, no locks (the
//! list is built before the fork). Isolation (an identity per app, a cgroup,
//! `no_new_privs`, dropped capabilities, a private `/tmp`) is meant to arrive the same
//! way: a builder method on [`SpawnSpec`] that records it, and a step that applies it,
//! so callers that don't ask for it don't change.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;

use rustix::process::{Pid, Signal};
use tokio::sync::oneshot;

use super::reaper;

/// Variables a unit or session inherits from our environment (when set); everything
/// else is cleared, so our own settings and secrets don't leak into apps.
pub const INHERITED_ENV: [&str; 4] = ["PATH", "HOME", "LANG", "TZ"];
/// `PATH` of children when we have none.
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// What a child gets of our environment: the [`INHERITED_ENV`] variables that are set,
/// and always a `PATH` (`/usr/local/bin:/usr/bin:/bin` when we have none).
pub fn inherited_env() -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> =
        INHERITED_ENV.iter().filter_map(|k| Some((k.to_string(), std::env::var(k).ok()?))).collect();
    env.entry("PATH".into()).or_insert_with(|| DEFAULT_PATH.into());
    env
}

/// How one of the child's standard streams is connected (unless it has a terminal).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Stdio {
    /// `/dev/null`.
    #[default]
    Null,
    /// A pipe; our end is in [`Child`].
    Piped,
}

impl From<Stdio> for std::process::Stdio {
    fn from(s: Stdio) -> Self {
        match s {
            Stdio::Null => std::process::Stdio::null(),
            Stdio::Piped => std::process::Stdio::piped(),
        }
    }
}

/// What [`spawn`] starts. Build it with [`SpawnSpec::new`], [`SpawnSpec::shell`] or
/// [`SpawnSpec::from_argv`] and the builder methods.
///
/// Defaults: working directory `/`, an empty environment, all three streams on
/// `/dev/null`, dies with the thread that spawned it.
#[derive(Debug)]
pub struct SpawnSpec {
    program: OsString,
    args: Vec<OsString>,
    dir: PathBuf,
    env: Vec<(OsString, OsString)>,
    stdin: Stdio,
    stdout: Stdio,
    stderr: Stdio,
    /// The slave side of a pseudo-terminal: all three streams and the controlling
    /// terminal.
    terminal: Option<OwnedFd>,
    die_with_parent: bool,
}

impl SpawnSpec {
    /// Runs `program` (looked up in the spec's `PATH` if it has no `/`).
    pub fn new(program: impl Into<OsString>) -> Self {
        Self {
            program: program.into(),
            args: vec![],
            dir: PathBuf::from("/"),
            env: vec![],
            stdin: Stdio::Null,
            stdout: Stdio::Null,
            stderr: Stdio::Null,
            terminal: None,
            die_with_parent: true,
        }
    }

    /// Runs `/bin/sh -c <command>`.
    pub fn shell(command: impl Into<OsString>) -> Self {
        Self::new("/bin/sh").arg("-c").arg(command)
    }

    /// A command as users give it: a single element runs with [`shell`](Self::shell),
    /// more run as argv. `None` for an empty command.
    pub fn from_argv(argv: &[String]) -> Option<Self> {
        match argv {
            [] => None,
            [one] => Some(Self::shell(one)),
            [program, args @ ..] => Some(Self::new(program).args(args)),
        }
    }

    /// Adds an argument.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Adds arguments.
    pub fn args(mut self, args: impl IntoIterator<Item = impl Into<OsString>>) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// The working directory.
    pub fn dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = dir.into();
        self
    }

    /// The child's whole environment (nothing of ours is inherited).
    pub fn env(mut self, vars: impl IntoIterator<Item = (impl Into<OsString>, impl Into<OsString>)>) -> Self {
        self.env = vars.into_iter().map(|(k, v)| (k.into(), v.into())).collect();
        self
    }

    /// Standard input.
    pub fn stdin(mut self, s: Stdio) -> Self {
        self.stdin = s;
        self
    }

    /// Standard output.
    pub fn stdout(mut self, s: Stdio) -> Self {
        self.stdout = s;
        self
    }

    /// Standard error.
    pub fn stderr(mut self, s: Stdio) -> Self {
        self.stderr = s;
        self
    }

    /// Puts all three streams on the terminal whose slave side is `slave` (see
    /// [`pty::open`](super::pty::open)) and makes it the session's controlling terminal.
    /// [`spawn`] closes our copy of `slave`, so that reads of the master end once the
    /// session's processes are gone.
    pub fn terminal(mut self, slave: OwnedFd) -> Self {
        self.terminal = Some(slave);
        self
    }

    /// Lets the child outlive us (no parent-death signal): for a watchdog that must
    /// act when we die.
    pub fn outlive_parent(mut self) -> Self {
        self.die_with_parent = false;
        self
    }

    /// The program, for messages.
    pub fn program(&self) -> &OsStr {
        &self.program
    }

    /// How the program reads in messages: `sh -c` for a shell command.
    fn display_name(&self) -> String {
        if self.program == "/bin/sh" && self.args.first().is_some_and(|a| a == "-c") {
            "sh -c".into()
        } else {
            self.program.to_string_lossy().into_owned()
        }
    }

    /// The steps the child runs before exec, in order.
    fn steps(&self) -> Vec<Step> {
        let mut steps = vec![Step::NewSession];
        if self.terminal.is_some() {
            steps.push(Step::ControllingTerminal);
        }
        if self.die_with_parent {
            steps.push(Step::DieWithParent { parent: rustix::process::getpid() });
        }
        steps
    }
}

/// One thing the child does between fork and exec (see the module docs). Each must be
/// async-signal-safe and must not allocate.
#[derive(Debug, Clone, Copy)]
enum Step {
    /// `setsid`: leader of a new session and process group.
    NewSession,
    /// `TIOCSCTTY` on stdin (by now the terminal's slave): the session's controlling
    /// terminal, so it gets `SIGHUP`, `SIGWINCH` and job control.
    ControllingTerminal,
    /// `PR_SET_PDEATHSIG(SIGKILL)`, then fails if `parent` is gone already (it died
    /// before the request took effect: nobody would kill us).
    DieWithParent { parent: Pid },
}

impl Step {
    fn run(self) -> io::Result<()> {
        match self {
            Step::NewSession => rustix::process::setsid().map(drop)?,
            Step::ControllingTerminal => rustix::process::ioctl_tiocsctty(rustix::stdio::stdin())?,
            Step::DieWithParent { parent } => {
                rustix::process::set_parent_process_death_signal(Some(Signal::KILL))?;
                if rustix::process::getppid() != Some(parent) {
                    return Err(io::Error::from(rustix::io::Errno::SRCH));
                }
            }
        }
        Ok(())
    }
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitInfo {
    /// Exit code, if it exited.
    pub code: Option<i32>,
    /// Signal, if it was killed by one.
    pub signal: Option<i32>,
}

impl ExitInfo {
    /// Nothing is known (the wait failed).
    pub const UNKNOWN: ExitInfo = ExitInfo { code: None, signal: None };
}

impl std::fmt::Display for ExitInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.code, self.signal) {
            (Some(c), _) => write!(f, "exit status {c}"),
            (None, Some(s)) => write!(f, "killed by signal {s}"),
            (None, None) => f.write_str("unknown exit status"),
        }
    }
}

/// A started session leader. Its pid is its session and process group id.
#[derive(Debug)]
pub struct Child {
    /// Pid of the leader.
    pub pid: u32,
    /// Our end of its stdin, if [`Stdio::Piped`].
    pub stdin: Option<OwnedFd>,
    /// Our end of its stdout, if [`Stdio::Piped`].
    pub stdout: Option<OwnedFd>,
    /// Our end of its stderr, if [`Stdio::Piped`].
    pub stderr: Option<OwnedFd>,
    /// Fires once the leader has exited and been reaped.
    pub exited: oneshot::Receiver<ExitInfo>,
}

/// Errors of [`spawn`].
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// The program could not be started (not found, not executable, bad directory, a
    /// step before exec failed, ...).
    #[error("cannot run `{program}` in {}: {source}", dir.display())]
    Start {
        /// The program (`sh -c` for a shell command).
        program: String,
        /// The working directory.
        dir: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// It started, but no thread could be started to reap it; it was killed.
    #[error("cannot start a thread to reap `{program}` (out of threads or memory?): {source}")]
    Reaper {
        /// The program.
        program: String,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
}

impl SpawnError {
    /// The OS error behind it.
    pub fn io_kind(&self) -> io::ErrorKind {
        match self {
            SpawnError::Start { source, .. } | SpawnError::Reaper { source, .. } => source.kind(),
        }
    }
}

impl From<SpawnError> for io::Error {
    fn from(e: SpawnError) -> Self {
        io::Error::new(e.io_kind(), e)
    }
}

/// Starts `spec` as the leader of a new session (see the module docs) and a reaper for
/// it.
pub fn spawn(spec: SpawnSpec) -> Result<Child, SpawnError> {
    let program = spec.display_name();
    let start_error = |source| SpawnError::Start { program: program.clone(), dir: spec.dir.clone(), source };
    let mut cmd = std::process::Command::new(&spec.program);
    cmd.args(&spec.args).current_dir(&spec.dir).env_clear().envs(spec.env.iter().map(|(k, v)| (k, v)));
    match &spec.terminal {
        Some(slave) => {
            let clone = || slave.try_clone().map_err(start_error);
            cmd.stdin(clone()?).stdout(clone()?).stderr(clone()?);
        }
        None => {
            cmd.stdin(spec.stdin).stdout(spec.stdout).stderr(spec.stderr);
        }
    }
    let steps = spec.steps();
    // SAFETY: the closure runs in the forked child before exec. It only iterates over a
    // list built before the fork and runs `Step::run`, whose every step is one or two
    // raw syscalls (setsid, ioctl, prctl, getppid via rustix): async-signal-safe, no
    // allocation (an error is a raw OS error code), no locks.
    unsafe {
        cmd.pre_exec(move || steps.iter().try_for_each(|s| s.run()));
    }
    let spawned = cmd.spawn();
    // Closes our copies of the terminal's slave (in `cmd` and the spec), so reads of
    // the master end (EIO) once the session's processes are gone.
    drop(cmd);
    drop(spec.terminal);
    let mut child = spawned.map_err(start_error)?;
    let pid = child.id();
    let (stdin, stdout, stderr) = (
        child.stdin.take().map(OwnedFd::from),
        child.stdout.take().map(OwnedFd::from),
        child.stderr.take().map(OwnedFd::from),
    );
    let exited = reaper::reap(child).map_err(|source| SpawnError::Reaper { program, source })?;
    Ok(Child { pid, stdin, stdout, stderr, exited })
}
