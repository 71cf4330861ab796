//! `loki run` end to end with the fake agent: a six-stream book with a
//! dependency chain, a fan-out and a fan-in; resume after a failure; the
//! refusals of bad swarm files.

mod common;
use common::*;

fn book(repo: &Repo) {
    repo.write("outline.md", "# Outline\n\nSix parts.\n");
    let mut toml = header(3, "");
    toml.push_str(&stream("bible", &[], "bible/characters.md", ""));
    toml.push_str(&stream("ch01", &["bible"], "chapters/ch01.md", ""));
    toml.push_str(&stream("ch02", &["ch01"], "chapters/ch02.md", ""));
    toml.push_str(&stream("ch03", &["ch01"], "chapters/ch03.md", ""));
    toml.push_str(&stream("ch04", &["ch02", "ch03"], "chapters/ch04.md", ""));
    toml.push_str(&stream("epilogue", &["ch04"], "chapters/epilogue.md", ""));
    repo.write_swarm(CHAPTER, &toml);
}

#[test]
fn six_stream_book_merges_in_dependency_order() {
    let repo = Repo::new();
    book(&repo);
    let out = repo.loki(&["run", "--plain"]);
    assert!(out.status.success(), "loki run failed:\n{}", both(&out));
    assert!(
        stdout(&out).contains("6 of 6 streams merged into main"),
        "{}",
        both(&out)
    );

    // Six merge commits on main's first-parent line, in dependency order.
    let subjects = first_parent_subjects(&repo, "main");
    let merges: Vec<&str> = subjects
        .iter()
        .filter_map(|s| s.strip_prefix("Merge stream "))
        .collect();
    assert_eq!(merges.len(), 6, "{subjects:?}");
    let pos = |id: &str| merges.iter().rposition(|m| *m == id).expect(id);
    // Newest first: a dependency appears after (older than) its dependents.
    assert!(pos("bible") > pos("ch01"));
    assert!(pos("ch01") > pos("ch02") && pos("ch01") > pos("ch03"));
    assert!(pos("ch02") > pos("ch04") && pos("ch03") > pos("ch04"));
    assert!(pos("ch04") > pos("epilogue"));

    // Every merge has two parents and loki's trailers.
    let revs = repo.git(&["log", "--first-parent", "--merges", "--format=%H", "main"]);
    for rev in revs.lines() {
        let parents = repo.git(&["log", "-1", "--format=%P", rev]);
        assert_eq!(
            parents.split_whitespace().count(),
            2,
            "merge {rev} must have two parents"
        );
        let t = trailers(&repo, rev);
        let keys: Vec<&str> = t.iter().map(|(k, _)| k.as_str()).collect();
        for k in ["Loki-Stream", "Loki-Attempt", "Loki-Agent", "Loki-Cost-USD"] {
            assert!(keys.contains(&k), "merge {rev} lacks {k}: {t:?}");
        }
    }
    // The attempt commits on the stream branches carry trailers too.
    let attempt_commits = repo.git(&["log", "--format=%H", "--grep=^loki: ch02 attempt 1", "main"]);
    let first = attempt_commits
        .lines()
        .next()
        .expect("attempt commit of ch02");
    let t = trailers(&repo, first);
    assert!(t.contains(&("Loki-Stream".into(), "ch02".into())), "{t:?}");
    assert!(t.contains(&("Loki-Attempt".into(), "1".into())), "{t:?}");

    // The files are on main and in the user's checkout.
    for f in [
        "bible/characters.md",
        "chapters/ch01.md",
        "chapters/ch04.md",
        "chapters/epilogue.md",
    ] {
        let text = repo.read(f);
        assert!(!text.trim().is_empty(), "{f} is empty");
        let shown = repo.git(&["show", &format!("main:{f}")]);
        assert_eq!(shown, text);
    }
    assert!(repo.read("chapters/ch04.md").contains("ch04"));

    assert_clean_repo(&repo);
    let st = status_json(&repo);
    for s in st["streams"].as_array().expect("streams") {
        assert_eq!(s["status"], "merged", "{s}");
        assert_eq!(s["attempts"], 1, "{s}");
        assert!(
            s["words"].as_u64().unwrap_or(0) > 100,
            "words of the outputs: {s}"
        );
    }
    let table = stdout(&repo.loki(&["status"]));
    assert!(
        table.lines().next().unwrap_or("").contains("WORDS"),
        "{table}"
    );
    assert!(table.contains("6/6 merged"), "{table}");
    // A second run has nothing to do and changes nothing.
    let head = repo.git(&["rev-parse", "main"]);
    let again = repo.loki(&["run", "--plain"]);
    assert!(again.status.success(), "{}", both(&again));
    assert_eq!(repo.git(&["rev-parse", "main"]), head);
}

#[test]
fn a_failed_stream_blocks_its_dependents_and_resumes_when_fixed() {
    let repo = Repo::new();
    repo.write("prompts/chapter.md", CHAPTER);
    let mut toml = header(2, "");
    toml.push_str(&stream("ch01", &[], "chapters/ch01.md", ""));
    toml.push_str(&stream(
        "ch02",
        &["ch01"],
        "chapters/ch02.md",
        "max_attempts = 2\nenv = { FAKE_AGENT_FAIL = \"1\" }",
    ));
    toml.push_str(&stream("ch03", &["ch02"], "chapters/ch03.md", ""));
    toml.push_str(&stream("side", &[], "side.md", ""));
    repo.write("loki.toml", &toml);
    repo.commit_all("swarm");

    let out = repo.loki(&["run", "--plain"]);
    assert_eq!(out.status.code(), Some(1), "{}", both(&out));
    let text = stdout(&out);
    assert!(text.contains("2 of 4 streams merged"), "{text}");
    assert!(text.contains("ch02") && text.contains("failed"), "{text}");
    assert!(text.contains("dependency ch02 is failed"), "{text}");
    assert!(
        text.contains(".loki/logs/ch02"),
        "summary must say where the logs are: {text}"
    );
    assert_eq!(stream_status(&repo, "ch02"), "failed");
    assert_eq!(stream_status(&repo, "ch03"), "blocked");
    assert_eq!(stream_status(&repo, "side"), "merged");
    // Both failed attempts are kept: transcripts and the worktree.
    assert!(repo.path().join(".loki/logs/ch02/attempt-1.jsonl").exists());
    assert!(repo.path().join(".loki/logs/ch02/attempt-2.jsonl").exists());
    assert!(repo.path().join(".loki/worktrees/ch02").is_dir());

    // Fix the swarm file; the next run resumes: ch01 and side are not run again.
    let fixed = std::fs::read_to_string(repo.path().join("loki.toml"))
        .expect("read")
        .replace("env = { FAKE_AGENT_FAIL = \"1\" }", "");
    repo.write("loki.toml", &fixed);
    repo.commit_all("fix ch02");
    let out = repo.loki(&["run", "--plain"]);
    assert!(out.status.success(), "{}", both(&out));
    let st = status_json(&repo);
    let by_id = |id: &str| {
        st["streams"]
            .as_array()
            .expect("streams")
            .iter()
            .find(|s| s["id"] == id)
            .cloned()
            .expect(id)
    };
    assert_eq!(by_id("ch01")["attempts"], 1);
    assert_eq!(by_id("side")["attempts"], 1);
    assert_eq!(by_id("ch02")["status"], "merged");
    assert_eq!(by_id("ch02")["attempts"], 3);
    assert_eq!(by_id("ch03")["status"], "merged");
    assert_clean_repo(&repo);
}

#[test]
fn a_failed_stream_is_left_alone_until_what_it_reads_changes_and_then_sees_the_fix() {
    let repo = Repo::new();
    repo.write(
        "prompts/notes.md",
        "Write the chapter to {{OUTPUTS}}.\n\n{{NOTES}}\n",
    );
    // The notes tell the fake agent to fail: a broken input.
    repo.write("notes.md", "Notes: [fake:fail]\n");
    let mut toml = header(1, "");
    toml.push_str(
        "[[streams]]\nid = \"ch01\"\nprompt = \"prompts/notes.md\"\n\
         inputs = { NOTES = \"notes.md\" }\noutputs = [\"chapters/ch01.md\"]\nmax_attempts = 1\n",
    );
    repo.write_swarm(CHAPTER, &toml);
    let attempts = |repo: &Repo| status_stream(repo, "ch01")["attempts"].clone();

    let out = repo.loki(&["run", "--plain"]);
    assert_eq!(out.status.code(), Some(1), "{}", both(&out));
    assert_eq!(attempts(&repo), 1);

    // Nothing it reads changed: no agent starts, and the summary says why.
    let out = repo.loki(&["run", "--plain"]);
    assert_eq!(out.status.code(), Some(1), "{}", both(&out));
    assert!(
        stdout(&out).contains(
            "left alone: nothing it reads (its prompt, inputs, loki.toml entry) changed since \
             it failed; `loki retry ch01` or `loki run --retry-failed` runs it again"
        ),
        "{}",
        both(&out)
    );
    assert_eq!(attempts(&repo), 1);
    assert!(!repo.path().join(".loki/runs/ch01/attempt-2").exists());

    // Asked to, it runs again (and fails again).
    let out = repo.loki(&["run", "--plain", "--retry-failed"]);
    assert_eq!(out.status.code(), Some(1), "{}", both(&out));
    assert_eq!(attempts(&repo), 2);

    // The input is fixed on the target: the next run runs the stream, and
    // the attempt reads the fix, although its worktree was kept from before.
    repo.write("notes.md", "Notes: FIXED, no tokens now.\n");
    repo.commit_all("fix the notes");
    let out = repo.loki(&["run", "--plain"]);
    assert!(out.status.success(), "{}", both(&out));
    let prompt = repo.read(".loki/runs/ch01/attempt-3/prompt.md");
    assert!(prompt.contains("Notes: FIXED, no tokens now."), "{prompt}");
    let log = repo.git(&["log", "--format=%s", "main"]);
    assert!(
        log.contains("loki: bring loki/ch01 up to date with main"),
        "{log}"
    );
    assert_clean_repo(&repo);
}

/// A rerun whose branch cannot take the target without a conflict changes
/// nothing: the stream fails with the paths and the way to merge by hand,
/// the target and the branch stay as they were, and the worktree is kept.
#[test]
fn a_rerun_that_cannot_take_the_target_says_where_it_conflicts() {
    let repo = Repo::new();
    repo.write(
        "prompts/notes.md",
        "Write the chapter to {{OUTPUTS}}.\n\n{{NOTES}}\n",
    );
    // The agent writes its draft, then fails: the draft stays on the branch.
    repo.write("notes.md", "Notes: [fake:exit=1]\n");
    let mut toml = header(1, "");
    toml.push_str(
        "[[streams]]\nid = \"ch01\"\nprompt = \"prompts/notes.md\"\n\
         inputs = { NOTES = \"notes.md\" }\noutputs = [\"chapters/ch01.md\"]\nmax_attempts = 1\n",
    );
    repo.write_swarm(CHAPTER, &toml);
    let out = repo.loki(&["run", "--plain"]);
    assert_eq!(out.status.code(), Some(1), "{}", both(&out));
    let branch = repo.git(&["rev-parse", "loki/ch01"]);

    // Meanwhile the same file is written on the target, and the input fixed.
    repo.write("chapters/ch01.md", "A chapter written by hand on main.\n");
    repo.write("notes.md", "Notes: fixed.\n");
    repo.commit_all("write ch01 by hand, fix the notes");
    let main = repo.git(&["rev-parse", "main"]);
    let out = repo.loki(&["run", "--plain"]);
    assert_eq!(out.status.code(), Some(1), "{}", both(&out));
    let reason = status_stream(&repo, "ch01")["reason"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(
        reason.contains(
            "bringing loki/ch01 up to date with main before running it again conflicts in \
             chapters/ch01.md"
        ) && reason.contains("(git merge main)"),
        "{reason}"
    );
    assert_eq!(repo.git(&["rev-parse", "main"]), main);
    assert_eq!(repo.git(&["rev-parse", "loki/ch01"]), branch);
    assert!(repo
        .path()
        .join(".loki/worktrees/ch01/chapters/ch01.md")
        .exists());
}

/// Each refusal names file:line:col, says how to fix it, and leaves the repo
/// (and the absence of .loki/) exactly as it was.
#[test]
fn bad_swarm_files_are_refused_before_anything_is_created() {
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "unknown key",
            format!(
                "{}{}",
                header(1, "modle = \"opus\""),
                stream("a", &[], "a.md", "")
            ),
            "loki.toml:",
        ),
        (
            "cycle",
            format!(
                "{}{}{}",
                header(1, ""),
                stream("a", &["b"], "a.md", ""),
                stream("b", &["a"], "b.md", "")
            ),
            "cycle",
        ),
        (
            "unknown dependency",
            format!("{}{}", header(1, ""), stream("a", &["nope"], "a.md", "")),
            "nope",
        ),
        (
            "duplicate id",
            format!(
                "{}{}{}",
                header(1, ""),
                stream("a", &[], "a.md", ""),
                stream("a", &[], "b.md", "")
            ),
            "duplicate",
        ),
        (
            "bad id",
            format!("{}{}", header(1, ""), stream("Bad Id", &[], "a.md", "")),
            "Bad Id",
        ),
        (
            "missing prompt",
            format!(
                "{}{}",
                header(1, ""),
                stream("a", &[], "a.md", "").replace("prompts/chapter.md", "prompts/missing.md")
            ),
            "prompts/missing.md",
        ),
        (
            "target branch that does not exist",
            format!("{}{}", header(1, ""), stream("a", &[], "a.md", ""))
                .replace("target = \"main\"", "target = \"mian\""),
            "loki.toml:2:10: the target branch `mian` does not exist",
        ),
        (
            "unfilled placeholder",
            format!(
                "{}{}",
                header(1, ""),
                stream("a", &[], "a.md", "").replace("prompts/chapter.md", "prompts/other.md")
            ),
            "SETTING",
        ),
    ];
    for (name, toml, needle) in cases {
        let repo = Repo::new();
        repo.write("prompts/chapter.md", CHAPTER);
        repo.write(
            "prompts/other.md",
            "Set in {{SETTING}}. Write to {{OUTPUTS}}.\n",
        );
        repo.write("loki.toml", &toml);
        repo.commit_all("swarm");
        assert_refused(&repo, name, needle);
    }
}

/// Runs `loki run` in `repo` and asserts that it refused: exit 2, `needle`
/// and a fix on stderr, a file:line:col, and the repo (and the absence of
/// .loki/) exactly as it was. Returns stderr.
fn assert_refused(repo: &Repo, name: &str, needle: &str) -> String {
    let before = repo.snapshot();
    let refs_before = repo.git(&["show-ref"]);
    let out = repo.loki(&["run", "--plain"]);
    assert_eq!(out.status.code(), Some(2), "{name}: {}", both(&out));
    let err = stderr(&out);
    assert!(
        err.contains(needle),
        "{name}: expected `{needle}` in:\n{err}"
    );
    assert!(err.contains("help:"), "{name}: no fix given:\n{err}");
    let located = err.lines().any(|l| {
        // file:line:col
        let mut parts = l.trim_start_matches("error: ").split(':');
        let file = parts.next().unwrap_or("");
        let line = parts.next().unwrap_or("");
        let col = parts.next().unwrap_or("");
        (file.ends_with(".toml") || file.ends_with(".md"))
            && line.parse::<u32>().is_ok()
            && col.parse::<u32>().is_ok()
    });
    assert!(located, "{name}: no file:line:col in:\n{err}");
    assert_eq!(repo.snapshot(), before, "{name}: the refusal changed files");
    assert!(
        !repo.path().join(".loki").exists(),
        "{name}: .loki was created"
    );
    assert_eq!(repo.git(&["show-ref"]), refs_before, "{name}: refs changed");
    err
}

/// "line:col" of the first `what` on the first line of `text` holding `line`.
fn at(text: &str, line: &str, what: &str) -> String {
    let (n, l) = text
        .lines()
        .enumerate()
        .find(|(_, l)| l.contains(line))
        .unwrap_or_else(|| panic!("no line with {line:?} in:\n{text}"));
    let col = l
        .find(what)
        .unwrap_or_else(|| panic!("no {what:?} in {l:?}"));
    format!("{}:{}", n + 1, l[..col].chars().count() + 1)
}

/// Mistakes found by looking beyond the swarm file's own text (the target
/// branch's tree, prompts/retry.md), or only across its keys, are refused
/// the same way: at file:line:col, with the fix, before anything exists.
#[test]
fn swarm_files_wrong_about_the_repo_are_refused_before_anything_is_created() {
    let one = |extra: &str| format!("{}{}", header(1, ""), stream("a", &[], "a.md", extra));

    // An output listed twice.
    let toml = one("").replace("outputs = [\"a.md\"]", "outputs = [\"a.md\", \"./a.md\"]");
    let repo = swarm_repo(&toml, &[]);
    let err = assert_refused(&repo, "duplicate output", "is listed twice");
    let pos = at(&toml, "outputs =", "\"./a.md\"");
    assert!(
        err.contains(&format!(
            "loki.toml:{pos}: `outputs`: \"./a.md\" is listed twice for stream `a`"
        )),
        "{err}"
    );

    // `require` with no outputs to look in.
    let toml = format!(
        "{}[checks]\nrequire = [\"Mira\"]\n\n{}",
        header(1, ""),
        stream("a", &[], "a.md", "").replace("outputs = [\"a.md\"]", "outputs = []")
    );
    let repo = swarm_repo(&toml, &[]);
    let err = assert_refused(&repo, "require without outputs", "has no outputs");
    let pos = at(&toml, "outputs = []", "[");
    assert!(
        err.contains(&format!("loki.toml:{pos}: stream `a` has no outputs")),
        "{err}"
    );
    assert!(err.contains("`require = []`"), "{err}");

    // An input that is only in the checkout, not committed to the target.
    let toml = one("inputs = { OUTLINE = \"outline.md\" }");
    let repo = swarm_repo(&toml, &[]);
    repo.write("outline.md", "# Outline\n");
    let err = assert_refused(&repo, "uncommitted input", "is not in branch `main`");
    let pos = at(&toml, "inputs =", "\"outline.md\"");
    assert!(
        err.contains(&format!(
            "loki.toml:{pos}: input {{{{OUTLINE}}}} of stream `a`: `outline.md` is not in branch \
             `main`, and no stream that `a` depends on writes it"
        )),
        "{err}"
    );
    assert!(
        err.contains("help: it is in your checkout but not committed to `main`"),
        "{err}"
    );

    // A check script committed without its executable bit.
    let toml = one("checks = { command = \"scripts/check.sh\" }");
    let repo = swarm_repo(&toml, &[("scripts/check.sh", "#!/bin/sh\nexit 0\n")]);
    let err = assert_refused(&repo, "check script", "is not executable");
    let pos = at(&toml, "checks =", "\"scripts/check.sh\"");
    assert!(
        err.contains(&format!(
            "loki.toml:{pos}: the check command of stream `a`: `scripts/check.sh` is not \
             executable in branch `main`"
        )),
        "{err}"
    );
    assert!(err.contains("chmod +x scripts/check.sh"), "{err}");

    // prompts/retry.md with a placeholder a retry does not fill.
    let repo = swarm_repo(
        &one(""),
        &[(
            "prompts/retry.md",
            "## Attempt {{ATTEMPT}}\n\nFix: {{VIOLATION}}\n",
        )],
    );
    let err = assert_refused(&repo, "retry.md", "is not filled in prompts/retry.md");
    assert!(
        err.contains("prompts/retry.md:3:6: placeholder {{VIOLATION}} is not filled"),
        "{err}"
    );
    assert!(
        err.contains(
            "help: did you mean {{VIOLATIONS}}? prompts/retry.md may use only {{ATTEMPT}}, \
             {{MAX_ATTEMPTS}}, {{VIOLATIONS}}"
        ),
        "{err}"
    );
}

/// A committed swarm whose one stream's agent is `bin/agent`, which does not
/// exist; and its swarm file.
fn missing_agent_swarm() -> (Repo, String) {
    let toml = format!(
        "{}{}",
        header(1, ""),
        stream("a", &[], "a.md", "command = \"bin/agent\"")
    );
    (swarm_repo(&toml, &[]), toml)
}

/// A repo with the chapter template, `files` and the swarm file `toml`, all
/// committed.
fn swarm_repo(toml: &str, files: &[(&str, &str)]) -> Repo {
    let repo = Repo::new();
    repo.write("prompts/chapter.md", CHAPTER);
    for (rel, text) in files {
        repo.write(rel, text);
    }
    repo.write("loki.toml", toml);
    repo.commit_all("swarm");
    repo
}

/// An agent command that does not resolve is refused, at the key that set
/// it and with the fix, by a check that creates nothing. (`loki run` calls
/// it before it creates anything; a rehearsal does not need the agent.)
#[test]
fn an_agent_command_that_does_not_resolve_is_refused_before_anything_is_created() {
    let (repo, toml) = missing_agent_swarm();
    let before = repo.snapshot();
    let refs_before = repo.git(&["show-ref"]);
    let cfg = loki::config::load(&repo.path().join("loki.toml")).expect("loads");
    let e = loki::config::check_agent_commands(&cfg, repo.path()).expect_err("refused");
    let pos = at(&toml, "command = \"bin/agent\"", "command");
    assert_eq!(format!("{}:{}", e.line, e.col), pos);
    assert_eq!(
        e.to_string(),
        format!(
            "{}:{pos}: stream `a`: agent command `bin/agent` does not exist ({})\n  help: put the \
             agent there, or give its right path (absolute, or relative to the repository root \
             {})",
            cfg.path.display(),
            repo.path().join("bin/agent").display(),
            repo.path().display()
        )
    );
    assert_eq!(repo.snapshot(), before);
    assert!(!repo.path().join(".loki").exists());
    assert_eq!(repo.git(&["show-ref"]), refs_before);

    // The fake agent of every other test resolves.
    let ok = toml.replace("command = \"bin/agent\"\n", "");
    repo.write("loki.toml", &ok);
    let cfg = loki::config::load(&repo.path().join("loki.toml")).expect("loads");
    loki::config::check_agent_commands(&cfg, repo.path()).expect("resolves");
}

/// The same refusal from `loki run` itself, once the dispatcher calls
/// `config::check_agent_commands` before it creates anything.
#[test]
fn loki_run_refuses_an_agent_command_that_does_not_resolve() {
    let (repo, toml) = missing_agent_swarm();
    let pos = at(&toml, "command = \"bin/agent\"", "command");
    let err = assert_refused(
        &repo,
        "agent command",
        "agent command `bin/agent` does not exist",
    );
    assert!(
        err.contains(&format!("loki.toml:{pos}: stream `a`")),
        "{err}"
    );
    // A rehearsal replaces the agent: the same file rehearses.
    let out = repo.loki(&["run", "--rehearse", "--plain"]);
    assert!(out.status.success(), "{}", both(&out));
}

#[test]
fn init_writes_an_example_and_refuses_to_overwrite() {
    let repo = Repo::new();
    let out = repo.loki(&["init"]);
    assert!(out.status.success(), "{}", both(&out));
    for f in [
        "loki.toml",
        "prompts/chapter.md",
        "prompts/retry.md",
        "prompts/resolve.md",
        ".loki/.gitignore",
        "outline.md",
    ] {
        assert!(repo.path().join(f).exists(), "{f} missing");
        // The mode any editor would give a new file: 0666 less the umask
        // (loki inherits this process's).
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(repo.path().join(f))
            .expect("stat")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o666 & !loki::util::umask(), "{f} has mode {mode:o}");
    }
    let toml = repo.read("loki.toml");
    assert!(toml.contains("target = \"main\""));
    assert!(toml.contains("depends_on = [\"ch01\"]"));
    // Until the files are committed, as init says to, the input the example
    // reads is not in the branch its worktrees start from: the swarm file
    // says so (`loki status` shows it as a warning).
    let st = repo.loki(&["status"]);
    assert!(
        stderr(&st)
            .contains("input {{OUTLINE}} of stream `ch01`: `outline.md` is not in branch `main`")
            && stderr(&st).contains("commit it"),
        "{}",
        both(&st)
    );
    repo.commit_all("loki init");
    // The example is valid: a rehearsal-free validation through `loki status`.
    let st = status_json(&repo);
    assert_eq!(st["streams"].as_array().map(|a| a.len()), Some(2));

    let before = repo.snapshot();
    let again = repo.loki(&["init"]);
    assert_eq!(again.status.code(), Some(2));
    assert!(
        stderr(&again).contains("would overwrite"),
        "{}",
        both(&again)
    );
    assert_eq!(repo.snapshot(), before);
}

#[test]
fn init_refuses_outside_a_repo_and_in_a_repo_without_commits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = loki_outside_a_repo(dir.path(), &["init"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("not a git repository"),
        "{}",
        both(&out)
    );
    assert_eq!(std::fs::read_dir(dir.path()).expect("read").count(), 0);

    std::process::Command::new("git")
        .args(["init", "-q"])
        .current_dir(dir.path())
        .status()
        .expect("git init");
    let out = std::process::Command::new(loki_bin())
        .arg("init")
        .current_dir(dir.path())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("no commit"), "{}", both(&out));
}

/// A plain agent is never asked `--version`: one that does its real work
/// whatever its arguments would otherwise write into the user's checkout
/// (and stall the merge). Its `Loki-Agent` trailer is its command.
#[test]
fn a_plain_agent_is_run_only_as_the_agent() {
    let repo = Repo::new();
    repo.write(
        "agent.sh",
        "#!/bin/sh\nif [ -n \"$1\" ]; then echo probed > \"$PWD/PROBED-$1\"; fi\n\
         mkdir -p out && echo \"text of $LOKI_STREAM_ID\" > out/$LOKI_STREAM_ID.md\n",
    );
    make_executable(&repo.path().join("agent.sh"));
    repo.write("prompts/chapter.md", CHAPTER);
    let toml = header(1, "").replace(
        &format!("command = \"{}\"", fake_agent().display()),
        "command = \"./agent.sh\"",
    );
    repo.write(
        "loki.toml",
        &format!("{toml}{}", stream("a", &[], "out/a.md", "")),
    );
    repo.write(".loki/.gitignore", loki::commands::init::LOKI_GITIGNORE);
    repo.commit_all("swarm");

    let out = repo.loki(&["run", "--plain"]);
    assert!(out.status.success(), "{}", both(&out));
    let doctor = repo.loki(&["doctor"]);
    assert!(
        stdout(&doctor).contains("./agent.sh: found"),
        "doctor names the agent it found: {}",
        both(&doctor)
    );
    let probed: Vec<_> = std::fs::read_dir(repo.path())
        .expect("read repo")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("PROBED-"))
        .map(|e| e.file_name())
        .collect();
    assert!(
        probed.is_empty(),
        "the agent was run with arguments: {probed:?}"
    );
    let t = trailers(&repo, "main");
    assert!(
        t.contains(&("Loki-Agent".into(), "./agent.sh".into())),
        "{t:?}"
    );
    assert_clean_repo(&repo);
}

/// A swarm file in a subfolder (`loki -c books/two/loki.toml run`): its
/// prompt paths are relative to its folder, when checked and when read at
/// run time alike; outputs stay relative to the repository root.
#[test]
fn a_swarm_file_in_a_subfolder_reads_its_own_prompts() {
    let repo = Repo::new();
    repo.write(
        "books/two/prompts/chapter.md",
        "# Chapter {{CHAPTER}} of book two\n\nWrite the chapter to {{OUTPUTS}}.\n",
    );
    // A template of the same name at the root must not be the one used.
    repo.write("prompts/chapter.md", "# The wrong template {{CHAPTER}}\n");
    let mut toml = header(1, "");
    toml.push_str(&stream("b2ch01", &[], "books/two/ch01.md", ""));
    repo.write("books/two/loki.toml", &toml);
    repo.write(".loki/.gitignore", loki::commands::init::LOKI_GITIGNORE);
    repo.commit_all("book two");

    let out = repo.loki(&["-c", "books/two/loki.toml", "run", "--plain"]);
    assert!(out.status.success(), "{}", both(&out));
    let prompt = repo.read(".loki/runs/b2ch01/attempt-1/prompt.md");
    assert!(prompt.contains("of book two"), "{prompt}");
    assert!(repo.read("books/two/ch01.md").contains("b2ch01"));
    assert_clean_repo(&repo);
}
