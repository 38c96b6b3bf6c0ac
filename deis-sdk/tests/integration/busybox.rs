//! What the Docker and swarm suites share: the busybox sample app their harnesses run
//! (an httpd page naming the unit) and the wait for its web units to answer.

use std::time::Duration;

use deis_sdk::deis_core::model::limits::Resources;
use deis_sdk::deis_core::model::{AppName, UnitState};
use deis_sdk::deis_core::scheduler::{AppSpec, Artifact, Scheduler};
use deis_sdk::deis_core::testing::{app_name, sample_spec};
use deis_test_support::eventually;
use deis_test_support::http::Request;

/// The web process: busybox httpd on `$PORT` serving `<unit> <greeting>`.
pub const WEB: &str = "mkdir -p /tmp/www && echo \"$DEIS_UNIT $GREETING\" > /tmp/www/index.html \
    && exec httpd -f -p 127.0.0.1:$PORT -h /tmp/www";

/// `app` at `release` from the busybox `image`: one web ([`WEB`]) and one worker unit,
/// each requesting 100 millicores and 32 MiB.
pub fn sample_app(image: &str, app: &AppName, release: u64) -> AppSpec {
    let artifact = Artifact::Image { reference: image.to_string() };
    let requests = Resources { cpu_millis: 100, memory_bytes: 32 << 20 };
    sample_spec(app, release, artifact, requests, &[("web", WEB, 1), ("worker", "exec sleep 3600", 1)])
}

/// [`sample_app`] `app` at v1 with web units only: `web` of them requesting `cpu`
/// millicores each, on nodes carrying the labels `tags`.
pub fn web_only(image: &str, app: &str, web: u32, cpu: u64, tags: &[(&str, &str)]) -> AppSpec {
    let mut spec = sample_app(image, &app_name(app), 1);
    spec.processes.remove("worker");
    let p = spec.processes.get_mut("web").expect("the sample app has a web process");
    p.count = web;
    p.resources.cpu_millis = cpu;
    spec.selector = tags.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    spec
}

/// The up units of `app` as (name, node), once exactly `count` are up and every web
/// unit answers with its own name.
pub async fn up_units(s: &dyn Scheduler, app: &str, count: usize) -> Vec<(String, String)> {
    let app = app_name(app);
    eventually(Duration::from_secs(60), "units up and answering", || async {
        let units = s.units(&app).await.map_err(|e| e.to_string())?;
        let up: Vec<_> = units.iter().filter(|u| u.state == UnitState::Up).collect();
        if up.len() != count || units.len() != count {
            return Err(format!("{units:?}"));
        }
        for u in up.iter().filter(|u| u.proc_type == "web") {
            let addr = u.address.ok_or("no address")?;
            let r =
                Request::get("/").timeout(Duration::from_secs(5)).send_async(addr).await.map_err(|e| e.to_string())?;
            if !r.body.contains(&u.name) {
                return Err(format!("{} answered {:?}", u.name, r.body));
            }
        }
        Ok(up.iter().map(|u| (u.name.clone(), u.node.clone())).collect())
    })
    .await
}
