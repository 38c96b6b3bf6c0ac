//! Every example program runs to success and does what its docs say.
//!
//! The examples are built with the tests (`cargo test` and `cargo nextest` build a
//! package's examples); these tests run the binaries.

use std::path::PathBuf;
use std::process::Command;

/// Runs the built example `name`; its stdout, after asserting it succeeded.
fn run_example(name: &str) -> String {
    // target/<profile>/deps/<test binary> -> target/<profile>/examples/<name>
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().and_then(|deps| deps.parent()).expect("target layout").join("examples");
    let path: PathBuf = dir.join(name);
    assert!(path.exists(), "{} is missing: build the examples (`cargo build --examples`)", path.display());
    let out = Command::new(&path).output().expect("running the example");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{name} failed ({}):\n{stdout}\n{stderr}", out.status);
    stdout.into_owned()
}

#[test]
fn embedded_platform_deploys_hello_on_custom_parts() {
    let out = run_example("embedded_platform");
    assert!(out.contains("audit: apply hello v2 web=1"), "the custom scheduler ran the deploy:\n{out}");
    assert!(out.contains("the app answers: Hello from hello.web.1 (v2)"), "the app was reached:\n{out}");
    // The log came from the custom log store: platform events and the unit's output.
    assert!(out.contains("deis[controller]: App hello created by alice"), "{out}");
    assert!(out.contains("[web.1]: GET / 200"), "the unit's access log line:\n{out}");
}

#[test]
fn custom_scheduler_passes_the_conformance_suite() {
    let out = run_example("custom_scheduler");
    assert!(out.contains("conformance suite passed"), "{out}");
}
