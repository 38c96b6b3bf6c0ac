//! Content-addressed build artifacts (gzipped tarballs) and their safe unpacking.
//!
//! `deis deploy DIR` uploads the app directory as a `.tar.gz`. The controller checks
//! every entry before it keeps anything ([`check_archive`]): paths must be relative
//! and stay inside the app directory (no absolute paths, no `..`), links must point
//! inside it, device files, FIFOs and sparse files are refused, and the number of
//! entries, the unpacked size and the path lengths are bounded. Accepted archives are
//! stored under their sha256 at `<root>/artifacts/sha256/<hex>.tar.gz` and unpacked
//! on demand, once per app, to `<root>/slugs/<app>/<hex>/`, the directory the app's
//! units run in. Apps never share a build directory, even when they deploy identical
//! sources: what one app's processes do to theirs can't reach another app. With an
//! owner (the app's identity), the directory is the owner's and mode 0700.
//!
//! Every write goes to a temporary name first and is renamed into place, so a crash
//! never leaves a half-written artifact or slug behind under its final name, and
//! storing or unpacking the same archive twice is harmless.
//!
//! The methods of [`ArtifactStore`] do blocking file I/O: call them from
//! `tokio::task::spawn_blocking` in async code.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use sha2::Digest as _;

use crate::model::validate::ValidationError;
use crate::model::{AppName, ProcessType, procfile};

/// Limits on what an archive may contain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArchiveLimits {
    /// Most entries (files, directories, links) in one archive.
    pub max_entries: u64,
    /// Most bytes of file content once unpacked.
    pub max_unpacked_bytes: u64,
    /// Longest entry path or link target, in bytes.
    pub max_path_bytes: usize,
}

impl Default for ArchiveLimits {
    /// 100 000 entries, 2 GiB unpacked, 4096-byte paths.
    fn default() -> Self {
        Self { max_entries: 100_000, max_unpacked_bytes: 2 << 30, max_path_bytes: 4096 }
    }
}

/// Errors of archive checking and the artifact store.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    /// The bytes are not a gzipped tar archive.
    #[error("not a valid gzipped tar archive: {0} (create it with `tar czf app.tar.gz -C DIR .`)")]
    Malformed(String),
    /// An entry would be written, or would point, outside the app directory, or is of
    /// a kind that is never accepted.
    #[error("archive entry {path:?} {reason}")]
    UnsafeEntry {
        /// The entry's path as stored in the archive.
        path: String,
        /// Why it is refused (`escapes the app directory`, ...).
        reason: String,
    },
    /// The archive exceeds a limit.
    #[error("archive too large: {0}")]
    TooLarge(String),
    /// The archive has no usable `Procfile` at its root.
    #[error("{0}")]
    Procfile(String),
    /// The archive's `Procfile` is not `type: command` lines.
    #[error("Procfile: {}", .0.message)]
    InvalidProcfile(#[source] ValidationError),
    /// No artifact is stored under this digest.
    #[error("no artifact {0} is stored; deploy the app again")]
    NotFound(Digest),
    /// A digest string is not `sha256:<64 hex>`.
    #[error("invalid artifact digest {0:?}: expected sha256:<64 hex characters>")]
    InvalidDigest(String),
    /// Reading or writing the artifact directory failed.
    #[error("artifact store I/O on {path}: {source}")]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

type Result<T, E = ArtifactError> = std::result::Result<T, E>;

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ArtifactError + '_ {
    move |source| ArtifactError::Io { path: path.to_path_buf(), source }
}

/// The sha256 of a stored `.tar.gz`; displays as `sha256:<hex>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    hex: String,
}

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self { hex: hex::encode(sha2::Sha256::digest(bytes)) }
    }

    /// Parses `sha256:<hex>` (or a bare 64-character lowercase hex string).
    pub fn parse(s: &str) -> Result<Self> {
        let hex = s.strip_prefix("sha256:").unwrap_or(s);
        if hex.len() == 64 && hex.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)) {
            Ok(Self { hex: hex.to_string() })
        } else {
            Err(ArtifactError::InvalidDigest(s.to_string()))
        }
    }

    /// The 64 lowercase hex characters.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// `sha256:` and the first 8 hex characters, for release summaries.
    pub fn short(&self) -> String {
        format!("sha256:{}", &self.hex[..8])
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

/// What [`check_archive`] found in an acceptable archive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArchiveSummary {
    /// Number of entries.
    pub entries: u64,
    /// Total bytes of file content.
    pub unpacked_bytes: u64,
    /// Content of the root `Procfile`, if there is one (a regular file).
    pub procfile: Option<String>,
    /// Whether there is a root `Dockerfile` (a regular file): the tree can be built
    /// into an image.
    pub dockerfile: bool,
}

/// Checks a gzipped tar archive against the default [`ArchiveLimits`] without writing
/// anything. Never panics, whatever the bytes; a fuzz target calls it directly.
pub fn check_archive(bytes: &[u8]) -> Result<ArchiveSummary> {
    check_archive_with(bytes, &ArchiveLimits::default())
}

/// [`check_archive`] with explicit limits.
pub fn check_archive_with(bytes: &[u8], limits: &ArchiveLimits) -> Result<ArchiveSummary> {
    let mut archive = open(bytes, limits);
    let mut checker = Checker::new(limits);
    let entries = archive.entries().map_err(malformed)?;
    for entry in entries {
        let mut entry = entry.map_err(malformed)?;
        if let Some(action) = checker.check(&entry)? {
            if action.path == "Procfile" && action.kind == Kind::File {
                if entry.size() > procfile::MAX_PROCFILE_BYTES as u64 {
                    return Err(ArtifactError::Procfile(format!(
                        "the Procfile is larger than {} bytes",
                        procfile::MAX_PROCFILE_BYTES
                    )));
                }
                let mut text = String::new();
                entry.read_to_string(&mut text).map_err(|e| {
                    ArtifactError::Procfile(format!("the Procfile could not be read as UTF-8 text: {e}"))
                })?;
                checker.summary.procfile = Some(text);
            } else if action.path == "Procfile" {
                checker.summary.procfile = None;
            } else if action.path == "Dockerfile" {
                checker.summary.dockerfile = action.kind == Kind::File;
            }
        }
    }
    Ok(checker.summary)
}

/// Bytes of decompressed tar stream allowed beyond the file contents (headers,
/// padding, long names): generous, but bounds a gzip bomb made of headers.
fn stream_cap(limits: &ArchiveLimits) -> u64 {
    limits.max_unpacked_bytes.saturating_add(limits.max_entries.saturating_mul(3 * 512)).saturating_add(1 << 20)
}

fn open<'a>(bytes: &'a [u8], limits: &ArchiveLimits) -> tar::Archive<CappedReader<flate2::read::GzDecoder<&'a [u8]>>> {
    let reader = CappedReader { inner: flate2::read::GzDecoder::new(bytes), left: stream_cap(limits) };
    tar::Archive::new(reader)
}

fn malformed(e: io::Error) -> ArtifactError {
    if e.kind() == io::ErrorKind::FileTooLarge {
        ArtifactError::TooLarge(e.to_string())
    } else {
        ArtifactError::Malformed(e.to_string())
    }
}

/// Stops reading after `left` bytes with an error, so a decompression bomb can't run
/// forever.
struct CappedReader<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for CappedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            // One byte more tells "exactly at the cap" from "beyond it".
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => {
                    Err(io::Error::new(io::ErrorKind::FileTooLarge, "the decompressed archive exceeds the size limit"))
                }
            };
        }
        let want = buf.len().min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.left -= n as u64;
        Ok(n)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    File,
    Dir,
    Symlink,
    Hardlink,
}

/// An entry that passed the checks, with its normalised path.
#[derive(Debug)]
struct Accepted {
    path: String,
    kind: Kind,
}

/// Per-archive state of the entry checks (shared by checking and unpacking, so an
/// archive is validated again while it is unpacked).
struct Checker<'l> {
    limits: &'l ArchiveLimits,
    summary: ArchiveSummary,
    files: HashSet<String>,
    dirs: HashSet<String>,
    symlinks: HashSet<String>,
}

impl<'l> Checker<'l> {
    fn new(limits: &'l ArchiveLimits) -> Self {
        Self {
            limits,
            summary: ArchiveSummary::default(),
            files: HashSet::new(),
            dirs: HashSet::new(),
            symlinks: HashSet::new(),
        }
    }

    /// Checks one entry; `None` for entries that carry no file (the root directory,
    /// pax global headers).
    fn check<R: Read>(&mut self, entry: &tar::Entry<'_, R>) -> Result<Option<Accepted>> {
        use tar::EntryType as T;
        self.summary.entries += 1;
        if self.summary.entries > self.limits.max_entries {
            return Err(ArtifactError::TooLarge(format!("more than {} entries", self.limits.max_entries)));
        }
        let raw = entry.path_bytes();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        let unsafe_entry = |reason: &str| ArtifactError::UnsafeEntry { path: shown.clone(), reason: reason.into() };
        let ty = entry.header().entry_type();
        let kind = match ty {
            T::Regular | T::Continuous => Kind::File,
            T::Directory => Kind::Dir,
            T::Symlink => Kind::Symlink,
            T::Link => Kind::Hardlink,
            T::XGlobalHeader => return Ok(None),
            T::Char | T::Block => {
                return Err(unsafe_entry("is a device file; archives may only hold files, directories and links"));
            }
            T::Fifo => return Err(unsafe_entry("is a FIFO; archives may only hold files, directories and links")),
            T::GNUSparse => return Err(unsafe_entry("is a sparse file, which is not supported")),
            _ => return Err(unsafe_entry("has an unsupported entry type")),
        };
        if raw.len() > self.limits.max_path_bytes {
            return Err(unsafe_entry(&format!("has a path longer than {} bytes", self.limits.max_path_bytes)));
        }
        let path = normalise(&raw).map_err(&unsafe_entry)?;
        let Some(path) = path else {
            // `.` or `./`: the app directory itself.
            return if kind == Kind::Dir { Ok(None) } else { Err(unsafe_entry("replaces the app directory itself")) };
        };
        // Never write through something that is not a directory of this archive.
        for (i, _) in path.match_indices('/') {
            let parent = &path[..i];
            if self.symlinks.contains(parent) {
                return Err(unsafe_entry(&format!("is inside {parent:?}, which is a symbolic link")));
            }
            if self.files.contains(parent) {
                return Err(unsafe_entry(&format!("is inside {parent:?}, which is a file")));
            }
        }
        let seen = self.files.contains(&path) || self.symlinks.contains(&path);
        if seen || (kind != Kind::Dir && self.dirs.contains(&path)) {
            return Err(unsafe_entry("appears twice in the archive"));
        }
        if kind == Kind::Dir && self.dirs.contains(&path) {
            return Ok(None);
        }
        match kind {
            Kind::File => {
                self.summary.unpacked_bytes = self.summary.unpacked_bytes.saturating_add(entry.size());
                if self.summary.unpacked_bytes > self.limits.max_unpacked_bytes {
                    return Err(ArtifactError::TooLarge(format!(
                        "more than {} MiB once unpacked (the platform's build size limit); leave large \
                         files out of the app directory (.gitignore, .slugignore) or ask the operator",
                        self.limits.max_unpacked_bytes >> 20
                    )));
                }
                self.files.insert(path.clone());
            }
            Kind::Dir => {
                self.dirs.insert(path.clone());
            }
            Kind::Symlink | Kind::Hardlink => {
                let target = entry.link_name_bytes().ok_or_else(|| unsafe_entry("is a link without a target"))?;
                let target_shown = String::from_utf8_lossy(&target).into_owned();
                if target.len() > self.limits.max_path_bytes {
                    return Err(unsafe_entry(&format!(
                        "has a link target longer than {} bytes",
                        self.limits.max_path_bytes
                    )));
                }
                let escapes = || unsafe_entry(&format!("links to {target_shown:?}, which escapes the app directory"));
                if target.first() == Some(&b'/') {
                    return Err(escapes());
                }
                if kind == Kind::Symlink {
                    // Resolve lexically from the link's own directory.
                    let base = path.rsplit_once('/').map_or("", |(dir, _)| dir);
                    let joined =
                        if base.is_empty() { target.to_vec() } else { [base.as_bytes(), b"/", &target].concat() };
                    resolve(&joined).ok_or_else(escapes)?;
                    self.symlinks.insert(path.clone());
                } else {
                    // Hard link targets are archive paths and must name a file already in it.
                    let t = normalise(&target).map_err(|_| escapes())?.ok_or_else(escapes)?;
                    if !self.files.contains(&t) {
                        return Err(unsafe_entry(&format!(
                            "is a hard link to {target_shown:?}, which is not a file earlier in the archive"
                        )));
                    }
                    self.files.insert(path.clone());
                }
            }
        }
        Ok(Some(Accepted { path, kind }))
    }
}

/// Normalises an entry path: strips `./` and empty components; refuses absolute paths,
/// `..`, NUL and non-UTF-8 bytes. `Ok(None)` for the root itself.
fn normalise(raw: &[u8]) -> std::result::Result<Option<String>, &'static str> {
    let s = std::str::from_utf8(raw).map_err(|_| "has a path that is not UTF-8")?;
    if s.starts_with('/') {
        return Err("has an absolute path; paths must be relative to the app directory");
    }
    if s.contains('\0') || s.contains('\\') {
        return Err("has a path with a NUL byte or backslash");
    }
    let mut parts = vec![];
    for c in s.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err("escapes the app directory"),
            c if c.len() > 255 => return Err("has a path component longer than 255 bytes"),
            c => parts.push(c),
        }
    }
    Ok((!parts.is_empty()).then(|| parts.join("/")))
}

/// Resolves `..` lexically; `None` if the path climbs above the root.
fn resolve(raw: &[u8]) -> Option<Vec<String>> {
    let s = String::from_utf8_lossy(raw);
    let mut parts: Vec<String> = vec![];
    for c in s.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            c => parts.push(c.to_string()),
        }
    }
    Some(parts)
}

/// Stores checked archives by content and unpacks them into directories units run in.
#[derive(Debug, Clone)]
pub struct ArtifactStore {
    root: PathBuf,
    limits: ArchiveLimits,
}

impl ArtifactStore {
    /// A store under `root` (usually the data directory) with default limits.
    /// Directories are created on first use.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into(), limits: ArchiveLimits::default() }
    }

    /// The same store with other limits.
    pub fn with_limits(mut self, limits: ArchiveLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The limits archives are checked against.
    pub fn limits(&self) -> &ArchiveLimits {
        &self.limits
    }

    /// Where the archive with `digest` is (or would be) stored.
    pub fn artifact_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("artifacts").join("sha256").join(format!("{}.tar.gz", digest.hex()))
    }

    /// Where the archive with `digest` is (or would be) unpacked for `app`.
    pub fn slug_path(&self, app: &AppName, digest: &Digest) -> PathBuf {
        self.app_slugs(app).join(digest.hex())
    }

    /// The directory of `app`'s unpacked builds.
    fn app_slugs(&self, app: &AppName) -> PathBuf {
        self.root.join("slugs").join(app.as_str())
    }

    /// Removes every unpacked build of `app` (it is destroyed; its archives stay, other
    /// apps may use them).
    pub fn remove_app(&self, app: &AppName) -> Result<()> {
        let dir = self.app_slugs(app);
        match fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(ArtifactError::Io { path: dir, source: e }),
            _ => Ok(()),
        }
    }

    /// Deletes every stored archive whose digest is not in `keep` (no release of any
    /// app references it any more); returns how many were deleted. Temporary files of
    /// writes in progress are left alone.
    pub fn retain_artifacts(&self, keep: &HashSet<Digest>) -> Result<usize> {
        let dir = self.root.join("artifacts").join("sha256");
        let mut removed = 0;
        for name in list_dir(&dir)? {
            let Some(hex) = name.strip_suffix(".tar.gz") else { continue };
            match Digest::parse(&format!("sha256:{hex}")) {
                Ok(d) if keep.contains(&d) => {}
                Ok(_) => {
                    let path = dir.join(&name);
                    fs::remove_file(&path).map_err(io_err(&path))?;
                    removed += 1;
                }
                Err(_) => {}
            }
        }
        Ok(removed)
    }

    /// Removes `app`'s unpacked builds except those in `keep` (builds of releases no
    /// longer current: [`unpack`](Self::unpack) makes them again on a rollback);
    /// returns how many were removed.
    pub fn retain_slugs(&self, app: &AppName, keep: &HashSet<Digest>) -> Result<usize> {
        let dir = self.app_slugs(app);
        let mut removed = 0;
        for name in list_dir(&dir)? {
            match Digest::parse(&format!("sha256:{name}")) {
                Ok(d) if keep.contains(&d) => {}
                Ok(_) => {
                    let path = dir.join(&name);
                    fs::remove_dir_all(&path).map_err(io_err(&path))?;
                    removed += 1;
                }
                Err(_) => {}
            }
        }
        Ok(removed)
    }

    /// Checks `bytes` (see [`check_archive`]) and stores them under their digest.
    /// Storing the same bytes again returns the same digest and writes nothing.
    pub fn put_tarball(&self, bytes: &[u8]) -> Result<Digest> {
        check_archive_with(bytes, &self.limits)?;
        let digest = Digest::of(bytes);
        let dest = self.artifact_path(&digest);
        if dest.is_file() {
            return Ok(digest);
        }
        let dir = dest.parent().expect("artifact path has a parent");
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let tmp = dir.join(format!(".tmp-{}-{}", digest.hex(), crate::auth::random_hex(6)));
        let write = || -> io::Result<()> {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            fs::rename(&tmp, &dest)
        };
        if let Err(e) = write() {
            let _ = fs::remove_file(&tmp);
            return Err(ArtifactError::Io { path: dest, source: e });
        }
        Ok(digest)
    }

    /// Whether an archive with `digest` is stored.
    pub fn contains(&self, digest: &Digest) -> bool {
        self.artifact_path(digest).is_file()
    }

    fn read(&self, digest: &Digest) -> Result<Vec<u8>> {
        let path = self.artifact_path(digest);
        fs::read(&path).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                ArtifactError::NotFound(digest.clone())
            } else {
                ArtifactError::Io { path, source: e }
            }
        })
    }

    /// Unpacks the archive once for `app` into `<root>/slugs/<app>/<hex>/` and returns
    /// that directory; with `owner` (uid, gid) every file of it is the owner's and the
    /// directory is mode 0700. The archive is checked again while unpacking; a second
    /// call returns the existing directory.
    pub fn unpack(&self, app: &AppName, digest: &Digest, owner: Option<(u32, u32)>) -> Result<PathBuf> {
        let dest = self.slug_path(app, digest);
        if dest.is_dir() {
            return Ok(dest);
        }
        let bytes = self.read(digest)?;
        let parent = dest.parent().expect("slug path has a parent");
        fs::create_dir_all(parent).map_err(io_err(parent))?;
        let tmp = parent.join(format!(".tmp-{}-{}", digest.hex(), crate::auth::random_hex(6)));
        fs::create_dir(&tmp).map_err(io_err(&tmp))?;
        let result = unpack_into(&bytes, &tmp, &self.limits)
            .and_then(|()| hand_over(&tmp, owner).map_err(io_err(&tmp)))
            .and_then(|()| match fs::rename(&tmp, &dest) {
                Ok(()) => Ok(()),
                // Someone else unpacked it meanwhile: theirs is as good as ours.
                Err(_) if dest.is_dir() => {
                    let _ = fs::remove_dir_all(&tmp);
                    Ok(())
                }
                Err(e) => Err(ArtifactError::Io { path: dest.clone(), source: e }),
            });
        if result.is_err() {
            let _ = fs::remove_dir_all(&tmp);
        }
        result.map(|()| dest)
    }

    /// The parsed root `Procfile` of a stored archive.
    pub fn read_procfile(&self, digest: &Digest) -> Result<BTreeMap<ProcessType, String>> {
        let summary = check_archive_with(&self.read(digest)?, &self.limits)?;
        parse_procfile(&summary)
    }
}

/// The parsed Procfile of a checked archive, or a clear error when it has none.
pub fn parse_procfile(summary: &ArchiveSummary) -> Result<BTreeMap<ProcessType, String>> {
    let text = summary.procfile.as_deref().ok_or_else(|| {
        ArtifactError::Procfile(
            "the archive has no Procfile at its root; add one with a line per process type, e.g. `web: python3 app.py`"
                .into(),
        )
    })?;
    procfile::parse(text).map_err(ArtifactError::InvalidProcfile)
}

/// Makes `dir` (an unpacked build) `owner`'s, every entry in it too (links
/// themselves, not what they point to), and mode 0700.
fn hand_over(dir: &Path, owner: Option<(u32, u32)>) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some((uid, gid)) = owner {
        let mut pending = vec![dir.to_path_buf()];
        while let Some(path) = pending.pop() {
            std::os::unix::fs::lchown(&path, Some(uid), Some(gid))?;
            if fs::symlink_metadata(&path)?.is_dir() {
                for entry in fs::read_dir(&path)? {
                    pending.push(entry?.path());
                }
            }
        }
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
}

/// The names in `dir`; none if it does not exist.
fn list_dir(dir: &Path) -> Result<Vec<String>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(ArtifactError::Io { path: dir.to_path_buf(), source: e }),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_err(dir))?;
        names.extend(entry.file_name().to_str().map(str::to_string));
    }
    Ok(names)
}

fn unpack_into(bytes: &[u8], dir: &Path, limits: &ArchiveLimits) -> Result<()> {
    let mut archive = open(bytes, limits);
    let mut checker = Checker::new(limits);
    for entry in archive.entries().map_err(malformed)? {
        let mut entry = entry.map_err(malformed)?;
        if checker.check(&entry)?.is_none() {
            continue;
        }
        entry.set_preserve_permissions(false);
        entry.set_unpack_xattrs(false);
        let shown = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        match entry.unpack_in(dir) {
            Ok(true) => {}
            Ok(false) => {
                return Err(ArtifactError::UnsafeEntry { path: shown, reason: "escapes the app directory".into() });
            }
            Err(e) => return Err(malformed(e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
