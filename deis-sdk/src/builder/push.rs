//! One push or fetch: the app's bare repository, a real `git receive-pack` (or
//! `upload-pack`) wired to the SSH channel, and for a push the build its
//! `pre-receive` hook asks for (see [`hook`](super::hook)).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use deis_core::artifact::check_archive_with;
use deis_core::controller::{BuildInput, Controller, ControllerError};
use deis_core::model::UnitState;
use deis_core::{AppName, User};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::unix::pipe;

use super::BuilderConfig;
use super::command::{GitCommand, GitService};
use super::hook::{self, RefUpdate};

/// What runs pushes: the repositories, their locks, and the controller builds go to.
#[derive(Debug)]
pub(crate) struct Pushes {
    controller: Arc<Controller>,
    repos: PathBuf,
    work: PathBuf,
    config: BuilderConfig,
    /// One lock per app pushed to: pushes to an app run one after the other.
    locks: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// What the client sends (a channel's data).
pub(crate) trait Input: AsyncRead + Unpin + Send {}
impl<T: AsyncRead + Unpin + Send> Input for T {}

/// Where the client reads (a channel's data or its stderr).
pub(crate) trait Output: AsyncWrite + Unpin + Send {}
impl<T: AsyncWrite + Unpin + Send> Output for T {}

/// The client's ends of a channel: what it sends, its stdout and its stderr.
pub(crate) struct ClientIo<R, W, E> {
    pub input: R,
    pub output: W,
    pub errors: E,
}

impl Pushes {
    pub(crate) fn new(controller: Arc<Controller>, data_dir: &Path, config: BuilderConfig) -> Self {
        Self {
            controller,
            repos: data_dir.join("repos"),
            work: data_dir.join("builder").join("pushes"),
            config,
            locks: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// Serves `command` for `user` on the channel; returns the exit status.
    pub(crate) async fn serve<R: Input, W: Output, E: Output>(
        &self,
        user: &User,
        command: &GitCommand,
        io: ClientIo<R, W, E>,
    ) -> u32 {
        let ClientIo { input, output, mut errors } = io;
        let result = match self.controller.app(user, &command.app).await {
            Ok(_) => match command.service {
                GitService::ReceivePack => self.receive(user, &command.app, input, output, &mut errors).await,
                GitService::UploadPack => self.upload(&command.app, input, output, &mut errors).await,
            },
            Err(ControllerError::NotFound { .. }) => {
                Err(format!("app {} does not exist: create it with `deis create {}`", command.app, command.app))
            }
            Err(ControllerError::Forbidden) => Err(format!(
                "{} may not push to {}: only its owner, collaborators and admins may",
                user.username, command.app
            )),
            Err(e) => Err(format!("looking up {}: {e}", command.app)),
        };
        match result {
            Ok(code) => code,
            Err(message) => {
                tracing::info!(user = %user.username, app = %command.app, %message, "builder refused");
                let _ = errors.write_all(format!("error: {message}\n").as_bytes()).await;
                let _ = errors.flush().await;
                1
            }
        }
    }

    fn repo(&self, app: &AppName) -> PathBuf {
        self.repos.join(format!("{app}.git"))
    }

    /// A fetch: `git upload-pack` on the app's repository.
    async fn upload<R: Input, W: Output, E: Output>(
        &self,
        app: &AppName,
        input: R,
        output: W,
        errors: &mut E,
    ) -> Result<u32, String> {
        let repo = self.repo(app);
        if !repo.join("HEAD").exists() {
            return Err(format!("nothing was pushed to {app} yet"));
        }
        let mut git = git_service(GitService::UploadPack, &repo);
        run_git(&mut git, input, output, errors).await
    }

    /// A push: one at a time per app, into the app's repository, built by the hook.
    async fn receive<R: Input, W: Output, E: Output>(
        &self,
        user: &User,
        app: &AppName,
        input: R,
        output: W,
        errors: &mut E,
    ) -> Result<u32, String> {
        let lock = self.locks.lock().expect("push locks").entry(app.to_string()).or_default().clone();
        let _turn = match lock.clone().try_lock_owned() {
            Ok(turn) => turn,
            Err(_) => {
                let _ = errors.write_all(format!("waiting for another push to {app} to finish...\n").as_bytes()).await;
                lock.lock_owned().await
            }
        };
        let repo = self.repo(app);
        self.prepare_repo(&repo).await.map_err(|e| format!("preparing the repository of {app}: {e}"))?;
        let push = PushDir::create(&self.work).await.map_err(|e| format!("preparing the push: {e}"))?;
        let mut git = git_service(GitService::ReceivePack, &repo);
        git.env("DEIS_BUILDER_PUSH", &push.path);
        let (to_builder, from_builder) = push.open().map_err(|e| format!("preparing the push: {e}"))?;
        let code = {
            // The conversation never ends by itself (it keeps the pipes open for the
            // hook): git's exit ends the push.
            let conversation = self.converse(user, app, &repo, &push.path, to_builder, from_builder);
            tokio::select! {
                code = run_git(&mut git, input, output, errors) => code,
                never = conversation => match never {},
            }
        };
        push.remove().await;
        code
    }

    /// Creates the repository on first use; (re)installs the hook and the settings.
    async fn prepare_repo(&self, repo: &Path) -> std::io::Result<()> {
        if !repo.join("HEAD").exists() {
            tokio::fs::create_dir_all(&self.repos).await?;
            let status = tokio::process::Command::new("git")
                .args(["init", "--quiet", "--bare", "--initial-branch", "main"])
                .arg(repo)
                .stdin(Stdio::null())
                .status()
                .await?;
            if !status.success() {
                return Err(std::io::Error::other(format!("`git init --bare` exited with {status}")));
            }
        }
        let max = self.config.max_push_bytes.to_string();
        for (key, value) in [("receive.maxInputSize", max.as_str()), ("receive.denyDeletes", "true")] {
            tokio::process::Command::new("git")
                .arg("--git-dir")
                .arg(repo)
                .args(["config", key, value])
                .status()
                .await?;
        }
        let hook = repo.join("hooks").join("pre-receive");
        tokio::fs::create_dir_all(repo.join("hooks")).await?;
        tokio::fs::write(&hook, hook::PRE_RECEIVE).await?;
        use std::os::unix::fs::PermissionsExt;
        tokio::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).await
    }

    /// Talks to the hook: checks the ref updates, has the commit archived, builds it,
    /// and tells the hook the verdict.
    async fn converse(
        &self,
        user: &User,
        app: &AppName,
        repo: &Path,
        push_dir: &Path,
        to_builder: pipe::Receiver,
        mut from_builder: pipe::Sender,
    ) -> std::convert::Infallible {
        let mut to_builder = BufReader::new(to_builder);
        let verdict = match hook::read_updates(&mut to_builder).await {
            Ok(updates) => self.build(user, app, repo, push_dir, &updates, &mut to_builder, &mut from_builder).await,
            Err(e) => Err(e),
        };
        let end = match verdict {
            Ok(()) => "exit 0\n".to_string(),
            Err(message) => {
                tracing::info!(user = %user.username, %app, %message, "push rejected");
                format!("{}exit 1\n", hook::say(&format!("error: {message}")))
            }
        };
        let _ = from_builder.write_all(end.as_bytes()).await;
        // Keep the pipes open until git ends: the hook reads what is buffered.
        std::future::pending().await
    }

    #[allow(clippy::too_many_arguments)]
    async fn build(
        &self,
        user: &User,
        app: &AppName,
        repo: &Path,
        push_dir: &Path,
        updates: &[RefUpdate],
        to_builder: &mut BufReader<pipe::Receiver>,
        from_builder: &mut pipe::Sender,
    ) -> Result<(), String> {
        let say = |text: String| hook::say(&text);
        let deployed = deployed_ref(repo).await;
        let update = choose_update(updates, &deployed, repo_is_empty(repo).await)?;
        let short = &update.new[..7];
        send(from_builder, &say(format!("-----> Building {app} at {short} ({})", user.username))).await?;
        send(from_builder, &format!("archive {}\n", update.new)).await?;
        match hook::read_line(to_builder).await {
            Ok(Some(l)) if l == "archived" => {}
            _ => return Err(format!("git could not archive {short}")),
        }
        let source = push_dir.join("source.tar.gz");
        let size = tokio::fs::metadata(&source).await.map(|m| m.len()).unwrap_or(0);
        if size > self.config.max_source_bytes as u64 {
            return Err(format!(
                "the source of {short} is {} MiB packed; the builder takes at most {} MiB",
                size >> 20,
                self.config.max_source_bytes >> 20
            ));
        }
        let bytes = tokio::fs::read(&source).await.map_err(|e| format!("reading the archive of {short}: {e}"))?;
        let input = self.build_input(app, short, bytes, from_builder).await?;
        let outcome = self.controller.create_build(user, app, input).await.map_err(|e| format!("build failed: {e}"))?;
        if let Some(w) = outcome.warning {
            return Err(format!("v{} could not be deployed: {w}", outcome.release.version));
        }
        let types: Vec<String> = outcome.build.procfile.keys().map(ToString::to_string).collect();
        let version = outcome.release.version;
        let declared = if types.is_empty() {
            "       No Procfile: process type cmd runs the image's command".to_string()
        } else {
            format!("       Procfile declares types -> {}", types.join(", "))
        };
        send(from_builder, &say(declared)).await?;
        send(from_builder, &say(format!("-----> Released v{version}, launching..."))).await?;
        let launched = self.wait_units(user, app, version).await;
        let url = self.app_url(app);
        let lines = match launched {
            Ok(()) => format!("       done, v{version}\n-----> {app} deployed to {url}"),
            Err(why) => format!("       v{version} was released, but {why}: see `deis ps -a {app}`\n       {url}"),
        };
        send(from_builder, &say(lines)).await?;
        if deployed.as_deref() != Some(update.name.as_str()) {
            // A first push of `master`: the repository's default branch follows.
            tokio::fs::write(repo.join("HEAD"), format!("ref: {}\n", update.name))
                .await
                .map_err(|e| format!("setting the default branch: {e}"))?;
        }
        tracing::info!(user = %user.username, %app, commit = %update.new, version, "push built and released");
        Ok(())
    }

    /// What to build from the commit's archive: its source (a Procfile build), or, when
    /// it has a `Dockerfile` and this builder builds images, the image built from it.
    /// A Dockerfile-only tree on a builder that can't build images is refused.
    async fn build_input(
        &self,
        app: &AppName,
        short: &str,
        bytes: Vec<u8>,
        from_builder: &mut pipe::Sender,
    ) -> Result<BuildInput, String> {
        let limits = *self.controller.artifacts().limits();
        let (checked, bytes) = tokio::task::spawn_blocking(move || (check_archive_with(&bytes, &limits), bytes))
            .await
            .map_err(|e| format!("checking the archive of {short}: {e}"))?;
        // An archive the check refuses is refused again, with its reason, as a source build.
        let Ok(summary) = checked else { return Ok(BuildInput::Source(bytes)) };
        if !summary.dockerfile {
            return Ok(BuildInput::Source(bytes));
        }
        #[cfg(all(feature = "docker", feature = "registry"))]
        if let Some(images) = &self.config.dockerfile_builds {
            let procfile = match summary.procfile {
                Some(_) => deis_core::artifact::parse_procfile(&summary).map_err(|e| format!("build failed: {e}"))?,
                None => Default::default(),
            };
            send(from_builder, &hook::say(&format!("-----> Building the Dockerfile of {app} at {short}"))).await?;
            let image = images.build(app, short, bytes, from_builder).await?;
            return Ok(BuildInput::Image { image, procfile });
        }
        let _ = from_builder;
        if summary.procfile.is_none() {
            return Err(format!(
                "{app} has a Dockerfile but no Procfile, and this platform builds Dockerfiles only when its \
                 scheduler runs images and it has a registry (deisd --scheduler docker|swarm --registry URL|embedded); \
                 add a Procfile to build the source instead"
            ));
        }
        Ok(BuildInput::Source(bytes))
    }

    /// Waits until the release's units are up (as `deis deploy` does), for up to the
    /// configured launch timeout.
    async fn wait_units(&self, user: &User, app: &AppName, version: u64) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + self.config.launch_timeout;
        loop {
            let want = self.controller.app(user, app).await.map(|a| a.structure).unwrap_or_default();
            let units = self.controller.units(user, app).await.unwrap_or_default();
            let up = want.iter().all(|(ty, n)| {
                units.iter().filter(|u| &u.proc_type == ty && u.release == version && u.state == UnitState::Up).count()
                    >= *n as usize
            });
            if up {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!("its units were not up after {:?}", self.config.launch_timeout));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn app_url(&self, app: &AppName) -> String {
        let domain = &self.controller.settings().domain;
        match self.config.router_port {
            Some(80) | None => format!("http://{app}.{domain}"),
            Some(port) => format!("http://{app}.{domain}:{port}"),
        }
    }
}

/// The branch that is deployed: the repository's `HEAD` (`refs/heads/main` unless a
/// first push of `master` made it that).
async fn deployed_ref(repo: &Path) -> Option<String> {
    let head = tokio::fs::read_to_string(repo.join("HEAD")).await.ok()?;
    head.trim().strip_prefix("ref: ").map(str::to_string)
}

/// No branch has been pushed yet.
async fn repo_is_empty(repo: &Path) -> bool {
    let heads = tokio::fs::read_dir(repo.join("refs").join("heads")).await;
    let loose_empty = match heads {
        Ok(mut dir) => dir.next_entry().await.ok().flatten().is_none(),
        Err(_) => true,
    };
    loose_empty && !tokio::fs::try_exists(repo.join("packed-refs")).await.unwrap_or(false)
}

/// The one update to build: of the deployed branch, or (first push) of `master`.
fn choose_update(updates: &[RefUpdate], deployed: &Option<String>, empty: bool) -> Result<RefUpdate, String> {
    let deployed = deployed.as_deref().unwrap_or("refs/heads/main");
    let branch = deployed.strip_prefix("refs/heads/").unwrap_or(deployed);
    let acceptable = |name: &str| name == deployed || (empty && name == "refs/heads/master");
    if let Some(other) = updates.iter().find(|u| !acceptable(&u.name)) {
        return Err(format!("{} is not deployed: only {branch} is; push it with `git push deis {branch}`", other.name));
    }
    let [update] = updates else {
        return Err(format!("push one branch ({branch}) at a time"));
    };
    if update.deletes() {
        return Err(format!("{branch} can't be deleted; destroy the app with `deis destroy`"));
    }
    Ok(update.clone())
}

async fn send(pipe: &mut pipe::Sender, text: &str) -> Result<(), String> {
    pipe.write_all(text.as_bytes()).await.map_err(|e| format!("talking to the git hook: {e}"))
}

fn git_service(service: GitService, repo: &Path) -> tokio::process::Command {
    let mut git = tokio::process::Command::new("git");
    git.arg(service.subcommand())
        .arg(repo)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_remove("GIT_DIR")
        .kill_on_drop(true);
    git
}

/// Runs git with the client's channel as its stdin, stdout and stderr; its exit status.
async fn run_git<R: Input, W: Output, E: Output>(
    git: &mut tokio::process::Command,
    mut input: R,
    mut output: W,
    errors: &mut E,
) -> Result<u32, String> {
    let mut child = git.spawn().map_err(|e| format!("starting git: {e} (is git installed on the builder?)"))?;
    let (Some(mut stdin), Some(mut stdout), Some(mut stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err("starting git: no pipes".into());
    };
    let feed = async {
        let _ = tokio::io::copy(&mut input, &mut stdin).await;
        drop(stdin);
    };
    let out = async {
        let _ = tokio::io::copy(&mut stdout, &mut output).await;
        let _ = output.flush().await;
    };
    let err = async {
        let mut buf = [0u8; 8192];
        while let Ok(n @ 1..) = stderr.read(&mut buf).await {
            if errors.write_all(&buf[..n]).await.is_err() || errors.flush().await.is_err() {
                break;
            }
        }
    };
    // The client's input may stay open after git is done: git's output decides the end.
    let outputs = async { tokio::join!(out, err) };
    let (mut feed, mut outputs) = (std::pin::pin!(feed), std::pin::pin!(outputs));
    tokio::select! {
        _ = &mut outputs => {}
        () = &mut feed => { outputs.await; }
    }
    let status = child.wait().await.map_err(|e| format!("waiting for git: {e}"))?;
    Ok(status.code().map_or(1, |c| c as u32))
}

/// The private directory of one push: the two pipes to its hook and the archive.
struct PushDir {
    path: PathBuf,
}

impl PushDir {
    async fn create(work: &Path) -> std::io::Result<Self> {
        use std::os::unix::fs::DirBuilderExt;
        tokio::fs::create_dir_all(work).await?;
        let path = work.join(uuid::Uuid::new_v4().simple().to_string());
        std::fs::DirBuilder::new().mode(0o700).create(&path)?;
        deis_core::sys::fifo::create(&path.join("to-builder"))?;
        deis_core::sys::fifo::create(&path.join("from-builder"))?;
        Ok(Self { path })
    }

    /// Opens both pipes read-write, so neither side sees an end of file while the
    /// other has yet to open its end.
    fn open(&self) -> std::io::Result<(pipe::Receiver, pipe::Sender)> {
        let to = pipe::OpenOptions::new().read_write(true).open_receiver(self.path.join("to-builder"))?;
        let from = pipe::OpenOptions::new().read_write(true).open_sender(self.path.join("from-builder"))?;
        Ok((to, from))
    }

    async fn remove(self) {
        let _ = tokio::fs::remove_dir_all(&self.path).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "1111111111111111111111111111111111111111";
    const Z: &str = "0000000000000000000000000000000000000000";

    fn update(name: &str, new: &str) -> RefUpdate {
        RefUpdate { old: Z.into(), new: new.into(), name: name.into() }
    }

    #[test]
    fn only_the_deployed_branch_is_built() {
        let main = Some("refs/heads/main".to_string());
        assert_eq!(choose_update(&[update("refs/heads/main", A)], &main, false).unwrap().new, A);
        let e = choose_update(&[update("refs/heads/dev", A)], &main, false).unwrap_err();
        assert!(e.contains("only main is; push it with `git push deis main`"), "{e}");
        let e = choose_update(&[update("refs/tags/v1", A)], &main, false).unwrap_err();
        assert!(e.contains("refs/tags/v1 is not deployed"), "{e}");
        let e = choose_update(&[update("refs/heads/main", Z)], &main, false).unwrap_err();
        assert!(e.contains("can't be deleted"), "{e}");
        // `master` on a first push (the Workflow habit), not once main is deployed.
        assert!(choose_update(&[update("refs/heads/master", A)], &main, true).is_ok());
        assert!(choose_update(&[update("refs/heads/master", A)], &main, false).is_err());
        let master = Some("refs/heads/master".to_string());
        assert!(choose_update(&[update("refs/heads/master", A)], &master, false).is_ok());
        let e = choose_update(&[update("refs/heads/main", A)], &master, false).unwrap_err();
        assert!(e.contains("git push deis master"), "{e}");
        let e =
            choose_update(&[update("refs/heads/main", A), update("refs/heads/master", A)], &main, true).unwrap_err();
        assert!(e.contains("one branch"), "{e}");
    }
}
