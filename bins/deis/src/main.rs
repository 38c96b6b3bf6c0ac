//! `deis`: the command-line client of the Deis controller (Workflow command names).
//!
//! Errors print `Error: <message>` on stderr and exit 1; usage errors exit 2.

mod args;
mod cli;
mod commands;
mod output;
mod profile;
mod prompt;

use clap::Parser as _;

fn main() {
    let cli = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("Error: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(commands::run(cli)) {
        eprintln!("Error: {e}");
        std::process::exit(e.exit_code());
    }
}
