//! Pulling an image build onto the engines before its units start, so a registry
//! that refuses the credentials (or has no such image) refuses the deploy, with
//! nothing changed, instead of leaving units that crash.
//!
//! Credentials: the platform's for its own registry
//! ([`DockerSchedulerConfig::registry_logins`](super::DockerSchedulerConfig::registry_logins)),
//! else the app's (`deis registry:set`, [`AppSpec::pull_credentials`]). Images pushed
//! with `deis push` are named by digest, so what is pulled is what was pushed.

use std::collections::BTreeMap;

use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::query_parameters::CreateImageOptions;
use deis_core::scheduler::{AppSpec, Artifact, PullCredentials, SchedulerError};
use futures_util::StreamExt;

/// How long an engine may take to answer before its pull is skipped.
const PING_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// The registry part of an image reference (`host[:port]`), or `docker.io`.
pub fn registry_of(image: &str) -> &str {
    match image.split_once('/') {
        Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => first,
        _ => "docker.io",
    }
}

/// Makes sure every engine of `engines` has the spec's image; see the module docs.
pub(super) async fn ensure_image(
    engines: &[(String, Docker)],
    spec: &AppSpec,
    logins: &BTreeMap<String, PullCredentials>,
) -> Result<(), SchedulerError> {
    let Artifact::Image { reference } = &spec.artifact else { return Ok(()) };
    let registry = registry_of(reference);
    let login = logins.get(registry).or(spec.pull_credentials.as_ref());
    for (node, docker) in engines {
        // A silent engine gets no new units (the health watch marks it down): its
        // pull must not refuse the deploy on the others.
        if !matches!(tokio::time::timeout(PING_TIMEOUT, docker.ping()).await, Ok(Ok(_))) {
            tracing::warn!(%node, image = %reference, "docker scheduler: engine does not answer; image not pulled there");
            continue;
        }
        // An image named by digest never changes: one present is the one wanted. A
        // tag present on the engine is used as it is (pull-if-missing, as Docker's
        // own default): name images by digest to get exactly what was pushed.
        if docker.inspect_image(reference).await.is_ok() {
            continue;
        }
        pull(docker, reference, registry, login).await.map_err(|e| refusal(&spec.app, node, reference, login, &e))?;
    }
    Ok(())
}

/// Pulls `image` from `registry` onto `docker`, with `login` if given.
pub(crate) async fn pull(
    docker: &Docker,
    image: &str,
    registry: &str,
    login: Option<&PullCredentials>,
) -> Result<(), bollard::errors::Error> {
    let credentials = login.map(|l| DockerCredentials {
        username: Some(l.username.clone()),
        password: Some(l.password.clone()),
        serveraddress: Some(registry.to_string()),
        ..Default::default()
    });
    let options = CreateImageOptions { from_image: Some(image.to_string()), ..Default::default() };
    let mut progress = docker.create_image(Some(options), None, credentials);
    while let Some(item) = progress.next().await {
        item?;
    }
    Ok(())
}

/// What the user is told when an engine cannot pull.
fn refusal(
    app: &deis_core::AppName,
    node: &str,
    image: &str,
    login: Option<&PullCredentials>,
    e: &bollard::errors::Error,
) -> SchedulerError {
    let said = match e {
        bollard::errors::Error::DockerStreamError { error } => error.clone(),
        bollard::errors::Error::DockerResponseServerError { message, .. } => message.clone(),
        other => other.to_string(),
    };
    let lower = said.to_ascii_lowercase();
    let auth = ["unauthorized", "authentication required", "denied", "no basic auth credentials"]
        .iter()
        .any(|w| lower.contains(w));
    let advice = match (auth, login) {
        (true, Some(l)) => format!(
            "the registry refused the credentials of {}; fix them with deis registry:set username=… password=… -a {app}",
            l.username
        ),
        (true, None) => {
            format!("the registry wants credentials; set them with deis registry:set username=… password=… -a {app}")
        }
        (false, _) => "check the image reference and that the registry is reachable from the node".to_string(),
    };
    SchedulerError::Invalid(format!("cannot pull {image} on node {node}: {said}; {advice}. Nothing was deployed."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registries_of_references() {
        assert_eq!(registry_of("127.0.0.1:5000/app@sha256:00"), "127.0.0.1:5000");
        assert_eq!(registry_of("registry.example.com/team/app:v1"), "registry.example.com");
        assert_eq!(registry_of("localhost/app"), "localhost");
        assert_eq!(registry_of("library/nginx:1.25"), "docker.io");
        assert_eq!(registry_of("nginx"), "docker.io");
    }
}
