//! What the reference daemons share (feature `daemon`): flag parsing with one-line
//! errors, log output setup, the shutdown signal, and their HTTP listeners' limits
//! ([`ListenerFlags`], [`serve_until_signal`]).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::controller::ApiLimits;
pub use crate::shutdown_signal;

/// How long open requests (a followed log, a `deis run` session) may go on after a
/// shutdown signal before a role daemon stops anyway.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// The limits of a role daemon's HTTP listener, flags every role daemon takes
/// (`--http-header-read-timeout SECS`, `--http-max-connections N`), so slow or idle
/// clients can't take it down (as the controller API's own limits).
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct ListenerFlags {
    /// Seconds a client has to send a request head (and to start the next one on a
    /// kept-alive connection) before the connection is closed.
    #[arg(
        long,
        env = "DEIS_HTTP_HEADER_READ_TIMEOUT",
        default_value_t = 30,
        value_parser = clap::value_parser!(u64).range(1..=3600)
    )]
    pub http_header_read_timeout: u64,
    /// Most connections open at once; past it new ones are closed at once.
    #[arg(
        long,
        env = "DEIS_HTTP_MAX_CONNECTIONS",
        default_value_t = 1024,
        value_parser = clap::value_parser!(u64).range(1..=1_000_000)
    )]
    pub http_max_connections: u64,
}

impl ListenerFlags {
    /// The listener limits these flags give (the rest as [`ApiLimits::default`]).
    pub fn limits(&self) -> ApiLimits {
        ApiLimits {
            header_read_timeout: Duration::from_secs(self.http_header_read_timeout),
            max_connections: usize::try_from(self.http_max_connections).unwrap_or(usize::MAX),
            ..ApiLimits::default()
        }
    }
}

/// Serves `app` on `listener` with `flags`' limits until SIGTERM or SIGINT, then lets
/// open requests finish for at most [`SHUTDOWN_GRACE`].
pub async fn serve_until_signal(listener: tokio::net::TcpListener, app: axum::Router, flags: &ListenerFlags) {
    let signalled = async {
        shutdown_signal().await;
    };
    crate::controller::serve_with_grace(listener, app, flags.limits(), signalled, SHUTDOWN_GRACE).await;
}

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

    #[derive(Debug, Parser)]
    struct Listener {
        #[command(flatten)]
        listener: ListenerFlags,
    }

    #[test]
    fn listener_flags_give_the_limits_and_refuse_zero() {
        let l = Listener::try_parse_from(["d"]).unwrap().listener.limits();
        assert_eq!((l.header_read_timeout, l.max_connections), (Duration::from_secs(30), 1024));
        let f =
            Listener::try_parse_from(["d", "--http-header-read-timeout", "2", "--http-max-connections", "3"]).unwrap();
        assert_eq!(
            (f.listener.limits().header_read_timeout, f.listener.limits().max_connections),
            (Duration::from_secs(2), 3)
        );
        let e = Listener::try_parse_from(["d", "--http-max-connections", "0"]).unwrap_err();
        assert!(one_line(&e).contains("--http-max-connections"), "{}", one_line(&e));
    }

    #[tokio::test]
    async fn serving_stops_after_the_grace_period_with_a_request_still_open() {
        use crate::controller::serve_with_grace;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().route("/hang", axum::routing::get(std::future::pending::<&'static str>));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let grace = Duration::from_millis(200);
        let until = async move {
            let _ = stopped.await;
        };
        let server = tokio::spawn(serve_with_grace(listener, app, ApiLimits::default(), until, grace));
        let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut client, b"GET /hang HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let started = std::time::Instant::now();
        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), server).await.expect("stopped within the grace").unwrap();
        assert!(started.elapsed() >= grace, "it waited for the open request first");
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
