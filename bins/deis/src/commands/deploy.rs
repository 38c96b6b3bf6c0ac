//! `deploy [DIR]`, `pull IMAGE`, `builds:list`.

use std::collections::BTreeMap;
use std::path::Path;

use deis_core::ProcessType;
use deis_sdk::client::{Client, pack_source_dir};
use uuid::Uuid;

use super::ps::wait_release;
use super::{CliError, Ctx, Result, done_with};
use crate::cli::WaitOpts;
use crate::output;

/// The release a build produced: the newest release pointing at `build_uuid`, else the
/// newest release.
async fn release_of_build(client: &Client, app: &str, build_uuid: Uuid) -> Result<Option<u64>> {
    let releases = client.releases_list(app).await?;
    let of_build = releases.iter().filter(|r| r.build == Some(build_uuid)).map(|r| r.version).max();
    Ok(of_build.or_else(|| releases.iter().map(|r| r.version).max()))
}

/// `deis deploy [DIR]`: packs DIR, uploads it, then waits for the new release's units.
pub async fn deploy(ctx: &Ctx, dir: &Path, wait: &WaitOpts) -> Result {
    let app = ctx.app()?;
    let (client, _) = ctx.client()?;
    let owned = dir.to_path_buf();
    let tarball = tokio::task::spawn_blocking(move || pack_source_dir(&owned))
        .await
        .map_err(|e| CliError::Failed(format!("packing {} failed: {e}", dir.display())))??;
    ctx.progress(format!("Deploying {app}... "));
    let created = client.builds_upload_source(&app, tarball).await.inspect_err(|_| ctx.say(""))?;
    if let Some(w) = &created.warning {
        ctx.say("failed");
        ctx.emit(&created)?;
        return Err(CliError::Failed(format!("the build was recorded but its release could not be deployed: {w}")));
    }
    let version = release_of_build(&client, &app, created.build.uuid).await?;
    ctx.say(done_with(version));

    let result = match version {
        Some(v) => wait_release(ctx, &client, &app, v, wait, true).await,
        None => Ok(()),
    };
    ctx.emit(&created)?;
    result
}

/// `deis pull IMAGE [--procfile TEXT]`: an image build (the procfile defaults to
/// `./Procfile` when present). A scheduler that can't run images records it with a
/// warning, printed on stderr.
pub async fn pull(ctx: &Ctx, image: &str, procfile: Option<BTreeMap<ProcessType, String>>) -> Result {
    if image.trim().is_empty() || image.chars().any(char::is_whitespace) {
        return Err(CliError::Usage(format!("{image:?} is not an image reference (e.g. nginx:1.25)")));
    }
    let app = ctx.app()?;
    let procfile = match procfile {
        Some(p) => p,
        None => match std::fs::read_to_string("Procfile") {
            Ok(text) => deis_core::procfile::parse(&text)
                .map_err(|e| CliError::Usage(format!("./Procfile is not valid: {}", e.message)))?,
            Err(_) => BTreeMap::new(),
        },
    };
    let (client, _) = ctx.client()?;
    ctx.progress("Creating build... ");
    let created = client.builds_create_image(&app, image, &procfile).await.inspect_err(|_| ctx.say(""))?;
    if created.warning.is_some() {
        ctx.say("done");
    } else {
        let version = release_of_build(&client, &app, created.build.uuid).await.ok().flatten();
        ctx.say(done_with(version));
    }
    if let Some(w) = &created.warning {
        ctx.warn(w);
    }
    ctx.emit(&created)?;
    Ok(())
}

/// `deis builds:list`.
pub async fn builds_list(ctx: &Ctx) -> Result {
    let app = ctx.app()?;
    let (client, _) = ctx.client()?;
    let builds = client.builds_list(&app).await?;
    if ctx.emit(&builds)? {
        return Ok(());
    }
    println!("=== {app} Builds");
    let rows: Vec<Vec<String>> = builds
        .iter()
        .map(|b| {
            let what = if b.sha.is_empty() { b.image.clone() } else { b.sha.clone() };
            vec![b.uuid.to_string(), b.created.to_string(), what]
        })
        .collect();
    print!("{}", output::table(&rows, "  "));
    Ok(())
}
