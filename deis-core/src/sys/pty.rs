//! Pseudo-terminals.

use std::io;
use std::os::fd::OwnedFd;

use rustix::fs::{Mode, OFlags};
use rustix::pty::OpenptFlags;
use rustix::termios::{InputModes, OptionalActions};

use super::term;
use crate::tty::TermSize;

/// Both sides of a new pseudo-terminal.
#[derive(Debug)]
pub struct Pty {
    /// Our side: what we write is typed, what we read is shown.
    pub master: OwnedFd,
    /// The program's side; give it to [`SpawnSpec::terminal`](super::SpawnSpec::terminal).
    pub slave: OwnedFd,
}

/// Opens a pseudo-terminal of `size`, with UTF-8 aware line editing (backspace over a
/// multi-byte character erases all of it). Both sides are close-on-exec, so no child
/// inherits them unless given them, and neither becomes our controlling terminal.
pub fn open(size: TermSize) -> io::Result<Pty> {
    let master = rustix::pty::openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)?;
    rustix::pty::grantpt(&master)?;
    rustix::pty::unlockpt(&master)?;
    let name = rustix::pty::ptsname(&master, Vec::new())?;
    let slave = rustix::fs::open(name.as_c_str(), OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC, Mode::empty())?;
    if let Ok(mut t) = rustix::termios::tcgetattr(&slave) {
        t.input_modes.insert(InputModes::IUTF8);
        // Line editing still works without it, only less well.
        let _ = rustix::termios::tcsetattr(&slave, OptionalActions::Now, &t);
    }
    term::set_window_size(&master, size)?;
    Ok(Pty { master, slave })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::fd::AsyncFdIo;
    use crate::sys::process::{SpawnSpec, spawn};

    #[tokio::test]
    async fn a_child_on_the_terminal_sees_its_size_and_it_as_controlling_terminal() {
        let p = open(TermSize { cols: 91, rows: 27 }).unwrap();
        let spec = SpawnSpec::shell("stty size; (exec 3</dev/tty) 2>/dev/null && echo ctty")
            .env([("PATH", "/usr/bin:/bin")])
            .terminal(p.slave);
        let child = spawn(spec).unwrap();
        let master = AsyncFdIo::new(p.master).unwrap();
        let mut seen = Vec::new();
        let mut buf = [0u8; 1024];
        // EIO once the session's processes are gone and with them the slave.
        while let Ok(n @ 1..) = master.read(&mut buf).await {
            seen.extend_from_slice(&buf[..n]);
        }
        assert_eq!(String::from_utf8_lossy(&seen), "27 91\r\nctty\r\n");
        assert_eq!(child.exited.await.unwrap().code, Some(0));
    }
}
