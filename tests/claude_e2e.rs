//! The real Claude Code CLI, end to end, against the scripted Messages API
//! server `scripts/mock-anthropic` on 127.0.0.1: the scripted model answers
//! with `Write` tool uses, Claude Code's own Write tool writes the chapter in
//! the worktree, loki commits, checks and merges it. Nothing reaches the
//! internet and no API key is needed. These tests fail (never skip) when the
//! CLI is missing: `.ci/run` installs the pinned version.

mod common;
use common::*;

/// A swarm file whose agent is the real `claude`, pointed at `api`.
fn claude_swarm(api: &str, home: &std::path::Path, max_attempts: u32, streams: &str) -> String {
    format!(
        r#"[swarm]
target = "main"
max_parallel = 2
spawn_interval = "0s"

[agent]
command = "claude"
model = "sonnet"
permission_mode = "acceptEdits"
timeout = "120s"
idle_timeout = "90s"
kill_grace = "2s"
max_attempts = {max_attempts}
env = {{ ANTHROPIC_BASE_URL = "{api}", ANTHROPIC_API_KEY = "test-key", CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC = "1", HOME = "{home}", CLAUDE_CODE_MAX_RETRIES = "2" }}

{streams}"#,
        home = home.display()
    )
}

const TEMPLATE: &str =
    "# Chapter {{CHAPTER}}\n\nStream {{STREAM_ID}}.\n\nWrite the chapter to {{OUTPUTS}}.\n";

fn loki_clean_env(repo: &Repo, args: &[&str]) -> std::process::Output {
    let mut c = std::process::Command::new(loki_bin());
    c.args(args)
        .current_dir(repo.path())
        .env("NO_COLOR", "1")
        .env("PATH", fast_path());
    // Only what the swarm file says may reach claude.
    for (k, _) in std::env::vars() {
        if k.starts_with("ANTHROPIC_") || k.starts_with("CLAUDE_") {
            c.env_remove(k);
        }
    }
    c.output().expect("running loki")
}

#[test]
fn claude_writes_the_chapters_and_loki_merges_them_with_cost() {
    require_claude();
    let api = MockApi::start(&["--mode", "write"]);
    let home = tempfile::tempdir().expect("home");
    let repo = Repo::new();
    repo.write("prompts/chapter.md", TEMPLATE);
    let streams = format!(
        "{}{}",
        stream("ch01", &[], "chapters/ch01.md", ""),
        stream("ch02", &["ch01"], "chapters/ch02.md", "")
    );
    repo.write(
        "loki.toml",
        &claude_swarm(&api.url(), home.path(), 2, &streams),
    );
    repo.commit_all("swarm");

    let out = loki_clean_env(&repo, &["run", "--plain"]);
    assert!(
        out.status.success(),
        "loki run with claude failed:\n{}",
        both(&out)
    );

    // Claude Code's own Write tool wrote the chapters; they are merged.
    let ch01 = repo.git(&["show", "main:chapters/ch01.md"]);
    assert!(ch01.contains("ch01"), "{ch01}");
    assert!(repo.read("chapters/ch02.md").contains("ch02"));
    let subjects = first_parent_subjects(&repo, "main");
    assert_eq!(
        subjects
            .iter()
            .filter(|s| s.starts_with("Merge stream "))
            .count(),
        2,
        "{subjects:?}"
    );

    // The cost from the result line is in the stream state and the trailers.
    let state: serde_json::Value =
        serde_json::from_str(&repo.read(".loki/state/ch01.json")).expect("state json");
    let cost = state["cost_usd"].as_f64().expect("cost");
    let transcript = repo.read(".loki/logs/ch01/attempt-1.jsonl");
    let result_line = transcript
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["type"] == "result")
        .expect("a result line in the transcript");
    let reported = result_line["total_cost_usd"]
        .as_f64()
        .expect("total_cost_usd");
    assert!(reported > 0.0, "{result_line}");
    assert!(
        (cost - reported).abs() < 1e-9,
        "state cost {cost} != result cost {reported}"
    );
    let session = state["session_id"]
        .as_str()
        .expect("session id")
        .to_string();
    let merge = repo.git(&[
        "log",
        "--first-parent",
        "--merges",
        "--format=%H",
        "--grep=Merge stream ch01",
        "main",
    ]);
    let t = trailers(&repo, merge.trim());
    assert!(t.contains(&("Loki-Session".into(), session)), "{t:?}");
    let agent = t
        .iter()
        .find(|(k, _)| k == "Loki-Agent")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    assert!(agent.starts_with("claude 2.1."), "Loki-Agent: {agent}");
    assert!(
        t.iter().any(|(k, v)| k == "Loki-Cost-USD"
            && v.parse::<f64>()
                .map(|c| (c - reported).abs() < 1e-3)
                .unwrap_or(false)),
        "{t:?}"
    );
    assert_clean_repo(&repo);
    assert!(
        pids_in(repo.path()).is_empty(),
        "processes left in the repo"
    );
}

#[test]
fn a_rate_limited_api_is_waited_out_without_burning_attempts() {
    require_claude();
    let api = MockApi::start(&[
        "--mode",
        "rate-limit-then-write",
        "--rate-limit-count",
        "2",
        "--retry-after",
        "1",
    ]);
    let home = tempfile::tempdir().expect("home");
    let repo = Repo::new();
    repo.write("prompts/chapter.md", TEMPLATE);
    // One attempt only: a rate limit must not use it up.
    repo.write(
        "loki.toml",
        &claude_swarm(
            &api.url(),
            home.path(),
            1,
            &stream("ch01", &[], "chapters/ch01.md", ""),
        ),
    );
    repo.commit_all("swarm");

    let out = loki_clean_env(&repo, &["run", "--plain"]);
    assert!(out.status.success(), "{}", both(&out));
    let text = stdout(&out);
    assert!(
        text.contains("rate limited"),
        "the user is told about the rate limit:\n{text}"
    );
    let st = status_json(&repo);
    assert_eq!(st["streams"][0]["status"], "merged");
    assert_eq!(st["streams"][0]["attempts"], 1);
    let events = repo.read(".loki/state/events.jsonl");
    assert!(events.contains("\"rate_limit\""), "{events}");
    assert!(api.requests().iter().filter(|r| r["status"] == 429).count() >= 2);
    assert!(
        pids_in(repo.path()).is_empty(),
        "processes left in the repo"
    );
}

/// A subscription's usage window with the real CLI: on an OAuth token,
/// claude turns the server's `anthropic-ratelimit-unified-*` headers into
/// a `rate_limit_event`; loki starts nothing until the reset, resumes the
/// session the limit cut off, and counts no attempt.
#[test]
fn a_usage_window_the_real_cli_reports_is_waited_out() {
    require_claude();
    let api = MockApi::start(&[
        "--mode",
        "usage-limit-then-write",
        "--rate-limit-count",
        "1",
        "--usage-reset",
        "3",
    ]);
    let home = tempfile::tempdir().expect("home");
    let repo = Repo::new();
    repo.write("prompts/chapter.md", TEMPLATE);
    let toml = claude_swarm(
        &api.url(),
        home.path(),
        1,
        &stream("ch01", &[], "chapters/ch01.md", ""),
    )
    .replace(
        "ANTHROPIC_API_KEY = \"test-key\"",
        "CLAUDE_CODE_OAUTH_TOKEN = \"test-token\"",
    );
    repo.write("loki.toml", &toml);
    repo.commit_all("swarm");

    let out = loki_clean_env(&repo, &["run", "--plain"]);
    assert!(out.status.success(), "{}", both(&out));
    let text = stdout(&out);
    assert!(
        text.contains("waiting for the session limit to reset at "),
        "{text}"
    );
    let transcript = repo.read(".loki/logs/ch01/attempt-1.jsonl");
    assert!(
        transcript.contains("\"type\":\"rate_limit_event\""),
        "{transcript}"
    );
    let st = repo.read(".loki/state/ch01.json");
    let st: serde_json::Value = serde_json::from_str(&st).expect("state");
    assert_eq!(st["status"], "merged");
    assert_eq!(st["attempts"][0]["counted"], false, "{st:#}");
    // The next attempt resumed the session the limit cut off.
    assert_eq!(
        st["attempts"][1]["session_id"], st["attempts"][0]["session_id"],
        "{st:#}"
    );
}

/// The real CLI as a resolver: two chapters rewrite the same file, the
/// second merge conflicts, claude (resolve = "agent" is its default) is
/// given the conflict and writes the file back; loki checks that no
/// marker is left and merges it.
#[test]
fn the_real_cli_resolves_a_merge_conflict() {
    require_claude();
    let api = MockApi::start(&[]);
    let home = tempfile::tempdir().expect("home");
    let repo = Repo::new();
    repo.write(
        "prompts/bible.md",
        "# The bible\n\nStream id: {{STREAM_ID}}\n\nWrite the revised bible to {{OUTPUTS}}.\n",
    );
    repo.write("bible.md", "# Bible\n\nThe harbour has one light.\n");
    let streams: String = ["a", "b"]
        .iter()
        .map(|id| {
            format!(
                "[[streams]]\nid = \"{id}\"\nprompt = \"prompts/bible.md\"\noutputs = [\"bible.md\"]\n\n"
            )
        })
        .collect();
    repo.write(
        "loki.toml",
        &claude_swarm(&api.url(), home.path(), 1, &streams),
    );
    repo.commit_all("swarm");

    let out = loki_clean_env(&repo, &["run", "--plain"]);
    assert!(out.status.success(), "{}", both(&out));
    let text = stdout(&out);
    assert!(
        text.contains("a resolver attempt merges main into"),
        "{text}"
    );
    let bible = repo.git(&["show", "main:bible.md"]);
    assert!(
        !bible.contains("<<<<<<<") && !bible.contains(">>>>>>>"),
        "{bible}"
    );
    let log = repo.git(&["log", "--format=%s", "main"]);
    assert!(
        log.contains("(resolve: merge conflict resolved, checks passed)"),
        "{log}"
    );
    assert_eq!(log.matches("Merge stream ").count(), 2, "{log}");
}

/// Two independent chapters, `max_attempts = 1`, run once against an API
/// that answers 401 (the run must end with exit code 1). Returns the repo,
/// claude's home, the streams' TOML and that run's output.
fn two_chapters_refused_credentials() -> (Repo, tempfile::TempDir, String, std::process::Output) {
    require_claude();
    let bad = MockApi::start(&["--mode", "unauthorized"]);
    let home = tempfile::tempdir().expect("home");
    let repo = Repo::new();
    repo.write("prompts/chapter.md", TEMPLATE);
    let streams = format!(
        "{}{}",
        stream("ch01", &[], "chapters/ch01.md", ""),
        stream("ch02", &[], "chapters/ch02.md", "")
    );
    repo.write(
        "loki.toml",
        &claude_swarm(&bad.url(), home.path(), 1, &streams),
    );
    repo.commit_all("swarm");
    let out = loki_clean_env(&repo, &["run", "--plain"]);
    assert_eq!(out.status.code(), Some(1), "{}", both(&out));
    (repo, home, streams, out)
}

/// The key fixed: `loki run` again against an API that writes; the run
/// succeeds and every stream is merged.
fn run_with_a_working_key(
    repo: &Repo,
    home: &tempfile::TempDir,
    streams: &str,
) -> std::process::Output {
    let good = MockApi::start(&["--mode", "write"]);
    repo.write(
        "loki.toml",
        &claude_swarm(&good.url(), home.path(), 1, streams),
    );
    repo.commit_all("fixed key");
    let out = loki_clean_env(repo, &["run", "--plain"]);
    assert!(out.status.success(), "{}", both(&out));
    let st = status_json(repo);
    for s in st["streams"].as_array().expect("streams") {
        assert_eq!(s["status"], "merged", "{s}");
    }
    out
}

#[test]
fn an_unauthorized_api_pauses_the_swarm_and_the_next_run_resumes_it() {
    let (repo, home, streams, out) = two_chapters_refused_credentials();
    let text = stdout(&out);
    assert!(text.contains("refused the credentials"), "{text}");
    assert!(
        text.contains("ANTHROPIC_API_KEY") && text.contains("loki run"),
        "the message says how to fix it: {text}"
    );
    let st = status_json(&repo);
    assert_eq!(st["swarm"]["paused"], true, "{st}");
    for s in st["streams"].as_array().expect("streams") {
        assert_ne!(
            s["status"], "failed",
            "an auth failure must not fail a stream: {s}"
        );
        assert_ne!(s["status"], "merged");
    }
    assert!(
        pids_in(repo.path()).is_empty(),
        "agents left running after the auth failure"
    );

    // Credentials fixed: the next run resumes; max_attempts = 1 was not used up.
    let out = run_with_a_working_key(&repo, &home, &streams);
    assert!(
        stdout(&out).contains("resuming a paused swarm"),
        "{}",
        both(&out)
    );
    assert_eq!(status_json(&repo)["swarm"]["paused"], false);
    assert_clean_repo(&repo);
}

#[test]
fn a_session_claude_no_longer_has_is_started_again_without_using_an_attempt() {
    // An auth failure leaves both streams interrupted with a session id.
    let (repo, home, streams, _) = two_chapters_refused_credentials();
    let st = status_json(&repo);
    let with_session: Vec<String> = st["streams"]
        .as_array()
        .expect("streams")
        .iter()
        .filter(|s| s["session_id"].is_string())
        .map(|s| s["id"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(!with_session.is_empty(), "no session recorded: {st}");

    // Claude's transcripts are gone (or were never written before the kill):
    // `--resume` finds nothing.
    let projects = home.path().join(".claude/projects");
    if projects.exists() {
        std::fs::remove_dir_all(&projects).expect("removing claude's sessions");
    }

    run_with_a_working_key(&repo, &home, &streams);
    let events = repo.read(".loki/state/events.jsonl");
    for id in &with_session {
        assert!(
            events.lines().any(|l| l.contains("\"session\"")
                && l.contains(&format!("\"{id}\""))
                && l.contains("could not resume session")),
            "no lost-session event for {id}:\n{events}"
        );
        let state: serde_json::Value =
            serde_json::from_str(&repo.read(&format!(".loki/state/{id}.json"))).expect("state");
        let lost = state["attempts"]
            .as_array()
            .expect("attempts")
            .iter()
            .find(|a| a["outcome"] == "session_lost")
            .unwrap_or_else(|| panic!("no session_lost attempt for {id}: {state}"));
        assert_eq!(lost["counted"], false, "{state}");
        assert!(
            lost["reason"]
                .as_str()
                .is_some_and(|r| r.contains("No conversation found")),
            "{state}"
        );
    }
    assert_clean_repo(&repo);
}

/// `sandbox = "bwrap"` with the real claude: it runs inside bubblewrap
/// (its config in the test's home folder writable, the rest of the home
/// and the user's checkout read-only) and its Write tool still writes the
/// chapter in the worktree, which is merged.
#[test]
fn claude_runs_in_the_bwrap_sandbox_and_its_chapter_is_merged() {
    require_claude();
    let api = MockApi::start(&["--mode", "write"]);
    let home = tempfile::tempdir().expect("home");
    let repo = Repo::new();
    repo.write("prompts/chapter.md", TEMPLATE);
    let streams = stream("ch01", &[], "chapters/ch01.md", "sandbox = \"bwrap\"\n");
    repo.write(
        "loki.toml",
        &claude_swarm(&api.url(), home.path(), 1, &streams),
    );
    repo.commit_all("swarm");
    let before = std::fs::read_to_string(repo.path().join("loki.toml")).expect("loki.toml");

    let out = loki_clean_env(&repo, &["run", "--plain"]);
    assert!(
        out.status.success(),
        "loki run with claude under bwrap failed:\n{}",
        both(&out)
    );
    let ch01 = repo.git(&["show", "main:chapters/ch01.md"]);
    assert!(ch01.contains("ch01"), "{ch01}");
    assert_eq!(repo.read("loki.toml"), before);
    // Its config folder was writable (claude keeps the session there), the
    // rest of the home folder was not: without the sandbox claude creates
    // ~/.claude.json there.
    let kept = std::fs::read_dir(home.path().join(".claude"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert!(kept > 0, "claude wrote nothing in ~/.claude");
    assert!(
        !home.path().join(".claude.json").exists(),
        "claude wrote ~/.claude.json: it did not run in the sandbox"
    );
}

/// The real CLI as a validator: claude writes the chapter, then another
/// claude judges it in a disposable checkout; its verdict is the last JSON
/// object of its final result, parsed into `validation.json`, its cost
/// counted with the stream's, and the attempt's commit says the verdict.
#[test]
fn the_real_cli_judges_a_draft_as_a_validator() {
    require_claude();
    let api = MockApi::start(&[]);
    let home = tempfile::tempdir().expect("home");
    let repo = Repo::new();
    repo.write("prompts/chapter.md", TEMPLATE);
    repo.write(
        "prompts/canon.md",
        "You review chapter {{CHAPTER}} of a novel for continuity.\n\n{{DRAFT}}\n\n\
         End with your verdict as JSON.\n[fake:verdict=warn][fake:verdict-issue=The harbour light is \
         described twice]\n",
    );
    let swarm = claude_swarm(
        &api.url(),
        home.path(),
        1,
        &format!(
            "[validators.canon]\nprompt = \"prompts/canon.md\"\ntimeout = \"120s\"\n\n{}",
            stream(
                "ch01",
                &[],
                "chapters/ch01.md",
                "[streams.checks]\nvalidators = [\"canon\"]\n"
            )
        ),
    );
    repo.write("loki.toml", &swarm);
    repo.commit_all("swarm");

    let out = loki_clean_env(&repo, &["run", "--plain"]);
    assert!(out.status.success(), "{}", both(&out));
    let report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            repo.path()
                .join(".loki/runs/ch01/attempt-1/validation.json"),
        )
        .expect("validation.json"),
    )
    .expect("json");
    assert_eq!(report["decision"], "pass", "{report:#}");
    let canon = &report["validators"][0];
    assert_eq!(canon["status"], "warn", "{report:#}");
    assert_eq!(
        canon["issues"][0]["message"], "The harbour light is described twice",
        "{report:#}"
    );
    let validator_cost = canon["cost_usd"].as_f64().unwrap_or(0.0);
    assert!(validator_cost > 0.0, "{report:#}");
    // The validator's transcript is claude's own stream-json.
    let transcript = std::fs::read_to_string(
        repo.path()
            .join(".loki/logs/ch01/attempt-1.validator-canon.jsonl"),
    )
    .expect("validator transcript");
    assert!(transcript.contains("\"type\":\"result\""), "{transcript}");
    let st: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo.path().join(".loki/state/ch01.json")).expect("state"),
    )
    .expect("state json");
    let a = &st["attempts"][0];
    assert_eq!(a["validation"], "0 pass, 1 warn, 0 fail", "{st:#}");
    let total = st["cost_usd"].as_f64().unwrap_or(0.0);
    assert!(
        (a["validation_cost_usd"].as_f64().unwrap_or(0.0) - validator_cost).abs() < 1e-9
            && total > validator_cost,
        "{st:#}"
    );
    let t = trailers(&repo, "main");
    assert!(
        t.iter()
            .any(|(k, v)| k == "Loki-Validation" && v == "0 pass, 1 warn, 0 fail"),
        "{t:?}"
    );
}
