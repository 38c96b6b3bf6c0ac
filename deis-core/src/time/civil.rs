//! Calendar arithmetic and RFC 3339 for [`Timestamp`](super::Timestamp) and syslog
//! timestamps (proleptic Gregorian, UTC), years 0..=9999.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Days since 1970-01-01 of a civil date (H. Hinnant's algorithm).
pub(crate) fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of a day number since 1970-01-01.
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Whether `d` is a valid day of month `m` of year `y`.
pub(crate) fn valid_date(y: i64, m: u32, d: u32) -> bool {
    if !(1..=12).contains(&m) || d == 0 {
        return false;
    }
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    d <= days[(m - 1) as usize]
}

/// A UTC time from seconds since the epoch (may be negative) and nanoseconds.
pub(crate) fn from_unix(secs: i64, nanos: u32) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::new(secs as u64, nanos)
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs()) + Duration::from_nanos(u64::from(nanos))
    }
}

/// Seconds since the epoch (floor) and nanoseconds of a time.
pub(crate) fn to_unix(t: SystemTime) -> (i64, u32) {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (d.as_secs() as i64, d.subsec_nanos()),
        Err(e) => {
            let d = e.duration();
            let (s, n) = (d.as_secs() as i64, d.subsec_nanos());
            if n == 0 { (-s, 0) } else { (-s - 1, 1_000_000_000 - n) }
        }
    }
}

/// `YYYY-MM-DDThh:mm:ss[.f]Z` with `frac_digits` (0..=9) fractional digits, trailing
/// zeros removed when `trim` is set. Years outside 0..=9999 are clamped.
pub(crate) fn format_rfc3339(t: SystemTime, frac_digits: u32, trim: bool) -> String {
    let (secs, nanos) = to_unix(t);
    let min = days_from_civil(0, 1, 1) * 86_400;
    let max = days_from_civil(9999, 12, 31) * 86_400 + 86_399;
    let (secs, nanos) = if secs < min {
        (min, 0)
    } else if secs > max {
        (max, 999_999_999)
    } else {
        (secs, nanos)
    };
    let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    let mut s = format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}", sod / 3600, sod / 60 % 60, sod % 60);
    if frac_digits > 0 {
        let frac = nanos / 10u32.pow(9 - frac_digits);
        let mut f = format!("{frac:0width$}", width = frac_digits as usize);
        if trim {
            while f.ends_with('0') {
                f.pop();
            }
        }
        if !f.is_empty() {
            s.push('.');
            s.push_str(&f);
        }
    }
    s.push('Z');
    s
}

/// Parses an RFC 3339 timestamp as RFC 5424 allows it (`T` separator, up to 9
/// fractional digits, `Z` or `±hh:mm`).
pub(crate) fn parse_rfc3339(s: &[u8]) -> Option<SystemTime> {
    fn num(b: &[u8]) -> Option<u32> {
        if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
            return None;
        }
        Some(b.iter().fold(0u32, |a, c| a * 10 + u32::from(c - b'0')))
    }
    if s.len() < 20 || s[4] != b'-' || s[7] != b'-' || s[10] != b'T' || s[13] != b':' || s[16] != b':' {
        return None;
    }
    let (y, mo, d) = (num(&s[0..4])?, num(&s[5..7])?, num(&s[8..10])?);
    let (h, mi, sec) = (num(&s[11..13])?, num(&s[14..16])?, num(&s[17..19])?);
    if !valid_date(i64::from(y), mo, d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut rest = &s[19..];
    let mut nanos = 0u32;
    if rest.first() == Some(&b'.') {
        let digits = rest[1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 || digits > 9 {
            return None;
        }
        nanos = num(&rest[1..1 + digits])? * 10u32.pow(9 - digits as u32);
        rest = &rest[1 + digits..];
    }
    let offset: i64 = match rest {
        b"Z" | b"z" => 0,
        [sign @ (b'+' | b'-'), oh1, oh2, b':', om1, om2] => {
            let (oh, om) = (num(&[*oh1, *oh2])?, num(&[*om1, *om2])?);
            if oh > 23 || om > 59 {
                return None;
            }
            let o = i64::from(oh * 3600 + om * 60);
            if *sign == b'+' { o } else { -o }
        }
        _ => return None,
    };
    // A leap second is folded into the next second's start.
    let secs = days_from_civil(i64::from(y), mo, d) * 86_400 + i64::from(h * 3600 + mi * 60 + sec) - offset;
    let min = days_from_civil(0, 1, 1) * 86_400;
    let max = days_from_civil(9999, 12, 31) * 86_400 + 86_399;
    (min..=max).contains(&secs).then(|| from_unix(secs, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_roundtrip() {
        for days in [-719_528, -1, 0, 1, 10_957, 20_782, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
    }

    #[test]
    fn rfc3339() {
        let t = parse_rfc3339(b"2026-11-25T14:47:21.5+01:00").unwrap();
        assert_eq!(format_rfc3339(t, 9, true), "2026-11-25T13:47:21.5Z");
        assert_eq!(format_rfc3339(t, 6, false), "2026-11-25T13:47:21.500000Z");
        assert_eq!(format_rfc3339(t, 0, false), "2026-11-25T13:47:21Z");
        let old = parse_rfc3339(b"1969-12-31T23:59:59.25Z").unwrap();
        assert_eq!(format_rfc3339(old, 9, true), "1969-12-31T23:59:59.25Z");
        assert!(parse_rfc3339(b"2026-02-30T00:00:00Z").is_none());
        assert!(parse_rfc3339(b"2026-11-25T14:47:21").is_none());
        assert!(parse_rfc3339(b"2026-11-25 14:47:21Z").is_none());
    }
}
