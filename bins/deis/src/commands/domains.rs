//! `domains:list`, `domains:add`, `domains:remove`.

use super::{CliError, Ctx, Result};

fn check(domain: &str) -> Result {
    deis_core::validate::domain(domain).map_err(|e| CliError::Usage(format!("{domain:?}: {}", e.message)))
}

/// `deis domains:list`.
pub async fn list(ctx: &Ctx) -> Result {
    let app = ctx.app()?;
    let (client, _) = ctx.client()?;
    let domains = client.domains_list(&app).await?;
    if ctx.emit(&domains)? {
        return Ok(());
    }
    println!("=== {app} Domains");
    for d in &domains {
        println!("{}", d.domain);
    }
    Ok(())
}

/// `deis domains:add DOMAIN`.
pub async fn add(ctx: &Ctx, domain: &str) -> Result {
    check(domain)?;
    let app = ctx.app()?;
    let (client, _) = ctx.client()?;
    ctx.progress(format!("Adding {domain} to {app}... "));
    let d = client.domains_add(&app, domain).await.inspect_err(|_| ctx.say(""))?;
    if !ctx.emit(&d)? {
        println!("done");
    }
    Ok(())
}

/// `deis domains:remove DOMAIN`.
pub async fn remove(ctx: &Ctx, domain: &str) -> Result {
    check(domain)?;
    let app = ctx.app()?;
    let (client, _) = ctx.client()?;
    ctx.progress(format!("Removing {domain} from {app}... "));
    client.domains_remove(&app, domain).await.inspect_err(|_| ctx.say(""))?;
    if !ctx.emit(&serde_json::json!({"removed": domain}))? {
        println!("done");
    }
    Ok(())
}
