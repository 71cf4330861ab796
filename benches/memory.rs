//! What the supervisor holds in memory: its peak resident set (VmHWM of
//! `/proc/<pid>/status`) once 100 agents run at once (`max_parallel = 100`,
//! 100 streams on a 3-file tree, each agent asleep), against the same
//! supervisor with one agent running (the baseline, measured in the same
//! run). Issue 12's target is at most 25 MB at 100 running streams.
//!
//! `cargo bench --bench memory`: fresh repos made untimed, `loki run
//! --plain` started, the state files read until every agent is recorded
//! running, then VmHWM and VmRSS read, then SIGTERM twice. Cases
//! interleave over `LOKI_BENCH_REPEATS` repeats (default 3); medians are
//! reported. `LOKI_BENCH_DIR` sets where the repos are made.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

mod common;
use common::*;

const MANY: usize = 100;

fn main() -> Result<()> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    let repeats: usize = env_num("LOKI_BENCH_REPEATS", 3);
    let loki = loki_bin()?;
    let (mut many, mut one) = (Vec::new(), Vec::new());
    for _ in 0..repeats {
        many.push(peak_kib(&loki, MANY)?);
        one.push(peak_kib(&loki, 1)?);
    }
    let med = |v: &mut Vec<(u64, u64)>| {
        v.sort();
        v[v.len() / 2]
    };
    let ((mh, mr), (oh, or)) = (med(&mut many), med(&mut one));
    let mb = |k: u64| k as f64 / 1024.0;
    println!("supervisor memory, median of {repeats} (3-file tree):");
    println!(
        "  {MANY} agents running: peak {:.1} MB (now {:.1} MB)",
        mb(mh),
        mb(mr)
    );
    println!(
        "  1 agent running (baseline): peak {:.1} MB (now {:.1} MB)",
        mb(oh),
        mb(or)
    );
    println!(
        "  per running stream: {:.1} KB; {MANY} against 1: {:.2}x; target: at most 25 MB at {MANY}",
        (mh.saturating_sub(oh)) as f64 / (MANY - 1) as f64,
        mh as f64 / oh.max(1) as f64
    );
    Ok(())
}

/// (VmHWM, VmRSS) in KiB of a supervisor whose `streams` agents all run.
fn peak_kib(loki: &Path, streams: usize) -> Result<(u64, u64)> {
    let tmp = scratch_repo()?;
    let d = tmp.path();
    fs::write(d.join("README.md"), "a book\n")?;
    let mut child =
        start_sleeping_swarm(loki, d, "#!/bin/sh\necho up\nsleep 600\n", streams, streams)?;
    let pid = child.id();
    let t = Instant::now();
    loop {
        if running(&d.join(".loki/state"))? >= streams {
            break;
        }
        if t.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            bail!("not every agent started within 120 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // A moment for the last starts' bookkeeping.
    std::thread::sleep(Duration::from_millis(500));
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |k: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let (hwm, rss) = (field("VmHWM:"), field("VmRSS:"));
    stop_run(child)?;
    Ok((hwm, rss))
}

/// Streams whose state says running with a recorded agent.
fn running(state: &Path) -> Result<usize> {
    let Ok(dir) = fs::read_dir(state) else {
        return Ok(0);
    };
    let mut n = 0;
    for e in dir.flatten() {
        let p = e.path();
        if p.extension().is_none_or(|x| x != "json") {
            continue;
        }
        let Ok(text) = fs::read_to_string(&p) else {
            continue;
        };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
            continue;
        };
        if v["status"] == "running" && v["process"]["pid"].is_number() {
            n += 1;
        }
    }
    Ok(n)
}
