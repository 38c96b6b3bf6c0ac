//! Builds: an image reference (`deis pull`) or an uploaded source tarball
//! (`deis deploy`). Each build makes a release and is deployed.

use std::collections::{BTreeMap, HashMap};

use uuid::Uuid;

use super::releases::{Part, Plan};
use super::{Controller, ControllerError, Result};
use crate::artifact;
use crate::model::{AppName, Build, ProcessType, Release, User};
use crate::store::records;
use crate::time::Timestamp;

/// What to build from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildInput {
    /// A container image, with an optional Procfile (process type → command).
    Image {
        /// Image reference, e.g. `nginx:1.13`.
        image: String,
        /// Process types; empty means the image's own command as type `cmd`.
        procfile: BTreeMap<ProcessType, String>,
    },
    /// A gzipped tar of the app directory with a `Procfile` at its root.
    Source(Vec<u8>),
}

/// A recorded build and the release it made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildOutcome {
    /// The build record.
    pub build: Build,
    /// Its release (`failed` when the scheduler can't run this kind of build).
    pub release: Release,
    /// Why the release failed, when the scheduler refused to run the build.
    pub warning: Option<String>,
}

/// Largest image reference accepted.
const MAX_IMAGE_REF: usize = 512;

impl Controller {
    /// Records a build, makes its release and deploys it. Source archives are checked
    /// and stored before anything is recorded; a missing or invalid Procfile, or an
    /// unsafe archive, is a 400 with nothing changed. On a scheduler that can't run
    /// image builds the build and a failed release are recorded and the scheduler's
    /// message is returned as a warning.
    pub async fn create_build(&self, user: &User, app: &AppName, input: BuildInput) -> Result<BuildOutcome> {
        self.app_for(user, app).await?;
        let now = Timestamp::now();
        let source = matches!(input, BuildInput::Source(_));
        // A stored archive is no garbage until its build is recorded.
        let uploading = self.build_gc.read().await;
        let (build, summary) = match input {
            BuildInput::Image { image, procfile } => {
                let image = image.trim().to_string();
                if image.is_empty() {
                    return Err(ControllerError::validation("image", "This field may not be blank."));
                }
                if image.len() > MAX_IMAGE_REF || image.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    return Err(ControllerError::validation("image", "The given image is invalid"));
                }
                for (ty, cmd) in &procfile {
                    if cmd.trim().is_empty() {
                        return Err(ControllerError::validation(
                            "procfile",
                            format!("process type {ty} has no command"),
                        ));
                    }
                }
                let summary = format!("{} deployed {image}", user.username);
                let build = Build {
                    uuid: Uuid::new_v4(),
                    app: app.clone(),
                    owner: user.username.clone(),
                    image,
                    sha: String::new(),
                    procfile,
                    dockerfile: String::new(),
                    created: now,
                    updated: now,
                };
                (build, summary)
            }
            BuildInput::Source(bytes) => {
                let artifacts = self.artifacts.clone();
                let (digest, procfile) = tokio::task::spawn_blocking(move || {
                    let summary = artifact::check_archive_with(&bytes, artifacts.limits())?;
                    let procfile = artifact::parse_procfile(&summary)?;
                    Ok::<_, artifact::ArtifactError>((artifacts.put_tarball(&bytes)?, procfile))
                })
                .await
                .map_err(|source| ControllerError::Worker { task: "archive", source })??;
                let summary = format!("{} deployed {}", user.username, digest.short());
                let build = Build {
                    uuid: Uuid::new_v4(),
                    app: app.clone(),
                    owner: user.username.clone(),
                    image: String::new(),
                    sha: digest.to_string(),
                    procfile,
                    dockerfile: String::new(),
                    created: now,
                    updated: now,
                };
                (build, summary)
            }
        };
        let made = self
            .make_release(user, app, |ctx| {
                Ok(Plan {
                    config: Part::Existing(ctx.config.clone()),
                    build: Some(Part::New(build.clone())),
                    summary: summary.clone(),
                    record_unsupported: true,
                })
            })
            .await?;
        drop(uploading);
        if source {
            self.collect_builds(Some(app)).await;
        }
        Ok(BuildOutcome { build, release: made.release, warning: made.warning })
    }

    /// The app's builds, newest first.
    pub async fn builds(&self, user: &User, app: &AppName) -> Result<Vec<Build>> {
        self.app_for(user, app).await?;
        let builds: Vec<Build> = records::list_json(&*self.store, &format!("builds/{app}/")).await?;
        // Creation times have one-second resolution: order by the release each build made.
        let releases: Vec<Release> = records::list_json(&*self.store, &records::releases_prefix(app)).await?;
        let order: HashMap<Uuid, u64> = releases.iter().filter_map(|r| r.build.map(|b| (b, r.version))).rev().collect();
        let mut builds = builds;
        builds.sort_by(|a, b| {
            let ka = (order.get(&a.uuid).copied().unwrap_or(0), a.created);
            let kb = (order.get(&b.uuid).copied().unwrap_or(0), b.created);
            kb.cmp(&ka)
        });
        Ok(builds)
    }
}
