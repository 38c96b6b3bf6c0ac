//! `deis metrics`: the app's request rate, error rate and latency, and its units' usage.

use deis_sdk::telemetry::http::AppMetrics;

use super::{Ctx, Result};
use crate::output::{fields, human_bytes, table};

/// `deis metrics -a APP [--minutes N]`.
pub async fn show(ctx: &Ctx, minutes: u64) -> Result {
    let app = ctx.app()?;
    let (client, _) = ctx.client()?;
    let m = client.app_metrics(&app, minutes).await?;
    if !ctx.emit(&m)? {
        print!("{}", view(&m));
    }
    Ok(())
}

fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{v:.1} ms"))
}

/// The figures as `deis metrics` prints them.
fn view(m: &AppMetrics) -> String {
    let mut out = format!("=== {} Metrics (last {:.0}s)\n", m.app, m.window_seconds);
    out.push_str(&fields(&[
        ("requests", m.requests.to_string()),
        ("request rate", format!("{:.2}/s", m.requests_per_second)),
        ("error rate", format!("{:.2}% ({} 5xx)", m.error_rate * 100.0, m.errors)),
        ("latency p50", ms(m.p50_ms)),
        ("latency p99", ms(m.p99_ms)),
    ]));
    if !m.units.is_empty() {
        out.push_str("--- units:\n");
        let rows: Vec<Vec<String>> = m
            .units
            .iter()
            .map(|u| {
                let cpu = u.cpu_percent.map_or_else(|| "-".to_string(), |c| format!("{c:.1}%"));
                vec![u.name.clone(), format!("cpu {cpu}"), format!("mem {}", human_bytes(u.memory_bytes))]
            })
            .collect();
        out.push_str(&table(&rows, " "));
    }
    out
}

#[cfg(test)]
mod tests {
    use deis_sdk::telemetry::http::UnitFigures;

    use super::*;

    #[test]
    fn prints_rates_and_latency() {
        let m = AppMetrics {
            app: "hello".into(),
            window_seconds: 60.0,
            requests: 120,
            requests_per_second: 2.0,
            errors: 6,
            error_rate: 0.05,
            p50_ms: Some(1.25),
            p99_ms: Some(40.0),
            by_class: [0, 114, 0, 0, 6],
            units: vec![UnitFigures {
                name: "hello.web.1".into(),
                proc_type: "web".into(),
                cpu_percent: Some(12.5),
                memory_bytes: 50 << 20,
                restarts: 0,
            }],
        };
        let out = view(&m);
        for want in [
            "request rate: 2.00/s",
            "error rate:   5.00% (6 5xx)",
            "latency p50:  1.2 ms",
            "latency p99:  40.0 ms",
            "hello.web.1 cpu 12.5% mem 50.0M",
        ] {
            assert!(out.contains(want), "{want:?} in\n{out}");
        }
    }
}
