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

/// A one-stream swarm whose stream has `extra` (and its header `head` in
/// `[agent]`), after `setup` made what the case needs; committed. `loki run`
/// must refuse it with `want` (`loki.toml:line:col: …`, or a whole-file
/// refusal of another file), before anything is created.
fn refused_at_load(setup: &dyn Fn(&Repo), head: &str, extra: &str, want: &str) {
    let repo = Repo::new();
    repo.write("prompts/chapter.md", CHAPTER);
    repo.write("outline.md", "The outline.\n");
    setup(&repo);
    let mut toml = format!(
        "[swarm]\ntarget = \"main\"\n\n[agent]\ncommand = \"{}\"\n{head}\n",
        fake_agent().display()
    );
    // `{REPO}` is the repository's folder name.
    let name = repo
        .path()
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    toml.push_str(&format!(
        "[[streams]]\nid = \"a\"\n{}\n",
        extra.replace("{REPO}", &name)
    ));
    repo.write("loki.toml", &toml);
    repo.commit_all("swarm");
    let out = repo.loki(&["run", "--plain"]);
    assert_error(&out, ErrorKind::Config, &want.replace("{REPO}", &name), "");
    assert!(
        !repo.path().join(".loki/state").exists(),
        "{extra}: state was created"
    );
}

const PROMPT: &str = "prompt = \"prompts/chapter.md\"\nvars = { CHAPTER = \"1\" }";

fn link(repo: &Repo, target: &str, at: &str) {
    let p = repo.path().join(at);
    std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    std::os::unix::fs::symlink(target, p).expect("symlink");
}

/// Prompts, inputs, check scripts and outputs that are not regular files
/// of the repository reached without a symlink used to be read (a prompt
/// outside the repo, a link to /etc/passwd as an input or a prompt), or
/// refused only once a worktree existed (a folder output): all are refused
/// at load, at their file:line:col, naming the link's target.
#[test]
fn files_outside_the_repo_or_behind_a_symlink_are_refused_at_load() {
    let none = |_: &Repo| {};
    let outputs = "outputs = [\"chapters/a.md\"]";
    // The prompt.
    refused_at_load(
        &none,
        "",
        &format!("prompt = \"/etc/hostname\"\n{outputs}"),
        "loki.toml:9:10: prompt `/etc/hostname` is outside the repository",
    );
    refused_at_load(
        &|r: &Repo| {
            let outside = r.path().with_extension("outside.md");
            std::fs::write(&outside, "Write {{OUTPUTS}}.\n").expect("outside");
        },
        "",
        &format!("prompt = \"../{{REPO}}.outside.md\"\n{outputs}"),
        "loki.toml:9:10: prompt `../{REPO}.outside.md` is outside the repository",
    );
    refused_at_load(
        &|r: &Repo| link(r, "/etc/hostname", "prompts/linked.md"),
        "",
        &format!("prompt = \"prompts/linked.md\"\n{outputs}"),
        "loki.toml:9:10: prompt `prompts/linked.md` is reached through a symlink: \
         `prompts/linked.md` points to `/etc/hostname`",
    );
    refused_at_load(
        &|r: &Repo| link(r, "prompts", "templates"),
        "",
        &format!("prompt = \"templates/chapter.md\"\nvars = {{ CHAPTER = \"1\" }}\n{outputs}"),
        "loki.toml:9:10: prompt `templates/chapter.md` is reached through a symlink: \
         `templates` points to `prompts`",
    );
    // An input and a check script committed as links.
    refused_at_load(
        &|r: &Repo| link(r, "/etc/passwd", "notes.md"),
        "",
        &format!("{PROMPT}\ninputs = {{ NOTES = \"notes.md\" }}\n{outputs}"),
        "loki.toml:11:20: input {{NOTES}} of stream `a`: `notes.md` is reached through a \
         symlink in branch `main`: `notes.md` points to `/etc/passwd`",
    );
    refused_at_load(
        &|r: &Repo| link(r, "/bin/true", "scripts/check.sh"),
        "",
        &format!("{PROMPT}\n{outputs}\n[streams.checks]\ncommand = \"scripts/check.sh\""),
        "loki.toml:13:11: the check command of stream `a`: `scripts/check.sh` is reached \
         through a symlink in branch `main`: `scripts/check.sh` points to `/bin/true`",
    );
    // Outputs behind a committed folder link, in `.GIT`, or folders.
    refused_at_load(
        &|r: &Repo| link(r, "/tmp", "out"),
        "",
        &format!("{PROMPT}\noutputs = [\"out/a.md\"]"),
        "loki.toml:11:12: `outputs`: \"out/a.md\" is reached through a symlink in branch \
         `main`: `out` points to `/tmp`",
    );
    refused_at_load(
        &none,
        "",
        &format!("{PROMPT}\noutputs = [\".GIT/a.md\"]"),
        "loki.toml:11:12: `outputs`: path \".GIT/a.md\" must not be inside `.git` (in any \
         letter case)",
    );
    refused_at_load(
        &|r: &Repo| r.write("chapters/old.md", "old\n"),
        "",
        &format!("{PROMPT}\noutputs = [\"chapters\"]"),
        "loki.toml:11:12: `outputs`: \"chapters\" is a folder in the repository, not a file",
    );
    refused_at_load(
        &none,
        "",
        &format!("{PROMPT}\noutputs = [\"chapters/\"]"),
        "loki.toml:11:12: `outputs`: path \"chapters/\" names a folder: it must name a file",
    );
}

/// What used to pass the load and break later: a prompt that is a FIFO
/// (the load blocked on it) or larger than loki reads (`/dev/zero` filled
/// the memory), NUL bytes (refused only once a worktree existed), and
/// integers with more digits than any integer type (a misleading "must not
/// be negative, found "). All are refused at load, at their file:line:col.
#[test]
fn special_files_nul_bytes_and_huge_numbers_are_refused_at_load() {
    let none = |_: &Repo| {};
    let outputs = "outputs = [\"chapters/a.md\"]";
    refused_at_load(
        &|r: &Repo| {
            nix::unistd::mkfifo(
                &r.path().join("prompts/fifo.md"),
                nix::sys::stat::Mode::S_IRWXU,
            )
            .expect("mkfifo")
        },
        "",
        &format!("prompt = \"prompts/fifo.md\"\n{outputs}"),
        "loki.toml:9:10: prompt `prompts/fifo.md` is a FIFO (named pipe), not a regular file",
    );
    refused_at_load(
        &|r: &Repo| {
            let big = format!("Write {{{{OUTPUTS}}}}.\n{}", "x".repeat(8 * 1024 * 1024));
            r.write("prompts/big.md", &big)
        },
        "",
        &format!("prompt = \"prompts/big.md\"\n{outputs}"),
        "loki.toml:9:10: prompt file `prompts/big.md` is larger than 8 MiB",
    );
    refused_at_load(
        &|r: &Repo| r.write("notes.md", &"x".repeat(8 * 1024 * 1024 + 1)),
        "",
        &format!("{PROMPT}\ninputs = {{ NOTES = \"notes.md\" }}\n{outputs}"),
        "loki.toml:11:20: input {{NOTES}} of stream `a`: `notes.md` is larger than 8 MiB in \
         branch `main`",
    );
    for (head, want) in [
        (
            "env = { X = \"a\\u0000b\" }",
            "loki.toml:6:13: `env.X` contains a NUL byte",
        ),
        (
            "args = [\"--x\\u0000\"]",
            "loki.toml:6:9: `args` contains a NUL byte",
        ),
        (
            "timeout = 99999999999999999999999999999999999999999",
            "loki.toml:6:11: `timeout` is too long: at most 365 days",
        ),
        (
            "max_attempts = 99999999999999999999999999999999999999999",
            "loki.toml:6:16: `max_attempts` is too large: at most 4294967295",
        ),
        (
            "max_attempts = -99999999999999999999999999999999999999999",
            "loki.toml:6:16: `max_attempts` must be a positive integer, found a negative integer",
        ),
    ] {
        refused_at_load(&none, head, &format!("{PROMPT}\n{outputs}"), want);
    }
    refused_at_load(
        &none,
        "",
        &format!("{PROMPT}\noutputs = [\"a\\u0000.md\"]"),
        "loki.toml:11:12: `outputs` contains a NUL byte",
    );
}
