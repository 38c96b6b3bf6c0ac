//! Prometheus exposition of [`MetricFamily`] snapshots, through `prometheus-client`:
//! OpenMetrics 1.0 when the scraper asks for it (`Accept:
//! application/openmetrics-text`, as Prometheus does), the text format 0.0.4 otherwise.

use std::collections::HashSet;

use prometheus_client::encoding::{DescriptorEncoder, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::family::{Kind, MetricFamily, Value};

/// Content type of OpenMetrics 1.0 text.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Content type of the Prometheus text format 0.0.4.
pub const TEXT_004: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A snapshot handed to `prometheus-client` as a collector.
#[derive(Debug)]
struct Snapshot(Vec<MetricFamily>);

impl prometheus_client::collector::Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for family in &self.0 {
            let kind = match family.kind {
                Kind::Counter => MetricType::Counter,
                Kind::Gauge => MetricType::Gauge,
                Kind::Histogram => MetricType::Histogram,
            };
            let mut metric = encoder.encode_descriptor(&family.name, &family.help, None, kind)?;
            for sample in &family.samples {
                if sample.labels.is_empty() {
                    encode_value(&mut metric, &sample.value, family.kind)?;
                } else {
                    // prometheus-client writes label values as given: escape them here.
                    let labels: Vec<(&str, String)> =
                        sample.labels.iter().map(|(k, v)| (k.as_str(), escape_label(v))).collect();
                    encode_value(&mut metric.encode_family(&labels)?, &sample.value, family.kind)?;
                }
            }
        }
        Ok(())
    }
}

fn encode_value(m: &mut MetricEncoder<'_>, value: &Value, kind: Kind) -> Result<(), std::fmt::Error> {
    match (value, kind) {
        (Value::Number(v), Kind::Counter) => m.encode_counter::<NoLabelSet, _, f64>(v, None),
        (Value::Number(v), _) => m.encode_gauge(v),
        (Value::Histogram(h), _) => {
            let buckets: Vec<(f64, u64)> =
                h.buckets.iter().map(|&(b, n)| (if b.is_infinite() { f64::MAX } else { b }, n)).collect();
            m.encode_histogram::<NoLabelSet>(h.sum, h.count, &buckets, None)
        }
    }
}

/// A label value as the exposition formats want it: backslash, quote and newline escaped.
fn escape_label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Whether an `Accept` header asks for OpenMetrics.
pub fn wants_openmetrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| a.contains("application/openmetrics-text"))
}

/// The families in the format `accept` asks for: `(content type, body)`.
pub fn render(families: Vec<MetricFamily>, accept: Option<&str>) -> (&'static str, String) {
    let counters: HashSet<String> =
        families.iter().filter(|f| f.kind == Kind::Counter).map(|f| f.name.clone()).collect();
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Snapshot(families)));
    let mut out = String::new();
    // Writing to a String can't fail; an encoder error would be a bug of ours
    // (e.g. an invalid name) and leaves what was written so far.
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &registry) {
        tracing::warn!(error = %e, "metrics exposition failed");
    }
    if wants_openmetrics(accept) {
        return (OPENMETRICS, out);
    }
    (TEXT_004, to_text_004(&out, &counters))
}

/// A `GET /metrics` answer: `families` in the format the request's `Accept` asks for.
pub fn response(families: Vec<MetricFamily>, headers: &http::HeaderMap) -> axum::response::Response {
    use axum::response::IntoResponse;
    let accept = headers.get(http::header::ACCEPT).and_then(|v| v.to_str().ok());
    let (content_type, body) = render(families, accept);
    ([(http::header::CONTENT_TYPE, content_type)], body).into_response()
}

/// OpenMetrics text to the 0.0.4 format: no `# EOF` or `# UNIT`, and counter families
/// named like their `_total` samples (0.0.4 has no suffix rule).
fn to_text_004(openmetrics: &str, counters: &HashSet<String>) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|p| {
            let rest = line.strip_prefix(p)?;
            let (name, tail) = rest.split_once(' ')?;
            counters.contains(name).then(|| format!("{p}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::family::AtomicHistogram;

    fn families() -> Vec<MetricFamily> {
        let mut c = MetricFamily::new("deis_router_requests", "Requests routed.", Kind::Counter);
        c.push(&[("app", "hello"), ("class", "2xx")], 3.0);
        c.push(&[("app", "we\"ird"), ("class", "5xx")], 1.0);
        let g = MetricFamily::single("deis_up", "Whether it is up.", Kind::Gauge, 1.0);
        let h = AtomicHistogram::default();
        h.observe(std::time::Duration::from_millis(3));
        let mut hist = MetricFamily::new("deis_router_request_duration_seconds", "Latency.", Kind::Histogram);
        hist.push_histogram(&[("app", "hello")], h.value());
        vec![c, g, hist]
    }

    #[test]
    fn openmetrics_and_text_004_by_accept() {
        let (ct, om) = render(families(), Some("application/openmetrics-text;version=1.0.0,text/plain;q=0.5"));
        assert_eq!(ct, OPENMETRICS);
        assert!(om.ends_with("# EOF\n"), "{om}");
        assert!(om.contains("# TYPE deis_router_requests counter\n"), "{om}");
        assert!(om.contains("deis_router_requests_total{app=\"hello\",class=\"2xx\"} 3"), "{om}");
        assert!(om.contains("app=\"we\\\"ird\""), "label values are escaped: {om}");
        assert!(om.contains("deis_router_request_duration_seconds_bucket{le=\"0.005\",app=\"hello\"} 1"), "{om}");
        assert!(om.contains("deis_router_request_duration_seconds_bucket{le=\"+Inf\",app=\"hello\"} 1"), "{om}");

        let (ct, text) = render(families(), None);
        assert_eq!(ct, TEXT_004);
        assert!(!text.contains("# EOF"), "{text}");
        assert!(text.contains("# TYPE deis_router_requests_total counter\n"), "{text}");
        assert!(text.contains("# HELP deis_router_requests_total Requests routed."), "{text}");
        assert!(text.contains("# TYPE deis_up gauge\ndeis_up 1"), "{text}");
    }
}
