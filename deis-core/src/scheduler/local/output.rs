//! Where units' stdout and stderr go: a pluggable line sink.

use std::fmt::Debug;
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

use crate::model::Unit;

/// Longest line delivered to a [`UnitOutput`]; longer lines are split into pieces of at
/// most this many bytes.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// Which output stream of a unit a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutputStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

impl std::fmt::Display for OutputStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Stdout => "stdout",
            Self::Stderr => "stderr",
        })
    }
}

/// Receives every output line of every unit (the log pipeline plugs in here).
///
/// To ensure correctness: `line` is called from async tasks and must not block for
/// long; buffer or hand off instead. Lines come without their trailing newline, are at
/// most [`MAX_LINE_BYTES`] long, and invalid UTF-8 is replaced by U+FFFD.
pub trait UnitOutput: Send + Sync + Debug {
    /// One line written by `unit` on `stream`.
    fn line(&self, unit: &Unit, stream: OutputStream, line: &str);
}

/// The default sink: each line as a `tracing` event at level INFO, target `deis::unit`,
/// with the unit name and stream as fields.
#[derive(Debug, Clone, Copy, Default)]
pub struct TracingOutput;

impl UnitOutput for TracingOutput {
    fn line(&self, unit: &Unit, stream: OutputStream, line: &str) {
        tracing::info!(target: "deis::unit", unit = %unit.name, %stream, "{line}");
    }
}

/// Reads `reader` to its end and hands each line to `sink`.
pub(crate) async fn pump_lines<R: AsyncRead + Unpin>(
    reader: R,
    unit: Unit,
    stream: OutputStream,
    sink: Arc<dyn UnitOutput>,
) {
    let mut reader = BufReader::with_capacity(8192, reader);
    let mut line: Vec<u8> = Vec::new();
    loop {
        let buf = match reader.fill_buf().await {
            Ok(b) => b,
            Err(e) => {
                tracing::debug!(unit = %unit.name, %stream, error = %e, "reading unit output failed");
                break;
            }
        };
        if buf.is_empty() {
            break;
        }
        let room = MAX_LINE_BYTES - line.len();
        let window = &buf[..buf.len().min(room)];
        match window.iter().position(|&b| b == b'\n') {
            Some(i) => {
                line.extend_from_slice(&window[..i]);
                reader.consume(i + 1);
                emit(&mut line, &unit, stream, &*sink);
            }
            None => {
                let n = window.len();
                line.extend_from_slice(window);
                reader.consume(n);
                if line.len() >= MAX_LINE_BYTES {
                    emit(&mut line, &unit, stream, &*sink);
                }
            }
        }
    }
    if !line.is_empty() {
        emit(&mut line, &unit, stream, &*sink);
    }
}

fn emit(line: &mut Vec<u8>, unit: &Unit, stream: OutputStream, sink: &dyn UnitOutput) {
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    sink.line(unit, stream, &String::from_utf8_lossy(line));
    line.clear();
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::model::UnitState;

    /// A sink that keeps every line, for tests.
    #[derive(Debug, Default)]
    pub(crate) struct Collect(pub Mutex<Vec<(String, OutputStream, String)>>);

    impl UnitOutput for Collect {
        fn line(&self, unit: &Unit, stream: OutputStream, line: &str) {
            self.0.lock().unwrap().push((unit.name.clone(), stream, line.to_owned()));
        }
    }

    impl Collect {
        pub(crate) fn lines_of(&self, unit: &str) -> Vec<String> {
            self.0.lock().unwrap().iter().filter(|(u, _, _)| u == unit).map(|(_, _, l)| l.clone()).collect()
        }
    }

    pub(crate) fn unit(name: &str) -> Unit {
        Unit { name: name.into(), ..crate::testing::unit("a", "web", 1, UnitState::Created) }
    }

    #[tokio::test]
    async fn splits_lines_and_bounds_them() {
        let mut input = b"one\r\ntwo\n\nthree".to_vec();
        input.push(b'\n');
        input.extend(std::iter::repeat_n(b'x', MAX_LINE_BYTES + 10));
        input.extend_from_slice(b"\n\xffend");
        let sink = Arc::new(Collect::default());
        pump_lines(&input[..], unit("a.web.1"), OutputStream::Stderr, sink.clone()).await;
        let lines = sink.lines_of("a.web.1");
        assert_eq!(lines.len(), 7, "{:?}", lines.iter().map(|l| l.len()).collect::<Vec<_>>());
        assert_eq!(&lines[..4], ["one", "two", "", "three"]);
        assert_eq!(lines[4].len(), MAX_LINE_BYTES);
        assert_eq!(lines[5], "x".repeat(10));
        assert_eq!(lines[6], "\u{fffd}end");
        assert!(sink.0.lock().unwrap().iter().all(|(_, s, _)| *s == OutputStream::Stderr));
    }
}
