//! App configuration: environment variables, per process type limits, tags, registry
//! credentials and healthchecks. Every change makes a new, immutable `Config` and a new
//! release; [`Config::apply`] is the one place that merges a patch.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::AppName;
use super::limits::{self, Resources};
use super::validate::{self, ValidationError};
use crate::time::Timestamp;

/// The healthcheck key the Workflow CLI uses for the default process type.
pub const DEFAULT_HEALTHCHECK_TYPE: &str = "web/cmd";

/// One immutable configuration of an app, as the controller API returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Config {
    /// Identity of this configuration; releases point at it.
    pub uuid: Uuid,
    /// App id.
    pub app: AppName,
    /// Username of whoever made this configuration.
    pub owner: String,
    /// Environment variables.
    #[serde(default)]
    pub values: BTreeMap<String, String>,
    /// Memory per process type (`512M`, `1G/2G`).
    #[serde(default)]
    pub memory: BTreeMap<String, String>,
    /// CPU per process type (`500m`, `1`, `250m/1`).
    #[serde(default)]
    pub cpu: BTreeMap<String, String>,
    /// Placement tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Private registry credentials.
    #[serde(default)]
    pub registry: BTreeMap<String, String>,
    /// Probes per process type (`web/cmd`, `worker`) and probe name (`livenessProbe`, `readinessProbe`).
    #[serde(default)]
    pub healthcheck: BTreeMap<String, BTreeMap<String, Healthcheck>>,
    /// Creation time.
    pub created: Timestamp,
    /// Same as `created`: configs are immutable.
    pub updated: Timestamp,
}

/// A Kubernetes-style probe, as `deis healthchecks:set` sends it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Healthcheck {
    /// Seconds to wait after start before the first probe.
    #[serde(default)]
    pub initial_delay_seconds: u32,
    /// Seconds before one probe attempt times out.
    #[serde(default = "one")]
    pub timeout_seconds: u32,
    /// Seconds between probes.
    #[serde(default = "ten")]
    pub period_seconds: u32,
    /// Consecutive successes needed.
    #[serde(default = "one")]
    pub success_threshold: u32,
    /// Consecutive failures that count as failed.
    #[serde(default = "three")]
    pub failure_threshold: u32,
    /// What the probe does.
    #[serde(flatten)]
    pub action: ProbeAction,
}

fn one() -> u32 {
    1
}
fn ten() -> u32 {
    10
}
fn three() -> u32 {
    3
}

/// The check a probe performs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ProbeAction {
    /// HTTP GET; any 2xx/3xx is healthy. Locally the unit's `PORT` is used.
    HttpGet(HttpGetProbe),
    /// TCP connect.
    TcpSocket(TcpSocketProbe),
    /// Run a command in the unit's environment; exit 0 is healthy.
    Exec(ExecProbe),
}

/// `httpGet` probe settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpGetProbe {
    /// Request path.
    #[serde(default = "slash")]
    pub path: String,
    /// Container port (the local scheduler probes the unit's `PORT`).
    #[serde(default)]
    pub port: u32,
    /// Extra headers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http_headers: Vec<HttpHeader>,
}

fn slash() -> String {
    "/".into()
}

/// One header of an `httpGet` probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpHeader {
    /// Header name.
    pub name: String,
    /// Header value.
    pub value: String,
}

/// `tcpSocket` probe settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TcpSocketProbe {
    /// Container port (the local scheduler probes the unit's `PORT`).
    #[serde(default)]
    pub port: u32,
}

/// `exec` probe settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecProbe {
    /// argv of the probe command.
    pub command: Vec<String>,
}

/// Which probe of a process type.
pub type Probe = String;

/// Probes of one process type in a patch: `null` removes a probe.
pub type ProbesPatch = BTreeMap<String, Option<Healthcheck>>;

/// A partial config as `POST /v2/apps/<app>/config/` receives it: a key mapped to
/// `null` is deleted, any other key is set; absent maps are left alone.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ConfigPatch {
    /// Environment variables to set (`Some`) or unset (`None`).
    pub values: Option<BTreeMap<String, Option<serde_json::Value>>>,
    /// Memory limits to set or unset.
    pub memory: Option<BTreeMap<String, Option<serde_json::Value>>>,
    /// CPU limits to set or unset.
    pub cpu: Option<BTreeMap<String, Option<serde_json::Value>>>,
    /// Tags to set or unset.
    pub tags: Option<BTreeMap<String, Option<serde_json::Value>>>,
    /// Registry settings to set or unset.
    pub registry: Option<BTreeMap<String, Option<serde_json::Value>>>,
    /// Probes per process type to set or unset (`null` process type removes all its probes).
    pub healthcheck: Option<BTreeMap<String, Option<ProbesPatch>>>,
}

/// Why a [`ConfigPatch`] can't be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A key or value of the patch is invalid.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// The patch unsets something that is not set (the reference answers 422).
    #[error("{key} does not exist under {section}")]
    NotSet {
        /// What was to be unset: a variable, a process type, a probe name.
        key: String,
        /// Where it was looked for: `values`, `memory`, `healthcheck`, `healthcheck for web`, ...
        section: String,
    },
}

/// What a patch changed, for the release summary (`alice added FOO, changed BAR`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChangeSummary {
    parts: Vec<String>,
}

impl ChangeSummary {
    /// True when the patch changed nothing.
    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    /// The summary text of a release made by `user`, Deis style.
    pub fn describe(&self, user: &str) -> String {
        format!("{user} {}", self.parts.join(" and "))
    }
}

/// A JSON scalar as a config string (numbers and booleans are stringified, as the
/// reference controller does).
fn scalar(field: &str, key: &str, v: &serde_json::Value) -> Result<String, ValidationError> {
    match v {
        serde_json::Value::String(s) => Ok(s.clone()),
        serde_json::Value::Number(n) => Ok(n.to_string()),
        serde_json::Value::Bool(b) => Ok(b.to_string()),
        _ => Err(ValidationError::new(field, format!("{key}: expected a string value"))),
    }
}

struct MapChange {
    added: Vec<String>,
    changed: Vec<String>,
    deleted: Vec<String>,
}

fn merge_map(
    field: &str,
    target: &mut BTreeMap<String, String>,
    patch: &BTreeMap<String, Option<serde_json::Value>>,
    check: &dyn Fn(&str, &str) -> Result<(), ValidationError>,
) -> Result<MapChange, ConfigError> {
    let mut ch = MapChange { added: vec![], changed: vec![], deleted: vec![] };
    for (key, value) in patch {
        match value {
            None => {
                if target.remove(key).is_none() {
                    return Err(ConfigError::NotSet { key: key.clone(), section: field.to_string() });
                }
                ch.deleted.push(key.clone());
            }
            Some(v) => {
                let v = scalar(field, key, v)?;
                check(key, &v)?;
                match target.insert(key.clone(), v.clone()) {
                    None => ch.added.push(key.clone()),
                    Some(old) if old != v => ch.changed.push(key.clone()),
                    Some(_) => {}
                }
            }
        }
    }
    Ok(ch)
}

impl Config {
    /// The first, empty config of a new app.
    pub fn initial(app: &AppName, owner: &str) -> Self {
        let now = Timestamp::now();
        Self {
            uuid: Uuid::new_v4(),
            app: app.clone(),
            owner: owner.into(),
            values: BTreeMap::new(),
            memory: BTreeMap::new(),
            cpu: BTreeMap::new(),
            tags: BTreeMap::new(),
            registry: BTreeMap::new(),
            healthcheck: BTreeMap::new(),
            created: now,
            updated: now,
        }
    }

    /// Applies `patch` on a copy of `self` made by `user`: returns the new config and
    /// what changed. Deleting a key that does not exist is an error (the reference
    /// answers 422 for it); a patch that changes nothing gives an empty summary.
    pub fn apply(&self, patch: &ConfigPatch, user: &str) -> Result<(Config, ChangeSummary), ConfigError> {
        let mut next = self.clone();
        let now = Timestamp::now();
        next.uuid = Uuid::new_v4();
        next.owner = user.into();
        next.created = now;
        next.updated = now;
        let mut summary = ChangeSummary::default();

        if let Some(values) = &patch.values {
            let ch = merge_map("values", &mut next.values, values, &|k, v| {
                validate::config_key(k)?;
                validate::config_value(k, v)
            })?;
            let mut words = vec![];
            for (verb, keys) in [("added", ch.added), ("changed", ch.changed), ("deleted", ch.deleted)] {
                if !keys.is_empty() {
                    words.push(format!("{verb} {}", keys.join(", ")));
                }
            }
            if !words.is_empty() {
                summary.parts.push(words.join(", "));
            }
        }
        let mut limit_kinds = vec![];
        for (field, target, patch_map) in
            [("memory", &mut next.memory, &patch.memory), ("cpu", &mut next.cpu, &patch.cpu)]
        {
            if let Some(p) = patch_map {
                let ch = merge_map(field, target, p, &|k, v| {
                    validate::proc_type(k).map_err(|e| ValidationError::new(field, e.message))?;
                    if field == "memory" {
                        limits::parse_memory(v).map(|_| ())
                    } else {
                        limits::parse_cpu(v).map(|_| ())
                    }
                })?;
                if !(ch.added.is_empty() && ch.changed.is_empty() && ch.deleted.is_empty()) {
                    limit_kinds.push(field);
                }
            }
        }
        if !limit_kinds.is_empty() {
            summary.parts.push(format!("changed limits for {}", limit_kinds.join(", ")));
        }
        if let Some(p) = &patch.tags {
            let ch = merge_map("tags", &mut next.tags, p, &|k, v| {
                if k.is_empty() || k.len() > 63 || v.len() > 63 {
                    return Err(ValidationError::new("tags", "tag keys and values are 1 to 63 characters"));
                }
                Ok(())
            })?;
            for (verb, keys) in [("added", ch.added), ("changed", ch.changed), ("deleted", ch.deleted)] {
                if !keys.is_empty() {
                    summary.parts.push(format!("{verb} tag {}", keys.join(", ")));
                }
            }
        }
        if let Some(p) = &patch.registry {
            let lowered: BTreeMap<String, Option<serde_json::Value>> =
                p.iter().map(|(k, v)| (k.to_ascii_lowercase(), v.clone())).collect();
            let ch = merge_map("registry", &mut next.registry, &lowered, &|_, _| Ok(()))?;
            for (verb, keys) in [("added", ch.added), ("changed", ch.changed), ("deleted", ch.deleted)] {
                if !keys.is_empty() {
                    summary.parts.push(format!("{verb} registry info {}", keys.join(", ")));
                }
            }
        }
        if let Some(p) = &patch.healthcheck {
            let mut touched = vec![];
            for (ptype, probes) in p {
                let type_key = ptype.as_str();
                if type_key != DEFAULT_HEALTHCHECK_TYPE {
                    validate::proc_type(type_key).map_err(|e| ValidationError::new("healthcheck", e.message))?;
                }
                let before = next.healthcheck.get(type_key).cloned();
                match probes {
                    None => {
                        if next.healthcheck.remove(type_key).is_none() {
                            return Err(ConfigError::NotSet {
                                key: type_key.to_string(),
                                section: "healthcheck".into(),
                            });
                        }
                    }
                    Some(probes) => {
                        let entry = next.healthcheck.entry(type_key.to_string()).or_default();
                        for (name, probe) in probes {
                            if name != "livenessProbe" && name != "readinessProbe" {
                                return Err(ValidationError::new(
                                    "healthcheck",
                                    format!("{name}: probes are livenessProbe or readinessProbe"),
                                )
                                .into());
                            }
                            match probe {
                                None => {
                                    if entry.remove(name).is_none() {
                                        return Err(ConfigError::NotSet {
                                            key: name.clone(),
                                            section: format!("healthcheck for {type_key}"),
                                        });
                                    }
                                }
                                Some(h) => {
                                    if name == "livenessProbe" && h.success_threshold != 1 {
                                        return Err(ValidationError::new(
                                            "healthcheck",
                                            "livenessProbe successThreshold must be 1",
                                        )
                                        .into());
                                    }
                                    if h.period_seconds == 0 || h.timeout_seconds == 0 || h.failure_threshold == 0 {
                                        return Err(ValidationError::new(
                                            "healthcheck",
                                            "periodSeconds, timeoutSeconds and failureThreshold must be at least 1",
                                        )
                                        .into());
                                    }
                                    entry.insert(name.clone(), h.clone());
                                }
                            }
                        }
                        if entry.is_empty() {
                            next.healthcheck.remove(type_key);
                        }
                    }
                }
                if next.healthcheck.get(type_key) != before.as_ref() {
                    touched.push(type_key.to_string());
                }
            }
            for t in touched {
                summary.parts.push(format!("changed healthcheck info for proc type {t}"));
            }
        }
        Ok((next, summary))
    }

    /// Resources one unit of `proc_type` requests (zero where no limit is set).
    pub fn resources(&self, proc_type: &str) -> Resources {
        let cpu = self.cpu.get(proc_type).and_then(|v| limits::parse_cpu(v).ok()).map_or(0, |(r, _)| r);
        let mem = self.memory.get(proc_type).and_then(|v| limits::parse_memory(v).ok()).map_or(0, |(r, _)| r);
        Resources { cpu_millis: cpu, memory_bytes: mem }
    }

    /// The ceiling of one unit of `proc_type`: the `LIMIT` of `REQUEST/LIMIT` (or the
    /// single value), zero where none is set. Backends enforce it (a unit that
    /// allocates past its memory limit is killed; cpu is throttled to it).
    pub fn limits(&self, proc_type: &str) -> Resources {
        let cpu = self.cpu.get(proc_type).and_then(|v| limits::parse_cpu(v).ok()).map_or(0, |(_, l)| l);
        let mem = self.memory.get(proc_type).and_then(|v| limits::parse_memory(v).ok()).map_or(0, |(_, l)| l);
        Resources { cpu_millis: cpu, memory_bytes: mem }
    }

    /// The readiness probe of `proc_type` (for `web`, also the `web/cmd` key).
    pub fn readiness_probe(&self, proc_type: &str) -> Option<&Healthcheck> {
        let probes = self.healthcheck.get(proc_type).or_else(|| {
            (proc_type == "web" || proc_type == "cmd").then(|| self.healthcheck.get(DEFAULT_HEALTHCHECK_TYPE)).flatten()
        })?;
        probes.get("readinessProbe").or_else(|| probes.get("livenessProbe"))
    }

    /// The liveness probe of `proc_type` (`web` and `cmd` also take the CLI's default
    /// key `web/cmd`): a unit failing it `failureThreshold` times in a row is restarted.
    pub fn liveness_probe(&self, proc_type: &str) -> Option<&Healthcheck> {
        let probes = self.healthcheck.get(proc_type).or_else(|| {
            (proc_type == "web" || proc_type == "cmd").then(|| self.healthcheck.get(DEFAULT_HEALTHCHECK_TYPE)).flatten()
        })?;
        probes.get("livenessProbe")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn patch(v: serde_json::Value) -> ConfigPatch {
        serde_json::from_value(v).unwrap()
    }

    fn demo() -> AppName {
        AppName::new("demo").unwrap()
    }

    #[test]
    fn set_change_unset_values() {
        let c0 = Config::initial(&demo(), "alice");
        let (c1, s) = c0.apply(&patch(json!({"values": {"FOO": "bar", "N": 3}})), "alice").unwrap();
        assert_eq!(c1.values["FOO"], "bar");
        assert_eq!(c1.values["N"], "3");
        assert_eq!(s.describe("alice"), "alice added FOO, N");
        assert_ne!(c1.uuid, c0.uuid);
        let (c2, s) = c1.apply(&patch(json!({"values": {"FOO": "baz", "N": null}})), "bob").unwrap();
        assert_eq!(s.describe("bob"), "bob changed FOO, deleted N");
        assert!(!c2.values.contains_key("N"));
        let (_, s) = c2.apply(&patch(json!({"values": {"FOO": "baz"}})), "bob").unwrap();
        assert!(s.is_empty());
        let err = c2.apply(&patch(json!({"values": {"NOPE": null}})), "bob").unwrap_err();
        assert_eq!(err, ConfigError::NotSet { key: "NOPE".into(), section: "values".into() });
        assert_eq!(err.to_string(), "NOPE does not exist under values");
        let err = c2.apply(&patch(json!({"values": {"1BAD": "x"}})), "bob").unwrap_err();
        assert!(matches!(err, ConfigError::Invalid(ref e) if e.field == "values"), "{err:?}");
        let err = c2.apply(&patch(json!({"healthcheck": {"web": {"livenessProbe": null}}})), "bob").unwrap_err();
        assert_eq!(err.to_string(), "livenessProbe does not exist under healthcheck for web");
    }

    #[test]
    fn limits_and_resources() {
        let c0 = Config::initial(&demo(), "alice");
        let (c1, s) = c0.apply(&patch(json!({"memory": {"web": "512M"}, "cpu": {"web": "250m/1"}})), "alice").unwrap();
        assert_eq!(s.describe("alice"), "alice changed limits for memory, cpu");
        assert_eq!(c1.resources("web"), Resources { cpu_millis: 250, memory_bytes: 512 << 20 });
        assert_eq!(c1.resources("worker"), Resources::default());
        assert_eq!(
            c1.limits("web"),
            Resources { cpu_millis: 1000, memory_bytes: 512 << 20 },
            "REQUEST/LIMIT: the limit"
        );
        assert_eq!(c1.limits("worker"), Resources::default(), "no limit set: none");
        assert!(c0.apply(&patch(json!({"memory": {"web": "lots"}})), "a").is_err());
    }

    #[test]
    fn healthchecks() {
        let c0 = Config::initial(&demo(), "alice");
        let body = json!({"healthcheck": {"web/cmd": {"readinessProbe": {"initialDelaySeconds": 1, "timeoutSeconds": 2,
            "periodSeconds": 1, "successThreshold": 1, "failureThreshold": 3, "httpGet": {"path": "/health", "port": 8080}}}}});
        let (c1, s) = c0.apply(&patch(body), "alice").unwrap();
        assert!(!s.is_empty());
        let p = c1.readiness_probe("web").unwrap();
        assert!(matches!(&p.action, ProbeAction::HttpGet(h) if h.path == "/health"));
        let json = serde_json::to_value(&c1).unwrap();
        assert_eq!(json["healthcheck"]["web/cmd"]["readinessProbe"]["httpGet"]["port"], 8080);
        let (c2, _) = c1.apply(&patch(json!({"healthcheck": {"web/cmd": {"readinessProbe": null}}})), "a").unwrap();
        assert!(c2.healthcheck.is_empty());
    }
}
