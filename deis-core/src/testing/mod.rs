//! Conformance suites for implementors of the traits (feature `test-util`).
