//! The builder: `git push ssh://git@<builder>:2222/<app>.git main` deploys (feature
//! `builder`).
//!
//! An SSH server ([`russh`]) that takes public-key authentication only, with the keys
//! users registered (`deis keys:add`; [`Controller::user_by_key`]), and runs nothing but
//! git's push and fetch services for an app its user may deploy (owner, collaborator,
//! admin). A push goes to a real `git receive-pack` on the app's bare repository in
//! `<data dir>/repos/<app>.git`; its `pre-receive` hook hands the pushed commit back to
//! the builder, which builds it through [`Controller::create_build`] (the path of
//! `deis deploy`) and streams the progress to the pusher as `remote:` lines. A failed
//! build fails the hook, so the push is rejected and the refs stay as they were.
//! Pushes to one app run one after the other. A tree with a root `Dockerfile` is built
//! into an image where [`BuilderConfig::dockerfile_builds`] says how (features `docker`
//! and `registry`).
//!
//! ```no_run
//! # async fn demo(controller: std::sync::Arc<deis_core::controller::Controller>) -> std::io::Result<()> {
//! use deis_sdk::builder::{Builder, BuilderConfig};
//!
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:2222").await?;
//! let builder = Builder::start(listener, controller, "/var/lib/deis".as_ref(), BuilderConfig::default())?;
//! println!("git push ssh://git@{}/<app>.git main", builder.addr());
//! builder.shutdown().await;
//! # Ok(()) }
//! ```

mod command;
#[cfg(all(feature = "docker", feature = "registry"))]
pub mod dockerignore;
mod hook;
#[cfg(all(feature = "docker", feature = "registry"))]
mod image;
mod push;
mod ssh;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use deis_core::controller::Controller;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

pub use command::{CommandError, GitCommand, GitService, MAX_COMMAND_BYTES, parse as parse_command};
pub use hook::{MAX_LINE_BYTES, MAX_UPDATES, RefUpdate};
#[cfg(all(feature = "docker", feature = "registry"))]
pub use image::DockerfileBuilds;

use push::Pushes;

/// Settings of the builder.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct BuilderConfig {
    /// Most SSH connections at once; more are closed at once (default 64).
    pub max_connections: usize,
    /// Time a client has from connecting to authenticating (default 30 s).
    pub handshake_timeout: Duration,
    /// A connection with no traffic for this long is closed (default 10 min).
    pub idle_timeout: Duration,
    /// Largest pack one push may send (git's `receive.maxInputSize`, default 512 MiB).
    pub max_push_bytes: u64,
    /// Largest packed source of a pushed commit that is built (default 256 MiB).
    pub max_source_bytes: usize,
    /// How long a push waits for the new release's units to come up (default 2 min).
    pub launch_timeout: Duration,
    /// The router's port, for the app URL shown at the end of a push (`None`: 80).
    pub router_port: Option<u16>,
    /// Where pushes with a root `Dockerfile` are built into images (features `docker`
    /// and `registry`); `None`: a Dockerfile is ignored when there is a Procfile, and
    /// refused when there is not.
    #[cfg(all(feature = "docker", feature = "registry"))]
    pub dockerfile_builds: Option<DockerfileBuilds>,
}

impl Default for BuilderConfig {
    fn default() -> Self {
        Self {
            max_connections: 64,
            handshake_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(600),
            max_push_bytes: 512 << 20,
            max_source_bytes: 256 << 20,
            launch_timeout: Duration::from_secs(120),
            router_port: None,
            #[cfg(all(feature = "docker", feature = "registry"))]
            dockerfile_builds: None,
        }
    }
}

/// A running builder. Stop it with [`Builder::shutdown`].
#[derive(Debug)]
pub struct Builder {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Builder {
    /// Starts serving on `listener`. The host key is `<data_dir>/builder/ssh_host_ed25519_key`,
    /// made at first start; repositories live in `<data_dir>/repos`.
    pub fn start(
        listener: TcpListener,
        controller: Arc<Controller>,
        data_dir: &Path,
        config: BuilderConfig,
    ) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let key = ssh::host_key(&data_dir.join("builder").join("ssh_host_ed25519_key"))?;
        let ssh_config = Arc::new(russh::server::Config {
            server_id: russh::SshId::Standard("SSH-2.0-deis-builder".into()),
            methods: russh::MethodSet::from(&[russh::MethodKind::PublicKey][..]),
            keys: vec![key],
            inactivity_timeout: Some(config.idle_timeout),
            auth_rejection_time: Duration::from_millis(200),
            auth_rejection_time_initial: Some(Duration::ZERO),
            max_auth_attempts: 6,
            nodelay: true,
            ..Default::default()
        });
        let pushes = Arc::new(Pushes::new(controller.clone(), data_dir, config.clone()));
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(accept_loop(listener, ssh_config, controller, pushes, config, stopped));
        tracing::info!(%addr, "builder listening");
        Ok(Self { addr, stop, task })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting connections; pushes in progress are cut off.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

async fn accept_loop(
    listener: TcpListener,
    ssh_config: Arc<russh::server::Config>,
    controller: Arc<Controller>,
    pushes: Arc<Pushes>,
    config: BuilderConfig,
    mut stopped: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(config.max_connections));
    loop {
        let (stream, peer) = tokio::select! {
            () = async { let _ = stopped.wait_for(|s| *s).await; } => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "builder: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, max = config.max_connections, "builder: too many connections, closing one");
            continue;
        };
        let authenticated = Arc::new(AtomicBool::new(false));
        let handler = ssh::Connection {
            controller: controller.clone(),
            pushes: pushes.clone(),
            peer: Some(peer),
            authenticated: authenticated.clone(),
            user: None,
            channels: Default::default(),
        };
        let (ssh_config, handshake, mut stopped) = (ssh_config.clone(), config.handshake_timeout, stopped.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let session =
                match tokio::time::timeout(handshake, russh::server::run_stream(ssh_config, stream, handler)).await {
                    Ok(Ok(session)) => session,
                    Ok(Err(e)) => return tracing::debug!(%peer, error = %e, "builder: handshake failed"),
                    Err(_) => return tracing::debug!(%peer, "builder: no SSH greeting in time"),
                };
            let handle = session.handle();
            let mut session = std::pin::pin!(session);
            let deadline = tokio::time::sleep(handshake);
            tokio::pin!(deadline);
            let mut deadline_armed = true;
            let reason = loop {
                tokio::select! {
                    result = &mut session => {
                        if let Err(e) = result {
                            tracing::debug!(%peer, error = %e, "builder: connection ended with an error");
                        }
                        return;
                    }
                    () = &mut deadline, if deadline_armed => {
                        if authenticated.load(std::sync::atomic::Ordering::Acquire) {
                            deadline_armed = false;
                            continue;
                        }
                        tracing::info!(%peer, "builder: not authenticated in time, disconnecting");
                        break "authentication timed out";
                    }
                    () = async { let _ = stopped.wait_for(|s| *s).await; } => break "the builder is shutting down",
                }
            };
            let _ = handle.disconnect(russh::Disconnect::ByApplication, reason.into(), String::new()).await;
        });
    }
}
