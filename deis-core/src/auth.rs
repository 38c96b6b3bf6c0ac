//! Passwords and API tokens.
//!
//! Passwords are hashed with Argon2id (PHC strings). API tokens are 40 random hex
//! characters, as Deis issued them; the store keeps only their sha256, and comparisons
//! of secrets are constant-time.

use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Hashes a password with Argon2id and a random salt.
pub fn hash_password(password: &str) -> String {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).expect("the OS provides randomness");
    Argon2::default().hash_password_with_salt(password.as_bytes(), &salt).expect("argon2 hashing").to_string()
}

/// Checks a password against a hash made by [`hash_password`].
pub fn verify_password(password: &str, hash: &str) -> bool {
    Argon2::default().verify_password(password.as_bytes(), hash).is_ok()
}

/// A new random API token: 40 lowercase hex characters.
pub fn new_token() -> String {
    random_hex(20)
}

/// `n` random bytes as hex.
pub fn random_hex(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    getrandom::fill(&mut bytes).expect("the OS provides randomness");
    hex::encode(bytes)
}

/// The sha256 of a token, hex: the form the store keeps.
pub fn token_digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Constant-time equality of two secrets.
pub fn secrets_equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords() {
        let h = hash_password("s3cret");
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("s3cret", &h));
        assert!(!verify_password("s3cret!", &h));
        assert!(!verify_password("s3cret", "garbage"));
        assert_ne!(h, hash_password("s3cret"), "salted");
    }

    /// Hashes stored by earlier versions (any Argon2id PHC string, here the reference
    /// implementation's vector for "password") still verify.
    #[test]
    fn stored_phc_strings_verify() {
        let stored = "$argon2id$v=19$m=65536,t=2,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc";
        assert!(verify_password("password", stored));
        assert!(!verify_password("Password", stored));
    }

    #[test]
    fn tokens() {
        let t = new_token();
        assert_eq!(t.len(), 40);
        assert!(t.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(t, new_token());
        assert_eq!(token_digest(&t).len(), 64);
        assert!(secrets_equal(b"abc", b"abc"));
        assert!(!secrets_equal(b"abc", b"abd"));
        assert!(!secrets_equal(b"abc", b"ab"));
    }
}
