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
//! The throughput is wrk's (`WRK_THREADS`, default 1, on `CONNS` keep-alive
//! connections for `BENCH_SECONDS`, the requests rendered once in its Lua `init`), with
//! deisd's own CPU time per check read from /proc. The latency comes from a paced
//! load generator in this process (the same requests, rendered beforehand) at half
//! that rate, each request timed from when it was due (so a stall counts in full):
//! p50/p99. The median of `ROUNDS` rounds is reported.
//! `BENCH_DATA_DIR` chooses where deisd's data dir (its store) is made (`/dev/shm`: on
//! tmpfs, so no commit waits for the disk).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use deis_e2e::binary;
use deis_test_support::http::Request;
use deis_test_support::{free_addr, wait_for};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const APP_ID: &str = "{e96281a6-d1af-4bde-9a0a-97b76e56dc57}";

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

/// update_engine's update request body, for `APP_ID` on stable at 1.0.0, as machine
/// `n`; `{n}` in the machine id is left for the Lua script when `n` is `None`.
fn body(n: Option<u64>) -> String {
    let machine = match n {
        Some(n) => format!("{n:012X}"),
        None => "%012X".to_string(),
    };
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <request protocol=\"3.0\" version=\"ChromeOSUpdateEngine-0.1.0.0\" updaterversion=\"ChromeOSUpdateEngine-0.1.0.0\" installsource=\"scheduler\" ismachine=\"1\">\n\
         <os version=\"Indy\" platform=\"Chrome OS\" sp=\"1.0.0_x86_64\"></os>\n\
         <app appid=\"{APP_ID}\" bootid=\"{{7D52A1CC-7066-40F0-91C7-7CB6A871BFDE}}\" machineid=\"{{8BDE4C4D-9083-4D61-B41C-{machine}}}\" oem=\"ec3000\" version=\"1.0.0\" track=\"stable\" from_track=\"stable\" lang=\"en-US\" board=\"amd64-usr\" hardware_class=\"\" delta_okay=\"false\" >\n\
         <ping active=\"1\" a=\"-1\" r=\"-1\"></ping>\n\
         <updatecheck targetversionprefix=\"\"></updatecheck>\n\
         <event eventtype=\"3\" eventresult=\"2\" previousversion=\"\"></event>\n\
         </app>\n\
         </request>\n"
    )
}

/// The whole HTTP request of machine `n`.
fn request(addr: SocketAddr, n: u64) -> Vec<u8> {
    let body = body(Some(n));
    let mut req = format!(
        "POST /v1/update/ HTTP/1.1\r\nHost: {addr}\r\nContent-Type: text/xml\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body.as_bytes());
    req
}

/// Sends one request on a keep-alive connection and reads the answer into `buf`; `Ok`
/// only for a 200 carrying an update check result.
async fn check(conn: &mut TcpStream, req: &[u8], buf: &mut Vec<u8>) -> std::io::Result<()> {
    let bad = |what: String| std::io::Error::other(what);
    conn.write_all(req).await?;
    buf.clear();
    // Read until the head is in, then until the body is.
    let (head_end, length) = loop {
        if conn.read_buf(buf).await? == 0 {
            return Err(bad("connection closed".into()));
        }
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = std::str::from_utf8(&buf[..end]).map_err(|e| bad(e.to_string()))?;
            let length = head
                .lines()
                .filter_map(|l| l.split_once(':'))
                .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.trim().parse::<usize>().ok())
                .ok_or_else(|| bad("no Content-Length".into()))?;
            break (end + 4, length);
        }
    };
    while buf.len() < head_end + length {
        if conn.read_buf(buf).await? == 0 {
            return Err(bad("connection closed".into()));
        }
    }
    let body = &buf[head_end..head_end + length];
    if !buf.starts_with(b"HTTP/1.1 200") || !body.windows(12).any(|w| w == b"<updatecheck") {
        return Err(bad(format!("unexpected answer: {}", String::from_utf8_lossy(body))));
    }
    Ok(())
}

/// Paced load: `conns` connections, each sending its k-th request at `start + offset +
/// k * interval` (the offsets spread the connections over one interval) until `length`
/// is over, each request timed from when it was due (so a stall counts in full).
/// Requests are rendered beforehand. Returns (completed, failed, latencies in µs).
async fn paced(
    addr: SocketAddr,
    conns: u64,
    requests: Arc<Vec<Vec<u8>>>,
    length: Duration,
    interval: Duration,
) -> (u64, u64, Vec<u64>) {
    let next_instance = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    let start = Instant::now();
    for c in 0..conns {
        let (next_instance, requests) = (next_instance.clone(), requests.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = TcpStream::connect(addr).await.expect("connect to deisd");
            conn.set_nodelay(true).ok();
            let (mut done, mut failed, mut latencies, mut buf) = (0u64, 0u64, Vec::new(), Vec::with_capacity(4096));
            let offset = interval.mul_f64(c as f64 / conns as f64);
            for k in 0u32.. {
                let due = start + offset + interval * k;
                if due.duration_since(start) >= length {
                    break;
                }
                tokio::time::sleep_until(due.into()).await;
                let n = next_instance.fetch_add(1, Ordering::Relaxed) as usize % requests.len();
                match check(&mut conn, &requests[n], &mut buf).await {
                    Ok(()) => {
                        done += 1;
                        latencies.push(due.elapsed().as_micros() as u64);
                    }
                    Err(e) => {
                        failed += 1;
                        if failed == 1 {
                            eprintln!("a check failed: {e}");
                        }
                        conn = TcpStream::connect(addr).await.expect("reconnect to deisd");
                    }
                }
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

/// The Lua script that has wrk send the same requests: rendered once per wrk thread
/// (`init`), then one after another, the threads starting at different instances.
fn wrk_script(dir: &Path, instances: u64) -> PathBuf {
    let template = body(None).replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
    let script = format!(
        r#"local template = "{template}"
local requests, i, threads = {{}}, 0, 0
function setup(thread)
  thread:set("first", threads * 7919)
  threads = threads + 1
end
function init(args)
  for n = 0, {instances} - 1 do
    requests[n + 1] = wrk.format("POST", "/v1/update/", {{ ["Content-Type"] = "text/xml" }}, string.format(template, n))
  end
  i = (tonumber(first) or 0) % #requests
end
function request()
  i = i % #requests + 1
  return requests[i]
end
"#
    );
    let path = dir.join("omaha.lua");
    std::fs::write(&path, script).unwrap();
    path
}

/// What one wrk run gave.
struct Closed {
    checks: u64,
    rate: f64,
    errors: u64,
}

/// Closed loop: wrk with `threads` threads on `conns` connections for `seconds`.
fn closed(api: SocketAddr, script: &Path, threads: u64, conns: u64, seconds: u64) -> Closed {
    let out = Command::new("wrk")
        .args([format!("-t{threads}"), format!("-c{conns}"), format!("-d{seconds}s"), "-s".into()])
        .arg(script)
        .arg(format!("http://{api}/v1/update/"))
        .output()
        .expect("wrk is installed (scripts/install-deps --bench)");
    let text = String::from_utf8_lossy(&out.stdout);
    match deis_test_support::wrk::parse(&text).filter(|w| w.rps > 0.0) {
        Some(w) => Closed { checks: w.requests, rate: w.rps, errors: w.errors },
        None => panic!("wrk output not understood:\n{text}\n{}", String::from_utf8_lossy(&out.stderr)),
    }
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
    let wrk_threads = env_num("WRK_THREADS", 1);
    let api = free_addr();
    let deisd = start_deisd(api);
    set_up(api);
    let scratch = tempfile::tempdir().unwrap();
    let script = wrk_script(scratch.path(), instances);
    let requests = Arc::new((0..instances).map(|n| request(api, n)).collect::<Vec<_>>());
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let pid = deisd.child.id();
    closed(api, &script, wrk_threads, conns, 2); // warm-up: every instance has a record
    let mut rates = Vec::new();
    let mut p = Vec::new();
    for round in 1..=rounds {
        let cpu_before = deis_test_support::proc::cpu_seconds(pid).unwrap_or(f64::NAN);
        let run = closed(api, &script, wrk_threads, conns, seconds);
        let cpu = deis_test_support::proc::cpu_seconds(pid).unwrap_or(f64::NAN) - cpu_before;
        let (rate, half) = (run.rate, run.rate / 2.0);
        let interval = Duration::from_secs_f64(conns as f64 / half);
        let length = Duration::from_secs(seconds);
        let (done, paced_failed, latencies) = rt.block_on(paced(api, conns, requests.clone(), length, interval));
        let (p50, p99, max) = (percentile(&latencies, 0.5), percentile(&latencies, 0.99), percentile(&latencies, 1.0));
        println!(
            "round {round}: {rate:.0} checks/s ({} failed), deisd {:.2} cores, {:.1} µs CPU per check; \
             at {half:.0}/s ({:.0} done/s, {paced_failed} failed): p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms",
            run.errors,
            cpu / seconds as f64,
            cpu * 1e6 / run.checks.max(1) as f64,
            done as f64 / seconds as f64
        );
        assert_eq!(run.errors + paced_failed, 0, "failed checks");
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
