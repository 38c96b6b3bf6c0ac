//! The `deis` git remote, as the Workflow CLI sets it up: `ssh://git@<builder>:2222/<app>.git`,
//! the builder host derived from the controller URL (`deis.example.com` →
//! `deis-builder.example.com`; an IP address or `localhost` stays as it is).

use std::path::Path;
use std::process::{Command, Stdio};

use super::{CliError, Ctx, Result};

/// The builder's SSH port.
pub const BUILDER_PORT: u16 = 2222;

/// The host of a controller URL (`http://user@host:8000/x` → `host`), lower-cased.
pub fn controller_host(controller: &str) -> Option<String> {
    let rest = controller.split_once("://").map_or(controller, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match authority.strip_prefix('[') {
        Some(v6) => format!("[{}]", v6.split(']').next()?),
        None => authority.split(':').next()?.to_string(),
    };
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

/// The builder host for a controller host.
pub fn builder_host(controller_host: &str) -> String {
    let is_ip = controller_host.starts_with('[') || controller_host.parse::<std::net::Ipv4Addr>().is_ok();
    if is_ip || controller_host == "localhost" {
        return controller_host.to_string();
    }
    match controller_host.split_once('.') {
        Some((first, rest)) => format!("{first}-builder.{rest}"),
        None => format!("{controller_host}-builder"),
    }
}

/// The git remote URL of `app` for a controller URL.
pub fn remote_url(controller: &str, app: &str) -> Option<String> {
    let host = builder_host(&controller_host(controller)?);
    Some(format!("ssh://git@{host}:{BUILDER_PORT}/{app}.git"))
}

/// The app of a builder remote URL of this controller (`.../hello.git` → `hello`).
pub fn app_of_remote(controller: &str, url: &str) -> Option<String> {
    let host = builder_host(&controller_host(controller)?);
    let rest = url.strip_prefix(&format!("ssh://git@{host}:{BUILDER_PORT}/"))?;
    Some(rest.strip_suffix(".git").unwrap_or(rest).to_string())
}

fn git(dir: Option<&Path>, args: &[&str]) -> std::io::Result<std::process::Output> {
    let mut cmd = Command::new("git");
    cmd.args(args).stdin(Stdio::null());
    if let Some(d) = dir {
        cmd.current_dir(d);
    }
    cmd.output()
}

/// Whether the current directory is inside a git work tree.
pub fn in_repository() -> bool {
    git(None, &["rev-parse", "--is-inside-work-tree"]).is_ok_and(|o| o.status.success())
}

/// The app named by a builder remote of this repository, if any (how the Workflow CLI
/// finds the app without `-a`).
pub fn app_from_remotes(controller: &str) -> Option<String> {
    let out = git(None, &["config", "--get-regexp", r"^remote\..*\.url$"]).ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines().filter_map(|l| l.split_once(' ')).find_map(|(_, url)| app_of_remote(controller, url.trim()))
}

/// Adds remote `name` pointing at `url`; an existing remote with the same URL is fine.
pub fn add_remote(name: &str, url: &str) -> Result {
    if let Ok(out) = git(None, &["remote", "get-url", name])
        && out.status.success()
    {
        let existing = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if existing == url {
            return Ok(());
        }
        return Err(CliError::Failed(format!(
            "git remote {name} already exists ({existing}): remove it with `git remote remove {name}` or pick \
             another name with --remote"
        )));
    }
    let out = git(None, &["remote", "add", name, url])
        .map_err(|e| CliError::Failed(format!("running git: {e} (is git installed?)")))?;
    if !out.status.success() {
        return Err(CliError::Failed(format!(
            "git remote add {name} {url} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// `deis git:remote [-a APP] [--remote NAME]`.
pub fn remote(ctx: &Ctx, name: &str) -> Result {
    let app = ctx.app()?;
    let profile = ctx.profile()?;
    if !in_repository() {
        return Err(CliError::Failed("not in a git repository: run it inside your app's repository".into()));
    }
    let url = remote_url(&profile.controller, app.as_str())
        .ok_or_else(|| CliError::Failed(format!("no host in the controller URL {:?}", profile.controller)))?;
    add_remote(name, &url)?;
    ctx.say(format!("Git remote {name} added: {url}"));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builder_host_follows_the_workflow_cli() {
        assert_eq!(
            remote_url("http://deis.example.com", "hello").unwrap(),
            "ssh://git@deis-builder.example.com:2222/hello.git"
        );
        assert_eq!(
            remote_url("https://u@Deis.Example.com:443/x", "a").unwrap(),
            "ssh://git@deis-builder.example.com:2222/a.git"
        );
        assert_eq!(remote_url("http://127.0.0.1:8000", "a").unwrap(), "ssh://git@127.0.0.1:2222/a.git");
        assert_eq!(remote_url("http://[::1]:8000", "a").unwrap(), "ssh://git@[::1]:2222/a.git");
        assert_eq!(remote_url("localhost:8000", "a").unwrap(), "ssh://git@localhost:2222/a.git");
        assert_eq!(remote_url("http://deis", "a").unwrap(), "ssh://git@deis-builder:2222/a.git");
        assert_eq!(remote_url("http://", "a"), None);
    }

    #[test]
    fn the_app_is_read_back_from_a_remote_of_this_controller_only() {
        let c = "http://deis.example.com";
        assert_eq!(app_of_remote(c, "ssh://git@deis-builder.example.com:2222/hello.git").as_deref(), Some("hello"));
        assert_eq!(app_of_remote(c, "ssh://git@other.example.com:2222/hello.git"), None);
        assert_eq!(app_of_remote(c, "git@github.com:me/hello.git"), None);
    }
}
