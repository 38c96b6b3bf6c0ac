//! Memory and cpu limits come from `deis limits:set`.
#![no_main]
use deis_core::model::limits::{format_memory, parse_cpu, parse_memory};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok((req, lim)) = parse_memory(text) {
            assert!(req <= lim);
            assert_eq!(parse_memory(&format_memory(req)).unwrap().0, req);
        }
        if let Ok((req, lim)) = parse_cpu(text) {
            assert!(req <= lim);
        }
    }
});
