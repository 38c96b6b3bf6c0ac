use std::io::Write;

use proptest::prelude::*;

use super::*;
use crate::testing::app_name;

/// One crafted entry: raw path bytes, type, content or link target.
struct E<'a> {
    path: &'a [u8],
    ty: tar::EntryType,
    data: &'a [u8],
    link: &'a [u8],
}

fn file<'a>(path: &'a str, data: &'a str) -> E<'a> {
    E { path: path.as_bytes(), ty: tar::EntryType::Regular, data: data.as_bytes(), link: b"" }
}
fn dir(path: &str) -> E<'_> {
    E { path: path.as_bytes(), ty: tar::EntryType::Directory, data: b"", link: b"" }
}
fn symlink<'a>(path: &'a str, target: &'a str) -> E<'a> {
    E { path: path.as_bytes(), ty: tar::EntryType::Symlink, data: b"", link: target.as_bytes() }
}
fn hardlink<'a>(path: &'a str, target: &'a str) -> E<'a> {
    E { path: path.as_bytes(), ty: tar::EntryType::Link, data: b"", link: target.as_bytes() }
}

/// Builds a .tar.gz with raw header fields, bypassing the `tar` crate's path checks
/// so malicious archives can be made.
fn targz(entries: &[E<'_>]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        {
            let gnu = h.as_gnu_mut().unwrap();
            gnu.name[..e.path.len()].copy_from_slice(e.path);
            gnu.linkname[..e.link.len()].copy_from_slice(e.link);
        }
        h.set_entry_type(e.ty);
        h.set_mode(if e.ty == tar::EntryType::Directory { 0o755 } else { 0o644 });
        h.set_size(e.data.len() as u64);
        h.set_cksum();
        builder.append(&h, e.data).unwrap();
    }
    let tar = builder.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    gz.finish().unwrap()
}

fn hello() -> Vec<u8> {
    targz(&[
        dir("./"),
        file("./Procfile", "web: ./web.sh\nworker: sleep 100\n"),
        dir("./bin"),
        file("./bin/web.sh", "#!/bin/sh\necho hi\n"),
        symlink("./web.sh", "bin/web.sh"),
        hardlink("./copy.sh", "bin/web.sh"),
    ])
}

fn unsafe_reason(bytes: &[u8]) -> String {
    match check_archive(bytes) {
        Err(e @ ArtifactError::UnsafeEntry { .. }) => e.to_string(),
        other => panic!("expected an unsafe entry, got {other:?}"),
    }
}

#[test]
fn accepts_a_normal_app_and_reads_its_procfile() {
    let s = check_archive(&hello()).unwrap();
    assert_eq!(s.entries, 6);
    assert!(s.procfile.as_deref().unwrap().starts_with("web:"));
    let p = parse_procfile(&s).unwrap();
    assert_eq!(p["web"], "./web.sh");
    assert_eq!(p["worker"], "sleep 100");
}

#[test]
fn rejects_parent_paths() {
    let msg = unsafe_reason(&targz(&[file("../x", "boom")]));
    assert_eq!(msg, r#"archive entry "../x" escapes the app directory"#);
    unsafe_reason(&targz(&[file("a/../../x", "boom")]));
    unsafe_reason(&targz(&[file("a/..", "boom")]));
}

#[test]
fn rejects_absolute_paths() {
    let msg = unsafe_reason(&targz(&[file("/etc/passwd", "root::0:0")]));
    assert!(msg.contains("absolute path"), "{msg}");
}

#[test]
fn rejects_escaping_links() {
    let msg = unsafe_reason(&targz(&[symlink("evil", "../../etc")]));
    assert!(msg.contains("escapes the app directory"), "{msg}");
    unsafe_reason(&targz(&[symlink("evil", "/etc/passwd")]));
    unsafe_reason(&targz(&[dir("a"), symlink("a/b", "../../x")]));
    unsafe_reason(&targz(&[hardlink("h", "/etc/passwd")]));
    unsafe_reason(&targz(&[hardlink("h", "../x")]));
    // A hard link must point at a file of the archive.
    unsafe_reason(&targz(&[hardlink("h", "nothere")]));
    // Inside links are fine, including ones that climb back down.
    assert!(check_archive(&targz(&[dir("a"), symlink("a/b", "../c"), file("c", "")])).is_ok());
}

#[test]
fn rejects_writing_through_links() {
    // Link to the root, then a link through it that would climb out physically.
    let msg = unsafe_reason(&targz(&[symlink("x", "."), symlink("x/y", "../z")]));
    assert!(msg.contains("symbolic link"), "{msg}");
    unsafe_reason(&targz(&[symlink("d", "sub"), file("d/f", "x")]));
    unsafe_reason(&targz(&[file("f", "x"), file("f/g", "x")]));
    unsafe_reason(&targz(&[file("f", "x"), symlink("f", "g")]));
}

#[test]
fn rejects_devices_and_fifos() {
    for ty in [tar::EntryType::Char, tar::EntryType::Block, tar::EntryType::Fifo] {
        let msg = unsafe_reason(&targz(&[E { path: b"dev", ty, data: b"", link: b"" }]));
        assert!(msg.contains("archive entry \"dev\""), "{msg}");
    }
}

#[test]
fn rejects_garbage_and_enforces_limits() {
    assert!(matches!(check_archive(b"not gzip at all"), Err(ArtifactError::Malformed(_))));
    let many: Vec<String> = (0..5).map(|i| format!("f{i}")).collect();
    let entries: Vec<E<'_>> = many.iter().map(|p| file(p, "x")).collect();
    let bytes = targz(&entries);
    let small = ArchiveLimits { max_entries: 4, ..Default::default() };
    assert!(matches!(check_archive_with(&bytes, &small), Err(ArtifactError::TooLarge(_))));
    let tiny = ArchiveLimits { max_unpacked_bytes: 4, ..Default::default() };
    assert!(matches!(check_archive_with(&bytes, &tiny), Err(ArtifactError::TooLarge(_))));
    let short = ArchiveLimits { max_path_bytes: 1, ..Default::default() };
    assert!(matches!(check_archive_with(&bytes, &short), Err(ArtifactError::UnsafeEntry { .. })));
}

#[test]
fn decompression_bomb_is_cut_off() {
    // 8 MiB of zeros is a valid, empty tar stream; with a tiny budget it must stop.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&vec![0u8; 8 << 20]).unwrap();
    let bytes = gz.finish().unwrap();
    let mut reader = CappedReader { inner: flate2::read::GzDecoder::new(&bytes[..]), left: 1024 };
    let err = io::copy(&mut reader, &mut io::sink()).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::FileTooLarge);
}

#[test]
fn missing_or_bad_procfile_is_explained() {
    let s = check_archive(&targz(&[file("app.py", "")])).unwrap();
    let e = parse_procfile(&s).unwrap_err().to_string();
    assert!(e.contains("no Procfile at its root"), "{e}");
    let s = check_archive(&targz(&[file("Procfile", "nonsense")])).unwrap();
    assert!(parse_procfile(&s).unwrap_err().to_string().contains("line 1"));
    // A Procfile in a subdirectory does not count.
    let s = check_archive(&targz(&[file("sub/Procfile", "web: x")])).unwrap();
    assert!(s.procfile.is_none());
}

#[test]
fn store_put_is_content_addressed_and_idempotent() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ArtifactStore::new(tmp.path());
    let bytes = hello();
    let d = store.put_tarball(&bytes).unwrap();
    assert_eq!(d, Digest::of(&bytes));
    assert_eq!(d.to_string(), format!("sha256:{}", d.hex()));
    assert_eq!(Digest::parse(&d.to_string()).unwrap(), d);
    let path = tmp.path().join("artifacts/sha256").join(format!("{}.tar.gz", d.hex()));
    assert_eq!(fs::read(&path).unwrap(), bytes);
    assert_eq!(store.put_tarball(&bytes).unwrap(), d);
    // No temporary files left behind.
    assert_eq!(fs::read_dir(path.parent().unwrap()).unwrap().count(), 1);
    assert!(store.contains(&d));
    assert_eq!(store.read_procfile(&d).unwrap()["web"], "./web.sh");
}

#[test]
fn store_refuses_unsafe_archives_without_writing() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ArtifactStore::new(tmp.path());
    assert!(store.put_tarball(&targz(&[file("../x", "")])).is_err());
    assert!(!tmp.path().join("artifacts").exists());
}

#[test]
fn unpack_once_with_links_and_modes() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ArtifactStore::new(tmp.path());
    let d = store.put_tarball(&hello()).unwrap();
    let dir = store.unpack(&app_name("hello"), &d, None).unwrap();
    assert_eq!(dir, tmp.path().join("slugs/hello").join(d.hex()));
    assert_eq!(fs::read_to_string(dir.join("bin/web.sh")).unwrap(), "#!/bin/sh\necho hi\n");
    assert_eq!(fs::read_link(dir.join("web.sh")).unwrap(), Path::new("bin/web.sh"));
    assert_eq!(fs::read_to_string(dir.join("copy.sh")).unwrap(), "#!/bin/sh\necho hi\n");
    // Unpacking again reuses the directory (a marker file survives).
    fs::write(dir.join("marker"), "x").unwrap();
    assert_eq!(store.unpack(&app_name("hello"), &d, None).unwrap(), dir);
    assert!(dir.join("marker").exists());
    let leftovers: Vec<_> = fs::read_dir(tmp.path().join("slugs/hello")).unwrap().collect();
    assert_eq!(leftovers.len(), 1);
}

/// Fault "shared build directories": two apps deploying identical sources got one slug
/// directory, so one app's processes could change the other's code.
#[test]
fn apps_never_share_a_build_and_each_owns_its_own() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let tmp = tempfile::tempdir().unwrap();
    let store = ArtifactStore::new(tmp.path());
    let d = store.put_tarball(&hello()).unwrap();
    let alice = store.unpack(&app_name("shop"), &d, Some((200_001, 200_001))).unwrap();
    let bob = store.unpack(&app_name("evil"), &d, Some((200_002, 200_002))).unwrap();
    assert_ne!(alice, bob, "identical sources, separate builds");
    fs::write(bob.join("bin/web.sh"), "#!/bin/sh\necho pwned\n").unwrap();
    assert_eq!(fs::read_to_string(alice.join("bin/web.sh")).unwrap(), "#!/bin/sh\necho hi\n");
    if rustix::process::geteuid().is_root() {
        for (dir, id) in [(&alice, 200_001), (&bob, 200_002)] {
            let meta = fs::metadata(dir).unwrap();
            assert_eq!((meta.uid(), meta.gid(), meta.permissions().mode() & 0o777), (id, id, 0o700));
            assert_eq!(fs::metadata(dir.join("bin/web.sh")).unwrap().uid(), id);
            assert_eq!(fs::symlink_metadata(dir.join("web.sh")).unwrap().uid(), id, "links too");
        }
    }
    store.remove_app(&app_name("evil")).unwrap();
    assert!(!bob.exists() && alice.exists(), "a destroyed app's builds go, others' stay");
    store.remove_app(&app_name("evil")).unwrap();
}

#[test]
fn unpack_of_unknown_digest_is_not_found() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ArtifactStore::new(tmp.path());
    let d = Digest::of(b"nothing");
    assert!(matches!(store.unpack(&app_name("a"), &d, None), Err(ArtifactError::NotFound(_))));
    assert!(Digest::parse("sha256:xyz").is_err());
}

#[test]
fn unpack_revalidates_a_tampered_artifact() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ArtifactStore::new(tmp.path());
    let evil = targz(&[file("../escaped", "x")]);
    let d = Digest::of(&evil);
    let path = store.artifact_path(&d);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, &evil).unwrap();
    assert!(matches!(store.unpack(&app_name("a"), &d, None), Err(ArtifactError::UnsafeEntry { .. })));
    assert!(!tmp.path().join("slugs/a/escaped").exists() && !tmp.path().join("escaped").exists());
    assert!(!store.slug_path(&app_name("a"), &d).exists());
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = check_archive(&bytes);
    }

    #[test]
    fn arbitrary_tar_streams_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        // Gzip the noise so the tar parser, not the gzip decoder, sees it.
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&bytes).unwrap();
        let _ = check_archive(&gz.finish().unwrap());
    }

    #[test]
    fn accepted_paths_stay_inside(path in "[a-z./]{1,20}") {
        let bytes = targz(&[file(&path, "x")]);
        if check_archive(&bytes).is_ok() {
            let norm = normalise(path.as_bytes()).unwrap().unwrap();
            prop_assert!(!norm.split('/').any(|c| c == ".." || c.is_empty()));
            prop_assert!(!norm.starts_with('/'));
        }
    }
}
