//! Run-time state on disk: one JSON file per stream in `.loki/state/`, the
//! swarm file `swarm.json`, the append-only `events.jsonl`, and the
//! supervisor lock.
//!
//! Every state write goes through [`StateStore::update`], a git-style
//! lock-file compare-and-swap: create `<file>.lock` with O_EXCL, compare the
//! version on disk with the expected one, write the new content into the lock
//! file, fsync, rename it over the file. The lock is held only for the swap.
//! A lock left by a dead process (its pid and start time are written in it)
//! is broken. A version mismatch is [`StoreError::Conflict`]: re-read and
//! decide again.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The lifecycle of a stream (see DESIGN.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pending,
    Ready,
    Preparing,
    Running,
    Checking,
    Retrying,
    AwaitingApproval,
    Merging,
    Merged,
    Failed,
    Conflicted,
    Blocked,
    Cancelled,
    Interrupted,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Ready => "ready",
            Status::Preparing => "preparing",
            Status::Running => "running",
            Status::Checking => "checking",
            Status::Retrying => "retrying",
            Status::AwaitingApproval => "awaiting_approval",
            Status::Merging => "merging",
            Status::Merged => "merged",
            Status::Failed => "failed",
            Status::Conflicted => "conflicted",
            Status::Blocked => "blocked",
            Status::Cancelled => "cancelled",
            Status::Interrupted => "interrupted",
        }
    }

    /// A state a run ends in (nothing more happens without a human or a new run).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Status::Merged | Status::Failed | Status::Conflicted | Status::Blocked | Status::Cancelled
        )
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One run of the agent for a stream.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AttemptRecord {
    pub n: u32,
    pub started_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<String>,
    /// "ok", "failed", "check_failed", "timeout", "idle", "interrupted", "rate_limited", "auth", "stopped", "cancelled"
    #[serde(default)]
    pub outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default)]
    pub cost_usd: f64,
    #[serde(default)]
    pub turns: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// Commit the supervisor made (or found) after the attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// PASS / WARN / FAIL of the checks, when they ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checks: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Whether it counts against max_attempts (a human reject or a rate-limit wait does not).
    #[serde(default = "yes")]
    pub counted: bool,
}

fn yes() -> bool {
    true
}

/// The running agent of a stream, recorded so that a restarted supervisor
/// can find and end leftovers without hitting a reused pid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessRecord {
    pub pid: i32,
    pub pgid: i32,
    /// Field 22 of /proc/<pid>/stat (clock ticks since boot).
    pub start_time: u64,
}

/// Everything loki knows about one stream; `.loki/state/<id>.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StreamState {
    pub id: String,
    /// Bumped by every write (the compare-and-swap key).
    pub version: u64,
    pub status: Status,
    /// Number of the current or last attempt (0 before the first).
    pub attempt: u32,
    #[serde(default)]
    pub attempts: Vec<AttemptRecord>,
    pub branch: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worktree: Option<String>,
    /// Target head the branch started from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_commit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// Sum over attempts.
    #[serde(default)]
    pub cost_usd: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// Why the stream is failed / blocked / conflicted / waiting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Latest activity (tool use or output line), for status displays.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_message: Option<String>,
    /// Feedback for the next attempt (check violations, a reviewer's note).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feedback: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<ProcessRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merge_commit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_by: Option<String>,
    /// Set by PAUSE_<id>: no new attempt starts until RESUME_<id>.
    #[serde(default)]
    pub paused: bool,
    /// Latest TESTS_PASSED / TESTS_FAILED signal, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tests: Option<String>,
    /// Agent command and version used, for commit trailers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
}

impl Default for Status {
    fn default() -> Self {
        Status::Pending
    }
}

impl StreamState {
    pub fn new(id: &str) -> Self {
        StreamState {
            id: id.to_string(),
            branch: format!("loki/{id}"),
            ..Default::default()
        }
    }

    /// Attempts that count against max_attempts.
    pub fn counted_attempts(&self) -> u32 {
        self.attempts.iter().filter(|a| a.counted).count() as u32
    }
}

/// Swarm-wide state; `.loki/state/swarm.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SwarmState {
    pub version: u64,
    #[serde(default)]
    pub paused: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause_reason: Option<String>,
    #[serde(default)]
    pub total_cost_usd: f64,
}

/// A line of `.loki/state/events.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub ts: String,
    /// "transition", "signal", "signal_rejected", "attempt", "merge", "check", "warning", "supervisor"...
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Status>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Status>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file on disk is not at the version the caller expected.
    #[error("state of {name} changed underneath: expected version {expected}, found {found}")]
    Conflict { name: String, expected: u64, found: u64 },
    #[error("{0}")]
    Io(#[from] anyhow::Error),
}

/// The `.loki/state/` folder.
#[derive(Debug, Clone)]
pub struct StateStore {
    dir: PathBuf,
}

impl StateStore {
    /// `dir` is `.loki/state`; created on first write.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        StateStore { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `None` when the stream has no state file yet.
    pub fn load(&self, id: &str) -> Result<Option<StreamState>, StoreError> {
        let _ = id;
        todo!("StateStore::load")
    }

    /// Every stream state file, sorted by id.
    pub fn load_all(&self) -> Result<Vec<StreamState>, StoreError> {
        todo!("StateStore::load_all")
    }

    /// Compare-and-swap: if the file's version is `expected` (0 = the file
    /// does not exist yet), apply `change` to the current state (or to
    /// `StreamState::new(id)`), set version = expected + 1, write atomically,
    /// and return the new state.
    pub fn update(
        &self,
        id: &str,
        expected: u64,
        change: impl FnOnce(&mut StreamState),
    ) -> Result<StreamState, StoreError> {
        let _ = (id, expected, change);
        todo!("StateStore::update")
    }

    pub fn load_swarm(&self) -> Result<SwarmState, StoreError> {
        todo!("StateStore::load_swarm")
    }

    /// Compare-and-swap on `swarm.json`, same rules as [`update`](Self::update).
    pub fn update_swarm(
        &self,
        expected: u64,
        change: impl FnOnce(&mut SwarmState),
    ) -> Result<SwarmState, StoreError> {
        let _ = (expected, change);
        todo!("StateStore::update_swarm")
    }

    /// Appends one line to `events.jsonl` (one `write` with O_APPEND, so
    /// concurrent writers never interleave within a line).
    pub fn append_event(&self, event: &Event) -> Result<(), StoreError> {
        let _ = event;
        todo!("StateStore::append_event")
    }

    pub fn read_events(&self) -> Result<Vec<Event>, StoreError> {
        todo!("StateStore::read_events")
    }
}

/// The advisory lock `.loki/state/supervisor.lock` (flock). Held for the
/// life of a supervisor; the kernel frees it if the process dies. The file
/// holds the holder's pid.
#[derive(Debug)]
pub struct SupervisorLock {
    _file: std::fs::File,
}

impl SupervisorLock {
    /// `Ok(Err(pid))` when another live supervisor holds it.
    pub fn acquire(state_dir: &Path) -> anyhow::Result<Result<SupervisorLock, Option<i32>>> {
        let _ = state_dir;
        todo!("SupervisorLock::acquire")
    }

    /// Pid of the supervisor holding the lock, if any (without taking it).
    pub fn holder(state_dir: &Path) -> anyhow::Result<Option<i32>> {
        let _ = state_dir;
        todo!("SupervisorLock::holder")
    }
}
