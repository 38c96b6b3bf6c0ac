//! Telemetry end to end: a real deisd under load, scraped by a real Prometheus, pushing
//! to a real InfluxDB, collectd's StatsD plugin and a webhook listener; `deis metrics`
//! and `deis ps` show the figures; who may see what.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::mpsc;

use deis_e2e::{Cli, Deisd, Load, T, deploy_hello};
use deis_test_support::http::Request;
use deis_test_support::metrics::{CollectdStatsd, InfluxServer, PrometheusServer, Target};
use deis_test_support::{Service, skip_without, wait_for};

/// A plain HTTP listener taking POSTs (answering 204) and handing their bodies over.
fn webhook_listener() -> (std::net::SocketAddr, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut conn = conn;
                loop {
                    let mut len = 0usize;
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    loop {
                        line.clear();
                        reader.read_line(&mut line).unwrap();
                        if line == "\r\n" {
                            break;
                        }
                        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap();
                        }
                    }
                    let mut body = vec![0; len];
                    reader.read_exact(&mut body).unwrap();
                    let _ = tx.send(String::from_utf8_lossy(&body).into_owned());
                    conn.write_all(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n").unwrap();
                }
            });
        }
    });
    (addr, rx)
}

fn metrics_text(d: &Deisd, token: &str, accept: Option<&str>) -> deis_test_support::http::Response {
    let mut r = Request::get("/metrics").header("Authorization", &format!("token {token}"));
    if let Some(a) = accept {
        r = r.header("Accept", a);
    }
    r.send(d.api).unwrap()
}

/// The value of the first sample line starting with `prefix`.
fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines().find(|l| l.starts_with(prefix))?.rsplit(' ').next()?.parse().ok()
}

#[test]
fn collectors_reach_prometheus_influxdb_statsd_a_webhook_and_the_cli() {
    if skip_without("promtool", "prometheus") {
        return;
    }
    let (Some(influx), Some(statsd)) = (InfluxServer::start(), CollectdStatsd::start()) else { return };
    influx.query("", "CREATE DATABASE deis");
    let (hook, bodies) = webhook_listener();
    let sinks = [
        format!("statsd://{}", statsd.addr()),
        format!("influxdb://{}/deis", influx.addr()),
        format!("webhook+http://{hook}/hook"),
    ];
    let mut args = vec!["--telemetry-interval", "1s"];
    for s in &sinks {
        args.extend(["--telemetry-sink", s.as_str()]);
    }
    let d = Deisd::start_with(&args);
    let cli = d.cli();
    cli.register(&d, "admin");
    let token = cli.token();
    let _dir = deploy_hello(&d, &cli, "hello");

    // Load through the router: the counters move.
    let before =
        sample(&metrics_text(&d, &token, None).body, "deis_router_requests_total{app=\"hello\",class=\"2xx\"}")
            .unwrap_or(0.0);
    let load = Load::start(d.router, &format!("hello.{}", d.domain), 2);
    load.wait_more(200);
    let (_, failures) = load.finish();
    assert!(failures.is_empty(), "{failures:?}");
    let text = metrics_text(&d, &token, None);
    assert_eq!(text.status, 200);
    assert!(text.headers["content-type"].starts_with("text/plain; version=0.0.4"));
    let after = sample(&text.body, "deis_router_requests_total{app=\"hello\",class=\"2xx\"}").unwrap();
    assert!(after >= before + 200.0, "{before} -> {after}");
    for family in [
        "deis_host_cpu_seconds_total{mode=\"user\"}",
        "deis_api_requests_total{route=",
        "deis_store_operation_duration_seconds_count{operation=\"get\"}",
        "deis_controller_events_total{kind=\"release\"}",
        "deis_logger_messages_received_total",
        "deis_component_up{component=\"store\"} 1",
        "deis_router_response_bytes_total{app=\"hello\"}",
    ] {
        assert!(text.body.contains(family), "{family} missing from\n{}", text.body);
    }
    // promtool's lint is clean on the 0.0.4 text.
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    promtool.stdin.take().unwrap().write_all(text.body.as_bytes()).unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let om = metrics_text(&d, &token, Some("application/openmetrics-text;version=1.0.0"));
    assert!(om.headers["content-type"].starts_with("application/openmetrics-text"));
    assert!(om.body.ends_with("# EOF\n"));

    // The CLI: deis metrics and deis ps.
    let out = cli.run(&["metrics", "-a", "hello"]).ok();
    assert!(out.contains("=== hello Metrics"), "{out}");
    let requests: u64 = out.lines().find_map(|l| l.strip_prefix("requests:")?.trim().parse().ok()).unwrap();
    assert!(requests >= 200, "{out}");
    assert!(out.contains("latency p99:") && !out.contains("latency p99:  -"), "{out}");
    let ps = wait_for(T, "cpu and memory in deis ps", || {
        let ps = cli.run(&["ps", "-a", "hello"]).ok();
        ps.contains(" mem ").then_some(ps)
    });
    assert!(ps.contains("hello.web.1") && ps.contains("cpu "), "{ps}");

    // Prometheus scrapes deisd with an admin token; PromQL finds our series.
    let Some(prom) =
        PrometheusServer::scraping(&[Target { job: "deisd".into(), addr: d.api, token: Some(token.clone()) }])
    else {
        return;
    };
    wait_for(T, "Prometheus has deis_router_requests_total", || {
        let r = prom.query("deis_router_requests_total{app=\"hello\",class=\"2xx\"}");
        r.contains("\"app\":\"hello\"").then_some(())
    });

    // InfluxDB: SELECT returns our points.
    wait_for(T, "InfluxDB has deis_router_requests", || {
        let r = influx.query("deis", "SELECT value FROM deis_router_requests WHERE app = 'hello' AND class = '2xx'");
        r.contains("\"values\"").then_some(())
    });
    // collectd's StatsD plugin received our counters (written as CSV).
    wait_for(T, "collectd received deis counters", || {
        statsd.files().into_iter().find(|f| f.contains("deis_router_requests.hello.2xx"))
    });
    // The webhook got JSON snapshots.
    let body = wait_for(T, "a webhook snapshot with router figures", || {
        bodies.try_iter().find(|b| b.contains("deis_router_requests"))
    });
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(v["metrics"].as_array().unwrap().iter().any(|f| f["name"] == "deis_host_cpu_seconds"));
}

/// Who may see what: `/metrics` is for admins; an app's figures for its owner,
/// collaborators and admins; the dashboard page for anyone (it shows a login form).
#[test]
fn telemetry_endpoints_follow_the_api_permissions() {
    let d = Deisd::start();
    let clis: Vec<(&str, Cli)> = ["admin", "owner", "collab", "stranger"]
        .into_iter()
        .map(|u| {
            let c = d.cli();
            c.register(&d, u);
            (u, c)
        })
        .collect();
    let token = |who: &str| clis.iter().find(|(u, _)| *u == who).unwrap().1.token();
    let owner = &clis[1].1;
    owner.run(&["create", "shop", "--no-remote"]).ok();
    owner.run(&["perms:create", "collab", "-a", "shop"]).ok();
    let status = |path: &str, who: Option<&str>| {
        let mut r = Request::get(path);
        if let Some(w) = who {
            r = r.header("Authorization", &format!("token {}", token(w)));
        }
        r.send(d.api).unwrap().status
    };
    for (who, metrics, app) in [
        (Some("admin"), 200, 200),
        (Some("owner"), 403, 200),
        (Some("collab"), 403, 200),
        (Some("stranger"), 403, 403),
        (None, 401, 401),
    ] {
        assert_eq!(status("/metrics", who), metrics, "/metrics as {who:?}");
        assert_eq!(status("/v2/apps/shop/metrics/", who), app, "app metrics as {who:?}");
    }
    assert_eq!(status("/v2/events/", None), 401);
    let events = |who: &str| {
        Request::get("/v2/events/").header("Authorization", &format!("token {}", token(who))).send(d.api).unwrap().body
    };
    wait_for(T, "the app_created event", || events("owner").contains("\"app_created\"").then_some(()));
    assert!(events("collab").contains("\"shop\""));
    assert!(!events("stranger").contains("\"shop\""), "a stranger sees no event of the app");
    assert!(events("admin").contains("\"shop\""));
    // The dashboard: the page (no data in it) for anyone.
    let page = Request::get("/dashboard/").send(d.api).unwrap();
    assert_eq!(page.status, 200);
    assert!(page.body.contains("<form id=\"login\""), "{}", page.body);
    assert!(!page.body.contains("shop"));
}

/// A sink whose endpoint accepts connections and never answers (a hung collector):
/// snapshots pile up to the queue's bound, then are dropped and counted, while the
/// router keeps serving and counting every request. Its speed next to a healthy setup
/// is measured by `scripts/bench-router-metrics` (setting `sink-down`; BENCHMARKS.md).
#[test]
fn a_sink_that_never_answers_drops_and_counts_while_the_router_serves() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let hung = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = hung.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let seen = accepted.clone();
    std::thread::spawn(move || {
        let mut held = Vec::new(); // never read, never answered, never closed
        for conn in hung.incoming() {
            held.push(conn);
            seen.fetch_add(1, Ordering::Relaxed);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("telemetry.conf");
    let sink = format!("webhook+http://{addr}/hook");
    std::fs::write(&config, format!("interval = 200ms\nqueue = 2\nsink = {sink}\n")).unwrap();
    let d = Deisd::start_with(&["--telemetry-config", config.to_str().unwrap()]);
    let cli = d.cli();
    cli.register(&d, "admin");
    let token = cli.token();
    let _dir = deploy_hello(&d, &cli, "hello");
    let outcome = |text: &str, outcome: &str| {
        sample(text, &format!("deis_telemetry_sink_snapshots_total{{sink=\"{sink}\",outcome=\"{outcome}\"}}"))
    };
    let dropped_before = wait_for(T, "snapshots dropped for the hung sink", || {
        outcome(&metrics_text(&d, &token, None).body, "dropped").filter(|n| *n > 0.0)
    });
    assert!(accepted.load(Ordering::Relaxed) >= 1, "the sink reached the hung endpoint");

    let requests = "deis_router_requests_total{app=\"hello\",class=\"2xx\"}";
    let before = sample(&metrics_text(&d, &token, None).body, requests).unwrap_or(0.0);
    let load = Load::start(d.router, &format!("hello.{}", d.domain), 2);
    load.wait_more(300);
    let (_, failures) = load.finish();
    assert!(failures.is_empty(), "the router failed requests while the sink hung: {failures:?}");
    let text = metrics_text(&d, &token, None).body;
    assert!(sample(&text, requests).unwrap() >= before + 300.0, "every request counted:\n{text}");
    // Still hung: more snapshots dropped, none delivered.
    wait_for(T, "more snapshots dropped", || {
        outcome(&metrics_text(&d, &token, None).body, "dropped").filter(|n| *n > dropped_before)
    });
    assert_eq!(outcome(&text, "sent"), Some(0.0), "{text}");
}
