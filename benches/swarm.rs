//! What the supervisor costs per stream, against the same git steps done
//! by hand, and what the live renderer costs against plain output.
//!
//! `cargo bench --bench swarm` builds temporary git repos whose agent is a
//! tiny `/bin/sh` script that writes `out/$LOKI_STREAM_ID.md` with shell
//! built-ins and exits 0. Every run gets a fresh repo; making it is not
//! timed.
//!
//! 1. **loki against the script a user would write instead.** Repos of 3
//!    files and of 5,000 files (in 50 folders), 100 and 1,000 independent
//!    streams, `max_parallel = 8`, the default start pacing, and a no-op
//!    agent written in C (compiled with `cc` here; a `/bin/sh` one when
//!    there is no compiler) that writes `out/$LOKI_STREAM_ID.md`. The
//!    baseline, on an identical repo in the same run, is a bash script per
//!    stream run by `xargs -P 8`: `git worktree add -b loki/<id>`, the
//!    agent, `git add -A` and `git commit` with loki's trailers, a `flock`ed
//!    `git merge --no-ff` in the main checkout, `git worktree remove`,
//!    `git branch -d`. It has no checks, no state, no events and no
//!    transcripts. The steps that list worktrees are tried again on
//!    failure (git dies on a worktree another stream is removing then). A sampler counts the worktree folders alive every 2 ms;
//!    the peak is shown against loki's bound (`max_parallel` running, twice
//!    that in the pipeline, `max_parallel` pooled: 3 x max_parallel).
//!    `LOKI_BENCH_LARGE=1` adds 1,000 streams on the 5,000-file tree. A
//!    control row runs 100 streams on the 3-file tree with 450 outputs
//!    already in `out/`: every stream adds one, so its tree averages what
//!    the 1,000-stream run's does (500 outputs), and the per-stream ratio
//!    against it is the swarm's size alone, without the tree's growth.
//! 2. **UI cost at 200 streams.** A repo of 20 files (the checkouts are the
//!    same in both cases; a small tree leaves the renderer a larger share),
//!    200 independent streams, `max_parallel = 8`, `spawn_interval = "0s"`:
//!    `loki run --plain` with its output on /dev/null against `loki run`
//!    with the live renderer on a pseudo-terminal that the bench opens
//!    itself (120×40, `TERM=xterm-256color`) and drains.
//! 3. **The floor.** What no implementation can skip per stream where the
//!    work grows with the tree, timed alone in this process (thread CPU,
//!    warm) on the two average trees of the 3-file rows (50 and 500
//!    outputs): one walk of the checkout (a `readdir` per folder, an
//!    `lstat` per entry: what an agent did is seen, not taken from it),
//!    two loose tree objects of `out/` (the stream's commit, the merge)
//!    and two index writes (the worktree's, your checkout's). Its growth
//!    between the two trees is set against what the 1.2x per-stream target
//!    allows, 0.2 x the 100-stream row's own CPU per stream.
//!    `LOKI_BENCH_FLOOR_ONLY=1` runs this part alone.
//!
//! CPU is measured per run, for the process the bench starts: the bench
//! waits for its exit without reaping it (`waitid(WNOWAIT)`), reads the
//! zombie's `/proc/<pid>/stat` (its own user+sys, all threads, and that of
//! the children it reaped), then reaps it with `wait4`, whose rusage is the
//! total (itself plus every descendant it and they reaped). loki does its
//! git work in-process (libgit2), so the supervisor's own CPU is loki's
//! cost; its children are the agents (and one `<agent> --version`). The
//! baseline's CPU is all of bash, git and the agents.
//!
//! Every measurement is repeated (runs interleaved) and the median of each
//! column is reported. `LOKI_BENCH_REPEATS` sets the repeats (default 3);
//! `LOKI_BENCH_DIR` the folder the repos are made in (default: the system
//! temporary folder; /dev/shm takes the disk out of the picture).

use std::fs::{self, File};
use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Part 1: (files in the tree, streams, outputs merged before the run).
const CASES: [(usize, usize, usize); 4] = [
    (3, 100, 0),
    (5000, 100, 0),
    (3, 1000, 0),
    (3, 100, CONTROL_PRIOR),
];
/// Added by `LOKI_BENCH_LARGE=1`.
const LARGE_CASE: (usize, usize, usize) = (5000, 1000, 0);
/// The control for the per-stream ratio: every stream adds its output to
/// `out/`, so over 1,000 streams that folder holds 500 files on average,
/// against 50 over 100. 100 streams that start with 450 outputs already
/// there see the same average tree as the 1,000: what differs between
/// those two rows is the swarm's size alone.
const CONTROL_PRIOR: usize = 450;
const PARALLEL: usize = 8;
/// Files in the repo of part 2: a small tree, so what differs is the renderer.
const UI_FILES: usize = 20;
/// Folders the files are spread over.
const FOLDERS: usize = 50;
/// Part 2.
const UI_STREAMS: usize = 200;
const UI_PARALLEL: usize = 8;
/// Longest a single run may take before the bench kills it.
const RUN_LIMIT: Duration = Duration::from_secs(900);

/// The agent: built-ins only, so it costs one fork+exec of /bin/sh.
/// `--version` is answered because loki runs `<agent> --version` once per
/// run, in the directory it was started from, to label the commits.
const AGENT: &str = r#"#!/bin/sh
if [ "$1" = "--version" ]; then echo "bench-agent 1"; exit 0; fi
printf '# %s\n\nThe draft of attempt %s, written by the bench agent.\n' \
  "$LOKI_STREAM_ID" "$LOKI_ATTEMPT" > "out/$LOKI_STREAM_ID.md"
"#;

/// The no-op agent of part 1, in C: one exec, no shell.
const AGENT_C: &str = r##"#include <stdio.h>
#include <stdlib.h>
#include <string.h>
int main(int argc, char **argv) {
  if (argc > 1 && strcmp(argv[1], "--version") == 0) { puts("bench-agent 1"); return 0; }
  const char *id = getenv("LOKI_STREAM_ID"), *n = getenv("LOKI_ATTEMPT");
  if (!id || !n) return 2;
  char path[512];
  snprintf(path, sizeof path, "out/%s.md", id);
  FILE *f = fopen(path, "w");
  if (!f) return 3;
  fprintf(f, "# %s\n\nThe draft of attempt %s, written by the bench agent.\n", id, n);
  return fclose(f) == 0 ? 0 : 4;
}
"##;

/// The baseline: one stream's git steps with the git CLI, as a user would
/// script them; `xargs -P` runs one per stream.
const BASELINE: &str = r#"#!/usr/bin/env bash
# usage: stream.sh AGENT ID (run in the repo root)
set -euo pipefail
agent=$1
id=$2
wt=.loki/worktrees/$id
# git's worktree listing dies on a worktree another stream is removing at
# that instant ("failed to read .git/worktrees/<id>/commondir"): the steps
# that list worktrees are tried again, as a user would after seeing it.
again() { local n; for n in 1 2 3 4 5; do "$@" && return 0; sleep 0.05; done; return 1; }
again git worktree add -q -B "loki/$id" "$wt" main
(cd "$wt" && LOKI_STREAM_ID=$id LOKI_ATTEMPT=1 "$agent")
git -C "$wt" add -A
git -C "$wt" commit -q -m "loki: $id attempt 1 (checks passed)" -m "PASS: 3 checks" \
  --trailer "Loki-Stream: $id" --trailer "Loki-Attempt: 1" \
  --trailer "Loki-Agent: $agent bench-agent 1" --trailer "Loki-Cost-USD: 0.0000" \
  --trailer "Loki-Duration: 0.0s" --trailer "Loki-Checks: PASS: 3 checks"
flock .loki/bench-merge.lock git merge -q --no-ff "loki/$id" -m "Merge stream $id" -m "Loki-Stream: $id
Loki-Attempt: 1
Loki-Attempts: 1
Loki-Agent: $agent bench-agent 1
Loki-Cost-USD: 0.0000
Loki-Checks: PASS"
again git worktree remove "$wt"
again git branch -q -d "loki/$id"
"#;

fn main() -> Result<()> {
    let repeats: usize = std::env::var("LOKI_BENCH_REPEATS")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(3);
    let started = Instant::now();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_loki"));
    if !bin.is_file() {
        bail!(
            "the loki binary is missing at {}\n  help: build it with `cargo build --release`, or run `cargo bench --bench swarm`, which builds it",
            bin.display()
        );
    }
    let git = Command::new("git")
        .arg("--version")
        .output()
        .context("running git --version")?;
    println!(
        "loki swarm bench: {cpus} cpus, {}, binary {}, repos in {}, median of {repeats}",
        String::from_utf8_lossy(&git.stdout).trim(),
        bin.display(),
        bench_dir().display()
    );
    let tools = tempfile::Builder::new()
        .prefix("loki-swarm-bench-")
        .tempdir()?;
    let baseline = tools.path().join("stream.sh");
    write_exec(&baseline, BASELINE)?;
    let sh_agent = tools.path().join("bench-agent.sh");
    write_exec(&sh_agent, AGENT)?;

    if std::env::var_os("LOKI_BENCH_FLOOR_ONLY").is_some() {
        return print_floor(None);
    }

    // ----- 1. loki against the parallel script -----
    let agent = build_agent(tools.path(), &sh_agent)?;
    let mut cases = CASES.to_vec();
    if std::env::var_os("LOKI_BENCH_LARGE").is_some() {
        cases.push(LARGE_CASE);
    }
    let mut rows = Vec::new();
    for &(files, streams, prior) in &cases {
        let before = if prior > 0 {
            format!(", {prior} outputs merged before")
        } else {
            String::new()
        };
        println!(
            "\n1. {streams} streams, {files} files per checkout{before}, max_parallel {PARALLEL}"
        );
        let (mut loki_runs, mut base_runs, mut peaks) = (Vec::new(), Vec::new(), Vec::new());
        for r in 1..=repeats {
            let repo = BenchRepo::new(files, streams, PARALLEL, &agent, None)?.with_prior(prior)?;
            let sampler = PeakSampler::start(repo.root().join(".loki/worktrees"));
            let m = repo.run_loki(&bin, Output::File)?;
            let peak = sampler.stop();
            repo.verify()?;
            println!("   run {r}: loki    {}  peak worktrees {peak}", m.line());
            loki_runs.push(m);
            peaks.push(peak);

            let repo = BenchRepo::new(files, streams, PARALLEL, &agent, None)?.with_prior(prior)?;
            let m = repo.run_baseline(&baseline, &agent)?;
            repo.verify()?;
            println!("   run {r}: script  {}", m.line());
            base_runs.push(m);
        }
        rows.push(Row {
            files,
            streams,
            prior,
            loki: Summary::of(&loki_runs),
            base: Summary::of(&base_runs),
            peak: peaks.into_iter().max().unwrap_or(0),
        });
    }

    // ----- 2. UI cost -----
    println!(
        "\n2. {UI_STREAMS} independent streams, max_parallel {UI_PARALLEL}, {UI_FILES} files per checkout"
    );
    let mut plain_runs = Vec::new();
    let mut live_runs = Vec::new();
    for r in 1..=repeats {
        let repo = BenchRepo::new(UI_FILES, UI_STREAMS, UI_PARALLEL, &sh_agent, Some("0s"))?;
        let m = repo.run_loki(&bin, Output::Null)?;
        repo.verify()?;
        println!("   run {r}: --plain   {}", m.line());
        plain_runs.push(m);

        let repo = BenchRepo::new(UI_FILES, UI_STREAMS, UI_PARALLEL, &sh_agent, Some("0s"))?;
        let m = repo.run_loki(&bin, Output::Pty)?;
        repo.verify()?;
        println!(
            "   run {r}: live      {}  {} bytes to the terminal",
            m.line(),
            m.tty_bytes
        );
        live_runs.push(m);
    }

    // ----- the table -----
    println!(
        "\n== 1. loki / the parallel git-CLI script (xargs -P {PARALLEL}), no-op agent, median of {repeats} =="
    );
    println!(
        "{:>6} {:>7} {:>6} {:>10} {:>10} {:>7} {:>10} {:>10} {:>7} {:>14} {:>6}",
        "files",
        "streams",
        "before",
        "loki wall",
        "script",
        "ratio",
        "loki CPU",
        "script",
        "ratio",
        "own CPU/stream",
        "peak"
    );
    for r in &rows {
        println!(
            "{:>6} {:>7} {:>6} {:>10} {:>10} {:>6.2}x {:>10} {:>10} {:>6.2}x {:>14} {:>6}",
            r.files,
            r.streams,
            r.prior,
            fmt_secs(r.loki.wall),
            fmt_secs(r.base.wall),
            r.loki.wall / r.base.wall,
            fmt_secs(r.loki.cpu),
            fmt_secs(r.base.cpu),
            r.loki.cpu / r.base.cpu,
            fmt_ms(r.loki.own / r.streams as f64),
            r.peak
        );
    }
    let per_stream = |files: usize, streams: usize, prior: usize| {
        rows.iter()
            .find(|r| r.files == files && r.streams == streams && r.prior == prior)
            .map(|r| r.loki.own / r.streams as f64)
    };
    let own = (
        per_stream(3, 100, 0),
        per_stream(3, 1000, 0),
        per_stream(3, 100, CONTROL_PRIOR),
    );
    if let (Some(small), Some(large), Some(control)) = own {
        println!(
            "supervisor CPU per stream, 3 files: 1,000 streams / 100 streams = {:.2}x; \
             / 100 streams over the same average tree ({CONTROL_PRIOR} outputs before) = {:.2}x",
            large / small,
            large / control
        );
    }
    println!(
        "CPU = user+sys of the process and every descendant it reaped (wait4): loki, its\n\
         agents and keepers; the script's bash, git, flock and agents. own = loki alone.\n\
         peak = most worktree folders alive at once (loki's bound: 3 x max_parallel = {})",
        3 * PARALLEL
    );

    let plain = Summary::of(&plain_runs);
    let live = Summary::of(&live_runs);
    let per = |s: f64| fmt_ms(s / UI_STREAMS as f64);
    println!(
        "\n== 2. UI cost, {UI_STREAMS} streams, max_parallel {UI_PARALLEL} (median of {repeats}) =="
    );
    println!(
        "{:<40} {:>10} {:>12} {:>12} {:>12}",
        "", "wall", "own CPU", "own CPU", "all CPU"
    );
    println!(
        "{:<40} {:>10} {:>12} {:>12} {:>12}",
        "", "total", "total", "per stream", "per stream"
    );
    for (label, s) in [
        ("loki run --plain > /dev/null", &plain),
        ("loki run, live renderer (pty)", &live),
    ] {
        println!(
            "{:<40} {:>10} {:>12} {:>12} {:>12}",
            label,
            fmt_secs(s.wall),
            fmt_secs(s.own),
            per(s.own),
            per(s.cpu)
        );
    }
    println!(
        "{:<40} {:>9.2}x {:>11.2}x",
        "ratio live / plain",
        live.wall / plain.wall,
        live.own / plain.own
    );
    println!(
        "live: the bench's own pseudo-terminal (120x40), read and discarded; median {} bytes written to it",
        median(live_runs.iter().map(|m| m.tty_bytes as f64).collect())
    );
    if let (Some(small), Some(large), Some(control)) = own {
        print_floor(Some((small, large, control)))?;
    }
    println!(
        "\ncommand: cargo bench --bench swarm  ({} runs in {:.0} s)",
        2 * repeats * (rows.len() + 1),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

// ----- the repos ----------------------------------------------------------------------

struct BenchRepo {
    dir: tempfile::TempDir,
    ids: Vec<String>,
    /// Outputs in `out/` before the run ([`BenchRepo::with_prior`]).
    prior: usize,
}

impl BenchRepo {
    /// A repo with `files` small files, a prompt and a swarm of `streams`
    /// independent streams run by `agent`; `pacing` sets `spawn_interval`
    /// (the default when `None`).
    fn new(
        files: usize,
        streams: usize,
        max_parallel: usize,
        agent: &Path,
        pacing: Option<&str>,
    ) -> Result<BenchRepo> {
        let dir = tempfile::Builder::new()
            .prefix("loki-swarm-bench-")
            .tempdir_in(bench_dir())?;
        let root = dir.path();
        git(root, &["init", "-q", "-b", "main"])?;
        git(root, &["config", "user.name", "Bench"])?;
        git(root, &["config", "user.email", "bench@example.com"])?;
        for i in 0..files {
            let folder = root.join(format!("book/part{:02}", i % FOLDERS));
            fs::create_dir_all(&folder)?;
            fs::write(
                folder.join(format!("note{i:04}.md")),
                format!("# Note {i}\n\nA few lines of an outline, a character, a place.\nLine two of note {i}.\n"),
            )?;
        }
        fs::create_dir_all(root.join("out"))?;
        fs::write(root.join("out/.gitkeep"), "")?;
        fs::create_dir_all(root.join("prompts"))?;
        fs::write(
            root.join("prompts/stream.md"),
            "# {{STREAM_ID}}\n\nWrite {{OUTPUTS}}.\n\n{{FEEDBACK}}\n",
        )?;
        fs::create_dir_all(root.join(".loki"))?;
        fs::write(
            root.join(".loki/.gitignore"),
            loki::commands::init::LOKI_GITIGNORE,
        )?;

        let ids: Vec<String> = (1..=streams).map(|i| format!("s{i:04}")).collect();
        let pacing = pacing
            .map(|p| format!("spawn_interval = \"{p}\"\n"))
            .unwrap_or_default();
        let mut toml = format!(
            "[swarm]\ntarget = \"main\"\nmax_parallel = {max_parallel}\n{pacing}\n\
             [agent]\ncommand = \"{}\"\ntimeout = \"60s\"\nidle_timeout = \"60s\"\nkill_grace = \"1s\"\nmax_attempts = 1\n\n",
            agent.display()
        );
        for id in &ids {
            toml.push_str(&format!(
                "[[streams]]\nid = \"{id}\"\nprompt = \"prompts/stream.md\"\noutputs = [\"out/{id}.md\"]\n\n"
            ));
        }
        fs::write(root.join("loki.toml"), toml)?;
        git(root, &["add", "-A"])?;
        git(root, &["commit", "-q", "-m", "swarm"])?;
        Ok(BenchRepo { dir, ids, prior: 0 })
    }

    /// `n` outputs of earlier streams (`out/p<n>.md`) committed to `main`
    /// before the run, in one commit.
    fn with_prior(mut self, n: usize) -> Result<BenchRepo> {
        let root = self.root().to_path_buf();
        for i in 0..n {
            fs::write(
                root.join(format!("out/p{i:04}.md")),
                format!("# p{i:04}\n\nThe draft of an earlier stream.\n"),
            )?;
        }
        if n > 0 {
            git(&root, &["add", "-A"])?;
            git(&root, &["commit", "-q", "-m", "earlier streams' outputs"])?;
        }
        self.prior = n;
        Ok(self)
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn run_loki(&self, bin: &Path, output: Output) -> Result<Measure> {
        let log = self.root().join(".loki/bench-run.log");
        let mut cmd = Command::new(bin);
        cmd.current_dir(self.root())
            .env_remove("LOKI_SIGNALS_DIR")
            .stdin(Stdio::null());
        let mut pty = None;
        match output {
            Output::File => {
                let f = File::create(&log)?;
                cmd.args(["run", "--plain"])
                    .env("NO_COLOR", "1")
                    .stdout(f.try_clone()?)
                    .stderr(f);
            }
            Output::Null => {
                cmd.args(["run", "--plain"])
                    .env("NO_COLOR", "1")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null());
            }
            Output::Pty => {
                let (master, slave) = open_pty(120, 40)?;
                cmd.arg("run")
                    .env("TERM", "xterm-256color")
                    .env_remove("NO_COLOR")
                    .stdout(slave.try_clone()?)
                    .stderr(slave);
                pty = Some(master);
            }
        }
        // The drain starts before the child, so it never blocks on a full pty.
        let drain = pty.map(|master| {
            std::thread::spawn(move || {
                let mut f = File::from(master);
                let mut buf = [0u8; 65536];
                let mut n = 0u64;
                // EIO once the last slave descriptor is closed.
                while let Ok(k) = f.read(&mut buf) {
                    if k == 0 {
                        break;
                    }
                    n += k as u64;
                }
                n
            })
        });
        let (code, mut m) = run_measured(cmd)?;
        if let Some(d) = drain {
            m.tty_bytes = d.join().unwrap_or(0);
        }
        if code != 0 {
            bail!(
                "loki run exited with {code} in {}:\n{}",
                self.root().display(),
                fs::read_to_string(&log).unwrap_or_default()
            );
        }
        Ok(m)
    }

    /// The script for every stream under `xargs -P PARALLEL`.
    fn run_baseline(&self, script: &Path, agent: &Path) -> Result<Measure> {
        let list = self.root().join(".loki/bench-ids");
        fs::write(&list, self.ids.join("\n") + "\n")?;
        let errors = self.root().join(".loki/bench-script.err");
        let mut cmd = Command::new("xargs");
        cmd.args(["-P", &PARALLEL.to_string(), "-n", "1", "bash"])
            .arg(script)
            .arg(agent)
            .current_dir(self.root())
            .env("GIT_MERGE_AUTOEDIT", "no")
            .stdin(File::open(&list)?)
            .stdout(Stdio::null())
            .stderr(File::create(&errors)?);
        let (code, m) = run_measured(cmd)?;
        if code != 0 {
            bail!(
                "the baseline script exited with {code} in {}:\n{}",
                self.root().display(),
                fs::read_to_string(&errors).unwrap_or_default()
            );
        }
        Ok(m)
    }

    /// Every stream merged once into main, with its output; nothing left over.
    fn verify(&self) -> Result<()> {
        let root = self.root();
        let merges = git(root, &["rev-list", "--merges", "--count", "main"])?;
        let outs = git(root, &["ls-tree", "-r", "--name-only", "main", "out/"])?;
        let wts = git(root, &["worktree", "list", "--porcelain"])?;
        let branches = git(root, &["branch", "--list", "loki/*"])?;
        let n = self.ids.len();
        if merges.trim() != n.to_string()
            || outs.lines().count() != n + 1 + self.prior
            || wts.matches("worktree ").count() != 1
            || !branches.trim().is_empty()
        {
            bail!(
                "run in {} incomplete: {} merges, {} outputs, worktrees:\n{wts}branches: {branches}",
                root.display(),
                merges.trim(),
                outs.lines().count().saturating_sub(1 + self.prior)
            );
        }
        Ok(())
    }
}

/// The C no-op agent, compiled into `dir`; `fallback` (the `/bin/sh` one)
/// without `cc`.
fn build_agent(dir: &Path, fallback: &Path) -> Result<PathBuf> {
    let src = dir.join("agent.c");
    let bin = dir.join("noop-agent");
    fs::write(&src, AGENT_C)?;
    let built = Command::new("cc")
        .args(["-O2", "-o"])
        .arg(&bin)
        .arg(&src)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if built {
        println!("agent: C no-op agent ({})", bin.display());
        Ok(bin)
    } else {
        println!(
            "agent: no C compiler, the /bin/sh agent ({})",
            fallback.display()
        );
        Ok(fallback.to_path_buf())
    }
}

/// One case of part 1: the medians and the peak of worktrees alive.
struct Row {
    files: usize,
    streams: usize,
    prior: usize,
    loki: Summary,
    base: Summary,
    peak: usize,
}

/// Counts the folders in a directory every 2 ms on its own thread and keeps
/// the largest count (measurement, so polling is what it should do).
struct PeakSampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<usize>,
}

impl PeakSampler {
    fn start(dir: PathBuf) -> PeakSampler {
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut peak = 0;
            while !flag.load(Ordering::Relaxed) {
                let n = fs::read_dir(&dir).map(|d| d.count()).unwrap_or(0);
                peak = peak.max(n);
                std::thread::sleep(Duration::from_millis(2));
            }
            peak
        });
        PeakSampler { stop, thread }
    }

    fn stop(self) -> usize {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap_or(0)
    }
}

#[derive(Clone, Copy)]
enum Output {
    File,
    Null,
    Pty,
}

/// Where the repos are made: `LOKI_BENCH_DIR` or the system temporary folder.
fn bench_dir() -> PathBuf {
    std::env::var_os("LOKI_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
}

fn git(dir: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .context("running git")?;
    if !out.status.success() {
        bail!(
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn write_exec(path: &Path, text: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::write(path, text)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755))?;
    Ok(())
}

// ----- measuring a process ------------------------------------------------------------

#[derive(Clone, Copy, Default)]
struct Measure {
    wall: f64,
    /// rusage from wait4: the process and all descendants it reaped.
    cpu: f64,
    /// /proc/<pid>/stat utime+stime of the exited, unreaped process.
    own: f64,
    /// /proc/<pid>/stat cutime+cstime.
    children: f64,
    tty_bytes: u64,
}

impl Measure {
    fn line(&self) -> String {
        format!(
            "wall {:>8}  cpu {:>8}  own {:>8}  children {:>8}",
            fmt_secs(self.wall),
            fmt_secs(self.cpu),
            fmt_secs(self.own),
            fmt_secs(self.children)
        )
    }
}

/// Starts `cmd` (dropping it, so the parent's copies of its descriptors are
/// closed), waits for it, and measures it; returns its exit code.
fn run_measured(mut cmd: Command) -> Result<(i32, Measure)> {
    let t0 = Instant::now();
    let child = cmd.spawn().context("starting the measured process")?;
    drop(cmd);
    let pid = child.id() as libc::pid_t;
    // The child is reaped below with wait4, never through `child`.
    drop(child);

    let (done_tx, done_rx) = mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if done_rx.recv_timeout(RUN_LIMIT).is_err() {
            // Not reaped yet, so the pid is still this child's.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            true
        } else {
            false
        }
    });

    // Wait for the exit, leaving the child a zombie so /proc still has it.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    loop {
        let rc = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        if rc == 0 {
            break;
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(err).context("waitid");
        }
    }
    let wall = t0.elapsed().as_secs_f64();
    let _ = done_tx.send(());
    let stat =
        fs::read_to_string(format!("/proc/{pid}/stat")).context("reading /proc/<pid>/stat")?;
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    if rc != pid {
        return Err(std::io::Error::last_os_error()).context("wait4");
    }
    if watchdog.join().unwrap_or(false) {
        bail!("the measured process ran longer than {RUN_LIMIT:?} and was killed");
    }

    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // After the command name: state is field 3; utime 14, stime 15, cutime 16, cstime 17.
    let field = |n: usize| -> f64 {
        fields
            .get(n - 3)
            .and_then(|s| s.parse::<f64>().ok())
            .unwrap_or(0.0)
            / tick
    };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    };
    Ok((
        code,
        Measure {
            wall,
            cpu: tv(usage.ru_utime) + tv(usage.ru_stime),
            own: field(14) + field(15),
            children: field(16) + field(17),
            tty_bytes: 0,
        },
    ))
}

/// A pseudo-terminal of `cols`×`rows`: (master, slave).
fn open_pty(cols: u16, rows: u16) -> Result<(OwnedFd, OwnedFd)> {
    unsafe {
        let master = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
        if master < 0 {
            return Err(std::io::Error::last_os_error()).context("posix_openpt");
        }
        let master = OwnedFd::from_raw_fd(master);
        use std::os::fd::AsRawFd;
        let m = master.as_raw_fd();
        if libc::grantpt(m) != 0 || libc::unlockpt(m) != 0 {
            return Err(std::io::Error::last_os_error()).context("grantpt/unlockpt");
        }
        let mut name = [0 as libc::c_char; 128];
        if libc::ptsname_r(m, name.as_mut_ptr(), name.len()) != 0 {
            return Err(std::io::Error::last_os_error()).context("ptsname_r");
        }
        let slave = libc::open(
            name.as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        );
        if slave < 0 {
            return Err(std::io::Error::last_os_error()).context("opening the pty slave");
        }
        let slave = OwnedFd::from_raw_fd(slave);
        let ws = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        if libc::ioctl(m, libc::TIOCSWINSZ, &ws) != 0 {
            return Err(std::io::Error::last_os_error()).context("TIOCSWINSZ");
        }
        Ok((master, slave))
    }
}

// ----- statistics ---------------------------------------------------------------------

/// The median of each column over the runs.
struct Summary {
    wall: f64,
    cpu: f64,
    own: f64,
}

impl Summary {
    fn of(runs: &[Measure]) -> Summary {
        let col = |f: fn(&Measure) -> f64| median(runs.iter().map(f).collect());
        Summary {
            wall: col(|m| m.wall),
            cpu: col(|m| m.cpu),
            own: col(|m| m.own),
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        0.0
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn fmt_secs(s: f64) -> String {
    if s >= 1.0 {
        format!("{s:.2} s")
    } else {
        format!("{:.0} ms", s * 1e3)
    }
}

fn fmt_us(s: f64) -> String {
    format!("{:.0} us", s * 1e6)
}

fn fmt_ms(s: f64) -> String {
    format!("{:.1} ms", s * 1e3)
}

// ----- 3. the floor --------------------------------------------------------------------

/// Part 3, on the two average trees of part 1's 3-file rows: 100 streams
/// see 50 outputs on average, 1,000 streams (and the control row) 500.
/// `own` is part 1's own CPU per stream (100 streams, 1,000, control), so
/// the floor's growth is set against what the 1.2x target allows.
fn print_floor(own: Option<(f64, f64, f64)>) -> Result<()> {
    let small = floor_of(50)?;
    let large = floor_of(500)?;
    println!(
        "\n== 3. the floor: per-stream work that grows with the tree, no implementation can skip it \
         (thread CPU, median of {FLOOR_REPEATS}) =="
    );
    println!(
        "{:>6} {:>10} {:>11} {:>12} {:>28}",
        "files", "walk", "tree write", "index write", "1 walk + 2 trees + 2 indexes"
    );
    for f in [&small, &large] {
        println!(
            "{:>6} {:>10} {:>11} {:>12} {:>28}",
            f.files,
            fmt_us(f.walk),
            fmt_us(f.tree),
            fmt_us(f.index),
            fmt_us(f.per_stream())
        );
    }
    let grow = large.per_stream() - small.per_stream();
    let per_file = grow / (large.files - small.files) as f64;
    println!(
        "the floor grows {} per stream between the two trees ({:.2} us per file)",
        fmt_us(grow),
        per_file * 1e6
    );
    if let Some((s, l, c)) = own {
        println!(
            "loki's own CPU per stream grows {} with the tree (control row - 100 streams) and {} \
             with the swarm (1,000 streams - control row); the 1.2x target allows {} for both",
            fmt_us(c - s),
            fmt_us(l - c),
            fmt_us(0.2 * s)
        );
        println!(
            "1,000 / 100 streams at the floor: {:.2}x with nothing growing with the swarm, \
             {:.2}x with loki's growth with the swarm",
            (s + grow) / s,
            (s + grow + (l - c).max(0.0)) / s
        );
    }
    Ok(())
}

/// Times, repeated, of each step of part 3.
const FLOOR_REPEATS: usize = 101;

/// What one stream must cost at the least, per tree, for the steps whose
/// work grows with the tree ([`floor_of`]).
struct Floor {
    /// Files in the checkout (not counting `.git`).
    files: usize,
    /// One `readdir` per folder and one `lstat` per entry of the checkout.
    walk: f64,
    /// Hashing, compressing and writing `out/`'s tree as a loose object.
    tree: f64,
    /// libgit2 writing the checkout's index (the same writer git uses).
    index: f64,
}

impl Floor {
    /// One walk (what the agent did must be seen, since its word is not
    /// taken), two tree writes (the stream's commit and the merge's), two
    /// index writes (the worktree's and your checkout's).
    fn per_stream(&self) -> f64 {
        self.walk + 2.0 * self.tree + 2.0 * self.index
    }
}

/// The floor of a stream over a tree with `prior` outputs in `out/`, on a
/// repo made like part 1's: each step timed alone, in this process's
/// thread CPU, warm (as loki meets them: the agent just wrote the files).
fn floor_of(prior: usize) -> Result<Floor> {
    let repo = BenchRepo::new(3, 1, 1, Path::new("/bin/true"), None)?.with_prior(prior)?;
    let root = repo.root();
    let g = git2::Repository::open(root)?;
    let files = walk(root)?;
    let walk_t = median_cpu(|| walk(root).map(|_| ()))?;

    // `out/`'s tree, serialized as git does; each write changes one byte
    // of the first entry's id, so every write is a new object.
    let out = g
        .head()?
        .peel_to_tree()?
        .get_name("out")
        .context("the floor repo has no out/")?
        .to_object(&g)?
        .peel_to_tree()?;
    let mut bytes = Vec::new();
    for e in out.iter() {
        bytes.extend_from_slice(format!("{:o} ", e.filemode()).as_bytes());
        bytes.extend_from_slice(e.name_bytes());
        bytes.push(0);
        bytes.extend_from_slice(e.id().as_bytes());
    }
    let first_id = bytes.iter().position(|&b| b == 0).map_or(0, |i| i + 1);
    let odb = g.odb()?;
    let mut n = 0u32;
    let tree_t = median_cpu(|| {
        n += 1;
        bytes[first_id..first_id + 4].copy_from_slice(&n.to_be_bytes());
        odb.write(git2::ObjectType::Tree, &bytes).map(|_| ())?;
        Ok(())
    })?;

    let mut index = g.index()?;
    let index_t = median_cpu(|| Ok(index.write()?))?;
    Ok(Floor {
        files,
        walk: walk_t,
        tree: tree_t,
        index: index_t,
    })
}

/// Reads every folder of the checkout at `root` but `.git` and `lstat`s
/// every entry, as a status walk must; returns the files seen.
fn walk(root: &Path) -> Result<usize> {
    let mut files = 0;
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            if entry.file_name() == ".git" {
                continue;
            }
            // `fstatat` on the folder's descriptor: the lstat, without
            // resolving the whole path again.
            if entry.metadata()?.is_dir() {
                dirs.push(entry.path());
            } else {
                files += 1;
            }
        }
    }
    Ok(files)
}

/// The median thread CPU time of `FLOOR_REPEATS` calls of `f`.
fn median_cpu(mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?; // warm
    let mut times = Vec::with_capacity(FLOOR_REPEATS);
    for _ in 0..FLOOR_REPEATS {
        let start = thread_cpu();
        f()?;
        times.push(thread_cpu() - start);
    }
    Ok(median(times))
}

/// This thread's CPU time in seconds.
fn thread_cpu() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the call to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}
