//! Conformance suite of the `TtyBroker` trait.
