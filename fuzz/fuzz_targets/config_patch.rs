//! Config patches are the JSON bodies of `POST /v2/apps/<app>/config/`.
#![no_main]
use deis_core::{Config, ConfigPatch};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(patch) = serde_json::from_slice::<ConfigPatch>(data) {
        let base = Config::initial(&"fuzz".parse().unwrap(), "fuzzer");
        if let Ok((next, _summary)) = base.apply(&patch, "fuzzer") {
            // Every accepted value is valid and survives a JSON round trip.
            for (k, v) in &next.values {
                deis_core::model::validate::config_key(k).unwrap();
                deis_core::model::validate::config_value(k, v).unwrap();
            }
            let json = serde_json::to_vec(&next).unwrap();
            let back: Config = serde_json::from_slice(&json).unwrap();
            assert_eq!(back, next);
        }
    }
});
