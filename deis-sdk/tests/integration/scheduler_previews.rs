//! The Kubernetes and Marathon scheduler previews against fake API servers faithful to
//! what they use (no cluster can run here): the `Scheduler` conformance suite, and what
//! each sends.

#[path = "previews/kube.rs"]
mod fake_kube;
#[path = "previews/marathon.rs"]
mod fake_marathon;
#[path = "previews/runtime.rs"]
mod runtime;

use std::collections::HashMap;
use std::sync::Arc;

use deis_core::testing::{SourceAppHarness, SpecHarness, scheduler_suite, tty_suite};
use deis_sdk::scheduler::Scheduler;
use deis_sdk::scheduler::kubernetes::{KubernetesScheduler, KubernetesSchedulerConfig};
use deis_sdk::scheduler::marathon::{MarathonScheduler, MarathonSchedulerConfig};
use deis_sdk::scheduler::{Capacity, DEFAULT_STACK_IMAGE};

/// Makes the suite's sample web app bind the pod's own address: pods share loopback
/// here, each with an address of its own, all on port 5000.
fn bind_pod_ip(harness: &SourceAppHarness) {
    let path = harness.dir().join("web.py");
    let web = std::fs::read_to_string(&path).unwrap();
    let bound = web.replace(r#"(("127.0.0.1","#, r#"((os.environ["POD_IP"],"#);
    assert_ne!(bound, web, "the sample app binds 127.0.0.1 no more: update this test");
    std::fs::write(path, bound).unwrap();
}

fn stack_images() -> HashMap<String, std::path::PathBuf> {
    HashMap::from([(DEFAULT_STACK_IMAGE.to_string(), std::env::temp_dir())])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kubernetes_scheduler_passes_the_conformance_suite() {
    let fake = fake_kube::FakeKube::start(
        &[("node-1", "2", "4Gi", &[]), ("node-2", "2", "4Gi", &[("disk", "ssd")])],
        stack_images(),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = fake.kubeconfig(dir.path());
    let harness = SourceAppHarness::new();
    bind_pod_ip(&harness);
    scheduler_suite(
        async || {
            let mut config = KubernetesSchedulerConfig::new(vec![kubeconfig.clone()]);
            config.grace = std::time::Duration::from_secs(2);
            KubernetesScheduler::connect(config).await.unwrap() as Arc<dyn Scheduler>
        },
        &harness,
    )
    .await;
    // What a cluster was asked: a namespace per app, a Deployment per slot, a Service
    // for web; every answer through the token of the kubeconfig.
    let requests = fake.requests();
    for wanted in [
        "POST /api/v1/namespaces?",
        "POST /api/v1/namespaces/suite-a/services?",
        "POST /apis/apps/v1/namespaces/suite-a/deployments?",
        "PUT /apis/apps/v1/namespaces/suite-a/deployments/web-1?",
        "DELETE /apis/apps/v1/namespaces/suite-a/deployments/web-3?",
        "DELETE /api/v1/namespaces/suite-a?",
    ] {
        assert!(requests.iter().any(|r| r.starts_with(wanted)), "no {wanted}... among {} requests", requests.len());
    }
    assert!(!fake.has_namespace("suite-a"), "the app's namespace is gone after remove");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_objects_carry_requests_limits_probes_and_tags() {
    let fake = fake_kube::FakeKube::start(&[("node-1", "2", "4Gi", &[("disk", "ssd")])], stack_images()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = KubernetesSchedulerConfig::new(vec![fake.kubeconfig(dir.path())]);
    let s = KubernetesScheduler::connect(config).await.unwrap();
    let harness = SourceAppHarness::new();
    let app = deis_core::testing::app_name("objects");
    let mut spec = harness.spec(&app, 1, &[("web", "exec sleep 100", 1)]);
    spec.selector.insert("disk".into(), "ssd".into());
    s.apply(spec.clone()).await.unwrap();
    let d = fake.deployment("objects", "web-1").expect("a deployment per slot, named <type>-<n>");
    let pod = d.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    let c = &pod.containers[0];
    let r = c.resources.as_ref().unwrap();
    assert_eq!(r.requests.as_ref().unwrap()["cpu"].0, "10m");
    assert_eq!(r.limits.as_ref().unwrap()["memory"].0, (16u64 << 20).to_string());
    assert!(c.readiness_probe.as_ref().unwrap().tcp_socket.is_some(), "web is ready when its port is open");
    assert_eq!(pod.node_selector.as_ref().unwrap()["disk"], "ssd");
    let strategy = d.spec.as_ref().unwrap().strategy.as_ref().unwrap().rolling_update.clone().unwrap();
    assert_eq!(format!("{:?}/{:?}", strategy.max_surge, strategy.max_unavailable), "Some(Int(1))/Some(Int(0))");
    let svc = fake.service("objects", "web").expect("a service for web");
    assert_eq!(svc.spec.unwrap().selector.unwrap()["deis.io/type"], "web");
    // A tag no node carries is refused, naming what nodes carry.
    spec.selector.insert("disk".into(), "nvme".into());
    let err = s.apply(spec).await.unwrap_err().to_string();
    assert!(err.contains("disk=nvme") && err.contains("ssd"), "{err}");
    s.remove(&app).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn marathon_scheduler_passes_the_conformance_suite() {
    let fake = fake_marathon::FakeMarathon::start(HashMap::new()).await;
    let harness = SourceAppHarness::new();
    let url = format!("http://{}", fake.addr);
    scheduler_suite(
        async || {
            let capacity = Capacity { cpu_millis: 4000, memory_bytes: 8 << 30 };
            MarathonScheduler::connect(MarathonSchedulerConfig::new(url.clone(), capacity)).await.unwrap()
                as Arc<dyn Scheduler>
        },
        &harness,
    )
    .await;
    let requests = fake.requests();
    for wanted in [
        "PUT /v2/apps/deis/suite-a/web-1?force=true",
        "DELETE /v2/apps/deis/suite-a/web-3?force=true",
        "GET /v2/apps?id=",
    ] {
        assert!(requests.iter().any(|r| r.starts_with(wanted)), "no {wanted}... among {} requests", requests.len());
    }
    let def = fake.definition("/deis/suite-roll/web-1").expect("kept definitions");
    assert_eq!(def["upgradeStrategy"], serde_json::json!({"minimumHealthCapacity": 1.0, "maximumOverCapacity": 1.0}));
    assert_eq!(def["healthChecks"][0]["protocol"], "MESOS_TCP");
    assert_eq!(def["cpus"], 0.01);
    assert_eq!(def["mem"], 16.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kubernetes_exec_passes_the_tty_conformance_suite() {
    let fake = fake_kube::FakeKube::start(&[("node-1", "4", "8Gi", &[])], stack_images()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = KubernetesSchedulerConfig::new(vec![fake.kubeconfig(dir.path())]);
    let scheduler = KubernetesScheduler::connect(config.clone()).await.unwrap();
    // A running web unit of every app the suite opens sessions in.
    let harness = SourceAppHarness::new();
    let apps = [
        "suite-env",
        "suite-exit",
        "suite-signal",
        "suite-cat",
        "suite-streams",
        "suite-tty",
        "suite-resize",
        "suite-eof",
        "suite-drop",
        "suite-many",
        "suite-slow",
    ];
    for app in apps {
        let spec = harness.spec(&deis_core::testing::app_name(app), 1, &[("web", "exec sleep 3600", 1)]);
        scheduler.apply(spec).await.unwrap();
    }
    for app in apps {
        deis_test_support::eventually(std::time::Duration::from_secs(30), "a running unit", || {
            let s = scheduler.clone();
            async move {
                let units = s.units(&deis_core::testing::app_name(app)).await.unwrap();
                // Running; not ready, as `sleep` opens no port.
                units.iter().any(|u| u.state == deis_core::model::UnitState::Created).then_some(())
            }
        })
        .await;
    }
    let client = deis_sdk::scheduler::kubernetes::client(&config).await.unwrap();
    let sessions = SpecHarness::new(deis_sdk::scheduler::Artifact::Source { dir: harness.dir().to_path_buf() });
    tty_suite(
        async || {
            Arc::new(deis_sdk::tty::kubernetes::KubernetesTtyBroker::new(client.clone()))
                as Arc<dyn deis_core::tty::TtyBroker>
        },
        &sessions,
    )
    .await;
    assert!(
        fake.requests().iter().any(|r| r.starts_with("GET /api/v1/namespaces/suite-cat/pods/web-1-")),
        "exec went to a unit pod"
    );
    for app in apps {
        scheduler.remove(&deis_core::testing::app_name(app)).await.unwrap();
    }
}
