//! `[agent] sandbox = "bwrap"` for real: an agent (a shell script) that
//! writes its chapter and commits it in its worktree, then tries to write
//! the user's checkout (a tracked file, and `.loki/state/`) and a file
//! outside the repo. Without the sandbox every write lands (so the test can
//! fail); with it each is refused, the user's files are untouched, and the
//! chapter is still committed and merged.

mod common;
use common::*;

use std::path::Path;

/// The agent: its chapter and its own commit first (both must work in the
/// sandbox), then the writes a sandbox must refuse, each reported on
/// stdout as `wrote <what>` or `refused <what>`.
const AGENT: &str = r#"#!/bin/sh
set -u
mkdir -p chapters
printf '# Chapter\n\nWritten by the agent.\n' > "chapters/$LOKI_STREAM_ID.md"
git add -A && git -c user.name=agent -c user.email=agent@localhost commit -qm "agent: $LOKI_STREAM_ID" || exit 3
try() { if (echo hacked > "$2") 2>/dev/null; then echo "wrote $1"; else echo "refused $1"; fi; }
try checkout "$USER_CHECKOUT/user.md"
try state "$USER_CHECKOUT/.loki/state/forged.json"
try outside "$OUTSIDE/outside.txt"
try tmp /tmp/loki-sandbox-probe-$$
# The user's objects, refs and reflogs: a folder one may create a file in is
# one whose every file one may delete.
try objects "$USER_CHECKOUT/.git/objects/probe"
try refs "$USER_CHECKOUT/.git/refs/heads/probe"
try logs "$USER_CHECKOUT/.git/logs/probe"
# A process outside the sandbox (the test itself): not even visible.
if kill -0 "$HOST_PID" 2>/dev/null; then echo "wrote host"; else echo "refused host"; fi
exit 0
"#;

/// A one-stream swarm whose agent is [`AGENT`], `sandbox` as given.
fn swarm(h: &Swarm, sandbox: &str) {
    h.repo.write("user.md", "mine\n");
    h.repo.write("scripts/agent.sh", AGENT);
    make_executable(&h.path().join("scripts/agent.sh"));
    let toml = format!(
        r#"[swarm]
target = "main"
max_parallel = 1
spawn_interval = "0s"

[agent]
command = "scripts/agent.sh"
timeout = "60s"
idle_timeout = "30s"
kill_grace = "1s"
max_attempts = 1
sandbox = "{sandbox}"
env = {{ USER_CHECKOUT = "{root}", OUTSIDE = "{outside}", HOST_PID = "{pid}" }}

[[streams]]
id = "a"
prompt = "prompts/chapter.md"
vars = {{ CHAPTER = "1" }}
outputs = ["chapters/a.md"]
"#,
        root = h.path().display(),
        outside = h.scratch.path().display(),
        pid = std::process::id(),
    );
    h.write(&toml);
}

fn transcript(root: &Path) -> String {
    std::fs::read_to_string(root.join(".loki/logs/a/attempt-1.jsonl")).unwrap_or_default()
}

#[test]
fn without_the_sandbox_the_agent_writes_the_checkout_and_outside() {
    let h = Swarm::empty();
    swarm(&h, "none");
    let done = h.run();
    let said = transcript(h.path());
    for what in [
        "checkout", "state", "outside", "tmp", "objects", "refs", "logs", "host",
    ] {
        assert!(said.contains(&format!("wrote {what}")), "{what}: {said}");
    }
    assert_eq!(h.repo.read("user.md"), "hacked\n", "{}", done.both());
    assert!(h.scratch("outside.txt").exists());
    assert!(h.path().join(".loki/state/forged.json").exists());
}

#[test]
fn under_bwrap_the_agent_writes_only_its_worktree_and_its_work_is_merged() {
    let h = Swarm::empty();
    swarm(&h, "bwrap");
    let done = h.run();
    assert_eq!(done.code, Some(0), "{}", done.both());
    let said = transcript(h.path());
    for what in [
        "checkout", "state", "outside", "objects", "refs", "logs", "host",
    ] {
        assert!(said.contains(&format!("refused {what}")), "{what}: {said}");
    }
    // /tmp is private: writable, and gone with the agent.
    assert!(said.contains("wrote tmp"), "{said}");
    assert_eq!(h.repo.read("user.md"), "mine\n");
    assert!(!h.scratch("outside.txt").exists());
    assert!(!h.path().join(".loki/state/forged.json").exists());
    // The chapter and the agent's own commit reached the target.
    let chapter = h.repo.git(&["show", "main:chapters/a.md"]);
    assert!(chapter.contains("Written by the agent."), "{chapter}");
    let log = h.repo.git(&["log", "--format=%s", "main"]);
    assert!(log.lines().any(|l| l == "agent: a"), "{log}");
    h.assert_all_merged_once(&["a"]);
}

/// bwrap that cannot run is refused before anything is created, never
/// skipped (`LOKI_BWRAP` names the bwrap to use).
#[test]
fn a_sandbox_that_cannot_run_is_refused_at_start() {
    let h = Swarm::empty();
    swarm(&h, "bwrap");
    for (bwrap, says) in [
        ("/definitely/not/bwrap", "not installed"),
        ("/bin/false", "failed"),
    ] {
        let out = h
            .repo
            .loki_env(&["run", "--plain"], &[("LOKI_BWRAP", bwrap)]);
        let text = both(&out);
        assert_eq!(out.status.code(), Some(2), "{text}");
        assert!(text.contains("sandbox = \"bwrap\""), "{text}");
        assert!(text.contains(says), "{text}");
        assert!(text.contains("help:"), "{text}");
        assert!(h.try_state("a").is_none(), "a stream was started: {text}");
        assert!(!h.path().join(".loki/worktrees/a").exists());
    }
}

/// `loki doctor` says whether bwrap works: OK here, a failure (with the
/// fix) when the swarm asks for a sandbox that cannot run.
#[test]
fn doctor_reports_the_sandbox() {
    let h = Swarm::empty();
    swarm(&h, "bwrap");
    let out = h.loki(&["doctor"]);
    let text = both(&out);
    let line = text
        .lines()
        .find(|l| l.contains("sandbox"))
        .unwrap_or_else(|| panic!("no sandbox line: {text}"));
    assert!(line.contains("OK") && line.contains("works"), "{text}");

    let out = h
        .repo
        .loki_env(&["doctor"], &[("LOKI_BWRAP", "/bin/false")]);
    let text = both(&out);
    let line = text
        .lines()
        .find(|l| l.contains("sandbox"))
        .unwrap_or_else(|| panic!("no sandbox line: {text}"));
    assert!(line.contains("FAIL"), "{text}");
    assert!(
        text.contains("sandbox = \"none\""),
        "the fix is named: {text}"
    );
    assert!(!out.status.success(), "{text}");
}

/// The judge: its verdict and its own checkout may be written, nothing
/// else (the user's checkout, the stream's worktree, outside the repo).
const JUDGE: &str = r#"#!/bin/sh
set -u
try() { if (echo hacked > "$2") 2>/dev/null; then echo "wrote $1"; else echo "refused $1"; fi; }
try own ./scratch.txt
try checkout "$USER_CHECKOUT/user.md"
try worktree "$USER_CHECKOUT/.loki/worktrees/a/chapters/a.md"
try outside "$OUTSIDE/judge.txt"
printf '{"status":"pass"}\n' > "$LOKI_VERDICT_FILE"
"#;

#[test]
fn under_bwrap_a_validator_writes_only_its_checkout_and_its_verdict() {
    let h = Swarm::empty();
    swarm(&h, "bwrap");
    h.repo.write("scripts/judge.sh", JUDGE);
    make_executable(&h.path().join("scripts/judge.sh"));
    h.repo.write("prompts/judge.md", "{{DRAFT}}\n");
    let toml = h.repo.read("loki.toml").replace(
        "[[streams]]",
        "[validators.judge]\nprompt = \"prompts/judge.md\"\ncommand = \"scripts/judge.sh\"\n\n[[streams]]",
    ) + "[streams.checks]\nvalidators = [\"judge\"]\n";
    h.write(&toml);
    let done = h.run();
    assert_eq!(done.code, Some(0), "{}", done.both());
    let said = std::fs::read_to_string(
        h.path()
            .join(".loki/logs/a/attempt-1.validator-judge.jsonl"),
    )
    .unwrap_or_default();
    assert!(said.contains("wrote own"), "{said}");
    for what in ["checkout", "worktree", "outside"] {
        assert!(said.contains(&format!("refused {what}")), "{what}: {said}");
    }
    assert_eq!(h.repo.read("user.md"), "mine\n");
    assert!(!h.scratch("judge.txt").exists());
    let st = h.state("a");
    assert_eq!(
        st["attempts"][0]["validation"], "1 pass, 0 warn, 0 fail",
        "{st:#}"
    );
    h.assert_all_merged_once(&["a"]);
}
