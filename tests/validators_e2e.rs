//! Validator agents: cheap checks gate them, several judge an attempt at
//! once in disposable checkouts, a timeout is a warning, their blocking
//! issues join the feedback of every earlier attempt, and their cost and
//! verdicts reach the state, `validation.json` and the attempt's commit.

mod common;
use common::*;

use serde_json::Value;

/// Commits a swarm of `head` (a header), the validators `(name, prompt,
/// extra keys)` with their prompts in `prompts/validators/<name>.md`, and
/// one stream `ch01` (with `stream_extra`) that all of them judge (its
/// `[streams.checks]` also holding `checks_extra`).
fn judged_swarm(
    s: &Swarm,
    mut head: String,
    validators: &[(&str, &str, &str)],
    stream_extra: &str,
    checks_extra: &str,
) {
    let mut names = Vec::new();
    for (name, prompt, extra) in validators {
        s.repo
            .write(&format!("prompts/validators/{name}.md"), prompt);
        head.push_str(&format!(
            "[validators.{name}]\nprompt = \"prompts/validators/{name}.md\"\n{extra}\n"
        ));
        names.push(format!("\"{name}\""));
    }
    head.push_str(&stream(
        "ch01",
        &[],
        "chapters/ch01.md",
        &format!(
            "{stream_extra}[streams.checks]\n{checks_extra}validators = [{}]\n",
            names.join(", ")
        ),
    ));
    s.write(&head);
}

/// Three validators on one stream: `canon` passes, `plot` fails the first
/// draft it sees and passes the next, `slow` never finishes (2 s timeout).
/// The writer's first draft has a forbidden term. `plot` gives its verdict
/// in claude's final result text, the others in `LOKI_VERDICT_FILE`.
fn setup() -> (Swarm, std::path::PathBuf) {
    let s = Swarm::empty();
    let log = s.scratch("validators.jsonl");
    let once = s.scratch("plot-seen");
    let log_t = format!("[fake:verdict-log={}]", log.display());
    let canon = format!(
        "Check {{{{STREAM_ID}}}} (attempt {{{{ATTEMPT}}}}) against the canon.\n\n\
         {{{{DRAFT}}}}\n\n[fake:verdict=pass][fake:slow=1]{log_t}\n"
    );
    let plot = format!(
        "Check the plot of {{{{OUTPUTS}}}}.\n\n{{{{DRAFT}}}}\n\n[fake:verdict-once={}]\
         [fake:verdict-issue=Mira cannot be in the harbour: she died in chapter 0]\
         [fake:verdict-where=chapters/ch01.md:3][fake:verdict-in-result][fake:slow=1]{log_t}\n",
        once.display()
    );
    // As claude (stream-json), so the writer and the validators report costs.
    judged_swarm(
        &s,
        header_with(&s.fake_claude(), 2, 3),
        &[
            ("canon", &canon, ""),
            ("plot", &plot, ""),
            (
                "slow",
                "Take your time.\n\n{{DRAFT}}\n\n[fake:hang]\n",
                "timeout = \"2s\"\n",
            ),
        ],
        "env = { FAKE_AGENT_VIOLATE = \"dragon@1\", FAKE_AGENT_WORDS = \"40\" }\n\
         validation_report = \"reports/ch01-validation.json\"\n",
        "forbid = [\"dragon\"]\n",
    );
    (s, log)
}

fn validation(s: &Swarm, n: u32) -> Value {
    let path = s
        .path()
        .join(format!(".loki/runs/ch01/attempt-{n}/validation.json"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).expect("validation.json is JSON")
}

fn log_lines(log: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[test]
fn validators_judge_in_parallel_after_the_checks_and_their_issues_accumulate() {
    let (s, log) = setup();
    let done = s.run();
    assert_eq!(done.code, Some(0), "{}", done.both());
    s.assert_all_merged_once(&["ch01"]);
    let st = s.state("ch01");
    let attempts = st["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 3, "{st:#}");
    assert_eq!(attempts[0]["outcome"], "check_failed", "{st:#}");
    assert_eq!(attempts[1]["outcome"], "validation_failed", "{st:#}");
    assert_eq!(
        attempts[2]["validation"], "2 pass, 1 warn, 0 fail",
        "{st:#}"
    );

    // No validator judged the draft that failed a check.
    assert!(!s
        .path()
        .join(".loki/runs/ch01/attempt-1/validation.json")
        .exists());
    let runs = log_lines(&log);
    assert!(
        runs.iter().all(|r| r["attempt"] != 1),
        "a validator ran on attempt 1: {runs:?}"
    );
    // For attempts 2 and 3 the two finishing validators overlapped in time,
    // each in its own checkout (not the stream's worktree), with the draft.
    for n in [2, 3] {
        let of: Vec<&Value> = runs.iter().filter(|r| r["attempt"] == n).collect();
        assert_eq!(of.len(), 2, "attempt {n}: {runs:?}");
        let start = of.iter().map(|r| r["start"].as_f64().unwrap_or(0.0));
        let end = of.iter().map(|r| r["end"].as_f64().unwrap_or(0.0));
        let latest_start = start.fold(f64::MIN, f64::max);
        let earliest_end = end.fold(f64::MAX, f64::min);
        assert!(
            latest_start < earliest_end,
            "attempt {n}: the validators ran one after the other: {of:?}"
        );
        for r in &of {
            let cwd = r["cwd"].as_str().unwrap_or_default();
            assert!(
                cwd.contains(&format!(".loki/validate/ch01/attempt-{n}/")),
                "{cwd}"
            );
            assert_eq!(r["draft"], true, "{r}");
        }
    }
    // The checkouts are gone.
    assert!(!s.path().join(".loki/validate/ch01").exists());

    // Attempt 2's report: one pass, one fail, the timeout a warning.
    let v2 = validation(&s, 2);
    assert_eq!(v2["decision"], "fail", "{v2:#}");
    assert_eq!(v2["validators_run"], 3, "{v2:#}");
    assert_eq!(
        (&v2["passed"], &v2["failed"], &v2["warned"], &v2["errored"]),
        (&1.into(), &1.into(), &1.into(), &0.into()),
        "{v2:#}"
    );
    let by = |v: &Value, name: &str| -> Value {
        v["validators"]
            .as_array()
            .and_then(|a| a.iter().find(|x| x["name"] == name).cloned())
            .unwrap_or_else(|| panic!("no {name} in {v:#}"))
    };
    let slow = by(&v2, "slow");
    assert_eq!(slow["status"], "warn", "{slow:#}");
    assert_eq!(slow["timed_out"], true, "{slow:#}");
    let plot = by(&v2, "plot");
    assert_eq!(plot["status"], "fail", "{plot:#}");
    assert_eq!(plot["issues"][0]["where"], "chapters/ch01.md:3", "{plot:#}");
    assert!(v2["execution_time_seconds"].as_f64().unwrap_or(0.0) >= 2.0);
    // Attempt 3's report: the draft passes.
    let v3 = validation(&s, 3);
    assert_eq!(v3["decision"], "pass", "{v3:#}");
    assert_eq!(v3["summary"], "2 pass, 1 warn, 0 fail", "{v3:#}");

    // Attempt 3's prompt holds attempt 1's forbidden term and attempt 2's
    // blocking issue, each under its attempt.
    let prompt = std::fs::read_to_string(s.path().join(".loki/runs/ch01/attempt-3/prompt.md"))
        .expect("prompt of attempt 3");
    assert!(prompt.contains("dragon"), "{prompt}");
    assert!(
        prompt.contains("[plot] Mira cannot be in the harbour: she died in chapter 0"),
        "{prompt}"
    );
    let a1 = prompt.find("dragon").unwrap_or(usize::MAX);
    let a2 = prompt.find("Mira cannot").unwrap_or(0);
    assert!(a1 < a2, "grouped by attempt, oldest first:\n{prompt}");

    // Cost: three writer attempts and four validators that gave a result
    // (the timed-out ones report nothing), $0.01 each.
    let cost = st["cost_usd"].as_f64().unwrap_or(0.0);
    assert!((cost - 0.07).abs() < 1e-9, "{st:#}");
    let merge = trailers(&s.repo, "main");
    let get = |k: &str| {
        merge
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    assert_eq!(get("Loki-Cost-USD"), "0.0700", "{merge:?}");
    assert_eq!(
        get("Loki-Validation"),
        "2 pass, 1 warn, 0 fail",
        "{merge:?}"
    );
    // The attempt's own commit carries its verdict and its whole cost.
    let attempt3 = trailers(&s.repo, "main^2");
    assert!(
        attempt3
            .iter()
            .any(|(k, v)| k == "Loki-Validation" && v == "2 pass, 1 warn, 0 fail"),
        "{attempt3:?}"
    );
    assert!(
        attempt3
            .iter()
            .any(|(k, v)| k == "Loki-Cost-USD" && v == "0.0300"),
        "{attempt3:?}"
    );
    // The report is committed as one of the stream's outputs: a later
    // stream can read it from the target.
    let committed: Value =
        serde_json::from_str(&s.repo.git(&["show", "main:reports/ch01-validation.json"]))
            .expect("the committed report is JSON");
    assert_eq!(committed, v3, "the committed report is attempt 3's");
    // `loki show` and `loki status --json` say it too.
    let show = stdout(&s.loki(&["show", "ch01"]));
    assert!(show.contains("2 pass, 1 warn, 0 fail"), "{show}");
    let status = status_stream(&s.repo, "ch01");
    assert_eq!(status["validation"], "2 pass, 1 warn, 0 fail", "{status:#}");
    s.assert_no_agent_left();
}

/// A validator that rewrites the draft in its checkout changes nothing on
/// the stream's branch; a supervisor killed (SIGKILL) while a validator
/// runs leaves no process of it, and the next run validates the same
/// commit again without running the writer again.
#[test]
fn validators_cannot_touch_the_draft_and_a_killed_validation_is_redone() {
    let s = Swarm::empty();
    let pid_file = s.scratch("sleeper.pid");
    let hung = s.scratch("sleeper-hung");
    let sleeper = format!(
        "{{{{DRAFT}}}}\n[fake:pid-file={}][fake:hang-once={}][fake:verdict=pass]\n",
        pid_file.display(),
        hung.display()
    );
    judged_swarm(
        &s,
        header(2, ""),
        &[
            (
                "vandal",
                "Write `chapters/ch01.md` with your own version.\n[fake:include=VANDAL][fake:verdict=pass]\n",
                "",
            ),
            ("sleeper", &sleeper, ""),
        ],
        "",
        "",
    );

    let run = s.start();
    // It writes its pid, then the hang-once marker, then sleeps: a kill
    // between the two would have it hang again in the next run (until its
    // idle timeout, a warning), so the marker is waited for too.
    s.wait_for("the sleeping validator to hang", || {
        std::fs::read_to_string(&pid_file).is_ok_and(|t| !t.trim().is_empty()) && hung.exists()
    });
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap_or_default()
        .trim()
        .parse()
        .expect("pid");
    // Both validators' groups (their keepers) are recorded for a sweep.
    s.wait_state("ch01", "the validators' groups recorded", |v| {
        v["status"] == "validating" && v["helpers"].as_array().is_some_and(|h| h.len() == 2)
    });
    s.groups();
    let killed = run.kill();
    assert_eq!(killed.signal, Some(9), "{}", killed.both());
    s.wait_for("the validator to end with its supervisor", || !alive(pid));
    assert_eq!(s.state("ch01")["status"], "validating");
    assert!(
        s.merges().is_empty(),
        "nothing merged before the validation"
    );

    let done = s.run();
    assert_eq!(done.code, Some(0), "{}", done.both());
    s.assert_all_merged_once(&["ch01"]);
    assert!(
        s.has_event(
            "validation",
            "the previous supervisor stopped during validation",
            ""
        ),
        "{}",
        s.events_text()
    );
    let st = s.state("ch01");
    assert_eq!(st["attempts"].as_array().map(Vec::len), Some(1), "{st:#}");
    assert_eq!(st["attempts"][0]["validation"], "2 pass, 0 warn, 0 fail");
    let merged = s.repo.git(&["show", "main:chapters/ch01.md"]);
    assert!(!merged.contains("VANDAL"), "{merged}");
    assert!(merged.starts_with("*Stream ch01, attempt 1.*"), "{merged}");
    s.assert_no_agent_left();
}

/// A validator that hits the subscription's usage limit is neither a pass
/// nor an error: the swarm waits for the window to reset, and the same
/// commit is judged again, without a writer attempt.
#[test]
fn a_usage_limit_met_by_a_validator_is_waited_out_and_the_judging_redone() {
    let s = Swarm::empty();
    let once = s.scratch("limited-once");
    let canon = format!(
        "{{{{DRAFT}}}}\n[fake:rate-limit=rejected][fake:rate-limit-reset=1]\
         [fake:rate-limit-once={}][fake:verdict=pass]\n",
        once.display()
    );
    judged_swarm(
        &s,
        header_with(&s.fake_claude(), 2, 3),
        &[("canon", &canon, "")],
        "",
        "",
    );
    let done = s.run();
    assert_eq!(done.code, Some(0), "{}", done.both());
    s.assert_all_merged_once(&["ch01"]);
    assert!(
        s.has_event("usage_limit", "waiting for", ""),
        "{}",
        s.events_text()
    );
    assert!(
        s.has_event(
            "validation",
            "a rate or usage limit stopped a validator",
            ""
        ),
        "{}",
        s.events_text()
    );
    let st = s.state("ch01");
    assert_eq!(st["attempts"].as_array().map(Vec::len), Some(1), "{st:#}");
    assert_eq!(st["attempts"][0]["validation"], "1 pass, 0 warn, 0 fail");
    s.assert_no_agent_left();
}

/// A blocking validator that gives no verdict (it exits 3) leaves the draft
/// unjudged: the stream fails at once, naming the validator, with no more
/// attempts spent, and nothing is merged; a non-blocking one's error is
/// only a warning.
#[test]
fn a_validator_that_gives_no_verdict_fails_the_stream_at_once() {
    let s = Swarm::empty();
    judged_swarm(
        &s,
        header(2, ""),
        &[
            ("broken", "{{DRAFT}}\n[fake:exit=3]\n", ""),
            ("mute", "{{DRAFT}}\nSay nothing.\n", "blocking = false\n"),
        ],
        "",
        "",
    );
    let done = s.run();
    assert_eq!(done.code, Some(1), "{}", done.both());
    let st = s.state("ch01");
    assert_eq!(st["status"], "failed", "{st:#}");
    assert_eq!(st["attempts"].as_array().map(Vec::len), Some(1), "{st:#}");
    let reason = st["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("validator broken gave no verdict: it ended with exit code 3")
            && reason.contains("loki retry ch01"),
        "{reason}"
    );
    let v = validation(&s, 1);
    assert_eq!(v["decision"], "error", "{v:#}");
    assert_eq!(v["errored"], 2, "{v:#}");
    assert!(
        v["validators"][1]["error"]
            .as_str()
            .is_some_and(|e| e.contains("no verdict: it wrote no LOKI_VERDICT_FILE")),
        "{v:#}"
    );
    assert!(s.merges().is_empty());
}

/// A validator whose command does not resolve is refused when the run
/// starts, naming it and where it is declared, before anything is made;
/// a rehearsal has the stand-in judge instead, spending nothing.
#[test]
fn a_missing_validator_command_is_refused_at_the_start_and_a_rehearsal_stands_in() {
    let s = Swarm::empty();
    judged_swarm(
        &s,
        header(1, ""),
        &[("canon", "{{DRAFT}}\n", "command = \"./no-such-judge\"\n")],
        "",
        "",
    );
    let out = s.loki(&["run", "--plain"]);
    assert_eq!(out.status.code(), Some(2), "{}", both(&out));
    let err = stderr(&out);
    assert!(
        err.contains(
            "loki.toml:15:11: validator `canon`: agent command `./no-such-judge` does not exist"
        ),
        "{err}"
    );
    assert!(!s.path().join(".loki/state/ch01.json").exists());

    let rehearsal = s.loki(&["run", "--rehearse", "--plain"]);
    assert!(rehearsal.status.success(), "{}", both(&rehearsal));
    let text = stdout(&rehearsal);
    assert!(
        text.contains("ch01: validation 1 pass, 0 warn, 0 fail"),
        "{text}"
    );
}
