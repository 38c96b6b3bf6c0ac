//! The broker binaries serve `GET /metrics`: their OSB requests counted by route and
//! status class (`deis-broker-redis` here; the postgres one shares the serving code).

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use deis_test_support::http::Request;

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The value of the sample line starting with `prefix` (0 if the series is not there yet).
fn scrape(addr: SocketAddr, prefix: &str) -> f64 {
    let r = Request::get("/metrics").send(addr).unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.headers["content-type"].starts_with("text/plain; version=0.0.4"), "{:?}", r.headers);
    r.body.lines().find(|l| l.starts_with(prefix)).map_or(0.0, |l| l.rsplit(' ').next().unwrap().parse().unwrap())
}

#[test]
fn counts_osb_requests_on_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let port = deis_test_support::free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let store = format!("redb:{}", dir.path().join("broker.redb").display());
    let child = Command::new(env!("CARGO_BIN_EXE_deis-broker-redis"))
        // The catalog needs no server: nothing is provisioned here.
        .args(["--admin-url", "redis://127.0.0.1:1", "--listen", &addr.to_string(), "--store", &store])
        .args(["--username", "platform", "--password", "s3cret"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _kill = Kill(child);
    deis_test_support::wait_for(Duration::from_secs(10), "the broker to listen", || {
        std::net::TcpStream::connect(addr).ok()
    });
    let ok = "deis_api_requests_total{route=\"/v2/catalog\",method=\"GET\",status=\"2xx\"}";
    let refused = "deis_api_requests_total{route=\"/v2/catalog\",method=\"GET\",status=\"4xx\"}";
    assert_eq!((scrape(addr, ok), scrape(addr, refused)), (0.0, 0.0));
    let catalog = |auth: Option<&str>| {
        let mut r = Request::get("/v2/catalog").header("X-Broker-API-Version", "2.17");
        if let Some(a) = auth {
            r = r.header("Authorization", a);
        }
        r.send(addr).unwrap().status
    };
    // platform:s3cret
    assert_eq!(catalog(Some("Basic cGxhdGZvcm06czNjcmV0")), 200);
    assert_eq!(catalog(Some("Basic cGxhdGZvcm06czNjcmV0")), 200);
    assert_eq!(catalog(None), 401);
    assert_eq!((scrape(addr, ok), scrape(addr, refused)), (2.0, 1.0));
    let latency = "deis_api_request_duration_seconds_count{route=\"/v2/catalog\",method=\"GET\"}";
    assert_eq!(scrape(addr, latency), 3.0);
}
