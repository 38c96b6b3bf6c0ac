//! Time as the platform keeps and renders it: [`Timestamp`] (RFC 3339, UTC, `Z`
//! suffix, whole seconds, as the controller API renders every timestamp) and the
//! durations operators write in flags ([`parse_duration`]).

pub(crate) mod civil;

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Latest instant RFC 3339 can write with a four-digit year: 9999-12-31T23:59:59Z.
const MAX_UNIX_SECONDS: u64 = 253_402_300_799;

/// Longest timestamp text accepted (`2026-11-25T14:47:21.123456789+01:00` is 35).
const MAX_TIMESTAMP_TEXT: usize = 64;

/// A point in time with whole-second precision, between 1970 and the end of year 9999.
///
/// It renders (`Display`, serde) as RFC 3339 in UTC with a `Z` suffix, e.g.
/// `2026-11-25T14:47:21Z`: the format of every timestamp in the controller API (and in
/// stored records). Parsing accepts any RFC 3339 timestamp from 1970 on (fractional
/// seconds and offsets such as `+01:00` included, converted to UTC and cut to whole
/// seconds), so what a Workflow controller sends decodes too. Keeping whole seconds means a value
/// equals itself after a round trip through JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(SystemTime);

impl Timestamp {
    /// The current time, cut to whole seconds.
    pub fn now() -> Self {
        Self::from(SystemTime::now())
    }

    /// The time as a [`SystemTime`].
    pub fn as_system_time(self) -> SystemTime {
        self.0
    }

    /// Seconds since 1970-01-01T00:00:00Z.
    pub fn unix_seconds(self) -> u64 {
        self.0.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
    }

    /// The timestamp `secs` seconds after 1970-01-01T00:00:00Z (clamped to year 9999).
    pub fn from_unix_seconds(secs: u64) -> Self {
        Self(UNIX_EPOCH + Duration::from_secs(secs.min(MAX_UNIX_SECONDS)))
    }
}

impl From<SystemTime> for Timestamp {
    /// Cuts `t` to whole seconds; times before 1970 become 1970-01-01T00:00:00Z and
    /// times after year 9999 its last second (RFC 3339 can't write them).
    fn from(t: SystemTime) -> Self {
        Self::from_unix_seconds(t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()))
    }
}

impl From<Timestamp> for SystemTime {
    fn from(t: Timestamp) -> Self {
        t.0
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&civil::format_rfc3339(self.0, 0, true))
    }
}

/// A timestamp that is not RFC 3339.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid timestamp {input:?}: expected RFC 3339 in UTC, e.g. 2026-11-25T14:47:21Z")]
pub struct TimestampError {
    /// The text as given (cut to 64 characters).
    pub input: String,
}

impl FromStr for Timestamp {
    type Err = TimestampError;

    fn from_str(s: &str) -> Result<Self, TimestampError> {
        let invalid = || TimestampError { input: s.chars().take(MAX_TIMESTAMP_TEXT).collect() };
        if s.len() > MAX_TIMESTAMP_TEXT {
            return Err(invalid());
        }
        let t = civil::parse_rfc3339(s.as_bytes()).ok_or_else(invalid)?;
        let secs = t.duration_since(UNIX_EPOCH).map_err(|_| invalid())?.as_secs();
        Ok(Self::from_unix_seconds(secs))
    }
}

impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// `2026-11-25T14:47:21Z`: `t` as the controller API renders timestamps.
pub fn rfc3339(t: SystemTime) -> String {
    Timestamp::from(t).to_string()
}

/// A duration flag or setting that can't be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DurationError {
    /// Neither humantime nor a number of seconds.
    #[error("{0} (want e.g. 90s, 30m, 12h)")]
    Invalid(#[source] humantime::DurationError),
    /// Zero: a timeout or interval must be positive.
    #[error("must be more than 0")]
    Zero,
}

/// Parses a positive duration as operators write it in flags and settings: humantime
/// (`90s`, `30m`, `12h`, `1h 30m`), or a bare number of seconds (`1800`).
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    let s = s.trim();
    let parsed = match s.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => humantime::parse_duration(s).map_err(DurationError::Invalid)?,
    };
    if parsed.is_zero() {
        return Err(DurationError::Zero);
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn durations_in_humantime_or_seconds() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration(" 1800 "), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("0s"), Err(DurationError::Zero));
        assert_eq!(parse_duration("0s").unwrap_err().to_string(), "must be more than 0");
        let err = parse_duration("soon").unwrap_err();
        assert!(err.to_string().contains("want e.g. 90s"), "{err}");
        assert!(std::error::Error::source(&err).is_some(), "the humantime error is kept");
    }

    #[test]
    fn timestamps_render_as_the_api_does() {
        let t = Timestamp::from(UNIX_EPOCH + Duration::from_millis(1_795_000_000_999));
        assert_eq!(t.to_string(), "2026-11-18T11:06:40Z");
        assert_eq!(t.unix_seconds(), 1_795_000_000, "cut to whole seconds");
        assert_eq!(serde_json::to_string(&t).unwrap(), "\"2026-11-18T11:06:40Z\"");
        assert_eq!(serde_json::from_str::<Timestamp>("\"2026-11-18T11:06:40Z\"").unwrap(), t);
        assert_eq!(rfc3339(t.as_system_time()), "2026-11-18T11:06:40Z");
        assert_eq!(Timestamp::from(UNIX_EPOCH - Duration::from_secs(5)).unix_seconds(), 0);
        assert_eq!(Timestamp::from_unix_seconds(u64::MAX).to_string(), "9999-12-31T23:59:59Z");
        assert!(Timestamp::now() > t);
    }

    #[test]
    fn timestamps_parse_fractions_and_offsets() {
        let t: Timestamp = "2018-03-01T16:49:41Z".parse().unwrap();
        for same in [
            "2018-03-01T16:49:41.123456Z",
            "2018-03-01T17:49:41+01:00",
            "2018-03-01T14:19:41.5-02:30",
            "2018-03-01T16:49:41+00:00",
            "2018-03-01T16:49:41z",
        ] {
            assert_eq!(same.parse::<Timestamp>(), Ok(t), "{same}");
        }
        for bad in [
            "",
            "yesterday",
            "2018-03-01",
            "2018-03-01T16:49:41",
            "2018-03-01 16:49:41Z",
            "2018-13-01T00:00:00Z",
            "2018-03-01T16:49:41+25:00",
            "1969-12-31T23:00:00Z",
        ] {
            let err = bad.parse::<Timestamp>().unwrap_err();
            assert!(err.to_string().contains("expected RFC 3339"), "{bad}: {err}");
        }
        assert!("1970-01-01T00:30:00+01:00".parse::<Timestamp>().is_err(), "before 1970 in UTC");
        assert!(format!("2018-03-01T16:49:41{}Z", "0".repeat(100)).parse::<Timestamp>().is_err());
    }

    proptest! {
        #[test]
        fn timestamps_round_trip(secs in 0..=MAX_UNIX_SECONDS) {
            let t = Timestamp::from_unix_seconds(secs);
            prop_assert_eq!(t.to_string().parse::<Timestamp>().unwrap(), t);
        }

        #[test]
        fn timestamp_parsing_never_panics(s in "\\PC{0,40}") {
            let _ = s.parse::<Timestamp>();
        }
    }
}
