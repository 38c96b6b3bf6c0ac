//! App settings (§3.12): maintenance, routing, labels and autoscale (`/settings/`),
//! the HTTPS redirect (`/tls/`) and the client allow-list (`/whitelist/`). They live in
//! the app record, so the router, which follows app records, applies a change at once;
//! none makes a release.

use serde_json::{Value, json};

use super::{Access, Controller, ControllerError, MAX_ATTEMPTS, ResourceKind, Result};
use crate::model::{AddressRange, App, AppName, AppSettings, SettingsPatch, User};
use crate::store::Txn;
use crate::store::records::{self, app_key};
use crate::time::Timestamp;

impl Controller {
    /// Changes an app record with `change` (which says whether it changed anything) in
    /// one compare-and-swap, retried on conflict. `Ok(None)` when nothing changed.
    pub(super) async fn change_app<F>(
        &self,
        user: &User,
        id: &AppName,
        access: Access,
        mut change: F,
    ) -> Result<Option<App>>
    where
        F: FnMut(&mut App) -> Result<bool>,
    {
        self.app_with(user, id, access).await?;
        let _guard = self.lock_app(id).await;
        for _ in 0..MAX_ATTEMPTS {
            let (mut app, rev) = self.app_with(user, id, access).await?;
            if !change(&mut app)? {
                return Ok(None);
            }
            app.updated = Timestamp::now();
            let key = app_key(id);
            if self.commit(Txn::new().when(&key, rev).put(&key, records::encode(&app))).await? {
                return Ok(Some(app));
            }
        }
        Err(ControllerError::Concurrent { kind: ResourceKind::App })
    }

    /// The settings object of `GET /v2/apps/<app>/settings/` (what `deis info` reads).
    pub async fn app_settings(&self, user: &User, id: &AppName) -> Result<Value> {
        Ok(settings_view(&self.app(user, id).await?))
    }

    /// Applies a partial settings change (owner, collaborator or admin);
    /// [`ControllerError::NothingChanged`] if it changes nothing.
    pub async fn update_settings(&self, user: &User, id: &AppName, patch: &SettingsPatch) -> Result<Value> {
        let mut what = Vec::new();
        let changed = self
            .change_app(user, id, Access::Use, |app| {
                let (next, changes) = app.settings.apply(patch)?;
                app.settings = next;
                what = changes;
                Ok(!what.is_empty())
            })
            .await?;
        let Some(app) = changed else { return Err(ControllerError::NothingChanged { user: user.username.clone() }) };
        self.log_event(id, format!("{} changed settings: {}", user.username, what.join(", "))).await;
        Ok(settings_view(&app))
    }

    /// The TLS object of `GET /v2/apps/<app>/tls/`.
    pub async fn app_tls(&self, user: &User, id: &AppName) -> Result<Value> {
        Ok(tls_view(&self.app(user, id).await?))
    }

    /// Turns the HTTP to HTTPS redirect on or off (`deis tls:enable` / `tls:disable`).
    pub async fn set_https_enforced(&self, user: &User, id: &AppName, enforced: bool) -> Result<Value> {
        let changed = self
            .change_app(user, id, Access::Use, |app| {
                let changed = app.settings.https_enforced != enforced;
                app.settings.https_enforced = enforced;
                Ok(changed)
            })
            .await?;
        let app = match changed {
            Some(app) => {
                let state = if enforced { "enforced" } else { "no longer enforced" };
                self.log_event(id, format!("HTTPS {state} by {}", user.username)).await;
                app
            }
            None => self.app(user, id).await?,
        };
        Ok(tls_view(&app))
    }

    /// The app's allow-list (empty: everyone may connect).
    pub async fn whitelist(&self, user: &User, id: &AppName) -> Result<Vec<AddressRange>> {
        Ok(self.app(user, id).await?.settings.whitelist)
    }

    /// Adds client addresses or CIDR ranges to the allow-list; returns the whole list.
    pub async fn allow_addresses(
        &self,
        user: &User,
        id: &AppName,
        addresses: &[AddressRange],
    ) -> Result<Vec<AddressRange>> {
        let changed = self.change_app(user, id, Access::Use, |app| Ok(app.settings.allow(addresses)? > 0)).await?;
        match changed {
            Some(app) => {
                let list: Vec<String> = addresses.iter().map(ToString::to_string).collect();
                self.log_event(id, format!("{} allowed {}", user.username, list.join(", "))).await;
                Ok(app.settings.whitelist)
            }
            None => self.whitelist(user, id).await,
        }
    }

    /// Removes addresses from the allow-list; each must be on it
    /// ([`ControllerError::NotSet`] otherwise, and nothing is removed).
    pub async fn disallow_addresses(&self, user: &User, id: &AppName, addresses: &[AddressRange]) -> Result<()> {
        self.change_app(user, id, Access::Use, |app| {
            app.settings.disallow(addresses)?;
            Ok(!addresses.is_empty())
        })
        .await?;
        Ok(())
    }
}

fn header(app: &App) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    m.insert("uuid".into(), json!(app.uuid));
    m.insert("app".into(), json!(app.id));
    m.insert("owner".into(), json!(app.owner));
    m.insert("created".into(), json!(app.created));
    m.insert("updated".into(), json!(app.updated));
    m
}

/// Workflow's `AppSettings` object.
fn settings_view(app: &App) -> Value {
    let AppSettings { maintenance, routable, whitelist, autoscale, label, .. } = &app.settings;
    let mut m = header(app);
    m.insert("maintenance".into(), json!(maintenance));
    m.insert("routable".into(), json!(routable));
    m.insert("whitelist".into(), json!(whitelist));
    m.insert("autoscale".into(), json!(autoscale));
    m.insert("label".into(), json!(label));
    Value::Object(m)
}

/// Workflow's `TLS` object.
fn tls_view(app: &App) -> Value {
    let mut m = header(app);
    m.insert("https_enforced".into(), json!(app.settings.https_enforced));
    Value::Object(m)
}
