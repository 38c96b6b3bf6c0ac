//! Validation of every name and value that reaches the platform from outside.
//!
//! Messages are the exact strings the Deis Workflow CLI recognises (see
//! `docs/CONTROLLER-API.md` §1.6) wherever one exists.

use std::fmt;

/// A value was rejected: `field` names the offending input, `message` says why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    /// The input field (`id`, `username`, `values`, `domain`, ...).
    pub field: String,
    /// What is wrong, in words a user can act on.
    pub message: String,
}

impl ValidationError {
    /// A rejection of `field` with `message`.
    pub fn new(field: impl fmt::Display, message: impl fmt::Display) -> Self {
        Self { field: field.to_string(), message: message.to_string() }
    }
}

type Result<T = ()> = std::result::Result<T, ValidationError>;

/// Names that can't be app ids because they are used by the platform itself.
pub const RESERVED_APP_NAMES: &[&str] =
    &["deis", "deis-builder", "deis-workflow-manager", "grafana", "www", "api", "router"];

/// An app id a new app may take: [`app_name_syntax`], and not one of
/// [`RESERVED_APP_NAMES`].
pub fn app_name(id: &str) -> Result {
    app_name_syntax(id)?;
    if RESERVED_APP_NAMES.contains(&id) {
        return Err(ValidationError::new("id", format!("{id} is a reserved name.")));
    }
    Ok(())
}

/// The form of an app id: `^[a-z]([a-z0-9-]*[a-z0-9])?$`, at most 63 characters (a DNS
/// label). What an [`AppName`](super::AppName) holds.
pub fn app_name_syntax(id: &str) -> Result {
    if id.is_empty() {
        return Err(ValidationError::new("id", "This field may not be blank."));
    }
    let b = id.as_bytes();
    let ok = b[0].is_ascii_lowercase()
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && *b.last().unwrap() != b'-';
    if !ok {
        return Err(ValidationError::new("id", "App name can only contain a-z (lowercase), 0-9 and hyphens"));
    }
    if id.len() > 63 {
        return Err(ValidationError::new("id", "App name must be at most 63 characters"));
    }
    Ok(())
}

/// A username: 1 to 150 characters among letters, digits and `@.+-_`.
pub fn username(name: &str) -> Result {
    if name.is_empty() {
        return Err(ValidationError::new("username", "This field may not be blank."));
    }
    if name.len() > 150 || !name.chars().all(|c| c.is_ascii_alphanumeric() || "@.+-_".contains(c)) {
        return Err(ValidationError::new(
            "username",
            "Enter a valid username. This value may contain only letters, numbers and @/./+/-/_ characters.",
        ));
    }
    Ok(())
}

/// A password: not blank, at most 1024 bytes (hashing cost is bounded).
pub fn password(pw: &str) -> Result {
    if pw.is_empty() {
        return Err(ValidationError::new("password", "This field may not be blank."));
    }
    if pw.len() > 1024 {
        return Err(ValidationError::new("password", "Ensure this field has no more than 1024 characters."));
    }
    Ok(())
}

/// An email address: `local@domain` with no spaces; empty is allowed.
pub fn email(addr: &str) -> Result {
    if addr.is_empty() {
        return Ok(());
    }
    let valid = addr.len() <= 254
        && !addr.chars().any(|c| c.is_whitespace() || c.is_control())
        && matches!(addr.split_once('@'), Some((l, d)) if !l.is_empty() && d.contains('.') && !d.starts_with('.') && !d.ends_with('.') && !d.contains('@'));
    if valid { Ok(()) } else { Err(ValidationError::new("email", "Enter a valid email address.")) }
}

/// A process type (`web`, `worker`, `clock-2`): `^[a-z0-9]+(-[a-z0-9]+)*$`, at most 63 characters.
pub fn proc_type(t: &str) -> Result {
    let ok = !t.is_empty()
        && t.len() <= 63
        && t.split('-')
            .all(|part| !part.is_empty() && part.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()));
    if ok {
        Ok(())
    } else {
        Err(ValidationError::new(
            "type",
            format!(
                "{t:?} is not a valid process type: use a-z (lowercase), 0-9 and single hyphens, e.g. web or worker"
            ),
        ))
    }
}

/// A config key: `^[a-z_][a-z0-9_]*$` (case-insensitive), at most 256 characters.
pub fn config_key(key: &str) -> Result {
    let b = key.as_bytes();
    let ok = !b.is_empty()
        && key.len() <= 256
        && (b[0].is_ascii_alphabetic() || b[0] == b'_')
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_');
    if ok {
        Ok(())
    } else {
        Err(ValidationError::new(
            "values",
            format!(
                "Config keys must start with a letter or underscore and contain only letters, digits and underscores: {key:?}"
            ),
        ))
    }
}

/// A config value: at most 64 KiB, no NUL byte (it becomes an environment variable).
pub fn config_value(key: &str, value: &str) -> Result {
    if value.len() > 64 * 1024 {
        return Err(ValidationError::new("values", format!("{key}: values are limited to 65536 bytes")));
    }
    if value.contains('\0') {
        return Err(ValidationError::new("values", format!("{key}: values may not contain a NUL byte")));
    }
    if key == "PORT" && !matches!(value.parse::<u32>(), Ok(1..=65535)) {
        return Err(ValidationError::new("values", "PORT needs to be a number between 1 and 65535"));
    }
    Ok(())
}

/// A domain name: DNS labels of `a-z0-9-` joined by dots, at most 253 characters; a
/// leading `*.` wildcard is allowed but a bare `*` is not.
pub fn domain(d: &str) -> Result {
    if d.is_empty() {
        return Err(ValidationError::new("domain", "This field may not be blank."));
    }
    if d.len() > 253 {
        return Err(ValidationError::new("domain", "Hostname must be 253 characters or fewer."));
    }
    let rest = d.strip_prefix("*.").unwrap_or(d);
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
    };
    if rest.split('.').all(label_ok) {
        Ok(())
    } else {
        Err(ValidationError::new("domain", "Hostname does not look valid."))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_names() {
        for ok in ["a", "hello", "my-app-2", &"a".repeat(63)] {
            assert_eq!(app_name(ok), Ok(()), "{ok}");
        }
        for bad in ["", "1abc", "Hello", "my_app", "app-", "-app", "a b", &"a".repeat(64), "deis"] {
            assert!(app_name(bad).is_err(), "{bad}");
        }
        assert_eq!(app_name("UP").unwrap_err().message, "App name can only contain a-z (lowercase), 0-9 and hyphens");
    }

    #[test]
    fn usernames_emails() {
        assert!(username("alice@x.org").is_ok());
        assert!(username("al ice").is_err());
        assert!(username("").is_err());
        assert!(email("a@b.co").is_ok());
        assert!(email("").is_ok());
        assert!(email("nope").is_err());
        assert!(email("a@b").is_err());
    }

    #[test]
    fn config_keys_and_values() {
        assert!(config_key("GREETING").is_ok());
        assert!(config_key("_x1").is_ok());
        assert!(config_key("1X").is_err());
        assert!(config_key("A-B").is_err());
        assert!(config_value("PORT", "70000").is_err());
        assert!(config_value("PORT", "5000").is_ok());
        assert!(config_value("X", "a\0b").is_err());
    }

    #[test]
    fn domains_and_types() {
        assert!(domain("www.example.com").is_ok());
        assert!(domain("*.example.com").is_ok());
        assert!(domain("*").is_err());
        assert!(domain("exa mple.com").is_err());
        assert!(domain("a..b").is_err());
        assert!(proc_type("web").is_ok());
        assert!(proc_type("clock-2").is_ok());
        assert!(proc_type("Web").is_err());
        assert!(proc_type("a--b").is_err());
    }
}
