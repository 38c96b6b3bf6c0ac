//! Real `git` and OpenSSH for the builder's tests: key pairs from `ssh-keygen`,
//! repositories, and pushes with `GIT_SSH_COMMAND` pointing at a key and port.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// An SSH key pair made by `ssh-keygen` (Ed25519, no passphrase).
#[derive(Debug)]
pub struct KeyPair {
    /// The private key file.
    pub private: PathBuf,
    /// The public key file (`<private>.pub`).
    pub public: PathBuf,
}

impl KeyPair {
    /// Makes `dir/<name>` and `dir/<name>.pub`.
    pub fn generate(dir: &Path, name: &str) -> Self {
        let private = dir.join(name);
        let out = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", &format!("{name}@test"), "-f"])
            .arg(&private)
            .stdin(Stdio::null())
            .output()
            .expect("run ssh-keygen");
        assert!(out.status.success(), "ssh-keygen: {}", String::from_utf8_lossy(&out.stderr));
        Self { public: private.with_extension("pub"), private }
    }

    /// `GIT_SSH_COMMAND` using this key against `port`, trusting any host key.
    pub fn ssh_command(&self, port: u16) -> String {
        format!(
            "ssh -i {} -o IdentitiesOnly=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
             -o LogLevel=ERROR -o BatchMode=yes -p {port}",
            self.private.display()
        )
    }

    /// Runs `ssh git@<builder> ARGS` with this key (no git involved).
    pub fn ssh(&self, builder: SocketAddr, args: &[&str]) -> Run {
        let mut cmd = Command::new("sh");
        let mut line = format!("{} git@{}", self.ssh_command(builder.port()), builder.ip());
        for a in args {
            line.push_str(&format!(" '{a}'"));
        }
        cmd.arg("-c").arg(line).stdin(Stdio::null());
        Run::of(cmd.output().expect("run ssh"))
    }
}

/// Output of a git or ssh run.
#[derive(Debug)]
pub struct Run {
    /// Exit code.
    pub code: i32,
    /// Standard output and standard error together.
    pub output: String,
}

impl Run {
    fn of(o: Output) -> Self {
        Run {
            code: o.status.code().unwrap_or(-1),
            output: format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)),
        }
    }

    /// Asserts success and returns the output.
    pub fn ok(self) -> String {
        assert_eq!(self.code, 0, "failed: {}", self.output);
        self.output
    }

    /// Asserts failure and returns the output.
    pub fn failed(self) -> String {
        assert_ne!(self.code, 0, "unexpectedly succeeded: {}", self.output);
        self.output
    }
}

/// `git ARGS` in `dir`, with `ssh` (if any) as `GIT_SSH_COMMAND` and a fixed identity.
pub fn git(dir: &Path, ssh: Option<&str>, args: &[&str]) -> Run {
    let mut cmd = Command::new("git");
    cmd.args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .env("GIT_AUTHOR_NAME", "Test")
        .env("GIT_AUTHOR_EMAIL", "test@example.com")
        .env("GIT_COMMITTER_NAME", "Test")
        .env("GIT_COMMITTER_EMAIL", "test@example.com")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null");
    if let Some(ssh) = ssh {
        cmd.env("GIT_SSH_COMMAND", ssh);
    }
    Run::of(cmd.output().expect("run git"))
}

/// Makes `dir` a repository on branch `main` with everything in it committed.
pub fn init_and_commit(dir: &Path) {
    git(dir, None, &["init", "--quiet", "--initial-branch", "main"]).ok();
    commit_all(dir, "initial");
}

/// Commits everything in `dir`.
pub fn commit_all(dir: &Path, message: &str) {
    git(dir, None, &["add", "--all"]).ok();
    git(dir, None, &["commit", "--quiet", "--allow-empty", "-m", message]).ok();
}

/// The push URL of `app` on a builder.
pub fn push_url(builder: SocketAddr, app: &str) -> String {
    format!("ssh://git@{}:{}/{app}.git", builder.ip(), builder.port())
}
