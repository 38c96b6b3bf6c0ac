//! Rendering for people: aligned tables and the Deis-style views (`ps`, `releases`, ...).

use std::collections::BTreeMap;

use deis_sdk::client::Pod;

/// Aligns `rows` into columns separated by `sep`; the last column is not padded.
pub fn table(rows: &[Vec<String>], sep: &str) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0; cols];
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i > 0 {
                line.push_str(sep);
            }
            line.push_str(cell);
            if i + 1 < row.len() {
                line.extend(std::iter::repeat_n(' ', widths[i] - cell.chars().count()));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The `ps` view:
///
/// ```text
/// === hello Processes
/// --- web:
/// hello.web.1 up (v3) 127.0.0.1:40123
/// ```
///
/// When the units run on more than one node, each line ends with `on <node>`.
pub fn processes(app: &str, pods: &[Pod]) -> String {
    let nodes: std::collections::BTreeSet<&str> = pods.iter().map(|p| p.node.as_str()).collect();
    let mut by_type: BTreeMap<&str, Vec<&Pod>> = BTreeMap::new();
    for p in pods {
        by_type.entry(p.proc_type.as_str()).or_default().push(p);
    }
    let mut out = format!("=== {app} Processes\n");
    for (t, mut list) in by_type {
        list.sort_by(|a, b| a.number().cmp(&b.number()).then_with(|| a.name.cmp(&b.name)));
        out.push_str(&format!("--- {t}:\n"));
        let rows: Vec<Vec<String>> = list
            .iter()
            .map(|p| {
                let mut row = vec![p.name.clone(), p.state.clone(), format!("({})", p.release)];
                row.push(p.address.clone().unwrap_or_default());
                if nodes.len() > 1 {
                    row.push(format!("on {}", p.node));
                }
                if p.restarts > 0 {
                    row.push(format!("restarts: {}", p.restarts));
                }
                if let Some(usage) = usage(p) {
                    row.push(usage);
                }
                row
            })
            .collect();
        out.push_str(&table(&rows, " "));
    }
    out
}

/// A unit's `cpu 12.5% mem 48.2M`, from the fields telemetry adds to pods.
fn usage(p: &Pod) -> Option<String> {
    let memory = p.extra.get("memory_bytes")?.as_u64()?;
    let cpu = p.extra.get("cpu_percent").and_then(serde_json::Value::as_f64);
    let cpu = cpu.map_or_else(|| "-".to_string(), |c| format!("{c:.1}%"));
    Some(format!("cpu {cpu} mem {}", human_bytes(memory)))
}

/// Bytes as `512B`, `48.2M`, `1.5G`.
pub fn human_bytes(bytes: u64) -> String {
    for (unit, mult) in [("G", 1u64 << 30), ("M", 1 << 20), ("K", 1 << 10)] {
        if bytes >= mult {
            return format!("{:.1}{unit}", bytes as f64 / mult as f64);
        }
    }
    format!("{bytes}B")
}

/// `key: value` lines with the values aligned, as `apps:info` and `releases:info` show them.
pub fn fields(pairs: &[(&str, String)]) -> String {
    let rows: Vec<Vec<String>> = pairs.iter().map(|(k, v)| vec![format!("{k}:"), v.clone()]).collect();
    table(&rows, " ")
}

/// A formation as `web=3 worker=0`.
pub fn formation(structure: &BTreeMap<deis_core::ProcessType, u32>) -> String {
    structure.iter().map(|(t, n)| format!("{t}={n}")).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, state: &str, release: &str, addr: Option<&str>, restarts: u32) -> Pod {
        serde_json::from_value(serde_json::json!({
            "name": name, "state": state, "release": release,
            "type": name.split('.').nth(1).unwrap(), "address": addr, "restarts": restarts,
        }))
        .unwrap()
    }

    #[test]
    fn tables_align_and_do_not_pad_the_last_column() {
        let rows = vec![
            vec!["v10".to_string(), "2026-01-02T00:00:00Z".into(), "alice added GREETING".into()],
            vec!["v9".to_string(), "2026-01-01T00:00:00Z".into(), "alice deployed sha256:abcd".into()],
        ];
        assert_eq!(
            table(&rows, "  "),
            "v10  2026-01-02T00:00:00Z  alice added GREETING\nv9   2026-01-01T00:00:00Z  alice deployed sha256:abcd\n"
        );
    }

    #[test]
    fn ps_view_groups_by_type_in_unit_order() {
        let pods = vec![
            pod("hello.web.10", "up", "v3", Some("127.0.0.1:40130"), 0),
            pod("hello.worker.1", "crashed", "v3", None, 2),
            pod("hello.web.2", "up", "v3", Some("127.0.0.1:40123"), 0),
        ];
        assert_eq!(
            processes("hello", &pods),
            "=== hello Processes\n--- web:\nhello.web.2  up (v3) 127.0.0.1:40123\nhello.web.10 up (v3) 127.0.0.1:40130\n\
             --- worker:\nhello.worker.1 crashed (v3)  restarts: 2\n"
        );
        let one = vec![pod("hello.web.1", "up", "v3", Some("127.0.0.1:40123"), 0)];
        assert_eq!(processes("hello", &one), "=== hello Processes\n--- web:\nhello.web.1 up (v3) 127.0.0.1:40123\n");
        // Units on several nodes say where.
        let mut two = vec![one[0].clone(), pod("hello.web.2", "up", "v3", Some("10.0.0.2:40124"), 0)];
        (two[0].node, two[1].node) = ("n1".into(), "n2".into());
        assert_eq!(
            processes("hello", &two),
            "=== hello Processes\n--- web:\nhello.web.1 up (v3) 127.0.0.1:40123 on n1\nhello.web.2 up (v3) 10.0.0.2:40124  on n2\n"
        );
    }
}
