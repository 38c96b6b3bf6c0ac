//! `config:list|set|unset` and `limits:list|set|unset` (both are config changes).

use std::collections::BTreeMap;

use deis_core::{Config, ConfigPatch, ProcessType, ValidationError};

use super::ps::wait_release;
use super::{CliError, Ctx, Result, done_with, latest_release};
use crate::args::{KeyValue, LimitArg};
use crate::cli::WaitOpts;
use crate::output;

type PatchMap = BTreeMap<String, Option<serde_json::Value>>;

/// The `=== app Config` table (or the `--oneline` form).
fn render_config(app: &str, config: &Config, oneline: bool) -> String {
    if oneline {
        let pairs: Vec<String> = config.values.iter().map(|(k, v)| format!("{k}={v}")).collect();
        return format!("{}\n", pairs.join(" "));
    }
    let rows: Vec<Vec<String>> = config.values.iter().map(|(k, v)| vec![k.clone(), v.clone()]).collect();
    format!("=== {app} Config\n{}", output::table(&rows, "  "))
}

/// `deis config:list [--oneline]`.
pub async fn list(ctx: &Ctx, oneline: bool) -> Result {
    let app = ctx.app()?;
    let (client, _) = ctx.client()?;
    let config = client.config_get(&app).await?;
    if !ctx.emit(&config)? {
        print!("{}", render_config(&app, &config, oneline));
    }
    Ok(())
}

/// The patch of `config:set`.
pub fn set_patch(pairs: &[KeyValue]) -> ConfigPatch {
    let values: PatchMap =
        pairs.iter().map(|kv| (kv.key.clone(), Some(serde_json::Value::String(kv.value.clone())))).collect();
    ConfigPatch { values: Some(values), ..Default::default() }
}

/// The patch of `config:unset`.
pub fn unset_patch(keys: &[String]) -> ConfigPatch {
    ConfigPatch { values: Some(keys.iter().map(|k| (k.clone(), None)).collect()), ..Default::default() }
}

/// Sends `patch`, says `done, vN`, then waits for the units to run vN. The config is
/// returned even when waiting fails (the release exists), with the failure.
async fn apply(ctx: &Ctx, app: &str, what: &str, patch: &ConfigPatch, wait: &WaitOpts) -> Result<(Config, Result)> {
    let (client, _) = ctx.client()?;
    ctx.progress(format!("{what}... "));
    let config = client.config_set(app, patch).await.inspect_err(|_| ctx.say(""))?;
    let version = latest_release(&client, app).await;
    ctx.say(done_with(version));
    let waited = match version {
        Some(v) => wait_release(ctx, &client, app, v, wait, false).await,
        None => Ok(()),
    };
    Ok((config, waited))
}

/// `deis config:set KEY=VALUE...`.
pub async fn set(ctx: &Ctx, pairs: Vec<KeyValue>, wait: &WaitOpts) -> Result {
    let app = ctx.app()?;
    let (config, waited) = apply(ctx, &app, "Creating config", &set_patch(&pairs), wait).await?;
    if !ctx.emit(&config)? {
        println!();
        print!("{}", render_config(&app, &config, false));
    }
    waited
}

/// `deis config:unset KEY...`.
pub async fn unset(ctx: &Ctx, keys: Vec<String>, wait: &WaitOpts) -> Result {
    let app = ctx.app()?;
    let (config, waited) = apply(ctx, &app, "Removing config", &unset_patch(&keys), wait).await?;
    if !ctx.emit(&config)? {
        println!();
        print!("{}", render_config(&app, &config, false));
    }
    waited
}

/// The `=== app Limits` view.
fn render_limits(app: &str, config: &Config) -> String {
    let mut out = format!("=== {app} Limits\n");
    for (title, map) in [("Memory", &config.memory), ("CPU", &config.cpu)] {
        out.push_str(&format!("\n--- {title}\n"));
        if map.is_empty() {
            out.push_str("Unlimited\n");
        } else {
            let rows: Vec<Vec<String>> = map.iter().map(|(t, v)| vec![t.clone(), v.clone()]).collect();
            out.push_str(&output::table(&rows, "  "));
        }
    }
    out
}

/// `deis limits:list`.
pub async fn limits_list(ctx: &Ctx) -> Result {
    let app = ctx.app()?;
    let (client, _) = ctx.client()?;
    let config = client.config_get(&app).await?;
    if !ctx.emit(&serde_json::json!({"memory": config.memory, "cpu": config.cpu}))? {
        print!("{}", render_limits(&app, &config));
    }
    Ok(())
}

/// A limit the platform would refuse.
#[derive(Debug, thiserror::Error)]
#[error("{proc_type}: {}", .source.message)]
pub struct InvalidLimit {
    /// The process type it was for.
    pub proc_type: ProcessType,
    /// What is wrong with the value.
    #[source]
    pub source: ValidationError,
}

/// The patch of `limits:set`; values are checked with the platform's parsers.
pub fn limits_set_patch(cpu: bool, limits: &[LimitArg]) -> std::result::Result<ConfigPatch, InvalidLimit> {
    let mut map = PatchMap::new();
    for l in limits {
        let check =
            if cpu { deis_core::limits::parse_cpu(&l.value) } else { deis_core::limits::parse_memory(&l.value) };
        check.map_err(|source| InvalidLimit { proc_type: l.proc_type.clone(), source })?;
        map.insert(l.proc_type.to_string(), Some(serde_json::Value::String(l.value.clone())));
    }
    Ok(if cpu {
        ConfigPatch { cpu: Some(map), ..Default::default() }
    } else {
        ConfigPatch { memory: Some(map), ..Default::default() }
    })
}

/// The patch of `limits:unset`.
pub fn limits_unset_patch(cpu: bool, types: &[ProcessType]) -> ConfigPatch {
    let map: PatchMap = types.iter().map(|t| (t.to_string(), None)).collect();
    if cpu {
        ConfigPatch { cpu: Some(map), ..Default::default() }
    } else {
        ConfigPatch { memory: Some(map), ..Default::default() }
    }
}

/// `deis limits:set [--cpu] TYPE=LIMIT...`.
pub async fn limits_set(ctx: &Ctx, cpu: bool, limits: Vec<LimitArg>, wait: &WaitOpts) -> Result {
    let app = ctx.app()?;
    let patch = limits_set_patch(cpu, &limits).map_err(|e| CliError::Usage(e.to_string()))?;
    let (config, waited) = apply(ctx, &app, "Applying limits", &patch, wait).await?;
    if !ctx.emit(&config)? {
        println!();
        print!("{}", render_limits(&app, &config));
    }
    waited
}

/// `deis limits:unset [--cpu] TYPE...`.
pub async fn limits_unset(ctx: &Ctx, cpu: bool, types: Vec<ProcessType>, wait: &WaitOpts) -> Result {
    let app = ctx.app()?;
    let (config, waited) = apply(ctx, &app, "Removing limits", &limits_unset_patch(cpu, &types), wait).await?;
    if !ctx.emit(&config)? {
        println!();
        print!("{}", render_limits(&app, &config));
    }
    waited
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args;
    use serde_json::json;

    fn body(p: &ConfigPatch) -> serde_json::Value {
        let mut v = serde_json::to_value(p).unwrap();
        v.as_object_mut().unwrap().retain(|_, v| !v.is_null());
        v
    }

    #[test]
    fn patches_match_the_workflow_bodies() {
        let pairs = vec![args::key_value("FOO=bar").unwrap(), args::key_value("BAZ=qux").unwrap()];
        assert_eq!(body(&set_patch(&pairs)), json!({"values": {"BAZ": "qux", "FOO": "bar"}}));
        assert_eq!(body(&unset_patch(&["FOO".into()])), json!({"values": {"FOO": null}}));
        let limits = vec![args::limit_arg("web=512M").unwrap(), args::limit_arg("worker=1G/2G").unwrap()];
        assert_eq!(
            body(&limits_set_patch(false, &limits).unwrap()),
            json!({"memory": {"web": "512M", "worker": "1G/2G"}})
        );
        let cpu = vec![args::limit_arg("web=500m").unwrap()];
        assert_eq!(body(&limits_set_patch(true, &cpu).unwrap()), json!({"cpu": {"web": "500m"}}));
        let web = [ProcessType::new("web").unwrap()];
        assert_eq!(body(&limits_unset_patch(true, &web)), json!({"cpu": {"web": null}}));
        assert_eq!(body(&limits_unset_patch(false, &web)), json!({"memory": {"web": null}}));
    }

    #[test]
    fn bad_limit_values_are_refused_before_sending() {
        let e = limits_set_patch(false, &[args::limit_arg("web=lots").unwrap()]).unwrap_err();
        assert_eq!(e.proc_type, "web");
        let e = e.to_string();
        assert!(e.starts_with("web: ") && e.contains("512M"), "{e}");
        assert!(limits_set_patch(true, &[args::limit_arg("web=512M").unwrap()]).is_err());
    }

    #[test]
    fn config_views() {
        let mut c = Config::initial(&"hello".parse().unwrap(), "alice");
        c.values.insert("GREETING".into(), "hi there".into());
        c.values.insert("A".into(), "1".into());
        assert_eq!(render_config("hello", &c, false), "=== hello Config\nA         1\nGREETING  hi there\n");
        assert_eq!(render_config("hello", &c, true), "A=1 GREETING=hi there\n");
        c.memory.insert("web".into(), "512M".into());
        assert_eq!(render_limits("hello", &c), "=== hello Limits\n\n--- Memory\nweb  512M\n\n--- CPU\nUnlimited\n");
    }
}
