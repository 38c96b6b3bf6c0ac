//! The operating-system layer of the embedded backends (Linux; feature `embedded`).
//!
//! Everything the [`LocalScheduler`](crate::scheduler::LocalScheduler), the
//! [`LocalTtyBroker`](crate::tty::LocalTtyBroker) and the reference binaries do at the
//! OS, in one place, on [`rustix`] (no raw `libc`):
//!
//! | module | concern |
//! |---|---|
//! | [`process`] | start a program as the leader of a new session that dies with us ([`SpawnSpec`], [`spawn`]) |
//! | [`prexec`] | what a child does between fork and exec: session, cgroups, namespaces, identity, capabilities |
//! | [`cgroup`] | a cgroup per unit with its memory, cpu and pids limits (v2, or v1) |
//! | [`isolation`] | [`Isolation`] and [`Confinement`]: what units and sessions are confined with, as this machine allows |
//! | [`reaper`] | wait for a child on a small thread of its own, so every child is reaped |
//! | [`procfs`] | read `/proc`: a process's state, group, session and start time; members of a group or session; processes by environment variable |
//! | [`group`] | signal and end process groups and sessions; [`TrackedGroup`]: registry entry plus watchdog of a running group |
//! | [`registry`] | [`GroupRegistry`]: the state file listing live groups, so a successor kills what a crashed predecessor left |
//! | [`watchdog`] | [`GroupWatchdog`]: a process that kills a group the moment we die |
//! | [`pty`] | open a pseudo-terminal of a given size |
//! | [`term`] | terminal settings: window size, EOF character, echo off |
//! | [`fifo`] | named pipes (the builder's channel to its git hooks) |
//! | [`fd`] | [`AsyncFdIo`]: non-blocking descriptors (pipes, terminal masters) on the tokio reactor |
//! | [`signals`] | [`shutdown_signal`]: the SIGTERM/SIGINT every daemon waits for |
//!
//! Process ids are `u32` (as in [`std::process::Child::id`]); signals are
//! [`rustix::process::Signal`], re-exported as [`Signal`].

pub mod cgroup;
pub mod fd;
pub mod fifo;
pub mod group;
pub mod isolation;
pub mod prexec;
pub mod process;
pub mod procfs;
pub mod pty;
pub mod reaper;
pub mod registry;
pub mod signals;
pub mod term;
pub mod watchdog;

pub use self::fd::AsyncFdIo;
pub use self::group::TrackedGroup;
pub use self::isolation::{Confined, Confinement, Isolation};
pub use self::process::{Child, ExitInfo, SpawnError, SpawnSpec, Stdio, spawn};
pub use self::registry::GroupRegistry;
pub use self::signals::shutdown_signal;
pub use self::watchdog::GroupWatchdog;
pub use rustix::process::Signal;

/// `pid` as a rustix [`Pid`](rustix::process::Pid) if it can name a process group we
/// may signal: 0 and 1 can't (`kill(-1)` would signal every process), nor can values
/// beyond `i32`.
fn group_pid(pid: u32) -> Option<rustix::process::Pid> {
    i32::try_from(pid).ok().filter(|&p| p > 1).and_then(rustix::process::Pid::from_raw)
}
