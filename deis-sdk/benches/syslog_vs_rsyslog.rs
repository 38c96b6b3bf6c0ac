//! Syslog ingest throughput, loss, follow latency and memory, against rsyslog in the
//! same run.
//!
//! ```sh
//! apt-get install -y rsyslog            # scripts/install-deps does this
//! cargo bench -p deis-sdk --bench syslog_vs_rsyslog
//! ```
//!
//! - **parse + append, 1 core**: RFC 5424 lines parsed, mapped and appended to a
//!   `RingLogStore` by one thread, no sockets.
//! - **TCP**: a load generator (plain threads, pre-built buffers) sends `BENCH_MESSAGES`
//!   octet-counted RFC 5424 lines (about 110 bytes, 100 apps) over `BENCH_CONNECTIONS`
//!   loopback connections to our `SyslogServer` + `RingLogStore` (a 2-worker tokio
//!   runtime) and then, in the same run, to Debian's `rsyslogd` (imtcp -> omfile in a
//!   temp dir). Rate = messages / time until the last one is stored (ours: counters;
//!   rsyslog: lines in its output file). Loss = sent - stored.
//! - **UDP**: the same lines paced at `BENCH_UDP_RATE` datagrams/s; loss counted.
//! - **Follow latency**: lines paced at `BENCH_FOLLOW_RATE` (default 100k/s) over TCP to
//!   one app, each carrying its send time; a follower of that app measures p50/p99.
//! - **Memory**: RSS growth (in a fresh child process) of a store fed 10k apps x 1000
//!   lines, with the budget raised so nothing is evicted, and with the default 256 MiB.
//!
//! The machine's cores are shared by generator and receiver alike, for both receivers.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use deis_sdk::deis_core::logs::syslog::{parse, to_log_line};
use deis_sdk::deis_core::logs::{
    Cursor, FollowItem, LogFilter, LogLine, LogStore, LogStream, RingConfig, RingLogStore,
};
use deis_sdk::logger::{SyslogConfig, SyslogServer};

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn message(i: u64) -> String {
    format!(
        "<14>1 2026-11-25T14:47:21.123456Z bench app{}.web.1 - - - request {i:08} served in 12ms path=/index.html",
        i % 100
    )
}

/// `count` octet-counted messages, split into `conns` buffers.
fn tcp_payloads(count: u64, conns: u64) -> Vec<Vec<u8>> {
    let mut bufs: Vec<Vec<u8>> = (0..conns).map(|_| Vec::new()).collect();
    for i in 0..count {
        let m = message(i);
        let b = &mut bufs[(i % conns) as usize];
        b.extend_from_slice(format!("{} ", m.len()).as_bytes());
        b.extend_from_slice(m.as_bytes());
    }
    bufs
}

/// Sends the buffers on one connection each, in parallel threads.
fn send_tcp(addr: SocketAddr, payloads: &[Vec<u8>]) {
    std::thread::scope(|s| {
        for p in payloads {
            s.spawn(move || {
                let mut c = TcpStream::connect(addr).expect("connect to the receiver");
                for chunk in p.chunks(256 * 1024) {
                    c.write_all(chunk).expect("send");
                }
            });
        }
    });
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0);
    pages * 4096
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p) as usize] as f64
}

fn now_nanos() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64
}

struct Row {
    what: String,
    rate: f64,
    loss: u64,
    note: String,
}

impl Row {
    /// A receiver that kept `parsed` of `sent` messages in `elapsed`.
    fn measured(what: String, sent: u64, parsed: u64, elapsed: Duration, note: String) -> Self {
        Row { what, rate: parsed as f64 / elapsed.as_secs_f64(), loss: sent - parsed, note }
    }
}

fn parse_append_one_core(n: u64) -> f64 {
    let store = RingLogStore::new();
    let msgs: Vec<String> = (0..n).map(message).collect();
    let started = Instant::now();
    for chunk in msgs.chunks(256) {
        let now = SystemTime::now();
        let lines: Vec<LogLine> = chunk.iter().map(|m| to_log_line(&parse(m.as_bytes(), now))).collect();
        store.append_sync(lines).unwrap();
    }
    n as f64 / started.elapsed().as_secs_f64()
}

async fn ours_tcp(n: u64, conns: u64) -> Row {
    let store = RingLogStore::new();
    let config = SyslogConfig { tcp_addr: Some("127.0.0.1:0".parse().unwrap()), ..SyslogConfig::default() };
    let server = SyslogServer::start(config, Arc::new(store)).await.unwrap();
    let addr = server.tcp_addr().unwrap();
    let payloads = tcp_payloads(n, conns);
    let started = Instant::now();
    let sender = tokio::task::spawn_blocking(move || send_tcp(addr, &payloads));
    let counters = server.counters().clone();
    let mut last_change = Instant::now();
    let mut last = 0;
    loop {
        let stored = counters.snapshot().parsed;
        if stored >= n {
            break;
        }
        if stored != last {
            last = stored;
            last_change = Instant::now();
        } else if last_change.elapsed() > Duration::from_secs(5) {
            break;
        }
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    let elapsed = started.elapsed();
    sender.await.unwrap();
    let c = counters.snapshot();
    server.shutdown().await;
    let note = format!("{} msgs in {:.2} s", c.parsed, elapsed.as_secs_f64());
    Row::measured(format!("deis SyslogServer+RingLogStore, TCP x{conns}"), n, c.parsed, elapsed, note)
}

async fn ours_udp(n: u64, rate: u64) -> Row {
    let store = RingLogStore::new();
    let config = SyslogConfig { udp_addr: Some("127.0.0.1:0".parse().unwrap()), ..SyslogConfig::default() };
    let server = SyslogServer::start(config, Arc::new(store)).await.unwrap();
    let addr = server.udp_addr().unwrap();
    let msgs: Vec<String> = (0..n).map(message).collect();
    let started = Instant::now();
    let sender = tokio::task::spawn_blocking(move || {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let t0 = Instant::now();
        for (i, m) in msgs.iter().enumerate() {
            // Pace: stay at or below the target rate.
            let due = Duration::from_secs_f64(i as f64 / rate as f64);
            while t0.elapsed() < due {
                std::hint::spin_loop();
            }
            let _ = sock.send_to(m.as_bytes(), addr);
        }
    });
    sender.await.unwrap();
    let counters = server.counters().clone();
    // Done when the count stops moving; the time is that of the last change.
    let (mut last, mut at) = (counters.snapshot().received, started.elapsed());
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = counters.snapshot().received;
        if now == last {
            break;
        }
        (last, at) = (now, started.elapsed());
    }
    let elapsed = at;
    let c = counters.snapshot();
    server.shutdown().await;
    let note = format!("{} of {n} datagrams", c.parsed);
    Row::measured(format!("deis SyslogServer+RingLogStore, UDP paced at {rate}/s"), n, c.parsed, elapsed, note)
}

/// Follow latency at `rate` messages/s for `secs` seconds: (p50 ms, p99 ms, samples, missed).
async fn follow_latency(rate: u64, secs: u64) -> (f64, f64, usize, u64) {
    let store = RingLogStore::new();
    let config = SyslogConfig { tcp_addr: Some("127.0.0.1:0".parse().unwrap()), ..SyslogConfig::default() };
    let server = SyslogServer::start(config, Arc::new(store.clone())).await.unwrap();
    let addr = server.tcp_addr().unwrap();
    let mut follow = store.follow("lat", Cursor::Now, LogFilter::default()).await.unwrap();
    let total = rate * secs;
    let follower = tokio::spawn(async move {
        let mut samples = Vec::with_capacity(total as usize);
        let mut missed = 0;
        while (samples.len() as u64 + missed) < total {
            match tokio::time::timeout(Duration::from_secs(5), follow.next()).await {
                Ok(Some(Ok(FollowItem::Line(e)))) => {
                    let sent: u64 = e.line.message.split(' ').next().and_then(|t| t.parse().ok()).unwrap_or(0);
                    samples.push(now_nanos().saturating_sub(sent));
                }
                Ok(Some(Ok(FollowItem::Missed(n)))) => missed += n,
                _ => break,
            }
        }
        (samples, missed)
    });
    tokio::task::spawn_blocking(move || {
        let mut c = TcpStream::connect(addr).unwrap();
        c.set_nodelay(true).unwrap();
        let t0 = Instant::now();
        let per_ms = (rate / 1000).max(1);
        let mut sent = 0;
        let mut buf = Vec::new();
        while sent < total {
            let due = Duration::from_micros(sent * 1000 / per_ms);
            while t0.elapsed() < due {
                std::thread::sleep(Duration::from_micros(50));
            }
            buf.clear();
            let ts = now_nanos();
            for _ in 0..per_ms.min(total - sent) {
                let m = format!("<14>1 - bench lat.web.1 - - - {ts} follow latency probe");
                buf.extend_from_slice(format!("{} {m}", m.len()).as_bytes());
                sent += 1;
            }
            c.write_all(&buf).unwrap();
        }
    })
    .await
    .unwrap();
    let (mut samples, missed) = follower.await.unwrap();
    server.shutdown().await;
    samples.sort_unstable();
    (percentile(&samples, 0.5) / 1e6, percentile(&samples, 0.99) / 1e6, samples.len(), missed)
}

/// Child-process mode: fills a store with `apps` x `lines` lines under `budget` and
/// prints `lines bytes peak_rss_bytes` (a fresh process, so RSS is the store's).
fn memory_child(apps: usize, lines: usize, budget: usize) {
    let before = rss_bytes();
    let store = RingLogStore::with_config(RingConfig { global_bytes: budget, ..RingConfig::default() });
    for round in 0..lines / 100 {
        for a in 0..apps {
            let app = format!("app{a:05}");
            let batch = (0..100)
                .map(|i| {
                    let msg = format!("request {:08} served in 12ms path=/index.html", round * 100 + i);
                    LogLine::from_unit(&app, "web", 1, LogStream::Stdout, &msg)
                })
                .collect();
            store.append_sync(batch).unwrap();
        }
    }
    let stats = store.stats();
    println!("{} {} {}", stats.lines, stats.bytes, rss_bytes().saturating_sub(before));
}

/// Runs [`memory_child`] in a fresh process: (RSS growth MiB, lines held, bytes accounted).
fn memory(budget: usize) -> (f64, usize, usize) {
    let out = Command::new(std::env::current_exe().unwrap())
        .env("BENCH_MEMORY_CHILD", budget.to_string())
        .output()
        .expect("re-running the bench for the memory figure");
    let text = String::from_utf8_lossy(&out.stdout);
    let v: Vec<u64> = text.split_whitespace().filter_map(|x| x.parse().ok()).collect();
    assert_eq!(v.len(), 3, "memory child printed {text:?}");
    (v[2] as f64 / (1 << 20) as f64, v[0] as usize, v[1] as usize)
}

struct Rsyslog {
    child: Child,
    port: u16,
    out: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

fn start_rsyslog() -> Option<Rsyslog> {
    let bin = ["/usr/sbin/rsyslogd", "rsyslogd"].into_iter().find(|b| Command::new(b).arg("-v").output().is_ok())?;
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let out = dir.path().join("out.log");
    let port = deis_test_support::free_port();
    let conf = dir.path().join("rsyslog.conf");
    std::fs::write(
        &conf,
        format!(
            "global(workDirectory=\"{work}\")\n\
             module(load=\"imtcp\" MaxSessions=\"1000\")\n\
             input(type=\"imtcp\" address=\"127.0.0.1\" port=\"{port}\")\n\
             *.* action(type=\"omfile\" file=\"{out}\")\n",
            work = work.display(),
            out = out.display()
        ),
    )
    .unwrap();
    let child = Command::new(bin)
        .arg("-n")
        .arg("-f")
        .arg(&conf)
        .arg("-i")
        .arg(dir.path().join("rsyslogd.pid"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    deis_test_support::net::wait_listening(([127, 0, 0, 1], port).into(), Duration::from_secs(10));
    Some(Rsyslog { child, port, out, _dir: dir })
}

fn count_lines(path: &std::path::Path, from: &mut u64, lines: &mut u64) {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(path) else { return };
    if f.seek(SeekFrom::Start(*from)).is_err() {
        return;
    }
    let mut buf = vec![0u8; 1 << 20];
    while let Ok(n) = f.read(&mut buf) {
        if n == 0 {
            break;
        }
        *lines += buf[..n].iter().filter(|b| **b == b'\n').count() as u64;
        *from += n as u64;
    }
}

fn rsyslog_tcp(rs: &Rsyslog, n: u64, conns: u64) -> Row {
    let addr: SocketAddr = ([127, 0, 0, 1], rs.port).into();
    // rsyslog may log its own startup line into the file: count from here.
    std::thread::sleep(Duration::from_millis(300));
    let (mut offset, mut base) = (0u64, 0u64);
    count_lines(&rs.out, &mut offset, &mut base);
    let payloads = tcp_payloads(n, conns);
    let started = Instant::now();
    let sender = std::thread::spawn(move || send_tcp(addr, &payloads));
    let mut lines = 0;
    let mut last_change = Instant::now();
    let mut last = 0;
    while lines < n {
        count_lines(&rs.out, &mut offset, &mut lines);
        if lines != last {
            last = lines;
            last_change = Instant::now();
        } else if last_change.elapsed() > Duration::from_secs(5) {
            break;
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    let elapsed = started.elapsed();
    sender.join().unwrap();
    Row {
        what: format!("rsyslogd {} imtcp -> omfile, TCP x{conns}", rsyslog_version()),
        rate: lines as f64 / elapsed.as_secs_f64(),
        loss: n.saturating_sub(lines),
        note: format!("{lines} lines in {:.2} s", elapsed.as_secs_f64()),
    }
}

fn rsyslog_version() -> String {
    Command::new("/usr/sbin/rsyslogd")
        .arg("-v")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).lines().next().map(str::to_string))
        .and_then(|l| l.split_whitespace().nth(1).map(|v| v.trim_end_matches(',').to_string()))
        .unwrap_or_default()
}

fn main() {
    if let Some(budget) = std::env::var("BENCH_MEMORY_CHILD").ok().and_then(|b| b.parse().ok()) {
        memory_child(10_000, 1000, budget);
        return;
    }
    let n = env_num("BENCH_MESSAGES", 1_000_000);
    let conns = env_num("BENCH_CONNECTIONS", 4);
    let udp_rate = env_num("BENCH_UDP_RATE", 200_000);
    let follow_rate = env_num("BENCH_FOLLOW_RATE", 100_000);
    let cores = std::thread::available_parallelism().map_or(0, |c| c.get());
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();

    let one_core = parse_append_one_core(n.min(1_000_000));
    let ours = rt.block_on(ours_tcp(n, conns));
    let theirs = start_rsyslog().map(|mut rs| {
        let row = rsyslog_tcp(&rs, n, conns);
        let _ = Command::new("kill").args(["-TERM", &rs.child.id().to_string()]).status();
        let _ = rs.child.wait();
        row
    });
    let udp = rt.block_on(ours_udp(n.min(500_000), udp_rate));
    let (p50, p99, samples, missed) = rt.block_on(follow_latency(follow_rate, 3));
    let (mem_full, lines_full, bytes_full) = memory(8 << 30);
    let (mem_default, lines_default, bytes_default) = memory(RingConfig::default().global_bytes);

    println!("\n{cores} cores; {n} RFC 5424 messages (~110 bytes, 100 apps); generator and receiver share the cores\n");
    println!("| receiver | messages/s | loss | notes |");
    println!("|---|---:|---:|---|");
    println!("| deis parse + append (in process, 1 core) | {one_core:.0} | 0 | no sockets |");
    let mut rows = vec![ours];
    if let Some(t) = theirs {
        rows.push(t);
    }
    rows.push(udp);
    for r in &rows {
        println!("| {} | {:.0} | {} | {} |", r.what, r.rate, r.loss, r.note);
    }
    if rows.len() == 3 {
        println!("| ratio deis/rsyslog (TCP) | {:.2}x | | |", rows[0].rate / rows[1].rate);
    } else {
        println!("| rsyslog | not installed (apt-get install rsyslog) | | |");
    }
    println!();
    println!("| follow latency at {follow_rate} msg/s (3 s, one app) | value |");
    println!("|---|---:|");
    println!("| p50 | {p50:.3} ms |");
    println!("| p99 | {p99:.3} ms |");
    println!("| lines seen / missed | {samples} / {missed} |");
    println!();
    println!("| memory, 10k apps x 1000 lines (~45-byte messages) | RSS growth | lines held | bytes accounted |");
    println!("|---|---:|---:|---:|");
    println!("| budget 8 GiB (nothing evicted) | {mem_full:.0} MiB | {lines_full} | {} MiB |", bytes_full >> 20);
    println!("| default budget 256 MiB | {mem_default:.0} MiB | {lines_default} | {} MiB |", bytes_default >> 20);
}
