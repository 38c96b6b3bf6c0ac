//! The host collector: cpu, memory, network and disk of this machine, from `/proc`
//! (cpu times, memory, interfaces, block devices) and `/sys/block` (which block
//! devices are whole disks). Each parser takes the file's text, read with a size cap.

use std::path::{Path, PathBuf};

use super::family::{Kind, MetricFamily};

/// Largest `/proc` or `/sys` file read (a host with thousands of interfaces or disks
/// stays well under it).
pub const MAX_PROC_FILE: u64 = 4 << 20;

/// Reads at most [`MAX_PROC_FILE`] bytes of a text file; `None` if it can't be read.
pub fn read_capped(path: &Path) -> Option<String> {
    use std::io::Read;
    let mut s = String::new();
    std::fs::File::open(path).ok()?.take(MAX_PROC_FILE).read_to_string(&mut s).ok()?;
    Some(s)
}

/// Seconds per clock tick of `/proc/stat` times (`USER_HZ`).
pub fn seconds_per_tick() -> f64 {
    // SAFETY: sysconf reads a constant of the system and has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    1.0 / if hz > 0 { hz as f64 } else { 100.0 }
}

/// Cpu time by mode, in ticks, of `/proc/stat`'s aggregate `cpu` line.
pub fn parse_cpu_ticks(stat: &str) -> Vec<(&'static str, u64)> {
    const MODES: [&str; 8] = ["user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"];
    let Some(line) = stat.lines().find(|l| l.split_whitespace().next() == Some("cpu")) else { return Vec::new() };
    MODES.iter().zip(line.split_whitespace().skip(1)).filter_map(|(m, v)| Some((*m, v.parse().ok()?))).collect()
}

/// `(total, available)` memory in bytes from `/proc/meminfo`.
pub fn parse_meminfo(meminfo: &str) -> Option<(u64, u64)> {
    let field = |name: &str| {
        meminfo.lines().find_map(|l| {
            let rest = l.strip_prefix(name)?.strip_prefix(':')?;
            let kib: u64 = rest.split_whitespace().next()?.parse().ok()?;
            kib.checked_mul(1024)
        })
    };
    Some((field("MemTotal")?, field("MemAvailable")?))
}

/// `(interface, received bytes, transmitted bytes)` from `/proc/net/dev`.
pub fn parse_net_dev(dev: &str) -> Vec<(String, u64, u64)> {
    dev.lines()
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some((name.trim().to_string(), f.first()?.parse().ok()?, f.get(8)?.parse().ok()?))
        })
        .collect()
}

/// `(device, bytes read, bytes written)` from `/proc/diskstats` (sectors of 512 bytes).
pub fn parse_diskstats(stats: &str) -> Vec<(String, u64, u64)> {
    stats
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let sectors = |i: usize| f.get(i)?.parse::<u64>().ok()?.checked_mul(512);
            Some((f.get(2)?.to_string(), sectors(5)?, sectors(9)?))
        })
        .collect()
}

/// The host collector. Paths are those of this machine by default; tests point them
/// elsewhere.
#[derive(Debug, Clone)]
pub struct HostCollector {
    /// Usually `/proc`.
    pub proc_root: PathBuf,
    /// Usually `/sys`.
    pub sys_root: PathBuf,
}

impl Default for HostCollector {
    fn default() -> Self {
        Self { proc_root: "/proc".into(), sys_root: "/sys".into() }
    }
}

impl HostCollector {
    /// Reads the host's figures now.
    pub fn collect(&self) -> Vec<MetricFamily> {
        let mut out = Vec::new();
        let proc = |f: &str| read_capped(&self.proc_root.join(f));
        if let Some(stat) = proc("stat") {
            let mut cpu = MetricFamily::new(
                "deis_host_cpu_seconds",
                "Cpu time of all cores, by mode, since boot.",
                Kind::Counter,
            );
            let tick = seconds_per_tick();
            for (mode, ticks) in parse_cpu_ticks(&stat) {
                cpu.push(&[("mode", mode)], ticks as f64 * tick);
            }
            out.push(cpu);
        }
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        out.push(MetricFamily::single("deis_host_cpus", "Cpu cores available.", Kind::Gauge, cores as f64));
        if let Some((total, available)) = proc("meminfo").as_deref().and_then(parse_meminfo) {
            out.push(MetricFamily::single("deis_host_memory_bytes", "Memory installed.", Kind::Gauge, total as f64));
            out.push(MetricFamily::single(
                "deis_host_memory_available_bytes",
                "Memory available to new work without swapping.",
                Kind::Gauge,
                available as f64,
            ));
        }
        if let Some(load) = proc("loadavg").and_then(|l| l.split_whitespace().next()?.parse::<f64>().ok()) {
            out.push(MetricFamily::single("deis_host_load1", "Load average over one minute.", Kind::Gauge, load));
        }
        if let Some(dev) = proc("net/dev") {
            let mut rx =
                MetricFamily::new("deis_host_network_receive_bytes", "Bytes received, by interface.", Kind::Counter);
            let mut tx = MetricFamily::new(
                "deis_host_network_transmit_bytes",
                "Bytes transmitted, by interface.",
                Kind::Counter,
            );
            for (name, r, t) in parse_net_dev(&dev) {
                rx.push(&[("device", &name)], r as f64);
                tx.push(&[("device", &name)], t as f64);
            }
            out.extend([rx, tx]);
        }
        if let Some(stats) = proc("diskstats") {
            let mut read = MetricFamily::new("deis_host_disk_read_bytes", "Bytes read, by disk.", Kind::Counter);
            let mut written =
                MetricFamily::new("deis_host_disk_written_bytes", "Bytes written, by disk.", Kind::Counter);
            // Whole disks only (partitions would count twice): those /sys/block lists.
            let disks = self.sys_root.join("block");
            for (name, r, w) in parse_diskstats(&stats) {
                if !name.starts_with("loop") && !name.starts_with("ram") && disks.join(&name).exists() {
                    read.push(&[("device", &name)], r as f64);
                    written.push(&[("device", &name)], w as f64);
                }
            }
            out.extend([read, written]);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn parses_proc_files() {
        let stat = "cpu  10 2 30 400 5 0 1 0 0 0\ncpu0 5 1 15 200 2 0 0 0 0 0\nintr 1\n";
        assert_eq!(
            parse_cpu_ticks(stat),
            [
                ("user", 10),
                ("nice", 2),
                ("system", 30),
                ("idle", 400),
                ("iowait", 5),
                ("irq", 0),
                ("softirq", 1),
                ("steal", 0)
            ]
        );
        let meminfo = "MemTotal:       16318684 kB\nMemFree:  1 kB\nMemAvailable:   8000000 kB\n";
        assert_eq!(parse_meminfo(meminfo), Some((16318684 * 1024, 8000000 * 1024)));
        assert_eq!(parse_meminfo("MemTotal: 1 kB\n"), None);
        let dev = "Inter-|   Receive\n face |bytes packets\n    lo: 100 1 0 0 0 0 0 0 200 2 0 0 0 0 0 0\n  eth0: 5 1 0 0 0 0 0 0 7 1 0 0 0 0 0 0\n";
        assert_eq!(parse_net_dev(dev), [("lo".into(), 100, 200), ("eth0".into(), 5, 7)]);
        let disk = " 254 0 vda 100 0 8 0 50 0 16 0 0 0 0\n 254 1 vda1 1 0 2 0 1 0 2 0 0 0 0\n";
        assert_eq!(parse_diskstats(disk), [("vda".into(), 4096, 8192), ("vda1".into(), 1024, 1024)]);
    }

    #[test]
    fn reads_this_machine() {
        let fams = HostCollector::default().collect();
        let names: Vec<&str> = fams.iter().map(|f| f.name.as_str()).collect();
        for want in ["deis_host_cpu_seconds", "deis_host_memory_bytes", "deis_host_network_receive_bytes"] {
            assert!(names.contains(&want), "{names:?}");
        }
        let cpu = &fams[0];
        assert!(cpu.samples.len() >= 4, "{cpu:?}");
    }

    proptest! {
        // Outside bytes: none of the parsers panics, whatever the file holds.
        #[test]
        fn parsers_take_any_text(s in "\\PC{0,400}", lines in prop::collection::vec("[a-z0-9: ]{0,60}", 0..10)) {
            let joined = lines.join("\n");
            for text in [s.as_str(), joined.as_str()] {
                let _ = parse_cpu_ticks(text);
                let _ = parse_meminfo(text);
                let _ = parse_net_dev(text);
                let _ = parse_diskstats(text);
            }
        }
    }
}
