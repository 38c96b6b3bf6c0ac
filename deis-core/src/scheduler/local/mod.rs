//! [`LocalScheduler`]: units as child processes on this machine.
// Implemented by the scheduler helper.

/// Settings of the local scheduler.
#[derive(Debug, Clone)]
pub struct LocalSchedulerConfig {}

/// The local scheduler.
#[derive(Debug)]
pub struct LocalScheduler {}
