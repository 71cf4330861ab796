//! What a supervisor costs while it only waits: 20 agents asleep in their
//! slots (`max_parallel = 20`) and 20 more streams ready but waiting for a
//! slot, against the same 20 agents with nothing waiting (the baseline, in
//! the same run). A supervisor that wakes only when something can start
//! costs the same in both; one that polls for the waiting streams burns a
//! core all night (issue 12 measured 56 CPU-s in 60 s).
//!
//! `cargo bench --bench idle`: for each case a fresh repo (made untimed),
//! `loki run --plain` started, 4 s for the agents to start, then the
//! supervisor's own user+system CPU (`/proc/<pid>/stat`, all threads) over
//! `LOKI_BENCH_IDLE_SECS` seconds (default 10), then SIGTERM twice. Cases
//! interleave over `LOKI_BENCH_REPEATS` repeats (default 3); medians are
//! reported. `LOKI_BENCH_DIR` sets where the repos are made.

use std::fs;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};

mod common;
use common::*;

const SLOTS: usize = 20;

fn main() -> Result<()> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    let repeats: usize = env_num("LOKI_BENCH_REPEATS", 3);
    let secs: u64 = env_num("LOKI_BENCH_IDLE_SECS", 10);
    let loki = loki_bin()?;
    let mut waiting = Vec::new();
    let mut none = Vec::new();
    for _ in 0..repeats {
        waiting.push(idle_cpu(&loki, SLOTS * 2, secs)?);
        none.push(idle_cpu(&loki, SLOTS, secs)?);
    }
    let (w, n) = (median(&mut waiting), median(&mut none));
    println!("supervisor CPU while {SLOTS} agents sleep, over {secs} s (median of {repeats}):");
    println!(
        "  {SLOTS} streams waiting for a slot: {w:.3} CPU-s ({:.2}% of a core)",
        w * 100.0 / secs as f64
    );
    println!(
        "  nothing waiting (baseline):      {n:.3} CPU-s ({:.2}% of a core)",
        n * 100.0 / secs as f64
    );
    println!("  difference: {:.3} CPU-s", w - n);
    Ok(())
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// CPU seconds the supervisor used over `secs` with `streams` streams.
fn idle_cpu(loki: &Path, streams: usize, secs: u64) -> Result<f64> {
    let tmp = scratch_repo()?;
    let d = tmp.path();
    let child = start_sleeping_swarm(
        loki,
        d,
        "#!/bin/sh\nsleep 600\nmkdir -p out && echo hi > out/$LOKI_STREAM_ID.md\n",
        streams,
        SLOTS,
    )?;
    let pid = child.id();
    std::thread::sleep(Duration::from_secs(4));
    let a = cpu_ticks(pid)?;
    std::thread::sleep(Duration::from_secs(secs));
    let b = cpu_ticks(pid)?;
    stop_run(child)?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok((b - a) as f64 / hz)
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat =
        fs::read_to_string(format!("/proc/{pid}/stat")).context("reading /proc/<pid>/stat")?;
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields after the command: state is [0]; utime is field 14 → [11], stime [12].
    let ut: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0);
    let st: u64 = f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    Ok(ut + st)
}
