//! The Deis v1 keyspace as etcd's v2 API shows it: the JSON of
//! `GET /v2/keys/?recursive=true`, read from a dump file or fetched live.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;

use crate::deis_core::time::Timestamp;

/// Default limit on the size of a dump (or of the live answer): a Deis v1 keyspace of
/// 100,000 keys is about 15 MiB.
pub const DEFAULT_MAX_DUMP_BYTES: usize = 256 << 20;
/// Most keys a dump may hold.
pub const MAX_KEYS: usize = 5_000_000;
/// Deepest directory nesting accepted (Deis v1 goes 5 levels deep).
pub const MAX_DEPTH: usize = 32;

/// One key of the v1 keyspace with its value and what is left of its TTL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V1Key {
    /// Full path, `/deis/config/hello/foo`.
    pub key: String,
    /// The value as etcd stored it.
    pub value: String,
    /// Set when the key had a TTL.
    pub ttl: Option<Ttl>,
}

/// What is left of a key's TTL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ttl {
    /// It expires after this long.
    Remaining(Duration),
    /// It expired already (a dump older than its TTL).
    Expired,
}

/// How the remaining TTL of a key is computed.
#[derive(Debug, Clone, Copy)]
pub enum TtlBasis {
    /// From the `ttl` field: right for an answer etcd just gave.
    Live,
    /// From the `expiration` field against this clock (a dump may be old); the `ttl`
    /// field when there is no expiration.
    Dump(SystemTime),
}

/// Why the source could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// The dump is larger than the limit.
    #[error(
        "the dump is larger than {limit} bytes; if it really is a Deis v1 keyspace, raise the limit with --max-dump-bytes"
    )]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The dump is not the JSON of `GET /v2/keys/?recursive=true`.
    #[error("the dump is not the JSON of `GET /v2/keys/?recursive=true` from etcd's v2 API: {0}")]
    Malformed(String),
    /// The dump file could not be read.
    #[error("reading the dump {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// etcd could not be asked.
    #[error("reading the v1 keyspace from {url}: {reason}")]
    Fetch {
        /// What was asked.
        url: String,
        /// Why it failed and what to do.
        reason: String,
    },
}

#[derive(Deserialize)]
struct Response {
    node: Node,
}

#[derive(Deserialize)]
struct Node {
    #[serde(default)]
    key: String,
    #[serde(default)]
    dir: bool,
    value: Option<String>,
    ttl: Option<i64>,
    expiration: Option<String>,
    #[serde(default)]
    nodes: Vec<Node>,
}

/// Parses the JSON of `GET /v2/keys/?recursive=true` (or of any directory below it)
/// into its keys, in the order given. Directories are walked; empty ones have no key.
/// At most `max_bytes` bytes, [`MAX_KEYS`] keys and [`MAX_DEPTH`] levels are accepted.
pub fn parse_dump(json: &[u8], max_bytes: usize, basis: TtlBasis) -> Result<Vec<V1Key>, SourceError> {
    if json.len() > max_bytes {
        return Err(SourceError::TooLarge { limit: max_bytes });
    }
    // serde_json's recursion limit keeps a deeply nested document off the stack.
    let response: Response = serde_json::from_slice(json).map_err(|e| SourceError::Malformed(e.to_string()))?;
    let mut keys = Vec::new();
    let mut pending = vec![(response.node, 0usize)];
    while let Some((node, depth)) = pending.pop() {
        if depth > MAX_DEPTH {
            return Err(SourceError::Malformed(format!("directories nest deeper than {MAX_DEPTH} levels")));
        }
        if node.dir || !node.nodes.is_empty() {
            // Reversed so that keys come out in the order the dump lists them.
            pending.extend(node.nodes.into_iter().rev().map(|n| (n, depth + 1)));
            continue;
        }
        let Some(value) = node.value else {
            return Err(SourceError::Malformed(format!("key {:?} has neither a value nor child nodes", node.key)));
        };
        if !node.key.starts_with('/') {
            return Err(SourceError::Malformed(format!("key {:?} is not an absolute path", node.key)));
        }
        if keys.len() == MAX_KEYS {
            return Err(SourceError::Malformed(format!("more than {MAX_KEYS} keys")));
        }
        let ttl = ttl_of(node.ttl, node.expiration.as_deref(), basis);
        keys.push(V1Key { key: node.key, value, ttl });
    }
    Ok(keys)
}

fn ttl_of(ttl: Option<i64>, expiration: Option<&str>, basis: TtlBasis) -> Option<Ttl> {
    let from_ttl = |t: i64| if t > 0 { Ttl::Remaining(Duration::from_secs(t as u64)) } else { Ttl::Expired };
    let from_expiration = |e: &str, now: SystemTime| {
        let at = e.parse::<Timestamp>().ok()?.as_system_time();
        Some(at.duration_since(now).ok().filter(|d| !d.is_zero()).map_or(Ttl::Expired, Ttl::Remaining))
    };
    match basis {
        TtlBasis::Live => ttl.map(from_ttl).or_else(|| expiration.and_then(|e| from_expiration(e, SystemTime::now()))),
        TtlBasis::Dump(now) => expiration.and_then(|e| from_expiration(e, now)).or_else(|| ttl.map(from_ttl)),
    }
}

/// Reads a dump file (at most `max_bytes`).
pub async fn read_dump(path: &std::path::Path, max_bytes: usize) -> Result<Vec<u8>, SourceError> {
    let io = |source| SourceError::Io { path: path.display().to_string(), source };
    let len = tokio::fs::metadata(path).await.map_err(io)?.len();
    if len > max_bytes as u64 {
        return Err(SourceError::TooLarge { limit: max_bytes });
    }
    tokio::fs::read(path).await.map_err(io)
}

/// Fetches `/deis` recursively from the v2 HTTP API of the etcd at `base`
/// (`http://HOST:2379`), at most `max_bytes`. A missing `/deis` is an empty keyspace.
pub async fn fetch_live(base: &str, max_bytes: usize, timeout: Duration) -> Result<Vec<u8>, SourceError> {
    let url = format!("{}/v2/keys/deis?recursive=true&sorted=true", base.trim_end_matches('/'));
    let fail = |reason: String| SourceError::Fetch { url: url.clone(), reason };
    let uri: http::Uri = url.parse().map_err(|e| fail(format!("not a URL ({e}); give --from http://HOST:2379")))?;
    if uri.scheme_str() != Some("http") {
        return Err(fail(
            "only http:// is supported for the v2 API; dump over TLS with curl and use --from-dump".into(),
        ));
    }
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let exchange = async {
        let resp = client.get(uri).await.map_err(|e| fail(format!("{e}; is etcd running there?")))?;
        let status = resp.status();
        let body = Limited::new(resp.into_body(), max_bytes).collect().await.map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                SourceError::TooLarge { limit: max_bytes }
            } else {
                fail(format!("reading the answer: {e}"))
            }
        })?;
        Ok::<_, SourceError>((status, body.to_bytes()))
    };
    let (status, body) =
        tokio::time::timeout(timeout, exchange).await.map_err(|_| fail(format!("no answer within {timeout:?}")))??;
    if status.is_success() {
        return Ok(body.to_vec());
    }
    let code = serde_json::from_slice::<serde_json::Value>(&body).ok().and_then(|v| v["errorCode"].as_u64());
    match code {
        // 100: key not found, no /deis at all.
        Some(100) => Ok(br#"{"node":{"dir":true}}"#.to_vec()),
        Some(code) => {
            Err(fail(format!("etcd answered {status} (error code {code}): {}", String::from_utf8_lossy(&body))))
        }
        None => Err(fail(format!(
            "etcd answered {status} without a v2 error: it does not serve the v2 API; start it with --enable-v2 (etcd 3.4), or give a dump with --from-dump"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DUMP: &str = r#"{"action":"get","node":{"dir":true,"nodes":[
        {"key":"/deis","dir":true,"nodes":[
            {"key":"/deis/config","dir":true,"nodes":[
                {"key":"/deis/config/hello","dir":true,"nodes":[
                    {"key":"/deis/config/hello/foo","value":"bar","modifiedIndex":7,"createdIndex":7}]}]},
            {"key":"/deis/services","dir":true,"nodes":[
                {"key":"/deis/services/hello","dir":true,"nodes":[
                    {"key":"/deis/services/hello/hello_v2.web.1","value":"10.0.0.1:49153",
                     "expiration":"2026-12-06T10:00:30.5Z","ttl":25,"modifiedIndex":9,"createdIndex":9}]}]},
            {"key":"/deis/empty","dir":true}]}]}}"#;

    #[test]
    fn walks_directories_and_reads_ttls_against_the_dump_clock() {
        let now: SystemTime = "2026-12-06T10:00:10Z".parse::<Timestamp>().unwrap().into();
        let keys = parse_dump(DUMP.as_bytes(), 1 << 20, TtlBasis::Dump(now)).unwrap();
        assert_eq!(
            keys,
            vec![
                V1Key { key: "/deis/config/hello/foo".into(), value: "bar".into(), ttl: None },
                V1Key {
                    key: "/deis/services/hello/hello_v2.web.1".into(),
                    value: "10.0.0.1:49153".into(),
                    ttl: Some(Ttl::Remaining(Duration::from_secs(20))),
                },
            ]
        );
        let later: SystemTime = "2026-12-06T11:00:00Z".parse::<Timestamp>().unwrap().into();
        let keys = parse_dump(DUMP.as_bytes(), 1 << 20, TtlBasis::Dump(later)).unwrap();
        assert_eq!(keys[1].ttl, Some(Ttl::Expired));
        let keys = parse_dump(DUMP.as_bytes(), 1 << 20, TtlBasis::Live).unwrap();
        assert_eq!(keys[1].ttl, Some(Ttl::Remaining(Duration::from_secs(25))));
    }

    #[test]
    fn refuses_what_is_not_a_v2_listing_or_too_large() {
        let basis = TtlBasis::Live;
        assert!(matches!(parse_dump(DUMP.as_bytes(), 100, basis), Err(SourceError::TooLarge { limit: 100 })));
        for bad in [
            "[]",
            r#"{"node":{"key":"/a"}}"#,
            r#"{"node":{"key":"relative","value":"x"}}"#,
            r#"{"node":{"nodes":"no"}}"#,
        ] {
            assert!(matches!(parse_dump(bad.as_bytes(), 1 << 20, basis), Err(SourceError::Malformed(_))), "{bad}");
        }
        let mut deep = String::new();
        for _ in 0..40 {
            deep.push_str(r#"{"dir":true,"nodes":["#);
        }
        deep.push_str(r#"{"key":"/x","value":"y"}"#);
        deep.push_str(&"]}".repeat(40));
        let deep = format!(r#"{{"node":{deep}}}"#);
        assert!(
            matches!(parse_dump(deep.as_bytes(), 1 << 20, basis), Err(SourceError::Malformed(m)) if m.contains("deeper"))
        );
        assert_eq!(parse_dump(br#"{"node":{"dir":true}}"#, 100, basis).unwrap(), vec![]);
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    /// A v2 node tree as JSON, and how many keys (leaves) it holds.
    fn tree(depth: u32) -> impl Strategy<Value = (serde_json::Value, usize)> {
        let leaf =
            ("[a-z0-9_.:-]{1,12}", ".{0,20}", proptest::option::of(-5i64..100)).prop_map(|(name, value, ttl)| {
                let mut node = serde_json::json!({"key": format!("/{name}"), "value": value});
                if let Some(ttl) = ttl {
                    node["ttl"] = ttl.into();
                }
                (node, 1)
            });
        leaf.prop_recursive(depth, 64, 8, |inner| {
            proptest::collection::vec(inner, 0..8).prop_map(|children| {
                let count = children.iter().map(|(_, n)| n).sum();
                let nodes: Vec<serde_json::Value> = children.into_iter().map(|(n, _)| n).collect();
                (serde_json::json!({"key": "/d", "dir": true, "nodes": nodes}), count)
            })
        })
    }

    proptest! {
        #[test]
        fn every_leaf_of_a_listing_is_one_key((node, leaves) in tree(5)) {
            let json = serde_json::to_vec(&serde_json::json!({"action": "get", "node": node})).unwrap();
            let keys = parse_dump(&json, 1 << 20, TtlBasis::Live).unwrap();
            prop_assert_eq!(keys.len(), leaves);
            for k in &keys {
                prop_assert!(k.key.starts_with('/'));
                prop_assert!(matches!(k.ttl, None | Some(Ttl::Expired) | Some(Ttl::Remaining(_))));
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_dump(&bytes, 1 << 20, TtlBasis::Dump(SystemTime::UNIX_EPOCH));
        }
    }
}
