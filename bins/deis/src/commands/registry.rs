//! `registry:list|set|unset`: the app's credentials for the private registry `deis
//! pull` pulls its image from (the config's `registry` settings).

use std::collections::BTreeMap;

use super::push::latest_release;
use super::{Ctx, Result, done_with};

/// `deis registry:list`.
pub async fn registry_list(ctx: &Ctx) -> Result {
    let app = ctx.app()?;
    let (client, _) = ctx.client()?;
    let config = client.config_get(&app).await?;
    // The password is not shown.
    let shown: BTreeMap<&String, &str> =
        config.registry.iter().map(|(k, v)| (k, if k == "password" { "***" } else { v.as_str() })).collect();
    if ctx.emit(&shown)? {
        return Ok(());
    }
    println!("=== {app} Registry");
    for (k, v) in shown {
        println!("{k:<10} {v}");
    }
    Ok(())
}

/// `deis registry:set key=value...` (`username`, `password`, `hostname`).
pub async fn registry_set(ctx: &Ctx, pairs: Vec<(String, String)>) -> Result {
    let map = pairs.into_iter().map(|(k, v)| (k.to_ascii_lowercase(), Some(serde_json::Value::String(v)))).collect();
    registry_patch(ctx, map, "Applying registry information").await
}

/// `deis registry:unset key...`.
pub async fn registry_unset(ctx: &Ctx, keys: Vec<String>) -> Result {
    let map = keys.into_iter().map(|k| (k.to_ascii_lowercase(), None)).collect();
    registry_patch(ctx, map, "Unsetting registry information").await
}

async fn registry_patch(ctx: &Ctx, map: BTreeMap<String, Option<serde_json::Value>>, what: &str) -> Result {
    let app = ctx.app()?;
    let (client, _) = ctx.client()?;
    let patch = deis_core::ConfigPatch { registry: Some(map), ..Default::default() };
    ctx.progress(format!("{what}... "));
    client.config_set(&app, &patch).await.inspect_err(|_| ctx.say(""))?;
    ctx.say(done_with(latest_release(&client, &app).await));
    Ok(())
}
