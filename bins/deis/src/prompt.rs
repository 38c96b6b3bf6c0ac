//! Interactive questions, only ever asked when stdin is a terminal.

use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::os::fd::AsFd as _;

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

/// Asks for a password without echoing it.
pub fn ask_password(question: &str) -> std::io::Result<String> {
    eprint!("{question}");
    std::io::stderr().flush()?;
    let stdin = std::io::stdin();
    // Not a terminal (or its settings can't be changed): read the line as it comes.
    let guard = deis_core::sys::term::echo_off(stdin.as_fd()).ok();
    let answer = read_line();
    drop(guard);
    answer
}
