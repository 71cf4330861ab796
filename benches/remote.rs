//! What sharing a swarm across machines buys: the makespan of one swarm of
//! sleeping agents run by one supervisor, and by three supervisors in three
//! clones of a remote served by `git daemon` on 127.0.0.1 (each with its own
//! HOME and `max_parallel`), measured in the same run, interleaved.
//!
//! The swarm: `LOKI_BENCH_STREAMS` (default 24) independent streams whose
//! agent sleeps `LOKI_BENCH_SLEEP` seconds (default 2) and writes its file,
//! `max_parallel = 2` per supervisor. Makespan: from starting the
//! supervisors to the last one's exit, every stream merged on the remote.
//! The goal is a ratio close to 3x. `cargo bench --bench remote`;
//! `LOKI_BENCH_REPEATS` (default 2) runs of each, medians reported.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

mod common;
use common::*;

fn main() -> Result<()> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    let repeats: usize = env_num("LOKI_BENCH_REPEATS", 2);
    let streams: usize = env_num("LOKI_BENCH_STREAMS", 24);
    let sleep: f64 = env_num("LOKI_BENCH_SLEEP", 2.0);
    let loki = loki_bin()?;
    let mut one = Vec::new();
    let mut three = Vec::new();
    for _ in 0..repeats {
        one.push(makespan(&loki, 1, streams, sleep)?);
        three.push(makespan(&loki, 3, streams, sleep)?);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (m1, m3) = (median(&mut one), median(&mut three));
    println!(
        "{streams} streams sleeping {sleep} s, max_parallel = 2 per supervisor, median of {repeats}:"
    );
    println!("  one supervisor (baseline)  {m1:>7.2} s");
    println!("  three supervisors          {m3:>7.2} s");
    println!(
        "  speed-up: {:.2}x (goal: close to 3x; the work alone bounds it at {:.2} s / {:.2} s)",
        m1 / m3,
        (streams as f64 / 2.0).ceil() * sleep,
        (streams as f64 / 6.0).ceil() * sleep
    );
    Ok(())
}

/// A remote served by `git daemon`; killed when dropped.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        // `git daemon` serves from a child process: the whole group goes.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.0.id())])
            .status();
        let _ = self.0.wait();
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Runs the swarm with `machines` supervisors; the makespan in seconds.
fn makespan(loki: &Path, machines: usize, streams: usize, sleep: f64) -> Result<f64> {
    let seed = scratch_repo()?;
    let d = seed.path();
    write_agent(
        d,
        &format!("#!/bin/sh\nsleep {sleep}\nmkdir -p out\necho \"$LOKI_STREAM_ID\" > \"out/$LOKI_STREAM_ID.md\"\n"),
    )?;
    let mut toml = "[swarm]\ntarget = \"main\"\nmax_parallel = 2\nspawn_interval = \"0s\"\nremote = \"origin\"\nlease = \"20s\"\n\n\
         [agent]\ncommand = \"./agent.sh\"\ntimeout = \"1h\"\nidle_timeout = \"1h\"\nkill_grace = \"1s\"\n\n"
        .to_string();
    for i in 0..streams {
        toml.push_str(&format!(
            "[[streams]]\nid = \"s{i}\"\nprompt = \"prompts/p.md\"\noutputs = [\"out/s{i}.md\"]\n\n"
        ));
    }
    std::fs::write(d.join("loki.toml"), toml)?;
    std::fs::write(d.join(".gitignore"), ".loki/\n")?;
    git(d, &["add", "-A"])?;
    git(d, &["commit", "-qm", "bench"])?;

    let base = tempfile::tempdir()?;
    git(
        base.path(),
        &[
            "clone",
            "-q",
            "--bare",
            &d.display().to_string(),
            "remote.git",
        ],
    )?;
    let port = free_port()?;
    let _daemon = Daemon(
        Command::new("git")
            .args([
                "daemon",
                "--reuseaddr",
                "--listen=127.0.0.1",
                &format!("--port={port}"),
                &format!("--base-path={}", base.path().display()),
                "--export-all",
                "--enable=receive-pack",
            ])
            .arg(base.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .context("starting git daemon")?,
    );
    let url = format!("git://127.0.0.1:{port}/remote.git");
    let up = Instant::now();
    while !Command::new("git")
        .args(["ls-remote", &url])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?
        .success()
    {
        if up.elapsed() > Duration::from_secs(20) {
            bail!("git daemon never answered on {url}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut clones: Vec<(PathBuf, PathBuf)> = Vec::new();
    for m in 0..machines {
        let name = format!("m{m}");
        git(base.path(), &["clone", "-q", &url, &name])?;
        let clone = base.path().join(&name);
        git(&clone, &["config", "user.name", &name])?;
        git(&clone, &["config", "user.email", "bench@localhost"])?;
        let home = base.path().join(format!("home-{name}"));
        std::fs::create_dir_all(&home)?;
        clones.push((clone, home));
    }
    let t = Instant::now();
    let mut children = Vec::new();
    for (m, (clone, home)) in clones.iter().enumerate() {
        let log = std::fs::File::create(base.path().join(format!("m{m}.log")))?;
        children.push(
            Command::new(loki)
                .args(["run", "--plain"])
                .current_dir(clone)
                .env("HOME", home)
                .env("LOKI_MACHINE", format!("m{m}"))
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .context("starting loki")?,
        );
    }
    for (m, mut c) in children.into_iter().enumerate() {
        if !c.wait()?.success() {
            let log = std::fs::read_to_string(base.path().join(format!("m{m}.log")))?;
            bail!("supervisor m{m} failed:\n{log}");
        }
    }
    let took = t.elapsed().as_secs_f64();
    let out = Command::new("git")
        .args(["log", "--first-parent", "--format=%s", "main"])
        .current_dir(base.path().join("remote.git"))
        .output()?;
    let merged = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("Merge stream "))
        .count();
    if merged != streams {
        bail!("{merged} of {streams} streams merged on the remote");
    }
    Ok(took)
}
