//! `services`, `brokers:*` and `addons:*`: backing services from service brokers, their
//! URLs in apps' config.

use deis_core::broker::Object;
use deis_sdk::addons::{Addon, AddonState};

use super::{CliError, Ctx, Result};
use crate::output;

/// Parses `-p KEY=VALUE` (split at the first `=`, the key non-empty).
pub fn parameter(s: &str) -> std::result::Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

/// `deis services`.
pub async fn services(ctx: &Ctx) -> Result {
    let (client, _) = ctx.client()?;
    let services = client.services().await?;
    if ctx.emit(&services)? {
        return Ok(());
    }
    let mut rows = vec![["Service", "Plans", "Broker", "Description"].map(String::from).to_vec()];
    for s in &services {
        let plans: Vec<&str> = s.plans.iter().map(|(n, _)| n.as_str()).collect();
        rows.push(vec![s.service.clone(), plans.join(","), s.broker.clone(), s.description.clone()]);
    }
    print!("{}", output::table(&rows, "  "));
    Ok(())
}

/// `deis brokers:add NAME URL --username U --password P`.
pub async fn brokers_add(ctx: &Ctx, name: &str, url: &str, username: &str, password: &str) -> Result {
    let (client, _) = ctx.client()?;
    ctx.progress(format!("Registering broker {name} at {url}... "));
    let added = client.brokers_add(name, url, username, password).await.inspect_err(|_| ctx.say(""))?;
    if !ctx.emit(&added)? {
        println!("done");
    }
    Ok(())
}

/// `deis brokers:list`.
pub async fn brokers_list(ctx: &Ctx) -> Result {
    let (client, _) = ctx.client()?;
    let brokers = client.brokers_list().await?;
    if ctx.emit(&brokers)? {
        return Ok(());
    }
    let mut rows = vec![["Name", "URL", "User"].map(String::from).to_vec()];
    for b in &brokers {
        rows.push(vec![b.name.clone(), b.url.clone(), b.username.clone().unwrap_or_else(|| "-".into())]);
    }
    print!("{}", output::table(&rows, "  "));
    Ok(())
}

/// `deis brokers:remove NAME`.
pub async fn brokers_remove(ctx: &Ctx, name: &str) -> Result {
    let (client, _) = ctx.client()?;
    ctx.progress(format!("Removing broker {name}... "));
    client.brokers_remove(name).await.inspect_err(|_| ctx.say(""))?;
    ctx.say("done");
    Ok(())
}

fn state(a: &Addon) -> &'static str {
    match a.state {
        AddonState::Provisioning => "provisioning",
        AddonState::Ready => "created",
        AddonState::Failed => "failed",
    }
}

/// Fails with the add-on's message when its provisioning failed.
fn check_failed(a: &Addon) -> Result {
    if a.state == AddonState::Failed {
        return Err(CliError::Failed(format!(
            "add-on {} failed: {} (destroy it with `deis addons:destroy {} --confirm {}`)",
            a.name,
            a.message.as_deref().unwrap_or("no reason given"),
            a.name,
            a.name
        )));
    }
    Ok(())
}

/// `deis addons:create SERVICE:PLAN [--as NAME] [-p KEY=VALUE]... [--wait]`.
pub async fn create(
    ctx: &Ctx,
    service: &str,
    alias: Option<&str>,
    parameters: Vec<(String, String)>,
    wait: bool,
) -> Result {
    let app = ctx.app()?;
    let (client, _) = ctx.client()?;
    let parameters: Object = parameters.into_iter().map(|(k, v)| (k, serde_json::Value::String(v))).collect();
    ctx.progress(format!("Creating {service} on {app}... "));
    let mut addon = client.addons_create(&app, service, alias, &parameters).await.inspect_err(|_| ctx.say(""))?;
    if wait {
        addon = client.addons_wait(&addon.name, deis_sdk::controller::MAX_ADDON_WAIT.as_secs()).await?;
    }
    if ctx.emit(&addon)? {
        return check_failed(&addon);
    }
    println!("{}", state(&addon));
    check_failed(&addon)?;
    println!("Created {} as {}", addon.name, addon.var);
    if addon.state == AddonState::Provisioning {
        println!("Provisioning in the background: `deis addons:wait {}` waits for it", addon.name);
    }
    Ok(())
}

/// `deis addons:list`.
pub async fn list(ctx: &Ctx) -> Result {
    let app = ctx.app()?;
    let (client, _) = ctx.client()?;
    let addons = client.addons_list(&app).await?;
    if ctx.emit(&addons)? {
        return Ok(());
    }
    if addons.is_empty() {
        println!("No add-ons for {app}: create one with `deis addons:create postgresql:shared`");
        return Ok(());
    }
    let mut rows = vec![["Add-on", "Service:Plan", "State", "As", "Owning app"].map(String::from).to_vec()];
    for a in &addons {
        let var = a.attachment(&app).map_or("-", |x| x.var.as_str());
        rows.push(vec![
            a.name.clone(),
            format!("{}:{}", a.service, a.plan),
            state(a).into(),
            var.into(),
            a.app.to_string(),
        ]);
    }
    print!("{}", output::table(&rows, "  "));
    Ok(())
}

/// `deis addons:info NAME`.
pub async fn info(ctx: &Ctx, name: &str) -> Result {
    let (client, _) = ctx.client()?;
    let a = client.addons_info(name).await?;
    if ctx.emit(&a)? {
        return Ok(());
    }
    println!("=== {}", a.name);
    println!("Service:     {}:{} ({})", a.service, a.plan, a.broker);
    println!("State:       {}", state(&a));
    if let Some(m) = &a.message {
        println!("Message:     {m}");
    }
    println!("Owning app:  {}", a.app);
    for x in &a.attachments {
        println!("Attached:    {} as {}", x.app, x.var);
    }
    println!("Created:     {} by {}", a.created, a.owner);
    Ok(())
}

/// `deis addons:attach NAME [--as NAME]`.
pub async fn attach(ctx: &Ctx, name: &str, alias: Option<&str>) -> Result {
    let app = ctx.app()?;
    let (client, _) = ctx.client()?;
    ctx.progress(format!("Attaching {name} to {app}... "));
    let a = client.addons_attach(name, &app, alias).await.inspect_err(|_| ctx.say(""))?;
    if !ctx.emit(&a)? {
        println!("done, as {}", a.attachment(&app).map_or("-", |x| x.var.as_str()));
    }
    Ok(())
}

/// `deis addons:detach NAME`.
pub async fn detach(ctx: &Ctx, name: &str) -> Result {
    let app = ctx.app()?;
    let (client, _) = ctx.client()?;
    ctx.progress(format!("Detaching {name} from {app}... "));
    let a = client.addons_detach(name, &app).await.inspect_err(|_| ctx.say(""))?;
    if !ctx.emit(&a)? {
        println!("done");
    }
    Ok(())
}

/// `deis addons:destroy NAME [--confirm NAME]`: asks on a terminal, refuses otherwise.
pub async fn destroy(ctx: &Ctx, name: &str, confirm: Option<String>) -> Result {
    super::confirm_destroy("add-on", "the add-on and its data", name, confirm)?;
    let (client, _) = ctx.client()?;
    ctx.progress(format!("Destroying {name}... "));
    client.addons_destroy(name).await.inspect_err(|_| ctx.say(""))?;
    if !ctx.emit(&serde_json::json!({ "destroyed": name }))? {
        println!("done");
    }
    Ok(())
}

/// `deis addons:wait NAME [--timeout SECS]`.
pub async fn wait(ctx: &Ctx, name: &str, timeout: u64) -> Result {
    let (client, _) = ctx.client()?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(timeout);
    ctx.progress(format!("Waiting for {name}... "));
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now()).as_secs();
        let a = client.addons_wait(name, left.clamp(1, deis_sdk::controller::MAX_ADDON_WAIT.as_secs())).await?;
        if a.state != AddonState::Provisioning {
            ctx.say(state(&a));
            return check_failed(&a);
        }
        if left == 0 {
            ctx.say("");
            return Err(CliError::Failed(format!("{name} is still provisioning after {timeout}s")));
        }
    }
}
