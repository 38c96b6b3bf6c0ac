//! Conformance suite of the `LogStore` trait.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{PROMPT, run_cases};
use crate::logs::{Cursor, FollowItem, LogEntry, LogError, LogFilter, LogFollow, LogLine, LogStore, LogStream};

/// How long the suite waits to conclude that nothing more is coming.
const QUIET: Duration = Duration::from_millis(300);

/// Runs every conformance case of [`LogStore`] against fresh stores from `make` (see
/// the [module docs](super) for the shape).
///
/// An adapter to a shared server can hand out a store scoped to a fresh key prefix.
/// Cases use their own app names and only rely on what the trait promises, plus a
/// per-app capacity of at least 100 lines; capacity specifics (1000 lines, byte
/// budgets) belong to each implementation's own tests.
///
/// Panics (failing the calling test) with the case's name and what went wrong.
pub async fn logstore_suite(make: impl AsyncFn() -> Arc<dyn LogStore>) {
    run_cases!(
        "logstore",
        [
            append_and_tail_in_order,
            tail_bounds,
            filters,
            apps_are_isolated,
            invalid_app_rejected,
            follow_now,
            follow_last,
            follow_after,
            follow_with_filter,
            follow_sees_later_lines_promptly,
            resume_without_duplicates,
            forget_clears_and_ends_followers,
            stuck_follower_does_not_block_append,
        ],
        |case| case(make().await).await
    );
}

fn web(app: &str, n: u32, msg: &str) -> LogLine {
    LogLine::from_unit(app, "web", n, LogStream::Stdout, msg)
}

fn worker(app: &str, msg: &str) -> LogLine {
    LogLine::from_unit(app, "worker", 1, LogStream::Stderr, msg)
}

fn all() -> LogFilter {
    LogFilter::default()
}

async fn append(store: &Arc<dyn LogStore>, lines: Vec<LogLine>) -> Vec<u64> {
    let n = lines.len();
    let seqs = store.append(lines).await.expect("append");
    assert_eq!(seqs.len(), n, "append returns one sequence number per line");
    seqs
}

fn messages(entries: &[LogEntry]) -> Vec<&str> {
    entries.iter().map(|e| e.line.message.as_str()).collect()
}

/// The next item, failing after [`PROMPT`].
async fn next(f: &mut LogFollow, what: &str) -> FollowItem {
    match tokio::time::timeout(PROMPT, f.next()).await {
        Ok(Some(Ok(item))) => item,
        Ok(Some(Err(e))) => panic!("{what}: follow failed: {e}"),
        Ok(None) => panic!("{what}: follow ended unexpectedly"),
        Err(_) => panic!("{what}: nothing received within {PROMPT:?}"),
    }
}

/// The next line (a `Missed` here is a failure).
async fn next_line(f: &mut LogFollow, what: &str) -> LogEntry {
    match next(f, what).await {
        FollowItem::Line(e) => e,
        FollowItem::Missed(n) => panic!("{what}: unexpected Missed({n})"),
    }
}

/// Asserts that nothing arrives for [`QUIET`].
async fn nothing_more(f: &mut LogFollow, what: &str) {
    if let Ok(item) = tokio::time::timeout(QUIET, f.next()).await {
        panic!("{what}: expected nothing more, got {item:?}");
    }
}

async fn append_and_tail_in_order(store: Arc<dyn LogStore>) {
    let lines = vec![web("order", 1, "one"), worker("order", "two"), LogLine::platform("order", "controller", "three")];
    let seqs = append(&store, lines.clone()).await;
    assert_eq!(seqs[0], 1, "the first line of an app gets sequence number 1");
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "sequence numbers are consecutive: {seqs:?}");
    let more = append(&store, vec![web("order", 2, "four")]).await;
    assert_eq!(more, vec![seqs[2] + 1], "sequence numbers continue across appends");
    let tail = store.tail("order", 10, &all()).await.unwrap();
    assert_eq!(messages(&tail), ["one", "two", "three", "four"], "tail is oldest first");
    assert_eq!(tail.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3, 4]);
    for (got, want) in tail.iter().zip(&lines) {
        assert_eq!(&got.line, want, "a line reads back exactly as appended (time, source, stream, flags)");
    }
    let mut raw = LogLine::new(
        "order",
        crate::logs::LogSource::Other { name: "syslog".into() },
        LogStream::Severity(3),
        "\u{1b}[0m ünïcode",
    );
    raw.raw = true;
    append(&store, vec![raw.clone()]).await;
    assert_eq!(store.tail("order", 1, &all()).await.unwrap()[0].line, raw, "raw flag and text survive");
}

async fn tail_bounds(store: Arc<dyn LogStore>) {
    append(&store, (0..5).map(|i| web("bounds", 1, &format!("m{i}"))).collect()).await;
    assert_eq!(store.tail("bounds", 1000, &all()).await.unwrap().len(), 5, "tail n larger than stored");
    assert_eq!(messages(&store.tail("bounds", 2, &all()).await.unwrap()), ["m3", "m4"], "tail 2 is the last 2");
    assert!(store.tail("bounds", 0, &all()).await.unwrap().is_empty(), "tail 0 is empty");
    assert!(store.tail("bounds-unknown", 10, &all()).await.unwrap().is_empty(), "unknown app has no lines");
    append(&store, (5..150).map(|i| web("bounds", 1, &format!("m{i}"))).collect()).await;
    let tail = store.tail("bounds", 100, &all()).await.unwrap();
    assert_eq!(tail.len(), 100, "a store keeps at least 100 lines per app");
    assert_eq!(tail.last().unwrap().seq, 150);
}

async fn filters(store: Arc<dyn LogStore>) {
    append(
        &store,
        vec![
            web("filt", 1, "w1"),
            worker("filt", "k1"),
            LogLine::platform("filt", "controller", "d1"),
            web("filt", 2, "w2"),
            LogLine::new("filt", crate::logs::LogSource::Other { name: "run.1".into() }, LogStream::Stdout, "o1"),
        ],
    )
    .await;
    let by_type = LogFilter { proc_type: Some("web".into()), source: None };
    assert_eq!(messages(&store.tail("filt", 10, &by_type).await.unwrap()), ["w1", "w2"]);
    assert_eq!(messages(&store.tail("filt", 1, &by_type).await.unwrap()), ["w2"], "n counts matching lines");
    let deis = LogFilter { proc_type: None, source: Some("deis".into()) };
    assert_eq!(messages(&store.tail("filt", 10, &deis).await.unwrap()), ["d1"]);
    let app = LogFilter { proc_type: None, source: Some("app".into()) };
    assert_eq!(messages(&store.tail("filt", 10, &app).await.unwrap()), ["w1", "k1", "w2", "o1"]);
    let both = LogFilter { proc_type: Some("worker".into()), source: Some("app".into()) };
    assert_eq!(messages(&store.tail("filt", 10, &both).await.unwrap()), ["k1"]);
    let seqs: Vec<u64> = store.tail("filt", 10, &by_type).await.unwrap().iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [1, 4], "filtered lines keep their sequence numbers");
}

async fn apps_are_isolated(store: Arc<dyn LogStore>) {
    let seqs = append(&store, vec![web("iso-a", 1, "a1"), web("iso-b", 1, "b1"), web("iso-a", 1, "a2")]).await;
    assert_eq!(seqs, [1, 1, 2], "sequence numbers are per app");
    assert_eq!(messages(&store.tail("iso-a", 10, &all()).await.unwrap()), ["a1", "a2"]);
    assert_eq!(messages(&store.tail("iso-b", 10, &all()).await.unwrap()), ["b1"]);
    assert!(store.tail("iso", 10, &all()).await.unwrap().is_empty(), "no prefix matching between apps");
    store.forget("iso-a").await.unwrap();
    assert_eq!(messages(&store.tail("iso-b", 10, &all()).await.unwrap()), ["b1"], "forget touches one app");
}

async fn invalid_app_rejected(store: Arc<dyn LogStore>) {
    match store.append(vec![web("", 1, "x")]).await {
        Err(LogError::Invalid(_)) => {}
        other => panic!("append with an empty app name: expected Invalid, got {other:?}"),
    }
}

async fn follow_now(store: Arc<dyn LogStore>) {
    append(&store, vec![web("fnow", 1, "old")]).await;
    let mut f = store.follow("fnow", Cursor::Now, all()).await.unwrap();
    append(&store, vec![web("fnow", 1, "new1"), web("fnow", 1, "new2")]).await;
    let a = next_line(&mut f, "follow Now").await;
    let b = next_line(&mut f, "follow Now").await;
    assert_eq!((a.seq, a.line.message.as_str(), b.seq, b.line.message.as_str()), (2, "new1", 3, "new2"));
    nothing_more(&mut f, "follow Now").await;
    // Following an app with no lines yet works too.
    let mut g = store.follow("fnow-empty", Cursor::Now, all()).await.unwrap();
    append(&store, vec![web("fnow-empty", 1, "first")]).await;
    assert_eq!(next_line(&mut g, "follow a new app").await.seq, 1);
}

async fn follow_last(store: Arc<dyn LogStore>) {
    append(&store, (1..=5).map(|i| web("flast", 1, &format!("m{i}"))).collect()).await;
    let mut f = store.follow("flast", Cursor::Last(2), all()).await.unwrap();
    assert_eq!(next_line(&mut f, "Last(2)").await.line.message, "m4");
    assert_eq!(next_line(&mut f, "Last(2)").await.line.message, "m5");
    append(&store, vec![web("flast", 1, "m6")]).await;
    assert_eq!(next_line(&mut f, "Last(2) then live").await.seq, 6);
    let mut g = store.follow("flast", Cursor::Last(100), all()).await.unwrap();
    for i in 1..=6 {
        assert_eq!(next_line(&mut g, "Last(more than stored)").await.seq, i);
    }
    nothing_more(&mut g, "Last(more than stored)").await;
}

async fn follow_after(store: Arc<dyn LogStore>) {
    append(&store, (1..=5).map(|i| web("fafter", 1, &format!("m{i}"))).collect()).await;
    let mut f = store.follow("fafter", Cursor::After(2), all()).await.unwrap();
    for i in 3..=5 {
        assert_eq!(next_line(&mut f, "After(2)").await.seq, i);
    }
    append(&store, vec![web("fafter", 1, "m6")]).await;
    assert_eq!(next_line(&mut f, "After(2) then live").await.line.message, "m6");
    let mut g = store.follow("fafter", Cursor::After(6), all()).await.unwrap();
    nothing_more(&mut g, "After(last)").await;
    append(&store, vec![web("fafter", 1, "m7")]).await;
    assert_eq!(next_line(&mut g, "After(last) then live").await.seq, 7);
}

async fn follow_with_filter(store: Arc<dyn LogStore>) {
    let by_type = LogFilter { proc_type: Some("worker".into()), source: None };
    let mut f = store.follow("ffilt", Cursor::Now, by_type.clone()).await.unwrap();
    append(&store, vec![web("ffilt", 1, "w"), worker("ffilt", "k1"), LogLine::platform("ffilt", "c", "d")]).await;
    append(&store, vec![worker("ffilt", "k2")]).await;
    let a = next_line(&mut f, "filtered follow").await;
    let b = next_line(&mut f, "filtered follow").await;
    assert_eq!((a.seq, a.line.message.as_str(), b.seq, b.line.message.as_str()), (2, "k1", 4, "k2"));
    nothing_more(&mut f, "filtered follow").await;
    let deis = LogFilter { proc_type: None, source: Some("deis".into()) };
    let mut g = store.follow("ffilt", Cursor::Last(1), deis).await.unwrap();
    assert_eq!(next_line(&mut g, "Last(1) with a filter").await.line.message, "d", "Last(n) counts matching lines");
}

async fn follow_sees_later_lines_promptly(store: Arc<dyn LogStore>) {
    let mut f = store.follow("fprompt", Cursor::Now, all()).await.unwrap();
    for i in 0..20u32 {
        let sent = Instant::now();
        append(&store, vec![web("fprompt", 1, &format!("tick {i}"))]).await;
        let e = next_line(&mut f, "prompt follow").await;
        assert_eq!(e.line.message, format!("tick {i}"));
        assert!(sent.elapsed() < Duration::from_secs(1), "a followed line took {:?}", sent.elapsed());
        if i % 5 == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn resume_without_duplicates(store: Arc<dyn LogStore>) {
    append(&store, (1..=3).map(|i| web("resume", 1, &format!("m{i}"))).collect()).await;
    let mut f = store.follow("resume", Cursor::Last(3), all()).await.unwrap();
    let mut last = 0;
    for _ in 0..2 {
        last = next_line(&mut f, "before resume").await.seq;
    }
    drop(f);
    append(&store, (4..=6).map(|i| web("resume", 1, &format!("m{i}"))).collect()).await;
    let mut g = store.follow("resume", Cursor::After(last), all()).await.unwrap();
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(next_line(&mut g, "after resume").await.seq);
    }
    assert_eq!(got, [3, 4, 5, 6], "a resume delivers every later line exactly once");
    nothing_more(&mut g, "after resume").await;
}

async fn forget_clears_and_ends_followers(store: Arc<dyn LogStore>) {
    append(&store, vec![web("forget", 1, "a"), web("forget", 1, "b")]).await;
    let mut f = store.follow("forget", Cursor::Now, all()).await.unwrap();
    store.forget("forget").await.unwrap();
    assert!(store.tail("forget", 10, &all()).await.unwrap().is_empty(), "forget clears the lines");
    let deadline = Instant::now() + PROMPT;
    loop {
        match tokio::time::timeout_at(deadline.into(), f.next()).await {
            Ok(None) => break,
            Ok(Some(Ok(FollowItem::Line(e)))) => panic!("a forgotten app's follower got a line: {e:?}"),
            Ok(Some(_)) => {}
            Err(_) => panic!("forget did not end the follower within {PROMPT:?}"),
        }
    }
    store.forget("forget").await.unwrap();
    store.forget("forget-never-existed").await.unwrap();
    let seqs = append(&store, vec![web("forget", 1, "again")]).await;
    assert_eq!(store.tail("forget", 10, &all()).await.unwrap().len(), 1, "an app can log again after forget");
    assert!(seqs[0] >= 1);
}

async fn stuck_follower_does_not_block_append(store: Arc<dyn LogStore>) {
    const N: u64 = 10_000;
    let mut f = store.follow("stuck", Cursor::Now, all()).await.unwrap();
    let started = Instant::now();
    for chunk in 0..N / 100 {
        let lines = (0..100).map(|i| web("stuck", 1, &format!("line {}", chunk * 100 + i + 1))).collect();
        tokio::time::timeout(PROMPT, store.append(lines))
            .await
            .expect("append blocked behind a follower that does not read")
            .unwrap();
    }
    let took = started.elapsed();
    assert!(took < Duration::from_secs(20), "appending {N} lines with a stuck follower took {took:?}");
    // The follower now reads: every line is delivered once or counted as missed, in order.
    let (mut expect, mut lines, mut missed) = (1u64, 0u64, 0u64);
    while expect <= N {
        match next(&mut f, "stuck follower catching up").await {
            FollowItem::Line(e) => {
                assert_eq!(e.seq, expect, "lines in order, none twice, gaps reported");
                assert_eq!(e.line.message, format!("line {}", e.seq));
                lines += 1;
                expect += 1;
            }
            FollowItem::Missed(n) => {
                assert!(n > 0, "Missed(0)");
                missed += n;
                expect += n;
            }
        }
    }
    assert_eq!(expect, N + 1, "missed counts overshoot: {lines} lines + {missed} missed");
    // It follows on live after catching up.
    append(&store, vec![web("stuck", 1, "live")]).await;
    assert_eq!(next_line(&mut f, "stuck follower live again").await.seq, N + 1);
}
