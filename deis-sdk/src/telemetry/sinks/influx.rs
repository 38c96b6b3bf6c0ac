//! InfluxDB line protocol over HTTP (`POST /write?db=...`, InfluxDB 1.x): one point per
//! sample, the family as measurement, labels as tags; numbers in field `value`,
//! histograms as fields `count` and `sum`.

use std::time::{SystemTime, UNIX_EPOCH};

use super::Sink;
use super::http_post::Poster;
use crate::telemetry::family::{MetricFamily, Value};

/// An InfluxDB `/write` endpoint.
#[derive(Debug)]
pub struct InfluxSink {
    url: String,
    poster: Poster,
}

impl InfluxSink {
    /// Writes to `url` (`http://host:8086/write?db=deis`).
    pub fn new(url: impl Into<String>) -> Self {
        Self { url: url.into(), poster: Poster::new() }
    }
}

/// Escapes a measurement name, tag key or tag value (commas, spaces, equals signs).
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            ',' | ' ' | '=' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '\n' | '\r' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// The line protocol of a snapshot taken at `nanos` since the epoch.
pub fn lines(snapshot: &[MetricFamily], nanos: u128) -> String {
    let mut out = String::new();
    for f in snapshot {
        for s in &f.samples {
            let mut line = escape(&f.name);
            for (k, v) in &s.labels {
                if !v.is_empty() {
                    line.push_str(&format!(",{}={}", escape(k), escape(v)));
                }
            }
            let fields = match &s.value {
                Value::Number(v) if v.is_finite() => format!("value={v:?}"),
                Value::Number(_) => continue,
                Value::Histogram(h) => format!("count={}i,sum={:?}", h.count, h.sum),
            };
            out.push_str(&format!("{line} {fields} {nanos}\n"));
        }
    }
    out
}

#[async_trait::async_trait]
impl Sink for InfluxSink {
    fn name(&self) -> String {
        format!("influxdb+{}", self.url)
    }

    async fn send(&self, snapshot: &[MetricFamily]) -> Result<(), String> {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        self.poster.post(&self.url, "text/plain; charset=utf-8", lines(snapshot, nanos).into_bytes()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::family::Kind;

    #[test]
    fn line_protocol_escapes_tags() {
        let mut c = MetricFamily::new("deis_router_requests", "r", Kind::Counter);
        c.push(&[("app", "a b,c=d"), ("class", "2xx")], 3.0);
        assert_eq!(lines(&[c], 7), "deis_router_requests,app=a\\ b\\,c\\=d,class=2xx value=3.0 7\n");
    }
}
