//! Image builds by tag (`deis pull IMAGE:TAG`) are pinned to the digest the tag names
//! when the build is made (feature `registry`), so every node pulls the same image and
//! never a tag that moved since. The registry is asked with the app's credentials
//! (`deis registry:set`); credentials it refuses are a 400 and nothing is recorded.
//! A registry that cannot be reached (no network here, a registry only the nodes
//! see) leaves the reference as it was given: the scheduler then pulls it.

use std::time::Duration;

use deis_core::scheduler::PullCredentials;
use oci_client::Reference;
use oci_client::secrets::RegistryAuth;

use super::error::ApiError;
use crate::registry::{PushError, RegistryAddress, RegistryClient, RegistryLogin};

/// How long the registry may take to name the digest.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(15);

/// `nginx:1.25` → `nginx`; `host:5000/team/web:1` → `host:5000/team/web`.
fn without_tag(image: &str) -> &str {
    let name_start = image.rfind('/').map_or(0, |i| i + 1);
    match image[name_start..].find(':') {
        Some(colon) => &image[..name_start + colon],
        None => image,
    }
}

/// `image` as `<image without its tag>@digest`, or as given (see the module docs).
pub(super) async fn pin(image: String, app: &str, login: Option<PullCredentials>) -> Result<String, ApiError> {
    if image.contains('@') {
        return Ok(image);
    }
    let Ok(reference) = Reference::try_from(image.as_str()) else { return Ok(image) };
    let Ok(address) = RegistryAddress::parse(reference.resolve_registry()) else { return Ok(image) };
    let had_login = login.is_some();
    let login = login.map(|l| RegistryLogin { username: l.username, password: l.password });
    let auth =
        login.as_ref().map_or(RegistryAuth::Anonymous, |l| RegistryAuth::Basic(l.username.clone(), l.password.clone()));
    let client = RegistryClient::new(address, login);
    let asked = tokio::time::timeout(RESOLVE_TIMEOUT, client.inner().fetch_manifest_digest(&reference, &auth)).await;
    match asked {
        Ok(Ok(digest)) => Ok(format!("{}@{digest}", without_tag(&image))),
        Ok(Err(e)) => match client.error("resolving the tag", e) {
            // Without credentials of the app's, the nodes may still have access.
            PushError::Unauthorized { .. } if !had_login => Ok(image),
            e @ PushError::Unauthorized { .. } => Err(ApiError::bad_request(format!(
                "cannot pull {image}: {e}; fix them with deis registry:set username=… password=… -a {app}. \
                 Nothing was deployed."
            ))),
            e => {
                tracing::warn!(%image, error = %e, "image tag not pinned to a digest; the nodes pull the tag");
                Ok(image)
            }
        },
        Err(_) => {
            tracing::warn!(%image, "the registry did not name the tag's digest in time; the nodes pull the tag");
            Ok(image)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_cut_but_registry_ports_stay() {
        assert_eq!(without_tag("nginx:1.25"), "nginx");
        assert_eq!(without_tag("127.0.0.1:5000/team/web:1"), "127.0.0.1:5000/team/web");
        assert_eq!(without_tag("127.0.0.1:5000/team/web"), "127.0.0.1:5000/team/web");
        assert_eq!(without_tag("busybox"), "busybox");
    }

    #[tokio::test]
    async fn references_by_digest_and_unreachable_registries_are_left_alone() {
        let digest = format!("nginx@sha256:{}", "0".repeat(64));
        assert_eq!(pin(digest.clone(), "a", None).await.unwrap(), digest);
        // Nothing listens on port 1 of loopback: the tag stays for the nodes to pull.
        assert_eq!(pin("127.0.0.1:1/web:1".into(), "a", None).await.unwrap(), "127.0.0.1:1/web:1");
    }
}
