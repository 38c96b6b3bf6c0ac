//! `maintenance:*`, `routing:*`, `tls:*`, `whitelist:*`, `labels:*`: what the router
//! does with the app's traffic, and its labels.

use std::collections::BTreeMap;

use deis_core::AddressRange;
use serde_json::{Value, json};

use super::{Ctx, Result};
use crate::output;

/// An on/off setting of an app.
#[derive(Debug, Clone, Copy)]
pub enum Switch {
    /// Maintenance mode (`maintenance` in the settings).
    Maintenance,
    /// Routing (`routable`).
    Routing,
    /// The HTTPS redirect (`https_enforced`, at `/tls/`).
    Https,
}

impl Switch {
    fn describe(self, app: &str, on: bool) -> String {
        match (self, on) {
            (Self::Maintenance, true) => format!("Maintenance mode is on for {app}"),
            (Self::Maintenance, false) => format!("Maintenance mode is off for {app}"),
            (Self::Routing, true) => format!("Routing is enabled for {app}"),
            (Self::Routing, false) => format!("Routing is disabled for {app}"),
            (Self::Https, true) => format!("HTTPS is enforced for {app}"),
            (Self::Https, false) => format!("HTTPS is not enforced for {app}"),
        }
    }

    fn field(self) -> &'static str {
        match self {
            Self::Maintenance => "maintenance",
            Self::Routing => "routable",
            Self::Https => "https_enforced",
        }
    }
}

/// `deis maintenance:info`, `routing:info`, `tls:info`.
pub async fn show(ctx: &Ctx, switch: Switch) -> Result {
    let app = ctx.app()?;
    let (client, _) = ctx.client()?;
    let on = match switch {
        Switch::Https => client.tls_get(&app).await?,
        _ => client.settings_get(&app).await?[switch.field()].as_bool().unwrap_or(matches!(switch, Switch::Routing)),
    };
    if !ctx.emit(&json!({ switch.field(): on }))? {
        println!("{}", switch.describe(&app, on));
    }
    Ok(())
}

/// `deis maintenance:on|off`, `routing:enable|disable`, `tls:enable|disable`.
pub async fn flip(ctx: &Ctx, switch: Switch, on: bool) -> Result {
    let app = ctx.app()?;
    let (client, _) = ctx.client()?;
    match switch {
        Switch::Https => client.tls_set(&app, on).await?,
        _ => {
            // The controller answers 409 when nothing changes; say how things stand instead.
            match client.settings_set(&app, &json!({ switch.field(): on })).await {
                Ok(_) => {}
                Err(e) if e.status() == Some(409) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    if !ctx.emit(&json!({ switch.field(): on }))? {
        println!("{}", switch.describe(&app, on));
    }
    Ok(())
}

/// `deis whitelist:list`.
pub async fn whitelist_list(ctx: &Ctx) -> Result {
    let app = ctx.app()?;
    let (client, _) = ctx.client()?;
    let list = client.whitelist_list(&app).await?;
    if ctx.emit(&list)? {
        return Ok(());
    }
    println!("=== {app} Whitelisted Addresses");
    if list.is_empty() {
        println!("None: every client may connect.");
    }
    for a in &list {
        println!("{a}");
    }
    Ok(())
}

fn texts(addresses: &[AddressRange]) -> Vec<String> {
    addresses.iter().map(ToString::to_string).collect()
}

/// `deis whitelist:add ADDR[,ADDR...]`.
pub async fn whitelist_add(ctx: &Ctx, addresses: &[AddressRange]) -> Result {
    let app = ctx.app()?;
    let (client, _) = ctx.client()?;
    let list = texts(addresses);
    ctx.progress(format!("Adding {} to {app} whitelist... ", list.join(", ")));
    let all = client.whitelist_add(&app, &list).await.inspect_err(|_| ctx.say(""))?;
    if !ctx.emit(&all)? {
        println!("done");
    }
    Ok(())
}

/// `deis whitelist:remove ADDR[,ADDR...]`.
pub async fn whitelist_remove(ctx: &Ctx, addresses: &[AddressRange]) -> Result {
    let app = ctx.app()?;
    let (client, _) = ctx.client()?;
    let list = texts(addresses);
    ctx.progress(format!("Removing {} from {app} whitelist... ", list.join(", ")));
    client.whitelist_remove(&app, &list).await.inspect_err(|_| ctx.say(""))?;
    if !ctx.emit(&json!({ "removed": list }))? {
        println!("done");
    }
    Ok(())
}

/// `deis labels:list`.
pub async fn labels_list(ctx: &Ctx) -> Result {
    let app = ctx.app()?;
    let (client, _) = ctx.client()?;
    let settings = client.settings_get(&app).await?;
    let labels = settings.get("label").cloned().unwrap_or(Value::Null);
    if ctx.emit(&labels)? {
        return Ok(());
    }
    println!("=== {app} Label");
    print_labels(&labels);
    Ok(())
}

/// Prints a settings `label` object as `key: value` rows.
pub fn print_labels(labels: &Value) {
    match labels.as_object().filter(|l| !l.is_empty()) {
        Some(labels) => {
            let rows: Vec<Vec<String>> = labels
                .iter()
                .map(|(k, v)| vec![format!("{k}:"), v.as_str().map_or_else(|| v.to_string(), str::to_string)])
                .collect();
            print!("{}", output::table(&rows, " "));
        }
        None => println!("No labels found."),
    }
}

/// `deis labels:set KEY=VALUE...`.
pub async fn labels_set(ctx: &Ctx, labels: Vec<(String, String)>) -> Result {
    let patch: BTreeMap<String, Option<String>> = labels.into_iter().map(|(k, v)| (k, Some(v))).collect();
    change_labels(ctx, patch, "Applying labels").await
}

/// `deis labels:unset KEY...`.
pub async fn labels_unset(ctx: &Ctx, keys: Vec<String>) -> Result {
    let patch: BTreeMap<String, Option<String>> = keys.into_iter().map(|k| (k, None)).collect();
    change_labels(ctx, patch, "Removing labels").await
}

async fn change_labels(ctx: &Ctx, patch: BTreeMap<String, Option<String>>, what: &str) -> Result {
    let app = ctx.app()?;
    let (client, _) = ctx.client()?;
    ctx.progress(format!("{what} on {app}... "));
    let settings = client.settings_set(&app, &json!({ "label": patch })).await.inspect_err(|_| ctx.say(""))?;
    if !ctx.emit(&settings)? {
        println!("done");
    }
    Ok(())
}
