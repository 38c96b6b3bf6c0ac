//! Conformance suite of the `Scheduler` trait.
