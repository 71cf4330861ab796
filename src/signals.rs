//! The signal folder `.loki/signals/`: how agents, humans and scripts steer
//! a running swarm.
//!
//! A signal is a file `<KIND>` or `<KIND>_<stream-id>`, optionally ending in
//! `.json`, empty or holding `{"expected_version": N, "note": "..."}`.
//! Writers create it under a dot-name and rename it into place; names that
//! start with `.` are never read. The watcher (notify, non-recursive) batches
//! events briefly and follows every batch with a full scan of the folder,
//! plus a slow safety scan, so a missed event never strands a signal.
//!
//! A signal is *taken* by renaming it into `processed/` (so two consumers
//! never both apply it), then read from there without following links.
//! Malformed ones (bad name, unknown kind, symlink, body over 64 KiB,
//! invalid JSON) go to `rejected/` with a `<name>.reason` file beside them;
//! the dispatcher rejects stale or inapplicable ones the same way.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Largest body accepted.
pub const MAX_BODY: u64 = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Kind {
    MergeRequested,
    FeatureReady,
    TestsPassed,
    TestsFailed,
    Approve,
    Reject,
    Cancel,
    Retry,
    Pause,
    Resume,
    Stop,
}

impl Kind {
    pub const ALL: &'static [Kind] = &[
        Kind::MergeRequested,
        Kind::FeatureReady,
        Kind::TestsPassed,
        Kind::TestsFailed,
        Kind::Approve,
        Kind::Reject,
        Kind::Cancel,
        Kind::Retry,
        Kind::Pause,
        Kind::Resume,
        Kind::Stop,
    ];

    /// `MERGE_REQUESTED`, `APPROVE`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::MergeRequested => "MERGE_REQUESTED",
            Kind::FeatureReady => "FEATURE_READY",
            Kind::TestsPassed => "TESTS_PASSED",
            Kind::TestsFailed => "TESTS_FAILED",
            Kind::Approve => "APPROVE",
            Kind::Reject => "REJECT",
            Kind::Cancel => "CANCEL",
            Kind::Retry => "RETRY",
            Kind::Pause => "PAUSE",
            Kind::Resume => "RESUME",
            Kind::Stop => "STOP",
        }
    }

    /// Case-insensitive.
    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.iter().copied().find(|k| k.as_str().eq_ignore_ascii_case(s))
    }

    /// Kinds that may stand without a stream id (whole swarm).
    pub fn allows_no_stream(self) -> bool {
        matches!(self, Kind::Pause | Kind::Resume | Kind::Stop)
    }
}

/// A signal that has been taken (it now lives in `processed/`).
#[derive(Debug, Clone, PartialEq)]
pub struct Signal {
    pub kind: Kind,
    pub stream: Option<String>,
    pub expected_version: Option<u64>,
    pub note: Option<String>,
    /// The name it was dropped under.
    pub name: String,
    /// Where it lives now.
    pub path: PathBuf,
}

/// What taking one file produced.
#[derive(Debug, Clone, PartialEq)]
pub enum Taken {
    Signal(Signal),
    /// Moved to `rejected/` with a reason file.
    Rejected { name: String, reason: String },
}

/// `.loki/signals/` and its `processed/` and `rejected/` folders.
#[derive(Debug, Clone)]
pub struct SignalDir {
    dir: PathBuf,
}

impl SignalDir {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        SignalDir { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Takes every signal waiting in the folder, oldest first.
    pub fn scan(&self) -> Vec<Taken> {
        todo!("SignalDir::scan")
    }

    /// Moves a taken signal to `rejected/` and writes `<name>.reason`.
    pub fn reject(&self, signal: &Signal, reason: &str) -> anyhow::Result<()> {
        let _ = (signal, reason);
        todo!("SignalDir::reject")
    }

    /// Writes a signal file atomically (dot-temp, rename); returns its path.
    pub fn write(
        &self,
        kind: Kind,
        stream: Option<&str>,
        expected_version: Option<u64>,
        note: Option<&str>,
    ) -> anyhow::Result<PathBuf> {
        let _ = (kind, stream, expected_version, note);
        todo!("SignalDir::write")
    }
}

/// Validates a signal file name: `(kind, stream id)` or a reason.
pub fn parse_name(name: &str) -> Result<(Kind, Option<String>), String> {
    let _ = name;
    todo!("signals::parse_name")
}

/// Watches the folder and sends every batch of taken signals to `tx` until
/// `tx` is closed. Runs on its own thread; returns a guard that stops it.
pub fn watch(
    dir: SignalDir,
    tx: tokio::sync::mpsc::UnboundedSender<Taken>,
) -> anyhow::Result<WatchGuard> {
    let _ = (dir, tx);
    todo!("signals::watch")
}

/// Stops the watcher thread when dropped.
pub struct WatchGuard {
    _private: (),
}
