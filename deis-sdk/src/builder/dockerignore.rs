//! `.dockerignore`: which files of a pushed tree stay out of a Dockerfile build's
//! context, by Docker's rules: a line per pattern (`#` comments, blank lines skipped,
//! a leading `/` ignored), `*` and `?` within a path segment, `[a-z]` classes, `\`
//! escapes, `**` for any number of segments, `!` for an exception; the last pattern
//! that matches a path (or one of its parent directories) decides. The `Dockerfile`
//! and `.dockerignore` themselves are always sent, as the Docker CLI does.

use std::io::Read;

/// Largest `.dockerignore` read (a bigger one is refused with its size).
pub const MAX_DOCKERIGNORE_BYTES: usize = 64 << 10;
/// Most patterns of one `.dockerignore`.
pub const MAX_PATTERNS: usize = 1000;
/// Most segments of one pattern.
const MAX_SEGMENTS: usize = 64;

/// The patterns of a `.dockerignore`.
#[derive(Debug, Clone, Default)]
pub struct DockerIgnore {
    patterns: Vec<Pattern>,
}

#[derive(Debug, Clone)]
struct Pattern {
    segments: Vec<Segment>,
    /// `!`: an exception (matching paths are kept).
    keep: bool,
}

#[derive(Debug, Clone)]
enum Segment {
    /// `**`: any number of segments.
    Any,
    Glob(Vec<Token>),
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Literal(char),
    /// `?`
    One,
    /// `*`
    Many,
    /// `[...]`: ranges, negated with `^` or `!`.
    Class(Vec<(char, char)>, bool),
}

impl DockerIgnore {
    /// Parses `text`; more than [`MAX_PATTERNS`] patterns, or text over
    /// [`MAX_DOCKERIGNORE_BYTES`], is an error saying so.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.len() > MAX_DOCKERIGNORE_BYTES {
            return Err(format!(".dockerignore is larger than {} KiB", MAX_DOCKERIGNORE_BYTES >> 10));
        }
        let mut patterns = Vec::new();
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
            let (keep, line) = match line.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, line),
            };
            let segments: Vec<Segment> = line
                .split('/')
                .filter(|s| !s.is_empty() && *s != ".")
                .map(|s| if s == "**" { Segment::Any } else { Segment::Glob(tokens(s)) })
                .collect();
            if segments.is_empty() {
                continue;
            }
            if segments.len() > MAX_SEGMENTS {
                return Err(format!(".dockerignore: the pattern {line:?} has more than {MAX_SEGMENTS} parts"));
            }
            patterns.push(Pattern { segments, keep });
            if patterns.len() > MAX_PATTERNS {
                return Err(format!(".dockerignore has more than {MAX_PATTERNS} patterns"));
            }
        }
        Ok(Self { patterns })
    }

    /// Whether `path` (relative, `/`-separated) stays out of the context.
    pub fn excludes(&self, path: &str) -> bool {
        let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty() && *s != ".").collect();
        if matches!(parts.as_slice(), ["Dockerfile"] | [".dockerignore"]) {
            return false;
        }
        let mut excluded = false;
        for p in &self.patterns {
            // The path itself or one of its parent directories.
            if (1..=parts.len()).any(|n| matches_path(&p.segments, &parts[..n])) {
                excluded = !p.keep;
            }
        }
        excluded
    }

    /// Whether there is no pattern at all.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// The gzipped tar `archive` without the entries this excludes. The archive has
    /// been checked already (its size and entries are bounded).
    pub fn filter_archive(&self, archive: &[u8]) -> std::io::Result<Vec<u8>> {
        let mut input = tar::Archive::new(flate2::read::GzDecoder::new(archive));
        let mut output = tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast()));
        for entry in input.entries()? {
            let mut entry = entry?;
            let path = entry.path()?.to_string_lossy().into_owned();
            if self.excludes(&path) {
                continue;
            }
            let mut header = entry.header().clone();
            let mut data = Vec::new();
            entry.read_to_end(&mut data)?;
            output.append_data(&mut header, &path, data.as_slice())?;
        }
        output.into_inner()?.finish()
    }
}

/// `.dockerignore` of a checked gzipped tar, if it has one at its root.
pub fn read_from_archive(archive: &[u8]) -> Result<Option<DockerIgnore>, String> {
    let mut input = tar::Archive::new(flate2::read::GzDecoder::new(archive));
    let entries = input.entries().map_err(|e| format!("reading the archive: {e}"))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("reading the archive: {e}"))?;
        let path = entry.path().map(|p| p.to_string_lossy().trim_start_matches("./").to_string()).unwrap_or_default();
        if path != ".dockerignore" || entry.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let mut text = String::new();
        entry
            .take(MAX_DOCKERIGNORE_BYTES as u64 + 1)
            .read_to_string(&mut text)
            .map_err(|e| format!(".dockerignore could not be read as UTF-8 text: {e}"))?;
        return DockerIgnore::parse(&text).map(Some);
    }
    Ok(None)
}

fn tokens(segment: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let mut chars = segment.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '*' => out.push(Token::Many),
            '?' => out.push(Token::One),
            '\\' => out.push(Token::Literal(chars.next().unwrap_or('\\'))),
            '[' => {
                let negated = matches!(chars.peek(), Some('^' | '!'));
                if negated {
                    chars.next();
                }
                let mut ranges = Vec::new();
                let mut closed = false;
                while let Some(c) = chars.next() {
                    if c == ']' {
                        closed = true;
                        break;
                    }
                    let c = if c == '\\' { chars.next().unwrap_or('\\') } else { c };
                    if chars.peek() == Some(&'-') {
                        chars.next();
                        match chars.next() {
                            Some(']') | None => {
                                ranges.extend([(c, c), ('-', '-')]);
                                closed = true;
                                break;
                            }
                            Some(end) => ranges.push((c, end)),
                        }
                    } else {
                        ranges.push((c, c));
                    }
                }
                // An unclosed class matches nothing, as Go's filepath.Match fails.
                out.push(if closed { Token::Class(ranges, negated) } else { Token::Class(Vec::new(), false) });
            }
            c => out.push(Token::Literal(c)),
        }
    }
    out
}

/// Whether `segments` match all of `parts` (`**` any number of them).
fn matches_path(segments: &[Segment], parts: &[&str]) -> bool {
    matches_sequence(
        segments,
        parts,
        |s| matches!(s, Segment::Any),
        |s, part| match s {
            Segment::Glob(tokens) => matches_segment(tokens, part),
            Segment::Any => true,
        },
    )
}

/// Whether `tokens` match all of `text` (one path segment).
fn matches_segment(tokens: &[Token], text: &str) -> bool {
    let chars: Vec<char> = text.chars().collect();
    matches_sequence(
        tokens,
        &chars,
        |t| *t == Token::Many,
        |t, c| match t {
            Token::Literal(l) => l == c,
            Token::Class(ranges, negated) => ranges.iter().any(|(a, b)| (*a..=*b).contains(c)) != *negated,
            Token::One | Token::Many => true,
        },
    )
}

/// Whether `pattern` matches all of `text`, where an item that `is_run` matches any
/// number of text items and any other matches exactly one it `accepts`. Dynamic
/// programming: time bounded by the product of the lengths, whatever the pattern.
fn matches_sequence<P, T>(
    pattern: &[P],
    text: &[T],
    is_run: impl Fn(&P) -> bool,
    accepts: impl Fn(&P, &T) -> bool,
) -> bool {
    // can[i][j]: pattern[i..] matches text[j..].
    let (n, m) = (pattern.len(), text.len());
    let mut can = vec![vec![false; m + 1]; n + 1];
    can[n][m] = true;
    for i in (0..n).rev() {
        for j in (0..=m).rev() {
            can[i][j] = if is_run(&pattern[i]) {
                can[i + 1][j] || (j < m && can[i][j + 1])
            } else {
                j < m && can[i + 1][j + 1] && accepts(&pattern[i], &text[j])
            };
        }
    }
    can[0][0]
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn ignore(text: &str) -> DockerIgnore {
        DockerIgnore::parse(text).unwrap()
    }

    #[test]
    fn patterns_follow_dockers_rules() {
        let d = ignore("# secrets\n.git\n/node_modules\n*.log\n!keep.log\ndocs/**/*.md\ntmp?\n[a-c]x\n");
        assert!(d.excludes(".git") && d.excludes(".git/config"), "a directory and what is in it");
        assert!(d.excludes("node_modules/x/y.js"));
        assert!(d.excludes("debug.log") && !d.excludes("keep.log"), "the last match decides");
        assert!(!d.excludes("sub/debug.log"), "* stays within a segment of the root");
        assert!(d.excludes("docs/a.md") && d.excludes("docs/a/b/c.md") && !d.excludes("docs/a.txt"));
        assert!(d.excludes("tmp1") && !d.excludes("tmp12"));
        assert!(d.excludes("bx") && !d.excludes("dx"));
        assert!(!d.excludes("src/main.rs"));
        let all = ignore("*\n");
        assert!(!all.excludes("Dockerfile") && !all.excludes(".dockerignore"), "always sent");
        assert!(all.excludes("index.html"));
        assert!(ignore("**/secret").excludes("a/b/secret") && ignore("**/secret").excludes("secret"));
        assert!(ignore("a\\*b").excludes("a*b") && !ignore("a\\*b").excludes("axb"));
    }

    #[test]
    fn archives_lose_the_excluded_entries() {
        let mut b = tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast()));
        for (name, data) in
            [("Dockerfile", "FROM x\n"), (".dockerignore", "secret*\n"), ("secret.txt", "s"), ("app", "a")]
        {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, name, data.as_bytes()).unwrap();
        }
        let archive = b.into_inner().unwrap().finish().unwrap();
        let d = read_from_archive(&archive).unwrap().unwrap();
        let filtered = d.filter_archive(&archive).unwrap();
        let mut names: Vec<String> = tar::Archive::new(flate2::read::GzDecoder::new(filtered.as_slice()))
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, [".dockerignore", "Dockerfile", "app"]);
    }

    #[test]
    fn oversized_files_are_refused() {
        assert!(DockerIgnore::parse(&"x\n".repeat(MAX_PATTERNS + 1)).unwrap_err().contains("patterns"));
        assert!(DockerIgnore::parse(&"x".repeat(MAX_DOCKERIGNORE_BYTES + 1)).unwrap_err().contains("KiB"));
    }

    proptest! {
        #[test]
        fn any_text_and_path_are_handled_without_panicking(text in ".{0,400}", path in "[a-z*?/\\[\\]!.-]{0,40}") {
            if let Ok(d) = DockerIgnore::parse(&text) {
                let _ = d.excludes(&path);
            }
        }
    }
}
