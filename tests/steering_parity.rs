//! A steering command applied directly (no supervisor running) and the
//! same request sent as a signal to a running supervisor end in exactly the
//! same stream state and the same transition events: both go through the
//! one state machine and the one door.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// A repo whose one stream waits for approval, with the swarm paused so
/// that a supervisor started later only applies signals.
fn awaiting_approval() -> Repo {
    let repo = Repo::new();
    repo.write("prompts/chapter.md", CHAPTER);
    repo.write(
        "loki.toml",
        &format!(
            "{}{}",
            header(1, ""),
            stream("ch01", &[], "chapters/ch01.md", "approve = true")
        ),
    );
    repo.commit_all("swarm");
    let out = repo.loki(&["run", "--plain"]);
    assert_eq!(
        stream_status(&repo, "ch01"),
        "awaiting_approval",
        "{}",
        both(&out)
    );
    let out = repo.loki(&["pause"]);
    assert!(out.status.success(), "{}", both(&out));
    repo
}

fn state(repo: &Repo) -> serde_json::Value {
    let text = repo.read(".loki/state/ch01.json");
    let mut v: serde_json::Value = serde_json::from_str(&text).expect("state json");
    // Times and hashes differ between two runs; everything else must not.
    for k in [
        "finished_at",
        "started_at",
        "merge_commit",
        "base_commit",
        "worktree",
    ] {
        v.as_object_mut().map(|o| o.remove(k));
    }
    if let Some(a) = v.get_mut("attempts").and_then(|a| a.as_array_mut()) {
        for a in a {
            for k in ["started_at", "ended_at", "commit"] {
                a.as_object_mut().map(|o| o.remove(k));
            }
        }
    }
    v
}

/// The stream's transition events after the pause: (from, to, version, message).
fn transitions(repo: &Repo) -> Vec<(String, String, u64, String)> {
    let text = repo.read(".loki/state/events.jsonl");
    let mut out = Vec::new();
    let mut after_pause = false;
    for line in text.lines() {
        let e: serde_json::Value = serde_json::from_str(line).expect("event json");
        if e["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("PAUSE"))
        {
            after_pause = true;
            continue;
        }
        if after_pause && e["kind"] == "transition" && e["stream"] == "ch01" {
            let merged = e["to"] == "merged";
            out.push((
                e["from"].as_str().unwrap_or("").to_string(),
                e["to"].as_str().unwrap_or("").to_string(),
                e["version"].as_u64().unwrap_or(0),
                if merged {
                    String::new()
                } else {
                    e["message"].as_str().unwrap_or("").to_string()
                },
            ));
        }
    }
    out
}

/// Drops `file` (with `body`) into the signal folder, starts a supervisor,
/// waits until it has handled the signal, and stops it.
fn via_supervisor(repo: &Repo, file: &str, body: &str) {
    repo.write(&format!(".loki/signals/{file}"), body);
    let mut child = Command::new(loki_bin())
        .args(["run", "--plain"])
        .current_dir(repo.path())
        .env("NO_COLOR", "1")
        .env("PATH", fast_path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting loki run");
    let events = repo.path().join(".loki/state/events.jsonl");
    let until = Instant::now() + Duration::from_secs(30);
    let handled = |text: &str| {
        text.lines().any(|l| {
            l.contains("\"kind\":\"signal\"") && l.contains(&format!("\"signal_file\":\"{file}"))
        })
    };
    loop {
        let text = std::fs::read_to_string(&events).unwrap_or_default();
        let merge_done =
            !body.contains("maria") || text.lines().any(|l| l.contains("\"to\":\"merged\""));
        if handled(&text) && merge_done {
            break;
        }
        if let Ok(Some(s)) = child.try_wait() {
            let text = std::fs::read_to_string(&events).unwrap_or_default();
            assert!(
                handled(&text),
                "supervisor exited ({s}) without handling {file}"
            );
            break;
        }
        assert!(Instant::now() < until, "{file} not handled:\n{text}");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Nothing runs, so SIGTERM only ends the supervisor.
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = child.wait();
}

fn swarm(repo: &Repo) -> serde_json::Value {
    serde_json::from_str(&repo.read(".loki/state/swarm.json")).expect("swarm json")
}

fn compare(direct: &Repo, supervised: &Repo, what: &str) {
    assert_eq!(swarm(direct), swarm(supervised), "swarm state after {what}");
    assert_eq!(
        state(direct),
        state(supervised),
        "state after {what}; events:\n{}\n---\n{}",
        direct.read(".loki/state/events.jsonl"),
        supervised.read(".loki/state/events.jsonl")
    );
    assert_eq!(
        transitions(direct),
        transitions(supervised),
        "transition events after {what}"
    );
}

#[test]
fn each_steering_command_has_the_same_effect_with_or_without_a_supervisor() {
    // (command line, signal file, signal body)
    let cases: &[(&[&str], &str, &str)] = &[
        (
            &["reject", "ch01", "--note", "more rain"],
            "REJECT_ch01",
            r#"{"note": "more rain"}"#,
        ),
        (
            &["reject", "ch01", "--note", "no", "--count"],
            "REJECT_ch01",
            r#"{"note": "no", "count": true}"#,
        ),
        (&["cancel", "ch01"], "CANCEL_ch01", ""),
        (
            &["signal", "TESTS_FAILED", "ch01", "--note", "ci red"],
            "TESTS_FAILED_ch01",
            r#"{"note": "ci red"}"#,
        ),
        (
            &["signal", "TESTS_PASSED", "ch01", "--note", "ci green"],
            "TESTS_PASSED_ch01",
            r#"{"note": "ci green"}"#,
        ),
        (&["signal", "PAUSE", "ch01"], "PAUSE_ch01", ""),
        (
            &["approve", "ch01", "--by", "maria"],
            "APPROVE_ch01",
            r#"{"note": "maria"}"#,
        ),
    ];
    for (args, file, body) in cases {
        let what = args.join(" ");
        let direct = awaiting_approval();
        let out = direct.loki(args);
        assert!(out.status.success(), "{what}: {}", both(&out));
        let supervised = awaiting_approval();
        via_supervisor(&supervised, file, body);
        compare(&direct, &supervised, &what);
    }
}

#[test]
fn retry_of_a_cancelled_stream_is_the_same_either_way() {
    let direct = awaiting_approval();
    let supervised = awaiting_approval();
    for r in [&direct, &supervised] {
        let out = r.loki(&["cancel", "ch01"]);
        assert!(out.status.success(), "{}", both(&out));
    }
    let out = direct.loki(&["retry", "ch01"]);
    assert!(out.status.success(), "{}", both(&out));
    via_supervisor(&supervised, "RETRY_ch01", "");
    // The supervisor goes on to start the retried stream only after RESUME:
    // the swarm is paused, so what it wrote is the retry alone.
    compare(&direct, &supervised, "retry");
}

#[test]
fn resume_of_a_paused_stream_and_of_the_swarm_is_the_same_either_way() {
    // The stream: paused (directly) in both, then resumed one way or the other.
    let direct = awaiting_approval();
    let supervised = awaiting_approval();
    for r in [&direct, &supervised] {
        let out = r.loki(&["signal", "PAUSE", "ch01"]);
        assert!(out.status.success(), "{}", both(&out));
    }
    let out = direct.loki(&["signal", "RESUME", "ch01"]);
    assert!(out.status.success(), "{}", both(&out));
    via_supervisor(&supervised, "RESUME_ch01", "");
    compare(&direct, &supervised, "RESUME ch01");
    assert_eq!(state(&direct)["paused"], false);

    // The swarm: paused by awaiting_approval(), resumed one way or the other.
    let direct = awaiting_approval();
    let supervised = awaiting_approval();
    let out = direct.loki(&["resume"]);
    assert!(out.status.success(), "{}", both(&out));
    via_supervisor(&supervised, "RESUME", "");
    compare(&direct, &supervised, "RESUME");
    assert_eq!(swarm(&direct)["paused"], false);
    // Resuming what is not paused is refused both ways.
    let out = direct.loki(&["resume"]);
    assert_eq!(out.status.code(), Some(2), "{}", both(&out));
    assert!(
        stderr(&out).contains("the swarm is not paused"),
        "{}",
        both(&out)
    );
}

/// Eight `loki cancel` at once with no supervisor running: each is applied
/// exactly once, and none mistakes another command for a supervisor (they
/// used to: 1 or 2 of 8 applied, the others "sent" signals to a command).
#[test]
fn concurrent_commands_without_a_supervisor_are_each_applied_once() {
    let repo = Repo::new();
    repo.write("prompts/chapter.md", CHAPTER);
    let ids: Vec<String> = (1..=8).map(|i| format!("s{i}")).collect();
    let mut toml = header(8, "");
    for id in &ids {
        toml.push_str(&stream(
            id,
            &[],
            &format!("chapters/{id}.md"),
            "approve = true",
        ));
    }
    repo.write("loki.toml", &toml);
    repo.commit_all("swarm");
    let out = repo.loki(&["run", "--plain"]);
    for id in &ids {
        assert_eq!(
            stream_status(&repo, id),
            "awaiting_approval",
            "{}",
            both(&out)
        );
    }
    let children: Vec<_> = ids
        .iter()
        .map(|id| {
            Command::new(loki_bin())
                .args(["cancel", id])
                .current_dir(repo.path())
                .env("NO_COLOR", "1")
                .env("PATH", fast_path())
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("starting loki cancel")
        })
        .collect();
    for (id, child) in ids.iter().zip(children) {
        let out = child.wait_with_output().expect("loki cancel");
        assert!(out.status.success(), "{id}: {}", both(&out));
        assert!(
            stdout(&out).contains("cancelled") && !stdout(&out).contains("sent"),
            "{id}: {}",
            both(&out)
        );
        assert_eq!(stream_status(&repo, id), "cancelled", "{id}");
    }
    let left: Vec<_> = std::fs::read_dir(repo.path().join(".loki/signals"))
        .expect("signals")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_file())
        .collect();
    assert!(left.is_empty(), "signal files written: {left:?}");
    let cancels = repo
        .read(".loki/state/events.jsonl")
        .lines()
        .filter(|l| l.contains("\"to\":\"cancelled\""))
        .count();
    assert_eq!(cancels, 8, "each cancel is one transition");
}
