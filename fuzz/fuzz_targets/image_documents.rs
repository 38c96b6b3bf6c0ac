//! `deis push` reads images users name: a docker-archive's tar index and every JSON
//! document of an image (`manifest.json`, image configs, OCI `index.json`, image
//! manifests) come from outside and must be refused cleanly, within their limits.
#![no_main]
use deis_sdk::registry::{image, manifest};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = image::index_tar(std::io::Cursor::new(data), data.len() as u64);
    let _ = manifest::parse_archive_manifest(data);
    let _ = manifest::parse_diff_ids(data);
    let _ = manifest::parse_index(data);
    if let Ok(m) = manifest::parse_manifest(data) {
        assert!(!m.layers.is_empty() && m.layers.len() <= manifest::MAX_LAYERS);
    }
});
