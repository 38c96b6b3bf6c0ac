//! SSH public keys users register (`deis keys:add`, Workflow `/v2/keys/`): the builder
//! authenticates `git push` by them.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::ValidationError;
use crate::time::Timestamp;

/// Largest public key text accepted (an RSA 16384-bit key is under 3 KiB).
pub const MAX_PUBLIC_KEY_BYTES: usize = 16 << 10;
/// Longest key id.
pub const MAX_KEY_ID_LEN: usize = 128;

/// Key types current OpenSSH accepts for user authentication.
const ALGORITHMS: &[&str] = &[
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
];

/// A registered key, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SshKey {
    /// Stable identity.
    pub uuid: Uuid,
    /// The user's name for the key (the CLI sends the key's comment, `alice@laptop`).
    pub id: String,
    /// Username of the owner.
    pub owner: String,
    /// The OpenSSH public key line as registered.
    pub public: String,
    /// `SHA256:<base64>`, what `ssh-keygen -l` prints.
    pub fingerprint: String,
    /// Creation time.
    pub created: Timestamp,
    /// Last change.
    pub updated: Timestamp,
}

/// A parsed OpenSSH public key line: `<algorithm> <base64 blob> [comment]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    /// `ssh-ed25519`, `ssh-rsa`, ...
    pub algorithm: String,
    /// The key blob (SSH wire format), which the fingerprint hashes.
    pub blob: Vec<u8>,
    /// The comment after the blob, if any.
    pub comment: String,
}

fn invalid(why: impl std::fmt::Display) -> ValidationError {
    ValidationError::new("public", format!("not an SSH public key: {why}"))
}

impl PublicKey {
    /// Parses the text of a `.pub` file (one line; surrounding whitespace ignored).
    /// The blob must decode and name the same algorithm as the line.
    pub fn parse(text: &str) -> Result<Self, ValidationError> {
        if text.len() > MAX_PUBLIC_KEY_BYTES {
            return Err(invalid(format!("longer than {MAX_PUBLIC_KEY_BYTES} bytes")));
        }
        let line = text.trim();
        if line.lines().count() > 1 {
            return Err(invalid("give one key, on one line"));
        }
        let mut parts = line.splitn(3, [' ', '\t']);
        let algorithm = parts.next().unwrap_or_default();
        if algorithm == "ssh-dss" {
            return Err(invalid("DSA keys are no longer accepted by OpenSSH; use ssh-keygen -t ed25519"));
        }
        if !ALGORITHMS.contains(&algorithm) {
            let shown: String = algorithm.chars().take(40).collect();
            return Err(invalid(format!(
                "unknown key type {shown:?} (expected e.g. ssh-ed25519 AAAA... you@host, the content of ~/.ssh/id_ed25519.pub)"
            )));
        }
        let encoded = parts.next().unwrap_or_default().trim();
        if encoded.is_empty() {
            return Err(invalid(format!("the key data after {algorithm} is missing")));
        }
        let blob = STANDARD
            .decode(encoded)
            .or_else(|_| STANDARD_NO_PAD.decode(encoded))
            .map_err(|_| invalid("the key data is not base64"))?;
        if blob_algorithm(&blob) != Some(algorithm.as_bytes()) {
            return Err(invalid(format!("the key data is not a {algorithm} key")));
        }
        let comment = parts.next().unwrap_or_default().trim().to_string();
        Ok(Self { algorithm: algorithm.to_string(), blob, comment })
    }

    /// `SHA256:<unpadded base64 of sha256(blob)>`.
    pub fn fingerprint(&self) -> String {
        fingerprint_of_blob(&self.blob)
    }
}

/// The fingerprint of a key blob (SSH wire format), as [`PublicKey::fingerprint`].
pub fn fingerprint_of_blob(blob: &[u8]) -> String {
    format!("SHA256:{}", STANDARD_NO_PAD.encode(Sha256::digest(blob)))
}

/// The algorithm name a key blob starts with (an SSH `string`: u32 length, bytes).
fn blob_algorithm(blob: &[u8]) -> Option<&[u8]> {
    let len = u32::from_be_bytes(blob.get(..4)?.try_into().ok()?) as usize;
    let name = blob.get(4..4usize.checked_add(len)?)?;
    // A name alone is not a key: there must be key material after it.
    (blob.len() > 4 + len).then_some(name)
}

/// A key id: 1 to [`MAX_KEY_ID_LEN`] printable characters without spaces or `/`
/// (ids are path segments: `DELETE /v2/keys/<id>`).
pub fn key_id(id: &str) -> Result<(), ValidationError> {
    if id.is_empty() {
        return Err(ValidationError::new("id", "This field may not be blank."));
    }
    if id.chars().count() > MAX_KEY_ID_LEN
        || id.chars().any(|c| c.is_whitespace() || c.is_control() || c == '/' || c == '\\')
    {
        return Err(ValidationError::new(
            "id",
            format!("a key id is up to {MAX_KEY_ID_LEN} characters without spaces or slashes, e.g. alice@laptop"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// A real ed25519 key line (ssh-keygen output) and its `ssh-keygen -l` fingerprint.
    const ED25519: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINW5R8RtYHiAX3r5dVVBw3NTlJwrlyHOujxFlgie4Yrw alice@laptop\n";
    const ED25519_FINGERPRINT: &str = "SHA256:IvMPzMYbmjDFo7r/JVt55xtCbiDc96COsF8eGb5XjCg";

    fn blob_line(algorithm: &str, body: &[u8]) -> String {
        let mut blob = (algorithm.len() as u32).to_be_bytes().to_vec();
        blob.extend_from_slice(algorithm.as_bytes());
        blob.extend_from_slice(body);
        format!("{algorithm} {}", STANDARD.encode(blob))
    }

    #[test]
    fn parses_a_real_key() {
        let k = PublicKey::parse(ED25519).unwrap();
        assert_eq!(k.algorithm, "ssh-ed25519");
        assert_eq!(k.comment, "alice@laptop");
        assert_eq!(k.blob.len(), 51);
        assert_eq!(k.fingerprint(), ED25519_FINGERPRINT, "what ssh-keygen -l prints");
    }

    #[test]
    fn refuses_what_is_not_a_key() {
        for (text, says) in [
            ("", "unknown key type"),
            ("hello", "unknown key type"),
            ("ssh-dss AAAA", "DSA"),
            ("ssh-ed25519 !!!", "not base64"),
            ("ssh-ed25519", "missing"),
            (&blob_line("ssh-rsa", b"xx"), ""),
            (&format!("{ED25519}{ED25519}"), "one line"),
        ] {
            let text = text.replace("ssh-rsa ", "ssh-ed25519 ");
            let e = PublicKey::parse(&text).unwrap_err();
            assert_eq!(e.field, "public");
            assert!(e.message.contains(says), "{text:?}: {e}");
        }
        assert!(
            PublicKey::parse(&blob_line("ssh-ed25519", b"")).unwrap_err().message.contains("not a ssh-ed25519 key")
        );
        assert!(PublicKey::parse(&"a".repeat(MAX_PUBLIC_KEY_BYTES + 1)).unwrap_err().message.contains("longer"));
    }

    #[test]
    fn key_ids() {
        assert!(key_id("alice@laptop").is_ok());
        assert!(key_id("").is_err());
        assert!(key_id("a b").is_err());
        assert!(key_id("a/b").is_err());
        assert!(key_id(&"x".repeat(MAX_KEY_ID_LEN + 1)).is_err());
    }

    proptest! {
        #[test]
        fn any_wellformed_blob_parses_and_fingerprints_stably(body in proptest::collection::vec(any::<u8>(), 1..200), comment in "[a-z@.]{0,20}") {
            let line = format!("{} {comment}", blob_line("ssh-ed25519", &body));
            let k = PublicKey::parse(&line).unwrap();
            prop_assert_eq!(&k.comment, comment.trim());
            prop_assert_eq!(k.fingerprint(), fingerprint_of_blob(&k.blob));
        }

        #[test]
        fn any_text_is_parsed_or_refused_without_panic(s in "\\PC{0,300}") {
            let _ = PublicKey::parse(&s);
        }
    }
}
