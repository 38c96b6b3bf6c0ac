//! [`KubernetesTtyBroker`] (preview, feature `kubernetes`): `deis run` sessions in a
//! unit pod, through the pods' `exec` subresource (WebSocket, `v5.channel.k8s.io` or
//! `v4.channel.k8s.io`).
//!
//! - The session runs in the first running pod (by name) of the app's namespace with
//!   the session's process type (labels `deis.io/app`, `deis.io/type`); without one it
//!   is refused ([`TtyError::Unsupported`]): scale the type up first.
//! - The exec API takes no environment, so the command runs behind `env K=V ...` (the
//!   image needs `env`, as busybox and every distribution have), with a random marker
//!   ([`SESSION_MARKER_VAR`]) so that a dropped session's processes are killed by a
//!   second exec ([`KILL_MARKED`]): the API server does not kill them when the
//!   connection ends.
//! - The channel protocol is spoken here ([`deis_core::tty::channel`]) over kube's
//!   WebSocket connection, not through kube's `AttachedProcess`: one writer sends the
//!   session's input in the order it came (a resize before the keystrokes that follow
//!   it; kube's loop picks among ready channels at random), and the status frame is
//!   read in its turn after the output.
//! - TTY sessions get their size through the resize channel; one opened with a size
//!   waits (at most about 5 s) until its terminal has it, as with Docker. End of stdin
//!   half-closes stdin (v5) or types `^D` (TTY); the exit status comes from the status
//!   channel (`NonZeroExitCode`, 128 + N read as signal N).

use std::fmt;

use async_trait::async_trait;
use deis_core::tty::channel::{Frame, Protocol, RemoteStatus, STDIN, decode, encode, parse_status};
use deis_core::tty::{
    CHANNEL_CAPACITY, ExitStatus, MAX_CHUNK, Session, SessionInput, SessionOutput, SessionSpec, TtyBroker, TtyError,
};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::Resource;
use kube::api::{Api, AttachParams, ListParams};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use super::exec::{KILL_MARKED, SESSION_MARKER_VAR, env_list, initial_size, session_argv, status_of};
use crate::scheduler::kubernetes::{CONTAINER, LABEL_APP, LABEL_TYPE, namespace_of};

/// kube's upgraded exec connection.
type ExecSocket = WebSocketStream<hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>>;

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

/// The exit status a status frame's JSON says, or why it says none.
fn exit_of(json: &[u8]) -> Result<ExitStatus, String> {
    match parse_status(json) {
        // Kubernetes reports only a code: 128 + N reads as signal N.
        Ok(RemoteStatus::Exited(ExitStatus::Code(code))) => Ok(status_of(code.into())),
        Ok(RemoteStatus::Exited(signal)) => Ok(signal),
        Ok(RemoteStatus::Failed { reason, message }) => Err(format!("{reason}: {message}")),
        Err(e) => Err(e.to_string()),
    }
}

fn binary(frame: &Frame) -> Message {
    Message::Binary(encode(frame).into())
}

/// Sends the session's input to the exec in the order it comes. The caller dropping
/// its input ends stdin, as the other brokers do.
async fn write_input(
    mut sink: SplitSink<ExecSocket, Message>,
    mut input: mpsc::Receiver<SessionInput>,
    protocol: Protocol,
    tty: bool,
) {
    let mut stdin_open = true;
    while let Some(input) = input.recv().await {
        let frame = match input {
            SessionInput::Stdin(bytes) if bytes.is_empty() || !stdin_open => continue,
            SessionInput::Stdin(bytes) => Frame::Stdin(bytes),
            SessionInput::Resize(size) if tty => Frame::Resize(size),
            SessionInput::Resize(_) => continue,
            SessionInput::Eof if tty => Frame::Stdin(b"\x04".to_vec()),
            SessionInput::Eof if !stdin_open => continue,
            SessionInput::Eof => {
                stdin_open = false;
                if !protocol.has_close() {
                    // v4 has no half-close: ending the connection is all there is
                    // (kube does the same); output not yet sent is lost.
                    let _ = sink.close().await;
                    return;
                }
                Frame::Close(STDIN)
            }
        };
        if sink.send(binary(&frame)).await.is_err() {
            return;
        }
    }
    if stdin_open && protocol.has_close() {
        let _ = sink.send(binary(&Frame::Close(STDIN))).await;
    }
    // Keeps the connection's write half until the reader is done with it.
    std::future::pending::<()>().await;
}

/// How the output side of a session ended.
enum Ended {
    /// The status frame came: the command ended so.
    Exited(ExitStatus),
    /// The connection ended without a usable status (why).
    Broken(String),
    /// The caller stopped reading (dropped the session).
    Dropped,
}

/// Forwards stdout and stderr frames to `out` (waiting while the caller does not read:
/// the connection then stops being read, which stops the command) until the status.
async fn read_output(
    mut stream: SplitStream<ExecSocket>,
    out: &mpsc::Sender<SessionOutput>,
    protocol: Protocol,
) -> Ended {
    loop {
        let msg = tokio::select! {
            msg = stream.next() => msg,
            // The caller dropped the session while the command is quiet.
            () = out.closed() => return Ended::Dropped,
        };
        let frame = match msg {
            None => return Ended::Broken("the connection closed without a status".into()),
            Some(Err(e)) => return Ended::Broken(e.to_string()),
            Some(Ok(Message::Binary(bytes))) => decode(&bytes, protocol),
            Some(Ok(_)) => continue,
        };
        let (data, stderr) = match frame {
            Ok(Frame::Stdout(data)) => (data, false),
            Ok(Frame::Stderr(data)) => (data, true),
            Ok(Frame::Status(json)) => {
                return exit_of(&json).map_or_else(Ended::Broken, Ended::Exited);
            }
            // Nothing else travels from the server (and a bare channel byte opens one).
            _ => continue,
        };
        for chunk in data.chunks(MAX_CHUNK) {
            let chunk = chunk.to_vec();
            let output = if stderr { SessionOutput::Stderr(chunk) } else { SessionOutput::Stdout(chunk) };
            if out.send(output).await.is_err() {
                return Ended::Dropped;
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
        let params =
            AttachParams::default().container(CONTAINER).stdin(true).stdout(true).stderr(!spec.tty).tty(spec.tty);
        let mut request = kube::core::Request::new(Pod::url_path(&(), Some(&namespace_of(&spec.app))))
            .exec(&pod, argv, &params)
            .map_err(|e| backend("exec", e))?;
        // What kube's `Api::exec` marks its requests with (the name of their trace spans).
        request.extensions_mut().insert("exec");
        let connection = self.client.connect(request).await.map_err(|e| backend("exec", e))?;
        let protocol = if connection.supports_stream_close() { Protocol::V5 } else { Protocol::V4 };
        let (mut sink, stream) = connection.into_stream().split();
        if let Some(size) = initial_size(&spec)
            && let Err(e) = sink.send(binary(&Frame::Resize(size))).await
        {
            kill_marked(&api, &pod, &marker).await;
            return Err(backend("exec: sizing the terminal", e));
        }
        let (in_tx, in_rx) = mpsc::channel::<SessionInput>(CHANNEL_CAPACITY);
        let (out_tx, out_rx) = mpsc::channel::<SessionOutput>(CHANNEL_CAPACITY);
        let writer = tokio::spawn(write_input(sink, in_rx, protocol, spec.tty));
        tokio::spawn(async move {
            let ended = read_output(stream, &out_tx, protocol).await;
            // Both halves dropped: the connection closes.
            writer.abort();
            let delivered = match ended {
                Ended::Exited(exit) => out_tx.send(SessionOutput::Exit(exit)).await.is_ok(),
                Ended::Broken(why) => {
                    tracing::warn!(%pod, error = %why, "kubernetes tty: exec ended without an exit status");
                    out_tx.send(SessionOutput::Exit(ExitStatus::Code(255))).await.is_ok()
                }
                Ended::Dropped => false,
            };
            if !delivered {
                // The caller went away before the end: kill what runs.
                kill_marked(&api, &pod, &marker).await;
            }
        });
        Ok(Session { input: in_tx, output: out_rx })
    }
}
