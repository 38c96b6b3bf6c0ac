//! Syslog ingest tokens: the secret a network syslog line must carry to enter an app's
//! log (`ingesttokens/<app>`), so nobody who merely reaches the syslog listener can
//! write lines as `hello[web.1]`.
//!
//! Every app gets one when it is created (apps created before tokens existed get one
//! from [`Controller::ensure_ingest_tokens`] at start, or when first asked for), it goes
//! with the app, and owner, collaborators and admins may read and rotate it. A sender
//! puts it in the `[deis@32473 token="…"]` structured data or as the last `/` part of
//! the tag (`hello.web.1/TOKEN`), as `deis_core::logs::syslog::DeisParams` reads it.

use serde::{Deserialize, Serialize};

use super::{Controller, ControllerError, MAX_ATTEMPTS, ResourceKind, Result};
use crate::model::{App, AppName, User};
use crate::store::Txn;
use crate::store::records::{self, app_key};
use crate::time::Timestamp;

/// Prefix of all ingest token records.
pub const INGEST_TOKENS_PREFIX: &str = "ingesttokens/";

/// Random bytes of a token (128 bits), written as hex: 32 characters, so
/// `app.web.1/TOKEN` still fits the 48 characters RFC 5424 allows an APP-NAME (util-linux
/// `logger` refuses longer tags) for short app names.
const TOKEN_BYTES: usize = 16;

/// Key of an app's ingest token.
pub fn ingest_token_key(app: &str) -> String {
    format!("{INGEST_TOKENS_PREFIX}{app}")
}

/// An app's syslog ingest token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestToken {
    /// The app.
    pub app: AppName,
    /// The secret: 32 lowercase hex characters (128 random bits).
    pub token: String,
    /// When it was made (created or last rotated).
    pub created: Timestamp,
}

impl IngestToken {
    /// A fresh random token for `app`.
    pub fn generate(app: &AppName) -> Self {
        Self { app: app.clone(), token: crate::auth::random_hex(TOKEN_BYTES), created: Timestamp::now() }
    }
}

impl Controller {
    /// The app's ingest token (owner, collaborators, admins), made now if the app has
    /// none yet.
    pub async fn ingest_token(&self, user: &User, app: &AppName) -> Result<IngestToken> {
        self.app_for(user, app).await?;
        for _ in 0..MAX_ATTEMPTS {
            if let Some((token, _)) = records::get_json::<IngestToken>(&*self.store, &ingest_token_key(app)).await? {
                return Ok(token);
            }
            let (_, rev) = self.app_for(user, app).await?;
            if let Some(token) = self.create_ingest_token(app, rev).await? {
                return Ok(token);
            }
        }
        Err(ControllerError::Concurrent { kind: ResourceKind::App })
    }

    /// Replaces the app's ingest token with a new one (owner, collaborators, admins).
    /// Lines carrying the old one are refused from now on; senders configured with it
    /// (Docker containers) need the new one, which restarted units get.
    pub async fn rotate_ingest_token(&self, user: &User, app: &AppName) -> Result<IngestToken> {
        self.app_for(user, app).await?;
        let _guard = self.lock_app(app).await;
        for _ in 0..MAX_ATTEMPTS {
            let (_, rev) = self.app_for(user, app).await?;
            let token = IngestToken::generate(app);
            let key = ingest_token_key(app);
            let txn = Txn::new().when(app_key(app), rev).put(&key, records::encode(&token));
            if self.commit(txn).await? {
                tracing::info!(app = %app, by = %user.username, "ingest token rotated");
                self.log_event(app, format!("Log ingest token rotated by {}", user.username)).await;
                return Ok(token);
            }
        }
        Err(ControllerError::Concurrent { kind: ResourceKind::App })
    }

    /// Gives every app without an ingest token one (apps created before tokens
    /// existed); returns how many were made. Safe to run on several replicas at once.
    pub async fn ensure_ingest_tokens(&self) -> Result<usize> {
        let mut made = 0;
        for kv in self.store.list("apps/").await?.kvs {
            let app: App = records::decode(&kv)?;
            if self.store.get(&ingest_token_key(&app.id)).await?.is_none()
                && self.create_ingest_token(&app.id, kv.mod_revision).await?.is_some()
            {
                made += 1;
            }
        }
        if made > 0 {
            tracing::info!(apps = made, "made ingest tokens for apps that had none");
        }
        Ok(made)
    }

    /// Writes a new token if the app is still at `app_rev` and has none; `None` if
    /// either changed meanwhile.
    async fn create_ingest_token(&self, app: &AppName, app_rev: u64) -> Result<Option<IngestToken>> {
        let token = IngestToken::generate(app);
        let key = ingest_token_key(app);
        let txn = Txn::new().when(app_key(app), app_rev).when(&key, 0).put(&key, records::encode(&token));
        Ok(self.commit(txn).await?.then_some(token))
    }
}
