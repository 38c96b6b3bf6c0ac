//! [`EmbeddedRegistry`]: `deisd --registry embedded` runs Debian's `docker-registry`
//! on loopback, with its own config (`<dir>/config.yml`, never the packaged one) and
//! data dir (`<dir>/data`), and stops it by PID (kept in `<dir>/registry.pid`: one a
//! killed deisd left running is stopped at the next start).
//!
//! The port is chosen once and kept in the config: builds name their images by the
//! registry's address, so it must not change across restarts. It listens on loopback
//! only: engines on this machine pull from it (Docker trusts plain HTTP to
//! `127.0.0.0/8`); for engines elsewhere give deisd a registry they can reach
//! (`--registry URL`). Started with an `auth` config (deisd's
//! [`token`](super::token) auth), it serves only the holders of tokens deisd signed.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::RegistryAddress;

/// The program run.
pub const PROGRAM: &str = "docker-registry";
/// How long it may take to answer once started.
const READY_WITHIN: Duration = Duration::from_secs(30);
/// How long it may take to stop after `SIGTERM`.
const STOP_WITHIN: Duration = Duration::from_secs(10);
/// Where its PID is kept, so a deisd that was killed leaves no registry behind the
/// next start.
const PID_FILE: &str = "registry.pid";

/// Stops the registry a previous deisd started with `config` and could not stop (it
/// was killed): the PID of the pidfile, if that process still runs `docker-registry`
/// with this config.
async fn stop_leftover(pidfile: &Path, config: &Path) {
    let Some(pid) = std::fs::read_to_string(pidfile).ok().and_then(|p| p.trim().parse::<i32>().ok()) else { return };
    let ours = |pid: i32| {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline);
        cmdline.contains(PROGRAM) && cmdline.contains(&*config.to_string_lossy())
    };
    if pid <= 1 || !ours(pid) {
        return;
    }
    tracing::warn!(pid, "stopping the embedded registry a previous deisd left running");
    // SAFETY: kill(2) on a PID read from our pidfile whose command line is our
    // registry's (checked just above); no memory is involved.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let deadline = tokio::time::Instant::now() + STOP_WITHIN;
    while ours(pid) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if ours(pid) {
        // SAFETY: as above; it did not stop on SIGTERM.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

/// A running `docker-registry` (see the module docs). Stop it with
/// [`EmbeddedRegistry::stop`]; dropping it kills it.
#[derive(Debug)]
pub struct EmbeddedRegistry {
    child: tokio::process::Child,
    addr: SocketAddr,
    dir: PathBuf,
}

/// The address line of a config this module wrote.
fn configured_addr(config: &str) -> Option<SocketAddr> {
    config.lines().find_map(|l| l.trim().strip_prefix("http: {addr: ")?.strip_suffix('}')?.parse().ok())
}

impl EmbeddedRegistry {
    /// Starts it with its config and data under `dir` (created), on the address kept
    /// there or a free loopback port, and waits until `/v2/` answers. `auth` is the
    /// config's `auth:` line (e.g. [`TokenIssuer::registry_auth_config`]); `None`: no
    /// authentication.
    ///
    /// [`TokenIssuer::registry_auth_config`]: super::token::TokenIssuer::registry_auth_config
    pub async fn start(dir: &Path, auth: Option<&str>) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir.join("data"))?;
        let config = dir.join("config.yml");
        stop_leftover(&dir.join(PID_FILE), &config).await;
        let addr = match std::fs::read_to_string(&config).ok().as_deref().and_then(configured_addr) {
            Some(a) => a,
            None => TcpListener::bind("127.0.0.1:0")?.local_addr()?,
        };
        let yaml = format!(
            "version: 0.1\nlog: {{level: warn, accesslog: {{disabled: true}}}}\n\
             storage: {{filesystem: {{rootdirectory: {}}}, delete: {{enabled: true}}}}\n\
             http: {{addr: {addr}}}\n{}",
            dir.join("data").display(),
            auth.unwrap_or_default()
        );
        std::fs::write(&config, yaml)?;
        let log = std::fs::File::create(dir.join("registry.log"))?;
        let child = tokio::process::Command::new(PROGRAM)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!(
                        "starting {PROGRAM}: {e}; install it (apt-get install docker-registry) or give --registry URL"
                    ),
                )
            })?;
        if let Some(pid) = child.id() {
            std::fs::write(dir.join(PID_FILE), pid.to_string())?;
        }
        let mut me = Self { child, addr, dir: dir.to_path_buf() };
        let deadline = tokio::time::Instant::now() + READY_WITHIN;
        loop {
            if answers(addr).await {
                tracing::info!(%addr, pid = me.child.id(), "embedded registry up");
                return Ok(me);
            }
            if let Some(status) = me.child.try_wait()? {
                let log = std::fs::read_to_string(dir.join("registry.log")).unwrap_or_default();
                return Err(std::io::Error::other(format!("{PROGRAM} exited ({status}) before it answered: {log}")));
            }
            if tokio::time::Instant::now() >= deadline {
                me.stop().await;
                return Err(std::io::Error::other(format!("{PROGRAM} did not answer on {addr} within 30 s")));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Its address (plain HTTP on loopback).
    pub fn address(&self) -> RegistryAddress {
        RegistryAddress { host: self.addr.to_string(), insecure: true }
    }

    /// Its directory (config, data, log).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Its PID, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Stops it by PID: `SIGTERM`, then `SIGKILL` if it is still there after 10 s.
    pub async fn stop(&mut self) {
        let Some(pid) = self.child.id() else { return };
        // SAFETY: kill(2) with the PID of our own child, which we have not reaped yet
        // (so the PID is still ours); no memory is involved.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
        if tokio::time::timeout(STOP_WITHIN, self.child.wait()).await.is_err() {
            let _ = self.child.kill().await;
        }
        let _ = std::fs::remove_file(self.dir.join(PID_FILE));
    }
}

/// Whether `GET /v2/` answers 200 or 401.
async fn answers(addr: SocketAddr) -> bool {
    let attempt = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        let req = format!("GET /v2/ HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut head = [0u8; 12];
        s.read_exact(&mut head).await.ok()?;
        Some(head.ends_with(b" 200") || head.ends_with(b" 401"))
    };
    tokio::time::timeout(Duration::from_secs(2), attempt).await.ok().flatten() == Some(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kept_address_is_read_back() {
        let yaml = "version: 0.1\nhttp: {addr: 127.0.0.1:41234}\n";
        assert_eq!(configured_addr(yaml), Some("127.0.0.1:41234".parse().unwrap()));
        assert_eq!(configured_addr("version: 0.1\n"), None);
    }
}
