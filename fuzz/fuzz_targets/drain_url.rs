//! Drain URLs come from API requests and stored records: parsing never panics, and
//! what parses displays in a canonical form that parses back to the same drain.
#![no_main]
use deis_sdk::logger::DrainUrl;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(url) = DrainUrl::parse(text) {
        let canonical = url.to_string();
        let again = DrainUrl::parse(&canonical).unwrap();
        assert_eq!(again, url);
        assert_eq!(again.to_string(), canonical, "the canonical form is stable");
        assert!(url.port() != 0);
    }
});
