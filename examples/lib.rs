//! Examples for integrators; see the `[[example]]` targets:
//!
//! - `cargo run -p deis-examples --example embedded_platform`: the whole platform in
//!   your own process, driven through the typed API client;
//! - `cargo run -p deis-examples --example custom_scheduler`: a `Scheduler` of your
//!   own (here a decorator that audits every call), proven by the conformance suite.
