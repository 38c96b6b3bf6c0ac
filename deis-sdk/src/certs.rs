//! Reading TLS certificates: what users add with `deis certs:add` and the platform's
//! own wildcard certificate.
//!
//! [`inspect`] is the one parser of certificate bytes from outside: it checks the
//! sizes first ([`MAX_CERT_CHAIN_BYTES`](deis_core::model::MAX_CERT_CHAIN_BYTES),
//! [`MAX_CERT_KEY_BYTES`](deis_core::model::MAX_CERT_KEY_BYTES), at most
//! [`MAX_CERT_CHAIN_LEN`] certificates), decodes the PEM, checks with rustls that the
//! key is the leaf certificate's key, and extracts the fields the API shows
//! ([`CertificateInfo`]) with `x509-parser`. The router uses [`certified_key`] on what
//! was stored, which went through [`inspect`] when it was added.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use deis_core::model::{CertificateInfo, MAX_CERT_CHAIN_LEN, ValidationError, cert_input_sizes};
use deis_core::time::Timestamp;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use sha2::{Digest, Sha256};

/// A certificate whose key was checked, with its fields.
#[derive(Debug, Clone)]
pub struct Inspected {
    /// What the leaf says.
    pub info: CertificateInfo,
    /// The chain and key, ready to be presented by a TLS server.
    pub key: Arc<CertifiedKey>,
}

fn bad_cert(why: impl std::fmt::Display) -> ValidationError {
    ValidationError::new("certificate", format!("Could not load certificate: {why}"))
}

fn bad_key(why: impl std::fmt::Display) -> ValidationError {
    ValidationError::new("key", format!("Could not load key: {why}"))
}

/// Checks a PEM chain (leaf first) and its PEM private key (PKCS#8, PKCS#1 or SEC1)
/// and extracts the leaf's fields. Errors name the field (`certificate` or `key`) and
/// say what is wrong: too large, not PEM, not X.509, a key that is not the
/// certificate's. Expired certificates pass (the API shows them as expired).
pub fn inspect(chain_pem: &str, key_pem: &str) -> Result<Inspected, ValidationError> {
    cert_input_sizes(chain_pem, key_pem)?;
    let key = certified_key(chain_pem, key_pem)?;
    let info = leaf_info(&key.cert[0])?;
    Ok(Inspected { info, key })
}

/// The chain and key of `chain_pem`/`key_pem`, checked to belong together.
pub fn certified_key(chain_pem: &str, key_pem: &str) -> Result<Arc<CertifiedKey>, ValidationError> {
    cert_input_sizes(chain_pem, key_pem)?;
    let mut chain = Vec::new();
    for cert in CertificateDer::pem_slice_iter(chain_pem.as_bytes()) {
        let cert = cert.map_err(|e| bad_cert(format!("not PEM ({e})")))?;
        if chain.len() == MAX_CERT_CHAIN_LEN {
            return Err(bad_cert(format!("a chain has at most {MAX_CERT_CHAIN_LEN} certificates")));
        }
        chain.push(cert);
    }
    if chain.is_empty() {
        return Err(bad_cert("no -----BEGIN CERTIFICATE----- block found; give the PEM file"));
    }
    // Every certificate of the chain must at least be X.509.
    for (i, der) in chain.iter().enumerate() {
        x509_parser::parse_x509_certificate(der)
            .map_err(|e| bad_cert(format!("certificate {} of the chain is not X.509 ({e})", i + 1)))?;
    }
    let key_der = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| {
        bad_key(format!("no private key found ({e}); give the PEM key (BEGIN PRIVATE KEY, RSA or EC PRIVATE KEY)"))
    })?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key_der)
        .map_err(|e| bad_key(format!("unsupported key type ({e}); use an RSA, ECDSA P-256/P-384 or Ed25519 key")))?;
    let certified = CertifiedKey::new(chain, signer);
    certified.keys_match().map_err(|e| match e {
        rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
            bad_key("the key does not match the certificate; give the key the certificate was issued for")
        }
        other => bad_key(format!("can't check it against the certificate ({other})")),
    })?;
    Ok(Arc::new(certified))
}

/// The fields of one DER certificate.
fn leaf_info(der: &[u8]) -> Result<CertificateInfo, ValidationError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| bad_cert(format!("not X.509 ({e})")))?;
    let common_name =
        cert.subject().iter_common_name().next().and_then(|cn| cn.as_str().ok()).unwrap_or_default().to_string();
    let mut san = Vec::new();
    let ext = cert.subject_alternative_name().map_err(|e| bad_cert(format!("bad subjectAltName ({e})")))?;
    if let Some(ext) = ext {
        for name in &ext.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(dns) = name {
                san.push(dns.to_ascii_lowercase());
            }
        }
    }
    let fingerprint = fingerprint(der);
    let validity = cert.validity();
    Ok(CertificateInfo {
        common_name,
        san,
        fingerprint,
        issuer: cert.issuer().to_string(),
        subject: cert.subject().to_string(),
        expires: timestamp(validity.not_after.timestamp()),
        starts: timestamp(validity.not_before.timestamp()),
    })
}

/// The fingerprint of a DER certificate as [`CertificateInfo::fingerprint`] shows it.
pub fn fingerprint(der: &[u8]) -> String {
    Sha256::digest(der).iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":")
}

/// A certificate time as a [`Timestamp`]; times before 1970 become 1970 (the API's
/// timestamps are unsigned; such a certificate is long valid anyway).
fn timestamp(unix: i64) -> Timestamp {
    Timestamp::from_unix_seconds(u64::try_from(unix).unwrap_or(0))
}

/// Errors loading or making the platform certificate.
#[derive(Debug, thiserror::Error)]
pub enum PlatformCertError {
    /// A file can't be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The files don't hold a usable certificate and key.
    #[error("{path}: {error}")]
    Invalid {
        /// The certificate file.
        path: PathBuf,
        /// What is wrong (the field names `certificate` or `key`).
        error: ValidationError,
    },
    /// Generating a self-signed certificate failed.
    #[error("generating a self-signed certificate: {0}")]
    Generate(String),
}

/// Where the platform certificate comes from.
#[derive(Debug, Clone)]
pub enum PlatformCert {
    /// PEM files given by the operator (`--tls-cert`, `--tls-key`).
    Files {
        /// The certificate chain.
        cert: PathBuf,
        /// The private key.
        key: PathBuf,
    },
    /// A self-signed certificate for `*.<domain>` and `<domain>`, made at the first
    /// start and kept in `<dir>/platform.crt` and `<dir>/platform.key` (mode 0600).
    SelfSigned {
        /// The directory it is kept in.
        dir: PathBuf,
    },
}

impl PlatformCert {
    /// Loads the certificate, generating the self-signed one first if it does not
    /// exist yet.
    pub fn load(&self, domain: &str) -> Result<Inspected, PlatformCertError> {
        let (cert, key) = match self {
            Self::Files { cert, key } => (cert.clone(), key.clone()),
            Self::SelfSigned { dir } => {
                let (cert, key) = (dir.join("platform.crt"), dir.join("platform.key"));
                if !cert.exists() || !key.exists() {
                    generate(dir, &cert, &key, domain)?;
                }
                (cert, key)
            }
        };
        let read =
            |p: &Path| std::fs::read_to_string(p).map_err(|source| PlatformCertError::Io { path: p.into(), source });
        inspect(&read(&cert)?, &read(&key)?).map_err(|error| PlatformCertError::Invalid { path: cert, error })
    }
}

fn generate(dir: &Path, cert: &Path, key: &Path, domain: &str) -> Result<(), PlatformCertError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| PlatformCertError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let domain = if domain.is_empty() { "localhost" } else { domain };
    let generate_err = |e: rcgen::Error| PlatformCertError::Generate(e.to_string());
    let mut params =
        rcgen::CertificateParams::new(vec![format!("*.{domain}"), domain.to_string()]).map_err(generate_err)?;
    // Named like the names it covers, so `openssl s_client` and browsers show it.
    params.distinguished_name.push(rcgen::DnType::CommonName, format!("*.{domain}"));
    params.distinguished_name.push(rcgen::DnType::OrganizationName, "Deis platform (self-signed)");
    let pair = rcgen::KeyPair::generate().map_err(generate_err)?;
    let signed = params.self_signed(&pair).map_err(generate_err)?;
    write_private(key, pair.serialize_pem().as_bytes()).map_err(io(key))?;
    std::fs::write(cert, signed.pem()).map_err(io(cert))?;
    tracing::info!(cert = %cert.display(), names = %format!("*.{domain}, {domain}"), "generated a self-signed platform certificate");
    Ok(())
}

/// Writes a file only its owner can read (created with mode 0600, never wider).
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn pair(names: &[&str]) -> (String, String) {
        let ck = rcgen::generate_simple_self_signed(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        (ck.cert.pem(), ck.signing_key.serialize_pem())
    }

    #[test]
    fn extracts_the_fields_of_a_matching_pair() {
        let (cert, key) = pair(&["www.example.com", "*.api.example.com"]);
        let got = inspect(&cert, &key).unwrap();
        assert_eq!(got.info.san, ["www.example.com", "*.api.example.com"]);
        assert_eq!(got.info.common_name, "rcgen self signed cert");
        assert!(got.info.subject.contains("CN=rcgen self signed cert"), "{}", got.info.subject);
        assert_eq!(got.info.issuer, got.info.subject, "self-signed");
        assert_eq!(got.info.fingerprint.len(), 32 * 3 - 1);
        assert!(got.info.starts < got.info.expires);
        assert!(got.info.covers("x.api.example.com"));
    }

    #[test]
    fn refuses_what_is_not_a_certificate_and_its_key() {
        let (cert, key) = pair(&["a.example.com"]);
        let (_, other_key) = pair(&["b.example.com"]);
        let e = inspect(&cert, &other_key).unwrap_err();
        assert_eq!(e.field, "key");
        assert!(e.message.contains("does not match"), "{e:?}");
        let e = inspect("hello", &key).unwrap_err();
        assert_eq!(e.field, "certificate");
        assert!(e.message.starts_with("Could not load certificate"), "{e:?}");
        let garbage = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(inspect(garbage, &key).unwrap_err().message.contains("not X.509"));
        assert_eq!(inspect(&cert, "nope").unwrap_err().field, "key");
        let long = cert.repeat(MAX_CERT_CHAIN_LEN + 1);
        assert!(inspect(&long, &key).unwrap_err().message.contains("at most"));
    }

    #[test]
    fn the_platform_certificate_is_made_once_and_kept_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let source = PlatformCert::SelfSigned { dir: dir.path().join("tls") };
        let first = source.load("deis.test").unwrap();
        assert_eq!(first.info.san, ["*.deis.test", "deis.test"]);
        assert_eq!(first.info.common_name, "*.deis.test");
        let mode = std::fs::metadata(dir.path().join("tls/platform.key")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = source.load("deis.test").unwrap();
        assert_eq!(first.info.fingerprint, again.info.fingerprint, "kept across starts");
        let files = PlatformCert::Files { cert: dir.path().join("tls/platform.crt"), key: dir.path().join("nope") };
        assert!(files.load("deis.test").unwrap_err().to_string().contains("nope"));
    }

    proptest! {
        /// Any bytes are refused or accepted without panicking, within the limits.
        #[test]
        fn arbitrary_input_never_panics(cert in ".{0,2000}", key in ".{0,500}") {
            let _ = inspect(&cert, &key);
        }

        /// A PEM block with arbitrary base64 content is refused as a certificate.
        #[test]
        fn arbitrary_der_is_refused(der in proptest::collection::vec(any::<u8>(), 0..512)) {
            use base64::Engine;
            let body = base64::engine::general_purpose::STANDARD.encode(&der);
            let pem = format!("-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----\n");
            prop_assert!(inspect(&pem, "k").is_err());
        }
    }
}
