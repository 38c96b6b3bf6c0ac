//! Router throughput and latency against nginx, same backends, same load tool, same run.
//!
//! ```sh
//! apt-get install -y nginx-light wrk        # scripts/bench does this
//! cargo bench -p deis-sdk --bench router_vs_nginx
//! ```
//!
//! Three backend units (a minimal HTTP/1.1 keep-alive server, in a separate process so
//! neither proxy shares its CPU with them) serve a 13-byte body. The deis router (from
//! the embedded store, exactly as deisd runs it) and nginx (`proxy_pass` to an upstream
//! of the same three units with keepalive) are each loaded by `wrk --latency` with the
//! same threads, connections and duration, alternating, `ROUNDS` times each. The table
//! shows the median round of each and the ratios router/nginx.
//! Environment: `BENCH_SECONDS` (default 10), `BENCH_CONNECTIONS` (64), `ROUNDS` (3).

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use deis_sdk::deis_core::App;
use deis_sdk::deis_core::store::records::{self, Endpoint};
use deis_sdk::deis_core::store::{RedbStore, Store};
use deis_sdk::router::{Router, RouterConfig};
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
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
}

fn parse_ms(s: &str) -> f64 {
    let s = s.trim();
    let (num, mult) = if let Some(v) = s.strip_suffix("us") {
        (v, 0.001)
    } else if let Some(v) = s.strip_suffix("ms") {
        (v, 1.0)
    } else if let Some(v) = s.strip_suffix('s') {
        (v, 1000.0)
    } else {
        (s, 1.0)
    };
    num.parse::<f64>().unwrap_or(f64::NAN) * mult
}

fn wrk(port: u16, seconds: u64, conns: u64) -> Wrk {
    let out = Command::new("wrk")
        .args(["-t2", &format!("-c{conns}"), &format!("-d{seconds}s"), "--latency", "-H", &format!("Host: {HOST}")])
        .arg(format!("http://127.0.0.1:{port}/"))
        .output()
        .expect("wrk is installed (apt-get install wrk)");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut r = Wrk { rps: 0.0, p50_ms: f64::NAN, p99_ms: f64::NAN, errors: 0 };
    for line in text.lines() {
        let t = line.trim();
        if let Some(v) = t.strip_prefix("Requests/sec:") {
            r.rps = v.trim().parse().unwrap_or(0.0);
        } else if let Some(v) = t.strip_prefix("50%") {
            r.p50_ms = parse_ms(v);
        } else if let Some(v) = t.strip_prefix("99%") {
            r.p99_ms = parse_ms(v);
        } else if t.starts_with("Non-2xx") || t.starts_with("Socket errors") {
            r.errors += t.split(|c: char| !c.is_ascii_digit()).filter_map(|n| n.parse::<u64>().ok()).sum::<u64>();
        }
    }
    assert!(r.rps > 0.0, "wrk output not understood:\n{text}\n{}", String::from_utf8_lossy(&out.stderr));
    r
}

fn start_nginx(dir: &std::path::Path, port: u16, backends: &[SocketAddr]) -> Child {
    let upstreams: String = backends.iter().map(|b| format!("    server {b};\n")).collect();
    let conf = format!(
        "worker_processes 2;\ndaemon off;\npid {dir}/nginx.pid;\nerror_log {dir}/error.log warn;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {dir}/body;\n  proxy_temp_path {dir}/proxy;\n\
         fastcgi_temp_path {dir}/fcgi;\n  uwsgi_temp_path {dir}/uwsgi;\n  scgi_temp_path {dir}/scgi;\n\
         upstream app {{\n{upstreams}    keepalive 256;\n  }}\n\
         server {{\n    listen 127.0.0.1:{port};\n    server_name {HOST};\n\
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
    wait_port(port);
    child
}

fn wait_port(port: u16) {
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("nothing listens on port {port}");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn main() {
    if std::env::args().any(|a| a == "--backends") {
        run_backends();
        return;
    }
    if std::env::args().any(|a| a == "--bench") && std::env::args().count() == 2 {
        // `cargo bench` passes --bench; nothing else to parse.
    }
    let seconds = env_num("BENCH_SECONDS", 10);
    let conns = env_num("BENCH_CONNECTIONS", 64);
    let rounds = env_num("ROUNDS", 3);
    let (mut backends_proc, backends) = spawn_backends();

    // The deis router, fed from the embedded store exactly as deisd feeds it.
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let router_port = rt.block_on(async {
        let store: Arc<dyn Store> = RedbStore::in_memory();
        let app = App::new("web", "bench");
        store.put(&records::app_key("web"), records::encode(&app)).await.unwrap();
        for (i, addr) in backends.iter().enumerate() {
            let unit = format!("web.web.{}", i + 1);
            let ep = Endpoint {
                app: "web".into(),
                unit: unit.clone(),
                proc_type: "web".into(),
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
        tokio::spawn(async move { r.serve(listener, std::future::pending()).await });
        router.synced().await;
        port
    });
    wait_port(router_port);

    let tmp = tempfile::tempdir().unwrap();
    let nginx_port = free_port();
    let mut nginx = start_nginx(tmp.path(), nginx_port, &backends);

    // Warm up both (connection pools, caches), then alternate measured rounds.
    wrk(router_port, 2, conns);
    wrk(nginx_port, 2, conns);
    let (mut ours, mut theirs) = (vec![], vec![]);
    for _ in 0..rounds {
        ours.push(wrk(router_port, seconds, conns));
        theirs.push(wrk(nginx_port, seconds, conns));
    }
    nginx.kill().ok();
    nginx.wait().ok();
    backends_proc.kill().ok();
    backends_proc.wait().ok();

    let median = |v: &mut Vec<Wrk>| {
        v.sort_by(|a, b| a.rps.total_cmp(&b.rps));
        v.remove(v.len() / 2)
    };
    let (o, n) = (median(&mut ours), median(&mut theirs));
    println!("wrk -t2 -c{conns} -d{seconds}s, 3 backends, median of {rounds} alternating rounds");
    println!("| proxy | requests/s | p50 ms | p99 ms | errors |");
    println!("|---|---:|---:|---:|---:|");
    println!("| deis router | {:.0} | {:.3} | {:.3} | {} |", o.rps, o.p50_ms, o.p99_ms, o.errors);
    println!("| nginx {} | {:.0} | {:.3} | {:.3} | {} |", nginx_version(), n.rps, n.p50_ms, n.p99_ms, n.errors);
    println!(
        "| ratio router/nginx | {:.2}x | {:.2}x | {:.2}x | |",
        o.rps / n.rps,
        o.p50_ms / n.p50_ms,
        o.p99_ms / n.p99_ms
    );
}

fn nginx_version() -> String {
    Command::new("nginx")
        .arg("-v")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stderr).trim().trim_start_matches("nginx version: nginx/").to_string())
        .unwrap_or_default()
}
