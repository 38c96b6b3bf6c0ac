//! Settings `deisd` takes from its command line or environment, carried over as files
//! it reads: `DIR/deisd.env` with `DEIS_DOMAIN`, `DEIS_REGISTRATION`, `DEIS_TLS_CERT`
//! and `DEIS_TLS_KEY` (for systemd's `EnvironmentFile=` or `set -a; . DIR/deisd.env`),
//! and the platform certificate `DIR/platform.crt` with its key `DIR/platform.key`
//! (mode 0600), from `/deis/router/sslCert` and `/deis/router/sslKey`.
//!
//! The environment file is merged: lines that set other variables stay as they are.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::classify::V1Keyspace;
use super::report::{Outcome, Status};

/// The environment file in the directory.
pub const ENV_FILE: &str = "deisd.env";
/// The platform certificate chain in the directory.
pub const CERT_FILE: &str = "platform.crt";
/// The platform certificate's key in the directory.
pub const KEY_FILE: &str = "platform.key";

/// One file to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileWrite {
    /// Where.
    pub path: PathBuf,
    /// The whole content.
    pub contents: String,
    /// Readable by its owner only (a private key).
    pub private: bool,
}

/// The files for `deisd`, with the v1 keys they carry.
#[derive(Debug, Clone, Default)]
pub struct FileChange {
    /// The v1 keys written.
    pub sources: Vec<String>,
    /// What the report names.
    pub target: String,
    /// The files, each written whole.
    pub writes: Vec<FileWrite>,
}

/// A `KEY=value` line's variable.
fn variable(line: &str) -> Option<&str> {
    let line = line.trim_start();
    let line = line.strip_prefix("export ").unwrap_or(line);
    line.split_once('=').map(|(k, _)| k.trim())
}

/// Plans the files in `dir` (`None`: the settings are reported as skipped, with the
/// flag that carries them). Keys already there with the same value are unchanged.
pub fn plan(ks: &V1Keyspace, dir: Option<&Path>, decided: &mut Vec<Outcome>) -> Option<FileChange> {
    let cert_pair = match (&ks.platform_cert.cert, &ks.platform_cert.key) {
        (Some(c), Some(k)) => match crate::certs::inspect(&c.value, &k.value) {
            Ok(_) => Some((c, k)),
            Err(e) => {
                for s in [&c.source, &k.source] {
                    decided.push(failed(s, format!("the platform certificate's {}: {}", e.field, e.message)));
                }
                None
            }
        },
        (Some(only), None) | (None, Some(only)) => {
            decided.push(failed(&only.source, "the platform certificate needs both sslCert and sslKey".into()));
            None
        }
        (None, None) => None,
    };
    let Some(dir) = dir else {
        let skip = |source: &str, var: &str| Outcome {
            key: source.to_string(),
            status: Status::Skipped,
            detail: format!("a deisd setting ({var}): give --deisd-env-dir DIR to write it where deisd reads it"),
        };
        decided.extend(ks.deisd_env.iter().map(|(var, v)| skip(&v.source, var)));
        if let Some((c, k)) = cert_pair {
            decided.extend([skip(&c.source, "DEIS_TLS_CERT"), skip(&k.source, "DEIS_TLS_KEY")]);
        }
        return None;
    };
    let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    let env_path = dir.join(ENV_FILE);
    let existing_env = std::fs::read_to_string(&env_path).unwrap_or_default();
    let existing: BTreeMap<&str, &str> =
        existing_env.lines().filter_map(|l| Some((variable(l)?, l.split_once('=')?.1.trim()))).collect();

    let same = |var: &str, value: &str| existing.get(var) == Some(&value);
    let mut change = FileChange::default();
    let mut vars: Vec<(&str, String)> = vec![];
    for (var, v) in &ks.deisd_env {
        if same(var, &v.value) {
            decided.push(unchanged(&v.source, &env_path));
        } else {
            change.sources.push(v.source.clone());
        }
        vars.push((var, v.value.clone()));
    }
    let mut writes = vec![];
    if let Some((c, k)) = cert_pair {
        let (cert_path, key_path) = (dir.join(CERT_FILE), dir.join(KEY_FILE));
        let (cert_var, key_var) = (cert_path.display().to_string(), key_path.display().to_string());
        let file_is = |p: &Path, want: &str| std::fs::read_to_string(p).is_ok_and(|have| have == want);
        if file_is(&cert_path, &c.value)
            && file_is(&key_path, &k.value)
            && same("DEIS_TLS_CERT", &cert_var)
            && same("DEIS_TLS_KEY", &key_var)
        {
            decided.push(unchanged(&c.source, &cert_path));
            decided.push(unchanged(&k.source, &key_path));
        } else {
            change.sources.extend([c.source.clone(), k.source.clone()]);
        }
        vars.extend([("DEIS_TLS_CERT", cert_var), ("DEIS_TLS_KEY", key_var)]);
        writes.push(FileWrite { path: cert_path, contents: c.value.clone(), private: false });
        writes.push(FileWrite { path: key_path, contents: k.value.clone(), private: true });
    }
    if change.sources.is_empty() {
        return None;
    }
    let ours: Vec<&str> = vars.iter().map(|(var, _)| *var).collect();
    let mut contents: String = existing_env
        .lines()
        .filter(|l| variable(l).is_none_or(|v| !ours.contains(&v)))
        .map(|l| format!("{l}\n"))
        .collect();
    if contents.is_empty() {
        contents.push_str("# Settings of deisd migrated from Deis v1 by deis-migrate.\n");
    }
    for (var, value) in &vars {
        contents.push_str(&format!("{var}={value}\n"));
    }
    writes.insert(0, FileWrite { path: env_path.clone(), contents, private: false });
    change.target = format!("{} ({})", env_path.display(), ours.join(", "));
    change.writes = writes;
    Some(change)
}

fn failed(source: &str, detail: String) -> Outcome {
    Outcome { key: source.to_string(), status: Status::Failed, detail }
}

fn unchanged(source: &str, path: &Path) -> Outcome {
    Outcome { key: source.to_string(), status: Status::Unchanged, detail: path.display().to_string() }
}

/// Writes the files: each to a temporary name, then renamed over the old one.
pub fn write(change: &FileChange) -> std::io::Result<()> {
    for w in &change.writes {
        if let Some(dir) = w.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = w.path.with_extension("migrating");
        if w.private {
            crate::certs::write_private(&tmp, w.contents.as_bytes())?;
        } else {
            std::fs::write(&tmp, &w.contents)?;
        }
        std::fs::rename(&tmp, &w.path)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migrate::source::V1Key;

    fn keyspace(keys: &[(&str, &str)]) -> V1Keyspace {
        V1Keyspace::classify(
            keys.iter().map(|(k, v)| V1Key { key: k.to_string(), value: v.to_string(), ttl: None }).collect(),
        )
    }

    #[test]
    fn settings_go_to_the_environment_file_once_and_other_lines_stay() {
        let dir = tempfile::tempdir().unwrap();
        let ck = rcgen::generate_simple_self_signed(vec!["*.example.com".to_string()]).unwrap();
        let (cert, key) = (ck.cert.pem(), ck.signing_key.serialize_pem());
        let ks = keyspace(&[
            ("/deis/platform/domain", "example.com"),
            ("/deis/controller/registrationMode", "admin_only"),
            ("/deis/router/sslCert", &cert),
            ("/deis/router/sslKey", &key),
        ]);
        std::fs::write(dir.path().join(ENV_FILE), "RUST_LOG=info\nDEIS_DOMAIN=old.example\n").unwrap();
        let mut decided = vec![];
        let change = plan(&ks, Some(dir.path()), &mut decided).unwrap();
        assert!(decided.is_empty(), "{decided:?}");
        assert_eq!(change.sources.len(), 4);
        write(&change).unwrap();
        let env = std::fs::read_to_string(dir.path().join(ENV_FILE)).unwrap();
        let crt = dir.path().join(CERT_FILE);
        assert_eq!(
            env,
            format!(
                "RUST_LOG=info\nDEIS_DOMAIN=example.com\nDEIS_REGISTRATION=admin_only\nDEIS_TLS_CERT={}\nDEIS_TLS_KEY={}\n",
                crt.display(),
                dir.path().join(KEY_FILE).display()
            )
        );
        assert_eq!(std::fs::read_to_string(crt).unwrap(), cert);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(KEY_FILE)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);

        let mut again = vec![];
        assert!(plan(&ks, Some(dir.path()), &mut again).is_none(), "a second run writes nothing");
        assert_eq!(again.len(), 4);
        assert!(again.iter().all(|o| o.status == Status::Unchanged), "{again:?}");

        let mut skipped = vec![];
        assert!(plan(&ks, None, &mut skipped).is_none());
        assert!(skipped.iter().all(|o| o.status == Status::Skipped && o.detail.contains("--deisd-env-dir")));
    }

    #[test]
    fn a_platform_certificate_without_its_key_fails() {
        let ck = rcgen::generate_simple_self_signed(vec!["a.example".to_string()]).unwrap();
        let other = rcgen::generate_simple_self_signed(vec!["a.example".to_string()]).unwrap();
        let ks = keyspace(&[
            ("/deis/router/sslCert", &ck.cert.pem()),
            ("/deis/router/sslKey", &other.signing_key.serialize_pem()),
        ]);
        let mut decided = vec![];
        assert!(plan(&ks, Some(Path::new("/nonexistent")), &mut decided).is_none());
        assert_eq!(decided.len(), 2);
        assert!(
            decided.iter().all(|o| o.status == Status::Failed && o.detail.contains("does not match")),
            "{decided:?}"
        );
    }
}
