//! Where the broker finds what a session runs: [`SessionDirectory`], with the
//! controller's [`PendingSessions`] (specs created by `POST /v2/apps/<app>/sessions`)
//! and the standalone broker's [`LocalDirectory`] (specs built from the token's claims).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use deis_core::scheduler::Artifact;
use deis_core::tty::SessionSpec;
use deis_core::tty::token::Claims;

/// Why a session can't be kept or handed out.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// No session has this id (never created, or expired and pruned).
    #[error("unknown session (never created, or expired)")]
    Unknown,
    /// The session's token expired before it was attached.
    #[error("the session expired before it was attached; start a new one")]
    Expired,
    /// The session was attached before: a token is good for one attach.
    #[error("the session is already attached")]
    AlreadyAttached,
    /// The directory is full of sessions waiting to be attached.
    #[error("too many sessions waiting to be attached ({waiting}); try again in a minute")]
    TooMany {
        /// How many are waiting.
        waiting: usize,
    },
    /// A directory's backend failed (for directories that look sessions up elsewhere).
    #[error("the session directory failed: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Resolves attach requests to what they run.
#[async_trait]
pub trait SessionDirectory: Send + Sync + fmt::Debug {
    /// The app session `id` belongs to (what its token must be bound to), or `None`
    /// when the session is unknown. `query_app` is the `app` query parameter of the
    /// attach request, if any.
    async fn app_of(&self, id: &str, query_app: Option<&str>) -> Option<String>;

    /// The spec to run for a verified, not yet used token. To ensure correctness: a
    /// spec is handed out at most once per session id (a second take is
    /// [`SessionError::AlreadyAttached`]).
    async fn take(&self, claims: &Claims) -> Result<SessionSpec, SessionError>;
}

/// Specs of sessions created by the controller, each kept until its token expires
/// (after the attach only the app is kept, so a second use of the token is refused as
/// a replay, not as an unknown session). Bounded: beyond `capacity` entries, expired
/// ones are dropped and new sessions refused.
#[derive(Debug)]
pub struct PendingSessions {
    capacity: usize,
    entries: Mutex<HashMap<String, Pending>>,
}

#[derive(Debug)]
struct Pending {
    app: String,
    /// `None` once attached.
    spec: Option<SessionSpec>,
    deadline: Instant,
}

impl PendingSessions {
    /// Room for `capacity` sessions waiting to be attached.
    pub fn new(capacity: usize) -> Self {
        Self { capacity: capacity.max(1), entries: Mutex::new(HashMap::new()) }
    }

    /// Keeps `spec` for session `id` for `ttl`. [`SessionError::TooMany`] when full of
    /// unexpired sessions.
    pub fn insert(&self, id: &str, spec: SessionSpec, ttl: Duration) -> Result<(), SessionError> {
        let now = Instant::now();
        let mut entries = self.entries.lock().expect("pending sessions");
        if entries.len() >= self.capacity {
            entries.retain(|_, p| p.deadline > now);
            if entries.len() >= self.capacity {
                return Err(SessionError::TooMany { waiting: entries.len() });
            }
        }
        entries.insert(id.to_string(), Pending { app: spec.app.to_string(), spec: Some(spec), deadline: now + ttl });
        Ok(())
    }

    /// Forgets the sessions of `user` (of everyone: `None`) still waiting to be
    /// attached, so tokens issued before its API token was regenerated (`deis
    /// auth:regenerate`) attach nothing. Returns how many were dropped.
    pub fn revoke(&self, user: Option<&str>) -> usize {
        let mut entries = self.entries.lock().expect("pending sessions");
        let before = entries.len();
        entries.retain(|_, p| user.is_some_and(|u| p.spec.as_ref().is_none_or(|s| s.user != u)));
        before - entries.len()
    }

    /// Number of sessions waiting (expired ones included until pruned).
    pub fn len(&self) -> usize {
        self.entries.lock().expect("pending sessions").len()
    }

    /// Whether no session is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl SessionDirectory for PendingSessions {
    async fn app_of(&self, id: &str, _query_app: Option<&str>) -> Option<String> {
        let entries = self.entries.lock().expect("pending sessions");
        entries.get(id).filter(|p| p.deadline > Instant::now()).map(|p| p.app.clone())
    }

    async fn take(&self, claims: &Claims) -> Result<SessionSpec, SessionError> {
        let mut entries = self.entries.lock().expect("pending sessions");
        match entries.get_mut(&claims.session) {
            Some(p) if p.deadline <= Instant::now() => Err(SessionError::Expired),
            Some(p) => p.spec.take().ok_or(SessionError::AlreadyAttached),
            None => Err(SessionError::Unknown),
        }
    }
}

/// The standalone broker's directory: every session runs its token's command in one
/// directory with one environment (plus `DEIS_APP`). The app comes from the attach
/// request's `app` query parameter (the token must be bound to it).
#[derive(Debug, Clone)]
pub struct LocalDirectory {
    /// Working directory of the commands.
    pub dir: PathBuf,
    /// Environment of the commands.
    pub env: BTreeMap<String, String>,
}

#[async_trait]
impl SessionDirectory for LocalDirectory {
    async fn app_of(&self, _id: &str, query_app: Option<&str>) -> Option<String> {
        query_app.map(str::to_string)
    }

    async fn take(&self, claims: &Claims) -> Result<SessionSpec, SessionError> {
        let mut env = self.env.clone();
        env.insert("DEIS_APP".into(), claims.app.to_string());
        Ok(SessionSpec {
            app: claims.app.clone(),
            proc_type: claims.proc_type.clone(),
            artifact: Artifact::Source { dir: self.dir.clone() },
            release: 0,
            env,
            command: claims.command.clone(),
            tty: claims.tty,
            size: None,
            user: claims.user.clone(),
            identity: None,
            limits: Default::default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deis_core::testing::{app_name, process_type};

    fn spec(app: &str) -> SessionSpec {
        SessionSpec {
            app: app_name(app),
            proc_type: process_type("web"),
            artifact: Artifact::Source { dir: "/tmp".into() },
            release: 1,
            env: BTreeMap::new(),
            command: vec!["true".into()],
            tty: false,
            size: None,
            user: "alice".into(),
            identity: None,
            limits: Default::default(),
        }
    }

    #[tokio::test]
    async fn pending_specs_are_handed_out_once_and_bounded() {
        let pending = PendingSessions::new(2);
        let claims = Claims::new("alice", app_name("a"), vec!["true".into()], false, process_type("web"));
        pending.insert(&claims.session, spec("a"), Duration::from_secs(60)).unwrap();
        assert_eq!(pending.app_of(&claims.session, None).await.as_deref(), Some("a"));
        assert_eq!(pending.app_of("nope", Some("a")).await, None);
        pending.insert("x", spec("b"), Duration::from_secs(60)).unwrap();
        let full = pending.insert("y", spec("b"), Duration::from_secs(60)).unwrap_err();
        assert!(matches!(full, SessionError::TooMany { waiting: 2 }), "{full:?}");
        assert!(full.to_string().contains("too many"));
        assert_eq!(pending.take(&claims).await.unwrap().app, "a");
        assert!(matches!(pending.take(&claims).await, Err(SessionError::AlreadyAttached)));
        assert_eq!(pending.app_of(&claims.session, None).await.as_deref(), Some("a"), "kept for replay detection");
        let other = Claims::new("alice", app_name("a"), vec!["true".into()], false, process_type("web"));
        assert!(matches!(pending.take(&other).await, Err(SessionError::Unknown)));
        // Expired entries make room.
        let pending = PendingSessions::new(2);
        pending.insert("x", spec("b"), Duration::from_secs(60)).unwrap();
        pending.insert("z", spec("c"), Duration::ZERO).unwrap();
        let mut late = Claims::new("alice", app_name("c"), vec!["true".into()], false, process_type("web"));
        late.session = "z".into();
        assert!(matches!(pending.take(&late).await, Err(SessionError::Expired)));
        pending.insert("w", spec("c"), Duration::from_secs(60)).unwrap();
    }
}
