//! Pushing a [`LocalImage`] to a registry with `oci-client`: for each blob, skip it if
//! the repository has it, else mount it from another repository of the same registry
//! that has it, else upload it (in one streamed `PUT`, several blobs at a time); the
//! manifest last, by digest. An interrupted push resumes by running it again: the
//! blobs it finished are skipped.

use std::sync::Arc;

use futures_util::{StreamExt, TryStreamExt, stream};
use oci_client::errors::OciDistributionError;
use oci_client::{Reference, RegistryOperation};

use super::image::{Blob, LocalImage};
use super::{PushError, RegistryClient};

/// Blobs uploaded at the same time.
const PARALLEL_UPLOADS: usize = 3;
/// Bytes read from a layer file per chunk of the upload stream.
const READ_CHUNK: usize = 1 << 20;
/// Most other repositories tried for a cross-repository mount of one blob.
const MAX_MOUNT_SOURCES: usize = 8;

/// What happened to one blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobOutcome {
    /// The repository had it.
    Existed,
    /// Mounted from this repository of the same registry.
    Mounted(String),
    /// Uploaded.
    Uploaded,
}

/// Where and how to push.
#[derive(Debug, Clone)]
pub struct PushTarget {
    /// The registry (`host:port`) and its client (protocol, credentials).
    pub client: RegistryClient,
    /// The repository pushed to (the app's name).
    pub repository: String,
    /// Other repositories of the registry the pusher may read (cross-repo mounts).
    pub mount_from: Vec<String>,
}

/// Progress of a push, per blob (the CLI draws a bar per layer).
pub trait PushProgress: Send + Sync {
    /// Work on `blob` starts.
    fn started(&self, blob: &Blob);
    /// `bytes` more of `blob` were sent.
    fn sent(&self, blob: &Blob, bytes: u64);
    /// `blob` is in the repository.
    fn finished(&self, blob: &Blob, outcome: &BlobOutcome);
}

/// What a push did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushReport {
    /// The manifest digest (what the image is pulled by).
    pub digest: String,
    /// `host:port/repository@digest`.
    pub reference: String,
    /// Each blob's digest and outcome.
    pub blobs: Vec<(String, BlobOutcome)>,
}

/// Pushes `image` to `target`; see the module docs.
pub async fn push_image(
    image: &LocalImage,
    target: &PushTarget,
    progress: Arc<dyn PushProgress>,
) -> Result<PushReport, PushError> {
    let client = &target.client;
    let digest = image.digest();
    let reference = client.reference(&target.repository, &digest);
    client.authenticate(&reference, RegistryOperation::Push).await?;
    // Futures collected first: a closure inside the stream would make the whole push
    // future not `Send` for every lifetime (rustc's higher-ranked closure limitation).
    let pushes: Vec<_> = image.blobs().map(|blob| push_one(target, &reference, blob, progress.clone())).collect();
    let outcomes: Vec<(String, BlobOutcome)> =
        stream::iter(pushes).buffer_unordered(PARALLEL_UPLOADS).try_collect().await?;
    let media_type = image.media_type.parse().map_err(|_| {
        PushError::Image(super::ImageError::Malformed(format!(
            "the manifest media type {:?} is not a valid header value",
            image.media_type
        )))
    })?;
    client
        .inner()
        .push_manifest_raw(&reference, image.manifest.clone(), media_type)
        .await
        .map_err(|e| client.error("pushing the manifest", e))?;
    Ok(PushReport { reference: format!("{}/{}@{digest}", client.host(), target.repository), digest, blobs: outcomes })
}

async fn push_one(
    target: &PushTarget,
    reference: &Reference,
    blob: &Blob,
    progress: Arc<dyn PushProgress>,
) -> Result<(String, BlobOutcome), PushError> {
    progress.started(blob);
    let outcome = push_blob(target, reference, blob, &*progress).await?;
    progress.finished(blob, &outcome);
    Ok((blob.digest().to_string(), outcome))
}

async fn push_blob(
    target: &PushTarget,
    reference: &Reference,
    blob: &Blob,
    progress: &dyn PushProgress,
) -> Result<BlobOutcome, PushError> {
    let client = &target.client;
    let digest = blob.digest();
    let oci = client.inner();
    if oci.blob_exists(reference, digest).await.map_err(|e| client.error("checking a blob", e))? {
        return Ok(BlobOutcome::Existed);
    }
    for source in target.mount_from.iter().filter(|r| **r != target.repository).take(MAX_MOUNT_SOURCES) {
        let from = client.reference(source, digest);
        // Only ask for a mount where the blob is: a refused mount leaves an upload
        // session behind on some registries.
        if matches!(oci.blob_exists(&from, digest).await, Ok(true))
            && oci.mount_blob(reference, &from, digest).await.is_ok()
        {
            return Ok(BlobOutcome::Mounted(source.clone()));
        }
    }
    let reader = blob.open().map_err(|e| PushError::Read { blob: digest.to_string(), source: e })?;
    let (tx, rx) = tokio::sync::mpsc::channel::<oci_client::errors::Result<bytes::Bytes>>(4);
    // Layer files are read on a blocking thread and handed over chunk by chunk.
    let reading = tokio::task::spawn_blocking(move || read_into(reader, tx));
    let rx = stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|chunk| (chunk, rx)) });
    // The stream must be 'static: progress comes back through a channel.
    let (count_tx, mut count_rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
    let counted = sent_counter(rx, count_tx);
    let upload = oci.push_blob_stream(reference, counted, digest, Some(blob.size()));
    tokio::pin!(upload);
    let result = loop {
        tokio::select! {
            r = &mut upload => break r,
            Some(n) = count_rx.recv() => progress.sent(blob, n),
        }
    };
    while let Ok(n) = count_rx.try_recv() {
        progress.sent(blob, n);
    }
    let read =
        reading.await.map_err(|e| PushError::Read { blob: digest.to_string(), source: std::io::Error::other(e) })?;
    if let Err(e) = read {
        return Err(PushError::Read { blob: digest.to_string(), source: e });
    }
    result.map_err(|e| client.blob_error(digest, e))?;
    Ok(BlobOutcome::Uploaded)
}

/// Sends `reader`'s bytes as chunks; stops early when the receiver is gone.
fn read_into(
    mut reader: Box<dyn std::io::Read + Send>,
    tx: tokio::sync::mpsc::Sender<oci_client::errors::Result<bytes::Bytes>>,
) -> std::io::Result<()> {
    loop {
        let mut buf = vec![0u8; READ_CHUNK];
        let mut filled = 0;
        while filled < buf.len() {
            match reader.read(&mut buf[filled..])? {
                0 => break,
                n => filled += n,
            }
        }
        if filled == 0 {
            return Ok(());
        }
        buf.truncate(filled);
        if tx.blocking_send(Ok(buf.into())).is_err() {
            return Ok(());
        }
    }
}

fn sent_counter<S>(
    s: S,
    counts: tokio::sync::mpsc::UnboundedSender<u64>,
) -> impl futures_util::Stream<Item = oci_client::errors::Result<bytes::Bytes>> + Send + 'static
where
    S: futures_util::Stream<Item = oci_client::errors::Result<bytes::Bytes>> + Send + 'static,
{
    s.inspect_ok(move |chunk| {
        let _ = counts.send(chunk.len() as u64);
    })
}

/// Whether `e` is the registry saying a blob's bytes do not match its digest.
pub(super) fn is_digest_mismatch(e: &OciDistributionError) -> bool {
    match e {
        OciDistributionError::RegistryError { envelope, .. } => {
            envelope.errors.iter().any(|e| matches!(e.code, oci_client::errors::OciErrorCode::DigestInvalid))
        }
        OciDistributionError::ServerError { message, .. } => message.contains("DIGEST_INVALID"),
        _ => false,
    }
}
