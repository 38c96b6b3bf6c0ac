//! The signals that ask a daemon to shut down: what every reference binary waits for
//! before its graceful shutdown.

use std::fmt;
use std::io;

use tokio::signal::unix::{Signal, SignalKind, signal};

/// Which signal asked for the shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownSignal {
    /// `SIGTERM` (a service manager, `kill`).
    Terminate,
    /// `SIGINT` (Ctrl-C).
    Interrupt,
}

impl fmt::Display for ShutdownSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ShutdownSignal::Terminate => "SIGTERM",
            ShutdownSignal::Interrupt => "SIGINT",
        })
    }
}

/// Handlers for `SIGTERM` and `SIGINT`, installed at once: from then on these signals
/// no longer end the process but wait in [`recv`](Self::recv).
#[derive(Debug)]
pub struct ShutdownSignals {
    terminate: Signal,
    interrupt: Signal,
}

impl ShutdownSignals {
    /// Installs the handlers. Needs a tokio runtime with I/O enabled.
    pub fn install() -> io::Result<Self> {
        Ok(Self { terminate: signal(SignalKind::terminate())?, interrupt: signal(SignalKind::interrupt())? })
    }

    /// Waits for the next `SIGTERM` or `SIGINT`.
    pub async fn recv(&mut self) -> ShutdownSignal {
        tokio::select! {
            _ = self.terminate.recv() => ShutdownSignal::Terminate,
            _ = self.interrupt.recv() => ShutdownSignal::Interrupt,
        }
    }
}

/// Resolves on the first `SIGTERM` or `SIGINT` and logs it. The handlers are installed
/// when this is first polled. If they can't be (no runtime with I/O), logs why and
/// never resolves: the signals then end the process at once, without a graceful
/// shutdown.
pub async fn shutdown_signal() -> ShutdownSignal {
    match ShutdownSignals::install() {
        Ok(mut signals) => {
            let received = signals.recv().await;
            tracing::info!("{received}: shutting down");
            received
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot handle SIGTERM and SIGINT; they will end the process without a graceful shutdown");
            std::future::pending().await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::process::{Signal as Raw, getpid, kill_process};

    #[tokio::test]
    async fn each_signal_is_received_as_itself() {
        let mut signals = ShutdownSignals::install().unwrap();
        // With the handlers in place, these no longer end the test process.
        kill_process(getpid(), Raw::TERM).unwrap();
        assert_eq!(signals.recv().await, ShutdownSignal::Terminate);
        kill_process(getpid(), Raw::INT).unwrap();
        assert_eq!(signals.recv().await, ShutdownSignal::Interrupt);

        let waiting = tokio::spawn(shutdown_signal());
        // `shutdown_signal` installs its own handlers when first polled; until then a
        // signal would only reach `signals` above, so keep sending until it resolves.
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(20));
        while !waiting.is_finished() {
            tick.tick().await;
            kill_process(getpid(), Raw::TERM).unwrap();
        }
        assert_eq!(waiting.await.unwrap(), ShutdownSignal::Terminate);
    }
}
