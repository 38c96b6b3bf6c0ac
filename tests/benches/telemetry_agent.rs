//! The telemetry agent (`deis-telemetry`) next to Debian's `prometheus-node-exporter`:
//! cpu and memory of each over the same run, both scraped at the same interval.
//!
//! ```sh
//! scripts/install-deps --bench      # prometheus-node-exporter
//! cargo build --release -p deis-telemetry --all-features
//! cargo bench -p deis-e2e --all-features --bench telemetry_agent   # BENCH_SECONDS=60 INTERVAL=10
//! ```
//!
//! Both run on loopback with their defaults, the agent with `--telemetry-interval
//! INTERVAL` (its own collection loop: units found in `/proc`, history), node_exporter
//! with Debian's default collectors. Every `INTERVAL` seconds this process scrapes both
//! `/metrics` the way Prometheus does (its `Accept` header, `Accept-Encoding: gzip`).
//! Cpu is user + system time from `/proc/<pid>/stat` from just after the first scrape
//! to the end (start-up left out); memory is `VmRSS` at the end and `VmHWM` (peak) from
//! `/proc/<pid>/status`. The agent's binary is taken from the bench's own target
//! directory (`target/release`), or `DEIS_E2E_BIN_DIR`.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use deis_e2e::binary;
use deis_test_support::http::Request;
use deis_test_support::{free_addr, proc, wait_for};

/// What Prometheus 2.x sends when it scrapes.
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

/// An exporter under measurement; killed on drop.
struct Exporter {
    name: &'static str,
    child: Child,
    addr: SocketAddr,
    scrapes: u32,
    bytes: usize,
    scrape_time: Duration,
}

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Exporter {
    fn start(name: &'static str, command: &mut Command, addr: SocketAddr) -> Self {
        let child =
            command.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut e = Exporter { name, child, addr, scrapes: 0, bytes: 0, scrape_time: Duration::ZERO };
        wait_for(Duration::from_secs(20), &format!("{name} serving /metrics"), || {
            Request::get("/metrics").send(addr).ok().filter(|r| r.status == 200)
        });
        e.scrape();
        e
    }

    fn scrape(&mut self) {
        let started = Instant::now();
        let r = Request::get("/metrics")
            .header("Accept", PROMETHEUS_ACCEPT)
            .header("Accept-Encoding", "gzip")
            .timeout(Duration::from_secs(10))
            .send(self.addr)
            .unwrap_or_else(|e| panic!("scraping {}: {e}", self.name));
        assert_eq!(r.status, 200, "{}: {}", self.name, r.body);
        self.scrape_time += started.elapsed();
        self.scrapes += 1;
        self.bytes += r.body.len();
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// A `/proc/<pid>/status` field in KiB (`VmRSS`, `VmHWM`).
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':')?.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let seconds = env_num("BENCH_SECONDS", 60);
    let interval = Duration::from_secs(env_num("INTERVAL", 10).max(1));
    let exporter = "prometheus-node-exporter";
    if Command::new(exporter).arg("--version").output().is_err() {
        eprintln!("{exporter} is not installed: run scripts/install-deps --bench");
        std::process::exit(1);
    }
    let agent_addr = free_addr();
    let agent = Exporter::start(
        "deis-telemetry",
        Command::new(binary("deis-telemetry"))
            .arg("--listen")
            .arg(agent_addr.to_string())
            .arg("--telemetry-interval")
            .arg(format!("{}s", interval.as_secs())),
        agent_addr,
    );
    let node_addr = free_addr();
    let node = Exporter::start(
        "node_exporter",
        Command::new(exporter).arg(format!("--web.listen-address={node_addr}")),
        node_addr,
    );
    let mut exporters = [agent, node];
    let before: Vec<f64> = exporters.iter().map(|e| proc::cpu_seconds(e.pid()).unwrap_or(0.0)).collect();
    let started = Instant::now();
    let (mut next, end) = (started + interval, started + Duration::from_secs(seconds));
    // A benchmark paces its scrapes: it sleeps until the next one is due.
    while next <= end {
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        for e in &mut exporters {
            e.scrape();
        }
        next += interval;
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "{:.0} s, scraped every {} s; cpu from /proc/<pid>/stat (utime+stime), memory from /proc/<pid>/status",
        elapsed,
        interval.as_secs()
    );
    println!(
        "| exporter | cpu s | cpu % of one core | cpu ms per interval | RSS MiB | peak RSS MiB | bytes per scrape | scrape ms |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    let mut cpus = Vec::new();
    for (e, before) in exporters.iter().zip(&before) {
        let cpu = proc::cpu_seconds(e.pid()).unwrap_or(0.0) - before;
        let scrapes = (e.scrapes - 1).max(1);
        cpus.push(cpu);
        println!(
            "| {} | {:.3} | {:.3} | {:.1} | {:.1} | {:.1} | {} | {:.1} |",
            e.name,
            cpu,
            cpu / elapsed * 100.0,
            cpu * 1000.0 / f64::from(scrapes),
            status_kib(e.pid(), "VmRSS") as f64 / 1024.0,
            status_kib(e.pid(), "VmHWM") as f64 / 1024.0,
            e.bytes / e.scrapes as usize,
            e.scrape_time.as_secs_f64() * 1000.0 / f64::from(e.scrapes),
        );
    }
    let ratio = if cpus[1] > 0.0 { cpus[0] / cpus[1] } else { f64::NAN };
    println!("agent / node_exporter cpu: {ratio:.2}");
}
