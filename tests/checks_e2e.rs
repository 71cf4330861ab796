//! Checks end to end with the fake agent: violations retried with feedback
//! until they pass (or the stream fails with its last report), the approval
//! gate with `loki show`, `loki reject` and `loki approve`, word counts,
//! versioned duplicates, a custom command, Cyrillic terms, and `loki check`
//! on a worktree fixed by hand.

mod common;
use common::*;

use loki::checks::{CheckReport, Level};

/// A template without `{{FEEDBACK}}`: retries get the `prompts/retry.md`
/// preamble (with the last-attempt text on the last attempt).
const NO_SLOT: &str = "# Chapter {{CHAPTER}}\n\nWrite the chapter to {{OUTPUTS}}.\n";

fn swarm(repo: &Repo, template: &str, max_parallel: usize, streams: &[String]) {
    let mut toml = header(max_parallel, "");
    for s in streams {
        toml.push_str(s);
    }
    repo.write_swarm(template, &toml);
}

/// A swarm of one stream `ch01` writing `chapters/ch01.md`, with `extra` keys.
fn one_chapter(repo: &Repo, extra: &str) {
    swarm(
        repo,
        CHAPTER,
        1,
        &[stream("ch01", &[], "chapters/ch01.md", extra)],
    );
}

fn prompt(repo: &Repo, id: &str, n: u32) -> String {
    repo.read(&format!(".loki/runs/{id}/attempt-{n}/prompt.md"))
}

fn report(repo: &Repo, id: &str, n: u32) -> CheckReport {
    CheckReport::read(
        &repo
            .path()
            .join(format!(".loki/runs/{id}/attempt-{n}/checks.json")),
    )
    .unwrap_or_else(|e| panic!("checks.json of {id} attempt {n}: {e:#}"))
}

/// `git grep -i <term> <rev>` outside the swarm file (which names the
/// term): what it finds (empty when nothing).
fn grep_rev(repo: &Repo, term: &str, rev: &str) -> String {
    let out = std::process::Command::new("git")
        .args(["grep", "-i", "-n", term, rev, "--", ".", ":!loki.toml"])
        .current_dir(repo.path())
        .output()
        .expect("git grep");
    assert!(
        out.status.code() == Some(0) || out.status.code() == Some(1),
        "git grep failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// (subject, Loki-Checks trailer) of the commits on the merge's second
/// parent that are not on its first parent, oldest first.
fn stream_history(repo: &Repo, merge: &str) -> Vec<(String, String)> {
    let revs = repo.git(&["rev-list", "--reverse", &format!("{merge}^1..{merge}^2")]);
    revs.lines()
        .map(|rev| {
            let subject = repo
                .git(&["log", "-1", "--format=%s", rev])
                .trim()
                .to_string();
            let checks = trailers(repo, rev)
                .into_iter()
                .find(|(k, _)| k == "Loki-Checks")
                .map(|(_, v)| v)
                .unwrap_or_default();
            (subject, checks)
        })
        .collect()
}

/// The merge commit `Merge stream <id>` on the target's first-parent line.
fn merge_of(repo: &Repo, id: &str) -> String {
    let log = repo.git(&["log", "--first-parent", "--format=%H %s", "main"]);
    log.lines()
        .find_map(|l| {
            let (h, s) = l.split_once(' ')?;
            (s == format!("Merge stream {id}")).then(|| h.to_string())
        })
        .unwrap_or_else(|| panic!("no merge of {id} on main:\n{log}"))
}

fn trailer(repo: &Repo, rev: &str, key: &str) -> String {
    trailers(repo, rev)
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("{rev} has no {key} trailer"))
}

/// The line numbers (1-based) of `file` at `rev` that contain `term`, any case.
fn lines_with(repo: &Repo, rev: &str, file: &str, term: &str) -> Vec<usize> {
    let text = repo.git(&["show", &format!("{rev}:{file}")]);
    let t = term.to_lowercase();
    text.lines()
        .enumerate()
        .filter(|(_, l)| l.to_lowercase().contains(&t))
        .map(|(i, _)| i + 1)
        .collect()
}

fn attempt_commit(repo: &Repo, id: &str, n: u32) -> String {
    let out = repo.git(&[
        "log",
        "--all",
        "--format=%H",
        &format!("--grep=^loki: {id} attempt {n} "),
    ]);
    out.lines()
        .next()
        .unwrap_or_else(|| panic!("no commit of {id} attempt {n}"))
        .to_string()
}

fn config(repo: &Repo) -> loki::config::SwarmFile {
    loki::config::load(&repo.path().join("loki.toml")).expect("loki.toml")
}

fn line_list(lines: &[usize]) -> String {
    let l: Vec<String> = lines.iter().map(|n| n.to_string()).collect();
    l.join(", ")
}

#[test]
fn fails_twice_then_passes_with_feedback_and_three_attempts_in_history() {
    let repo = Repo::new();
    swarm(
        &repo,
        NO_SLOT,
        1,
        &[stream(
            "ch01",
            &[],
            "chapters/ch01.md",
            "checks = { forbid = [\"dragon\"] }\nenv = { FAKE_AGENT_VIOLATE = \"dragon@1,2\" }",
        )],
    );
    let out = repo.loki(&["run", "--plain"]);
    assert!(out.status.success(), "{}", both(&out));
    assert_eq!(stream_status(&repo, "ch01"), "merged");
    assert_eq!(status_stream(&repo, "ch01")["attempts"], 3);

    // Attempt 1's report names the lines where `dragon` really is.
    let r1 = report(&repo, "ch01", 1);
    assert_eq!(r1.status, Level::Fail);
    let hit = r1
        .entries
        .iter()
        .find(|e| e.check == "forbid" && e.status == Level::Fail)
        .expect("forbid entry");
    let c1 = attempt_commit(&repo, "ch01", 1);
    let real = lines_with(&repo, &c1, "chapters/ch01.md", "dragon");
    assert!(!real.is_empty());
    assert_eq!(hit.lines, real);

    // Attempt 2's prompt carries the violation with its line numbers.
    let p2 = prompt(&repo, "ch01", 2);
    let word = if real.len() == 1 { "line" } else { "lines" };
    let expected = format!(
        "`dragon` found in chapters/ch01.md on {word} {}",
        line_list(&real)
    );
    assert!(p2.contains(&expected), "{expected:?} not in:\n{p2}");
    assert!(p2.contains("`dragon` is forbidden"), "{p2}");
    assert!(p2.contains("attempt 1 of 3"), "{p2}");
    assert!(!p2.contains("This is the last attempt"), "{p2}");
    // The task itself is still in the prompt.
    assert!(
        p2.contains("Write the chapter to `chapters/ch01.md`"),
        "{p2}"
    );

    // Attempt 3 is the last: the warning, and attempt 2's violations.
    let p3 = prompt(&repo, "ch01", 3);
    assert!(p3.contains("This is the last attempt"), "{p3}");
    let c2 = attempt_commit(&repo, "ch01", 2);
    let real2 = lines_with(&repo, &c2, "chapters/ch01.md", "dragon");
    let word = if real2.len() == 1 { "line" } else { "lines" };
    let expected3 = format!(
        "`dragon` found in chapters/ch01.md on {word} {}",
        line_list(&real2)
    );
    assert!(p3.contains(&expected3), "{expected3:?} not in:\n{p3}");
    assert_eq!(report(&repo, "ch01", 3).status, Level::Pass);

    // The merge's second parent holds all three attempts.
    let merge = merge_of(&repo, "ch01");
    let hist = stream_history(&repo, &merge);
    assert_eq!(hist.len(), 3, "{hist:?}");
    for (i, (subject, checks)) in hist.iter().enumerate() {
        let n = i + 1;
        assert!(
            subject.starts_with(&format!("loki: ch01 attempt {n} ")),
            "{hist:?}"
        );
        if n < 3 {
            assert!(subject.ends_with("(checks failed)"), "{hist:?}");
            assert!(checks.starts_with("FAIL: forbid `dragon`"), "{hist:?}");
        } else {
            assert!(subject.ends_with("(checks passed)"), "{hist:?}");
            assert!(checks.starts_with("PASS"), "{hist:?}");
        }
    }
    assert_eq!(trailer(&repo, &merge, "Loki-Checks"), "PASS");
    assert_eq!(trailer(&repo, &merge, "Loki-Attempts"), "3");

    // Nothing with `dragon` reached the target.
    assert_eq!(grep_rev(&repo, "dragon", "main"), "");
    assert!(!repo
        .read("chapters/ch01.md")
        .to_lowercase()
        .contains("dragon"));
    assert_clean_repo(&repo);
}

#[test]
fn a_stream_that_never_passes_fails_with_its_last_report_and_can_be_fixed_by_hand() {
    let repo = Repo::new();
    swarm(
        &repo,
        CHAPTER,
        2,
        &[
            stream(
                "ch01",
                &[],
                "chapters/ch01.md",
                "max_attempts = 2\nchecks = { forbid = [\"dragon\"] }\nenv = { FAKE_AGENT_VIOLATE = \"dragon\" }",
            ),
            stream("ch02", &["ch01"], "chapters/ch02.md", ""),
            stream("side", &[], "side.md", ""),
        ],
    );
    let head_before = repo.git(&["rev-parse", "main"]);
    let out = repo.loki(&["run", "--plain"]);
    assert_eq!(out.status.code(), Some(1), "{}", both(&out));
    let text = stdout(&out);
    assert!(text.contains("forbid `dragon`"), "{text}");

    let st = status_stream(&repo, "ch01");
    assert_eq!(st["status"], "failed", "{st}");
    assert_eq!(st["attempts"], 2, "{st}");
    let reason = st["reason"].as_str().unwrap_or("");
    assert!(
        reason.contains("FAIL: forbid `dragon` in chapters/ch01.md"),
        "{reason}"
    );
    assert!(reason.contains("after 2 attempt(s)"), "{reason}");
    let last = report(&repo, "ch01", 2);
    assert_eq!(last.status, Level::Fail);
    assert!(last.summary.contains("dragon"), "{}", last.summary);
    assert_eq!(stream_status(&repo, "ch02"), "blocked");
    assert_eq!(stream_status(&repo, "side"), "merged");
    // Only `side` was merged; nothing of ch01 is on the target.
    assert_eq!(grep_rev(&repo, "dragon", "main"), "");
    assert_ne!(repo.git(&["rev-parse", "main"]), head_before);

    let root = repo.path();
    let cfg = config(&repo);
    // `loki show` works for a failed stream (its worktree is kept).
    let shown = loki::commands::show::show_text(root, &cfg, "main", "ch01").expect("show");
    assert!(shown.contains("stream ch01: failed"), "{shown}");
    assert!(shown.contains("attempt:   2 of 2"), "{shown}");
    assert!(shown.contains("== checks (attempt 2)"), "{shown}");
    assert!(shown.contains(&last.summary), "{shown}");
    assert!(shown.contains("+++ b/chapters/ch01.md"), "{shown}");
    // A plain agent: its last output lines are the final message.
    assert!(shown.contains("done: Wrote chapters/ch01.md."), "{shown}");
    assert_eq!(
        loki::commands::show::show(root, &cfg, "main", "ch01").expect("show"),
        0
    );

    // `loki check` re-runs the checks without an agent and changes no state.
    let state_file = root.join(".loki/state/ch01.json");
    let state_before = std::fs::read(&state_file).expect("state");
    assert_eq!(
        loki::commands::show::check(root, &cfg, Some("ch01")).expect("check"),
        1
    );
    let manual = root.join(".loki/runs/ch01/manual-check.json");
    assert_eq!(
        CheckReport::read(&manual).expect("manual report").status,
        Level::Fail
    );

    // The user fixes the draft by hand; the check now passes.
    let wt_file = root.join(".loki/worktrees/ch01/chapters/ch01.md");
    let draft = std::fs::read_to_string(&wt_file).expect("draft");
    assert!(draft.contains("dragon"));
    std::fs::write(&wt_file, draft.replace("dragon", "lantern")).expect("fix");
    assert_eq!(
        loki::commands::show::check(root, &cfg, Some("ch01")).expect("check"),
        0
    );
    assert_eq!(
        CheckReport::read(&manual).expect("manual report").status,
        Level::Pass
    );
    // Without an id: every stream with a worktree (only ch01 has one).
    assert_eq!(
        loki::commands::show::check(root, &cfg, None).expect("check all"),
        0
    );
    assert_eq!(std::fs::read(&state_file).expect("state"), state_before);
    // `loki show` shows the newer manual report after the attempt's.
    let shown = loki::commands::show::show_text(root, &cfg, "main", "ch01").expect("show");
    assert!(
        shown.contains("later, by hand (`loki check ch01`"),
        "{shown}"
    );
    assert!(
        shown.contains("uncommitted changes in the worktree"),
        "{shown}"
    );

    // Clear refusals: checking a merged stream, a stream that never ran, an
    // unknown id.
    let e = loki::commands::show::check(root, &cfg, Some("side")).expect_err("merged");
    let msg = format!("{e:#}");
    assert!(
        msg.contains("no worktree") && msg.contains("help:"),
        "{msg}"
    );
    let e = loki::commands::show::check(root, &cfg, Some("nope")).expect_err("unknown");
    assert!(format!("{e:#}").contains("unknown stream `nope`"), "{e:#}");
    // A merged stream is shown from git (its worktree and branch are gone).
    let merged = loki::commands::show::show_text(root, &cfg, "main", "side").expect("merged");
    assert!(
        merged.contains("stream side is merged into main"),
        "{merged}"
    );
    assert!(merged.contains("  side.md  output  ("), "{merged}");
    let e = loki::commands::show::show_text(root, &cfg, "main", "ch02").expect_err("never ran");
    let msg = format!("{e:#}");
    assert!(
        msg.contains("no branch or worktree") && msg.contains("help:"),
        "{msg}"
    );
}

/// Feedback accumulates: the third attempt is told the first one's
/// forbidden word as well as the second one's short draft.
#[test]
fn a_retry_is_told_what_every_earlier_attempt_did_wrong() {
    let repo = Repo::new();
    one_chapter(
        &repo,
        "checks = { forbid = [\"dragon\"], words = [100, 300] }\n\
         env = { FAKE_AGENT_VIOLATE = \"dragon@1\", FAKE_AGENT_WORDS = \"20@2\" }",
    );
    let out = repo.loki(&["run", "--plain"]);
    assert!(out.status.success(), "{}", both(&out));
    let p3 = prompt(&repo, "ch01", 3);
    let first = p3.find("Attempt 1:").unwrap_or_else(|| panic!("{p3}"));
    let second = p3.find("Attempt 2:").unwrap_or_else(|| panic!("{p3}"));
    assert!(first < second, "{p3}");
    assert!(
        p3[first..second].contains("`dragon` found in chapters/ch01.md"),
        "{p3}"
    );
    assert!(p3[second..].contains("20 words; required 100–300"), "{p3}");
}

/// The template `loki init` installs has `{{FEEDBACK}}`; a retry of such a
/// template must still tell the agent that it is on its last attempt.
#[test]
fn a_feedback_slot_still_gets_the_last_attempt_warning() {
    let repo = Repo::new();
    one_chapter(
        &repo,
        "checks = { forbid = [\"dragon\"] }\nenv = { FAKE_AGENT_VIOLATE = \"dragon@1,2\" }",
    );
    let out = repo.loki(&["run", "--plain"]);
    assert!(out.status.success(), "{}", both(&out));
    let p2 = prompt(&repo, "ch01", 2);
    assert!(
        p2.contains("`dragon` found in chapters/ch01.md on line"),
        "{p2}"
    );
    let p3 = prompt(&repo, "ch01", 3);
    assert!(
        p3.contains("`dragon` found in chapters/ch01.md on line"),
        "{p3}"
    );
    assert!(
        p3.contains("This is the last attempt"),
        "the last attempt's prompt does not say so:\n{p3}"
    );
}

#[test]
fn approve_and_reject_end_to_end_without_a_supervisor() {
    let repo = Repo::new();
    one_chapter(&repo, "approve = true\nenv = { FAKE_AGENT_JSON = \"1\", FAKE_AGENT_INCLUDE = \"Mira\" }\nchecks = { words = [100, 300], require = [\"Mira\"] }");
    let head = repo.git(&["rev-parse", "main"]);
    let out = repo.loki(&["run", "--plain"]);
    assert_eq!(out.status.code(), Some(1), "{}", both(&out));
    assert!(
        stdout(&out).contains("loki approve"),
        "no approval hint:\n{}",
        both(&out)
    );
    assert_eq!(stream_status(&repo, "ch01"), "awaiting_approval");
    assert_eq!(repo.git(&["rev-parse", "main"]), head, "merged unapproved");

    let root = repo.path();
    let cfg = config(&repo);
    assert_eq!(
        loki::commands::show::show(root, &cfg, "main", "ch01").expect("show"),
        0
    );
    let shown = loki::commands::show::show_text(root, &cfg, "main", "ch01").expect("show");
    for needle in [
        "stream ch01: awaiting_approval",
        "attempt:   1 of 3",
        "`loki approve ch01` merges it",
        "`loki reject ch01 --note \"what to change\"`",
        // the output with its word count, and its text
        "chapters/ch01.md: 200 words (required 100–300)",
        "*Stream ch01, attempt 1.*",
        // the report
        "== checks (attempt 1)",
        "PASS: ",
        "PASS  require",
        // the final message: the result of the stream-json result line
        "== final message (attempt 1)\nWrote chapters/ch01.md.\n",
        // the diff
        "diff against main: 1 file(s) changed",
        "+++ b/chapters/ch01.md",
    ] {
        assert!(shown.contains(needle), "{needle:?} not in:\n{shown}");
    }

    let out = repo.loki(&["reject", "ch01", "--note", "make Mira braver"]);
    assert!(out.status.success(), "{}", both(&out));
    assert_eq!(stream_status(&repo, "ch01"), "retrying");
    let out = repo.loki(&["run", "--plain"]);
    assert_eq!(out.status.code(), Some(1), "{}", both(&out));
    let p2 = prompt(&repo, "ch01", 2);
    assert!(p2.contains("make Mira braver"), "{p2}");
    assert_eq!(stream_status(&repo, "ch01"), "awaiting_approval");
    // The rejected attempt does not count.
    let shown = loki::commands::show::show_text(root, &cfg, "main", "ch01").expect("show");
    assert!(
        shown.contains("attempt:   2 of 3; 1 did not count"),
        "{shown}"
    );
    assert!(shown.contains("*Stream ch01, attempt 2.*"), "{shown}");
    assert_eq!(repo.git(&["rev-parse", "main"]), head, "merged unapproved");

    let out = repo.loki(&["approve", "ch01", "--by", "Ann Editor"]);
    assert!(out.status.success(), "{}", both(&out));
    assert_eq!(stream_status(&repo, "ch01"), "merged");
    let merge = merge_of(&repo, "ch01");
    assert_eq!(trailer(&repo, &merge, "Loki-Approved-By"), "Ann Editor");
    assert!(repo
        .git(&["show", "main:chapters/ch01.md"])
        .contains("*Stream ch01, attempt 2.*"));
    assert_clean_repo(&repo);

    // A merged stream is still shown: what git records of it.
    let out = repo.loki(&["show", "ch01"]);
    assert!(out.status.success(), "{}", both(&out));
    let text = stdout(&out);
    assert!(text.contains("stream ch01 is merged into main"), "{text}");
    assert!(text.contains("approved by Ann Editor"), "{text}");
    assert!(text.contains("  attempt 2  "), "{text}");
    assert!(
        text.contains("total: 1 stream merged into main, 2 attempts"),
        "{text}"
    );
    let words = repo
        .git(&["show", "main:chapters/ch01.md"])
        .split_whitespace()
        .count();
    assert!(
        text.contains(&format!(
            "  chapters/ch01.md  output  ({words} words in main)"
        )),
        "{text}"
    );
}

/// A reviewer fixes an awaiting draft by hand, re-checks it with `loki check`
/// and approves it: the fixed text is what reaches the target.
#[test]
fn a_draft_fixed_by_hand_and_approved_keeps_the_fix() {
    let repo = Repo::new();
    one_chapter(&repo, "approve = true\nchecks = { forbid = [\"dragon\"] }");
    let out = repo.loki(&["run", "--plain"]);
    assert_eq!(out.status.code(), Some(1), "{}", both(&out));
    assert_eq!(stream_status(&repo, "ch01"), "awaiting_approval");

    let root = repo.path();
    let cfg = config(&repo);
    let wt_file = root.join(".loki/worktrees/ch01/chapters/ch01.md");
    let draft = std::fs::read_to_string(&wt_file).expect("draft");
    let fixed = format!("{draft}\nA closing line the editor wrote.\n");
    std::fs::write(&wt_file, &fixed).expect("edit");
    assert_eq!(
        loki::commands::show::check(root, &cfg, Some("ch01")).expect("check"),
        0
    );

    let out = repo.loki(&["approve", "ch01", "--by", "Ann"]);
    assert!(out.status.success(), "{}", both(&out));
    assert_eq!(stream_status(&repo, "ch01"), "merged");
    assert_eq!(
        repo.git(&["show", "main:chapters/ch01.md"]),
        fixed,
        "the reviewer's edit in the worktree was lost by the approval"
    );
}

#[test]
fn six_stream_book_with_checks_retries_every_violation_and_merges_only_clean_text() {
    let repo = Repo::new();
    repo.write("outline.md", "# Outline\n\nSix parts.\n");
    let violate = |spec: &str| format!("env = {{ FAKE_AGENT_VIOLATE = \"{spec}\" }}");
    swarm(
        &repo,
        CHAPTER,
        3,
        &[
            stream("bible", &[], "bible/characters.md", ""),
            stream("ch01", &["bible"], "chapters/ch01.md", &violate("dragon@1")),
            stream("ch02", &["ch01"], "chapters/ch02.md", ""),
            stream("ch03", &["ch01"], "chapters/ch03.md", &violate("Dragon@1")),
            stream("ch04", &["ch02", "ch03"], "chapters/ch04.md", ""),
            stream(
                "epilogue",
                &["ch04"],
                "chapters/epilogue.md",
                &violate("DRAGON@1,2"),
            ),
        ],
    );
    // Every stream forbids the term ([checks] applies to all of them).
    let toml = repo.read("loki.toml").replacen(
        "[[streams]]",
        "[checks]\nforbid = [\"dragon\"]\n\n[[streams]]",
        1,
    );
    repo.write("loki.toml", &toml);
    repo.commit_all("checks");

    let out = repo.loki(&["run", "--plain"]);
    assert!(out.status.success(), "{}", both(&out));
    assert!(
        stdout(&out).contains("6 of 6 streams merged into main"),
        "{}",
        both(&out)
    );
    for (id, attempts) in [
        ("bible", 1),
        ("ch01", 2),
        ("ch02", 1),
        ("ch03", 2),
        ("ch04", 1),
        ("epilogue", 3),
    ] {
        let st = status_stream(&repo, id);
        assert_eq!(st["status"], "merged", "{st}");
        assert_eq!(st["attempts"], attempts, "{st}");
        // Every violation was retried with its feedback.
        for n in 2..=attempts {
            let p = prompt(&repo, id, n as u32);
            let file = if id == "bible" {
                "bible/characters.md".to_string()
            } else {
                format!("chapters/{id}.md")
            };
            let needle = format!("`dragon` found in {file} on line");
            assert!(
                p.contains(&needle),
                "{id} attempt {n}: {needle:?} not in\n{p}"
            );
            assert_eq!(report(&repo, id, n as u32 - 1).status, Level::Fail);
        }
        // What was merged passed its checks.
        let merge = merge_of(&repo, id);
        assert_eq!(trailer(&repo, &merge, "Loki-Checks"), "PASS", "{id}");
        let hist = stream_history(&repo, &merge);
        assert_eq!(hist.len(), attempts as usize, "{id}: {hist:?}");
        let tip = repo.git(&["rev-parse", &format!("{merge}^2")]);
        assert!(
            trailer(&repo, tip.trim(), "Loki-Checks").starts_with("PASS"),
            "{id}: the merged tip did not pass"
        );
        for (subject, checks) in &hist[..hist.len() - 1] {
            assert!(
                checks.starts_with("FAIL: forbid `dragon`"),
                "{subject}: {checks}"
            );
        }
    }
    assert_eq!(grep_rev(&repo, "dragon", "main"), "");
    // The failed drafts are in the history (the audit trail), not in the tree.
    let in_history = repo.git(&["log", "--format=%H", "--grep=(checks failed)", "main"]);
    assert_eq!(in_history.lines().count(), 4, "{in_history}");
    assert_clean_repo(&repo);
}

#[test]
fn word_counts_fail_then_pass_and_a_warning_still_merges() {
    let repo = Repo::new();
    swarm(
        &repo,
        CHAPTER,
        2,
        &[
            stream(
                "short",
                &[],
                "chapters/short.md",
                "checks = { words = [100, 300] }\nenv = { FAKE_AGENT_WORDS = \"20@1\" }",
            ),
            stream(
                "near",
                &[],
                "chapters/near.md",
                "checks = { words = [100, 300] }\nenv = { FAKE_AGENT_WORDS = \"95\" }",
            ),
        ],
    );
    let out = repo.loki(&["run", "--plain"]);
    assert!(out.status.success(), "{}", both(&out));

    // Too short: fails, is told by how much, then passes with enough words.
    let st = status_stream(&repo, "short");
    assert_eq!(st["status"], "merged", "{st}");
    assert_eq!(st["attempts"], 2, "{st}");
    let r1 = report(&repo, "short", 1);
    assert_eq!(r1.status, Level::Fail);
    assert!(
        r1.summary.contains("words chapters/short.md 20 < 100"),
        "{}",
        r1.summary
    );
    let p2 = prompt(&repo, "short", 2);
    assert!(
        p2.contains("`chapters/short.md` is outside the word range: 20 words; required 100–300"),
        "{p2}"
    );
    assert!(p2.contains("Expand the text"), "{p2}");
    assert_eq!(report(&repo, "short", 2).status, Level::Pass);

    // Within the tolerance: a warning, merged on the first attempt.
    let st = status_stream(&repo, "near");
    assert_eq!(st["status"], "merged", "{st}");
    assert_eq!(st["attempts"], 1, "{st}");
    let r = report(&repo, "near", 1);
    assert_eq!(r.status, Level::Warn, "{r:?}");
    let merge = merge_of(&repo, "near");
    assert_eq!(trailer(&repo, &merge, "Loki-Checks"), "WARN");
    let tip = repo.git(&["rev-parse", &format!("{merge}^2")]);
    let checks = trailer(&repo, tip.trim(), "Loki-Checks");
    assert!(
        checks.starts_with("WARN: words chapters/near.md 95 (range 100–300)"),
        "{checks}"
    );
    let subject = repo.git(&["log", "-1", "--format=%s", tip.trim()]);
    assert!(subject.contains("checks passed with warnings"), "{subject}");
    assert_clean_repo(&repo);
}

#[test]
fn a_versioned_duplicate_fails_and_passes_once_the_agent_stops_duplicating() {
    let repo = Repo::new();
    // An agent that, like a real one told to, deletes the duplicate on a retry.
    let agent = repo.path().join("agent.sh");
    repo.write(
        "agent.sh",
        &format!(
            "#!/bin/sh\nif [ \"$LOKI_ATTEMPT\" -gt 1 ]; then rm -f chapters/ch01_v2.md; fi\nexec {} \"$@\"\n",
            fake_agent().display()
        ),
    );
    make_executable(&agent);
    swarm(
        &repo,
        CHAPTER,
        1,
        &[stream(
            "ch01",
            &[],
            "chapters/ch01.md",
            &format!(
                "command = \"{}\"\nenv = {{ FAKE_AGENT_DUPLICATE = \"@1\" }}",
                agent.display()
            ),
        )],
    );
    let out = repo.loki(&["run", "--plain"]);
    assert!(out.status.success(), "{}", both(&out));
    let st = status_stream(&repo, "ch01");
    assert_eq!(st["status"], "merged", "{st}");
    assert_eq!(st["attempts"], 2, "{st}");

    let r1 = report(&repo, "ch01", 1);
    assert_eq!(r1.status, Level::Fail);
    assert!(
        r1.summary.contains("duplicate chapters/ch01_v2.md"),
        "{}",
        r1.summary
    );
    let p2 = prompt(&repo, "ch01", 2);
    assert!(
        p2.contains(
            "Versioned duplicate `chapters/ch01_v2.md` beside `chapters/ch01.md`: keep one canonical file"
        ),
        "{p2}"
    );
    assert_eq!(report(&repo, "ch01", 2).status, Level::Pass);
    let files = repo.git(&["ls-tree", "-r", "--name-only", "main"]);
    assert!(files.contains("chapters/ch01.md"), "{files}");
    assert!(
        !files.contains("ch01_v2"),
        "the duplicate reached main:\n{files}"
    );
    assert!(!repo.path().join("chapters/ch01_v2.md").exists());
    assert_clean_repo(&repo);
}

#[test]
fn a_custom_command_check_fails_then_passes() {
    let repo = Repo::new();
    repo.write(
        "scripts/check.sh",
        "#!/bin/sh\n# Every chapter needs a finale.\nfor f in $LOKI_OUTPUTS; do\n  grep -qi finale \"$f\" || { echo \"no finale in $f (chapter $LOKI_VAR_CHAPTER)\"; exit 3; }\ndone\necho \"finale present\"\n",
    );
    one_chapter(&repo, "checks = { command = \"sh scripts/check.sh\" }\nenv = { FAKE_AGENT_INCLUDE = \"finale@2\" }");
    let out = repo.loki(&["run", "--plain"]);
    assert!(out.status.success(), "{}", both(&out));
    assert_eq!(status_stream(&repo, "ch01")["attempts"], 2);
    let r1 = report(&repo, "ch01", 1);
    assert_eq!(r1.status, Level::Fail);
    assert_eq!(r1.summary, "FAIL: command exit 3");
    let p2 = prompt(&repo, "ch01", 2);
    assert!(
        p2.contains(
            "The check command `sh scripts/check.sh` failed; fix what it reports. Its output:\n  no finale in chapters/ch01.md (chapter ch01)"
        ),
        "{p2}"
    );
    let r2 = report(&repo, "ch01", 2);
    assert_eq!(r2.status, Level::Pass);
    let cmd = r2
        .entries
        .iter()
        .find(|e| e.check == "command")
        .expect("command entry");
    assert_eq!(cmd.details, "finale present");
    assert!(repo.read("chapters/ch01.md").contains("finale"));
    assert_clean_repo(&repo);
}

/// `[checks.commands]`: named check commands run at once, each with its
/// own timeout; a non-blocking one that fails (or runs out of time) is a
/// warning, and the stream merges.
#[test]
fn named_check_commands_run_in_parallel_and_a_non_blocking_one_only_warns() {
    let repo = Repo::new();
    let marks = tempfile::tempdir().expect("marks");
    let timed = "#!/bin/sh\necho \"start $(date +%s.%N)\" >> \"$LOKI_VAR_MARKS/$1\"\nsleep 1\n\
                 echo \"end $(date +%s.%N)\" >> \"$LOKI_VAR_MARKS/$1\"\n";
    repo.write("scripts/timed.sh", timed);
    repo.write(
        "scripts/style.sh",
        "#!/bin/sh\necho 'too many adverbs'\nexit 1\n",
    );
    swarm(
        &repo,
        CHAPTER,
        1,
        &[format!(
            "[[streams]]\nid = \"ch01\"\nprompt = \"prompts/chapter.md\"\n\
             vars = {{ CHAPTER = \"ch01\", MARKS = \"{}\" }}\noutputs = [\"chapters/ch01.md\"]\n\
             [streams.checks.commands]\n\
             lint = \"sh scripts/timed.sh lint\"\n\
             facts = {{ run = \"sh scripts/timed.sh facts\", timeout = \"30s\" }}\n\
             style = {{ run = \"sh scripts/style.sh\", blocking = false }}\n\
             slow = {{ run = \"sleep 20\", timeout = \"1s\", blocking = false }}\n",
            marks.path().display()
        )],
    );
    let out = repo.loki(&["run", "--plain"]);
    assert!(out.status.success(), "{}", both(&out));
    let r = report(&repo, "ch01", 1);
    assert_eq!(r.status, Level::Warn, "{}", r.human());
    let named = |name: &str| {
        r.entries
            .iter()
            .find(|e| {
                e.target
                    .as_deref()
                    .is_some_and(|t| t.starts_with(&format!("{name} = ")))
            })
            .unwrap_or_else(|| panic!("no entry for {name}: {}", r.human()))
            .clone()
    };
    assert_eq!(named("lint").status, Level::Pass);
    assert_eq!(named("facts").status, Level::Pass);
    assert_eq!(named("style").status, Level::Warn);
    assert!(
        named("style").details.contains("not blocking"),
        "{}",
        r.human()
    );
    assert_eq!(named("slow").status, Level::Warn);
    // The two timed commands overlapped.
    let times = |name: &str| -> (f64, f64) {
        let t = std::fs::read_to_string(marks.path().join(name)).expect("marks");
        let get = |k: &str| {
            t.lines()
                .find_map(|l| l.strip_prefix(k))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .expect("time")
        };
        (get("start "), get("end "))
    };
    let (a0, a1) = times("lint");
    let (b0, b1) = times("facts");
    assert!(a0 < b1 && b0 < a1, "lint {a0}..{a1}, facts {b0}..{b1}");
}

/// A check command that cannot run at all (not found: exit 127) is a
/// configuration error: the stream fails after its first attempt, with
/// the fix, instead of burning every attempt of the agent on it.
#[test]
fn a_check_command_that_cannot_run_fails_the_stream_at_once() {
    let repo = Repo::new();
    one_chapter(
        &repo,
        "checks = { command = \"loki-test-no-such-check --strict\" }",
    );
    let out = repo.loki(&["run", "--plain"]);
    assert_eq!(out.status.code(), Some(1), "{}", both(&out));
    let s = status_stream(&repo, "ch01");
    assert_eq!(s["status"], "failed", "{s:#}");
    assert_eq!(s["attempts"], 1, "one attempt, not max_attempts: {s:#}");
    let reason = s["reason"].as_str().unwrap_or("");
    assert!(
        reason.contains("loki-test-no-such-check") && reason.contains("could not run"),
        "{reason}"
    );
    assert!(stdout(&out).contains("could not run"), "{}", both(&out));
}

/// A stream with no declared outputs whose agent changes nothing is not
/// "merged" with nothing: each attempt fails its `changes` check with
/// feedback, and the stream ends failed, the target untouched.
#[test]
fn an_agent_that_changes_nothing_fails_instead_of_merging_nothing() {
    let repo = Repo::new();
    repo.write(
        "prompts/task.md",
        "Think about stream {{STREAM_ID}}.\n{{FEEDBACK}}\n",
    );
    let toml = format!(
        "{}[[streams]]\nid = \"idle\"\nprompt = \"prompts/task.md\"\noutputs = []\nmax_attempts = 2\n",
        header(1, "")
    );
    repo.write("loki.toml", &toml);
    repo.write(".loki/.gitignore", loki::commands::init::LOKI_GITIGNORE);
    repo.commit_all("swarm");
    let head = repo.git(&["rev-parse", "main"]);
    let out = repo.loki(&["run", "--plain"]);
    assert_eq!(out.status.code(), Some(1), "{}", both(&out));
    let s = status_stream(&repo, "idle");
    assert_eq!(s["status"], "failed", "{s:#}");
    assert_eq!(s["attempts"], 2, "{s:#}");
    assert_eq!(report(&repo, "idle", 1).summary, "FAIL: no change");
    assert!(
        prompt(&repo, "idle", 2).contains("the attempt changed nothing"),
        "{}",
        prompt(&repo, "idle", 2)
    );
    assert_eq!(repo.git(&["rev-parse", "main"]), head, "nothing merged");
}

#[test]
fn cyrillic_terms_are_required_and_forbidden_in_any_case() {
    let repo = Repo::new();
    one_chapter(&repo, "checks = { require = [\"Мира\"], forbid = [\"дракон\"] }\nenv = { FAKE_AGENT_INCLUDE = \"Мира\", FAKE_AGENT_VIOLATE = \"Дракон@1\" }");
    let out = repo.loki(&["run", "--plain"]);
    assert!(out.status.success(), "{}", both(&out));
    let st = status_stream(&repo, "ch01");
    assert_eq!(st["status"], "merged", "{st}");
    assert_eq!(st["attempts"], 2, "{st}");

    let r1 = report(&repo, "ch01", 1);
    assert_eq!(r1.status, Level::Fail);
    assert!(
        r1.summary.contains("forbid `дракон` in chapters/ch01.md:"),
        "{}",
        r1.summary
    );
    let c1 = attempt_commit(&repo, "ch01", 1);
    let real = lines_with(&repo, &c1, "chapters/ch01.md", "Дракон");
    assert_eq!(real.len(), 1, "{real:?}");
    let p2 = prompt(&repo, "ch01", 2);
    let needle = format!("`дракон` found in chapters/ch01.md on line {}", real[0]);
    assert!(p2.contains(&needle), "{needle:?} not in\n{p2}");
    assert!(p2.contains("`дракон` is forbidden"), "{p2}");
    // `Мира` was present from the start: never a violation.
    assert!(!p2.contains("`Мира` does not appear"), "{p2}");
    let r2 = report(&repo, "ch01", 2);
    assert_eq!(r2.status, Level::Pass);
    assert!(r2
        .entries
        .iter()
        .any(|e| e.check == "require" && e.details == "`Мира` appears in chapters/ch01.md"));

    let text = repo.git(&["show", "main:chapters/ch01.md"]);
    assert!(text.contains("Мира"), "{text}");
    assert!(!text.to_lowercase().contains("дракон"), "{text}");
    assert_clean_repo(&repo);
}

/// The fake agent as `claude` (loki detects claude by the file name): a
/// retry resumes the first attempt's session with `--resume <id>` and only
/// the retry preamble, which names no output; the resumed session still
/// knows which file its first prompt asked for, fixes it, and the stream
/// merges.
#[test]
fn a_retry_resumes_the_claude_session_and_passes() {
    let repo = Repo::new();
    let tmp = tempfile::tempdir().expect("tempdir");
    let claude = tmp.path().join("claude");
    std::os::unix::fs::symlink(fake_agent(), &claude).expect("symlink claude");
    let sessions = tmp.path().join("sessions");
    let args_log = tmp.path().join("args.jsonl");
    let head = header(1, "").replace(
        &format!("command = \"{}\"", fake_agent().display()),
        &format!("command = \"{}\"", claude.display()),
    );
    repo.write("prompts/chapter.md", NO_SLOT);
    repo.write(
        "loki.toml",
        &format!(
            "{head}{}",
            stream(
                "ch01",
                &[],
                "chapters/ch01.md",
                &format!(
                    "checks = {{ forbid = [\"dragon\"] }}\nenv = {{ FAKE_AGENT_VIOLATE = \
                     \"dragon@1\", FAKE_AGENT_SESSION_DIR = \"{}\", FAKE_AGENT_ARGS_LOG = \"{}\" }}",
                    sessions.display(),
                    args_log.display()
                ),
            )
        ),
    );
    repo.write(".loki/.gitignore", loki::commands::init::LOKI_GITIGNORE);
    repo.commit_all("swarm");

    let out = repo.loki(&["run", "--plain"]);
    assert!(out.status.success(), "{}", both(&out));
    let st = status_stream(&repo, "ch01");
    assert_eq!(st["status"], "merged", "{st}");
    assert_eq!(st["attempts"], 2, "{st}");
    assert_eq!(report(&repo, "ch01", 1).status, Level::Fail);
    assert_eq!(report(&repo, "ch01", 2).status, Level::Pass);

    // The first attempt's session, from its stream-json.
    let init = |n: u32| -> serde_json::Value {
        let t = repo.read(&format!(".loki/logs/ch01/attempt-{n}.jsonl"));
        t.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["type"] == "system" && v["subtype"] == "init")
            .unwrap_or_else(|| panic!("no init line in attempt {n}:\n{t}"))
    };
    let session = init(1)["session_id"]
        .as_str()
        .expect("session id")
        .to_string();
    assert_eq!(init(2)["session_id"], session.as_str());

    // What loki passed: attempt 1 fresh, attempt 2 `--resume <session>`
    // with the retry preamble alone as its prompt.
    let runs: Vec<serde_json::Value> = std::fs::read_to_string(&args_log)
        .expect("args log")
        .lines()
        .map(|l| serde_json::from_str(l).expect("args line"))
        .collect();
    assert_eq!(runs.len(), 2, "{runs:?}");
    let argv = |i: usize| -> Vec<String> {
        runs[i]["argv"]
            .as_array()
            .expect("argv")
            .iter()
            .map(|a| a.as_str().unwrap_or("").to_string())
            .collect()
    };
    assert!(!argv(0).contains(&"--resume".to_string()), "{:?}", argv(0));
    let second = argv(1);
    let at = second
        .iter()
        .position(|a| a == "--resume")
        .unwrap_or_else(|| panic!("no --resume in {second:?}"));
    assert_eq!(second.get(at + 1), Some(&session));
    let p2 = prompt(&repo, "ch01", 2);
    assert_eq!(second.get(1), Some(&p2), "-p is the prompt file's text");
    assert!(p2.contains("`dragon` is forbidden"), "{p2}");
    assert!(
        !p2.contains("chapters/ch01.md`"),
        "the resumed prompt should not need to name the output:\n{p2}"
    );

    // The session remembered the output its first prompt asked for.
    let rec: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(sessions.join(format!("{session}.json"))).expect("session file"),
    )
    .expect("session json");
    assert_eq!(rec["outputs"], serde_json::json!(["chapters/ch01.md"]));
    assert_eq!(rec["later_prompts"], serde_json::json!([p2]));

    let merge = merge_of(&repo, "ch01");
    assert_eq!(trailer(&repo, &merge, "Loki-Session"), session);
    let text = repo.git(&["show", "main:chapters/ch01.md"]);
    assert!(text.contains("attempt 2"), "{text}");
    assert!(!text.to_lowercase().contains("dragon"), "{text}");
    assert_clean_repo(&repo);
}
