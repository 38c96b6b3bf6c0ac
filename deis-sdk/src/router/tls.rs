//! TLS termination: which certificate a handshake gets, by SNI.
//!
//! The certificates users attached to domains (`certs/` and `certdomains/` records)
//! are followed by the router's store watcher, which publishes an [`SniTable`] after
//! every change; the resolver reads it without locks on every handshake. A name with
//! no certificate of its own (or no SNI at all) gets the platform certificate
//! (`*.<domain>`). Connections already established keep the certificate they were
//! handshaken with.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use deis_core::model::{CertAttachment, Certificate};
use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// A listener for HTTPS and the certificate to present when no attached certificate
/// matches the client's SNI name.
#[derive(Debug)]
pub struct TlsListener {
    pub(crate) listener: tokio::net::TcpListener,
    pub(crate) fallback: Arc<CertifiedKey>,
}

impl TlsListener {
    /// HTTPS on `listener`, presenting `fallback` (the platform's wildcard
    /// certificate, see [`crate::certs::PlatformCert`]) to names without a certificate
    /// of their own.
    pub fn new(listener: tokio::net::TcpListener, fallback: Arc<CertifiedKey>) -> Self {
        Self { listener, fallback }
    }
}

/// Certificates by the domain they are attached to.
#[derive(Debug, Default)]
pub(crate) struct SniTable {
    /// `www.example.com` → its certificate.
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// Attached to `*.example.com`: keyed by `example.com`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
}

impl SniTable {
    /// The certificate for `name` (lower case): its own, else one attached to the
    /// wildcard over it.
    fn find(&self, name: &str) -> Option<&Arc<CertifiedKey>> {
        self.exact.get(name).or_else(|| name.split_once('.').and_then(|(_, parent)| self.wildcard.get(parent)))
    }

    /// Number of domains with a certificate.
    pub(crate) fn len(&self) -> usize {
        self.exact.len() + self.wildcard.len()
    }
}

/// What the watcher knows about certificates.
#[derive(Debug, Default)]
pub(crate) struct CertState {
    /// Certificates by name, parsed once when their record changes (`None`: the
    /// record can't be used; logged).
    pub certs: HashMap<String, Option<Arc<CertifiedKey>>>,
    /// Attachments by domain.
    pub attachments: HashMap<String, CertAttachment>,
}

impl CertState {
    /// Parses a stored certificate record.
    pub fn put_cert(&mut self, name: &str, record: Result<Certificate, String>) {
        let key = record.and_then(|c| crate::certs::certified_key(&c.certificate, &c.key).map_err(|e| e.message));
        match key {
            Ok(k) => {
                self.certs.insert(name.to_string(), Some(k));
            }
            Err(e) => {
                tracing::warn!(cert = name, error = %e, "router: stored certificate unusable; its domains get the platform certificate");
                self.certs.insert(name.to_string(), None);
            }
        }
    }

    /// The table handshakes read: attachments whose domain still belongs to the app
    /// that attached it (`domain_app` tells a domain's current app).
    pub fn table<'a>(&self, domain_app: impl Fn(&str) -> Option<&'a str>) -> SniTable {
        let mut table = SniTable::default();
        for (domain, attachment) in &self.attachments {
            if domain_app(domain) != Some(attachment.app.as_str()) {
                continue;
            }
            let Some(Some(key)) = self.certs.get(&attachment.cert) else { continue };
            match domain.strip_prefix("*.") {
                Some(parent) => table.wildcard.insert(parent.to_string(), key.clone()),
                None => table.exact.insert(domain.clone(), key.clone()),
            };
        }
        table
    }
}

/// Picks the certificate of a handshake from the live [`SniTable`].
#[derive(Debug)]
struct SniResolver {
    table: Arc<ArcSwap<SniTable>>,
    fallback: Arc<CertifiedKey>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let Some(name) = hello.server_name() else { return Some(self.fallback.clone()) };
        // rustls hands over SNI names already validated as DNS names; only the case varies.
        let table = self.table.load();
        let found = if name.bytes().any(|b| b.is_ascii_uppercase()) {
            table.find(&name.to_ascii_lowercase()).cloned()
        } else {
            table.find(name).cloned()
        };
        Some(found.unwrap_or_else(|| self.fallback.clone()))
    }
}

/// The rustls configuration of the router's TLS listener: HTTP/1.1 (ALPN), TLS 1.2
/// and 1.3, certificates by SNI from `table`.
pub(crate) fn server_config(table: Arc<ArcSwap<SniTable>>, fallback: Arc<CertifiedKey>) -> Arc<ServerConfig> {
    let mut config = ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports the default protocol versions")
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver { table, fallback }));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(names: &[&str]) -> Arc<CertifiedKey> {
        let ck = rcgen::generate_simple_self_signed(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        crate::certs::certified_key(&ck.cert.pem(), &ck.signing_key.serialize_pem()).unwrap()
    }

    #[test]
    fn exact_names_win_over_wildcards_and_stale_attachments_are_ignored() {
        let mut state = CertState::default();
        let (www, wild) = (key(&["www.example.com"]), key(&["*.example.com"]));
        state.certs.insert("www".into(), Some(www.clone()));
        state.certs.insert("wild".into(), Some(wild.clone()));
        state.certs.insert("broken".into(), None);
        let attach = |cert: &str, app: &str| CertAttachment { cert: cert.into(), app: app.into() };
        state.attachments.insert("www.example.com".into(), attach("www", "hello"));
        state.attachments.insert("*.example.com".into(), attach("wild", "hello"));
        state.attachments.insert("old.example.org".into(), attach("www", "gone"));
        state.attachments.insert("b.example.org".into(), attach("broken", "hello"));
        let table = state.table(|d| if d == "old.example.org" { Some("other") } else { Some("hello") });
        assert_eq!(table.len(), 2);
        assert!(Arc::ptr_eq(table.find("www.example.com").unwrap(), &www));
        assert!(Arc::ptr_eq(table.find("api.example.com").unwrap(), &wild));
        assert!(table.find("a.b.example.com").is_none(), "a wildcard covers one label");
        assert!(table.find("old.example.org").is_none(), "the domain moved to another app");
        assert!(table.find("b.example.org").is_none(), "unusable certificates are skipped");
    }
}
