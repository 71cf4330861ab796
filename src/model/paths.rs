//! Every place loki keeps something inside a repo, and the branch names
//! it uses: defined once here, so no other module spells a `.loki/` path.

use std::path::PathBuf;

use anyhow::{Context, Result};

/// `.loki/.gitignore`: keeps the run-time folders out of git.
pub const LOKI_GITIGNORE: &str = include_str!("../../.loki/.gitignore");

/// What every stream branch's name starts with.
pub const BRANCH_PREFIX: &str = "loki/";

/// The branch of stream `id`.
pub fn branch_name(id: &str) -> String {
    format!("{BRANCH_PREFIX}{id}")
}

/// The stream id of a branch named `loki/<id>` (as written, not validated).
pub fn stream_of_branch(branch: &str) -> Option<&str> {
    branch.strip_prefix(BRANCH_PREFIX)
}

/// The scratch branch a rehearsal merges into instead of the real target:
/// `loki-rehearsal/<stamp>-<pid>`, unique per run and outside `loki/`.
pub fn rehearsal_branch_name(stamp: &str, pid: u32) -> String {
    format!("loki-rehearsal/{stamp}-{pid}")
}

/// Whether a repo-relative path (`/`-separated) lies inside `.loki/`.
pub fn is_loki_path(rel: &str) -> bool {
    rel.starts_with(".loki/")
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
    /// A validator's transcript of attempt `n` of stream `id`.
    pub fn validator_transcript(&self, id: &str, n: u32, name: &str) -> PathBuf {
        self.logs_dir(id)
            .join(format!("attempt-{n}.validator-{name}.jsonl"))
    }
    /// A validator's stderr of attempt `n` of stream `id`.
    pub fn validator_stderr(&self, id: &str, n: u32, name: &str) -> PathBuf {
        self.logs_dir(id)
            .join(format!("attempt-{n}.validator-{name}.stderr.log"))
    }
    /// `validate/<id>`: the disposable checkouts validators of stream `id`
    /// run in (removed when they end).
    pub fn validate_dir(&self, id: &str) -> PathBuf {
        self.loki().join("validate").join(id)
    }
    /// `runs/<id>`: every attempt's records of stream `id`.
    pub fn runs_dir(&self, id: &str) -> PathBuf {
        self.loki().join("runs").join(id)
    }
    pub fn run_dir(&self, id: &str, n: u32) -> PathBuf {
        self.runs_dir(id).join(format!("attempt-{n}"))
    }
    /// `state/<id>.json`: stream `id`'s state file.
    pub fn state_file(&self, id: &str) -> PathBuf {
        self.state_dir().join(format!("{id}.json"))
    }
    /// Always `.loki/worktrees/` (a rehearsal's too): the only place loki
    /// makes or removes worktrees (the git module owns it).
    pub fn worktrees_dir(&self) -> PathBuf {
        self.root.join(".loki").join("worktrees")
    }
    /// Always `.loki/worktrees/<id>` (the git module owns that place).
    pub fn worktree(&self, id: &str) -> PathBuf {
        self.worktrees_dir().join(id)
    }
    /// `.loki/set-aside/`: where a folder that cannot serve as a worktree
    /// is moved instead of being deleted.
    pub fn set_aside_dir(&self) -> PathBuf {
        self.root.join(".loki").join("set-aside")
    }
    /// `.loki/rehearsal.lock`: held by a rehearsal from before its folder
    /// is cleared until it ends, so two rehearsals never share it.
    pub fn rehearsal_lock(&self) -> PathBuf {
        self.root.join(".loki").join("rehearsal.lock")
    }
    /// `.loki/checkout-in-flight`: names the index loki is writing while it
    /// updates the user's checkout after a merge (read after a crash).
    pub fn checkout_marker(&self) -> PathBuf {
        self.root.join(".loki").join("checkout-in-flight")
    }
    /// Creates the run-time folders (and `.loki/.gitignore` if missing).
    pub fn ensure(&self) -> Result<()> {
        for d in ["state", "signals", "logs", "runs"] {
            let p = self.loki().join(d);
            std::fs::create_dir_all(&p).with_context(|| format!("creating {}", p.display()))?;
        }
        let wt = self.worktrees_dir();
        std::fs::create_dir_all(&wt).with_context(|| format!("creating {}", wt.display()))?;
        let gi = self.root.join(".loki").join(".gitignore");
        if !gi.exists() {
            crate::util::write_atomic(&gi, LOKI_GITIGNORE.as_bytes())?;
        }
        Ok(())
    }
}

/// The folder in a stream worktree's git registration where a sandboxed
/// agent's git writes its objects (`GIT_OBJECT_DIRECTORY`), copied into the
/// repository after each attempt.
pub const AGENT_OBJECTS: &str = "loki-objects";
