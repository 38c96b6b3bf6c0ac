//! Resource limits as users write them: memory `512M`, `1G/2G`; cpu `500m`, `1`, `250m/1`.
//!
//! `X/Y` means "request X, limit Y". Placement uses the request.

use super::validate::ValidationError;

/// Parsed resources of one unit: what placement reserves (`request`) and the ceiling
/// (`limit`), in millicores and bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Resources {
    /// CPU in millicores (1000 = one core).
    pub cpu_millis: u64,
    /// Memory in bytes.
    pub memory_bytes: u64,
}

fn parse_memory_one(s: &str) -> Option<u64> {
    let s = s.trim();
    if s == "0" {
        return Some(0);
    }
    let upper = s.to_ascii_uppercase();
    let (digits, unit) = match upper.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => upper.split_at(i),
        None => return None, // a unit is required
    };
    if digits.is_empty() {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    let mult: u64 = match unit {
        "B" => 1,
        "K" | "KB" => 1 << 10,
        "M" | "MB" => 1 << 20,
        "G" | "GB" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// Parses a memory limit `REQ[/LIMIT]`, e.g. `512M`, `1G/2G`, `0`. Returns
/// `(request, limit)` in bytes; without `/` both are the same.
pub fn parse_memory(s: &str) -> Result<(u64, u64), ValidationError> {
    let err = || {
        ValidationError::new(
            "memory",
            format!("{s:?}: memory limits look like 512M, 1G or 1G/2G (request/limit; units B, K, M, G)"),
        )
    };
    let (req, lim) = match s.split_once('/') {
        Some((a, b)) => (parse_memory_one(a).ok_or_else(err)?, parse_memory_one(b).ok_or_else(err)?),
        None => {
            let v = parse_memory_one(s).ok_or_else(err)?;
            (v, v)
        }
    };
    if req > lim {
        return Err(ValidationError::new("memory", format!("{s:?}: the request must not exceed the limit")));
    }
    Ok((req, lim))
}

fn parse_cpu_one(s: &str) -> Option<u64> {
    let s = s.trim();
    if let Some(m) = s.strip_suffix('m') {
        if m.is_empty() || !m.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        return m.parse().ok();
    }
    if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit() || c == b'.') || s.matches('.').count() > 1 || s == "." {
        return None;
    }
    let cores: f64 = s.parse().ok()?;
    if !(0.0..=1.0e6).contains(&cores) {
        return None;
    }
    Some((cores * 1000.0).round() as u64)
}

/// Parses a cpu limit `REQ[/LIMIT]` in cores or millicores: `500m`, `1`, `0.5`, `250m/1`.
/// Returns `(request, limit)` in millicores.
pub fn parse_cpu(s: &str) -> Result<(u64, u64), ValidationError> {
    let err =
        || ValidationError::new("cpu", format!("{s:?}: cpu limits look like 500m, 1, 0.5 or 250m/1 (request/limit)"));
    let (req, lim) = match s.split_once('/') {
        Some((a, b)) => (parse_cpu_one(a).ok_or_else(err)?, parse_cpu_one(b).ok_or_else(err)?),
        None => {
            let v = parse_cpu_one(s).ok_or_else(err)?;
            (v, v)
        }
    };
    if req > lim {
        return Err(ValidationError::new("cpu", format!("{s:?}: the request must not exceed the limit")));
    }
    Ok((req, lim))
}

/// Formats bytes the way limits are written (`512M`, `2G`, `100K`, `7B`).
pub fn format_memory(bytes: u64) -> String {
    for (unit, mult) in [("G", 1u64 << 30), ("M", 1 << 20), ("K", 1 << 10)] {
        if bytes >= mult && bytes.is_multiple_of(mult) {
            return format!("{}{unit}", bytes / mult);
        }
    }
    format!("{bytes}B")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn memory() {
        assert_eq!(parse_memory("512M").unwrap(), (512 << 20, 512 << 20));
        assert_eq!(parse_memory("1G/2G").unwrap(), (1 << 30, 2 << 30));
        assert_eq!(parse_memory("1gb").unwrap(), (1 << 30, 1 << 30));
        assert_eq!(parse_memory("0").unwrap(), (0, 0));
        for bad in ["", "512", "M", "1X", "2G/1G", "-1M", "99999999999999999999G"] {
            assert!(parse_memory(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cpu() {
        assert_eq!(parse_cpu("500m").unwrap(), (500, 500));
        assert_eq!(parse_cpu("1").unwrap(), (1000, 1000));
        assert_eq!(parse_cpu("0.25").unwrap(), (250, 250));
        assert_eq!(parse_cpu("250m/1").unwrap(), (250, 1000));
        for bad in ["", "m", "1x", "2/1", "-1", ".", "1.2.3"] {
            assert!(parse_cpu(bad).is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn memory_format_roundtrips(n in 0u64..(1 << 40)) {
            let s = format_memory(n);
            prop_assert_eq!(parse_memory(&s).unwrap(), (n, n));
        }

        #[test]
        fn parsers_never_panic(s in ".{0,24}") {
            let _ = parse_memory(&s);
            let _ = parse_cpu(&s);
        }
    }
}
