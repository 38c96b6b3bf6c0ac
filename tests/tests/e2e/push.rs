//! End-to-end `deis push` and `deis pull` from private registries: the real `deisd`
//! on the Docker scheduler (a private dockerd), a real `docker-registry` with and
//! without htpasswd auth, the real `deis` CLI; images built offline.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use deis_e2e::*;
use deis_test_support::docker::DockerEngine;
use deis_test_support::image::{busybox_layer, docker_archive, layer, oci_layout, sha256};
use deis_test_support::registry::DockerRegistry;
use deis_test_support::service::Service;
use serde_json::Value;

const T: Duration = Duration::from_secs(120);
/// busybox's httpd serving `/www` on the unit's port.
const HTTPD: &str = "web: httpd -f -p $PORT -h /www";

fn docker_flags(engine: &DockerEngine) -> Vec<String> {
    vec!["--scheduler".into(), "docker".into(), "--docker-host".into(), format!("unix://{}", engine.socket_path())]
}

fn start(engine: &DockerEngine, extra: &[&str]) -> (Deisd, Cli) {
    let mut flags = docker_flags(engine);
    flags.extend(extra.iter().map(|s| s.to_string()));
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    daemon_with_user(&flags)
}

/// An OCI layout: busybox, `/www/index.html` holding `page` bytes of `fill`, and
/// `extra` more layers; returns its dir.
fn web_image(fill: u8, extra: Vec<Vec<u8>>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut layers = vec![busybox_layer(), layer("www/index.html", 16, fill)];
    layers.extend(extra);
    oci_layout(dir.path(), &layers, "sleep 1000");
    dir
}

fn list(cli: &Cli, what: &str, app: &str) -> Vec<Value> {
    match cli.run(&[what, "-a", app, "--json"]).json() {
        Value::Array(a) => a,
        v => v["results"].as_array().cloned().unwrap_or_default(),
    }
}

fn serves(d: &Deisd, app: &str, body: &str) {
    let r = wait_for(T, &format!("{app} serving through the router"), || {
        d.get_app(app, "/index.html").ok().filter(|r| r.status == 200)
    });
    assert_eq!(r.body.trim(), body);
}

#[test]
fn a_pushed_image_runs_on_docker_behind_the_router_and_a_second_push_uploads_nothing() {
    let Some(engine) = DockerEngine::shared() else { return };
    let Some(registry) = DockerRegistry::start() else { return };
    let (d, cli) = start(engine, &["--registry", &registry.url()]);
    cli.run(&["create", "pushed"]).ok();
    let image = web_image(b'P', vec![]);
    let dir = image.path().to_str().unwrap();
    let r = cli.run(&["push", dir, "-a", "pushed", "--procfile", HTTPD]);
    // Not a terminal: a plain line per blob instead of progress bars.
    assert_eq!(r.stderr.matches(": pushed (").count(), 3, "{}", r.stderr);
    let out = r.ok();
    assert!(out.contains("(3 of 3 blobs uploaded)"), "{out}");
    wait_units(&cli, "pushed", "web", 1, "v2");
    serves(&d, "pushed", &"P".repeat(16));
    let builds = list(&cli, "builds", "pushed");
    let image_ref = builds[0]["image"].as_str().unwrap().to_string();
    assert!(image_ref.starts_with(&format!("{}/pushed@sha256:", registry.addr())), "pulled by digest: {image_ref}");

    let puts = registry.blob_puts();
    let r = cli.run(&["push", dir, "-a", "pushed", "--procfile", HTTPD]);
    assert_eq!(r.stderr.matches(": already there (").count(), 3, "{}", r.stderr);
    let again = r.ok();
    assert!(again.contains("(0 of 3 blobs uploaded)"), "{again}");
    assert_eq!(registry.blob_puts(), puts, "the second push uploaded blobs");
    wait_units(&cli, "pushed", "web", 1, "v3");

    // From the local engine (`docker save`): DOCKER_HOST points the CLI at it.
    cli.run(&["create", "fromengine"]).ok();
    let busybox = load_web_image(engine, b'G');
    let procfile = HTTPD;
    let out = cli
        .command(&["push", &busybox, "-a", "fromengine", "--procfile", procfile])
        .env("DOCKER_HOST", format!("unix://{}", engine.socket_path()))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // The busybox layer is in the repository of the caller's other app: mounted.
    assert!(stderr.contains("mounted from pushed"), "{stderr}");
    wait_units(&cli, "fromengine", "web", 1, "v2");
    serves(&d, "fromengine", &"G".repeat(16));
    // Again: the manifest is remembered and the registry has every blob.
    let out = cli
        .command(&["push", &busybox, "-a", "fromengine", "--procfile", procfile])
        .env("DOCKER_HOST", format!("unix://{}", engine.socket_path()))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && stdout.contains("(0 of 3 blobs uploaded)"), "{stdout}");
}

#[test]
fn an_htpasswd_registry_takes_the_platform_credentials_and_a_killed_push_resumes() {
    let Some(engine) = DockerEngine::shared() else { return };
    let Some(registry) = DockerRegistry::start_with_htpasswd("deis", "s3cret") else { return };
    let (d, cli) =
        start(engine, &["--registry", &registry.url(), "--registry-username", "deis", "--registry-password", "s3cret"]);
    cli.run(&["create", "locked"]).ok();
    // A big layer still uploading when the CLI is killed.
    let image = web_image(b'L', vec![layer("big", 96 << 20, b'x')]);
    let dir = image.path().to_str().unwrap();
    let mut push = cli.command(&["push", dir, "-a", "locked", "--procfile", HTTPD]);
    let mut child = push.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    wait_for(T, "a blob committed", || (registry.blob_puts() >= 1).then_some(()));
    assert!(child.try_wait().unwrap().is_none(), "the push ended before it was killed");
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(list(&cli, "builds", "locked").is_empty(), "a killed push made a build");

    let out = cli.run(&["push", dir, "-a", "locked", "--procfile", HTTPD]).ok();
    let uploaded: usize = out
        .split("Pushed ")
        .nth(1)
        .and_then(|s| s.split('(').nth(1))
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no upload count in {out}"));
    assert!(uploaded < 4, "the re-run uploaded everything again: {out}");
    wait_units(&cli, "locked", "web", 1, "v2");
    serves(&d, "locked", &"L".repeat(16));
}

#[test]
fn bad_images_are_refused_clearly_and_make_no_build() {
    let Some(engine) = DockerEngine::shared() else { return };
    let Some(registry) = DockerRegistry::start() else { return };
    let (_d, cli) = start(engine, &["--registry", &registry.url()]);
    cli.run(&["create", "bad"]).ok();
    let dir = tempfile::tempdir().unwrap();

    let archive = dir.path().join("image.tar");
    docker_archive(&archive, &[layer("a", 200_000, b'a'), layer("b", 1000, b'b')], "true");
    let bytes = std::fs::read(&archive).unwrap();
    let truncated = dir.path().join("truncated.tar");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let r = cli.run(&["push", truncated.to_str().unwrap(), "-a", "bad"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("truncated") || r.stderr.contains("is not in the image"), "{}", r.stderr);

    let layout = dir.path().join("layout");
    let layers = vec![layer("a", 50_000, b'a'), layer("b", 50_000, b'b')];
    oci_layout(&layout, &layers, "true");
    let blob = layout.join("blobs/sha256").join(sha256(&layers[1]).trim_start_matches("sha256:"));
    let mut corrupt = std::fs::read(&blob).unwrap();
    corrupt[1000] ^= 1;
    std::fs::write(&blob, &corrupt).unwrap();
    let r = cli.run(&["push", layout.to_str().unwrap(), "-a", "bad"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("does not match its digest"), "{}", r.stderr);

    std::fs::remove_file(&blob).unwrap();
    let r = cli.run(&["push", layout.to_str().unwrap(), "-a", "bad"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("is not in the image"), "{}", r.stderr);

    assert!(list(&cli, "builds", "bad").is_empty());
    assert_eq!(list(&cli, "releases", "bad").len(), 1, "only the app's first release");

    // On a terminal (`script` gives it one): a progress bar per layer instead of lines.
    let good = web_image(b'T', vec![]);
    let deis = binary("deis");
    let line = format!("{} push {} -a bad --procfile 'web: true'", deis.display(), good.path().display());
    // The CLI's profile and HOME, on a command run by `script`.
    let mut script = std::process::Command::new("script");
    for (k, v) in cli.command(&[]).get_envs() {
        match v {
            Some(v) => script.env(k, v),
            None => script.env_remove(k),
        };
    }
    let out = script.args(["-qec", &line, "/dev/null"]).stdin(Stdio::null()).output().unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{shown}");
    assert!(shown.contains("] ") && shown.contains("==") && !shown.contains(": pushed ("), "{shown}");
}

/// Pushes busybox to `registry` as `repo:tag` with docker itself (login in a private
/// config dir), then removes the tag so the engine has to pull it again.
fn docker_push_private(engine: &DockerEngine, registry: &DockerRegistry, repo_tag: &str) -> String {
    let config = tempfile::tempdir().unwrap();
    let docker = |args: &[&str]| {
        let out = engine.docker().arg("--config").arg(config.path()).args(args).output().unwrap();
        assert!(out.status.success(), "docker {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let (user, password) = registry.auth().unwrap();
    let reference = format!("{}/{repo_tag}", registry.addr());
    docker(&["tag", &load_web_image(engine, b'V'), &reference]);
    docker(&["login", "-u", user, "-p", password, &registry.addr().to_string()]);
    docker(&["push", &reference]);
    docker(&["rmi", &reference]);
    reference
}

#[test]
fn deis_pull_of_a_private_image_needs_the_right_credentials_and_a_wrong_one_changes_nothing() {
    let Some(engine) = DockerEngine::shared() else { return };
    let Some(private) = DockerRegistry::start_with_htpasswd("puller", "right") else { return };
    let (d, cli) = start(engine, &[]);
    let image = docker_push_private(engine, &private, "team/web:1");
    cli.run(&["create", "private"]).ok();
    let r = cli.run(&["push", &image, "-a", "private"]);
    assert!(r.code != 0 && r.stderr.contains("--registry"), "a deisd without a registry: {}", r.stderr);
    let procfile = HTTPD;

    let r = cli.run(&["pull", &image, "-a", "private", "--procfile", procfile]);
    assert_ne!(r.code, 0, "pulled without credentials: {}", r.stdout);
    assert!(r.stderr.contains("registry:set"), "{}", r.stderr);

    cli.run(&["registry:set", "username=puller", "password=wrong", "-a", "private"]).ok();
    let before = list(&cli, "releases", "private").len();
    let r = cli.run(&["pull", &image, "-a", "private", "--procfile", procfile]);
    assert_ne!(r.code, 0, "pulled with a wrong password: {}", r.stdout);
    assert!(r.stderr.contains("refused the credentials of puller"), "{}", r.stderr);
    let releases = list(&cli, "releases", "private");
    assert_eq!(releases.len(), before, "a refused pull made a release: {releases:?}");
    assert!(releases.iter().all(|r| r["failed"] != true), "{releases:?}");
    assert!(list(&cli, "builds", "private").is_empty());
    let shown = cli.run(&["registry:list", "-a", "private"]).ok();
    assert!(shown.contains("puller") && !shown.contains("wrong"), "{shown}");

    cli.run(&["registry:set", "password=right", "-a", "private"]).ok();
    cli.run(&["pull", &image, "-a", "private", "--procfile", procfile]).ok();
    let built = list(&cli, "builds", "private")[0]["image"].as_str().unwrap().to_string();
    assert!(
        built.starts_with(&format!("{}/team/web@sha256:", private.addr())),
        "the tag pinned to its digest: {built}"
    );
    let v = format!("v{}", before + 2);
    wait_units(&cli, "private", "web", 1, &v);
    serves(&d, "private", &"V".repeat(16));
}

#[test]
fn deisd_runs_an_embedded_registry_and_stops_it_by_pid() {
    let Some(engine) = DockerEngine::shared() else { return };
    if deis_test_support::skip_without("docker-registry", "docker-registry") {
        return;
    }
    let (mut d, cli) = start(engine, &["--registry", "embedded"]);
    let config = std::fs::read_to_string(d.data_dir.join("registry/config.yml")).unwrap();
    assert!(config.contains("rootdirectory: ") && config.contains("127.0.0.1:"), "{config}");
    cli.run(&["create", "embedded"]).ok();
    let image = web_image(b'E', vec![]);
    cli.run(&["push", image.path().to_str().unwrap(), "-a", "embedded", "--procfile", HTTPD]).ok();
    wait_units(&cli, "embedded", "web", 1, "v2");
    serves(&d, "embedded", &"E".repeat(16));
    let data_dir = d.data_dir.to_string_lossy().into_owned();
    let registry_pids = || {
        let pids = deis_test_support::proc::pids().into_iter();
        pids.filter(|p| {
            let c = deis_test_support::proc::cmdline(*p);
            c.contains("docker-registry") && c.contains(&data_dir)
        })
        .collect::<Vec<u32>>()
    };
    let first = registry_pids();
    assert_eq!(first.len(), 1, "{first:?}");

    // A killed deisd leaves its registry running: the next start stops it by PID.
    d.kill9();
    assert_eq!(registry_pids(), first, "the registry went with deisd's kill -9");
    d.spawn();
    let second = wait_for(Duration::from_secs(20), "one new embedded registry", || {
        let pids = registry_pids();
        (pids.len() == 1 && pids != first).then_some(pids)
    });
    cli.run(&["create", "embedded2"]).ok();
    let out = cli.run(&["push", image.path().to_str().unwrap(), "-a", "embedded2", "--procfile", HTTPD]).ok();
    assert!(out.contains("blobs uploaded"), "{out}");

    d.stop();
    wait_for(Duration::from_secs(20), "the embedded registry stopped", || registry_pids().is_empty().then_some(()));
    assert!(!Path::new(&format!("/proc/{}", second[0])).exists());
}

/// `Authorization: Basic` of `user:password`.
fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

#[test]
fn the_embedded_registry_takes_only_short_lived_tokens_scoped_to_the_pushers_app() {
    use deis_test_support::http::Request;
    let Some(engine) = DockerEngine::shared() else { return };
    if deis_test_support::skip_without("docker-registry", "docker-registry") {
        return;
    }
    // Tokens last 1 s; the registry allows 60 s of clock skew past that.
    let (d, alice) = start(engine, &["--registry", "embedded", "--registry-token-ttl", "1s"]);
    alice.run(&["create", "mine"]).ok();
    let bob = d.cli();
    bob.register(&d, "bob");
    bob.run(&["create", "bobs"]).ok();

    // deis push gets a token; the engine pulls with the platform's own login.
    let image = web_image(b'T', vec![]);
    alice.run(&["push", image.path().to_str().unwrap(), "-a", "mine", "--procfile", HTTPD]).ok();
    wait_units(&alice, "mine", "web", 1, "v2");
    serves(&d, "mine", &"T".repeat(16));

    let api = |cli: &Cli, path: &str| {
        Request::get(path).header("Authorization", &format!("token {}", cli.token())).send(d.api).unwrap()
    };
    let grant = api(&alice, "/v2/apps/mine/push/");
    assert_eq!(grant.status, 200, "{}", grant.body);
    let grant: Value = serde_json::from_str(&grant.body).unwrap();
    assert!(grant.get("password").is_none() && grant.get("username").is_none(), "no registry credentials: {grant}");
    let token = grant["token"].as_str().unwrap().to_string();
    assert_eq!(grant["expires_in"], 1);
    let registry: std::net::SocketAddr =
        grant["registry"].as_str().unwrap().trim_start_matches("http://").parse().unwrap();
    let upload = |repo: &str, token: Option<&str>| {
        Request::post(&format!("/v2/{repo}/blobs/uploads/")).bearer(token).send(registry).unwrap().status
    };
    assert_eq!(upload("mine", Some(&token)), 202, "the pusher's app");
    assert_eq!(upload("bobs", Some(&token)), 401, "another user's app");
    assert_eq!(upload("mine", None), 401, "no token");

    // A stranger: no grant for alice's app, and a token without any access to it.
    assert_eq!(api(&bob, "/v2/apps/mine/push/").status, 403);
    let scope = "/v2/registry/token?service=deis-registry&scope=repository:mine:pull,push";
    let asked = Request::get(scope).header("Authorization", &basic("bob", &bob.token())).send(d.api).unwrap();
    assert_eq!(asked.status, 200, "{}", asked.body);
    let bobs_token: Value = serde_json::from_str(&asked.body).unwrap();
    assert_eq!(upload("mine", bobs_token["token"].as_str()), 401, "bob's token covers nothing of alice's");
    let own = "/v2/registry/token?service=deis-registry&scope=repository:bobs:pull,push";
    let asked = Request::get(own).header("Authorization", &basic("bob", &bob.token())).send(d.api).unwrap();
    let bobs_own: Value = serde_json::from_str(&asked.body).unwrap();
    assert_eq!(upload("bobs", bobs_own["token"].as_str()), 202, "an API token buys a token for one's own apps");
    let wrong = Request::get(scope).header("Authorization", &basic("bob", "not-his-token")).send(d.api).unwrap();
    assert_eq!(wrong.status, 401);
    let anonymous = Request::get(scope).send(d.api).unwrap();
    assert_eq!(anonymous.status, 401);

    // The token expires.
    wait_for(Duration::from_secs(120), "alice's token refused once expired", || {
        (upload("mine", Some(&token)) == 401).then_some(())
    });
}
