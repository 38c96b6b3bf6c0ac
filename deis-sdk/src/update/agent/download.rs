//! Downloading a package with resume, and checking it against its manifest.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use sha2::Digest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::AgentError;
use crate::update::omaha::Manifest;

/// HTTP client of the agent.
pub(super) type HttpClient = Client<HttpConnector, Empty<Bytes>>;

/// Downloads `manifest`'s file into `dir` (as `<name>.<version>.part`, resuming a
/// previous partial download with a `Range` request), then checks its size and
/// SHA-256. A file that does not match is deleted and never returned.
pub(super) async fn fetch(client: &HttpClient, manifest: &Manifest, dir: &Path) -> Result<PathBuf, AgentError> {
    let expected = manifest.sha256().ok_or_else(|| AgentError::Manifest("no usable SHA-256 in the manifest".into()))?;
    if manifest.name.contains('/') || manifest.name.is_empty() || manifest.version.contains('/') {
        return Err(AgentError::Manifest(format!("unusable package name {:?}", manifest.name)));
    }
    tokio::fs::create_dir_all(dir).await.map_err(|e| AgentError::Io(format!("creating {}: {e}", dir.display())))?;
    let part = dir.join(format!("{}.{}.part", manifest.name, manifest.version));
    let url = format!("{}{}", manifest.url, manifest.name);
    let have = tokio::fs::metadata(&part).await.map(|m| m.len()).unwrap_or(0);
    if have < manifest.size {
        download(client, &url, &part, have).await?;
    }
    let (size, digest) = hash_file(&part).await?;
    if size != manifest.size || digest != expected {
        let _ = tokio::fs::remove_file(&part).await;
        return Err(AgentError::Verification(format!(
            "{url}: got {size} bytes with sha256 {}, the manifest says {} bytes with sha256 {}; the file was deleted",
            hex::encode(digest),
            manifest.size,
            hex::encode(expected)
        )));
    }
    let done = dir.join(format!("{}.{}", manifest.name, manifest.version));
    tokio::fs::rename(&part, &done).await.map_err(|e| AgentError::Io(format!("renaming {}: {e}", part.display())))?;
    Ok(done)
}

/// Appends `url` from byte `from` to `part` (from 0 when the server ignores ranges).
async fn download(client: &HttpClient, url: &str, part: &Path, from: u64) -> Result<(), AgentError> {
    let failed = |e: &dyn std::fmt::Display| AgentError::Download(format!("{url}: {e}"));
    let uri: http::Uri = url.parse().map_err(|e| failed(&e))?;
    let mut req = Request::get(uri);
    if from > 0 {
        req = req.header(header::RANGE, format!("bytes={from}-"));
    }
    let resp = client.request(req.body(Empty::new()).map_err(|e| failed(&e))?).await.map_err(|e| failed(&e))?;
    let append = match resp.status() {
        StatusCode::PARTIAL_CONTENT if from > 0 => true,
        StatusCode::OK => false,
        // Asked from the end: the server has no more (the check decides).
        StatusCode::RANGE_NOT_SATISFIABLE => return Ok(()),
        other => return Err(failed(&format!("HTTP {other}"))),
    };
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .append(append)
        .write(true)
        .truncate(!append)
        .open(part)
        .await
        .map_err(|e| AgentError::Io(format!("opening {}: {e}", part.display())))?;
    let mut body = resp.into_body();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| failed(&e))?;
        if let Some(data) = frame.data_ref() {
            file.write_all(data).await.map_err(|e| AgentError::Io(format!("writing {}: {e}", part.display())))?;
        }
    }
    file.flush().await.map_err(|e| AgentError::Io(format!("writing {}: {e}", part.display())))?;
    Ok(())
}

/// Size and SHA-256 of a file.
pub(super) async fn hash_file(path: &Path) -> Result<(u64, [u8; 32]), AgentError> {
    let io = |e: std::io::Error| AgentError::Io(format!("reading {}: {e}", path.display()));
    let mut f = tokio::fs::File::open(path).await.map_err(io)?;
    let (mut hasher, mut size, mut buf) = (sha2::Sha256::new(), 0u64, vec![0u8; 64 << 10]);
    loop {
        let n = f.read(&mut buf).await.map_err(io)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((size, hasher.finalize().into()))
}
