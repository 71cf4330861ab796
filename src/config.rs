//! `loki.toml`: parsing and validation.
//!
//! Every refusal is a [`ConfigError`] naming file, line and column (from
//! toml's spans) and how to fix it. Validation is complete before anything
//! is created on disk: unknown keys, bad or duplicate ids, unknown
//! `depends_on` ids, cycles, missing prompt files and placeholders that no
//! var, input or built-in fills are all refused here.
//!
//! A stream may override any `[agent]` key directly in its `[[streams]]`
//! table (`model = "opus"`, `max_attempts = 5`) or in a `[streams.agent]`
//! sub-table; `[streams.checks]` overrides `[checks]` key by key, and
//! `approve = true` may also stand directly in the stream table.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Placeholders loki fills itself; a template may use them without a var.
pub const BUILTIN_PLACEHOLDERS: &[&str] =
    &["STREAM_ID", "ATTEMPT", "FEEDBACK", "OUTPUTS", "TARGET", "BRANCH"];

/// The whole swarm file, with every stream's settings resolved (defaults
/// from `[agent]` / `[checks]` applied, overrides on top).
#[derive(Debug, Clone)]
pub struct SwarmFile {
    /// Absolute path of the swarm file.
    pub path: PathBuf,
    /// Folder of the swarm file; prompt paths are relative to it.
    pub root: PathBuf,
    pub swarm: SwarmSettings,
    /// In file order.
    pub streams: Vec<StreamConfig>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SwarmSettings {
    /// `None`: the branch checked out in the main worktree.
    pub target: Option<String>,
    /// Streams running at once (default 4, at least 1).
    pub max_parallel: usize,
    /// Stop starting attempts once the swarm's total cost reaches this.
    pub max_budget_usd: Option<f64>,
    /// Pause between two agent starts (default 1 s).
    pub spawn_interval: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AgentSettings {
    /// Executable on PATH or a path (relative paths are relative to the swarm file's folder).
    pub command: String,
    pub args: Vec<String>,
    /// Default "sonnet".
    pub model: String,
    /// Default "acceptEdits"; "bypassPermissions" maps to --dangerously-skip-permissions.
    pub permission_mode: String,
    /// Wall clock per attempt (default 40m).
    pub timeout: Duration,
    /// No stdout/stderr output for this long means hung (default 10m).
    pub idle_timeout: Duration,
    /// Default 3, at least 1.
    pub max_attempts: u32,
    pub env: BTreeMap<String, String>,
    /// Between SIGTERM and SIGKILL when stopping an agent (default 10s).
    pub kill_grace: Duration,
    /// Retries resume the claude session (default true).
    pub resume: bool,
    /// Per-stream budget passed to claude as --max-budget-usd and enforced by loki.
    pub max_budget_usd: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CheckSettings {
    /// Word range per output.
    pub words: Option<(u64, u64)>,
    /// Default 0.10: inside range ± tolerance warns instead of failing.
    pub word_tolerance: f64,
    pub require: Vec<String>,
    pub forbid: Vec<String>,
    /// No versioned duplicates (default true).
    pub canonical: bool,
    /// Custom check command, run in the worktree through `sh -c`.
    pub command: Option<String>,
    /// Default 5m.
    pub command_timeout: Duration,
    /// Human approval gate before merging.
    pub approve: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StreamConfig {
    pub id: String,
    /// Relative to the swarm file's folder (and so to the worktree root).
    pub prompt: PathBuf,
    pub vars: BTreeMap<String, String>,
    /// Placeholder name → path relative to the worktree root.
    pub inputs: BTreeMap<String, String>,
    /// Paths relative to the worktree root.
    pub outputs: Vec<String>,
    pub depends_on: Vec<String>,
    pub agent: AgentSettings,
    pub checks: CheckSettings,
}

impl Default for SwarmSettings {
    fn default() -> Self {
        SwarmSettings {
            target: None,
            max_parallel: 4,
            max_budget_usd: None,
            spawn_interval: Duration::from_secs(1),
        }
    }
}

impl Default for AgentSettings {
    fn default() -> Self {
        AgentSettings {
            command: "claude".into(),
            args: Vec::new(),
            model: "sonnet".into(),
            permission_mode: "acceptEdits".into(),
            timeout: Duration::from_secs(40 * 60),
            idle_timeout: Duration::from_secs(10 * 60),
            max_attempts: 3,
            env: BTreeMap::new(),
            kill_grace: Duration::from_secs(10),
            resume: true,
            max_budget_usd: None,
        }
    }
}

impl Default for CheckSettings {
    fn default() -> Self {
        CheckSettings {
            words: None,
            word_tolerance: 0.10,
            require: Vec::new(),
            forbid: Vec::new(),
            canonical: true,
            command: None,
            command_timeout: Duration::from_secs(5 * 60),
            approve: false,
        }
    }
}

impl AgentSettings {
    /// True when the command is Claude Code (its file name is `claude`):
    /// loki then passes its own flags and reads stream-json.
    pub fn is_claude(&self) -> bool {
        Path::new(&self.command)
            .file_name()
            .map(|n| n == "claude")
            .unwrap_or(false)
    }
}

impl SwarmFile {
    pub fn stream(&self, id: &str) -> Option<&StreamConfig> {
        self.streams.iter().find(|s| s.id == id)
    }
}

/// A refusal of the swarm file (or of a prompt template it names).
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based; 0 when the error is about the file as a whole.
    pub line: usize,
    /// 1-based; 0 when unknown.
    pub col: usize,
    pub message: String,
    /// How to fix it.
    pub help: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(f, "{}:{}:{}: {}", self.file.display(), self.line, self.col, self.message)?;
        } else {
            write!(f, "{}: {}", self.file.display(), self.message)?;
        }
        if !self.help.is_empty() {
            write!(f, "\n  help: {}", self.help)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Reads and validates the swarm file at `path`. Reads prompt templates to
/// check their placeholders; creates nothing.
pub fn load(path: &Path) -> Result<SwarmFile, ConfigError> {
    let _ = path;
    todo!("config::load")
}

/// Parses and validates swarm-file text; `path` is used for messages and to
/// find prompt files (relative to its folder).
pub fn parse(text: &str, path: &Path) -> Result<SwarmFile, ConfigError> {
    let _ = (text, path);
    todo!("config::parse")
}

/// Parses "40m", "1h30m", "10s", "500ms" (humantime) or a bare number of seconds.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if let Ok(n) = s.parse::<u64>() {
        return Some(Duration::from_secs(n));
    }
    humantime::parse_duration(s).ok()
}

/// Valid stream id: `[a-z0-9][a-z0-9._-]{0,63}`.
pub fn valid_id(id: &str) -> bool {
    let b = id.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'_' | b'-'))
}
