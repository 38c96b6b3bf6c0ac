//! `drains:list`, `drains:add`, `drains:remove`: forwarding the app's log as syslog;
//! `logs:token`: the token syslog senders put in the lines they send to the app's log.

use super::{Ctx, Result};

/// `deis drains:list`.
pub async fn list(ctx: &Ctx) -> Result {
    let app = ctx.app()?;
    let (client, _) = ctx.client()?;
    let drains = client.drains_list(&app).await?;
    if ctx.emit(&drains)? {
        return Ok(());
    }
    println!("=== {app} Drains");
    if drains.is_empty() {
        println!("No drains: add one with `deis drains:add syslog://HOST:PORT -a {app}`");
    }
    for d in &drains {
        println!("{}  {}", d.url, d.uuid);
    }
    Ok(())
}

/// `deis drains:add URL`.
pub async fn add(ctx: &Ctx, url: &str) -> Result {
    let app = ctx.app()?;
    let (client, _) = ctx.client()?;
    ctx.progress(format!("Adding drain {url} to {app}... "));
    let d = client.drains_add(&app, url).await.inspect_err(|_| ctx.say(""))?;
    if !ctx.emit(&d)? {
        println!("done, {}", d.uuid);
    }
    Ok(())
}

/// `deis drains:remove URL|ID`.
pub async fn remove(ctx: &Ctx, drain: &str) -> Result {
    let app = ctx.app()?;
    let (client, _) = ctx.client()?;
    ctx.progress(format!("Removing drain {drain} from {app}... "));
    client.drains_remove(&app, drain).await.inspect_err(|_| ctx.say(""))?;
    if !ctx.emit(&serde_json::json!({ "removed": drain }))? {
        println!("done");
    }
    Ok(())
}

/// `deis logs:token [--rotate]`.
pub async fn ingest_token(ctx: &Ctx, rotate: bool) -> Result {
    let app = ctx.app()?;
    let (client, _) = ctx.client()?;
    let token = if rotate {
        ctx.progress(format!("Rotating the log ingest token of {app}... "));
        let t = client.rotate_ingest_token(&app).await.inspect_err(|_| ctx.say(""))?;
        ctx.say("done");
        t
    } else {
        client.ingest_token(&app).await?
    };
    if !ctx.emit(&token)? {
        println!("{}", token.token);
    }
    Ok(())
}
