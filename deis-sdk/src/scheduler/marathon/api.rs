//! The part of Marathon's v2 REST API deis uses: app definitions, their tasks and
//! versions. Answers are read up to [`MAX_RESPONSE_BYTES`]; unknown fields are ignored.

use std::collections::BTreeMap;

use bytes::Bytes;
use deis_core::scheduler::{Result, SchedulerError};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use serde::{Deserialize, Serialize};

use crate::scheduler::slots::read_limited;

/// Largest answer read from Marathon.
pub const MAX_RESPONSE_BYTES: usize = 16 << 20;

/// An app definition (`/v2/apps`), the fields deis sets and reads.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct App {
    /// `/deis/<app>/<type>-<n>`.
    pub id: String,
    /// Shell command (`sh -c`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<String>,
    /// CPU shares.
    #[serde(default)]
    pub cpus: f64,
    /// Memory in MiB.
    #[serde(default)]
    pub mem: f64,
    /// Number of instances.
    #[serde(default)]
    pub instances: u32,
    /// Environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Labels (deis keeps the unit's identity here).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Ports Marathon assigns (`PORT0`, `PORT`).
    #[serde(default)]
    pub port_definitions: Vec<PortDefinition>,
    /// Health checks: a task is healthy when all pass.
    #[serde(default)]
    pub health_checks: Vec<HealthCheck>,
    /// How a new version replaces the tasks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade_strategy: Option<UpgradeStrategy>,
    /// The container (image apps).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<Container>,
    /// Placement constraints (`[field, operator, value]`).
    #[serde(default)]
    pub constraints: Vec<Vec<String>>,
    /// Seconds before a failed task is launched again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_seconds: Option<f64>,
    /// The app's version (set by Marathon).
    #[serde(default, skip_serializing)]
    pub version: Option<String>,
    /// Running tasks (with `embed=apps.tasks`).
    #[serde(default, skip_serializing)]
    pub tasks: Vec<Task>,
    /// The last failed task (with `embed=apps.lastTaskFailure`).
    #[serde(default, skip_serializing)]
    pub last_task_failure: Option<TaskFailure>,
}

/// A port Marathon assigns (0: any free port).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortDefinition {
    /// The service port (0: assigned).
    pub port: u32,
    /// `tcp`.
    pub protocol: String,
    /// Its name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// A health check.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheck {
    /// `MESOS_HTTP`, `MESOS_TCP` or `COMMAND`.
    pub protocol: String,
    /// Path of HTTP checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Which assigned port (HTTP and TCP checks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_index: Option<u32>,
    /// The command of COMMAND checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<CheckCommand>,
    /// Seconds after start during which failures don't count.
    pub grace_period_seconds: u32,
    /// Seconds between checks.
    pub interval_seconds: u32,
    /// Seconds one check may take.
    pub timeout_seconds: u32,
    /// Failures in a row after which the task is killed (0: never).
    pub max_consecutive_failures: u32,
}

/// The command of a `COMMAND` check.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckCommand {
    /// Shell command.
    pub value: String,
}

/// How a deployment replaces tasks.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpgradeStrategy {
    /// Share of instances that must stay healthy (1: new before old).
    pub minimum_health_capacity: f64,
    /// Share of extra instances allowed during the upgrade.
    pub maximum_over_capacity: f64,
}

/// An app's container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Container {
    /// `DOCKER` (or `MESOS` with a docker image).
    #[serde(rename = "type")]
    pub kind: String,
    /// The image.
    pub docker: DockerImage,
}

/// The image of a container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DockerImage {
    /// Image reference.
    pub image: String,
}

/// A running task (`/v2/apps/{id}/tasks`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Task {
    /// Task id.
    pub id: String,
    /// Its app.
    #[serde(default)]
    pub app_id: String,
    /// The agent's host name.
    #[serde(default)]
    pub host: String,
    /// The task's addresses.
    #[serde(default)]
    pub ip_addresses: Vec<IpAddress>,
    /// Assigned host ports.
    #[serde(default)]
    pub ports: Vec<u16>,
    /// `TASK_RUNNING`, `TASK_STAGING`, ...
    #[serde(default)]
    pub state: String,
    /// Version of the app the task runs.
    #[serde(default)]
    pub version: String,
    /// When it started running.
    #[serde(default)]
    pub started_at: Option<String>,
    /// Health check results, one per check.
    #[serde(default)]
    pub health_check_results: Vec<HealthCheckResult>,
}

/// One address of a task.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpAddress {
    /// The address.
    pub ip_address: String,
    /// `IPv4` or `IPv6`.
    #[serde(default)]
    pub protocol: String,
}

/// A health check's last result.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheckResult {
    /// Whether it passes.
    pub alive: bool,
}

/// The last failed task of an app.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskFailure {
    /// The task.
    pub task_id: String,
    /// Why it failed.
    #[serde(default)]
    pub message: String,
    /// `TASK_FAILED`, ...
    #[serde(default)]
    pub state: String,
    /// The app version it ran.
    #[serde(default)]
    pub version: String,
}

/// What a change answers: the deployment started.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Change {
    /// The deployment.
    #[serde(default)]
    pub deployment_id: String,
    /// The new version.
    #[serde(default)]
    pub version: String,
}

#[derive(Deserialize)]
struct AppList {
    apps: Vec<App>,
}

#[derive(Deserialize)]
struct OneApp {
    app: App,
}

#[derive(Deserialize)]
struct ErrorMessage {
    message: String,
}

/// A client of one Marathon.
#[derive(Debug, Clone)]
pub struct Marathon {
    base: String,
    http: Client<HttpConnector, Full<Bytes>>,
}

/// Percent-encodes a query value.
fn encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

impl Marathon {
    /// A client of the Marathon at `url` (`http://host:8080`).
    pub fn new(url: &str) -> Result<Self> {
        let parsed = url::Url::parse(url)
            .map_err(|e| SchedulerError::Invalid(format!("--marathon-url {url:?}: {e}; give http://HOST:PORT")))?;
        if parsed.scheme() != "http" {
            return Err(SchedulerError::Invalid(format!(
                "--marathon-url {url:?}: only http:// is supported by this preview"
            )));
        }
        let http = Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
        Ok(Self { base: url.trim_end_matches('/').to_string(), http })
    }

    /// The base URL.
    pub fn url(&self) -> &str {
        &self.base
    }

    /// Sends a request; the body of a 2xx answer, else an error with Marathon's message.
    /// `Ok(None)` for a 404.
    async fn call(&self, method: http::Method, path: &str, body: Option<Vec<u8>>) -> Result<Option<Bytes>> {
        let uri = format!("{}{path}", self.base);
        let what = format!("marathon: {method} {path}");
        let mut req = http::Request::builder().method(method).uri(&uri).header("accept", "application/json");
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| SchedulerError::Backend(format!("{what}: {e}").into()))?;
        let res = tokio::time::timeout(std::time::Duration::from_secs(30), self.http.request(req))
            .await
            .map_err(|_| SchedulerError::Backend(format!("{what}: no answer within 30 s").into()))?
            .map_err(|e| {
                SchedulerError::Backend(format!("{what}: {e}; is Marathon running at {}?", self.base).into())
            })?;
        let status = res.status();
        let bytes = read_limited(res.into_body(), MAX_RESPONSE_BYTES, &what).await?;
        if status == http::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            let msg = serde_json::from_slice::<ErrorMessage>(&bytes)
                .map(|m| m.message)
                .unwrap_or_else(|_| String::from_utf8_lossy(&bytes[..bytes.len().min(512)]).into_owned());
            return Err(SchedulerError::Backend(format!("{what}: {status}: {msg}").into()));
        }
        Ok(Some(bytes))
    }

    fn parse<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T> {
        serde_json::from_slice(bytes)
            .map_err(|e| SchedulerError::Backend(format!("marathon: {what}: unexpected answer: {e}").into()))
    }

    /// `GET /v2/info`: whether Marathon answers.
    pub async fn info(&self) -> Result<serde_json::Value> {
        let body = self.call(http::Method::GET, "/v2/info", None).await?;
        let body =
            body.ok_or_else(|| SchedulerError::Backend("marathon: /v2/info not found: is this Marathon?".into()))?;
        Self::parse(&body, "/v2/info")
    }

    /// Apps whose id starts with `prefix`, with their tasks and last failure.
    pub async fn apps(&self, prefix: &str) -> Result<Vec<App>> {
        let path = format!("/v2/apps?id={}&embed=apps.tasks&embed=apps.lastTaskFailure", encode(prefix));
        let Some(body) = self.call(http::Method::GET, &path, None).await? else { return Ok(vec![]) };
        let list: AppList = Self::parse(&body, "/v2/apps")?;
        // The id filter matches substrings.
        Ok(list.apps.into_iter().filter(|a| a.id.starts_with(prefix)).collect())
    }

    /// `GET /v2/apps/{id}/versions/{version}`: the app as it was at `version`.
    pub async fn app_version(&self, id: &str, version: &str) -> Result<Option<App>> {
        let path = format!("/v2/apps{id}/versions/{}", encode(version));
        match self.call(http::Method::GET, &path, None).await? {
            None => Ok(None),
            Some(body) => Self::parse(&body, "app version").map(Some),
        }
    }

    /// `PUT /v2/apps/{id}`: creates or replaces the app; Marathon deploys the change.
    pub async fn put_app(&self, app: &App) -> Result<Change> {
        let body = serde_json::to_vec(app).map_err(|e| SchedulerError::Backend(Box::new(e)))?;
        let path = format!("/v2/apps{}?force=true", app.id);
        let answer = self.call(http::Method::PUT, &path, Some(body)).await?;
        let answer =
            answer.ok_or_else(|| SchedulerError::Backend(format!("marathon: PUT {path}: not found").into()))?;
        Self::parse(&answer, "PUT app")
    }

    /// `DELETE /v2/apps/{id}`: stops and forgets the app; its deployment (None when
    /// the app was not there).
    pub async fn delete_app(&self, id: &str) -> Result<Option<String>> {
        match self.call(http::Method::DELETE, &format!("/v2/apps{id}?force=true"), None).await? {
            None => Ok(None),
            Some(body) => Ok(Some(Self::parse::<Change>(&body, "DELETE app")?.deployment_id)),
        }
    }

    /// `GET /v2/deployments`: the ids of the deployments in progress.
    pub async fn deployments(&self) -> Result<Vec<String>> {
        #[derive(Deserialize)]
        struct Deployment {
            id: String,
        }
        let Some(body) = self.call(http::Method::GET, "/v2/deployments", None).await? else { return Ok(vec![]) };
        Ok(Self::parse::<Vec<Deployment>>(&body, "/v2/deployments")?.into_iter().map(|d| d.id).collect())
    }

    /// `GET /v2/apps/{id}`.
    pub async fn app(&self, id: &str) -> Result<Option<App>> {
        match self.call(http::Method::GET, &format!("/v2/apps{id}?embed=app.tasks"), None).await? {
            None => Ok(None),
            Some(body) => Self::parse::<OneApp>(&body, "app").map(|a| Some(a.app)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reads_marathon_shapes() {
        let body = br#"{"apps":[{"id":"/deis/a/web-1","cpus":0.1,"mem":16.0,"instances":1,"version":"2026-01-01T00:00:00.000Z",
            "labels":{"DEIS_INSTANCE":"7"},"unknown":{"x":1},
            "tasks":[{"id":"deis_a_web-1.1","appId":"/deis/a/web-1","host":"127.0.0.1","ports":[31000],"state":"TASK_RUNNING",
            "version":"2026-01-01T00:00:00.000Z","healthCheckResults":[{"alive":true,"taskId":"x"}]}],
            "lastTaskFailure":{"taskId":"deis_a_web-1.0","message":"exit 3","state":"TASK_FAILED","version":"v"}}]}"#;
        let list: AppList = Marathon::parse(body, "test").unwrap();
        assert_eq!(list.apps[0].tasks[0].ports, [31000]);
        assert!(list.apps[0].tasks[0].health_check_results[0].alive);
        assert_eq!(list.apps[0].last_task_failure.as_ref().unwrap().message, "exit 3");
    }

    proptest! {
        #[test]
        fn any_answer_is_safe(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Marathon::parse::<AppList>(&body, "test");
        }
    }
}
