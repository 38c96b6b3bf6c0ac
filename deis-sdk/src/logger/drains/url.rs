//! Drain URLs: `syslog://host:port` (TCP), `syslog+udp://`, `syslog+tls://`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Longest drain URL accepted.
pub const MAX_DRAIN_URL_LEN: usize = 2048;

const PORT_RANGE: &str = "port must be a number from 1 to 65535";

/// Why the url crate refused `input`, in the words of a drain URL's rules.
fn parse_failure(e: url::ParseError, input: &str) -> String {
    let authority = input.split_once("://").map_or("", |(_, rest)| rest);
    let authority = authority.split(['/', '?', '#']).next().unwrap_or_default();
    let reason = match e {
        url::ParseError::InvalidPort => PORT_RANGE,
        url::ParseError::EmptyHost if authority.matches(':').count() > 1 && !authority.contains('[') => {
            "IPv6 addresses must be in brackets, e.g. [::1]:514"
        }
        url::ParseError::EmptyHost => "missing host",
        url::ParseError::InvalidIpv6Address if !authority.contains(']') => "unclosed '[' in IPv6 address",
        url::ParseError::InvalidIpv6Address => "invalid IPv6 address",
        url::ParseError::InvalidDomainCharacter | url::ParseError::IdnaError => "invalid host name",
        other => return other.to_string(),
    };
    reason.to_string()
}

/// Errors of [`DrainUrl::parse`], and of drains.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DrainError {
    /// The URL is malformed; the message says how and what a valid one looks like.
    #[error(
        "invalid drain URL {url:?}: {reason}; expected syslog://HOST:PORT, syslog+udp://HOST:PORT or syslog+tls://HOST:PORT"
    )]
    InvalidUrl {
        /// The URL as given (cut to 200 characters).
        url: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// How a drain sends lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DrainScheme {
    /// `syslog://` (or `syslog+tcp://`): TCP with octet-counting framing (RFC 6587).
    Tcp,
    /// `syslog+udp://`: one datagram per line (RFC 5426).
    Udp,
    /// `syslog+tls://`: TLS with octet-counting framing (RFC 5425).
    Tls,
}

impl DrainScheme {
    /// The canonical scheme prefix.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "syslog",
            Self::Udp => "syslog+udp",
            Self::Tls => "syslog+tls",
        }
    }
}

/// A validated drain URL. Displays (and serializes) in canonical form, e.g.
/// `syslog+tls://logs.example.com:6514`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DrainUrl {
    scheme: DrainScheme,
    /// Host name or IP address (IPv6 without brackets).
    host: String,
    port: u16,
}

impl DrainUrl {
    /// Parses and validates a drain URL (with the `url` crate, then our rules). Accepts
    /// `syslog`, `syslog+tcp`, `syslog+udp` and `syslog+tls` (case-insensitive), a host
    /// name or IP address (IPv6 in brackets) and a port; a trailing `/` is allowed,
    /// nothing else after the port.
    pub fn parse(input: &str) -> Result<Self, DrainError> {
        let invalid = |reason: &str| DrainError::InvalidUrl {
            url: input.chars().take(200).collect(),
            reason: reason.to_string(),
        };
        if input.len() > MAX_DRAIN_URL_LEN {
            return Err(invalid(&format!("longer than {MAX_DRAIN_URL_LEN} bytes")));
        }
        let input_trimmed = input.trim();
        if !input_trimmed.contains("://") {
            // `host:port` would parse as scheme `host`: say what is missing instead.
            return Err(invalid("no scheme (missing \"://\")"));
        }
        // The url crate drops tabs and newlines silently; a drain URL has none.
        if input_trimmed.chars().any(char::is_control) {
            return Err(invalid("control characters are not allowed"));
        }
        let url = url::Url::parse(input_trimmed).map_err(|e| invalid(&parse_failure(e, input_trimmed)))?;
        let scheme = match url.scheme() {
            "syslog" | "syslog+tcp" => DrainScheme::Tcp,
            "syslog+udp" => DrainScheme::Udp,
            "syslog+tls" => DrainScheme::Tls,
            "http" | "https" => return Err(invalid("HTTP(S) drains are not supported, only syslog")),
            _ => return Err(invalid("unknown scheme")),
        };
        if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
            return Err(invalid("a drain URL has no path, query or fragment"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(invalid("credentials in drain URLs are not supported"));
        }
        let host = match url.host() {
            None => return Err(invalid("missing host")),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Domain(name)) => {
                if name.is_empty() {
                    return Err(invalid("missing host"));
                }
                if name.len() > 253 {
                    return Err(invalid("host name longer than 253 bytes"));
                }
                let valid_label = |l: &str| {
                    !l.is_empty()
                        && l.len() <= 63
                        && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                        && !l.starts_with('-')
                        && !l.ends_with('-')
                };
                if !name.strip_suffix('.').unwrap_or(name).split('.').all(valid_label) {
                    return Err(invalid("invalid host name"));
                }
                name.to_ascii_lowercase()
            }
        };
        let port = url.port().ok_or_else(|| invalid("missing port"))?;
        if port == 0 {
            return Err(invalid(PORT_RANGE));
        }
        Ok(Self { scheme, host, port })
    }

    /// How lines are sent.
    pub fn scheme(&self) -> DrainScheme {
        self.scheme
    }
    /// Host name or IP address (IPv6 without brackets).
    pub fn host(&self) -> &str {
        &self.host
    }
    /// Port.
    pub fn port(&self) -> u16 {
        self.port
    }
    /// `host:port`, with IPv6 in brackets: what `connect` takes.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for DrainUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme.as_str(), self.authority())
    }
}

impl FromStr for DrainUrl {
    type Err = DrainError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for DrainUrl {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DrainUrl {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_each_scheme_to_canonical_form() {
        for (input, canonical, scheme) in [
            ("syslog://logs.example.com:514", "syslog://logs.example.com:514", DrainScheme::Tcp),
            ("SYSLOG+TCP://Logs.Example.com:514/", "syslog://logs.example.com:514", DrainScheme::Tcp),
            ("syslog+udp://127.0.0.1:5514", "syslog+udp://127.0.0.1:5514", DrainScheme::Udp),
            ("syslog+tls://[::1]:6514", "syslog+tls://[::1]:6514", DrainScheme::Tls),
        ] {
            let url = DrainUrl::parse(input).unwrap();
            assert_eq!(url.to_string(), canonical);
            assert_eq!(url.scheme(), scheme);
            assert_eq!(DrainUrl::parse(&url.to_string()).unwrap(), url);
        }
        assert_eq!(DrainUrl::parse("syslog+tls://[::1]:6514").unwrap().authority(), "[::1]:6514");
        let json = serde_json::to_string(&DrainUrl::parse("syslog://a:1").unwrap()).unwrap();
        assert_eq!(json, "\"syslog://a:1\"");
        assert!(serde_json::from_str::<DrainUrl>("\"ftp://a:1\"").is_err());
    }

    #[test]
    fn rejects_with_a_reason() {
        for (input, reason) in [
            ("logs.example.com:514", "no scheme"),
            ("https://logs.example.com", "HTTP(S)"),
            ("gopher://a:1", "unknown scheme"),
            ("syslog://a", "missing port"),
            ("syslog://a:", "missing port"),
            ("syslog://:514", "missing host"),
            ("syslog://a:0", "port must be"),
            ("syslog://a:70000", "port must be"),
            ("syslog://a:+5", "port must be"),
            ("syslog://a:1/path", "no path"),
            ("syslog://u:p@a:1", "credentials"),
            ("syslog://::1:514", "brackets"),
            ("syslog://[::1:514", "unclosed"),
            ("syslog://[zz]:514", "IPv6"),
            ("syslog://a b:514", "invalid host"),
            ("syslog://-a:514", "invalid host"),
        ] {
            let err = DrainUrl::parse(input).unwrap_err().to_string();
            assert!(err.contains(reason), "{input}: {err}");
            assert!(err.contains("expected syslog://HOST:PORT"), "{err}");
        }
        assert!(DrainUrl::parse(&format!("syslog://{}:1", "a".repeat(3000))).is_err());
        for (input, reason) in [
            ("syslog://a:1?x=1", "no path, query or fragment"),
            ("syslog://a:1#frag", "no path, query or fragment"),
            ("syslog://lo\tgs:514", "control characters"),
            ("syslog://logs\n.example.com:514", "control characters"),
            ("syslog://[::1]", "missing port"),
            ("syslog://a%20b:514", "invalid host"),
            (&format!("syslog://{}.com:1", "a".repeat(260)), "longer than 253"),
            (&format!("syslog://{}.com:1", "a".repeat(64)), "invalid host"),
        ] {
            let err = DrainUrl::parse(input).unwrap_err().to_string();
            assert!(err.contains(reason), "{input:?}: {err}");
        }
    }

    #[test]
    fn hosts_are_canonical() {
        let url = DrainUrl::parse(" syslog+udp://[0:0:0:0:0:0:0:1]:514 ").unwrap();
        assert_eq!((url.host(), url.to_string().as_str()), ("::1", "syslog+udp://[::1]:514"));
        let url = DrainUrl::parse("syslog://LOGS.example.COM.:514").unwrap();
        assert_eq!(url.host(), "logs.example.com.");
        assert_eq!(url.authority(), "logs.example.com.:514");
        assert_eq!(DrainUrl::parse("syslog://10.0.0.7:514").unwrap().host(), "10.0.0.7");
        assert_eq!(DrainUrl::parse("syslog://my_host:514").unwrap().host(), "my_host");
    }

    proptest! {
        #[test]
        fn never_panics_and_round_trips(s in "\\PC{0,80}") {
            if let Ok(url) = DrainUrl::parse(&s) {
                prop_assert_eq!(DrainUrl::parse(&url.to_string()).unwrap(), url);
            }
        }

        #[test]
        fn structured_inputs_round_trip(host in "[a-z0-9]{1,10}(\\.[a-z0-9]{1,10}){0,3}", port in 1u16..) {
            let url = DrainUrl::parse(&format!("syslog+udp://{host}:{port}")).unwrap();
            prop_assert_eq!(url.host(), host.as_str());
            prop_assert_eq!(url.port(), port);
        }
    }
}
