//! Real metrics receivers for telemetry tests: InfluxDB 1.x (Debian `influxdb`),
//! collectd with its StatsD plugin (Debian `collectd-core`) writing CSV, and a
//! Prometheus server (Debian `prometheus`) scraping given targets. Same shape as the
//! other starters (see [`crate::service`]).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::http::Request;
use crate::net::free_port;
use crate::service::{Program, Service, ServiceProcess};

const INFLUXD: Program = Program { bin: "influxd", package: "influxdb", ready_within: Duration::from_secs(30) };
const COLLECTD: Program = Program { bin: "collectd", package: "collectd-core", ready_within: Duration::from_secs(20) };
const PROMETHEUS: Program = Program { bin: "prometheus", package: "prometheus", ready_within: Duration::from_secs(30) };

/// A private `influxd` (1.x) answering HTTP on loopback.
#[derive(Debug)]
pub struct InfluxServer(ServiceProcess);

impl Service for InfluxServer {
    fn start() -> Option<Self> {
        let command = |addr: SocketAddr, dir: &Path| {
            let conf = dir.join("influxdb.conf");
            let d = dir.display();
            // The RPC port (8088 by default) would collide with other tests: a free one.
            let text = format!(
                "reporting-disabled = true\nbind-address = \"127.0.0.1:{rpc}\"\n[meta]\n  dir = \"{d}/meta\"\n\
                 [data]\n  dir = \"{d}/data\"\n  wal-dir = \"{d}/wal\"\n  query-log-enabled = false\n\
                 [http]\n  bind-address = \"{addr}\"\n  log-enabled = false\n",
                rpc = free_port()
            );
            std::fs::write(&conf, text).expect("influxdb.conf");
            let mut c = Command::new(INFLUXD.bin);
            c.arg("-config").arg(conf);
            c
        };
        ServiceProcess::start(&INFLUXD, command, |p| {
            Request::get("/ping").send(p.addr()).is_ok_and(|r| r.status == 204)
        })
        .map(Self)
    }

    fn process(&self) -> Option<&ServiceProcess> {
        Some(&self.0)
    }
}

impl InfluxServer {
    /// Its HTTP address.
    pub fn addr(&self) -> SocketAddr {
        self.0.addr()
    }

    /// Runs an InfluxQL statement (`POST /query`); the JSON answer.
    pub fn query(&self, db: &str, q: &str) -> String {
        let body = format!("db={}&q={}", urlencode(db), urlencode(q));
        let r = Request::post("/query")
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(body)
            .send(self.addr())
            .expect("influxdb /query");
        assert_eq!(r.status, 200, "influxdb /query {q}: {}", r.body);
        r.body
    }
}

fn urlencode(s: &str) -> String {
    s.bytes().fold(String::new(), |mut out, b| {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
        out
    })
}

/// A private `collectd` whose StatsD plugin listens on a loopback UDP port and whose
/// CSV plugin writes what it received under [`CollectdStatsd::csv_dir`].
#[derive(Debug)]
pub struct CollectdStatsd(ServiceProcess);

impl Service for CollectdStatsd {
    fn start() -> Option<Self> {
        let command = |addr: SocketAddr, dir: &Path| {
            let conf = dir.join("collectd.conf");
            let d = dir.display();
            let text = format!(
                "Hostname \"test\"\nFQDNLookup false\nInterval 1\nBaseDir \"{d}\"\nPIDFile \"{d}/collectd.pid\"\n\
                 PluginDir \"/usr/lib/collectd\"\nTypesDB \"/usr/share/collectd/types.db\"\n\
                 LoadPlugin statsd\nLoadPlugin csv\n\
                 <Plugin statsd>\n  Host \"127.0.0.1\"\n  Port \"{port}\"\n</Plugin>\n\
                 <Plugin csv>\n  DataDir \"{d}/csv\"\n  StoreRates false\n</Plugin>\n",
                port = addr.port()
            );
            std::fs::write(&conf, text).expect("collectd.conf");
            let mut c = Command::new(COLLECTD.bin);
            c.arg("-f").arg("-C").arg(conf);
            c
        };
        // UDP can't be probed: it is up once it says so.
        ServiceProcess::start(&COLLECTD, command, |p| p.log().contains("Initialization complete")).map(Self)
    }

    fn process(&self) -> Option<&ServiceProcess> {
        Some(&self.0)
    }
}

impl CollectdStatsd {
    /// The StatsD UDP address.
    pub fn addr(&self) -> SocketAddr {
        self.0.addr()
    }

    /// Where the CSV plugin writes (`<host>/statsd/<type>-<name>-<date>`).
    pub fn csv_dir(&self) -> PathBuf {
        self.0.dir().join("csv")
    }

    /// Names of the CSV files written so far.
    pub fn files(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![self.csv_dir()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(e.path());
                } else {
                    out.push(e.file_name().to_string_lossy().into_owned());
                }
            }
        }
        out
    }
}

/// A scrape target of [`PrometheusServer::scraping`].
#[derive(Debug, Clone)]
pub struct Target {
    /// Job name.
    pub job: String,
    /// `host:port`.
    pub addr: SocketAddr,
    /// An `Authorization: token ...` credential, if needed.
    pub token: Option<String>,
}

/// A private `prometheus` scraping given targets every second.
#[derive(Debug)]
pub struct PrometheusServer(ServiceProcess);

impl PrometheusServer {
    /// Starts Prometheus scraping `targets`; `None` when it is not installed.
    pub fn scraping(targets: &[Target]) -> Option<Self> {
        let mut config = String::from("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n");
        for t in targets {
            let _ = write!(config, "  - job_name: {}\n    static_configs:\n      - targets: ['{}']\n", t.job, t.addr);
            if let Some(token) = &t.token {
                let _ = write!(config, "    authorization:\n      type: token\n      credentials: {token}\n");
            }
        }
        let command = |addr: SocketAddr, dir: &Path| {
            let conf = dir.join("prometheus.yml");
            std::fs::write(&conf, &config).expect("prometheus.yml");
            let mut c = Command::new(PROMETHEUS.bin);
            c.arg(format!("--config.file={}", conf.display()))
                .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
                .arg(format!("--web.listen-address={addr}"));
            c
        };
        ServiceProcess::start(&PROMETHEUS, command, |p| {
            Request::get("/-/ready").send(p.addr()).is_ok_and(|r| r.status == 200)
        })
        .map(Self)
    }

    /// Its HTTP address.
    pub fn addr(&self) -> SocketAddr {
        self.0.addr()
    }

    /// The JSON answer of an instant PromQL query (`/api/v1/query`).
    pub fn query(&self, promql: &str) -> String {
        let r = Request::get(&format!("/api/v1/query?query={}", urlencode(promql))).send(self.addr()).expect("query");
        assert_eq!(r.status, 200, "{promql}: {}", r.body);
        r.body
    }

    /// Its log.
    pub fn log(&self) -> String {
        self.0.log()
    }
}
