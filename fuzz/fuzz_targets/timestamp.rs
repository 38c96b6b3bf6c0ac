//! Timestamps come from API bodies and stored records: parsing never panics, and what
//! parses renders as RFC 3339 that parses back to the same instant.
#![no_main]
use deis_core::time::Timestamp;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(t) = text.parse::<Timestamp>() {
        let rendered = t.to_string();
        assert!(rendered.ends_with('Z') && rendered.len() == 20, "{rendered}");
        assert_eq!(rendered.parse::<Timestamp>().unwrap(), t);
    }
});
