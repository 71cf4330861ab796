//! Rehearsal and the demo: the whole swarm with the built-in stand-in agent.

mod common;
use common::*;

fn book(repo: &Repo) {
    repo.write(
        "prompts/chapter.md",
        "# {{CHAPTER}}\n\n{{OUTLINE}}\n\nWrite the chapter to {{OUTPUTS}}.\n",
    );
    repo.write("outline.md", "# Outline\n");
    let mut toml = header(2, "");
    toml.push_str("[checks]\nwords = [100, 140]\nrequire = [\"Mira\"]\n\n");
    let inputs = "inputs = { OUTLINE = \"outline.md\" }";
    toml.push_str(&stream("ch01", &[], "chapters/ch01.md", inputs));
    toml.push_str(&stream("ch02", &["ch01"], "chapters/ch02.md", inputs));
    toml.push_str(&stream("ch03", &["ch01"], "chapters/ch03.md", inputs));
    toml.push_str(&stream(
        "ch04",
        &["ch02", "ch03"],
        "chapters/ch04.md",
        inputs,
    ));
    repo.write("loki.toml", &toml);
    repo.commit_all("swarm");
}

#[test]
fn a_rehearsal_runs_everything_and_leaves_the_target_untouched() {
    let repo = Repo::new();
    book(&repo);
    let head = repo.git(&["rev-parse", "main"]);
    let refs = repo.git(&["for-each-ref", "--format=%(refname)"]);
    let out = repo.loki(&["run", "--rehearse", "--plain"]);
    assert!(out.status.success(), "{}", both(&out));
    let text = stdout(&out);
    assert!(text.contains("rehearsal: 4 of 4 streams merged"), "{text}");
    assert!(text.contains("main is untouched"), "{text}");
    assert_eq!(
        repo.git(&["rev-parse", "main"]),
        head,
        "the rehearsal moved main"
    );
    assert_eq!(
        repo.git(&["for-each-ref", "--format=%(refname)"]),
        refs,
        "the rehearsal left refs behind"
    );
    assert!(
        !repo.path().join("chapters").exists(),
        "the rehearsal wrote into the user's checkout"
    );
    assert!(
        !repo.path().join(".loki/state").exists(),
        "the rehearsal created real state"
    );
    assert_clean_repo(&repo);

    // With --keep, the scratch branch holds the rehearsed book: four merges,
    // outputs that meet the word counts and name their stream.
    let out = repo.loki(&["run", "--rehearse", "--keep", "--plain"]);
    assert!(out.status.success(), "{}", both(&out));
    let branch = repo.git(&[
        "for-each-ref",
        "--format=%(refname:short)",
        "refs/heads/loki-rehearsal/",
    ]);
    let branch = branch.trim();
    assert!(!branch.is_empty(), "no scratch branch kept");
    let merges = first_parent_subjects(&repo, branch)
        .into_iter()
        .filter(|s| s.starts_with("Merge stream "))
        .count();
    assert_eq!(merges, 4);
    let ch04 = repo.git(&["show", &format!("{branch}:chapters/ch04.md")]);
    assert!(ch04.contains("ch04") && ch04.contains("Mira"), "{ch04}");
    let words = loki::checks::count_words(&ch04);
    assert!((100..=140).contains(&words), "{words} words");
    assert_eq!(repo.git(&["rev-parse", "main"]), head);
}

#[test]
fn a_rehearsal_finds_a_missing_input_before_a_real_night() {
    let repo = Repo::new();
    book(&repo);
    std::fs::remove_file(repo.path().join("outline.md")).expect("rm");
    repo.commit_all("lose the outline");
    // Refused when the swarm file is read, before any scratch branch.
    let refs = repo.git(&["show-ref"]);
    let out = repo.loki(&["run", "--rehearse", "--plain"]);
    assert_eq!(out.status.code(), Some(2), "{}", both(&out));
    assert!(
        stderr(&out).contains("`outline.md` is not in branch `main`"),
        "{}",
        both(&out)
    );
    assert_eq!(repo.git(&["show-ref"]), refs);
}

#[test]
fn the_demo_completes_and_shows_the_merged_graph() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A --dir that does not exist yet is made.
    let out = std::process::Command::new(loki_bin())
        .args(["demo", "--plain", "--dir"])
        .arg(dir.path().join("new/folder"))
        .output()
        .expect("loki demo");
    assert!(out.status.success(), "{}", both(&out));
    let text = stdout(&out);
    assert!(text.contains("8 of 8 streams merged into main"), "{text}");
    assert_eq!(text.matches("Merge stream ch0").count(), 6, "{text}");
    // The fan-out: one profile per character of the bible.
    for who in ["mira", "oskar"] {
        assert!(
            text.contains(&format!("Merge stream profile.{who}")),
            "{text}"
        );
    }
    // A first draft that fails its check, and the retry that passes.
    assert!(
        text.contains("ch03         retrying          attempt 1 FAIL: forbid `suddenly`"),
        "{text}"
    );
    assert!(
        text.contains("loki: ch03 attempt 2 (checks passed)"),
        "{text}"
    );
    // The approval, given by the demo itself and said so.
    assert!(
        text.contains("ch06 waits for a person's approval; the demo approves it"),
        "{text}"
    );
    assert!(text.contains("approved by loki-demo"), "{text}");
    assert!(text.contains("$ git log --graph --oneline"), "{text}");
}

/// Awkward but valid swarms rehearse cleanly: a 64-character id (the
/// rehearsal's `rh-` name must still be a valid id) and forbidden words
/// that the stand-in's filler text would otherwise contain.
#[test]
fn a_rehearsal_handles_long_ids_and_forbidden_filler_words() {
    let repo = Repo::new();
    repo.write("prompts/chapter.md", "Write the chapter to {{OUTPUTS}}.\n");
    let long = format!("ch-{}", "x".repeat(61));
    assert_eq!(long.len(), 64);
    let mut toml = header(2, "");
    toml.push_str(
        "[checks]\nwords = [60, 80]\nforbid = [\"slowly\", \"the harbour\", \"bells\"]\n\n",
    );
    toml.push_str(&stream(&long, &[], "chapters/long.md", ""));
    toml.push_str(&stream("next", &[&long], "chapters/next.md", ""));
    repo.write("loki.toml", &toml);
    repo.commit_all("swarm");
    let refs = repo.git(&["show-ref"]);
    let out = repo.loki(&["run", "--rehearse", "--plain"]);
    assert!(out.status.success(), "{}", both(&out));
    assert!(
        stdout(&out).contains("2 of 2 streams merged"),
        "{}",
        both(&out)
    );
    assert_eq!(repo.git(&["show-ref"]), refs);
    assert!(!repo.path().join(".loki/rehearsal").exists());
    assert_clean_repo(&repo);
}

/// A rehearsal that fails keeps its logs and reports (the summary points
/// at them) but still removes its branches; a rehearsal refused because
/// another one runs changes nothing at all.
#[test]
fn a_failed_rehearsal_keeps_its_logs_and_a_second_one_is_refused() {
    let repo = Repo::new();
    repo.write("prompts/chapter.md", "Write the chapter to {{OUTPUTS}}.\n");
    let mut toml = header(1, "");
    toml.push_str(&stream(
        "ch01",
        &[],
        "chapters/ch01.md",
        "checks = { command = \"echo the editor says no; exit 1\" }",
    ));
    repo.write("loki.toml", &toml);
    repo.commit_all("swarm");
    let refs = repo.git(&["show-ref"]);
    let out = repo.loki(&["run", "--rehearse", "--plain"]);
    assert_eq!(out.status.code(), Some(1), "{}", both(&out));
    let text = stdout(&out);
    assert!(text.contains("logs and check reports are kept"), "{text}");
    let report = repo.read(".loki/rehearsal/runs/rh-ch01/attempt-1/checks.json");
    assert!(report.contains("the editor says no"), "{report}");
    assert_eq!(repo.git(&["show-ref"]), refs, "branches left behind");

    // Another rehearsal holds the lock: refused, and the kept files stay.
    let lock = loki::store::SupervisorLock::acquire_at(&repo.path().join(".loki/rehearsal.lock"))
        .expect("lock")
        .expect("free");
    let out = repo.loki(&["run", "--rehearse", "--plain"]);
    assert_eq!(out.status.code(), Some(2), "{}", both(&out));
    assert!(stderr(&out).contains("another rehearsal"), "{}", both(&out));
    assert!(repo
        .path()
        .join(".loki/rehearsal/runs/rh-ch01/attempt-1/checks.json")
        .exists());
    assert_eq!(repo.git(&["show-ref"]), refs);
    drop(lock);
}
