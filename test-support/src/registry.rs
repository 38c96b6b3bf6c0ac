//! A private Docker Registry v2 (Debian package `docker-registry`) on loopback, with its
//! own config and storage in its temp dir (never the packaged
//! `/etc/docker/registry/config.yml`), optionally behind htpasswd basic auth (bcrypt
//! lines written by `htpasswd -B`, Debian package `apache2-utils`). Its access log is
//! on, so tests can count the requests it served ([`DockerRegistry::blob_puts`]).
//!
//! ```no_run
//! use deis_test_support::registry::DockerRegistry;
//! use deis_test_support::service::Service;
//! # fn f() {
//! let Some(open) = DockerRegistry::start() else { return }; // skipped loudly
//! let Some(locked) = DockerRegistry::start_with_htpasswd("deis", "s3cret") else { return };
//! assert!(locked.auth().is_some() && open.auth().is_none());
//! # }
//! ```

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::service::{Program, Service, ServiceProcess, skip_without};

const REGISTRY: Program =
    Program { bin: "docker-registry", package: "docker-registry", ready_within: Duration::from_secs(20) };

/// A running `docker-registry` (see [`crate::service`]).
#[derive(Debug)]
pub struct DockerRegistry {
    process: ServiceProcess,
    auth: Option<(String, String)>,
}

impl Service for DockerRegistry {
    /// A registry without authentication.
    fn start() -> Option<Self> {
        Self::start_inner(None)
    }

    fn process(&self) -> Option<&ServiceProcess> {
        Some(&self.process)
    }
}

impl DockerRegistry {
    /// A registry that wants `username`/`password` (htpasswd basic auth); None when
    /// `docker-registry` or `htpasswd` is missing (see [`skip_without`]).
    pub fn start_with_htpasswd(username: &str, password: &str) -> Option<Self> {
        if skip_without("htpasswd", "apache2-utils") {
            return None;
        }
        Self::start_inner(Some((username.to_string(), password.to_string())))
    }

    fn start_inner(auth: Option<(String, String)>) -> Option<Self> {
        let command = |addr: SocketAddr, dir: &Path| {
            let config = dir.join("config.yml");
            let mut yaml = format!(
                "version: 0.1\nlog: {{level: info, accesslog: {{disabled: false}}}}\n\
                 storage: {{filesystem: {{rootdirectory: {}}}, delete: {{enabled: true}}}}\n\
                 http: {{addr: {addr}}}\n",
                dir.join("data").display()
            );
            if let Some((user, password)) = &auth {
                let path = dir.join("htpasswd");
                let out = Command::new("htpasswd").args(["-Bbn", user, password]).output().expect("htpasswd runs");
                assert!(out.status.success(), "htpasswd failed: {}", String::from_utf8_lossy(&out.stderr));
                std::fs::write(&path, &out.stdout).expect("writing htpasswd");
                yaml.push_str(&format!("auth: {{htpasswd: {{realm: deis-test, path: {}}}}}\n", path.display()));
            }
            std::fs::write(&config, yaml).expect("writing the registry config");
            let mut c = Command::new(REGISTRY.bin);
            c.arg("serve").arg(config);
            c
        };
        let process = ServiceProcess::start(&REGISTRY, command, |p| v2_answers(p.addr()))?;
        Some(Self { process, auth })
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.process.addr()
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// The username and password it wants, if any.
    pub fn auth(&self) -> Option<(&str, &str)> {
        self.auth.as_ref().map(|(u, p)| (u.as_str(), p.as_str()))
    }

    /// Where it keeps blobs and repositories.
    pub fn data_dir(&self) -> std::path::PathBuf {
        self.process.dir().join("data")
    }

    /// How many blob uploads it has completed or refused so far: the `PUT`s to
    /// `/v2/<repo>/blobs/uploads/…` in its access log (one per uploaded blob, whether
    /// sent in one piece or in chunks).
    pub fn blob_puts(&self) -> usize {
        self.requests("PUT", "/blobs/uploads/")
    }

    /// How many `method` requests whose path contains `path_part` its access log shows.
    pub fn requests(&self, method: &str, path_part: &str) -> usize {
        let needle = format!("\"{method} /v2/");
        self.process.log().lines().filter(|l| l.contains(&needle) && l.contains(path_part)).count()
    }

    /// Its log so far (for failure messages).
    pub fn log(&self) -> String {
        self.process.log()
    }
}

/// Whether `GET /v2/` on `addr` answers 200 (open) or 401 (auth wanted).
fn v2_answers(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET /v2/ HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let mut head = [0u8; 12];
    s.write_all(request.as_bytes()).is_ok()
        && s.read_exact(&mut head).is_ok()
        && (head.ends_with(b" 200") || head.ends_with(b" 401"))
}
