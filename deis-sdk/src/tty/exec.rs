//! What the engines' `deis run` backends (Docker exec, Kubernetes exec) share: the
//! argv of a session, its environment, how an exit code reads, and how a dropped
//! session's processes are found and killed inside a container.

use deis_core::tty::{ExitStatus, SessionSpec, TermSize};

/// Variable in the environment of an exec'd session (and of what it starts) whose
/// random value lets [`KILL_MARKED`] find its processes inside the container.
pub const SESSION_MARKER_VAR: &str = "DEIS_SESSION";

/// Shell script run inside a container to end an exec'd session: `SIGKILL` to every
/// process (and the group it leads) whose environment holds the line `$1`
/// (`DEIS_SESSION=<marker>`). PID 1 (the container's init) is never touched. The
/// environment is NUL-separated, hence `tr` before an exact, fixed-string `grep`.
pub const KILL_MARKED: &str = r#"for d in /proc/[0-9]*; do
  p=${d#/proc/}
  [ "$p" -gt 1 ] && [ "$p" != "$$" ] || continue
  if tr '\0' '\n' 2>/dev/null <"$d/environ" | grep -qxF -e "$1"; then
    kill -KILL -- "-$p" 2>/dev/null
    kill -KILL "$p" 2>/dev/null
  fi
done
exit 0"#;

/// Shell prelude of TTY sessions opened with a size: wait (at most about 5 s) until the
/// terminal has a non-zero size, then exec the command. The test is on what `stty size`
/// prints, not on its status: busybox's `stty size` exits 0 on a 0x0 terminal (printing
/// only "stty: standard input" to stderr), and coreutils' prints "0 0".
pub(crate) const WAIT_FOR_SIZE: &str = "command -v stty >/dev/null 2>&1 || exec \"$@\"; n=0; \
    while [ $n -lt 500 ]; do case \"$(stty size 2>/dev/null)\" in [1-9]*\" \"[1-9]*) break;; esac; \
    n=$((n+1)); sleep 0.01; done; exec \"$@\"";

/// The argv to run: one element means `sh -c <it>`.
pub(crate) fn argv(command: &[String]) -> Vec<String> {
    match command {
        [one] => vec!["/bin/sh".into(), "-c".into(), one.clone()],
        many => many.to_vec(),
    }
}

/// Docker reports only a code; 128 + N (N a signal number) is how a shell or an init
/// reports death by signal N, so it is read as such (its [`ExitStatus::code`] is the
/// same number either way).
pub(crate) fn status_of(code: i64) -> ExitStatus {
    match i32::try_from(code) {
        Ok(c @ 129..=159) => ExitStatus::Signal(c - 128),
        Ok(c) => ExitStatus::Code(c),
        Err(_) => ExitStatus::Code(255),
    }
}

/// The terminal size the session starts with: `spec.size` if it has a terminal and the
/// size is not empty.
pub(crate) fn initial_size(spec: &SessionSpec) -> Option<TermSize> {
    spec.size.filter(|s| spec.tty && s.rows > 0 && s.cols > 0)
}

/// The argv of a session: [`argv`], behind the [`WAIT_FOR_SIZE`] prelude when it starts
/// with a size.
///
/// Engines before API 1.42 ignore the initial console size of a container or an exec,
/// and can only size its terminal once the process runs, which races the command's
/// first look at it (`stty size` printing nothing, a full-screen program drawing at
/// 0x0). The prelude needs `/bin/sh`, as a single-string command does anyway.
pub(crate) fn session_argv(spec: &SessionSpec) -> Vec<String> {
    let mut cmd = argv(&spec.command);
    if initial_size(spec).is_some() {
        let mut wrapped = vec!["/bin/sh".to_string(), "-c".into(), WAIT_FOR_SIZE.into(), "sh".into()];
        wrapped.append(&mut cmd);
        cmd = wrapped;
    }
    cmd
}

/// The session's environment as `K=V` lines (with a `TERM` for terminals).
pub(crate) fn env_list(spec: &SessionSpec) -> Vec<String> {
    let mut env: Vec<String> = spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    if spec.tty && !spec.env.contains_key("TERM") {
        env.push("TERM=xterm-256color".into());
    }
    env
}
