//! Harness for the end-to-end tests: starts the real `deisd` on free loopback ports
//! with a temporary data directory, drives it with the real `deis` binary, and looks
//! at the processes it runs through `/proc`.
//!
//! The binaries must be built first (`cargo build --bins`; `scripts/test` does it).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The directory holding the workspace's binaries (next to the test executable).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test-binary>
    exe.parent().and_then(Path::parent).expect("target dir layout").to_path_buf()
}

/// Path of a workspace binary; panics with advice if it was not built.
pub fn binary(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(p.exists(), "{} is missing: run `cargo build --bins` before the end-to-end tests", p.display());
    p
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

/// A free loopback port (bound, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Polls `f` until it returns `Some`, or panics after `timeout` with `what`.
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `extra` plus a syslog listener on a free port unless `extra` chooses one: parallel
/// daemons must not fight over the default port.
fn with_private_syslog(extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    if !extra.contains(&"--syslog-addr") {
        args.extend(["--syslog-addr".to_string(), format!("127.0.0.1:{}", free_port())]);
    }
    args
}

/// A running `deisd` with its own data dir and ports; killed on drop.
#[derive(Debug)]
pub struct Deisd {
    /// The daemon process.
    pub child: Option<Child>,
    /// Data directory (kept across restarts of this handle).
    pub data_dir: PathBuf,
    /// Controller API address.
    pub api: SocketAddr,
    /// Router address.
    pub router: SocketAddr,
    /// Platform domain.
    pub domain: String,
    /// Extra arguments passed on every start.
    pub extra_args: Vec<String>,
    log: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

impl Deisd {
    /// Starts a fresh daemon.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts a fresh daemon with extra flags.
    pub fn start_with(extra: &[&str]) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let data_dir = tmp.path().join("data");
        let log = tmp.path().join("deisd.log");
        let mut d = Deisd {
            child: None,
            data_dir,
            api: SocketAddr::from(([127, 0, 0, 1], free_port())),
            router: SocketAddr::from(([127, 0, 0, 1], free_port())),
            domain: "deis.test".into(),
            extra_args: with_private_syslog(extra),
            log,
            _tmp: Some(tmp),
        };
        d.spawn();
        d
    }

    /// Starts the daemon process on the same data dir and ports.
    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let child = Command::new(binary("deisd"))
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--api-addr")
            .arg(self.api.to_string())
            .arg("--router-addr")
            .arg(self.router.to_string())
            .arg("--domain")
            .arg(&self.domain)
            .args(&self.extra_args)
            .env("RUST_LOG", "info,deis=debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn deisd");
        self.child = Some(child);
        let api = self.api;
        wait_for(Duration::from_secs(20), "deisd /healthz", || {
            http_request(api, "GET", "/healthz", "", &[], None).ok().filter(|r| r.status == 200)
        });
    }

    /// The daemon's log so far (for assertion messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `kill -9` the daemon (its units are left to the next start to clean up).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().ok();
            c.wait().ok();
        }
    }

    /// SIGTERM and wait: a graceful stop.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = c.try_wait().unwrap() {
                return Some(st);
            }
            if Instant::now() > deadline {
                c.kill().ok();
                return c.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The controller URL for `deis register`.
    pub fn url(&self) -> String {
        format!("http://{}", self.api)
    }

    /// A CLI bound to this daemon with its own profile.
    pub fn cli(&self) -> Cli {
        let home = tempfile::tempdir().unwrap();
        Cli { profile: home.path().join("client.json"), home }
    }

    /// GET `path` through the router for `app` (Host `<app>.<domain>`).
    pub fn get_app(&self, app: &str, path: &str) -> std::io::Result<Response> {
        let host = format!("{app}.{}", self.domain);
        http_request(self.router, "GET", path, &host, &[], None)
    }
}

impl Drop for Deisd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The `deis` CLI with a private profile and HOME.
#[derive(Debug)]
pub struct Cli {
    /// Profile file (DEIS_PROFILE).
    pub profile: PathBuf,
    home: tempfile::TempDir,
}

/// Output of one CLI run.
#[derive(Debug)]
pub struct Run {
    /// Exit code.
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Run {
    /// Asserts success and returns stdout.
    pub fn ok(self) -> String {
        assert_eq!(self.code, 0, "deis failed: stdout={} stderr={}", self.stdout, self.stderr);
        self.stdout
    }
    /// Parses stdout as JSON (for `--json`).
    pub fn json(self) -> serde_json::Value {
        let out = self.ok();
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
    }
}

impl Cli {
    /// Runs `deis ARGS`.
    pub fn run(&self, args: &[&str]) -> Run {
        self.run_in(args, None)
    }

    /// Runs `deis ARGS` in directory `dir`.
    pub fn run_in(&self, args: &[&str], dir: Option<&Path>) -> Run {
        let mut cmd = Command::new(binary("deis"));
        cmd.args(args).env("DEIS_PROFILE", &self.profile).env("HOME", self.home.path()).stdin(Stdio::null());
        cmd.env_remove("DEIS_APP");
        if let Some(d) = dir {
            cmd.current_dir(d);
        }
        let Output { status, stdout, stderr } = cmd.output().expect("run deis");
        Run {
            code: status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        }
    }

    /// A `deis ARGS` command with this CLI's profile and HOME, not yet started (for
    /// tests that need their own stdin/stdout plumbing).
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(binary("deis"));
        cmd.args(args).env("DEIS_PROFILE", &self.profile).env("HOME", self.home.path()).env_remove("DEIS_APP");
        cmd
    }

    /// Registers `user` (password `pw-<user>`) and logs in.
    pub fn register(&self, d: &Deisd, user: &str) {
        let url = d.url();
        let pw = format!("--password=pw-{user}");
        let user_arg = format!("--username={user}");
        let email = format!("--email={user}@example.com");
        self.run(&["register", &url, &user_arg, &pw, &email]).ok();
    }

    /// The token saved in the profile.
    pub fn token(&self) -> String {
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&self.profile).unwrap()).unwrap();
        v["token"].as_str().unwrap().to_string()
    }
}

/// A parsed HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers, names lowercased.
    pub headers: BTreeMap<String, String>,
    /// Body as text.
    pub body: String,
}

impl Response {
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// A one-shot HTTP/1.1 request (`Connection: close`), dependency-free.
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    host: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> std::io::Result<Response> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let host = if host.is_empty() { addr.to_string() } else { host.to_string() };
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    let body = body.unwrap_or_default();
    if !body.is_empty() || matches!(method, "POST" | "PUT" | "PATCH") {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    // A server may answer (413) and close before reading a large body: keep the
    // write error only if no response can be read.
    let write_result = s.write_all(body);
    let mut raw = Vec::new();
    let read_result = s.read_to_end(&mut raw);
    match parse_response(&raw) {
        Ok(r) => Ok(r),
        Err(e) => {
            write_result?;
            read_result?;
            Err(e)
        }
    }
}

fn parse_response(raw: &[u8]) -> std::io::Result<Response> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(|| bad("no header end"))?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().ok_or_else(|| bad("empty"))?;
    let status: u16 = status_line.split(' ').nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| bad(status_line))?;
    let mut headers = BTreeMap::new();
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let mut body = raw[split + 4..].to_vec();
    if headers.get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        body = dechunk(&body).ok_or_else(|| bad("bad chunked body"))?;
    }
    Ok(Response { status, headers, body: String::from_utf8_lossy(&body).into_owned() })
}

fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let nl = b.windows(2).position(|w| w == b"\r\n")?;
        let size = usize::from_str_radix(std::str::from_utf8(&b[..nl]).ok()?.split(';').next()?.trim(), 16).ok()?;
        b = &b[nl + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(b.get(..size)?);
        b = b.get(size + 2..)?;
    }
}

/// Process groups of `app`'s units: (pgid, DEIS_UNIT), one entry per group (a unit
/// runs as `sh -c CMD`, so its group holds the shell and the command).
pub fn unit_groups(app: &str) -> Vec<(u32, String)> {
    let mut groups: Vec<(u32, String)> = unit_processes(app)
        .into_iter()
        .filter_map(|(pid, unit)| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let pgid = stat.rsplit_once(')')?.1.split_whitespace().nth(2)?.parse().ok()?;
            Some((pgid, unit))
        })
        .collect();
    groups.sort();
    groups.dedup();
    groups
}

/// Processes whose environment has `DEIS_APP=<app>`: (pid, DEIS_UNIT).
pub fn unit_processes(app: &str) -> Vec<(u32, String)> {
    let mut out = vec![];
    let want = format!("DEIS_APP={app}");
    let Ok(dir) = std::fs::read_dir("/proc") else { return out };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else { continue };
        // Zombies have an empty environ; they are still processes left behind.
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let vars: Vec<&[u8]> = env.split(|b| *b == 0).collect();
        if vars.contains(&want.as_bytes()) {
            let unit = vars
                .iter()
                .find_map(|v| v.strip_prefix(b"DEIS_UNIT="))
                .map(|u| String::from_utf8_lossy(u).into_owned())
                .unwrap_or_default();
            out.push((pid, unit));
        } else if stat.contains(") Z ") && env.is_empty() {
            continue;
        }
    }
    out.sort();
    out
}

/// Zombie processes whose parent is `ppid`.
pub fn zombies_of(ppid: u32) -> Vec<u32> {
    let mut out = vec![];
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        let after = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
        let mut f = after.split_whitespace();
        let state = f.next().unwrap_or("");
        let parent: u32 = f.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        if state == "Z" && parent == ppid {
            out.push(pid);
        }
    }
    out
}

/// A gzipped tarball with raw entry paths (to craft hostile archives).
pub fn raw_tarball(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut tarball = Vec::new();
    for (path, data) in entries {
        let mut header = [0u8; 512];
        header[..path.len()].copy_from_slice(path.as_bytes());
        header[100..107].copy_from_slice(b"0000644");
        header[108..115].copy_from_slice(b"0000000");
        header[116..123].copy_from_slice(b"0000000");
        let size = format!("{:011o}", data.len());
        header[124..135].copy_from_slice(size.as_bytes());
        header[136..147].copy_from_slice(b"00000000000");
        header[156] = b'0';
        header[257..263].copy_from_slice(b"ustar\0");
        header[263..265].copy_from_slice(b"00");
        header[148..156].copy_from_slice(b"        ");
        let sum: u32 = header.iter().map(|b| u32::from(*b)).sum();
        header[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        tarball.extend_from_slice(&header);
        tarball.extend_from_slice(data);
        tarball.resize(tarball.len().div_ceil(512) * 512, 0);
    }
    tarball.resize(tarball.len() + 1024, 0);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tarball).unwrap();
    gz.finish().unwrap()
}

/// Copies the hello example app into a fresh temp dir (so tests can edit it).
pub fn hello_app() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let src = repo_root().join("examples/apps/hello");
    for e in std::fs::read_dir(&src).unwrap().flatten() {
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), dir.path().join(e.file_name())).unwrap();
        }
    }
    dir
}
