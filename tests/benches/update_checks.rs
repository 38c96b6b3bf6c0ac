//! Omaha update checks per second against `deisd` (`POST /v1/update/` on its API
//! address), and the latency at half that rate.
//!
//! ```sh
//! cargo build --release -p deisd --all-features
//! cargo bench -p deis-e2e --all-features --bench update_checks   # ROUNDS=3 BENCH_SECONDS=8 CONNS=64 INSTANCES=10000
//! ```
//!
//! deisd runs alone on its embedded store (the default) with an update app whose stable
//! channel offers 2.0.0 under the default rollout policy (5 updates per hour). The body
//! is update_engine's real update request (`../shared/fixtures/omaha/`: ping, update
//! check and event in one request) with the app id, track `stable` and version 1.0.0,
//! and a machine id cycling through `INSTANCES` instances: every check reads the group
//! and writes the instance's record, as a fleet's checks do; five instances get the
//! update, the rest are answered `noupdate` (the period's budget is spent).
//!
//! The load generator (in this process, on keep-alive HTTP/1.1 connections) first runs
//! closed-loop on `CONNS` connections for `BENCH_SECONDS` (the throughput), then paced
//! at half that rate, each request timed from when it was due (so a stall counts in
//! full), for the latency percentiles. The median of `ROUNDS` rounds is reported.
//! `BENCH_DATA_DIR` chooses where deisd's data dir (its store) is made (`/dev/shm`: on
//! tmpfs, so no commit waits for the disk).

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use deis_e2e::binary;
use deis_test_support::http::Request;
use deis_test_support::{free_addr, wait_for};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufStream};
use tokio::net::TcpStream;

const APP_ID: &str = "{e96281a6-d1af-4bde-9a0a-97b76e56dc57}";

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

/// update_engine's update request, for `APP_ID` on stable at 1.0.0, as machine `n`.
fn request(addr: SocketAddr, n: u64) -> Vec<u8> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <request protocol=\"3.0\" version=\"ChromeOSUpdateEngine-0.1.0.0\" updaterversion=\"ChromeOSUpdateEngine-0.1.0.0\" installsource=\"scheduler\" ismachine=\"1\">\n\
         <os version=\"Indy\" platform=\"Chrome OS\" sp=\"1.0.0_x86_64\"></os>\n\
         <app appid=\"{APP_ID}\" bootid=\"{{7D52A1CC-7066-40F0-91C7-7CB6A871BFDE}}\" machineid=\"{{8BDE4C4D-9083-4D61-B41C-{n:012X}}}\" oem=\"ec3000\" version=\"1.0.0\" track=\"stable\" from_track=\"stable\" lang=\"en-US\" board=\"amd64-usr\" hardware_class=\"\" delta_okay=\"false\" >\n\
         <ping active=\"1\" a=\"-1\" r=\"-1\"></ping>\n\
         <updatecheck targetversionprefix=\"\"></updatecheck>\n\
         <event eventtype=\"3\" eventresult=\"2\" previousversion=\"\"></event>\n\
         </app>\n\
         </request>\n"
    );
    let mut req = format!(
        "POST /v1/update/ HTTP/1.1\r\nHost: {addr}\r\nContent-Type: text/xml\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body.as_bytes());
    req
}

/// Sends one request on a keep-alive connection and reads the answer; `Ok` only for a
/// 200 carrying an update check result.
async fn check(conn: &mut BufStream<TcpStream>, req: &[u8], body: &mut Vec<u8>) -> std::io::Result<()> {
    let bad = |what: String| std::io::Error::other(what);
    conn.write_all(req).await?;
    conn.flush().await?;
    let mut line = String::new();
    conn.read_line(&mut line).await?;
    let status_ok = line.starts_with("HTTP/1.1 200");
    let mut length = None;
    loop {
        line.clear();
        if conn.read_line(&mut line).await? == 0 {
            return Err(bad("connection closed".into()));
        }
        if line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse::<usize>().ok();
        }
    }
    let length = length.ok_or_else(|| bad("no Content-Length".into()))?;
    body.resize(length, 0);
    conn.read_exact(body).await?;
    if !status_ok || !body.windows(12).any(|w| w == b"<updatecheck") {
        return Err(bad(format!("unexpected answer: {}", String::from_utf8_lossy(body))));
    }
    Ok(())
}

/// Requests `conns` connections send until `until`, each starting at `due(i)` for its
/// i-th request when paced; returns (completed, failed, latencies in µs).
async fn load(
    addr: SocketAddr,
    conns: u64,
    instances: u64,
    length: Duration,
    interval: Option<Duration>,
) -> (u64, u64, Vec<u64>) {
    let next_instance = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    let start = Instant::now();
    for c in 0..conns {
        let next_instance = next_instance.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = BufStream::new(TcpStream::connect(addr).await.expect("connect to deisd"));
            conn.get_ref().set_nodelay(true).ok();
            let (mut done, mut failed, mut latencies, mut body) = (0u64, 0u64, Vec::new(), Vec::new());
            // Paced connections start spread over one interval.
            let offset = interval.map(|i| i.mul_f64(c as f64 / conns as f64)).unwrap_or_default();
            let mut k = 0u32;
            loop {
                let due = match interval {
                    Some(i) => start + offset + i * k,
                    None => Instant::now(),
                };
                if due.duration_since(start) >= length {
                    break;
                }
                tokio::time::sleep_until(due.into()).await;
                let req = request(addr, next_instance.fetch_add(1, Ordering::Relaxed) % instances);
                match check(&mut conn, &req, &mut body).await {
                    Ok(()) => {
                        done += 1;
                        latencies.push(due.elapsed().as_micros() as u64);
                    }
                    Err(e) => {
                        failed += 1;
                        if failed == 1 {
                            eprintln!("a check failed: {e}");
                        }
                        conn = BufStream::new(TcpStream::connect(addr).await.expect("reconnect to deisd"));
                    }
                }
                k += 1;
            }
            (done, failed, latencies)
        }));
    }
    let (mut done, mut failed, mut latencies) = (0, 0, Vec::new());
    for t in tasks {
        let (d, f, l) = t.await.unwrap();
        done += d;
        failed += f;
        latencies.extend(l);
    }
    latencies.sort_unstable();
    (done, failed, latencies)
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i] as f64 / 1000.0
}

/// deisd alone on its embedded store, with logs at warn; killed on drop.
struct Deisd {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Deisd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_deisd(api: SocketAddr) -> Deisd {
    // BENCH_DATA_DIR=/dev/shm puts the store on tmpfs: its commits no longer wait for
    // the disk, which shows what the disk sync per check costs.
    let dir = match std::env::var_os("BENCH_DATA_DIR") {
        Some(parent) => tempfile::tempdir_in(parent).unwrap(),
        None => tempfile::tempdir().unwrap(),
    };
    let free = || free_addr().to_string();
    let child = Command::new(binary("deisd"))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--api-addr", &api.to_string(), "--router-addr", &free(), "--builder-addr", &free()])
        .args(["--syslog-addr", &free(), "--router-tls-addr", &free(), "--domain", "bench.test"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start deisd (cargo build --release -p deisd --all-features)");
    wait_for(Duration::from_secs(30), "deisd /healthz", || {
        Request::get("/healthz").send(api).ok().filter(|r| r.status == 200)
    });
    Deisd { child, _dir: dir }
}

/// Registers the admin and publishes 2.0.0 on stable through the API.
fn set_up(api: SocketAddr) {
    let register = Request::post("/v2/auth/register/")
        .header("Content-Type", "application/json")
        .body(r#"{"username":"admin","password":"bench-password","email":"admin@bench.test"}"#)
        .send(api)
        .unwrap();
    assert!(register.status < 300, "register: {} {}", register.status, register.body);
    let login = Request::post("/v2/auth/login/")
        .header("Content-Type", "application/json")
        .body(r#"{"username":"admin","password":"bench-password"}"#)
        .send(api)
        .unwrap();
    let token = login.json()["token"].as_str().expect("a token").to_string();
    let admin = |req: Request| {
        let r = req
            .header("Authorization", &format!("token {token}"))
            .header("Content-Type", "application/json")
            .send(api)
            .unwrap();
        assert!(r.status < 300, "{} {}", r.status, r.body);
    };
    admin(Request::post("/v2/updates/apps/").body(format!(r#"{{"id":"{APP_ID}","name":"deisd"}}"#)));
    let sha256 = "a".repeat(64);
    let app = APP_ID.replace('{', "%7B").replace('}', "%7D");
    admin(Request::post(&format!("/v2/updates/apps/{app}/channels/stable/")).body(format!(
        r#"{{"version":"2.0.0","url":"https://updates.bench.test/deisd/","name":"deisd","size":47269360,"sha256":"{sha256}"}}"#
    )));
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let (rounds, seconds, conns, instances) =
        (env_num("ROUNDS", 3), env_num("BENCH_SECONDS", 8), env_num("CONNS", 64), env_num("INSTANCES", 10_000));
    let api = free_addr();
    let _deisd = start_deisd(api);
    set_up(api);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let length = Duration::from_secs(seconds);
    rt.block_on(load(api, conns, instances, Duration::from_secs(2), None)); // warm-up
    let mut rates = Vec::new();
    let mut p = Vec::new();
    for round in 1..=rounds {
        let (done, failed, _) = rt.block_on(load(api, conns, instances, length, None));
        let rate = done as f64 / seconds as f64;
        let half = rate / 2.0;
        let interval = Duration::from_secs_f64(conns as f64 / half);
        let (paced, paced_failed, latencies) = rt.block_on(load(api, conns, instances, length, Some(interval)));
        let (p50, p99, max) = (percentile(&latencies, 0.5), percentile(&latencies, 0.99), percentile(&latencies, 1.0));
        println!(
            "round {round}: {rate:.0} checks/s ({failed} failed); at {half:.0}/s ({} done, {paced_failed} failed): p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms",
            paced as f64 / seconds as f64
        );
        assert_eq!(failed + paced_failed, 0, "failed checks");
        rates.push(rate);
        p.push((p50, p99));
    }
    rates.sort_by(f64::total_cmp);
    p.sort_by(|a, b| a.1.total_cmp(&b.1));
    let (median_rate, median_p) = (rates[rates.len() / 2], p[p.len() / 2]);
    println!(
        "| deisd /v1/update/ | {median_rate:.0} checks/s | p50 {:.2} ms, p99 {:.2} ms at {:.0}/s | {conns} conns, {instances} instances, median of {rounds} |",
        median_p.0,
        median_p.1,
        median_rate / 2.0
    );
}
