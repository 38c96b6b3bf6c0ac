//! Reading wrk's summary (the benchmarks' HTTP load generator).

/// What a wrk run printed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WrkSummary {
    /// Requests completed.
    pub requests: u64,
    /// `Requests/sec`.
    pub rps: f64,
    /// Latency percentiles (ms) when run with `--latency`, else NaN.
    pub p50_ms: f64,
    /// See `p50_ms`.
    pub p99_ms: f64,
    /// Non-2xx/3xx responses plus socket errors.
    pub errors: u64,
}

/// `12.5us`, `3.1ms`, `1.2s` in milliseconds.
fn parse_ms(s: &str) -> f64 {
    let s = s.trim();
    let (num, mult) = if let Some(v) = s.strip_suffix("us") {
        (v, 0.001)
    } else if let Some(v) = s.strip_suffix("ms") {
        (v, 1.0)
    } else if let Some(v) = s.strip_suffix('s') {
        (v, 1000.0)
    } else {
        (s, 1.0)
    };
    num.parse::<f64>().unwrap_or(f64::NAN) * mult
}

/// Parses wrk's standard output; `None` when it has no `Requests/sec` line.
pub fn parse(stdout: &str) -> Option<WrkSummary> {
    let mut r = WrkSummary { requests: 0, rps: 0.0, p50_ms: f64::NAN, p99_ms: f64::NAN, errors: 0 };
    let mut seen = false;
    for line in stdout.lines().map(str::trim) {
        if let Some((n, _)) = line.split_once(" requests in ") {
            r.requests = n.trim().parse().unwrap_or(0);
        } else if let Some(v) = line.strip_prefix("Requests/sec:") {
            r.rps = v.trim().parse().unwrap_or(0.0);
            seen = true;
        } else if let Some(v) = line.strip_prefix("50%") {
            r.p50_ms = parse_ms(v);
        } else if let Some(v) = line.strip_prefix("99%") {
            r.p99_ms = parse_ms(v);
        } else if let Some((label, counts)) = line.split_once(':')
            && (label.starts_with("Non-2xx") || label.starts_with("Socket errors"))
        {
            // (Only after the colon: "Non-2xx or 3xx" is no count.)
            r.errors += counts.split(|c: char| !c.is_ascii_digit()).filter_map(|n| n.parse::<u64>().ok()).sum::<u64>();
        }
    }
    seen.then_some(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_summary_with_latency_and_errors() {
        let out = "Running 2s test @ http://127.0.0.1:1/\n  1 threads and 4 connections\n  Latency Distribution\n     \
                   50%  125.00us\n     99%    2.50ms\n  1000 requests in 2.00s, 1.00MB read\n  \
                   Socket errors: connect 0, read 1, write 0, timeout 2\n  Non-2xx or 3xx responses: 3\n\
                   Requests/sec:    500.25\nTransfer/sec:      0.5MB\n";
        let r = parse(out).unwrap();
        assert_eq!((r.requests, r.rps, r.errors), (1000, 500.25, 6));
        assert!((r.p50_ms - 0.125).abs() < 1e-9 && (r.p99_ms - 2.5).abs() < 1e-9, "{r:?}");
        assert!(parse("wrk: connection refused\n").is_none());
    }
}
