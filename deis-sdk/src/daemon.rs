//! What the reference daemons share (feature `daemon`): flag parsing with one-line
//! errors, log output setup, and the shutdown signal.

use std::fmt;
use std::str::FromStr;

pub use crate::shutdown_signal;

/// Parses the process's flags into `A`. `--help` and `--version` print and exit 0; a
/// bad flag or value prints one line, `<name>: <what is wrong>`, and exits 2.
pub fn parse_flags<A: clap::Parser>(name: &str) -> A {
    match A::try_parse() {
        Ok(args) => args,
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            eprintln!("{name}: {}", one_line(&e));
            std::process::exit(2)
        }
    }
}

/// The first line of a clap error, without its `error: ` prefix.
fn one_line(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let first = text.lines().next().unwrap_or_default();
    first.strip_prefix("error: ").unwrap_or(first).to_string()
}

/// How daemons write their own log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// A log format other than `text` or `json`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown log format {0:?}: use text or json")]
pub struct UnknownLogFormat(pub String);

impl FromStr for LogFormat {
    type Err = UnknownLogFormat;

    fn from_str(s: &str) -> Result<Self, UnknownLogFormat> {
        match s {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => Err(UnknownLogFormat(other.to_string())),
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Text => "text",
            Self::Json => "json",
        })
    }
}

/// Sends `tracing` output to stderr in `format`, filtered by `RUST_LOG` (default
/// `info`).
pub fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Flags {
        #[arg(long, default_value = "text")]
        log_format: LogFormat,
    }

    #[test]
    fn bad_values_are_one_line_naming_the_flag_and_the_forms() {
        let e = Flags::try_parse_from(["d", "--log-format", "xml"]).unwrap_err();
        let line = one_line(&e);
        assert_eq!(
            line,
            r#"invalid value 'xml' for '--log-format <LOG_FORMAT>': unknown log format "xml": use text or json"#
        );
        assert_eq!(Flags::try_parse_from(["d", "--log-format", "json"]).unwrap().log_format, LogFormat::Json);
    }
}
