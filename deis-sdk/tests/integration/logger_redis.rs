//! `RedisLogStore` against a real `redis-server` started by the test.
#![cfg(feature = "redis")]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use deis_sdk::deis_core::logs::{Cursor, FollowItem, LogFilter, LogFollow, LogLine, LogStore, LogStream};
use deis_sdk::logger::{RedisLogStore, RedisLogStoreConfig};
use deis_test_support::redis::RedisServer;
use deis_test_support::{Service, free_port};

async fn store(redis: &RedisServer, prefix: &str) -> RedisLogStore {
    let mut c = RedisLogStoreConfig::new(redis.url());
    c.key_prefix = prefix.into();
    RedisLogStore::connect(c).await.unwrap()
}

fn line(app: &str, msg: &str) -> LogLine {
    LogLine::from_unit(app, "web", 1, LogStream::Stdout, msg)
}

async fn next(f: &mut LogFollow) -> FollowItem {
    tokio::time::timeout(Duration::from_secs(5), f.next()).await.expect("a follow item within 5 s").unwrap().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_the_logstore_conformance_suite() {
    let Some(redis) = RedisServer::shared() else { return };
    let url = redis.url();
    let n = AtomicUsize::new(0);
    deis_sdk::deis_core::testing::logstore_suite(|| {
        let mut c = RedisLogStoreConfig::new(url.clone());
        c.key_prefix = format!("suite{}:", n.fetch_add(1, Ordering::Relaxed));
        async move { Arc::new(RedisLogStore::connect(c).await.unwrap()) as Arc<dyn LogStore> }
    })
    .await;
}

/// A new store instance (a restarted logger) resumes a follow with `After(seq)`: no
/// duplicates, nothing lost, and lines that left the list meanwhile reported as missed.
#[tokio::test]
async fn follow_resumes_after_a_logger_restart() {
    let Some(redis) = RedisServer::shared() else { return };
    let first = store(redis, "r:").await;
    let mut f = first.follow("hello", Cursor::Now, LogFilter::default()).await.unwrap();
    first.append((0..3).map(|i| line("hello", &format!("before {i}"))).collect()).await.unwrap();
    let mut last = 0;
    for i in 0..3 {
        match next(&mut f).await {
            FollowItem::Line(e) => {
                assert_eq!(e.line.message, format!("before {i}"));
                last = e.seq;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    // The logger goes away; lines keep arriving through another logger meanwhile.
    drop(f);
    drop(first);
    let other = store(redis, "r:").await;
    other.append(vec![line("hello", "during restart")]).await.unwrap();
    let restarted = store(redis, "r:").await;
    let mut f = restarted.follow("hello", Cursor::After(last), LogFilter::default()).await.unwrap();
    match next(&mut f).await {
        FollowItem::Line(e) => assert_eq!((e.seq, e.line.message.as_str()), (last + 1, "during restart")),
        other => panic!("unexpected {other:?}"),
    }
    other.append(vec![line("hello", "after restart")]).await.unwrap();
    match next(&mut f).await {
        FollowItem::Line(e) => assert_eq!((e.seq, e.line.message.as_str()), (last + 2, "after restart")),
        other => panic!("unexpected {other:?}"),
    }
    assert!(tokio::time::timeout(Duration::from_millis(300), f.next()).await.is_err(), "no duplicates");

    // Lines that left the capped list before the resume are reported as missed.
    let mut c = RedisLogStoreConfig::new(redis.url());
    c.key_prefix = "r:".into();
    c.lines_per_app = 5;
    let small = RedisLogStore::connect(c).await.unwrap();
    let seqs = small.append((0..20).map(|i| line("hello", &format!("burst {i}"))).collect()).await.unwrap();
    let mut f = small.follow("hello", Cursor::After(last + 2), LogFilter::default()).await.unwrap();
    assert_eq!(next(&mut f).await, FollowItem::Missed(15));
    match next(&mut f).await {
        FollowItem::Line(e) => assert_eq!((e.seq, e.line.message.as_str()), (seqs[15], "burst 15")),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn loggers_sharing_redis_share_numbering_and_followers() {
    let Some(redis) = RedisServer::shared() else { return };
    let (a, b) = (store(redis, "s:").await, store(redis, "s:").await);
    let mut f = a.follow("hello", Cursor::Now, LogFilter::default()).await.unwrap();
    let mut tasks = Vec::new();
    for (k, s) in [a.clone(), b.clone()].into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            for i in 0..50 {
                s.append(vec![line("hello", &format!("{k}-{i}"))]).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let tail = b.tail("hello", 1000, &LogFilter::default()).await.unwrap();
    assert_eq!(tail.iter().map(|e| e.seq).collect::<Vec<_>>(), (1..=100).collect::<Vec<_>>());
    for seq in 1..=100 {
        match next(&mut f).await {
            FollowItem::Line(e) => assert_eq!(e.seq, seq),
            other => panic!("unexpected {other:?}"),
        }
    }
    // Forgetting through one logger ends the followers of the other.
    b.forget("hello").await.unwrap();
    assert!(tokio::time::timeout(Duration::from_secs(5), f.next()).await.unwrap().is_none());
    assert!(a.tail("hello", 10, &LogFilter::default()).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_follower_neither_blocks_appends_nor_grows() {
    let Some(redis) = RedisServer::shared() else { return };
    let mut c = RedisLogStoreConfig::new(redis.url());
    c.key_prefix = "stuck:".into();
    c.follower_buffer = 8;
    c.lines_per_app = 100;
    let s = RedisLogStore::connect(c).await.unwrap();
    let mut f = s.follow("hello", Cursor::Now, LogFilter::default()).await.unwrap();
    let started = Instant::now();
    for chunk in 0..50 {
        s.append((0..100).map(|i| line("hello", &format!("{chunk}-{i}"))).collect()).await.unwrap();
    }
    assert!(started.elapsed() < Duration::from_secs(10), "appends took {:?}", started.elapsed());
    let (mut lines, mut missed, mut last) = (0u64, 0u64, 0u64);
    while last < 5000 {
        match next(&mut f).await {
            FollowItem::Line(e) => {
                assert!(e.seq > last, "in order, no duplicates");
                last = e.seq;
                lines += 1;
            }
            FollowItem::Missed(n) => missed += n,
        }
    }
    assert!(missed > 0);
    assert_eq!(lines + missed, 5000);
}

#[tokio::test]
async fn connect_errors_say_what_to_do() {
    let port = free_port();
    let err = RedisLogStore::connect(RedisLogStoreConfig::new(format!("redis://127.0.0.1:{port}"))).await.unwrap_err();
    assert!(err.to_string().contains("is redis-server running"), "{err}");
    let err = RedisLogStore::connect(RedisLogStoreConfig::new("http://nope")).await.unwrap_err();
    assert!(err.to_string().contains("invalid Redis URL"), "{err}");
}
