//! Signals end to end, driving the built binary: every signal kind on a
//! running swarm (`loki run --plain` as a child process, signals dropped into
//! `.loki/signals/` as a dot-temp renamed into place, or sent with `loki
//! signal` / `loki approve` / ... while it runs); every rejection path with
//! its reason file and its `signal_rejected` event; signals written while no
//! supervisor runs, applied when the next one starts; and the direct path of
//! the steering commands when no supervisor runs.
//!
//! A stream that must keep the supervisor alive while the test steers
//! another one is a `keeper`: its agent hangs (long timeouts) until the test
//! cancels it. Every test records the process groups of its agents and
//! asserts through `/proc` that none of their processes is left; the
//! harness (tests/common: `Swarm`, `Running`) kills what is left of them if
//! a test fails halfway, and a running supervisor when it is dropped.

mod common;
use common::stream_with as st;
use common::*;

use std::time::{Duration, SystemTime};

use serde_json::Value;

// ----- swarm files -------------------------------------------------------------

/// Timeouts long enough that only a signal ends the agent.
const PATIENT: &str = "idle_timeout = \"120s\"\ntimeout = \"300s\"\n";

/// A stream whose agent hangs until it is cancelled: it keeps the supervisor up.
fn keeper() -> String {
    st("keeper", &[], &[("FAKE_AGENT_HANG", "1")], PATIENT)
}

/// Cancels the keeper and waits for the run to end (the keeper makes it exit 1).
fn release_keeper(s: &Swarm, run: Running) -> Done {
    s.drop_signal("CANCEL_keeper", b"");
    let done = run.wait();
    assert_eq!(done.code, Some(1), "{}", done.both());
    assert_eq!(s.state("keeper")["status"], "cancelled");
    done
}

fn assert_sent(out: &std::process::Output) {
    assert!(out.status.success(), "{}", both(out));
    assert!(
        stdout(out).contains("to the running supervisor"),
        "the command should have signalled the supervisor: {}",
        both(out)
    );
}

// ----- the agent's own signals ------------------------------------------------

/// FEATURE_READY from the agent (it writes its outputs, signals, then sleeps
/// forever): the supervisor stops it gracefully, the attempt is `ok`, and
/// the stream merges long before any timeout.
#[test]
fn feature_ready_from_the_agent_stops_it_and_the_stream_merges() {
    let s = Swarm::new(
        1,
        &[st(
            "fr",
            &[],
            &[("FAKE_AGENT_SIGNAL", "FEATURE_READY")],
            PATIENT,
        )],
    );
    let done = s.run();
    assert_eq!(done.code, Some(0), "{}", done.both());
    assert!(
        done.elapsed < Duration::from_secs(30),
        "the signal, not a timeout, must end the agent: {}",
        done.both()
    );
    let st = s.state("fr");
    assert_eq!(st["status"], "merged", "{st:#}");
    let attempts = st["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 1, "{st:#}");
    assert_eq!(attempts[0]["outcome"], "ok", "{st:#}");
    assert!(st.get("process").is_none(), "{st:#}");
    assert!(
        s.has_event("signal", "FEATURE_READY_fr", ""),
        "{}",
        s.events_text()
    );
    assert_eq!(s.taken("processed", "FEATURE_READY_fr").len(), 1);
    assert!(s.taken("rejected", "FEATURE_READY_fr").is_empty());
    assert!(s.waiting_signals().is_empty(), "{:?}", s.waiting_signals());
    assert_eq!(s.merges(), vec!["Merge stream fr"]);
    assert!(s.repo.read("chapters/fr.md").contains("Stream fr"));
    s.assert_no_agent_left();
}

/// MERGE_REQUESTED from the running agent of an `approve = true` stream:
/// the agent may say it is done (its attempt ends and is checked), but an
/// agent can write any signal file, so only a person approves: the stream
/// waits for `loki approve`, which then merges it with the person's name.
#[test]
fn merge_requested_by_a_running_agent_never_stands_for_approval() {
    let s = Swarm::new(
        1,
        &[st(
            "mr",
            &[],
            &[("FAKE_AGENT_SIGNAL", "MERGE_REQUESTED")],
            &format!("approve = true\n{PATIENT}"),
        )],
    );
    let done = s.run();
    assert_eq!(done.code, Some(1), "{}", done.both());
    let st = s.state("mr");
    assert_eq!(st["status"], "awaiting_approval", "{st:#}");
    assert_eq!(st["attempts"][0]["outcome"], "ok", "{st:#}");
    assert!(s.has_event("signal", "MERGE_REQUESTED_mr", ""));
    assert!(s.merges().is_empty());

    let out = s.loki(&["approve", "mr", "--by", "maria"]);
    assert!(out.status.success(), "{}", both(&out));
    assert_eq!(s.merges(), vec!["Merge stream mr"]);
    let t = trailers(&s.repo, "main");
    assert!(
        t.contains(&("Loki-Approved-By".into(), "maria".into())),
        "the merge records the person who approved it: {t:?}"
    );
    s.assert_no_agent_left();
}

// ----- a reviewer's signals ------------------------------------------------------

/// REJECT (with a note) and APPROVE while the supervisor runs: the note is in
/// the next attempt's prompt, the rejected attempt does not count, and the
/// approval merges with the approver in the trailers.
#[test]
fn reject_then_approve_while_the_supervisor_runs() {
    let s = Swarm::new(
        2,
        &[
            keeper(),
            st("rev", &[], &[], "approve = true\nmax_attempts = 1\n"),
        ],
    );
    let run = s.start();
    s.wait_state("rev", "awaiting approval", |v| {
        v["status"] == "awaiting_approval"
    });
    assert!(!s.prompt("rev", 1).contains("lantern"));

    let note = "Give Mira a lantern in the harbour scene.";
    assert_sent(&s.loki(&["reject", "rev", "--note", note]));
    let st = s.wait_state("rev", "awaiting approval after attempt 2", |v| {
        v["status"] == "awaiting_approval" && v["attempt"] == 2
    });
    assert!(
        s.prompt("rev", 2).contains(note),
        "attempt 2's prompt lacks the note:\n{}",
        s.prompt("rev", 2)
    );
    let a = st["attempts"].as_array().expect("attempts");
    assert_eq!(a.len(), 2, "{st:#}");
    assert_eq!(a[0]["counted"], false, "{st:#}");
    assert_eq!(a[0]["outcome"], "rejected", "{st:#}");
    assert_eq!(a[1]["counted"], true, "{st:#}");
    assert!(s.has_event("signal", "REJECT_rev", note));

    // An APPROVE file whose note names the approver.
    s.drop_signal("APPROVE_rev", br#"{"note": "Ann"}"#);
    let st = s.wait_state("rev", "merged", |v| v["status"] == "merged");
    assert_eq!(st["approved_by"], "Ann", "{st:#}");
    assert!(s.has_event("signal", "APPROVE_rev", ""));

    release_keeper(&s, run);
    assert_eq!(s.merges(), vec!["Merge stream rev"]);
    let t = trailers(&s.repo, "main");
    assert!(
        t.contains(&("Loki-Approved-By".into(), "Ann".into())),
        "{t:?}"
    );
    assert!(s.reasons("REJECT_rev").is_empty() && s.reasons("APPROVE_rev").is_empty());
    s.assert_no_agent_left();
}

/// `loki reject --count`: the rejected attempt counts against
/// `max_attempts`, through the running supervisor and directly; the last
/// allowed attempt rejected this way fails the stream (no stray text in the
/// feedback), and `loki retry` gives it a fresh allowance.
#[test]
fn a_counted_reject_uses_up_the_allowance() {
    let s = Swarm::new(
        2,
        &[
            keeper(),
            st("rev", &[], &[], "approve = true\nmax_attempts = 2\n"),
        ],
    );
    let run = s.start();
    s.wait_state("rev", "awaiting approval", |v| {
        v["status"] == "awaiting_approval"
    });
    assert_sent(&s.loki(&["reject", "rev", "--count", "--note", "More rain."]));
    let st = s.wait_state("rev", "awaiting approval after attempt 2", |v| {
        v["status"] == "awaiting_approval" && v["attempt"] == 2
    });
    assert_eq!(st["attempts"][0]["counted"], true, "{st:#}");
    assert_eq!(st["attempts"][0]["outcome"], "rejected", "{st:#}");
    let prompt = s.prompt("rev", 2);
    assert!(
        prompt.contains("More rain.") && !prompt.contains("[counted]"),
        "{prompt}"
    );
    // Attempt 2 of 2, rejected and counted: no attempt left.
    assert_sent(&s.loki(&["reject", "rev", "--count", "--note", "Still dry."]));
    let st = s.wait_state("rev", "failed", |v| v["status"] == "failed");
    assert!(
        st["reason"].as_str().unwrap_or("").contains("Still dry."),
        "{st:#}"
    );
    assert_eq!(st["attempts"].as_array().map(Vec::len), Some(2), "{st:#}");
    release_keeper(&s, run);

    // Directly, with no supervisor: retry (a fresh allowance), one attempt,
    // a counted reject leaves one more; the second fails it.
    let out = s.loki(&["retry", "rev"]);
    assert!(out.status.success(), "{}", both(&out));
    let done = s.run();
    assert_eq!(
        s.state("rev")["status"],
        "awaiting_approval",
        "{}",
        done.both()
    );
    let out = s.loki(&["reject", "rev", "--count", "--note", "Add thunder."]);
    assert!(out.status.success(), "{}", both(&out));
    assert!(
        stdout(&out).contains("starts another attempt"),
        "{}",
        both(&out)
    );
    s.run();
    let st = s.state("rev");
    assert_eq!(st["status"], "awaiting_approval", "{st:#}");
    assert_eq!(st["attempt"], 4, "{st:#}");
    let out = s.loki(&["reject", "rev", "--count", "--note", "No."]);
    assert!(out.status.success(), "{}", both(&out));
    assert!(stdout(&out).contains("last attempt"), "{}", both(&out));
    assert_eq!(s.state("rev")["status"], "failed");
    assert!(s.merges().is_empty());
}

// ----- tests signals -------------------------------------------------------------

/// TESTS_PASSED is recorded; TESTS_FAILED on a running agent stops it, fails
/// the attempt with the note as feedback, and the retry's prompt has it.
#[test]
fn tests_failed_fails_the_running_attempt_and_the_retry_gets_the_note() {
    let s = Swarm::new(
        1,
        &[st(
            "t",
            &[],
            &[("FAKE_AGENT_HANG", "@1")],
            &format!("max_attempts = 2\n{PATIENT}"),
        )],
    );
    let run = s.start();
    let first = s.wait_running("t");
    let group = first["process"]["pgid"].as_i64().expect("pgid") as i32;
    let started = first["process"]["start_time"].as_u64().expect("start_time");
    assert!(!group_members(group, started).is_empty());

    s.drop_signal("TESTS_PASSED_t", br#"{"note": "unit suite green"}"#);
    let st = s.wait_state("t", "tests recorded", |v| v["tests"].is_string());
    assert_eq!(st["tests"], "passed: unit suite green", "{st:#}");
    assert_eq!(st["status"], "running", "{st:#}");

    let note = "parser_test failed: expected 3 chapters, got 4";
    assert_sent(&s.loki(&["signal", "TESTS_FAILED", "t", "--note", note]));
    let done = run.wait();
    assert_eq!(done.code, Some(0), "{}", done.both());

    let st = s.state("t");
    assert_eq!(st["status"], "merged", "{st:#}");
    let a = st["attempts"].as_array().expect("attempts");
    assert_eq!(a.len(), 2, "{st:#}");
    assert_eq!(a[0]["outcome"], "failed", "{st:#}");
    assert_eq!(a[0]["counted"], true, "{st:#}");
    let why = a[0]["reason"].as_str().unwrap_or("");
    assert!(why.contains("TESTS_FAILED") && why.contains(note), "{st:#}");
    assert_eq!(a[1]["outcome"], "ok", "{st:#}");
    assert!(
        s.prompt("t", 2).contains(note),
        "attempt 2's prompt lacks the note:\n{}",
        s.prompt("t", 2)
    );
    assert!(s.has_event("signal", "TESTS_FAILED_t", note));
    assert!(group_members(group, started).is_empty());
    s.assert_no_agent_left();
}

/// The state's `tests` field is documented (src/model/state.rs) as the latest
/// TESTS_PASSED / TESTS_FAILED signal: after TESTS_PASSED then TESTS_FAILED it
/// must not still say "passed".
#[test]
fn the_tests_field_follows_the_latest_tests_signal() {
    let s = Swarm::new(
        1,
        &[st(
            "t",
            &[],
            &[("FAKE_AGENT_HANG", "@1")],
            &format!("max_attempts = 2\n{PATIENT}"),
        )],
    );
    let run = s.start();
    s.wait_running("t");
    s.drop_signal("TESTS_PASSED_t", br#"{"note": "unit suite green"}"#);
    s.wait_state("t", "tests recorded", |v| v["tests"].is_string());
    s.drop_signal("TESTS_FAILED_t", br#"{"note": "2 failures"}"#);
    let done = run.wait();
    assert_eq!(done.code, Some(0), "{}", done.both());
    let st = s.state("t");
    assert_eq!(st["attempts"][0]["outcome"], "failed", "{st:#}");
    let tests = st["tests"].as_str().unwrap_or("");
    assert!(
        tests.starts_with("failed") && tests.contains("2 failures"),
        "after TESTS_FAILED the state still says tests = {tests:?}:\n{st:#}"
    );
}

// ----- cancel and retry ------------------------------------------------------------

/// CANCEL on a running agent: the stream is `cancelled`, its dependents are
/// `blocked`, the agent's whole process group is gone (here the agent has
/// forked a grandchild that ignores SIGTERM, as a claude Bash tool might),
/// and the attempt is closed in the state.
#[test]
fn cancel_stops_the_running_agent_and_blocks_its_dependents() {
    let s = Swarm::new(
        2,
        &[
            st("a", &[], &[("FAKE_AGENT_FORK_IGNORE_TERM", "1")], PATIENT),
            st("b", &["a"], &[], ""),
        ],
    );
    let run = s.start();
    let st = s.wait_running("a");
    let group = st["process"]["pgid"].as_i64().expect("pgid") as i32;
    let started = st["process"]["start_time"].as_u64().expect("start_time");
    s.wait_for("the agent and its grandchild alive", || {
        group_members(group, started).len() >= 2
    });
    let members = group_members(group, started);

    assert_sent(&s.loki(&["cancel", "a"]));
    let done = run.wait();
    assert_eq!(done.code, Some(1), "{}", done.both());
    let a = s.state("a");
    assert_eq!(a["status"], "cancelled", "{a:#}");
    assert!(s.has_event("signal", "CANCEL_a", ""));
    let b = s.state("b");
    assert_eq!(b["status"], "blocked", "{b:#}");
    assert!(
        b["reason"]
            .as_str()
            .unwrap_or("")
            .contains("dependency a is cancelled"),
        "{b:#}"
    );
    assert_eq!(b["attempts"].as_array().map(Vec::len), Some(0), "{b:#}");

    let left = wait_group_gone(group, started);
    assert!(
        left.is_empty(),
        "processes {left:?} of the cancelled agent's group {group} (members before: {members:?}) outlived the supervisor ({:?} after the CANCEL it exited)\nstate: {a:#}",
        done.elapsed
    );
    // The supervisor saw its agent end and closed the attempt.
    assert!(
        a.get("process").is_none(),
        "the state still records the agent's process: {a:#}"
    );
    let att = &a["attempts"][0];
    assert_eq!(att["outcome"], "cancelled", "{a:#}");
    assert!(att["ended_at"].is_string(), "{a:#}");
}

/// RETRY on a failed stream while the supervisor still runs: it runs again
/// with a fresh allowance, and its blocked dependent follows.
#[test]
fn retry_of_a_failed_stream_runs_it_again_while_the_supervisor_runs() {
    let s = Swarm::new(
        3,
        &[
            keeper(),
            st("f", &[], &[("FAKE_AGENT_FAIL", "@1")], "max_attempts = 1\n"),
            st("g", &["f"], &[], ""),
        ],
    );
    let run = s.start();
    s.wait_state("f", "failed", |v| v["status"] == "failed");
    s.wait_state("g", "blocked", |v| v["status"] == "blocked");

    s.drop_signal("RETRY_f", b"");
    let f = s.wait_state("f", "merged", |v| v["status"] == "merged");
    s.wait_state("g", "merged", |v| v["status"] == "merged");
    let a = f["attempts"].as_array().expect("attempts");
    assert_eq!(a.len(), 2, "{f:#}");
    assert_eq!(a[0]["outcome"], "failed", "{f:#}");
    assert_eq!(a[1]["outcome"], "ok", "{f:#}");
    assert!(s.has_event("signal", "RETRY_f", ""));
    assert!(s.reasons("RETRY_f").is_empty());

    release_keeper(&s, run);
    let merges = s.merges();
    assert!(merges.contains(&"Merge stream f".to_string()), "{merges:?}");
    assert!(merges.contains(&"Merge stream g".to_string()), "{merges:?}");
    s.assert_no_agent_left();
}

// ----- pause, resume, stop -----------------------------------------------------------

/// PAUSE: nothing new starts (the supervisor waits); STOP_<id>: that stream's
/// agent is stopped and it is `interrupted`; RESUME: the next stream starts.
#[test]
fn pause_resume_and_stop_of_one_stream() {
    let s = Swarm::new(
        1,
        &[
            st("a", &[], &[("FAKE_AGENT_HANG", "1")], PATIENT),
            st("b", &[], &[], ""),
        ],
    );
    let mut run = s.start();
    let st = s.wait_running("a");
    let group = st["process"]["pgid"].as_i64().expect("pgid") as i32;
    let started = st["process"]["start_time"].as_u64().expect("start_time");

    assert_sent(&s.loki(&["pause"]));
    s.wait_for("swarm paused", || s.swarm_state()["paused"] == true);
    s.wait_for("the PAUSE event", || {
        s.has_event("signal", "PAUSE", "swarm paused")
    });

    assert_sent(&s.loki(&["signal", "STOP", "a"]));
    let a = s.wait_state("a", "interrupted", |v| v["status"] == "interrupted");
    assert!(a["reason"].as_str().unwrap_or("").contains("STOP"), "{a:#}");
    assert_eq!(a["attempts"][0]["outcome"], "interrupted", "{a:#}");
    s.wait_for("a's agent gone", || {
        group_members(group, started).is_empty()
    });

    // Paused: the free slot stays free and the supervisor waits. The
    // witness: the supervisor has gone round its loop (where it starts what
    // may start) since a's slot was freed.
    let b_before = s.state_bytes("b");
    s.ping_paused();
    assert!(!s.transitioned("b", "preparing"), "{}", s.events_text());
    assert_eq!(s.state("b")["status"], "pending");
    assert_eq!(s.state_bytes("b"), b_before, "b changed while paused");
    assert!(!run.exited(), "a paused supervisor must wait for RESUME");

    assert_sent(&s.loki(&["resume"]));
    s.wait_state("b", "merged", |v| v["status"] == "merged");
    s.wait_for("the RESUME event", || {
        s.has_event("signal", "RESUME", "swarm resumed")
    });
    let done = run.wait();
    // a stays interrupted (STOP_<id> holds it for this run).
    assert_eq!(done.code, Some(1), "{}", done.both());
    assert_eq!(s.state("a")["status"], "interrupted");
    assert_eq!(s.state("a")["attempts"].as_array().map(Vec::len), Some(1));
    assert_eq!(s.merges(), vec!["Merge stream b"]);
    s.assert_no_agent_left();
}

/// STOP (whole swarm): nothing new starts; the supervisor exits once the
/// running attempt has finished (and merged).
#[test]
fn stop_lets_the_running_attempt_finish_then_the_supervisor_exits() {
    let s = Swarm::new(
        1,
        &[
            st("a", &[], &[("FAKE_AGENT_SLOW", "3")], ""),
            st("b", &[], &[], ""),
        ],
    );
    let run = s.start();
    s.wait_running("a");
    s.drop_signal("STOP", b"");
    let done = run.wait();
    // Stopped before b merged: 130, resumable.
    assert_eq!(done.code, Some(130), "{}", done.both());
    assert!(s.has_event("signal", "STOP", "starting nothing new"));
    let a = s.state("a");
    assert_eq!(a["status"], "merged", "{a:#}");
    assert_eq!(a["attempts"][0]["outcome"], "ok", "{a:#}");
    let b = s.state("b");
    assert_eq!(b["status"], "pending", "{b:#}");
    assert_eq!(b["attempts"].as_array().map(Vec::len), Some(0), "{b:#}");
    assert_eq!(s.merges(), vec!["Merge stream a"]);
    s.assert_no_agent_left();
}

/// A state file changed by hand while the supervisor runs (here: its version
/// bumped) is a conflict for the supervisor's next compare-and-swap: it
/// keeps its own view at the version it found, says so in a warning event,
/// and the stream still merges.
#[test]
fn a_state_file_edited_behind_the_supervisor_is_noticed_and_the_run_goes_on() {
    let s = Swarm::new(1, &[st("a", &[], &[("FAKE_AGENT_SLOW", "2")], "")]);
    let run = s.start();
    let mut v = s.wait_running("a");
    let bumped = v["version"].as_u64().expect("version") + 5;
    v["version"] = bumped.into();
    let tmp = s.path().join(".loki/state/.a.json.by-hand");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&v).expect("json")).expect("write");
    std::fs::rename(&tmp, s.state_file("a")).expect("rename");
    let done = run.wait();
    assert_eq!(done.code, Some(0), "{}", done.both());
    let a = s.state("a");
    assert_eq!(a["status"], "merged", "{a:#}");
    assert!(a["version"].as_u64().unwrap_or(0) > bumped, "{a:#}");
    assert!(
        s.has_event("warning", "the state file of a was changed outside", ""),
        "{}",
        s.events_text()
    );
    s.assert_no_agent_left();
}

// ----- rejections through the running supervisor -----------------------------------------

/// Swarm-wide PAUSE / RESUME honour `expected_version` against
/// swarm.json's version (`loki status --json` shows it): a stale one is
/// rejected by the running supervisor and refused directly.
#[test]
fn a_stale_swarm_signal_is_rejected() {
    let s = Swarm::new(1, &[keeper()]);
    let run = s.start();
    s.wait_running("keeper");
    s.drop_signal("PAUSE", br#"{"expected_version": 999}"#);
    let reason = s.wait_rejected("PAUSE");
    assert!(
        reason.contains("stale: expected swarm version 999"),
        "{reason}"
    );
    assert_ne!(s.swarm_state()["paused"], true);
    let v = status_json(&s.repo)["swarm"]["version"]
        .as_u64()
        .expect("swarm version");
    assert_sent(&s.loki(&["signal", "PAUSE", "--expect-version", &v.to_string()]));
    s.wait_for("paused at the right version", || {
        s.swarm_state()["paused"] == true
    });
    release_keeper(&s, run);

    let out = s.loki(&["signal", "RESUME", "--expect-version", "999"]);
    assert_eq!(out.status.code(), Some(2), "{}", both(&out));
    assert!(stderr(&out).contains("stale"), "{}", both(&out));
    assert_eq!(s.swarm_state()["paused"], true);
}

/// A stale `expected_version` (older than the stream's last status change, or
/// newer than its state) is rejected with a reason saying so, and the state
/// file is byte for byte unchanged; the current version is accepted.
#[test]
fn stale_expected_version_is_rejected_and_changes_nothing() {
    let s = Swarm::new(2, &[keeper(), st("rev", &[], &[], "approve = true\n")]);
    let run = s.start();
    let st = s.wait_state("rev", "awaiting approval", |v| {
        v["status"] == "awaiting_approval"
    });
    let v = st["version"].as_u64().expect("version");
    let before = s.state_bytes("rev");

    s.drop_signal(
        "APPROVE_rev",
        format!("{{\"expected_version\": {}}}", v - 1).as_bytes(),
    );
    let reason = s.wait_rejected("APPROVE_rev");
    assert!(
        reason.starts_with("signal: APPROVE_rev\nreason: stale:")
            && reason.contains(&format!("expected version {}", v - 1)),
        "{reason}"
    );
    assert!(s.has_event("signal_rejected", "APPROVE_rev", "stale"));
    assert_eq!(
        s.state_bytes("rev"),
        before,
        "a stale signal changed the state"
    );

    // Through the command, a version from the future.
    assert_sent(&s.loki(&[
        "signal",
        "APPROVE",
        "rev",
        "--expect-version",
        &(v + 5).to_string(),
    ]));
    let reasons = s.wait_rejected_n("APPROVE_rev", 2);
    assert!(
        reasons
            .iter()
            .any(|r| r.contains(&format!("expected version {}", v + 5)) && r.contains("stale")),
        "{reasons:?}"
    );
    assert_eq!(
        s.state_bytes("rev"),
        before,
        "a stale signal changed the state"
    );
    assert!(s.taken("processed", "APPROVE_rev").is_empty());

    // The version the reviewer saw is accepted.
    s.drop_signal(
        "APPROVE_rev",
        format!("{{\"expected_version\": {v}}}").as_bytes(),
    );
    s.wait_state("rev", "merged", |x| x["status"] == "merged");
    assert_eq!(s.taken("processed", "APPROVE_rev").len(), 1);
    release_keeper(&s, run);
    s.assert_no_agent_left();
}

/// Every malformed or inapplicable signal is moved to `rejected/` with a
/// `.reason` naming the problem and a `signal_rejected` event; nothing is
/// applied, a symlink's target is neither read nor touched.
#[test]
fn malformed_and_inapplicable_signals_are_rejected_with_a_reason() {
    let s = Swarm::new(1, &[keeper()]);
    let run = s.start();
    s.wait_running("keeper");
    let before = s.state_bytes("keeper");

    // A file outside .loki that a followed link would apply (tests recorded).
    let outside = s.scratch.path().join("outside.json");
    std::fs::write(&outside, r#"{"note": "followed"}"#).expect("write outside");
    let old = SystemTime::now() - Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(&outside)
        .and_then(|f| f.set_modified(old))
        .expect("set mtime");
    let outside_meta = std::fs::metadata(&outside).expect("meta");

    let mut big = br#"{"note": ""#.to_vec();
    big.extend(std::iter::repeat_n(b'x', 64 * 1024));
    big.extend_from_slice(b"\"}");
    let size = big.len();
    let cases: Vec<(&str, Option<Vec<u8>>, String)> = vec![
        (
            "LAUNCH_MISSILES_keeper",
            Some(vec![]),
            "unknown signal kind `LAUNCH_MISSILES`".into(),
        ),
        (
            "APPROVE_nosuch",
            Some(vec![]),
            "unknown stream `nosuch`; streams in this swarm: keeper".into(),
        ),
        (
            "APPROVE_Bad Id",
            Some(vec![]),
            "`Bad Id` is not a valid stream id".into(),
        ),
        ("MERGE_REQUESTED", Some(vec![]), "needs a stream id".into()),
        // Followed, this would record tests on the keeper.
        ("TESTS_PASSED_keeper", None, "symbolic link".into()),
        // Accepted, these would cancel or stop the keeper.
        (
            "CANCEL_keeper",
            Some(big),
            format!("its body is {size} bytes; the limit is 65536"),
        ),
        (
            "STOP_keeper",
            Some(b"{nope".to_vec()),
            "invalid JSON".into(),
        ),
        (
            "RETRY_keeper",
            Some(br#"{"force": true}"#.to_vec()),
            "unknown field `force`".into(),
        ),
        (
            "APPROVE_keeper",
            Some(vec![]),
            "APPROVE: stream keeper is running, not awaiting approval".into(),
        ),
        ("RESUME", Some(vec![]), "the swarm is not paused".into()),
    ];
    for (name, body, _) in &cases {
        match body {
            Some(b) => s.drop_signal(name, b),
            None => std::os::unix::fs::symlink(&outside, s.signals().join(name)).expect("symlink"),
        }
    }
    for (name, _, why) in &cases {
        let reason = s.wait_rejected(name);
        assert!(
            reason.starts_with(&format!("signal: {name}\nreason: "))
                && reason.contains(why.as_str()),
            "{name}: expected `{why}` in its reason:\n{reason}"
        );
        let files = s.taken("rejected", name);
        assert_eq!(files.len(), 1, "{name}: {files:?}");
        s.wait_for(&format!("a signal_rejected event for {name}"), || {
            s.has_event("signal_rejected", &format!("{name}: "), why)
        });
        assert!(
            s.taken("processed", name).is_empty(),
            "{name} was left in processed/"
        );
    }

    // The link was moved, not followed: it is still a link, its target is
    // where it was, unchanged, and nothing it says was applied.
    let link = &s.taken("rejected", "TESTS_PASSED_keeper")[0];
    let lm = std::fs::symlink_metadata(link).expect("link");
    assert!(lm.file_type().is_symlink());
    assert_eq!(std::fs::read_link(link).expect("readlink"), outside);
    assert_eq!(
        std::fs::read_to_string(&outside).expect("outside"),
        r#"{"note": "followed"}"#
    );
    let now_meta = std::fs::metadata(&outside).expect("meta");
    assert_eq!(
        now_meta.modified().expect("mtime"),
        outside_meta.modified().expect("mtime")
    );

    // Nothing was applied: the keeper's state is byte for byte the same, it
    // runs on, and nothing is left waiting.
    assert_eq!(s.state_bytes("keeper"), before, "{:#}", s.state("keeper"));
    assert_ne!(s.swarm_state()["paused"], true);
    assert!(s.waiting_signals().is_empty(), "{:?}", s.waiting_signals());
    assert!(!s.has_event("signal", "", ""), "{}", s.events_text());

    release_keeper(&s, run);
    s.assert_no_agent_left();
}

// ----- no supervisor running ----------------------------------------------------------------

/// An APPROVE dropped while no supervisor runs is applied when the next
/// `loki run` starts: the stream merges.
#[test]
fn approve_written_while_no_supervisor_runs_is_applied_at_start() {
    let s = Swarm::new(1, &[st("rev", &[], &[], "approve = true\n")]);
    let done = s.run();
    assert_eq!(done.code, Some(1), "{}", done.both());
    assert_eq!(s.state("rev")["status"], "awaiting_approval");

    s.drop_signal("APPROVE_rev", br#"{"note": "Bea"}"#);
    let done = s.run();
    assert!(
        s.waiting_signals().is_empty(),
        "the signal was not taken: {:?}",
        s.waiting_signals()
    );
    assert!(
        s.reasons("APPROVE_rev").is_empty(),
        "{:?}",
        s.reasons("APPROVE_rev")
    );
    let st = s.state("rev");
    assert_eq!(
        st["status"],
        "merged",
        "the APPROVE written while no supervisor ran was taken (now {:?}) but not applied:\n{}\nstate: {st:#}\nevents:\n{}",
        s.taken("processed", "APPROVE_rev"),
        done.both(),
        s.events_text()
    );
    assert_eq!(done.code, Some(0), "{}", done.both());
    assert_eq!(st["approved_by"], "Bea");
    assert!(s.has_event("signal", "APPROVE_rev", ""));
    assert_eq!(s.merges(), vec!["Merge stream rev"]);
}

/// A signal the supervisor took into `processed/` but died before handling
/// (no `signal` event names its file) is applied by the next `loki run`;
/// one already handled, one taken by an older supervisor and a swarm-wide
/// STOP (meant for the supervisor that died) are not.
#[test]
fn a_signal_taken_but_not_handled_before_a_crash_is_applied_at_start() {
    let s = Swarm::new(
        1,
        &[
            st("rev", &[], &[], "approve = true\n"),
            st("old", &[], &[], "approve = true\n"),
            st("older", &[], &[], "approve = true\n"),
        ],
    );
    let done = s.run();
    assert_eq!(done.code, Some(1), "{}", done.both());
    for id in ["rev", "old", "older"] {
        assert_eq!(s.state(id)["status"], "awaiting_approval");
    }
    // The pid of that (now stopped) supervisor, from its `started` event.
    let pid = s
        .events()
        .iter()
        .rev()
        .find_map(|e| {
            let m = e["message"].as_str()?.strip_prefix("started (pid ")?;
            m.split(')').next()?.parse::<u32>().ok()
        })
        .expect("a started event");

    // The state a kill -9 leaves right after the watcher's renames: files
    // in processed/ under their unique names, and no event for them.
    let processed = s.signals().join("processed");
    std::fs::create_dir_all(&processed).expect("processed/");
    let put = |name: &str, body: &[u8]| {
        std::fs::write(processed.join(name), body).expect("taken signal");
    };
    let rev = format!("APPROVE_rev.1700000000000000000-{pid}");
    put(&rev, br#"{"note": "Ada"}"#);
    put(&format!("STOP.1700000000000000003-{pid}"), b"");
    // Handled by that supervisor: its event names the file.
    let old = format!("APPROVE_old.1700000000000000001-{pid}");
    put(&old, b"");
    // Taken by an older supervisor (another pid): long settled.
    put("APPROVE_older.1700000000000000002-4242", b"");
    let handled = serde_json::json!({
        "ts": "2026-01-01T00:00:00Z", "kind": "signal", "stream": "old",
        "message": "APPROVE_old", "signal_file": old
    });
    let events = s.path().join(".loki/state/events.jsonl");
    let mut text = std::fs::read_to_string(&events).expect("events");
    text.push_str(&format!("{handled}\n"));
    std::fs::write(&events, text).expect("events");

    let done = s.run();
    let st = s.state("rev");
    assert_eq!(st["status"], "merged", "{}\n{st:#}", done.both());
    assert_eq!(st["approved_by"], "Ada");
    assert_eq!(s.state("old")["status"], "awaiting_approval");
    assert_eq!(s.state("older")["status"], "awaiting_approval");
    assert!(
        done.both()
            .contains("taken by the stopped supervisor but not yet handled"),
        "{}",
        done.both()
    );
    let marks: Vec<Value> = s
        .events()
        .into_iter()
        .filter(|e| e["signal_file"] == rev.as_str())
        .collect();
    assert_eq!(marks.len(), 1, "handled exactly once: {marks:?}");
    assert!(s.has_event("signal", "STOP", "not replayed"));
    assert_eq!(s.merges(), vec!["Merge stream rev"]);
    // A third run replays nothing.
    let done = s.run();
    assert_eq!(
        s.state("old")["status"],
        "awaiting_approval",
        "{}",
        done.both()
    );
    assert!(!done.both().contains("not yet handled"), "{}", done.both());
    assert_eq!(s.merges(), vec!["Merge stream rev"]);
}

/// `loki pause` with no supervisor running holds: the next `loki run` starts
/// nothing and waits for `loki resume` (only the supervisor's own pause after
/// an authentication failure is lifted by the next run).
#[test]
fn a_pause_made_while_no_supervisor_runs_holds_until_resume() {
    let s = Swarm::new(1, &[st("a", &[], &[], "")]);
    let out = s.loki(&["pause"]);
    assert!(out.status.success(), "{}", both(&out));
    let mut run = s.start();
    s.wait_for("the run says it is paused", || {
        run.output().contains("paused")
    });
    // The witness that it had its chance to start `a`: it went round its
    // loop (where it starts what may start) and answered a signal.
    s.ping_paused();
    assert!(!s.transitioned("a", "preparing"), "{}", s.events_text());
    assert_eq!(s.state("a")["status"], "pending");
    assert!(!run.exited(), "a paused supervisor waits for RESUME");
    assert_sent(&s.loki(&["resume"]));
    s.wait_state("a", "merged", |v| v["status"] == "merged");
    let done = run.wait();
    assert_eq!(done.code, Some(0), "{}", done.both());
    assert_eq!(s.swarm_state()["paused"], false);
}

/// A RETRY dropped for a cancelled stream while no supervisor runs is applied
/// when the next `loki run` starts (a cancelled stream otherwise stays
/// cancelled).
#[test]
fn retry_of_a_cancelled_stream_written_while_no_supervisor_runs_is_applied_at_start() {
    let s = Swarm::new(
        1,
        &[st(
            "c",
            &[],
            &[("FAKE_AGENT_FAIL", "@1")],
            "max_attempts = 1\n",
        )],
    );
    let done = s.run();
    assert_eq!(done.code, Some(1), "{}", done.both());
    assert_eq!(s.state("c")["status"], "failed");
    // No supervisor: applied directly.
    let out = s.loki(&["cancel", "c"]);
    assert!(out.status.success(), "{}", both(&out));
    assert_eq!(s.state("c")["status"], "cancelled");

    s.drop_signal("RETRY_c", b"");
    let done = s.run();
    assert!(s.waiting_signals().is_empty(), "{:?}", s.waiting_signals());
    assert!(
        s.reasons("RETRY_c").is_empty(),
        "{:?}",
        s.reasons("RETRY_c")
    );
    let st = s.state("c");
    assert_eq!(
        st["status"],
        "merged",
        "the RETRY written while no supervisor ran was taken (now {:?}) but not applied:\n{}\nstate: {st:#}\nevents:\n{}",
        s.taken("processed", "RETRY_c"),
        done.both(),
        s.events_text()
    );
    assert_eq!(done.code, Some(0), "{}", done.both());
    assert!(s.has_event("signal", "RETRY_c", ""));
    assert!(
        s.reasons("RETRY_c").is_empty(),
        "{:?}",
        s.reasons("RETRY_c")
    );
}

/// A RETRY dropped for a failed stream while no supervisor runs: the next
/// `loki run` runs the stream again, and the user's signal is accepted, not
/// bounced to rejected/ as inapplicable.
#[test]
fn retry_of_a_failed_stream_written_while_no_supervisor_runs_is_applied_at_start() {
    let s = Swarm::new(
        1,
        &[st(
            "f",
            &[],
            &[("FAKE_AGENT_FAIL", "@1")],
            "max_attempts = 1\n",
        )],
    );
    let done = s.run();
    assert_eq!(done.code, Some(1), "{}", done.both());
    assert_eq!(s.state("f")["status"], "failed");

    s.drop_signal("RETRY_f", b"");
    let done = s.run();
    assert_eq!(done.code, Some(0), "{}", done.both());
    assert_eq!(s.state("f")["status"], "merged");
    assert!(
        s.reasons("RETRY_f").is_empty(),
        "the RETRY was rejected: {:?}",
        s.reasons("RETRY_f")
    );
    assert!(s.has_event("signal", "RETRY_f", ""), "{}", s.events_text());
}

/// With no supervisor, `loki signal APPROVE --expect-version <wrong>` is
/// refused as stale and changes nothing; `loki approve` merges at once.
#[test]
fn direct_path_refuses_a_stale_version_and_approve_merges_at_once() {
    let s = Swarm::new(1, &[st("rev", &[], &[], "approve = true\n")]);
    let done = s.run();
    assert_eq!(done.code, Some(1), "{}", done.both());
    let st = s.state("rev");
    assert_eq!(st["status"], "awaiting_approval");
    let v = st["version"].as_u64().expect("version");

    let watched = |s: &Swarm| {
        (
            s.state_bytes("rev"),
            std::fs::read(s.path().join(".loki/state/events.jsonl")).unwrap_or_default(),
            s.waiting_signals(),
            s.repo.git(&["show-ref"]),
            s.repo.git(&["status", "--porcelain"]),
        )
    };
    let before = watched(&s);
    for wrong in [v - 1, v + 1] {
        let out = s.loki(&[
            "signal",
            "APPROVE",
            "rev",
            "--expect-version",
            &wrong.to_string(),
        ]);
        assert!(!out.status.success(), "{}", both(&out));
        let err = stderr(&out);
        assert!(
            err.contains("stale") && err.contains(&format!("expected version {wrong}")),
            "{}",
            both(&out)
        );
        assert_eq!(
            watched(&s),
            before,
            "a refused stale approval changed something"
        );
    }

    let out = s.loki(&["approve", "rev", "--by", "Ann"]);
    assert!(out.status.success(), "{}", both(&out));
    assert!(stdout(&out).contains("merged"), "{}", both(&out));
    let st = s.state("rev");
    assert_eq!(st["status"], "merged", "{st:#}");
    assert_eq!(st["approved_by"], "Ann", "{st:#}");
    assert_eq!(s.merges(), vec!["Merge stream rev"]);
    let t = trailers(&s.repo, "main");
    assert!(
        t.contains(&("Loki-Approved-By".into(), "Ann".into())),
        "{t:?}"
    );
    assert_clean_repo(&s.repo);
}
