//! [`DockerTtyBroker`]: `deis run` sessions on a Docker engine (feature `docker`).
//!
//! - When a **running container of the unit** exists, the command is `docker exec`ed in
//!   it. Units are found by label: `deis.app=<app>` and `deis.type=<process type>`
//!   ([`LABEL_APP`], [`LABEL_TYPE`]); the first running match (by name) is used.
//! - Otherwise, for an image release, a **one-off container** is created from the
//!   release image (labels `deis.app`, `deis.type`, `deis.run=true`, name
//!   `<app>-run-<random>`), attached, started, waited for, and removed when the
//!   session ends (the engine's auto-remove would race the exit-code wait).
//! - A source release without a running container runs in a one-off container of the
//!   stack image ([`DockerTtyBroker::with_stack_image`]) with the build copied to
//!   [`APP_DIR`] first, as the Docker scheduler runs its units; without a stack image
//!   it can't be run here ([`TtyError::Unsupported`]).
//!
//! TTY and pipe modes; resize via the exec/container resize API. A TTY session opened
//! with a size starts with it: engines from API 1.42 take it at creation (`ConsoleSize`);
//! older ones only once the process runs, so the command waits behind a `/bin/sh`
//! prelude until its terminal has a size (at most about 5 s). Exit code via exec
//! inspect or container wait. End of stdin closes the write half of the hijacked
//! connection (pipe mode) or types `^D` (TTY mode). When a session is dropped early, a
//! one-off container is force-removed; an exec'd session is killed through the engine,
//! so it works wherever the engine runs: every exec gets a random marker in its
//! environment ([`SESSION_MARKER_VAR`], inherited by what it starts), and a second exec
//! in the same container kills every process carrying it ([`KILL_MARKED`]; it needs
//! `/bin/sh`, `tr` and `grep` in the image, as busybox and every distribution have).

use std::collections::HashMap;
use std::fmt;
use std::pin::Pin;

use async_trait::async_trait;
use bollard::Docker;
use bollard::container::LogOutput;
use bollard::exec::{StartExecOptions, StartExecResults};
use bollard::models::{ContainerCreateBody, ExecConfig, HostConfig, HostConfigLogConfig};
use bollard::query_parameters::{
    AttachContainerOptions, CreateContainerOptions, ListContainersOptions, RemoveContainerOptions,
    ResizeContainerTTYOptions, ResizeExecOptions, UploadToContainerOptions, WaitContainerOptions,
};
use deis_core::scheduler::Artifact;
use deis_core::tty::{
    CHANNEL_CAPACITY, ExitStatus, MAX_CHUNK, Session, SessionInput, SessionOutput, SessionSpec, TermSize, TtyBroker,
    TtyError,
};
use futures_util::StreamExt;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::exec::{env_list, initial_size, session_argv, status_of};
use crate::scheduler::docker::{APP_DIR, tar_of};

/// Label holding a unit container's app id.
pub const LABEL_APP: &str = "deis.app";
/// Label holding a unit container's process type.
pub const LABEL_TYPE: &str = "deis.type";
/// Label marking one-off `deis run` containers.
pub const LABEL_RUN: &str = "deis.run";
pub use super::exec::{KILL_MARKED, SESSION_MARKER_VAR};

/// What went wrong on the engine's side; reaches callers as [`TtyError::Backend`].
#[derive(Debug, thiserror::Error)]
pub enum DockerTtyError {
    /// An engine call failed.
    #[error("docker engine: {action}: {source}")]
    Engine {
        /// What we asked the engine to do.
        action: &'static str,
        /// The engine's (or the connection's) error.
        #[source]
        source: bollard::errors::Error,
    },
    /// The exec'd command ended, but the engine did not report its exit code.
    #[error("docker engine: exec {exec} ended without an exit code")]
    NoExitCode {
        /// The exec's id.
        exec: String,
    },
    /// The container wait ended without a status.
    #[error("docker engine: the wait for container {container} ended without a status")]
    NoWaitStatus {
        /// The container's id.
        container: String,
    },
    /// The engine started the exec detached, although attached was asked for.
    #[error("docker engine: exec {exec} was started detached; the session has no streams")]
    Detached {
        /// The exec's id.
        exec: String,
    },
}

impl From<DockerTtyError> for TtyError {
    fn from(e: DockerTtyError) -> Self {
        TtyError::Backend(Box::new(e))
    }
}

/// Maps an engine error of `action` to a [`TtyError`].
fn engine(action: &'static str) -> impl FnOnce(bollard::errors::Error) -> TtyError {
    move |source| DockerTtyError::Engine { action, source }.into()
}

/// `[rows, cols]`, how the engine's `ConsoleSize` fields are written.
fn console_size(size: TermSize) -> Vec<usize> {
    vec![usize::from(size.rows), usize::from(size.cols)]
}

/// A [`TtyBroker`] on a Docker engine. See the module docs.
#[derive(Clone)]
pub struct DockerTtyBroker {
    docker: Docker,
    confinement: DockerConfinement,
    stack_image: Option<String>,
}

/// How one-off containers and execs of sessions are confined. Always: every
/// capability dropped, `no-new-privileges`, not privileged, the memory and cpu limits
/// of the session's process type ([`SessionSpec::limits`]), the app's identity as the
/// user when the platform gave it one ([`SessionSpec::identity`]; otherwise the
/// image's `USER`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DockerConfinement {
    /// Most processes and threads in a one-off container (default 512).
    pub pids_limit: i64,
    /// Mount the image read-only in one-off containers, with a `tmpfs` on `/tmp`
    /// (default false: many images write next to their code). The `tmpfs` takes the
    /// mode of the image's `/tmp`: 1777 in most images, so any user may write there.
    pub read_only_root: bool,
    /// The network of one-off containers, as `docker run --network` names it: `none`
    /// (the default of a broker on its own), `bridge` (outbound access, nothing
    /// published), `host`, or a network's name. The brokers of the platform's
    /// schedulers give one-off sessions the network their units have, so a `deis run`
    /// reaches what the app reaches (its database, say).
    pub network: String,
}

impl Default for DockerConfinement {
    fn default() -> Self {
        Self { pids_limit: 512, read_only_root: false, network: "none".into() }
    }
}

impl DockerConfinement {
    /// One-off containers on `network` (see [`network`](Self::network)).
    pub fn with_network(mut self, network: impl Into<String>) -> Self {
        self.network = network.into();
        self
    }

    /// Mounts images read-only (see [`read_only_root`](Self::read_only_root)).
    pub fn with_read_only_root(mut self, read_only: bool) -> Self {
        self.read_only_root = read_only;
        self
    }

    /// The host settings of a one-off container for `spec`, over `base`.
    fn host_config(&self, spec: &SessionSpec, base: HostConfig) -> HostConfig {
        let limits = spec.limits;
        let memory = (limits.memory_bytes > 0).then(|| i64::try_from(limits.memory_bytes).unwrap_or(i64::MAX));
        HostConfig {
            memory,
            // No swap beyond the limit.
            memory_swap: memory,
            nano_cpus: (limits.cpu_millis > 0)
                .then(|| i64::try_from(limits.cpu_millis.saturating_mul(1_000_000)).unwrap_or(i64::MAX)),
            pids_limit: Some(self.pids_limit),
            cap_drop: Some(vec!["ALL".into()]),
            security_opt: Some(vec!["no-new-privileges".into()]),
            privileged: Some(false),
            readonly_rootfs: Some(self.read_only_root),
            // A tmpfs on /tmp (docker gives it the image's /tmp mode, 1777 in most).
            tmpfs: self
                .read_only_root
                .then(|| HashMap::from([("/tmp".to_string(), "rw,nosuid,nodev,size=64m".to_string())])),
            ..base
        }
    }
}

/// `uid:gid` of the app's identity, the user a session runs as.
fn session_user(spec: &SessionSpec) -> Option<String> {
    spec.identity.map(|id| format!("{}:{}", id.uid, id.gid))
}

impl fmt::Debug for DockerTtyBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DockerTtyBroker")
    }
}

/// What the session runs in.
enum Target {
    /// An exec `id` in the unit container `container`, its processes marked with the
    /// environment line `marker` (see [`KILL_MARKED`]).
    Exec { id: String, container: String, marker: String },
    /// A one-off container.
    Container { id: String },
}

impl DockerTtyBroker {
    /// A broker on `docker` (already connected).
    pub fn new(docker: Docker) -> Self {
        Self { docker, confinement: DockerConfinement::default(), stack_image: None }
    }

    /// The same broker running sessions of source builds with no running unit in a
    /// one-off container of `image` (the Docker scheduler's stack image), the build
    /// copied to [`APP_DIR`] and the working directory there.
    pub fn with_stack_image(mut self, image: impl Into<String>) -> Self {
        self.stack_image = Some(image.into());
        self
    }

    /// The same broker confining sessions as `confinement` says.
    pub fn with_confinement(mut self, confinement: DockerConfinement) -> Self {
        self.confinement = confinement;
        self
    }

    /// Connects to the engine at the unix socket `path` and negotiates the API version.
    pub async fn connect_unix(path: &str) -> Result<Self, TtyError> {
        let docker =
            Docker::connect_with_unix(path, 120, bollard::API_DEFAULT_VERSION).map_err(engine("connecting"))?;
        let docker = docker.negotiate_version().await.map_err(engine("negotiating the API version"))?;
        Ok(Self::new(docker))
    }

    /// The first running container labelled as a unit of `app`/`proc_type`.
    pub async fn unit_container(&self, app: &str, proc_type: &str) -> Result<Option<String>, TtyError> {
        let filters = HashMap::from([
            ("label".to_string(), vec![format!("{LABEL_APP}={app}"), format!("{LABEL_TYPE}={proc_type}")]),
            ("status".to_string(), vec!["running".to_string()]),
        ]);
        let opts = ListContainersOptions { all: false, filters: Some(filters), ..Default::default() };
        let mut list = self.docker.list_containers(Some(opts)).await.map_err(engine("listing unit containers"))?;
        list.retain(|c| c.labels.as_ref().is_none_or(|l| !l.contains_key(LABEL_RUN)));
        list.sort_by(|a, b| a.names.cmp(&b.names));
        Ok(list.into_iter().find_map(|c| c.id))
    }

    async fn resize(&self, target: &Target, size: TermSize) {
        let (h, w) = (i32::from(size.rows), i32::from(size.cols));
        let result = match target {
            Target::Exec { id, .. } => self.docker.resize_exec(id, ResizeExecOptions { h, w }).await,
            Target::Container { id } => self.docker.resize_container_tty(id, ResizeContainerTTYOptions { h, w }).await,
        };
        if let Err(e) = result {
            tracing::debug!(error = %e, "docker tty: resize failed");
        }
    }

    /// The exit status once the output ended.
    async fn exit_status(&self, target: &Target) -> Result<ExitStatus, TtyError> {
        match target {
            Target::Exec { id, .. } => {
                for _ in 0..100 {
                    let info = self.docker.inspect_exec(id).await.map_err(engine("inspecting the exec"))?;
                    if info.running != Some(true)
                        && let Some(code) = info.exit_code
                    {
                        return Ok(status_of(code));
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                Err(DockerTtyError::NoExitCode { exec: id.clone() }.into())
            }
            Target::Container { id } => {
                let mut wait = self.docker.wait_container(id, None::<WaitContainerOptions>);
                match wait.next().await {
                    Some(Ok(r)) => Ok(status_of(r.status_code)),
                    // bollard reports a non-zero exit as an error carrying the code.
                    Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => Ok(status_of(code)),
                    Some(Err(e)) => Err(engine("waiting for the container")(e)),
                    None => Err(DockerTtyError::NoWaitStatus { container: id.clone() }.into()),
                }
            }
        }
    }

    /// Ends what a dropped session left running.
    async fn kill(&self, target: &Target) {
        match target {
            Target::Container { id } => {
                let opts = RemoveContainerOptions { force: true, ..Default::default() };
                let _ = self.docker.remove_container(id, Some(opts)).await;
            }
            Target::Exec { container, marker, .. } => {
                if let Err(e) = self.kill_marked(container, marker).await {
                    tracing::warn!(%container, error = %e, "docker tty: cannot kill a dropped exec session's processes");
                }
            }
        }
    }

    /// Runs [`KILL_MARKED`] for `marker` in `container` and waits until it is done.
    async fn kill_marked(&self, container: &str, marker: &str) -> Result<(), TtyError> {
        let cmd = ["/bin/sh", "-c", KILL_MARKED, "deis-kill-session", marker].map(String::from).to_vec();
        let opts =
            ExecConfig { attach_stdout: Some(true), attach_stderr: Some(true), cmd: Some(cmd), ..Default::default() };
        let exec = self.docker.create_exec(container, opts).await.map_err(engine("creating the kill exec"))?;
        match self.docker.start_exec(&exec.id, None).await.map_err(engine("starting the kill exec"))? {
            // Done once its output ends.
            StartExecResults::Attached { mut output, .. } => while output.next().await.is_some() {},
            StartExecResults::Detached => return Err(DockerTtyError::Detached { exec: exec.id }.into()),
        }
        Ok(())
    }

    async fn start_exec(
        &self,
        container: &str,
        spec: &SessionSpec,
    ) -> Result<(Target, LogStream, Pin<Box<dyn AsyncWrite + Send>>), TtyError> {
        let marker = format!("{SESSION_MARKER_VAR}={}", deis_core::auth::random_hex(16));
        let mut env = env_list(spec);
        env.push(marker.clone());
        let opts = ExecConfig {
            attach_stdin: Some(true),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            tty: Some(spec.tty),
            // Honoured from API 1.42; older engines get the resize after the start.
            console_size: initial_size(spec).map(console_size),
            env: Some(env),
            cmd: Some(session_argv(spec)),
            // The unit's container is confined already; the exec gets no more rights.
            privileged: Some(false),
            user: session_user(spec),
            ..Default::default()
        };
        let exec = self.docker.create_exec(container, opts).await.map_err(engine("creating the exec"))?;
        let start = StartExecOptions { detach: false, tty: spec.tty, output_capacity: Some(MAX_CHUNK) };
        match self.docker.start_exec(&exec.id, Some(start)).await.map_err(engine("starting the exec"))? {
            StartExecResults::Attached { output, input } => {
                Ok((Target::Exec { id: exec.id, container: container.to_string(), marker }, output, input))
            }
            StartExecResults::Detached => Err(DockerTtyError::Detached { exec: exec.id }.into()),
        }
    }

    /// A one-off container of `image` for `spec`; `source` (a build directory) is copied
    /// to [`APP_DIR`] before it starts, and is its working directory.
    async fn start_one_off(
        &self,
        image: &str,
        source: Option<&std::path::Path>,
        spec: &SessionSpec,
    ) -> Result<(Target, LogStream, Pin<Box<dyn AsyncWrite + Send>>), TtyError> {
        let labels = HashMap::from([
            (LABEL_APP.to_string(), spec.app.to_string()),
            (LABEL_TYPE.to_string(), spec.proc_type.to_string()),
            (LABEL_RUN.to_string(), "true".to_string()),
        ]);
        let body = ContainerCreateBody {
            image: Some(image.to_string()),
            cmd: Some(session_argv(spec)),
            env: Some(env_list(spec)),
            tty: Some(spec.tty),
            open_stdin: Some(true),
            stdin_once: Some(true),
            attach_stdin: Some(true),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            labels: Some(labels),
            working_dir: source.map(|_| APP_DIR.to_string()),
            user: session_user(spec),
            // An init as PID 1, so the command gets signals like anywhere else (a PID 1
            // ignores the ones it has no handler for, even SIGKILL from inside).
            host_config: Some(self.confinement.host_config(
                spec,
                HostConfig {
                    network_mode: Some(self.confinement.network.clone()),
                    init: Some(true),
                    // Honoured from API 1.42; older engines get the resize after the start.
                    console_size: initial_size(spec).map(console_size),
                    // The session is the output's only reader (attached before the start):
                    // a log driver would copy every line of it (json-file: one JSON record a
                    // line, slower than the session itself and unbounded on disk).
                    log_config: Some(HostConfigLogConfig { typ: Some("none".into()), config: None }),
                    ..Default::default()
                },
            )),
            ..Default::default()
        };
        let name = format!("{}-run-{}", spec.app, deis_core::auth::random_hex(6));
        let opts = CreateContainerOptions { name: Some(name), ..Default::default() };
        let created =
            self.docker.create_container(Some(opts), body).await.map_err(engine("creating the one-off container"))?;
        let target = Target::Container { id: created.id.clone() };
        let attach = AttachContainerOptions {
            stream: true,
            stdin: true,
            stdout: true,
            stderr: true,
            logs: false,
            ..Default::default()
        };
        let result = async {
            if let Some(dir) = source {
                self.copy_build_in(&created.id, dir).await?;
            }
            let attached = self
                .docker
                .attach_container(&created.id, Some(attach))
                .await
                .map_err(engine("attaching to the one-off container"))?;
            self.docker.start_container(&created.id, None).await.map_err(engine("starting the one-off container"))?;
            // The engine refuses to size a container that is not running: only now can
            // engines before API 1.42 (which ignore `console_size`) get the size, while
            // the command waits for it (`session_argv`).
            if let Some(size) = initial_size(spec) {
                self.resize(&Target::Container { id: created.id.clone() }, size).await;
            }
            Ok::<_, TtyError>(attached)
        }
        .await;
        match result {
            Ok(attached) => Ok((target, attached.output, attached.input)),
            Err(e) => {
                self.kill(&target).await;
                Err(e)
            }
        }
    }
}

impl DockerTtyBroker {
    /// Copies the build at `dir` to [`APP_DIR`] in the (created, not started) container `id`.
    async fn copy_build_in(&self, id: &str, dir: &std::path::Path) -> Result<(), TtyError> {
        let dir = dir.to_path_buf();
        let tar = tokio::task::spawn_blocking(move || tar_of(&dir))
            .await
            .map_err(|e| TtyError::Backend(Box::new(e)))?
            .map_err(|e| TtyError::Invalid(format!("cannot pack the app's build for deis run: {e}")))?;
        let opts = UploadToContainerOptions { path: "/".into(), ..Default::default() };
        self.docker
            .upload_to_container(id, Some(opts), bollard::body_full(tar.into()))
            .await
            .map_err(engine("copying the build into the one-off container"))?;
        Ok(())
    }
}

type LogStream = Pin<Box<dyn futures_util::Stream<Item = Result<LogOutput, bollard::errors::Error>> + Send>>;

#[async_trait]
impl TtyBroker for DockerTtyBroker {
    async fn open(&self, spec: SessionSpec) -> Result<Session, TtyError> {
        if spec.command.is_empty() {
            return Err(TtyError::Invalid("empty command".into()));
        }
        let running = self.unit_container(&spec.app, &spec.proc_type).await?;
        let (target, mut output, mut input) = match (&running, &spec.artifact) {
            (Some(container), _) => self.start_exec(container, &spec).await?,
            (None, Artifact::Image { reference }) => self.start_one_off(reference, None, &spec).await?,
            (None, Artifact::Source { dir }) if self.stack_image.is_some() => {
                let stack = self.stack_image.as_deref().unwrap_or_default();
                self.start_one_off(stack, Some(dir), &spec).await?
            }
            (None, Artifact::Source { .. }) => {
                return Err(TtyError::Unsupported(format!(
                    "app {} has no running {} container to exec into, and a source build can't start a one-off \
                     container: scale it up first",
                    spec.app, spec.proc_type
                )));
            }
        };
        if let (Target::Exec { .. }, Some(size)) = (&target, initial_size(&spec)) {
            // The engine holds an exec resize until the process runs; the command waits
            // for it (`session_argv`).
            self.resize(&target, size).await;
        }

        let (in_tx, mut in_rx) = mpsc::channel::<SessionInput>(CHANNEL_CAPACITY);
        let (out_tx, out_rx) = mpsc::channel::<SessionOutput>(CHANNEL_CAPACITY);
        let broker = self.clone();
        let tty = spec.tty;
        let target = std::sync::Arc::new(target);
        let input_target = target.clone();
        let input_broker = self.clone();
        let writer = tokio::spawn(async move {
            while let Some(msg) = in_rx.recv().await {
                let ok = match msg {
                    SessionInput::Stdin(b) => input.write_all(&b).await.is_ok() && input.flush().await.is_ok(),
                    SessionInput::Eof if tty => input.write_all(&[4]).await.is_ok() && input.flush().await.is_ok(),
                    SessionInput::Eof => {
                        let _ = input.shutdown().await;
                        false
                    }
                    SessionInput::Resize(size) => {
                        input_broker.resize(&input_target, size).await;
                        true
                    }
                };
                if !ok {
                    break;
                }
            }
            // Keep the write half open (dropping it would close stdin) until the end.
            std::future::pending::<()>().await;
            drop(input);
        });
        tokio::spawn(async move {
            let mut dropped = false;
            'read: loop {
                let item = tokio::select! {
                    item = output.next() => item,
                    () = out_tx.closed() => {
                        dropped = true;
                        break 'read;
                    }
                };
                let Some(item) = item else { break };
                let (bytes, is_err) = match item {
                    Ok(LogOutput::StdOut { message } | LogOutput::Console { message }) => (message, false),
                    Ok(LogOutput::StdErr { message }) => (message, !tty),
                    Ok(LogOutput::StdIn { .. }) => continue,
                    Err(e) => {
                        tracing::debug!(error = %e, "docker tty: output stream failed");
                        break;
                    }
                };
                for chunk in bytes.chunks(MAX_CHUNK) {
                    let msg = if is_err {
                        SessionOutput::Stderr(chunk.to_vec())
                    } else {
                        SessionOutput::Stdout(chunk.to_vec())
                    };
                    if out_tx.send(msg).await.is_err() {
                        dropped = true;
                        break 'read;
                    }
                }
            }
            writer.abort();
            if dropped {
                broker.kill(&target).await;
                return;
            }
            let status = match broker.exit_status(&target).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "docker tty: no exit status");
                    ExitStatus::Code(255)
                }
            };
            if let Target::Container { .. } = &*target {
                broker.kill(&target).await;
            }
            let _ = out_tx.send(SessionOutput::Exit(status)).await;
        });
        Ok(Session { input: in_tx, output: out_rx })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};
    use std::time::Duration;

    fn alive(pid: u32) -> bool {
        deis_core::sys::procfs::stat(pid).is_some_and(|s| s.is_live())
    }

    /// Starts `sh -c script` in a session of its own with `env`; returns the pids it prints.
    fn start(script: &str, env: &[(&str, &str)]) -> Vec<u32> {
        let out = Command::new("setsid")
            .args(["sh", "-c", script])
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().split_whitespace().map(|p| p.parse().unwrap()).collect()
    }

    /// The script the broker runs inside a container, run here on this machine's real
    /// processes: it kills exactly the marked ones.
    #[test]
    fn kill_marked_kills_exactly_the_marked_processes() {
        let marker = format!("{SESSION_MARKER_VAR}={}", deis_core::auth::random_hex(8));
        let (var, value) = marker.split_once('=').unwrap();
        // The marker in the middle of the environment, as an exec's is.
        let marked = start(
            "sleep 600 >/dev/null & echo $!; sleep 600 >/dev/null & echo $!",
            &[("A", "1"), (var, value), ("Z", "2")],
        );
        let similar = start("sleep 600 >/dev/null & echo $!", &[(var, &format!("{value}0"))]);
        assert_eq!((marked.len(), similar.len()), (2, 1));
        let status = Command::new("sh").args(["-c", KILL_MARKED, "deis-kill-session", &marker]).status().unwrap();
        assert!(status.success());
        deis_test_support::wait_for(Duration::from_secs(10), "the marked processes to be killed", || {
            Some(()).filter(|()| !marked.iter().any(|&p| alive(p)))
        });
        assert!(alive(similar[0]), "a process with another marker was killed");
        let _ = Command::new("kill").args(["-KILL", &similar[0].to_string()]).status();
    }
}
