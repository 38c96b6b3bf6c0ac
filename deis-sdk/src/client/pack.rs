//! Packing an app directory into the gzipped tarball `deis deploy` uploads.

use std::fs;
use std::io::Write as _;
use std::path::{Component, Path, PathBuf};

use flate2::Compression;
use flate2::write::GzEncoder;

/// Largest archive the CLI uploads (the controller's default body limit).
pub const MAX_SOURCE_ARCHIVE_BYTES: usize = 256 << 20;

/// Largest total size of the files packed, before compression.
pub const MAX_SOURCE_UNPACKED_BYTES: u64 = 1 << 30;

/// Directory names never packed, at any depth: version control and local CLI state.
const SKIPPED_DIRS: &[&str] = &[".git", ".deis"];

/// Modification time stored for every entry (2000-01-01T00:00:00Z), so the same tree
/// always gives the same bytes and digest.
const FIXED_MTIME: u64 = 946_684_800;

/// Why a directory could not be packed.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    /// The directory does not exist or is not a directory.
    #[error("{dir} is not a directory: {reason}")]
    NotADirectory {
        /// The directory given.
        dir: PathBuf,
        /// What was found instead.
        reason: String,
    },
    /// No regular file named `Procfile` at the root.
    #[error(
        "no Procfile in {dir}: add a file named Procfile at the root of the app with one `type: command` \
         line per process type, e.g. `web: ./server`"
    )]
    NoProcfile {
        /// The directory given.
        dir: PathBuf,
    },
    /// The Procfile is not valid.
    #[error("the Procfile in {dir} is not valid: {message}")]
    BadProcfile {
        /// The directory given.
        dir: PathBuf,
        /// What is wrong, naming the line.
        message: String,
    },
    /// A symbolic link points outside the directory (the controller rejects those).
    #[error(
        "symbolic link {path} points outside the app directory (to {target}); the controller refuses such \
         archives: replace it with a copy of its target or a link within the directory"
    )]
    LinkEscapes {
        /// The link, relative to the root.
        path: String,
        /// Its target.
        target: String,
    },
    /// The files add up to more than the limits allow.
    #[error("{what} is {size} bytes, more than the limit of {limit} bytes; remove build output or large files")]
    TooLarge {
        /// Which size (`the app directory`, `the compressed archive`).
        what: &'static str,
        /// The size found.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// Reading a file or writing the archive failed.
    #[error("cannot pack {path}: {source}")]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> PackError + '_ {
    move |source| PackError::Io { path: path.to_path_buf(), source }
}

/// Whether a symlink at relative path `link` (components, root-relative) with `target`
/// stays inside the root when resolved lexically.
fn link_stays_inside(link: &Path, target: &Path) -> bool {
    if target.is_absolute() {
        return false;
    }
    // Depth of the link's parent directory below the root.
    let mut depth: i64 = link.components().count() as i64 - 1;
    for c in target.components() {
        match c {
            Component::ParentDir => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

struct Packer {
    root: PathBuf,
    tar: tar::Builder<GzEncoder<Vec<u8>>>,
    unpacked: u64,
}

impl Packer {
    fn header(entry_type: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(entry_type);
        h.set_mode(mode);
        h.set_size(size);
        h.set_mtime(FIXED_MTIME);
        h.set_uid(0);
        h.set_gid(0);
        h
    }

    /// Packs the contents of `rel` (root-relative, empty for the root), sorted by name.
    fn walk(&mut self, rel: &Path) -> Result<(), PackError> {
        let dir = self.root.join(rel);
        let mut names: Vec<_> = fs::read_dir(&dir)
            .map_err(io_err(&dir))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .map_err(io_err(&dir))?;
        names.sort();
        for name in names {
            let rel_path = rel.join(&name);
            let full = self.root.join(&rel_path);
            let meta = fs::symlink_metadata(&full).map_err(io_err(&full))?;
            let ft = meta.file_type();
            if ft.is_symlink() {
                let target = fs::read_link(&full).map_err(io_err(&full))?;
                if !link_stays_inside(&rel_path, &target) {
                    return Err(PackError::LinkEscapes {
                        path: rel_path.display().to_string(),
                        target: target.display().to_string(),
                    });
                }
                let mut h = Self::header(tar::EntryType::Symlink, 0o777, 0);
                self.tar.append_link(&mut h, &rel_path, &target).map_err(io_err(&full))?;
            } else if ft.is_dir() {
                if name.to_str().is_some_and(|n| SKIPPED_DIRS.contains(&n)) {
                    continue;
                }
                let mut h = Self::header(tar::EntryType::Directory, 0o755, 0);
                self.tar.append_data(&mut h, &rel_path, std::io::empty()).map_err(io_err(&full))?;
                self.walk(&rel_path)?;
            } else if ft.is_file() {
                self.unpacked += meta.len();
                if self.unpacked > MAX_SOURCE_UNPACKED_BYTES {
                    return Err(PackError::TooLarge {
                        what: "the app directory",
                        size: self.unpacked,
                        limit: MAX_SOURCE_UNPACKED_BYTES,
                    });
                }
                // Read it whole so a file changing while we pack can't corrupt the entry.
                let data = fs::read(&full).map_err(io_err(&full))?;
                let mode = if std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o111 != 0 {
                    0o755
                } else {
                    0o644
                };
                let mut h = Self::header(tar::EntryType::Regular, mode, data.len() as u64);
                self.tar.append_data(&mut h, &rel_path, data.as_slice()).map_err(io_err(&full))?;
            }
            // Sockets, FIFOs and devices are not part of an app's source: skipped.
        }
        Ok(())
    }
}

/// Packs `dir` into a gzipped tar for `deis deploy` (`POST /v2/apps/<app>/builds/`).
///
/// * Paths are relative to `dir`; entries are sorted by name, and mtime, uid, gid and
///   owner names are fixed, so the same tree always gives the same bytes (and digest).
/// * `.git/` and `.deis/` directories are skipped at every depth.
/// * Symbolic links are stored as links, never followed; a link pointing outside `dir`
///   is refused. Regular files keep only their executable bit (0755 or 0644).
/// * A valid `Procfile` must be at the root.
/// * At most [`MAX_SOURCE_UNPACKED_BYTES`] of files and [`MAX_SOURCE_ARCHIVE_BYTES`] of
///   archive.
pub fn pack_source_dir(dir: &Path) -> Result<Vec<u8>, PackError> {
    let meta =
        fs::metadata(dir).map_err(|e| PackError::NotADirectory { dir: dir.to_path_buf(), reason: e.to_string() })?;
    if !meta.is_dir() {
        return Err(PackError::NotADirectory { dir: dir.to_path_buf(), reason: "it is a file".into() });
    }
    let procfile = dir.join("Procfile");
    match fs::symlink_metadata(&procfile) {
        Ok(m) if m.is_file() => {}
        _ => return Err(PackError::NoProcfile { dir: dir.to_path_buf() }),
    }
    if m_len(&procfile) > deis_core::procfile::MAX_PROCFILE_BYTES as u64 {
        return Err(PackError::BadProcfile {
            dir: dir.to_path_buf(),
            message: format!("it is larger than {} bytes", deis_core::procfile::MAX_PROCFILE_BYTES),
        });
    }
    let text = fs::read_to_string(&procfile).map_err(|e| PackError::BadProcfile {
        dir: dir.to_path_buf(),
        message: format!("cannot read it as UTF-8 text: {e}"),
    })?;
    deis_core::procfile::parse(&text)
        .map_err(|e| PackError::BadProcfile { dir: dir.to_path_buf(), message: e.message })?;

    let gz = flate2::GzBuilder::new().mtime(0).write(Vec::new(), Compression::default());
    let mut tar = tar::Builder::new(gz);
    tar.mode(tar::HeaderMode::Deterministic);
    let mut packer = Packer { root: dir.to_path_buf(), tar, unpacked: 0 };
    packer.walk(Path::new(""))?;
    let gz = packer.tar.into_inner().map_err(io_err(dir))?;
    let mut gz = gz;
    gz.flush().map_err(io_err(dir))?;
    let bytes = gz.finish().map_err(io_err(dir))?;
    if bytes.len() > MAX_SOURCE_ARCHIVE_BYTES {
        return Err(PackError::TooLarge {
            what: "the compressed archive",
            size: bytes.len() as u64,
            limit: MAX_SOURCE_ARCHIVE_BYTES as u64,
        });
    }
    Ok(bytes)
}

fn m_len(p: &Path) -> u64 {
    fs::metadata(p).map_or(0, |m| m.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::fs::symlink;

    /// path, type, link target, data, mode, mtime
    type Entry = (String, tar::EntryType, Option<String>, Vec<u8>, u32, u64);

    fn entries(tgz: &[u8]) -> Vec<Entry> {
        let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(tgz));
        ar.entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let path = e.path().unwrap().display().to_string();
                let ty = e.header().entry_type();
                let link = e.link_name().unwrap().map(|l| l.display().to_string());
                let mode = e.header().mode().unwrap();
                let mtime = e.header().mtime().unwrap();
                let mut data = vec![];
                e.read_to_end(&mut data).unwrap();
                (path, ty, link, data, mode, mtime)
            })
            .collect()
    }

    fn app_dir() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("Procfile"), "web: ./server\nworker: ./work\n").unwrap();
        fs::write(d.path().join("server"), "#!/bin/sh\necho hi\n").unwrap();
        fs::set_permissions(d.path().join("server"), std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
        fs::create_dir_all(d.path().join("lib/sub")).unwrap();
        fs::write(d.path().join("lib/sub/b.txt"), "b").unwrap();
        fs::write(d.path().join("lib/a.txt"), "a").unwrap();
        d
    }

    #[test]
    fn same_tree_gives_identical_bytes() {
        let d = app_dir();
        let one = pack_source_dir(d.path()).unwrap();
        // Touch a file's mtime and re-create another: content equal, metadata not.
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::write(d.path().join("lib/a.txt"), "a").unwrap();
        let two = pack_source_dir(d.path()).unwrap();
        assert_eq!(one, two);

        // Another directory with the same tree, created in another order, gives the same bytes.
        let e = tempfile::tempdir().unwrap();
        fs::create_dir_all(e.path().join("lib/sub")).unwrap();
        fs::write(e.path().join("lib/a.txt"), "a").unwrap();
        fs::write(e.path().join("server"), "#!/bin/sh\necho hi\n").unwrap();
        fs::set_permissions(e.path().join("server"), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        fs::write(e.path().join("lib/sub/b.txt"), "b").unwrap();
        fs::write(e.path().join("Procfile"), "web: ./server\nworker: ./work\n").unwrap();
        assert_eq!(pack_source_dir(e.path()).unwrap(), one);

        // A change in content changes the bytes.
        fs::write(e.path().join("lib/a.txt"), "A").unwrap();
        assert_ne!(pack_source_dir(e.path()).unwrap(), one);
    }

    #[test]
    fn entries_are_relative_sorted_with_fixed_metadata() {
        let d = app_dir();
        let list = entries(&pack_source_dir(d.path()).unwrap());
        let paths: Vec<_> = list.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(paths, ["Procfile", "lib", "lib/a.txt", "lib/sub", "lib/sub/b.txt", "server"]);
        let server = list.iter().find(|e| e.0 == "server").unwrap();
        assert_eq!(server.4, 0o755);
        assert_eq!(server.3, b"#!/bin/sh\necho hi\n");
        let a = list.iter().find(|e| e.0 == "lib/a.txt").unwrap();
        assert_eq!(a.4, 0o644);
        assert!(list.iter().all(|e| e.5 == FIXED_MTIME));
    }

    #[test]
    fn git_and_deis_dirs_are_skipped() {
        let d = app_dir();
        fs::create_dir_all(d.path().join(".git/objects")).unwrap();
        fs::write(d.path().join(".git/HEAD"), "ref: refs/heads/main").unwrap();
        fs::create_dir_all(d.path().join("lib/.git")).unwrap();
        fs::write(d.path().join("lib/.git/config"), "x").unwrap();
        fs::create_dir_all(d.path().join(".deis")).unwrap();
        fs::write(d.path().join(".deis/state"), "x").unwrap();
        fs::write(d.path().join(".gitignore"), "target\n").unwrap();
        let list = entries(&pack_source_dir(d.path()).unwrap());
        assert!(
            list.iter().all(|e| !e.0.contains(".git/") && e.0 != ".git" && !e.0.starts_with(".deis")),
            "{:?}",
            list.iter().map(|e| &e.0).collect::<Vec<_>>()
        );
        assert!(list.iter().any(|e| e.0 == ".gitignore"));
    }

    #[test]
    fn symlinks_are_stored_as_links() {
        let d = app_dir();
        symlink("lib/a.txt", d.path().join("alias")).unwrap();
        symlink("../a.txt", d.path().join("lib/sub/up")).unwrap();
        symlink("lib", d.path().join("libdir")).unwrap();
        let list = entries(&pack_source_dir(d.path()).unwrap());
        let alias = list.iter().find(|e| e.0 == "alias").unwrap();
        assert_eq!(alias.1, tar::EntryType::Symlink);
        assert_eq!(alias.2.as_deref(), Some("lib/a.txt"));
        assert!(alias.3.is_empty());
        let up = list.iter().find(|e| e.0 == "lib/sub/up").unwrap();
        assert_eq!(up.2.as_deref(), Some("../a.txt"));
        // The directory link was not followed.
        let libdir = list.iter().find(|e| e.0 == "libdir").unwrap();
        assert_eq!(libdir.1, tar::EntryType::Symlink);
        assert!(!list.iter().any(|e| e.0.starts_with("libdir/")));
    }

    #[test]
    fn escaping_links_are_refused() {
        for target in ["/etc/passwd", "../outside", "lib/../../x"] {
            let d = app_dir();
            symlink(target, d.path().join("bad")).unwrap();
            let err = pack_source_dir(d.path()).unwrap_err();
            assert!(matches!(err, PackError::LinkEscapes { .. }), "{target}: {err}");
            assert!(err.to_string().contains("bad"), "{err}");
        }
    }

    #[test]
    fn missing_or_bad_procfile_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("server"), "x").unwrap();
        let err = pack_source_dir(d.path()).unwrap_err();
        assert!(matches!(err, PackError::NoProcfile { .. }));
        assert!(err.to_string().contains("no Procfile in"), "{err}");

        // A Procfile in a subdirectory does not count.
        fs::create_dir(d.path().join("sub")).unwrap();
        fs::write(d.path().join("sub/Procfile"), "web: x").unwrap();
        assert!(matches!(pack_source_dir(d.path()).unwrap_err(), PackError::NoProcfile { .. }));

        fs::write(d.path().join("Procfile"), "this is not a procfile").unwrap();
        let err = pack_source_dir(d.path()).unwrap_err();
        assert!(matches!(err, PackError::BadProcfile { .. }), "{err}");
        assert!(err.to_string().contains("line 1"), "{err}");

        let err = pack_source_dir(&d.path().join("nope")).unwrap_err();
        assert!(matches!(err, PackError::NotADirectory { .. }), "{err}");
    }

    #[test]
    fn link_containment_is_lexical() {
        assert!(link_stays_inside(Path::new("a"), Path::new("b")));
        assert!(link_stays_inside(Path::new("d/a"), Path::new("../b")));
        assert!(!link_stays_inside(Path::new("a"), Path::new("../b")));
        assert!(!link_stays_inside(Path::new("d/a"), Path::new("x/../../../b")));
        assert!(link_stays_inside(Path::new("d/a"), Path::new("./x/../y")));
        assert!(!link_stays_inside(Path::new("a"), Path::new("/abs")));
    }
}
