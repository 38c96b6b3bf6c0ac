//! Permissions (§3.10): app collaborators and platform administrators, and disabling
//! users (§3.11).
//!
//! | role | may |
//! |---|---|
//! | owner | everything on the app |
//! | collaborator | deploy, configure, scale, run, logs, domains, settings; not destroy, transfer or manage collaborators |
//! | admin | everything on every app, users and administrators |
//! | anybody else | nothing on the app: 403 |

use super::{Access, Controller, ControllerError, MAX_ATTEMPTS, ResourceKind, Result};
use crate::model::{AppName, User};
use crate::store::Txn;
use crate::store::records::{self, app_key, user_key};

impl Controller {
    /// The app's collaborators, sorted (the owner is not one). Owner, collaborators
    /// and admins may look.
    pub async fn collaborators(&self, user: &User, id: &AppName) -> Result<Vec<String>> {
        Ok(self.app(user, id).await?.collaborators.into_iter().collect())
    }

    /// Makes `username` a collaborator on the app (owner or admin).
    pub async fn add_collaborator(&self, user: &User, id: &AppName, username: &str) -> Result<()> {
        self.app_managed_by(user, id).await?;
        let _guard = self.lock_app(id).await;
        for _ in 0..MAX_ATTEMPTS {
            let (mut app, rev) = self.app_managed_by(user, id).await?;
            let (_, user_rev) = self.find_user(username).await?;
            if app.is_member(username) {
                let role = if app.owner == username { "the owner of" } else { "a collaborator on" };
                return Err(ControllerError::AlreadyMember {
                    username: username.to_string(),
                    role: format!("{role} {id}"),
                });
            }
            app.collaborators.insert(username.to_string());
            app.updated = crate::time::Timestamp::now();
            // Compare on the user too: a user removed meanwhile must not be added.
            let txn = Txn::new()
                .when(app_key(id), rev)
                .when(user_key(username), user_rev)
                .put(app_key(id), records::encode(&app));
            if self.commit(txn).await? {
                self.log_event(id, format!("{} added collaborator {username}", user.username)).await;
                return Ok(());
            }
        }
        Err(ControllerError::Concurrent { kind: ResourceKind::App })
    }

    /// Removes a collaborator (owner or admin); not found if `username` is not one.
    pub async fn remove_collaborator(&self, user: &User, id: &AppName, username: &str) -> Result<()> {
        let changed = self.change_app(user, id, Access::Manage, |app| Ok(app.collaborators.remove(username))).await?;
        if changed.is_none() {
            return Err(ControllerError::not_found(ResourceKind::User, username));
        }
        self.log_event(id, format!("{} removed collaborator {username}", user.username)).await;
        Ok(())
    }

    /// The platform's administrators, sorted by name (admins only).
    pub async fn admins(&self, caller: &User) -> Result<Vec<User>> {
        Ok(self.list_users(caller).await?.into_iter().filter(|u| u.is_superuser).collect())
    }

    /// Makes `username` an administrator (admins only).
    pub async fn grant_admin(&self, caller: &User, username: &str) -> Result<()> {
        self.set_user_flags(caller, username, |u| {
            if u.is_superuser {
                return Err(ControllerError::AlreadyMember {
                    username: u.username.clone(),
                    role: "an administrator".into(),
                });
            }
            u.is_superuser = true;
            Ok(())
        })
        .await?;
        tracing::info!(user = username, by = %caller.username, "administrator added");
        Ok(())
    }

    /// Takes administrator rights from `username` (admins only); the last active
    /// administrator keeps them ([`ControllerError::LastAdmin`]).
    pub async fn revoke_admin(&self, caller: &User, username: &str) -> Result<()> {
        self.set_user_flags(caller, username, |u| {
            if !u.is_superuser {
                return Err(ControllerError::not_found(ResourceKind::User, &u.username));
            }
            u.is_superuser = false;
            Ok(())
        })
        .await?;
        tracing::info!(user = username, by = %caller.username, "administrator removed");
        Ok(())
    }

    /// Enables or disables a user (admins only). A disabled user can't log in and
    /// their tokens are refused; their apps keep running. Admins can't disable
    /// themselves, nor the last active administrator.
    pub async fn set_user_active(&self, caller: &User, username: &str, active: bool) -> Result<()> {
        if !active && caller.username == username {
            return Err(ControllerError::validation("username", "You can't disable your own account."));
        }
        self.set_user_flags(caller, username, |u| {
            u.is_active = active;
            Ok(())
        })
        .await?;
        tracing::info!(user = username, active, by = %caller.username, "user activation changed");
        Ok(())
    }

    /// Changes one user's record (admins only) in a transaction that also checks an
    /// active administrator remains.
    async fn set_user_flags<F>(&self, caller: &User, username: &str, mut change: F) -> Result<()>
    where
        F: FnMut(&mut User) -> Result<()>,
    {
        if !caller.is_superuser {
            return Err(ControllerError::Forbidden);
        }
        let _guard = self.users_lock.lock().await;
        for _ in 0..MAX_ATTEMPTS {
            let (mut user, rev) = self.find_user(username).await?;
            let was_admin = user.is_superuser && user.is_active;
            change(&mut user)?;
            let key = user_key(username);
            let mut txn = Txn::new().when(&key, rev).put(&key, records::encode(&user));
            if was_admin && !(user.is_superuser && user.is_active) {
                // Compare on every other active admin, so two demotions can't race
                // past each other and leave none.
                let others: Vec<(User, u64)> = self.admin_records(username).await?;
                if others.is_empty() {
                    return Err(ControllerError::LastAdmin { username: username.to_string() });
                }
                for (admin, admin_rev) in others {
                    txn = txn.when(user_key(&admin.username), admin_rev);
                }
            }
            if self.commit(txn).await? {
                return Ok(());
            }
        }
        Err(ControllerError::Concurrent { kind: ResourceKind::User })
    }

    /// Every active administrator except `except`, with revisions.
    pub(super) async fn admin_records(&self, except: &str) -> Result<Vec<(User, u64)>> {
        let mut out = Vec::new();
        for kv in self.store.list("users/").await?.kvs {
            let u: User = records::decode(&kv)?;
            if u.is_superuser && u.is_active && u.username != except {
                out.push((u, kv.mod_revision));
            }
        }
        Ok(out)
    }
}
