//! Throughput of the state compare-and-swap (`StateStore::update`).
//!
//! `cargo bench --bench cas` measures successful swaps per second with 1, 4
//! and 16 writer threads, all on one stream file (they contend: most tries
//! end in `Conflict` and are retried) and each on its own file (no
//! contention; the lock costs only its syscalls). The baseline, measured in
//! the same run, is a single writer doing a plain `loki::util::write_atomic`
//! of the same JSON: no lock, no compare, no folder fsync. Every figure is
//! also given as a ratio against it.
//!
//! It runs twice: in the target folder (the disk the repository is on, so
//! fsync costs what it costs for `.loki/state`) and in /dev/shm when that is
//! a tmpfs (fsync is free there, which leaves the cost of the protocol).
//! `LOKI_BENCH_SECS` sets the seconds per case (default 1.2);
//! `LOKI_BENCH_DIR` replaces the first folder.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use loki::model::StreamState;
use loki::store::{StateStore, StoreError};

#[derive(Clone, Copy)]
enum Case {
    Baseline,
    SameFile(usize),
    OwnFiles(usize),
}

impl Case {
    fn label(self) -> String {
        match self {
            Case::Baseline => "baseline: write_atomic, 1 writer".into(),
            Case::SameFile(n) => format!("CAS, one file, {n} writer{}", plural(n)),
            Case::OwnFiles(n) => format!("CAS, own files, {n} writer{}", plural(n)),
        }
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

struct Outcome {
    swaps: u64,
    conflicts: u64,
    elapsed: Duration,
}

impl Outcome {
    fn per_sec(&self) -> f64 {
        self.swaps as f64 / self.elapsed.as_secs_f64()
    }
}

fn run(case: Case, root: &Path, secs: f64) -> anyhow::Result<Outcome> {
    let dir = tempfile::Builder::new()
        .prefix("cas-bench-")
        .tempdir_in(root)?;
    let duration = Duration::from_secs_f64(secs);
    let stop = AtomicBool::new(false);
    let swaps = AtomicU64::new(0);
    let conflicts = AtomicU64::new(0);
    let started = Instant::now();
    match case {
        Case::Baseline => {
            let path = dir.path().join("s0.json");
            let mut state = StreamState::new(&loki::model::StreamId::parse("s0")?);
            while started.elapsed() < duration {
                state.version += 1;
                state.attempt += 1;
                let mut bytes = serde_json::to_vec_pretty(&state)?;
                bytes.push(b'\n');
                loki::util::write_atomic(&path, &bytes)?;
                swaps.fetch_add(1, Ordering::Relaxed);
            }
        }
        Case::SameFile(n) | Case::OwnFiles(n) => {
            let own = matches!(case, Case::OwnFiles(_));
            std::thread::scope(|scope| -> anyhow::Result<()> {
                let workers: Vec<_> = (0..n)
                    .map(|i| {
                        let id = if own {
                            format!("s{i}")
                        } else {
                            "s0".to_string()
                        };
                        let (stop, swaps, conflicts) = (&stop, &swaps, &conflicts);
                        let store = StateStore::new(dir.path());
                        scope.spawn(move || -> anyhow::Result<()> {
                            while !stop.load(Ordering::Relaxed) {
                                let v = store.load(&id)?.map_or(0, |s| s.version);
                                match store.update(&id, v, |s| s.attempt += 1) {
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
                std::thread::sleep(duration);
                stop.store(true, Ordering::Relaxed);
                for w in workers {
                    w.join()
                        .map_err(|_| anyhow::anyhow!("a bench worker panicked"))??;
                }
                Ok(())
            })?;
        }
    }
    Ok(Outcome {
        swaps: swaps.into_inner(),
        conflicts: conflicts.into_inner(),
        elapsed: started.elapsed(),
    })
}

fn table(title: &str, root: &Path, secs: f64) -> anyhow::Result<()> {
    let cases = [
        Case::Baseline,
        Case::SameFile(1),
        Case::SameFile(4),
        Case::SameFile(16),
        Case::OwnFiles(1),
        Case::OwnFiles(4),
        Case::OwnFiles(16),
    ];
    // Warm the page cache and the file system's journal.
    run(Case::SameFile(1), root, secs / 5.0)?;
    println!("\n{title} ({})", root.display());
    println!(
        "{:<34} {:>9} {:>10} {:>10} {:>9} {:>9}",
        "case", "swaps", "conflicts", "swaps/s", "us/swap", "ratio"
    );
    let mut baseline = None;
    for case in cases {
        let out = run(case, root, secs)?;
        let rate = out.per_sec();
        let base = *baseline.get_or_insert(rate);
        println!(
            "{:<34} {:>9} {:>10} {:>10.0} {:>9.1} {:>8.2}x",
            case.label(),
            out.swaps,
            out.conflicts,
            rate,
            1e6 / rate.max(f64::MIN_POSITIVE),
            rate / base
        );
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; a filter argument is not supported.
    let secs: f64 = std::env::var("LOKI_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.2);
    let disk: PathBuf = std::env::var_os("LOKI_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")));
    std::fs::create_dir_all(&disk)?;
    println!(
        "loki state compare-and-swap, {secs}s per case, {} cpus",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    table("on disk", &disk, secs)?;
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        table(
            "on tmpfs (fsync is free: the cost of the protocol)",
            shm,
            secs,
        )?;
    }
    println!(
        "\nratio = swaps/s against the baseline of the same table; conflicts are retried tries"
    );
    Ok(())
}
