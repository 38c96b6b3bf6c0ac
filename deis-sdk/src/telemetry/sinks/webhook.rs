//! A generic HTTP JSON webhook: each snapshot is POSTed as
//! `{"source": ..., "timestamp_ms": ..., "metrics": [families]}`.

use std::time::{SystemTime, UNIX_EPOCH};

use super::Sink;
use super::http_post::Poster;
use crate::telemetry::family::MetricFamily;

/// A URL taking JSON snapshots.
#[derive(Debug)]
pub struct WebhookSink {
    url: String,
    source: String,
    poster: Poster,
}

impl WebhookSink {
    /// Posts to `url`, naming this host as the source.
    pub fn new(url: impl Into<String>) -> Self {
        Self { url: url.into(), source: deis_core::scheduler::local::hostname(), poster: Poster::new() }
    }
}

#[async_trait::async_trait]
impl Sink for WebhookSink {
    fn name(&self) -> String {
        format!("webhook+{}", self.url)
    }

    async fn send(&self, snapshot: &[MetricFamily]) -> Result<(), String> {
        let ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
        // Infinite bucket bounds have no JSON number: they are written as null.
        let body = serde_json::json!({ "source": self.source, "timestamp_ms": ms, "metrics": snapshot });
        self.poster.post(&self.url, "application/json", serde_json::to_vec(&body).map_err(|e| e.to_string())?).await
    }
}
