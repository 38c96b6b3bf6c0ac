//! How to reach an etcd cluster: endpoints, TLS, user and password, namespace.

use std::path::PathBuf;
use std::time::Duration;

use deis_core::store::{Result, StoreError};
use etcd_client::{Certificate, ConnectOptions, Identity, TlsOptions};

/// TLS towards etcd (endpoints `https://…`): the CA that signed the servers'
/// certificates and, for clusters that check clients (`--client-cert-auth`), this
/// client's certificate and key. PEM files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EtcdTls {
    /// CA certificate(s) to trust (etcd's `--trusted-ca-file`); `None`: the system roots
    /// are not used, so give one.
    pub ca: Option<PathBuf>,
    /// Client certificate (with `key`).
    pub cert: Option<PathBuf>,
    /// Client private key (with `cert`).
    pub key: Option<PathBuf>,
}

/// Settings of an [`EtcdStore`](super::EtcdStore).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EtcdConfig {
    /// Client URLs of the members (`http://host:2379`, `https://…` with [`tls`](Self::tls)).
    pub endpoints: Vec<String>,
    /// TLS settings; required for `https://` endpoints.
    pub tls: Option<EtcdTls>,
    /// User and password, for clusters with authentication enabled.
    pub user: Option<(String, String)>,
    /// A namespace: every key is stored under it (e.g. `deis/`), so several platforms
    /// can share one cluster. Empty by default.
    pub prefix: String,
    /// How long one request may take before the cluster counts as unavailable.
    pub request_timeout: Duration,
    /// How long connecting to one member may take.
    pub connect_timeout: Duration,
}

impl EtcdConfig {
    /// Plain-text endpoints, no auth, no namespace, 5 s request and 2 s connect timeouts.
    pub fn new<S: Into<String>>(endpoints: impl IntoIterator<Item = S>) -> Self {
        Self {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            tls: None,
            user: None,
            prefix: String::new(),
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
        }
    }

    /// With TLS.
    pub fn with_tls(mut self, tls: EtcdTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// With user and password.
    pub fn with_user(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.user = Some((user.into(), password.into()));
        self
    }

    /// With a key namespace.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// etcd-client's options, with the TLS files read.
    pub(super) async fn connect_options(&self) -> Result<ConnectOptions> {
        if self.endpoints.is_empty() {
            return Err(StoreError::Invalid("etcd: no endpoints given".into()));
        }
        let mut options = ConnectOptions::new()
            .with_timeout(self.request_timeout)
            .with_connect_timeout(self.connect_timeout)
            // Dead connections are noticed within seconds, so watches move to a live member.
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2))
            .with_keep_alive_while_idle(true)
            // A member cut off from the quorum refuses (and ends watches) instead of
            // serving stale data.
            .with_require_leader(true);
        if let Some((user, password)) = &self.user {
            options = options.with_user(user, password);
        }
        if let Some(tls) = &self.tls {
            let mut t = TlsOptions::new();
            if let Some(ca) = &tls.ca {
                t = t.ca_certificate(Certificate::from_pem(read(ca, "CA certificate").await?));
            }
            match (&tls.cert, &tls.key) {
                (Some(cert), Some(key)) => {
                    t = t.identity(Identity::from_pem(
                        read(cert, "client certificate").await?,
                        read(key, "client key").await?,
                    ));
                }
                (None, None) => {}
                _ => return Err(StoreError::Invalid("etcd TLS: give both the client certificate and its key".into())),
            }
            options = options.with_tls(t);
        }
        Ok(options)
    }
}

async fn read(path: &PathBuf, what: &str) -> Result<Vec<u8>> {
    tokio::fs::read(path)
        .await
        .map_err(|e| StoreError::Invalid(format!("etcd TLS: reading the {what} {}: {e}", path.display())))
}
