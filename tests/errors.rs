//! Errors as the user sees them: one bad input of each kind loki can meet
//! without an agent, through the built binary (exit code, `error:` line,
//! `help:` lines) and through the library (the kind it is classified as).

mod common;
use common::*;

use loki::error::ErrorKind;

/// Asserts that `out` is a failure of `kind`: its exit code, `error: ` and
/// `first` on the first line of stderr, then `help` on a `  help: ` line
/// after it. Returns stderr.
fn assert_error(out: &std::process::Output, kind: ErrorKind, first: &str, help: &str) -> String {
    assert_eq!(out.status.code(), Some(kind.exit_code()), "{}", both(out));
    let err = stderr(out);
    let lines: Vec<&str> = err.lines().collect();
    assert!(
        lines
            .first()
            .is_some_and(|l| l.starts_with("error: ") && l.contains(first)),
        "expected `error: …{first}…` first:\n{err}"
    );
    let helps: Vec<&str> = lines[1..]
        .iter()
        .filter_map(|l| l.strip_prefix("  help: "))
        .collect();
    assert!(
        helps.iter().any(|h| h.contains(help)),
        "expected a `  help: …{help}…` line:\n{err}"
    );
    // Every line after the first is a hint: hints are not baked into the message.
    assert_eq!(helps.len(), lines.len() - 1, "{err}");
    err
}

/// A repo with a valid one-stream swarm committed.
fn swarm_repo() -> Repo {
    let repo = Repo::new();
    repo.write("prompts/chapter.md", CHAPTER);
    let mut toml = header(1, "");
    toml.push_str(&stream("a", &[], "chapters/a.md", ""));
    repo.write("loki.toml", &toml);
    repo.commit_all("swarm");
    repo
}

#[test]
fn no_repository_is_an_environment_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = loki_outside_a_repo(dir.path(), &["status"]);
    assert_error(
        &out,
        ErrorKind::Environment,
        "not a git repository",
        "run `git init` there",
    );
    assert_eq!(ErrorKind::Environment.exit_code(), 2);

    let e = loki::commands::init::init(dir.path()).expect_err("no repo");
    assert_eq!(loki::commands::error_kind(&e), ErrorKind::Environment);
}

#[test]
fn an_unknown_key_is_a_config_error_at_its_place() {
    let repo = Repo::new();
    repo.write("prompts/chapter.md", CHAPTER);
    let mut toml = header(1, "").replace("max_parallel", "max_paralel");
    toml.push_str(&stream("a", &[], "chapters/a.md", ""));
    repo.write("loki.toml", &toml);
    repo.commit_all("swarm");
    let path = repo.path().join("loki.toml");
    let place = format!("{}:3:1: ", path.display());

    for args in [&["approve", "a"][..], &["run", "--plain"][..]] {
        let out = repo.loki(args);
        let err = assert_error(
            &out,
            ErrorKind::Config,
            &format!("{place}unknown key `max_paralel` in [swarm]"),
            "max_parallel",
        );
        assert!(!repo.path().join(".loki").exists(), "{args:?}: {err}");
    }
    assert_eq!(ErrorKind::Config.exit_code(), 2);

    let e = anyhow::Error::new(loki::config::load(&path).expect_err("unknown key"));
    assert_eq!(loki::commands::error_kind(&e), ErrorKind::Config);
}

#[test]
fn an_unknown_stream_or_a_stale_version_is_a_refusal() {
    let repo = swarm_repo();
    let out = repo.loki(&["approve", "nosuch"]);
    assert_error(
        &out,
        ErrorKind::Refusal,
        "unknown stream `nosuch`",
        &format!("streams in {}: a", repo.path().join("loki.toml").display()),
    );
    assert_eq!(ErrorKind::Refusal.exit_code(), 2);

    let out = repo.loki(&["signal", "PAUSE", "--expect-version", "999"]);
    assert_error(
        &out,
        ErrorKind::Refusal,
        "stale: expected swarm version 999",
        "loki status --json",
    );

    let out = repo.loki(&["signal", "NOSUCH"]);
    assert_error(
        &out,
        ErrorKind::Refusal,
        "unknown signal kind `NOSUCH`",
        "one of MERGE_REQUESTED",
    );

    let cfg = loki::config::load(&repo.path().join("loki.toml")).expect("loads");
    let e =
        loki::commands::show::show_text(repo.path(), &cfg, "main", "nosuch").expect_err("unknown");
    assert_eq!(loki::commands::error_kind(&e), ErrorKind::Refusal);
    let e = loki::commands::show::show_text(repo.path(), &cfg, "main", "a").expect_err("never ran");
    assert_eq!(loki::commands::error_kind(&e), ErrorKind::Refusal);
}

/// Numbers and names that used to be accepted and broke a run later: a
/// target that is a stream's branch (its merge deleted the user's branch)
/// and a duration so long that adding it to the clock panicked mid-run.
/// Both are refused at load, at their file:line:col, before anything is
/// created.
#[test]
fn a_stream_branch_as_target_and_an_endless_duration_are_refused_at_load() {
    for (line, want) in [
        (
            "target = \"loki/a\"",
            "loki.toml:2:10: `target` \"loki/a\" is a stream's branch",
        ),
        (
            "spawn_interval = 18446744073709551615",
            "loki.toml:2:18: `spawn_interval` is too long: at most 365 days",
        ),
    ] {
        let repo = Repo::new();
        repo.write("prompts/chapter.md", CHAPTER);
        let mut toml = format!(
            "[swarm]\n{line}\n\n[agent]\ncommand = \"{}\"\n\n",
            fake_agent().display()
        );
        toml.push_str(&stream("a", &[], "chapters/a.md", ""));
        repo.write("loki.toml", &toml);
        repo.commit_all("swarm");
        let out = repo.loki(&["run", "--plain"]);
        assert_error(&out, ErrorKind::Config, want, "");
        assert!(
            !repo.path().join(".loki/state").exists(),
            "{line}: state was created"
        );
    }
}
