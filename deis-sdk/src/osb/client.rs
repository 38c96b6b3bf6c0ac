//! [`OsbClient`]: any OSB v2.17 broker over HTTP, as a [`ServiceBroker`].
//!
//! Each call is one request (`X-Broker-API-Version: 2.17`, basic auth, the originating
//! identity when the context has one). A 2xx becomes a [`Reply`] with its status; an
//! error answer becomes the [`BrokerError`] it means ([`BrokerError::from_remote`]); a
//! 2xx whose body is not what the spec says is a [`BrokerError::Remote`] with that
//! status (the spec treats it as a failure, see [`super::platform`] for what follows).

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use deis_core::broker::{
    API_VERSION, AsyncResponse, BindRequest, BindingResponse, BrokerError, Catalog, DeleteRequest, ErrorBody,
    InstanceResponse, LastOperation, PollRequest, ProvisionRequest, ProvisionResponse, Reply, RequestContext, Result,
    ServiceBroker, Status, UpdateRequest,
};
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::server::BasicAuth;

/// The largest response body read.
pub const MAX_RESPONSE_BYTES: usize = 4 << 20;
/// How long one request may take by default (the spec's platforms use 60 s).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// A client of one broker. Cheap to clone.
#[derive(Clone)]
pub struct OsbClient {
    base: String,
    auth: Option<BasicAuth>,
    timeout: Duration,
    http: HyperClient<HttpConnector, Full<Bytes>>,
}

impl std::fmt::Debug for OsbClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OsbClient").field("base", &self.base).field("timeout", &self.timeout).finish_non_exhaustive()
    }
}

fn percent(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>().replace('+', "%20")
}

impl OsbClient {
    /// A client of the broker at `url` (`http://host:port[/prefix]`).
    pub fn new(url: &str, auth: Option<BasicAuth>) -> Result<Self> {
        let parsed = url::Url::parse(url).map_err(|e| BrokerError::BadRequest(format!("broker URL {url:?}: {e}")))?;
        if parsed.scheme() != "http" || parsed.host_str().is_none() {
            return Err(BrokerError::BadRequest(format!(
                "broker URL {url:?}: use http://host:port (HTTPS brokers go through a TLS-terminating proxy)"
            )));
        }
        let http = HyperClient::builder(TokioExecutor::new()).build_http();
        Ok(Self { base: url.trim_end_matches('/').to_string(), auth, timeout: DEFAULT_REQUEST_TIMEOUT, http })
    }

    /// Sets how long one request may take.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The broker's URL.
    pub fn url(&self) -> &str {
        &self.base
    }

    fn instance_path(instance_id: &str) -> String {
        format!("/v2/service_instances/{}", percent(instance_id))
    }

    fn binding_path(instance_id: &str, binding_id: &str) -> String {
        format!("{}/service_bindings/{}", Self::instance_path(instance_id), percent(binding_id))
    }

    /// Sends a request; returns the status, the `Retry-After` header and the body.
    async fn send(
        &self,
        ctx: &RequestContext,
        method: Method,
        path_and_query: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Option<Duration>, Bytes)> {
        let url = format!("{}{path_and_query}", self.base);
        let mut request = Request::builder().method(method).uri(&url).header("x-broker-api-version", API_VERSION);
        if let Some(auth) = &self.auth {
            request = request.header(header::AUTHORIZATION, auth.header());
        }
        if let Some(identity) = &ctx.originating_identity {
            request = request.header("x-broker-api-originating-identity", identity.to_header());
        }
        if let Some(id) = &ctx.request_identity {
            request = request.header("x-broker-api-request-identity", id);
        }
        if body.is_some() {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| BrokerError::BadRequest(format!("building the request to {url}: {e}")))?;
        let exchange = async {
            let response =
                self.http.request(request).await.map_err(|e| BrokerError::Transport(format!("{url}: {e}")))?;
            let (parts, body) = response.into_parts();
            let retry_after = parts
                .headers
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let bytes = Limited::new(body, MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map_err(|e| BrokerError::Transport(format!("reading the answer of {url}: {e}")))?
                .to_bytes();
            Ok((parts.status, retry_after, bytes))
        };
        tokio::time::timeout(self.timeout, exchange).await.map_err(|_| BrokerError::Timeout(self.timeout))?
    }

    /// One call: a 2xx parsed as `T` with its status, anything else as its error.
    async fn call<T: DeserializeOwned>(
        &self,
        ctx: &RequestContext,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<(Status, T, Option<Duration>)> {
        let body = body.map(|b| serde_json::to_vec(b).expect("requests serialise"));
        let (status, retry_after, bytes) = self.send(ctx, method, path, body).await?;
        let reply_status = match status.as_u16() {
            200 => Status::Ok,
            201 => Status::Created,
            202 => Status::Accepted,
            code if status.is_success() => {
                return Err(malformed(code, "a 2xx the spec does not define for this request"));
            }
            code => {
                let body: ErrorBody = serde_json::from_slice(&bytes).unwrap_or_default();
                return Err(BrokerError::from_remote(code, body));
            }
        };
        let bytes = if bytes.iter().all(u8::is_ascii_whitespace) { Bytes::from_static(b"{}") } else { bytes };
        let parsed = serde_json::from_slice(&bytes)
            .map_err(|e| malformed(status.as_u16(), &format!("a malformed body ({e})")))?;
        Ok((reply_status, parsed, retry_after))
    }
}

fn malformed(code: u16, what: &str) -> BrokerError {
    BrokerError::Remote {
        status: code,
        body: ErrorBody {
            description: Some(format!("the broker answered {code} with {what}")),
            ..ErrorBody::default()
        },
    }
}

pub(crate) fn query(accepts_incomplete: bool, pairs: &[(&str, Option<&str>)]) -> String {
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    if accepts_incomplete {
        q.append_pair("accepts_incomplete", "true");
    }
    for (k, v) in pairs {
        if let Some(v) = v {
            q.append_pair(k, v);
        }
    }
    let q = q.finish();
    if q.is_empty() { q } else { format!("?{q}") }
}

fn poll_query(p: &PollRequest) -> String {
    query(
        false,
        &[
            ("service_id", p.service_id.as_deref()),
            ("plan_id", p.plan_id.as_deref()),
            ("operation", p.operation.as_deref()),
        ],
    )
}

const NO_BODY: Option<&()> = None;

#[async_trait]
impl ServiceBroker for OsbClient {
    async fn catalog(&self, ctx: &RequestContext) -> Result<Catalog> {
        Ok(self.call(ctx, Method::GET, "/v2/catalog", NO_BODY).await?.1)
    }

    async fn provision(
        &self,
        ctx: &RequestContext,
        instance_id: &str,
        request: ProvisionRequest,
        accepts_incomplete: bool,
    ) -> Result<Reply<ProvisionResponse>> {
        let path = format!("{}{}", Self::instance_path(instance_id), query(accepts_incomplete, &[]));
        let (status, body, _) = self.call(ctx, Method::PUT, &path, Some(&request)).await?;
        Ok(Reply::new(status, body))
    }

    async fn update(
        &self,
        ctx: &RequestContext,
        instance_id: &str,
        request: UpdateRequest,
        accepts_incomplete: bool,
    ) -> Result<Reply<AsyncResponse>> {
        let path = format!("{}{}", Self::instance_path(instance_id), query(accepts_incomplete, &[]));
        let (status, body, _) = self.call(ctx, Method::PATCH, &path, Some(&request)).await?;
        Ok(Reply::new(status, body))
    }

    async fn deprovision(
        &self,
        ctx: &RequestContext,
        instance_id: &str,
        request: DeleteRequest,
        accepts_incomplete: bool,
    ) -> Result<Reply<AsyncResponse>> {
        let q = query(
            accepts_incomplete,
            &[("service_id", Some(&request.service_id)), ("plan_id", Some(&request.plan_id))],
        );
        let path = format!("{}{q}", Self::instance_path(instance_id));
        let (status, body, _) = self.call(ctx, Method::DELETE, &path, NO_BODY).await?;
        Ok(Reply::new(status, body))
    }

    async fn instance(&self, ctx: &RequestContext, instance_id: &str) -> Result<InstanceResponse> {
        Ok(self.call(ctx, Method::GET, &Self::instance_path(instance_id), NO_BODY).await?.1)
    }

    async fn last_operation(
        &self,
        ctx: &RequestContext,
        instance_id: &str,
        request: PollRequest,
    ) -> Result<LastOperation> {
        let path = format!("{}/last_operation{}", Self::instance_path(instance_id), poll_query(&request));
        let (_, mut op, retry_after): (_, LastOperation, _) = self.call(ctx, Method::GET, &path, NO_BODY).await?;
        op.retry_after = retry_after;
        Ok(op)
    }

    async fn bind(
        &self,
        ctx: &RequestContext,
        instance_id: &str,
        binding_id: &str,
        request: BindRequest,
        accepts_incomplete: bool,
    ) -> Result<Reply<BindingResponse>> {
        let path = format!("{}{}", Self::binding_path(instance_id, binding_id), query(accepts_incomplete, &[]));
        let (status, body, _) = self.call(ctx, Method::PUT, &path, Some(&request)).await?;
        Ok(Reply::new(status, body))
    }

    async fn unbind(
        &self,
        ctx: &RequestContext,
        instance_id: &str,
        binding_id: &str,
        request: DeleteRequest,
        accepts_incomplete: bool,
    ) -> Result<Reply<AsyncResponse>> {
        let q = query(
            accepts_incomplete,
            &[("service_id", Some(&request.service_id)), ("plan_id", Some(&request.plan_id))],
        );
        let path = format!("{}{q}", Self::binding_path(instance_id, binding_id));
        let (status, body, _) = self.call(ctx, Method::DELETE, &path, NO_BODY).await?;
        Ok(Reply::new(status, body))
    }

    async fn binding(&self, ctx: &RequestContext, instance_id: &str, binding_id: &str) -> Result<BindingResponse> {
        Ok(self.call(ctx, Method::GET, &Self::binding_path(instance_id, binding_id), NO_BODY).await?.1)
    }

    async fn binding_last_operation(
        &self,
        ctx: &RequestContext,
        instance_id: &str,
        binding_id: &str,
        request: PollRequest,
    ) -> Result<LastOperation> {
        let path = format!("{}/last_operation{}", Self::binding_path(instance_id, binding_id), poll_query(&request));
        let (_, mut op, retry_after): (_, LastOperation, _) = self.call(ctx, Method::GET, &path, NO_BODY).await?;
        op.retry_after = retry_after;
        Ok(op)
    }
}
