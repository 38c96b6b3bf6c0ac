//! Timestamps as the controller API renders them: RFC 3339, UTC, `Z` suffix.

use std::time::SystemTime;

/// `2026-11-25T14:47:21Z`: the format of every timestamp in the controller API.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// [`rfc3339`] of the current time.
pub fn now() -> String {
    rfc3339(SystemTime::now())
}

/// Parses a positive duration as operators write it in flags and settings: humantime
/// (`90s`, `30m`, `12h`, `1h 30m`), or a bare number of seconds (`1800`).
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let parsed = match s.parse::<u64>() {
        Ok(secs) => Ok(std::time::Duration::from_secs(secs)),
        Err(_) => humantime::parse_duration(s).map_err(|e| format!("{e} (want e.g. 90s, 30m, 12h)")),
    }?;
    if parsed.is_zero() {
        return Err("must be more than 0".into());
    }
    Ok(parsed)
}

/// Parses an RFC 3339 timestamp as produced by [`rfc3339`].
pub fn parse(s: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(s).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn durations_in_humantime_or_seconds() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration(" 1800 "), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("0s").unwrap_err(), "must be more than 0");
        assert!(parse_duration("soon").unwrap_err().contains("want e.g. 90s"));
    }
}
