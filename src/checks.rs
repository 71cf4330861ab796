//! Deterministic checks of what an attempt produced, and their report.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::config::StreamConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Level {
    Pass,
    Warn,
    Fail,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckEntry {
    /// "outputs", "utf8", "words", "require", "forbid", "canonical", "command".
    pub check: String,
    /// The file or term the entry is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    pub status: Level,
    pub details: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lines: Vec<usize>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckReport {
    pub status: Level,
    pub entries: Vec<CheckEntry>,
    /// One line: "FAIL: forbid 'dragon' in chapters/ch01.md:3; words 120 < 900".
    pub summary: String,
}

impl CheckReport {
    /// The failed (and warned) entries as lines of feedback for the agent.
    pub fn violations(&self) -> Vec<String> {
        todo!("CheckReport::violations")
    }
}

/// Runs every check configured for `stream` against `worktree`.
/// `touched` = paths the stream changed (for the canonical check).
/// `env` = extra environment for the custom command. Blocking.
pub fn run_checks(
    worktree: &Path,
    stream: &StreamConfig,
    touched: &[String],
    env: &[(String, String)],
) -> CheckReport {
    let _ = (worktree, stream, touched, env);
    todo!("checks::run_checks")
}

/// Words as a writer counts them (Unicode-aware).
pub fn count_words(text: &str) -> u64 {
    let _ = text;
    todo!("checks::count_words")
}
