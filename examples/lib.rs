//! Parts an integrator writes, and programs that embed the platform with them.
//!
//! The parts, each passing its trait's conformance suite (`tests/suites.rs`):
//!
//! - [`MemoryStore`]: a `Store` keeping every record in memory;
//! - [`TinyLogStore`]: the smallest `LogStore` that keeps the trait's promises;
//! - [`AuditingScheduler`]: a `Scheduler` decorator that audits every change request;
//! - [`ApiKeyBroker`]: a service broker `Backend` handing out API keys.
//!
//! The programs (`[[example]]` targets, run by `tests/examples.rs`):
//!
//! - `cargo run -p deis-examples --example embedded_platform`: the whole platform in
//!   your own process on the three parts above, driven through the typed API client;
//! - `cargo run -p deis-examples --example custom_scheduler`: the scheduler proven by
//!   the conformance suite.

mod api_key_broker;
mod auditing_scheduler;
mod memory_store;
mod tiny_log_store;

pub use api_key_broker::ApiKeyBroker;
pub use auditing_scheduler::AuditingScheduler;
pub use memory_store::MemoryStore;
pub use tiny_log_store::TinyLogStore;
