//! A typed client for the controller REST API (Workflow v2.3 plus our extensions, see
//! `docs/CONTROLLER-API.md` and `docs/API-EXTENSIONS.md`), used by the `deis` CLI and by anyone
//! who drives a controller from Rust.
//!
//! ```no_run
//! # async fn demo() -> Result<(), deis_sdk::client::ClientError> {
//! use deis_sdk::client::{Client, pack_source_dir};
//!
//! let anon = Client::new("http://127.0.0.1:8000", None)?;
//! anon.check_connection().await?;
//! let token = anon.login("alice", "s3cret").await?;
//!
//! let client = Client::new("http://127.0.0.1:8000", Some(token))?;
//! let app = client.apps_create(Some("hello")).await?;
//! let tarball = pack_source_dir(std::path::Path::new("examples/apps/hello")).expect("packable");
//! let build = client.builds_upload_source(&app.id, tarball).await?;
//! println!("deployed {}", build.build.sha);
//! # Ok(()) }
//! ```
//!
//! Every request carries `Authorization: token <t>` (when a token is set),
//! `Content-Type: application/json` (the source upload: `application/gzip`) and
//! `User-Agent: deis-cli/<version>`. Error statuses become [`ClientError::Api`] with one
//! readable message built from the server's JSON error body; response bodies are capped
//! at [`MAX_RESPONSE_BYTES`].

mod access;
mod addons;
mod certs;
mod error;
mod logs;
mod pack;
mod types;
mod updates;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use deis_core::{App, Build, Config, ConfigPatch, Domain, ProcessType, Release};
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use serde::de::DeserializeOwned;

pub use error::ClientError;
pub use logs::{DrainInfo, FOLLOW_IDLE_TIMEOUT, FollowEvent, LogFollowStream, LogOptions, LogRecord, MAX_FOLLOW_LINE};
pub use pack::{MAX_SOURCE_ARCHIVE_BYTES, MAX_SOURCE_UNPACKED_BYTES, PackError, pack_source_dir};
pub use types::{BuildCreated, Pod, RestartTarget, ServerVersion, TokenTarget, UserInfo};
pub use updates::PackageUpload;

/// Result of a client call.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// Page size asked of list endpoints unless [`Client::with_response_limit`] says otherwise
/// (the Workflow CLI's default).
pub const DEFAULT_RESPONSE_LIMIT: u32 = 100;

/// Largest response body the client reads; larger bodies fail with
/// [`ClientError::BodyTooLarge`].
pub const MAX_RESPONSE_BYTES: usize = 64 << 20;

/// How long one request may take by default, upload included.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The `User-Agent` this client sends by default.
pub fn default_user_agent() -> String {
    format!("deis-cli/{}", env!("CARGO_PKG_VERSION"))
}

/// A request body.
enum Body {
    /// No body (`Content-Length: 0`; the server reads it as `{}`).
    Empty,
    /// A JSON document.
    Json(Vec<u8>),
    /// A gzipped tarball.
    Gzip(Vec<u8>),
}

/// A controller API client. Cheap to clone; clones share the connection pool.
#[derive(Clone)]
pub struct Client {
    base: String,
    token: Option<String>,
    user_agent: String,
    response_limit: u32,
    timeout: Duration,
    max_body: usize,
    http: HyperClient<HttpConnector, Full<Bytes>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the token.
        f.debug_struct("Client")
            .field("base", &self.base)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("response_limit", &self.response_limit)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// A paginated list as the API returns it.
#[derive(Deserialize)]
struct Page<T> {
    #[allow(dead_code)]
    count: u64,
    results: Vec<T>,
}

#[derive(Deserialize)]
struct TokenBody {
    token: String,
}

#[derive(Deserialize)]
struct VersionBody {
    version: u64,
}

/// Normalises a controller URL: the scheme defaults to `http`, the path is dropped (the
/// API lives at the server root). Only `http` is supported.
pub fn normalize_controller_url(url: &str) -> Result<String> {
    let invalid = |reason: &str| ClientError::InvalidUrl { url: url.to_string(), reason: reason.to_string() };
    let trimmed = url.trim();
    if trimmed.is_empty() {
        return Err(invalid("it is empty; give the controller's address, e.g. http://127.0.0.1:8000"));
    }
    let with_scheme = if trimmed.contains("://") { trimmed.to_string() } else { format!("http://{trimmed}") };
    let uri: http::Uri = with_scheme.parse().map_err(|e: http::uri::InvalidUri| invalid(&e.to_string()))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(invalid(
                "https is not supported by this client yet; use the controller's http address (e.g. http://127.0.0.1:8000)",
            ));
        }
        _ => return Err(invalid("the scheme must be http")),
    }
    let Some(authority) = uri.authority() else {
        return Err(invalid("no host given, e.g. http://127.0.0.1:8000"));
    };
    if authority.as_str().contains('@') {
        return Err(invalid("credentials in the URL are not supported; use --username/--password"));
    }
    Ok(format!("http://{authority}"))
}

/// Percent-encodes one path segment (everything but RFC 3986 unreserved characters).
pub fn encode_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn app_path(app: &str, rest: &str) -> String {
    format!("/v2/apps/{}/{rest}", encode_segment(app))
}

fn json_body<T: serde::Serialize + ?Sized>(value: &T) -> Result<Body> {
    serde_json::to_vec(value).map(Body::Json).map_err(|e| ClientError::Request(e.to_string()))
}

/// The innermost error of a chain, in words.
fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = err;
    while let Some(next) = cur.source() {
        cur = next;
    }
    if let Some(io) = cur.downcast_ref::<std::io::Error>() {
        return match io.kind() {
            std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
            std::io::ErrorKind::TimedOut => "connection timed out".into(),
            _ => io.to_string(),
        };
    }
    cur.to_string()
}

impl Client {
    /// A client for the controller at `controller_url` (`http://host:port`; a missing
    /// scheme means `http`, a path is ignored), authenticating with `token` if given.
    pub fn new(controller_url: &str, token: Option<String>) -> Result<Self> {
        let base = normalize_controller_url(controller_url)?;
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.set_nodelay(true);
        let http =
            HyperClient::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(30)).build(connector);
        Ok(Self {
            base,
            token,
            user_agent: default_user_agent(),
            response_limit: DEFAULT_RESPONSE_LIMIT,
            timeout: DEFAULT_TIMEOUT,
            max_body: MAX_RESPONSE_BYTES,
            http,
        })
    }

    /// Uses `limit` as the page size of list requests (`?limit=N`, at least 1).
    pub fn with_response_limit(mut self, limit: u32) -> Self {
        self.response_limit = limit.max(1);
        self
    }

    /// Fails requests that take longer than `timeout` in total.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sends `user_agent` instead of `deis-cli/<version>`.
    pub fn with_user_agent(mut self, user_agent: impl Into<String>) -> Self {
        self.user_agent = user_agent.into();
        self
    }

    /// Caps response bodies at `bytes` instead of [`MAX_RESPONSE_BYTES`].
    pub fn with_max_response_bytes(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }

    /// The normalised controller URL (`http://host:port`).
    pub fn controller_url(&self) -> &str {
        &self.base
    }

    /// The token this client sends, if any.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// Sends one request; returns the status, headers and (capped) body of any answer.
    async fn send(&self, method: Method, path: &str, body: Body, auth: bool) -> Result<(StatusCode, HeaderMap, Bytes)> {
        let url = format!("{}{path}", self.base);
        let mut req = Request::builder().method(method.clone()).uri(&url);
        let ua = HeaderValue::from_str(&self.user_agent)
            .map_err(|_| ClientError::Request(format!("invalid User-Agent {:?}", self.user_agent)))?;
        req = req.header(header::USER_AGENT, ua);
        if auth && let Some(token) = &self.token {
            let value = HeaderValue::from_str(&format!("token {token}"))
                .map_err(|_| ClientError::Request("the token contains characters not allowed in a header".into()))?;
            req = req.header(header::AUTHORIZATION, value);
        }
        let bytes = match body {
            Body::Empty => {
                if auth {
                    req = req.header(header::CONTENT_TYPE, "application/json");
                }
                Bytes::new()
            }
            Body::Json(b) => {
                req = req.header(header::CONTENT_TYPE, "application/json");
                Bytes::from(b)
            }
            Body::Gzip(b) => {
                req = req.header(header::CONTENT_TYPE, "application/gzip");
                Bytes::from(b)
            }
        };
        let req = req.body(Full::new(bytes)).map_err(|e| ClientError::Request(e.to_string()))?;
        let exchange = async {
            let resp = self.http.request(req).await.map_err(|e| {
                let reason = root_cause(&e);
                if e.is_connect() {
                    ClientError::Connect { url: self.base.clone(), reason, source: Box::new(e) }
                } else {
                    ClientError::Transport { method: method.to_string(), url: url.clone(), reason, source: Box::new(e) }
                }
            })?;
            let (parts, incoming) = resp.into_parts();
            let declared = parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
            if declared.is_some_and(|len| len > self.max_body as u64) {
                return Err(ClientError::BodyTooLarge {
                    method: method.to_string(),
                    url: url.clone(),
                    limit: self.max_body,
                });
            }
            let collected = Limited::new(incoming, self.max_body).collect().await.map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    ClientError::BodyTooLarge { method: method.to_string(), url: url.clone(), limit: self.max_body }
                } else {
                    ClientError::Transport {
                        method: method.to_string(),
                        url: url.clone(),
                        reason: format!("reading the response: {}", root_cause(&*e)),
                        source: e,
                    }
                }
            })?;
            Ok((parts.status, parts.headers, collected.to_bytes()))
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(r) => r,
            Err(_) => Err(ClientError::Timeout { method: method.to_string(), url, secs: self.timeout.as_secs() }),
        }
    }

    /// An authenticated request that must succeed (2xx); returns the body.
    async fn call(&self, method: Method, path: &str, body: Body) -> Result<Bytes> {
        let (status, _, bytes) = self.send(method, path, body, true).await?;
        if status.is_success() { Ok(bytes) } else { Err(ClientError::from_response(status.as_u16(), &bytes)) }
    }

    /// Decodes a success body as `T`.
    fn decode<T: DeserializeOwned>(&self, method: &Method, path: &str, bytes: &[u8]) -> Result<T> {
        serde_json::from_slice(bytes).map_err(|e| ClientError::Decode {
            method: method.to_string(),
            url: format!("{}{path}", self.base),
            reason: format!("{e} (body starts {:?})", String::from_utf8_lossy(&bytes[..bytes.len().min(200)])),
        })
    }

    async fn call_json<T: DeserializeOwned>(&self, method: Method, path: &str, body: Body) -> Result<T> {
        let bytes = self.call(method.clone(), path, body).await?;
        self.decode(&method, path, &bytes)
    }

    /// `GET <path>?limit=N`: the `results` of one page.
    async fn list<T: DeserializeOwned>(&self, path: &str) -> Result<Vec<T>> {
        let path = format!("{path}?limit={}", self.response_limit);
        let page: Page<T> = self.call_json(Method::GET, &path, Body::Empty).await?;
        Ok(page.results)
    }

    /// Raw authenticated `GET` of any API path (e.g. `/v2/apps/hello/settings/`),
    /// decoded as JSON. For endpoints this client has no typed method for.
    pub async fn get_json(&self, path: &str) -> Result<serde_json::Value> {
        self.call_json(Method::GET, path, Body::Empty).await
    }

    /// Raw authenticated `POST` of a JSON `body` to any API path, decoded as JSON.
    pub async fn post_json(&self, path: &str, body: &serde_json::Value) -> Result<serde_json::Value> {
        let bytes = serde_json::to_vec(body).map_err(|e| ClientError::Request(e.to_string()))?;
        self.call_json(Method::POST, path, Body::Json(bytes)).await
    }

    // ---- connection and auth -------------------------------------------------------

    /// The connection probe of `register`/`login`: `GET /v2/` without a token must
    /// answer 401, else this is not a Deis controller ([`ClientError::NotAController`]).
    pub async fn check_connection(&self) -> Result<()> {
        let (status, _, _) = self.send(Method::GET, "/v2/", Body::Empty, false).await?;
        if status == StatusCode::UNAUTHORIZED {
            Ok(())
        } else {
            Err(ClientError::NotAController { url: self.base.clone(), status: status.as_u16() })
        }
    }

    /// `GET /healthz` (no token): succeeds on 2xx and reports the server's version headers.
    pub async fn healthz(&self) -> Result<ServerVersion> {
        let (status, headers, body) = self.send(Method::GET, "/healthz", Body::Empty, false).await?;
        if !status.is_success() {
            return Err(ClientError::from_response(status.as_u16(), &body));
        }
        let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        Ok(ServerVersion { api_version: get("DEIS_API_VERSION"), platform_version: get("DEIS_PLATFORM_VERSION") })
    }

    /// `POST /v2/auth/register/`: creates a user (the first one becomes admin). Sends
    /// the token if this client has one (admins registering users). Returns the user.
    pub async fn register(&self, username: &str, password: &str, email: &str) -> Result<serde_json::Value> {
        let body = json_body(&serde_json::json!({"username": username, "password": password, "email": email}))?;
        let bytes = self.call(Method::POST, "/v2/auth/register/", body).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(serde_json::Value::Null);
        }
        self.decode(&Method::POST, "/v2/auth/register/", &bytes)
    }

    /// `POST /v2/auth/login/` (no token sent): returns the user's API token.
    pub async fn login(&self, username: &str, password: &str) -> Result<String> {
        let path = "/v2/auth/login/";
        let body = json_body(&serde_json::json!({"username": username, "password": password}))?;
        let (status, _, bytes) = self.send(Method::POST, path, body, false).await?;
        if !status.is_success() {
            return Err(ClientError::from_response(status.as_u16(), &bytes));
        }
        let t: TokenBody = self.decode(&Method::POST, path, &bytes)?;
        Ok(t.token)
    }

    /// `GET /v2/auth/whoami/`: the user this client's token belongs to.
    pub async fn whoami(&self) -> Result<UserInfo> {
        self.call_json(Method::GET, "/v2/auth/whoami/", Body::Empty).await
    }

    /// `POST /v2/auth/tokens/`: replaces a token; the old one stops working. Returns the
    /// new token (`None` for [`TokenTarget::All`], whose answer carries none).
    pub async fn regenerate_token(&self, target: &TokenTarget) -> Result<Option<String>> {
        let path = "/v2/auth/tokens/";
        let body = match target {
            TokenTarget::Own => Body::Empty,
            TokenTarget::User(u) => json_body(&serde_json::json!({"username": u}))?,
            TokenTarget::All => json_body(&serde_json::json!({"all": true}))?,
        };
        let bytes = self.call(Method::POST, path, body).await?;
        if matches!(target, TokenTarget::All) {
            return Ok(None);
        }
        let t: TokenBody = self.decode(&Method::POST, path, &bytes)?;
        Ok(Some(t.token))
    }

    // ---- apps ----------------------------------------------------------------------

    /// `POST /v2/apps/`: creates an app named `id`, or a random name when `None`.
    pub async fn apps_create(&self, id: Option<&str>) -> Result<App> {
        let body = match id {
            Some(id) => json_body(&serde_json::json!({"id": id}))?,
            None => Body::Empty,
        };
        self.call_json(Method::POST, "/v2/apps/", body).await
    }

    /// `GET /v2/apps/`: the apps the caller may see.
    pub async fn apps_list(&self) -> Result<Vec<App>> {
        self.list("/v2/apps/").await
    }

    /// `GET /v2/apps/<app>/metrics/?minutes=N`: request rate, error rate, latency and unit usage.
    pub async fn app_metrics(&self, app: &str, minutes: u64) -> Result<crate::telemetry::http::AppMetrics> {
        self.call_json(Method::GET, &app_path(app, &format!("metrics/?minutes={minutes}")), Body::Empty).await
    }

    /// `GET /v2/apps/<app>/`: one app, with its formation in `structure`.
    pub async fn app_info(&self, app: &str) -> Result<App> {
        self.call_json(Method::GET, &app_path(app, ""), Body::Empty).await
    }

    /// `DELETE /v2/apps/<app>/`: destroys the app and stops its units.
    pub async fn app_destroy(&self, app: &str) -> Result<()> {
        self.call(Method::DELETE, &app_path(app, ""), Body::Empty).await.map(drop)
    }

    // ---- config --------------------------------------------------------------------

    /// `GET /v2/apps/<app>/config/`: the config of the latest release.
    pub async fn config_get(&self, app: &str) -> Result<Config> {
        self.call_json(Method::GET, &app_path(app, "config/"), Body::Empty).await
    }

    /// `POST /v2/apps/<app>/config/` with a partial config (`null` values unset keys);
    /// makes a new release. Returns the merged config. Maps absent from the patch are not
    /// sent at all.
    pub async fn config_set(&self, app: &str, patch: &ConfigPatch) -> Result<Config> {
        let mut value = serde_json::to_value(patch).map_err(|e| ClientError::Request(e.to_string()))?;
        if let serde_json::Value::Object(map) = &mut value {
            map.retain(|_, v| !v.is_null());
        }
        self.call_json(Method::POST, &app_path(app, "config/"), json_body(&value)?).await
    }

    // ---- builds --------------------------------------------------------------------

    /// `POST /v2/apps/<app>/builds/` `{"image": ..., "procfile": {...}}`: records an image
    /// build and deploys it. `procfile` is omitted when empty.
    pub async fn builds_create_image(
        &self,
        app: &str,
        image: &str,
        procfile: &BTreeMap<ProcessType, String>,
    ) -> Result<BuildCreated> {
        let mut body = serde_json::json!({"image": image});
        if !procfile.is_empty() {
            body["procfile"] = serde_json::to_value(procfile).map_err(|e| ClientError::Request(e.to_string()))?;
        }
        self.call_json(Method::POST, &app_path(app, "builds/"), json_body(&body)?).await
    }

    /// `POST /v2/apps/<app>/builds/` with `Content-Type: application/gzip` and `tarball`
    /// (see [`pack_source_dir`]) as the body: a source build, deployed.
    pub async fn builds_upload_source(&self, app: &str, tarball: Vec<u8>) -> Result<BuildCreated> {
        self.call_json(Method::POST, &app_path(app, "builds/"), Body::Gzip(tarball)).await
    }

    /// `GET /v2/apps/<app>/builds/`: builds, newest first.
    pub async fn builds_list(&self, app: &str) -> Result<Vec<Build>> {
        self.list(&app_path(app, "builds/")).await
    }

    // ---- releases ------------------------------------------------------------------

    /// `GET /v2/apps/<app>/releases/`: releases, newest first.
    pub async fn releases_list(&self, app: &str) -> Result<Vec<Release>> {
        self.list(&app_path(app, "releases/")).await
    }

    /// `GET /v2/apps/<app>/releases/v<version>/`.
    pub async fn release_info(&self, app: &str, version: u64) -> Result<Release> {
        self.call_json(Method::GET, &app_path(app, &format!("releases/v{version}/")), Body::Empty).await
    }

    /// `POST /v2/apps/<app>/releases/rollback/`: a new release copying `version` (the
    /// previous release when `None`). Returns the new release's version.
    pub async fn releases_rollback(&self, app: &str, version: Option<u64>) -> Result<u64> {
        let body = match version {
            Some(v) => json_body(&serde_json::json!({"version": v}))?,
            None => Body::Empty,
        };
        let v: VersionBody = self.call_json(Method::POST, &app_path(app, "releases/rollback/"), body).await?;
        Ok(v.version)
    }

    // ---- processes -----------------------------------------------------------------

    /// `GET /v2/apps/<app>/pods/`: the app's units (every state but destroyed).
    pub async fn pods_list(&self, app: &str) -> Result<Vec<Pod>> {
        self.list(&app_path(app, "pods/")).await
    }

    /// `POST /v2/apps/<app>/scale/` `{"web": 3}`: sets the formation.
    pub async fn scale(&self, app: &str, formation: &BTreeMap<ProcessType, u32>) -> Result<()> {
        self.call(Method::POST, &app_path(app, "scale/"), json_body(formation)?).await.map(drop)
    }

    /// `POST /v2/apps/<app>/pods[/<type>[/<name>]]/restart/`: restarts units; returns
    /// the units restarted (empty when none matched).
    pub async fn restart(&self, app: &str, target: &RestartTarget) -> Result<Vec<Pod>> {
        let rest = match target {
            RestartTarget::All => "pods/restart/".to_string(),
            RestartTarget::Type(t) => format!("pods/{}/restart/", encode_segment(t)),
            RestartTarget::Unit { proc_type, name } => {
                format!("pods/{}/{}/restart/", encode_segment(proc_type), encode_segment(name))
            }
        };
        self.call_json(Method::POST, &app_path(app, &rest), Body::Empty).await
    }

    // ---- domains -------------------------------------------------------------------

    /// `GET /v2/apps/<app>/domains/`: domains routed to the app, sorted.
    pub async fn domains_list(&self, app: &str) -> Result<Vec<Domain>> {
        self.list(&app_path(app, "domains/")).await
    }

    /// `GET /v2/nodes/` (admins): the scheduler's nodes.
    pub async fn nodes(&self) -> Result<Vec<deis_core::scheduler::NodeStatus>> {
        self.list("/v2/nodes/").await
    }

    /// `POST /v2/apps/<app>/domains/` `{"domain": ...}`.
    pub async fn domains_add(&self, app: &str, domain: &str) -> Result<Domain> {
        let body = json_body(&serde_json::json!({"domain": domain}))?;
        self.call_json(Method::POST, &app_path(app, "domains/"), body).await
    }

    /// `DELETE /v2/apps/<app>/domains/<domain>`.
    pub async fn domains_remove(&self, app: &str, domain: &str) -> Result<()> {
        self.call(Method::DELETE, &app_path(app, &format!("domains/{}", encode_segment(domain))), Body::Empty)
            .await
            .map(drop)
    }

    // ---- settings ------------------------------------------------------------------

    /// `GET /v2/apps/<app>/settings/`: maintenance, routable, labels, ... as JSON.
    pub async fn settings_get(&self, app: &str) -> Result<serde_json::Value> {
        self.call_json(Method::GET, &app_path(app, "settings/"), Body::Empty).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn controller_urls_are_normalised() {
        assert_eq!(normalize_controller_url("http://127.0.0.1:8000").unwrap(), "http://127.0.0.1:8000");
        assert_eq!(normalize_controller_url("127.0.0.1:8000/").unwrap(), "http://127.0.0.1:8000");
        assert_eq!(normalize_controller_url("http://deis.example.com/prefix").unwrap(), "http://deis.example.com");
        assert_eq!(normalize_controller_url(" localhost:9 ").unwrap(), "http://localhost:9");
        for bad in ["", "https://x", "ftp://x", "http://", "http://u:p@host"] {
            let e = normalize_controller_url(bad).unwrap_err();
            assert!(matches!(e, ClientError::InvalidUrl { .. }), "{bad}: {e}");
        }
    }

    #[test]
    fn segments_are_percent_encoded() {
        assert_eq!(encode_segment("*.example.com"), "%2A.example.com");
        assert_eq!(encode_segment("a b/c"), "a%20b%2Fc");
        assert_eq!(encode_segment("hello.web-1_~"), "hello.web-1_~");
    }

    #[tokio::test]
    async fn connection_refused_names_the_url_and_deisd() {
        // A port nobody listens on: bind, learn it, close.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let client = Client::new(&format!("http://{addr}"), None).unwrap();
        let err = client.apps_list().await.unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, ClientError::Connect { .. }), "{err:?}");
        assert!(msg.contains(&format!("http://{addr}")), "{msg}");
        assert!(msg.contains("connection refused"), "{msg}");
        assert!(msg.contains("deisd"), "{msg}");
    }

    /// A one-shot HTTP/1.1 responder on loopback that records the request head.
    async fn serve_once(response: Vec<u8>) -> (String, tokio::task::JoinHandle<String>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 64 * 1024];
            let mut got = Vec::new();
            loop {
                let n = sock.read(&mut buf).await.unwrap();
                got.extend_from_slice(&buf[..n]);
                if n == 0 || got.windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            sock.write_all(&response).await.unwrap();
            sock.shutdown().await.ok();
            String::from_utf8_lossy(&got).into_owned()
        });
        (format!("http://{addr}"), task)
    }

    #[tokio::test]
    async fn requests_carry_auth_content_type_and_user_agent() {
        let body = br#"{"count":1,"next":null,"previous":null,"results":[{"uuid":"0b0e9d4c-5a4e-4b4c-9f55-2f6a8c1d7e01","id":"hello","owner":"alice","structure":{"web":2},"created":"2026-01-01T00:00:00Z","updated":"2026-01-01T00:00:00Z"}]}"#;
        let mut resp =
            format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n", body.len())
                .into_bytes();
        resp.extend_from_slice(body);
        let (url, task) = serve_once(resp).await;
        let client = Client::new(&url, Some("abc123".into())).unwrap().with_response_limit(7);
        let apps = client.apps_list().await.unwrap();
        assert_eq!(apps.len(), 1);
        assert_eq!(apps[0].structure["web"], 2);
        let head = task.await.unwrap().to_ascii_lowercase();
        assert!(head.starts_with("get /v2/apps/?limit=7 http/1.1\r\n"), "{head}");
        assert!(head.contains("authorization: token abc123\r\n"), "{head}");
        assert!(head.contains("content-type: application/json\r\n"), "{head}");
        assert!(head.contains(&format!("user-agent: deis-cli/{}\r\n", env!("CARGO_PKG_VERSION"))), "{head}");
    }

    #[tokio::test]
    async fn error_statuses_become_readable_api_errors() {
        let body = br#"{"detail":"Container type worker does not exist in application"}"#;
        let mut resp = format!("HTTP/1.1 404 Not Found\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
        resp.extend_from_slice(body);
        let (url, task) = serve_once(resp).await;
        let client = Client::new(&url, Some("t".into())).unwrap();
        let err = client.scale("hello", &BTreeMap::from([(ProcessType::new("worker").unwrap(), 1)])).await.unwrap_err();
        assert_eq!(err.status(), Some(404));
        assert_eq!(err.to_string(), "Container type worker does not exist in application");
        let head = task.await.unwrap();
        assert!(head.starts_with("POST /v2/apps/hello/scale/ HTTP/1.1"), "{head}");
    }

    #[tokio::test]
    async fn oversized_bodies_are_refused() {
        let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n".to_vec();
        let (url, _task) = serve_once(resp).await;
        let client = Client::new(&url, None).unwrap().with_max_response_bytes(1000);
        let err = client.apps_list().await.unwrap_err();
        assert!(matches!(err, ClientError::BodyTooLarge { limit: 1000, .. }), "{err:?}");

        // Without a Content-Length the cap is enforced while reading.
        let mut resp = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n".to_vec();
        resp.extend(std::iter::repeat_n(b'x', 5000));
        let (url, _task) = serve_once(resp).await;
        let client = Client::new(&url, None).unwrap().with_max_response_bytes(1000);
        let err = client.apps_list().await.unwrap_err();
        assert!(matches!(err, ClientError::BodyTooLarge { limit: 1000, .. }), "{err:?}");
    }

    #[tokio::test]
    async fn probe_wants_401() {
        let (url, _t) = serve_once(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n".to_vec()).await;
        Client::new(&url, None).unwrap().check_connection().await.unwrap();
        let (url, _t) = serve_once(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}".to_vec()).await;
        let err = Client::new(&url, None).unwrap().check_connection().await.unwrap_err();
        assert!(err.to_string().contains("does not appear to be a valid Deis controller"), "{err}");
    }
}
