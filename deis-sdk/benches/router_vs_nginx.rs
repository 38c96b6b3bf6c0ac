//! Router throughput and latency against nginx, same backends, same load tool, same run.
//!
//! ```sh
//! scripts/install-deps --bench              # nginx-light and wrk (scripts/bench runs it)
//! cargo bench -p deis-sdk --bench router_vs_nginx
//! ```
//!
//! Three backend units (a minimal HTTP/1.1 keep-alive server, in a separate process so
//! neither proxy shares its CPU with them) serve a 13-byte body. The deis router (from
//! the embedded store, exactly as deisd runs it) and nginx (`proxy_pass` to an upstream
//! of the same three units with keepalive) are each loaded by `wrk --latency` with the
//! same threads, connections and duration, alternating, `ROUNDS` times each. The table
//! shows the median round of each and the ratios router/nginx.
//!
//! Wall-clock requests/s depends on what else the machine is doing, so each round also
//! records the CPU time (user + system, from `/proc/<pid>/stat`) the proxy spent per
//! request: the router's whole process (wrk and the backends run in other processes)
//! and the sum of nginx's worker processes. That figure holds up under contention.
//! Single rounds swing by ±10% with what else the machine does, so the default is
//! seven rounds; the output also says in how many round pairs the router was ahead.
//! Environment: `BENCH_SECONDS` (default 8), `BENCH_CONNECTIONS` (64), `ROUNDS` (7),
//! `BENCH_ONLY` (`router` or `nginx`: load only that one, e.g. while profiling),
//! `BENCH_TLS=1`: HTTPS instead, both proxies terminating TLS with the same
//! certificate and key (ECDSA P-256, made for the run), the router on its TLS listener
//! exactly as deisd serves it, nginx with `listen ... ssl`; wrk's keep-alive
//! connections each do one handshake, so this measures encrypted request traffic.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use deis_sdk::deis_core::App;
use deis_sdk::deis_core::store::records::{self, Endpoint};
use deis_sdk::deis_core::store::{RedbStore, Store};
use deis_sdk::deis_core::testing::{app_name, process_type};
use deis_sdk::router::{Router, RouterConfig, TlsListener};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const DOMAIN: &str = "bench.test";
const HOST: &str = "web.bench.test";

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Backend mode: a tiny keep-alive HTTP/1.1 server answering every request.
async fn backend(listener: TcpListener) {
    loop {
        let Ok((mut sock, _)) = listener.accept().await else { continue };
        sock.set_nodelay(true).ok();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 16 * 1024];
            let mut have = 0;
            loop {
                // Answer each complete request head (benchmark requests have no body).
                while let Some(end) = buf[..have].windows(4).position(|w| w == b"\r\n\r\n") {
                    let resp =
                        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nhello, world\n";
                    if sock.write_all(resp).await.is_err() {
                        return;
                    }
                    buf.copy_within(end + 4..have, 0);
                    have -= end + 4;
                }
                if have == buf.len() {
                    return;
                }
                match sock.read(&mut buf[have..]).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => have += n,
                }
            }
        });
    }
}

fn spawn_backends() -> (Child, Vec<SocketAddr>) {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe).arg("--backends").stdout(Stdio::piped()).spawn().expect("spawn backends");
    let mut line = String::new();
    use std::io::BufRead;
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addrs = line.split_whitespace().map(|a| a.parse().unwrap()).collect();
    (child, addrs)
}

fn run_backends() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    rt.block_on(async {
        let mut addrs = vec![];
        for _ in 0..3 {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            addrs.push(l.local_addr().unwrap().to_string());
            tokio::spawn(backend(l));
        }
        println!("{}", addrs.join(" "));
        std::future::pending::<()>().await;
    });
}

struct Wrk {
    rps: f64,
    requests: u64,
    /// CPU time of the proxy per request, in microseconds.
    cpu_us: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
}

/// `https` with `BENCH_TLS=1`, else `http`.
fn scheme() -> &'static str {
    if env_num("BENCH_TLS", 0) == 1 { "https" } else { "http" }
}

fn wrk(port: u16, seconds: u64, conns: u64) -> Wrk {
    let out = Command::new("wrk")
        .args(["-t2", &format!("-c{conns}"), &format!("-d{seconds}s"), "--latency", "-H", &format!("Host: {HOST}")])
        .arg(format!("{}://127.0.0.1:{port}/", scheme()))
        .output()
        .expect("wrk is installed (apt-get install wrk)");
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(w) = deis_test_support::wrk::parse(&text).filter(|w| w.rps > 0.0) else {
        panic!("wrk output not understood:\n{text}\n{}", String::from_utf8_lossy(&out.stderr))
    };
    Wrk { rps: w.rps, requests: w.requests, cpu_us: f64::NAN, p50_ms: w.p50_ms, p99_ms: w.p99_ms, errors: w.errors }
}

/// Runs wrk against `port` and charges the CPU time `pids` used meanwhile to its requests.
fn measured_wrk(port: u16, seconds: u64, conns: u64, pids: &[u32]) -> Wrk {
    let before = cpu_seconds(pids);
    let mut r = wrk(port, seconds, conns);
    let used = cpu_seconds(pids) - before;
    if r.requests > 0 {
        r.cpu_us = used * 1e6 / r.requests as f64;
    }
    r
}

/// User + system CPU seconds used so far by the processes `pids` (all their threads).
fn cpu_seconds(pids: &[u32]) -> f64 {
    pids.iter().filter_map(|pid| deis_test_support::proc::cpu_seconds(*pid)).sum()
}

/// The worker processes of the nginx master `master`.
fn nginx_workers(master: u32) -> Vec<u32> {
    use deis_test_support::proc;
    deis_test_support::wait_for(Duration::from_secs(5), &format!("the 2 workers of nginx (pid {master})"), || {
        let workers: Vec<u32> =
            proc::pids().into_iter().filter(|pid| proc::stat(*pid).is_some_and(|s| s.ppid == master)).collect();
        (workers.len() >= 2).then_some(workers)
    })
}

fn start_nginx(dir: &std::path::Path, port: u16, backends: &[SocketAddr], tls: Option<&(String, String)>) -> Child {
    let upstreams: String = backends.iter().map(|b| format!("    server {b};\n")).collect();
    let listen = match tls {
        Some((cert, key)) => {
            std::fs::write(dir.join("bench.crt"), cert).unwrap();
            std::fs::write(dir.join("bench.key"), key).unwrap();
            format!(
                "listen 127.0.0.1:{port} ssl;\n    ssl_certificate {d}/bench.crt;\n    ssl_certificate_key {d}/bench.key;\n\
                 ssl_protocols TLSv1.2 TLSv1.3;\n    ssl_session_cache shared:SSL:10m;",
                d = dir.display()
            )
        }
        None => format!("listen 127.0.0.1:{port};"),
    };
    let conf = format!(
        "worker_processes 2;\ndaemon off;\npid {dir}/nginx.pid;\nerror_log {dir}/error.log warn;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {dir}/body;\n  proxy_temp_path {dir}/proxy;\n\
         fastcgi_temp_path {dir}/fcgi;\n  uwsgi_temp_path {dir}/uwsgi;\n  scgi_temp_path {dir}/scgi;\n\
         upstream app {{\n{upstreams}    keepalive 256;\n  }}\n\
         server {{\n    {listen}\n    server_name {HOST};\n\
         location / {{ proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection \"\";\
         proxy_set_header Host $host; proxy_set_header X-Forwarded-For $remote_addr; }}\n  }}\n}}\n",
        dir = dir.display()
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf).unwrap();
    let child = Command::new("nginx")
        .arg("-c")
        .arg(&path)
        .arg("-p")
        .arg(dir)
        .stderr(Stdio::null())
        .spawn()
        .expect("nginx is installed (apt-get install nginx-light)");
    deis_test_support::net::wait_listening(([127, 0, 0, 1], port).into(), Duration::from_secs(5));
    child
}

fn main() {
    if std::env::args().any(|a| a == "--backends") {
        run_backends();
        return;
    }
    if std::env::args().any(|a| a == "--bench") && std::env::args().count() == 2 {
        // `cargo bench` passes --bench; nothing else to parse.
    }
    let seconds = env_num("BENCH_SECONDS", 8);
    let conns = env_num("BENCH_CONNECTIONS", 64);
    let rounds = env_num("ROUNDS", 7);
    let (mut backends_proc, backends) = spawn_backends();
    // One certificate and key for both proxies.
    let tls = (scheme() == "https").then(|| {
        let ck = rcgen::generate_simple_self_signed(vec![HOST.to_string()]).unwrap();
        (ck.cert.pem(), ck.signing_key.serialize_pem())
    });

    // The deis router, fed from the embedded store exactly as deisd feeds it.
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let router_port = rt.block_on(async {
        let store: Arc<dyn Store> = RedbStore::in_memory();
        let app = App::new("web".parse().unwrap(), "bench");
        store.put(&records::app_key("web"), records::encode(&app)).await.unwrap();
        for (i, addr) in backends.iter().enumerate() {
            let unit = format!("web.web.{}", i + 1);
            let ep = Endpoint {
                app: app_name("web"),
                unit: unit.clone(),
                proc_type: process_type("web"),
                release: 1,
                address: *addr,
                node: "bench".into(),
            };
            store.put(&records::endpoint_key("web", &unit, i as u64), records::encode(&ep)).await.unwrap();
        }
        let router = Router::new(store, RouterConfig::new(DOMAIN));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let r = router.clone();
        match &tls {
            Some((cert, key)) => {
                let key = deis_sdk::certs::inspect(cert, key).unwrap().key;
                let tls = TlsListener::new(listener, key);
                tokio::spawn(async move { r.serve_with_tls(None, Some(tls), std::future::pending()).await });
            }
            None => {
                tokio::spawn(async move { r.serve(listener, std::future::pending()).await });
            }
        }
        router.synced().await;
        port
    });
    deis_test_support::net::wait_listening(([127, 0, 0, 1], router_port).into(), Duration::from_secs(5));

    let tmp = tempfile::tempdir().unwrap();
    let nginx_port = deis_test_support::free_port();
    let mut nginx = start_nginx(tmp.path(), nginx_port, &backends, tls.as_ref());

    let mut nginx_procs = nginx_workers(nginx.id());
    nginx_procs.push(nginx.id());
    let router_procs = [std::process::id()];
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let (run_router, run_nginx) = (only != "nginx", only != "router");

    // Warm up both (connection pools, caches), then alternate measured rounds.
    wrk(router_port, 2, conns);
    wrk(nginx_port, 2, conns);
    let (mut ours, mut theirs) = (vec![], vec![]);
    for _ in 0..rounds {
        if run_router {
            ours.push(measured_wrk(router_port, seconds, conns, &router_procs));
        }
        if run_nginx {
            theirs.push(measured_wrk(nginx_port, seconds, conns, &nginx_procs));
        }
    }
    // SIGTERM, not SIGKILL: the master then stops its workers (SIGKILL would orphan them).
    Command::new("kill").arg(nginx.id().to_string()).status().ok();
    nginx.wait().ok();
    backends_proc.kill().ok();
    backends_proc.wait().ok();

    let median = |v: &mut Vec<Wrk>, key: fn(&Wrk) -> f64| -> f64 {
        let mut xs: Vec<f64> = v.iter().map(key).collect();
        xs.sort_by(f64::total_cmp);
        xs.get(xs.len() / 2).copied().unwrap_or(f64::NAN)
    };
    let summary = |v: &mut Vec<Wrk>| Summary {
        rps: median(v, |w| w.rps),
        p50_ms: median(v, |w| w.p50_ms),
        p99_ms: median(v, |w| w.p99_ms),
        cpu_us: median(v, |w| w.cpu_us),
        errors: v.iter().map(|w| w.errors).sum(),
    };
    let (o, n) = (summary(&mut ours), summary(&mut theirs));
    let rounds_line = |name: &str, v: &[Wrk]| {
        let each: Vec<String> =
            v.iter().map(|w| format!("{:.0} req/s {:.1} us/req p99 {:.3} ms", w.rps, w.cpu_us, w.p99_ms)).collect();
        println!("{name} rounds: {}", each.join("; "));
    };
    rounds_line("router", &ours);
    rounds_line("nginx ", &theirs);
    if !ours.is_empty() && ours.len() == theirs.len() {
        let ahead = ours.iter().zip(&theirs).filter(|(o, n)| o.rps >= n.rps).count();
        println!("router ahead (requests/s) in {ahead} of {} round pairs", ours.len());
    }
    println!();
    println!(
        "wrk -t2 -c{conns} -d{seconds}s {}, 3 backends, {} cores, medians of {rounds} alternating rounds",
        scheme(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("| proxy | requests/s | p50 ms | p99 ms | CPU us/request | errors |");
    println!("|---|---:|---:|---:|---:|---:|");
    println!("| deis router | {:.0} | {:.3} | {:.3} | {:.1} | {} |", o.rps, o.p50_ms, o.p99_ms, o.cpu_us, o.errors);
    println!(
        "| nginx {} | {:.0} | {:.3} | {:.3} | {:.1} | {} |",
        nginx_version(),
        n.rps,
        n.p50_ms,
        n.p99_ms,
        n.cpu_us,
        n.errors
    );
    println!(
        "| ratio router/nginx | {:.2}x | {:.2}x | {:.2}x | {:.2}x | |",
        o.rps / n.rps,
        o.p50_ms / n.p50_ms,
        o.p99_ms / n.p99_ms,
        o.cpu_us / n.cpu_us
    );
}

/// Medians (each column separately) of a proxy's rounds.
struct Summary {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    cpu_us: f64,
    errors: u64,
}

fn nginx_version() -> String {
    Command::new("nginx")
        .arg("-v")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stderr).trim().trim_start_matches("nginx version: nginx/").to_string())
        .unwrap_or_default()
}
