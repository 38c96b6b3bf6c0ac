//! The TTY broker against OpenSSH on loopback, side by side in the same run: keystroke
//! round trip and bulk output.
//!
//! ```sh
//! apt-get install -y openssh-server openssh-client   # scripts/install-deps does this
//! cargo bench -p deis-sdk --bench tty_vs_ssh          # as root (sshd needs it)
//! ```
//!
//! - **deis**: `TtyService::embedded(LocalTtyBroker)` behind `attach_router` on a
//!   loopback port (a 2-worker tokio runtime in this process); the client is
//!   `tty::client::attach` (WebSocket, `v5.channel.k8s.io`) in the same process.
//! - **ssh**: Debian's `sshd` started here on a free loopback port with temp keys
//!   (`sshd -D -e -f <tmp>/sshd_config`), and the `ssh` client as a child process whose
//!   stdin/stdout are pipes to this process (`-tt` forces the remote terminal;
//!   `-F /dev/null`, no ControlMaster, default ciphers: the negotiated one is printed).
//! - **Keystroke round trip**: both run `stty raw -echo; echo READY; exec cat` in a
//!   terminal, so every byte goes through the remote `cat` and back. One byte is sent,
//!   its echo awaited, `BENCH_KEYSTROKES` (default 2000) times per side, in alternating
//!   blocks of 100 (deis, ssh, deis, ...) so both see the same machine load.
//! - **Bulk output**: `head -c <BENCH_BULK_MIB>M /dev/zero` (default 256) with a
//!   terminal (deis `tty=true`, `ssh -tt`) and without (deis pipes, `ssh -T`). Rate =
//!   bytes received by the client from the arrival of its first chunk to that of its
//!   last, so session setup (and the remote shell's start-up) is not counted.
//! - **Session setup**: create + attach + run `true` to its exit status, vs `ssh ... true`
//!   (process spawn, key exchange, auth, exit), median of `BENCH_SETUP_RUNS` (default 10).
//!   sshd runs commands with root's login shell, and Debian's bash reads `~/.bashrc`
//!   under sshd; that start-up is measured separately and also shown subtracted.
//!
//! Without `sshd`/`ssh` installed the ssh columns are skipped with a loud message (and
//! the bench fails when `CI` is set).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use deis_sdk::deis_core::scheduler::Artifact;
use deis_sdk::deis_core::testing::{app_name, process_type};
use deis_sdk::deis_core::tty::token::TokenSigner;
use deis_sdk::deis_core::tty::{LocalTtyBroker, SessionInput, SessionOutput, SessionSpec, TermSize};
use deis_sdk::tty::client::{AttachOptions, RemoteSession, attach};
use deis_sdk::tty::{TtyConfig, TtyService, attach_router};

const SECRET: &[u8] = b"benchmark secret for the tty broker, 32+ bytes";
const ECHO_COMMAND: &str = "stty raw -echo; echo READY; exec cat";
const BLOCK: usize = 100;
const WARMUP: usize = 50;
const SIZE: TermSize = TermSize { cols: 80, rows: 24 };

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// The broker on a loopback port.
struct Deis {
    url: String,
    service: Arc<TtyService>,
    dir: tempfile::TempDir,
}

impl Deis {
    async fn start() -> Self {
        let service = Arc::new(TtyService::embedded(
            Arc::new(LocalTtyBroker::default()),
            TokenSigner::new(SECRET),
            TtyConfig::default(),
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let router = attach_router(service.clone());
        tokio::spawn(async move { axum::serve(listener, router).await.expect("the broker's server failed") });
        Deis { url, service, dir: tempfile::tempdir().expect("temp dir") }
    }

    /// Creates a session for `command` (run with `sh -c`) and attaches to it.
    async fn session(&self, command: &str, tty: bool) -> RemoteSession {
        let spec = SessionSpec {
            app: app_name("bench"),
            proc_type: process_type("web"),
            artifact: Artifact::Source { dir: self.dir.path().to_path_buf() },
            release: 1,
            env: BTreeMap::new(),
            command: vec![command.to_string()],
            tty,
            size: tty.then_some(SIZE),
            user: "bench".into(),
            identity: None,
            limits: Default::default(),
        };
        let ticket = self.service.create_session(spec).expect("create a session");
        let opts = AttachOptions { size: tty.then_some(SIZE), ..AttachOptions::default() };
        attach(&self.url, &ticket, opts).await.expect("attach to the session")
    }
}

/// Reads terminal output of a deis session until `needle` was seen.
async fn deis_wait_for(remote: &mut RemoteSession, needle: &[u8]) {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !seen.windows(needle.len()).any(|w| w == needle) {
        match tokio::time::timeout_at(deadline, remote.output.recv()).await {
            Ok(Some(Ok(SessionOutput::Stdout(b)))) => seen.extend(b),
            other => panic!("deis: waiting for {needle:?}: {other:?}; saw {:?}", String::from_utf8_lossy(&seen)),
        }
    }
}

/// One keystroke through a deis session: send a byte, wait for it to come back.
async fn deis_keystroke(remote: &mut RemoteSession, byte: u8) -> Duration {
    let started = Instant::now();
    remote.input.send(SessionInput::Stdin(vec![byte])).await.expect("deis: session input closed");
    match remote.output.recv().await {
        Some(Ok(SessionOutput::Stdout(b))) if b == [byte] => started.elapsed(),
        other => panic!("deis: expected the echo of {byte}, got {other:?}"),
    }
}

/// What a client received from one session.
#[derive(Debug, Default)]
struct Transfer {
    /// All bytes.
    bytes: u64,
    /// Bytes of the first chunk.
    first_chunk: u64,
    /// Arrival of the first and the last chunk.
    first: Option<Instant>,
    last: Option<Instant>,
}

impl Transfer {
    fn add(&mut self, n: usize) {
        let now = Instant::now();
        if self.first.is_none() {
            self.first = Some(now);
            self.first_chunk = n as u64;
        }
        self.last = Some(now);
        self.bytes += n as u64;
    }

    /// MiB/s from the first chunk's arrival to the last one's (session setup and the
    /// remote shell's start-up excluded).
    fn rate(&self) -> f64 {
        match (self.first, self.last) {
            (Some(a), Some(b)) if b > a => mib_s(self.bytes - self.first_chunk, b - a),
            _ => f64::NAN,
        }
    }
}

/// Runs a deis session to its end; (what arrived, elapsed from create to exit).
async fn deis_drain(deis: &Deis, command: &str, tty: bool) -> (Transfer, Duration) {
    let started = Instant::now();
    let mut remote = deis.session(command, tty).await;
    let mut got = Transfer::default();
    loop {
        match remote.output.recv().await {
            Some(Ok(SessionOutput::Stdout(b) | SessionOutput::Stderr(b))) => got.add(b.len()),
            Some(Ok(SessionOutput::Exit(status))) => {
                assert_eq!(status.code(), 0, "deis: {command} failed");
                break;
            }
            other => panic!("deis: session of {command} ended with {other:?}"),
        }
    }
    (got, started.elapsed())
}

/// sshd on a loopback port, with its temp dir; stopped by PID on drop.
struct Sshd {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
    }
}

fn keygen(path: &Path) {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .stdout(Stdio::null())
        .status()
        .expect("run ssh-keygen");
    assert!(status.success(), "ssh-keygen failed for {}", path.display());
}

fn start_sshd() -> Option<Sshd> {
    let sshd = Path::new("/usr/sbin/sshd");
    let have_client = Command::new("ssh").arg("-V").stderr(Stdio::null()).status().is_ok();
    if !sshd.exists() || !have_client {
        let msg = "OpenSSH (sshd and ssh) is not installed: apt-get install openssh-server openssh-client";
        assert!(std::env::var_os("CI").is_none(), "{msg}");
        eprintln!("\n!!! SKIPPING the ssh side: {msg} !!!\n");
        return None;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path();
    keygen(&d.join("host"));
    keygen(&d.join("client"));
    std::fs::copy(d.join("client.pub"), d.join("authorized_keys")).expect("write authorized_keys");
    // Privilege separation directory (normally made by the service unit).
    std::fs::create_dir_all("/run/sshd").expect("create /run/sshd for sshd");
    let port = deis_test_support::free_port();
    let config = format!(
        "ListenAddress 127.0.0.1\nPort {port}\nHostKey {d}/host\nAuthorizedKeysFile {d}/authorized_keys\n\
         StrictModes no\nPidFile {d}/sshd.pid\nUsePAM no\nPermitRootLogin prohibit-password\n\
         PasswordAuthentication no\nKbdInteractiveAuthentication no\nLogLevel ERROR\n",
        d = d.display()
    );
    std::fs::write(d.join("sshd_config"), config).expect("write sshd_config");
    let child = Command::new(sshd)
        .args(["-D", "-e", "-f"])
        .arg(d.join("sshd_config"))
        .args(["-p", &port.to_string()])
        .stdin(Stdio::null())
        .spawn()
        .expect("start sshd");
    let sshd = Sshd { child, port, dir };
    // sshd writes its PID file once it listens.
    let pid_file = sshd.dir.path().join("sshd.pid");
    deis_test_support::wait_for(Duration::from_secs(10), &format!("sshd to listen on 127.0.0.1:{port}"), || {
        pid_file.exists().then_some(())
    });
    Some(sshd)
}

impl Sshd {
    fn key(&self) -> PathBuf {
        self.dir.path().join("client")
    }

    /// `ssh <options> root@127.0.0.1 [extra...] command`.
    fn command(&self, extra: &[&str], command: &str) -> Command {
        let mut c = Command::new("ssh");
        c.args([
            "-F",
            "/dev/null",
            "-e",
            "none",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
        ])
        .args(["-o", "BatchMode=yes", "-o", "ControlMaster=no", "-o", "ControlPath=none", "-o", "LogLevel=ERROR"])
        .arg("-i")
        .arg(self.key())
        .args(["-p", &self.port.to_string()])
        .args(extra)
        .arg("root@127.0.0.1")
        .arg(command);
        c
    }

    /// The negotiated cipher and key exchange, from `ssh -v`.
    fn negotiated(&self) -> String {
        let out = self.command(&["-v", "-o", "LogLevel=DEBUG1"], "true").stdin(Stdio::null()).output().expect("ssh -v");
        let log = String::from_utf8_lossy(&out.stderr);
        let mut parts: Vec<String> = log
            .lines()
            .filter_map(|l| {
                l.strip_prefix("debug1: kex: algorithm: ")
                    .map(|a| format!("kex {a}"))
                    .or_else(|| l.strip_prefix("debug1: kex: server->client cipher: ").map(|c| format!("cipher {c}")))
            })
            .collect();
        parts.dedup();
        let version = log.lines().find(|l| l.starts_with("OpenSSH_")).unwrap_or("OpenSSH ?").to_string();
        parts.insert(0, version);
        parts.join("; ")
    }
}

/// An interactive `ssh -tt` running the echo command, driven through pipes.
struct SshEcho {
    child: Child,
    stdin: ChildStdin,
    stdout: ChildStdout,
}

impl SshEcho {
    fn start(sshd: &Sshd) -> Self {
        let mut child = sshd
            .command(&["-tt"], ECHO_COMMAND)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start ssh");
        let stdin = child.stdin.take().unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while !seen.windows(6).any(|w| w == b"READY\n") {
            let n = stdout.read(&mut buf).expect("read from ssh");
            assert!(n > 0, "ssh ended before the echo command started: {:?}", String::from_utf8_lossy(&seen));
            seen.extend_from_slice(&buf[..n]);
        }
        SshEcho { child, stdin, stdout }
    }

    fn keystroke(&mut self, byte: u8) -> Duration {
        let started = Instant::now();
        self.stdin.write_all(&[byte]).expect("write to ssh");
        let mut got = [0u8; 1];
        self.stdout.read_exact(&mut got).expect("read the echo from ssh");
        let elapsed = started.elapsed();
        assert_eq!(got[0], byte, "ssh echoed the wrong byte");
        elapsed
    }
}

impl Drop for SshEcho {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `ssh [extra] command` to its end; (what arrived on stdout, elapsed from spawn
/// to the exit of `ssh`).
fn ssh_drain(sshd: &Sshd, extra: &[&str], command: &str) -> (Transfer, Duration) {
    let started = Instant::now();
    let mut child = sshd.command(extra, command).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().expect("ssh");
    let stdin = child.stdin.take();
    let mut stdout = child.stdout.take().unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = Transfer::default();
    loop {
        match stdout.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.add(n),
            Err(e) => panic!("reading from ssh: {e}"),
        }
    }
    let status = child.wait().expect("wait for ssh");
    let elapsed = started.elapsed();
    drop(stdin);
    assert!(status.success(), "ssh {command} failed: {status}");
    (got, elapsed)
}

/// Median time (ms) for root's login shell to run `-c true` the way sshd starts it
/// (Debian's bash reads `~/.bashrc` when `SSH_CLIENT` is set): a cost of the machine's
/// shell set-up, not of ssh, that the ssh setup time includes.
fn login_shell_startup(runs: usize) -> (String, f64) {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let shell = passwd
        .lines()
        .find_map(|l| l.strip_prefix("root:").and_then(|r| r.rsplit(':').next()).map(str::to_string))
        .unwrap_or_else(|| "/bin/sh".into());
    let mut v: Vec<f64> = (0..runs.max(1))
        .map(|_| {
            let started = Instant::now();
            let status = Command::new(&shell)
                .args(["-c", "true"])
                .env("SSH_CLIENT", "127.0.0.1 40000 22")
                .env("SHLVL", "0")
                .current_dir(std::env::var_os("HOME").unwrap_or_else(|| "/".into()))
                .status()
                .expect("run root's shell");
            assert!(status.success(), "{shell} -c true failed");
            us(started.elapsed()) / 1000.0
        })
        .collect();
    v.sort_by(f64::total_cmp);
    (format!("{shell} -c true"), percentile(&v, 0.5))
}

struct Latency {
    p50: f64,
    p99: f64,
    mean: f64,
}

fn latency(mut samples: Vec<f64>) -> Latency {
    samples.sort_by(f64::total_cmp);
    let mean = samples.iter().sum::<f64>() / samples.len() as f64;
    Latency { p50: percentile(&samples, 0.50), p99: percentile(&samples, 0.99), mean }
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn mib_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / (1 << 20) as f64 / d.as_secs_f64()
}

fn main() {
    let keystrokes = env_num("BENCH_KEYSTROKES", 2000) as usize;
    let bulk_mib = env_num("BENCH_BULK_MIB", 256);
    let setup_runs = env_num("BENCH_SETUP_RUNS", 10) as usize;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let deis = rt.block_on(Deis::start());
    let sshd = start_sshd();
    let negotiated = sshd.as_ref().map(Sshd::negotiated);

    // Keystroke round trip, alternating blocks.
    let mut deis_rt = Vec::with_capacity(keystrokes);
    let mut ssh_rt = Vec::with_capacity(keystrokes);
    let mut remote = rt.block_on(async {
        let mut remote = deis.session(ECHO_COMMAND, true).await;
        deis_wait_for(&mut remote, b"READY\n").await;
        remote
    });
    let mut ssh_echo = sshd.as_ref().map(SshEcho::start);
    let byte = |i: usize| b'a' + (i % 26) as u8;
    rt.block_on(async {
        for i in 0..WARMUP {
            deis_keystroke(&mut remote, byte(i)).await;
        }
    });
    if let Some(s) = ssh_echo.as_mut() {
        for i in 0..WARMUP {
            s.keystroke(byte(i));
        }
    }
    let mut done = 0;
    while done < keystrokes {
        let n = BLOCK.min(keystrokes - done);
        rt.block_on(async {
            for i in done..done + n {
                deis_rt.push(us(deis_keystroke(&mut remote, byte(i)).await));
            }
        });
        if let Some(s) = ssh_echo.as_mut() {
            (done..done + n).for_each(|i| ssh_rt.push(us(s.keystroke(byte(i)))));
        }
        done += n;
    }
    drop(ssh_echo);
    drop(remote);
    let deis_lat = latency(deis_rt);
    let ssh_lat = sshd.as_ref().map(|_| latency(ssh_rt));

    // Bulk output.
    let bulk = format!("head -c {bulk_mib}M /dev/zero");
    let expected = bulk_mib << 20;
    let mut bulk_rows = Vec::new();
    for (label, tty, ssh_extra) in [("TTY", true, &["-tt"][..]), ("no TTY (pipes)", false, &["-T"][..])] {
        let ours = rt.block_on(deis_drain(&deis, &bulk, tty)).0;
        let theirs = sshd.as_ref().map(|s| ssh_drain(s, ssh_extra, &bulk).0);
        for (who, t) in [("deis", Some(&ours)), ("ssh", theirs.as_ref())] {
            if let Some(t) = t.filter(|t| t.bytes != expected) {
                eprintln!("warning: {who} {label} received {} bytes, expected {expected}", t.bytes);
            }
        }
        bulk_rows.push((label, ours.rate(), theirs.map(|t| t.rate())));
    }

    // Session setup.
    let mut deis_setup: Vec<f64> =
        (0..setup_runs).map(|_| us(rt.block_on(deis_drain(&deis, "true", false)).1) / 1000.0).collect();
    deis_setup.sort_by(f64::total_cmp);
    let ssh_setup = sshd.as_ref().map(|s| {
        let mut v: Vec<f64> = (0..setup_runs).map(|_| us(ssh_drain(s, &["-T"], "true").1) / 1000.0).collect();
        v.sort_by(f64::total_cmp);
        percentile(&v, 0.5)
    });
    let ssh_shell = sshd.as_ref().map(|_| login_shell_startup(setup_runs));
    drop(sshd);
    rt.shutdown_timeout(Duration::from_secs(2));

    let cores = std::thread::available_parallelism().map_or(0, |c| c.get());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load = load.split_whitespace().take(3).collect::<Vec<_>>().join(" ");
    println!("\n{cores} cores, load average {load}; deis: embedded TtyService + LocalTtyBroker, client in process");
    println!("(WebSocket v5.channel.k8s.io); ssh: {}", negotiated.as_deref().unwrap_or("not installed"));
    println!("keystrokes: {keystrokes} per side in alternating blocks of {BLOCK}, remote `{ECHO_COMMAND}` in a TTY");
    println!("bulk: `{bulk}`; rate = bytes received by the client from its first chunk to its last (setup excluded)\n");
    let ratio = |a: f64, b: Option<f64>| b.map_or("-".to_string(), |b| format!("{:.2}x", a / b));
    let opt = |v: Option<f64>, unit: &str| v.map_or("-".to_string(), |v| format!("{v:.1} {unit}"));
    println!("| measure | deis | ssh | deis/ssh | better |");
    println!("|---|---:|---:|---:|---|");
    for (name, d, s) in [
        ("keystroke round trip p50", deis_lat.p50, ssh_lat.as_ref().map(|l| l.p50)),
        ("keystroke round trip p99", deis_lat.p99, ssh_lat.as_ref().map(|l| l.p99)),
        ("keystroke round trip mean", deis_lat.mean, ssh_lat.as_ref().map(|l| l.mean)),
    ] {
        println!("| {name} | {d:.1} µs | {} | {} | lower |", opt(s, "µs"), ratio(d, s));
    }
    for (label, d, s) in &bulk_rows {
        println!("| bulk output, {label} | {d:.1} MiB/s | {} | {} | higher |", opt(*s, "MiB/s"), ratio(*d, *s));
    }
    let d = percentile(&deis_setup, 0.5);
    println!(
        "| session setup + `true` (median of {setup_runs}) | {d:.1} ms | {} | {} | lower |",
        opt(ssh_setup, "ms"),
        ratio(d, ssh_setup)
    );
    if let (Some(total), Some((shell, ms))) = (ssh_setup, &ssh_shell) {
        let without = total - ms;
        println!(
            "| same, ssh minus root's shell start-up (`{shell}`: {ms:.1} ms) | {d:.1} ms | {without:.1} ms | {} | lower |",
            ratio(d, Some(without))
        );
    }
}
