//! The swarm service of one process type of an app: its name, labels, task template
//! (container, resources, placement constraints, healthcheck, restart policy) and
//! rolling update settings.

use std::collections::HashMap;
use std::ops::RangeInclusive;
use std::time::Duration;

use bollard::models::{
    HealthConfig, Limit, NetworkAttachmentConfig, ResourceObject, ServiceSpec, ServiceSpecMode,
    ServiceSpecModeReplicated, ServiceSpecUpdateConfig, ServiceSpecUpdateConfigFailureActionEnum,
    ServiceSpecUpdateConfigOrderEnum, TaskSpec, TaskSpecContainerSpec, TaskSpecLogDriver, TaskSpecPlacement,
    TaskSpecResources, TaskSpecRestartPolicy, TaskSpecRestartPolicyConditionEnum,
};
use deis_core::model::limits::Resources;
use deis_core::model::{AppName, Healthcheck, ProbeAction, ProcessType};
use deis_core::scheduler::placement::{Plane, Planes};
use deis_core::scheduler::{AppSpec, Artifact, ProcessSpec, SchedulerError};
use sha2::{Digest, Sha256};

use crate::tty::docker::{LABEL_APP, LABEL_TYPE};

/// Label of a service and its containers: the release (`v<N>`).
pub const LABEL_RELEASE: &str = "deis.release";
/// Service label: digest of what the process type runs (release, artifact, command,
/// environment, resources, healthchecks, tags); the same digest means only the count
/// may have changed.
pub const LABEL_SPEC: &str = "deis.spec";
/// Label of a service and its containers: the generation of its task template, bumped
/// by every change that replaces units (a new spec digest, a restart).
pub const LABEL_GENERATION: &str = "deis.generation";
/// Service label: the JSON of the units' container healthcheck. The engine reports it
/// under `Healthcheck` while bollard reads `HealthCheck`, so a spec read back lacks it;
/// [`restore_as_sent`] puts it back before the spec is sent again.
pub const LABEL_HEALTHCHECK: &str = "deis.healthcheck";
/// Label of a service and its containers: the port block its units listen in.
pub const LABEL_PORT_BLOCK: &str = "deis.port-block";
/// Node label naming the planes a node serves (`control`, `data`, `router`, joined with
/// `+` since swarm constraints can't hold commas, e.g. `control+router`; default
/// `data`). Only data-plane nodes get app units.
pub const LABEL_PLANES: &str = "deis.planes";
/// Most units of one process type: a unit's port is its block followed by its two-digit
/// slot number.
pub const MAX_UNITS_PER_TYPE: u32 = 99;

/// The swarm service name of `app`'s `proc_type` (`<app>_<type>`; neither contains
/// `_`), hashed when longer than the 63 characters swarm allows.
pub fn service_name(app: &AppName, proc_type: &ProcessType) -> String {
    let name = format!("{app}_{proc_type}");
    if name.len() <= 63 {
        return name;
    }
    let digest = Sha256::digest(name.as_bytes());
    format!("deis_{}", &hex::encode(digest)[..32])
}

/// The digest of what `p` of `spec` runs, without its count.
pub fn spec_digest(spec: &AppSpec, p: &ProcessSpec) -> String {
    let inputs = serde_json::json!({
        "release": spec.release,
        "artifact": spec.artifact,
        "env": spec.env,
        "command": p.command,
        "resources": p.resources,
        "limits": p.limits,
        "healthcheck": p.healthcheck,
        "liveness": p.liveness,
        "selector": spec.selector,
    });
    hex::encode(&Sha256::digest(inputs.to_string().as_bytes())[..16])
}

/// The ports units are given: block `b` holds ports `b*100+1 ..= b*100+99`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortBlocks(RangeInclusive<u16>);

impl PortBlocks {
    /// The blocks wholly inside `ports`; an error when there are fewer than two (a
    /// rolling update needs the old block and the new one).
    pub fn new(ports: RangeInclusive<u16>) -> Result<Self, SchedulerError> {
        let first = ports.start().div_ceil(100);
        let last = (ports.end().saturating_add(1) / 100).saturating_sub(1);
        // Ports above 65535 would need a sixth digit.
        let last = last.min(654);
        if first > last || last - first < 1 {
            return Err(SchedulerError::Invalid(format!(
                "the swarm port range {}-{} holds fewer than two blocks of 100 ports: widen it",
                ports.start(),
                ports.end()
            )));
        }
        Ok(Self(first..=last))
    }

    /// The block after `current` (wrapping) that is not in `used`.
    pub fn next_free(&self, current: Option<u16>, used: &[u16]) -> Result<u16, SchedulerError> {
        let (first, last) = (*self.0.start(), *self.0.end());
        let start = current.map_or(first, |c| if c >= last || c < first { first } else { c + 1 });
        let n = last - first + 1;
        (0..n).map(|i| first + (start - first + i) % n).find(|b| !used.contains(b) && Some(*b) != current).ok_or_else(
            || {
                SchedulerError::Capacity(format!(
                    "every port block of the swarm port range ({}00-{}99) is in use: widen the range or remove apps",
                    first, last
                ))
            },
        )
    }

    /// The port of slot `slot` in block `block`.
    pub fn port(block: u16, slot: u32) -> Option<u16> {
        (1..=MAX_UNITS_PER_TYPE).contains(&slot).then(|| block * 100 + slot as u16)
    }
}

/// What a service is made from besides the spec.
#[derive(Debug, Clone)]
pub struct Template {
    /// Generation of the task template.
    pub generation: u64,
    /// Port block of the units.
    pub block: u16,
    /// How long a unit may take to stop.
    pub stop_timeout: Duration,
    /// How long a unit may take to pass its first healthcheck.
    pub ready_timeout: Duration,
    /// Pause before a crashed unit starts again.
    pub restart_delay: Duration,
    /// Units' output to this syslog address, if set.
    pub syslog_address: Option<String>,
    /// The app's ingest token, put in the units' syslog tag.
    pub log_token: Option<String>,
}

fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// `PORT` for the unit in a task's slot: the block followed by the slot, two digits
/// (swarm expands `{{.Task.Slot}}`, a string, per task).
fn port_template(block: u16) -> String {
    format!("{block}{{{{if eq (len .Task.Slot) 1}}}}0{{{{end}}}}{{{{.Task.Slot}}}}")
}

/// The container healthcheck swarm waits for before a unit counts as running (and,
/// with start-first updates, before the unit it replaces is stopped): the readiness
/// probe, else the liveness probe, else for `web` an open `PORT`. Checks run inside the
/// container, with whichever of `nc -z`, `python3`, `bash`, `curl` or `wget` the image
/// has (an open port without `nc -z`, `python3` or `bash`: an HTTP answer, any status
/// for `curl`, a 2xx for `wget`).
fn healthcheck(proc_type: &ProcessType, p: &ProcessSpec, ready_timeout: Duration) -> Option<HealthConfig> {
    let probe: Option<&Healthcheck> = p.healthcheck.as_ref().or(p.liveness.as_ref());
    let tcp = |port: &str| {
        format!(
            "nc -z 127.0.0.1 {port} 2>/dev/null \
             || python3 -c \"import socket; socket.create_connection(('127.0.0.1', {port}), 2)\" 2>/dev/null \
             || bash -c '</dev/tcp/127.0.0.1/{port}' 2>/dev/null \
             || curl -s -o /dev/null http://127.0.0.1:{port}/ 2>/dev/null \
             || wget -q -O /dev/null http://127.0.0.1:{port}/ 2>/dev/null"
        )
    };
    let port_of = |p: u32| if p == 0 { "$PORT".to_string() } else { p.to_string() };
    let test = match probe.map(|h| &h.action) {
        Some(ProbeAction::Exec(e)) if e.command.len() == 1 => vec!["CMD-SHELL".to_string(), e.command[0].clone()],
        Some(ProbeAction::Exec(e)) => std::iter::once("CMD".to_string()).chain(e.command.iter().cloned()).collect(),
        Some(ProbeAction::TcpSocket(t)) => vec!["CMD-SHELL".into(), tcp(&port_of(t.port))],
        Some(ProbeAction::HttpGet(h)) => {
            let url = format!("http://127.0.0.1:{}{}", port_of(h.port), h.path);
            vec![
                "CMD-SHELL".into(),
                format!(
                    "wget -q -O /dev/null '{url}' 2>/dev/null || curl -fsS -o /dev/null '{url}' 2>/dev/null \
                     || python3 -c \"import urllib.request; urllib.request.urlopen('{url}', timeout=2)\" 2>/dev/null"
                ),
            ]
        }
        None if proc_type.as_str() == "web" => vec!["CMD-SHELL".into(), tcp("$PORT")],
        None => return None,
    };
    let (interval, timeout, retries) = match probe {
        Some(h) => (
            Duration::from_secs(u64::from(h.period_seconds.clamp(1, 3600))),
            Duration::from_secs(u64::from(h.timeout_seconds.clamp(1, 3600))),
            i64::from(h.failure_threshold.max(1)),
        ),
        None => (Duration::from_secs(1), Duration::from_secs(2), 3),
    };
    Some(HealthConfig {
        test: Some(test),
        // The first check runs one interval after the start: keep it short while the
        // unit starts, swarm has no faster start interval before API 1.44.
        interval: Some(nanos(interval.min(Duration::from_secs(1)))),
        timeout: Some(nanos(timeout)),
        retries: Some(retries),
        start_period: Some(nanos(ready_timeout)),
        start_interval: None,
    })
}

/// Placement constraints: data-plane nodes only (no `deis.planes` label naming only
/// other planes) and the app's tags as node labels.
fn constraints(spec: &AppSpec) -> Vec<String> {
    let mut out = Vec::new();
    let others = [Plane::Control, Plane::Router];
    // Every spelling of a plane set without `data`.
    let combos: [&[Plane]; 4] = [&others[..1], &others[1..], &others[..], &[Plane::Router, Plane::Control]];
    for combo in combos {
        let joined: Vec<&str> = combo.iter().map(|p| p.as_str()).collect();
        out.push(format!("node.labels.{LABEL_PLANES}!={}", joined.join("+")));
    }
    for (k, v) in &spec.selector {
        out.push(format!("node.labels.{k}=={v}"));
    }
    out
}

/// The planes of a node from its labels (data when unlabelled or unreadable).
pub fn node_planes(labels: &HashMap<String, String>) -> Planes {
    labels.get(LABEL_PLANES).and_then(|v| v.replace('+', ",").parse().ok()).unwrap_or(Planes::DATA)
}

/// Puts back into `spec`, a spec read from the engine, what reading it loses: the
/// healthcheck (from [`LABEL_HEALTHCHECK`]) and an unset DNS config (read back as an
/// empty one). Sent again as read, the task template would differ from the running
/// tasks' and swarm would replace them all.
pub fn restore_as_sent(spec: &mut ServiceSpec) {
    let saved = spec.labels.as_ref().and_then(|l| l.get(LABEL_HEALTHCHECK)).and_then(|h| serde_json::from_str(h).ok());
    if let Some(c) = spec.task_template.as_mut().and_then(|t| t.container_spec.as_mut()) {
        c.health_check = saved;
        if c.dns_config.as_ref().is_some_and(|d| d.nameservers.is_none() && d.search.is_none() && d.options.is_none()) {
            c.dns_config = None;
        }
    }
}

/// The syslog log driver of `app`'s `proc_type` units, when the template has a syslog
/// address: RFC 5424, tagged `<app>.<type>.<slot>` (the slot read from the container's
/// name, `<service>.<slot>.<task id>`, when the engine makes the tag: swarm expands no
/// template in log options), then `/` and the app's ingest token, as the Docker backend
/// tags its containers; the listener takes an app's lines only with its token.
pub fn log_driver(app: &str, proc_type: &str, t: &Template) -> Option<TaskSpecLogDriver> {
    let addr = t.syslog_address.as_ref()?;
    let mut tag = format!("{app}.{proc_type}.{{{{index (split .Name \".\") 1}}}}");
    if let Some(token) = &t.log_token {
        tag = format!("{tag}/{token}");
    }
    Some(TaskSpecLogDriver {
        name: Some("syslog".into()),
        options: Some(HashMap::from([
            ("syslog-address".to_string(), addr.clone()),
            ("syslog-format".to_string(), "rfc5424micro".to_string()),
            ("tag".to_string(), tag),
        ])),
    })
}

/// The service spec of `proc_type` of `spec`, on image `image`.
pub fn service_spec(spec: &AppSpec, proc_type: &ProcessType, image: &str, digest: &str, t: &Template) -> ServiceSpec {
    let p = &spec.processes[proc_type];
    let app = spec.app.as_str();
    let release = format!("v{}", spec.release);
    let mut env: Vec<String> = spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    env.push(format!("PORT={}", port_template(t.block)));
    env.push(format!("DEIS_APP={app}"));
    env.push(format!("DEIS_RELEASE={release}"));
    env.push(format!("DEIS_UNIT={app}.{proc_type}.{{{{.Task.Slot}}}}"));
    let labels = HashMap::from([
        (LABEL_APP.to_string(), app.to_string()),
        (LABEL_TYPE.to_string(), proc_type.to_string()),
        (LABEL_RELEASE.to_string(), release),
        (LABEL_GENERATION.to_string(), t.generation.to_string()),
        (LABEL_PORT_BLOCK.to_string(), t.block.to_string()),
    ]);
    let mut service_labels = labels.clone();
    service_labels.insert(LABEL_SPEC.to_string(), digest.to_string());
    let health_check = healthcheck(proc_type, p, t.ready_timeout);
    if let Some(h) = &health_check {
        service_labels.insert(LABEL_HEALTHCHECK.to_string(), serde_json::to_string(h).unwrap_or_default());
    }
    let command = (!p.command.trim().is_empty()).then(|| vec!["/bin/sh".to_string(), "-c".into(), p.command.clone()]);
    let cpu = |r: Resources| (r.cpu_millis > 0).then(|| i64::try_from(r.cpu_millis * 1_000_000).unwrap_or(i64::MAX));
    let memory = |r: Resources| (r.memory_bytes > 0).then(|| i64::try_from(r.memory_bytes).unwrap_or(i64::MAX));
    let (requests, limits) = (p.resources, p.limits);
    let dir = matches!(spec.artifact, Artifact::Source { .. }).then(|| super::APP_DIR.to_string());
    let log_driver = log_driver(app, proc_type.as_str(), t);
    ServiceSpec {
        name: Some(service_name(&spec.app, proc_type)),
        labels: Some(service_labels),
        task_template: Some(TaskSpec {
            container_spec: Some(TaskSpecContainerSpec {
                image: Some(image.to_string()),
                labels: Some(labels),
                command,
                env: Some(env),
                dir,
                // An init as PID 1 passes SIGTERM on to the unit's process.
                init: Some(true),
                stop_grace_period: Some(nanos(t.stop_timeout)),
                health_check,
                ..Default::default()
            }),
            resources: Some(TaskSpecResources {
                limits: Some(Limit { nano_cpus: cpu(limits), memory_bytes: memory(limits), pids: None }),
                reservations: Some(ResourceObject {
                    nano_cpus: cpu(requests),
                    memory_bytes: memory(requests),
                    generic_resources: None,
                }),
                ..Default::default()
            }),
            restart_policy: Some(TaskSpecRestartPolicy {
                condition: Some(TaskSpecRestartPolicyConditionEnum::ANY),
                delay: Some(nanos(t.restart_delay)),
                max_attempts: Some(0),
                window: Some(0),
            }),
            placement: Some(TaskSpecPlacement { constraints: Some(constraints(spec)), ..Default::default() }),
            // Host networking: the unit listens on its PORT on the node, as with the
            // local and Docker backends; the router reaches it at the node's address.
            networks: Some(vec![NetworkAttachmentConfig { target: Some("host".into()), ..Default::default() }]),
            log_driver,
            ..Default::default()
        }),
        mode: Some(ServiceSpecMode {
            replicated: Some(ServiceSpecModeReplicated { replicas: Some(i64::from(p.count)) }),
            ..Default::default()
        }),
        update_config: Some(ServiceSpecUpdateConfig {
            parallelism: Some(1),
            delay: Some(0),
            failure_action: Some(ServiceSpecUpdateConfigFailureActionEnum::CONTINUE),
            monitor: Some(nanos(Duration::from_secs(1))),
            max_failure_ratio: Some(1.0),
            order: Some(ServiceSpecUpdateConfigOrderEnum::START_FIRST),
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn spec() -> AppSpec {
        let web = ProcessSpec {
            command: "exec python3 web.py".into(),
            count: 2,
            resources: Resources { cpu_millis: 250, memory_bytes: 64 << 20 },
            limits: Resources { cpu_millis: 500, memory_bytes: 64 << 20 },
            healthcheck: None,
            liveness: None,
        };
        AppSpec {
            app: AppName::new("hello").unwrap(),
            release: 3,
            artifact: Artifact::Image { reference: "hello:v3".into() },
            env: BTreeMap::from([("GREETING".to_string(), "hi".to_string())]),
            processes: BTreeMap::from([(ProcessType::new("web").unwrap(), web)]),
            selector: BTreeMap::from([("disk".to_string(), "ssd".to_string())]),
            identity: None,
            pull_credentials: None,
        }
    }

    fn template(generation: u64, block: u16) -> Template {
        Template {
            generation,
            block,
            stop_timeout: Duration::from_secs(10),
            ready_timeout: Duration::from_secs(60),
            restart_delay: Duration::from_secs(1),
            syslog_address: None,
            log_token: None,
        }
    }

    /// What the engine answers for a spec it was sent: the healthcheck under
    /// `Healthcheck`, an empty DNS config.
    fn as_the_engine_reports(sent: &ServiceSpec) -> ServiceSpec {
        let mut json = serde_json::to_value(sent).unwrap();
        let c = &mut json["TaskTemplate"]["ContainerSpec"];
        let health = c.as_object_mut().unwrap().remove("HealthCheck").unwrap();
        c["Healthcheck"] = health;
        c["DNSConfig"] = serde_json::json!({});
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn a_spec_read_back_is_restored_to_what_was_sent() {
        let web = ProcessType::new("web").unwrap();
        let sent = service_spec(&spec(), &web, "hello:v3", "d1", &template(1, 120));
        assert!(sent.task_template.as_ref().unwrap().container_spec.as_ref().unwrap().health_check.is_some());
        let mut read = as_the_engine_reports(&sent);
        assert_ne!(read, sent, "bollard reads the engine's answer as sent: the label is not needed");
        restore_as_sent(&mut read);
        assert_eq!(read, sent);
    }

    #[test]
    fn a_service_per_type_with_resources_constraints_and_start_first_updates() {
        let spec = spec();
        let web = ProcessType::new("web").unwrap();
        let t = template(4, 123);
        let s = service_spec(&spec, &web, "hello:v3", "d1", &t);
        assert_eq!(s.name.as_deref(), Some("hello_web"));
        let task = s.task_template.unwrap();
        let c = task.container_spec.unwrap();
        let env = c.env.unwrap();
        assert!(env.contains(&"PORT=123{{if eq (len .Task.Slot) 1}}0{{end}}{{.Task.Slot}}".to_string()), "{env:?}");
        assert!(env.contains(&"DEIS_UNIT=hello.web.{{.Task.Slot}}".to_string()));
        assert!(env.contains(&"GREETING=hi".to_string()));
        assert_eq!(c.labels.unwrap()[LABEL_GENERATION], "4");
        assert!(c.health_check.unwrap().test.unwrap()[1].contains("nc -z 127.0.0.1 $PORT"));
        let r = task.resources.unwrap();
        assert_eq!(r.reservations.unwrap().nano_cpus, Some(250_000_000));
        assert_eq!(r.limits.unwrap().memory_bytes, Some(64 << 20));
        let constraints = task.placement.unwrap().constraints.unwrap();
        assert!(constraints.contains(&"node.labels.disk==ssd".to_string()));
        assert!(constraints.contains(&"node.labels.deis.planes!=control".to_string()));
        assert!(constraints.contains(&"node.labels.deis.planes!=router+control".to_string()));
        let planes = node_planes(&HashMap::from([(LABEL_PLANES.to_string(), "control+router".to_string())]));
        assert!(!planes.contains(Plane::Data) && planes.contains(Plane::Router));
        let u = s.update_config.unwrap();
        assert_eq!(u.order, Some(ServiceSpecUpdateConfigOrderEnum::START_FIRST));
        assert_eq!(u.parallelism, Some(1));
        assert_eq!(s.mode.unwrap().replicated.unwrap().replicas, Some(2));
    }

    #[test]
    fn units_log_through_syslog_tagged_with_their_unit_and_the_apps_token() {
        let web = ProcessType::new("web").unwrap();
        let mut t = template(1, 120);
        let task = |t: &Template| service_spec(&spec(), &web, "hello:v3", "d1", t).task_template.unwrap();
        assert_eq!(task(&t).log_driver, None, "no syslog address, the engine's default driver");
        t.syslog_address = Some("tcp://127.0.0.1:5514".into());
        t.log_token = Some("t0k".into());
        let driver = task(&t).log_driver.unwrap();
        assert_eq!(driver.name.as_deref(), Some("syslog"));
        let options = driver.options.unwrap();
        assert_eq!(options["tag"], r#"hello.web.{{index (split .Name ".") 1}}/t0k"#);
        assert_eq!(options["syslog-address"], "tcp://127.0.0.1:5514");
        assert_eq!(options["syslog-format"], "rfc5424micro");
    }

    #[test]
    fn digests_ignore_the_count_only() {
        let mut a = spec();
        let web = ProcessType::new("web").unwrap();
        let d = spec_digest(&a, &a.processes[&web]);
        a.processes.get_mut(&web).unwrap().count = 5;
        assert_eq!(spec_digest(&a, &a.processes[&web]), d);
        a.release = 4;
        assert_ne!(spec_digest(&a, &a.processes[&web]), d);
    }

    #[test]
    fn port_blocks_rotate_over_free_blocks() {
        let b = PortBlocks::new(10000..=10399).unwrap();
        assert_eq!(b.next_free(None, &[]).unwrap(), 100);
        assert_eq!(b.next_free(Some(100), &[101]).unwrap(), 102);
        assert_eq!(b.next_free(Some(103), &[]).unwrap(), 100);
        assert!(b.next_free(Some(100), &[101, 102, 103]).is_err());
        assert_eq!(PortBlocks::port(123, 7), Some(12307));
        assert_eq!(PortBlocks::port(123, 100), None);
        assert!(PortBlocks::new(10000..=10150).is_err());
        let names = service_name(&AppName::new("a".repeat(60)).unwrap(), &ProcessType::new("web").unwrap());
        assert!(names.starts_with("deis_") && names.len() <= 63);
    }
}
