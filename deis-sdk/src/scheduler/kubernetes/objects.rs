//! The Kubernetes objects of an app: its namespace, a Service per process type that
//! serves, a Deployment per unit slot; and how a pod reads back as a [`Unit`].

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use deis_core::model::{AppName, Healthcheck, ProbeAction, ProcessType, Unit, UnitState};
use deis_core::scheduler::{AppSpec, Artifact};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, EnvVarSource, ExecAction, HTTPGetAction, HTTPHeader, HostPathVolumeSource,
    Namespace, ObjectFieldSelector, Pod, PodSpec, PodTemplateSpec, Probe, ResourceRequirements, Service, ServicePort,
    ServiceSpec, TCPSocketAction, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::quantity;
use crate::scheduler::slots::{Observed, SlotKey, SlotRecord};

/// Label on every object deis makes, value [`MANAGER`].
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Value of [`LABEL_MANAGED_BY`].
pub const MANAGER: &str = "deis";
/// Label holding the app.
pub const LABEL_APP: &str = "deis.io/app";
/// Label holding the process type.
pub const LABEL_TYPE: &str = "deis.io/type";
/// Label holding the unit's number in its type.
pub const LABEL_NUMBER: &str = "deis.io/number";
/// Label (of pods) holding the release.
pub const LABEL_RELEASE: &str = "deis.io/release";
/// Annotation holding the unit's instance.
pub const ANNOTATION_INSTANCE: &str = "deis.io/instance";
/// Annotation (of Deployments) holding the hash of what the unit runs with.
pub const ANNOTATION_HASH: &str = "deis.io/spec-hash";
/// The container's name in every unit pod.
pub const CONTAINER: &str = "unit";
/// Where a source build is mounted in its pod.
pub const APP_DIR: &str = "/app";
/// Label selector of everything deis makes.
pub fn managed_selector() -> String {
    format!("{LABEL_MANAGED_BY}={MANAGER}")
}

/// The namespace of an app: its name (app names are DNS labels).
pub fn namespace_of(app: &AppName) -> String {
    app.to_string()
}

/// The Deployment of a slot: `<type>-<n>`.
pub fn deployment_name(key: &SlotKey) -> String {
    format!("{}-{}", key.proc_type, key.number)
}

/// Settings that shape the objects.
#[derive(Debug, Clone)]
pub struct Shape {
    /// `PORT` of every unit and the container port of web units.
    pub port: u16,
    /// Image source builds run on.
    pub stack_image: String,
    /// Grace period of a stopping unit, in seconds.
    pub grace_seconds: i64,
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// The app's namespace.
pub fn namespace(app: &AppName) -> Namespace {
    let meta = ObjectMeta {
        name: Some(namespace_of(app)),
        labels: Some(labels(&[(LABEL_MANAGED_BY, MANAGER), (LABEL_APP, app)])),
        ..Default::default()
    };
    Namespace { metadata: meta, ..Default::default() }
}

/// The Service of a process type: port 80 to the units' `PORT`, for in-cluster callers.
pub fn service(app: &AppName, proc_type: &ProcessType, shape: &Shape) -> Service {
    let selector = labels(&[(LABEL_APP, app), (LABEL_TYPE, proc_type)]);
    Service {
        metadata: ObjectMeta {
            name: Some(proc_type.to_string()),
            namespace: Some(namespace_of(app)),
            labels: Some(labels(&[(LABEL_MANAGED_BY, MANAGER), (LABEL_APP, app), (LABEL_TYPE, proc_type)])),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            selector: Some(selector),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: 80,
                target_port: Some(IntOrString::Int(i32::from(shape.port))),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The probe's port: its own if set (non-zero), else the unit's `PORT`.
fn probe_port(own: u32, port: u16) -> IntOrString {
    IntOrString::Int(if own == 0 { i32::from(port) } else { i32::try_from(own).unwrap_or(i32::MAX) })
}

fn probe(check: &Healthcheck, port: u16) -> Probe {
    let mut p = Probe {
        initial_delay_seconds: Some(check.initial_delay_seconds as i32),
        timeout_seconds: Some(check.timeout_seconds.max(1) as i32),
        period_seconds: Some(check.period_seconds.max(1) as i32),
        success_threshold: Some(check.success_threshold.max(1) as i32),
        failure_threshold: Some(check.failure_threshold.max(1) as i32),
        ..Default::default()
    };
    match &check.action {
        ProbeAction::HttpGet(h) => {
            p.http_get = Some(HTTPGetAction {
                path: Some(h.path.clone()),
                port: probe_port(h.port, port),
                http_headers: (!h.http_headers.is_empty()).then(|| {
                    h.http_headers.iter().map(|x| HTTPHeader { name: x.name.clone(), value: x.value.clone() }).collect()
                }),
                ..Default::default()
            })
        }
        ProbeAction::TcpSocket(t) => {
            p.tcp_socket = Some(TCPSocketAction { port: probe_port(t.port, port), ..Default::default() })
        }
        ProbeAction::Exec(e) => p.exec = Some(ExecAction { command: Some(e.command.clone()) }),
    }
    p
}

/// Readiness of web units without a healthcheck: their port accepts connections.
fn port_open(port: u16) -> Probe {
    Probe {
        tcp_socket: Some(TCPSocketAction { port: IntOrString::Int(i32::from(port)), ..Default::default() }),
        period_seconds: Some(1),
        failure_threshold: Some(3),
        ..Default::default()
    }
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar { name: name.into(), value: Some(value.into()), ..Default::default() }
}

/// The Deployment of slot `key` running instance `record` of `spec`: one replica,
/// rolled new before old (`maxSurge` 1, `maxUnavailable` 0), cpu and memory requests
/// equal to the limits.
pub fn deployment(spec: &AppSpec, key: &SlotKey, record: &SlotRecord, shape: &Shape) -> Deployment {
    let app = &spec.app;
    let process = spec.processes.get(&key.proc_type);
    let number = key.number.to_string();
    let slot_labels =
        labels(&[(LABEL_MANAGED_BY, MANAGER), (LABEL_APP, app), (LABEL_TYPE, &key.proc_type), (LABEL_NUMBER, &number)]);
    let mut pod_labels = slot_labels.clone();
    pod_labels.insert(LABEL_RELEASE.into(), spec.release.to_string());
    let instance = record.instance.to_string();
    let unit = Unit::name_for(app, &key.proc_type, key.number);
    let mut vars: Vec<EnvVar> = spec.env.iter().map(|(k, v)| env(k, v.clone())).collect();
    vars.extend([
        env("PORT", shape.port.to_string()),
        env("DEIS_APP", app.to_string()),
        env("DEIS_RELEASE", spec.release.to_string()),
        env("DEIS_UNIT", unit),
        // The pod's own address, for apps that bind to it rather than to every address.
        EnvVar {
            name: "POD_IP".into(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector { field_path: "status.podIP".into(), ..Default::default() }),
                ..Default::default()
            }),
            ..Default::default()
        },
    ]);
    let mut container = Container { name: CONTAINER.into(), env: Some(vars), ..Default::default() };
    let mut volumes = None;
    match &spec.artifact {
        Artifact::Image { reference } => container.image = Some(reference.clone()),
        Artifact::Source { dir } => {
            // The build directory, mounted from the node: it must be there at the
            // same path (one node, or shared storage).
            container.image = Some(shape.stack_image.clone());
            container.working_dir = Some(APP_DIR.into());
            container.volume_mounts = Some(vec![VolumeMount {
                name: "build".into(),
                mount_path: APP_DIR.into(),
                read_only: Some(true),
                ..Default::default()
            }]);
            volumes = Some(vec![Volume {
                name: "build".into(),
                host_path: Some(HostPathVolumeSource {
                    path: dir.display().to_string(),
                    type_: Some("Directory".into()),
                }),
                ..Default::default()
            }]);
        }
    }
    if let Some(p) = process {
        if !p.command.trim().is_empty() {
            container.command = Some(vec!["/bin/sh".into(), "-c".into(), p.command.clone()]);
        }
        let mut list = BTreeMap::new();
        if p.resources.cpu_millis > 0 {
            list.insert("cpu".to_string(), Quantity(quantity::format_cpu(p.resources.cpu_millis)));
        }
        if p.resources.memory_bytes > 0 {
            list.insert("memory".to_string(), Quantity(quantity::format_bytes(p.resources.memory_bytes)));
        }
        if !list.is_empty() {
            container.resources =
                Some(ResourceRequirements { requests: Some(list.clone()), limits: Some(list), ..Default::default() });
        }
        let web = key.proc_type.as_str() == "web";
        container.readiness_probe = match &p.healthcheck {
            Some(h) => Some(probe(h, shape.port)),
            None if web => Some(port_open(shape.port)),
            None => None,
        };
        container.liveness_probe = p.liveness.as_ref().map(|h| probe(h, shape.port));
        if web {
            container.ports = Some(vec![ContainerPort {
                name: Some("http".into()),
                container_port: i32::from(shape.port),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]);
        }
    }
    let annotations = labels(&[(ANNOTATION_INSTANCE, &instance)]);
    let mut deployment_annotations = annotations.clone();
    deployment_annotations.insert(ANNOTATION_HASH.into(), record.hash.clone());
    Deployment {
        metadata: ObjectMeta {
            name: Some(deployment_name(key)),
            namespace: Some(namespace_of(app)),
            labels: Some(slot_labels.clone()),
            annotations: Some(deployment_annotations),
            ..Default::default()
        },
        spec: Some(DeploymentSpec {
            replicas: Some(1),
            selector: LabelSelector { match_labels: Some(slot_labels), ..Default::default() },
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::Int(1)),
                    max_unavailable: Some(IntOrString::Int(0)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(annotations),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    volumes,
                    node_selector: (!spec.selector.is_empty()).then(|| spec.selector.clone()),
                    restart_policy: Some("Always".into()),
                    termination_grace_period_seconds: Some(shape.grace_seconds),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The slot and record a Deployment of deis holds, None for anything else.
pub fn slot_of(d: &Deployment) -> Option<(SlotKey, SlotRecord)> {
    let labels = d.metadata.labels.as_ref()?;
    let annotations = d.metadata.annotations.as_ref()?;
    let proc_type = ProcessType::new(labels.get(LABEL_TYPE)?.as_str()).ok()?;
    let number = labels.get(LABEL_NUMBER)?.parse().ok()?;
    let record = SlotRecord {
        hash: annotations.get(ANNOTATION_HASH)?.clone(),
        instance: annotations.get(ANNOTATION_INSTANCE)?.parse().ok()?,
    };
    Some((SlotKey { proc_type, number }, record))
}

fn timestamp(t: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time) -> Option<deis_core::time::Timestamp> {
    t.0.to_string().parse().ok()
}

/// A pod of deis as the unit it runs; None for pods without deis' labels.
pub fn unit_of(pod: &Pod, app: &AppName, port: u16) -> Option<Observed> {
    let labels = pod.metadata.labels.as_ref()?;
    let proc_type = ProcessType::new(labels.get(LABEL_TYPE)?.as_str()).ok()?;
    let number: u32 = labels.get(LABEL_NUMBER)?.parse().ok()?;
    let release = labels.get(LABEL_RELEASE)?.parse().ok()?;
    let instance = pod.metadata.annotations.as_ref()?.get(ANNOTATION_INSTANCE)?.parse().ok()?;
    let status = pod.status.clone().unwrap_or_default();
    let container = status.container_statuses.as_ref().and_then(|c| c.iter().find(|c| c.name == CONTAINER)).cloned();
    let ready = status.conditions.as_ref().is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    let state = container.as_ref().and_then(|c| c.state.clone()).unwrap_or_default();
    let last = container.as_ref().and_then(|c| c.last_state.as_ref()).and_then(|s| s.terminated.as_ref());
    let reason = state.terminated.as_ref().or(last).map(|t| match t.reason.as_deref() {
        Some(r) if r != "Error" && r != "Completed" => format!("{r} (exit status {})", t.exit_code),
        _ => format!("exit status {}", t.exit_code),
    });
    let unit_state = if pod.metadata.deletion_timestamp.is_some() {
        UnitState::Down
    } else {
        match status.phase.as_deref() {
            Some("Failed") => UnitState::Error,
            Some("Succeeded") => UnitState::Down,
            _ if state.terminated.is_some() => UnitState::Crashed,
            _ if state.waiting.as_ref().is_some_and(|w| w.reason.as_deref() == Some("CrashLoopBackOff")) => {
                UnitState::Crashed
            }
            _ if state.running.is_some() && ready => UnitState::Up,
            _ if state.running.is_some() => UnitState::Created,
            _ => UnitState::Initialized,
        }
    };
    let address = status.pod_ip.as_deref().and_then(|ip| ip.parse::<IpAddr>().ok()).map(|ip| SocketAddr::new(ip, port));
    let unit = Unit {
        name: Unit::name_for(app, &proc_type, number),
        instance,
        app: app.clone(),
        proc_type,
        number,
        release,
        state: unit_state,
        address,
        node: pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default(),
        started: state.running.as_ref().and_then(|r| r.started_at.as_ref()).and_then(timestamp),
        restarts: container.as_ref().map_or(0, |c| c.restart_count.max(0) as u32),
        pid: None,
    };
    Some(Observed { unit, reason })
}
