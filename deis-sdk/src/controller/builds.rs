//! Builds (§3.4 and extension 1: source tarball uploads).

use std::collections::BTreeMap;

use axum::body::Body;
use axum::extract::State;
use deis_core::ProcessType;
use deis_core::controller::{BuildInput, ControllerError};
use http::{HeaderMap, StatusCode, header};
use serde::Deserialize;

use super::error::{ApiError, ApiResult};
use super::extract::{AppPath, AuthUser, Page, content_length, parse_json, read_body};
use super::{ApiState, json};

/// `Retry-After` of an upload refused because enough are in progress.
const UPLOAD_RETRY_AFTER_SECS: u64 = 5;

/// Content types of a source tarball upload.
const GZIP_TYPES: &[&str] = &["application/gzip", "application/x-gzip", "application/x-tar+gzip"];

fn is_tarball(headers: &HeaderMap) -> bool {
    let Some(ct) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else { return false };
    let essence = ct.split(';').next().unwrap_or_default().trim();
    GZIP_TYPES.iter().any(|t| essence.eq_ignore_ascii_case(t))
}

/// The `procfile` field of an image build: process type → command.
pub(super) fn procfile_of(
    procfile: Option<BTreeMap<String, String>>,
) -> Result<BTreeMap<ProcessType, String>, ControllerError> {
    procfile
        .unwrap_or_default()
        .into_iter()
        .map(|(ty, command)| match ProcessType::new(ty) {
            Ok(ty) => Ok((ty, command)),
            Err(e) => Err(ControllerError::validation("procfile", e.message)),
        })
        .collect()
}

pub(super) async fn list(
    State(s): State<ApiState>,
    AuthUser(user): AuthUser,
    AppPath(app): AppPath,
    page: Page,
) -> ApiResult {
    Ok(page.render(s.controller.builds(&user, &app).await?.iter().map(build_json).collect()))
}

/// A build as JSON, always with an `image` field (empty for source builds).
fn build_json(build: &deis_core::Build) -> serde_json::Value {
    let mut v = serde_json::to_value(build).unwrap_or_default();
    if v.get("image").is_none() {
        v["image"] = serde_json::Value::String(String::new());
    }
    v
}

#[derive(Debug, Deserialize)]
struct ImageBody {
    image: Option<String>,
    #[serde(default)]
    procfile: Option<BTreeMap<String, String>>,
}

/// `POST /v2/apps/<app>/builds/`: `{"image": ...}` as JSON (a tag pinned to its
/// digest with feature `registry`, see `pin`), or a gzipped tar of the app directory
/// with a gzip content type. 201 Build (plus `warning` when the
/// scheduler can't run it).
pub(super) async fn create(
    State(s): State<ApiState>,
    AuthUser(user): AuthUser,
    AppPath(app): AppPath,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    // Unknown apps and foreign apps are refused before a large upload is read.
    s.controller.app(&user, &app).await?;
    // Held until the build is recorded: reading, checking and unpacking.
    let mut _upload = None;
    let input = if is_tarball(&headers) {
        let permit = s.uploads.clone().try_acquire_owned().map_err(|_| ApiError::Busy {
            message: format!(
                "{} source uploads are being processed already; try again in a few seconds",
                s.limits.max_concurrent_uploads
            ),
            retry_after_secs: UPLOAD_RETRY_AFTER_SECS,
        })?;
        _upload = Some(permit);
        let bytes = read_body(body, content_length(&headers), s.limits.max_upload_bytes).await?;
        BuildInput::Source(bytes.to_vec())
    } else {
        let bytes = read_body(body, content_length(&headers), s.limits.max_json_bytes).await?;
        let b: ImageBody = parse_json(&bytes)?;
        let image = b.image.ok_or_else(|| ApiError::required("image"))?;
        #[cfg(feature = "registry")]
        let image = {
            let registry = s.controller.config(&user, &app).await?.registry;
            super::pin::pin(
                image.trim().to_string(),
                app.as_str(),
                deis_core::scheduler::PullCredentials::from_settings(&registry),
            )
            .await?
        };
        BuildInput::Image { image, procfile: procfile_of(b.procfile)? }
    };
    let outcome = s.controller.create_build(&user, &app, input).await?;
    let mut body = build_json(&outcome.build);
    if let Some(warning) = outcome.warning {
        body["warning"] = serde_json::Value::String(warning);
    }
    Ok(json(StatusCode::CREATED, body))
}
