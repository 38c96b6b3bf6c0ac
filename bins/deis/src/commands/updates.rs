//! `updates:*`: the update service (administrators): applications, publishing and
//! promoting packages, groups and their rollout, instances.

use std::path::Path;

use deis_core::update::{Instance, RolloutPolicy, policy::OfficeHours};
use deis_sdk::client::PackageUpload;

use super::{CliError, Ctx, Result};
use crate::args::GroupSettings;
use crate::output::table;

/// `deis updates:apps`.
pub async fn apps(ctx: &Ctx) -> Result {
    let (client, _) = ctx.client()?;
    let apps = client.update_apps().await?;
    if ctx.emit(&apps)? {
        return Ok(());
    }
    let mut rows = vec![vec!["ID".to_string(), "NAME".into(), "CREATED".into()]];
    rows.extend(apps.iter().map(|a| vec![a.id.clone(), a.name.clone(), a.created.to_string()]));
    print!("{}", table(&rows, "  "));
    Ok(())
}

/// `deis updates:create ID [--name NAME]`.
pub async fn create(ctx: &Ctx, id: &str, name: Option<&str>) -> Result {
    let (client, _) = ctx.client()?;
    let app = client.update_app_create(id, name.unwrap_or(id)).await?;
    if !ctx.emit(&app)? {
        println!("Created {} ({}) with channels and groups alpha, beta and stable", app.id, app.name);
    }
    Ok(())
}

/// `deis updates:status ID`.
pub async fn status(ctx: &Ctx, id: &str) -> Result {
    let (client, _) = ctx.client()?;
    let status = client.update_status(id).await?;
    if ctx.emit(&status)? {
        return Ok(());
    }
    println!("=== {} ({})", status.app.name, status.app.id);
    let mut rows = vec![["CHANNEL", "VERSION", "UPDATED"].map(String::from).to_vec()];
    for c in &status.channels {
        rows.push(vec![c.name.clone(), c.version.clone().unwrap_or_else(|| "-".into()), c.updated.to_string()]);
    }
    print!("{}", table(&rows, "  "));
    println!();
    let mut rows = vec![["GROUP", "CHANNEL", "VERSION", "STATE", "POLICY", "INSTANCES"].map(String::from).to_vec()];
    for g in &status.groups {
        let state = match (&g.group.halted, g.group.paused) {
            (Some(why), _) => format!("halted: {why}"),
            (None, true) => "paused".into(),
            (None, false) => "active".into(),
        };
        let tally: Vec<String> = g.statuses.iter().map(|(s, n)| format!("{s}={n}")).collect();
        rows.push(vec![
            g.group.name.clone(),
            g.group.channel.clone(),
            g.version.clone().unwrap_or_else(|| "-".into()),
            state,
            policy_summary(&g.group.policy),
            tally.join(","),
        ]);
    }
    print!("{}", table(&rows, "  "));
    Ok(())
}

fn policy_summary(p: &RolloutPolicy) -> String {
    let mut s = format!(
        "{}/{}, timeout {}",
        p.max_updates_per_period,
        humantime(p.period_secs),
        humantime(p.update_timeout_secs)
    );
    if let Some(h) = p.office_hours {
        s.push_str(&format!(", {}-{}h UTC{}", h.start_hour, h.end_hour, if h.weekdays_only { " Mon-Fri" } else { "" }));
    }
    if p.safe_mode {
        s.push_str(", safe mode");
    }
    s
}

fn humantime(secs: u64) -> String {
    match secs {
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// `deis updates:publish ID CHANNEL FILE --version V --url URL [--name NAME]`.
pub async fn publish(
    ctx: &Ctx,
    id: &str,
    channel: &str,
    file: &Path,
    version: &str,
    url: &str,
    name: Option<&str>,
) -> Result {
    let name = match name {
        Some(n) => n.to_string(),
        None => file.file_name().map(|n| n.to_string_lossy().into_owned()).ok_or_else(|| {
            CliError::Usage(format!("{} has no file name: give the download's name with --name", file.display()))
        })?,
    };
    let package = PackageUpload::from_file(file, version, url, &name)
        .map_err(|e| CliError::Failed(format!("reading {}: {e}", file.display())))?;
    let (client, _) = ctx.client()?;
    ctx.progress(format!(
        "Publishing {name} {version} ({} bytes, sha256 {}) to {channel}... ",
        package.size, package.sha256
    ));
    let published = client.update_publish(id, channel, &package).await.inspect_err(|_| ctx.say(""))?;
    if !ctx.emit(&published)? {
        println!("done");
    }
    Ok(())
}

/// `deis updates:promote ID FROM TO`.
pub async fn promote(ctx: &Ctx, id: &str, from: &str, to: &str) -> Result {
    let (client, _) = ctx.client()?;
    let channel = client.update_promote(id, from, to).await?;
    if !ctx.emit(&channel)? {
        println!("{to} now offers {} (from {from})", channel.version.as_deref().unwrap_or("-"));
    }
    Ok(())
}

/// `deis updates:group ID GROUP --channel C [policy settings]`.
pub async fn group(ctx: &Ctx, id: &str, group: &str, settings: &GroupSettings) -> Result {
    let (client, _) = ctx.client()?;
    // Start from the group's policy (or the default for a new group).
    let status = client.update_status(id).await?;
    let mut policy = status.groups.iter().find(|g| g.group.name == group).map(|g| g.group.policy).unwrap_or_default();
    if let Some(n) = settings.max_updates_per_period {
        policy.max_updates_per_period = n;
    }
    if let Some(d) = settings.period {
        policy.period_secs = d.as_secs().max(1);
    }
    if let Some(d) = settings.update_timeout {
        policy.update_timeout_secs = d.as_secs().max(1);
    }
    if let Some(hours) = settings.office_hours {
        policy.office_hours = hours.0.map(|(start_hour, end_hour)| OfficeHours {
            start_hour,
            end_hour,
            weekdays_only: settings.weekdays_only,
        });
    }
    if let Some(safe) = settings.safe_mode {
        policy.safe_mode = safe;
    }
    let saved = client.update_group(id, group, &settings.channel, Some(policy)).await?;
    if !ctx.emit(&saved)? {
        println!("{} follows {}: {}", saved.name, saved.channel, policy_summary(&saved.policy));
    }
    Ok(())
}

/// `deis updates:pause ID GROUP` and `deis updates:resume ID GROUP`.
pub async fn pause(ctx: &Ctx, id: &str, group: &str, paused: bool) -> Result {
    let (client, _) = ctx.client()?;
    let saved = client.update_pause(id, group, paused).await?;
    if !ctx.emit(&saved)? {
        println!("{group} is {}", if paused { "paused" } else { "active" });
    }
    Ok(())
}

/// `deis updates:instances ID [--group G]`.
pub async fn instances(ctx: &Ctx, id: &str, group: Option<&str>) -> Result {
    let (client, _) = ctx.client()?;
    let instances = client.update_instances(id, group).await?;
    if ctx.emit(&instances)? {
        return Ok(());
    }
    print!("{}", view(&instances));
    Ok(())
}

/// One line per instance: id, group, version, status, last check, last event.
fn view(instances: &[Instance]) -> String {
    let mut rows =
        vec![["INSTANCE", "GROUP", "VERSION", "STATUS", "LAST CHECK", "LAST EVENT"].map(String::from).to_vec()];
    for i in instances {
        let event = i.last_event().map_or_else(
            || "-".to_string(),
            |e| {
                let code = e.error_code.map(|c| format!(" error {c}")).unwrap_or_default();
                let times = if e.repeats > 0 { format!(" ({}x)", u64::from(e.repeats) + 1) } else { String::new() };
                format!("{}/{}{code}{times} at {}", e.event_type, e.result, e.at)
            },
        );
        rows.push(vec![
            i.id.clone(),
            i.group.clone(),
            i.version.clone(),
            i.status.to_string(),
            i.last_check.to_string(),
            event,
        ]);
    }
    table(&rows, "  ")
}

#[cfg(test)]
mod tests {
    use deis_core::time::Timestamp;
    use deis_core::update::{InstanceEvent, InstanceStatus};

    use super::*;

    #[test]
    fn one_line_per_instance_with_its_last_event() {
        let at = Timestamp::from_unix_seconds(1_790_000_000);
        let event =
            InstanceEvent { event_type: 3, result: 0, error_code: Some(7), previous_version: None, at, repeats: 2 };
        let i = Instance {
            id: "replica-1".into(),
            group: "stable".into(),
            version: "1.0.0".into(),
            status: InstanceStatus::Error,
            last_check: at,
            grant: None,
            failed_version: Some("1.1.0".into()),
            events: vec![event],
        };
        assert_eq!(
            view(&[i]),
            "INSTANCE   GROUP   VERSION  STATUS  LAST CHECK            LAST EVENT\n\
             replica-1  stable  1.0.0    error   2026-09-21T14:13:20Z  3/0 error 7 (3x) at 2026-09-21T14:13:20Z\n"
        );
    }

    #[test]
    fn policies_read_as_rate_timeout_hours_and_safe_mode() {
        let mut p = RolloutPolicy::default();
        assert_eq!(policy_summary(&p), "5/1h, timeout 1h, safe mode");
        p.office_hours = Some(OfficeHours { start_hour: 9, end_hour: 17, weekdays_only: true });
        p.period_secs = 900;
        p.safe_mode = false;
        assert_eq!(policy_summary(&p), "5/15m, timeout 1h, 9-17h UTC Mon-Fri");
    }
}
