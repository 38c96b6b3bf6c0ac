//! Dockerfile builds of a push (features `builder`, `docker` and `registry`): a pushed
//! tree with a `Dockerfile` at its root is built into an image by a Docker engine (the
//! checked archive of the commit is the build context), pushed to the platform
//! registry under the app's repository, and deployed by its digest, which schedulers
//! pull, never a moving tag.
//!
//! Entries the tree's `.dockerignore` names stay out of the context
//! ([`dockerignore`](super::dockerignore)). The build's output goes to the pusher as `remote:` lines; a failed build is an
//! error before anything is recorded, so the push is rejected and nothing changes.

use std::sync::Arc;

use bollard::Docker;
use bollard::query_parameters::{BuildImageOptionsBuilder, RemoveImageOptionsBuilder};
use deis_core::AppName;
use futures_util::StreamExt;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::hook;
use crate::controller::PlatformRegistry;
use crate::registry::image::{Blob, export_from_engine};
use crate::registry::push::{BlobOutcome, PushProgress, PushTarget, push_image};

/// Longest line of build output relayed to the pusher (longer ones are cut).
const MAX_OUTPUT_LINE: usize = 1000;

/// Where Dockerfile pushes are built and stored: a Docker engine and the platform
/// registry. Give it to [`BuilderConfig::dockerfile_builds`](super::BuilderConfig) when
/// the scheduler runs images.
#[derive(Debug, Clone)]
pub struct DockerfileBuilds {
    engine: Docker,
    registry: PlatformRegistry,
}

impl DockerfileBuilds {
    /// Builds on `engine`, pushes to `registry` (its platform credentials).
    pub fn new(engine: Docker, registry: PlatformRegistry) -> Self {
        Self { engine, registry }
    }

    /// Builds on the engine at `endpoint` (`unix:///…` or `tcp://host:port`, as
    /// `--docker-host` takes it).
    pub fn connect(endpoint: &str, registry: PlatformRegistry) -> Result<Self, String> {
        let engine = Docker::connect_with_host(endpoint)
            .map_err(|e| format!("the Docker engine {endpoint} for Dockerfile builds: {e}"))?;
        Ok(Self::new(engine, registry))
    }

    /// Builds `context` (the commit's gzipped tar, `Dockerfile` at its root) as
    /// `deis-build/<app>:<tag>`, relaying the engine's output to `out` as `say` lines;
    /// pushes the image to the app's repository; returns `host/app@digest`.
    pub(crate) async fn build<W: AsyncWrite + Unpin>(
        &self,
        app: &AppName,
        tag: &str,
        context: Vec<u8>,
        out: &mut W,
    ) -> Result<String, String> {
        let context = tokio::task::spawn_blocking(move || honour_dockerignore(context))
            .await
            .map_err(|e| format!("preparing the build context: {e}"))??;
        let local = format!("deis-build/{app}:{tag}");
        let options =
            BuildImageOptionsBuilder::default().dockerfile("Dockerfile").t(&local).rm(true).forcerm(true).build();
        let mut output = self.engine.build_image(options, None, Some(bollard::body_full(context.into())));
        while let Some(item) = output.next().await {
            let info = item.map_err(|e| match e {
                bollard::errors::Error::DockerStreamError { error } => format!("docker build failed: {error}"),
                other => format!("docker build failed: {other}"),
            })?;
            if let Some(detail) = info.error_detail {
                return Err(format!("docker build failed: {}", detail.message.unwrap_or_default()));
            }
            let text = info.stream.unwrap_or_default();
            for line in text.lines().map(str::trim_end).filter(|l| !l.is_empty()) {
                let line: String = line.chars().take(MAX_OUTPUT_LINE).collect();
                say(out, &format!("       {line}")).await?;
            }
        }
        let result = self.push(app, &local, out).await;
        // The engine keeps the layers for the next build's cache; the tag is ours only.
        let untag = RemoveImageOptionsBuilder::default().noprune(true).build();
        let _ = self.engine.remove_image(&local, Some(untag), None).await;
        result
    }

    async fn push<W: AsyncWrite + Unpin>(&self, app: &AppName, local: &str, out: &mut W) -> Result<String, String> {
        let client = &self.registry.client;
        say(out, &format!("-----> Pushing the image to {}/{app}", client.host())).await?;
        let image = export_from_engine(&self.engine, local).await.map_err(|e| format!("exporting the image: {e}"))?;
        let target = PushTarget { client: client.clone(), repository: app.to_string(), mount_from: Vec::new() };
        let report =
            push_image(&image, &target, Arc::new(Quiet)).await.map_err(|e| format!("pushing the image: {e}"))?;
        let uploaded = report.blobs.iter().filter(|(_, o)| *o == BlobOutcome::Uploaded).count();
        say(out, &format!("       {} ({uploaded} of {} blobs uploaded)", report.reference, report.blobs.len())).await?;
        Ok(report.reference)
    }
}

/// `context` without what its `.dockerignore` excludes.
/// Source builds committed on a swarm's manager go to the platform registry like
/// Dockerfile builds, so every node pulls them by digest.
#[cfg(feature = "swarm")]
#[async_trait::async_trait]
impl crate::scheduler::swarm::BuildPublisher for DockerfileBuilds {
    async fn publish(&self, app: &AppName, local: &str) -> Result<String, String> {
        self.push(app, local, &mut tokio::io::sink()).await
    }
}

fn honour_dockerignore(context: Vec<u8>) -> Result<Vec<u8>, String> {
    match super::dockerignore::read_from_archive(&context)? {
        Some(ignore) if !ignore.is_empty() => {
            ignore.filter_archive(&context).map_err(|e| format!("applying .dockerignore: {e}"))
        }
        _ => Ok(context),
    }
}

async fn say<W: AsyncWrite + Unpin>(out: &mut W, text: &str) -> Result<(), String> {
    out.write_all(hook::say(text).as_bytes()).await.map_err(|e| format!("talking to the git hook: {e}"))
}

/// No per-blob progress: the pusher sees one line when the image is in the registry.
struct Quiet;

impl PushProgress for Quiet {
    fn started(&self, _: &Blob) {}
    fn sent(&self, _: &Blob, _: u64) {}
    fn finished(&self, _: &Blob, _: &BlobOutcome) {}
}
