//! How well the supervisor schedules a graph: a 40-stream DAG of agents
//! that print a line as they start (as claude prints `system/init`), then
//! sleep 0.5–3 s (each stream depends on up to two earlier ones; fixed
//! seed), `max_parallel = 4`, run to the end with `loki run --plain`. The
//! baseline is the graph's own lower bound, computed in the same run: no
//! schedule can beat max(critical path, total work / slots). Reported: the
//! wall time over that bound, with the default `spawn_interval` and with
//! `spawn_interval = "0s"`, and, simulated, what loki's start order gives
//! with no overhead at all (instant starts, checks and merges).
//!
//! `cargo bench --bench schedule`; `LOKI_BENCH_REPEATS` (default 3) runs per
//! configuration, interleaved, medians reported; `LOKI_BENCH_DIR` sets where
//! the repos are made.

use std::fs;
use std::path::Path;

use anyhow::Result;

mod common;
use common::*;

const STREAMS: usize = 40;
const SLOTS: usize = 4;

struct Graph {
    deps: Vec<Vec<usize>>,
    secs: Vec<f64>,
}

/// A seeded DAG: stream i depends on up to two of the eight before it.
fn graph() -> Graph {
    let mut seed: u64 = 0x2026_1201;
    let mut next = move || {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (seed >> 33) as f64 / (1u64 << 31) as f64
    };
    let mut deps = Vec::new();
    let mut secs = Vec::new();
    for i in 0..STREAMS {
        let mut d = Vec::new();
        if i > 0 {
            for _ in 0..((next() * 3.0) as usize) {
                let back = 1 + (next() * 8.0) as usize;
                if back <= i && !d.contains(&(i - back)) {
                    d.push(i - back);
                }
            }
        }
        deps.push(d);
        secs.push(0.5 + (next() * 25.0).round() / 10.0);
    }
    Graph { deps, secs }
}

impl Graph {
    fn lower_bound(&self) -> f64 {
        let mut finish = vec![0.0f64; STREAMS];
        for i in 0..STREAMS {
            let start = self.deps[i].iter().map(|&d| finish[d]).fold(0.0, f64::max);
            finish[i] = start + self.secs[i];
        }
        let critical = finish.iter().copied().fold(0.0, f64::max);
        let work: f64 = self.secs.iter().sum();
        critical.max(work / SLOTS as f64)
    }

    /// The makespan of loki's own start rule (`plan::start_order`: free
    /// slots go to ready streams in that order) with no overhead at all:
    /// every start, merge and check instant, agents taking exactly their
    /// seconds. What no supervisor using that rule can beat; between it and
    /// the bound lies the rule itself (durations are unknown when it picks).
    fn ideal_list_schedule(&self) -> f64 {
        let nodes: Vec<(String, Vec<String>)> = (0..STREAMS)
            .map(|i| {
                let deps = self.deps[i].iter().map(|d| format!("s{d}")).collect();
                (format!("s{i}"), deps)
            })
            .collect();
        let order: Vec<usize> = loki::plan::start_order(&nodes)
            .iter()
            .filter_map(|id| id[1..].parse().ok())
            .collect();
        let mut done_at: Vec<Option<f64>> = vec![None; STREAMS];
        let mut started = [false; STREAMS];
        let mut running: Vec<(f64, usize)> = Vec::new();
        let mut now = 0.0f64;
        while done_at.iter().any(Option::is_none) {
            for &i in &order {
                let ready = !started[i]
                    && self.deps[i]
                        .iter()
                        .all(|&d| done_at[d].is_some_and(|t| t <= now));
                if running.len() < SLOTS && ready {
                    started[i] = true;
                    running.push((now + self.secs[i], i));
                }
            }
            running.sort_by(|a, b| a.0.total_cmp(&b.0));
            if running.is_empty() {
                break; // nothing can start: a cycle (none in this graph)
            }
            let (t, i) = running.remove(0);
            now = t;
            done_at[i] = Some(t);
        }
        done_at.iter().flatten().copied().fold(0.0, f64::max)
    }
}

fn main() -> Result<()> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    let repeats: usize = env_num("LOKI_BENCH_REPEATS", 3);
    let loki = loki_bin()?;
    let g = graph();
    let bound = g.lower_bound();
    let configs: [(&str, Option<&str>); 2] = [
        ("default spawn_interval", None),
        ("spawn_interval = \"0s\"", Some("0s")),
    ];
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); configs.len()];
    for _ in 0..repeats {
        for (k, (_, interval)) in configs.iter().enumerate() {
            times[k].push(run_once(&loki, &g, *interval)?);
        }
    }
    let ideal = g.ideal_list_schedule();
    println!(
        "{STREAMS}-stream DAG, max_parallel = {SLOTS}: lower bound {bound:.2} s (median of {repeats})"
    );
    println!(
        "  loki's start order, no overhead {ideal:>6.2} s = {:.3}x the bound (simulated)",
        ideal / bound
    );
    for (k, (name, _)) in configs.iter().enumerate() {
        let t = &mut times[k];
        t.sort_by(f64::total_cmp);
        let m = t[t.len() / 2];
        println!("  {name:<24} {m:>6.2} s = {:.3}x the bound", m / bound);
    }
    Ok(())
}

/// Wall seconds of one `loki run` of the graph.
fn run_once(loki: &Path, g: &Graph, interval: Option<&str>) -> Result<f64> {
    let tmp = scratch_repo()?;
    let d = tmp.path();
    write_agent(
        d,
        "#!/bin/sh\necho \"working on $LOKI_STREAM_ID\"\nsleep \"$SECS\"\nmkdir -p out && echo done > \"out/$LOKI_STREAM_ID.md\"\n",
    )?;
    let mut toml = format!("[swarm]\ntarget = \"main\"\nmax_parallel = {SLOTS}\n");
    if let Some(i) = interval {
        toml.push_str(&format!("spawn_interval = \"{i}\"\n"));
    }
    toml.push_str("\n[agent]\ncommand = \"./agent.sh\"\nkill_grace = \"1s\"\n\n");
    for i in 0..STREAMS {
        let deps: Vec<String> = g.deps[i].iter().map(|d| format!("\"s{d}\"")).collect();
        toml.push_str(&format!(
            "[[streams]]\nid = \"s{i}\"\nprompt = \"prompts/p.md\"\noutputs = [\"out/s{i}.md\"]\ndepends_on = [{}]\nenv = {{ SECS = \"{}\" }}\n\n",
            deps.join(", "),
            g.secs[i]
        ));
    }
    fs::write(d.join("loki.toml"), toml)?;
    commit_and_run(loki, d)
}
