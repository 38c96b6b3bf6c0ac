//! Raw mode for the local terminal, restored on every way out.
//!
//! [`RawMode::enter`] switches stdin's terminal to raw mode (no echo, no line editing,
//! no signals from keys: Ctrl-C and Ctrl-D travel to the remote command) and returns a
//! guard that restores the saved settings when dropped. The saved settings are also
//! kept in a process-wide slot so that a panic (hook installed by `enter`) and the
//! signals that end the CLI (SIGTERM, SIGHUP, SIGINT, SIGQUIT: see
//! [`restore_now`]) put the terminal back too.

use std::io;
use std::sync::Mutex;

/// The settings to put back, shared with the panic hook and signal handling.
static SAVED: Mutex<Option<(libc::c_int, libc::termios)>> = Mutex::new(None);

/// Whether `fd` is a terminal.
pub fn is_tty(fd: libc::c_int) -> bool {
    // SAFETY: isatty only reads the descriptor's state.
    unsafe { libc::isatty(fd) == 1 }
}

/// The size of the terminal on `fd` as (columns, rows), if it is one.
pub fn size(fd: libc::c_int) -> Option<(u16, u16)> {
    // SAFETY: TIOCGWINSZ writes a winsize into the zeroed struct we own.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) };
    (rc == 0 && ws.ws_col > 0 && ws.ws_row > 0).then_some((ws.ws_col, ws.ws_row))
}

/// Restores the saved terminal settings now, if raw mode is on. Safe to call more
/// than once and from any thread.
pub fn restore_now() {
    let saved = match SAVED.lock() {
        Ok(mut g) => g.take(),
        Err(poisoned) => poisoned.into_inner().take(),
    };
    if let Some((fd, termios)) = saved {
        // SAFETY: termios is a value previously read by tcgetattr for this fd.
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &termios) };
    }
}

/// Raw mode on a terminal; dropping it restores the previous settings.
#[derive(Debug)]
pub struct RawMode {
    _private: (),
}

impl RawMode {
    /// Puts the terminal on `fd` into raw mode. Errors if `fd` is not a terminal.
    pub fn enter(fd: libc::c_int) -> io::Result<Self> {
        // SAFETY: tcgetattr fills the zeroed termios we own.
        let mut termios: libc::termios = unsafe { std::mem::zeroed() };
        if unsafe { libc::tcgetattr(fd, &mut termios) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let original = termios;
        // SAFETY: cfmakeraw edits the struct in place.
        unsafe { libc::cfmakeraw(&mut termios) };
        *SAVED.lock().unwrap_or_else(|p| p.into_inner()) = Some((fd, original));
        install_panic_hook();
        // SAFETY: termios is a valid settings struct for this fd.
        if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &termios) } != 0 {
            let err = io::Error::last_os_error();
            restore_now();
            return Err(err);
        }
        Ok(Self { _private: () })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        restore_now();
    }
}

fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore_now();
            previous(info);
        }));
    });
}
