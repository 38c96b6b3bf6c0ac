//! End to end, the disk faults of issue 9: a small upload that unpacks to more than the
//! build size limit is refused, builds go when nothing uses them (old unpacked builds
//! after a deploy, everything of an app when it is destroyed), and uploads are bounded.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;

use deis_e2e::{Cli, Deisd, Request, T, daemon_with_user, deploy_hello, hello_app, ustar_header, wait_for, wait_units};

/// A gzipped tar of a Procfile and `big`, `size` zero bytes, written as it is
/// compressed (a decompression bomb of a few hundred KiB).
fn zero_bomb(size: u64) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let procfile = b"web: python3 web.py\n";
    gz.write_all(&ustar_header("Procfile", procfile.len() as u64)).unwrap();
    let mut block = procfile.to_vec();
    block.resize(512, 0);
    gz.write_all(&block).unwrap();
    gz.write_all(&ustar_header("big", size)).unwrap();
    let zeros = vec![0u8; 1 << 20];
    let mut left = size.div_ceil(512) * 512;
    while left > 0 {
        let n = left.min(zeros.len() as u64) as usize;
        gz.write_all(&zeros[..n]).unwrap();
        left -= n as u64;
    }
    gz.write_all(&[0u8; 1024]).unwrap();
    gz.finish().unwrap()
}

fn upload(d: &Deisd, cli: &Cli, app: &str, tarball: Vec<u8>) -> deis_e2e::Response {
    Request::post(&format!("/v2/apps/{app}/builds/"))
        .header("Authorization", &format!("token {}", cli.token()))
        .header("Content-Type", "application/gzip")
        .body(tarball)
        .timeout(T)
        .send(d.api)
        .unwrap()
}

/// Names under `dir` (none if it does not exist).
fn names(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut v: Vec<String> = entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

#[test]
fn a_small_upload_that_unpacks_past_the_limit_is_refused() {
    let (d, alice) = daemon_with_user(&[]);
    alice.run(&["create", "bomb"]).ok();
    // 520 MiB of zeros, past the default 500 MiB limit, in well under 2 MB.
    let bomb = zero_bomb(520 << 20);
    assert!(bomb.len() < 2 << 20, "{}", bomb.len());
    let r = upload(&d, &alice, "bomb", bomb);
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("500 MiB once unpacked"), "{}", r.body);
    assert!(names(&d.data_dir.join("builds/artifacts/sha256")).is_empty(), "nothing was kept");
    assert!(names(&d.data_dir.join("builds/slugs/bomb")).is_empty(), "nothing was unpacked");

    // The limit is a flag.
    let (small, bob) = daemon_with_user(&["--max-build-mb", "1"]);
    bob.run(&["create", "tiny"]).ok();
    let r = upload(&small, &bob, "tiny", zero_bomb(2 << 20));
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("1 MiB once unpacked"), "{}", r.body);
}

#[test]
fn builds_go_when_nothing_uses_them() {
    let (d, alice) = daemon_with_user(&[]);
    let dir = deploy_hello(&d, &alice, "churn");
    let builds = d.data_dir.join("builds");
    let slugs = builds.join("slugs/churn");
    for (n, release) in [(1, "v3"), (2, "v4")] {
        std::fs::write(dir.path().join("extra.txt"), format!("change {n}")).unwrap();
        alice.run_in(&["deploy", "-a", "churn"], Some(dir.path())).ok();
        wait_units(&alice, "churn", "web", 1, release);
    }
    // Three source builds: all archives kept (a rollback needs them), the two newest
    // unpacked.
    assert_eq!(names(&builds.join("artifacts/sha256")).len(), 3);
    wait_for(T, "the oldest unpacked build to go", || (names(&slugs).len() == 2).then_some(()));
    // A rollback to v2 unpacks its build again.
    alice.run(&["rollback", "v2", "-a", "churn"]).ok();
    wait_units(&alice, "churn", "web", 1, "v5");
    let r = d.get_app("churn", "/").unwrap();
    assert!(r.body.contains("from churn.web.1 (v5)"), "{}", r.body);

    // Another app from the same sources shares no directory, and keeps the archive.
    let bob = d.cli();
    bob.register(&d, "bob");
    let same = hello_app();
    bob.run(&["create", "twin"]).ok();
    bob.run_in(&["deploy", "-a", "twin"], Some(same.path())).ok();
    wait_units(&bob, "twin", "web", 1, "v2");
    alice.run(&["destroy", "-a", "churn", "--confirm=churn"]).ok();
    assert!(!slugs.exists(), "churn's unpacked builds are gone");
    let left = names(&builds.join("artifacts/sha256"));
    assert_eq!(left.len(), 1, "only twin's archive stays: {left:?}");
    bob.run(&["destroy", "-a", "twin", "--confirm=twin"]).ok();
    assert!(names(&builds.join("artifacts/sha256")).is_empty());
}

#[test]
fn uploads_beyond_the_limit_wait_their_turn() {
    let (d, alice) = daemon_with_user(&["--max-concurrent-uploads", "1"]);
    alice.run(&["create", "busy"]).ok();
    // An upload that holds its slot: the head and a first byte of a long body.
    let hold = || {
        let mut held = TcpStream::connect(d.api).unwrap();
        let head = format!(
            "POST /v2/apps/busy/builds/ HTTP/1.1\r\nHost: {}\r\nAuthorization: token {}\r\n\
             Content-Type: application/gzip\r\nContent-Length: 1000000\r\n\r\n\x1f",
            d.api,
            alice.token()
        );
        held.write_all(head.as_bytes()).unwrap();
        held.set_read_timeout(Some(std::time::Duration::from_millis(10))).unwrap();
        held
    };
    let mut held = hold();
    let tarball = deis_e2e::raw_tarball(&[("Procfile", b"web: python3 web.py\n")]);
    let refused = wait_for(T, "a second upload to be refused", || {
        // The held upload itself was answered (it came while a probe had the slot):
        // hold again.
        if held.read(&mut [0u8; 64]).is_ok() {
            held = hold();
        }
        Some(upload(&d, &alice, "busy", tarball.clone())).filter(|r| r.status == 503)
    });
    assert_eq!(refused.headers.get("retry-after").map(String::as_str), Some("5"), "{refused:?}");
    assert!(refused.body.contains("try again in a few seconds"), "{}", refused.body);
    // Its slot is free again once it ends.
    drop(held);
    wait_for(T, "an upload to be taken again", || {
        Some(upload(&d, &alice, "busy", tarball.clone())).filter(|r| r.status == 201)
    });
}
