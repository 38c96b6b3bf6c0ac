//! [`TokenIssuer`]: deisd as the token server of a Docker Registry v2 with token
//! authentication (the distribution "token" auth spec): JWTs signed with ES256 by a
//! key deisd made at first start, whose self-signed certificate is the registry's
//! `rootcertbundle` and travels in each token's `x5c` header.
//!
//! A token grants actions (`pull`, `push`) on named repositories, for a short time.
//! The registry checks the issuer, the audience (the service name), the expiry (with
//! its own leeway of 60 s) and the signature; it never calls deisd back.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use serde::{Deserialize, Serialize};

/// The `iss` of the tokens, and the registry's `auth.token.issuer`.
pub const ISSUER: &str = "deisd";
/// The `aud` of the tokens, and the registry's `auth.token.service`.
pub const SERVICE: &str = "deis-registry";
/// Most scopes one token request may ask for.
pub const MAX_SCOPES: usize = 16;

/// Actions granted on one repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Access {
    /// Always `repository`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The repository (an app's name).
    pub name: String,
    /// `pull`, `push`.
    pub actions: Vec<String>,
}

impl Access {
    /// `actions` on repository `name`.
    pub fn repository(name: &str, actions: &[&str]) -> Self {
        Self { kind: "repository".into(), name: name.into(), actions: actions.iter().map(|a| a.to_string()).collect() }
    }

    /// Parses a scope of a token request, `repository:NAME:ACTION[,ACTION]`; other
    /// resource types are ignored (`None`).
    pub fn parse_scope(scope: &str) -> Option<Self> {
        let rest = scope.strip_prefix("repository:")?;
        let (name, actions) = rest.rsplit_once(':')?;
        if name.is_empty() || name.len() > 255 {
            return None;
        }
        let actions = actions.split(',').filter(|a| !a.is_empty()).map(str::to_string).collect();
        Some(Self { kind: "repository".into(), name: name.into(), actions })
    }
}

/// Signs registry tokens (see the module docs).
pub struct TokenIssuer {
    key: EcdsaKeyPair,
    /// The certificate's DER, base64 (the PEM body): the `x5c` header.
    x5c: String,
    cert_path: PathBuf,
    rng: SystemRandom,
}

impl std::fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenIssuer").field("cert_path", &self.cert_path).finish_non_exhaustive()
    }
}

/// A signed token and how long it lasts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedToken {
    /// The JWT.
    pub token: String,
    /// Seconds it is valid for.
    pub expires_in: u64,
    /// When it was issued, seconds since the epoch.
    pub issued_at: u64,
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    exp: u64,
    nbf: u64,
    iat: u64,
    jti: String,
    access: &'a [Access],
}

impl TokenIssuer {
    /// The signing key and certificate in `dir` (`token.key`, mode 0600, and
    /// `token.crt`), made on first use.
    pub fn load_or_create(dir: &Path) -> std::io::Result<Self> {
        let (key_path, cert_path) = (dir.join("token.key"), dir.join("token.crt"));
        if !key_path.exists() || !cert_path.exists() {
            std::fs::create_dir_all(dir)?;
            let fail = |e: rcgen::Error| std::io::Error::other(format!("making the registry token key: {e}"));
            let pair = rcgen::KeyPair::generate().map_err(fail)?;
            let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(fail)?;
            params.distinguished_name.push(rcgen::DnType::CommonName, "deisd registry token issuer");
            let cert = params.self_signed(&pair).map_err(fail)?;
            crate::certs::write_private(&key_path, pair.serialize_pem().as_bytes())?;
            std::fs::write(&cert_path, cert.pem())?;
        }
        let invalid = |what: &str, e: &dyn std::fmt::Display| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{what}: {e}; delete it to make a new one"))
        };
        let pem = std::fs::read_to_string(&key_path)?;
        let pair = rcgen::KeyPair::from_pem(&pem).map_err(|e| invalid(&key_path.display().to_string(), &e))?;
        let rng = SystemRandom::new();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pair.serialize_der(), &rng)
            .map_err(|e| invalid(&key_path.display().to_string(), &e))?;
        let cert = std::fs::read_to_string(&cert_path)?;
        let x5c: String = cert.lines().filter(|l| !l.starts_with("-----") && !l.trim().is_empty()).collect();
        if STANDARD.decode(&x5c).is_err() {
            return Err(invalid(&cert_path.display().to_string(), &"not a PEM certificate"));
        }
        Ok(Self { key, x5c, cert_path, rng })
    }

    /// The certificate the registry trusts (`auth.token.rootcertbundle`).
    pub fn cert_path(&self) -> &Path {
        &self.cert_path
    }

    /// The registry config's `auth:` line for tokens from `realm`.
    pub fn registry_auth_config(&self, realm: &str) -> String {
        format!(
            "auth: {{token: {{realm: \"{realm}\", service: {SERVICE}, issuer: {ISSUER}, rootcertbundle: {}}}}}\n",
            self.cert_path.display()
        )
    }

    /// A token for `subject` granting `access`, valid for `ttl`.
    pub fn issue(&self, subject: &str, access: &[Access], ttl: Duration) -> Result<IssuedToken, String> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let ttl = ttl.as_secs().max(1);
        let header = serde_json::json!({ "typ": "JWT", "alg": "ES256", "x5c": [self.x5c] });
        let claims = Claims {
            iss: ISSUER,
            sub: subject,
            aud: SERVICE,
            exp: now + ttl,
            nbf: now,
            iat: now,
            jti: uuid::Uuid::new_v4().simple().to_string(),
            access,
        };
        let json = |r: serde_json::Result<Vec<u8>>| r.map_err(|e| format!("encoding a registry token: {e}"));
        let (header, claims) = (json(serde_json::to_vec(&header))?, json(serde_json::to_vec(&claims))?);
        let signing_input = format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(claims));
        let signature =
            self.key.sign(&self.rng, signing_input.as_bytes()).map_err(|_| "signing a registry token failed")?;
        Ok(IssuedToken {
            token: format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref())),
            expires_in: ttl,
            issued_at: now,
        })
    }
}

#[cfg(test)]
mod tests {
    use ring::signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};

    use super::*;

    #[test]
    fn tokens_are_signed_by_the_kept_key_and_carry_their_grant() {
        let dir = tempfile::tempdir().unwrap();
        let issuer = TokenIssuer::load_or_create(dir.path()).unwrap();
        let access = [Access::repository("web", &["pull", "push"])];
        let t = issuer.issue("alice", &access, Duration::from_secs(300)).unwrap();
        let parts: Vec<&str> = t.token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let claims: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(
            (claims["iss"].as_str(), claims["aud"].as_str(), claims["sub"].as_str()),
            (Some(ISSUER), Some(SERVICE), Some("alice"))
        );
        assert_eq!(claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(), 300);
        assert_eq!(claims["access"][0]["name"], "web");
        assert_eq!(claims["access"][0]["actions"], serde_json::json!(["pull", "push"]));
        // Verifiable with the public key of the certificate's key, after a reload.
        let again = TokenIssuer::load_or_create(dir.path()).unwrap();
        let public = ring::signature::KeyPair::public_key(&again.key).as_ref().to_vec();
        let signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        let input = format!("{}.{}", parts[0], parts[1]);
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, public).verify(input.as_bytes(), &signature).unwrap();
        assert_eq!(again.x5c, issuer.x5c, "the same certificate");
    }

    #[test]
    fn scopes_name_a_repository_and_its_actions() {
        assert_eq!(Access::parse_scope("repository:web:pull,push"), Some(Access::repository("web", &["pull", "push"])));
        assert_eq!(Access::parse_scope("repository:a/b:pull"), Some(Access::repository("a/b", &["pull"])));
        assert_eq!(Access::parse_scope("registry:catalog:*"), None);
        assert_eq!(Access::parse_scope("repository::pull"), None);
        assert_eq!(Access::parse_scope("repository:web"), None);
    }
}
