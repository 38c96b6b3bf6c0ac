//! Apps: create (with the initial release and default domain), list, info, destroy,
//! transfer, and the app settings object `deis info` reads.

use uuid::Uuid;

use super::{Controller, ControllerError, IngestToken, MAX_ATTEMPTS, ResourceKind, Result, ingest_token_key};
use crate::model::{App, AppName, Config, Domain, Release, User, validate};
use crate::store::Txn;
use crate::store::records::{self, ENDPOINTS_PREFIX, app_key, config_key, domain_key, release_key, user_key};

const ADJECTIVES: &[&str] = &[
    "amber", "bold", "brave", "calm", "clever", "crisp", "dapper", "eager", "fancy", "gentle", "golden", "happy",
    "hidden", "jolly", "keen", "lively", "lucky", "mellow", "nimble", "polite", "proud", "quiet", "rapid", "rustic",
    "shiny", "silent", "sunny", "swift", "tidy", "vivid", "witty", "zesty",
];
const NOUNS: &[&str] = &[
    "badger", "beacon", "canyon", "cedar", "comet", "dolphin", "ember", "falcon", "garden", "glacier", "harbor",
    "island", "lantern", "meadow", "mesa", "nebula", "orchid", "otter", "pepper", "pioneer", "quasar", "raven",
    "river", "saddle", "sparrow", "summit", "tundra", "valley", "walrus", "willow", "yonder", "zephyr",
];

/// A random `<adjective>-<noun>` app name.
fn random_name() -> AppName {
    let mut b = [0u8; 2];
    getrandom::fill(&mut b).expect("the OS provides randomness");
    let name = format!("{}-{}", ADJECTIVES[b[0] as usize % ADJECTIVES.len()], NOUNS[b[1] as usize % NOUNS.len()]);
    AppName::new(name).expect("adjective-noun is an app name")
}

impl Controller {
    /// Creates an app owned by `user` (a random `<adjective>-<noun>` name if `id` is
    /// `None`), with an empty config, release v1, its id as default domain and a syslog
    /// ingest token. Names
    /// the platform keeps for itself ([`validate::RESERVED_APP_NAMES`]) are refused.
    pub async fn create_app(&self, user: &User, id: Option<AppName>) -> Result<App> {
        if let Some(id) = &id {
            validate::app_name(id)?;
        }
        for attempt in 1..=MAX_ATTEMPTS {
            let name = id.clone().unwrap_or_else(random_name);
            let app = App::new(name.clone(), &user.username);
            let config = Config::initial(&name, &user.username);
            let release = Release {
                uuid: Uuid::new_v4(),
                app: name.clone(),
                owner: user.username.clone(),
                version: 1,
                summary: format!("{} created initial release", user.username),
                failed: false,
                config: config.uuid,
                build: None,
                created: app.created,
                updated: app.created,
            };
            let domain = Domain {
                owner: user.username.clone(),
                created: app.created,
                updated: app.created,
                app: name.clone(),
                domain: name.to_string(),
            };
            let guard = self.lock_app(&name).await;
            let txn = Txn::new()
                .when(app_key(&name), 0)
                .when(domain_key(&name), 0)
                .put(app_key(&name), records::encode(&app))
                .put(config_key(&name, &config.uuid), records::encode(&config))
                .put(release_key(&name, 1), records::encode(&release))
                .put(domain_key(&name), records::encode(&domain))
                .put(ingest_token_key(&name), records::encode(&IngestToken::generate(&name)));
            if self.commit(txn).await? {
                tracing::info!(app = %name, owner = %user.username, "app created");
                self.log_event(&name, format!("App {name} created by {}", user.username)).await;
                self.log_event(&name, format!("Release v1 created by {}: {}", user.username, release.summary)).await;
                return Ok(app);
            }
            drop(guard);
            if id.is_none() && attempt < MAX_ATTEMPTS {
                continue; // a random name collided: pick another
            }
            return Err(if self.store.get(&app_key(&name)).await?.is_some() {
                ControllerError::validation("id", "Application with this id already exists.")
            } else {
                ControllerError::validation("id", format!("The domain {name} is already in use by another app"))
            });
        }
        Err(ControllerError::Concurrent { kind: ResourceKind::App })
    }

    /// The apps `user` may see, sorted by id: those they own or collaborate on, or all
    /// for admins.
    pub async fn list_apps(&self, user: &User) -> Result<Vec<App>> {
        let apps: Vec<App> = records::list_json(&*self.store, "apps/").await?;
        Ok(apps.into_iter().filter(|a| user.is_superuser || a.is_member(&user.username)).collect())
    }

    /// One app (owner, collaborator or admin); [`ControllerError::NotFound`] if there
    /// is none, [`ControllerError::Forbidden`] for anybody else.
    pub async fn app(&self, user: &User, id: &AppName) -> Result<App> {
        self.app_for(user, id).await.map(|(a, _)| a)
    }

    /// Destroys an app: stops its units, then deletes every record of it (configs,
    /// builds, releases, domains, endpoints) in one transaction.
    /// Owner or admin only.
    pub async fn destroy_app(&self, user: &User, id: &AppName) -> Result<()> {
        self.app_managed_by(user, id).await?;
        let guard = self.lock_app(id).await;
        for _ in 0..MAX_ATTEMPTS {
            let (_, rev) = self.app_managed_by(user, id).await?;
            self.scheduler.remove(id).await?;
            let key = app_key(id);
            let txn = Txn::new()
                .when(&key, rev)
                .delete(&key)
                .delete_prefix(format!("configs/{id}/"))
                .delete_prefix(format!("builds/{id}/"))
                .delete_prefix(records::releases_prefix(id))
                .delete_prefix(format!("{ENDPOINTS_PREFIX}{id}/"))
                .delete_prefix(super::drains_prefix(id))
                .delete(ingest_token_key(id));
            let mut txn = self.identity_deletes(id, txn).await?;
            for kv in self.store.list("domains/").await?.kvs {
                let domain: Domain = records::decode(&kv)?;
                if domain.app == *id {
                    txn = txn
                        .when(&kv.key, kv.mod_revision)
                        .delete(&kv.key)
                        .delete(records::cert_domain_key(&domain.domain));
                }
            }
            if self.commit(txn).await? {
                drop(guard);
                self.forget_lock(id);
                self.forget_logs(id).await;
                // Its builds go with it, and the archives no other app's build uses.
                let (artifacts, app) = (self.artifacts.clone(), id.clone());
                match tokio::task::spawn_blocking(move || artifacts.remove_app(&app)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::warn!(app = %id, error = %e, "cannot remove the builds of a destroyed app"),
                    Err(e) => tracing::warn!(app = %id, error = %e, "removing the builds of a destroyed app failed"),
                }
                self.collect_builds(None).await;
                tracing::info!(app = %id, by = %user.username, "app destroyed");
                return Ok(());
            }
        }
        Err(ControllerError::Concurrent { kind: ResourceKind::App })
    }

    /// Gives an app to another user (owner or admin); not found if the user does not exist.
    pub async fn transfer_app(&self, user: &User, id: &AppName, new_owner: &str) -> Result<App> {
        self.app_managed_by(user, id).await?;
        let _guard = self.lock_app(id).await;
        for _ in 0..MAX_ATTEMPTS {
            let (mut app, rev) = self.app_managed_by(user, id).await?;
            let Some(owner) = self.store.get(&user_key(new_owner)).await? else {
                return Err(ControllerError::not_found(ResourceKind::User, new_owner));
            };
            app.owner = new_owner.to_string();
            // The new owner is no collaborator of their own app.
            app.collaborators.remove(new_owner);
            app.updated = crate::time::Timestamp::now();
            let txn = Txn::new()
                .when(app_key(id), rev)
                .when(user_key(new_owner), owner.mod_revision)
                .put(app_key(id), records::encode(&app));
            if self.commit(txn).await? {
                tracing::info!(app = %id, owner = new_owner, "app transferred");
                self.log_event(id, format!("App transferred to {new_owner} by {}", user.username)).await;
                return Ok(app);
            }
        }
        Err(ControllerError::Concurrent { kind: ResourceKind::App })
    }
}
