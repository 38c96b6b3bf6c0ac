//! Terminal settings: window size, the EOF character, echo off for a password.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};

use rustix::termios::{LocalModes, OptionalActions, SpecialCodeIndex, Termios, Winsize};

use crate::tty::TermSize;

/// The EOF character when a terminal has none set (`^D`).
const DEFAULT_EOF: u8 = 4;

/// The window size of the terminal on `fd`.
pub fn window_size(fd: impl AsFd) -> io::Result<TermSize> {
    let ws = rustix::termios::tcgetwinsize(fd)?;
    Ok(TermSize { cols: ws.ws_col, rows: ws.ws_row })
}

/// Sets the window size of the terminal on `fd` (a pseudo-terminal's master or slave;
/// the kernel sends `SIGWINCH` to its foreground process group).
pub fn set_window_size(fd: impl AsFd, size: TermSize) -> io::Result<()> {
    let ws = Winsize { ws_row: size.rows, ws_col: size.cols, ws_xpixel: 0, ws_ypixel: 0 };
    Ok(rustix::termios::tcsetwinsize(fd, ws)?)
}

/// The terminal's EOF character (`^D` unless the program on it changed it, or when it
/// can't be read). On a pseudo-terminal's master this reports the slave's setting.
pub fn eof_char(fd: impl AsFd) -> u8 {
    match rustix::termios::tcgetattr(fd) {
        Ok(t) if t.special_codes[SpecialCodeIndex::VEOF] != 0 => t.special_codes[SpecialCodeIndex::VEOF],
        _ => DEFAULT_EOF,
    }
}

/// Terminal settings put back when dropped.
#[derive(Debug)]
pub struct RestoreOnDrop<'fd> {
    fd: BorrowedFd<'fd>,
    saved: Termios,
}

impl Drop for RestoreOnDrop<'_> {
    fn drop(&mut self) {
        if let Err(e) = rustix::termios::tcsetattr(self.fd, OptionalActions::Now, &self.saved) {
            tracing::debug!(error = %io::Error::from(e), "restoring terminal settings failed");
        }
    }
}

/// Turns echo off on the terminal on `fd` (but keeps the newline echoed, so the next
/// output starts on a line of its own), until the returned guard is dropped. Errors if
/// `fd` is not a terminal.
pub fn echo_off(fd: BorrowedFd<'_>) -> io::Result<RestoreOnDrop<'_>> {
    let saved = rustix::termios::tcgetattr(fd)?;
    let mut quiet = saved.clone();
    quiet.local_modes.remove(LocalModes::ECHO);
    quiet.local_modes.insert(LocalModes::ECHONL);
    rustix::termios::tcsetattr(fd, OptionalActions::Now, &quiet)?;
    Ok(RestoreOnDrop { fd, saved })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::pty;

    #[test]
    fn window_size_round_trips_through_master_and_slave() {
        let p = pty::open(TermSize { cols: 100, rows: 30 }).unwrap();
        assert_eq!(window_size(&p.slave).unwrap(), TermSize { cols: 100, rows: 30 });
        set_window_size(&p.master, TermSize { cols: 133, rows: 44 }).unwrap();
        assert_eq!(window_size(&p.slave).unwrap(), TermSize { cols: 133, rows: 44 });
        assert_eq!(window_size(&p.master).unwrap(), TermSize { cols: 133, rows: 44 });
    }

    #[test]
    fn eof_char_follows_the_slaves_settings() {
        let p = pty::open(TermSize { cols: 80, rows: 24 }).unwrap();
        assert_eq!(eof_char(&p.master), 4);
        let mut t = rustix::termios::tcgetattr(&p.slave).unwrap();
        t.special_codes[SpecialCodeIndex::VEOF] = 1;
        rustix::termios::tcsetattr(&p.slave, OptionalActions::Now, &t).unwrap();
        assert_eq!(eof_char(&p.master), 1);
        let (r, _w) = std::io::pipe().unwrap();
        assert_eq!(eof_char(&r), DEFAULT_EOF, "not a terminal: the default");
    }

    #[test]
    fn echo_off_is_undone_on_drop() {
        let p = pty::open(TermSize { cols: 80, rows: 24 }).unwrap();
        let echo = || rustix::termios::tcgetattr(&p.slave).unwrap().local_modes;
        assert!(echo().contains(LocalModes::ECHO));
        let guard = echo_off(p.slave.as_fd()).unwrap();
        assert!(!echo().contains(LocalModes::ECHO) && echo().contains(LocalModes::ECHONL));
        drop(guard);
        assert!(echo().contains(LocalModes::ECHO));
        let (r, _w) = std::io::pipe().unwrap();
        assert!(echo_off(r.as_fd()).is_err(), "a pipe is no terminal");
    }
}
