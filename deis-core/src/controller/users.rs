//! Users and API tokens: register, login, authenticate, regenerate, cancel, passwd.
//!
//! Tokens are stored only as their sha256 (`tokens/<sha256>` → username); a user may
//! hold several (one per login), and regenerating replaces all of them.

use std::sync::OnceLock;

use super::{Controller, ControllerError, MAX_ATTEMPTS, RegistrationMode, ResourceKind, Result};
use crate::auth;
use crate::model::{App, User, validate};
use crate::store::Txn;
use crate::store::records::{self, app_key, token_key, user_key};

/// Whose token `POST /v2/auth/tokens/` regenerates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegenerateTarget {
    /// The caller's own.
    Own,
    /// One user's (admins, or the caller by name).
    User(String),
    /// Everybody's, the caller's included (admins only).
    All,
}

/// Runs password hashing off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|source| ControllerError::Worker { task: "password", source })
}

/// A hash to verify against when the user does not exist, so a login takes as long
/// for unknown users as for wrong passwords.
fn dummy_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| auth::hash_password("not a real password"))
}

fn required(field: &str, value: &str) -> Result<()> {
    if value.is_empty() { Err(ControllerError::validation(field, "This field may not be blank.")) } else { Ok(()) }
}

impl Controller {
    /// Registers a user. `caller` is the authenticated user, if the request carried a
    /// token (needed in [`RegistrationMode::AdminOnly`]). The first user becomes admin.
    pub async fn register(&self, caller: Option<&User>, username: &str, password: &str, email: &str) -> Result<User> {
        if self.settings.registration == RegistrationMode::Disabled {
            return Err(ControllerError::RegistrationDisabled);
        }
        validate::username(username)?;
        validate::password(password)?;
        validate::email(email)?;
        let _guard = self.users_lock.lock().await;
        let listing = self.store.list("users/").await?;
        let first = listing.kvs.is_empty();
        if self.settings.registration == RegistrationMode::AdminOnly
            && !first
            && !caller.is_some_and(|u| u.is_superuser)
        {
            return Err(ControllerError::RegistrationAdminOnly);
        }
        if listing.kvs.iter().any(|kv| kv.key == user_key(username)) {
            return Err(ControllerError::validation("username", "A user with that username already exists."));
        }
        let pw = password.to_string();
        let hash = blocking(move || auth::hash_password(&pw)).await?;
        let user = User {
            username: username.into(),
            email: email.into(),
            is_superuser: first,
            password_hash: hash,
            date_joined: crate::time::Timestamp::now(),
            last_login: None,
            is_active: true,
        };
        let key = user_key(username);
        if !self.commit(Txn::new().when(&key, 0).put(&key, records::encode(&user))).await? {
            return Err(ControllerError::validation("username", "A user with that username already exists."));
        }
        tracing::info!(user = username, admin = first, "user registered");
        Ok(user)
    }

    /// Checks credentials and issues a new API token (earlier tokens stay valid).
    pub async fn login(&self, username: &str, password: &str) -> Result<String> {
        required("username", username)?;
        required("password", password)?;
        let bad = || ControllerError::validation("non_field_errors", "Unable to log in with provided credentials.");
        for _ in 0..MAX_ATTEMPTS {
            let found = records::get_json::<User>(&*self.store, &user_key(username)).await?;
            let hash = found.as_ref().map_or_else(|| dummy_hash().to_string(), |(u, _)| u.password_hash.clone());
            let pw = password.to_string();
            let ok = blocking(move || auth::verify_password(&pw, &hash)).await?;
            let Some((mut user, rev)) = found.filter(|_| ok) else { return Err(bad()) };
            if !user.is_active {
                return Err(ControllerError::AccountDisabled);
            }
            user.last_login = Some(crate::time::Timestamp::now());
            let token = auth::new_token();
            let key = user_key(username);
            let txn = Txn::new()
                .when(&key, rev)
                .put(&key, records::encode(&user))
                .put(token_key(&auth::token_digest(&token)), username.as_bytes().to_vec());
            if self.commit(txn).await? {
                return Ok(token);
            }
        }
        Err(ControllerError::Concurrent { kind: ResourceKind::User })
    }

    /// The user a token belongs to; [`ControllerError::InvalidToken`] otherwise.
    pub async fn authenticate(&self, token: &str) -> Result<User> {
        authenticate(&*self.store, token).await
    }

    /// The caller's own record, fresh from the store.
    pub async fn whoami(&self, caller: &User) -> Result<User> {
        self.find_user(&caller.username).await.map(|(u, _)| u)
    }

    pub(super) async fn find_user(&self, username: &str) -> Result<(User, u64)> {
        records::get_json::<User>(&*self.store, &user_key(username))
            .await?
            .ok_or_else(|| ControllerError::not_found(ResourceKind::User, username))
    }

    /// Ops deleting every token of `username` (all users' if `None`).
    async fn token_deletes(&self, username: Option<&str>, mut txn: Txn) -> Result<Txn> {
        for kv in self.store.list("tokens/").await?.kvs {
            if username.is_none_or(|u| kv.value == u.as_bytes()) {
                txn = txn.delete(kv.key);
            }
        }
        Ok(txn)
    }

    /// Regenerates tokens: the old ones stop working. Returns the new token, except
    /// for [`RegenerateTarget::All`] (everybody, the caller included, must log in again).
    pub async fn regenerate_token(&self, caller: &User, target: RegenerateTarget) -> Result<Option<String>> {
        let username = match &target {
            RegenerateTarget::Own => caller.username.clone(),
            RegenerateTarget::User(name) if *name == caller.username => name.clone(),
            RegenerateTarget::User(name) if caller.is_superuser => {
                self.find_user(name).await?;
                name.clone()
            }
            RegenerateTarget::All if caller.is_superuser => {
                let txn = self.token_deletes(None, Txn::new()).await?;
                self.store.txn(txn).await?;
                tracing::info!(by = %caller.username, "all tokens regenerated");
                return Ok(None);
            }
            _ => return Err(ControllerError::Forbidden),
        };
        let token = auth::new_token();
        for _ in 0..MAX_ATTEMPTS {
            let (_, rev) = self.find_user(&username).await?;
            let key = user_key(&username);
            let txn = Txn::new().when(&key, rev);
            let txn = self.token_deletes(Some(&username), txn).await?;
            let txn = txn.put(token_key(&auth::token_digest(&token)), username.as_bytes().to_vec());
            if self.commit(txn).await? {
                return Ok(Some(token));
            }
        }
        Err(ControllerError::Concurrent { kind: ResourceKind::User })
    }

    /// Deletes a user (the caller, or `target` for admins), their tokens and SSH keys,
    /// and their place among apps' collaborators. [`ControllerError::OwnsApps`] if the
    /// user still owns apps; [`ControllerError::LastAdmin`] for the last active admin.
    pub async fn cancel_user(&self, caller: &User, target: Option<&str>) -> Result<()> {
        let name = target.unwrap_or(&caller.username);
        if name != caller.username && !caller.is_superuser {
            return Err(ControllerError::Forbidden);
        }
        let _guard = self.users_lock.lock().await;
        let (user, rev) = self.find_user(name).await?;
        let key = user_key(name);
        let mut txn = Txn::new().when(&key, rev).delete(&key);
        for kv in self.store.list("apps/").await?.kvs {
            let mut app: App = records::decode(&kv)?;
            if app.owner == name {
                return Err(ControllerError::OwnsApps { username: name.to_string() });
            }
            // Apps must not gain this user meanwhile.
            txn = txn.when(&kv.key, kv.mod_revision);
            if app.collaborators.remove(name) {
                txn = txn.put(app_key(&app.id), records::encode(&app));
            }
        }
        if user.is_superuser && user.is_active {
            let others = self.admin_records(name).await?;
            if others.is_empty() {
                return Err(ControllerError::LastAdmin { username: name.to_string() });
            }
            for (admin, admin_rev) in others {
                txn = txn.when(user_key(&admin.username), admin_rev);
            }
        }
        let txn = self.token_deletes(Some(name), txn).await?;
        let txn = self.key_deletes(name, txn).await?;
        if !self.commit(txn).await? {
            return Err(ControllerError::Concurrent { kind: ResourceKind::User });
        }
        tracing::info!(user = name, by = %caller.username, "user cancelled");
        Ok(())
    }

    /// Changes a password. Users change their own with the current `password`;
    /// admins may set anyone's (`username`) without it.
    pub async fn change_password(
        &self,
        caller: &User,
        username: Option<&str>,
        password: Option<&str>,
        new_password: Option<&str>,
    ) -> Result<()> {
        let Some(new_password) = new_password.filter(|p| !p.is_empty()) else {
            return Err(ControllerError::Required { field: "new_password" });
        };
        validate::password(new_password).map_err(|e| ControllerError::validation("new_password", e.message))?;
        let name = username.filter(|n| !n.is_empty()).unwrap_or(&caller.username);
        if name != caller.username && !caller.is_superuser {
            return Err(ControllerError::Forbidden);
        }
        let password = password.filter(|p| !p.is_empty());
        if !caller.is_superuser && password.is_none() {
            return Err(ControllerError::Required { field: "password" });
        }
        let new_pw = new_password.to_string();
        let new_hash = blocking(move || auth::hash_password(&new_pw)).await?;
        for _ in 0..MAX_ATTEMPTS {
            let (mut user, rev) = self.find_user(name).await?;
            if let Some(pw) = password {
                let (pw, hash) = (pw.to_string(), user.password_hash.clone());
                if !blocking(move || auth::verify_password(&pw, &hash)).await? {
                    return Err(ControllerError::WrongPassword);
                }
            }
            user.password_hash = new_hash.clone();
            let key = user_key(name);
            if self.commit(Txn::new().when(&key, rev).put(&key, records::encode(&user))).await? {
                return Ok(());
            }
        }
        Err(ControllerError::Concurrent { kind: ResourceKind::User })
    }

    /// Every user, sorted by name (admins only).
    pub async fn list_users(&self, caller: &User) -> Result<Vec<User>> {
        if !caller.is_superuser {
            return Err(ControllerError::Forbidden);
        }
        Ok(records::list_json(&*self.store, "users/").await?)
    }

    /// The scheduler's nodes with capacity, allocation, labels, planes and health
    /// (`deis nodes`); admins only.
    pub async fn nodes(&self, caller: &User) -> Result<Vec<crate::scheduler::NodeStatus>> {
        if !caller.is_superuser {
            return Err(ControllerError::Forbidden);
        }
        Ok(self.scheduler().nodes().await?)
    }
}

/// The user `token` belongs to in `store`; [`ControllerError::InvalidToken`] otherwise
/// ([`ControllerError::AccountDisabled`] for a disabled account). For services on the
/// platform's store that authenticate API tokens without a [`Controller`].
pub async fn authenticate(store: &dyn crate::Store, token: &str) -> Result<User> {
    if token.is_empty() || token.len() > 256 {
        return Err(ControllerError::InvalidToken);
    }
    let digest = auth::token_digest(token);
    let Some(kv) = store.get(&token_key(&digest)).await? else { return Err(ControllerError::InvalidToken) };
    // The lookup is by digest; compare it again in constant time all the same.
    let stored = kv.key.rsplit('/').next().unwrap_or_default();
    if !auth::secrets_equal(stored.as_bytes(), digest.as_bytes()) {
        return Err(ControllerError::InvalidToken);
    }
    let username = String::from_utf8_lossy(&kv.value).into_owned();
    match records::get_json::<User>(store, &user_key(&username)).await? {
        Some((user, _)) if !user.is_active => Err(ControllerError::AccountDisabled),
        Some((user, _)) => Ok(user),
        None => Err(ControllerError::InvalidToken),
    }
}
