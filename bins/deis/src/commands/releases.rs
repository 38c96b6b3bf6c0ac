//! `releases:list`, `releases:info`, `releases:rollback`.

use super::ps::wait_release;
use super::{Ctx, Result};
use crate::cli::WaitOpts;
use crate::output;

/// `deis releases:list`: `v3  <created>  <summary>`, newest first.
pub async fn list(ctx: &Ctx) -> Result {
    let app = ctx.app()?;
    let (client, _) = ctx.client()?;
    let mut releases = client.releases_list(&app).await?;
    if ctx.emit(&releases)? {
        return Ok(());
    }
    releases.sort_by_key(|r| std::cmp::Reverse(r.version));
    println!("=== {app} Releases");
    let rows: Vec<Vec<String>> = releases
        .iter()
        .map(|r| {
            let summary = if r.failed { format!("{} (failed)", r.summary) } else { r.summary.clone() };
            vec![format!("v{}", r.version), r.created.to_string(), summary]
        })
        .collect();
    print!("{}", output::table(&rows, "  "));
    Ok(())
}

/// `deis releases:info vN`.
pub async fn info(ctx: &Ctx, version: u64) -> Result {
    let app = ctx.app()?;
    let (client, _) = ctx.client()?;
    let r = client.release_info(&app, version).await?;
    if ctx.emit(&r)? {
        return Ok(());
    }
    println!("=== {app} Release v{}", r.version);
    print!(
        "{}",
        output::fields(&[
            ("build", r.build.map(|b| b.to_string()).unwrap_or_default()),
            ("config", r.config.to_string()),
            ("created", r.created.to_string()),
            ("failed", r.failed.to_string()),
            ("owner", r.owner.clone()),
            ("summary", r.summary.clone()),
            ("updated", r.updated.to_string()),
            ("uuid", r.uuid.to_string()),
        ])
    );
    Ok(())
}

/// `deis releases:rollback [vN]`.
pub async fn rollback(ctx: &Ctx, version: Option<u64>, wait: &WaitOpts) -> Result {
    let app = ctx.app()?;
    let (client, _) = ctx.client()?;
    match version {
        Some(v) => ctx.progress(format!("Rolling back to v{v}... ")),
        None => ctx.progress("Rolling back one release... "),
    }
    let new = client.releases_rollback(&app, version).await.inspect_err(|_| ctx.say(""))?;
    ctx.say(format!("done, v{new}"));
    let waited = wait_release(ctx, &client, &app, new, wait, false).await;
    ctx.emit(&serde_json::json!({"version": new}))?;
    waited
}
