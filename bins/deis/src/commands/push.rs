//! `deis push IMAGE`: an image from this machine to the platform registry, then a
//! build and a release of it.

use std::collections::{BTreeMap, HashMap};
use std::io::IsTerminal;
use std::path::Path;
use std::sync::{Arc, Mutex};

use deis_core::ProcessType;
use deis_sdk::client::{Client, ClientError};
use deis_sdk::registry::image::{Blob, EngineExportError, LocalImage};
use deis_sdk::registry::manifest::OCI_MANIFEST;
use deis_sdk::registry::push::{BlobOutcome, PushProgress, PushReport, PushTarget, push_image};
use deis_sdk::registry::{PushError, RegistryAddress, RegistryClient, RegistryLogin};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde::Deserialize;

use super::{CliError, Ctx, Result, done_with};

/// What `GET /v2/apps/<app>/push/` answers.
#[derive(Debug, Deserialize)]
struct Grant {
    registry: String,
    repository: String,
    username: Option<String>,
    password: Option<String>,
    /// A token for this push (when the registry takes the platform's tokens).
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    mount_from: Vec<String>,
}

/// `deis push IMAGE [--procfile TEXT]`.
pub async fn push(ctx: &Ctx, image: &str, procfile: Option<BTreeMap<ProcessType, String>>) -> Result {
    let app = ctx.app()?;
    let (client, _) = ctx.client()?;
    let grant = client.get_json(&format!("/v2/apps/{app}/push/")).await.map_err(|e| match e {
        // The route itself is missing (an unknown app says so in other words).
        ClientError::Api { status: 404, ref message, .. } if message == "Not found." => CliError::Failed(
            "this platform takes no pushes: its deisd runs without a registry (start it with --registry URL or \
             --registry embedded)"
                .into(),
        ),
        other => other.into(),
    })?;
    let grant: Grant = serde_json::from_value(grant)
        .map_err(|e| CliError::Failed(format!("the controller's answer to the push request is not valid: {e}")))?;
    let address = RegistryAddress::parse(&grant.registry).map_err(CliError::Failed)?;
    let login = match (grant.username, grant.password) {
        (Some(username), Some(password)) => Some(RegistryLogin { username, password }),
        _ => None,
    };
    let registry = match grant.token {
        Some(token) => RegistryClient::with_token(address, token),
        None => RegistryClient::new(address, login),
    };
    let target = PushTarget { client: registry, repository: grant.repository, mount_from: grant.mount_from };
    let started = std::time::Instant::now();
    let progress: Arc<dyn PushProgress> = Arc::new(Bars::new(!ctx.json && std::io::stderr().is_terminal()));
    let path = Path::new(image);
    let report = if path.exists() {
        let local = read_path(path).await?;
        announce(ctx, image, &local, &target);
        push_image(&local, &target, progress).await.map_err(|e| CliError::Failed(e.to_string()))?
    } else {
        push_from_engine(ctx, image, &target, progress).await?
    };
    let uploaded = report.blobs.iter().filter(|(_, o)| *o == BlobOutcome::Uploaded).count();
    ctx.say(format!(
        "Pushed {} in {:.1}s ({uploaded} of {} blobs uploaded)",
        report.reference,
        started.elapsed().as_secs_f64(),
        report.blobs.len()
    ));
    ctx.progress("Creating build... ");
    let mut body = serde_json::json!({ "digest": report.digest });
    if let Some(p) = procfile.filter(|p| !p.is_empty()) {
        body["procfile"] = serde_json::to_value(p).map_err(|e| CliError::Failed(e.to_string()))?;
    }
    let build = client.post_json(&format!("/v2/apps/{app}/push/"), &body).await.inspect_err(|_| ctx.say(""))?;
    let version = latest_release(&client, &app).await;
    ctx.say(done_with(version));
    if let Some(w) = build.get("warning").and_then(|w| w.as_str()) {
        ctx.warn(w);
    }
    ctx.emit(&build)?;
    Ok(())
}

pub(super) async fn latest_release(client: &Client, app: &str) -> Option<u64> {
    client.releases_list(app).await.ok()?.iter().map(|r| r.version).max()
}

fn announce(ctx: &Ctx, image: &str, local: &LocalImage, target: &PushTarget) {
    let mib = local.size() as f64 / f64::from(1 << 20);
    let (layers, host, repo) = (local.layers.len(), target.client.host(), &target.repository);
    ctx.say(format!("Pushing {image} ({mib:.1} MiB in {layers} layers) to {host}/{repo}..."));
}

/// An OCI layout directory or a docker-archive file.
async fn read_path(path: &Path) -> Result<LocalImage> {
    let (owned, shown) = (path.to_path_buf(), path.display().to_string());
    tokio::task::spawn_blocking(move || LocalImage::open(&owned))
        .await
        .map_err(|e| CliError::Failed(e.to_string()))?
        .map_err(|e| CliError::Failed(format!("{shown}: {e}")))
}

/// Where the manifests of images pushed from the engine are remembered, by image id
/// (the digest of the image's config): pushing one of those again needs no export
/// when the registry has every blob, as `docker push` remembers what it pushed.
fn manifest_cache(id: &str) -> Option<std::path::PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))?;
    let hex = id.strip_prefix("sha256:")?;
    hex.chars().all(|c| c.is_ascii_hexdigit()).then(|| base.join("deis/manifests").join(hex))
}

/// An image of the local Docker engine (exported as `docker save` does, unless its
/// manifest is remembered and the registry has all its blobs).
async fn push_from_engine(
    ctx: &Ctx,
    image: &str,
    target: &PushTarget,
    progress: Arc<dyn PushProgress>,
) -> Result<PushReport> {
    let unreachable = |e: &dyn std::fmt::Display| {
        CliError::Failed(format!("{image} is not a file or directory, and the local Docker engine: {e}"))
    };
    let docker = bollard::Docker::connect_with_defaults().map_err(|e| unreachable(&e))?;
    let id = docker.inspect_image(image).await.map_err(|e| unreachable(&e))?.id.unwrap_or_default();
    let cache = manifest_cache(&id);
    let remembered = cache
        .as_ref()
        .and_then(|c| std::fs::read(c).ok())
        .and_then(|m| LocalImage::from_manifest(m, OCI_MANIFEST).ok());
    let announced = remembered.is_some();
    if let Some(known) = remembered {
        announce(ctx, image, &known, target);
        match push_image(&known, target, progress.clone()).await {
            Ok(report) => return Ok(report),
            // A blob the registry lacks: export the image after all.
            Err(PushError::Read { .. }) => {}
            Err(e) => return Err(CliError::Failed(e.to_string())),
        }
    }
    let local = export(&docker, image).await?;
    if !announced {
        announce(ctx, image, &local, target);
    }
    let report = push_image(&local, target, progress).await.map_err(|e| CliError::Failed(e.to_string()))?;
    if let Some(c) = cache {
        // Only a cache: a failure to write it costs the next push an export.
        let _ = std::fs::create_dir_all(c.parent().unwrap_or(Path::new(".")))
            .and_then(|()| std::fs::write(&c, &local.manifest));
    }
    Ok(report)
}

/// `docker save IMAGE` into a temporary file, read as a docker-archive.
async fn export(docker: &bollard::Docker, image: &str) -> Result<LocalImage> {
    deis_sdk::registry::image::export_from_engine(docker, image).await.map_err(|e| match e {
        EngineExportError::Engine(why) => CliError::Failed(format!(
            "{image} is not a file or directory, and the local Docker engine could not save it: {why}"
        )),
        EngineExportError::Image(e) => CliError::Failed(format!("{image} from the Docker engine: {e}")),
        other => CliError::Failed(other.to_string()),
    })
}

/// A bar per blob on a terminal; one line per finished blob otherwise.
struct Bars {
    multi: Option<MultiProgress>,
    bars: Mutex<HashMap<String, ProgressBar>>,
}

impl Bars {
    fn new(terminal: bool) -> Self {
        Self { multi: terminal.then(MultiProgress::new), bars: Mutex::default() }
    }
}

fn short(blob: &Blob) -> String {
    blob.digest().trim_start_matches("sha256:").chars().take(12).collect()
}

impl PushProgress for Bars {
    fn started(&self, blob: &Blob) {
        let Some(multi) = &self.multi else { return };
        let style = ProgressStyle::with_template("{prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        let bar = multi.add(ProgressBar::new(blob.size()).with_style(style).with_prefix(short(blob)));
        self.bars.lock().unwrap_or_else(|e| e.into_inner()).insert(blob.digest().to_string(), bar);
    }

    fn sent(&self, blob: &Blob, bytes: u64) {
        if let Some(bar) = self.bars.lock().unwrap_or_else(|e| e.into_inner()).get(blob.digest()) {
            bar.inc(bytes);
        }
    }

    fn finished(&self, blob: &Blob, outcome: &BlobOutcome) {
        let what = match outcome {
            BlobOutcome::Existed => "already there".to_string(),
            BlobOutcome::Mounted(from) => format!("mounted from {from}"),
            BlobOutcome::Uploaded => "pushed".to_string(),
        };
        match self.bars.lock().unwrap_or_else(|e| e.into_inner()).get(blob.digest()) {
            Some(bar) => {
                bar.set_position(blob.size());
                bar.finish_with_message(what);
            }
            None => eprintln!("{}: {what} ({} bytes)", short(blob), blob.size()),
        }
    }
}
