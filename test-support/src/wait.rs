//! Polling a condition until a deadline: [`wait_for`] (blocking) and [`eventually`]
//! (async). Tests wait on conditions, never on fixed sleeps.

use std::fmt::Debug;
use std::future::Future;
use std::time::{Duration, Instant};

/// How often [`wait_for`] polls.
const SYNC_POLL: Duration = Duration::from_millis(20);
/// How often [`eventually`] polls.
const ASYNC_POLL: Duration = Duration::from_millis(10);

/// What one poll found: done with a value, or not yet (with what was seen, if any).
///
/// Implemented for `Option<T>` (`None`: not yet) and `Result<T, E>` (`Err(seen)`: not
/// yet, and `seen` goes into the timeout message).
pub trait Attempt {
    /// The value once done.
    type Output;
    /// `Ok(value)` when done, else what was seen (for the timeout message).
    fn into_outcome(self) -> Result<Self::Output, Option<String>>;
}

impl<T> Attempt for Option<T> {
    type Output = T;
    fn into_outcome(self) -> Result<T, Option<String>> {
        self.ok_or(None)
    }
}

impl<T, E: Debug> Attempt for Result<T, E> {
    type Output = T;
    fn into_outcome(self) -> Result<T, Option<String>> {
        self.map_err(|seen| Some(format!("{seen:?}")))
    }
}

fn timed_out(timeout: Duration, what: &str, seen: Option<String>) -> ! {
    match seen {
        Some(seen) => panic!("timed out after {timeout:?} waiting for {what}; last seen: {seen}"),
        None => panic!("timed out after {timeout:?} waiting for {what}"),
    }
}

/// Polls `check` (blocking) until it is done; panics after `timeout` naming `what` (and
/// the last thing seen, when `check` returns a `Result`).
pub fn wait_for<A: Attempt>(timeout: Duration, what: &str, mut check: impl FnMut() -> A) -> A::Output {
    let deadline = Instant::now() + timeout;
    loop {
        match check().into_outcome() {
            Ok(v) => return v,
            Err(seen) if Instant::now() >= deadline => timed_out(timeout, what, seen),
            Err(_) => std::thread::sleep(SYNC_POLL),
        }
    }
}

/// Polls the future `check` returns until it is done; panics after `timeout` naming
/// `what` (and the last thing seen, when `check` returns a `Result`).
pub async fn eventually<A, F, Fut>(timeout: Duration, what: &str, mut check: F) -> A::Output
where
    A: Attempt,
    F: FnMut() -> Fut,
    Fut: Future<Output = A>,
{
    // Tokio's clock, so a test with paused time times out in its own time.
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match check().await.into_outcome() {
            Ok(v) => return v,
            Err(seen) if tokio::time::Instant::now() >= deadline => timed_out(timeout, what, seen),
            Err(_) => tokio::time::sleep(ASYNC_POLL).await,
        }
    }
}
