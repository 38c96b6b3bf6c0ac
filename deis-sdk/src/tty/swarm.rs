//! [`SwarmTtyBroker`]: `deis run` sessions on a Docker Swarm (feature `swarm`), run by
//! the manager's engine as [`DockerTtyBroker`] runs them on a Docker engine.
//!
//! - The session runs in the release's image with the app's config: `docker exec` in a
//!   running unit container of its process type on the manager's node, else in a
//!   one-off container there (on the engine's bridge: outbound access, none to the
//!   manager's loopback; confined as [`DockerTtyBroker`] confines them, removed when the
//!   session ends).
//! - A source build runs in the image the swarm scheduler committed for its release on
//!   the manager's engine ([`build_image`]); an image release is pulled there first when
//!   the engine lacks it (units may run on other nodes only), with the platform
//!   registry's credentials.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use bollard::Docker;
use deis_core::scheduler::{Artifact, PullCredentials};
use deis_core::tty::{Session, SessionSpec, TtyBroker, TtyError};

use super::docker::{DockerConfinement, DockerTtyBroker, DockerTtyError};
use crate::scheduler::docker::{pull, registry_of};
use crate::scheduler::swarm::build_image;

/// The network of one-off sessions on the manager's engine.
const ONE_OFF_NETWORK: &str = "bridge";

/// How long connecting to the manager's engine may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A [`TtyBroker`] on a swarm's manager. See the module docs.
#[derive(Clone)]
pub struct SwarmTtyBroker {
    docker: Docker,
    sessions: DockerTtyBroker,
    logins: BTreeMap<String, PullCredentials>,
}

impl fmt::Debug for SwarmTtyBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SwarmTtyBroker")
    }
}

fn engine(action: &'static str) -> impl FnOnce(bollard::errors::Error) -> TtyError {
    move |source| DockerTtyError::Engine { action, source }.into()
}

impl SwarmTtyBroker {
    /// Connects to the manager's engine at `endpoint` (`unix:///…` or
    /// `tcp://host:port`, as `--docker-host`); `logins` are credentials by registry
    /// (`host[:port]`) for pulling release images.
    pub async fn connect(endpoint: &str, logins: BTreeMap<String, PullCredentials>) -> Result<Self, TtyError> {
        let docker = Docker::connect_with_host(endpoint).map_err(engine("connecting to the swarm manager"))?;
        let docker = tokio::time::timeout(CONNECT_TIMEOUT, docker.negotiate_version())
            .await
            .map_err(|_| {
                TtyError::Invalid(format!("the swarm manager {endpoint} does not answer within 10 s: is it running?"))
            })?
            .map_err(engine("negotiating the API version"))?;
        // One-off sessions run on the manager, which runs no units: on its bridge they
        // reach what units reach, not the control plane's own loopback services.
        let sessions = DockerTtyBroker::new(docker.clone())
            .with_confinement(DockerConfinement::default().with_network(ONE_OFF_NETWORK));
        Ok(Self { sessions, docker, logins })
    }

    /// The image of the session's release, on the manager's engine.
    async fn image_of(&self, spec: &SessionSpec) -> Result<String, TtyError> {
        match &spec.artifact {
            Artifact::Source { dir } => {
                let image = build_image(&spec.app, spec.release, dir);
                if self.docker.inspect_image(&image).await.is_err() {
                    return Err(TtyError::Unsupported(format!(
                        "release v{} of {} has no image on the swarm manager's engine ({image}): the scheduler \
                         builds it when the release is deployed; deploy again (deis releases:rollback v{}) and retry",
                        spec.release, spec.app, spec.release
                    )));
                }
                Ok(image)
            }
            Artifact::Image { reference } => {
                if self.docker.inspect_image(reference).await.is_err() {
                    let registry = registry_of(reference);
                    pull(&self.docker, reference, registry, self.logins.get(registry)).await.map_err(|e| {
                        TtyError::Invalid(format!(
                            "cannot pull {reference} on the swarm manager for deis run: {e}; check that its \
                             registry is reachable from there"
                        ))
                    })?;
                }
                Ok(reference.clone())
            }
        }
    }
}

#[async_trait]
impl TtyBroker for SwarmTtyBroker {
    async fn open(&self, mut spec: SessionSpec) -> Result<Session, TtyError> {
        if spec.command.is_empty() {
            return Err(TtyError::Invalid("empty command".into()));
        }
        spec.artifact = Artifact::Image { reference: self.image_of(&spec).await? };
        self.sessions.open(spec).await
    }
}
