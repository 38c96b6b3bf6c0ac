//! [`LoadBalancer`]: nginx in front of several backends, as an operator puts one in
//! front of the replicas of a service: a failed connection (a replica restarting) is
//! retried on the next backend (nginx's default `proxy_next_upstream error timeout`),
//! any answer a backend gives is passed on as it is. No backend is ever marked down
//! (`max_fails=0`): every request tries them in turn, so a fast rolling restart can't
//! leave nginx with all of them marked down at once.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running nginx balancing one port per backend group; stopped on drop.
#[derive(Debug)]
pub struct LoadBalancer {
    child: Child,
    /// One listening address per backend group given to [`LoadBalancer::start`].
    pub addrs: Vec<SocketAddr>,
    dir: tempfile::TempDir,
}

impl LoadBalancer {
    /// Starts nginx (one worker) with a listener per group of `backends`, or `None`
    /// (the test skips) when nginx is not installed.
    pub fn start(backends: &[&[SocketAddr]]) -> Option<Self> {
        if !crate::proc::installed("nginx") {
            eprintln!("skipped: nginx is not installed (apt-get install nginx-light)");
            return None;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let addrs: Vec<SocketAddr> = backends.iter().map(|_| crate::free_addr()).collect();
        let path = dir.path().join("nginx.conf");
        std::fs::write(&path, config(dir.path(), &addrs, backends)).expect("write nginx.conf");
        let child = Command::new("nginx")
            .arg("-c")
            .arg(&path)
            .arg("-p")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx");
        for addr in &addrs {
            crate::net::wait_listening(*addr, Duration::from_secs(10));
        }
        Some(Self { child, addrs, dir })
    }

    /// nginx's error log so far (which backend failed when).
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

fn config(dir: &Path, addrs: &[SocketAddr], backends: &[&[SocketAddr]]) -> String {
    let mut servers = String::new();
    for (n, (addr, group)) in addrs.iter().zip(backends).enumerate() {
        let upstreams: String = group.iter().map(|b| format!("    server {b} max_fails=0;\n")).collect();
        servers.push_str(&format!(
            "  upstream group{n} {{\n{upstreams}  }}\n  server {{\n    listen {addr};\n    location / {{\n\
             \x20     proxy_pass http://group{n};\n      proxy_http_version 1.1;\n      proxy_buffering off;\n\
             \x20     proxy_request_buffering off;\n      proxy_set_header Host $http_host;\n\
             \x20     proxy_connect_timeout 2s;\n      proxy_read_timeout 300s;\n    }}\n  }}\n"
        ));
    }
    format!(
        "worker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
         events {{ worker_connections 1024; }}\n\
         http {{\n  access_log off;\n  client_max_body_size 0;\n  client_body_temp_path {d}/body;\n\
         \x20 proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fcgi;\n  uwsgi_temp_path {d}/uwsgi;\n\
         \x20 scgi_temp_path {d}/scgi;\n{servers}}}\n",
        d = dir.display()
    )
}

impl Drop for LoadBalancer {
    fn drop(&mut self) {
        crate::proc::signal(self.child.id(), "TERM");
        let _ = self.child.wait();
    }
}
