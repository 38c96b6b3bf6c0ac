//! The `LogStore` trait: recent log lines per app, read back by `deis logs` and
//! followed live by `deis logs -f`.
//!
//! Lines come from units' stdout/stderr, from syslog emitters (Docker's syslog driver,
//! `logger`), and from the platform itself (release created, scaled, crashed ...).
//! Every line appended to an app gets the next **sequence number** of that app (from
//! 1, strictly increasing, never reused while the app lives); a follower resumes after
//! the last sequence it saw. A store keeps a bounded window of recent lines; a follower
//! that falls behind that window is told how many lines it missed and continues.
//!
//! To be correct, an implementation must pass [`crate::testing::logstore_suite`].

#[cfg(feature = "embedded")]
mod unit_output;

#[cfg(feature = "embedded")]
pub use unit_output::{DEFAULT_QUEUE_LINES, UnitLogSink, UnitLogStats};

mod ring;
pub mod syslog;

use std::fmt;
use std::time::SystemTime;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

pub use ring::{APP_OVERHEAD_BYTES, RingConfig, RingLogStore, RingStats};

/// Largest message kept, in bytes; longer messages are cut (at a char boundary) and
/// flagged [`LogLine::truncated`].
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// Where a line came from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum LogSource {
    /// A unit of the app: shown `<app>[web.1]`.
    App {
        /// Process type.
        proc_type: String,
        /// Unit number.
        number: u32,
    },
    /// The platform (controller, scheduler, router): shown `deis[controller]`.
    Deis {
        /// Component name.
        component: String,
    },
    /// Anything else (an unparsed syslog tag, a one-off run): shown `<app>[<name>]`.
    Other {
        /// Free-form source name.
        name: String,
    },
}

impl LogSource {
    /// `app` or `deis`, for `deis logs --source`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Deis { .. } => "deis",
            _ => "app",
        }
    }
    /// The process type, if the line came from a unit.
    pub fn proc_type(&self) -> Option<&str> {
        match self {
            Self::App { proc_type, .. } => Some(proc_type),
            _ => None,
        }
    }
}

impl LogSource {
    /// How `deis logs` names the source of a line of `app`: `hello[web.1]` for a unit,
    /// `deis[controller]` for the platform, `hello[<name>]` for anything else.
    pub fn label<'a>(&'a self, app: &'a str) -> SourceLabel<'a> {
        SourceLabel { source: self, app }
    }
}

/// A [`LogSource`] as `deis logs` shows it (see [`LogSource::label`]).
#[derive(Debug, Clone, Copy)]
pub struct SourceLabel<'a> {
    source: &'a LogSource,
    app: &'a str,
}

impl fmt::Display for SourceLabel<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let app = self.app;
        match self.source {
            LogSource::App { proc_type, number } => write!(f, "{app}[{proc_type}.{number}]"),
            LogSource::Deis { component } => write!(f, "deis[{component}]"),
            LogSource::Other { name } => write!(f, "{app}[{name}]"),
        }
    }
}

/// Stream or severity of a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogStream {
    /// A unit's standard output.
    Stdout,
    /// A unit's standard error.
    Stderr,
    /// A syslog severity, 0 (emergency) to 7 (debug).
    Severity(u8),
}

/// One log line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// When it was emitted (or received, if the emitter gave no time).
    pub time: SystemTime,
    /// App id.
    pub app: String,
    /// Where it came from.
    pub source: LogSource,
    /// Stream or severity.
    pub stream: LogStream,
    /// The text, without the trailing newline.
    pub message: String,
    /// The line could not be parsed and is kept raw (e.g. garbage on a syslog port).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub raw: bool,
    /// The message was cut at [`MAX_MESSAGE_BYTES`].
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
    /// Log drains the line already went through (from the `hop` parameter drains
    /// write, see [`syslog::DRAIN_SD_ID`]); a drain sends it on with one more, and the
    /// syslog listener drops lines at [`syslog::MAX_DRAIN_HOPS`], so drain loops end.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub hops: u8,
}

fn is_zero(n: &u8) -> bool {
    *n == 0
}

impl LogLine {
    /// A line from a unit, stamped now; the message is cut to [`MAX_MESSAGE_BYTES`].
    pub fn from_unit(app: &str, proc_type: &str, number: u32, stream: LogStream, message: &str) -> Self {
        Self::new(app, LogSource::App { proc_type: proc_type.into(), number }, stream, message)
    }

    /// A platform event for `app` from `component` (`controller`, `scheduler`), stamped now.
    pub fn platform(app: &str, component: &str, message: &str) -> Self {
        Self::new(app, LogSource::Deis { component: component.into() }, LogStream::Severity(6), message)
    }

    /// A line stamped now; the message is cut to [`MAX_MESSAGE_BYTES`].
    pub fn new(app: &str, source: LogSource, stream: LogStream, message: &str) -> Self {
        let (message, truncated) = truncate(message);
        Self { time: SystemTime::now(), app: app.into(), source, stream, message, raw: false, truncated, hops: 0 }
    }

    /// Bytes this line accounts for in a store's byte budget.
    pub fn cost(&self) -> usize {
        self.message.len() + self.app.len() + 64
    }
}

/// Cuts a message to [`MAX_MESSAGE_BYTES`] at a char boundary.
pub fn truncate(message: &str) -> (String, bool) {
    if message.len() <= MAX_MESSAGE_BYTES {
        return (message.to_string(), false);
    }
    let mut end = MAX_MESSAGE_BYTES;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    (message[..end].to_string(), true)
}

impl fmt::Display for LogLine {
    /// `2026-11-25T14:47:21.123Z hello[web.1]: message`, as `deis logs` prints it (the
    /// Deis log format: `<time> <app>[<type>.<n>]: <message>`, platform events as
    /// `<time> deis[controller]: <message>`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let time = humantime::format_rfc3339_millis(self.time);
        write!(f, "{time} {}: {}", self.source.label(&self.app), self.message)
    }
}

/// A line with its sequence number in its app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// Sequence number within the app (from 1).
    pub seq: u64,
    /// The line.
    pub line: LogLine,
}

/// Which lines a reader wants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogFilter {
    /// Only lines of this process type.
    pub proc_type: Option<String>,
    /// Only `app` (units and other) or `deis` (platform) lines.
    pub source: Option<String>,
}

impl LogFilter {
    /// Whether `line` passes the filter.
    pub fn matches(&self, line: &LogLine) -> bool {
        self.proc_type.as_deref().is_none_or(|t| line.source.proc_type() == Some(t))
            && self.source.as_deref().is_none_or(|s| line.source.kind() == s)
    }
}

/// Where a follow starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cursor {
    /// Only lines appended from now on.
    Now,
    /// The last `n` stored lines, then live lines.
    Last(usize),
    /// Every line with a sequence number greater than this (a resume).
    After(u64),
}

/// What a follower receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FollowItem {
    /// The next line.
    Line(LogEntry),
    /// This many lines were skipped because the follower fell behind (or they left
    /// the store's window before it resumed); following continues after them.
    Missed(u64),
}

/// A live stream of an app's lines. Dropping it stops the follow.
#[derive(Debug)]
pub struct LogFollow {
    rx: mpsc::Receiver<Result<FollowItem, LogError>>,
}

impl LogFollow {
    /// Wraps a channel; implementations send items (or a terminal error) into it.
    pub fn new(rx: mpsc::Receiver<Result<FollowItem, LogError>>) -> Self {
        Self { rx }
    }
    /// The next item; `None` when the store ended the follow (app forgotten, store closed).
    pub async fn next(&mut self) -> Option<Result<FollowItem, LogError>> {
        self.rx.recv().await
    }
}

/// Errors of a [`LogStore`].
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// Invalid input (empty app name, ...).
    #[error("invalid log request: {0}")]
    Invalid(String),
    /// The backend failed (network, Redis).
    #[error("log store backend: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The store is closed.
    #[error("log store is closed")]
    Closed,
}

impl LogError {
    /// Wraps any backend error.
    pub fn backend(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Backend(Box::new(e))
    }
}

/// Keeps recent log lines per app. See the module docs.
#[async_trait]
pub trait LogStore: Send + Sync + fmt::Debug {
    /// Appends lines (each to its own app) and returns their sequence numbers, in order.
    /// To ensure correctness: sequence numbers of an app strictly increase in append
    /// order; appending never waits for slow followers.
    async fn append(&self, lines: Vec<LogLine>) -> Result<Vec<u64>, LogError>;

    /// The last `n` lines of `app` that match `filter`, oldest first (empty for an
    /// unknown app).
    async fn tail(&self, app: &str, n: usize, filter: &LogFilter) -> Result<Vec<LogEntry>, LogError>;

    /// Follows `app` from `cursor`, delivering matching lines in sequence order. To
    /// ensure correctness: no line is delivered twice or out of order; a gap (lines
    /// the follower could not get) is reported as [`FollowItem::Missed`] before the
    /// next line, never silently; memory per follower is bounded.
    async fn follow(&self, app: &str, cursor: Cursor, filter: LogFilter) -> Result<LogFollow, LogError>;

    /// Forgets every line of `app` and ends its followers.
    async fn forget(&self, app: &str) -> Result<(), LogError>;
}
