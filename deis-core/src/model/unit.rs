use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::{AppName, ProcessType};
use crate::time::Timestamp;

/// The life of a unit, as schedulers report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnitState {
    /// Known but not started yet.
    Initialized,
    /// Started, not ready yet (port not open, healthcheck not passing).
    Created,
    /// Running and ready; web units receive traffic.
    Up,
    /// Stopped on purpose (scale down, replaced, app destroyed).
    Down,
    /// Exited on its own; will be restarted with backoff.
    Crashed,
    /// Gone for good.
    Destroyed,
    /// Cannot be started (e.g. its command cannot be spawned).
    Error,
}

impl std::fmt::Display for UnitState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            Self::Initialized => "initialized",
            Self::Created => "created",
            Self::Up => "up",
            Self::Down => "down",
            Self::Crashed => "crashed",
            Self::Destroyed => "destroyed",
            Self::Error => "error",
        };
        f.write_str(s)
    }
}

/// One running (or wanted) instance of a process type of an app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unit {
    /// `<app>.<type>.<n>`, e.g. `hello.web.1`.
    pub name: String,
    /// Distinguishes two instances with the same name during a rolling replacement.
    pub instance: u64,
    /// The app.
    pub app: AppName,
    /// Process type.
    pub proc_type: ProcessType,
    /// The `n` in the name, from 1.
    pub number: u32,
    /// Release version the unit runs.
    pub release: u64,
    /// Current state.
    pub state: UnitState,
    /// Where the unit listens (`PORT`), if it has a port.
    pub address: Option<SocketAddr>,
    /// Which node runs it.
    pub node: String,
    /// When the current process started.
    pub started: Option<Timestamp>,
    /// How often it has been restarted after crashing.
    pub restarts: u32,
    /// Process id, where the backend has one.
    pub pid: Option<u32>,
}

impl Unit {
    /// The canonical unit name `<app>.<type>.<n>`.
    pub fn name_for(app: &str, proc_type: &str, number: u32) -> String {
        format!("{app}.{proc_type}.{number}")
    }
}
