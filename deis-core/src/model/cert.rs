//! TLS certificates users add (`deis certs:add`, Workflow `/v2/certs/`) and attach to
//! their apps' domains; the router presents them by SNI.
//!
//! Parsing X.509 is not done here: the HTTP layer (`deis_sdk::certs::inspect`) checks
//! the PEM, that the key matches the certificate, and extracts [`CertificateInfo`], so
//! this crate stays free of an ASN.1 stack. What is checked here is what needs no
//! parsing: names, sizes, and that a certificate's names cover a domain.

use serde::{Deserialize, Serialize};

use super::ValidationError;
use crate::time::Timestamp;

/// Largest PEM certificate chain accepted.
pub const MAX_CERT_CHAIN_BYTES: usize = 64 << 10;
/// Largest PEM private key accepted (an RSA 8192-bit key is about 6.5 KiB).
pub const MAX_CERT_KEY_BYTES: usize = 16 << 10;
/// Most certificates in one chain.
pub const MAX_CERT_CHAIN_LEN: usize = 10;
/// Longest certificate name.
pub const MAX_CERT_NAME_LEN: usize = 63;

/// What a certificate says about itself, as extracted from its X.509 fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateInfo {
    /// The subject's common name (empty if it has none).
    pub common_name: String,
    /// The DNS names of the subject alternative name extension, lower case.
    pub san: Vec<String>,
    /// SHA-256 of the leaf certificate's DER, upper-case hex pairs joined by `:` (what
    /// `openssl x509 -noout -fingerprint -sha256` prints).
    pub fingerprint: String,
    /// The issuer's distinguished name (`CN=..., O=...`).
    pub issuer: String,
    /// The subject's distinguished name.
    pub subject: String,
    /// Not valid after.
    pub expires: Timestamp,
    /// Not valid before.
    pub starts: Timestamp,
}

impl CertificateInfo {
    /// The names the certificate is valid for: its SANs, or its common name if it has
    /// none (the legacy rule clients no longer follow, but the name is shown).
    pub fn names(&self) -> Vec<&str> {
        if self.san.is_empty() && !self.common_name.is_empty() {
            vec![self.common_name.as_str()]
        } else {
            self.san.iter().map(String::as_str).collect()
        }
    }

    /// Whether the certificate is valid for `domain`: a name equal to it, or a
    /// wildcard `*.rest` whose `rest` is `domain` without its first label (RFC 6125
    /// 6.4.3: the wildcard covers exactly one label). A wildcard domain (`*.a.b`) is
    /// covered only by the same wildcard.
    pub fn covers(&self, domain: &str) -> bool {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        self.names().into_iter().any(|name| {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            if name == domain {
                return true;
            }
            match (name.strip_prefix("*."), domain.split_once('.')) {
                (Some(rest), Some((first, tail))) => first != "*" && !first.is_empty() && rest == tail,
                _ => false,
            }
        })
    }

    /// Whether the certificate is past its expiry at `now`.
    pub fn expired_at(&self, now: Timestamp) -> bool {
        self.expires < now
    }
}

/// A stored certificate: the PEM chain and key with what was extracted from them.
/// The key never leaves the platform: the API shows [`Certificate::view`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Certificate {
    /// The user's name for it: lower-case letters, digits and hyphens.
    pub name: String,
    /// Username of the owner.
    pub owner: String,
    /// The PEM chain, leaf first.
    pub certificate: String,
    /// The PEM private key.
    pub key: String,
    /// What the leaf certificate says.
    #[serde(flatten)]
    pub info: CertificateInfo,
    /// Creation time.
    pub created: Timestamp,
    /// Last change.
    pub updated: Timestamp,
}

/// A certificate as the API shows it (Workflow's Cert object): no key, no PEM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateView {
    /// A number identifying the certificate (Workflow's `id`): the store revision
    /// that created it.
    pub id: u64,
    /// The certificate's name.
    pub name: String,
    /// Subject common name.
    pub common_name: String,
    /// DNS names it is valid for.
    pub san: Vec<String>,
    /// Domains it is attached to, sorted.
    pub domains: Vec<String>,
    /// Leaf fingerprint.
    pub fingerprint: String,
    /// Issuer DN.
    pub issuer: String,
    /// Subject DN.
    pub subject: String,
    /// Owner's username.
    pub owner: String,
    /// Not valid after.
    pub expires: Timestamp,
    /// Not valid before.
    pub starts: Timestamp,
    /// Whether it is past `expires` now (shown, not refused: renewals are added late).
    pub expired: bool,
    /// Creation time.
    pub created: Timestamp,
    /// Last change.
    pub updated: Timestamp,
}

impl Certificate {
    /// What the API shows, with its `id` and the domains it is attached to.
    pub fn view(&self, id: u64, domains: Vec<String>) -> CertificateView {
        CertificateView {
            id,
            name: self.name.clone(),
            common_name: self.info.common_name.clone(),
            san: self.info.san.clone(),
            domains,
            fingerprint: self.info.fingerprint.clone(),
            issuer: self.info.issuer.clone(),
            subject: self.info.subject.clone(),
            owner: self.owner.clone(),
            expires: self.info.expires,
            starts: self.info.starts,
            expired: self.info.expired_at(Timestamp::now()),
            created: self.created,
            updated: self.updated,
        }
    }
}

/// Which certificate serves a domain: the value at `certdomains/<domain>`. It names
/// the app the domain belonged to when attached, so an attachment outlived by its
/// domain (removed, then added by another app) is recognisable as stale.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertAttachment {
    /// The certificate's name.
    pub cert: String,
    /// The app the domain belonged to.
    pub app: String,
}

/// A certificate name: `^[a-z0-9-]+$`, at most [`MAX_CERT_NAME_LEN`] characters.
pub fn cert_name(name: &str) -> Result<(), ValidationError> {
    if name.is_empty() {
        return Err(ValidationError::new("name", "This field may not be blank."));
    }
    if name.len() > MAX_CERT_NAME_LEN
        || !name.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
    {
        return Err(ValidationError::new("name", "Can only contain a-z (lowercase), 0-9 and hyphens"));
    }
    Ok(())
}

/// Checks the sizes of a PEM chain and key before anything parses them.
pub fn cert_input_sizes(certificate: &str, key: &str) -> Result<(), ValidationError> {
    if certificate.trim().is_empty() {
        return Err(ValidationError::new("certificate", "This field may not be blank."));
    }
    if key.trim().is_empty() {
        return Err(ValidationError::new("key", "This field may not be blank."));
    }
    if certificate.len() > MAX_CERT_CHAIN_BYTES {
        return Err(ValidationError::new(
            "certificate",
            format!("Could not load certificate: longer than {MAX_CERT_CHAIN_BYTES} bytes"),
        ));
    }
    if key.len() > MAX_CERT_KEY_BYTES {
        return Err(ValidationError::new("key", format!("Could not load key: longer than {MAX_CERT_KEY_BYTES} bytes")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn info(cn: &str, san: &[&str]) -> CertificateInfo {
        CertificateInfo {
            common_name: cn.into(),
            san: san.iter().map(|s| s.to_string()).collect(),
            fingerprint: String::new(),
            issuer: String::new(),
            subject: String::new(),
            expires: Timestamp::from_unix_seconds(2_000_000_000),
            starts: Timestamp::from_unix_seconds(1_000_000_000),
        }
    }

    #[test]
    fn wildcards_cover_one_label() {
        let c = info("example.com", &["*.example.com", "example.com"]);
        assert!(c.covers("www.example.com"));
        assert!(c.covers("WWW.Example.com."));
        assert!(c.covers("example.com"));
        assert!(!c.covers("a.b.example.com"), "one label only");
        assert!(!c.covers("example.org"));
        assert!(c.covers("*.example.com"), "the same wildcard");
        assert!(!info("x", &["www.example.com"]).covers("*.example.com"));
    }

    #[test]
    fn the_common_name_counts_only_without_sans() {
        assert!(info("www.example.com", &[]).covers("www.example.com"));
        assert!(!info("www.example.com", &["api.example.com"]).covers("www.example.com"));
    }

    #[test]
    fn names_and_sizes() {
        assert!(cert_name("my-cert-2").is_ok());
        for bad in ["", "My", "a_b", "a.b", &"a".repeat(64)] {
            assert!(cert_name(bad).is_err(), "{bad}");
        }
        assert_eq!(cert_input_sizes("", "k").unwrap_err().field, "certificate");
        assert_eq!(cert_input_sizes("c", " ").unwrap_err().field, "key");
        let big = "x".repeat(MAX_CERT_CHAIN_BYTES + 1);
        assert!(cert_input_sizes(&big, "k").unwrap_err().message.contains("Could not load certificate"));
    }

    proptest! {
        /// A certificate for exactly `name` covers it and nothing one label deeper; a
        /// wildcard over its parent covers it.
        #[test]
        fn coverage_follows_labels(labels in proptest::collection::vec("[a-z0-9]{1,10}", 2..5)) {
            let name = labels.join(".");
            let exact = info("", &[&name]);
            prop_assert!(exact.covers(&name));
            let deeper = format!("x.{name}");
            prop_assert!(!exact.covers(&deeper));
            let parent = labels[1..].join(".");
            let (over_parent, over_self) = (format!("*.{parent}"), format!("*.{name}"));
            prop_assert!(info("", &[&over_parent]).covers(&name));
            prop_assert!(!info("", &[&over_self]).covers(&name));
        }
    }
}
