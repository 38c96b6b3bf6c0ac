//! What a platform sends an OSB broker: JSON bodies (provision, update, bind, and the
//! catalog and last-operation bodies our client reads), query strings, the API version
//! and identity headers. `deis_sdk::osb::request::fuzz_one` asserts that nothing panics
//! and that what parses re-serialises to JSON that parses again.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    deis_sdk::osb::request::fuzz_one(data);
});
