//! The `TtyBroker` trait: run a command in an app's environment as an interactive
//! (TTY) or batch (separate stdout/stderr) session, with stdin, window resize and the
//! exit status — what `deis run bash` and `deis run -- cmd` need.
//!
//! A session is a pair of bounded channels: the caller sends [`SessionInput`]s and
//! receives [`SessionOutput`]s, ending with exactly one [`SessionOutput::Exit`]. Bounded
//! channels are the backpressure: a caller that stops reading output makes the backend
//! stop reading the process, which then blocks on its own writes; nothing buffers
//! without bound. Dropping the session (both halves) ends it and kills what it ran.
//!
//! To be correct, an implementation must pass [`crate::testing::tty_suite`].

pub mod channel;
#[cfg(feature = "embedded")]
pub mod local;
pub mod token;

#[cfg(feature = "embedded")]
pub use local::{LocalTtyBroker, LocalTtyConfig};

use std::collections::BTreeMap;
use std::fmt;

use async_trait::async_trait;
use tokio::sync::mpsc;

use crate::model::limits::Resources;
use crate::model::{AppIdentity, AppName, ProcessType};
use crate::scheduler::Artifact;

/// Capacity of session channels (messages, each at most [`MAX_CHUNK`] bytes).
pub const CHANNEL_CAPACITY: usize = 16;
/// Largest chunk of bytes in one message.
pub const MAX_CHUNK: usize = 32 * 1024;

/// Terminal size in character cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TermSize {
    /// Columns.
    #[serde(rename = "Width")]
    pub cols: u16,
    /// Rows.
    #[serde(rename = "Height")]
    pub rows: u16,
}

/// What to run, where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionSpec {
    /// The app.
    pub app: AppName,
    /// Process type whose environment to use (`web` by default).
    pub proc_type: ProcessType,
    /// The release's artifact (the build directory, or the image).
    pub artifact: Artifact,
    /// Release version.
    pub release: u64,
    /// Environment: the release's config plus `DEIS_APP`, `DEIS_RELEASE`.
    pub env: BTreeMap<String, String>,
    /// argv; a single element is run with `sh -c`.
    pub command: Vec<String>,
    /// Allocate a terminal (stdout and stderr are then one stream).
    pub tty: bool,
    /// Initial terminal size (TTY sessions).
    pub size: Option<TermSize>,
    /// Who runs it (for audit).
    pub user: String,
    /// The app's identity (what its units run as), if the platform gives it one.
    pub identity: Option<AppIdentity>,
    /// The limits of a unit of `proc_type`, which the session gets too.
    pub limits: Resources,
}

/// From the caller to the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionInput {
    /// Bytes for the command's stdin.
    Stdin(Vec<u8>),
    /// End of stdin (close the pipe; in TTY mode, send the terminal's EOF).
    Eof,
    /// The terminal was resized.
    Resize(TermSize),
}

/// From the session to the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionOutput {
    /// Bytes from stdout (or the terminal).
    Stdout(Vec<u8>),
    /// Bytes from stderr (batch sessions only).
    Stderr(Vec<u8>),
    /// The command ended; the last message of every session.
    Exit(ExitStatus),
}

/// How a session's command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// Exited with this code.
    Code(i32),
    /// Killed by this signal.
    Signal(i32),
}

impl ExitStatus {
    /// The shell convention: the code, or 128 + signal.
    pub fn code(self) -> i32 {
        match self {
            Self::Code(c) => c,
            Self::Signal(s) => 128 + s,
        }
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Code(c) => write!(f, "exit code {c}"),
            Self::Signal(s) => write!(f, "killed by signal {s}"),
        }
    }
}

/// A running session. Drop both halves to end it (the backend kills the command).
#[derive(Debug)]
pub struct Session {
    /// Send input here.
    pub input: mpsc::Sender<SessionInput>,
    /// Receive output here; ends after [`SessionOutput::Exit`].
    pub output: mpsc::Receiver<SessionOutput>,
}

/// Errors of a [`TtyBroker`].
#[derive(Debug, thiserror::Error)]
pub enum TtyError {
    /// The spec can't be run (empty command, missing build directory, ...).
    #[error("invalid session: {0}")]
    Invalid(String),
    /// The backend can't run this kind of artifact.
    #[error("{0}")]
    Unsupported(String),
    /// Too many sessions at once.
    #[error("too many sessions ({0} running); try again later")]
    Busy(usize),
    /// Starting the command failed.
    #[error("starting the command: {0}")]
    Spawn(#[source] std::io::Error),
    /// The backend failed.
    #[error("tty backend: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Runs sessions. See the module docs.
#[async_trait]
pub trait TtyBroker: Send + Sync + fmt::Debug {
    /// Starts `spec.command` and returns its session. To ensure correctness: every
    /// session ends with exactly one `Exit`; output is delivered in order; with
    /// `tty` the command has a controlling terminal of `spec.size`; when the session is
    /// dropped the command and everything it started are killed and reaped.
    async fn open(&self, spec: SessionSpec) -> Result<Session, TtyError>;
}
