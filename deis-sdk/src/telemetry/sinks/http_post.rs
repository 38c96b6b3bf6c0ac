//! One HTTP POST, for the sinks that push over HTTP.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// A reusable plain-HTTP client.
#[derive(Debug, Clone)]
pub(crate) struct Poster {
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Poster {
    pub(crate) fn new() -> Self {
        Self { client: Client::builder(TokioExecutor::new()).build_http() }
    }

    /// POSTs `body`; an error unless the answer is 2xx.
    pub(crate) async fn post(&self, url: &str, content_type: &str, body: Vec<u8>) -> Result<(), String> {
        let req = http::Request::post(url)
            .header(http::header::CONTENT_TYPE, content_type)
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| format!("{url}: {e}"))?;
        let resp = self.client.request(req).await.map_err(|e| format!("{url}: {e}"))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let text = resp.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        let text = String::from_utf8_lossy(&text[..text.len().min(300)]).into_owned();
        Err(format!("{url}: {status}: {text}"))
    }
}
