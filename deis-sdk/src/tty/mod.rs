//! The TTY broker over the network: `deis run` sessions on WebSockets.
//!
//! - [`TtyService`] holds a [`TtyBroker`] backend, the token signer shared with the
//!   controller, the replay guard and a [`SessionDirectory`]; the controller uses it to
//!   create sessions ([`TtyService::create_session`]) and to run Workflow batch
//!   commands ([`TtyService::run_batch`]).
//! - [`attach_router`] serves `GET /v2/sessions/<id>/attach?token=...` (the token may
//!   also come as `Authorization: Bearer`): a WebSocket speaking the Kubernetes channel
//!   protocol (`v5.channel.k8s.io`, or `v4`; see [`deis_core::tty::channel`]). Before
//!   upgrading it checks the token (signature, expiry, app, one use) and the `Origin`.
//!   It pings every [`TtyConfig::ping_interval`], ends idle sessions and sessions past
//!   [`TtyConfig::max_session`], and never buffers without bound in either direction.
//! - [`client`] is the other end: create a session through the controller API, attach
//!   to it, get a [`deis_core::tty::Session`]-like pair of channels.
//! - Every session start and end goes to an [`AuditSink`] ([`TracingAudit`] by
//!   default; [`LogAudit`] also writes it into the app's log, as deisd does).
//!
//! ```no_run
//! # async fn demo(broker: std::sync::Arc<dyn deis_core::tty::TtyBroker>) -> std::io::Result<()> {
//! use std::sync::Arc;
//! use deis_sdk::tty::{LocalDirectory, TtyConfig, TtyService, attach_router};
//! use deis_core::tty::token::TokenSigner;
//!
//! let directory = Arc::new(LocalDirectory { dir: "/srv/app".into(), env: Default::default() });
//! let service = TtyService::new(broker, TokenSigner::new(b"shared secret, 32+ random bytes.."), directory, TtyConfig::default());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8022").await?;
//! // With a header read timeout and a connection cap (plain `axum::serve` has neither).
//! let limits = deis_sdk::controller::ApiLimits::default();
//! deis_sdk::controller::serve(listener, attach_router(Arc::new(service)), limits, std::future::pending()).await;
//! Ok(())
//! # }
//! ```

mod audit;
pub mod client;
mod directory;
#[cfg(feature = "docker")]
pub mod docker;
#[cfg(feature = "docker")]
pub mod docker_hosts;
#[cfg(any(feature = "docker", feature = "kubernetes"))]
mod exec;
#[cfg(feature = "kubernetes")]
pub mod kubernetes;
mod metrics;
mod server;
#[cfg(feature = "swarm")]
pub mod swarm;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use deis_core::time::Timestamp;
use deis_core::tty::token::{Claims, ReplayGuard, TokenSigner};
use deis_core::tty::{ExitStatus, SessionInput, SessionOutput, SessionSpec, TtyBroker, TtyError};

pub use audit::{AuditEvent, AuditSink, LogAudit, TracingAudit};
pub use directory::{LocalDirectory, PendingSessions, SessionDirectory, SessionError};
pub use metrics::{SessionEnd, TtyCounters};
pub use server::attach_router;

/// Settings of a [`TtyService`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TtyConfig {
    /// How often the broker pings the client (kubectl: 5 s).
    pub ping_interval: Duration,
    /// A session without input or output for this long is ended (default 30 min).
    pub idle_timeout: Duration,
    /// Longest session (default 12 h).
    pub max_session: Duration,
    /// Time to live of session tokens (default 60 s): the client must attach within it.
    pub token_ttl: Duration,
    /// `Origin`s (e.g. `https://console.example.com`) allowed besides the broker's own
    /// host; requests without `Origin` (CLIs) are always allowed.
    pub allowed_origins: Vec<String>,
    /// Largest WebSocket message accepted from a client (default 1 MiB).
    pub max_message_bytes: usize,
    /// Limit of a Workflow batch run (`POST /v2/apps/<app>/run`, default 10 min).
    pub batch_timeout: Duration,
    /// Most output a batch run returns (default 16 MiB); the rest is dropped and a
    /// note says so.
    pub batch_output_cap: usize,
    /// How clients reach this broker through the routing mesh, announced in every
    /// [`SessionTicket`] (default `None`: clients attach on the controller's address).
    pub via_router: Option<ViaRouter>,
}

/// Where the router that passes attach WebSockets to the broker listens, and the host
/// it routes to the broker (see [`crate::router::RouterConfig::platform_host`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViaRouter {
    /// The router's address, `host:port` (e.g. `127.0.0.1:8080`).
    pub router: String,
    /// The `Host` to send it (e.g. `deis.example.com`).
    pub host: String,
}

impl Default for TtyConfig {
    fn default() -> Self {
        Self {
            ping_interval: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(30 * 60),
            max_session: Duration::from_secs(12 * 3600),
            token_ttl: deis_core::tty::token::DEFAULT_TTL,
            allowed_origins: vec![],
            max_message_bytes: 1 << 20,
            batch_timeout: Duration::from_secs(600),
            batch_output_cap: 16 << 20,
            via_router: None,
        }
    }
}

/// What `POST /v2/apps/<app>/sessions` answers: where and with what to attach.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SessionTicket {
    /// Session id.
    pub id: String,
    /// One-time token, valid until `expires`.
    pub token: String,
    /// Attach path on the same host: `/v2/sessions/<id>/attach`.
    pub url: String,
    /// Expiry of the token.
    pub expires: Timestamp,
    /// The router to attach through (`host:port`), when the broker is reachable through
    /// the routing mesh; absent: attach on the controller's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub router: Option<String>,
    /// The `Host` to send `router` (`deis.<domain>`); set together with `router`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

/// The result of a batch run.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BatchOutput {
    /// Exit code (128 + signal for a killed command; 124 after the timeout).
    pub exit_code: i32,
    /// stdout and stderr, interleaved as they came, lossily decoded as UTF-8.
    pub output: String,
}

/// Errors of [`TtyService`] operations.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The backend refused or failed.
    #[error(transparent)]
    Tty(#[from] TtyError),
    /// The session can't be kept (too many are waiting to be attached).
    #[error(transparent)]
    Session(#[from] SessionError),
    /// This service does not create sessions (a standalone broker).
    #[error("this broker does not create sessions; ask the controller")]
    NotEmbedded,
}

/// The broker's state, shared by the controller routes and the attach route.
#[derive(Debug)]
pub struct TtyService {
    broker: Arc<dyn TtyBroker>,
    signer: TokenSigner,
    replay: ReplayGuard,
    directory: Arc<dyn SessionDirectory>,
    pending: Option<Arc<PendingSessions>>,
    audit: Arc<dyn AuditSink>,
    config: TtyConfig,
    counters: TtyCounters,
}

/// How many created-but-not-attached sessions a controller keeps.
pub const MAX_PENDING_SESSIONS: usize = 10_000;

impl TtyService {
    /// A broker that resolves sessions through `directory` (e.g. a standalone broker
    /// with a [`LocalDirectory`]). It can't create sessions itself.
    pub fn new(
        broker: Arc<dyn TtyBroker>,
        signer: TokenSigner,
        directory: Arc<dyn SessionDirectory>,
        config: TtyConfig,
    ) -> Self {
        Self {
            broker,
            signer,
            replay: ReplayGuard::default(),
            directory,
            pending: None,
            audit: Arc::new(TracingAudit),
            config,
            counters: TtyCounters::default(),
        }
    }

    /// The service of a controller that embeds its broker: sessions created with
    /// [`TtyService::create_session`] are attached on the same service.
    pub fn embedded(broker: Arc<dyn TtyBroker>, signer: TokenSigner, config: TtyConfig) -> Self {
        let pending = Arc::new(PendingSessions::new(MAX_PENDING_SESSIONS));
        let mut s = Self::new(broker, signer, pending.clone(), config);
        s.pending = Some(pending);
        s
    }

    /// Sends audit events to `sink` instead of `tracing` only.
    pub fn with_audit(mut self, sink: Arc<dyn AuditSink>) -> Self {
        self.audit = sink;
        self
    }

    /// The settings.
    pub fn config(&self) -> &TtyConfig {
        &self.config
    }

    /// The backend.
    pub fn broker(&self) -> &Arc<dyn TtyBroker> {
        &self.broker
    }

    /// Sessions started, open, ended and refused (for `/metrics`).
    pub fn counters(&self) -> &TtyCounters {
        &self.counters
    }

    /// Creates a session for `spec` (already authorised by the caller) and returns
    /// the one-time token, valid for [`TtyConfig::token_ttl`], bound to the spec's user,
    /// app and command. Only an [`embedded`](Self::embedded) service creates sessions.
    pub fn create_session(&self, spec: SessionSpec) -> Result<SessionTicket, ServiceError> {
        let pending = self.pending.as_ref().ok_or(ServiceError::NotEmbedded)?;
        let claims = Claims::new(&spec.user, spec.app.clone(), spec.command.clone(), spec.tty, spec.proc_type.clone());
        let id = claims.session.clone();
        let ttl = self.config.token_ttl;
        let token = self.signer.issue(claims, ttl);
        pending.insert(&id, spec, ttl)?;
        let expires = Timestamp::from(SystemTime::now() + ttl);
        let (router, host) = match &self.config.via_router {
            Some(v) => (Some(v.router.clone()), Some(v.host.clone())),
            None => (None, None),
        };
        Ok(SessionTicket { url: format!("/v2/sessions/{id}/attach"), id, token, expires, router, host })
    }

    /// Drops the sessions of `user` (everyone's: `None`) created but not attached yet:
    /// their tokens attach nothing after the user's API token was regenerated.
    /// A standalone broker keeps no sessions (its tokens carry their spec and live
    /// [`TtyConfig::token_ttl`]); this returns 0 there.
    pub fn revoke_sessions(&self, user: Option<&str>) -> usize {
        self.pending.as_ref().map_or(0, |p| p.revoke(user))
    }

    /// Runs `spec` without a terminal and without stdin, collecting stdout and stderr
    /// (up to [`TtyConfig::batch_output_cap`]) until it exits or
    /// [`TtyConfig::batch_timeout`] passes (then it is killed: exit code 124).
    pub async fn run_batch(&self, mut spec: SessionSpec) -> Result<BatchOutput, ServiceError> {
        spec.tty = false;
        let id = deis_core::auth::random_hex(16);
        let (user, app, command) = (spec.user.clone(), spec.app.clone(), spec.command.clone());
        let started = std::time::Instant::now();
        let mut session = self.broker.open(spec).await?;
        self.counters.started();
        self.audit
            .record(&AuditEvent::Started {
                id: id.clone(),
                user: user.clone(),
                app: app.clone(),
                command: command.clone(),
                tty: false,
            })
            .await;
        let _ = session.input.send(SessionInput::Eof).await;
        let cap = self.config.batch_output_cap;
        let mut out = Vec::new();
        let mut dropped = 0usize;
        let collect = async {
            while let Some(msg) = session.output.recv().await {
                match msg {
                    SessionOutput::Stdout(b) | SessionOutput::Stderr(b) => {
                        let room = cap.saturating_sub(out.len());
                        out.extend_from_slice(&b[..b.len().min(room)]);
                        dropped += b.len().saturating_sub(room);
                    }
                    SessionOutput::Exit(status) => return Some(status),
                }
            }
            None
        };
        let (exit, reason, how) = match tokio::time::timeout(self.config.batch_timeout, collect).await {
            Ok(Some(status)) => (Some(status), "exited".to_string(), SessionEnd::Exited),
            Ok(None) => {
                (None, "the session ended without an exit status (backend failure)".to_string(), SessionEnd::Failed)
            }
            Err(_) => (None, format!("timed out after {}s", self.config.batch_timeout.as_secs()), SessionEnd::TimedOut),
        };
        self.counters.ended(how);
        drop(session);
        let mut output = String::from_utf8_lossy(&out).into_owned();
        if dropped > 0 {
            output.push_str(&format!("\n[deis: {dropped} more bytes of output were dropped (limit {cap} bytes)]\n"));
        }
        let exit_code = match exit {
            Some(status) => status.code(),
            None if reason.starts_with("timed out") => {
                output.push_str(&format!("\n[deis: the command {reason} and was killed]\n"));
                124
            }
            None => {
                output.push_str(&format!("\n[deis: {reason}]\n"));
                ExitStatus::Code(1).code()
            }
        };
        self.audit
            .record(&AuditEvent::Ended { id, user, app, command, exit, reason, duration: started.elapsed() })
            .await;
        Ok(BatchOutput { exit_code, output })
    }
}
