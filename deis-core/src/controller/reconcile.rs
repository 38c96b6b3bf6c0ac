//! From records to what runs: building an app's [`AppSpec`], applying it before a
//! commit (and undoing that when the commit fails), and converging every app at startup.

use std::collections::BTreeMap;

use super::{Controller, ControllerError, Result};
use crate::artifact::Digest;
use crate::model::{App, AppName, Build, BuildSource, Config, ProcessType, Release};
use crate::scheduler::{AppSpec, Artifact, ProcessSpec, PullCredentials, SchedulerError};
use crate::store::records::{self, releases_prefix};

/// The process type image builds without a Procfile run as (the image's command).
pub(crate) const IMAGE_CMD_TYPE: &str = "cmd";

/// [`IMAGE_CMD_TYPE`] as a process type.
pub(crate) fn image_cmd_type() -> ProcessType {
    ProcessType::new(IMAGE_CMD_TYPE).expect("cmd is a process type")
}

/// An app with the releases, config and build that define what it runs.
#[derive(Debug, Clone)]
pub(crate) struct AppContext {
    pub app: App,
    pub app_rev: u64,
    /// Every release, oldest first.
    pub releases: Vec<Release>,
    /// The latest release that did not fail: what should be running.
    pub current: Release,
    /// The config of `current`.
    pub config: Config,
    /// The build of `current`, if any.
    pub build: Option<Build>,
}

impl AppContext {
    /// The number the next release gets.
    pub fn next_version(&self) -> u64 {
        self.releases.last().map_or(1, |r| r.version + 1)
    }
}

/// Process types of a build and their commands (`cmd` with the image's own command
/// for image builds without a Procfile).
pub(crate) fn process_types(build: &Build) -> BTreeMap<ProcessType, String> {
    if build.procfile.is_empty() && !build.image.is_empty() {
        BTreeMap::from([(image_cmd_type(), String::new())])
    } else {
        build.procfile.clone()
    }
}

/// The formation after deploying `build`: existing counts are kept for types the
/// build still has; on the first deploy `web` (or `cmd` for bare images) gets 1 unit.
pub(crate) fn structure_for(old: &BTreeMap<ProcessType, u32>, build: &Build) -> BTreeMap<ProcessType, u32> {
    let types = process_types(build);
    let first = old.is_empty();
    types
        .keys()
        .map(|t| {
            let initial = u32::from(first && (*t == "web" || *t == IMAGE_CMD_TYPE));
            (t.clone(), old.get(t).copied().unwrap_or(initial))
        })
        .collect()
}

impl Controller {
    /// Loads an app's releases, current config and build.
    pub(crate) async fn context(&self, app: App, app_rev: u64) -> Result<AppContext> {
        let releases: Vec<Release> = records::list_json(&*self.store, &releases_prefix(&app.id)).await?;
        let current = releases
            .iter()
            .rev()
            .find(|r| !r.failed)
            .cloned()
            .ok_or_else(|| ControllerError::NoRelease { app: app.id.clone() })?;
        let config = self.stored_config(&app.id, &current.config).await?;
        let build = match &current.build {
            Some(uuid) => Some(self.stored_build(&app.id, uuid).await?),
            None => None,
        };
        Ok(AppContext { app, app_rev, releases, current, config, build })
    }

    /// What the scheduler should run for `release` of `app`; `None` without a build.
    pub(crate) async fn spec_for(
        &self,
        app: &App,
        release: &Release,
        config: &Config,
        build: Option<&Build>,
    ) -> Result<Option<AppSpec>> {
        match build {
            Some(build) => self.spec_with(app, release, config, build).await.map(Some),
            None => Ok(None),
        }
    }

    /// What the scheduler should run for `release` of `app`, made with `build`.
    pub(crate) async fn spec_with(
        &self,
        app: &App,
        release: &Release,
        config: &Config,
        build: &Build,
    ) -> Result<AppSpec> {
        let identity = self.app_identity(&app.id).await?;
        let artifact = match build.source() {
            BuildSource::Image(reference) => Artifact::Image { reference: reference.to_string() },
            BuildSource::Source(sha) => {
                let digest = Digest::parse(sha)?;
                let (artifacts, id) = (self.artifacts.clone(), app.id.clone());
                let owner = identity.map(|i| (i.uid, i.gid));
                let dir = tokio::task::spawn_blocking(move || artifacts.unpack(&id, &digest, owner))
                    .await
                    .map_err(|source| ControllerError::Worker { task: "unpack", source })??;
                Artifact::Source { dir }
            }
        };
        let processes = process_types(build)
            .into_iter()
            .map(|(ty, command)| {
                let spec = ProcessSpec {
                    command,
                    count: app.structure.get(&ty).copied().unwrap_or(0),
                    resources: config.resources(&ty),
                    limits: config.limits(&ty),
                    healthcheck: config.readiness_probe(&ty).cloned(),
                    liveness: config.liveness_probe(&ty).cloned(),
                };
                (ty, spec)
            })
            .collect();
        Ok(AppSpec {
            app: app.id.clone(),
            release: release.version,
            artifact,
            env: config.values.clone(),
            processes,
            selector: config.tags.clone(),
            identity,
            pull_credentials: PullCredentials::from_settings(&config.registry),
        })
    }

    /// The spec of what runs now; a broken old build is logged and treated as nothing.
    pub(crate) async fn current_spec(&self, ctx: &AppContext) -> Option<AppSpec> {
        match self.spec_for(&ctx.app, &ctx.current, &ctx.config, ctx.build.as_ref()).await {
            Ok(spec) => spec,
            Err(e) => {
                tracing::warn!(app = %ctx.app.id, error = %e, "cannot rebuild the running spec");
                None
            }
        }
    }

    /// Hands `new` to the scheduler if it differs from `old`. Returns whether it did.
    pub(crate) async fn deploy(
        &self,
        old: Option<&AppSpec>,
        new: Option<&AppSpec>,
    ) -> std::result::Result<bool, SchedulerError> {
        match new {
            Some(spec) if Some(spec) != old => self.scheduler.apply(spec.clone()).await.map(|()| true),
            _ => Ok(false),
        }
    }

    /// Puts back what ran before a change whose commit failed.
    pub(crate) async fn restore(&self, app: &AppName, old: Option<&AppSpec>) {
        let result = match old {
            Some(spec) => self.scheduler.apply(spec.clone()).await,
            None => self.scheduler.remove(app).await,
        };
        if let Err(e) = result {
            tracing::error!(app = %app, error = %e, "could not restore the previous spec after a failed commit");
        }
    }

    /// Applies the current spec of every app, so units converge on the store after a
    /// restart. Failures are logged per app and do not stop the others.
    pub async fn reconcile_all(&self) {
        let apps: Vec<(App, u64)> = match self.store.list("apps/").await {
            Ok(listing) => {
                listing.kvs.iter().filter_map(|kv| records::decode(kv).ok().map(|a| (a, kv.mod_revision))).collect()
            }
            Err(e) => {
                tracing::error!(error = %e, "reconcile: cannot list apps");
                return;
            }
        };
        for (app, rev) in apps {
            let id = app.id.clone();
            let _guard = self.lock_app(&id).await;
            let result = async {
                let ctx = self.context(app, rev).await?;
                if let Some(spec) = self.spec_for(&ctx.app, &ctx.current, &ctx.config, ctx.build.as_ref()).await? {
                    self.scheduler.apply(spec).await?;
                }
                Ok::<_, ControllerError>(())
            }
            .await;
            match result {
                Ok(()) => tracing::debug!(app = %id, "reconciled"),
                Err(e) => tracing::warn!(app = %id, error = %e, "reconcile failed"),
            }
        }
    }
}
