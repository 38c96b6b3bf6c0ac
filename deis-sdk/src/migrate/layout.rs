//! Names the migration gives what Deis v1 kept without one, and the one record it
//! writes beyond the controller's (see [`deis_core::store::records`]): component
//! registrations, always under a lease.
//!
//! [`deis_core::store::records`]: crate::deis_core::store::records

use sha2::{Digest, Sha256};

use crate::deis_core::model::MAX_CERT_NAME_LEN;

/// Key of a Deis v1 component registration (`/deis/builder/host` →
/// `registrations/builder/host`), always under a lease.
pub fn registration_key(v1_path: &str) -> String {
    format!("registrations/{v1_path}")
}

/// The name a certificate of `domain` gets, a valid `deis certs` name:
/// `www.example.com` → `www-example-com`, `*.example.com` → `wildcard-example-com`;
/// past 63 characters, cut with a hash of the domain at the end to stay unique.
pub fn cert_name(domain: &str) -> String {
    let name: String = domain
        .to_ascii_lowercase()
        .replace('*', "wildcard")
        .chars()
        .map(|c| if c.is_ascii_lowercase() || c.is_ascii_digit() { c } else { '-' })
        .collect();
    if name.len() <= MAX_CERT_NAME_LEN {
        return name;
    }
    let hash = hex::encode(&Sha256::digest(domain.as_bytes())[..4]);
    format!("{}-{hash}", &name[..MAX_CERT_NAME_LEN - hash.len() - 1])
}

/// The password hash of a user the migration creates: no password matches it (it is
/// not a PHC string), so the user logs in only after an admin sets a password.
pub const NO_PASSWORD: &str = "!migrated-from-deis-v1";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deis_core::model::cert_name as valid_cert_name;

    #[test]
    fn certificate_names_are_valid_and_distinct() {
        assert_eq!(cert_name("www.example.com"), "www-example-com");
        assert_eq!(cert_name("*.example.com"), "wildcard-example-com");
        let long = format!("{}.example.com", "a".repeat(70));
        let other = format!("{}.example.org", "a".repeat(70));
        for domain in [&long, &other] {
            valid_cert_name(&cert_name(domain)).unwrap();
        }
        assert_ne!(cert_name(&long), cert_name(&other));
    }
}
