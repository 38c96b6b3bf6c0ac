//! The conversation between the builder and the `pre-receive` hook of a push.
//!
//! `git receive-pack` runs the hook with the pushed objects in quarantine: refs change
//! only if the hook exits 0. The hook is a small shell script; it talks to the daemon
//! over two named pipes in the push's private directory (`$DEIS_BUILDER_PUSH`):
//!
//! - `to-builder`: the hook writes the ref updates git gave it (`<old> <new> <ref>`
//!   lines, then `end`), and later `archived` or `failed`;
//! - `from-builder`: the daemon writes `say <text>` (shown to the pusher as a
//!   `remote:` line), `archive <sha>` (the hook writes `git archive` of that commit to
//!   `source.tar.gz`, which only it can do: the objects are in its quarantine), and at
//!   last `exit <code>`.

use tokio::io::{AsyncBufRead, AsyncBufReadExt};

/// The `pre-receive` hook installed in every app repository.
pub const PRE_RECEIVE: &str = r#"#!/bin/sh
# Deis builder: hands this push to the daemon that runs it and relays its verdict.
d="$DEIS_BUILDER_PUSH"
if [ -z "$d" ] || [ ! -p "$d/to-builder" ]; then
  echo "this repository takes pushes through the Deis builder only" >&2
  exit 1
fi
{ cat; echo end; } > "$d/to-builder"
status=1
while IFS= read -r line; do
  case "$line" in
    "say "*) printf '%s\n' "${line#say }" ;;
    "archive "*)
      if git archive --format=tar.gz -1 -o "$d/source.tar.gz" "${line#archive }"; then
        echo archived > "$d/to-builder"
      else
        echo failed > "$d/to-builder"
      fi ;;
    "exit "*) status="${line#exit }"; break ;;
  esac
done < "$d/from-builder"
exit "$status"
"#;

/// Most ref updates one push may carry (one branch is deployed; the rest are refused).
pub const MAX_UPDATES: usize = 64;
/// Longest line the hook may write.
pub const MAX_LINE_BYTES: usize = 4096;

/// One ref update of a push, as git hands it to `pre-receive`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefUpdate {
    /// The ref's value before (all zeros: the ref is created).
    pub old: String,
    /// The ref's value after (all zeros: the ref is deleted).
    pub new: String,
    /// The full ref name, e.g. `refs/heads/main`.
    pub name: String,
}

impl RefUpdate {
    /// Parses `<old> <new> <ref>`; object ids are 40 (SHA-1) or 64 (SHA-256) hex digits.
    pub fn parse(line: &str) -> Option<Self> {
        let mut parts = line.splitn(3, ' ');
        let (old, new, name) = (parts.next()?, parts.next()?, parts.next()?);
        let oid = |s: &str| matches!(s.len(), 40 | 64) && s.bytes().all(|b| b.is_ascii_hexdigit());
        let name_ok = name.starts_with("refs/") && !name.chars().any(|c| c.is_control() || c == ' ');
        (oid(old) && oid(new) && name_ok).then(|| Self { old: old.into(), new: new.into(), name: name.into() })
    }

    /// The update deletes the ref.
    pub fn deletes(&self) -> bool {
        self.new.bytes().all(|b| b == b'0')
    }
}

/// Reads one line of at most [`MAX_LINE_BYTES`]; `None` at end of input.
pub async fn read_line(reader: &mut (impl AsyncBufRead + Unpin)) -> std::io::Result<Option<String>> {
    let mut line = Vec::new();
    loop {
        let buf = reader.fill_buf().await?;
        if buf.is_empty() {
            return Ok((!line.is_empty()).then(|| String::from_utf8_lossy(&line).into_owned()));
        }
        let (take, done) = match buf.iter().position(|b| *b == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        line.extend_from_slice(&buf[..take]);
        reader.consume(take);
        if line.len() > MAX_LINE_BYTES {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "hook line too long"));
        }
        if done {
            line.pop();
            return Ok(Some(String::from_utf8_lossy(&line).into_owned()));
        }
    }
}

/// Reads the ref updates up to `end`: at most [`MAX_UPDATES`], each well formed.
pub async fn read_updates(reader: &mut (impl AsyncBufRead + Unpin)) -> Result<Vec<RefUpdate>, String> {
    let mut updates = Vec::new();
    loop {
        let line = read_line(reader).await.map_err(|e| format!("reading the ref updates: {e}"))?;
        match line.as_deref() {
            None => return Err("the hook ended before listing the ref updates".into()),
            Some("end") => return Ok(updates),
            Some(l) => {
                if updates.len() == MAX_UPDATES {
                    return Err(format!("more than {MAX_UPDATES} refs in one push; push one branch"));
                }
                updates.push(RefUpdate::parse(l).ok_or("git handed the hook a malformed ref update")?);
            }
        }
    }
}

/// Lines for the hook to show: each line of `text` as a `say` line.
pub fn say(text: &str) -> String {
    text.lines().map(|l| format!("say {}\n", l.replace(|c: char| c.is_control() && c != '\t', ""))).collect()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const A: &str = "1111111111111111111111111111111111111111";
    const Z: &str = "0000000000000000000000000000000000000000";

    #[test]
    fn updates_are_parsed_and_checked() {
        let u = RefUpdate::parse(&format!("{Z} {A} refs/heads/main")).unwrap();
        assert_eq!((u.old.as_str(), u.new.as_str(), u.name.as_str()), (Z, A, "refs/heads/main"));
        assert!(!u.deletes());
        assert!(RefUpdate::parse(&format!("{A} {Z} refs/heads/main")).unwrap().deletes());
        assert!(RefUpdate::parse(&format!("{A} {A} main")).is_none(), "full ref names only");
        assert!(RefUpdate::parse(&format!("{A} xyz refs/heads/main")).is_none());
        assert!(RefUpdate::parse(&format!("{A} {A} refs/heads/a b")).is_none());
        assert!(RefUpdate::parse("").is_none());
    }

    #[tokio::test]
    async fn updates_end_at_end_and_are_bounded() {
        let input = format!("{Z} {A} refs/heads/main\nend\nleft over\n");
        let mut r = tokio::io::BufReader::new(input.as_bytes());
        assert_eq!(read_updates(&mut r).await.unwrap().len(), 1);
        assert_eq!(read_line(&mut r).await.unwrap().as_deref(), Some("left over"));
        assert_eq!(read_line(&mut r).await.unwrap(), None);

        let many = format!("{Z} {A} refs/heads/main\n").repeat(MAX_UPDATES + 1) + "end\n";
        let e = read_updates(&mut tokio::io::BufReader::new(many.as_bytes())).await.unwrap_err();
        assert!(e.contains("push one branch"), "{e}");
        let long = "x".repeat(MAX_LINE_BYTES + 2);
        assert!(read_line(&mut tokio::io::BufReader::new(long.as_bytes())).await.is_err());
        let e = read_updates(&mut tokio::io::BufReader::new(&b"garbage\nend\n"[..])).await.unwrap_err();
        assert!(e.contains("malformed"), "{e}");
        let e = read_updates(&mut tokio::io::BufReader::new(&b""[..])).await.unwrap_err();
        assert!(e.contains("ended"), "{e}");
    }

    #[test]
    fn say_lines_carry_no_control_characters() {
        assert_eq!(say("a\nb\u{1b}[31m"), "say a\nsay b[31m\n");
    }

    proptest! {
        #[test]
        fn any_hook_output_is_read_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..9000)) {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let result = rt.block_on(read_updates(&mut tokio::io::BufReader::new(&bytes[..])));
            if let Ok(updates) = result {
                prop_assert!(updates.len() <= MAX_UPDATES);
                for u in updates {
                    prop_assert!(u.name.starts_with("refs/"));
                }
            }
        }

        #[test]
        fn parsed_updates_round_trip(old in "[0-9a-f]{40}", new in "[0-9a-f]{40}", name in "refs/heads/[a-z0-9/_.-]{1,30}") {
            let u = RefUpdate::parse(&format!("{old} {new} {name}")).unwrap();
            prop_assert_eq!((u.old, u.new, u.name), (old, new, name));
        }
    }
}
