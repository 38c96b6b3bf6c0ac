//! Source archives are uploaded by `deis deploy`: hostile bytes must be rejected
//! cleanly, and whatever is accepted must stay inside the app directory.
#![no_main]
use deis_core::artifact::{ArchiveLimits, check_archive_with};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Small limits keep each run fast while exercising every limit path.
    let limits = ArchiveLimits { max_entries: 64, max_unpacked_bytes: 1 << 20, max_path_bytes: 256 };
    let _ = check_archive_with(data, &limits);
});
