//! Parsers for the CLI's argument forms (`KEY=VALUE`, `type=N`, `vN`, unit names),
//! used as clap value parsers so bad input is a usage error (exit 2) with a clear message.

use deis_core::validate;

/// Largest number of units of one type a scale command may ask for.
pub const MAX_SCALE: u32 = 1000;

/// A `KEY=VALUE` config pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The variable name.
    pub key: String,
    /// Its value (may be empty or contain `=`).
    pub value: String,
}

/// Parses `KEY=VALUE` (split at the first `=`); the key must be a valid config key.
pub fn key_value(s: &str) -> Result<KeyValue, String> {
    let Some((key, value)) = s.split_once('=') else {
        return Err(format!("expected KEY=VALUE (e.g. GREETING=hello), got {s:?}: the `=` is missing"));
    };
    validate::config_key(key).map_err(|e| e.message)?;
    validate::config_value(key, value).map_err(|e| e.message)?;
    Ok(KeyValue { key: key.to_string(), value: value.to_string() })
}

/// Parses a config key for `config:unset`.
pub fn config_key(s: &str) -> Result<String, String> {
    if s.contains('=') {
        return Err(format!("config:unset takes variable names only, got {s:?}: drop the `=` and the value"));
    }
    validate::config_key(s).map_err(|e| e.message)?;
    Ok(s.to_string())
}

/// A `type=N` scale request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScaleArg {
    /// The process type.
    pub proc_type: String,
    /// How many units.
    pub count: u32,
}

/// Parses `type=N` with N a whole number from 0 to [`MAX_SCALE`].
pub fn scale_arg(s: &str) -> Result<ScaleArg, String> {
    let Some((t, n)) = s.split_once('=') else {
        return Err(format!("expected TYPE=COUNT (e.g. web=3), got {s:?}: say how many units of {s} to run"));
    };
    validate::proc_type(t).map_err(|e| e.message)?;
    let count = match n.trim().parse::<i64>() {
        Ok(c) if c < 0 => return Err(format!("the count for {t} must be 0 or more, got {n}")),
        Ok(c) if c > i64::from(MAX_SCALE) => {
            return Err(format!("the count for {t} must be at most {MAX_SCALE}, got {n}"));
        }
        Ok(c) => c as u32,
        Err(_) => return Err(format!("the count for {t} must be a whole number (e.g. {t}=3), got {n:?}")),
    };
    Ok(ScaleArg { proc_type: t.to_string(), count })
}

/// A `type=VALUE` limit; the value is checked once we know whether it is memory or cpu.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitArg {
    /// The process type.
    pub proc_type: String,
    /// The limit as written (`512M`, `1G/2G`, `500m`).
    pub value: String,
}

/// Parses `type=VALUE` for `limits:set`.
pub fn limit_arg(s: &str) -> Result<LimitArg, String> {
    let Some((t, v)) = s.split_once('=') else {
        return Err(format!("expected TYPE=LIMIT (e.g. web=512M, or with --cpu web=500m), got {s:?}"));
    };
    validate::proc_type(t).map_err(|e| e.message)?;
    if v.is_empty() {
        return Err(format!("no limit given for {t}: write e.g. {t}=512M"));
    }
    Ok(LimitArg { proc_type: t.to_string(), value: v.to_string() })
}

/// Parses a process type.
pub fn proc_type(s: &str) -> Result<String, String> {
    validate::proc_type(s).map_err(|e| e.message)?;
    Ok(s.to_string())
}

/// Parses a release version `v3` or `3` (at least 1).
pub fn release_version(s: &str) -> Result<u64, String> {
    let digits = s.strip_prefix('v').or_else(|| s.strip_prefix('V')).unwrap_or(s);
    match digits.parse::<u64>() {
        Ok(0) | Err(_) => Err(format!("expected a release version like v3, got {s:?}")),
        Ok(n) => Ok(n),
    }
}

/// What `ps:restart` was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestartArg {
    /// A process type (`web`).
    Type(String),
    /// A unit name (`hello.web.1`) and its type.
    Unit {
        /// The unit's process type.
        proc_type: String,
        /// The unit's name.
        name: String,
    },
}

/// Parses a process type (`web`) or a unit name `<app>.<type>.<n>` (`hello.web.1`).
pub fn restart_arg(s: &str) -> Result<RestartArg, String> {
    if !s.contains('.') {
        return proc_type(s).map(RestartArg::Type);
    }
    let parts: Vec<&str> = s.split('.').collect();
    let bad = || format!("expected a process type (web) or a unit name like hello.web.1, got {s:?}");
    let [app, t, n] = parts.as_slice() else { return Err(bad()) };
    let app_ok = !app.is_empty() && app.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-');
    if !app_ok || validate::proc_type(t).is_err() || n.parse::<u32>().is_err() {
        return Err(bad());
    }
    Ok(RestartArg::Unit { proc_type: (*t).to_string(), name: s.to_string() })
}

/// Parses `--procfile` text: `type: command` lines, as in a Procfile.
pub fn procfile(s: &str) -> Result<std::collections::BTreeMap<String, String>, String> {
    deis_core::procfile::parse(s).map_err(|e| format!("invalid --procfile: {}", e.message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_values() {
        assert_eq!(key_value("GREETING=hello").unwrap(), KeyValue { key: "GREETING".into(), value: "hello".into() });
        assert_eq!(key_value("URL=a=b").unwrap().value, "a=b");
        assert_eq!(key_value("EMPTY=").unwrap().value, "");
        let e = key_value("FOO").unwrap_err();
        assert!(e.contains("KEY=VALUE") && e.contains("FOO"), "{e}");
        assert!(key_value("=x").is_err());
        assert!(key_value("1BAD=x").is_err());
        assert!(key_value("A-B=x").is_err());
        assert!(key_value("PORT=99999").unwrap_err().contains("PORT"));
        assert!(config_key("FOO").is_ok());
        assert!(config_key("FOO=1").unwrap_err().contains("names only"));
    }

    #[test]
    fn scale_args() {
        assert_eq!(scale_arg("web=3").unwrap(), ScaleArg { proc_type: "web".into(), count: 3 });
        assert_eq!(scale_arg("worker=0").unwrap().count, 0);
        assert!(scale_arg("web").unwrap_err().contains("TYPE=COUNT"));
        assert!(scale_arg("web=-1").unwrap_err().contains("0 or more"));
        assert!(scale_arg("web=abc").unwrap_err().contains("whole number"));
        assert!(scale_arg("web=1.5").unwrap_err().contains("whole number"));
        assert!(scale_arg("web=").is_err());
        assert!(scale_arg("web=100000").unwrap_err().contains("at most"));
        assert!(scale_arg("Web=1").is_err());
        assert!(scale_arg("=1").is_err());
    }

    #[test]
    fn limits_versions_and_units() {
        assert_eq!(limit_arg("web=512M").unwrap(), LimitArg { proc_type: "web".into(), value: "512M".into() });
        assert!(limit_arg("web").is_err());
        assert!(limit_arg("web=").is_err());
        assert_eq!(release_version("v3").unwrap(), 3);
        assert_eq!(release_version("12").unwrap(), 12);
        assert!(release_version("v0").is_err());
        assert!(release_version("three").is_err());
        assert_eq!(restart_arg("web").unwrap(), RestartArg::Type("web".into()));
        assert_eq!(
            restart_arg("hello.web.2").unwrap(),
            RestartArg::Unit { proc_type: "web".into(), name: "hello.web.2".into() }
        );
        assert!(restart_arg("hello.web").is_err());
        assert!(restart_arg("hello.web.x").is_err());
        assert!(restart_arg("Web").is_err());
        assert_eq!(procfile("web: ./server").unwrap()["web"], "./server");
        assert!(procfile("nonsense").is_err());
    }
}
