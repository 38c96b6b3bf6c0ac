//! [`RedisLogStore`]: logs in Redis, so they survive a logger restart and several
//! loggers can share them.
//!
//! Keys per app (prefix default `deis:logs:`):
//! - `<prefix><app>:seq`: the app's last sequence number (`INCRBY`);
//! - `<prefix><app>:lines`: the capped list of entries, oldest first, each the JSON of
//!   a [`LogEntry`] (`{"seq":N,"line":{...}}`), trimmed to the capacity on every append;
//! - channel `<prefix><app>:live`: each append publishes its entries as a JSON array;
//!   forgetting the app publishes `end`.
//!
//! Appends run as one Lua script per app (numbering, push, trim and publish are atomic),
//! so sequence numbers follow list order even with several loggers writing. The list
//! holds consecutive sequence numbers, which lets a reader seek by sequence number.
//!
//! A follower subscribes first, then reads the list after its cursor, then takes live
//! entries from the channel while they follow its cursor without a gap. It always
//! drains the channel; when its consumer is slow or a message is missing it reads the
//! list again from its cursor, so its memory stays bounded and nothing is delivered
//! twice; lines that left the list meanwhile are reported as [`FollowItem::Missed`].

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deis_core::logs::{Cursor, FollowItem, LogEntry, LogError, LogFilter, LogFollow, LogLine, LogStore};
use futures_util::StreamExt;
use redis::aio::MultiplexedConnection;
use tokio::sync::mpsc;

/// Settings of a [`RedisLogStore`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RedisLogStoreConfig {
    /// `redis://[:password@]host:port[/db]`.
    pub url: String,
    /// Lines kept per app (default 1000).
    pub lines_per_app: usize,
    /// Key and channel prefix (default `deis:logs:`); loggers sharing logs use the same.
    pub key_prefix: String,
    /// Items buffered per follower before it reads from the list instead (default 1024).
    pub follower_buffer: usize,
    /// Time allowed for one Redis command (default 5 s).
    pub response_timeout: Duration,
}

impl RedisLogStoreConfig {
    /// Defaults for the Redis server at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            lines_per_app: 1000,
            key_prefix: "deis:logs:".into(),
            follower_buffer: 1024,
            response_timeout: Duration::from_secs(5),
        }
    }
}

/// The Redis-backed [`LogStore`]. Cheap to clone.
#[derive(Clone)]
pub struct RedisLogStore {
    inner: Arc<Inner>,
}

struct Inner {
    client: redis::Client,
    conn: MultiplexedConnection,
    config: RedisLogStoreConfig,
}

impl std::fmt::Debug for RedisLogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLogStore")
            .field("key_prefix", &self.inner.config.key_prefix)
            .field("lines_per_app", &self.inner.config.lines_per_app)
            .finish_non_exhaustive()
    }
}

/// Numbers, pushes, trims and publishes one app's lines.
/// KEYS: seq, lines. ARGV: capacity, channel, line JSON...
const APPEND_SCRIPT: &str = r#"
local n = #ARGV - 2
local last = redis.call('INCRBY', KEYS[1], n)
local first = last - n + 1
local entries = {}
for i = 1, n do
  entries[i] = '{"seq":' .. string.format('%d', first + i - 1) .. ',"line":' .. ARGV[i + 2] .. '}'
end
for i = 1, n, 1000 do
  redis.call('RPUSH', KEYS[2], unpack(entries, i, math.min(i + 999, n)))
end
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[1]), -1)
redis.call('PUBLISH', ARGV[2], '[' .. table.concat(entries, ',') .. ']')
return last
"#;

/// Entries after a cursor. KEYS: lines, seq. ARGV: cursor, limit.
/// Returns {last seq, first seq held (last + 1 when empty), entries...}.
const READ_AFTER_SCRIPT: &str = r#"
local last = tonumber(redis.call('GET', KEYS[2]) or '0')
local first = last + 1
local head = redis.call('LINDEX', KEYS[1], 0)
if head then first = tonumber(string.match(head, '^{"seq":(%d+)')) end
local start = tonumber(ARGV[1]) + 1
if start < first then start = first end
local idx = start - first
local items = redis.call('LRANGE', KEYS[1], idx, idx + tonumber(ARGV[2]) - 1)
table.insert(items, 1, first)
table.insert(items, 1, last)
return items
"#;

/// Deletes an app's keys and ends its followers. KEYS: seq, lines. ARGV: channel.
const FORGET_SCRIPT: &str = r#"
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('PUBLISH', ARGV[1], 'end')
return 1
"#;

/// The marker published when an app is forgotten.
const END_MARKER: &[u8] = b"end";

fn backend(e: redis::RedisError) -> LogError {
    LogError::backend(e)
}

struct Keys {
    seq: String,
    lines: String,
    channel: String,
}

impl RedisLogStore {
    /// Connects to Redis (and checks it answers).
    pub async fn connect(config: RedisLogStoreConfig) -> Result<Self, LogError> {
        let client = redis::Client::open(config.url.as_str()).map_err(|e| {
            LogError::Invalid(format!("invalid Redis URL {:?}: {e}; expected redis://host:port[/db]", config.url))
        })?;
        let conn_config = redis::AsyncConnectionConfig::new()
            .set_response_timeout(Some(config.response_timeout))
            .set_connection_timeout(Some(config.response_timeout));
        let mut conn = client.get_multiplexed_async_connection_with_config(&conn_config).await.map_err(|e| {
            LogError::Backend(format!("connecting to Redis at {}: {e}; is redis-server running?", config.url).into())
        })?;
        let _: String = redis::cmd("PING").query_async(&mut conn).await.map_err(backend)?;
        let config = RedisLogStoreConfig {
            lines_per_app: config.lines_per_app.max(1),
            follower_buffer: config.follower_buffer.max(1),
            ..config
        };
        Ok(Self { inner: Arc::new(Inner { client, conn, config }) })
    }

    /// The settings in force.
    pub fn config(&self) -> &RedisLogStoreConfig {
        &self.inner.config
    }

    fn keys(&self, app: &str) -> Keys {
        let p = &self.inner.config.key_prefix;
        Keys { seq: format!("{p}{app}:seq"), lines: format!("{p}{app}:lines"), channel: format!("{p}{app}:live") }
    }

    /// Reads every stored entry of `app` (at most the capacity), oldest first.
    async fn read_all(&self, keys: &Keys) -> Result<Vec<LogEntry>, LogError> {
        let mut conn = self.inner.conn.clone();
        let raw: Vec<Vec<u8>> =
            redis::cmd("LRANGE").arg(&keys.lines).arg(0).arg(-1).query_async(&mut conn).await.map_err(backend)?;
        raw.iter().map(|r| decode_entry(r)).collect()
    }
}

fn decode_entry(raw: &[u8]) -> Result<LogEntry, LogError> {
    serde_json::from_slice(raw).map_err(|e| {
        LogError::Backend(format!("a log entry in Redis is not valid JSON ({e}); was the key prefix reused?").into())
    })
}

/// Reads up to `limit` entries after `cursor`: (missed, entries, last seq of the app).
async fn read_after(
    conn: &mut MultiplexedConnection,
    keys: &Keys,
    cursor: u64,
    limit: usize,
) -> Result<(u64, Vec<LogEntry>, u64), LogError> {
    let reply: Vec<redis::Value> = redis::cmd("EVAL")
        .arg(READ_AFTER_SCRIPT)
        .arg(2)
        .arg(&keys.lines)
        .arg(&keys.seq)
        .arg(cursor)
        .arg(limit)
        .query_async(conn)
        .await
        .map_err(backend)?;
    let bad = || LogError::Backend("unexpected reply of the Redis read script".into());
    let mut it = reply.into_iter();
    let int = |v: Option<redis::Value>| match v {
        Some(redis::Value::Int(i)) => u64::try_from(i).ok(),
        _ => None,
    };
    let last = int(it.next()).ok_or_else(bad)?;
    let first = int(it.next()).ok_or_else(bad)?;
    let entries = it
        .map(|v| match v {
            redis::Value::BulkString(b) => decode_entry(&b),
            _ => Err(bad()),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let missed = first.saturating_sub(cursor + 1);
    Ok((missed, entries, last))
}

#[async_trait]
impl LogStore for RedisLogStore {
    async fn append(&self, lines: Vec<LogLine>) -> Result<Vec<u64>, LogError> {
        if let Some(bad) = lines.iter().find(|l| l.app.is_empty()) {
            return Err(LogError::Invalid(format!("a log line has an empty app name (message {:?})", bad.message)));
        }
        // Group by app, keeping each app's order; one script per app, one round trip.
        let mut groups: Vec<(String, Vec<usize>, Vec<String>)> = Vec::new();
        for (i, line) in lines.iter().enumerate() {
            let json = serde_json::to_string(line).map_err(LogError::backend)?;
            match groups.iter_mut().find(|g| g.0 == line.app) {
                Some(g) => {
                    g.1.push(i);
                    g.2.push(json);
                }
                None => groups.push((line.app.clone(), vec![i], vec![json])),
            }
        }
        let mut pipe = redis::pipe();
        for (app, _, jsons) in &groups {
            let keys = self.keys(app);
            pipe.cmd("EVAL")
                .arg(APPEND_SCRIPT)
                .arg(2)
                .arg(&keys.seq)
                .arg(&keys.lines)
                .arg(self.inner.config.lines_per_app)
                .arg(&keys.channel)
                .arg(jsons);
        }
        let mut conn = self.inner.conn.clone();
        let lasts: Vec<u64> = pipe.query_async(&mut conn).await.map_err(backend)?;
        let mut seqs = vec![0; lines.len()];
        for ((_, idx, _), last) in groups.iter().zip(lasts) {
            let first = last + 1 - idx.len() as u64;
            for (k, i) in idx.iter().enumerate() {
                seqs[*i] = first + k as u64;
            }
        }
        Ok(seqs)
    }

    async fn tail(&self, app: &str, n: usize, filter: &LogFilter) -> Result<Vec<LogEntry>, LogError> {
        if n == 0 {
            return Ok(Vec::new());
        }
        let keys = self.keys(app);
        let mut entries = if *filter == LogFilter::default() {
            let mut conn = self.inner.conn.clone();
            let n = n.min(self.inner.config.lines_per_app) as i64;
            let raw: Vec<Vec<u8>> =
                redis::cmd("LRANGE").arg(&keys.lines).arg(-n).arg(-1).query_async(&mut conn).await.map_err(backend)?;
            raw.iter().map(|r| decode_entry(r)).collect::<Result<Vec<_>, _>>()?
        } else {
            let mut all = self.read_all(&keys).await?;
            all.retain(|e| filter.matches(&e.line));
            all
        };
        if entries.len() > n {
            entries.drain(..entries.len() - n);
        }
        Ok(entries)
    }

    async fn follow(&self, app: &str, cursor: Cursor, filter: LogFilter) -> Result<LogFollow, LogError> {
        if app.is_empty() {
            return Err(LogError::Invalid("cannot follow the logs of an empty app name".into()));
        }
        let keys = self.keys(app);
        // Subscribe before reading, so nothing appended meanwhile is missed.
        let stream = subscribe(&self.inner.client, &keys.channel).await?;
        let mut conn = self.inner.conn.clone();
        let last: u64 =
            redis::cmd("GET").arg(&keys.seq).query_async::<Option<u64>>(&mut conn).await.map_err(backend)?.unwrap_or(0);
        let start = match cursor {
            Cursor::Now | Cursor::Last(0) => last,
            Cursor::Last(n) => {
                let all = self.read_all(&keys).await?;
                let matching: Vec<&LogEntry> = all.iter().filter(|e| filter.matches(&e.line)).collect();
                if matching.is_empty() { last } else { matching[matching.len().saturating_sub(n)].seq - 1 }
            }
            // A cursor from the future (the app was forgotten, Redis flushed) resumes from now.
            Cursor::After(s) => s.min(last),
        };
        let (tx, rx) = mpsc::channel(self.inner.config.follower_buffer);
        let follower =
            Follower { client: self.inner.client.clone(), conn, keys, filter, cursor: start, behind: true, tx };
        tokio::spawn(follower.run(stream));
        Ok(LogFollow::new(rx))
    }

    async fn forget(&self, app: &str) -> Result<(), LogError> {
        let keys = self.keys(app);
        let mut conn = self.inner.conn.clone();
        let _: i64 = redis::cmd("EVAL")
            .arg(FORGET_SCRIPT)
            .arg(2)
            .arg(&keys.seq)
            .arg(&keys.lines)
            .arg(&keys.channel)
            .query_async(&mut conn)
            .await
            .map_err(backend)?;
        Ok(())
    }
}

async fn subscribe(client: &redis::Client, channel: &str) -> Result<redis::aio::PubSubStream, LogError> {
    let mut pubsub = client.get_async_pubsub().await.map_err(backend)?;
    pubsub.subscribe(channel).await.map_err(backend)?;
    Ok(pubsub.into_on_message())
}

/// One follower's state; see the module docs.
struct Follower {
    client: redis::Client,
    conn: MultiplexedConnection,
    keys: Keys,
    filter: LogFilter,
    /// Last sequence number delivered or skipped by the filter.
    cursor: u64,
    /// The list holds entries after the cursor that were not delivered.
    behind: bool,
    tx: mpsc::Sender<Result<FollowItem, LogError>>,
}

enum Step {
    Continue,
    End,
}

impl Follower {
    async fn run(mut self, mut stream: redis::aio::PubSubStream) {
        // A handle of our own for the select's futures, which must not borrow `self`.
        let tx = self.tx.clone();
        loop {
            let step = tokio::select! {
                biased;
                _ = tx.closed() => Step::End,
                msg = stream.next() => match msg {
                    Some(msg) => self.on_message(msg.get_payload_bytes()),
                    None => match self.resubscribe().await {
                        Some(s) => {
                            stream = s;
                            self.behind = true;
                            Step::Continue
                        }
                        None => Step::End,
                    },
                },
                permit = tx.reserve(), if self.behind => match permit {
                    Ok(permit) => self.catch_up(permit).await,
                    Err(_) => Step::End,
                },
            };
            if let Step::End = step {
                return;
            }
        }
    }

    /// A live message: delivered directly when it follows the cursor and there's room;
    /// otherwise the follower falls back to reading the list.
    fn on_message(&mut self, payload: &[u8]) -> Step {
        if payload == END_MARKER {
            return Step::End;
        }
        if self.behind {
            return Step::Continue;
        }
        let Ok(entries) = serde_json::from_slice::<Vec<LogEntry>>(payload) else {
            // Not ours (a foreign publisher on our channel): re-read the list to be safe.
            self.behind = true;
            return Step::Continue;
        };
        for entry in entries {
            if entry.seq <= self.cursor {
                continue;
            }
            if entry.seq != self.cursor + 1 {
                self.behind = true;
                return Step::Continue;
            }
            if self.filter.matches(&entry.line) {
                let seq = entry.seq;
                match self.tx.try_send(Ok(FollowItem::Line(entry))) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        self.behind = true;
                        return Step::Continue;
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => return Step::End,
                }
                self.cursor = seq;
            } else {
                self.cursor = entry.seq;
            }
        }
        Step::Continue
    }

    /// Reads the list after the cursor, sending what fits in the channel.
    async fn catch_up(&mut self, permit: mpsc::Permit<'_, Result<FollowItem, LogError>>) -> Step {
        let limit = self.tx.capacity() + 1;
        let (missed, entries, last) = match read_after(&mut self.conn, &self.keys, self.cursor, limit).await {
            Ok(r) => r,
            Err(e) => {
                permit.send(Err(e));
                return Step::End;
            }
        };
        if self.cursor > last {
            // The app was forgotten and is being written again: follow the new numbering.
            self.cursor = 0;
            return Step::Continue;
        }
        let got = entries.len();
        let mut permit = Some(permit);
        // Sends in order; the cursor only moves past what was sent (or filtered out).
        let mut send = |item: FollowItem| -> Result<bool, ()> {
            match permit.take() {
                Some(p) => {
                    p.send(Ok(item));
                    Ok(true)
                }
                None => match self.tx.try_send(Ok(item)) {
                    Ok(()) => Ok(true),
                    Err(mpsc::error::TrySendError::Full(_)) => Ok(false),
                    Err(mpsc::error::TrySendError::Closed(_)) => Err(()),
                },
            }
        };
        if missed > 0 {
            match send(FollowItem::Missed(missed)) {
                Ok(true) => self.cursor += missed,
                Ok(false) => return Step::Continue,
                Err(()) => return Step::End,
            }
        }
        for entry in entries {
            let seq = entry.seq;
            if self.filter.matches(&entry.line) {
                match send(FollowItem::Line(entry)) {
                    Ok(true) => {}
                    Ok(false) => return Step::Continue,
                    Err(()) => return Step::End,
                }
            }
            self.cursor = seq;
        }
        self.behind = got >= limit;
        Step::Continue
    }

    /// Reconnects the subscription after Redis went away, with backoff (about a minute).
    async fn resubscribe(&mut self) -> Option<redis::aio::PubSubStream> {
        let mut delay = Duration::from_millis(50);
        let mut last_err = None;
        for _ in 0..12 {
            if self.tx.is_closed() {
                return None;
            }
            match subscribe(&self.client, &self.keys.channel).await {
                Ok(s) => return Some(s),
                Err(e) => last_err = Some(e),
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(10));
        }
        let e = last_err.map_or_else(|| "subscription lost".to_string(), |e| e.to_string());
        let _ = self.tx.send(Err(LogError::Backend(format!("lost the Redis subscription: {e}").into()))).await;
        None
    }
}
