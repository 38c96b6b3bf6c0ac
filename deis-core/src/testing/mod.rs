//! Conformance suites for implementors of the traits (feature `test-util`).
//!
//! Every implementation, embedded default or adapter, runs the suite of its trait in
//! its own tests, e.g. `deis_core::testing::store_suite(|| async { MyStore::new() }).await`.

mod logs;
mod scheduler;
mod store;
mod tty;

pub use logs::*;
pub use scheduler::*;
pub use store::*;
pub use tty::*;
