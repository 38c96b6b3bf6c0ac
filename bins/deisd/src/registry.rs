//! The platform registry flags: where `deis push` pushes and engines pull from.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use deis_sdk::controller::{PlatformRegistry, RegistryTokens};
use deis_sdk::registry::embedded::EmbeddedRegistry;
use deis_sdk::registry::token::TokenIssuer;
use deis_sdk::registry::{RegistryAddress, RegistryLogin};

/// `--registry` and its credentials.
#[derive(Debug, Clone, Args)]
pub struct RegistryArgs {
    /// The platform registry `deis push` pushes to and engines pull from: a Docker
    /// Registry v2 / OCI distribution registry (`http://HOST:PORT`, `https://HOST`), or
    /// `embedded` to run Debian's docker-registry on loopback with its config and data
    /// in `<data dir>/registry/`. Default: none (`deis push` is refused).
    #[arg(long, env = "DEIS_REGISTRY", value_name = "URL|embedded")]
    pub registry: Option<String>,
    /// Username on the platform registry (htpasswd basic auth or a token service).
    #[arg(long, env = "DEIS_REGISTRY_USERNAME", requires = "registry_password")]
    pub registry_username: Option<String>,
    /// Password of --registry-username.
    #[arg(long, env = "DEIS_REGISTRY_PASSWORD", hide_env_values = true, requires = "registry_username")]
    pub registry_password: Option<String>,
    /// How long the registry token `deis push` gets (for its app's repository) lasts,
    /// with `--registry embedded` (which takes deisd's tokens). The registry allows
    /// 60 s of clock skew past it.
    #[arg(long, env = "DEIS_REGISTRY_TOKEN_TTL", default_value = "15m", value_parser = super::duration)]
    pub registry_token_ttl: Duration,
}

/// The username deisd itself uses on the embedded registry (its engines pull with it).
const PLATFORM_USER: &str = "deis-platform";

/// The platform registry, and the embedded one if deisd runs it.
#[derive(Debug)]
pub struct OpenRegistry {
    /// What the controller and the schedulers use.
    pub platform: PlatformRegistry,
    /// The `docker-registry` deisd started (stopped by PID at shutdown).
    pub embedded: Option<EmbeddedRegistry>,
}

impl RegistryArgs {
    fn login(&self) -> Option<RegistryLogin> {
        match (&self.registry_username, &self.registry_password) {
            (Some(u), Some(p)) => Some(RegistryLogin { username: u.clone(), password: p.clone() }),
            _ => None,
        }
    }

    /// Starts the embedded registry or checks the URL; None without `--registry`.
    /// `api` is deisd's API address: the embedded registry's token realm.
    pub async fn open(&self, data_dir: &Path, api: SocketAddr) -> Result<Option<OpenRegistry>, String> {
        let Some(registry) = self.registry.as_deref().map(str::trim).filter(|r| !r.is_empty()) else {
            return Ok(None);
        };
        if registry == "embedded" {
            if self.login().is_some() {
                return Err("--registry embedded makes its own credentials (it takes deisd's tokens): drop \
                            --registry-username and --registry-password, or give the URL of your own registry"
                    .into());
            }
            if api.port() == 0 {
                return Err("--registry embedded needs a fixed --api-addr port: the registry sends clients there \
                            for their tokens"
                    .into());
            }
            let dir = data_dir.join("registry");
            let issuer =
                TokenIssuer::load_or_create(&dir.join("auth")).map_err(|e| format!("--registry embedded: {e}"))?;
            let host = if api.ip().is_unspecified() { IpAddr::from([127, 0, 0, 1]) } else { api.ip() };
            let realm = format!("http://{}/v2/registry/token", SocketAddr::new(host, api.port()));
            let embedded = EmbeddedRegistry::start(&dir, Some(&issuer.registry_auth_config(&realm)))
                .await
                .map_err(|e| format!("--registry embedded: {e}"))?;
            let password = platform_password(&dir.join("auth")).map_err(|e| format!("--registry embedded: {e}"))?;
            let login = RegistryLogin { username: PLATFORM_USER.into(), password };
            let tokens = RegistryTokens { issuer: Arc::new(issuer), ttl: self.registry_token_ttl };
            let platform = PlatformRegistry::with_tokens(embedded.address(), login, tokens);
            return Ok(Some(OpenRegistry { platform, embedded: Some(embedded) }));
        }
        let address = RegistryAddress::parse(registry).map_err(|e| format!("--registry: {e}"))?;
        Ok(Some(OpenRegistry { platform: PlatformRegistry::new(address, self.login()), embedded: None }))
    }
}

/// The password of [`PLATFORM_USER`], made at first start (`platform-password`, mode
/// 0600): only deisd and the engines it hands it to know it.
fn platform_password(dir: &Path) -> std::io::Result<String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join("platform-password");
    if let Ok(kept) = std::fs::read_to_string(&path)
        && kept.trim().len() >= 32
    {
        return Ok(kept.trim().to_string());
    }
    let password = deis_sdk::deis_core::auth::random_hex(32);
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&path)?;
    f.write_all(password.as_bytes())?;
    Ok(password)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Flags {
        #[command(flatten)]
        registry: RegistryArgs,
    }

    fn open(args: &[&str]) -> Result<Option<OpenRegistry>, String> {
        let flags = Flags::try_parse_from(["deisd"].iter().chain(args)).map_err(|e| e.to_string())?;
        let dir = tempfile::tempdir().unwrap();
        tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(flags.registry.open(dir.path(), "127.0.0.1:8000".parse().unwrap()))
    }

    #[test]
    fn registry_flags_name_a_registry_and_its_credentials() {
        assert!(open(&[]).unwrap().is_none(), "no registry by default");
        let r = open(&[
            "--registry",
            "https://registry.example.com",
            "--registry-username",
            "u",
            "--registry-password",
            "p",
        ])
        .unwrap()
        .unwrap();
        assert_eq!(r.platform.client.host(), "registry.example.com");
        assert!(!r.platform.client.address().insecure);
        assert_eq!(r.platform.login.as_ref().map(|l| l.username.as_str()), Some("u"));
        assert!(r.embedded.is_none());
        let e = open(&["--registry", "http://host/path"]).unwrap_err();
        assert!(e.contains("--registry") && e.contains("not a registry address"), "{e}");
        let e = open(&["--registry", "embedded", "--registry-username", "u", "--registry-password", "p"]).unwrap_err();
        assert!(e.contains("makes its own credentials"), "{e}");
        let e = open(&["--registry", "x:1", "--registry-username", "u"]).unwrap_err();
        assert!(e.contains("--registry-password"), "{e}");
    }
}
