//! [`ProcessApplier`]: the reference applier.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use deis_core::Store;
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::process::{Child, Command};
use tokio::sync::Mutex;

use super::{Applier, ApplyError, error_code};

/// Settings of a [`ProcessApplier`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ProcessConfig {
    /// The binary to run and replace.
    pub binary: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// `GET` this URL must answer 200 for the process to be healthy
    /// (`http://127.0.0.1:8000/healthz`).
    pub health_url: String,
    /// How long a started process has to become healthy.
    pub health_timeout: Duration,
    /// How long a stopped process has to exit after SIGTERM before SIGKILL.
    pub stop_timeout: Duration,
    /// The store and replica id of a deisd replica: before its binary is swapped, the
    /// agent waits until the scheduler election names another leader (when it led).
    pub handoff: Option<(Arc<dyn Store>, String)>,
}

impl ProcessConfig {
    /// 30 s to become healthy, 30 s to stop.
    pub fn new(binary: PathBuf, args: Vec<String>, health_url: &str) -> Self {
        Self {
            binary,
            args,
            health_url: health_url.into(),
            health_timeout: Duration::from_secs(30),
            stop_timeout: Duration::from_secs(30),
            handoff: None,
        }
    }
}

/// The reference applier. It runs one process (a deisd replica) and updates it by
/// replacing its binary and restarting it: stop (SIGTERM, so a leading replica resigns
/// and another takes over), wait for the hand-off, swap the binary (keeping the old one
/// as `<binary>.old`), start, and wait for the health check. An unhealthy new version is
/// stopped and the old binary restored and started again.
#[derive(Debug)]
pub struct ProcessApplier {
    config: ProcessConfig,
    child: Mutex<Option<Child>>,
    http: Client<HttpConnector, Empty<Bytes>>,
}

fn failure(code: i64, message: String) -> ApplyError {
    ApplyError { code, message }
}

impl ProcessApplier {
    /// Starts the process and waits until it is healthy.
    pub async fn start(config: ProcessConfig) -> Result<Arc<Self>, ApplyError> {
        let applier = Arc::new(Self {
            config,
            child: Mutex::new(None),
            http: Client::builder(TokioExecutor::new()).build_http(),
        });
        applier.launch().await?;
        Ok(applier)
    }

    /// Stops the process (SIGTERM, then SIGKILL after the stop timeout).
    pub async fn stop(&self) {
        let child = self.child.lock().await.take();
        if let Some(mut child) = child {
            if let Some(pid) = child.id() {
                // SAFETY: kill(2) on the pid of our own child, which we have not reaped
                // yet (we hold it), so the pid can't have been reused.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
            }
            if tokio::time::timeout(self.config.stop_timeout, child.wait()).await.is_err() {
                let _ = child.kill().await;
            }
        }
    }

    /// Starts the binary and waits for its health check.
    async fn launch(&self) -> Result<(), ApplyError> {
        let child = Command::new(&self.config.binary)
            .args(&self.config.args)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| failure(error_code::INSTALL, format!("starting {}: {e}", self.config.binary.display())))?;
        *self.child.lock().await = Some(child);
        self.wait_healthy().await
    }

    async fn wait_healthy(&self) -> Result<(), ApplyError> {
        let deadline = Instant::now() + self.config.health_timeout;
        let uri: http::Uri =
            self.config.health_url.parse().map_err(|e| {
                failure(error_code::HEALTH_CHECK, format!("health URL {}: {e}", self.config.health_url))
            })?;
        loop {
            if let Some(child) = self.child.lock().await.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(failure(error_code::HEALTH_CHECK, format!("the new process exited ({status})")));
            }
            let probe = tokio::time::timeout(Duration::from_secs(2), self.http.get(uri.clone())).await;
            if matches!(probe, Ok(Ok(ref r)) if r.status() == http::StatusCode::OK) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(failure(
                    error_code::HEALTH_CHECK,
                    format!("{} did not answer 200 within {:?}", self.config.health_url, self.config.health_timeout),
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// When this replica led the scheduler, waits (up to the health timeout) until
    /// another one does.
    async fn wait_for_handoff(&self) {
        let Some((store, id)) = &self.config.handoff else { return };
        let deadline = Instant::now() + self.config.health_timeout;
        while Instant::now() < deadline {
            match deis_core::store::lock::leader(&**store, crate::replica::ELECTION).await {
                Ok(Some(leader)) if leader != *id => return,
                Ok(None) | Ok(Some(_)) | Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        tracing::warn!("no other replica took the scheduler's leadership; updating anyway");
    }

    fn sibling(&self, suffix: &str) -> PathBuf {
        let mut name = self.config.binary.file_name().unwrap_or_default().to_os_string();
        name.push(suffix);
        self.config.binary.with_file_name(name)
    }
}

async fn install(from: &Path, to: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    tokio::fs::copy(from, to).await?;
    tokio::fs::set_permissions(to, std::fs::Permissions::from_mode(0o755)).await
}

#[async_trait]
impl Applier for ProcessApplier {
    async fn apply(&self, file: &Path, version: &str) -> Result<(), ApplyError> {
        let (binary, new, old) = (&self.config.binary, self.sibling(".new"), self.sibling(".old"));
        install(file, &new)
            .await
            .map_err(|e| failure(error_code::INSTALL, format!("copying {version} to {}: {e}", new.display())))?;
        self.stop().await;
        self.wait_for_handoff().await;
        let swap = async {
            tokio::fs::rename(binary, &old).await?;
            tokio::fs::rename(&new, binary).await
        };
        if let Err(e) = swap.await {
            let _ = self.launch().await;
            return Err(failure(error_code::INSTALL, format!("swapping {}: {e}", binary.display())));
        }
        let Err(unhealthy) = self.launch().await else { return Ok(()) };
        tracing::warn!(%version, error = %unhealthy, "the new version is unhealthy: rolling back");
        self.stop().await;
        let restored = tokio::fs::rename(&old, binary).await;
        let back = self.launch().await;
        let rollback = match (restored, back) {
            (Ok(()), Ok(())) => "rolled back to the previous binary".to_string(),
            (Err(e), _) => format!("restoring {} failed: {e}", old.display()),
            (_, Err(e)) => format!("the previous binary did not come back: {e}"),
        };
        Err(failure(error_code::HEALTH_CHECK, format!("{version}: {unhealthy}; {rollback}")))
    }
}
