//! Procfile parsing: `type: command` per line, as Heroku and Deis read it.

use std::collections::BTreeMap;

use super::ProcessType;
use super::validate::ValidationError;

/// Largest Procfile accepted.
pub const MAX_PROCFILE_BYTES: usize = 64 * 1024;

/// Parses a Procfile: one `type: command` per line; blank lines and `#` comments are
/// skipped; a process type may appear once. Errors name the line.
pub fn parse(text: &str) -> Result<BTreeMap<ProcessType, String>, ValidationError> {
    if text.len() > MAX_PROCFILE_BYTES {
        return Err(ValidationError::new("procfile", format!("Procfile is larger than {MAX_PROCFILE_BYTES} bytes")));
    }
    let mut out = BTreeMap::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let lineno = i + 1;
        let Some((ty, cmd)) = line.split_once(':') else {
            return Err(ValidationError::new(
                "procfile",
                format!("line {lineno}: expected `type: command`, got {line:?}"),
            ));
        };
        let ty = ty.trim();
        let cmd = cmd.trim();
        let ty = ProcessType::new(ty)
            .map_err(|e| ValidationError::new("procfile", format!("line {lineno}: {}", e.message)))?;
        if cmd.is_empty() {
            return Err(ValidationError::new("procfile", format!("line {lineno}: process type {ty} has no command")));
        }
        if out.contains_key(&ty) {
            return Err(ValidationError::new("procfile", format!("line {lineno}: process type {ty} is defined twice")));
        }
        out.insert(ty, cmd.to_string());
    }
    if out.is_empty() {
        return Err(ValidationError::new("procfile", "Procfile defines no process type"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_heroku_style() {
        let p = parse("# comment\nweb: python3 app.py --port $PORT\n\nworker:  python3 worker.py\n").unwrap();
        assert_eq!(p["web"], "python3 app.py --port $PORT");
        assert_eq!(p["worker"], "python3 worker.py");
    }

    #[test]
    fn rejects_bad_lines() {
        assert!(parse("").is_err());
        assert!(parse("web python").unwrap_err().message.contains("line 1"));
        assert!(parse("web:\n").is_err());
        assert!(parse("web: a\nweb: b").unwrap_err().message.contains("twice"));
        assert!(parse("Web: a").is_err());
    }

    proptest! {
        #[test]
        fn roundtrip(entries in proptest::collection::btree_map("[a-z][a-z0-9]{0,8}", "[a-zA-Z0-9 $./-]{1,30}", 1..5)) {
            let entries: BTreeMap<ProcessType, String> = entries.into_iter()
                .filter(|(_, v)| !v.trim().is_empty())
                .map(|(k, v)| (ProcessType::new(k).unwrap(), v.trim().to_string()))
                .collect();
            prop_assume!(!entries.is_empty());
            let text: String = entries.iter().map(|(k, v)| format!("{k}: {v}\n")).collect();
            prop_assert_eq!(parse(&text).unwrap(), entries);
        }

        #[test]
        fn never_panics(s in "(?s).{0,200}") {
            let _ = parse(&s);
        }
    }
}
