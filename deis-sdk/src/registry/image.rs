//! [`LocalImage`]: an image on this machine, ready to push: from a docker-archive
//! tarball (what `docker save` writes, in its classic layout or its OCI layout) or from
//! an OCI image layout directory. Only the JSON documents are read into memory (with
//! [limits](super::manifest)); layers are streamed from their file when pushed.
//!
//! Reading checks what can be checked without reading every layer: the archive's
//! entries are whole (a truncated archive is refused), every blob the manifest names is
//! there with its size, and digests are well formed. That each blob's bytes match its
//! digest is checked by the registry when the blob is committed: a mismatch fails the
//! push of that blob and nothing after it (no manifest, no build).

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use super::ImageError;
use super::manifest::{
    self, DOCKER_LIST, Descriptor, MAX_JSON_BYTES, OCI_CONFIG, OCI_INDEX, OCI_LAYER_GZIP, OCI_LAYER_TAR, OCI_MANIFEST,
};

/// Exports `image` from a Docker engine (`docker save`) into a temporary file kept
/// for as long as the returned image lives (feature `docker`).
#[cfg(feature = "docker")]
pub async fn export_from_engine(docker: &bollard::Docker, image: &str) -> Result<LocalImage, EngineExportError> {
    use futures_util::StreamExt;
    use tokio::io::AsyncWriteExt;
    let spool = tempfile::NamedTempFile::new().map_err(|e| EngineExportError::Spool(e.to_string()))?;
    let mut file = tokio::fs::File::from_std(spool.reopen().map_err(|e| EngineExportError::Spool(e.to_string()))?);
    let mut export = docker.export_image(image);
    while let Some(chunk) = export.next().await {
        let chunk = chunk.map_err(|e| EngineExportError::Engine(e.to_string()))?;
        file.write_all(&chunk).await.map_err(|e| EngineExportError::Spool(e.to_string()))?;
    }
    file.flush().await.map_err(|e| EngineExportError::Spool(e.to_string()))?;
    tokio::task::spawn_blocking(move || LocalImage::from_spooled_archive(spool))
        .await
        .map_err(|e| EngineExportError::Spool(e.to_string()))?
        .map_err(EngineExportError::Image)
}

/// Why [`export_from_engine`] failed.
#[cfg(feature = "docker")]
#[derive(Debug, thiserror::Error)]
pub enum EngineExportError {
    /// The engine could not save the image.
    #[error("the Docker engine could not save it: {0}")]
    Engine(String),
    /// The temporary file could not be written.
    #[error("a temporary file: {0}")]
    Spool(String),
    /// What the engine saved could not be read.
    #[error(transparent)]
    Image(ImageError),
}

/// Most entries a docker-archive may hold.
pub const MAX_ARCHIVE_ENTRIES: usize = 100_000;

/// Where a blob's bytes are.
#[derive(Debug, Clone)]
enum Bytes {
    /// `len` bytes from `offset` of a file.
    File { path: PathBuf, offset: u64 },
    /// In memory (configs and manifests).
    Memory(bytes::Bytes),
    /// Not at hand: known only by its descriptor (an image rebuilt from its manifest);
    /// pushing it works only where the registry has it or can mount it.
    Absent,
}

/// One blob of an image: its descriptor and where to read it.
#[derive(Debug, Clone)]
pub struct Blob {
    /// Media type, digest and size.
    pub descriptor: Descriptor,
    bytes: Bytes,
}

impl Blob {
    fn memory(media_type: &str, data: Vec<u8>) -> Self {
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(&data)));
        let descriptor = Descriptor {
            media_type: media_type.into(),
            digest,
            size: data.len() as u64,
            platform: None,
            annotations: None,
        };
        Self { descriptor, bytes: Bytes::Memory(data.into()) }
    }

    /// Its digest.
    pub fn digest(&self) -> &str {
        &self.descriptor.digest
    }

    /// Its size in bytes.
    pub fn size(&self) -> u64 {
        self.descriptor.size
    }

    /// A reader of exactly its bytes.
    pub fn open(&self) -> std::io::Result<Box<dyn Read + Send>> {
        match &self.bytes {
            Bytes::Memory(b) => Ok(Box::new(std::io::Cursor::new(b.clone()))),
            Bytes::File { path, offset } => {
                let mut f = File::open(path)?;
                f.seek(SeekFrom::Start(*offset))?;
                Ok(Box::new(f.take(self.descriptor.size)))
            }
            Bytes::Absent => Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("blob {} is not at hand", self.descriptor.digest),
            )),
        }
    }
}

/// An image to push: its manifest (as the bytes that are pushed) and its blobs.
#[derive(Debug)]
pub struct LocalImage {
    /// The manifest's bytes, pushed as they are (so its digest is theirs).
    pub manifest: Vec<u8>,
    /// The manifest's media type.
    pub media_type: String,
    /// The config blob.
    pub config: Blob,
    /// The layer blobs, base first.
    pub layers: Vec<Blob>,
    /// A temporary file holding the image (an export from the Docker engine).
    _spool: Option<tempfile::NamedTempFile>,
}

impl LocalImage {
    /// The manifest's digest: what the pushed image is pulled by.
    pub fn digest(&self) -> String {
        format!("sha256:{}", hex::encode(Sha256::digest(&self.manifest)))
    }

    /// Config and layers (the config last: small, and a registry may want layers first).
    pub fn blobs(&self) -> impl Iterator<Item = &Blob> {
        self.layers.iter().chain(std::iter::once(&self.config))
    }

    /// Total bytes of the blobs.
    pub fn size(&self) -> u64 {
        self.blobs().map(Blob::size).sum()
    }

    /// Reads `path`: an OCI layout directory (it has `oci-layout`) or a docker-archive
    /// tarball. Blocking: call from a blocking task.
    pub fn open(path: &Path) -> Result<Self, ImageError> {
        if path.is_dir() { Self::from_oci_layout(path) } else { Self::from_docker_archive(path) }
    }

    /// Reads a docker-archive held in a temporary file (an engine's export), keeping
    /// the file for as long as the image lives.
    pub fn from_spooled_archive(spool: tempfile::NamedTempFile) -> Result<Self, ImageError> {
        let mut image = Self::from_docker_archive(spool.path())?;
        image._spool = Some(spool);
        Ok(image)
    }

    /// An image known only by its manifest (e.g. remembered from an earlier push): its
    /// blobs are not at hand, so pushing it succeeds only when the registry has them
    /// all (or can mount them); otherwise the push fails with [`PushError::Read`]
    /// and the image must be read again.
    ///
    /// [`PushError::Read`]: super::PushError::Read
    pub fn from_manifest(manifest: Vec<u8>, media_type: &str) -> Result<Self, ImageError> {
        let parsed = manifest::parse_manifest(&manifest)?;
        let absent = |d: &Descriptor| Blob { descriptor: d.clone(), bytes: Bytes::Absent };
        Ok(Self {
            config: absent(&parsed.config),
            layers: parsed.layers.iter().map(absent).collect(),
            manifest,
            media_type: media_type.into(),
            _spool: None,
        })
    }

    /// Reads an OCI image layout directory: its `index.json` must name one image
    /// manifest (or one linux/amd64 entry of an index), every blob of which is under
    /// `blobs/sha256/` with its size.
    pub fn from_oci_layout(dir: &Path) -> Result<Self, ImageError> {
        if !dir.join("oci-layout").is_file() {
            return Err(ImageError::Malformed(format!(
                "{} is a directory without an oci-layout file: not an OCI image layout",
                dir.display()
            )));
        }
        let index = manifest::parse_index(&read_small(&dir.join("index.json"))?)?;
        let blob_path = |d: &Descriptor| dir.join("blobs/sha256").join(d.digest.trim_start_matches("sha256:"));
        let mut chosen = pick_manifest(&index.manifests)?.clone();
        let mut manifest_bytes = read_small(&blob_path(&chosen))?;
        if chosen.media_type == OCI_INDEX || chosen.media_type == DOCKER_LIST {
            let nested = manifest::parse_index(&manifest_bytes)?;
            chosen = pick_manifest(&nested.manifests)?.clone();
            manifest_bytes = read_small(&blob_path(&chosen))?;
        }
        let found = format!("sha256:{}", hex::encode(Sha256::digest(&manifest_bytes)));
        if found != chosen.digest {
            return Err(ImageError::DigestMismatch { blob: chosen.digest.clone(), found });
        }
        let parsed = manifest::parse_manifest(&manifest_bytes)?;
        let file_blob = |d: &Descriptor| -> Result<Blob, ImageError> {
            let path = blob_path(d);
            let len = std::fs::metadata(&path).map_err(|_| ImageError::MissingBlob(d.digest.clone()))?.len();
            if len != d.size {
                return Err(ImageError::Truncated(format!(
                    "blob {} is {len} bytes; the manifest says {}",
                    d.digest, d.size
                )));
            }
            Ok(Blob { descriptor: d.clone(), bytes: Bytes::File { path, offset: 0 } })
        };
        let config = file_blob(&parsed.config)?;
        let layers = parsed.layers.iter().map(file_blob).collect::<Result<_, _>>()?;
        let media_type = parsed.media_type.clone().unwrap_or_else(|| chosen.media_type.clone());
        Ok(Self { manifest: manifest_bytes, media_type, config, layers, _spool: None })
    }

    /// Reads a docker-archive tarball (`docker save`): its `manifest.json` names the
    /// config and the layer tars; an OCI image manifest is made for them.
    pub fn from_docker_archive(path: &Path) -> Result<Self, ImageError> {
        let entries = archive_entries(path)?;
        let small = |name: &str| -> Result<Vec<u8>, ImageError> {
            let &(offset, size) = entries.get(name).ok_or_else(|| ImageError::MissingBlob(name.to_string()))?;
            if size > MAX_JSON_BYTES as u64 {
                return Err(ImageError::TooLarge(format!("{name} is {size} bytes; the limit is {MAX_JSON_BYTES}")));
            }
            let mut buf = vec![0; size as usize];
            let mut f = File::open(path).map_err(|e| ImageError::io(path, e))?;
            f.seek(SeekFrom::Start(offset))
                .and_then(|_| f.read_exact(&mut buf))
                .map_err(|e| ImageError::io(path, e))?;
            Ok(buf)
        };
        let entry = manifest::parse_archive_manifest(&small("manifest.json")?)?;
        let config_bytes = small(&entry.config)?;
        let diff_ids = manifest::parse_diff_ids(&config_bytes)?;
        if diff_ids.len() != entry.layers.len() {
            return Err(ImageError::Malformed(format!(
                "manifest.json lists {} layers but the image config {}",
                entry.layers.len(),
                diff_ids.len()
            )));
        }
        let mut layers = Vec::with_capacity(entry.layers.len());
        for (name, diff_id) in entry.layers.iter().zip(diff_ids) {
            let &(offset, size) = entries.get(name.as_str()).ok_or_else(|| ImageError::MissingBlob(name.clone()))?;
            let bytes = Bytes::File { path: path.to_path_buf(), offset };
            // `docker save` writes layers uncompressed (their digest is the diff id);
            // a gzipped one (other tools) is named by its path in an OCI layout.
            let gzip = starts_with_gzip(path, offset)?;
            let digest = match name.strip_prefix("blobs/sha256/") {
                Some(hex) => format!("sha256:{hex}"),
                None if !gzip => diff_id,
                None => {
                    return Err(ImageError::Malformed(format!(
                        "layer {name} is compressed but not named by its digest; save the image with docker save"
                    )));
                }
            };
            manifest::check_digest(name, &digest)?;
            let media_type = if gzip { OCI_LAYER_GZIP } else { OCI_LAYER_TAR };
            let descriptor =
                Descriptor { media_type: media_type.into(), digest, size, platform: None, annotations: None };
            layers.push(Blob { descriptor, bytes });
        }
        let config = Blob::memory(OCI_CONFIG, config_bytes);
        let manifest = manifest::ImageManifest {
            schema_version: 2,
            media_type: Some(OCI_MANIFEST.into()),
            config: config.descriptor.clone(),
            layers: layers.iter().map(|l| l.descriptor.clone()).collect(),
        };
        let manifest = serde_json::to_vec(&manifest).map_err(|e| ImageError::Malformed(e.to_string()))?;
        Ok(Self { manifest, media_type: OCI_MANIFEST.into(), config, layers, _spool: None })
    }
}

/// The manifest to push from an index: the only one, else the linux/amd64 one.
fn pick_manifest(manifests: &[Descriptor]) -> Result<&Descriptor, ImageError> {
    match manifests {
        [] => Err(ImageError::Malformed("the index lists no manifests".into())),
        [one] => Ok(one),
        many => many
            .iter()
            .find(|m| m.platform.as_ref().is_some_and(|p| p.os == "linux" && p.architecture == "amd64"))
            .ok_or_else(|| {
                ImageError::Malformed(format!(
                    "the index lists {} manifests and none for linux/amd64; push a single-image layout",
                    many.len()
                ))
            }),
    }
}

/// Reads a small file (a JSON document or a manifest blob) with the size limit.
fn read_small(path: &Path) -> Result<Vec<u8>, ImageError> {
    let f = File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => ImageError::MissingBlob(path.display().to_string()),
        _ => ImageError::io(path, e),
    })?;
    let mut buf = Vec::new();
    f.take(MAX_JSON_BYTES as u64 + 1).read_to_end(&mut buf).map_err(|e| ImageError::io(path, e))?;
    if buf.len() > MAX_JSON_BYTES {
        return Err(ImageError::TooLarge(format!("{} is larger than {MAX_JSON_BYTES} bytes", path.display())));
    }
    Ok(buf)
}

fn starts_with_gzip(path: &Path, offset: u64) -> Result<bool, ImageError> {
    let mut f = File::open(path).map_err(|e| ImageError::io(path, e))?;
    let mut magic = [0u8; 2];
    f.seek(SeekFrom::Start(offset)).map_err(|e| ImageError::io(path, e))?;
    Ok(f.read_exact(&mut magic).is_ok() && magic == [0x1f, 0x8b])
}

/// Where each regular file of a tar archive starts and how long it is, by path
/// (without a leading `./`). A truncated or corrupt archive is refused.
pub fn archive_entries(path: &Path) -> Result<HashMap<String, (u64, u64)>, ImageError> {
    let file = File::open(path).map_err(|e| ImageError::io(path, e))?;
    let len = file.metadata().map_err(|e| ImageError::io(path, e))?.len();
    index_tar(file, len)
}

/// [`archive_entries`] of any seekable reader of `len` bytes (the fuzz target's entry).
pub fn index_tar<R: Read + Seek>(reader: R, len: u64) -> Result<HashMap<String, (u64, u64)>, ImageError> {
    let corrupt = |e: std::io::Error| ImageError::Truncated(format!("the archive is corrupt or truncated: {e}"));
    let mut archive = tar::Archive::new(reader);
    let mut entries = HashMap::new();
    for entry in archive.entries_with_seek().map_err(corrupt)? {
        let entry = entry.map_err(corrupt)?;
        if entries.len() >= MAX_ARCHIVE_ENTRIES {
            return Err(ImageError::TooLarge(format!("the archive has more than {MAX_ARCHIVE_ENTRIES} entries")));
        }
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let size = entry.size();
        let offset = entry.raw_file_position();
        if offset.checked_add(size).is_none_or(|end| end > len) {
            return Err(ImageError::Truncated(format!(
                "the archive is truncated: {} ends past its {len} bytes",
                String::from_utf8_lossy(&entry.path_bytes())
            )));
        }
        let name = String::from_utf8_lossy(&entry.path_bytes()).trim_start_matches("./").to_string();
        entries.insert(name, (offset, size));
    }
    if entries.is_empty() {
        return Err(ImageError::Truncated("the archive is empty or not a tar archive".into()));
    }
    Ok(entries)
}

#[cfg(test)]
mod tests;
