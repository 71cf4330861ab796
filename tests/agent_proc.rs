//! Agent processes for real: spawning, output, timeouts, stopping whole
//! process groups and leftover sweeping (PDEATHSIG, which needs a helper
//! process, is in tests/agent_pdeathsig.rs). Agents are small `sh -c`
//! scripts (never freshly written executables: exec'ing a file another test
//! thread may still hold open for writing fails with ETXTBSY).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use loki::agent::{self, AgentEvent, AgentOutcome, Ending, Launch, ResultInfo, StopRequest};
use loki::model::ProcessRecord;
use loki::process::{self, Spawner};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::sync::{mpsc, watch};

fn sh(dir: &Path, script: &str) -> Launch {
    Launch {
        program: "/bin/sh".into(),
        args: vec!["-c".into(), script.into()],
        cwd: dir.to_path_buf(),
        env: vec![("LOKI_X".into(), "from-loki".into())],
        transcript: dir.join("logs/s/attempt-1.jsonl"),
        stderr_log: dir.join("logs/s/attempt-1.stderr.log"),
        claude: false,
        timeout: Duration::from_secs(20),
        idle_timeout: Duration::from_secs(10),
        kill_grace: Duration::from_millis(300),
        sandbox: None,
    }
}

mod common;
use common::{alive, pids_with_env, stat, wait_until};

/// Every agent runs under the keeper, as in `loki run` (this test binary
/// is not loki, so the keeper is the built loki binary).
fn spawner() -> Spawner {
    process::use_keeper(env!("CARGO_BIN_EXE_loki"));
    Spawner::start().unwrap()
}

/// The `LOKI_AGENT_TOKEN=…` entry a record's processes carry.
fn token_entry(rec: &ProcessRecord) -> String {
    format!("{}={:016x}", process::TOKEN_ENV, rec.token)
}

/// The witness that no signal sent to `pid` before this call ends it: it
/// is stopped (SIGSTOP), seen stopped, and continued. A fatal signal
/// already sent would have doomed it at once (the kernel then drops the
/// SIGSTOP) and it would die instead.
fn stops_and_continues(pid: i32) -> bool {
    let state = |pid| stat(pid).map(|s| s.state);
    kill(Pid::from_raw(pid), Signal::SIGSTOP).expect("SIGSTOP");
    let stopped = wait_until(Duration::from_secs(5), || {
        state(pid) == Some('T') || !alive(pid)
    }) && state(pid) == Some('T');
    kill(Pid::from_raw(pid), Signal::SIGCONT).expect("SIGCONT");
    let going = wait_until(Duration::from_secs(5), || state(pid) != Some('T'));
    stopped && going && alive(pid)
}

fn started(events: &[AgentEvent]) -> ProcessRecord {
    match events.first() {
        Some(AgentEvent::Started(rec)) => *rec,
        other => panic!("first event should be Started, got {other:?}"),
    }
}

fn activities(events: &[AgentEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::Activity(a) => Some(a.clone()),
            _ => None,
        })
        .collect()
}

/// The group is gone: no member, leader not alive.
fn assert_group_gone(rec: &ProcessRecord) {
    assert_eq!(process::group_members(rec), Vec::<i32>::new());
    assert!(!alive(rec.pid), "leader {} still alive", rec.pid);
}

async fn run_to_end(launch: Launch) -> (AgentOutcome, Vec<AgentEvent>) {
    let spawner = spawner();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (_stop_tx, stop_rx) = watch::channel(None);
    let outcome = agent::run(&spawner, launch, tx, stop_rx).await;
    let mut events = Vec::new();
    while let Ok(e) = rx.try_recv() {
        events.push(e);
    }
    (outcome, events)
}

/// Runs the agent; once an activity starting with `trigger` shows, sends
/// `req` on the stop channel. Returns the outcome, all events and the time
/// from the stop request to the end.
async fn run_and_stop(
    launch: Launch,
    trigger: &str,
    req: StopRequest,
) -> (AgentOutcome, Vec<AgentEvent>, Duration) {
    let spawner = spawner();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = watch::channel(None);
    let mut events = Vec::new();
    let mut stopped_at = None;
    let run = agent::run(&spawner, launch, tx, stop_rx);
    tokio::pin!(run);
    let outcome = loop {
        tokio::select! {
            o = &mut run => break o,
            Some(e) = rx.recv() => {
                if stopped_at.is_none() {
                    if let AgentEvent::Activity(a) = &e {
                        if a.starts_with(trigger) {
                            stop_tx.send(Some(req)).unwrap();
                            stopped_at = Some(Instant::now());
                        }
                    }
                }
                events.push(e);
            }
        }
    };
    while let Ok(e) = rx.try_recv() {
        events.push(e);
    }
    let took = stopped_at.expect("the trigger line never came").elapsed();
    (outcome, events, took)
}

fn child_pid(acts: &[String]) -> i32 {
    acts.iter()
        .find_map(|a| a.strip_prefix("child ")?.trim().parse().ok())
        .expect("the script prints `child <pid>`")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn normal_exit_keeps_output_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let l = sh(
        dir.path(),
        r#"echo one; printf 'two\n\n'; echo oops >&2; pwd; echo "$LOKI_X""#,
    );
    let (out, events) = run_to_end(l).await;
    assert_eq!(out.ending, Ending::Exited);
    assert_eq!(out.exit_code, Some(0));
    assert_eq!(out.signal, None);
    assert_eq!(out.stderr_tail, "oops");
    let rec = started(&events);
    assert_eq!(rec.pgid, rec.pid);
    assert!(rec.start_time > 0);
    let cwd = dir.path().canonicalize().unwrap();
    assert_eq!(
        activities(&events),
        ["one", "two", cwd.to_str().unwrap(), "from-loki"]
    );
    let transcript = std::fs::read_to_string(dir.path().join("logs/s/attempt-1.jsonl")).unwrap();
    assert_eq!(
        transcript,
        format!("one\ntwo\n\n{}\nfrom-loki\n", cwd.display())
    );
    let stderr = std::fs::read_to_string(dir.path().join("logs/s/attempt-1.stderr.log")).unwrap();
    assert_eq!(stderr, "oops\n");
    assert_group_gone(&rec);
}

#[tokio::test]
async fn non_zero_exit_and_stderr_tail() {
    let dir = tempfile::tempdir().unwrap();
    let l = sh(
        dir.path(),
        "i=0; while [ $i -lt 30 ]; do echo line$i >&2; i=$((i+1)); done; exit 3",
    );
    let (out, _) = run_to_end(l).await;
    assert_eq!(out.ending, Ending::Exited);
    assert_eq!(out.exit_code, Some(3));
    let tail: Vec<&str> = out.stderr_tail.lines().collect();
    assert_eq!(tail.len(), 20);
    assert_eq!(tail.first(), Some(&"line10"));
    assert_eq!(tail.last(), Some(&"line29"));
}

#[tokio::test]
async fn non_utf8_and_huge_lines() {
    let dir = tempfile::tempdir().unwrap();
    let l = sh(
        dir.path(),
        r"printf '\377\376 hi\n'; head -c 3000000 /dev/zero | tr '\0' a; echo; printf 'last'",
    );
    let (out, events) = run_to_end(l).await;
    assert_eq!(out.exit_code, Some(0));
    let acts = activities(&events);
    assert_eq!(acts.len(), 3, "{acts:?}");
    assert!(acts[0].contains('\u{FFFD}') && acts[0].ends_with("hi"));
    assert_eq!(acts[1].chars().count(), 80);
    assert_eq!(acts[2], "last");
    let raw = std::fs::read(dir.path().join("logs/s/attempt-1.jsonl")).unwrap();
    assert_eq!(raw.len(), 6 + 3_000_001 + 4);
    assert_eq!(&raw[..2], b"\xff\xfe");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_stream_json_becomes_events() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path().canonicalize().unwrap();
    let lines = [
        r#"{"type":"system","subtype":"init","cwd":"/x","session_id":"sess-42","tools":["Write"]}"#.to_string(),
        r#"{"type":"assistant","message":{"id":"msg_1","content":[{"type":"text","text":"Drafting the chapter now.\nsecond line"}]},"parent_tool_use_id":null,"session_id":"sess-42"}"#.to_string(),
        format!(
            r#"{{"type":"assistant","message":{{"id":"msg_1","content":[{{"type":"tool_use","id":"t1","name":"Write","input":{{"file_path":"{}/chapters/ch01.md","content":"x"}}}}]}},"parent_tool_use_id":null}}"#,
            cwd.display()
        ),
        r#"{"type":"user","message":{"content":[{"type":"tool_result","tool_use_id":"t1"}]}}"#.to_string(),
        r#"{"type":"system","subtype":"api_retry","attempt":1,"max_retries":10,"retry_delay_ms":519.83,"error_status":429,"error":"rate_limit"}"#.to_string(),
        r#"{"type":"assistant","message":{"id":"msg_2","content":[{"type":"tool_use","id":"t2","name":"Bash","input":{"command":"wc -w chapters/ch01.md"}}]},"parent_tool_use_id":null}"#.to_string(),
        "not json at all".to_string(),
        r#"{"type":"result","subtype":"success","is_error":false,"duration_ms":10,"num_turns":3,"result":"Chapter written.","session_id":"sess-42","total_cost_usd":0.0123}"#.to_string(),
    ];
    let canned = dir.path().join("canned.jsonl");
    std::fs::write(&canned, lines.join("\n") + "\n").unwrap();
    let mut l = sh(dir.path(), r#"cat "$0""#);
    l.args.push(canned.display().to_string());
    l.claude = true;
    let (out, events) = run_to_end(l).await;
    let rec = started(&events);
    // Said once, as soon as the agent exits: its last lines may still be
    // on their way, so where it falls among them is not fixed.
    assert_eq!(
        events.iter().filter(|e| **e == AgentEvent::Exited).count(),
        1,
        "{events:?}"
    );
    let events: Vec<AgentEvent> = events
        .into_iter()
        .filter(|e| *e != AgentEvent::Exited)
        .collect();
    let result = ResultInfo {
        is_error: false,
        subtype: "success".into(),
        cost_usd: 0.0123,
        turns: 3,
        result: "Chapter written.".into(),
        session_id: Some("sess-42".into()),
        api_status: None,
        cost_invalid: None,
    };
    assert_eq!(
        events,
        [
            AgentEvent::Started(rec),
            AgentEvent::Init {
                session_id: "sess-42".into()
            },
            AgentEvent::Turns(1),
            AgentEvent::Activity("Drafting the chapter now.".into()),
            AgentEvent::Activity("writing chapters/ch01.md".into()),
            AgentEvent::ApiRetry {
                status: Some(429),
                delay_ms: Some(520),
                attempt: Some(1)
            },
            AgentEvent::Turns(2),
            AgentEvent::Activity("running: wc -w chapters/ch01.md".into()),
            AgentEvent::Activity("not json at all".into()),
            AgentEvent::Result(result.clone()),
        ]
    );
    assert_eq!(out.ending, Ending::Exited);
    assert_eq!(out.exit_code, Some(0));
    assert_eq!(out.result, Some(result));
    assert_eq!(out.session_id.as_deref(), Some("sess-42"));
    assert_eq!(out.turns, 3);
    let transcript = std::fs::read_to_string(dir.path().join("logs/s/attempt-1.jsonl")).unwrap();
    assert_eq!(transcript, lines.join("\n") + "\n");
}

#[tokio::test]
async fn idle_timeout_ends_the_group() {
    let dir = tempfile::tempdir().unwrap();
    let mut l = sh(dir.path(), "echo begin; sleep 1000");
    l.idle_timeout = Duration::from_millis(500);
    let t0 = Instant::now();
    let (out, events) = run_to_end(l).await;
    let took = t0.elapsed();
    assert_eq!(out.ending, Ending::Idle);
    assert_eq!(out.signal, Some(libc::SIGTERM));
    assert!(took >= Duration::from_millis(500), "{took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_group_gone(&started(&events));
}

#[tokio::test]
async fn output_keeps_the_idle_timer_back_and_the_wall_clock_wins() {
    let dir = tempfile::tempdir().unwrap();
    let mut l = sh(
        dir.path(),
        "while :; do echo tick; echo tock >&2; sleep 0.1; done",
    );
    l.timeout = Duration::from_millis(900);
    l.idle_timeout = Duration::from_millis(400);
    let t0 = Instant::now();
    let (out, events) = run_to_end(l).await;
    assert_eq!(out.ending, Ending::Timeout);
    assert!(t0.elapsed() >= Duration::from_millis(900));
    assert!(activities(&events).len() >= 3);
    assert!(out.stderr_tail.contains("tock"));
    assert_group_gone(&started(&events));
}

#[tokio::test]
async fn stderr_alone_counts_as_output() {
    let dir = tempfile::tempdir().unwrap();
    let mut l = sh(
        dir.path(),
        "for i in 1 2 3 4 5 6 7 8; do echo working >&2; sleep 0.1; done",
    );
    l.idle_timeout = Duration::from_millis(400);
    let (out, _) = run_to_end(l).await;
    assert_eq!(out.ending, Ending::Exited);
    assert_eq!(out.exit_code, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupt_kills_a_group_that_ignores_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut l = sh(
        dir.path(),
        r#"trap '' TERM; sleep 1000 & echo "child $!"; while :; do wait; done"#,
    );
    l.kill_grace = Duration::from_millis(400);
    let (out, events, took) = run_and_stop(l, "child ", StopRequest::Interrupt).await;
    assert_eq!(out.ending, Ending::Stopped(StopRequest::Interrupt));
    assert_eq!(out.signal, Some(libc::SIGKILL));
    assert!(took >= Duration::from_millis(400), "{took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    let grandchild = child_pid(&activities(&events));
    assert!(!alive(grandchild), "grandchild {grandchild} survived");
    assert_group_gone(&started(&events));
}

#[tokio::test]
async fn finish_request_stops_promptly_with_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut l = sh(dir.path(), "echo ready; sleep 1000");
    l.kill_grace = Duration::from_secs(10);
    let (out, events, took) = run_and_stop(l, "ready", StopRequest::Finish).await;
    assert_eq!(out.ending, Ending::Stopped(StopRequest::Finish));
    assert_eq!(out.signal, Some(libc::SIGTERM));
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert_group_gone(&started(&events));
}

#[tokio::test]
async fn a_stop_requested_before_the_start_spawns_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let spawner = spawner();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (_stop_tx, stop_rx) = watch::channel(Some(StopRequest::Cancel));
    let l = sh(dir.path(), "touch started");
    let out = agent::run(&spawner, l, tx, stop_rx).await;
    assert_eq!(out.ending, Ending::Stopped(StopRequest::Cancel));
    assert!(rx.try_recv().is_err());
    assert!(!dir.path().join("started").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leftovers_of_an_exited_leader_are_ended() {
    let dir = tempfile::tempdir().unwrap();
    let l = sh(
        dir.path(),
        r#"(trap '' TERM; exec sleep 1000) & echo "child $!"; exit 0"#,
    );
    let t0 = Instant::now();
    let (out, events) = run_to_end(l).await;
    assert_eq!(out.ending, Ending::Exited);
    assert_eq!(out.exit_code, Some(0));
    assert!(t0.elapsed() < Duration::from_secs(5));
    let grandchild = child_pid(&activities(&events));
    assert!(!alive(grandchild), "grandchild {grandchild} survived");
    assert_group_gone(&started(&events));
}

/// Starts a grandchild that calls `setsid()` (a new session and group) and
/// ignores SIGTERM, and prints `child <its pid>` once it runs.
const SETSID_ESCAPEE: &str = r#"setsid sh -c 'trap "" TERM; echo $$ > escapee.tmp; mv escapee.tmp escapee; exec sleep 1000' &
    while [ ! -s escapee ]; do sleep 0.01; done; echo "child $(cat escapee)""#;

/// A grandchild that calls `setsid()` leaves the agent's process group (so
/// `killpg` misses it) and ignores SIGTERM; it still carries the token and
/// is still below the keeper: it must not outlive a normal end of its
/// attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_setsid_escapee_ends_with_its_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let l = sh(dir.path(), &format!("{SETSID_ESCAPEE}; exit 0"));
    let t0 = Instant::now();
    let (out, events) = run_to_end(l).await;
    assert_eq!(out.ending, Ending::Exited);
    assert_eq!(out.exit_code, Some(0));
    let escapee = child_pid(&activities(&events));
    let rec = started(&events);
    assert!(
        !alive(escapee),
        "the setsid() escapee {escapee} survived its attempt"
    );
    assert_eq!(pids_with_env(&token_entry(&rec)), Vec::<i32>::new());
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    assert_group_gone(&rec);
}

/// A setsid() escapee whose keeper and supervisor were both killed outright
/// (nothing of the run could end it) is recognised by its token alone and
/// swept, though it is in no recorded group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_ends_a_setsid_escapee_by_its_token() {
    let dir = tempfile::tempdir().unwrap();
    let l = sh(dir.path(), &format!("{SETSID_ESCAPEE}; exec sleep 1000"));
    let spawner = spawner();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (_stop_tx, stop_rx) = watch::channel(None);
    let run = agent::run(&spawner, l, tx, stop_rx);
    tokio::pin!(run);
    let mut rec = None;
    let escapee = loop {
        tokio::select! {
            o = &mut run => panic!("the agent ended: {o:?}"),
            Some(e) = rx.recv() => match e {
                AgentEvent::Started(r) => rec = Some(r),
                AgentEvent::Activity(a) => if let Some(p) = a.strip_prefix("child ") {
                    break p.trim().parse::<i32>().unwrap();
                },
                _ => {}
            }
        }
    };
    let rec = rec.expect("Started comes first");
    // As if the whole group died with the supervisor: the leader (the
    // keeper) and the agent get SIGKILL, which nothing can catch.
    kill(Pid::from_raw(-rec.pgid), Signal::SIGKILL).unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || {
            common::group_members(rec.pgid, rec.start_time).is_empty()
        }),
        "the group did not die"
    );
    assert!(alive(escapee), "the escapee is outside the group");
    assert_ne!(stat(escapee).map(|s| s.pgrp), Some(rec.pgid));
    assert_eq!(process::leftover_members(&rec), vec![escapee]);
    assert_eq!(process::sweep_leftover(&rec, Duration::from_millis(200)), 1);
    assert!(!alive(escapee), "the sweep left the escapee {escapee}");
    assert_eq!(process::sweep_leftover(&rec, Duration::from_millis(200)), 0);
}

#[tokio::test]
async fn spawn_failures_say_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let mut l = sh(dir.path(), "");
    l.program = "loki-test-no-such-agent".into();
    l.args.clear();
    let (out, events) = run_to_end(l.clone()).await;
    match &out.ending {
        Ending::SpawnFailed(msg) => {
            assert!(msg.contains("`loki-test-no-such-agent`"), "{msg}");
            assert!(msg.contains("not found on PATH"), "{msg}");
            assert!(msg.contains("[agent] command"), "{msg}");
        }
        other => panic!("{other:?}"),
    }
    assert!(events.is_empty());

    l.program = "/bin/sh".into();
    l.cwd = dir.path().join("missing");
    let (out, _) = run_to_end(l).await;
    match &out.ending {
        Ending::SpawnFailed(msg) => assert!(msg.contains("does not exist"), "{msg}"),
        other => panic!("{other:?}"),
    }
}

/// A leftover group whose leader is gone (exited and reaped) is only
/// signalled when its processes carry the recorded token: the group's
/// number could otherwise belong to a stranger by now.
#[test]
fn leftovers_without_a_leader_are_recognised_by_their_token() {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    let token: u64 = 0x5eed_0000_0000_0042;
    let mut leader = Command::new("sh")
        .args([
            "-c",
            r#"sleep 1000 & echo $! > grandchild.tmp && mv grandchild.tmp grandchild"#,
        ])
        .current_dir(dir.path())
        .env("LOKI_AGENT_TOKEN", format!("{token:016x}"))
        .process_group(0)
        .spawn()
        .unwrap();
    let pgid = leader.id() as i32;
    let start_time = process::proc_start_time(pgid).unwrap_or(0);
    leader.wait().unwrap();
    let grandchild: i32 = std::fs::read_to_string(dir.path().join("grandchild"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let rec = ProcessRecord {
        pid: pgid,
        pgid,
        start_time,
        boot: process::boot_hash(),
        token,
    };
    let stranger = ProcessRecord {
        token: token ^ 1,
        ..rec
    };
    assert!(process::leftover_members(&stranger).is_empty());
    assert_eq!(
        process::sweep_leftover(&stranger, Duration::from_millis(50)),
        0
    );
    assert!(alive(grandchild));
    // The supervisor that started it knows the group is its own.
    assert_eq!(process::group_members(&stranger), vec![grandchild]);
    assert_eq!(process::leftover_members(&rec), vec![grandchild]);
    assert_eq!(process::sweep_leftover(&rec, Duration::from_secs(5)), 1);
    assert!(
        wait_until(Duration::from_secs(5), || !alive(grandchild)),
        "the leftover lives"
    );
}

#[test]
fn sweep_with_a_wrong_start_time_signals_nothing() {
    use std::os::unix::process::CommandExt;
    let mut child = Command::new("sleep")
        .arg("1000")
        .process_group(0)
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let start_time = process::proc_start_time(pid).unwrap();
    // A record of an older process whose pid was reused by this one.
    let older = ProcessRecord {
        pid,
        pgid: pid,
        start_time: start_time - 1,
        boot: 0,
        token: 0,
    };
    // A record of a process that would start later than this one.
    let newer = ProcessRecord {
        pid,
        pgid: pid,
        start_time: start_time + 1000,
        boot: 0,
        token: 0,
    };
    for rec in [older, newer] {
        assert_eq!(process::group_members(&rec), Vec::<i32>::new());
        assert_eq!(process::sweep_leftover(&rec, Duration::from_millis(100)), 0);
        assert!(
            stops_and_continues(pid),
            "the sweep with a wrong record signalled {pid}"
        );
        assert!(alive(pid));
    }
    let right = ProcessRecord {
        pid,
        pgid: pid,
        start_time,
        boot: 0,
        token: 0,
    };
    assert_eq!(process::group_members(&right), vec![pid]);
    assert_eq!(process::sweep_leftover(&right, Duration::from_secs(5)), 1);
    let status = child.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGTERM));
}

#[test]
fn agent_version_first_line_cached() {
    let v = process::agent_version("/bin/sh");
    // dash has no --version; bash does. Either way it is one line, cached.
    assert!(!v.contains('\n'));
    assert_eq!(process::agent_version("/bin/sh"), v);
    assert_eq!(process::agent_version("loki-test-no-such-agent"), "");
}

/// The keeper is started with nothing run between fork and exec (so the
/// supervisor can use `posix_spawn`): it arms its own death signal and
/// then checks that its parent is the supervisor it was told of. A keeper
/// whose parent is already another process (the supervisor died before the
/// signal was armed) reports ESRCH on its stdin pipe and never starts the
/// program; one whose parent is right starts it with `/dev/null` as stdin
/// and closes the pipe.
#[test]
fn a_keeper_whose_supervisor_is_gone_refuses_to_start_the_program() {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let run = |parent: u32| {
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let status = Command::new(env!("CARGO_BIN_EXE_loki"))
            .args(["__keep", "--report-fd", "0", "--parent-pid"])
            .arg(parent.to_string())
            .args(["--", "/bin/sh", "-c", "cat > stdin-was; touch ran"])
            .current_dir(dir.path())
            .stdin(std::process::Stdio::from(write))
            .status()
            .unwrap();
        let mut report = Vec::new();
        std::fs::File::from(read).read_to_end(&mut report).unwrap();
        (status, report)
    };
    // Not our parent: pid 1 (or whatever the test's own parent is not).
    let (status, report) = run(1);
    assert_eq!(status.code(), Some(127));
    assert_eq!(report, libc::ESRCH.to_ne_bytes().to_vec());
    assert!(!dir.path().join("ran").exists(), "the program ran");

    let (status, report) = run(std::process::id());
    assert_eq!(status.code(), Some(0));
    assert!(report.is_empty(), "{report:?}");
    assert!(dir.path().join("ran").exists());
    let stdin = std::fs::read(dir.path().join("stdin-was")).unwrap();
    assert!(stdin.is_empty(), "the program's stdin was not /dev/null");
}
