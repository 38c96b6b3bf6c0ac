//! `etcd://` and `etcds://` store URIs.
//!
//! ```text
//! etcd://HOST:PORT[,HOST:PORT…][?prefix=NS/&user=NAME&password-file=PATH]
//! etcds://HOST:PORT[,HOST:PORT…]?ca=PATH[&cert=PATH&key=PATH][&prefix=…&user=…&password-file=…]
//! ```
//!
//! `etcds` speaks TLS to every member, trusting the CA in `ca` (etcd's
//! `--trusted-ca-file`); `cert` and `key` are this client's certificate and key, for
//! clusters started with `--client-cert-auth`. `user` and `password-file` log in to a
//! cluster with authentication enabled; the password is read from a file (first line) so
//! it shows neither in the process list nor in logs. `prefix` is a namespace that every
//! key is stored under, so several platforms can share one cluster. Values are
//! percent-decoded.

use std::path::PathBuf;

/// The parts of an etcd store URI.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EtcdUri {
    /// `host:port` of each member.
    pub hosts: Vec<String>,
    /// Whether to speak TLS (`etcds://`).
    pub tls: bool,
    /// `ca=`: the CA certificate to trust (PEM).
    pub ca: Option<PathBuf>,
    /// `cert=`: the client certificate (PEM).
    pub cert: Option<PathBuf>,
    /// `key=`: the client key (PEM).
    pub key: Option<PathBuf>,
    /// `user=`: the user to log in as.
    pub user: Option<String>,
    /// `password-file=`: where that user's password is.
    pub password_file: Option<PathBuf>,
    /// `prefix=`: the key namespace.
    pub prefix: String,
}

/// Why an etcd URI was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum EtcdUriError {
    /// No host, or an empty host in the list.
    Incomplete,
    /// A host without a port, a query parameter we don't know, or options that need
    /// each other given alone.
    Invalid,
}

impl EtcdUri {
    /// Parses an `etcd://` or `etcds://` URI; `None` for any other scheme.
    pub(super) fn parse(s: &str) -> Option<Result<Self, EtcdUriError>> {
        let (tls, rest) = if let Some(rest) = s.strip_prefix("etcd://") {
            (false, rest)
        } else if let Some(rest) = s.strip_prefix("etcds://") {
            (true, rest)
        } else {
            return None;
        };
        Some(Self::parse_rest(tls, rest))
    }

    fn parse_rest(tls: bool, rest: &str) -> Result<Self, EtcdUriError> {
        let (hosts, query) = rest.split_once('?').unwrap_or((rest, ""));
        let hosts = hosts.trim_end_matches('/');
        if hosts.is_empty() {
            return Err(EtcdUriError::Incomplete);
        }
        let mut uri = EtcdUri { tls, ..Self::default() };
        for host in hosts.split(',') {
            let port = host.rsplit_once(':').map(|(h, p)| (h, p.parse::<u16>()));
            match port {
                Some((h, Ok(_))) if !h.is_empty() && !h.contains(['/', '@', ' ']) => uri.hosts.push(host.to_string()),
                _ if host.is_empty() => return Err(EtcdUriError::Incomplete),
                _ => return Err(EtcdUriError::Invalid),
            }
        }
        for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
            let value = value.into_owned();
            match &*name {
                "ca" => uri.ca = Some(value.into()),
                "cert" => uri.cert = Some(value.into()),
                "key" => uri.key = Some(value.into()),
                "user" => uri.user = Some(value),
                "password-file" => uri.password_file = Some(value.into()),
                "prefix" => uri.prefix = value,
                _ => return Err(EtcdUriError::Invalid),
            }
        }
        let tls_options = uri.ca.is_some() || uri.cert.is_some() || uri.key.is_some();
        if (tls_options && !tls)
            || (tls && uri.ca.is_none())
            || uri.cert.is_some() != uri.key.is_some()
            || uri.user.is_some() != uri.password_file.is_some()
        {
            return Err(EtcdUriError::Invalid);
        }
        Ok(uri)
    }

    /// The members' client URLs.
    pub fn endpoints(&self) -> Vec<String> {
        let scheme = if self.tls { "https" } else { "http" };
        self.hosts.iter().map(|h| format!("{scheme}://{h}")).collect()
    }

    /// The store's settings, with the password read from its file.
    #[cfg(feature = "etcd")]
    pub async fn config(&self) -> Result<crate::etcd::EtcdConfig, deis_core::StoreError> {
        use deis_core::StoreError;
        let mut config = crate::etcd::EtcdConfig::new(self.endpoints()).with_prefix(self.prefix.clone());
        if self.tls {
            config = config.with_tls(crate::etcd::EtcdTls {
                ca: self.ca.clone(),
                cert: self.cert.clone(),
                key: self.key.clone(),
            });
        }
        if let (Some(user), Some(file)) = (&self.user, &self.password_file) {
            let password = tokio::fs::read_to_string(file)
                .await
                .map_err(|e| StoreError::Invalid(format!("etcd: reading the password file {}: {e}", file.display())))?;
            config = config.with_user(user.clone(), password.lines().next().unwrap_or_default().to_string());
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<EtcdUri, EtcdUriError> {
        EtcdUri::parse(s).expect("an etcd scheme")
    }

    #[test]
    fn forms() {
        let u = parse("etcd://10.0.0.1:2379,10.0.0.2:2379").unwrap();
        assert_eq!(u.endpoints(), ["http://10.0.0.1:2379", "http://10.0.0.2:2379"]);
        assert_eq!((u.tls, u.prefix.as_str(), u.user.as_ref()), (false, "", None));

        let u = parse("etcds://e1:2379?ca=/etc/ca.pem&cert=/c.pem&key=/k.pem&user=deis&password-file=/p&prefix=a%2Fb/")
            .unwrap();
        assert_eq!(u.endpoints(), ["https://e1:2379"]);
        assert_eq!(u.ca.as_deref(), Some(std::path::Path::new("/etc/ca.pem")));
        assert_eq!((u.cert.is_some(), u.key.is_some()), (true, true));
        assert_eq!((u.user.as_deref(), u.prefix.as_str()), (Some("deis"), "a/b/"));
        assert!(EtcdUri::parse("redb:x").is_none());
    }

    #[test]
    fn refusals() {
        for (uri, why) in [
            ("etcd://", EtcdUriError::Incomplete),
            ("etcd://a:1,", EtcdUriError::Incomplete),
            ("etcd://host", EtcdUriError::Invalid),
            ("etcd://host:port", EtcdUriError::Invalid),
            ("etcd://a:1?colour=red", EtcdUriError::Invalid),
            ("etcd://a:1?ca=/ca.pem", EtcdUriError::Invalid),
            ("etcds://a:1", EtcdUriError::Invalid),
            ("etcds://a:1?ca=/c&cert=/x", EtcdUriError::Invalid),
            ("etcd://a:1?user=deis", EtcdUriError::Invalid),
        ] {
            assert_eq!(parse(uri), Err(why), "{uri}");
        }
    }
}
