//! Docker's syslog log driver, a real emitter, in each of its formats, into a running
//! syslog listener. Uses a Docker engine that answers, or starts a private dockerd.

use std::sync::Arc;
use std::time::Duration;

use deis_sdk::deis_core::logs::{LogFilter, LogSource, LogStore, LogStream, RingLogStore};
use deis_sdk::logger::{SyslogConfig, SyslogServer};
use deis_test_support::docker::DockerEngine;
use deis_test_support::{Service, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_syslog_driver_in_every_format() {
    let Some(engine) = DockerEngine::shared() else { return };
    let image = engine.busybox_image();
    let store = RingLogStore::new();
    let config = SyslogConfig {
        tcp_addr: Some("127.0.0.1:0".parse().unwrap()),
        udp_addr: Some("127.0.0.1:0".parse().unwrap()),
        ..SyslogConfig::default()
    };
    let server = SyslogServer::start(config, Arc::new(store.clone())).await.unwrap();
    let tcp = server.tcp_addr().unwrap();
    let udp = server.udp_addr().unwrap();

    let cases = [
        ("rfc5424", format!("tcp://{tcp}"), "fmt1"),
        ("rfc5424micro", format!("tcp://{tcp}"), "fmt2"),
        ("rfc3164", format!("tcp://{tcp}"), "fmt3"),
        ("rfc5424", format!("udp://{udp}"), "fmt4"),
    ];
    for (format, address, app) in &cases {
        let out = engine
            .docker()
            .args(["run", "--rm", "--network", "none", "--log-driver=syslog"])
            .args(["--log-opt", &format!("syslog-address={address}")])
            .args(["--log-opt", &format!("syslog-format={format}")])
            .args(["--log-opt", &format!("tag={app}.web.1")])
            .arg(&image)
            .args(["sh", "-c", &format!("echo '{format} out line'; echo '{format} err line' >&2")])
            .output()
            .unwrap();
        assert!(out.status.success(), "docker run ({format}): {}", String::from_utf8_lossy(&out.stderr));
    }
    for (format, address, app) in &cases {
        let lines =
            eventually(Duration::from_secs(10), &format!("2 lines of {app} ({format} over {address})"), || async {
                let got = store.tail(app, 10, &LogFilter::default()).await.unwrap();
                (got.len() >= 2).then_some(got)
            })
            .await;
        let mut seen: Vec<(String, LogStream)> =
            lines.iter().map(|e| (e.line.message.clone(), e.line.stream)).collect();
        seen.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            seen,
            [
                (format!("{format} err line"), LogStream::Severity(3)),
                (format!("{format} out line"), LogStream::Severity(6))
            ],
            "{format} over {address}"
        );
        for e in &lines {
            assert_eq!(e.line.source, LogSource::App { proc_type: "web".into(), number: 1 });
            assert!(!e.line.raw);
            assert!(e.line.to_string().ends_with(&format!("{app}[web.1]: {}", e.line.message)));
        }
    }
    let c = server.counters().snapshot();
    assert_eq!((c.parsed, c.unparsed), (8, 0), "{c:?}");
    server.shutdown().await;
}
