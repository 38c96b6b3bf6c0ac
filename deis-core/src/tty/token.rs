//! One-time, short-lived session tokens: the controller authorises a `deis run` and
//! hands the client a token that the broker checks before it opens the session.
//!
//! A token is `<payload>.<signature>`, both lowercase hex: the payload is compact JSON of
//! the [`Claims`] (session id, user, app, command, tty, process type, expiry), the
//! signature is HMAC-SHA256 under the secret shared by controller and broker, over a
//! domain-separation prefix and the payload. [`TokenSigner::verify`] checks the
//! signature in constant time, then expiry, then the app; a [`ReplayGuard`] refuses a
//! second use of the same session id.
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use deis_core::tty::token::{Claims, ReplayGuard, TokenSigner};
//!
//! let signer = TokenSigner::new(b"a secret of at least 32 random bytes.....");
//! let (app, web) = ("myapp".parse().unwrap(), "web".parse().unwrap());
//! let claims = Claims::new("alice", app, vec!["bash".into()], true, web);
//! let token = signer.issue(claims, Duration::from_secs(60));
//!
//! let guard = ReplayGuard::default();
//! let claims = signer.verify(&token, "myapp", SystemTime::now()).unwrap();
//! guard.consume(&claims).unwrap();
//! assert!(guard.consume(&claims).is_err(), "a token is good once");
//! ```

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::model::{AppName, ProcessType};

type HmacSha256 = Hmac<Sha256>;

/// Prefix of the signed bytes, so a signature made for anything else never verifies.
const DOMAIN: &[u8] = b"deis-tty-session-v1.";
/// Longest token accepted by [`TokenSigner::verify`] (characters).
pub const MAX_TOKEN_LEN: usize = 64 * 1024;
/// Default time to live of a token ([`TokenSigner::issue`] callers usually pass this).
pub const DEFAULT_TTL: Duration = Duration::from_secs(60);
/// Default capacity of a [`ReplayGuard`] (unexpired used tokens remembered).
pub const DEFAULT_REPLAY_CAPACITY: usize = 100_000;

/// What a session token grants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Random session id (32 hex characters): what makes the token one-time.
    #[serde(rename = "s")]
    pub session: String,
    /// Who runs it.
    #[serde(rename = "u")]
    pub user: String,
    /// The app whose environment it runs in.
    #[serde(rename = "a")]
    pub app: AppName,
    /// The command (argv; a single element runs with `sh -c`).
    #[serde(rename = "c")]
    pub command: Vec<String>,
    /// Whether the session has a terminal.
    #[serde(rename = "t")]
    pub tty: bool,
    /// The process type whose environment to use.
    #[serde(rename = "p")]
    pub proc_type: ProcessType,
    /// Expiry, Unix seconds (set by [`TokenSigner::issue`]).
    #[serde(rename = "e")]
    pub expires: u64,
}

impl Claims {
    /// Claims with a fresh random session id; the expiry is set when issued.
    pub fn new(user: impl Into<String>, app: AppName, command: Vec<String>, tty: bool, proc_type: ProcessType) -> Self {
        Self { session: crate::auth::random_hex(16), user: user.into(), app, command, tty, proc_type, expires: 0 }
    }
}

/// Why a token was refused. The messages are meant for the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a token this broker issues (wrong shape, not hex, too long, bad payload).
    #[error("malformed session token ({0}); ask the controller for a new one with `deis run`")]
    Malformed(String),
    /// The signature does not match: forged, altered, or signed with another secret.
    #[error("session token signature is not valid (altered, or issued by another controller)")]
    BadSignature,
    /// Past its expiry.
    #[error(
        "session token expired {ago}s ago; tokens are short-lived, ask the controller for a new one with `deis run`"
    )]
    Expired {
        /// Seconds since expiry.
        ago: u64,
    },
    /// Issued for another app.
    #[error("session token is for app {token_app:?}, not {expected:?}")]
    WrongApp {
        /// The app in the token.
        token_app: String,
        /// The app the session was asked for.
        expected: String,
    },
    /// The session id was used before.
    #[error("session token already used; every token opens one session, ask the controller for a new one")]
    AlreadyUsed,
    /// The replay guard is full of unexpired tokens.
    #[error("too many sessions opened recently ({0} unexpired tokens); try again in a minute")]
    GuardFull(usize),
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Issues and verifies session tokens with one shared secret.
pub struct TokenSigner {
    key: HmacSha256,
}

impl std::fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenSigner { key: <secret> }")
    }
}

impl TokenSigner {
    /// A signer with `secret` (use at least 32 random bytes; controller and broker must
    /// share it).
    pub fn new(secret: impl AsRef<[u8]>) -> Self {
        Self { key: HmacSha256::new_from_slice(secret.as_ref()).expect("HMAC accepts keys of any length") }
    }

    /// A signer with a fresh random 32-byte secret, for a controller that embeds its
    /// broker (nobody else needs the secret).
    pub fn random() -> Self {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).expect("the OS provides randomness");
        Self::new(secret)
    }

    fn mac(&self, payload: &[u8]) -> HmacSha256 {
        let mut mac = self.key.clone();
        mac.update(DOMAIN);
        mac.update(payload);
        mac
    }

    /// Signs `claims`, valid for `ttl` from now. See [`issue_at`](Self::issue_at).
    pub fn issue(&self, claims: Claims, ttl: Duration) -> String {
        self.issue_at(claims, ttl, SystemTime::now())
    }

    /// Signs `claims` with `expires` set to `now + ttl` (rounded up to whole seconds).
    pub fn issue_at(&self, mut claims: Claims, ttl: Duration, now: SystemTime) -> String {
        let ttl = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
        claims.expires = unix(now).saturating_add(ttl);
        let payload = serde_json::to_vec(&claims).expect("serialising claims can't fail");
        let signature = self.mac(&payload).finalize().into_bytes();
        format!("{}.{}", hex::encode(&payload), hex::encode(signature))
    }

    /// Checks `token` for a session of `expected_app` at time `now`: shape, signature
    /// (constant time), expiry (valid while `now < expires`), app. Does **not** mark it
    /// used: pass the claims to [`ReplayGuard::consume`] before opening the session.
    pub fn verify(&self, token: &str, expected_app: &str, now: SystemTime) -> Result<Claims, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed(format!("{} characters, at most {MAX_TOKEN_LEN}", token.len())));
        }
        let (payload, signature) = token
            .split_once('.')
            .ok_or_else(|| TokenError::Malformed("no `.` between payload and signature".into()))?;
        let payload = hex::decode(payload).map_err(|e| TokenError::Malformed(format!("payload is not hex: {e}")))?;
        let signature =
            hex::decode(signature).map_err(|e| TokenError::Malformed(format!("signature is not hex: {e}")))?;
        // `verify_slice` compares in constant time.
        self.mac(&payload).verify_slice(&signature).map_err(|_| TokenError::BadSignature)?;
        let claims: Claims = serde_json::from_slice(&payload)
            .map_err(|e| TokenError::Malformed(format!("signed payload is not valid claims: {e}")))?;
        let now = unix(now);
        if now >= claims.expires {
            return Err(TokenError::Expired { ago: now - claims.expires });
        }
        if claims.app != expected_app {
            return Err(TokenError::WrongApp { token_app: claims.app.to_string(), expected: expected_app.into() });
        }
        Ok(claims)
    }
}

/// Remembers the session ids of used tokens until they expire, so each token opens at
/// most one session. Bounded: when `capacity` unexpired ids are remembered, new ones
/// are refused ([`TokenError::GuardFull`]) rather than forgetting any (which would let
/// a token be replayed).
#[derive(Debug)]
pub struct ReplayGuard {
    capacity: usize,
    /// Session id -> expiry (Unix seconds).
    used: Mutex<HashMap<String, u64>>,
}

impl Default for ReplayGuard {
    fn default() -> Self {
        Self::new(DEFAULT_REPLAY_CAPACITY)
    }
}

impl ReplayGuard {
    /// A guard remembering at most `capacity` unexpired tokens.
    pub fn new(capacity: usize) -> Self {
        Self { capacity: capacity.max(1), used: Mutex::new(HashMap::new()) }
    }

    /// Marks the token of `claims` used; fails if it was used before.
    pub fn consume(&self, claims: &Claims) -> Result<(), TokenError> {
        self.consume_at(claims, SystemTime::now())
    }

    /// [`consume`](Self::consume) at time `now` (expired entries are forgotten).
    pub fn consume_at(&self, claims: &Claims, now: SystemTime) -> Result<(), TokenError> {
        let now = unix(now);
        let mut used = self.used.lock().unwrap();
        if used.contains_key(&claims.session) {
            return Err(TokenError::AlreadyUsed);
        }
        if used.len() >= self.capacity {
            used.retain(|_, &mut expires| expires > now);
            if used.len() >= self.capacity {
                return Err(TokenError::GuardFull(used.len()));
            }
        }
        used.insert(claims.session.clone(), claims.expires);
        Ok(())
    }

    /// How many used tokens are remembered.
    pub fn len(&self) -> usize {
        self.used.lock().unwrap().len()
    }

    /// Whether no used token is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{app_name, process_type};

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn claims() -> Claims {
        Claims::new(
            "alice",
            app_name("app1"),
            vec!["sh".into(), "-c".into(), "exit 7".into()],
            false,
            process_type("web"),
        )
    }

    const T0: u64 = 1_700_000_000;

    #[test]
    fn issues_and_verifies() {
        let s = TokenSigner::new("k");
        let c = claims();
        assert_eq!(c.session.len(), 32);
        assert_ne!(c.session, claims().session, "random session ids");
        let token = s.issue_at(c.clone(), Duration::from_secs(60), at(T0));
        assert!(token.bytes().all(|b| b.is_ascii_hexdigit() || b == b'.'), "{token}");
        let got = s.verify(&token, "app1", at(T0 + 59)).unwrap();
        assert_eq!(got, Claims { expires: T0 + 60, ..c });
        assert_eq!(format!("{s:?}"), "TokenSigner { key: <secret> }");
        let live = TokenSigner::random();
        let t = live.issue(claims(), DEFAULT_TTL);
        assert!(live.verify(&t, "app1", SystemTime::now()).is_ok());
    }

    #[test]
    fn refuses_malformed_tokens() {
        let s = TokenSigner::new("k");
        for bad in ["", "abc", "zz.00", "00.zz", "0.00"] {
            let e = s.verify(bad, "app1", at(T0)).unwrap_err();
            assert!(matches!(e, TokenError::Malformed(_)), "{bad:?}: {e:?}");
            assert!(e.to_string().contains("malformed session token"), "{e}");
        }
        let long = "a".repeat(MAX_TOKEN_LEN + 1);
        assert!(matches!(s.verify(&long, "app1", at(T0)), Err(TokenError::Malformed(m)) if m.contains("at most")));
        // Validly signed garbage is still malformed.
        let payload = b"not json";
        let sig = s.mac(payload).finalize().into_bytes();
        let t = format!("{}.{}", hex::encode(payload), hex::encode(sig));
        assert!(matches!(s.verify(&t, "app1", at(T0)), Err(TokenError::Malformed(m)) if m.contains("claims")));
    }

    #[test]
    fn refuses_bad_signatures() {
        let s = TokenSigner::new("k");
        let token = s.issue_at(claims(), Duration::from_secs(60), at(T0));
        // Another secret.
        assert_eq!(TokenSigner::new("other").verify(&token, "app1", at(T0)), Err(TokenError::BadSignature));
        // An altered payload (another app) with the old signature.
        let (payload, sig) = token.split_once('.').unwrap();
        let mut c: Claims = serde_json::from_slice(&hex::decode(payload).unwrap()).unwrap();
        c.app = app_name("app2");
        let forged = format!("{}.{sig}", hex::encode(serde_json::to_vec(&c).unwrap()));
        assert_eq!(s.verify(&forged, "app2", at(T0)), Err(TokenError::BadSignature));
        // A truncated signature.
        assert_eq!(s.verify(&token[..token.len() - 2], "app1", at(T0)), Err(TokenError::BadSignature));
        assert!(TokenError::BadSignature.to_string().contains("signature"));
    }

    #[test]
    fn refuses_expired_tokens() {
        let s = TokenSigner::new("k");
        let token = s.issue_at(claims(), Duration::from_millis(1500), at(T0));
        assert!(s.verify(&token, "app1", at(T0 + 1)).is_ok(), "ttl rounds up to whole seconds");
        assert_eq!(s.verify(&token, "app1", at(T0 + 2)), Err(TokenError::Expired { ago: 0 }));
        let e = s.verify(&token, "app1", at(T0 + 12)).unwrap_err();
        assert_eq!(e, TokenError::Expired { ago: 10 });
        assert!(e.to_string().contains("expired 10s ago"), "{e}");
    }

    #[test]
    fn refuses_other_apps() {
        let s = TokenSigner::new("k");
        let token = s.issue_at(claims(), Duration::from_secs(60), at(T0));
        let e = s.verify(&token, "app2", at(T0)).unwrap_err();
        assert_eq!(e, TokenError::WrongApp { token_app: "app1".into(), expected: "app2".into() });
        assert_eq!(e.to_string(), "session token is for app \"app1\", not \"app2\"");
    }

    #[test]
    fn tokens_are_good_once() {
        let g = ReplayGuard::default();
        let c = Claims { expires: T0 + 60, ..claims() };
        g.consume_at(&c, at(T0)).unwrap();
        let e = g.consume_at(&c, at(T0 + 1)).unwrap_err();
        assert_eq!(e, TokenError::AlreadyUsed);
        assert!(e.to_string().contains("already used"));
        let other = Claims { expires: T0 + 60, ..claims() };
        g.consume_at(&other, at(T0)).unwrap();
        assert_eq!(g.len(), 2);
        assert!(!g.is_empty());
    }

    #[test]
    fn replay_guard_is_bounded() {
        let g = ReplayGuard::new(2);
        let c = |exp| Claims { expires: exp, ..claims() };
        let (a, b) = (c(T0 + 10), c(T0 + 100));
        g.consume_at(&a, at(T0)).unwrap();
        g.consume_at(&b, at(T0)).unwrap();
        let e = g.consume_at(&c(T0 + 100), at(T0)).unwrap_err();
        assert_eq!(e, TokenError::GuardFull(2));
        assert!(e.to_string().contains("try again"));
        // Once `a` expired it is forgotten (the signer refuses it anyway) and room is made.
        g.consume_at(&c(T0 + 100), at(T0 + 10)).unwrap();
        assert_eq!(g.len(), 2);
        assert_eq!(g.consume_at(&b, at(T0 + 10)), Err(TokenError::AlreadyUsed), "unexpired ids are kept");
    }
}
