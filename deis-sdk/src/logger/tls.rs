//! TLS material for the syslog TLS listener (RFC 5425) and `syslog+tls://` drains.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// Errors loading TLS certificates and keys.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file can't be read or holds nothing usable.
    #[error("reading {what} from {path}: {detail}; give a PEM file holding {what}")]
    Pem {
        /// What the file should hold.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
    /// rustls refused the certificate/key pair.
    #[error("TLS configuration: {0}; check that the key matches the certificate")]
    Config(#[from] rustls::Error),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A rustls server configuration from a PEM certificate chain and a PEM private key
/// (PKCS#8, PKCS#1 or SEC1).
pub fn server_config_from_pem(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let pem_err = |what, path: &Path, detail: String| TlsError::Pem { what, path: path.into(), detail };
    let certs = CertificateDer::pem_file_iter(cert)
        .map_err(|e| pem_err("a certificate chain", cert, e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_err("a certificate chain", cert, e.to_string()))?;
    if certs.is_empty() {
        return Err(pem_err("a certificate chain", cert, "no CERTIFICATE block found".into()));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| pem_err("a private key", key, e.to_string()))?;
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)?;
    Ok(Arc::new(config))
}

/// Trust anchors from a PEM bundle (e.g. `/etc/ssl/certs/ca-certificates.crt`, or a
/// test CA).
pub fn load_root_certs(bundle: &Path) -> Result<RootCertStore, TlsError> {
    let pem_err = |detail: String| TlsError::Pem { what: "CA certificates", path: bundle.into(), detail };
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(bundle).map_err(|e| pem_err(e.to_string()))? {
        let cert = cert.map_err(|e| pem_err(e.to_string()))?;
        // A bundle may hold certificates webpki can't use; keep the others.
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        return Err(pem_err("no usable CERTIFICATE block found".into()));
    }
    Ok(roots)
}

/// A rustls client configuration trusting `roots`.
pub fn client_config_with_roots(roots: RootCertStore) -> Arc<ClientConfig> {
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

/// The system's CA bundle: `$SSL_CERT_FILE`, else Debian's/Fedora's usual paths.
pub(crate) fn system_roots() -> Option<RootCertStore> {
    let candidates = std::env::var_os("SSL_CERT_FILE").map(PathBuf::from).into_iter().chain(
        ["/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt", "/etc/ssl/cert.pem"]
            .into_iter()
            .map(PathBuf::from),
    );
    candidates.filter(|p| p.exists()).find_map(|p| load_root_certs(&p).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_or_empty_files_say_what_to_give() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let err = server_config_from_pem(&empty, &empty).unwrap_err().to_string();
        assert!(err.contains("certificate chain") && err.contains("no CERTIFICATE"), "{err}");
        let err = server_config_from_pem(&dir.path().join("nope"), &empty).unwrap_err().to_string();
        assert!(err.contains("nope"), "{err}");
        assert!(load_root_certs(&empty).is_err());
    }

    #[test]
    fn loads_a_generated_pair() {
        let dir = tempfile::tempdir().unwrap();
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        std::fs::write(&cert, ck.cert.pem()).unwrap();
        std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
        server_config_from_pem(&cert, &key).unwrap();
        assert_eq!(load_root_certs(&cert).unwrap().len(), 1);
        // A key that isn't the certificate's is refused with the cause.
        let other = rcgen::generate_simple_self_signed(vec!["x".into()]).unwrap();
        std::fs::write(&key, other.signing_key.serialize_pem()).unwrap();
        assert!(server_config_from_pem(&cert, &key).is_err());
    }
}
