//! A private PostgreSQL server (Debian package `postgresql`): `initdb` in its temp dir,
//! password (SCRAM) authentication over TCP on loopback, superuser `postgres` with a
//! random password. When the tests run as root, the server runs as the `postgres`
//! system user (PostgreSQL refuses to run as root).

use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use crate::service::{Program, Service, ServiceProcess, skip_without};

/// The superuser's password (the server is private to the test process and loopback).
const PASSWORD: &str = "deis-test-superuser";

/// A running PostgreSQL on loopback (see [`crate::service`]).
#[derive(Debug)]
pub struct PostgresServer(ServiceProcess);

/// The directory with `postgres` and `initdb`: on `PATH`, else Debian's newest
/// `/usr/lib/postgresql/<version>/bin`.
fn bin_dir() -> Option<PathBuf> {
    static DIR: OnceLock<Option<PathBuf>> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Some(path) = std::env::var_os("PATH") {
            for dir in std::env::split_paths(&path) {
                if dir.join("postgres").is_file() && dir.join("initdb").is_file() {
                    return Some(dir);
                }
            }
        }
        let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| Some(e.ok()?.path().join("bin")))
            .filter(|d| d.join("postgres").is_file())
            .collect();
        versions.sort();
        versions.pop()
    })
    .clone()
}

/// The uid and gid of the `postgres` system user, when we run as root.
fn run_as() -> Option<(u32, u32)> {
    if std::fs::metadata("/proc/self").ok()?.uid() != 0 {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    let line = passwd.lines().find(|l| l.starts_with("postgres:"))?;
    let fields: Vec<&str> = line.split(':').collect();
    Some((fields.get(2)?.parse().ok()?, fields.get(3)?.parse().ok()?))
}

impl Service for PostgresServer {
    fn start() -> Option<Self> {
        let Some(dir) = bin_dir() else {
            skip_without("postgres", "postgresql");
            return None;
        };
        let bin: &'static str = Box::leak(dir.join("postgres").to_string_lossy().into_owned().into_boxed_str());
        let program = Program { bin, package: "postgresql", ready_within: Duration::from_secs(60) };
        let user = run_as();
        let command = |addr: SocketAddr, tmp: &Path| {
            let data = tmp.join("data");
            let pwfile = tmp.join("pwfile");
            std::fs::write(&pwfile, PASSWORD).expect("writing the password file");
            if let Some((uid, gid)) = user {
                // The server's user must own its data and may write its log there.
                std::os::unix::fs::chown(tmp, Some(uid), Some(gid)).expect("chown the temp dir");
                std::os::unix::fs::chown(&pwfile, Some(uid), Some(gid)).expect("chown the password file");
                std::os::unix::fs::chown(tmp.join("postgres.log"), Some(uid), Some(gid)).ok();
            }
            let mut initdb = Command::new(dir.join("initdb"));
            initdb.arg("-D").arg(&data).args(["-U", "postgres", "--auth-host=scram-sha-256", "--auth-local=trust"]);
            initdb.arg(format!("--pwfile={}", pwfile.display())).args(["-E", "UTF8", "--no-sync"]);
            if let Some((uid, gid)) = user {
                initdb.uid(uid).gid(gid);
            }
            let out = initdb.output().expect("running initdb");
            assert!(out.status.success(), "initdb failed: {}", String::from_utf8_lossy(&out.stderr));
            let mut c = Command::new(bin);
            c.arg("-D").arg(&data).args(["-p", &addr.port().to_string(), "-c", "listen_addresses=127.0.0.1"]);
            c.arg("-c").arg(format!("unix_socket_directories={}", tmp.display()));
            c.args(["-c", "fsync=off", "-c", "max_connections=300"]);
            if let Some((uid, gid)) = user {
                c.uid(uid).gid(gid);
            }
            c
        };
        let ready = |p: &ServiceProcess| {
            TcpStream::connect_timeout(&p.addr(), Duration::from_secs(1)).is_ok()
                && p.log().contains("ready to accept connections")
        };
        ServiceProcess::start(&program, command, ready).map(Self)
    }

    fn process(&self) -> Option<&ServiceProcess> {
        Some(&self.0)
    }
}

impl PostgresServer {
    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.0.addr()
    }

    /// The superuser's URL, `postgres://postgres:<password>@127.0.0.1:<port>/postgres`.
    pub fn admin_url(&self) -> String {
        format!("postgres://postgres:{PASSWORD}@{}/postgres", self.addr())
    }
}
