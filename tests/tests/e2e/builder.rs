//! `git push` deploys: real `git` and OpenSSH against the builder of the real `deisd`.

use std::path::Path;

use deis_e2e::git::{KeyPair, commit_all, git, init_and_commit, push_url};
use deis_e2e::*;

/// A user's key pair, registered with `deis keys:add`.
fn registered_key(cli: &Cli, dir: &Path, name: &str) -> KeyPair {
    let key = KeyPair::generate(dir, name);
    cli.run(&["keys:add", key.public.to_str().unwrap()]).ok();
    key
}

/// The hello app as a git repository with a builder remote (added by `deis create`,
/// then pointed at the test's builder port).
fn hello_repo(d: &Deisd, cli: &Cli, app: &str) -> tempfile::TempDir {
    let dir = hello_app();
    init_and_commit(dir.path());
    let out = cli.run_in(&["create", app], Some(dir.path())).ok();
    let url = git(dir.path(), None, &["remote", "get-url", "deis"]).ok();
    // The Workflow CLI's form: the controller's host, the builder's port.
    assert_eq!(url.trim(), format!("ssh://git@127.0.0.1:2222/{app}.git"), "{out}");
    assert!(out.contains("Git remote deis added"), "{out}");
    git(dir.path(), None, &["remote", "set-url", "deis", &push_url(d.builder, app)]).ok();
    dir
}

fn push(dir: &Path, key: &KeyPair, d: &Deisd, args: &[&str]) -> deis_e2e::git::Run {
    let mut all = vec!["push", "deis"];
    all.extend_from_slice(args);
    git(dir, Some(&key.ssh_command(d.builder.port())), &all)
}

fn set_greeting(dir: &Path, greeting: &str) {
    let path = dir.join("web.py");
    let text = std::fs::read_to_string(&path).unwrap();
    let text =
        text.replace(r#"os.environ.get("GREETING", "Hello")"#, &format!(r#"os.environ.get("GREETING", "{greeting}")"#));
    std::fs::write(path, text).unwrap();
}

fn serves(d: &Deisd, app: &str, wanted: &str) -> String {
    wait_for(T, &format!("{app} serving {wanted:?}"), || {
        d.get_app(app, "/").ok().filter(|r| r.status == 200 && r.body.contains(wanted)).map(|r| r.body)
    })
}

fn release_versions(cli: &Cli, app: &str) -> Vec<u64> {
    let v = cli.run(&["releases", "-a", app, "--json"]).json();
    let list = v.get("results").cloned().unwrap_or(v);
    let mut versions: Vec<u64> = list.as_array().unwrap().iter().map(|r| r["version"].as_u64().unwrap()).collect();
    versions.sort();
    versions
}

#[test]
fn git_push_deploys_and_a_new_push_rolls_without_failed_requests() {
    let (d, cli) = daemon_with_user(&[]);
    let keys = tempfile::tempdir().unwrap();
    let key = registered_key(&cli, keys.path(), "alice");
    let repo = hello_repo(&d, &cli, "pushed");

    let out = push(repo.path(), &key, &d, &["main"]).ok();
    assert!(out.contains("remote: -----> Building pushed at"), "{out}");
    assert!(out.contains("remote: -----> Released v2"), "{out}");
    let url = format!("http://pushed.{}:{}", d.domain, d.router.port());
    assert!(out.contains(&format!("remote: -----> pushed deployed to {url}")), "{out}");
    // The units were up before the push ended.
    let first = d.get_app("pushed", "/").unwrap();
    assert_eq!(first.status, 200, "{}", first.body);
    assert!(first.body.contains("Hello from pushed.web.1 (v2)"), "{}", first.body);

    // A change, pushed under load: the new release takes over without a failed request.
    let load = Load::start(d.router, &format!("pushed.{}", d.domain), 3);
    set_greeting(repo.path(), "Howdy");
    commit_all(repo.path(), "howdy");
    let out = push(repo.path(), &key, &d, &["main"]).ok();
    assert!(out.contains("remote: -----> Released v3"), "{out}");
    serves(&d, "pushed", "Howdy from pushed.web.1 (v3)");
    load.wait_more(50);
    let (greetings, failures) = load.finish();
    assert!(failures.is_empty(), "{} failed requests: {:?}", failures.len(), &failures[..failures.len().min(5)]);
    assert!(greetings.contains("Hello") && greetings.contains("Howdy"), "{greetings:?}");

    // A broken Procfile: the push is rejected, the refs and the release stay.
    let before = git(repo.path(), Some(&key.ssh_command(d.builder.port())), &["ls-remote", "deis", "main"]).ok();
    std::fs::write(repo.path().join("Procfile"), "web\n").unwrap();
    commit_all(repo.path(), "broken");
    let out = push(repo.path(), &key, &d, &["main"]).failed();
    assert!(out.contains("remote: error: build failed"), "{out}");
    assert!(out.contains("pre-receive hook declined"), "{out}");
    let after = git(repo.path(), Some(&key.ssh_command(d.builder.port())), &["ls-remote", "deis", "main"]).ok();
    assert_eq!(before, after, "refs unchanged");
    assert_eq!(release_versions(&cli, "pushed"), [1, 2, 3]);
    serves(&d, "pushed", "Howdy from pushed.web.1 (v3)");

    // Only the default branch deploys; no shells, no other commands.
    let out = push(repo.path(), &key, &d, &["HEAD:refs/heads/dev"]).failed();
    assert!(out.contains("refs/heads/dev is not deployed: only main is"), "{out}");
    let out = key.ssh(d.builder, &[]).failed();
    assert!(out.contains("no shells here"), "{out}");
    let out = key.ssh(d.builder, &["ls", "/"]).failed();
    assert!(out.contains("only `git push`"), "{out}");
    let out = git(keys.path(), Some(&key.ssh_command(d.builder.port())), &["ls-remote", &push_url(d.builder, "nope")])
        .failed();
    assert!(out.contains("app nope does not exist"), "{out}");
}

#[test]
fn unknown_keys_and_strangers_are_refused_collaborators_may_push() {
    let (d, alice) = daemon_with_user(&[]);
    let keys = tempfile::tempdir().unwrap();
    registered_key(&alice, keys.path(), "alice");
    let repo = hello_repo(&d, &alice, "guarded");

    let unknown = KeyPair::generate(keys.path(), "unknown");
    let out = push(repo.path(), &unknown, &d, &["main"]).failed();
    assert!(out.contains("Permission denied (publickey)"), "{out}");

    let bob = d.cli();
    bob.register(&d, "bob");
    let bob_key = registered_key(&bob, keys.path(), "bob");
    let out = push(repo.path(), &bob_key, &d, &["main"]).failed();
    assert!(out.contains("bob may not push to guarded"), "{out}");
    assert_eq!(release_versions(&alice, "guarded"), [1], "nothing was built");

    alice.run(&["perms:create", "bob", "-a", "guarded"]).ok();
    let out = push(repo.path(), &bob_key, &d, &["main"]).ok();
    assert!(out.contains("remote: -----> guarded deployed to"), "{out}");
    serves(&d, "guarded", "(v2)");
}

#[test]
fn concurrent_pushes_to_one_app_are_serialised() {
    let (d, cli) = daemon_with_user(&[]);
    let keys = tempfile::tempdir().unwrap();
    let key = registered_key(&cli, keys.path(), "alice");
    let repo = hello_repo(&d, &cli, "busy");
    push(repo.path(), &key, &d, &["main"]).ok();

    // Two clones with diverging commits, force-pushed at the same time.
    let clones: Vec<tempfile::TempDir> = ["Alpha", "Bravo"]
        .iter()
        .map(|greeting| {
            let dir = tempfile::tempdir().unwrap();
            for e in std::fs::read_dir(repo.path()).unwrap().flatten() {
                if e.file_type().unwrap().is_file() {
                    std::fs::copy(e.path(), dir.path().join(e.file_name())).unwrap();
                }
            }
            set_greeting(dir.path(), greeting);
            init_and_commit(dir.path());
            git(dir.path(), None, &["remote", "add", "deis", &push_url(d.builder, "busy")]).ok();
            dir
        })
        .collect();
    let runs: Vec<_> = clones
        .iter()
        .map(|c| {
            let (path, ssh) = (c.path().to_path_buf(), key.ssh_command(d.builder.port()));
            std::thread::spawn(move || git(&path, Some(&ssh), &["push", "--force", "deis", "main"]))
        })
        .collect();
    for run in runs {
        let out = run.join().unwrap().ok();
        assert!(out.contains("deployed to"), "{out}");
    }
    // One release per push, numbered without gaps, and what serves is what main holds.
    assert_eq!(release_versions(&cli, "busy"), [1, 2, 3, 4]);
    let fetched = tempfile::tempdir().unwrap();
    let ssh = key.ssh_command(d.builder.port());
    git(fetched.path(), Some(&ssh), &["clone", "--quiet", &push_url(d.builder, "busy"), "."]).ok();
    let web = std::fs::read_to_string(fetched.path().join("web.py")).unwrap();
    let last = if web.contains(r#""GREETING", "Alpha""#) { "Alpha" } else { "Bravo" };
    assert!(web.contains(&format!(r#""GREETING", "{last}""#)), "{web}");
    serves(&d, "busy", &format!("{last} from busy.web.1 (v4)"));
}

/// A repository whose tree is `files` (a Dockerfile app), with the app created and its
/// `deis` remote pointed at the test's builder.
fn dockerfile_repo(d: &Deisd, cli: &Cli, app: &str, files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    init_and_commit(dir.path());
    cli.run_in(&["create", app], Some(dir.path())).ok();
    git(dir.path(), None, &["remote", "set-url", "deis", &push_url(d.builder, app)]).ok();
    dir
}

#[test]
fn a_pushed_dockerfile_is_built_into_the_registry_and_served_by_digest() {
    use deis_test_support::docker::DockerEngine;
    use deis_test_support::registry::DockerRegistry;
    use deis_test_support::service::Service;
    let Some(engine) = DockerEngine::shared() else { return };
    let Some(registry) = DockerRegistry::start() else { return };
    let base = engine.busybox_image();
    let host = format!("unix://{}", engine.socket_path());
    let (d, cli) = daemon_with_user(&["--scheduler", "docker", "--docker-host", &host, "--registry", &registry.url()]);
    let keys = tempfile::tempdir().unwrap();
    let key = registered_key(&cli, keys.path(), "alice");
    // The image's own command (no Procfile): process type cmd, routed like web. The
    // whole tree is copied, less what .dockerignore names.
    let dockerfile = format!("FROM {base}\nCOPY . /www/\nCMD httpd -f -p $PORT -h /www\n");
    let repo = dockerfile_repo(
        &d,
        &cli,
        "docked",
        &[
            ("Dockerfile", &dockerfile),
            ("index.html", "built from a Dockerfile\n"),
            ("secret.txt", "not for the image\n"),
            (".dockerignore", "# kept out\nsecret*\n"),
        ],
    );

    let out = push(repo.path(), &key, &d, &["main"]).ok();
    assert!(out.contains("remote: -----> Building the Dockerfile of docked at"), "{out}");
    assert!(out.contains("remote:        Step 1/3 : FROM deis-test/busybox"), "the build's output: {out}");
    assert!(out.contains("remote:        Successfully built"), "{out}");
    assert!(out.contains(&format!("remote: -----> Pushing the image to {}/docked", registry.addr())), "{out}");
    assert!(out.contains("remote: -----> Released v2"), "{out}");
    assert!(out.contains("remote: -----> docked deployed to"), "{out}");
    let page = d.get_app("docked", "/index.html").unwrap();
    assert_eq!((page.status, page.body.as_str()), (200, "built from a Dockerfile\n"), "served through the router");
    assert_eq!(d.get_app("docked", "/secret.txt").unwrap().status, 404, ".dockerignore kept it out");
    let builds = cli.run(&["builds", "-a", "docked", "--json"]).json();
    let builds = builds.get("results").cloned().unwrap_or(builds);
    let image = builds[0]["image"].as_str().unwrap().to_string();
    assert!(image.starts_with(&format!("{}/docked@sha256:", registry.addr())), "pulled by digest: {image}");
    assert!(registry.requests("PUT", "/v2/docked/manifests/sha256:") >= 1, "{}", registry.log());

    // A Dockerfile that does not build: the push is rejected with the engine's reason,
    // and the refs, releases and the serving image stay.
    let before = git(repo.path(), Some(&key.ssh_command(d.builder.port())), &["ls-remote", "deis", "main"]).ok();
    std::fs::write(repo.path().join("Dockerfile"), format!("FROM {base}\nCOPY missing.txt /www/\n")).unwrap();
    commit_all(repo.path(), "broken");
    let out = push(repo.path(), &key, &d, &["main"]).failed();
    assert!(out.contains("remote: error: docker build failed"), "{out}");
    assert!(out.contains("missing.txt"), "the reason: {out}");
    assert!(out.contains("pre-receive hook declined"), "{out}");
    let after = git(repo.path(), Some(&key.ssh_command(d.builder.port())), &["ls-remote", "deis", "main"]).ok();
    assert_eq!(before, after, "refs unchanged");
    assert_eq!(release_versions(&cli, "docked"), [1, 2]);
    let page = d.get_app("docked", "/index.html").unwrap();
    assert_eq!((page.status, page.body.as_str()), (200, "built from a Dockerfile\n"));
}

#[test]
fn a_dockerfile_only_app_is_refused_clearly_by_the_process_scheduler() {
    let (d, cli) = daemon_with_user(&[]);
    let keys = tempfile::tempdir().unwrap();
    let key = registered_key(&cli, keys.path(), "alice");
    let repo = dockerfile_repo(&d, &cli, "nodocker", &[("Dockerfile", "FROM scratch\nCMD [\"/app\"]\n")]);
    let out = push(repo.path(), &key, &d, &["main"]).failed();
    assert!(out.contains("remote: error: nodocker has a Dockerfile but no Procfile"), "{out}");
    assert!(out.contains("--scheduler docker|swarm --registry"), "says what to do: {out}");
    assert_eq!(release_versions(&cli, "nodocker"), [1], "nothing was built");
}
