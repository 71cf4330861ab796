//! Usage windows waited out to the second: a claude-named stand-in prints
//! Claude Code's `rate_limit_event`. `rejected`: no agent starts before
//! `resetsAt`, the attempt that hit it resumes its session after it, and
//! nothing is counted against `max_attempts`. `allowed_warning` above
//! `pause_at_utilization`: running attempts finish, new ones wait.

mod common;
use common::*;

/// The `resetsAt` of the first rate_limit_event in a stream's transcript.
fn resets_at(s: &Swarm, id: &str) -> i64 {
    let t = s.repo.read(&format!(".loki/logs/{id}/attempt-1.jsonl"));
    t.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["type"] == "rate_limit_event")
        .and_then(|v| v["rate_limit_info"]["resetsAt"].as_i64())
        .unwrap_or_else(|| panic!("no rate_limit_event in {id}'s transcript:\n{t}"))
}

/// Start times (unix seconds) of every attempt of `id` with its number.
fn starts(s: &Swarm, id: &str) -> Vec<(u64, f64)> {
    let st = s.state(id);
    st["attempts"]
        .as_array()
        .expect("attempts")
        .iter()
        .map(|a| {
            let t = a["started_at"].as_str().expect("started_at");
            let t = chrono::DateTime::parse_from_rfc3339(t).expect("rfc3339");
            (
                a["n"].as_u64().unwrap_or(0),
                t.timestamp_millis() as f64 / 1000.0,
            )
        })
        .collect()
}

fn swarm(s: &Swarm, extra_swarm: &str, a_env: &str) -> std::path::PathBuf {
    let claude = s.fake_claude();
    let args = s.scratch("args.jsonl");
    let mut toml = header_with(&claude, 1, 2).replace(
        "[agent]",
        &format!(
            "{extra_swarm}\n[agent]\nenv = {{ FAKE_AGENT_ARGS_LOG = \"{}\" }}",
            args.display()
        ),
    );
    toml.push_str(&stream(
        "a",
        &[],
        "chapters/a.md",
        &format!("env = {{ {a_env} }}"),
    ));
    toml.push_str(&stream("b", &[], "chapters/b.md", ""));
    s.write(&toml);
    args
}

#[test]
fn a_rejected_window_is_waited_out_and_the_cut_off_session_resumes() {
    let s = Swarm::empty();
    let args = swarm(
        &s,
        "",
        "FAKE_AGENT_RATE_LIMIT = \"rejected@1\", FAKE_AGENT_RATE_LIMIT_RESET = \"3\"",
    );
    let run = s.start();
    s.wait_event("usage_limit", "waiting for the session limit", "");
    // Status says what the swarm waits for, and until when.
    let table = stdout(&s.loki(&["status"]));
    assert!(
        table.contains("; waiting for the session limit to reset at "),
        "{table}"
    );
    let done = run.wait();
    assert_eq!(done.code, Some(0), "{}", done.both());
    s.assert_all_merged_once(&["a", "b"]);
    assert!(
        done.text()
            .contains("waiting for the session limit to reset at "),
        "{}",
        done.both()
    );
    assert!(
        !stdout(&s.loki(&["status"])).contains("waiting for the session limit"),
        "the wait is over"
    );
    let reset = resets_at(&s, "a") as f64;
    // Nothing started between the limit and its reset.
    let a = starts(&s, "a");
    let b = starts(&s, "b");
    assert!(a.len() >= 2, "{a:?}");
    for (n, t) in a.iter().skip(1).chain(b.iter()) {
        assert!(
            *t >= reset,
            "attempt {n} started at {t}, before the reset at {reset}"
        );
    }
    // The attempt the limit cut off was not counted, and the next one
    // resumed its claude session.
    let st = s.state("a");
    let first = &st["attempts"][0];
    assert_eq!(first["counted"], false, "{st:#}");
    assert!(
        matches!(
            first["outcome"].as_str(),
            Some("interrupted") | Some("rate_limited")
        ),
        "{st:#}"
    );
    let log = std::fs::read_to_string(&args).expect("args log");
    let runs: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let first_session = runs
        .iter()
        .find(|r| r["attempt"] == 1 && r["argv"].to_string().contains("chapters/a.md"))
        .and_then(|r| r["session_id"].as_str())
        .expect("a's first session")
        .to_string();
    assert!(
        runs.iter()
            .any(|r| r["resumed"] == true && r["session_id"] == first_session.as_str()),
        "{log}"
    );
    for id in ["a", "b"] {
        let st = s.state(id);
        for at in st["attempts"].as_array().expect("attempts") {
            assert_ne!(at["outcome"], "failed", "{st:#}");
        }
    }
}

#[test]
fn a_window_nearly_used_up_lets_running_work_finish_and_starts_nothing_new() {
    let s = Swarm::empty();
    swarm(
        &s,
        "pause_at_utilization = 0.9\n",
        "FAKE_AGENT_RATE_LIMIT = \"allowed_warning@1\", FAKE_AGENT_UTILIZATION = \"0.95\", \
         FAKE_AGENT_RATE_LIMIT_RESET = \"3\"",
    );
    let done = s.run();
    assert_eq!(done.code, Some(0), "{}", done.both());
    s.assert_all_merged_once(&["a", "b"]);
    assert!(
        done.text()
            .contains("is 95% used (pause_at_utilization 0.9); running attempts finish"),
        "{}",
        done.both()
    );
    let reset = resets_at(&s, "a") as f64;
    // a went on and merged at its first attempt; b waited for the reset.
    assert_eq!(s.state("a")["attempts"].as_array().map(Vec::len), Some(1));
    let b = starts(&s, "b");
    assert!(
        b[0].1 >= reset,
        "b started at {}, before the reset at {reset}",
        b[0].1
    );
}

/// A wait longer than `max_wait` ends the run (saying when it would have
/// gone on); the next run after the reset resumes, with nothing counted.
#[test]
fn a_wait_longer_than_max_wait_ends_the_run_and_the_next_one_resumes() {
    let s = Swarm::empty();
    swarm(
        &s,
        "max_wait = \"1s\"\n",
        "FAKE_AGENT_RATE_LIMIT = \"rejected@1\", FAKE_AGENT_RATE_LIMIT_RESET = \"3\"",
    );
    let done = s.run();
    assert_eq!(done.code, Some(1), "{}", done.both());
    assert!(
        done.text()
            .contains("later than [swarm] max_wait (1s) lets a run wait: ending the run"),
        "{}",
        done.both()
    );
    assert!(
        stdout(&s.loki(&["status"])).contains("waiting for the session limit to reset at"),
        "{}",
        done.both()
    );
    let reset = resets_at(&s, "a");
    let passed = wait_until(std::time::Duration::from_secs(10), || {
        chrono::Utc::now().timestamp() > reset + 2
    });
    assert!(passed);
    let again = s.run();
    assert_eq!(again.code, Some(0), "{}", again.both());
    s.assert_all_merged_once(&["a", "b"]);
    assert_eq!(s.state("a")["attempts"][0]["counted"], false);
}
