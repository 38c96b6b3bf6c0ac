//! The examples as an integrator runs them, and the shared conformance suites over the
//! example implementations: one test binary (one link of the SDK) with a module each.

mod examples;
mod hello_app;
mod suites;
