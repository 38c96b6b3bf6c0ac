//! Drain URLs: `syslog://host:port` (TCP), `syslog+udp://`, `syslog+tls://`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Longest drain URL accepted.
pub const MAX_DRAIN_URL_LEN: usize = 2048;

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
    /// Parses and validates a drain URL. Accepts `syslog`, `syslog+tcp`, `syslog+udp`
    /// and `syslog+tls` (case-insensitive), a host name or IP address (IPv6 in
    /// brackets) and a port; a trailing `/` is allowed, nothing else after the port.
    pub fn parse(input: &str) -> Result<Self, DrainError> {
        let invalid = |reason: &str| DrainError::InvalidUrl {
            url: input.chars().take(200).collect(),
            reason: reason.to_string(),
        };
        if input.len() > MAX_DRAIN_URL_LEN {
            return Err(invalid(&format!("longer than {MAX_DRAIN_URL_LEN} bytes")));
        }
        let input_trimmed = input.trim();
        let (scheme, rest) = input_trimmed.split_once("://").ok_or_else(|| invalid("no scheme (missing \"://\")"))?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "syslog" | "syslog+tcp" => DrainScheme::Tcp,
            "syslog+udp" => DrainScheme::Udp,
            "syslog+tls" => DrainScheme::Tls,
            "http" | "https" => return Err(invalid("HTTP(S) drains are not supported, only syslog")),
            _ => return Err(invalid("unknown scheme")),
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.contains(['/', '?', '#']) {
            return Err(invalid("a drain URL has no path, query or fragment"));
        }
        if authority.contains('@') {
            return Err(invalid("credentials in drain URLs are not supported"));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or_else(|| invalid("unclosed '[' in IPv6 address"))?;
            if host.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(invalid("invalid IPv6 address"));
            }
            let port = after.strip_prefix(':').ok_or_else(|| invalid("missing port"))?;
            (host, port)
        } else {
            let (host, port) = authority.rsplit_once(':').ok_or_else(|| invalid("missing port"))?;
            if host.contains(':') {
                return Err(invalid("IPv6 addresses must be in brackets, e.g. [::1]:514"));
            }
            (host, port)
        };
        if host.is_empty() {
            return Err(invalid("missing host"));
        }
        if host.len() > 253 {
            return Err(invalid("host name longer than 253 bytes"));
        }
        if !host.starts_with('[') && !host.contains(':') {
            let valid_label = |l: &str| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            };
            let h = host.strip_suffix('.').unwrap_or(host);
            if !h.split('.').all(valid_label) {
                return Err(invalid("invalid host name"));
            }
        }
        if port.is_empty() {
            return Err(invalid("missing port"));
        }
        let port: u16 = port
            .parse()
            .ok()
            .filter(|p| *p != 0 && port.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| invalid("port must be a number from 1 to 65535"))?;
        Ok(Self { scheme, host: host.to_ascii_lowercase(), port })
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
