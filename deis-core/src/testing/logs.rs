//! Conformance suite of the `LogStore` trait.
