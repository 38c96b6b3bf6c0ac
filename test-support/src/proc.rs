//! Processes of this machine, seen through `/proc`, and stopping them by PID.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// How long [`stop_pid`] waits after `SIGTERM` before `SIGKILL`.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Pids of the live processes whose (initial) environment holds `var=value` (reads
/// `/proc/<pid>/environ`: needs the right to, e.g. root or the same user). Zombies have
/// an empty environment, so they never match.
pub fn processes_with_env(var: &str, value: &str) -> Vec<u32> {
    let needle = format!("{var}={value}");
    pids().into_iter().filter(|pid| environ(*pid).contains(&needle)).collect()
}

/// Every pid in `/proc`, ascending.
pub fn pids() -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return vec![] };
    let mut pids: Vec<u32> = dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect();
    pids.sort_unstable();
    pids
}

/// The (initial) environment of `pid` as `KEY=VALUE` strings; empty when unreadable.
pub fn environ(pid: u32) -> Vec<String> {
    let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else { return vec![] };
    env.split(|b| *b == 0).filter(|kv| !kv.is_empty()).map(|kv| String::from_utf8_lossy(kv).into_owned()).collect()
}

/// The value of `var` in the (initial) environment of `pid`.
pub fn env_var(pid: u32, var: &str) -> Option<String> {
    environ(pid).into_iter().find_map(|kv| kv.strip_prefix(var)?.strip_prefix('=').map(str::to_owned))
}

/// The command line of `pid`, arguments joined by spaces; empty when unreadable.
pub fn cmdline(pid: u32) -> String {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    String::from_utf8_lossy(&raw).replace('\0', " ").trim_end().to_string()
}

/// What `/proc/<pid>/stat` says of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// State letter (`R`, `S`, `Z`, ...).
    pub state: char,
    /// Parent pid.
    pub ppid: u32,
    /// Process group.
    pub pgid: u32,
}

/// `/proc/<pid>/stat` of `pid`, if it exists.
pub fn stat(pid: u32) -> Option<Stat> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let mut f = stat.rsplit_once(')')?.1.split_whitespace();
    let state = f.next()?.chars().next()?;
    let ppid = f.next()?.parse().ok()?;
    let pgid = f.next()?.parse().ok()?;
    Some(Stat { state, ppid, pgid })
}

/// User + system cpu seconds `pid` (all its threads) used so far, from
/// `/proc/<pid>/stat` (counted in clock ticks, usually 10 ms); `None` if it is gone.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the `(comm)`: state is the first field, utime the 12th, stime the 13th.
    let f: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = |i: usize| f.get(i)?.parse::<u64>().ok();
    Some((ticks(11)? + ticks(12)?) as f64 / clock_ticks_per_second())
}

/// Clock ticks per second of `/proc` cpu times (`getconf CLK_TCK`, 100 if unknown).
pub fn clock_ticks_per_second() -> f64 {
    static HZ: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *HZ.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// Whether `pid` is gone: no such process, or a zombie (dead, waiting to be reaped).
pub fn gone(pid: u32) -> bool {
    stat(pid).is_none_or(|s| matches!(s.state, 'Z' | 'X'))
}

/// Zombie processes whose parent is `ppid`.
pub fn zombies_of(ppid: u32) -> Vec<u32> {
    pids().into_iter().filter(|pid| stat(*pid).is_some_and(|s| s.state == 'Z' && s.ppid == ppid)).collect()
}

/// Sends `signal` (a name like `TERM` or `INT`) to `pid` with kill(1).
pub fn signal(pid: u32, signal: &str) -> bool {
    Command::new("kill").args([&format!("-{signal}"), &pid.to_string()]).status().is_ok_and(|s| s.success())
}

/// Stops `pid`: `SIGTERM`, then `SIGKILL` if it is not gone within 10 s. Returns when it
/// is gone (a zombie counts: its parent reaps it).
pub fn stop_pid(pid: u32) {
    signal(pid, "TERM");
    let deadline = Instant::now() + STOP_TIMEOUT;
    while !gone(pid) {
        if Instant::now() >= deadline {
            signal(pid, "KILL");
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether the program `bin` is on `PATH` (or is a path that exists).
pub fn installed(bin: &str) -> bool {
    if bin.contains('/') {
        return Path::new(bin).exists();
    }
    std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(bin).is_file()))
}
