//! Random `kill -9` trials of the supervisor (issue 11's done-when). Not
//! part of the default `cargo test` run (a trial takes seconds): it does
//! nothing unless `LOKI_KILL9_TRIALS` says how many trials to make.
//!
//! ```sh
//! LOKI_KILL9_TRIALS=200 cargo test --release --test kill9_trials
//! LOKI_KILL9_TRIALS=30 LOKI_KILL9_SEED=12345 cargo test --release --test kill9_trials
//! ```
//!
//! Each trial: a fresh repo with four streams (`b` after `a`, `d` after
//! `b` and `c`), a shell agent that writes its output after a random pause
//! (stream `c`'s also leaves a child that ignores SIGTERM), `loki run`
//! killed with SIGKILL at a random instant, then:
//!
//! 1. within `kill_grace` (+0.5 s for /proc) no process carrying an
//!    attempt's `LOKI_AGENT_TOKEN` for this repo is alive;
//! 2. `loki run` again, to completion (exit 0);
//! 3. every stream merged exactly once (`Merge stream <id>` on main's
//!    first-parent line), `git fsck --strict` clean (no error, no "detached
//!    HEAD points at nothing"), no prunable entry in
//!    `git worktree list --porcelain`, nothing for `git worktree prune`,
//!    and no process of either run alive.
//!
//! The seed is printed (`LOKI_KILL9_SEED` repeats a series), and at the
//! end the figures: trials, failures by kind, mean times. Exit 101 when a
//! trial failed.

mod common;
use common::*;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const IDS: [&str; 4] = ["a", "b", "c", "d"];
const KILL_GRACE: Duration = Duration::from_secs(1);

/// The agent: a pause of `$DELAY` seconds, then the chapter. Stream `c`
/// leaves a child that ignores SIGTERM (its stdio detached, so only the
/// process sweep can end it).
const AGENT: &str = r#"#!/bin/sh
id="$LOKI_STREAM_ID"
if [ "$id" = "c" ]; then
  ( trap '' TERM; exec sleep 20 ) </dev/null >/dev/null 2>&1 &
fi
sleep "${DELAY:-0}"
mkdir -p chapters
printf '# %s\n\nThe lantern kept burning through the night while the river ran on.\n' "$id" > "chapters/$id.md"
echo "wrote chapters/$id.md"
"#;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let Some(trials) = std::env::var("LOKI_KILL9_TRIALS")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
    else {
        println!(
            "kill9_trials: skipped (set LOKI_KILL9_TRIALS=<n>, e.g. `LOKI_KILL9_TRIALS=200 cargo test --release --test kill9_trials`; LOKI_KILL9_SEED=<n> repeats a series)"
        );
        return;
    };
    let seed = std::env::var("LOKI_KILL9_SEED")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    // How late a kill may come: as long as one uninterrupted run of the
    // slowest trial takes on this machine now (or LOKI_KILL9_HORIZON_MS).
    let horizon_ms: u64 = std::env::var("LOKI_KILL9_HORIZON_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            let r = trial(None, &[3, 3, 3, 3]);
            assert!(
                r.problems.is_empty(),
                "the uninterrupted calibration run failed: {:?}",
                r.problems
            );
            r.first_run.as_millis() as u64
        });
    println!("kill9_trials: {trials} trials, seed {seed}, kills within {horizon_ms} ms");
    let mut rng = Rng(seed | 1);
    let mut failures: BTreeMap<&'static str, u32> = BTreeMap::new();
    let mut failed_trials = 0u32;
    let mut finished_first = 0u32;
    let mut total = Duration::ZERO;
    let mut second_runs = Duration::ZERO;
    for n in 1..=trials {
        let kill_at = Duration::from_millis(rng.below(horizon_ms + 1));
        let delays: Vec<u64> = IDS.iter().map(|_| rng.below(4)).collect();
        let started = Instant::now();
        let result = std::panic::catch_unwind(|| trial(Some(kill_at), &delays));
        total += started.elapsed();
        let report = match result {
            Ok(r) => r,
            Err(_) => Report {
                problems: vec![("panic", "the trial panicked (see above)".into())],
                ..Report::default()
            },
        };
        second_runs += report.second_run;
        if report.finished_first {
            finished_first += 1;
        }
        if report.problems.is_empty() {
            println!(
                "trial {n}: kill at {} ms{}: ok",
                kill_at.as_millis(),
                if report.finished_first {
                    " (the run had already ended)"
                } else {
                    ""
                }
            );
        } else {
            failed_trials += 1;
            for (kind, detail) in &report.problems {
                *failures.entry(kind).or_default() += 1;
                println!(
                    "trial {n}: kill at {} ms: FAILED {kind}: {detail}",
                    kill_at.as_millis()
                );
            }
        }
    }
    println!("\nkill9_trials figures (seed {seed}):");
    println!("  trials: {trials}, failed: {failed_trials}, the run had ended before its kill: {finished_first}");
    for (kind, count) in &failures {
        println!("  failures of kind {kind}: {count}");
    }
    if trials > 0 {
        println!(
            "  mean time per trial: {:.2} s; mean second run: {:.2} s",
            total.as_secs_f64() / trials as f64,
            second_runs.as_secs_f64() / trials as f64
        );
    }
    std::process::exit(if failed_trials > 0 { 101 } else { 0 });
}

#[derive(Default)]
struct Report {
    problems: Vec<(&'static str, String)>,
    finished_first: bool,
    first_run: Duration,
    second_run: Duration,
}

/// One trial; `kill_at` `None` lets the first run end by itself (the
/// calibration of the kill instants).
fn trial(kill_at: Option<Duration>, delays: &[u64]) -> Report {
    let s = Swarm::empty();
    let agent = s.scratch("agent.sh");
    std::fs::write(&agent, AGENT).expect("agent");
    make_executable(&agent);
    let mut toml = format!(
        "[swarm]\ntarget = \"main\"\nmax_parallel = 2\nspawn_interval = \"0s\"\n\n\
         [agent]\ncommand = \"{}\"\ntimeout = \"60s\"\nidle_timeout = \"30s\"\nkill_grace = \"{}s\"\nmax_attempts = 3\n\n",
        agent.display(),
        KILL_GRACE.as_secs()
    );
    let deps: [&[&str]; 4] = [&[], &["a"], &[], &["b", "c"]];
    for ((id, deps), delay) in IDS.iter().zip(deps).zip(delays) {
        let delay = format!("0.{delay}");
        toml.push_str(&stream_with(id, deps, &[("DELAY", &delay)], ""));
    }
    s.write(&toml);
    let repo = s.path().canonicalize().expect("canonical repo");
    let mut report = Report::default();

    let mut run = s.start();
    let first_started = Instant::now();
    let until = Instant::now() + kill_at.unwrap_or(Duration::from_secs(180));
    while Instant::now() < until && !run.exited() {
        std::thread::sleep(Duration::from_millis(2));
    }
    report.finished_first = run.exited();
    let killed = Instant::now();
    let _ = kill(Pid::from_raw(run.pid), Signal::SIGKILL);
    let first = run.wait();
    report.first_run = first_started.elapsed();
    s.groups();

    // 1. Nothing of the killed run outlives it by more than kill_grace.
    let deadline = killed + KILL_GRACE + Duration::from_millis(500);
    let mut left = agent_processes(&repo);
    while !left.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        left = agent_processes(&repo);
    }
    if !left.is_empty() {
        report.problems.push((
            "process alive after kill_grace",
            format!("{left:?} ({})", describe(&left)),
        ));
    }

    // 2. The next run completes.
    let started = Instant::now();
    let second = s.start().wait_within(Duration::from_secs(180));
    report.second_run = started.elapsed();
    if second.code != Some(0) {
        report.problems.push((
            "second run did not complete",
            format!(
                "exit {:?}; first run: {}\nsecond run: {}",
                second.code,
                first.both(),
                second.both()
            ),
        ));
    }

    // 3. Git is the truth, and it is clean.
    let subjects = first_parent_subjects(&s.repo, "main");
    for id in IDS {
        let n = subjects
            .iter()
            .filter(|x| **x == format!("Merge stream {id}"))
            .count();
        if n != 1 {
            report.problems.push((
                "not merged exactly once",
                format!("`Merge stream {id}` {n} times: {subjects:?}"),
            ));
        }
    }
    let fsck = fsck_complaints(&s.repo);
    if !fsck.is_empty() {
        report.problems.push(("git fsck", fsck));
    }
    let wt = worktree_complaints(&s.repo);
    if !wt.is_empty() {
        report.problems.push(("prunable worktree", wt));
    }
    let left = agent_processes(&repo);
    if !left.is_empty() {
        report.problems.push((
            "process alive after the second run",
            format!("{left:?} ({})", describe(&left)),
        ));
    }
    // Whatever is left must not disturb the next trial.
    for pid in left {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    report
}

/// Live processes whose environment carries an attempt's token and names
/// this repo (the prompt file, the signals folder).
fn agent_processes(repo: &Path) -> Vec<i32> {
    let needle = repo.display().to_string();
    let me = std::process::id() as i32;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out: Vec<i32> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()))
        .filter(|&pid| pid != me && alive(pid))
        .filter(|pid| {
            let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            let env = String::from_utf8_lossy(&env);
            env.split('\0').any(|v| v.starts_with("LOKI_AGENT_TOKEN="))
                && env.contains(needle.as_str())
        })
        .collect();
    out.sort_unstable();
    out
}

/// `pid: command line` of each, for a failure message.
fn describe(pids: &[i32]) -> String {
    pids.iter()
        .map(|pid| {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            format!("{pid}: {}", cmd.trim())
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// xorshift64: enough randomness for kill instants, repeatable by seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}
