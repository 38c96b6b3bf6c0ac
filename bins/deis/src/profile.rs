//! The client profile (`~/.deis/client.json`): which controller, who, and the token.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Largest profile file read.
const MAX_PROFILE_BYTES: u64 = 64 * 1024;

/// The saved login, with the same fields as the Workflow CLI's `client.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    /// Who is logged in.
    pub username: String,
    /// Kept for Workflow compatibility (this client speaks plain HTTP).
    #[serde(default = "yes")]
    pub ssl_verify: bool,
    /// Controller URL, `http://host:port`.
    pub controller: String,
    /// API token.
    pub token: String,
    /// Page size for list requests.
    #[serde(default = "default_limit")]
    pub response_limit: u32,
}

fn yes() -> bool {
    true
}

fn default_limit() -> u32 {
    deis_sdk::client::DEFAULT_RESPONSE_LIMIT
}

/// Why the profile can't be found, read or written.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// No `-c PATH` and no home directory to look in.
    #[error("cannot find the profile: HOME is not set; set HOME or pass -c /path/to/profile.json")]
    NoHome,
    /// The file could not be read.
    #[error("cannot read the profile {}: {source}", path.display())]
    Read {
        /// The profile's path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is larger than any profile.
    #[error("the profile {} is larger than {MAX_PROFILE_BYTES} bytes; delete it and log in again", path.display())]
    TooLarge {
        /// The profile's path.
        path: PathBuf,
    },
    /// The file is not a profile.
    #[error(
        "the profile {} is not valid ({source}); delete it and log in again with `deis login URL`",
        path.display()
    )]
    Invalid {
        /// The profile's path.
        path: PathBuf,
        /// What the JSON decoder said.
        #[source]
        source: serde_json::Error,
    },
    /// The file could not be written.
    #[error("cannot write the profile {}: {source}", path.display())]
    Write {
        /// The profile's path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file could not be removed.
    #[error("cannot remove the profile {}: {source}", path.display())]
    Remove {
        /// The profile's path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

type Result<T> = std::result::Result<T, ProfileError>;

/// Where the profile lives: `config` (from `-c/--config` or `DEIS_PROFILE`) is a path if it
/// contains `/` or ends with `.json`, else a name for `<home>/.deis/<name>.json`; without
/// it, `<home>/.deis/client.json`.
pub fn resolve_path(config: Option<&str>, home: Option<&Path>) -> Result<PathBuf> {
    let config = config.filter(|c| !c.trim().is_empty());
    if let Some(c) = config
        && (c.contains('/') || c.ends_with(".json"))
    {
        return Ok(PathBuf::from(c));
    }
    let Some(home) = home else {
        return Err(ProfileError::NoHome);
    };
    let name = config.unwrap_or("client");
    Ok(home.join(".deis").join(format!("{name}.json")))
}

/// Reads the profile at `path`. `Ok(None)` when there is no file.
pub fn load(path: &Path) -> Result<Option<Profile>> {
    let read = |source| ProfileError::Read { path: path.to_path_buf(), source };
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(read(e)),
    };
    if meta.len() > MAX_PROFILE_BYTES {
        return Err(ProfileError::TooLarge { path: path.to_path_buf() });
    }
    let text = fs::read_to_string(path).map_err(read)?;
    serde_json::from_str(&text).map(Some).map_err(|source| ProfileError::Invalid { path: path.to_path_buf(), source })
}

/// Writes the profile to `path` with mode 0600 (its directory 0700 if created), replacing
/// any previous file atomically.
pub fn save(path: &Path, profile: &Profile) -> Result<()> {
    let fail = |source| ProfileError::Write { path: path.to_path_buf(), source };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(fail)?;
    }
    let mut json = serde_json::to_vec_pretty(profile).expect("a profile serialises");
    json.push(b'\n');
    let tmp = path.with_extension(format!("json.tmp{}", std::process::id()));
    let result = (|| {
        let mut f = fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
        f.write_all(&json)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(fail)
}

/// Removes the profile; `Ok(false)` if there was none.
pub fn remove(path: &Path) -> Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(ProfileError::Remove { path: path.to_path_buf(), source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn path_resolution() {
        let home = Path::new("/home/alice");
        assert_eq!(resolve_path(None, Some(home)).unwrap(), PathBuf::from("/home/alice/.deis/client.json"));
        assert_eq!(resolve_path(Some(""), Some(home)).unwrap(), PathBuf::from("/home/alice/.deis/client.json"));
        assert_eq!(resolve_path(Some("staging"), Some(home)).unwrap(), PathBuf::from("/home/alice/.deis/staging.json"));
        assert_eq!(resolve_path(Some("/tmp/p.json"), Some(home)).unwrap(), PathBuf::from("/tmp/p.json"));
        assert_eq!(resolve_path(Some("dir/prof"), Some(home)).unwrap(), PathBuf::from("dir/prof"));
        assert_eq!(resolve_path(Some("local.json"), Some(home)).unwrap(), PathBuf::from("local.json"));
        assert_eq!(resolve_path(Some("/abs/x.json"), None).unwrap(), PathBuf::from("/abs/x.json"));
        assert!(matches!(resolve_path(None, None), Err(ProfileError::NoHome)));
        assert!(resolve_path(None, None).unwrap_err().to_string().contains("HOME"));
    }

    #[test]
    fn save_load_remove_with_private_mode() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("sub/.deis/client.json");
        let p = Profile {
            username: "alice".into(),
            ssl_verify: true,
            controller: "http://127.0.0.1:8000".into(),
            token: "t0k".into(),
            response_limit: 100,
        };
        assert_eq!(load(&path).unwrap(), None);
        save(&path, &p).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(fs::metadata(path.parent().unwrap()).unwrap().permissions().mode() & 0o777, 0o700);
        assert_eq!(load(&path).unwrap(), Some(p.clone()));
        // Exactly the Workflow field names.
        let v: serde_json::Value = serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
        let mut keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        assert_eq!(keys, ["controller", "response_limit", "ssl_verify", "token", "username"]);
        // Overwrite keeps the mode, leaves no temp file.
        save(&path, &Profile { token: "new".into(), ..p }).unwrap();
        assert_eq!(load(&path).unwrap().unwrap().token, "new");
        assert_eq!(fs::read_dir(path.parent().unwrap()).unwrap().count(), 1);
        assert!(remove(&path).unwrap());
        assert!(!remove(&path).unwrap());

        fs::write(&path, "not json").unwrap();
        let err = load(&path).unwrap_err();
        assert!(matches!(err, ProfileError::Invalid { .. }), "{err:?}");
        assert!(err.to_string().contains("not valid"), "{err}");
        // A Workflow profile without the optional fields loads with defaults.
        fs::write(&path, r#"{"username":"bob","controller":"http://x","token":"t"}"#).unwrap();
        let q = load(&path).unwrap().unwrap();
        assert_eq!(q.response_limit, 100);
    }
}
