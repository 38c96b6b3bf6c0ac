//! Inputs of the access endpoints: SSH public keys (`POST /v2/keys/`) and allow-list
//! entries (`/whitelist/`). Parsing never panics; what parses is consistent: a key's
//! fingerprint is that of its blob, and an address range displays in a form that
//! parses back to itself and contains its own network address.
#![no_main]
use deis_core::{AddressRange, PublicKey, fingerprint_of_blob};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(key) = PublicKey::parse(text) {
        assert_eq!(key.fingerprint(), fingerprint_of_blob(&key.blob));
        assert!(text.contains(&key.algorithm));
    }
    if let Ok(range) = text.parse::<AddressRange>() {
        let shown = range.to_string();
        assert_eq!(shown.parse::<AddressRange>().unwrap(), range);
        assert!(range.contains(range.network()));
    }
});
