//! The JSON documents of images, parsed with size limits: a docker-archive's
//! `manifest.json`, an image config's `rootfs.diff_ids`, an OCI layout's `index.json`
//! and an OCI image manifest. Every input comes from outside (a file the user names);
//! each parser refuses more than [`MAX_JSON_BYTES`] and more than [`MAX_LAYERS`] layers.

use serde::{Deserialize, Serialize};

use super::ImageError;

/// Largest JSON document read from an image (manifests, indexes, configs).
pub const MAX_JSON_BYTES: usize = 4 << 20;
/// Most layers an image may have (Docker itself stops at 127).
pub const MAX_LAYERS: usize = 256;

/// OCI image manifest media type.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index media type.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker image manifest (schema 2) media type.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list media type.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// OCI image config media type.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Uncompressed OCI layer.
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// Gzipped OCI layer.
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// A content descriptor (OCI image spec).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// What the blob is.
    pub media_type: String,
    /// `sha256:<64 hex>`.
    pub digest: String,
    /// Its length in bytes.
    pub size: u64,
    /// Platform of an index entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// Annotations (the tag of an index entry is `org.opencontainers.image.ref.name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<std::collections::BTreeMap<String, String>>,
}

/// The platform of an index entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    /// e.g. `amd64`.
    pub architecture: String,
    /// e.g. `linux`.
    pub os: String,
}

/// An OCI image manifest (or Docker schema 2, which has the same shape).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageManifest {
    /// Always 2.
    pub schema_version: u32,
    /// The manifest's media type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The image config blob.
    pub config: Descriptor,
    /// The layer blobs, base first.
    pub layers: Vec<Descriptor>,
}

/// An OCI image index (or Docker manifest list); also an OCI layout's `index.json`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageIndex {
    /// Always 2.
    pub schema_version: u32,
    /// The manifests it lists.
    pub manifests: Vec<Descriptor>,
}

/// One image of a docker-archive's `manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ArchiveEntry {
    /// Path of the config in the archive.
    pub config: String,
    /// Its tags.
    #[serde(default)]
    pub repo_tags: Option<Vec<String>>,
    /// Paths of the layer tars in the archive, base first.
    pub layers: Vec<String>,
}

#[derive(Deserialize)]
struct ConfigRootfs {
    rootfs: Rootfs,
}

#[derive(Deserialize)]
struct Rootfs {
    diff_ids: Vec<String>,
}

fn bounded<'a, T: Deserialize<'a>>(what: &str, bytes: &'a [u8]) -> Result<T, ImageError> {
    if bytes.len() > MAX_JSON_BYTES {
        return Err(ImageError::TooLarge(format!("{what} is {} bytes; the limit is {MAX_JSON_BYTES}", bytes.len())));
    }
    serde_json::from_slice(bytes).map_err(|e| ImageError::Malformed(format!("{what} is not valid: {e}")))
}

/// Checks `digest` is `sha256:<64 lowercase hex>` (the only algorithm pushed).
pub fn check_digest(what: &str, digest: &str) -> Result<(), ImageError> {
    let hex = digest.strip_prefix("sha256:").unwrap_or_default();
    if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        Ok(())
    } else {
        Err(ImageError::Malformed(format!("{what} has the digest {digest:?}; expected sha256:<64 hex digits>")))
    }
}

fn check_layers(what: &str, n: usize) -> Result<(), ImageError> {
    match n {
        0 => Err(ImageError::Malformed(format!("{what} lists no layers"))),
        n if n > MAX_LAYERS => Err(ImageError::TooLarge(format!("{what} lists {n} layers; the limit is {MAX_LAYERS}"))),
        _ => Ok(()),
    }
}

/// A docker-archive's `manifest.json`: exactly one image (save one image at a time).
pub fn parse_archive_manifest(bytes: &[u8]) -> Result<ArchiveEntry, ImageError> {
    let mut entries: Vec<ArchiveEntry> = bounded("manifest.json", bytes)?;
    if entries.len() != 1 {
        return Err(ImageError::Malformed(format!(
            "the archive holds {} images; save exactly one (docker save IMAGE)",
            entries.len()
        )));
    }
    let entry = entries.remove(0);
    check_layers("manifest.json", entry.layers.len())?;
    Ok(entry)
}

/// The layer digests (`rootfs.diff_ids`) of an image config.
pub fn parse_diff_ids(bytes: &[u8]) -> Result<Vec<String>, ImageError> {
    let config: ConfigRootfs = bounded("the image config", bytes)?;
    check_layers("the image config", config.rootfs.diff_ids.len())?;
    for id in &config.rootfs.diff_ids {
        check_digest("a layer of the image config", id)?;
    }
    Ok(config.rootfs.diff_ids)
}

/// An image index (`index.json` of an OCI layout, or a fetched index).
pub fn parse_index(bytes: &[u8]) -> Result<ImageIndex, ImageError> {
    let index: ImageIndex = bounded("index.json", bytes)?;
    if index.manifests.len() > MAX_LAYERS {
        return Err(ImageError::TooLarge(format!("the index lists {} manifests", index.manifests.len())));
    }
    for m in &index.manifests {
        check_digest("an index entry", &m.digest)?;
    }
    Ok(index)
}

/// An image manifest; its config and layers must have sha256 digests.
pub fn parse_manifest(bytes: &[u8]) -> Result<ImageManifest, ImageError> {
    let manifest: ImageManifest = bounded("the image manifest", bytes)?;
    if manifest.schema_version != 2 {
        return Err(ImageError::Malformed(format!(
            "the image manifest has schemaVersion {}; only 2 is supported",
            manifest.schema_version
        )));
    }
    check_layers("the image manifest", manifest.layers.len())?;
    check_digest("the image config", &manifest.config.digest)?;
    for l in &manifest.layers {
        check_digest("a layer", &l.digest)?;
    }
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn archive_manifest_needs_one_image_with_layers() {
        let one = br#"[{"Config":"c.json","RepoTags":["a:b"],"Layers":["l/layer.tar"]}]"#;
        assert_eq!(parse_archive_manifest(one).unwrap().layers, vec!["l/layer.tar"]);
        let two = br#"[{"Config":"c","Layers":["l"]},{"Config":"d","Layers":["l"]}]"#;
        assert!(matches!(parse_archive_manifest(two), Err(ImageError::Malformed(m)) if m.contains("2 images")));
        let none = br#"[{"Config":"c","Layers":[]}]"#;
        assert!(matches!(parse_archive_manifest(none), Err(ImageError::Malformed(m)) if m.contains("no layers")));
        let big = vec![b' '; MAX_JSON_BYTES + 1];
        assert!(matches!(parse_archive_manifest(&big), Err(ImageError::TooLarge(_))));
    }

    #[test]
    fn manifests_need_sha256_digests() {
        let ok = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"x","digest":"{D}","size":2}},"layers":[{{"mediaType":"y","digest":"{D}","size":3}}]}}"#
        );
        assert_eq!(parse_manifest(ok.as_bytes()).unwrap().layers[0].size, 3);
        let bad = ok.replacen(D, "sha256:XYZ", 1);
        assert!(matches!(parse_manifest(bad.as_bytes()), Err(ImageError::Malformed(m)) if m.contains("XYZ")));
        let v1 = ok.replace("\"schemaVersion\":2", "\"schemaVersion\":1");
        assert!(parse_manifest(v1.as_bytes()).is_err());
    }

    #[test]
    fn diff_ids_are_checked() {
        let config = format!(r#"{{"architecture":"amd64","rootfs":{{"type":"layers","diff_ids":["{D}"]}}}}"#);
        assert_eq!(parse_diff_ids(config.as_bytes()).unwrap(), vec![D.to_string()]);
        assert!(parse_diff_ids(br#"{"rootfs":{"type":"layers","diff_ids":["md5:1"]}}"#).is_err());
    }

    proptest::proptest! {
        /// Arbitrary bytes never panic a parser (the fuzz target `image_documents`
        /// goes further).
        #[test]
        fn any_bytes_are_refused_or_parsed(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2048)) {
            let _ = parse_archive_manifest(&data);
            let _ = parse_diff_ids(&data);
            let _ = parse_index(&data);
            let _ = parse_manifest(&data);
            let _ = crate::registry::image::index_tar(std::io::Cursor::new(&data), data.len() as u64);
        }
    }
}
