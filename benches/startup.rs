//! What reading a large swarm costs: `loki status` (the swarm file read and
//! checked against the repository, every state loaded) on 1,000- and
//! 4,000-stream swarms, as a chain (each stream depends on the one before),
//! as independent streams, and as one `for_each` template whose 1,000 or
//! 4,000 instances come from the sections of a file (the fan-out's cost is
//! reported against the same number of streams written out by hand).
//! Start-up should grow with the number of
//! streams, not faster: the 4,000-stream figure against the 1,000-stream
//! one, measured in the same run, is the ratio to watch (4.0 is linear).
//!
//! `cargo bench --bench startup`: each repo is made untimed (one commit,
//! no state yet), then `loki status` is run `LOKI_BENCH_REPEATS` times
//! (default 5) per swarm, interleaved; medians are reported.
//! `LOKI_BENCH_DIR` sets where the repos are made.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

mod common;
use common::*;

const SIZES: [usize; 2] = [1000, 4000];

fn main() -> Result<()> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    let repeats: usize = env_num("LOKI_BENCH_REPEATS", 5);
    let loki = loki_bin()?;
    let mut swarms = Vec::new();
    for kind in KINDS {
        for n in SIZES {
            let tmp = scratch_repo()?;
            make_swarm(tmp.path(), n, kind)?;
            swarms.push((kind, n, tmp, Vec::new()));
        }
    }
    for _ in 0..repeats {
        for (_, _, dir, times) in swarms.iter_mut() {
            times.push(status_time(&loki, dir.path())?);
        }
    }
    println!("loki status, median of {repeats}:");
    let mut at_4000 = Vec::new();
    for kind in KINDS {
        let mut medians = Vec::new();
        for (_, n, _, times) in swarms.iter_mut().filter(|s| s.0 == kind) {
            times.sort();
            let m = times[times.len() / 2];
            println!(
                "  {kind:<11} {n:>5} streams: {:>8.1} ms",
                m.as_secs_f64() * 1000.0
            );
            medians.push(m);
        }
        println!(
            "  {kind:<11} 4,000 / 1,000: {:.2}x",
            medians[1].as_secs_f64() / medians[0].as_secs_f64().max(1e-9)
        );
        at_4000.push(medians[1]);
    }
    println!(
        "  fan-out / independent at 4,000: {:.2}x",
        at_4000[2].as_secs_f64() / at_4000[1].as_secs_f64().max(1e-9)
    );
    Ok(())
}

/// The shapes measured.
const KINDS: [&str; 3] = ["chain", "independent", "fan-out"];

/// A repo whose swarm has `n` streams, chained, independent, or the
/// instances of one template over `n` sections of a file.
fn make_swarm(d: &Path, n: usize, kind: &str) -> Result<()> {
    fs::create_dir_all(d.join("prompts"))?;
    fs::write(d.join("prompts/p.md"), "Write {{OUTPUTS}}.\n")?;
    let mut toml = String::from("[swarm]\ntarget = \"main\"\n\n[agent]\ncommand = \"true\"\n\n");
    let chain = kind == "chain";
    if kind == "fan-out" {
        let cast: String = (1..=n)
            .map(|i| format!("# CHARACTER: Person {i}\nA life in a line.\n\n"))
            .collect();
        fs::write(d.join("cast.md"), cast)?;
        toml.push_str(
            "[[streams]]\nid = \"s\"\nprompt = \"prompts/p.md\"\n\
             for_each = { sections = \"cast.md\", marker = '^# CHARACTER: (?P<name>.+)$' }\n\
             outputs = [\"out/{{KEY}}.md\"]\n",
        );
        fs::write(d.join("loki.toml"), toml)?;
        git(d, &["add", "-A"])?;
        git(d, &["commit", "-q", "-m", "swarm"])?;
        return Ok(());
    }
    for i in 1..=n {
        toml.push_str(&format!(
            "[[streams]]\nid = \"s{i}\"\nprompt = \"prompts/p.md\"\noutputs = [\"out/s{i}.md\"]\n"
        ));
        if chain && i > 1 {
            toml.push_str(&format!("depends_on = [\"s{}\"]\n", i - 1));
        }
        toml.push('\n');
    }
    fs::write(d.join("loki.toml"), toml)?;
    git(d, &["add", "-A"])?;
    git(d, &["commit", "-qm", "bench"])
}

fn status_time(loki: &Path, dir: &Path) -> Result<Duration> {
    let t = Instant::now();
    let st = Command::new(loki)
        .arg("status")
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("running loki status")?;
    let took = t.elapsed();
    if !st.success() {
        bail!("loki status failed in {}", dir.display());
    }
    Ok(took)
}
