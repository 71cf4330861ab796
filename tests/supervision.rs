//! Supervision end to end: hung agents (idle and wall-clock timeouts), a
//! grandchild that ignores SIGTERM, Ctrl-C once and twice, SIGTERM, `kill -9`
//! of the supervisor at several points of the lifecycle, a second supervisor,
//! and the swarm budget.
//!
//! Every test records the process groups of the agents it caused (from
//! `events.jsonl`, the state files' `process` field and the fake agent's pid
//! file) and asserts, by walking `/proc`, that none of their processes is
//! left; and that no commit is lost (every commit the state records is
//! reachable, every stream merges exactly once). The harness (tests/common:
//! `Swarm`, `Running`) kills whatever is left of those groups when a test
//! fails halfway, and a running supervisor when it is dropped.

mod common;
use common::*;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::Value;

// ----- swarm files ----------------------------------------------------------

fn toml_path(p: &Path) -> String {
    p.display().to_string()
}

// ----- timeouts -------------------------------------------------------------

/// An agent that prints nothing is stopped after `idle_timeout`; the attempt
/// fails with `idle`, counts, and is retried; with one attempt allowed the
/// stream fails with `idle` in its reason.
#[test]
fn idle_agent_is_stopped_counted_and_retried() {
    let h = Swarm::empty();
    let mut toml = header(2, "");
    toml.push_str(&stream_with(
        "hung-once",
        &[],
        &[("FAKE_AGENT_HANG", "@1")],
        "idle_timeout = \"1s\"\nmax_attempts = 2\n",
    ));
    toml.push_str(&stream_with(
        "hung",
        &[],
        &[("FAKE_AGENT_HANG", "1")],
        "idle_timeout = \"1s\"\nmax_attempts = 1\n",
    ));
    h.write(&toml);

    let done = h.run();
    assert_eq!(done.code, Some(1), "{}", done.both());
    h.assert_no_leftovers("after the run");

    // Retried after an idle attempt that counted, then merged.
    let st = h.try_state("hung-once").expect("state");
    assert_eq!(st["status"], "merged", "{st:#}");
    let attempts = st["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 2, "{st:#}");
    assert_eq!(attempts[0]["outcome"], "idle", "{st:#}");
    assert_eq!(attempts[0]["counted"], true, "{st:#}");
    assert_eq!(attempts[1]["outcome"], "ok", "{st:#}");

    // One attempt allowed: failed, `idle` in the reason, in status --json too.
    let st = h.try_state("hung").expect("state");
    assert_eq!(st["status"], "failed", "{st:#}");
    assert_eq!(st["attempts"][0]["outcome"], "idle", "{st:#}");
    let js = h.json_stream("hung");
    assert_eq!(js["status"], "failed", "{js:#}");
    assert_eq!(js["attempts"], 1, "{js:#}");
    let reason = js["reason"].as_str().unwrap_or("");
    assert!(reason.contains("idle"), "reason: {reason}");
    assert!(done.stdout.contains("idle"), "{}", done.both());

    h.assert_no_commit_lost();
    let subjects = first_parent_subjects(&h.repo, "main");
    assert!(subjects.contains(&"Merge stream hung-once".to_string()));
    assert!(!subjects.iter().any(|s| s == "Merge stream hung"));
}

/// An agent that keeps talking but never ends is stopped at the wall-clock
/// `timeout`; the attempt fails with `timeout`, counts, and is retried.
#[test]
fn wall_clock_timeout_stops_a_chatty_agent() {
    let h = Swarm::empty();
    let mut toml = header(2, "");
    toml.push_str(&stream_with(
        "long-once",
        &[],
        &[("FAKE_AGENT_SLOW", "30@1")],
        "timeout = \"2s\"\nmax_attempts = 2\n",
    ));
    toml.push_str(&stream_with(
        "long",
        &[],
        &[("FAKE_AGENT_SLOW", "30")],
        "timeout = \"2s\"\nmax_attempts = 1\n",
    ));
    h.write(&toml);

    let started = Instant::now();
    let done = h.run();
    assert_eq!(done.code, Some(1), "{}", done.both());
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "the 30 s agents were not stopped at the 2 s timeout"
    );
    h.assert_no_leftovers("after the run");

    let st = h.try_state("long-once").expect("state");
    assert_eq!(st["status"], "merged", "{st:#}");
    let attempts = st["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 2, "{st:#}");
    assert_eq!(attempts[0]["outcome"], "timeout", "{st:#}");
    assert_eq!(attempts[0]["counted"], true, "{st:#}");

    let st = h.try_state("long").expect("state");
    assert_eq!(st["status"], "failed", "{st:#}");
    assert_eq!(st["attempts"][0]["outcome"], "timeout", "{st:#}");
    let js = h.json_stream("long");
    assert_eq!(js["status"], "failed", "{js:#}");
    let reason = js["reason"].as_str().unwrap_or("");
    assert!(reason.contains("timeout"), "reason: {reason}");
    h.assert_no_commit_lost();
}

/// A grandchild that ignores SIGTERM is ended with its group (SIGKILL after
/// the grace period): no process of the recorded group survives the attempt.
#[test]
fn grandchild_ignoring_sigterm_is_killed_with_the_group() {
    let h = Swarm::empty();
    let pid_file = h.scratch("forker.pid");
    let pf = format!("{}@1", toml_path(&pid_file));
    let mut toml = header(1, "");
    toml.push_str(&stream_with(
        "forker",
        &[],
        &[
            ("FAKE_AGENT_FORK_IGNORE_TERM", "@1"),
            ("FAKE_AGENT_PID_FILE", &pf),
        ],
        "idle_timeout = \"1s\"\nmax_attempts = 2\n",
    ));
    h.write(&toml);

    let run = h.spawn(&["run", "--plain"]);
    // While it runs: learn the agent's and the grandchild's pids.
    let mut pids: Vec<i32> = Vec::new();
    h.wait_for("the fake agent wrote both pids", || {
        let text = std::fs::read_to_string(&pid_file).unwrap_or_default();
        pids = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
        pids.len() == 2
    });
    let (leader, grandchild) = (pids[0], pids[1]);
    let gstat = stat(grandchild);
    h.add_group(leader);
    h.add_group(grandchild);
    assert_eq!(
        gstat.map(|s| s.pgrp),
        stat(leader).map(|s| s.pgrp),
        "the grandchild should be in the agent's group"
    );

    let done = run.wait();
    assert_eq!(done.code, Some(0), "{}", done.both());
    assert!(!alive(leader), "the agent {leader} survived");
    assert!(
        !alive(grandchild),
        "the grandchild {grandchild} (ignores SIGTERM) survived its group's end"
    );
    h.assert_no_leftovers("after the run");

    let st = h.try_state("forker").expect("state");
    assert_eq!(st["attempts"][0]["outcome"], "idle", "{st:#}");
    assert_eq!(st["attempts"][1]["outcome"], "ok", "{st:#}");
    h.assert_all_merged_once(&["forker"]);
}

// ----- Ctrl-C and SIGTERM ---------------------------------------------------

/// Ctrl-C once: the running stream finishes and merges, the pending one is
/// not started, the exit code is non-zero and the output says a second
/// Ctrl-C stops them. The next `loki run` finishes the rest.
#[test]
fn ctrl_c_once_lets_running_streams_finish_and_starts_nothing_new() {
    let h = Swarm::empty();
    let mut toml = header(1, "");
    toml.push_str(&stream_with("slow", &[], &[("FAKE_AGENT_SLOW", "3")], ""));
    toml.push_str(&stream_with("later", &[], &[], ""));
    h.write(&toml);

    let run = h.spawn(&["run", "--plain"]);
    h.wait_running_pid("slow");
    assert_eq!(
        h.try_state("later").map(|v| v["status"].clone()),
        Some(Value::from("pending"))
    );
    run.signal(Signal::SIGINT);
    let done = run.wait();
    assert_ne!(done.code, Some(0), "{}", done.both());
    assert_ne!(done.code, None, "loki died of the signal: {}", done.both());
    assert!(
        done.text().contains("Ctrl-C again"),
        "the output should say a second Ctrl-C stops them:\n{}",
        done.both()
    );
    h.assert_no_leftovers("after the first run");

    let slow = h.json_stream("slow");
    assert_eq!(slow["status"], "merged", "{slow:#}");
    assert_eq!(slow["attempts"], 1, "{slow:#}");
    let later = h.json_stream("later");
    assert_eq!(later["status"], "pending", "{later:#}");
    assert_eq!(
        later["attempts"], 0,
        "the pending stream was started: {later:#}"
    );
    assert!(
        !h.path().join(".loki/worktrees/later").exists(),
        "the pending stream got a worktree"
    );
    h.assert_no_commit_lost();

    let again = h.run();
    assert_eq!(again.code, Some(0), "{}", again.both());
    h.assert_no_leftovers("after the second run");
    h.assert_all_merged_once(&["slow", "later"]);
    assert_eq!(h.json_stream("slow")["attempts"], 1);
}

/// Asserts the state after Ctrl-C twice / SIGTERM, puts some work into the
/// interrupted worktree, and checks that the next `loki run` resumes and
/// completes everything without losing that work.
fn interrupted_then_resumed(h: &Swarm, done: &Done) {
    assert_eq!(done.code, Some(130), "{}", done.both());
    assert!(
        done.text().contains("resume with `loki run`"),
        "the message should say how to resume:\n{}",
        done.both()
    );
    h.assert_no_leftovers("after the interrupted run");
    let slow = h.json_stream("slow");
    assert_eq!(slow["status"], "interrupted", "{slow:#}");
    let later = h.json_stream("later");
    assert_eq!(later["status"], "pending", "{later:#}");
    assert_eq!(later["attempts"], 0, "{later:#}");
    let st = h.try_state("slow").expect("state");
    assert_eq!(st["attempts"][0]["outcome"], "interrupted", "{st:#}");
    assert!(st.get("process").is_none_or(Value::is_null), "{st:#}");

    // Work the interrupted agent left behind.
    let wt = h.path().join(".loki/worktrees/slow");
    assert!(wt.is_dir(), "the interrupted worktree is gone");
    std::fs::write(wt.join("notes.md"), "half a draft\n").expect("write notes");

    let again = h.run();
    assert_eq!(again.code, Some(0), "{}", again.both());
    h.assert_no_leftovers("after the resumed run");
    h.assert_all_merged_once(&["slow", "later"]);
    let st = h.try_state("slow").expect("state");
    let attempts = st["attempts"].as_array().expect("attempts");
    assert_eq!(attempts[0]["outcome"], "interrupted", "{st:#}");
    assert_eq!(attempts[0]["counted"], false, "{st:#}");
    assert_eq!(attempts.last().expect("last")["outcome"], "ok", "{st:#}");
    // The interrupted work was committed as such and reached main.
    let log = h.repo.git(&["log", "--format=%s", "main"]);
    assert!(
        log.lines().any(|l| l.contains("(interrupted)")),
        "no `(interrupted)` commit in:\n{log}"
    );
    assert_eq!(h.repo.git(&["show", "main:notes.md"]), "half a draft\n");
}

fn interruptible_swarm(h: &Swarm) {
    let mut toml = header(1, "");
    toml.push_str(&stream_with(
        "slow",
        &[],
        &[("FAKE_AGENT_SLOW", "30@1")],
        "",
    ));
    toml.push_str(&stream_with("later", &[], &[], ""));
    h.write(&toml);
}

/// Ctrl-C twice: the running agent is stopped, the stream is `interrupted`,
/// the exit code is 130 and the next `loki run` resumes it.
#[test]
fn ctrl_c_twice_stops_agents_and_the_next_run_resumes() {
    let h = Swarm::empty();
    interruptible_swarm(&h);
    let run = h.spawn(&["run", "--plain"]);
    let agent = h.wait_running_pid("slow");
    run.signal(Signal::SIGINT);
    h.wait_event("supervisor", "", "Ctrl-C");
    assert!(alive(agent), "one Ctrl-C must not stop the agent");
    run.signal(Signal::SIGINT);
    let started = Instant::now();
    let done = run.wait();
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the second Ctrl-C did not stop the 30 s agent promptly"
    );
    assert!(!alive(agent), "the agent {agent} survived two Ctrl-C");
    interrupted_then_resumed(&h, &done);
}

/// SIGTERM and SIGHUP behave like Ctrl-C twice.
#[test]
fn sigterm_and_sighup_behave_like_ctrl_c_twice() {
    for sig in [Signal::SIGTERM, Signal::SIGHUP] {
        let h = Swarm::empty();
        interruptible_swarm(&h);
        let run = h.spawn(&["run", "--plain"]);
        let agent = h.wait_running_pid("slow");
        run.signal(sig);
        let done = run.wait();
        assert!(!alive(agent), "the agent {agent} survived {sig}");
        interrupted_then_resumed(&h, &done);
    }
}

/// An untracked file of the user's at `rel` in their checkout, where a
/// stream's merge would write: the merge must wait for it.
fn users_own_file(h: &Swarm, rel: &str) -> std::path::PathBuf {
    let mine = h.path().join(rel);
    if let Some(dir) = mine.parent() {
        std::fs::create_dir_all(dir).expect("mkdir");
    }
    std::fs::write(&mine, "the user's own notes\n").expect("write");
    mine
}

/// A merge that waits for the user's checkout (their own untracked file
/// where the merge would write) does not keep the supervisor up after a stop
/// request: SIGTERM and STOP both end the run promptly, the stream stays
/// merging with the user's file untouched, and the next run merges it once
/// the file is out of the way.
#[test]
fn a_stop_ends_a_run_whose_merge_waits_for_the_users_checkout() {
    for how in ["SIGTERM", "STOP"] {
        let h = Swarm::empty();
        let mut toml = header(1, "");
        toml.push_str(&stream("a", &[], "chapters/a.md", ""));
        h.write(&toml);
        let mine = users_own_file(&h, "chapters/a.md");

        let run = h.spawn(&["run", "--plain"]);
        h.wait_event("merge_wait", "waiting to merge", "chapters/a.md");
        match how {
            "SIGTERM" => run.signal(Signal::SIGTERM),
            _ => {
                let out = h.loki(&["signal", "STOP"]);
                assert!(out.status.success(), "{}", both(&out));
            }
        }
        let done = run.wait_within(Duration::from_secs(20));
        assert_eq!(done.code, Some(130), "{how}: {}", done.both());
        assert_eq!(h.state("a")["status"], "merging", "{how}");
        assert_eq!(
            std::fs::read_to_string(&mine).expect("the user's file"),
            "the user's own notes\n",
            "{how}: the user's file was touched"
        );

        std::fs::remove_file(&mine).expect("rm");
        let again = h.run();
        assert_eq!(again.code, Some(0), "{how}: {}", again.both());
        h.assert_all_merged_once(&["a"]);
    }
}

/// A merge that waits for the user's checkout steps aside: a stream that
/// does not touch the user's path merges meanwhile, and the waiting one
/// merges in the same run once the path is free.
#[test]
fn a_merge_waiting_for_the_users_checkout_does_not_hold_back_the_others() {
    let h = Swarm::empty();
    let mut toml = header(2, "");
    toml.push_str(&stream("a", &[], "chapters/a.md", ""));
    toml.push_str(&stream("b", &[], "chapters/b.md", ""));
    h.write(&toml);
    let mine = users_own_file(&h, "chapters/a.md");

    let run = h.spawn(&["run", "--plain"]);
    h.wait_event("merge_wait", "waiting to merge", "chapters/a.md");
    h.wait_state("b", "merged while a waits", |st| st["status"] == "merged");
    assert_eq!(h.state("a")["status"], "merging");
    // The user moves their file away; a merges without a new run.
    std::fs::remove_file(&mine).expect("rm");
    let done = run.wait();
    assert_eq!(done.code, Some(0), "{}", done.both());
    h.assert_all_merged_once(&["a", "b"]);
}

// ----- kill -9 of the supervisor ---------------------------------------------

/// kill -9 of the supervisor, then the leftover check and a second run that
/// must complete everything.
fn kill9(run: Running) -> Done {
    run.signal(Signal::SIGKILL);
    let done = run.wait();
    assert_eq!(done.signal, Some(9), "{}", done.both());
    done
}

/// SIGKILL for the supervisor and `leader` (an agent's or a check's
/// keeper) at once: the supervisor is stopped first, so it cannot react to
/// the leader's death, and the leader dies before its death signal comes.
fn kill9_with(run: Running, leader: i32) -> Done {
    run.signal(Signal::SIGSTOP);
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(leader), Signal::SIGKILL);
    kill9(run)
}

fn resume_and_complete(h: &Swarm, ids: &[&str]) -> Done {
    let again = h.run();
    assert_eq!(again.code, Some(0), "{}", again.both());
    h.assert_no_leftovers("after the second run");
    h.assert_all_merged_once(ids);
    again
}

/// While agents run: they die with the supervisor, and so does a
/// grandchild that ignores SIGTERM, within `kill_grace` (1 s here): each
/// agent's keeper gets SIGTERM as its death signal and ends all it started.
/// The next run resumes.
#[test]
fn kill_9_while_agents_run_then_resume() {
    let h = Swarm::empty();
    let pid_file = h.scratch("b.pid");
    let pf = format!("{}@1", toml_path(&pid_file));
    let mut toml = header(2, "");
    toml.push_str(&stream_with("a", &[], &[("FAKE_AGENT_SLOW", "30@1")], ""));
    toml.push_str(&stream_with(
        "b",
        &[],
        &[
            ("FAKE_AGENT_FORK_IGNORE_TERM", "@1"),
            ("FAKE_AGENT_PID_FILE", &pf),
        ],
        "",
    ));
    toml.push_str(&stream_with("c", &[], &[], ""));
    toml.push_str(&stream_with("d", &[], &[], ""));
    h.write(&toml);

    let run = h.spawn(&["run", "--plain"]);
    let a = h.wait_running_pid("a");
    let b = h.wait_running_pid("b");
    let mut grandchild = 0;
    h.wait_for("b forked its grandchild", || {
        let text = std::fs::read_to_string(&pid_file).unwrap_or_default();
        text.lines()
            .nth(1)
            .and_then(|l| l.trim().parse::<i32>().ok())
            .map(|g| grandchild = g)
            .is_some()
    });
    h.add_group(grandchild);
    let groups = h.groups();
    assert!(groups.contains(&a) && groups.contains(&b), "{groups:?}");

    kill9(run);
    let killed = Instant::now();
    // kill_grace is 1 s; the margin is for a loaded machine.
    let gone = wait_until(Duration::from_secs(3), || {
        !alive(a) && !alive(b) && !alive(grandchild)
    });
    let took = killed.elapsed();
    assert!(
        gone,
        "processes of the killed run are alive {took:?} after it (a {a}: {}, b {b}: {}, b's grandchild {grandchild}: {})",
        alive(a),
        alive(b),
        alive(grandchild)
    );
    assert_eq!(live_members(&groups, h.since), Vec::<(i32, i32)>::new());

    // The state files still say running; with no supervisor, status says
    // what that means.
    assert_eq!(h.state("a")["status"], "running");
    let table = stdout(&h.loki(&["status"]));
    let row = table
        .lines()
        .find(|l| l.starts_with("a "))
        .unwrap_or_else(|| panic!("no row for a:\n{table}"));
    assert!(
        row.contains("interrupted")
            && row.contains("the supervisor stopped during this attempt; `loki run` resumes it"),
        "{table}"
    );

    let again = h.run();
    assert_eq!(again.code, Some(0), "{}", again.both());
    h.assert_no_leftovers("after the second run");
    h.assert_all_merged_once(&["a", "b", "c", "d"]);
    for id in ["a", "b"] {
        let st = h.try_state(id).expect("state");
        assert_eq!(st["attempts"][0]["outcome"], "interrupted", "{st:#}");
    }
}

/// When the keeper dies with the supervisor (both get SIGKILL, as from an
/// OOM kill), an agent's grandchild that called `setsid()` (out of the
/// agent's group) and ignores SIGTERM is left: the next supervisor's
/// start-up sweep finds it by the token it carries and ends it before
/// anything else happens.
#[test]
fn kill_9_of_supervisor_and_keeper_then_the_next_run_sweeps_a_setsid_escapee() {
    let h = Swarm::empty();
    let pid_file = h.scratch("b.pid");
    let pf = format!("{}@1", toml_path(&pid_file));
    let mut toml = header(1, "");
    toml.push_str(&stream_with(
        "b",
        &[],
        &[
            ("FAKE_AGENT_FORK_IGNORE_TERM", "@1"),
            ("FAKE_AGENT_FORK_SETSID", "@1"),
            ("FAKE_AGENT_PID_FILE", &pf),
        ],
        "",
    ));
    h.write(&toml);

    let run = h.spawn(&["run", "--plain"]);
    let leader = h.wait_running_pid("b");
    let mut pids: Vec<i32> = Vec::new();
    h.wait_for("b forked its grandchild", || {
        let text = std::fs::read_to_string(&pid_file).unwrap_or_default();
        pids = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
        pids.len() == 2
    });
    let escapee = pids[1];
    h.add_group(leader);
    // The pid file is written right after the fork; the grandchild's own
    // setsid() may come a moment later.
    h.wait_for("the grandchild left the agent's group", || {
        stat(escapee).map(|s| s.pgrp) != stat(leader).map(|s| s.pgrp)
    });
    kill9_with(run, leader);
    assert!(
        alive(escapee),
        "test precondition: nothing was left to end the escapee"
    );

    let second = h.spawn(&["run", "--plain"]);
    let me = format!("started (pid {})", second.pid);
    h.wait_event("supervisor", "", &me);
    assert!(
        wait_until(Duration::from_secs(3), || !alive(escapee)),
        "the setsid() escapee {escapee} is alive after the next supervisor started"
    );
    let again = second.wait();
    assert_eq!(again.code, Some(0), "{}", again.both());
    assert!(
        again.stdout.contains("leftover"),
        "the second run should say it ended leftovers:\n{}",
        again.both()
    );
    h.assert_no_leftovers("after the second run");
    h.assert_all_merged_once(&["b"]);
}

/// During a check command: its group is recorded like an agent's, so a
/// child of the check that ignores SIGTERM (and has no death signal of its
/// own) is ended by the next supervisor's start-up sweep, which then runs
/// the stream's checks again to the end.
#[test]
fn kill_9_during_a_check_command_then_the_next_run_sweeps_it() {
    let h = Swarm::empty();
    let pid_file = h.scratch("check-child.pid");
    let mark = h.scratch("check-ran-once");
    let check = format!(
        "if [ -e {mark} ]; then exit 0; fi; : > {mark}; (trap '' TERM; exec sleep 1000) & echo $! > {pid}.tmp && mv {pid}.tmp {pid}; wait",
        mark = toml_path(&mark),
        pid = toml_path(&pid_file),
    );
    let mut toml = header(1, "");
    toml.push_str(&stream_with(
        "a",
        &[],
        &[],
        &format!("checks = {{ command = \"{check}\" }}\n"),
    ));
    h.write(&toml);

    let run = h.spawn(&["run", "--plain"]);
    let mut child = 0;
    h.wait_for("the check command forked its child", || {
        std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|t| t.trim().parse::<i32>().ok())
            .map(|c| child = c)
            .is_some()
    });
    h.wait_event("process", "the check command of attempt 1", "started");
    let st = h.try_state("a").expect("state");
    assert_eq!(st["status"], "checking", "{st:#}");
    let pgid = st["process"]["pgid"]
        .as_i64()
        .expect("the check's group is recorded") as i32;
    h.add_group(pgid);

    // The check's keeper dies with the supervisor (both SIGKILL), so
    // nothing of this run is left to end the child.
    kill9_with(run, pgid);
    assert!(
        alive(child),
        "test precondition: the check's child ignores SIGTERM and outlives the supervisor"
    );
    let second = h.spawn(&["run", "--plain"]);
    let me = format!("started (pid {})", second.pid);
    h.wait_event("supervisor", "", &me);
    assert!(
        !alive(child),
        "the check command's child {child} is alive after the next supervisor started"
    );
    let again = second.wait();
    assert_eq!(again.code, Some(0), "{}", again.both());
    h.assert_no_leftovers("after the second run");
    h.assert_all_merged_once(&["a"]);
}

/// Right after the first merge (its worktree and branch are being removed),
/// while another agent runs. No worktree is being created at that moment
/// (`c` waits for `b`): that instant has its own test below.
#[test]
fn kill_9_right_after_the_first_merge_then_resume() {
    let h = Swarm::empty();
    let mut toml = header(2, "");
    toml.push_str(&stream_with("a", &[], &[], ""));
    toml.push_str(&stream_with("b", &[], &[("FAKE_AGENT_SLOW", "3@1")], ""));
    toml.push_str(&stream("c", &["b"], "chapters/c.md", ""));
    h.write(&toml);

    let mut run = h.spawn(&["run", "--plain"]);
    let merged = wait_closely(
        WAIT_LIMIT,
        || run.exited(),
        || h.try_state("a").is_some_and(|v| v["status"] == "merged"),
    );
    assert!(merged, "a did not merge before the run ended");
    h.groups();
    let b = h.try_state("b").expect("state b");
    assert_eq!(b["status"], "running", "b should still run: {b:#}");
    kill9(run);
    resume_and_complete(&h, &["a", "b", "c"]);
    let b = h.try_state("b").expect("state b");
    assert_eq!(b["attempts"][0]["outcome"], "interrupted", "{b:#}");
}

/// During a merge (hard to hit: the state files are polled every
/// millisecond for `merging`); either outcome is accepted, the invariants
/// after the second run are not negotiable.
#[test]
fn kill_9_during_a_merge_then_resume() {
    let h = Swarm::empty();
    let mut toml = header(2, "");
    let ids = ["a", "b", "c", "d"];
    for id in ids {
        toml.push_str(&stream_with(id, &[], &[], ""));
    }
    h.write(&toml);

    let mut run = h.spawn(&["run", "--plain"]);
    let mut hit = None;
    wait_closely(
        WAIT_LIMIT,
        || run.exited(),
        || {
            hit = h
                .states()
                .into_iter()
                .find(|(_, v)| v["status"] == "merging")
                .map(|(id, _)| id);
            hit.is_some()
        },
    );
    if hit.is_some() {
        run.signal(Signal::SIGKILL);
    }
    let first = run.wait();
    eprintln!(
        "kill -9 during a merge: {}",
        match &hit {
            Some(id) => format!("hit while {id} was merging"),
            None => format!("missed (the run ended: {:?})", first.code),
        }
    );
    h.groups();
    resume_and_complete(&h, &ids);
}

/// Kill -9 while the worktree of a stream is being checked out (a repo with
/// many files makes the checkout take long enough to land in it): the
/// half-made worktree must not turn into commits that delete or truncate the
/// user's files.
#[test]
fn kill_9_while_a_worktree_is_checked_out_loses_no_user_file() {
    let h = Swarm::empty();
    const FILES: usize = 3000;
    for i in 0..FILES {
        h.repo.write(
            &format!("corpus/{:02}/note-{i:04}.md", i % 50),
            &format!("note {i}\n"),
        );
    }
    let mut toml = header(1, "");
    toml.push_str(&stream_with("a", &[], &[], ""));
    h.write(&toml);
    let tree_before = h.repo.git(&["ls-tree", "-r", "main"]);
    let toml_before = h.repo.read("loki.toml");

    let mut run = h.spawn(&["run", "--plain"]);
    let wt = h.path().join(".loki/worktrees/a");
    let in_checkout = || -> bool {
        let Ok(link) = std::fs::read_to_string(wt.join(".git")) else {
            return false;
        };
        let Some(admin) = link.trim().strip_prefix("gitdir:") else {
            return false;
        };
        let admin = PathBuf::from(admin.trim());
        // Registered (HEAD, gitdir written), checkout begun, index not written yet.
        admin.join("HEAD").is_file()
            && admin.join("gitdir").is_file()
            && !admin.join("index").exists()
            && std::fs::read_dir(&wt)
                .map(|d| d.flatten().any(|e| e.file_name() != ".git"))
                .unwrap_or(false)
    };
    let hit = wait_closely(WAIT_LIMIT, || run.exited(), in_checkout);
    run.signal(Signal::SIGKILL);
    let _ = run.wait();
    let present = walk_count(&wt);
    eprintln!(
        "kill -9 during the worktree checkout: {} ({present} of {FILES}+ files checked out)",
        if hit { "hit" } else { "missed" }
    );

    let again = h.run();
    assert_eq!(again.code, Some(0), "{}", again.both());
    h.assert_no_leftovers("after the second run");
    // Every file of the user's tree is still on main, unchanged.
    let tree_after = h.repo.git(&["ls-tree", "-r", "main"]);
    let after: BTreeSet<&str> = tree_after.lines().collect();
    let lost: Vec<&str> = tree_before.lines().filter(|l| !after.contains(l)).collect();
    assert!(
        lost.is_empty(),
        "{} of {} files of main were deleted or changed by the resumed stream (first 3: {:?}); the interrupted-work commit:\n{}",
        lost.len(),
        tree_before.lines().count(),
        &lost[..lost.len().min(3)],
        h.repo
            .git(&[
                "log",
                "--shortstat",
                "--format=%h %s",
                "--grep=(interrupted)",
                "main"
            ])
            .trim()
    );
    assert_eq!(
        std::fs::read_to_string(h.path().join("loki.toml"))
            .ok()
            .as_deref(),
        Some(toml_before.as_str()),
        "the user's loki.toml changed or vanished"
    );
    assert!(h.path().join("corpus/49/note-2999.md").exists());
    h.assert_all_merged_once(&["a"]);
}

fn walk_count(dir: &Path) -> usize {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.flatten()
        .map(|e| {
            let p = e.path();
            if e.file_name() == ".git" {
                0
            } else if p.is_dir() {
                walk_count(&p)
            } else {
                1
            }
        })
        .sum()
}

/// Kill -9 after the target ref moved to the merge commit but before the
/// merge was recorded (the user's checkout is being brought up to date: a
/// stream with many outputs makes that take a while). The next run must
/// leave the checkout matching main.
#[test]
fn kill_9_between_the_target_update_and_the_merge_record() {
    let h = Swarm::empty();
    const OUTPUTS: usize = 400;
    let outs: Vec<String> = (0..OUTPUTS)
        .map(|i| format!("\"big/part-{i:03}.md\""))
        .collect();
    let mut toml = header(1, "");
    toml.push_str(&format!(
        "[[streams]]\nid = \"big\"\nprompt = \"prompts/chapter.md\"\nvars = {{ CHAPTER = \"big\" }}\noutputs = [{}]\nenv = {{ FAKE_AGENT_WORDS = \"20\" }}\n\n",
        outs.join(", ")
    ));
    h.write(&toml);
    let start = h.repo.git(&["rev-parse", "main"]).trim().to_string();
    let ref_file = h.path().join(".git/refs/heads/main");

    let mut run = h.spawn(&["run", "--plain"]);
    let hit = wait_closely(
        WAIT_LIMIT,
        || run.exited(),
        || {
            let merging = h.try_state("big").is_some_and(|v| v["status"] == "merging");
            let now = std::fs::read_to_string(&ref_file).unwrap_or_default();
            merging && !now.trim().is_empty() && now.trim() != start
        },
    );
    if hit {
        run.signal(Signal::SIGKILL);
    }
    let first = run.wait();
    eprintln!(
        "kill -9 between the ref update and the merge record: {}",
        if hit {
            "hit".to_string()
        } else {
            format!("missed (the run ended: {:?})", first.code)
        }
    );
    h.groups();
    resume_and_complete(&h, &["big"]);
    for i in [0, OUTPUTS / 2, OUTPUTS - 1] {
        let f = format!("big/part-{i:03}.md");
        assert!(
            h.path().join(&f).exists(),
            "{f} is on main but not in the user's checkout"
        );
    }
}

/// A supervisor killed while it commits an attempt leaves git's lock files
/// behind (`index.lock` of the stream's worktree, `refs/heads/loki/<id>.lock`);
/// `kill_9_during_a_merge_then_resume` hits this now and then when another
/// stream is being committed at the kill. Here the same leftovers are made by
/// hand after a kill -9, so the resume is tested every time: the next run
/// must still complete the stream (the locks belong to the dead supervisor).
#[test]
fn stale_git_locks_of_a_killed_supervisor_do_not_fail_the_resumed_stream() {
    let h = Swarm::empty();
    let mut toml = header(1, "");
    toml.push_str(&stream_with("a", &[], &[("FAKE_AGENT_SLOW", "30@1")], ""));
    h.write(&toml);

    let run = h.spawn(&["run", "--plain"]);
    h.wait_running_pid("a");
    kill9(run);

    let wt = h.path().join(".loki/worktrees/a");
    let link = std::fs::read_to_string(wt.join(".git")).expect("worktree .git file");
    let admin = PathBuf::from(
        link.trim()
            .strip_prefix("gitdir:")
            .expect("gitdir: line")
            .trim(),
    );
    let admin = if admin.is_absolute() {
        admin
    } else {
        wt.join(admin)
    };
    std::fs::write(admin.join("index.lock"), "").expect("index.lock");
    std::fs::write(h.path().join(".git/refs/heads/loki/a.lock"), "").expect("ref lock");

    resume_and_complete(&h, &["a"]);
}

// ----- one supervisor per repo ------------------------------------------------

#[test]
fn a_second_supervisor_is_refused_with_the_first_ones_pid() {
    let h = Swarm::empty();
    interruptible_swarm(&h);
    let first = h.spawn(&["run", "--plain"]);
    h.wait_running_pid("slow");

    let head = h.repo.git(&["rev-parse", "main"]);
    let second = h.run();
    assert_eq!(second.code, Some(2), "{}", second.both());
    assert!(
        second.stderr.contains(&format!("pid {}", first.pid)),
        "the refusal should name the first supervisor's pid {}:\n{}",
        first.pid,
        second.both()
    );
    let sw = status_json(&h.repo)["swarm"].clone();
    assert_eq!(sw["supervisor_pid"], first.pid, "{sw:#}");
    // The refusal changed nothing: the first one still runs its agent.
    assert_eq!(h.try_state("slow").expect("state")["status"], "running");
    assert_eq!(h.repo.git(&["rev-parse", "main"]), head);

    first.signal(Signal::SIGTERM);
    let done = first.wait();
    assert_eq!(done.code, Some(130), "{}", done.both());
    h.assert_no_leftovers("after the first run");
    resume_and_complete(&h, &["slow", "later"]);
}

// ----- budget -------------------------------------------------------------------

/// A swarm of `ids` whose agent is the fake agent as `claude` (loki detects
/// claude by the file name, so it reads stream-json), every attempt
/// reporting `cost`, with a swarm budget of `budget` and one stream at a time.
fn budget_swarm(h: &Swarm, budget: &str, cost: &str, ids: &[&str]) {
    let claude = h.fake_claude();
    let mut toml = format!(
        "[swarm]\ntarget = \"main\"\nmax_parallel = 1\nspawn_interval = \"0s\"\nmax_budget_usd = {budget}\n\n\
         [agent]\ncommand = \"{}\"\ntimeout = \"60s\"\nidle_timeout = \"30s\"\nkill_grace = \"1s\"\nmax_attempts = 3\n\
         env = {{ FAKE_AGENT_COST = \"{cost}\" }}\n\n",
        toml_path(&claude)
    );
    for id in ids {
        toml.push_str(&stream(id, &[], &format!("chapters/{id}.md"), ""));
    }
    h.write(&toml);
}

/// An agent that reports a negative cost cannot lift the swarm budget: the
/// attempt is counted as what was left of it, with a warning, and nothing
/// more starts (it used to merge all five streams at "cost $-999.92").
#[test]
fn a_negative_cost_counts_as_the_budget_left() {
    let h = Swarm::empty();
    budget_swarm(&h, "0.05", "-999.92", &["s1", "s2", "s3", "s4", "s5"]);
    let done = h.run();
    assert_ne!(done.code, Some(0), "{}", done.both());
    assert!(
        h.has_event("warning", "", "which is not a cost"),
        "events:\n{}",
        h.events_text()
    );
    assert!(done.text().contains("budget reached"), "{}", done.both());
    let st = status_json(&h.repo);
    let streams = st["streams"].as_array().expect("streams");
    let total: f64 = streams
        .iter()
        .map(|s| s["cost_usd"].as_f64().unwrap_or(0.0))
        .sum();
    assert!(
        (total - 0.05).abs() < 1e-9,
        "counted as the budget left: {st:#}"
    );
    let attempts: u64 = streams
        .iter()
        .map(|s| s["attempts"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(attempts, 1, "nothing more starts once it is spent: {st:#}");
    h.assert_no_leftovers("after the run");
}

/// The fake agent as `claude` (loki detects claude by the file name), in
/// stream-json mode, each attempt costing $0.01, a swarm budget of $0.015:
/// after two attempts nothing new starts.
#[test]
fn swarm_budget_stops_new_attempts() {
    let h = Swarm::empty();
    budget_swarm(&h, "0.015", "0.01", &["s1", "s2", "s3"]);

    let done = h.run();
    assert_ne!(done.code, Some(0), "{}", done.both());
    assert_ne!(done.code, None, "{}", done.both());
    assert!(
        done.text().contains("budget reached"),
        "the output should say the budget was reached:\n{}",
        done.both()
    );
    assert!(
        h.has_event("budget", "", "budget reached"),
        "events.jsonl should record the budget"
    );
    h.assert_no_leftovers("after the run");

    let st = status_json(&h.repo);
    let streams = st["streams"].as_array().expect("streams");
    let attempts: u64 = streams
        .iter()
        .map(|s| s["attempts"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(attempts, 2, "two attempts, then the budget: {st:#}");
    let mut merged = 0;
    let mut untouched = 0;
    for s in streams {
        let cost = s["cost_usd"].as_f64().expect("cost_usd");
        match s["status"].as_str() {
            Some("merged") => {
                merged += 1;
                assert!((cost - 0.01).abs() < 1e-9, "{s:#}");
                assert_eq!(s["attempts"], 1, "{s:#}");
                // It really ran as claude: a session id from stream-json.
                assert!(s["session_id"].is_string(), "{s:#}");
            }
            Some("pending") => {
                untouched += 1;
                assert_eq!(cost, 0.0, "{s:#}");
                assert_eq!(s["attempts"], 0, "{s:#}");
            }
            other => panic!("unexpected status {other:?}: {s:#}"),
        }
    }
    assert_eq!((merged, untouched), (2, 1), "{st:#}");
    let total = st["swarm"]["total_cost_usd"].as_f64().expect("total");
    assert!((total - 0.02).abs() < 1e-9, "{st:#}");
    h.assert_no_commit_lost();
}

/// A stream budget covers all of the stream's attempts: each attempt is
/// given what is left of it (`--max-budget-usd`), and once it is spent the
/// stream fails instead of starting another attempt.
#[test]
fn a_stream_budget_spans_its_attempts() {
    let h = Swarm::empty();
    let bin = h.scratch("bin");
    std::fs::create_dir_all(&bin).expect("mkdir bin");
    let args_log = h.scratch("args.log");
    // `claude` records its arguments, then is the fake agent.
    let claude = bin.join("claude");
    std::fs::write(
        &claude,
        format!(
            "#!/bin/sh\necho \"$*\" >> '{}'\nexec '{}' \"$@\"\n",
            args_log.display(),
            fake_agent().display()
        ),
    )
    .expect("claude wrapper");
    make_executable(&claude);

    let mut toml = format!(
        "[swarm]\ntarget = \"main\"\nmax_parallel = 1\nspawn_interval = \"0s\"\n\n\
         [agent]\ncommand = \"{}\"\ntimeout = \"60s\"\nidle_timeout = \"30s\"\nkill_grace = \"1s\"\nmax_attempts = 5\n\
         max_budget_usd = 0.025\nresume = false\n\
         env = {{ FAKE_AGENT_COST = \"0.01\", FAKE_AGENT_VIOLATE = \"dragon\" }}\n\n\
         [checks]\nforbid = [\"dragon\"]\n\n",
        toml_path(&claude)
    );
    toml.push_str(&stream("s1", &[], "chapters/s1.md", ""));
    h.write(&toml);

    let done = h.run();
    assert_eq!(done.code, Some(1), "{}", done.both());
    let st = status_json(&h.repo);
    let s = &st["streams"][0];
    assert_eq!(s["status"], "failed", "{s:#}");
    assert_eq!(s["attempts"], 3, "0.01 + 0.01 + 0.01 passes 0.025: {s:#}");
    assert!(
        s["reason"].as_str().unwrap_or("").contains("budget"),
        "{s:#}"
    );
    let log = std::fs::read_to_string(&args_log).expect("args log");
    let budgets: Vec<&str> = log
        .lines()
        .filter_map(|l| l.split("--max-budget-usd ").nth(1))
        .filter_map(|r| r.split_whitespace().next())
        .collect();
    assert_eq!(budgets, ["0.025", "0.015", "0.005"], "{log}");
    h.assert_no_leftovers("after the run");
}

/// A refused key while the user has paused the swarm: the agent's attempt
/// is not counted, and the pause stays the user's (the next `loki run` does
/// not lift it; `loki resume` does).
#[test]
fn an_auth_failure_keeps_the_users_pause() {
    let h = Swarm::empty();
    let claude = h.fake_claude();
    let toml = format!(
        "[swarm]\ntarget = \"main\"\nmax_parallel = 1\nspawn_interval = \"0s\"\n\n\
         [agent]\ncommand = \"{}\"\ntimeout = \"60s\"\nidle_timeout = \"30s\"\nkill_grace = \"1s\"\nmax_attempts = 1\n\
         env = {{ FAKE_AGENT_SLOW = \"2@1\", FAKE_AGENT_RESULT_STATUS = \"401@1\" }}\n\n{}",
        toml_path(&claude),
        stream("a", &[], "chapters/a.md", "")
    );
    h.write(&toml);

    let run = h.spawn(&["run", "--plain"]);
    h.wait_running_pid("a");
    let out = h.repo.loki(&["pause"]);
    assert!(out.status.success(), "{}", both(&out));
    let done = run.wait();
    assert_eq!(done.code, Some(1), "{}", done.both());
    assert!(
        done.text().contains("refused the credentials"),
        "{}",
        done.both()
    );
    let swarm: Value = serde_json::from_str(
        &std::fs::read_to_string(h.state_dir().join("swarm.json")).expect("swarm.json"),
    )
    .expect("swarm json");
    assert_eq!(swarm["paused"], true, "{swarm:#}");
    assert_ne!(
        swarm["auth_paused"], true,
        "the user's pause was taken over: {swarm:#}"
    );
    let a = h.try_state("a").expect("state of a");
    assert_eq!(a["status"], "interrupted", "{a:#}");
    assert_eq!(a["attempts"][0]["counted"], false, "{a:#}");

    // The next run holds (paused by the user) until `loki resume`.
    let run = h.spawn(&["run", "--plain"]);
    wait_for(
        "the pause note",
        WAIT_LIMIT,
        || {
            run.output()
                .contains("starting nothing until `loki resume`")
        },
        || run.output(),
    );
    // Nothing may start while it holds. The witness that it had its chance:
    // it went round its loop (where it starts what may start) and answered
    // a signal.
    let preparing_before = h
        .events()
        .iter()
        .filter(|e| e["stream"] == "a" && e["to"] == "preparing")
        .count();
    h.ping_paused();
    let preparing_after = h
        .events()
        .iter()
        .filter(|e| e["stream"] == "a" && e["to"] == "preparing")
        .count();
    assert_eq!(preparing_after, preparing_before, "{}", h.events_text());
    assert_eq!(h.try_state("a").expect("a")["status"], "interrupted");
    let out = h.repo.loki(&["resume"]);
    assert!(out.status.success(), "{}", both(&out));
    let done = run.wait();
    assert_eq!(done.code, Some(0), "{}", done.both());
    h.assert_all_merged_once(&["a"]);
    h.assert_no_leftovers("after the run");
}

/// An attempt held back before its agent started (Ctrl-C, STOP, a pause or
/// a refused key while it was being prepared) is recorded `not_started`;
/// it must not hide that the attempt before it was cut off in a claude
/// session: the next run resumes that session with the "continue" prompt.
#[test]
fn a_held_back_attempt_keeps_the_session_to_resume() {
    let h = Swarm::empty();
    let (a, args_log) = cut_off_in_its_session(&h);
    let session = a["session_id"].as_str().expect("session id").to_string();

    // Attempt 2 was then prepared and held back before its agent started.
    let store = loki::store::StateStore::new(h.state_dir());
    let version = a["version"].as_u64().expect("version");
    store
        .update("a", version, |st| {
            st.attempt = 2;
            st.attempts.push(loki::model::AttemptRecord {
                n: 2,
                started_at: "2026-11-30T00:00:00Z".into(),
                ended_at: Some("2026-11-30T00:00:01Z".into()),
                outcome: "not_started".into(),
                counted: false,
                ..Default::default()
            });
        })
        .expect("recording the held-back attempt");

    let second = h.run();
    assert_eq!(second.code, Some(0), "{}", second.both());
    assert_eq!(h.try_state("a").expect("state")["status"], "merged");
    let argv = agent_runs(&args_log).pop().expect("a run");
    let at = argv
        .iter()
        .position(|x| x == "--resume")
        .unwrap_or_else(|| panic!("no --resume in {argv:?}"));
    assert_eq!(argv.get(at + 1), Some(&session));
    assert_eq!(
        argv.get(1).map(String::as_str),
        Some(loki::supervisor::attempt::CONTINUE_PROMPT),
        "the resumed session gets the continue prompt: {argv:?}"
    );
}

/// Stream `a` of a one-stream swarm whose agent is the fake claude (one
/// attempt allowed), cut off in its session by a refused key (401) on
/// attempt 1. Returns its state after that run and the agent's args log.
fn cut_off_in_its_session(h: &Swarm) -> (Value, PathBuf) {
    let claude = h.fake_claude();
    let args_log = h.scratch("args.jsonl");
    let toml = format!(
        "[swarm]\ntarget = \"main\"\nmax_parallel = 1\nspawn_interval = \"0s\"\n\n\
         [agent]\ncommand = \"{}\"\ntimeout = \"60s\"\nidle_timeout = \"30s\"\nkill_grace = \"1s\"\nmax_attempts = 1\n\
         env = {{ FAKE_AGENT_RESULT_STATUS = \"401@1\", FAKE_AGENT_SESSION_DIR = \"{}\", FAKE_AGENT_ARGS_LOG = \"{}\" }}\n\n{}",
        toml_path(&claude),
        toml_path(&h.scratch("sessions")),
        toml_path(&args_log),
        stream("a", &[], "chapters/a.md", "")
    );
    h.write(&toml);
    let first = h.run();
    assert_eq!(first.code, Some(1), "{}", first.both());
    let a = h.try_state("a").expect("state of a");
    assert_eq!(a["attempts"][0]["outcome"], "auth", "{a:#}");
    assert!(a["session_id"].is_string(), "{a:#}");
    (a, args_log)
}

/// The argv of every agent run, from the fake agent's args log.
fn agent_runs(args_log: &Path) -> Vec<Vec<String>> {
    std::fs::read_to_string(args_log)
        .expect("args log")
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("args line");
            v["argv"]
                .as_array()
                .expect("argv")
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .collect()
}

/// The session the next run would resume is gone (claude's store cleared,
/// or the agent killed before writing it): the fake claude, like claude,
/// ends at once with "No conversation found". That attempt is recorded
/// `session_lost`, uncounted, and the stream starts again in a new session
/// with the full prompt, within its one allowed attempt.
#[test]
fn a_lost_session_starts_again_in_a_new_one() {
    let h = Swarm::empty();
    let (_, args_log) = cut_off_in_its_session(&h);
    std::fs::remove_dir_all(h.scratch("sessions")).expect("removing the sessions");

    let second = h.run();
    assert_eq!(second.code, Some(0), "{}", second.both());
    let a = h.try_state("a").expect("state");
    assert_eq!(a["status"], "merged", "{a:#}");
    let outcomes: Vec<&str> = a["attempts"]
        .as_array()
        .expect("attempts")
        .iter()
        .filter_map(|x| x["outcome"].as_str())
        .collect();
    assert_eq!(outcomes, ["auth", "session_lost", "ok"], "{a:#}");
    assert_eq!(a["attempts"][1]["counted"], false, "{a:#}");
    assert!(h.has_event("session", "", "could not resume session"));
    let runs = agent_runs(&args_log);
    assert!(runs[1].contains(&"--resume".to_string()), "{runs:?}");
    let last = runs.last().expect("a run");
    assert!(!last.contains(&"--resume".to_string()), "{last:?}");
    assert!(
        last.get(1).is_some_and(|p| p.contains("# Chapter a")),
        "the new session gets the full prompt: {last:?}"
    );
}

/// The pipeline is bounded: with `max_parallel = 2`, at most 4 streams
/// hold a worktree (running, or finished and waiting to merge). Here every
/// merge waits (the user's own untracked files are where the chapters go),
/// so once 4 streams wait, nothing else starts: at the STOP that follows,
/// exactly 4 have run.
#[test]
fn finished_streams_waiting_to_merge_hold_back_new_starts() {
    let ids = ["a", "b", "c", "d", "e", "f", "g", "h"];
    let h = Swarm::empty();
    let mut toml = header(2, "");
    for id in ids {
        toml.push_str(&stream(id, &[], &format!("chapters/{id}.md"), ""));
    }
    h.write(&toml);
    std::fs::create_dir_all(h.path().join("chapters")).expect("mkdir");
    for id in ids {
        std::fs::write(h.path().join(format!("chapters/{id}.md")), "mine\n").expect("write");
    }
    let run = h.start();
    let waiting = || {
        h.events()
            .iter()
            .filter(|e| e["kind"] == "merge_wait")
            .filter_map(|e| e["stream"].as_str().map(str::to_string))
            .collect::<std::collections::BTreeSet<_>>()
            .len()
    };
    h.wait_for("four merges waiting for the user's checkout", || {
        waiting() == 4
    });
    let out = h.loki(&["signal", "STOP"]);
    assert!(out.status.success(), "{}", both(&out));
    let done = run.wait_within(Duration::from_secs(30));
    assert_eq!(done.code, Some(130), "{}", done.both());
    let started: Vec<String> = ids
        .iter()
        .filter(|id| {
            h.state(id)["attempts"]
                .as_array()
                .is_some_and(|a| !a.is_empty())
        })
        .map(|id| id.to_string())
        .collect();
    assert_eq!(
        started.len(),
        4,
        "started: {started:?}\n{}",
        h.events_text()
    );
}

/// The start stagger holds the next start only while the previous agent is
/// still coming up: agents that print a line as they start (claude's
/// `system/init`) run side by side even with an hour's `spawn_interval`.
#[test]
fn the_start_stagger_waits_only_for_an_agent_still_coming_up() {
    let h = Swarm::empty();
    let gate = h.scratch("release");
    let agent = h.agent_script(
        "up-then-wait.sh",
        &format!(
            "echo \"up: $LOKI_STREAM_ID\"\ntouch '{}'-$LOKI_STREAM_ID\nwhile [ ! -e '{}' ]; do sleep 0.05; done",
            gate.display(),
            gate.display()
        ),
        "",
    );
    let ids = ["a", "b", "c"];
    let mut toml =
        header_with(&agent, 3, 1).replace("spawn_interval = \"0s\"", "spawn_interval = \"1h\"");
    for id in ids {
        toml.push_str(&stream(id, &[], &format!("chapters/{id}.md"), ""));
    }
    h.write(&toml);
    let run = h.start();
    h.wait_for("three agents up at once", || {
        ids.iter()
            .all(|id| h.scratch(&format!("release-{id}")).exists())
    });
    std::fs::write(&gate, "go").expect("release");
    let done = run.wait_within(Duration::from_secs(60));
    assert_eq!(done.code, Some(0), "{}", done.both());
}

/// An agent that has already exited holds nothing back either.
#[test]
fn the_start_stagger_does_not_wait_for_an_agent_that_exited() {
    let h = Swarm::empty();
    let ids = ["a", "b", "c", "d"];
    let mut toml = header(1, "").replace("spawn_interval = \"0s\"", "spawn_interval = \"1h\"");
    for id in ids {
        toml.push_str(&stream(id, &[], &format!("chapters/{id}.md"), ""));
    }
    h.write(&toml);
    let done = h.start().wait_within(Duration::from_secs(60));
    assert_eq!(done.code, Some(0), "{}", done.both());
}
