//! The update agent (embeddable; the reference daemon is `deis-updater`): checks an
//! Omaha server periodically (with jitter, so a fleet does not check in lockstep),
//! downloads an offered package (resuming a partial download), verifies its size and
//! SHA-256, and hands it to an [`Applier`]. Every step is reported to the server as an
//! Omaha event: download started (13) and finished (14), installed (800), complete
//! (3/1), or an error (3/0) with one of the [`error_code`]s, which halts a group in
//! safe mode.
//!
//! Instances that share a store (the deisd replicas on etcd) apply one at a time: the
//! agent holds the store lock `updates/<app id>/<group>` from before it applies until
//! the new version is healthy (or rolled back), so the next replica starts only then.

mod download;
mod process;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use deis_core::Store;
use deis_core::store::lock::Lock;
use deis_core::update::{event_result, event_type};
use http::{Request, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

pub use process::{ProcessApplier, ProcessConfig};

use super::omaha::{ClientApp, parse_response, render_request};

/// Error codes the agent reports in failed events (`errorcode`).
pub mod error_code {
    /// The download failed.
    pub const DOWNLOAD: i64 = 100;
    /// The file's size or SHA-256 is not the manifest's: it was not applied.
    pub const VERIFICATION: i64 = 101;
    /// Installing failed (before the new version ran); nothing changed.
    pub const INSTALL: i64 = 102;
    /// The new version failed its health check and was rolled back.
    pub const HEALTH_CHECK: i64 = 103;
}

/// Why an update cycle failed.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The Omaha server can't be reached or answered nonsense.
    #[error("update server: {0}")]
    Server(String),
    /// The manifest can't be used.
    #[error("manifest: {0}")]
    Manifest(String),
    /// The download failed.
    #[error("download: {0}")]
    Download(String),
    /// The file is not the one the manifest describes.
    #[error("verification: {0}")]
    Verification(String),
    /// Local files.
    #[error("{0}")]
    Io(String),
    /// The applier failed.
    #[error(transparent)]
    Apply(#[from] ApplyError),
    /// The coordination store failed.
    #[error("coordination: {0}")]
    Store(#[from] deis_core::StoreError),
}

impl AgentError {
    /// The Omaha error code reported for this failure.
    pub fn code(&self) -> i64 {
        match self {
            Self::Verification(_) | Self::Manifest(_) => error_code::VERIFICATION,
            Self::Apply(e) => e.code,
            Self::Io(_) | Self::Store(_) => error_code::INSTALL,
            Self::Server(_) | Self::Download(_) => error_code::DOWNLOAD,
        }
    }
}

/// An applier's failure: what to report, and why.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ApplyError {
    /// The Omaha error code ([`error_code`]).
    pub code: i64,
    /// What went wrong.
    pub message: String,
}

/// Puts a verified package in place. Implementations: [`ProcessApplier`] (replaces a
/// process's binary and restarts it, rolling back when the new one is unhealthy).
#[async_trait]
pub trait Applier: Send + Sync + std::fmt::Debug {
    /// Installs `file` (verified) as `version` and returns once the new version runs
    /// and is healthy; on failure, restores what ran before and says why.
    async fn apply(&self, file: &std::path::Path, version: &str) -> Result<(), ApplyError>;
}

/// Settings of an [`Agent`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AgentConfig {
    /// The Omaha endpoint (`http://host:port/v1/update/`).
    pub server: String,
    /// The Omaha app id.
    pub app_id: String,
    /// The group (track).
    pub track: String,
    /// This instance's id (machineid).
    pub instance_id: String,
    /// The version running now.
    pub version: String,
    /// Time between checks.
    pub interval: Duration,
    /// Up to this much is added to each interval at random.
    pub jitter: Duration,
    /// Where downloads go.
    pub download_dir: PathBuf,
    /// A store shared with the other instances of the group: updates are applied one
    /// instance at a time under its lock.
    pub coordination: Option<Arc<dyn Store>>,
    /// TTL of the coordination lock (renewed while held).
    pub lock_ttl: Duration,
}

impl AgentConfig {
    /// Checks every 5 minutes (plus up to 1 minute), downloads into `download_dir`.
    pub fn new(
        server: &str,
        app_id: &str,
        track: &str,
        instance_id: &str,
        version: &str,
        download_dir: PathBuf,
    ) -> Self {
        Self {
            server: server.into(),
            app_id: app_id.into(),
            track: track.into(),
            instance_id: instance_id.into(),
            version: version.into(),
            interval: Duration::from_secs(300),
            jitter: Duration::from_secs(60),
            download_dir,
            coordination: None,
            lock_ttl: Duration::from_secs(10),
        }
    }
}

/// What one cycle did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cycle {
    /// No update offered.
    NoUpdate,
    /// Updated to this version.
    Updated(String),
}

/// The update agent. See the [module docs](self).
#[derive(Debug)]
pub struct Agent {
    config: AgentConfig,
    applier: Arc<dyn Applier>,
    http: download::HttpClient,
    omaha: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
}

impl Agent {
    /// An agent applying with `applier`.
    pub fn new(config: AgentConfig, applier: Arc<dyn Applier>) -> Self {
        Self {
            config,
            applier,
            http: Client::builder(TokioExecutor::new()).build_http(),
            omaha: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// The version running now.
    pub fn version(&self) -> &str {
        &self.config.version
    }

    /// Checks until `until` resolves: a cycle, then the interval plus jitter.
    pub async fn run(mut self, until: impl std::future::Future<Output = ()>) {
        tokio::pin!(until);
        loop {
            match self.cycle().await {
                Ok(Cycle::Updated(v)) => tracing::info!(version = %v, "updated"),
                Ok(Cycle::NoUpdate) => tracing::debug!("no update"),
                Err(e) => tracing::warn!(error = %e, "update cycle failed"),
            }
            let jitter = self.config.jitter.mul_f64(random_fraction());
            tokio::select! {
                () = &mut until => return,
                () = tokio::time::sleep(self.config.interval + jitter) => {}
            }
        }
    }

    /// One cycle: check, and when offered an update, download, verify, apply (under
    /// the coordination lock) and report.
    pub async fn cycle(&mut self) -> Result<Cycle, AgentError> {
        let apps = self.post(true, Vec::new()).await?;
        let Some(manifest) = apps.into_iter().find_map(|a| a.manifest) else { return Ok(Cycle::NoUpdate) };
        let version = manifest.version.clone();
        self.report(event_type::DOWNLOAD_STARTED, event_result::SUCCESS, None).await;
        let file = match download::fetch(&self.http, &manifest, &self.config.download_dir).await {
            Ok(file) => file,
            Err(e) => return Err(self.failed(e).await),
        };
        self.report(event_type::DOWNLOAD_FINISHED, event_result::SUCCESS, None).await;
        let lock = match &self.config.coordination {
            Some(store) => {
                let name = format!("updates/{}/{}", self.config.app_id.trim_matches(['{', '}']), self.config.track);
                match Lock::acquire(store.clone(), &name, self.config.lock_ttl).await {
                    Ok(guard) => Some(guard),
                    Err(e) => return Err(self.failed(e.into()).await),
                }
            }
            None => None,
        };
        // While this instance waited for the lock, another one may have failed with
        // this version and halted the group (safe mode), or the channel moved on: apply
        // only what is still offered.
        if lock.is_some() && !self.still_offered(&version).await {
            let _ = tokio::fs::remove_file(&file).await;
            if let Some(lock) = lock {
                let _ = lock.release().await;
            }
            tracing::info!(%version, "no longer offered after waiting for the other instances: not applied");
            return Ok(Cycle::NoUpdate);
        }
        let applied = self.applier.apply(&file, &version).await;
        let _ = tokio::fs::remove_file(&file).await;
        let result = match applied {
            Ok(()) => {
                let previous = std::mem::replace(&mut self.config.version, version.clone());
                self.report(event_type::INSTALLED, event_result::SUCCESS, None).await;
                self.post(false, vec![(event_type::UPDATE_COMPLETE, event_result::SUCCESS, None, Some(previous))])
                    .await
                    .map(|_| Cycle::Updated(version))
            }
            Err(e) => Err(self.failed(e.into()).await),
        };
        if let Some(lock) = lock {
            let _ = lock.release().await;
        }
        result
    }

    /// Whether an update check still offers `version`.
    async fn still_offered(&self, version: &str) -> bool {
        match self.post(true, Vec::new()).await {
            Ok(apps) => apps.into_iter().filter_map(|a| a.manifest).any(|m| m.version == version),
            Err(e) => {
                tracing::warn!(error = %e, "checking again before applying failed");
                false
            }
        }
    }

    /// Reports `e` as a failed event and gives it back.
    async fn failed(&self, e: AgentError) -> AgentError {
        tracing::warn!(error = %e, code = e.code(), "update failed");
        self.report(event_type::UPDATE_COMPLETE, event_result::ERROR, Some(e.code())).await;
        e
    }

    async fn report(&self, kind: u32, result: u32, code: Option<i64>) {
        if let Err(e) = self.post(false, vec![(kind, result, code, None)]).await {
            tracing::warn!(error = %e, event = kind, "reporting an event failed");
        }
    }

    async fn post(
        &self,
        updatecheck: bool,
        events: Vec<(u32, u32, Option<i64>, Option<String>)>,
    ) -> Result<Vec<super::omaha::ResponseApp>, AgentError> {
        let app = ClientApp {
            appid: self.config.app_id.clone(),
            version: self.config.version.clone(),
            track: self.config.track.clone(),
            machineid: self.config.instance_id.clone(),
            updatecheck,
            events,
        };
        let failed = |e: &dyn std::fmt::Display| AgentError::Server(format!("{}: {e}", self.config.server));
        let req = Request::post(&self.config.server)
            .header(header::CONTENT_TYPE, "text/xml")
            .body(Full::new(Bytes::from(render_request(&[app]))))
            .map_err(|e| failed(&e))?;
        let resp = self.omaha.request(req).await.map_err(|e| failed(&e))?;
        let status = resp.status();
        let limited = http_body_util::Limited::new(resp.into_body(), super::omaha::MAX_BODY_BYTES);
        let body = limited.collect().await.map_err(|e| failed(&e))?.to_bytes();
        let apps = parse_response(&body).map_err(|e| failed(&format!("HTTP {status}: {e}")))?;
        match apps.first() {
            Some(a) if a.status == "ok" => Ok(apps),
            Some(a) => Err(failed(&format!("app status {}", a.status))),
            None => Err(failed(&"no app in the response")),
        }
    }
}

/// A number in [0, 1) from the OS's randomness.
fn random_fraction() -> f64 {
    let mut b = [0u8; 8];
    let _ = getrandom_fill(&mut b);
    (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}

fn getrandom_fill(buf: &mut [u8]) -> std::io::Result<()> {
    use std::io::Read as _;
    std::fs::File::open("/dev/urandom")?.read_exact(buf)
}

#[cfg(test)]
mod tests;
