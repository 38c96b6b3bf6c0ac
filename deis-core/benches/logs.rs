//! In-process logger benchmark: RFC 5424 parse + route + append into a `RingLogStore`
//! on one core, and memory at 10k apps x 1000 lines.
//!
//! `cargo bench -p deis-core --bench logs [-- [ingest] [memory] [unbounded] [<messages>]]`:
//! default `memory ingest` with 2M messages. `memory` runs first so its RSS baseline is
//! clean; `unbounded` adds the 10k x 1000 run with a 4 GiB budget (everything kept).

use std::hint::black_box;
use std::time::{Instant, SystemTime};

use deis_core::logs::{LogFilter, LogLine, LogStream, RingConfig, RingLogStore, syslog};

/// Resident set size of this process, in MiB (from /proc/self/status).
fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

/// `n` Docker-style RFC 5424 messages (rfc5424micro, LF stripped) over 100 apps.
fn messages(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let app = i % 100;
            let stream = if i % 10 == 0 { 27 } else { 30 };
            format!(
                "<{stream}>1 2026-11-25T14:47:21.{:06}Z vm app-{app}.web.{} 2905 app-{app}.web.{} - \
                 GET /api/items/{i} 200 in 12ms user_agent=\"curl/8.5\" request_id=9f2c4e1a",
                i % 1_000_000,
                i % 3 + 1,
                i % 3 + 1,
            )
            .into_bytes()
        })
        .collect()
}

fn ingest(n: usize) {
    let msgs = messages(n);
    let bytes: usize = msgs.iter().map(Vec::len).sum();
    let received = SystemTime::now();

    let t = Instant::now();
    for m in &msgs {
        black_box(syslog::to_log_line(&syslog::parse(m, received)));
    }
    let parse_s = t.elapsed().as_secs_f64();

    let store = RingLogStore::new();
    let t = Instant::now();
    let mut batch = Vec::with_capacity(64);
    for m in &msgs {
        batch.push(syslog::to_log_line(&syslog::parse(m, received)));
        if batch.len() == 64 {
            store.append_sync(std::mem::take(&mut batch)).unwrap();
        }
    }
    store.append_sync(batch).unwrap();
    let total_s = t.elapsed().as_secs_f64();

    let store1 = RingLogStore::new();
    let t = Instant::now();
    for m in &msgs {
        store1.append_sync(vec![syslog::to_log_line(&syslog::parse(m, received))]).unwrap();
    }
    let single_s = t.elapsed().as_secs_f64();

    let avg = bytes / n.max(1);
    println!("ingest: {n} RFC 5424 messages ({avg} bytes avg) over 100 apps, one thread");
    println!("  parse + route only:            {:>10.0} msg/s", n as f64 / parse_s);
    println!(
        "  parse + route + append (x64):  {:>10.0} msg/s  ({:.1} MB/s)",
        n as f64 / total_s,
        bytes as f64 / total_s / 1e6
    );
    println!("  parse + route + append (x1):   {:>10.0} msg/s", n as f64 / single_s);
    let kept = store.tail_sync("app-7", 5000, &LogFilter::default()).len();
    println!("  lines kept for app-7: {kept} (capacity 1000)");
}

fn memory(unbounded: bool) {
    let msg = "GET /api/items/1234 200 in 12ms user_agent=\"curl/8.5\" request_id=9f2c4e1a";
    let mut runs = vec![("default budget 256 MiB", RingConfig::default())];
    if unbounded {
        runs.push(("budget 4 GiB (everything kept)", RingConfig { global_bytes: 4 << 30, ..RingConfig::default() }));
    }
    for (label, cfg) in runs {
        let before = rss_mib();
        let store = RingLogStore::with_config(cfg);
        let t = Instant::now();
        for round in 0..1000 {
            let batch: Vec<LogLine> = (0..10_000)
                .map(|app| LogLine::from_unit(&format!("app-{app}"), "web", 1, LogStream::Stdout, msg))
                .collect();
            store.append_sync(batch).unwrap();
            if round == 999 {
                break;
            }
        }
        let secs = t.elapsed().as_secs_f64();
        let st = store.stats();
        let after = rss_mib();
        println!("memory: 10k apps x 1000 lines ({} byte messages), {label}", msg.len());
        println!(
            "  appended 10M lines in {secs:.1}s ({:.0} lines/s); held {} apps, {} lines, {:.1} MiB accounted",
            1e7 / secs,
            st.apps,
            st.lines,
            st.bytes as f64 / 1048576.0
        );
        println!(
            "  RSS {before:.0} -> {after:.0} MiB (+{:.0} MiB); evicted by budget {}, passes {}",
            after - before,
            st.evicted_by_budget,
            st.eviction_passes
        );
        drop(store);
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let n = args.iter().find_map(|a| a.parse().ok()).unwrap_or(2_000_000);
    let has = |w: &str| args.iter().any(|a| a == w);
    let all = !has("ingest") && !has("memory") && !has("unbounded");
    if all || has("memory") || has("unbounded") {
        memory(has("unbounded"));
    }
    if all || has("ingest") {
        ingest(n);
    }
}
