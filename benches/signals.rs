//! Signal-to-reaction latency of a running supervisor, and the
//! compare-and-swap throughput behind every applied signal.
//!
//! `cargo bench --bench signals` builds a temporary repo whose swarm has one
//! stream with a hanging agent (timeouts of hours), starts the release
//! binary (`loki run --plain`) on it, and then, one signal at a time, drops
//! `PAUSE_hold` / `RESUME_hold` (alternating, so each one applies) into
//! `.loki/signals/` the way agents do: written under a dot-name, renamed
//! into place. The clock starts when the rename returns and stops when the
//! supervisor's `signal` event for it is in `.loki/state/events.jsonl`
//! (written once the change is applied and fsynced to the state file; the
//! bench polls that file every 50 µs; loki itself never polls). Before the
//! next signal it waits until the state file shows the change applied, so
//! every sample starts from an idle supervisor.
//!
//! The baseline, in the same run, is loki-mode's poll loop: a supervisor
//! that looks at its signal folder every 30 s reacts after a delay uniform
//! in 0–30 s (expected p50 15 s, p99 29.7 s); it is sampled as many times
//! as signals were measured, with a fixed seed, and every percentile is
//! given as a ratio against it.
//!
//! Then it measures `StateStore::update` (the compare-and-swap every applied
//! signal goes through) with 1, 4 and 16 writers on one stream file
//! (`cargo bench --bench cas` has the full table: own files, tmpfs, a
//! baseline without the protocol).
//!
//! `LOKI_BENCH_SIGNALS` sets the number of signals (default 1000, at least
//! 1000 unless `LOKI_BENCH_ALLOW_FEW=1`); `LOKI_BENCH_SECS` the seconds per
//! CAS case (default 1).

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use loki::store::{StateStore, StoreError};

/// Longest wait for one reaction before the bench gives up.
const REACTION_LIMIT: Duration = Duration::from_secs(10);
/// Signals sent before measuring (page cache, inotify, allocator).
const WARMUP: usize = 20;
/// How often the bench looks at events.jsonl.
const POLL: Duration = Duration::from_micros(50);
/// loki-mode's poll interval.
const MODE_POLL_SECS: f64 = 30.0;

fn main() -> Result<()> {
    let n: usize = std::env::var("LOKI_BENCH_SIGNALS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    if n < 1000 && std::env::var("LOKI_BENCH_ALLOW_FEW").as_deref() != Ok("1") {
        bail!("LOKI_BENCH_SIGNALS={n}: at least 1000 signals are measured (set LOKI_BENCH_ALLOW_FEW=1 for a quick look)");
    }
    let secs: f64 = std::env::var("LOKI_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());

    let bin = PathBuf::from(env!("CARGO_BIN_EXE_loki"));
    if !bin.is_file() {
        bail!(
            "the loki binary is missing at {}\n  help: build it with `cargo build --release`, or run `cargo bench --bench signals`, which builds it",
            bin.display()
        );
    }
    println!(
        "loki signal-to-reaction latency: {n} signals (+{WARMUP} warm-up), {cpus} cpus, binary {}",
        bin.display()
    );

    let repo = Bench::setup()?;
    println!("repo: {}", repo.dir.path().display());
    let mut sup = Supervisor::start(&bin, repo.dir.path())?;
    let result = repo.measure(&mut sup, n);
    let stopped = sup.stop();
    let samples = result?;
    stopped?;

    let loki = Percentiles::of(&samples);
    let model = poll_model(samples.len());
    let base = Percentiles::of(&model);
    println!(
        "\n{:<44} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "signal file renamed → event in events.jsonl", "p50", "p90", "p99", "max", "mean"
    );
    println!("{}", loki.row("loki (inotify watcher)"));
    println!(
        "{}",
        base.row(&format!(
            "baseline: poll every {MODE_POLL_SECS:.0} s (model)"
        ))
    );
    println!(
        "{:<44} {:>9.0}x {:>9.0}x {:>9.0}x {:>9.0}x {:>9.0}x",
        "ratio (baseline / loki)",
        base.p50 / loki.p50,
        base.p90 / loki.p90,
        base.p99 / loki.p99,
        base.max / loki.max,
        base.mean / loki.mean
    );
    println!(
        "baseline expectation: p50 {:.1} s, p99 {:.1} s; measured with {POLL:?} polling of events.jsonl",
        MODE_POLL_SECS * 0.5,
        MODE_POLL_SECS * 0.99
    );

    cas_throughput(secs)?;
    Ok(())
}

// ----- the repo and the supervisor -----------------------------------------------

struct Bench {
    dir: tempfile::TempDir,
}

impl Bench {
    /// A git repo with one stream whose agent hangs for hours.
    fn setup() -> Result<Bench> {
        let dir = tempfile::Builder::new()
            .prefix("loki-signals-bench-")
            .tempdir()?;
        let root = dir.path();
        let git = |args: &[&str]| -> Result<()> {
            let out = Command::new("git")
                .args(args)
                .current_dir(root)
                .output()
                .context("running git")?;
            if !out.status.success() {
                bail!(
                    "git {args:?}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            Ok(())
        };
        git(&["init", "-q", "-b", "main"])?;
        git(&["config", "user.name", "Bench"])?;
        git(&["config", "user.email", "bench@example.com"])?;
        let agent = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/fake-agent");
        fs::create_dir_all(root.join("prompts"))?;
        fs::create_dir_all(root.join(".loki"))?;
        fs::write(
            root.join("prompts/chapter.md"),
            "# {{CHAPTER}}\n\nWrite the chapter to {{OUTPUTS}}.\n",
        )?;
        fs::write(
            root.join(".loki/.gitignore"),
            loki::commands::init::LOKI_GITIGNORE,
        )?;
        fs::write(
            root.join("loki.toml"),
            format!(
                "[swarm]\ntarget = \"main\"\nmax_parallel = 1\nspawn_interval = \"0s\"\n\n\
                 [agent]\ncommand = \"{}\"\ntimeout = \"4h\"\nidle_timeout = \"4h\"\nkill_grace = \"1s\"\n\
                 env = {{ FAKE_AGENT_HANG = \"1\" }}\n\n\
                 [[streams]]\nid = \"hold\"\nprompt = \"prompts/chapter.md\"\n\
                 vars = {{ CHAPTER = \"hold\" }}\noutputs = [\"hold.md\"]\n",
                agent.display()
            ),
        )?;
        git(&["add", "-A"])?;
        git(&["commit", "-q", "-m", "swarm"])?;
        Ok(Bench { dir })
    }

    fn signals(&self) -> PathBuf {
        self.dir.path().join(".loki/signals")
    }

    fn events(&self) -> PathBuf {
        self.dir.path().join(".loki/state/events.jsonl")
    }

    fn state(&self) -> Result<serde_json::Value> {
        let text = fs::read_to_string(self.dir.path().join(".loki/state/hold.json"))?;
        Ok(serde_json::from_str(&text)?)
    }

    /// Sends `WARMUP + n` signals; returns the last `n` latencies in seconds.
    fn measure(&self, sup: &mut Supervisor, n: usize) -> Result<Vec<f64>> {
        // The agent runs and is recorded: from now on nothing else happens.
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(st) = self.state() {
                if st["status"] == "running" && st["process"]["pid"].is_i64() {
                    break;
                }
            }
            sup.check_alive()?;
            if Instant::now() > until {
                bail!(
                    "the stream never started running; supervisor output:\n{}",
                    sup.output()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let dir = self.signals();
        fs::create_dir_all(&dir)?;
        let mut events = File::open(self.events()).context("opening events.jsonl")?;
        let mut offset = events.seek(SeekFrom::End(0))?;
        let mut pending = Vec::new();
        let mut samples = Vec::with_capacity(n);
        let started = Instant::now();
        for i in 0..WARMUP + n {
            let pause = i % 2 == 0;
            let name = if pause { "PAUSE_hold" } else { "RESUME_hold" };
            let token = format!("bench-{i}");
            let needle = format!("\"{name}: {token}\"");
            let tmp = dir.join(format!(".tmp-{name}-{i}"));
            fs::write(&tmp, format!("{{\"note\": \"{token}\"}}"))?;
            fs::rename(&tmp, dir.join(name))?;
            let t0 = Instant::now();
            // Wait for the event line.
            loop {
                let mut chunk = Vec::new();
                events.seek(SeekFrom::Start(offset))?;
                events.read_to_end(&mut chunk)?;
                offset += chunk.len() as u64;
                pending.extend_from_slice(&chunk);
                if find(&pending, needle.as_bytes()) {
                    break;
                }
                if t0.elapsed() > REACTION_LIMIT {
                    sup.check_alive()?;
                    bail!(
                        "no event for {name} ({token}) within {REACTION_LIMIT:?}; rejected/: {:?}",
                        fs::read_dir(dir.join("rejected"))
                            .map(|d| d.flatten().map(|e| e.file_name()).collect::<Vec<_>>())
                            .unwrap_or_default()
                    );
                }
                std::thread::sleep(POLL);
            }
            let latency = t0.elapsed().as_secs_f64();
            if i >= WARMUP {
                samples.push(latency);
            }
            // Keep only the unfinished last line.
            if let Some(p) = pending.iter().rposition(|&b| b == b'\n') {
                pending.drain(..=p);
            }
            // Applied (the state's compare-and-swap is done) before the next one.
            let t1 = Instant::now();
            loop {
                if let Ok(st) = self.state() {
                    if st["paused"] == pause {
                        break;
                    }
                }
                if t1.elapsed() > REACTION_LIMIT {
                    bail!("{name} ({token}) was logged but never applied");
                }
                std::thread::sleep(POLL);
            }
        }
        println!(
            "{} signals in {:.1} s",
            WARMUP + n,
            started.elapsed().as_secs_f64()
        );
        Ok(samples)
    }
}

/// PATH with the real python3's folder first (the fake agent is a Python
/// script; a pyenv shim would cost a good part of a second per start).
fn python_first_path() -> String {
    let path = std::env::var("PATH").unwrap_or_default();
    let exe = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    match Path::new(&exe).parent() {
        Some(d) if !exe.is_empty() => format!("{}:{path}", d.display()),
        _ => path,
    }
}

fn find(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

struct Supervisor {
    child: Child,
    log: PathBuf,
    _log_dir: tempfile::TempDir,
}

impl Supervisor {
    fn start(bin: &Path, root: &Path) -> Result<Supervisor> {
        let log_dir = tempfile::tempdir()?;
        let log = log_dir.path().join("loki-run.log");
        let out = File::create(&log)?;
        let child = Command::new(bin)
            .args(["run", "--plain"])
            .current_dir(root)
            .env("NO_COLOR", "1")
            .env("PATH", python_first_path())
            .env_remove("LOKI_SIGNALS_DIR")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        Ok(Supervisor {
            child,
            log,
            _log_dir: log_dir,
        })
    }

    fn output(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn check_alive(&mut self) -> Result<()> {
        if let Some(st) = self.child.try_wait()? {
            bail!("the supervisor exited ({st}):\n{}", self.output());
        }
        Ok(())
    }

    /// SIGTERM (the supervisor stops its agent and exits), SIGKILL after 15 s.
    fn stop(mut self) -> Result<()> {
        if self.child.try_wait()?.is_some() {
            return Ok(());
        }
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)?;
        let until = Instant::now() + Duration::from_secs(15);
        while Instant::now() < until {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        bail!("the supervisor ignored SIGTERM for 15 s; killed it")
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ----- statistics ---------------------------------------------------------------------

struct Percentiles {
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
    mean: f64,
}

impl Percentiles {
    /// Nearest-rank percentiles of seconds.
    fn of(samples: &[f64]) -> Percentiles {
        let mut v = samples.to_vec();
        v.sort_by(f64::total_cmp);
        let rank = |p: f64| {
            let k = ((p / 100.0) * v.len() as f64).ceil() as usize;
            v[k.clamp(1, v.len()) - 1]
        };
        Percentiles {
            p50: rank(50.0),
            p90: rank(90.0),
            p99: rank(99.0),
            max: v[v.len() - 1],
            mean: v.iter().sum::<f64>() / v.len() as f64,
        }
    }

    fn row(&self, label: &str) -> String {
        format!(
            "{label:<44} {:>10} {:>10} {:>10} {:>10} {:>10}",
            fmt_secs(self.p50),
            fmt_secs(self.p90),
            fmt_secs(self.p99),
            fmt_secs(self.max),
            fmt_secs(self.mean)
        )
    }
}

fn fmt_secs(s: f64) -> String {
    if s >= 1.0 {
        format!("{s:.2} s")
    } else if s >= 1e-3 {
        format!("{:.2} ms", s * 1e3)
    } else {
        format!("{:.0} µs", s * 1e6)
    }
}

/// A poll loop every 30 s: a signal written at a uniformly random moment of
/// the cycle waits for the next look. Fixed-seed xorshift, `n` samples.
fn poll_model(n: usize) -> Vec<f64> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 11) as f64 / (1u64 << 53) as f64 * MODE_POLL_SECS
        })
        .collect()
}

// ----- compare-and-swap throughput -------------------------------------------------------

fn cas_throughput(secs: f64) -> Result<()> {
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    fs::create_dir_all(&root)?;
    println!(
        "\nstate compare-and-swap (StateStore::update), one stream file, {secs} s per case, in {}",
        root.display()
    );
    println!(
        "{:<12} {:>10} {:>10} {:>10} {:>10}",
        "writers", "swaps", "conflicts", "swaps/s", "ratio"
    );
    let mut one = None;
    for writers in [1usize, 4, 16] {
        let dir = tempfile::Builder::new()
            .prefix("signals-cas-")
            .tempdir_in(&root)?;
        let stop = AtomicBool::new(false);
        let swaps = AtomicU64::new(0);
        let conflicts = AtomicU64::new(0);
        let started = Instant::now();
        std::thread::scope(|scope| -> Result<()> {
            let workers: Vec<_> = (0..writers)
                .map(|_| {
                    let store = StateStore::new(dir.path());
                    let (stop, swaps, conflicts) = (&stop, &swaps, &conflicts);
                    scope.spawn(move || -> Result<()> {
                        while !stop.load(Ordering::Relaxed) {
                            let v = store.load("s0")?.map_or(0, |s| s.version);
                            match store.update("s0", v, |s| s.attempt += 1) {
                                Ok(_) => swaps.fetch_add(1, Ordering::Relaxed),
                                Err(StoreError::Conflict { .. }) => {
                                    conflicts.fetch_add(1, Ordering::Relaxed)
                                }
                                Err(e) => return Err(e.into()),
                            };
                        }
                        Ok(())
                    })
                })
                .collect();
            std::thread::sleep(Duration::from_secs_f64(secs));
            stop.store(true, Ordering::Relaxed);
            for w in workers {
                w.join()
                    .map_err(|_| anyhow::anyhow!("a CAS writer panicked"))??;
            }
            Ok(())
        })?;
        let rate = swaps.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
        let base = *one.get_or_insert(rate);
        println!(
            "{:<12} {:>10} {:>10} {:>10.0} {:>9.2}x",
            writers,
            swaps.load(Ordering::Relaxed),
            conflicts.load(Ordering::Relaxed),
            rate,
            rate / base
        );
    }
    println!("ratio = against 1 writer; `cargo bench --bench cas` has the full table");
    Ok(())
}
