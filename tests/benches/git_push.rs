//! `git push` of a 50 MB repository: to the builder of a real `deisd` (a new app each
//! run, push start to the first 200 through the router), next to a plain `git push`
//! of the same repository to a bare repository over OpenSSH on loopback.
//!
//! `cargo build --release --bins && cargo bench -p deis-e2e --bench git_push`
//! (`GIT_PUSH_BENCH_RUNS`, default 5; `GIT_PUSH_BENCH_MB`, default 50). Needs
//! `/usr/sbin/sshd`, `ssh`, `ssh-keygen` and `git`.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use deis_e2e::git::{KeyPair, git, init_and_commit, push_url};
use deis_e2e::*;

/// `size_mb` MB of incompressible files (1 MB each) plus the hello app.
fn big_repository(dir: &Path, size_mb: usize) {
    for e in std::fs::read_dir(repo_root().join("examples/apps/hello")).unwrap().flatten() {
        std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
    }
    std::fs::create_dir(dir.join("assets")).unwrap();
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    for i in 0..size_mb {
        let mut data = Vec::with_capacity(1 << 20);
        while data.len() < 1 << 20 {
            // xorshift: cheap bytes git can't compress
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            data.extend_from_slice(&state.to_le_bytes());
        }
        std::fs::write(dir.join("assets").join(format!("blob{i:03}.bin")), data).unwrap();
    }
    init_and_commit(dir);
}

/// An OpenSSH server on a free loopback port accepting `key` for the current user.
struct Sshd {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Sshd {
    fn start(key: &KeyPair) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let host_key = dir.path().join("host_key");
        let status =
            Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(&host_key).status().unwrap();
        assert!(status.success());
        let authorized = dir.path().join("authorized_keys");
        std::fs::copy(&key.public, &authorized).unwrap();
        let port = free_port();
        let config = dir.path().join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\nStrictModes no\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nPidFile {}/sshd.pid\n\
                 PermitRootLogin prohibit-password\n",
                host_key.display(),
                authorized.display(),
                dir.path().display()
            ),
        )
        .unwrap();
        std::fs::create_dir_all("/run/sshd").ok();
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start /usr/sbin/sshd");
        wait_for(Duration::from_secs(10), "sshd listening", || std::net::TcpStream::connect(("127.0.0.1", port)).ok());
        Sshd { child, port, _dir: dir }
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

fn show(name: &str, v: &mut [Duration]) -> Duration {
    v.sort();
    let median = v[v.len() / 2];
    println!(
        "{name:<44} min {:>8.0} ms  median {:>8.0} ms  max {:>8.0} ms  (n={})",
        v[0].as_secs_f64() * 1e3,
        median.as_secs_f64() * 1e3,
        v[v.len() - 1].as_secs_f64() * 1e3,
        v.len()
    );
    median
}

fn main() {
    let runs: usize = std::env::var("GIT_PUSH_BENCH_RUNS").ok().and_then(|s| s.parse().ok()).unwrap_or(5);
    let size_mb: usize = std::env::var("GIT_PUSH_BENCH_MB").ok().and_then(|s| s.parse().ok()).unwrap_or(50);
    let work = tempfile::tempdir().unwrap();
    let repo = work.path().join("repo");
    std::fs::create_dir(&repo).unwrap();
    big_repository(&repo, size_mb);
    let key = KeyPair::generate(work.path(), "bench");

    let d = Deisd::start();
    let cli = d.cli();
    cli.register(&d, "bench");
    cli.run(&["keys:add", key.public.to_str().unwrap()]).ok();
    let sshd = Sshd::start(&key);
    let user = std::env::var("USER").unwrap_or_else(|_| "root".into());

    let (mut builder, mut plain) = (vec![], vec![]);
    for i in 0..runs {
        // The builder: a new app, push start to the first 200 through the router.
        let app = format!("big{i}");
        cli.run(&["create", &app, "--no-remote"]).ok();
        let ssh_builder = key.ssh_command(d.builder.port());
        let t0 = Instant::now();
        git(&repo, Some(&ssh_builder), &["push", "--quiet", &push_url(d.builder, &app), "main"]).ok();
        wait_for(Duration::from_secs(120), "first 200", || d.get_app(&app, "/").ok().filter(|r| r.status == 200));
        builder.push(t0.elapsed());

        // OpenSSH: the same repository into a fresh bare repository.
        let bare = work.path().join(format!("plain{i}.git"));
        git(work.path(), None, &["init", "--quiet", "--bare", bare.to_str().unwrap()]).ok();
        let ssh_plain = key.ssh_command(sshd.port);
        let url = format!("ssh://{user}@127.0.0.1:{}{}", sshd.port, bare.display());
        let t0 = Instant::now();
        git(&repo, Some(&ssh_plain), &["push", "--quiet", &url, "main"]).ok();
        plain.push(t0.elapsed());
    }
    println!("git push of a {size_mb} MB repository ({runs} runs each, alternating)");
    let b = show("deis builder: push start -> first 200", &mut builder);
    let p = show("OpenSSH + git receive-pack (bare repo)", &mut plain);
    println!("ratio of medians: {:.2}x", b.as_secs_f64() / p.as_secs_f64());
}
