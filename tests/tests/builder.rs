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
