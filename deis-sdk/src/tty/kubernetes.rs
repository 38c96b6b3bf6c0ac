//! [`KubernetesTtyBroker`] (preview, feature `kubernetes`): `deis run` sessions in a
//! unit pod, through the pods' `exec` subresource (WebSocket, `v5.channel.k8s.io` or
//! `v4.channel.k8s.io`).
//!
//! - The session runs in the first running pod (by name) of the app's namespace with
//!   the session's process type (labels `deis.io/app`, `deis.io/type`); without one it
//!   is refused ([`TtyError::Unsupported`]): scale the type up first.
//! - The exec API takes no environment, so the command runs behind `env K=V ...` (the
//!   image needs `env`, as busybox and every distribution have), with a random marker
//!   ([`SESSION_MARKER_VAR`](super::exec::SESSION_MARKER_VAR)) so that a dropped session's
//!   processes are killed by a second exec ([`KILL_MARKED`](super::exec::KILL_MARKED)):
//!   the API server does not kill them when the connection ends.
//! - TTY sessions get their size through the resize channel; one opened with a size
//!   waits (at most about 5 s) until its terminal has it, as with Docker. End of stdin
//!   half-closes stdin (v5) or types `^D` (TTY); the exit status comes from the status
//!   channel (`NonZeroExitCode`, 128 + N read as signal N).

use std::fmt;

use async_trait::async_trait;
use deis_core::tty::{
    CHANNEL_CAPACITY, ExitStatus, MAX_CHUNK, Session, SessionInput, SessionOutput, SessionSpec, TtyBroker, TtyError,
};
use futures_util::SinkExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use kube::api::{Api, AttachParams, ListParams, TerminalSize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::exec::{KILL_MARKED, SESSION_MARKER_VAR, env_list, initial_size, session_argv, status_of};
use crate::scheduler::kubernetes::{CONTAINER, LABEL_APP, LABEL_TYPE, namespace_of};

fn backend(what: &str, e: impl std::error::Error + Send + Sync + 'static) -> TtyError {
    TtyError::Backend(format!("kubernetes: {what}: {e}").into())
}

/// A [`TtyBroker`] on a Kubernetes cluster. See the module docs.
#[derive(Clone)]
pub struct KubernetesTtyBroker {
    client: kube::Client,
}

impl fmt::Debug for KubernetesTtyBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KubernetesTtyBroker")
    }
}

/// The exit status in an exec's final `Status`.
fn exit_of(status: Option<Status>) -> ExitStatus {
    let Some(s) = status else { return ExitStatus::Code(255) };
    if s.status.as_deref() == Some("Success") {
        return ExitStatus::Code(0);
    }
    let code = s
        .details
        .iter()
        .flat_map(|d| d.causes.iter().flatten())
        .find(|c| c.reason.as_deref() == Some("ExitCode"))
        .and_then(|c| c.message.as_deref()?.parse::<i64>().ok());
    code.map_or(ExitStatus::Code(255), status_of)
}

async fn pump(
    mut reader: impl AsyncRead + Unpin,
    out: mpsc::Sender<SessionOutput>,
    wrap: fn(Vec<u8>) -> SessionOutput,
) -> bool {
    let mut buf = vec![0u8; MAX_CHUNK];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => return true,
            Ok(n) => {
                if out.send(wrap(buf[..n].to_vec())).await.is_err() {
                    return false;
                }
            }
        }
    }
}

impl KubernetesTtyBroker {
    /// A broker on the cluster of `client`.
    pub fn new(client: kube::Client) -> Self {
        Self { client }
    }

    /// The first running pod of `app`'s process type `proc_type`.
    pub async fn unit_pod(&self, app: &str, proc_type: &str) -> Result<Option<String>, TtyError> {
        let api: Api<Pod> = Api::namespaced(
            self.client.clone(),
            &namespace_of(&deis_core::model::AppName::new(app).map_err(|e| TtyError::Invalid(e.to_string()))?),
        );
        let params = ListParams::default().labels(&format!("{LABEL_APP}={app},{LABEL_TYPE}={proc_type}"));
        let pods = api.list(&params).await.map_err(|e| backend("listing unit pods", e))?;
        let mut running: Vec<String> = pods
            .items
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .filter_map(|p| p.metadata.name.clone())
            .collect();
        running.sort();
        Ok(running.into_iter().next())
    }
}

/// Kills what a dropped session left in `pod`: every process carrying `marker`.
async fn kill_marked(api: &Api<Pod>, pod: &str, marker: &str) {
    let cmd = ["/bin/sh", "-c", KILL_MARKED, "deis-kill-session", marker];
    let params = AttachParams::default().container(CONTAINER).stdin(false).stdout(true).stderr(true);
    match api.exec(pod, cmd, &params).await {
        Ok(mut p) => {
            if let Some(status) = p.take_status() {
                let _ = status.await;
            }
        }
        Err(e) => tracing::warn!(%pod, error = %e, "kubernetes tty: cannot kill a dropped session's processes"),
    }
}

#[async_trait]
impl TtyBroker for KubernetesTtyBroker {
    async fn open(&self, spec: SessionSpec) -> Result<Session, TtyError> {
        if spec.command.is_empty() {
            return Err(TtyError::Invalid("empty command".into()));
        }
        let Some(pod) = self.unit_pod(&spec.app, &spec.proc_type).await? else {
            return Err(TtyError::Unsupported(format!(
                "no running {} unit of {} to run the command in: scale it up (deis ps:scale {}=1) and try again",
                spec.proc_type, spec.app, spec.proc_type
            )));
        };
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &namespace_of(&spec.app));
        let marker = format!("{SESSION_MARKER_VAR}={}", deis_core::auth::random_hex(16));
        let mut argv = vec!["env".to_string()];
        argv.extend(env_list(&spec));
        argv.push(marker.clone());
        argv.extend(session_argv(&spec));
        let params = AttachParams::default()
            .container(CONTAINER)
            .stdin(true)
            .stdout(true)
            .stderr(!spec.tty)
            .tty(spec.tty)
            .max_stdin_buf_size(MAX_CHUNK)
            .max_stdout_buf_size(MAX_CHUNK)
            .max_stderr_buf_size(MAX_CHUNK);
        let mut process = api.exec(&pod, argv, &params).await.map_err(|e| backend("exec", e))?;
        let mut resize = process.terminal_size();
        if let (Some(size), Some(tx)) = (initial_size(&spec), resize.as_mut()) {
            let _ = tx.send(TerminalSize { width: size.cols, height: size.rows }).await;
        }
        let mut stdin = process.stdin();
        let stdout = process.stdout();
        let stderr = process.stderr();
        let status = process.take_status();
        let (in_tx, mut in_rx) = mpsc::channel::<SessionInput>(CHANNEL_CAPACITY);
        let (out_tx, out_rx) = mpsc::channel::<SessionOutput>(CHANNEL_CAPACITY);
        let tty = spec.tty;
        tokio::spawn(async move {
            while let Some(input) = in_rx.recv().await {
                match input {
                    SessionInput::Stdin(bytes) => {
                        let Some(w) = stdin.as_mut() else { continue };
                        if w.write_all(&bytes).await.is_err() {
                            break;
                        }
                    }
                    SessionInput::Eof if tty => {
                        if let Some(w) = stdin.as_mut() {
                            let _ = w.write_all(b"\x04").await;
                        }
                    }
                    // Dropping the writer half-closes stdin (v5).
                    SessionInput::Eof => stdin = None,
                    SessionInput::Resize(size) => {
                        if let Some(tx) = resize.as_mut() {
                            let _ = tx.send(TerminalSize { width: size.cols, height: size.rows }).await;
                        }
                    }
                }
            }
        });
        tokio::spawn(async move {
            let out = out_tx.clone();
            let err = out_tx.clone();
            let outputs = async {
                let a = async {
                    match stdout {
                        Some(r) => pump(r, out, SessionOutput::Stdout).await,
                        None => true,
                    }
                };
                let b = async {
                    match stderr {
                        Some(r) => pump(r, err, SessionOutput::Stderr).await,
                        None => true,
                    }
                };
                let (a, b) = tokio::join!(a, b);
                a && b
            };
            let watch = out_tx.clone();
            let read_all = tokio::select! {
                all = outputs => all,
                // The caller dropped the session while the command is quiet.
                () = watch.closed() => false,
            };
            let exit = match status {
                Some(s) if read_all => exit_of(s.await),
                _ => ExitStatus::Code(255),
            };
            if !read_all || out_tx.send(SessionOutput::Exit(exit)).await.is_err() {
                // The caller went away before the end: kill what runs.
                kill_marked(&api, &pod, &marker).await;
            }
            drop(process);
        });
        Ok(Session { input: in_tx, output: out_rx })
    }
}
