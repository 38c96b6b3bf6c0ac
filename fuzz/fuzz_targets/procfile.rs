//! Procfiles come from users' source trees.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(procs) = deis_core::model::procfile::parse(text) {
            // Whatever parses re-parses to the same thing.
            let again: String = procs.iter().map(|(k, v)| format!("{k}: {v}\n")).collect();
            assert_eq!(deis_core::model::procfile::parse(&again).unwrap(), procs);
        }
    }
});
