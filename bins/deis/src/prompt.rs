//! Interactive questions, only ever asked when stdin is a terminal.

use std::io::{BufRead as _, IsTerminal as _, Write as _};

/// Longest answer read.
const MAX_ANSWER: usize = 4096;

/// Whether stdin is a terminal (so we may ask).
pub fn interactive() -> bool {
    std::io::stdin().is_terminal()
}

fn read_line() -> std::io::Result<String> {
    let mut line = String::new();
    std::io::Read::take(std::io::stdin().lock(), MAX_ANSWER as u64).read_line(&mut line)?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

/// Asks `question` on stderr and reads one line from stdin.
pub fn ask(question: &str) -> std::io::Result<String> {
    eprint!("{question}");
    std::io::stderr().flush()?;
    read_line()
}

/// Restores the terminal's settings when dropped.
struct EchoOff {
    saved: libc::termios,
}

impl EchoOff {
    fn new() -> Option<Self> {
        // SAFETY: a zeroed termios is a valid value to be filled by tcgetattr; fd 0 is
        // stdin, and we only call tcsetattr with settings tcgetattr returned (minus ECHO).
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut t) != 0 {
                return None;
            }
            let saved = t;
            t.c_lflag &= !libc::ECHO;
            t.c_lflag |= libc::ECHONL;
            if libc::tcsetattr(0, libc::TCSANOW, &t) != 0 {
                return None;
            }
            Some(Self { saved })
        }
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        // SAFETY: restores the settings read from the same fd in `new`.
        unsafe {
            libc::tcsetattr(0, libc::TCSANOW, &self.saved);
        }
    }
}

impl std::fmt::Debug for EchoOff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EchoOff")
    }
}

/// Asks for a password without echoing it.
pub fn ask_password(question: &str) -> std::io::Result<String> {
    eprint!("{question}");
    std::io::stderr().flush()?;
    let guard = EchoOff::new();
    let answer = read_line();
    drop(guard);
    answer
}
