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
//! and exec (`pre_exec`; see [`prexec`](super::prexec) for the order): new session,
//! controlling terminal, parent-death signal, and the isolation a caller asks for with
//! a builder method: a cgroup ([`SpawnSpec::cgroup`]), a mount namespace with a
//! private `/tmp` ([`SpawnSpec::private_tmp`]) and a read-only view of the build
//! ([`SpawnSpec::app_view`]), dropped capabilities ([`SpawnSpec::drop_capabilities`]),
//! an identity ([`SpawnSpec::identity`]) and `no_new_privs`
//! ([`SpawnSpec::no_new_privs`]). Each step is a few raw syscalls: async-signal-safe,
//! no allocation, no locks (the list, its paths and descriptors are made before the
//! fork). Callers that ask for none of it get what they always got.

use std::collections::BTreeMap;
use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};
use tokio::sync::oneshot;

use super::cgroup::UnitCgroup;
use super::prexec::{MapLine, Step, locked_flags};
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
    /// `cgroup.procs` of each cgroup to join.
    cgroups: Vec<PathBuf>,
    identity: Option<(u32, u32)>,
    no_new_privs: bool,
    drop_capabilities: bool,
    private_tmp: bool,
    view: Option<AppView>,
}

/// What [`SpawnSpec::app_view`] shows: `build` read-only, in place, with the rest of
/// `hidden` covered.
#[derive(Debug, Clone)]
struct AppView {
    hidden: PathBuf,
    build: PathBuf,
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
            cgroups: vec![],
            identity: None,
            no_new_privs: false,
            drop_capabilities: false,
            private_tmp: false,
            view: None,
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

    /// Sets one variable of the child's environment (replacing it if set).
    pub fn var(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        let (key, value) = (key.into(), value.into());
        self.env.retain(|(k, _)| *k != key);
        self.env.push((key, value));
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

    /// Joins `cgroup` before exec: the child and everything it starts are limited by
    /// it and can't leave it.
    pub fn cgroup(mut self, cgroup: &UnitCgroup) -> Self {
        self.cgroups = cgroup.dirs().iter().map(|d| d.join("cgroup.procs")).collect();
        self
    }

    /// Runs as `uid` and `gid`, without supplementary groups (needs root).
    pub fn identity(mut self, uid: u32, gid: u32) -> Self {
        self.identity = Some((uid, gid));
        self
    }

    /// Sets `no_new_privs`: no setuid program or file capability gives the child or its
    /// descendants more rights than it has.
    pub fn no_new_privs(mut self) -> Self {
        self.no_new_privs = true;
        self
    }

    /// Drops every capability: the bounding set (where we may), then the effective,
    /// permitted, inheritable and ambient sets.
    pub fn drop_capabilities(mut self) -> Self {
        self.drop_capabilities = true;
        self
    }

    /// A mount namespace of its own with an empty `tmpfs` on `/tmp`, so units don't
    /// share (or see) each other's temporary files. Without root it needs user
    /// namespaces (see [`namespaces_available`]).
    pub fn private_tmp(mut self) -> Self {
        self.private_tmp = true;
        self
    }

    /// In a mount namespace of its own, covers `hidden` (the platform's data
    /// directory) with an empty `tmpfs` (mode 0711) in which only `build` shows, at its
    /// usual path and read-only; the child starts in it. `build` outside `hidden` is
    /// just made read-only. See [`private_tmp`](Self::private_tmp) for what it needs.
    pub fn app_view(mut self, hidden: impl Into<PathBuf>, build: impl Into<PathBuf>) -> Self {
        self.view = Some(AppView { hidden: hidden.into(), build: build.into() });
        self
    }

    /// Whether the child gets a mount namespace.
    fn needs_mount_namespace(&self) -> bool {
        self.private_tmp || self.view.is_some()
    }

    /// The steps the child runs before exec, in order (see [`prexec`](super::prexec)),
    /// and the descriptors they use, which must stay open until the fork.
    fn steps(&self) -> io::Result<(Vec<Step>, Vec<OwnedFd>)> {
        let mut steps = vec![Step::NewSession];
        let mut keep = vec![];
        if self.terminal.is_some() {
            steps.push(Step::ControllingTerminal);
        }
        for procs in &self.cgroups {
            let fd = rustix::fs::open(procs, OFlags::WRONLY | OFlags::CLOEXEC, Mode::empty()).map_err(|e| {
                io::Error::new(io::Error::from(e).kind(), format!("cannot join the cgroup {}: {e}", procs.display()))
            })?;
            steps.push(Step::JoinCgroup { procs: fd });
        }
        if self.needs_mount_namespace() {
            let (uid, gid) = (rustix::process::geteuid(), rustix::process::getegid());
            steps.push(if uid.is_root() {
                Step::NewMountNamespace
            } else {
                Step::NewUserNamespace { uid: MapLine::identity(uid.as_raw()), gid: MapLine::identity(gid.as_raw()) }
            });
            steps.push(Step::PrivateMounts);
            self.mount_steps(&mut steps, &mut keep)?;
        }
        if self.drop_capabilities {
            steps.push(Step::DropBoundingSet);
        }
        if let Some((uid, gid)) = self.identity {
            steps.push(Step::Identity { uid, gid });
        }
        if self.no_new_privs {
            steps.push(Step::NoNewPrivs);
        }
        if self.drop_capabilities {
            steps.push(Step::ClearCapabilities);
        }
        // Last: changing credentials clears the parent-death signal.
        if self.die_with_parent {
            steps.push(Step::DieWithParent { parent: rustix::process::getpid() });
        }
        Ok((steps, keep))
    }
}

impl SpawnSpec {
    /// The mounts of the child's namespace: a fresh `/tmp`, the data directory covered,
    /// and the working directory shown again where either covered it (read-only with
    /// an [`app_view`](Self::app_view)), then entered again by path.
    fn mount_steps(&self, steps: &mut Vec<Step>, keep: &mut Vec<OwnedFd>) -> io::Result<()> {
        let tmp = Path::new("/tmp");
        let under = |dir: &Path, base: &Path| dir.strip_prefix(base).is_ok() && dir != base;
        let shown = match &self.view {
            Some(view) => Some((&view.build, true)),
            // Only a working directory below the fresh `/tmp` needs showing again.
            None if self.private_tmp && under(&self.dir, tmp) => Some((&self.dir, false)),
            None => None,
        };
        // The directory to show again, opened before the fork (so a missing one is an
        // error here) and again in the new namespace (a bind mount's source must be in
        // the caller's namespace) onto the same descriptor, before anything covers it.
        let mut bind = None;
        if let Some((build, read_only)) = shown {
            let dir = rustix::fs::open(build, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
                .map_err(|e| {
                    io::Error::new(io::Error::from(e).kind(), format!("cannot open {}: {e}", build.display()))
                })?;
            let source = c_path(Path::new(&format!("/proc/self/fd/{}", dir.as_raw_fd())))?;
            let flags = read_only.then(|| locked_flags(&dir));
            let target = c_path(build)?;
            steps.push(Step::Reopen { path: target.clone(), slot: dir.as_raw_fd() });
            keep.push(dir);
            bind = Some(Step::Bind { source, target, read_only: flags });
        }
        if self.private_tmp {
            steps.push(Step::Tmpfs { path: c_path(tmp)?, options: c"mode=1777".to_owned() });
        }
        if let Some(view) = &self.view {
            if self.private_tmp && under(&view.hidden, tmp) {
                mkdir_steps(steps, tmp, &view.hidden)?;
            }
            if under(&view.build, &view.hidden) {
                steps.push(Step::Tmpfs { path: c_path(&view.hidden)?, options: c"mode=0711".to_owned() });
                mkdir_steps(steps, &view.hidden, &view.build)?;
            } else if self.private_tmp && under(&view.build, tmp) {
                mkdir_steps(steps, tmp, &view.build)?;
            }
        } else if shown.is_some() {
            mkdir_steps(steps, tmp, &self.dir)?;
        }
        if let (Some(bind), Some((build, _))) = (bind, shown) {
            steps.push(bind);
            steps.push(Step::Chdir { path: c_path(build)? });
        }
        Ok(())
    }
}

/// `mkdir` steps for each directory from below `base` down to `dir`.
fn mkdir_steps(steps: &mut Vec<Step>, base: &Path, dir: &Path) -> io::Result<()> {
    let mut path = base.to_path_buf();
    for part in dir.strip_prefix(base).unwrap_or(Path::new("")).components() {
        path.push(part);
        steps.push(Step::Mkdir { path: c_path(&path)?, mode: 0o711 });
    }
    Ok(())
}

/// A path as a C string; a NUL byte in it is an error.
fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, format!("{} contains a NUL byte", path.display())))
}

/// Whether a child may get a mount namespace: always as root; otherwise only where the
/// kernel lets unprivileged users make user namespaces. Tried once, with a real child.
pub fn namespaces_available() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        let tried = (|| -> io::Result<std::process::ExitStatus> {
            let (steps, _keep) = SpawnSpec::new("/bin/true").private_tmp().steps()?;
            let mut cmd = std::process::Command::new("/bin/true");
            cmd.env_clear().stdin(std::process::Stdio::null()).stdout(std::process::Stdio::null());
            // SAFETY: as in `spawn`: the steps are async-signal-safe syscalls on data
            // prepared before the fork.
            unsafe {
                cmd.pre_exec(move || steps.iter().try_for_each(|s| s.run()));
            }
            cmd.status()
        })();
        match tried {
            Ok(status) => status.success(),
            Err(e) => {
                tracing::debug!(error = %e, "mount namespaces are not available to us");
                false
            }
        }
    })
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
    let (steps, keep_open) = spec.steps().map_err(start_error)?;
    // SAFETY: the closure runs in the forked child before exec. It only iterates over a
    // list built before the fork and runs `Step::run`, whose every step is a few raw
    // syscalls (setsid, ioctl, prctl, write, unshare, mount, mkdir, chdir, setres*id,
    // capset via rustix) on paths and descriptors prepared beforehand: async-signal-safe,
    // no allocation (an error is a raw OS error code), no locks.
    unsafe {
        cmd.pre_exec(move || steps.iter().try_for_each(|s| s.run()));
    }
    let spawned = cmd.spawn();
    // The child has its copies (or failed): ours close now.
    drop(keep_open);
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
