//! `logs` (`-f` follows, surviving controller restarts).

use std::io::Write as _;
use std::time::Duration;

use deis_sdk::client::{Client, ClientError, FollowEvent, LogOptions};

use super::{CliError, Ctx, Result};

/// First delay before reconnecting a broken follow; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// Longest delay between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What `deis logs` was asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogsArgs {
    /// `-n N`.
    pub lines: Option<usize>,
    /// `-f`.
    pub follow: bool,
    /// `--type`.
    pub proc_type: Option<deis_core::ProcessType>,
    /// `--source`.
    pub source: Option<String>,
    /// `--raw`: control characters as they are.
    pub raw: bool,
}

/// `deis logs`.
pub async fn logs(ctx: &Ctx, args: LogsArgs) -> Result {
    let app = ctx.app()?;
    if let Some(s) = &args.source
        && s != "app"
        && s != "deis"
    {
        return Err(CliError::Usage(format!("--source must be app or deis, not {s:?}")));
    }
    let (client, _) = ctx.client()?;
    let options = LogOptions {
        lines: args.lines,
        proc_type: args.proc_type.clone().map(String::from),
        source: args.source.clone(),
    };
    if args.follow {
        return follow(&client, &app, options, args.raw).await;
    }
    let body = client.logs(&app, &options).await?;
    if body.is_empty() {
        eprintln!("There are no log lines for {app} yet.");
        return Ok(());
    }
    let body = if args.raw { body } else { body.lines().map(|l| escape_controls(l) + "\n").collect() };
    let mut out = std::io::stdout().lock();
    out.write_all(body.as_bytes()).and_then(|()| out.flush()).or_else(ignore_broken_pipe)?;
    Ok(())
}

/// `line` with every control character but tab shown as an escape (`\x1b`, `\r`,
/// `\u{9b}`): anyone who can write to an app's log could otherwise move the cursor,
/// rewrite earlier lines or retitle the reader's terminal.
pub fn escape_controls(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    for c in line.chars() {
        match c {
            '\t' => out.push(c),
            '\r' => out.push_str("\\r"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 || c == '\x7f' => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

fn ignore_broken_pipe(e: std::io::Error) -> Result {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0); // `deis logs | head`: the reader is gone, we are done.
    }
    Err(CliError::Failed(format!("cannot write to stdout: {e}")))
}

/// Whether an error is worth reconnecting after (the connection, not the request).
fn retryable(e: &ClientError) -> bool {
    match e {
        ClientError::Api { status, .. } => *status >= 500,
        ClientError::Connect { .. } | ClientError::Transport { .. } | ClientError::Timeout { .. } => true,
        _ => false,
    }
}

/// Follows until Ctrl-C (exit 0) or an error the controller means (404, 403 ...).
async fn follow(client: &Client, app: &str, options: LogOptions, raw: bool) -> Result {
    tokio::select! {
        r = follow_forever(client, app, options, raw) => r,
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}

async fn follow_forever(client: &Client, app: &str, options: LogOptions, raw: bool) -> Result {
    let mut last_seq: Option<u64> = None;
    let mut backoff = FIRST_BACKOFF;
    let mut lost = false;
    loop {
        let stream = client.logs_follow(app, &options, last_seq).await;
        let mut stream = match stream {
            Ok(s) => s,
            Err(e) if retryable(&e) && (lost || last_seq.is_some()) => {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        if std::mem::take(&mut lost) {
            eprintln!("-- reconnected --");
        }
        backoff = FIRST_BACKOFF;
        loop {
            match stream.next().await {
                Ok(Some(FollowEvent::Line(record))) => {
                    last_seq = Some(record.seq);
                    let line = record.to_string();
                    let line = if raw { line } else { escape_controls(&line) };
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "{line}").and_then(|()| out.flush()).or_else(ignore_broken_pipe)?;
                }
                Ok(Some(FollowEvent::Missed(n))) => eprintln!("-- {n} lines skipped (reader too slow) --"),
                Ok(Some(FollowEvent::Error(e))) => eprintln!("-- the controller ended the log stream: {e} --"),
                Ok(Some(FollowEvent::Notice(n))) => eprintln!("-- {n} --"),
                Ok(None) => break,
                Err(e) if retryable(&e) => break,
                Err(e) => return Err(e.into()),
            }
        }
        // The stream ended or broke: the controller went away (restart) or the app's
        // log was reset. Resume after the last line seen.
        eprintln!("-- connection lost, reconnecting... --");
        lost = true;
        // Starting over from the last lines would repeat them: resume, or only new lines.
        if last_seq.is_none() {
            last_seq = Some(0);
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_connection_trouble_is_retried() {
        assert!(retryable(&ClientError::from_response(503, b"")));
        assert!(!retryable(&ClientError::from_response(404, br#""No App matches the given query.""#)));
        assert!(!retryable(&ClientError::from_response(401, b"{}")));
        assert!(retryable(&ClientError::Timeout { method: "GET".into(), url: "u".into(), secs: 1 }));
    }

    /// Fault "log spoofing": raw terminal escapes in a log line reached the reader's
    /// terminal.
    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(escape_controls("plain\ttext é"), "plain\ttext é");
        assert_eq!(escape_controls("\x1b]0;pwned\x07\x1b[2Kx\r"), "\\x1b]0;pwned\\x07\\x1b[2Kx\\r");
        assert_eq!(escape_controls("a\u{9b}31mb\x7f"), "a\\u{9b}31mb\\x7f");
    }
}
