//! Config and releases: every config change or build makes a new numbered release;
//! rollback makes a new release copying an older one.

use uuid::Uuid;

use super::reconcile::{AppContext, structure_for};
use super::{Controller, ControllerError, MAX_ATTEMPTS, ResourceKind, Result, RollbackRefusal};
use crate::model::{AppName, Build, Config, ConfigPatch, Release, User};
use crate::scheduler::SchedulerError;
use crate::store::Txn;
use crate::store::records::{self, app_key, build_key, config_key, release_key};
use crate::time::Timestamp;

/// A record a plan refers to: made by the change, already loaded, or to be read.
pub(crate) enum Part<T> {
    /// Made by this change: written with the release.
    New(T),
    /// Already stored and loaded.
    Existing(T),
    /// Already stored under this uuid; read when the plan is carried out.
    Stored(Uuid),
}

/// What a new release consists of, computed from the app's current state.
pub(crate) struct Plan {
    pub config: Part<Config>,
    pub build: Option<Part<Build>>,
    pub summary: String,
    /// Record the release as failed (with a warning) when the scheduler can't run the
    /// build, instead of refusing the request (image builds on a process scheduler).
    pub record_unsupported: bool,
}

/// A committed release.
pub(crate) struct Made {
    pub release: Release,
    pub warning: Option<String>,
}

impl Controller {
    /// Makes a release from `plan`: deploys it, then commits app, release and any new
    /// config/build records atomically (compare on the app and on the release number).
    pub(crate) async fn make_release(
        &self,
        user: &User,
        app_id: &AppName,
        plan: impl Fn(&AppContext) -> Result<Plan>,
    ) -> Result<Made> {
        self.app_for(user, app_id).await?;
        let _guard = self.lock_app(app_id).await;
        for _ in 0..MAX_ATTEMPTS {
            let (app, rev) = self.app_for(user, app_id).await?;
            let ctx = self.context(app, rev).await?;
            let plan = plan(&ctx)?;
            let (config, new_config) = match plan.config {
                Part::New(c) => (c, true),
                Part::Existing(c) => (c, false),
                Part::Stored(uuid) => (self.stored_config(app_id, &uuid).await?, false),
            };
            let (build, new_build) = match plan.build {
                None => (None, false),
                Some(Part::New(b)) => (Some(b), true),
                Some(Part::Existing(b)) => (Some(b), false),
                Some(Part::Stored(uuid)) => (Some(self.stored_build(app_id, &uuid).await?), false),
            };
            let now = Timestamp::now();
            let version = ctx.next_version();
            let mut release = Release {
                uuid: Uuid::new_v4(),
                app: app_id.clone(),
                owner: user.username.clone(),
                version,
                summary: plan.summary.clone(),
                failed: false,
                config: config.uuid,
                build: build.as_ref().map(|b| b.uuid),
                created: now,
                updated: now,
            };
            let mut new_app = ctx.app.clone();
            if let Some(build) = &build {
                new_app.structure = structure_for(&ctx.app.structure, build);
            }
            new_app.updated = now;
            let old_spec = self.current_spec(&ctx).await;
            let new_spec = self.spec_for(&new_app, &release, &config, build.as_ref()).await?;
            let mut warning = None;
            let applied = match self.deploy(old_spec.as_ref(), new_spec.as_ref()).await {
                Ok(applied) => applied,
                Err(SchedulerError::Unsupported(msg)) if plan.record_unsupported => {
                    release.failed = true;
                    new_app.structure = ctx.app.structure.clone();
                    warning = Some(msg);
                    false
                }
                Err(e) => return Err(e.into()),
            };
            let key = app_key(app_id);
            let mut txn = Txn::new()
                .when(&key, ctx.app_rev)
                .when(release_key(app_id, version), 0)
                .put(&key, records::encode(&new_app))
                .put(release_key(app_id, version), records::encode(&release));
            if new_config {
                txn = txn.put(config_key(app_id, &config.uuid), records::encode(&config));
            }
            if let (true, Some(build)) = (new_build, &build) {
                txn = txn.put(build_key(app_id, &build.uuid), records::encode(build));
            }
            match self.commit(txn).await {
                Ok(true) => {
                    tracing::info!(app = %app_id, version, summary = %release.summary, failed = release.failed, "release");
                    let (by, summary) = (&user.username, &release.summary);
                    let event = match &warning {
                        None => format!("Release v{version} created by {by}: {summary}"),
                        Some(w) => format!("Release v{version} failed ({summary}): {w}"),
                    };
                    self.log_event(app_id, event).await;
                    return Ok(Made { release, warning });
                }
                Ok(false) => {
                    if applied {
                        self.restore(app_id, old_spec.as_ref()).await;
                    }
                }
                Err(e) => {
                    if applied {
                        self.restore(app_id, old_spec.as_ref()).await;
                    }
                    return Err(e);
                }
            }
        }
        Err(ControllerError::Concurrent { kind: ResourceKind::App })
    }

    /// The config of the app's current (latest non-failed) release.
    pub async fn config(&self, user: &User, app: &AppName) -> Result<Config> {
        let (app, rev) = self.app_for(user, app).await?;
        Ok(self.context(app, rev).await?.config)
    }

    /// Applies a config patch: a new config and a new release, deployed if the app has
    /// a build. [`ControllerError::NothingChanged`] if nothing changes;
    /// [`ControllerError::NotSet`] for unsetting a key that does not exist;
    /// [`ControllerError::Capacity`] if new limits don't fit, with nothing changed.
    pub async fn set_config(&self, user: &User, app: &AppName, patch: &ConfigPatch) -> Result<(Config, Release)> {
        let made = self
            .make_release(user, app, |ctx| {
                let (config, summary) = ctx.config.apply(patch, &user.username)?;
                if summary.is_empty() {
                    return Err(ControllerError::NothingChanged { user: user.username.clone() });
                }
                Ok(Plan {
                    config: Part::New(config),
                    build: ctx.build.clone().map(Part::Existing),
                    summary: summary.describe(&user.username),
                    record_unsupported: false,
                })
            })
            .await?;
        let config = self.stored_config(app, &made.release.config).await?;
        Ok((config, made.release))
    }

    /// The app's releases, newest first.
    pub async fn releases(&self, user: &User, app: &AppName) -> Result<Vec<Release>> {
        self.app_for(user, app).await?;
        let mut releases: Vec<Release> = records::list_json(&*self.store, &records::releases_prefix(app)).await?;
        releases.reverse();
        Ok(releases)
    }

    /// One release; [`ControllerError::NotFound`] if there is none.
    pub async fn release(&self, user: &User, app: &AppName, version: u64) -> Result<Release> {
        self.app_for(user, app).await?;
        records::get_json::<Release>(&*self.store, &release_key(app, version))
            .await?
            .map(|(r, _)| r)
            .ok_or_else(|| ControllerError::not_found(ResourceKind::Release, format!("v{version}")))
    }

    /// Rolls back to `version` (default: the one before the latest) by making a new
    /// release with its build and config.
    pub async fn rollback(&self, user: &User, app: &AppName, version: Option<i64>) -> Result<Release> {
        let made = self
            .make_release(user, app, |ctx| {
                let latest = ctx.releases.last().map_or(0, |r| r.version);
                let target = version.unwrap_or(latest as i64 - 1);
                if target < 1 {
                    return Err(RollbackRefusal::BelowZero.into());
                }
                if target == 1 {
                    return Err(RollbackRefusal::InitialRelease.into());
                }
                let target = ctx
                    .releases
                    .iter()
                    .find(|r| r.version as i64 == target)
                    .ok_or_else(|| ControllerError::not_found(ResourceKind::Release, format!("v{target}")))?;
                if target.failed {
                    return Err(RollbackRefusal::FailedRelease.into());
                }
                Ok(Plan {
                    config: Part::Stored(target.config),
                    build: target.build.map(Part::Stored),
                    summary: format!("{} rolled back to v{}", user.username, target.version),
                    record_unsupported: false,
                })
            })
            .await;
        made.map(|m| m.release)
    }
}

impl Controller {
    pub(crate) async fn stored_config(&self, app: &AppName, uuid: &Uuid) -> Result<Config> {
        records::get_json::<Config>(&*self.store, &config_key(app, uuid)).await?.map(|(c, _)| c).ok_or_else(|| {
            ControllerError::MissingRecord { kind: ResourceKind::Config, id: uuid.to_string(), app: app.clone() }
        })
    }

    pub(crate) async fn stored_build(&self, app: &AppName, uuid: &Uuid) -> Result<Build> {
        records::get_json::<Build>(&*self.store, &build_key(app, uuid)).await?.map(|(b, _)| b).ok_or_else(|| {
            ControllerError::MissingRecord { kind: ResourceKind::Build, id: uuid.to_string(), app: app.clone() }
        })
    }
}
