//! `healthchecks:list`, `healthchecks:set`, `healthchecks:unset` (Workflow's forms).

use std::collections::BTreeMap;

use deis_core::{ConfigPatch, ExecProbe, Healthcheck, HttpGetProbe, HttpHeader, ProbeAction, TcpSocketProbe};

use super::{CliError, Ctx, Result, done_with, latest_release};

/// What `healthchecks:set` was given.
#[derive(Debug, Clone, clap::Args)]
pub struct SetArgs {
    /// liveness or readiness.
    #[arg(value_parser = ["liveness", "readiness"])]
    pub kind: String,
    /// httpGet, tcpSocket or exec.
    #[arg(value_parser = ["httpGet", "tcpSocket", "exec"])]
    pub probe: String,
    /// The port (httpGet, tcpSocket) or the command and its arguments (exec).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true, value_name = "ARGS")]
    pub args: Vec<String>,
    /// Process type (default `web/cmd`, the web and cmd processes).
    #[arg(long = "type", value_name = "TYPE", default_value = deis_core::DEFAULT_HEALTHCHECK_TYPE)]
    pub proc_type: String,
    /// Path for httpGet.
    #[arg(long, default_value = "/")]
    pub path: String,
    /// Headers for httpGet, as NAME:VALUE (repeatable or comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub headers: Vec<String>,
    /// Seconds after start before the first probe.
    #[arg(long = "initial-delay-timeout", default_value_t = 50)]
    pub initial_delay: u32,
    /// Seconds one probe may take.
    #[arg(long, default_value_t = 50)]
    pub timeout: u32,
    /// Seconds between probes.
    #[arg(long, default_value_t = 10)]
    pub period: u32,
    /// Successes in a row that make a unit healthy again.
    #[arg(long = "success-threshold", default_value_t = 1)]
    pub success_threshold: u32,
    /// Failures in a row that make a unit unhealthy.
    #[arg(long = "failure-threshold", default_value_t = 3)]
    pub failure_threshold: u32,
}

fn probe_key(kind: &str) -> String {
    format!("{kind}Probe")
}

fn port(args: &[String]) -> Result<u32> {
    match args {
        [p] => p
            .parse::<u16>()
            .map(u32::from)
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| CliError::Usage(format!("expected a port number from 1 to 65535, got {p:?}"))),
        _ => Err(CliError::Usage(format!("expected one port number, got {args:?}"))),
    }
}

/// The health check `healthchecks:set` describes.
pub fn healthcheck(a: &SetArgs) -> Result<Healthcheck> {
    let action = match a.probe.as_str() {
        "httpGet" => {
            let mut http_headers = Vec::new();
            for h in &a.headers {
                let (name, value) = h
                    .split_once(':')
                    .ok_or_else(|| CliError::Usage(format!("--headers takes NAME:VALUE pairs, got {h:?}")))?;
                http_headers.push(HttpHeader { name: name.trim().into(), value: value.trim().into() });
            }
            ProbeAction::HttpGet(HttpGetProbe { path: a.path.clone(), port: port(&a.args)?, http_headers })
        }
        "tcpSocket" => ProbeAction::TcpSocket(TcpSocketProbe { port: port(&a.args)? }),
        _ => ProbeAction::Exec(ExecProbe { command: a.args.clone() }),
    };
    if a.kind == "liveness" && a.success_threshold != 1 {
        return Err(CliError::Usage("a liveness probe's --success-threshold must be 1".into()));
    }
    Ok(Healthcheck {
        initial_delay_seconds: a.initial_delay,
        timeout_seconds: a.timeout,
        period_seconds: a.period,
        success_threshold: a.success_threshold,
        failure_threshold: a.failure_threshold,
        action,
    })
}

async fn apply(ctx: &Ctx, what: &str, patch: ConfigPatch) -> Result {
    let app = ctx.app()?;
    let (client, _) = ctx.client()?;
    ctx.progress(format!("{what} for {app}... "));
    let config = client.config_set(&app, &patch).await.inspect_err(|_| ctx.say(""))?;
    if !ctx.emit(&config.healthcheck)? {
        println!("{}", done_with(latest_release(&client, &app).await));
    }
    Ok(())
}

/// `deis healthchecks:set KIND PROBE ARGS...`.
pub async fn set(ctx: &Ctx, a: SetArgs) -> Result {
    let check = healthcheck(&a)?;
    let probes = BTreeMap::from([(probe_key(&a.kind), Some(check))]);
    let patch = ConfigPatch {
        healthcheck: Some(BTreeMap::from([(a.proc_type.clone(), Some(probes))])),
        ..ConfigPatch::default()
    };
    apply(ctx, &format!("Applying {} healthcheck", a.kind), patch).await
}

/// `deis healthchecks:unset KIND...`.
pub async fn unset(ctx: &Ctx, kinds: Vec<String>, proc_type: String) -> Result {
    let probes = kinds.iter().map(|k| (probe_key(k), None)).collect();
    let patch =
        ConfigPatch { healthcheck: Some(BTreeMap::from([(proc_type, Some(probes))])), ..ConfigPatch::default() };
    apply(ctx, "Removing healthchecks", patch).await
}

/// `deis healthchecks:list [--type TYPE]`.
pub async fn list(ctx: &Ctx, proc_type: Option<String>) -> Result {
    let app = ctx.app()?;
    let (client, _) = ctx.client()?;
    let config = client.config_get(&app).await?;
    let checks: BTreeMap<_, _> =
        config.healthcheck.into_iter().filter(|(t, _)| proc_type.as_ref().is_none_or(|p| p == t)).collect();
    if ctx.emit(&checks)? {
        return Ok(());
    }
    println!("=== {app} Healthchecks");
    if checks.is_empty() {
        println!("No healthchecks configured.");
    }
    for (t, probes) in &checks {
        println!();
        println!("{t}:");
        for (name, h) in probes {
            let what = match &h.action {
                ProbeAction::HttpGet(g) => format!("HTTP GET {} on port {}", g.path, g.port),
                ProbeAction::TcpSocket(s) => format!("TCP connect on port {}", s.port),
                ProbeAction::Exec(e) => format!("exec {}", e.command.join(" ")),
            };
            println!(
                "  {name}: {what}; delay={}s timeout={}s period={}s #success={} #failure={}",
                h.initial_delay_seconds, h.timeout_seconds, h.period_seconds, h.success_threshold, h.failure_threshold
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(kind: &str, probe: &str, rest: &[&str]) -> SetArgs {
        SetArgs {
            kind: kind.into(),
            probe: probe.into(),
            args: rest.iter().map(|s| s.to_string()).collect(),
            proc_type: "web/cmd".into(),
            path: "/".into(),
            headers: vec![],
            initial_delay: 50,
            timeout: 50,
            period: 10,
            success_threshold: 1,
            failure_threshold: 3,
        }
    }

    #[test]
    fn bodies_match_the_workflow_cli() {
        let h = healthcheck(&args("liveness", "httpGet", &["8080"])).unwrap();
        assert_eq!(
            serde_json::to_value(&h).unwrap(),
            serde_json::json!({"initialDelaySeconds":50,"timeoutSeconds":50,"periodSeconds":10,
                "successThreshold":1,"failureThreshold":3,"httpGet":{"path":"/","port":8080}})
        );
        let h = healthcheck(&args("readiness", "exec", &["/bin/true", "arg"])).unwrap();
        assert_eq!(serde_json::to_value(&h).unwrap()["exec"], serde_json::json!({"command": ["/bin/true", "arg"]}));
        let h = healthcheck(&args("readiness", "tcpSocket", &["5000"])).unwrap();
        assert_eq!(serde_json::to_value(&h).unwrap()["tcpSocket"], serde_json::json!({"port": 5000}));
        assert!(healthcheck(&args("liveness", "tcpSocket", &["0"])).is_err());
        assert!(healthcheck(&args("liveness", "tcpSocket", &["http"])).is_err());
        let mut a = args("liveness", "httpGet", &["80"]);
        a.headers = vec!["X-Probe: yes".into()];
        let h = healthcheck(&a).unwrap();
        assert_eq!(
            serde_json::to_value(&h).unwrap()["httpGet"]["httpHeaders"],
            serde_json::json!([{"name":"X-Probe","value":"yes"}])
        );
        a.headers = vec!["bad".into()];
        assert!(healthcheck(&a).is_err());
        a.headers = vec![];
        a.success_threshold = 2;
        assert!(healthcheck(&a).unwrap_err().to_string().contains("success-threshold"));
    }
}
