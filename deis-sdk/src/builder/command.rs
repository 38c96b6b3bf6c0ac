//! The command an SSH client asks the builder to run: `git-receive-pack '<app>.git'`
//! (a push) or `git-upload-pack '<app>.git'` (a fetch), as git's ssh transport sends it.

use deis_core::AppName;

/// Longest exec request accepted, in bytes (git sends the service and one quoted path).
pub const MAX_COMMAND_BYTES: usize = 1024;

/// The git service a client asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GitService {
    /// `git-receive-pack`: a push.
    ReceivePack,
    /// `git-upload-pack`: a fetch or clone.
    UploadPack,
}

impl GitService {
    /// The git subcommand that serves it.
    pub fn subcommand(self) -> &'static str {
        match self {
            Self::ReceivePack => "receive-pack",
            Self::UploadPack => "upload-pack",
        }
    }
}

/// A parsed exec request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitCommand {
    /// What to run.
    pub service: GitService,
    /// The app whose repository it runs on.
    pub app: AppName,
}

/// Why an exec request is refused; the text is the one line the client sees.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// Longer than [`MAX_COMMAND_BYTES`] or not UTF-8.
    #[error("the command is not a git push or fetch")]
    Malformed,
    /// A command other than git's push or fetch services.
    #[error("only `git push` (and fetches) are served here; shells and other commands are not")]
    NotGit,
    /// The repository path is not `<app>.git`.
    #[error("{0:?} is not an app repository: push to ssh://git@<builder>:2222/<app>.git")]
    BadPath(String),
}

/// Parses `git-receive-pack '/hello.git'` (and `git receive-pack`, `git-upload-pack`,
/// paths with or without the leading `/` or `.git`) as git clients send it.
pub fn parse(command: &[u8]) -> Result<GitCommand, CommandError> {
    if command.len() > MAX_COMMAND_BYTES {
        return Err(CommandError::Malformed);
    }
    let text = std::str::from_utf8(command).map_err(|_| CommandError::Malformed)?.trim();
    let (service, rest) = [
        ("git-receive-pack ", GitService::ReceivePack),
        ("git receive-pack ", GitService::ReceivePack),
        ("git-upload-pack ", GitService::UploadPack),
        ("git upload-pack ", GitService::UploadPack),
    ]
    .iter()
    .find_map(|(prefix, service)| text.strip_prefix(prefix).map(|rest| (*service, rest.trim())))
    .ok_or(CommandError::NotGit)?;
    let path = unquote(rest).ok_or_else(|| CommandError::BadPath(shown(rest)))?;
    let name = path.trim_start_matches('/').trim_end_matches('/');
    let name = name.strip_suffix(".git").unwrap_or(name);
    let app = name.parse::<AppName>().map_err(|_| CommandError::BadPath(shown(&path)))?;
    Ok(GitCommand { service, app })
}

/// The argument without its shell quoting: git quotes the path with single quotes
/// (`'` itself as `'\''`); an unquoted word is taken as is.
fn unquote(arg: &str) -> Option<String> {
    let Some(inner) = arg.strip_prefix('\'') else {
        return (!arg.is_empty() && !arg.contains(char::is_whitespace) && !arg.contains(['\'', '"', '\\']))
            .then(|| arg.to_string());
    };
    let inner = inner.strip_suffix('\'')?;
    let unquoted = inner.replace("'\\''", "'").replace("'\\!'", "!");
    // Anything still holding a quote was not one quoted word.
    (!unquoted.contains('\'')).then_some(unquoted)
}

/// A bounded, printable rendering of client bytes for an error line.
fn shown(s: &str) -> String {
    s.chars().take(80).filter(|c| !c.is_control()).collect()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn app(s: &str) -> AppName {
        s.parse().unwrap()
    }

    #[test]
    fn git_clients_forms_are_understood() {
        for (line, service, name) in [
            ("git-receive-pack '/hello.git'", GitService::ReceivePack, "hello"),
            ("git-receive-pack 'hello.git'", GitService::ReceivePack, "hello"),
            ("git receive-pack 'hello'", GitService::ReceivePack, "hello"),
            ("git-upload-pack '/my-app.git/'", GitService::UploadPack, "my-app"),
            ("git-upload-pack my-app.git", GitService::UploadPack, "my-app"),
        ] {
            assert_eq!(parse(line.as_bytes()), Ok(GitCommand { service, app: app(name) }), "{line}");
        }
    }

    #[test]
    fn everything_else_is_refused_with_a_reason() {
        assert_eq!(parse(b"bash"), Err(CommandError::NotGit));
        assert_eq!(parse(b"git-upload-archive 'hello.git'"), Err(CommandError::NotGit));
        assert_eq!(parse(b"rm -rf /"), Err(CommandError::NotGit));
        assert_eq!(parse(b"git-receive-pack '../etc.git'"), Err(CommandError::BadPath("../etc.git".into())));
        assert!(matches!(parse(b"git-receive-pack 'a/b.git'"), Err(CommandError::BadPath(_))));
        assert!(matches!(parse(b"git-receive-pack 'Hello.git'"), Err(CommandError::BadPath(_))));
        assert!(matches!(parse(b"git-receive-pack 'a'; rm -rf / '"), Err(CommandError::BadPath(_))));
        assert!(matches!(parse(b"git-receive-pack "), Err(CommandError::NotGit | CommandError::BadPath(_))));
        assert_eq!(parse(&[0xff, 0xfe]), Err(CommandError::Malformed));
        let long = format!("git-receive-pack '{}.git'", "a".repeat(MAX_COMMAND_BYTES));
        assert_eq!(parse(long.as_bytes()), Err(CommandError::Malformed));
        let msg = CommandError::BadPath("x\n\u{1b}[31m".into()).to_string();
        assert!(!msg.contains('\n'), "one line: {msg}");
    }

    proptest! {
        #[test]
        fn any_bytes_parse_or_fail_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..1500)) {
            if let Ok(c) = parse(&bytes) {
                // Whatever is accepted names a valid app.
                prop_assert!(c.app.as_str().parse::<AppName>().is_ok());
            }
        }

        #[test]
        fn every_quoted_app_path_round_trips(name in "[a-z][a-z0-9-]{0,20}[a-z0-9]", slash in any::<bool>(), suffix in any::<bool>()) {
            let path = format!("{}{name}{}", if slash { "/" } else { "" }, if suffix { ".git" } else { "" });
            let line = format!("git-receive-pack '{path}'");
            prop_assert_eq!(parse(line.as_bytes()).map(|c| c.app.to_string()), Ok(name));
        }

        #[test]
        fn refusals_are_one_printable_line(s in ".{0,200}") {
            if let Err(e) = parse(format!("git-receive-pack '{s}'").as_bytes()) {
                let msg = e.to_string();
                prop_assert!(!msg.chars().any(char::is_control), "{:?}", msg);
            }
        }
    }
}
