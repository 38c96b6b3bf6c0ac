//! `apps:list`, `apps:create`, `apps:info`, `apps:destroy`.

use std::time::Instant;

use serde_json::Value;

use super::{CliError, Ctx, Result};
use crate::output;

/// `deis apps:list`.
pub async fn list(ctx: &Ctx) -> Result {
    let (client, _) = ctx.client()?;
    let apps = client.apps_list().await?;
    if ctx.emit(&apps)? {
        return Ok(());
    }
    println!("=== Apps");
    for a in &apps {
        println!("{}", a.id);
    }
    if apps.is_empty() {
        println!("No apps found; create one with `deis create NAME`");
    }
    Ok(())
}

/// `deis create [NAME]`: the app, and inside a git repository the `remote` for `git push`.
pub async fn create(ctx: &Ctx, name: Option<String>, remote: Option<&str>) -> Result {
    if let Some(n) = &name {
        super::app_name(n).map_err(|e| CliError::Usage(format!("invalid app name {n:?}: {}", e.message)))?;
    }
    let (client, _) = ctx.client()?;
    ctx.progress("Creating Application... ");
    let app = client.apps_create(name.as_deref()).await.inspect_err(|_| ctx.say(""))?;
    if !ctx.emit(&app)? {
        println!("done, created {}", app.id);
    }
    if let Some(remote) = remote.filter(|_| super::git::in_repository()) {
        let (_, profile) = ctx.client()?;
        if let Some(url) = super::git::remote_url(&profile.controller, app.id.as_str()) {
            super::git::add_remote(remote, &url)?;
            ctx.say(format!("Git remote {remote} added: {url}"));
        }
    }
    Ok(())
}

/// `deis apps:info`: the app, its processes, domains and labels.
pub async fn info(ctx: &Ctx) -> Result {
    let app_id = ctx.app()?;
    let (client, _) = ctx.client()?;
    let app = client.app_info(&app_id).await?;
    if ctx.emit(&app)? {
        return Ok(());
    }
    let pods = client.pods_list(&app_id).await?;
    let domains = client.domains_list(&app_id).await?;
    // Settings are informative only; an older controller without them still gets an answer.
    let settings = match client.settings_get(&app_id).await {
        Ok(s) => Some(s),
        Err(e) if matches!(e.status(), Some(404 | 405)) => None,
        Err(e) => return Err(e.into()),
    };

    println!("=== {} Application", app.id);
    print!(
        "{}",
        output::fields(&[
            ("uuid", app.uuid.to_string()),
            ("owner", app.owner.clone()),
            ("id", app.id.to_string()),
            ("structure", output::formation(&app.structure)),
            ("created", app.created.to_string()),
            ("updated", app.updated.to_string()),
        ])
    );
    println!();
    print!("{}", output::processes(&app.id, &pods));
    println!();
    println!("=== {} Domains", app.id);
    for d in &domains {
        println!("{}", d.domain);
    }
    if let Some(settings) = settings {
        println!();
        println!("=== {} Settings", app.id);
        let flag = |k: &str, default: bool| settings.get(k).and_then(Value::as_bool).unwrap_or(default);
        let whitelist: Vec<&str> = settings
            .get("whitelist")
            .and_then(Value::as_array)
            .map_or_else(Vec::new, |a| a.iter().filter_map(Value::as_str).collect());
        print!(
            "{}",
            output::fields(&[
                ("maintenance", on_off(flag("maintenance", false))),
                ("routable", on_off(flag("routable", true))),
                ("whitelist", if whitelist.is_empty() { "everyone".into() } else { whitelist.join(", ") }),
                ("https enforced", on_off(app.settings.https_enforced)),
                (
                    "collaborators",
                    if app.collaborators.is_empty() {
                        "none".into()
                    } else {
                        app.collaborators.iter().cloned().collect::<Vec<_>>().join(", ")
                    }
                ),
            ])
        );
        println!();
        println!("=== {} Label", app.id);
        super::settings::print_labels(settings.get("label").unwrap_or(&Value::Null));
    }
    Ok(())
}

fn on_off(b: bool) -> String {
    if b { "on".into() } else { "off".into() }
}

/// `deis apps:destroy [--confirm=APP]`: asks on a terminal, refuses otherwise.
pub async fn destroy(ctx: &Ctx, confirm: Option<String>) -> Result {
    let app = match (&ctx.app_flag, &confirm) {
        (None, Some(c)) => {
            super::app_name(c).map_err(|e| CliError::Usage(format!("invalid app name {c:?}: {}", e.message)))?
        }
        _ => ctx.app()?,
    };
    super::confirm_destroy("app", "the application", app.as_str(), confirm)?;
    let (client, _) = ctx.client()?;
    let start = Instant::now();
    ctx.progress(format!("Destroying {app}...\n"));
    client.app_destroy(&app).await?;
    if !ctx.emit(&serde_json::json!({"destroyed": app}))? {
        println!("done in {}s", start.elapsed().as_secs());
    }
    Ok(())
}
