//! Merge conflicts resolved by a resolver attempt and checked again: two
//! independent streams revise the same existing file; the second merge
//! conflicts; the stream's agent, given the conflict in its worktree,
//! resolves it; loki verifies the result (no marker, nothing else changed,
//! the checks) and merges it. A resolver that leaves a marker leaves the
//! stream conflicted and the target as it was.

mod common;
use common::*;

const BIBLE: &str = "# Continuity bible\n\nThe harbour has one light.\n";

/// Two streams that rewrite `bible.md`; the resolver attempt (each
/// stream's second) does `resolve`.
fn setup(resolve: &str) -> Swarm {
    setup_with(&format!(
        "FAKE_AGENT_RESOLVE = \"{resolve}@2\", FAKE_AGENT_WORDS = \"30\""
    ))
}

/// Two streams with the agent environment `env` that rewrite `bible.md`.
fn setup_with(env: &str) -> Swarm {
    let s = Swarm::empty();
    s.repo.write("bible.md", BIBLE);
    let mut toml = header(2, "").replace("[agent]", "[merge]\nresolve = \"agent\"\n\n[agent]");
    for id in ["a", "b"] {
        toml.push_str(&stream(id, &[], "bible.md", &format!("env = {{ {env} }}")));
    }
    s.write(&toml);
    s
}

/// The stream whose merge came second (the one the resolver worked for).
fn second(s: &Swarm) -> &'static str {
    let st = s.state("b");
    if st["attempts"].as_array().is_some_and(|a| a.len() > 1) {
        "b"
    } else {
        "a"
    }
}

#[test]
fn a_conflict_is_resolved_checked_and_merged() {
    let s = setup("keep-both");
    let done = s.run();
    assert_eq!(done.code, Some(0), "{}", done.both());
    s.assert_all_merged_once(&["a", "b"]);
    let bible = s.repo.git(&["show", "main:bible.md"]);
    assert!(
        bible.contains("*Stream a, attempt 1.*") && bible.contains("*Stream b, attempt 1.*"),
        "both revisions are kept:\n{bible}"
    );
    for m in ["<<<<<<<", "=======", ">>>>>>>"] {
        assert!(!bible.contains(m), "a marker reached main:\n{bible}");
    }
    // The resolver's attempt: not counted, checked again, committed as a
    // two-parent merge of the target with its own trailer.
    let id = second(&s);
    let st = s.state(id);
    let resolver = &st["attempts"][1];
    assert_eq!(resolver["counted"], false, "{st:#}");
    assert_eq!(resolver["outcome"], "ok", "{st:#}");
    assert_eq!(resolver["checks"], "PASS", "{st:#}");
    let log = s.repo.git(&[
        "log",
        "--format=%H %P%n%s%n%(trailers:key=Loki-Attempt,valueonly)",
        "main",
    ]);
    let at = log
        .find(&format!(
            "loki: {id} attempt 2 (resolve: merge conflict resolved, checks passed)"
        ))
        .unwrap_or_else(|| panic!("no resolution commit:\n{log}"));
    let head_line = log[..at].lines().last().unwrap_or_default();
    assert_eq!(
        head_line.split_whitespace().count(),
        3,
        "two parents:\n{log}"
    );
    assert!(log[at..].contains("2 (resolve)"), "{log}");
    assert!(
        done.text().contains("a resolver attempt merges main into"),
        "{}",
        done.both()
    );
    // The audit trail read back from git names the resolver's attempt.
    let audit = stdout(&s.loki(&["log", id]));
    assert!(
        audit.contains("attempt 2  merge conflict resolved; PASS"),
        "{audit}"
    );
}

#[test]
fn a_resolver_that_leaves_a_marker_leaves_the_stream_conflicted_and_the_target_alone() {
    let s = setup("leave");
    let done = s.run();
    assert_eq!(done.code, Some(1), "{}", done.both());
    let id = second(&s);
    let other = if id == "a" { "b" } else { "a" };
    let st = s.state(id);
    assert_eq!(st["status"], "conflicted", "{st:#}");
    let reason = st["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("the resolution leaves a conflict marker in bible.md"),
        "{reason}"
    );
    // The target holds the first merge only, untouched by the resolver.
    assert_eq!(s.merges(), vec![format!("Merge stream {other}")]);
    let bible = s.repo.git(&["show", "main:bible.md"]);
    assert!(!bible.contains("<<<<<<<"), "{bible}");
    assert!(
        bible.contains(&format!("*Stream {other}, attempt 1.*")),
        "{bible}"
    );
    // Worktree and branch are kept for a person, the resolver's work too.
    assert!(s
        .path()
        .join(format!(".loki/worktrees/{id}/bible.md"))
        .exists());
    s.repo.git(&["rev-parse", &format!("loki/{id}")]);
    assert!(!s
        .repo
        .git(&["log", "--format=%s", &format!("loki/{id}")])
        .contains("(resolve"));
}

/// A resolver attempt cut off by SIGTERM resumes on the next run: the
/// half-done merge in the worktree is started again from the branch, and
/// the conflict is resolved and merged.
#[test]
fn a_resolver_cut_off_by_sigterm_is_resumed_by_the_next_run() {
    let s = setup_with(
        "FAKE_AGENT_RESOLVE = \"keep-both@2,3\", FAKE_AGENT_SLOW = \"30@2\", \
         FAKE_AGENT_WORDS = \"30\"",
    );
    let run = s.start();
    s.wait_for("a resolver attempt running", || {
        ["a", "b"].iter().any(|id| {
            s.try_state(id).is_some_and(|st| {
                st["status"] == "running" && st["attempt"] == 2 && st["resolve_paths"].is_array()
            })
        })
    });
    run.signal(nix::sys::signal::Signal::SIGTERM);
    let done = run.wait();
    assert_eq!(done.code, Some(130), "{}", done.both());
    let again = s.run();
    assert_eq!(again.code, Some(0), "{}", again.both());
    s.assert_all_merged_once(&["a", "b"]);
    let bible = s.repo.git(&["show", "main:bible.md"]);
    assert!(!bible.contains("<<<<<<<"), "{bible}");
    assert!(
        bible.contains("*Stream a, attempt 1.*") && bible.contains("*Stream b, attempt 1.*"),
        "{bible}"
    );
}
