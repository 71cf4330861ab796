//! What the small benches share: the loki binary beside them, git in a
//! scratch repo, the folder repos are made in, and reading a number from
//! the environment.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

/// The release binary next to the bench's own (target/release/loki).
pub fn loki_bin() -> Result<PathBuf> {
    let me = std::env::current_exe().context("locating the bench binary")?;
    let dir = me
        .parent()
        .and_then(Path::parent)
        .context("locating target/release")?;
    let bin = dir.join("loki");
    if !bin.is_file() {
        bail!(
            "{} is missing: run `cargo build --release` first",
            bin.display()
        );
    }
    Ok(bin)
}

/// `git <args>` in `dir`, quietly; an error when it fails.
pub fn git(dir: &Path, args: &[&str]) -> Result<()> {
    let st = Command::new("git")
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .status()
        .context("running git")?;
    if !st.success() {
        bail!("git {args:?} failed in {}", dir.display());
    }
    Ok(())
}

/// A fresh folder for one repo, in `LOKI_BENCH_DIR` when set, with git
/// initialised on `main` and an identity.
pub fn scratch_repo() -> Result<tempfile::TempDir> {
    let tmp = match std::env::var_os("LOKI_BENCH_DIR") {
        Some(b) => tempfile::tempdir_in(b),
        None => tempfile::tempdir(),
    }
    .context("making the bench folder")?;
    let d = tmp.path();
    git(d, &["init", "-q", "-b", "main"])?;
    git(d, &["config", "user.email", "bench@localhost"])?;
    git(d, &["config", "user.name", "bench"])?;
    Ok(tmp)
}

/// `key` from the environment as a number, else `default`.
pub fn env_num<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `agent.sh` (executable, holding `script`) and `prompts/p.md` in `d`.
pub fn write_agent(d: &Path, script: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let agent = d.join("agent.sh");
    std::fs::write(&agent, script).context("writing agent.sh")?;
    std::fs::set_permissions(&agent, std::fs::Permissions::from_mode(0o755))
        .context("making agent.sh executable")?;
    std::fs::create_dir_all(d.join("prompts")).context("making prompts/")?;
    std::fs::write(d.join("prompts/p.md"), "Write {{OUTPUTS}}.\n").context("writing the prompt")
}

/// Commits everything in `d` and runs `loki run --plain` there to its end,
/// quietly; the run's wall time in seconds. An error when it fails.
pub fn commit_and_run(loki: &Path, d: &Path) -> Result<f64> {
    git(d, &["add", "-A"])?;
    git(d, &["commit", "-qm", "bench"])?;
    let t = std::time::Instant::now();
    let st = Command::new(loki)
        .args(["run", "--plain"])
        .current_dir(d)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("running loki")?;
    let took = t.elapsed().as_secs_f64();
    if !st.success() {
        bail!("loki run failed in {}", d.display());
    }
    Ok(took)
}

/// A committed swarm in `d` of `streams` independent streams whose agent
/// is `script` (they sleep), `max_parallel = slots`, then `loki run
/// --plain` started on it in the background.
pub fn start_sleeping_swarm(
    loki: &Path,
    d: &Path,
    script: &str,
    streams: usize,
    slots: usize,
) -> Result<std::process::Child> {
    write_agent(d, script)?;
    let mut toml = format!(
        "[swarm]\ntarget = \"main\"\nmax_parallel = {slots}\nspawn_interval = \"0s\"\n\n\
         [agent]\ncommand = \"./agent.sh\"\ntimeout = \"1h\"\nidle_timeout = \"1h\"\nkill_grace = \"1s\"\n\n"
    );
    for i in 0..streams {
        toml.push_str(&format!(
            "[[streams]]\nid = \"s{i}\"\nprompt = \"prompts/p.md\"\noutputs = [\"out/s{i}.md\"]\n\n"
        ));
    }
    std::fs::write(d.join("loki.toml"), toml).context("writing loki.toml")?;
    git(d, &["add", "-A"])?;
    git(d, &["commit", "-qm", "bench"])?;
    Command::new(loki)
        .args(["run", "--plain"])
        .current_dir(d)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting loki")
}

/// Ends a `loki run` as Ctrl-C twice would (SIGTERM twice) and reaps it.
pub fn stop_run(mut child: std::process::Child) -> Result<()> {
    let pid = child.id().to_string();
    for _ in 0..2 {
        Command::new("kill").args(["-TERM", &pid]).status()?;
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    let _ = child.wait();
    Ok(())
}
