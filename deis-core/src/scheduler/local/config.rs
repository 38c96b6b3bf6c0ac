//! Settings of the local scheduler.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::output::{TracingOutput, UnitOutput};
use crate::scheduler::Capacity;
use crate::sys::Isolation;

/// Name of the file in [`LocalSchedulerConfig::state_dir`] listing the process groups of
/// live units, so that a scheduler started after a crash can kill what the previous one
/// left running.
pub const STATE_FILE: &str = "local-units.json";

/// Settings of the [`LocalScheduler`](super::LocalScheduler).
///
/// [`LocalSchedulerConfig::new`] gives the defaults; adjust the public fields after.
#[derive(Debug, Clone)]
pub struct LocalSchedulerConfig {
    /// Directory for the scheduler's own state ([`STATE_FILE`]); created if missing.
    pub state_dir: PathBuf,
    /// The name units report as their node (default: this machine's hostname).
    pub node_name: String,
    /// What this machine offers to units; `apply` refuses specs that would exceed it
    /// (default: [`Capacity::of_this_machine`]).
    pub capacity: Capacity,
    /// How long a unit has to exit after `SIGTERM` before its process group gets
    /// `SIGKILL` (default 10 s).
    pub stop_timeout: Duration,
    /// How long a new unit may take to become ready during a rolling replacement before
    /// the replacement is abandoned and the old unit kept (default 60 s).
    pub ready_timeout: Duration,
    /// How long a replaced or scaled-down unit keeps running after it was marked down,
    /// so routers drop it and in-flight requests finish (default 1 s).
    pub drain_delay: Duration,
    /// Where units' stdout and stderr lines go (default: [`TracingOutput`]).
    pub output: Arc<dyn UnitOutput>,
    /// How units are confined (default: everything this machine allows, hiding
    /// nothing; the platform hides its data directory).
    pub isolation: Isolation,
}

impl LocalSchedulerConfig {
    /// Defaults, with state kept in `state_dir`.
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        Self {
            state_dir: state_dir.into(),
            node_name: hostname(),
            capacity: Capacity::of_this_machine(),
            stop_timeout: Duration::from_secs(10),
            ready_timeout: Duration::from_secs(60),
            drain_delay: Duration::from_secs(1),
            output: Arc::new(TracingOutput),
            isolation: Isolation::default(),
        }
    }
}

/// This machine's hostname, or `localhost` when it is empty or not UTF-8.
pub fn hostname() -> String {
    match rustix::system::uname().nodename().to_str() {
        Ok(s) if !s.is_empty() => s.to_owned(),
        _ => "localhost".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let c = LocalSchedulerConfig::new("/tmp/x");
        assert_eq!(c.stop_timeout, Duration::from_secs(10));
        assert_eq!(c.ready_timeout, Duration::from_secs(60));
        assert_eq!(c.drain_delay, Duration::from_secs(1));
        assert!(!c.node_name.is_empty());
        assert!(c.capacity.cpu_millis >= 1000);
    }
}
