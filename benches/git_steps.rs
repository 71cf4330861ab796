//! Each git step of a stream, done the way loki does it (libgit2, in
//! process, through `loki::git`) and the way a script would (the git CLI),
//! on one repository whose tree holds `LOKI_BENCH_FILES` files (default
//! 5,000), interleaved, medians of `LOKI_BENCH_REPEATS` (default 7):
//!
//! - **prepare**: a branch `loki/<id>` and its worktree at the target. loki
//!   switches a pooled worktree of a merged stream (the first one is a new
//!   checkout); the script runs `git worktree add -b`.
//! - **commit**: one new file. loki's `commit_stream`; `git add -A` and
//!   `git commit`.
//! - **merge**: into `main`, updating the main checkout. loki's in-memory
//!   merge with the checkout written on the merge's paths; `git merge
//!   --no-ff` in the main checkout.
//! - **clean-up**: loki retires the worktree to its pool and deletes the
//!   branch; the script runs `git worktree remove` and `git branch -D`.
//!
//! `cargo bench --bench git_steps`. The ratio is loki / CLI per step.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};

mod common;
use common::*;

const STEPS: [&str; 4] = ["prepare", "commit", "merge", "clean-up"];

fn main() -> Result<()> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    let files: usize = env_num("LOKI_BENCH_FILES", 5000);
    let repeats: usize = env_num("LOKI_BENCH_REPEATS", 7);
    let tmp = scratch_repo()?;
    let root = tmp.path();
    for i in 0..files {
        let dir = root.join(format!("src/d{}", i % 50));
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(format!("f{i}.txt")), format!("file {i}\n"))?;
    }
    std::fs::write(root.join(".gitignore"), ".loki/\n")?;
    git(root, &["add", "-A"])?;
    git(root, &["commit", "-qm", "tree"])?;

    let mut lib: Vec<Vec<f64>> = vec![Vec::new(); STEPS.len()];
    let mut cli: Vec<Vec<f64>> = vec![Vec::new(); STEPS.len()];
    // One round first, not counted: the pool gets its worktree, and the
    // CLI's caches are as warm as loki's.
    for round in 0..=repeats {
        let l = with_libgit2(root, &format!("l{round}"))?;
        let c = with_cli(root, &format!("c{round}"))?;
        if round > 0 {
            for s in 0..STEPS.len() {
                lib[s].push(l[s]);
                cli[s].push(c[s]);
            }
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!("git steps on a {files}-file tree, median of {repeats} (ms):");
    println!(
        "  {:<10} {:>12} {:>10} {:>8}",
        "step", "loki/libgit2", "git CLI", "ratio"
    );
    let (mut lt, mut ct) = (0.0, 0.0);
    for s in 0..STEPS.len() {
        let (l, c) = (median(&mut lib[s]), median(&mut cli[s]));
        lt += l;
        ct += c;
        println!("  {:<10} {:>12.1} {:>10.1} {:>7.2}x", STEPS[s], l, c, l / c);
    }
    println!(
        "  {:<10} {:>12.1} {:>10.1} {:>7.2}x",
        "all",
        lt,
        ct,
        lt / ct
    );
    Ok(())
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

/// One stream's steps through `loki::git`; their times.
fn with_libgit2(root: &Path, id: &str) -> Result<[f64; 4]> {
    let t = Instant::now();
    let wt = loki::git::prepare_worktree(root, id, "main")?;
    let prepare = ms(t);
    let out = format!("out/{id}.md");
    std::fs::create_dir_all(wt.path.join("out"))?;
    std::fs::write(wt.path.join(&out), format!("{id}\n"))?;
    let t = Instant::now();
    loki::git::commit_stream(root, id, &[out], &format!("loki: {id}"), "", &[])?
        .context("nothing was committed")?;
    let commit = ms(t);
    let t = Instant::now();
    match loki::git::merge_stream(root, id, "main", &format!("Merge stream {id}"), &[])? {
        loki::git::MergeOutcome::Merged { .. } => {}
        other => bail!("{id} did not merge: {other:?}"),
    }
    let merge = ms(t);
    let t = Instant::now();
    loki::git::retire_worktree(root, id, 4)?;
    loki::git::delete_branch(root, id)?;
    let clean = ms(t);
    Ok([prepare, commit, merge, clean])
}

/// `git <args>` in `dir`, quietly, failing loudly.
fn run(dir: &Path, args: &[&str]) -> Result<()> {
    let st = Command::new("git")
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    if !st.success() {
        bail!("git {args:?} failed in {}", dir.display());
    }
    Ok(())
}

/// The same steps as a script runs them; their times.
fn with_cli(root: &Path, id: &str) -> Result<[f64; 4]> {
    let path = root.join(format!(".loki/cli/{id}"));
    let p = path.display().to_string();
    let branch = format!("loki/{id}");
    let t = Instant::now();
    run(root, &["worktree", "add", "-q", "-b", &branch, &p, "main"])?;
    let prepare = ms(t);
    std::fs::create_dir_all(path.join("out"))?;
    std::fs::write(path.join(format!("out/{id}.md")), format!("{id}\n"))?;
    let t = Instant::now();
    run(&path, &["add", "-A"])?;
    run(&path, &["commit", "-qm", &format!("script: {id}")])?;
    let commit = ms(t);
    let t = Instant::now();
    run(
        root,
        &[
            "merge",
            "--no-ff",
            "-q",
            "-m",
            &format!("Merge {id}"),
            &branch,
        ],
    )?;
    let merge = ms(t);
    let t = Instant::now();
    run(root, &["worktree", "remove", "--force", &p])?;
    run(root, &["branch", "-D", &branch])?;
    let clean = ms(t);
    Ok([prepare, commit, merge, clean])
}
