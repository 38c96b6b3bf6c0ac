//! Build garbage collection: source archives no build of any app references are
//! deleted, and an app keeps the unpacked directories of its two newest releases only
//! (the one running and the one it replaces, whose units may still be stopping); older
//! ones are unpacked again on a rollback. Runs after each source build and when an app
//! is destroyed, so builds never outlive what uses them.

use std::collections::{HashMap, HashSet};

use uuid::Uuid;

use super::{Controller, ControllerError, Result};
use crate::artifact::Digest;
use crate::model::{AppName, Build, BuildSource, Release};
use crate::store::records;

/// Unpacked builds an app keeps: its newest releases'.
const SLUGS_KEPT: usize = 2;

fn digest(build: &Build) -> Option<Digest> {
    match build.source() {
        BuildSource::Source(sha) => Digest::parse(sha).ok(),
        BuildSource::Image(_) => None,
    }
}

impl Controller {
    /// Collects the builds nothing needs any more (best effort: failures are logged),
    /// `app`'s old unpacked builds too if given. Holds off uploads meanwhile, so an
    /// archive stored for a build not yet recorded is never taken for garbage.
    pub(crate) async fn collect_builds(&self, app: Option<&AppName>) {
        let _exclusive = self.build_gc.write().await;
        if let Err(e) = self.try_collect_builds(app).await {
            tracing::warn!(app = ?app.map(AppName::as_str), error = %e, "cannot remove unused builds");
        }
    }

    async fn try_collect_builds(&self, app: Option<&AppName>) -> Result<()> {
        let builds: Vec<Build> = records::list_json(&*self.store, "builds/").await?;
        let referenced: HashSet<Digest> = builds.iter().filter_map(digest).collect();
        let slugs = match app {
            Some(app) => {
                let mut releases: Vec<Release> =
                    records::list_json(&*self.store, &records::releases_prefix(app)).await?;
                releases.sort_by_key(|r| std::cmp::Reverse(r.version));
                let by_uuid: HashMap<Uuid, &Build> = builds.iter().map(|b| (b.uuid, b)).collect();
                let keep: HashSet<Digest> = releases
                    .iter()
                    .filter_map(|r| r.build.and_then(|b| by_uuid.get(&b)))
                    .take(SLUGS_KEPT)
                    .filter_map(|b| digest(b))
                    .collect();
                Some((app.clone(), keep))
            }
            None => None,
        };
        let artifacts = self.artifacts.clone();
        let (archives, dirs) = tokio::task::spawn_blocking(move || {
            let archives = artifacts.retain_artifacts(&referenced)?;
            let dirs = match slugs {
                Some((app, keep)) => artifacts.retain_slugs(&app, &keep)?,
                None => 0,
            };
            Ok::<_, crate::artifact::ArtifactError>((archives, dirs))
        })
        .await
        .map_err(|source| ControllerError::Worker { task: "build cleanup", source })??;
        if archives + dirs > 0 {
            tracing::info!(app = ?app.map(AppName::as_str), archives, dirs, "removed unused builds");
        }
        Ok(())
    }
}
