//! Kubernetes resource quantities (`500m`, `2`, `4Gi`, `1e3`) as millicores and bytes.

use deis_core::model::limits::Resources;

/// Longest quantity string read; a node's answer is outside bytes.
pub const MAX_QUANTITY_LEN: usize = 64;

/// A quantity in thousandths of its unit (`500m` -> 500, `2` -> 2000, `1Ki` ->
/// 1_024_000), or None when it is not a quantity or overflows.
pub fn parse_milli(s: &str) -> Option<u128> {
    let s = s.trim();
    if s.is_empty() || s.len() > MAX_QUANTITY_LEN {
        return None;
    }
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-')).unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    let number = number.strip_prefix('+').unwrap_or(number);
    if number.starts_with('-') {
        return None;
    }
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    if (int.is_empty() && frac.is_empty()) || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Value in thousandths times 10^-frac_len: digits as an integer, then scaled.
    let digits: String = format!("{int}{frac}");
    let digits = digits.trim_start_matches('0');
    let mantissa: u128 = if digits.is_empty() { 0 } else { digits.parse().ok()? };
    // (multiplier, divisor) of the suffix, in thousandths.
    let (mul, div): (u128, u128) = match suffix {
        "" => (1000, 1),
        "m" => (1, 1),
        "k" => (1_000_000, 1),
        "M" => (1_000_000_000, 1),
        "G" => (1_000_000_000_000, 1),
        "T" => (1_000_000_000_000_000, 1),
        "P" => (1_000_000_000_000_000_000, 1),
        "E" => (1_000_000_000_000_000_000_000, 1),
        "Ki" => (1024 * 1000, 1),
        "Mi" => (1024u128.pow(2) * 1000, 1),
        "Gi" => (1024u128.pow(3) * 1000, 1),
        "Ti" => (1024u128.pow(4) * 1000, 1),
        "Pi" => (1024u128.pow(5) * 1000, 1),
        "Ei" => (1024u128.pow(6) * 1000, 1),
        e if e.starts_with(['e', 'E']) => {
            let exp: u32 = e[1..].parse().ok().filter(|x| *x <= 30)?;
            (10u128.checked_pow(exp)? * 1000, 1)
        }
        _ => return None,
    };
    let scale = 10u128.checked_pow(u32::try_from(frac.len()).ok()?)?;
    // Rounded up, as Kubernetes does for fractions of its smallest unit.
    Some(mantissa.checked_mul(mul)?.div_ceil(div * scale))
}

/// A cpu quantity in millicores.
pub fn cpu_millis(s: &str) -> Option<u64> {
    parse_milli(s).and_then(|m| u64::try_from(m).ok())
}

/// A memory quantity in bytes (fractions of a byte rounded up).
pub fn bytes(s: &str) -> Option<u64> {
    parse_milli(s).and_then(|m| u64::try_from(m.div_ceil(1000)).ok())
}

/// Millicores as a quantity (`250m`).
pub fn format_cpu(millis: u64) -> String {
    format!("{millis}m")
}

/// Bytes as a quantity (a plain integer).
pub fn format_bytes(bytes: u64) -> String {
    bytes.to_string()
}

/// `cpu` and `memory` of a Kubernetes resource list (unknown or bad values count 0).
pub fn resources<'a>(cpu: Option<&'a str>, memory: Option<&'a str>) -> Resources {
    Resources { cpu_millis: cpu.and_then(cpu_millis).unwrap_or(0), memory_bytes: memory.and_then(bytes).unwrap_or(0) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_forms() {
        assert_eq!(cpu_millis("2"), Some(2000));
        assert_eq!(cpu_millis("500m"), Some(500));
        assert_eq!(cpu_millis("0.5"), Some(500));
        assert_eq!(cpu_millis("1.25"), Some(1250));
        assert_eq!(bytes("4Gi"), Some(4 << 30));
        assert_eq!(bytes("16Mi"), Some(16 << 20));
        assert_eq!(bytes("1k"), Some(1000));
        assert_eq!(bytes("1e3"), Some(1000));
        assert_eq!(bytes("129M"), Some(129_000_000));
        assert_eq!(bytes("8042864Ki"), Some(8_042_864 * 1024));
        for bad in ["", "-1", "1x", "Gi", "1.2.3", "1e99", ".", "--1"] {
            assert_eq!(parse_milli(bad), None, "{bad:?}");
        }
        assert_eq!(parse_milli(&"9".repeat(65)), None, "over the length limit");
    }

    proptest! {
        #[test]
        fn formatted_values_read_back(m in 0u64..u64::MAX / 1000, b in any::<u64>()) {
            prop_assert_eq!(cpu_millis(&format_cpu(m)), Some(m));
            prop_assert_eq!(bytes(&format_bytes(b)), Some(b));
        }

        #[test]
        fn binary_suffixes_scale(n in 0u64..1 << 20) {
            prop_assert_eq!(bytes(&format!("{n}Ki")), Some(n << 10));
            prop_assert_eq!(bytes(&format!("{n}Mi")), Some(n << 20));
        }

        #[test]
        fn any_input_is_safe(s in ".{0,80}") {
            let _ = parse_milli(&s);
        }
    }
}
