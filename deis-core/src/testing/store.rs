//! Conformance suite of the `Store` trait.
