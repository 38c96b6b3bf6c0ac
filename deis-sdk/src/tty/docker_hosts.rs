//! [`DockerHostsTtyBroker`]: `deis run` sessions over the engines the Docker scheduler
//! places units on (feature `docker`), so a session runs where and as the app's units
//! run, not on the machine deisd runs on.
//!
//! - A **running unit container** of the session's process type, on whichever engine
//!   has one (engines asked in the order given), gets the command `docker exec`ed.
//! - Otherwise a **one-off container** runs on the first engine that answers, on the
//!   network the engine's units have (`host` or `bridge`, as `--docker-host` says): of the
//!   release's image (pulled there first when the engine lacks it, with the platform
//!   registry's credentials), or, for a source build, of the stack image with the build
//!   copied in ([`DockerTtyBroker::with_stack_image`]).
//!
//! Each engine's sessions are [`DockerTtyBroker`]'s: same confinement, TTY and pipe
//! modes, exit codes and clean-up.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use bollard::Docker;
use deis_core::scheduler::placement::Plane;
use deis_core::scheduler::{Artifact, PullCredentials};
use deis_core::tty::{Session, SessionSpec, TtyBroker, TtyError};

use super::docker::{DockerConfinement, DockerTtyBroker, DockerTtyError};
use crate::scheduler::docker::{DockerHost, Networking, pull, registry_of};

/// How long one engine may take to negotiate its API version or answer a lookup.
const ENGINE_TIMEOUT: Duration = Duration::from_secs(10);

/// One engine of [`DockerHostsTtyBroker`].
#[derive(Clone)]
struct Engine {
    endpoint: String,
    docker: Docker,
    sessions: DockerTtyBroker,
}

/// A [`TtyBroker`] over several Docker engines. See the module docs.
#[derive(Clone)]
pub struct DockerHostsTtyBroker {
    engines: Vec<Engine>,
    logins: BTreeMap<String, PullCredentials>,
}

impl fmt::Debug for DockerHostsTtyBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let endpoints: Vec<&str> = self.engines.iter().map(|e| e.endpoint.as_str()).collect();
        f.debug_struct("DockerHostsTtyBroker").field("engines", &endpoints).finish_non_exhaustive()
    }
}

impl DockerHostsTtyBroker {
    /// A broker over the data-plane engines of `hosts` (as `--docker-host` gives them);
    /// source builds run on `stack_image`; `logins` are credentials by registry
    /// (`host[:port]`) for pulling release images. An engine that does not answer now
    /// is kept (it may come back) with the client's own API version.
    pub async fn connect(
        hosts: &[DockerHost],
        stack_image: &str,
        logins: BTreeMap<String, PullCredentials>,
    ) -> Result<Self, TtyError> {
        let mut engines = Vec::new();
        for host in hosts.iter().filter(|h| h.planes.contains(Plane::Data)) {
            let endpoint = host.endpoint.clone();
            let docker = Docker::connect_with_host(&endpoint).map_err(|source| {
                TtyError::from(DockerTtyError::Engine { action: "connecting to a docker host", source })
            })?;
            let docker = match tokio::time::timeout(ENGINE_TIMEOUT, docker.clone().negotiate_version()).await {
                Ok(Ok(negotiated)) => negotiated,
                _ => {
                    tracing::warn!(%endpoint, "deis run: docker host does not answer; sessions skip it until it does");
                    docker
                }
            };
            // One-off sessions get the network the engine's units have.
            let network = match host.networking {
                Networking::Host => "host",
                Networking::Bridge => "bridge",
            };
            let sessions = DockerTtyBroker::new(docker.clone())
                .with_stack_image(stack_image)
                .with_confinement(DockerConfinement::default().with_network(network));
            engines.push(Engine { endpoint, docker, sessions });
        }
        if engines.is_empty() {
            return Err(TtyError::Invalid("no data-plane docker host to run sessions on".into()));
        }
        Ok(Self { engines, logins })
    }

    /// The engine with a running unit of the session's process type, if any answers so.
    async fn engine_with_unit(&self, spec: &SessionSpec) -> Option<&Engine> {
        for engine in &self.engines {
            let lookup = engine.sessions.unit_container(spec.app.as_str(), spec.proc_type.as_str());
            match tokio::time::timeout(ENGINE_TIMEOUT, lookup).await {
                Ok(Ok(Some(_))) => return Some(engine),
                Ok(Ok(None)) => {}
                Ok(Err(e)) => tracing::debug!(endpoint = %engine.endpoint, error = %e, "deis run: lookup failed"),
                Err(_) => tracing::debug!(endpoint = %engine.endpoint, "deis run: lookup timed out"),
            }
        }
        None
    }

    /// The first engine that answers, for a one-off container, with the release's image
    /// there.
    async fn engine_for_one_off(&self, spec: &SessionSpec) -> Result<&Engine, TtyError> {
        let mut last = None;
        for engine in &self.engines {
            match tokio::time::timeout(ENGINE_TIMEOUT, self.prepare(engine, &spec.artifact)).await {
                Ok(Ok(())) => return Ok(engine),
                Ok(Err(e)) => last = Some(e),
                Err(_) => last = Some(TtyError::Invalid(format!("docker host {} does not answer", engine.endpoint))),
            }
        }
        Err(last.unwrap_or_else(|| TtyError::Invalid("no docker host answers".into())))
    }

    /// Makes sure `engine` has the image a one-off container of `artifact` needs.
    async fn prepare(&self, engine: &Engine, artifact: &Artifact) -> Result<(), TtyError> {
        let Artifact::Image { reference } = artifact else {
            // The stack image: the scheduler put it on every engine it runs units on.
            return engine
                .docker
                .ping()
                .await
                .map(drop)
                .map_err(|source| DockerTtyError::Engine { action: "reaching the engine", source }.into());
        };
        if engine.docker.inspect_image(reference).await.is_ok() {
            return Ok(());
        }
        let registry = registry_of(reference);
        pull(&engine.docker, reference, registry, self.logins.get(registry)).await.map_err(|e| {
            TtyError::Invalid(format!(
                "cannot pull {reference} on docker host {} for deis run: {e}; check that its registry is \
                 reachable from there",
                engine.endpoint
            ))
        })
    }
}

#[async_trait]
impl TtyBroker for DockerHostsTtyBroker {
    async fn open(&self, spec: SessionSpec) -> Result<Session, TtyError> {
        if spec.command.is_empty() {
            return Err(TtyError::Invalid("empty command".into()));
        }
        let engine = match self.engine_with_unit(&spec).await {
            Some(engine) => engine,
            None => self.engine_for_one_off(&spec).await?,
        };
        engine.sessions.open(spec).await
    }
}
