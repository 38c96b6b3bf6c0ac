//! An identity (uid and gid) per app, when the platform gives apps their own
//! ([`ControllerPolicy::identities`](super::ControllerPolicy::identities)): allocated
//! from the range on first use, recorded in the store, the same for every unit and
//! session of the app, freed when the app is destroyed.
//!
//! | key | value |
//! |---|---|
//! | `identities/apps/<app>` | [`AppIdentity`] |
//! | `identities/uids/<uid>` | the app holding it |

use super::{Controller, ControllerError, MAX_ATTEMPTS, ResourceKind, Result};
use crate::model::{AppIdentity, AppName};
use crate::store::Txn;
use crate::store::records::{self, app_key};

/// Key of an app's identity.
pub fn identity_key(app: &str) -> String {
    format!("identities/apps/{app}")
}

/// Key of a uid taken by an app.
pub fn uid_key(uid: u32) -> String {
    format!("identities/uids/{uid:010}")
}

/// Prefix of the taken uids.
const UIDS_PREFIX: &str = "identities/uids/";

impl Controller {
    /// The identity `app`'s processes run as: `None` when the platform gives apps no
    /// identities; otherwise the app's, allocated now if it has none yet.
    pub async fn app_identity(&self, app: &AppName) -> Result<Option<AppIdentity>> {
        let Some(range) = self.policy.identities else { return Ok(None) };
        for _ in 0..MAX_ATTEMPTS {
            if let Some((id, _)) = records::get_json::<AppIdentity>(&*self.store, &identity_key(app)).await? {
                return Ok(Some(id));
            }
            let (_, app_rev) = self.load_app(app).await?;
            let taken: Vec<u32> = self
                .store
                .list(UIDS_PREFIX)
                .await?
                .kvs
                .iter()
                .filter_map(|kv| kv.key.strip_prefix(UIDS_PREFIX)?.parse().ok())
                .collect();
            // Keys are zero-padded, so the listing is in order: the first gap is free.
            let mut uid = range.first();
            for t in taken.iter().copied().filter(|t| range.contains(*t)) {
                if t == uid {
                    uid += 1;
                } else if t > uid {
                    break;
                }
            }
            if !range.contains(uid) {
                return Err(ControllerError::IdentitiesExhausted { range: range.to_string() });
            }
            let id = AppIdentity::of(uid);
            let txn = Txn::new()
                .when(app_key(app), app_rev)
                .when(identity_key(app), 0)
                .when(uid_key(uid), 0)
                .put(identity_key(app), records::encode(&id))
                .put(uid_key(uid), app.as_str().as_bytes().to_vec());
            if self.commit(txn).await? {
                tracing::info!(app = %app, uid, "app identity allocated");
                return Ok(Some(id));
            }
        }
        Err(ControllerError::Concurrent { kind: ResourceKind::App })
    }

    /// Ops deleting `app`'s identity (for its destruction).
    pub(crate) async fn identity_deletes(&self, app: &AppName, mut txn: Txn) -> Result<Txn> {
        if let Some((id, rev)) = records::get_json::<AppIdentity>(&*self.store, &identity_key(app)).await? {
            txn = txn.when(identity_key(app), rev).delete(identity_key(app)).delete(uid_key(id.uid));
        }
        Ok(txn)
    }
}
