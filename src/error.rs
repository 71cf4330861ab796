//! One error type for everything that reaches the user: a kind, a message,
//! hints, and the cause it came from (after jj's `CommandError`).
//!
//! The kind says whose move it is, and so which exit code loki ends with;
//! the hints say how to fix it. One renderer ([`render`]) prints any error
//! the same way:
//!
//! ```text
//! error: <message>: <cause>: <cause of the cause>
//!   help: <hint>
//!   help: <another hint>
//! ```
//!
//! Functions keep returning `anyhow::Result`; an [`Error`] travels inside an
//! `anyhow::Error` (`?` converts it) and is found again by downcasting, so
//! context added on top of it keeps its kind and its hints.
//!
//! # Exit codes
//!
//! | code | meaning |
//! | ---: | --- |
//! | 0 | done: every stream merged, or the command did what it was asked |
//! | 1 | `loki run` ended with streams left unmerged (failed, blocked, conflicted, cancelled, awaiting approval); `loki check` or `loki doctor` found a failing check; `loki clean` could not remove something |
//! | 2 | an error, of any kind below; also a command line clap cannot parse |
//! | 130 | interrupted (Ctrl-C, `SIGTERM`) |
//!
//! | kind | code | what it means | examples |
//! | --- | ---: | --- | --- |
//! | [`ErrorKind::Refusal`] | 2 | the request is refused as asked | an unknown stream, a stream in the wrong state, a stale `expected_version`, `loki init` over existing files |
//! | [`ErrorKind::Config`] | 2 | the swarm file (or a template it names) is wrong | an unknown key, a dependency cycle, an input not committed |
//! | [`ErrorKind::Environment`] | 2 | the world around loki is not as it needs | no git repository, a program not found, permissions, a full disk |
//! | [`ErrorKind::Internal`] | 2 | a fault of loki's, or an error no layer has classified yet | |
//!
//! Every kind exits 2 because scripts and tests already rely on 2 for each
//! of them: refusals (`loki init` over files, a stale version, a second
//! supervisor), swarm files, a missing repository (`loki init` outside
//! one). And an error no layer has classified yet is more often the
//! environment's (an I/O failure deep in git) than a bug, so giving
//! Internal a code of its own (70, `EX_SOFTWARE`) would mislabel it. The
//! kind still decides the wording and the hints; a distinct code per kind
//! is a change of [`ErrorKind::exit_code`] alone.

use std::error::Error as StdError;
use std::fmt;

/// Exit code when the run ended with streams left unmerged.
pub const EXIT_UNMERGED: i32 = 1;
/// Exit code when the run was interrupted (128 + SIGINT).
pub const EXIT_INTERRUPTED: i32 = 130;

/// Whose move it is after the error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The user's input or request is refused: bad arguments, a stream in
    /// the wrong state, a stale `expected_version`.
    Refusal,
    /// The swarm file is wrong.
    Config,
    /// Something outside loki: the git repository, a program, permissions,
    /// the disk.
    Environment,
    /// A bug in loki, or an error nobody has classified.
    Internal,
}

impl ErrorKind {
    /// The process exit code for an error of this kind (see the module docs).
    pub const fn exit_code(self) -> i32 {
        match self {
            ErrorKind::Refusal => 2,
            ErrorKind::Config => 2,
            ErrorKind::Environment => 2,
            ErrorKind::Internal => 2,
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Refusal => "refusal",
            ErrorKind::Config => "config",
            ErrorKind::Environment => "environment",
            ErrorKind::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error with a kind and hints.
///
/// `Display` is the message followed by one `\n  help: <hint>` line per
/// hint, so `format!("{e:#}")` of an `anyhow::Error` holding it still shows
/// the hints; the cause is reached through `source()`, as usual.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    /// `None`: the message is the source's own (a classified foreign error).
    message: Option<String>,
    hints: Vec<String>,
    source: Option<anyhow::Error>,
}

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: Some(message.into()),
            hints: Vec::new(),
            source: None,
        }
    }

    pub fn refusal(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Refusal, message)
    }

    pub fn config(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Config, message)
    }

    pub fn environment(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Environment, message)
    }

    pub fn internal(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Internal, message)
    }

    /// Gives `err` a kind without changing what it says: its message and
    /// causes are shown as they are. For errors of lower layers classified
    /// where they are called (`git::repo_root` failing is Environment).
    pub fn classified(kind: ErrorKind, err: impl Into<anyhow::Error>) -> Error {
        Error {
            kind,
            message: None,
            hints: Vec::new(),
            source: Some(err.into()),
        }
    }

    /// Adds a `help:` line.
    #[must_use]
    pub fn hint(mut self, hint: impl Into<String>) -> Error {
        self.hints.push(hint.into());
        self
    }

    /// Sets the cause, shown after the message (`message: cause`).
    #[must_use]
    pub fn with_source(mut self, source: impl Into<anyhow::Error>) -> Error {
        self.source = Some(source.into());
        self
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub fn hints(&self) -> &[String] {
        &self.hints
    }

    pub fn exit_code(&self) -> i32 {
        self.kind.exit_code()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.message, &self.source) {
            (Some(m), _) => f.write_str(m)?,
            (None, Some(s)) => write!(f, "{s}")?,
            (None, None) => {}
        }
        for h in &self.hints {
            write!(f, "\n  help: {h}")?;
        }
        Ok(())
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        let source = self.source.as_ref()?;
        match self.message {
            Some(_) => Some(source.as_ref()),
            // The source's own message is ours: its cause comes next.
            None => source.source(),
        }
    }
}

/// An I/O error is the environment's (permissions, a full disk, a missing
/// file), shown as it is.
impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Error {
        Error::classified(ErrorKind::Environment, e)
    }
}

/// Classifies the typed errors of layers this module may not name
/// (`ConfigError`, `StoreError`): `Some(kind)` for one it knows.
pub type Classifier = fn(&(dyn StdError + 'static)) -> Option<ErrorKind>;

/// The kind of `err`: that of the outermost cause that has one. Loki's own
/// [`Error`] says it; `foreign` classifies the typed errors of other
/// layers; an I/O error is Environment; a message starting with `stale:`
/// (a steering command's expected version) is a Refusal. Anything else is
/// Internal.
pub fn kind_of(err: &anyhow::Error, foreign: Classifier) -> ErrorKind {
    for cause in err.chain() {
        if let Some(e) = cause.downcast_ref::<Error>() {
            return e.kind;
        }
        if let Some(kind) = foreign(cause) {
            return kind;
        }
        if cause.is::<std::io::Error>() {
            return ErrorKind::Environment;
        }
        if cause.to_string().starts_with("stale:") {
            return ErrorKind::Refusal;
        }
    }
    ErrorKind::Internal
}

/// Adds `hint` to `hints` unless it is empty or already there.
fn add_hint(hint: &str, hints: &mut Vec<String>) {
    let hint = hint.trim_end();
    if !hint.is_empty() && !hints.iter().any(|h| h == hint) {
        hints.push(hint.to_string());
    }
}

/// What the user sees for `err`: `error: ` and the messages of the cause
/// chain joined by `: `, then one `  help: ` line per hint (each once, in
/// order). Hints are loki's [`Error`] hints, and, for errors that still
/// carry them in their text, what follows `\n  help: ` in a message.
pub fn render(err: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut hints: Vec<String> = Vec::new();
    for cause in err.chain() {
        let (text, own) = match cause.downcast_ref::<Error>() {
            Some(e) => {
                let text = match (&e.message, &e.source) {
                    (Some(m), _) => m.clone(),
                    (None, Some(s)) => s.to_string(),
                    (None, None) => String::new(),
                };
                (text, e.hints.as_slice())
            }
            None => (cause.to_string(), &[][..]),
        };
        let mut pieces = text.split("\n  help: ");
        let head = pieces.next().unwrap_or_default().trim_end();
        if !head.is_empty() {
            parts.push(head.to_string());
        }
        for h in pieces {
            add_hint(h, &mut hints);
        }
        for h in own {
            add_hint(h, &mut hints);
        }
    }
    let mut out = format!("error: {}\n", parts.join(": "));
    for h in hints {
        out.push_str("  help: ");
        out.push_str(&h);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    fn none(_: &(dyn StdError + 'static)) -> Option<ErrorKind> {
        None
    }

    #[test]
    fn each_kind_maps_to_its_documented_code() {
        let table = [
            (ErrorKind::Refusal, 2),
            (ErrorKind::Config, 2),
            (ErrorKind::Environment, 2),
            (ErrorKind::Internal, 2),
        ];
        for (kind, code) in table {
            assert_eq!(kind.exit_code(), code, "{kind}");
            assert_eq!(Error::new(kind, "m").exit_code(), code, "{kind}");
        }
        // Distinct from the run's own outcomes.
        for (kind, _) in table {
            assert_ne!(kind.exit_code(), 0);
            assert_ne!(kind.exit_code(), EXIT_UNMERGED);
            assert_ne!(kind.exit_code(), EXIT_INTERRUPTED);
        }
    }

    #[test]
    fn the_message_then_the_chain_then_each_hint() {
        let io = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "denied");
        let e: anyhow::Error = Error::environment("creating /x for the demo")
            .hint("pass `--dir` a folder you can write to")
            .hint("or run as a user who may write there")
            .with_source(io)
            .into();
        let e = e.context("starting the demo");
        assert_eq!(
            render(&e),
            "error: starting the demo: creating /x for the demo: denied\n  \
             help: pass `--dir` a folder you can write to\n  \
             help: or run as a user who may write there\n"
        );
        assert_eq!(kind_of(&e, none), ErrorKind::Environment);
    }

    #[test]
    fn display_keeps_the_hints_for_callers_that_format_the_error() {
        let e: anyhow::Error = Error::refusal("unknown stream `zz`")
            .hint("streams in loki.toml: a, b")
            .into();
        assert_eq!(
            format!("{e:#}"),
            "unknown stream `zz`\n  help: streams in loki.toml: a, b"
        );
        assert_eq!(
            render(&e),
            "error: unknown stream `zz`\n  help: streams in loki.toml: a, b\n"
        );
    }

    #[test]
    fn hints_baked_into_foreign_messages_become_help_lines() {
        let e = anyhow::anyhow!("not a git repository (or any parent): /t\n  help: run `git init`")
            .context("opening the repo");
        assert_eq!(
            render(&e),
            "error: opening the repo: not a git repository (or any parent): /t\n  help: run `git init`\n"
        );
        // The same hint twice is shown once.
        let twice: anyhow::Error = Error::classified(ErrorKind::Environment, e)
            .hint("run `git init`")
            .into();
        assert_eq!(
            render(&twice),
            "error: opening the repo: not a git repository (or any parent): /t\n  help: run `git init`\n"
        );
    }

    #[test]
    fn a_classified_error_says_what_it_said_and_keeps_its_causes() {
        let inner = anyhow::anyhow!("root cause").context("middle");
        let before = format!("{inner:#}");
        let e: anyhow::Error = Error::classified(ErrorKind::Environment, inner).into();
        assert_eq!(format!("{e:#}"), before);
        assert_eq!(render(&e), "error: middle: root cause\n");
        assert_eq!(kind_of(&e, none), ErrorKind::Environment);
    }

    #[test]
    fn the_outermost_kind_wins() {
        let e: anyhow::Error = Error::refusal("inner").into();
        let e: anyhow::Error = Error::classified(ErrorKind::Config, e).into();
        assert_eq!(kind_of(&e, none), ErrorKind::Config);
        // Context without a kind does not hide the kind below it.
        let e: anyhow::Error = Error::refusal("stream `a` is merged").into();
        let e = e.context("loki approve");
        assert_eq!(kind_of(&e, none), ErrorKind::Refusal);
        let r: anyhow::Result<()> = Err(e);
        let e = r.context("again").unwrap_err();
        assert_eq!(kind_of(&e, none), ErrorKind::Refusal);
    }

    #[test]
    fn foreign_errors_are_classified_at_the_boundary() {
        #[derive(Debug)]
        struct Typed;
        impl fmt::Display for Typed {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("typed")
            }
        }
        impl StdError for Typed {}
        fn typed(e: &(dyn StdError + 'static)) -> Option<ErrorKind> {
            e.is::<Typed>().then_some(ErrorKind::Config)
        }
        let e = anyhow::Error::new(Typed).context("loading");
        assert_eq!(kind_of(&e, typed), ErrorKind::Config);
        assert_eq!(kind_of(&e, none), ErrorKind::Internal);

        let io = std::io::Error::new(std::io::ErrorKind::StorageFull, "full");
        let e = anyhow::Error::new(io).context("writing x");
        assert_eq!(kind_of(&e, none), ErrorKind::Environment);

        let full = std::io::Error::new(std::io::ErrorKind::StorageFull, "full");
        let e = Error::from(full);
        assert_eq!(
            (e.kind(), e.to_string()),
            (ErrorKind::Environment, "full".into())
        );

        let e = anyhow::anyhow!("stale: expected version 3, but stream a is at version 5");
        assert_eq!(kind_of(&e, none), ErrorKind::Refusal);

        let e = anyhow::anyhow!("something unforeseen");
        assert_eq!(kind_of(&e, none), ErrorKind::Internal);
        assert_eq!(render(&e), "error: something unforeseen\n");
    }
}
