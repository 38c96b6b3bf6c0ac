//! `nodes:list` (admins).

use deis_core::model::limits::format_memory;
use deis_core::scheduler::NodeStatus;

use super::{Ctx, Result};
use crate::output::table;

/// `deis nodes:list`.
pub async fn list(ctx: &Ctx) -> Result {
    let (client, _) = ctx.client()?;
    let nodes = client.nodes().await?;
    if ctx.emit(&nodes)? {
        return Ok(());
    }
    print!("{}", view(&nodes));
    Ok(())
}

/// One line per node: name, health, planes, cpu and memory allocated of capacity, labels.
fn view(nodes: &[NodeStatus]) -> String {
    let mut rows = vec![["NODE", "HEALTH", "PLANES", "CPU", "MEMORY", "LABELS"].map(String::from).to_vec()];
    for n in nodes {
        let labels: Vec<String> = n.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        rows.push(vec![
            n.name.clone(),
            n.health.to_string(),
            n.planes.to_string(),
            format!("{}m/{}m", n.allocated.cpu_millis, n.capacity.cpu_millis),
            format!("{}/{}", format_memory(n.allocated.memory_bytes), format_memory(n.capacity.memory_bytes)),
            labels.join(","),
        ]);
    }
    table(&rows, "  ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use deis_core::model::limits::Resources;
    use deis_core::scheduler::Capacity;

    #[test]
    fn one_line_per_node() {
        let mut a = NodeStatus::new(
            "n1",
            Capacity { cpu_millis: 2000, memory_bytes: 4 << 30 },
            Resources { cpu_millis: 300, memory_bytes: 512 << 20 },
        );
        a.labels.insert("zone".into(), "a".into());
        let b = NodeStatus::new("n2", Capacity { cpu_millis: 1000, memory_bytes: 1 << 30 }, Resources::default());
        assert_eq!(
            view(&[a, b]),
            "NODE  HEALTH  PLANES  CPU         MEMORY   LABELS\n\
             n1    up      data    300m/2000m  512M/4G  zone=a\n\
             n2    up      data    0m/1000m    0B/1G\n"
        );
    }
}
