//! The typed swarm file: what pass 1 makes of `loki.toml`'s text, with
//! every stream's settings resolved. Plain data, read by the rest of loki.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::model::StreamId;
use crate::plan;

/// Placeholders loki fills itself; a template may use them without a var.
pub const BUILTIN_PLACEHOLDERS: &[&str] = &[
    "STREAM_ID",
    "ATTEMPT",
    "FEEDBACK",
    "OUTPUTS",
    "TARGET",
    "BRANCH",
];

/// The whole swarm file, with every stream's settings resolved (defaults
/// from `[agent]` / `[checks]` applied, overrides on top).
#[derive(Debug, Clone)]
pub struct SwarmFile {
    /// Absolute path of the swarm file.
    pub path: PathBuf,
    /// Folder of the swarm file; prompt paths are relative to it.
    pub root: PathBuf,
    pub swarm: SwarmSettings,
    pub merge: MergeSettings,
    /// In file order.
    pub streams: Vec<StreamConfig>,
    /// Every `for_each` stream, in file order. A template whose items come
    /// from a file another stream writes ([`Template::deferred`]) has no
    /// instances in `streams` yet: the supervisor makes them when its
    /// dependencies have merged ([`super::fanout`]).
    pub templates: Vec<Template>,
    /// `[validators.<name>]`: the reviewer agents streams name in
    /// `[checks] validators`.
    pub validators: BTreeMap<String, Validator>,
    /// (line, column) per stream, in stream order, of where its agent
    /// command is set: for [`super::check_agent_commands`], which runs at
    /// the start of a run, not when loading.
    pub(super) command_at: Vec<(usize, usize)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SwarmSettings {
    /// `None`: the branch checked out in the main worktree.
    pub target: Option<String>,
    /// Streams running at once (default 4, at least 1).
    pub max_parallel: usize,
    /// Stop starting attempts once the swarm's total cost reaches this.
    pub max_budget_usd: Option<f64>,
    /// Stagger between two agent starts while the earlier agent is still
    /// coming up (default 100 ms; see the README's "Start pacing").
    pub spawn_interval: Duration,
    /// At this share of a usage window (`allowed_warning`), start no new
    /// attempt until it resets.
    pub pause_at_utilization: Option<f64>,
    /// The longest usage-limit wait a run sits out (default 8h); a longer
    /// one (a weekly limit) ends the run, resumable by the next.
    pub max_wait: Duration,
    /// Validators running at once; `None`: they share `max_parallel` with
    /// the streams' own agents.
    pub max_validators: Option<usize>,
    /// The git remote several supervisors share the swarm through
    /// (`loki run --remote` overrides it; see `supervisor/remote.rs`).
    pub remote: Option<String>,
    /// How long a claim on the remote lasts unless renewed (default 2m).
    pub lease: Duration,
    /// (line, column) of the `target` value, for `loki run`'s refusal of a
    /// branch that does not exist (only known once git is asked).
    pub target_at: Option<(usize, usize)>,
}

/// `[merge]`: what happens when a stream's merge conflicts.
#[derive(Debug, Clone, PartialEq)]
pub struct MergeSettings {
    /// `resolve = "agent"` (`Some(true)`): a resolver attempt of the
    /// stream's agent resolves the conflict; `"none"` (`Some(false)`): the
    /// stream is left conflicted for a person. Unset: "agent" when the
    /// stream's agent is claude.
    pub resolve: Option<bool>,
    /// Resolver attempts per conflict (default 1).
    pub max_resolve_attempts: u32,
}

impl Default for MergeSettings {
    fn default() -> Self {
        MergeSettings {
            resolve: None,
            max_resolve_attempts: 1,
        }
    }
}

impl MergeSettings {
    /// Resolver attempts a conflict of a stream with `agent` gets.
    pub fn resolver_attempts(&self, agent: &AgentSettings) -> u32 {
        match self.resolve.unwrap_or_else(|| agent.is_claude()) {
            true => self.max_resolve_attempts,
            false => 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct AgentSettings {
    /// Executable on PATH or a path (a relative path is relative to the repository root).
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
    /// How the agent is contained beyond its process group (default none).
    pub sandbox: Sandbox,
    /// A claude persona, `.claude/agents/<name>.md`: passed as `--agent`.
    pub agent_type: Option<String>,
}

/// `[agent] sandbox`: what an agent may write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sandbox {
    /// No containment beyond the process group and the keeper.
    #[default]
    None,
    /// bubblewrap: the filesystem read-only but for the worktree, the git
    /// dir entries a commit needs, a private /tmp and the agent's config.
    Bwrap,
}

/// `sandbox` values, as written in the swarm file.
pub const SANDBOXES: &[&str] = &["none", "bwrap"];

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
    /// `[checks.commands]`: named check commands, run at once, each with
    /// its own timeout; a non-blocking one's failure is a warning.
    pub commands: Vec<CheckCommand>,
    /// Default 5m.
    pub command_timeout: Duration,
    /// Human approval gate before merging.
    pub approve: bool,
    /// `validators = ["canon-guardian", …]`: the reviewer agents that judge
    /// an attempt whose deterministic checks passed.
    pub validators: Vec<String>,
}

impl CheckSettings {
    /// Whether the checks start a process in the worktree (`command` or
    /// `[checks.commands]`): one may write files there, so what the checks
    /// saw is not what is left afterwards.
    pub fn runs_commands(&self) -> bool {
        self.command.is_some() || !self.commands.is_empty()
    }
}

/// `[validators.<name>]`: a reviewer agent. It runs in a disposable
/// checkout of the attempt's commit, with `prompt` rendered from the
/// stream's vars, the built-ins, `{{OUTPUTS}}` and `{{DRAFT}}`, and reports
/// a verdict (see `checks::verdict`).
#[derive(Debug, Clone, PartialEq)]
pub struct Validator {
    pub name: String,
    /// Relative to the swarm file's folder, like a stream's prompt.
    pub prompt: PathBuf,
    /// Default true: a `fail` blocks the merge; false: its issues only warn.
    pub blocking: bool,
    /// `[agent]` with the validator's own keys on top (`timeout` is its
    /// time limit: running out of it is a warning, not a failure).
    pub agent: AgentSettings,
    /// (line, column) of its `command` (else its table), for the command
    /// preflight's refusal.
    pub at: (usize, usize),
}

/// One of `[checks.commands]`: `lint = "scripts/lint.sh"`, or
/// `style = { run = "…", timeout = "2m", blocking = false }`.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckCommand {
    pub name: String,
    /// Run in the worktree through `sh -c`.
    pub run: String,
    /// Default: `command_timeout`.
    pub timeout: Option<Duration>,
    /// Default true; false: a failure is a warning.
    pub blocking: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StreamConfig {
    pub id: StreamId,
    /// Relative to the swarm file's folder ([`SwarmFile::root`]), where it
    /// is read from at run time too (in the user's checkout).
    pub prompt: PathBuf,
    pub vars: BTreeMap<String, String>,
    /// Placeholder name → path relative to the worktree root.
    pub inputs: BTreeMap<String, String>,
    /// Paths relative to the worktree root.
    pub outputs: Vec<String>,
    pub depends_on: Vec<String>,
    pub agent: AgentSettings,
    pub checks: CheckSettings,
    /// The `for_each` stream this one is an instance of.
    pub template: Option<String>,
    /// `validation_report = "path"`: the attempt's `validation.json` is
    /// also committed there, so a later stream can read it as an input.
    pub validation_report: Option<String>,
}

/// `for_each`: where a template's items come from (see [`super::fanout`]).
#[derive(Debug, Clone)]
pub enum ForEach {
    /// One item per section of `file` that starts at a line matching
    /// `marker` and runs to the next such line, a `---` line, or the end.
    Sections { file: String, marker: regex::Regex },
    /// One item per file of the target's tree matching the pattern.
    Glob { pattern: String },
    /// One item per value.
    List { items: Vec<String> },
}

impl ForEach {
    /// How the source is named in messages.
    pub fn describe(&self) -> String {
        match self {
            ForEach::Sections { file, marker } => {
                format!("the sections of `{file}` (marker `{}`)", marker.as_str())
            }
            ForEach::Glob { pattern } => format!("the files matching `{pattern}`"),
            ForEach::List { .. } => "its `list`".into(),
        }
    }
}

/// A `[[streams]]` table with `for_each`: a pattern for one stream per item.
#[derive(Debug, Clone)]
pub struct Template {
    /// The stream as written: `{{KEY}}`, `{{ITEM}}`, `{{PATH}}` and the
    /// marker's captures are still unfilled in its outputs, inputs, vars
    /// and `depends_on`.
    pub stream: StreamConfig,
    pub for_each: ForEach,
    /// Zero items is a finished fan-out, not an error.
    pub allow_empty: bool,
    /// The source is written by a stream the template depends on: its
    /// instances are made when that has merged, from the file as merged.
    pub deferred: bool,
    /// (line, column) of the `for_each` value, for refusals at run time.
    pub at: (usize, usize),
}

impl Default for SwarmSettings {
    fn default() -> Self {
        SwarmSettings {
            target: None,
            max_parallel: 4,
            max_budget_usd: None,
            spawn_interval: Duration::from_millis(100),
            pause_at_utilization: None,
            max_wait: Duration::from_secs(8 * 3600),
            max_validators: None,
            remote: None,
            lease: Duration::from_secs(120),
            target_at: None,
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
            sandbox: Sandbox::None,
            agent_type: None,
        }
    }
}

impl Default for CheckSettings {
    fn default() -> Self {
        CheckSettings {
            words: None,
            word_tolerance: 0.10,
            require: Vec::new(),
            validators: Vec::new(),
            forbid: Vec::new(),
            canonical: true,
            command: None,
            commands: Vec::new(),
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

/// The dependency graph sees a stream as its id and `depends_on`.
impl plan::Node for StreamConfig {
    fn id(&self) -> &str {
        &self.id
    }
    fn deps(&self) -> &[String] {
        &self.depends_on
    }
}

impl SwarmFile {
    pub fn stream(&self, id: &str) -> Option<&StreamConfig> {
        self.streams.iter().find(|s| s.id == id)
    }

    pub fn template(&self, id: &str) -> Option<&Template> {
        self.templates.iter().find(|t| t.stream.id == id)
    }
}

/// `permission_mode` values Claude Code 2.1 accepts (`claude --help`).
pub const PERMISSION_MODES: &[&str] = &[
    "default",
    "acceptEdits",
    "plan",
    "bypassPermissions",
    "dontAsk",
    "auto",
];

/// Placeholders `prompts/retry.md` may use: a retry fills exactly these.
pub const RETRY_PLACEHOLDERS: &[&str] = &["ATTEMPT", "MAX_ATTEMPTS", "VIOLATIONS"];
