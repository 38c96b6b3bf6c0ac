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

/// Parses an RFC 3339 timestamp as produced by [`rfc3339`].
pub fn parse(s: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(s).ok()
}
