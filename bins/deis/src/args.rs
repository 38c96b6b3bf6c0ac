//! Parsers for the CLI's argument forms (`KEY=VALUE`, `type=N`, `vN`, unit names),
//! used as clap value parsers so bad input is a usage error (exit 2) with a clear message.

use std::collections::BTreeMap;

use deis_core::{ProcessType, ValidationError, validate};

/// Largest number of units of one type a scale command may ask for.
pub const MAX_SCALE: u32 = 1000;

/// An argument that is not in the form its command takes. Each message says what was
/// expected, with an example.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgError {
    /// A name or value the platform would refuse (config key, process type, ...).
    #[error("{}", .0.message)]
    Invalid(#[from] ValidationError),
    /// `config:set` got a word without `=`.
    #[error("expected KEY=VALUE (e.g. GREETING=hello), got {0:?}: the `=` is missing")]
    NotKeyValue(String),
    /// `config:unset` got `KEY=VALUE`.
    #[error("config:unset takes variable names only, got {0:?}: drop the `=` and the value")]
    UnsetWithValue(String),
    /// `ps:scale` got a word without `=`.
    #[error("expected TYPE=COUNT (e.g. web=3), got {0:?}: say how many units of {0} to run")]
    NotScale(String),
    /// A scale count below zero.
    #[error("the count for {proc_type} must be 0 or more, got {count}")]
    NegativeCount {
        /// The process type.
        proc_type: ProcessType,
        /// The count as written.
        count: String,
    },
    /// A scale count above [`MAX_SCALE`].
    #[error("the count for {proc_type} must be at most {MAX_SCALE}, got {count}")]
    CountTooLarge {
        /// The process type.
        proc_type: ProcessType,
        /// The count as written.
        count: String,
    },
    /// A scale count that is not a whole number.
    #[error("the count for {proc_type} must be a whole number (e.g. {proc_type}=3), got {count:?}")]
    NotACount {
        /// The process type.
        proc_type: ProcessType,
        /// The count as written.
        count: String,
    },
    /// `limits:set` got a word without `=`.
    #[error("expected TYPE=LIMIT (e.g. web=512M, or with --cpu web=500m), got {0:?}")]
    NotLimit(String),
    /// `limits:set` got `TYPE=` with nothing after it.
    #[error("no limit given for {0}: write e.g. {0}=512M")]
    EmptyLimit(ProcessType),
    /// Not a release version.
    #[error("expected a release version like v3, got {0:?}")]
    NotVersion(String),
    /// Neither a process type nor a unit name.
    #[error("expected a process type (web) or a unit name like hello.web.1, got {0:?}")]
    NotRestartTarget(String),
    /// `labels:set` got a word without `=`.
    #[error("expected KEY=VALUE (e.g. team=web), got {0:?}")]
    NotLabel(String),
    /// `--procfile` is not `type: command` lines.
    #[error("invalid --procfile: {}", .0.message)]
    Procfile(#[source] ValidationError),
}

type Result<T> = std::result::Result<T, ArgError>;

/// A `KEY=VALUE` config pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The variable name.
    pub key: String,
    /// Its value (may be empty or contain `=`).
    pub value: String,
}

/// Parses `KEY=VALUE` (split at the first `=`); the key must be a valid config key.
pub fn key_value(s: &str) -> Result<KeyValue> {
    let Some((key, value)) = s.split_once('=') else {
        return Err(ArgError::NotKeyValue(s.to_string()));
    };
    validate::config_key(key)?;
    validate::config_value(key, value)?;
    Ok(KeyValue { key: key.to_string(), value: value.to_string() })
}

/// Parses a config key for `config:unset`.
pub fn config_key(s: &str) -> Result<String> {
    if s.contains('=') {
        return Err(ArgError::UnsetWithValue(s.to_string()));
    }
    validate::config_key(s)?;
    Ok(s.to_string())
}

/// A `type=N` scale request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScaleArg {
    /// The process type.
    pub proc_type: ProcessType,
    /// How many units.
    pub count: u32,
}

/// Parses `type=N` with N a whole number from 0 to [`MAX_SCALE`].
pub fn scale_arg(s: &str) -> Result<ScaleArg> {
    let Some((t, n)) = s.split_once('=') else {
        return Err(ArgError::NotScale(s.to_string()));
    };
    let proc_type = ProcessType::new(t)?;
    let count = n.to_string();
    let count = match n.trim().parse::<i64>() {
        Ok(c) if c < 0 => return Err(ArgError::NegativeCount { proc_type, count }),
        Ok(c) if c > i64::from(MAX_SCALE) => return Err(ArgError::CountTooLarge { proc_type, count }),
        Ok(c) => c as u32,
        Err(_) => return Err(ArgError::NotACount { proc_type, count }),
    };
    Ok(ScaleArg { proc_type, count })
}

/// A `type=VALUE` limit; the value is checked once we know whether it is memory or cpu.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitArg {
    /// The process type.
    pub proc_type: ProcessType,
    /// The limit as written (`512M`, `1G/2G`, `500m`).
    pub value: String,
}

/// Parses `type=VALUE` for `limits:set`.
pub fn limit_arg(s: &str) -> Result<LimitArg> {
    let Some((t, v)) = s.split_once('=') else {
        return Err(ArgError::NotLimit(s.to_string()));
    };
    let proc_type = ProcessType::new(t)?;
    if v.is_empty() {
        return Err(ArgError::EmptyLimit(proc_type));
    }
    Ok(LimitArg { proc_type, value: v.to_string() })
}

/// Parses a process type.
pub fn proc_type(s: &str) -> Result<ProcessType> {
    Ok(ProcessType::new(s)?)
}

/// Parses a release version `v3` or `3` (at least 1).
pub fn release_version(s: &str) -> Result<u64> {
    let digits = s.strip_prefix('v').or_else(|| s.strip_prefix('V')).unwrap_or(s);
    match digits.parse::<u64>() {
        Ok(0) | Err(_) => Err(ArgError::NotVersion(s.to_string())),
        Ok(n) => Ok(n),
    }
}

/// What `ps:restart` was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestartArg {
    /// A process type (`web`).
    Type(ProcessType),
    /// A unit name (`hello.web.1`) and its type.
    Unit {
        /// The unit's process type.
        proc_type: ProcessType,
        /// The unit's name.
        name: String,
    },
}

/// Parses a process type (`web`) or a unit name `<app>.<type>.<n>` (`hello.web.1`).
pub fn restart_arg(s: &str) -> Result<RestartArg> {
    if !s.contains('.') {
        return proc_type(s).map(RestartArg::Type);
    }
    let bad = || ArgError::NotRestartTarget(s.to_string());
    let parts: Vec<&str> = s.split('.').collect();
    let [app, t, n] = parts.as_slice() else { return Err(bad()) };
    let app_ok = !app.is_empty() && app.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-');
    let proc_type = ProcessType::new(*t).map_err(|_| bad())?;
    if !app_ok || n.parse::<u32>().is_err() {
        return Err(bad());
    }
    Ok(RestartArg::Unit { proc_type, name: s.to_string() })
}

/// Parses an allow-list entry: an IP address or CIDR range.
pub fn address_range(s: &str) -> Result<deis_core::AddressRange> {
    Ok(s.trim().parse()?)
}

/// Parses `KEY=VALUE` for `labels:set` (the controller checks the characters).
pub fn label(s: &str) -> Result<(String, String)> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(ArgError::NotLabel(s.to_string())),
    }
}

/// Parses `--procfile` text: `type: command` lines, as in a Procfile.
pub fn procfile(s: &str) -> Result<BTreeMap<ProcessType, String>> {
    deis_core::procfile::parse(s).map_err(ArgError::Procfile)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_values() {
        assert_eq!(key_value("GREETING=hello").unwrap(), KeyValue { key: "GREETING".into(), value: "hello".into() });
        assert_eq!(key_value("URL=a=b").unwrap().value, "a=b");
        assert_eq!(key_value("EMPTY=").unwrap().value, "");
        let e = key_value("FOO").unwrap_err().to_string();
        assert!(e.contains("KEY=VALUE") && e.contains("FOO"), "{e}");
        assert!(key_value("=x").is_err());
        assert!(key_value("1BAD=x").is_err());
        assert!(key_value("A-B=x").is_err());
        assert!(key_value("PORT=99999").unwrap_err().to_string().contains("PORT"));
        assert!(config_key("FOO").is_ok());
        assert_eq!(config_key("FOO=1"), Err(ArgError::UnsetWithValue("FOO=1".into())));
        assert!(config_key("FOO=1").unwrap_err().to_string().contains("names only"));
    }

    #[test]
    fn scale_args() {
        assert_eq!(scale_arg("web=3").unwrap(), ScaleArg { proc_type: "web".parse().unwrap(), count: 3 });
        assert_eq!(scale_arg("worker=0").unwrap().count, 0);
        assert!(scale_arg("web").unwrap_err().to_string().contains("TYPE=COUNT"));
        assert!(scale_arg("web=-1").unwrap_err().to_string().contains("0 or more"));
        assert!(scale_arg("web=abc").unwrap_err().to_string().contains("whole number"));
        assert!(scale_arg("web=1.5").unwrap_err().to_string().contains("whole number"));
        assert!(scale_arg("web=").is_err());
        assert!(scale_arg("web=100000").unwrap_err().to_string().contains("at most"));
        assert!(scale_arg("Web=1").is_err());
        assert!(scale_arg("=1").is_err());
    }

    #[test]
    fn limits_versions_and_units() {
        assert_eq!(
            limit_arg("web=512M").unwrap(),
            LimitArg { proc_type: "web".parse().unwrap(), value: "512M".into() }
        );
        assert!(limit_arg("web").is_err());
        assert!(limit_arg("web=").is_err());
        assert_eq!(release_version("v3").unwrap(), 3);
        assert_eq!(release_version("12").unwrap(), 12);
        assert!(release_version("v0").is_err());
        assert!(release_version("three").is_err());
        assert_eq!(restart_arg("web").unwrap(), RestartArg::Type("web".parse().unwrap()));
        assert_eq!(
            restart_arg("hello.web.2").unwrap(),
            RestartArg::Unit { proc_type: "web".parse().unwrap(), name: "hello.web.2".into() }
        );
        assert!(restart_arg("hello.web").is_err());
        assert!(restart_arg("hello.web.x").is_err());
        assert!(restart_arg("Web").is_err());
        assert_eq!(procfile("web: ./server").unwrap()["web"], "./server");
        assert!(procfile("nonsense").unwrap_err().to_string().starts_with("invalid --procfile: line 1"));
        assert!(scale_arg("Web=1").unwrap_err().to_string().contains("not a valid process type"));
    }
}

/// `deis updates:group` settings; those not given stay as they are.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct GroupSettings {
    /// The channel the group follows.
    #[arg(long)]
    pub channel: String,
    /// Most updates started per period.
    #[arg(long, value_name = "N")]
    pub max_updates_per_period: Option<u32>,
    /// The period (`15m`, `1h`).
    #[arg(long, value_parser = duration, value_name = "DURATION")]
    pub period: Option<std::time::Duration>,
    /// How long an instance has to finish an update (`1h`).
    #[arg(long, value_parser = duration, value_name = "DURATION")]
    pub update_timeout: Option<std::time::Duration>,
    /// Hours (UTC) updates may start in, `START-END` (`9-17`), or `any`.
    #[arg(long, value_parser = office_hours, value_name = "START-END")]
    pub office_hours: Option<OfficeHoursArg>,
    /// With --office-hours: Monday to Friday only.
    #[arg(long)]
    pub weekdays_only: bool,
    /// Halt the group on the first failure (`true`/`false`).
    #[arg(long, value_name = "BOOL")]
    pub safe_mode: Option<bool>,
}

/// `--office-hours`: hours, or `any` for none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OfficeHoursArg(pub Option<(u8, u8)>);

fn duration(s: &str) -> std::result::Result<std::time::Duration, String> {
    deis_core::time::parse_duration(s).map_err(|e| e.to_string())
}

fn office_hours(s: &str) -> std::result::Result<OfficeHoursArg, String> {
    if s == "any" {
        return Ok(OfficeHoursArg(None));
    }
    let bad = || format!("expected START-END hours in UTC (e.g. 9-17), or any; got {s:?}");
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let (a, b): (u8, u8) = (a.trim().parse().map_err(|_| bad())?, b.trim().parse().map_err(|_| bad())?);
    if a > 23 || b > 24 || a == b {
        return Err(bad());
    }
    Ok(OfficeHoursArg(Some((a, b))))
}
