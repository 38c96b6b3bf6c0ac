//! SSH keys (§3.9): users register public keys; the builder finds the user of a key
//! presented to it by the key's index entry.

use uuid::Uuid;

use super::{Controller, ControllerError, MAX_ATTEMPTS, ResourceKind, Result};
use crate::model::{PublicKey, SshKey, User, key_id};
use crate::store::Txn;
use crate::store::records::{self, KeyRef, keyprint_key, ssh_key_key, ssh_keys_prefix, user_key};
use crate::time::Timestamp;

/// Most keys one user may register.
pub const MAX_KEYS_PER_USER: usize = 100;

impl Controller {
    /// The caller's keys, sorted by id.
    pub async fn list_keys(&self, caller: &User) -> Result<Vec<SshKey>> {
        Ok(records::list_json(&*self.store, &ssh_keys_prefix(&caller.username)).await?)
    }

    /// Registers a public key for the caller under `id` (the CLI sends the key's
    /// comment). A key (by its blob) belongs to one user only, and ids are unique per user.
    pub async fn add_key(&self, caller: &User, id: &str, public: &str) -> Result<SshKey> {
        key_id(id)?;
        let parsed = PublicKey::parse(public)?;
        let key_path = ssh_key_key(&caller.username, id);
        let print_path = keyprint_key(&parsed.blob);
        for _ in 0..MAX_ATTEMPTS {
            let (_, user_rev) = self.find_user(&caller.username).await?;
            let existing = self.store.list(&ssh_keys_prefix(&caller.username)).await?;
            if existing.kvs.len() >= MAX_KEYS_PER_USER {
                return Err(ControllerError::validation(
                    "public",
                    format!("a user may register at most {MAX_KEYS_PER_USER} keys; remove one with `deis keys:remove`"),
                ));
            }
            if existing.kvs.iter().any(|kv| kv.key == key_path) {
                return Err(ControllerError::validation("id", "SSH Key with this id already exists."));
            }
            if self.store.get(&print_path).await?.is_some() {
                return Err(ControllerError::validation("public", "Public Key is already in use"));
            }
            let now = Timestamp::now();
            let key = SshKey {
                uuid: Uuid::new_v4(),
                id: id.to_string(),
                owner: caller.username.clone(),
                public: public.trim().to_string(),
                fingerprint: parsed.fingerprint(),
                created: now,
                updated: now,
            };
            let holder = KeyRef { owner: caller.username.clone(), id: id.to_string() };
            let txn = Txn::new()
                .when(user_key(&caller.username), user_rev)
                .when(&key_path, 0)
                .when(&print_path, 0)
                .put(&key_path, records::encode(&key))
                .put(&print_path, records::encode(&holder));
            if self.commit(txn).await? {
                tracing::info!(user = %caller.username, key = id, fingerprint = %key.fingerprint, "ssh key added");
                return Ok(key);
            }
        }
        Err(ControllerError::Concurrent { kind: ResourceKind::Key })
    }

    /// Removes one of the caller's keys; not found if they have none by that id.
    pub async fn remove_key(&self, caller: &User, id: &str) -> Result<()> {
        let path = ssh_key_key(&caller.username, id);
        let Some((key, rev)) = records::get_json::<SshKey>(&*self.store, &path).await? else {
            return Err(ControllerError::not_found(ResourceKind::Key, id));
        };
        let parsed = PublicKey::parse(&key.public)?;
        let txn = Txn::new().when(&path, rev).delete(&path).delete(keyprint_key(&parsed.blob));
        if !self.commit(txn).await? {
            return Err(ControllerError::not_found(ResourceKind::Key, id));
        }
        tracing::info!(user = %caller.username, key = id, "ssh key removed");
        Ok(())
    }

    /// The active user who registered the key with this blob (SSH wire format), as an
    /// SSH server sees it; `None` for unknown keys and disabled users.
    pub async fn user_by_key(&self, blob: &[u8]) -> Result<Option<User>> {
        let Some((holder, _)) = records::get_json::<KeyRef>(&*self.store, &keyprint_key(blob)).await? else {
            return Ok(None);
        };
        let user = records::get_json::<User>(&*self.store, &user_key(&holder.owner)).await?;
        Ok(user.map(|(u, _)| u).filter(|u| u.is_active))
    }

    /// Deletes ops for every key of `username` and its index entry.
    pub(super) async fn key_deletes(&self, username: &str, mut txn: Txn) -> Result<Txn> {
        for key in records::list_json::<SshKey>(&*self.store, &ssh_keys_prefix(username)).await? {
            if let Ok(parsed) = PublicKey::parse(&key.public) {
                txn = txn.delete(keyprint_key(&parsed.blob));
            }
            txn = txn.delete(ssh_key_key(username, &key.id));
        }
        Ok(txn)
    }
}
