//! Deis v1 dumps come from outside (`deis-migrate --from-dump`, or an etcd's answer):
//! parsing and sorting never panic, every key parsed is an absolute path, and a key
//! is sorted exactly once.
#![no_main]
use std::time::{Duration, UNIX_EPOCH};

use deis_sdk::migrate::classify::V1Keyspace;
use deis_sdk::migrate::source::{TtlBasis, parse_dump};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let basis = if data.first().is_some_and(|b| b % 2 == 0) { TtlBasis::Live } else { TtlBasis::Dump(now) };
    let Ok(keys) = parse_dump(data, 1 << 20, basis) else { return };
    assert!(keys.iter().all(|k| k.key.starts_with('/')));
    let total = keys.len();
    let ks = V1Keyspace::classify(keys);
    assert_eq!(ks.total, total);
    let config: usize = ks.apps.values().map(|a| a.config.len()).sum();
    let certs: usize = ks.certs.values().map(|c| usize::from(c.cert.is_some()) + usize::from(c.key.is_some())).sum();
    let keys: usize = ks.users.values().map(|u| u.len()).sum();
    let sorted = config + ks.domains.len() + certs + keys + ks.settings.len() + ks.endpoints.len() + ks.registrations.len();
    // Duplicate v1 keys (a crafted dump) collapse in the maps: never more than read.
    assert!(sorted + ks.decided.len() <= total);
});
