//! What one attempt's validation stage costs against its slowest judge.
//!
//! One stream whose draft is judged by six validators that sleep 1.0, 1.2,
//! 1.4, 1.6, 1.8 and 2.0 s and then pass. The stage's wall time
//! (`execution_time_seconds` of `validation.json`: the first validator's
//! start to the last one's end, checkouts and verdicts included) is
//! measured three ways in the same run, interleaved:
//! - `parallel`: all six, sharing `max_parallel = 8`;
//! - `slowest alone`: only the 2.0 s validator (the baseline);
//! - `one at a time`: all six with `max_validators = 1` (what a hand-made
//!   check script that runs them in turn costs).
//!
//! The goal is `parallel / slowest alone` close to 1.0 (the stage costs the
//! slowest judge, not the sum). `cargo bench --bench validation`;
//! `LOKI_BENCH_REPEATS` (default 3) runs of each, medians reported.

use std::fs;
use std::path::Path;

use anyhow::{bail, Context, Result};

mod common;
use common::*;

const SLEEPS: [f64; 6] = [1.0, 1.2, 1.4, 1.6, 1.8, 2.0];

const WRITER: &str = "#!/bin/sh\nprintf 'The harbour light was lit at dusk.\\n' > out.md\n";
const JUDGE: &str =
    "#!/bin/sh\nsleep \"$JUDGE_SLEEP\"\nprintf '{\"status\":\"pass\"}\\n' > \"$LOKI_VERDICT_FILE\"\n";

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Parallel,
    SlowestAlone,
    OneAtATime,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Parallel => "parallel (6 validators)",
            Kind::SlowestAlone => "slowest alone (baseline)",
            Kind::OneAtATime => "one at a time (6 validators)",
        }
    }
}

fn main() -> Result<()> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    let repeats: usize = env_num("LOKI_BENCH_REPEATS", 3);
    let loki = loki_bin()?;
    let kinds = [Kind::Parallel, Kind::SlowestAlone, Kind::OneAtATime];
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); kinds.len()];
    for _ in 0..repeats {
        for (i, kind) in kinds.iter().enumerate() {
            times[i].push(stage_time(&loki, *kind)?);
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let medians: Vec<f64> = times.iter_mut().map(median).collect();
    println!("validation stage wall time, median of {repeats}:");
    for (kind, m) in kinds.iter().zip(&medians) {
        println!("  {:<30} {m:>6.2} s", kind.label());
    }
    println!(
        "  parallel / slowest alone: {:.2}x (goal: close to 1.0); one at a time / slowest alone: {:.2}x; sum of the sleeps: {:.1} s",
        medians[0] / medians[1],
        medians[2] / medians[1],
        SLEEPS.iter().sum::<f64>()
    );
    Ok(())
}

/// Runs the swarm of `kind` in a fresh repo; the stage's wall time.
fn stage_time(loki: &Path, kind: Kind) -> Result<f64> {
    let tmp = scratch_repo()?;
    let d = tmp.path();
    write_agent(d, WRITER)?;
    let judge = d.join("judge.sh");
    fs::write(&judge, JUDGE).context("writing judge.sh")?;
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&judge, fs::Permissions::from_mode(0o755))?;
    }
    fs::write(d.join("prompts/judge.md"), "Judge this:\n\n{{DRAFT}}\n")?;
    let chosen: Vec<(usize, f64)> = match kind {
        Kind::SlowestAlone => vec![(SLEEPS.len() - 1, SLEEPS[SLEEPS.len() - 1])],
        _ => SLEEPS.iter().copied().enumerate().collect(),
    };
    let mut toml = format!(
        "[swarm]\ntarget = \"main\"\nmax_parallel = 8\nspawn_interval = \"0s\"\n{}\n\
         [agent]\ncommand = \"./agent.sh\"\ntimeout = \"60s\"\n\n",
        if kind == Kind::OneAtATime {
            "max_validators = 1\n"
        } else {
            ""
        }
    );
    let mut names = Vec::new();
    for (i, secs) in &chosen {
        let name = format!("judge{i}");
        toml.push_str(&format!(
            "[validators.{name}]\nprompt = \"prompts/judge.md\"\ncommand = \"./judge.sh\"\n\
             env = {{ JUDGE_SLEEP = \"{secs}\" }}\n\n"
        ));
        names.push(format!("\"{name}\""));
    }
    toml.push_str(&format!(
        "[[streams]]\nid = \"ch01\"\nprompt = \"prompts/p.md\"\noutputs = [\"out.md\"]\n\
         [streams.checks]\nvalidators = [{}]\n",
        names.join(", ")
    ));
    fs::write(d.join("loki.toml"), toml)?;
    fs::write(d.join(".gitignore"), ".loki/\n")?;
    commit_and_run(loki, d)?;
    let report = fs::read_to_string(d.join(".loki/runs/ch01/attempt-1/validation.json"))
        .context("reading validation.json")?;
    let v: serde_json::Value = serde_json::from_str(&report)?;
    if v["validators_run"].as_u64() != Some(chosen.len() as u64) || v["decision"] != "pass" {
        bail!("unexpected validation report: {report}");
    }
    v["execution_time_seconds"]
        .as_f64()
        .context("no execution_time_seconds")
}
