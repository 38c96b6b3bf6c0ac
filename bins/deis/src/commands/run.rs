//! `deis run`: a command in the app's environment, interactive when stdin and stdout are
//! terminals (raw mode, window size followed), otherwise batch with binary-safe stdin,
//! stdout and stderr. The CLI exits with the remote command's exit status.
//!
//! Both go through a session: `POST /v2/apps/<app>/sessions` then a WebSocket to the
//! attach URL through the router the ticket names (with `Host: deis.<domain>`), or on
//! the controller's address when it names none.

mod terminal;

use std::io::{Read as _, Write as _};

use deis_core::tty::{MAX_CHUNK, SessionInput, SessionOutput, TermSize};
use deis_sdk::tty::client::{AttachOptions, SessionRequest, attach, create_session};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use super::{CliError, Ctx, Result};

/// Runs `command` in the app's environment and exits with its status.
pub async fn run(ctx: &Ctx, command: Vec<String>, proc_type: Option<deis_core::ProcessType>, no_tty: bool) -> Result {
    let (client, _) = ctx.client()?;
    let app = ctx.app()?;
    let tty = !no_tty && terminal::is_tty(0) && terminal::is_tty(1);
    let size = tty.then(|| terminal::size(1).or_else(|| terminal::size(0))).flatten();
    let req = SessionRequest { command, tty, proc_type: proc_type.map(String::from) };
    let ticket = create_session(&client, &app, &req).await?;
    let opts = AttachOptions {
        size: size.map(|(cols, rows)| TermSize { cols, rows }).or(tty.then_some(TermSize { cols: 80, rows: 24 })),
        ..AttachOptions::default()
    };
    let remote = attach(client.controller_url(), &ticket, opts).await.map_err(|e| CliError::Failed(e.to_string()))?;
    let raw = if tty {
        Some(
            terminal::RawMode::enter(0)
                .map_err(|e| CliError::Failed(format!("cannot put the terminal in raw mode: {e}")))?,
        )
    } else {
        None
    };
    let outcome = pump(remote, tty).await;
    drop(raw);
    match outcome {
        Ok(0) => Ok(()),
        Ok(code) => {
            let _ = std::io::stdout().flush();
            std::process::exit(code);
        }
        Err(msg) => {
            if tty {
                eprintln!();
            }
            Err(CliError::Failed(msg))
        }
    }
}

/// Reads stdin on a thread (blocking reads are the only portable way for pipes and
/// terminals alike) into the session's bounded input: a slow remote slows the reads.
fn spawn_stdin(input: mpsc::Sender<SessionInput>) {
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = vec![0u8; MAX_CHUNK];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => {
                    let _ = input.blocking_send(SessionInput::Eof);
                    return;
                }
                Ok(n) => {
                    if input.blocking_send(SessionInput::Stdin(buf[..n].to_vec())).is_err() {
                        return;
                    }
                }
            }
        }
    });
}

/// Pipes the session to the local terminal or pipes; the remote exit code, or why the
/// session ended without one.
async fn pump(mut remote: deis_sdk::tty::client::RemoteSession, tty: bool) -> std::result::Result<i32, String> {
    spawn_stdin(remote.input.clone());
    let signal_err = |e: std::io::Error| format!("cannot watch signals: {e}");
    let mut winch = signal(SignalKind::window_change()).map_err(signal_err)?;
    let mut term = signal(SignalKind::terminate()).map_err(signal_err)?;
    let mut hup = signal(SignalKind::hangup()).map_err(signal_err)?;
    let mut int = signal(SignalKind::interrupt()).map_err(signal_err)?;
    // Blocking writes: a slow reader of our stdout slows the session (backpressure).
    let mut stdout = std::io::stdout();
    let mut stderr = std::io::stderr();
    loop {
        tokio::select! {
            event = remote.output.recv() => match event {
                Some(Ok(SessionOutput::Stdout(b))) => {
                    stdout.write_all(&b).and_then(|()| stdout.flush()).map_err(|e| format!("writing to stdout: {e}"))?;
                }
                Some(Ok(SessionOutput::Stderr(b))) => {
                    stderr.write_all(&b).and_then(|()| stderr.flush()).map_err(|e| format!("writing to stderr: {e}"))?;
                }
                Some(Ok(SessionOutput::Exit(status))) => return Ok(status.code()),
                Some(Err(e)) => return Err(e.to_string()),
                None => return Err("the session ended without an exit status".into()),
            },
            _ = winch.recv(), if tty => {
                if let Some((cols, rows)) = terminal::size(1) {
                    let _ = remote.input.send(SessionInput::Resize(TermSize { cols, rows })).await;
                }
            }
            _ = term.recv() => signalled(libc::SIGTERM),
            _ = hup.recv() => signalled(libc::SIGHUP),
            _ = int.recv() => signalled(libc::SIGINT),
        }
    }
}

/// Ends the CLI for a signal: terminal restored, status 128 + signal (the session is
/// ended by the broker when the connection closes).
fn signalled(sig: i32) -> ! {
    terminal::restore_now();
    std::process::exit(128 + sig);
}
