//! `autoscale:*`: the bounds deisd's autoscaler keeps a process type within, kept in
//! the app's settings (`autoscale` in `POST /v2/apps/<app>/settings/`).

use deis_core::Autoscale;
use serde_json::{Value, json};

use super::{CliError, Ctx, Result};
use crate::output;

/// `deis autoscale:list`.
pub async fn list(ctx: &Ctx) -> Result {
    let app = ctx.app()?;
    let (client, _) = ctx.client()?;
    let settings = client.settings_get(&app).await?;
    let bounds = settings.get("autoscale").cloned().unwrap_or(Value::Null);
    if ctx.emit(&bounds)? {
        return Ok(());
    }
    println!("=== {app} Autoscale");
    print!("{}", view(&bounds));
    Ok(())
}

/// The bounds as `autoscale:list` prints them: `web: min 1, max 3, cpu 50%`.
fn view(bounds: &Value) -> String {
    let Some(bounds) = bounds.as_object().filter(|b| !b.is_empty()) else {
        return "No autoscaling: deis autoscale:set TYPE --min=N --max=N --cpu-percent=P\n".into();
    };
    let rows: Vec<Vec<String>> = bounds
        .iter()
        .map(|(ty, b)| {
            let n = |k: &str| b[k].as_u64().map_or_else(|| "?".to_string(), |v| v.to_string());
            vec![
                format!("{ty}:"),
                format!("min {},", n("min")),
                format!("max {},", n("max")),
                format!("cpu {}%", n("cpu_percent")),
            ]
        })
        .collect();
    output::table(&rows, " ")
}

/// `deis autoscale:set TYPE --min=N --max=N --cpu-percent=P`.
pub async fn set(ctx: &Ctx, proc_type: &str, bounds: Autoscale) -> Result {
    if bounds.min > bounds.max {
        return Err(CliError::Usage(format!(
            "--min {} is above --max {}: give 1 <= min <= max",
            bounds.min, bounds.max
        )));
    }
    let app = ctx.app()?;
    let (client, _) = ctx.client()?;
    ctx.progress(format!("Applying autoscale settings for process type {proc_type} on {app}... "));
    let patch = json!({ "autoscale": { proc_type: bounds } });
    change(ctx, &client, &app, &patch).await
}

/// `deis autoscale:unset TYPE`.
pub async fn unset(ctx: &Ctx, proc_type: &str) -> Result {
    let app = ctx.app()?;
    let (client, _) = ctx.client()?;
    ctx.progress(format!("Removing autoscale for process type {proc_type} on {app}... "));
    let patch = json!({ "autoscale": { proc_type: Value::Null } });
    change(ctx, &client, &app, &patch).await
}

async fn change(ctx: &Ctx, client: &deis_sdk::client::Client, app: &str, patch: &Value) -> Result {
    let settings = match client.settings_set(app, patch).await {
        Ok(s) => s,
        // 409: the same bounds were already set; say how things stand.
        Err(e) if e.status() == Some(409) => client.settings_get(app).await?,
        Err(e) => {
            ctx.say("");
            return Err(e.into());
        }
    };
    if !ctx.emit(&settings.get("autoscale").cloned().unwrap_or(Value::Null))? {
        println!("done");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_listed_per_type() {
        let v =
            json!({"web": {"min": 1, "max": 3, "cpu_percent": 50}, "worker": {"min": 2, "max": 6, "cpu_percent": 70}});
        let out = view(&v);
        assert!(
            out.contains("web:") && out.contains("min 1,") && out.contains("max 3,") && out.contains("cpu 50%"),
            "{out}"
        );
        assert!(out.contains("worker:") && out.contains("cpu 70%"), "{out}");
        assert!(view(&json!({})).starts_with("No autoscaling"));
        assert!(view(&Value::Null).starts_with("No autoscaling"));
    }
}
