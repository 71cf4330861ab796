//! Every place loki keeps something inside a repo, and the branch names
//! it uses: defined once here, so no other module spells a `.loki/` path.

use std::path::PathBuf;

use anyhow::{Context, Result};

/// `.loki/.gitignore`: keeps the run-time folders out of git.
pub const LOKI_GITIGNORE: &str = include_str!("../../.loki/.gitignore");

/// The branch of stream `id`.
pub fn branch_name(id: &str) -> String {
    format!("loki/{id}")
}

/// Where loki keeps its files inside a repo.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The main worktree's root.
    pub root: PathBuf,
    /// `.loki`, or `.loki/rehearsal` for a rehearsal.
    loki: PathBuf,
}

impl Layout {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        Layout {
            loki: root.join(".loki"),
            root,
        }
    }
    /// A rehearsal keeps its state, signals, logs and runs apart from the real run's.
    pub fn rehearsal(root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        Layout {
            loki: root.join(".loki").join("rehearsal"),
            root,
        }
    }
    pub fn loki(&self) -> PathBuf {
        self.loki.clone()
    }
    pub fn state_dir(&self) -> PathBuf {
        self.loki().join("state")
    }
    pub fn signals_dir(&self) -> PathBuf {
        self.loki().join("signals")
    }
    pub fn logs_dir(&self, id: &str) -> PathBuf {
        self.loki().join("logs").join(id)
    }
    pub fn transcript(&self, id: &str, n: u32) -> PathBuf {
        self.logs_dir(id).join(format!("attempt-{n}.jsonl"))
    }
    pub fn stderr_log(&self, id: &str, n: u32) -> PathBuf {
        self.logs_dir(id).join(format!("attempt-{n}.stderr.log"))
    }
    pub fn run_dir(&self, id: &str, n: u32) -> PathBuf {
        self.loki()
            .join("runs")
            .join(id)
            .join(format!("attempt-{n}"))
    }
    /// Always `.loki/worktrees/<id>` (the git module owns that place).
    pub fn worktree(&self, id: &str) -> PathBuf {
        self.root.join(".loki").join("worktrees").join(id)
    }
    /// Creates the run-time folders (and `.loki/.gitignore` if missing).
    pub fn ensure(&self) -> Result<()> {
        for d in ["state", "signals", "logs", "runs"] {
            let p = self.loki().join(d);
            std::fs::create_dir_all(&p).with_context(|| format!("creating {}", p.display()))?;
        }
        let wt = self.root.join(".loki").join("worktrees");
        std::fs::create_dir_all(&wt).with_context(|| format!("creating {}", wt.display()))?;
        let gi = self.root.join(".loki").join(".gitignore");
        if !gi.exists() {
            crate::util::write_atomic(&gi, LOKI_GITIGNORE.as_bytes())?;
        }
        Ok(())
    }
}
