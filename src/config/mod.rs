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
//!
//! Decisions worth knowing:
//!
//! - Overrides replace the `[agent]` value, except `env`, whose entries are
//!   added on top of `[agent] env` (a stream sets `env = { X = "1" }`
//!   without losing the swarm-wide variables). Setting the same key both
//!   directly and in `[streams.agent]` (or `approve` both directly and in
//!   `[streams.checks]`) is refused as ambiguous.
//! - Durations are strings (`"40m"`, `"1h30m"`, `"10s"`, `"500ms"`) or
//!   whole seconds. `timeout`, `idle_timeout` and `command_timeout` must be
//!   longer than zero; `spawn_interval` and `kill_grace` may be zero.
//! - `vars` values may be strings, integers, floats or booleans (converted
//!   to text); `env` values must be strings. A var or input may not reuse a
//!   built-in placeholder name, and a name may not be both a var and an input.
//! - `outputs` and `inputs` paths are relative to the worktree root, without
//!   `..`, outside `.loki/` and `.git`. `depends_on` repeats are ignored; an
//!   output listed twice (`a.md` and `./a.md` too) is refused, as a typo.
//!   Two streams may share a new output only when one depends on the other
//!   (a revision pass); otherwise both would create it and the second merge
//!   would conflict hours into a run, so it is refused up front. A file
//!   already in the target may be shared (git may merge the two edits).
//! - A stream may have no outputs (`outputs = []` or no key): a code
//!   feature changes files no one can list in advance, and its gate is then
//!   the agent's success, the `canonical` check of the files it touched and
//!   the custom `command`. `words` and `forbid` have nothing to look at
//!   then; `require` would fail every attempt, so it is refused.
//! - Prompt templates are read from the main checkout (relative to the swarm
//!   file's folder) when the swarm file is validated, and so is
//!   `prompts/retry.md` (at the repository root, where a retry reads it): it
//!   may use only [`RETRY_PLACEHOLDERS`].
//! - Each input must be a file in the target branch's tree or an output of a
//!   stream this one depends on, directly or not; so must the script a
//!   check `command` runs when it names one by path (executable when run
//!   directly; see `script_of`). The tree, not the checkout, because a
//!   stream's worktree starts from the tree: an uncommitted file would pass
//!   a look at the checkout and then be missing. Skipped when the swarm file
//!   is not in a repository with that branch (`loki run` refuses that).
//! - Whether the agent command resolves is checked by
//!   [`check_agent_commands`], not by [`load`]: a rehearsal replaces the
//!   agent, and `loki status` starts none.
//! - Errors are reported one at a time, in this order: TOML syntax, the
//!   `[swarm]` / `[agent]` / `[checks]` tables, each stream in file order,
//!   `depends_on` ids, cycles, prompt files and their placeholders,
//!   `prompts/retry.md`, then each stream's inputs and check script.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::fs;
use std::io::ErrorKind;
use std::ops::Range;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use crate::{plan, prompt};

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
    /// In file order.
    pub streams: Vec<StreamConfig>,
    /// (line, column) per stream, in stream order, of where its agent
    /// command is set: for [`check_agent_commands`], which runs after loading.
    command_at: Vec<(usize, usize)>,
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
    /// (line, column) of the `target` value, for `loki run`'s refusal of a
    /// branch that does not exist (only known once git is asked).
    pub target_at: Option<(usize, usize)>,
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
}

impl Default for SwarmSettings {
    fn default() -> Self {
        SwarmSettings {
            target: None,
            max_parallel: 4,
            max_budget_usd: None,
            spawn_interval: Duration::from_secs(1),
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
            write!(
                f,
                "{}:{}:{}: {}",
                self.file.display(),
                self.line,
                self.col,
                self.message
            )?;
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

/// `permission_mode` values Claude Code 2.1 accepts (`claude --help`).
pub const PERMISSION_MODES: &[&str] = &[
    "default",
    "acceptEdits",
    "plan",
    "bypassPermissions",
    "dontAsk",
    "auto",
];

const TOP_KEYS: &[&str] = &["swarm", "agent", "checks", "streams"];
const SWARM_KEYS: &[&str] = &["target", "max_parallel", "max_budget_usd", "spawn_interval"];
const AGENT_KEYS: &[&str] = &[
    "command",
    "args",
    "model",
    "permission_mode",
    "timeout",
    "idle_timeout",
    "max_attempts",
    "env",
    "kill_grace",
    "resume",
    "max_budget_usd",
];
const CHECK_KEYS: &[&str] = &[
    "words",
    "word_tolerance",
    "require",
    "forbid",
    "canonical",
    "command",
    "command_timeout",
    "approve",
];
const STREAM_KEYS: &[&str] = &[
    "id",
    "prompt",
    "vars",
    "inputs",
    "outputs",
    "depends_on",
    "approve",
    "agent",
    "checks",
];

/// Common wrong names for keys, and the key meant.
const ALIASES: &[(&str, &str)] = &[
    ("dependencies", "depends_on"),
    ("deps", "depends_on"),
    ("depends", "depends_on"),
    ("needs", "depends_on"),
    ("after", "depends_on"),
    ("variables", "vars"),
    ("permissions", "permission_mode"),
    ("mode", "permission_mode"),
    ("budget", "max_budget_usd"),
    ("parallel", "max_parallel"),
    ("jobs", "max_parallel"),
    ("concurrency", "max_parallel"),
    ("retries", "max_attempts"),
    ("attempts", "max_attempts"),
    ("branch", "target"),
    ("environment", "env"),
    ("template", "prompt"),
    ("name", "id"),
];

const DURATION_HELP: &str = "write a duration such as \"40m\", \"1h30m\", \"10s\" or \"500ms\", \
                             or a whole number of seconds";

const MINIMAL_STREAM: &str = "add at least one stream, for example:\n\n    [[streams]]\n    \
                              id = \"ch01\"\n    prompt = \"prompts/chapter.md\"\n    \
                              outputs = [\"chapters/ch01.md\"]";

/// Reads and validates the swarm file at `path`. Reads prompt templates to
/// check their placeholders; creates nothing.
pub fn load(path: &Path) -> Result<SwarmFile, ConfigError> {
    let whole = |message: String, help: &str| ConfigError {
        file: path.to_path_buf(),
        line: 0,
        col: 0,
        message,
        help: help.to_string(),
    };
    if path.is_dir() {
        return Err(whole(
            "the swarm file is a folder, not a file".into(),
            "pass the path of the swarm file itself, e.g. `--config loki.toml`",
        ));
    }
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Err(whole(
                "swarm file not found".into(),
                "run `loki init` to create one here, or pass `--config <path>` to use another \
                 swarm file",
            ));
        }
        Err(e) => {
            return Err(whole(
                format!("cannot read the swarm file: {e}"),
                "check that the file exists and that you may read it",
            ));
        }
    };
    let text = utf8_text(path, bytes, "the swarm file", "save loki.toml as UTF-8")?;
    parse(&text, path)
}

/// Parses and validates swarm-file text; `path` is used for messages and to
/// find prompt files (relative to its folder).
pub fn parse(text: &str, path: &Path) -> Result<SwarmFile, ConfigError> {
    Parser { text, file: path }.parse()
}

/// Parses "40m", "1h30m", "10s", "500ms" (humantime) or a bare number of seconds.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if let Ok(n) = s.parse::<u64>() {
        return Some(Duration::from_secs(n));
    }
    humantime::parse_duration(s).ok()
}

pub use crate::model::id::{valid_id, valid_stream_id};

/// 1-based (line, column) of byte `offset` in `text`; the column counts
/// characters, not bytes.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut off = offset.min(text.len());
    while !text.is_char_boundary(off) {
        off -= 1;
    }
    let before = &text[..off];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    (line, before[line_start..].chars().count() + 1)
}

type Val<'i> = Spanned<DeValue<'i>>;
type Res<T> = Result<T, ConfigError>;

/// A key of a table with its span and value.
#[derive(Clone)]
struct Entry<'a, 'i> {
    key: &'a str,
    span: Range<usize>,
    val: &'a Val<'i>,
}

/// The entries of `t` in file order (toml keeps them sorted by name).
fn entries<'a, 'i>(t: &'a DeTable<'i>) -> Vec<Entry<'a, 'i>> {
    let mut v: Vec<Entry<'a, 'i>> = t
        .iter()
        .map(|(k, val)| Entry {
            key: k.get_ref().as_ref(),
            span: k.span(),
            val,
        })
        .collect();
    v.sort_by_key(|e| e.span.start);
    v
}

fn type_name(v: &Val<'_>) -> &'static str {
    v.get_ref().type_str()
}

fn integer(v: &Val<'_>) -> Option<i128> {
    match v.get_ref() {
        DeValue::Integer(i) => i128::from_str_radix(i.as_str(), i.radix()).ok(),
        _ => None,
    }
}

fn number(v: &Val<'_>) -> Option<f64> {
    match v.get_ref() {
        DeValue::Integer(_) => integer(v).map(|n| n as f64),
        DeValue::Float(f) => f.as_str().parse::<f64>().ok(),
        _ => None,
    }
}

/// Edit distance with transpositions (optimal string alignment), ignoring case.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.to_lowercase().chars().collect();
    let b: Vec<char> = b.to_lowercase().chars().collect();
    let mut d: Vec<Vec<usize>> = (0..=a.len())
        .map(|i| (0..=b.len()).map(|j| if i == 0 { j } else { i }).collect())
        .collect();
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

/// The candidate closest to `word`, if one is close enough to be a typo.
fn suggest<S: AsRef<str>>(word: &str, candidates: &[S]) -> Option<String> {
    if let Some((_, to)) = ALIASES.iter().find(|(from, _)| *from == word) {
        if candidates.iter().any(|c| c.as_ref() == *to) {
            return Some(to.to_string());
        }
    }
    let len = word.chars().count();
    let limit = (len / 3).max(1);
    candidates
        .iter()
        .map(|c| (edit_distance(word, c.as_ref()), c.as_ref()))
        .filter(|(d, _)| *d <= limit && *d < len)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c.to_string())
}

/// A close id for an invalid one, if there is one.
fn sanitized_id(id: &str) -> Option<String> {
    let mut s: String = id
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    while s.contains("..") {
        s = s.replace("..", ".");
    }
    let mut s = s
        .trim_start_matches(['.', '_', '-'])
        .chars()
        .take(64)
        .collect::<String>();
    loop {
        let before = s.len();
        s = s.trim_end_matches('.').to_string();
        if let Some(t) = s.strip_suffix(".lock") {
            s = t.to_string();
        }
        if s.len() == before {
            break;
        }
    }
    (valid_stream_id(&s) && s != id).then_some(s)
}

/// A valid placeholder name close to an invalid one.
fn sanitized_name(name: &str) -> String {
    let mut s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    if !s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
        s.insert(0, '_');
    }
    s
}

/// `p` as git names it in a tree: its normal components joined by `/`
/// (`./a//b.md` is `a/b.md`), so two spellings of one file compare equal.
fn normal_path(p: &str) -> String {
    Path::new(p)
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_string_lossy()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Normalised outputs of every stream `id` depends on, directly or not:
/// all of them are merged into the target before `id` starts.
fn upstream_outputs(configs: &[StreamConfig], id: &str) -> BTreeSet<String> {
    let upstream = plan::dependencies_of(configs, id);
    configs
        .iter()
        .filter(|c| upstream.contains(&c.id))
        .flat_map(|c| c.outputs.iter().map(|o| normal_path(o)))
        .collect()
}

/// Git file modes of tree entries.
const MODE_TREE: i32 = 0o040000;
const MODE_EXEC: i32 = 0o100755;
const MODE_LINK: i32 = 0o120000;

/// The target branch's tree. Inputs and check scripts are checked here, not
/// in the checkout: a stream's worktree starts as exactly this tree (plus
/// what its dependencies merge), so a file that is only in the checkout,
/// uncommitted, would pass a look at the checkout and then be missing at
/// run time.
struct TargetTree {
    repo: git2::Repository,
    tree: git2::Oid,
    branch: String,
    /// The main worktree's root (the checkout).
    root: PathBuf,
}

impl TargetTree {
    /// `None` when there is no such branch (or no repository, or a detached
    /// HEAD and no `target`): `loki run` refuses that itself, with its own
    /// message, before it creates anything.
    fn open(root: &Path, target: Option<&str>) -> Option<TargetTree> {
        let repo = git2::Repository::open(root).ok()?;
        let branch = match target {
            Some(t) => t.to_string(),
            None => crate::git::current_branch(root).ok()??,
        };
        let tree = repo
            .find_branch(&branch, git2::BranchType::Local)
            .ok()?
            .get()
            .peel_to_tree()
            .ok()?
            .id();
        Some(TargetTree {
            repo,
            tree,
            branch,
            root: root.to_path_buf(),
        })
    }

    /// The git file mode of `rel` in the tree; `None` when it is not there.
    fn mode(&self, rel: &str) -> Option<i32> {
        let tree = self.repo.find_tree(self.tree).ok()?;
        let entry = tree.get_path(Path::new(rel)).ok()?;
        Some(entry.filemode())
    }
}

/// How a file `rel` that stream `id` needs can reach its worktree: from
/// the stream that writes it, by committing the copy in the checkout, or
/// by creating it.
fn missing_file_help(rel: &str, id: &str, tree: &TargetTree, raws: &[RawStream]) -> String {
    let b = &tree.branch;
    if let Some(w) = raws
        .iter()
        .find(|w| w.cfg.id != id && w.cfg.outputs.iter().any(|o| normal_path(o) == rel))
    {
        let w = &w.cfg.id;
        return format!(
            "stream `{w}` writes it: add \"{w}\" to the depends_on of stream `{id}`, so that it \
             starts after `{w}` merged"
        );
    }
    if tree.root.join(rel).exists() {
        return format!(
            "it is in your checkout but not committed to `{b}`, and a stream's worktree starts \
             from `{b}`: commit it (`git add {rel} && git commit`)"
        );
    }
    format!(
        "create it and commit it to `{b}`, fix the path (relative to the repository root), or \
         add the stream that writes it (lists it in `outputs`) to depends_on"
    )
}

/// Shells and interpreters whose first argument is a script file.
const INTERPRETERS: &[&str] = &[
    "sh", "bash", "dash", "zsh", "python", "python3", "perl", "ruby", "node",
];

/// The script file a check command runs, and whether it is run directly
/// (so it must be executable): the first word when it is a path
/// (`scripts/check.sh --strict`), or the script given to a shell or an
/// interpreter (`sh scripts/check.sh`), after any `NAME=value` words.
/// `None` otherwise: a bare name (`make`, `test`) is looked up by the shell
/// at run time and may be a builtin, and words with shell syntax (quotes,
/// `$`, globs, redirections) are not second-guessed.
fn script_of(cmd: &str) -> Option<(String, bool)> {
    let plain = |w: &str| !w.contains(|c: char| "'\"$`\\(){}<>|;&*?[]~#!=".contains(c));
    let assignment = |w: &str| {
        w.split_once('=')
            .is_some_and(|(n, _)| prompt::valid_name(n))
    };
    let mut words = cmd.split_whitespace().skip_while(|w| assignment(w));
    let first = words.next()?;
    if !plain(first) {
        return None;
    }
    if first.contains('/') {
        return Some((first.to_string(), true));
    }
    if !INTERPRETERS.contains(&first) {
        return None;
    }
    let script = words.next()?;
    (plain(script) && !script.starts_with('-')).then(|| (script.to_string(), false))
}

/// Placeholders `prompts/retry.md` may use: a retry fills exactly these.
pub const RETRY_PLACEHOLDERS: &[&str] = &["ATTEMPT", "MAX_ATTEMPTS", "VIOLATIONS"];

/// `prompts/retry.md` under `repo_root` (where a retry reads it), when there
/// is one, is UTF-8 text that uses only [`RETRY_PLACEHOLDERS`]: at run time a
/// retry.md that cannot be read or filled is replaced, silently, by one
/// built-in sentence.
fn check_retry_template(repo_root: &Path) -> Res<()> {
    let path = repo_root.join("prompts").join("retry.md");
    let whole = |message: &str, help: String| ConfigError {
        file: path.clone(),
        line: 0,
        col: 0,
        message: message.to_string(),
        help,
    };
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(_) if path.is_dir() => {
            return Err(whole(
                "prompts/retry.md is a folder, not a file",
                "remove it to use the built-in retry text, or make it a template file".into(),
            ))
        }
        Err(e) => {
            return Err(whole(
                &format!("cannot read prompts/retry.md: {e}"),
                "check that you may read it, or remove it to use the built-in retry text".into(),
            ))
        }
    };
    let text = utf8_text(
        &path,
        bytes,
        "prompts/retry.md",
        "save prompts/retry.md as UTF-8",
    )?;
    let allowed = RETRY_PLACEHOLDERS
        .iter()
        .map(|n| format!("{{{{{n}}}}}"))
        .collect::<Vec<_>>()
        .join(", ");
    for (name, line, col) in prompt::placeholders(&text) {
        if RETRY_PLACEHOLDERS.contains(&name.as_str()) {
            continue;
        }
        let near = suggest(&name, RETRY_PLACEHOLDERS)
            .map(|k| format!("did you mean {{{{{k}}}}}? "))
            .unwrap_or_default();
        return Err(ConfigError {
            file: path,
            line,
            col,
            message: format!("placeholder {{{{{name}}}}} is not filled in prompts/retry.md"),
            help: format!(
                "{near}prompts/retry.md may use only {allowed}; remove or rename this one (a \
                 retry text that cannot be filled would be replaced by a built-in sentence)"
            ),
        });
    }
    Ok(())
}

/// `bytes` as text, or a refusal at the first byte that is not UTF-8.
fn utf8_text(path: &Path, bytes: Vec<u8>, what: &str, help: &str) -> Res<String> {
    String::from_utf8(bytes).map_err(|e| {
        let valid = e.utf8_error().valid_up_to();
        let prefix = String::from_utf8_lossy(&e.as_bytes()[..valid]).into_owned();
        let (line, col) = line_col(&prefix, valid);
        ConfigError {
            file: path.to_path_buf(),
            line,
            col,
            message: format!("{what} is not UTF-8 text"),
            help: help.to_string(),
        }
    })
}

/// Why `agent.command` would not start, and how to fix it; `None` when it
/// resolves. Resolved as a run resolves it
/// ([`crate::process::resolve_command`]): a command with a `/` is a path,
/// relative to the repository root `repo_root`, that must be an executable
/// file; a bare name must be an executable on PATH (the stream's `env`
/// PATH when it sets one, as the spawned process would use).
pub fn agent_command_problem(repo_root: &Path, agent: &AgentSettings) -> Option<(String, String)> {
    let c = &agent.command;
    let claude_fix = "install Claude Code: npm install -g @anthropic-ai/claude-code (or set \
                      `command` to the path of your claude)";
    if c.contains('/') {
        let resolved = crate::process::resolve_command(repo_root, c);
        if crate::process::find_executable(&resolved).is_some() {
            return None;
        }
        let p = Path::new(&resolved);
        let why = if !p.exists() {
            "does not exist"
        } else if p.is_dir() {
            "is a folder"
        } else {
            "is not executable"
        };
        let shown = if resolved == *c {
            String::new()
        } else {
            format!(" ({resolved})")
        };
        let help = if why == "is not executable" {
            format!("make it executable: chmod +x {resolved}")
        } else if agent.is_claude() {
            claude_fix.to_string()
        } else {
            format!(
                "put the agent there, or give its right path (absolute, or relative to the \
                 repository root {})",
                repo_root.display()
            )
        };
        return Some((format!("agent command `{c}` {why}{shown}"), help));
    }
    let (found, whose) = match agent.env.get("PATH") {
        Some(path) => (
            std::env::split_paths(path)
                .filter(|d| !d.as_os_str().is_empty())
                .any(|d| crate::process::find_executable(&d.join(c).to_string_lossy()).is_some()),
            "the PATH set in the agent's `env`",
        ),
        None => (crate::process::find_executable(c).is_some(), "PATH"),
    };
    if found {
        return None;
    }
    let help = if agent.is_claude() {
        claude_fix.to_string()
    } else {
        format!("put `{c}` on PATH or give its path (absolute, or relative to the repository root)")
    };
    Some((
        format!("agent command `{c}` is not an executable on {whose}"),
        help,
    ))
}

/// Refuses the first stream whose agent command does not resolve (see
/// [`agent_command_problem`]), at the `command` key that set it (or
/// `[agent]`, or the stream, when it is the default `claude`).
///
/// Not part of [`load`]: `loki run --rehearse` replaces the agent with
/// loki's stand-in, and `loki status` or `loki check` never start one. `loki
/// run` calls it before it creates anything.
pub fn check_agent_commands(cfg: &SwarmFile, repo_root: &Path) -> Result<(), ConfigError> {
    for (i, s) in cfg.streams.iter().enumerate() {
        let Some((message, help)) = agent_command_problem(repo_root, &s.agent) else {
            continue;
        };
        let (line, col) = cfg.command_at.get(i).copied().unwrap_or((0, 0));
        return Err(ConfigError {
            file: cfg.path.clone(),
            line,
            col,
            message: format!("stream `{}`: {message}", s.id),
            help,
        });
    }
    Ok(())
}

/// Which table a key stands in, for messages and the list of valid keys.
#[derive(Clone, Copy)]
enum Section<'a> {
    Top,
    Swarm,
    Agent,
    Checks,
    Stream(&'a str),
    StreamAgent(&'a str),
    StreamChecks(&'a str),
}

impl Section<'_> {
    fn label(&self) -> String {
        match self {
            Section::Top => "the top level of the swarm file".into(),
            Section::Swarm => "[swarm]".into(),
            Section::Agent => "[agent]".into(),
            Section::Checks => "[checks]".into(),
            Section::Stream(id) => format!("[[streams]] `{id}`"),
            Section::StreamAgent(id) => format!("[streams.agent] of stream `{id}`"),
            Section::StreamChecks(id) => format!("[streams.checks] of stream `{id}`"),
        }
    }

    fn valid(&self) -> Vec<&'static str> {
        match self {
            Section::Top => TOP_KEYS.to_vec(),
            Section::Swarm => SWARM_KEYS.to_vec(),
            Section::Agent | Section::StreamAgent(_) => AGENT_KEYS.to_vec(),
            Section::Checks | Section::StreamChecks(_) => CHECK_KEYS.to_vec(),
            Section::Stream(_) => {
                let mut v = STREAM_KEYS.to_vec();
                v.extend(AGENT_KEYS.iter().filter(|k| !STREAM_KEYS.contains(k)));
                v
            }
        }
    }

    /// Where a key that is valid elsewhere belongs.
    fn hint(&self, key: &str) -> Option<String> {
        const STREAM: &str = "a [[streams]] table";
        const ITSELF: &str = "the [[streams]] table itself (keys below a [streams.…] header \
                              belong to that sub-table: move it above the header)";
        let homes: &[(&[&str], &str)] = match self {
            Section::Top => &[
                (SWARM_KEYS, "[swarm]"),
                (AGENT_KEYS, "[agent]"),
                (CHECK_KEYS, "[checks]"),
                (STREAM_KEYS, STREAM),
            ],
            Section::Swarm => &[
                (AGENT_KEYS, "[agent]"),
                (CHECK_KEYS, "[checks]"),
                (STREAM_KEYS, STREAM),
            ],
            Section::Agent => &[
                (SWARM_KEYS, "[swarm]"),
                (CHECK_KEYS, "[checks]"),
                (STREAM_KEYS, STREAM),
            ],
            Section::Checks => &[
                (SWARM_KEYS, "[swarm]"),
                (AGENT_KEYS, "[agent]"),
                (STREAM_KEYS, STREAM),
            ],
            Section::Stream(_) => &[
                (
                    CHECK_KEYS,
                    "[streams.checks] (below this stream's [[streams]] table)",
                ),
                (SWARM_KEYS, "[swarm]"),
            ],
            Section::StreamAgent(_) => &[
                (STREAM_KEYS, ITSELF),
                (CHECK_KEYS, "[streams.checks]"),
                (SWARM_KEYS, "[swarm]"),
            ],
            Section::StreamChecks(_) => &[
                (STREAM_KEYS, ITSELF),
                (AGENT_KEYS, ITSELF),
                (SWARM_KEYS, "[swarm]"),
            ],
        };
        homes
            .iter()
            .find(|(keys, _)| keys.contains(&key))
            .map(|(_, place)| format!("`{key}` belongs in {place}. "))
    }
}

/// A stream as parsed, with the spans later checks point at.
struct RawStream {
    cfg: StreamConfig,
    header: Range<usize>,
    prompt_span: Range<usize>,
    deps: Vec<(String, Range<usize>)>,
    /// Input name → the span of its path.
    input_spans: BTreeMap<String, Range<usize>>,
    /// The span of each entry of `cfg.outputs`, in order.
    output_spans: Vec<Range<usize>>,
    /// The stream's own `command` key (directly or in [streams.agent]).
    command_key: Option<Range<usize>>,
    /// The stream's own check `command` value (in [streams.checks]).
    check_command: Option<Range<usize>>,
}

/// Spans in `[agent]` and `[checks]` that stream refusals fall back on when
/// the stream does not set the key itself.
#[derive(Default)]
struct BaseSpans {
    /// The `agent` key of the `[agent]` header.
    agent: Option<Range<usize>>,
    /// The `command` key in `[agent]`.
    agent_command: Option<Range<usize>>,
    /// The `command` value in `[checks]`.
    check_command: Option<Range<usize>>,
}

struct Parser<'t> {
    text: &'t str,
    file: &'t Path,
}

impl Parser<'_> {
    fn err(
        &self,
        span: &Range<usize>,
        message: impl Into<String>,
        help: impl Into<String>,
    ) -> ConfigError {
        let (line, col) = line_col(self.text, span.start);
        ConfigError {
            file: self.file.to_path_buf(),
            line,
            col,
            message: message.into(),
            help: help.into(),
        }
    }

    fn line(&self, span: &Range<usize>) -> usize {
        line_col(self.text, span.start).0
    }

    fn toml_error(&self, e: &toml::de::Error) -> ConfigError {
        let msg = e.message().trim();
        let mut message = format!("invalid TOML: {msg}");
        let help = if msg.contains("duplicate key") {
            if let Some(key) = e.span().and_then(|s| self.text.get(s)) {
                if !key.is_empty() {
                    message = format!("invalid TOML: duplicate key `{key}`");
                }
            }
            "a key may appear only once in a table, and a [table] header only once; remove or \
             rename the repeated one (each stream is its own [[streams]] table, with double \
             brackets)"
        } else if msg.contains("quoted") {
            "put text values in quotes: key = \"value\""
        } else {
            "fix the TOML syntax here (see https://toml.io)"
        };
        match e.span() {
            Some(s) => self.err(&s, message, help),
            None => ConfigError {
                file: self.file.to_path_buf(),
                line: 0,
                col: 0,
                message,
                help: help.into(),
            },
        }
    }

    fn check_keys(&self, es: &[Entry<'_, '_>], section: Section<'_>) -> Res<()> {
        let valid = section.valid();
        for e in es {
            if valid.contains(&e.key) {
                continue;
            }
            let label = section.label();
            let mut help = section
                .hint(e.key)
                .or_else(|| suggest(e.key, &valid).map(|s| format!("did you mean `{s}`? ")))
                .unwrap_or_default();
            help.push_str(&format!("valid keys in {label}: {}", valid.join(", ")));
            return Err(self.err(&e.span, format!("unknown key `{}` in {label}", e.key), help));
        }
        Ok(())
    }

    fn table<'a, 'i>(&self, key: &str, v: &'a Val<'i>, what: &str) -> Res<&'a DeTable<'i>> {
        match v.get_ref() {
            DeValue::Table(t) => Ok(t),
            _ => Err(self.err(
                &v.span(),
                format!("`{key}` must be a table, found {}", type_name(v)),
                format!("write it as {what}"),
            )),
        }
    }

    fn string(&self, key: &str, v: &Val<'_>) -> Res<String> {
        match v.get_ref() {
            DeValue::String(s) => Ok(s.to_string()),
            _ => Err(self.err(
                &v.span(),
                format!("`{key}` must be a string, found {}", type_name(v)),
                format!("put the value in quotes: {key} = \"...\""),
            )),
        }
    }

    /// A string that must not be empty.
    fn text_value(&self, key: &str, v: &Val<'_>) -> Res<String> {
        let s = self.string(key, v)?;
        if s.trim().is_empty() {
            return Err(self.err(
                &v.span(),
                format!("`{key}` must not be empty"),
                format!("give `{key}` a value, or leave the key out to use the default"),
            ));
        }
        Ok(s)
    }

    fn boolean(&self, key: &str, v: &Val<'_>) -> Res<bool> {
        match v.get_ref() {
            DeValue::Boolean(b) => Ok(*b),
            _ => Err(self.err(
                &v.span(),
                format!("`{key}` must be true or false, found {}", type_name(v)),
                format!("write `{key} = true` or `{key} = false` (without quotes)"),
            )),
        }
    }

    fn pos_int(&self, key: &str, v: &Val<'_>, max: u64, example: &str) -> Res<u64> {
        let help = format!("write a whole number of at least 1, e.g. `{key} = {example}`");
        let found = match v.get_ref() {
            DeValue::Integer(_) => match integer(v) {
                Some(n) if n >= 1 && n <= i128::from(max) => return Ok(n as u64),
                Some(n) if n >= 1 => {
                    return Err(self.err(
                        &v.span(),
                        format!("`{key}` is too large: at most {max}, found {n}"),
                        help,
                    ))
                }
                Some(n) => n.to_string(),
                None => "integer".to_string(),
            },
            _ => type_name(v).to_string(),
        };
        Err(self.err(
            &v.span(),
            format!("`{key}` must be a positive integer, found {found}"),
            help,
        ))
    }

    fn money(&self, key: &str, v: &Val<'_>) -> Res<f64> {
        let found = match number(v) {
            Some(f) if f.is_finite() && f >= 0.0 => return Ok(f),
            Some(_) => self.text.get(v.span()).unwrap_or("a number").to_string(),
            None => type_name(v).to_string(),
        };
        Err(self.err(
            &v.span(),
            format!("`{key}` must be a non-negative number of US dollars, found {found}"),
            format!("e.g. `{key} = 5.0`; leave it out for no limit"),
        ))
    }

    fn duration(&self, key: &str, v: &Val<'_>, allow_zero: bool) -> Res<Duration> {
        let help = format!("{DURATION_HELP}, e.g. `{key} = \"10m\"`");
        let d = match v.get_ref() {
            DeValue::String(s) => match parse_duration(s) {
                Some(d) => d,
                None => {
                    return Err(self.err(
                        &v.span(),
                        format!("`{key}`: \"{s}\" is not a duration"),
                        help,
                    ))
                }
            },
            DeValue::Integer(_) => match integer(v) {
                Some(n) if n >= 0 => Duration::from_secs(u64::try_from(n).unwrap_or(u64::MAX)),
                n => {
                    let found = n.map(|n| n.to_string()).unwrap_or_default();
                    return Err(self.err(
                        &v.span(),
                        format!("`{key}` must not be negative, found {found}"),
                        help,
                    ));
                }
            },
            _ => {
                return Err(self.err(
                    &v.span(),
                    format!(
                        "`{key}` must be a duration (a string such as \"40m\") or a number of \
                         seconds, found {}",
                        type_name(v)
                    ),
                    help,
                ))
            }
        };
        if !allow_zero && d.is_zero() {
            return Err(self.err(&v.span(), format!("`{key}` must be longer than zero"), help));
        }
        Ok(d)
    }

    /// An array of strings, each with its span; empty strings are refused.
    fn str_array(&self, key: &str, v: &Val<'_>) -> Res<Vec<(String, Range<usize>)>> {
        let DeValue::Array(a) = v.get_ref() else {
            return Err(self.err(
                &v.span(),
                format!(
                    "`{key}` must be an array of strings, found {}",
                    type_name(v)
                ),
                format!("write `{key} = [\"...\", \"...\"]`"),
            ));
        };
        let mut out = Vec::with_capacity(a.len());
        for item in a.iter() {
            match item.get_ref() {
                DeValue::String(s) if s.is_empty() => {
                    return Err(self.err(
                        &item.span(),
                        format!("`{key}` entries must not be empty"),
                        "remove the empty string",
                    ))
                }
                DeValue::String(s) => out.push((s.to_string(), item.span())),
                _ => {
                    return Err(self.err(
                        &item.span(),
                        format!("`{key}` entries must be strings, found {}", type_name(item)),
                        "put each entry in quotes",
                    ))
                }
            }
        }
        Ok(out)
    }

    /// A table of strings: (name, name span, value, value span). With
    /// `lenient`, integers, floats and booleans are taken as their text.
    #[allow(clippy::type_complexity)]
    fn str_table(
        &self,
        key: &str,
        v: &Val<'_>,
        lenient: bool,
    ) -> Res<Vec<(String, Range<usize>, String, Range<usize>)>> {
        let t = self.table(key, v, &format!("`{key} = {{ NAME = \"value\" }}`"))?;
        let mut out = Vec::new();
        for e in entries(t) {
            let value = match e.val.get_ref() {
                DeValue::String(s) => s.to_string(),
                DeValue::Integer(_) if lenient => {
                    integer(e.val).map(|n| n.to_string()).unwrap_or_default()
                }
                DeValue::Float(f) if lenient => f.as_str().to_string(),
                DeValue::Boolean(b) if lenient => b.to_string(),
                _ => {
                    let what = if lenient {
                        "a string, number or boolean"
                    } else {
                        "a string"
                    };
                    return Err(self.err(
                        &e.val.span(),
                        format!(
                            "`{key}.{}` must be {what}, found {}",
                            e.key,
                            type_name(e.val)
                        ),
                        format!("write `{} = \"...\"` inside `{key}`", e.key),
                    ));
                }
            };
            out.push((e.key.to_string(), e.span.clone(), value, e.val.span()));
        }
        Ok(out)
    }

    fn apply_swarm(&self, s: &mut SwarmSettings, e: &Entry<'_, '_>) -> Res<()> {
        let (key, v) = (e.key, e.val);
        match key {
            "target" => {
                let t = self.text_value(key, v)?;
                if t.contains('\0') || !git2::Reference::is_valid_name(&format!("refs/heads/{t}")) {
                    return Err(self.err(
                        &v.span(),
                        format!("`target` \"{t}\" is not a valid branch name"),
                        "name an existing branch such as \"main\", or leave `target` out to use \
                         the branch checked out in the main worktree",
                    ));
                }
                s.target = Some(t);
                s.target_at = Some(line_col(self.text, v.span().start));
            }
            "max_parallel" => {
                let n = self.pos_int(key, v, u64::from(u32::MAX), "4")?;
                s.max_parallel = usize::try_from(n).unwrap_or(usize::MAX);
            }
            "max_budget_usd" => s.max_budget_usd = Some(self.money(key, v)?),
            "spawn_interval" => s.spawn_interval = self.duration(key, v, true)?,
            _ => {}
        }
        Ok(())
    }

    fn apply_agent(&self, a: &mut AgentSettings, e: &Entry<'_, '_>) -> Res<()> {
        let (key, v) = (e.key, e.val);
        match key {
            "command" => a.command = self.text_value(key, v)?,
            "args" => {
                a.args = self
                    .str_array(key, v)?
                    .into_iter()
                    .map(|(s, _)| s)
                    .collect()
            }
            "model" => a.model = self.text_value(key, v)?,
            "permission_mode" => {
                let m = self.string(key, v)?;
                if !PERMISSION_MODES.contains(&m.as_str()) {
                    let near = suggest(&m, PERMISSION_MODES)
                        .map(|s| format!("did you mean \"{s}\"? "))
                        .unwrap_or_default();
                    return Err(self.err(
                        &v.span(),
                        format!(
                            "`permission_mode` must be one of {}; found \"{m}\"",
                            PERMISSION_MODES.join(", ")
                        ),
                        format!(
                            "{near}\"acceptEdits\" (the default) lets the agent edit files; \
                             \"bypassPermissions\" skips every permission check"
                        ),
                    ));
                }
                a.permission_mode = m;
            }
            "timeout" => a.timeout = self.duration(key, v, false)?,
            "idle_timeout" => a.idle_timeout = self.duration(key, v, false)?,
            "max_attempts" => {
                a.max_attempts = u32::try_from(self.pos_int(key, v, u64::from(u32::MAX), "3")?)
                    .unwrap_or(u32::MAX)
            }
            "env" => {
                for (name, span, value, _) in self.str_table(key, v, false)? {
                    if name.is_empty() || name.contains(['=', '\0']) {
                        return Err(self.err(
                            &span,
                            format!("`env`: \"{name}\" is not a valid environment variable name"),
                            "use letters, digits and `_`, e.g. `IS_SANDBOX = \"1\"`",
                        ));
                    }
                    a.env.insert(name, value);
                }
            }
            "kill_grace" => a.kill_grace = self.duration(key, v, true)?,
            "resume" => a.resume = self.boolean(key, v)?,
            "max_budget_usd" => a.max_budget_usd = Some(self.money(key, v)?),
            _ => {}
        }
        Ok(())
    }

    fn apply_check(&self, c: &mut CheckSettings, e: &Entry<'_, '_>) -> Res<()> {
        let (key, v) = (e.key, e.val);
        match key {
            "words" => c.words = Some(self.words(v)?),
            "word_tolerance" => match number(v) {
                Some(f) if (0.0..=1.0).contains(&f) => c.word_tolerance = f,
                n => {
                    let found = match n {
                        Some(_) => self.text.get(v.span()).unwrap_or("a number").to_string(),
                        None => type_name(v).to_string(),
                    };
                    return Err(self.err(
                        &v.span(),
                        format!("`word_tolerance` must be a number from 0 to 1, found {found}"),
                        "it is a fraction: 0.1 lets a word count up to 10% outside `words` \
                         pass with a warning",
                    ));
                }
            },
            "require" => {
                c.require = self
                    .str_array(key, v)?
                    .into_iter()
                    .map(|(s, _)| s)
                    .collect()
            }
            "forbid" => {
                c.forbid = self
                    .str_array(key, v)?
                    .into_iter()
                    .map(|(s, _)| s)
                    .collect()
            }
            "canonical" => c.canonical = self.boolean(key, v)?,
            "command" => c.command = Some(self.text_value(key, v)?),
            "command_timeout" => c.command_timeout = self.duration(key, v, false)?,
            "approve" => c.approve = self.boolean(key, v)?,
            _ => {}
        }
        Ok(())
    }

    fn words(&self, v: &Val<'_>) -> Res<(u64, u64)> {
        let help = "write `words = [min, max]`, e.g. `words = [1500, 3000]`: every output must \
                    have between 1500 and 3000 words";
        let DeValue::Array(a) = v.get_ref() else {
            return Err(self.err(
                &v.span(),
                format!(
                    "`words` must be [min, max], two whole numbers, found {}",
                    type_name(v)
                ),
                help,
            ));
        };
        if a.len() != 2 {
            return Err(self.err(
                &v.span(),
                format!(
                    "`words` must be [min, max], two whole numbers, found {} entries",
                    a.len()
                ),
                help,
            ));
        }
        let mut nums = [0u64; 2];
        for (slot, item) in nums.iter_mut().zip(a.iter()) {
            match integer(item) {
                Some(n) if n >= 0 => *slot = u64::try_from(n).unwrap_or(u64::MAX),
                n => {
                    let found = match n {
                        Some(n) => n.to_string(),
                        None => type_name(item).to_string(),
                    };
                    return Err(self.err(
                        &item.span(),
                        format!("`words` entries must be non-negative integers, found {found}"),
                        help,
                    ));
                }
            }
        }
        if nums[0] > nums[1] {
            return Err(self.err(
                &v.span(),
                format!(
                    "`words` minimum {} is greater than maximum {}",
                    nums[0], nums[1]
                ),
                "write [min, max] with min ≤ max",
            ));
        }
        Ok((nums[0], nums[1]))
    }

    /// Refuses a path that is not a plain relative path inside the worktree.
    fn rel_path(&self, label: &str, p: &str, span: &Range<usize>) -> Res<()> {
        let path = Path::new(p);
        let normal: Vec<&std::ffi::OsStr> = path
            .components()
            .filter_map(|c| match c {
                Component::Normal(s) => Some(s),
                _ => None,
            })
            .collect();
        let why = if path.has_root() {
            "must be relative to the repository root, not absolute"
        } else if path.components().any(|c| matches!(c, Component::ParentDir)) {
            "must not contain `..`"
        } else if normal.is_empty() {
            "must name a file"
        } else if normal[0] == ".loki" {
            "must not be under `.loki/` (loki's own folder)"
        } else if normal.iter().any(|c| *c == ".git") {
            "must not be inside `.git`"
        } else {
            return Ok(());
        };
        Err(self.err(
            span,
            format!("`{label}`: path \"{p}\" {why}"),
            "write a path relative to the repository root (the worktree root), e.g. \
             \"chapters/ch01.md\"",
        ))
    }

    fn placeholder_name(&self, key: &str, name: &str, span: &Range<usize>) -> Res<()> {
        if !prompt::valid_name(name) {
            let s = sanitized_name(name);
            return Err(self.err(
                span,
                format!("`{key}`: \"{name}\" is not a valid placeholder name"),
                format!(
                    "placeholder names are letters, digits and `_`, not starting with a digit, \
                     e.g. `{s}`, used as {{{{{s}}}}} in the template"
                ),
            ));
        }
        if BUILTIN_PLACEHOLDERS.contains(&name) {
            return Err(self.err(
                span,
                format!("`{key}`: {{{{{name}}}}} is a built-in placeholder that loki fills itself"),
                format!(
                    "rename it; the built-ins are {}",
                    BUILTIN_PLACEHOLDERS.join(", ")
                ),
            ));
        }
        Ok(())
    }

    fn stream(
        &self,
        n: usize,
        v: &Val<'_>,
        base_agent: &AgentSettings,
        base_checks: &CheckSettings,
        ids: &mut HashMap<String, Range<usize>>,
    ) -> Res<RawStream> {
        let header = v.span();
        let DeValue::Table(t) = v.get_ref() else {
            return Err(self.err(
                &header,
                format!("each stream must be a table, found {}", type_name(v)),
                "write each stream as a [[streams]] table",
            ));
        };
        let es = entries(t);
        let Some(id_e) = es.iter().find(|e| e.key == "id") else {
            return Err(self.err(
                &header,
                format!("stream #{n} has no `id`"),
                "add `id = \"...\"`: 1 to 64 lowercase letters, digits, `.`, `_` or `-`, e.g. \
                 `id = \"ch01\"` (it names the branch loki/<id>)",
            ));
        };
        let id = self.string("id", id_e.val)?;
        if !valid_stream_id(&id) {
            let mut help = "ids are 1 to 64 characters: lowercase letters, digits, `.`, `_` and \
                            `-`, starting with a letter or digit, without `..` and not ending \
                            in `.` or `.lock` (the id names the branch loki/<id>)"
                .to_string();
            if let Some(s) = sanitized_id(&id) {
                help.push_str(&format!("; try `{s}`"));
            }
            return Err(self.err(&id_e.val.span(), format!("invalid stream id `{id}`"), help));
        }
        if let Some(first) = ids.get(&id) {
            return Err(self.err(
                &id_e.val.span(),
                format!(
                    "duplicate stream id `{id}` (first used at line {})",
                    self.line(first)
                ),
                "every stream needs its own id (it names the branch loki/<id>): rename one of \
                 them",
            ));
        }
        ids.insert(id.clone(), id_e.val.span());
        self.check_keys(&es, Section::Stream(&id))?;

        let mut prompt_path: Option<(PathBuf, Range<usize>)> = None;
        let mut vars = BTreeMap::new();
        let mut inputs = BTreeMap::new();
        let mut input_keys: Vec<(String, Range<usize>)> = Vec::new();
        let mut input_spans = BTreeMap::new();
        let mut outputs: Vec<String> = Vec::new();
        let mut output_spans: Vec<Range<usize>> = Vec::new();
        let mut outputs_span: Option<Range<usize>> = None;
        let mut deps: Vec<(String, Range<usize>)> = Vec::new();
        let mut agent_entries = Vec::new();
        let mut check_entries = Vec::new();
        for e in &es {
            match e.key {
                "id" => {}
                "prompt" => {
                    prompt_path = Some((
                        PathBuf::from(self.text_value("prompt", e.val)?),
                        e.val.span(),
                    ))
                }
                "vars" => {
                    for (name, span, value, _) in self.str_table("vars", e.val, true)? {
                        self.placeholder_name("vars", &name, &span)?;
                        vars.insert(name, value);
                    }
                }
                "inputs" => {
                    for (name, span, value, vspan) in self.str_table("inputs", e.val, false)? {
                        self.placeholder_name("inputs", &name, &span)?;
                        self.rel_path(&format!("inputs.{name}"), &value, &vspan)?;
                        input_keys.push((name.clone(), span));
                        input_spans.insert(name.clone(), vspan);
                        inputs.insert(name, value);
                    }
                }
                "outputs" => {
                    let mut seen: Vec<(String, Range<usize>)> = Vec::new();
                    for (p, span) in self.str_array("outputs", e.val)? {
                        self.rel_path("outputs", &p, &span)?;
                        let key = normal_path(&p);
                        if let Some((_, first)) = seen.iter().find(|(k, _)| *k == key) {
                            let (line, col) = line_col(self.text, first.start);
                            return Err(self.err(
                                &span,
                                format!(
                                    "`outputs`: \"{p}\" is listed twice for stream `{id}` \
                                     (first at line {line}, column {col})"
                                ),
                                "remove the repeated entry: each output is one file, listed once",
                            ));
                        }
                        seen.push((key, span.clone()));
                        output_spans.push(span);
                        outputs.push(p);
                    }
                    outputs_span = Some(e.val.span());
                }
                "depends_on" => {
                    for (d, span) in self.str_array("depends_on", e.val)? {
                        if !deps.iter().any(|(x, _)| *x == d) {
                            deps.push((d, span));
                        }
                    }
                }
                "approve" => check_entries.push(e.clone()),
                "agent" => {
                    let t = self.table("agent", e.val, "an [streams.agent] table")?;
                    let sub = entries(t);
                    self.check_keys(&sub, Section::StreamAgent(&id))?;
                    agent_entries.extend(sub);
                }
                "checks" => {
                    let t = self.table("checks", e.val, "a [streams.checks] table")?;
                    let sub = entries(t);
                    self.check_keys(&sub, Section::StreamChecks(&id))?;
                    check_entries.extend(sub);
                }
                _ => agent_entries.push(e.clone()),
            }
        }
        for (name, span) in &input_keys {
            if vars.contains_key(name) {
                return Err(self.err(
                    span,
                    format!("{{{{{name}}}}} is both a var and an input of stream `{id}`"),
                    "rename one of them: a placeholder is filled either by a var or by an input",
                ));
            }
        }
        let Some((prompt_path, prompt_span)) = prompt_path else {
            return Err(self.err(
                &header,
                format!("stream `{id}` has no `prompt`"),
                format!(
                    "add `prompt = \"prompts/{id}.md\"`: a template file, relative to the swarm \
                     file's folder"
                ),
            ));
        };

        let mut agent = base_agent.clone();
        let mut command_key = None;
        for e in self.once_each(agent_entries, &id, "[streams.agent]")? {
            self.apply_agent(&mut agent, &e)?;
            if e.key == "command" {
                command_key = Some(e.span.clone());
            }
        }
        let mut checks = base_checks.clone();
        let mut check_command = None;
        for e in self.once_each(check_entries, &id, "[streams.checks]")? {
            self.apply_check(&mut checks, &e)?;
            if e.key == "command" {
                check_command = Some(e.val.span());
            }
        }
        if outputs.is_empty() && checks.require.iter().any(|t| !t.trim().is_empty()) {
            // `require` terms are looked for in the outputs only: with none,
            // every attempt would fail however good the work.
            let span = outputs_span.clone().unwrap_or_else(|| header.clone());
            return Err(self.err(
                &span,
                format!(
                    "stream `{id}` has no outputs, but `require` terms are looked for only in \
                     outputs: every attempt would fail"
                ),
                format!(
                    "list the files the stream writes in `outputs = [\"...\"]`, or set \
                     `require = []` in its [streams.checks] (it requires {})",
                    checks
                        .require
                        .iter()
                        .map(|t| format!("\"{t}\""))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        Ok(RawStream {
            cfg: StreamConfig {
                id,
                prompt: prompt_path,
                vars,
                inputs,
                outputs,
                depends_on: deps.iter().map(|(d, _)| d.clone()).collect(),
                agent,
                checks,
            },
            header,
            prompt_span,
            deps,
            input_spans,
            output_spans,
            command_key,
            check_command,
        })
    }

    /// Two streams may name the same new output only when one of them
    /// depends on the other (it revises what the first merged); otherwise
    /// both would create the file and the second merge would conflict,
    /// hours into a run. A file already in the target (`in_target`) is
    /// edited by both, which git may merge cleanly: allowed.
    fn check_shared_outputs(
        &self,
        raws: &[RawStream],
        configs: &[StreamConfig],
        in_target: &dyn Fn(&str) -> bool,
    ) -> Res<()> {
        // Every stream that lists a path so far: a new one must be related
        // to each of them (two revisers of one draft collide too).
        let mut owners: HashMap<String, Vec<usize>> = HashMap::new();
        let mut ups: Vec<Option<Vec<String>>> = vec![None; raws.len()];
        let mut upstream = |k: usize| -> Vec<String> {
            ups[k]
                .get_or_insert_with(|| plan::dependencies_of(configs, &raws[k].cfg.id))
                .clone()
        };
        for (j, r) in raws.iter().enumerate() {
            for (out, span) in r.cfg.outputs.iter().zip(&r.output_spans) {
                let key = normal_path(out);
                let before = owners.entry(key.clone()).or_default();
                if before.is_empty() || in_target(&key) {
                    before.push(j);
                    continue;
                }
                let mut unrelated = None;
                for &i in before.iter() {
                    let related =
                        upstream(j).contains(&raws[i].cfg.id) || upstream(i).contains(&r.cfg.id);
                    if !related {
                        unrelated = Some(i);
                        break;
                    }
                }
                let Some(i) = unrelated else {
                    before.push(j);
                    continue;
                };
                let first = &raws[i];
                let at = first
                    .cfg
                    .outputs
                    .iter()
                    .position(|o| normal_path(o) == key)
                    .and_then(|k| first.output_spans.get(k))
                    .map(|sp| {
                        let (l, c) = line_col(self.text, sp.start);
                        format!(" (line {l}, column {c})")
                    })
                    .unwrap_or_default();
                return Err(self.err(
                    span,
                    format!(
                        "`outputs`: \"{out}\" is also an output of stream `{}`{at}, and neither \
                         stream depends on the other: both would create it and the second merge \
                         would conflict",
                        first.cfg.id
                    ),
                    format!(
                        "give the file to one stream, or add depends_on = [\"{}\"] to stream `{}` \
                         so that it revises the merged version",
                        first.cfg.id, r.cfg.id
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Sorts override entries into file order and refuses a key set twice
    /// (directly in the stream and in its sub-table).
    fn once_each<'a, 'i>(
        &self,
        mut es: Vec<Entry<'a, 'i>>,
        id: &str,
        sub: &str,
    ) -> Res<Vec<Entry<'a, 'i>>> {
        es.sort_by_key(|e| e.span.start);
        for (i, e) in es.iter().enumerate() {
            if let Some(first) = es[..i].iter().find(|f| f.key == e.key) {
                return Err(self.err(
                    &e.span,
                    format!(
                        "`{}` is set twice for stream `{id}` (also at line {})",
                        e.key,
                        self.line(&first.span)
                    ),
                    format!("set it once: either directly in the [[streams]] table or in {sub}"),
                ));
            }
        }
        Ok(es)
    }

    /// The prompt file of `r` exists and every placeholder in it is filled.
    fn check_template(
        &self,
        r: &RawStream,
        root: &Path,
        cache: &mut HashMap<PathBuf, String>,
    ) -> Res<()> {
        let s = &r.cfg;
        let shown = self.file.parent().unwrap_or(Path::new("")).join(&s.prompt);
        let abs = root.join(&s.prompt);
        if !cache.contains_key(&abs) {
            let p = s.prompt.display();
            let text = if abs.is_dir() {
                Err(self.err(
                    &r.prompt_span,
                    format!("prompt `{p}` is a folder, not a file"),
                    "point `prompt` at a template file such as \"prompts/chapter.md\"",
                ))
            } else {
                match fs::read(&abs) {
                    Ok(b) => String::from_utf8(b).map_err(|_| {
                        self.err(
                            &r.prompt_span,
                            format!("prompt file `{p}` is not UTF-8 text"),
                            "save the template as UTF-8",
                        )
                    }),
                    Err(e) if e.kind() == ErrorKind::NotFound => Err(self.err(
                        &r.prompt_span,
                        format!("prompt file `{p}` not found"),
                        format!(
                            "create {} or fix the path; prompt paths are relative to the swarm \
                             file's folder ({}), and prompts are read from the main checkout \
                             when the swarm file is validated",
                            shown.display(),
                            root.display()
                        ),
                    )),
                    Err(e) => Err(self.err(
                        &r.prompt_span,
                        format!("cannot read prompt file `{p}`: {e}"),
                        "check that the file exists and that you may read it",
                    )),
                }
            }?;
            cache.insert(abs.clone(), text);
        }
        let Some(text) = cache.get(&abs) else {
            return Ok(());
        };
        for (name, line, col) in prompt::placeholders(text) {
            let filled = s.vars.contains_key(&name)
                || s.inputs.contains_key(&name)
                || BUILTIN_PLACEHOLDERS.contains(&name.as_str());
            if filled {
                continue;
            }
            let known: Vec<&String> = s.vars.keys().chain(s.inputs.keys()).collect();
            let near = suggest(&name, &known)
                .map(|k| format!("the stream fills {{{{{k}}}}}: is one of the two misspelt? "))
                .unwrap_or_default();
            return Err(ConfigError {
                file: shown,
                line,
                col,
                message: format!(
                    "placeholder {{{{{name}}}}} is not filled for stream `{}`",
                    s.id
                ),
                help: format!(
                    "{near}add `vars = {{ {name} = \"...\" }}` or an input (`inputs = {{ {name} = \
                     \"path/to/file.md\" }}`) to stream `{}` ({}:{}), or remove the placeholder \
                     from the template; loki itself fills {}",
                    s.id,
                    self.file.display(),
                    self.line(&r.header),
                    BUILTIN_PLACEHOLDERS.join(", ")
                ),
            });
        }
        Ok(())
    }

    /// Every input of `r` is a file in the target tree or an output of a
    /// stream it depends on (directly or not): what its worktree will hold.
    fn check_inputs(
        &self,
        r: &RawStream,
        tree: &TargetTree,
        upstream: &BTreeSet<String>,
        raws: &[RawStream],
    ) -> Res<()> {
        let id = &r.cfg.id;
        let b = &tree.branch;
        for (name, rel) in &r.cfg.inputs {
            let key = normal_path(rel);
            if upstream.contains(&key) {
                continue;
            }
            let span = r.input_spans.get(name).unwrap_or(&r.header);
            let what = format!("input {{{{{name}}}}} of stream `{id}`");
            match tree.mode(&key) {
                Some(MODE_TREE) => {
                    return Err(self.err(
                        span,
                        format!("{what}: `{rel}` is a folder in branch `{b}`, not a file"),
                        "point the input at a file: its contents fill the placeholder",
                    ))
                }
                Some(_) => {}
                None => {
                    return Err(self.err(
                        span,
                        format!(
                            "{what}: `{rel}` is not in branch `{b}`, and no stream `{id}` \
                             depends on writes it"
                        ),
                        missing_file_help(&key, id, tree, raws),
                    ))
                }
            }
        }
        Ok(())
    }

    /// The script a check command of `r` runs (see [`script_of`]) is there
    /// when the command runs: in the target tree (executable when run
    /// directly) or written by a stream `r` depends on; an absolute path on
    /// this machine.
    fn check_script(
        &self,
        r: &RawStream,
        base: &BaseSpans,
        tree: &TargetTree,
        upstream: &BTreeSet<String>,
        raws: &[RawStream],
    ) -> Res<()> {
        let Some((script, direct)) = r.cfg.checks.command.as_deref().and_then(script_of) else {
            return Ok(());
        };
        let id = &r.cfg.id;
        let span = r
            .check_command
            .as_ref()
            .or(base.check_command.as_ref())
            .unwrap_or(&r.header);
        let what = format!("the check command of stream `{id}`");
        let shell = format!("or run it through the shell: `command = \"sh {script}\"`");
        let path = Path::new(&script);
        if path.is_absolute() {
            let (why, help) = if !path.exists() {
                (
                    "does not exist",
                    "fix the path, or install the script there".to_string(),
                )
            } else if path.is_dir() {
                (
                    "is a folder",
                    "point the command at a script file".to_string(),
                )
            } else if direct && crate::process::find_executable(&script).is_none() {
                (
                    "is not executable",
                    format!("run `chmod +x {script}`, {shell}"),
                )
            } else {
                return Ok(());
            };
            return Err(self.err(span, format!("{what}: `{script}` {why}"), help));
        }
        if path.components().any(|c| matches!(c, Component::ParentDir)) {
            // It leaves the worktree: where it lands is not second-guessed.
            return Ok(());
        }
        let key = normal_path(&script);
        if upstream.contains(&key) {
            return Ok(());
        }
        let b = &tree.branch;
        let (why, help) = match tree.mode(&key) {
            None => (
                format!(
                    "is not in branch `{b}` (the command runs in the stream's worktree, which \
                     starts from `{b}`)"
                ),
                missing_file_help(&key, id, tree, raws),
            ),
            Some(MODE_TREE) => (
                format!("is a folder in branch `{b}`"),
                "point the command at a script file".to_string(),
            ),
            Some(m) if direct && m != MODE_EXEC && m != MODE_LINK => (
                format!("is not executable in branch `{b}`"),
                format!(
                    "make it executable and commit that (`chmod +x {key} && git add {key} && git \
                     commit`; git keeps the executable bit), {shell}"
                ),
            ),
            Some(_) => return Ok(()),
        };
        Err(self.err(span, format!("{what}: `{script}` {why}"), help))
    }

    fn parse(&self) -> Res<SwarmFile> {
        let doc = DeTable::parse(self.text).map_err(|e| self.toml_error(&e))?;
        let top = entries(doc.get_ref());
        self.check_keys(&top, Section::Top)?;

        let mut swarm = SwarmSettings::default();
        let mut agent = AgentSettings::default();
        let mut checks = CheckSettings::default();
        let mut base = BaseSpans::default();
        for e in &top {
            match e.key {
                "swarm" => {
                    let es = entries(self.table("swarm", e.val, "a [swarm] table")?);
                    self.check_keys(&es, Section::Swarm)?;
                    for x in &es {
                        self.apply_swarm(&mut swarm, x)?;
                    }
                }
                "agent" => {
                    let es = entries(self.table("agent", e.val, "an [agent] table")?);
                    self.check_keys(&es, Section::Agent)?;
                    // At the `[` of the `[agent]` header.
                    let start = match self.text[..e.span.start].strip_suffix('[') {
                        Some(before) => before.len(),
                        None => e.span.start,
                    };
                    base.agent = Some(start..e.span.end);
                    for x in &es {
                        self.apply_agent(&mut agent, x)?;
                        if x.key == "command" {
                            base.agent_command = Some(x.span.clone());
                        }
                    }
                }
                "checks" => {
                    let es = entries(self.table("checks", e.val, "a [checks] table")?);
                    self.check_keys(&es, Section::Checks)?;
                    for x in &es {
                        self.apply_check(&mut checks, x)?;
                        if x.key == "command" {
                            base.check_command = Some(x.val.span());
                        }
                    }
                }
                _ => {}
            }
        }

        let Some(streams_e) = top.iter().find(|e| e.key == "streams") else {
            return Err(ConfigError {
                file: self.file.to_path_buf(),
                line: 0,
                col: 0,
                message: "the swarm file defines no streams".into(),
                help: MINIMAL_STREAM.into(),
            });
        };
        let DeValue::Array(items) = streams_e.val.get_ref() else {
            return Err(self.err(
                &streams_e.val.span(),
                format!(
                    "`streams` must be an array of tables, found {}",
                    type_name(streams_e.val)
                ),
                "write each stream as its own [[streams]] table (double brackets)",
            ));
        };
        if items.is_empty() {
            return Err(self.err(
                &streams_e.span,
                "the swarm file defines no streams",
                MINIMAL_STREAM,
            ));
        }
        let mut ids: HashMap<String, Range<usize>> = HashMap::new();
        let mut raws = Vec::with_capacity(items.len());
        for (n, item) in items.iter().enumerate() {
            raws.push(self.stream(n + 1, item, &agent, &checks, &mut ids)?);
        }

        let known: Vec<&str> = raws.iter().map(|r| r.cfg.id.as_str()).collect();
        for r in &raws {
            for (d, span) in &r.deps {
                let id = &r.cfg.id;
                if d == id {
                    return Err(self.err(
                        span,
                        format!("stream `{id}` depends on itself"),
                        format!("remove \"{id}\" from its depends_on"),
                    ));
                }
                if !ids.contains_key(d) {
                    let near = suggest(d, &known)
                        .map(|k| format!("did you mean `{k}`? "))
                        .unwrap_or_default();
                    return Err(self.err(
                        span,
                        format!("stream `{id}` depends on unknown stream `{d}`"),
                        format!(
                            "{near}depends_on lists ids of streams in this file: {}",
                            known.join(", ")
                        ),
                    ));
                }
            }
        }

        let configs: Vec<StreamConfig> = raws.iter().map(|r| r.cfg.clone()).collect();
        if let Err(cycle) = plan::topo_order(&configs) {
            let first = cycle.first().cloned().unwrap_or_default();
            let next = cycle.get(1).cloned().unwrap_or_default();
            let span = raws
                .iter()
                .find(|r| r.cfg.id == first)
                .and_then(|r| r.deps.iter().find(|(d, _)| *d == next))
                .map(|(_, s)| s.clone())
                .unwrap_or(0..0);
            return Err(self.err(
                &span,
                format!("dependency cycle: {}", cycle.join(" -> ")),
                format!(
                    "each stream waits for the next one to merge, so none of them can ever \
                     start; remove one of these depends_on entries (for example \"{next}\" \
                     from stream `{first}`)"
                ),
            ));
        }

        let path = std::path::absolute(self.file).unwrap_or_else(|_| self.file.to_path_buf());
        let root = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("/"));
        let mut cache = HashMap::new();
        for r in &raws {
            self.check_template(r, &root, &mut cache)?;
        }

        // Run time reads these from the main worktree's root, which is the
        // swarm file's folder unless the file lives deeper in the repo.
        let repo_root = crate::git::repo_root(&root).ok();
        check_retry_template(&repo_root.clone().unwrap_or_else(|| root.clone()))?;
        let tree = repo_root
            .as_deref()
            .and_then(|r| TargetTree::open(r, swarm.target.as_deref()));
        let in_target = |rel: &str| tree.as_ref().is_some_and(|t| t.mode(rel).is_some());
        self.check_shared_outputs(&raws, &configs, &in_target)?;
        if let Some(tree) = &tree {
            for r in &raws {
                let upstream = upstream_outputs(&configs, &r.cfg.id);
                self.check_inputs(r, tree, &upstream, &raws)?;
                self.check_script(r, &base, tree, &upstream, &raws)?;
            }
        }

        let command_at = raws
            .iter()
            .map(|r| {
                let span = r
                    .command_key
                    .as_ref()
                    .or(base.agent_command.as_ref())
                    .or(base.agent.as_ref())
                    .unwrap_or(&r.header);
                line_col(self.text, span.start)
            })
            .collect();
        Ok(SwarmFile {
            path,
            root,
            swarm,
            streams: configs,
            command_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tempfile::TempDir;

    const CHAPTER: &str = "# Chapter {{CHAPTER}}\n\nWrite {{OUTPUTS}} for {{ STREAM_ID }}.\n";

    /// A folder with prompt templates, where `loki.toml` would live.
    fn repo(files: &[(&str, &str)]) -> TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (rel, text) in files {
            let p = dir.path().join(rel);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, text).unwrap();
        }
        dir
    }

    fn std_repo() -> TempDir {
        repo(&[
            ("prompts/chapter.md", CHAPTER),
            ("prompts/plain.md", "Just do it for {{STREAM_ID}}.\n"),
        ])
    }

    fn parse_in(dir: &TempDir, text: &str) -> Result<SwarmFile, ConfigError> {
        parse(text, &dir.path().join("loki.toml"))
    }

    fn ok(text: &str) -> SwarmFile {
        let dir = std_repo();
        match parse_in(&dir, text) {
            Ok(f) => f,
            Err(e) => panic!("unexpected error: {e}"),
        }
    }

    fn err(text: &str) -> ConfigError {
        let dir = std_repo();
        match parse_in(&dir, text) {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(e) => {
                assert!(!e.help.is_empty(), "empty help for {e}");
                e
            }
        }
    }

    /// (line, col, message) of the error.
    fn at(text: &str) -> (usize, usize, String) {
        let e = err(text);
        (e.line, e.col, e.message)
    }

    fn one(extra: &str) -> String {
        format!("[[streams]]\nid = \"a\"\nprompt = \"prompts/plain.md\"\n{extra}")
    }

    #[test]
    fn minimal_file_gets_every_default() {
        let f = ok("[[streams]]\nid = \"ch01\"\nprompt = \"prompts/plain.md\"\n");
        assert!(f.path.is_absolute());
        assert!(f.path.ends_with("loki.toml"));
        assert_eq!(f.root, f.path.parent().unwrap());
        assert_eq!(f.swarm, SwarmSettings::default());
        let s = f.stream("ch01").unwrap();
        assert_eq!(s.agent, AgentSettings::default());
        assert_eq!(s.checks, CheckSettings::default());
        assert_eq!(s.prompt, PathBuf::from("prompts/plain.md"));
        assert!(s.vars.is_empty() && s.inputs.is_empty() && s.outputs.is_empty());
        assert!(s.depends_on.is_empty());
        assert!(s.agent.is_claude());
        assert_eq!(
            SwarmSettings::default().spawn_interval,
            Duration::from_secs(1)
        );
        assert!(f.stream("nope").is_none());
    }

    #[test]
    fn every_section_key_is_read() {
        let f = ok(r#"
[swarm]
target = "main"
max_parallel = 2
max_budget_usd = 12
spawn_interval = "500ms"

[agent]
command = "scripts/fake-agent"
args = ["--fast", "-v"]
model = "opus"
permission_mode = "bypassPermissions"
timeout = "1h30m"
idle_timeout = 120
max_attempts = 5
env = { IS_SANDBOX = "1", FOO = "bar" }
kill_grace = "0s"
resume = false
max_budget_usd = 2.5

[checks]
words = [1500, 3000]
word_tolerance = 0.2
require = ["Anna"]
forbid = ["TODO", "lorem"]
canonical = false
command = "make lint"
command_timeout = "2m"
approve = true

[[streams]]
id = "ch01"
prompt = "prompts/plain.md"
outputs = ["ch01.md"]
"#);
        assert_eq!(
            f.swarm,
            SwarmSettings {
                target: Some("main".into()),
                max_parallel: 2,
                max_budget_usd: Some(12.0),
                spawn_interval: Duration::from_millis(500),
                target_at: Some((3, 10)),
            }
        );
        let s = &f.streams[0];
        let mut env = BTreeMap::new();
        env.insert("FOO".to_string(), "bar".to_string());
        env.insert("IS_SANDBOX".to_string(), "1".to_string());
        assert_eq!(
            s.agent,
            AgentSettings {
                command: "scripts/fake-agent".into(),
                args: vec!["--fast".into(), "-v".into()],
                model: "opus".into(),
                permission_mode: "bypassPermissions".into(),
                timeout: Duration::from_secs(5400),
                idle_timeout: Duration::from_secs(120),
                max_attempts: 5,
                env,
                kill_grace: Duration::ZERO,
                resume: false,
                max_budget_usd: Some(2.5),
            }
        );
        assert!(!s.agent.is_claude());
        assert_eq!(
            s.checks,
            CheckSettings {
                words: Some((1500, 3000)),
                word_tolerance: 0.2,
                require: vec!["Anna".into()],
                forbid: vec!["TODO".into(), "lorem".into()],
                canonical: false,
                command: Some("make lint".into()),
                command_timeout: Duration::from_secs(120),
                approve: true,
            }
        );
    }

    #[test]
    fn streams_override_agent_and_checks_key_by_key() {
        let f = ok(r#"
[agent]
model = "sonnet"
max_attempts = 2
env = { A = "1", B = "2" }
args = ["--x"]

[checks]
words = [10, 20]
forbid = ["TODO"]

[[streams]]
id = "direct"
prompt = "prompts/plain.md"
model = "opus"
timeout = "5m"
env = { B = "two", C = "3" }
approve = true

[[streams]]
id = "sub"
prompt = "prompts/plain.md"
outputs = ["sub.md"]
agent = { max_attempts = 7, args = [] }

[streams.checks]
words = [1, 2]
require = ["x"]

[[streams]]
id = "plain"
prompt = "prompts/plain.md"
"#);
        let d = f.stream("direct").unwrap();
        assert_eq!(d.agent.model, "opus");
        assert_eq!(d.agent.max_attempts, 2);
        assert_eq!(d.agent.timeout, Duration::from_secs(300));
        assert_eq!(d.agent.args, vec!["--x".to_string()]);
        let env: Vec<(&str, &str)> = d
            .agent
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(env, vec![("A", "1"), ("B", "two"), ("C", "3")]);
        assert!(d.checks.approve);
        assert_eq!(d.checks.words, Some((10, 20)));

        let s = f.stream("sub").unwrap();
        assert_eq!(s.agent.model, "sonnet");
        assert_eq!(s.agent.max_attempts, 7);
        assert!(s.agent.args.is_empty());
        assert_eq!(s.checks.words, Some((1, 2)));
        assert_eq!(s.checks.require, vec!["x".to_string()]);
        assert_eq!(s.checks.forbid, vec!["TODO".to_string()]);
        assert!(!s.checks.approve);

        let p = f.stream("plain").unwrap();
        assert_eq!(p.agent.max_attempts, 2);
        assert_eq!(p.agent.env.len(), 2);
        assert_eq!(p.checks.words, Some((10, 20)));
    }

    #[test]
    fn streams_agent_header_and_checks_approve() {
        let f = ok(&one(
            "[streams.agent]\nmodel = \"haiku\"\n[streams.checks]\napprove = true\n",
        ));
        assert_eq!(f.streams[0].agent.model, "haiku");
        assert!(f.streams[0].checks.approve);
    }

    #[test]
    fn a_key_set_twice_for_a_stream_is_refused() {
        let e = err(&one(
            "model = \"opus\"\n[streams.agent]\nmodel = \"haiku\"\n",
        ));
        assert_eq!(
            (e.line, e.col, e.message.as_str()),
            (6, 1, "`model` is set twice for stream `a` (also at line 4)")
        );
        let e = err(&one("approve = true\n[streams.checks]\napprove = false\n"));
        assert_eq!(
            (e.line, e.col, e.message.as_str()),
            (
                6,
                1,
                "`approve` is set twice for stream `a` (also at line 4)"
            )
        );
    }

    #[test]
    fn durations() {
        for (text, d) in [
            ("\"40m\"", Duration::from_secs(2400)),
            ("\"1h30m\"", Duration::from_secs(5400)),
            ("\"10s\"", Duration::from_secs(10)),
            ("\"500ms\"", Duration::from_millis(500)),
            ("\"90\"", Duration::from_secs(90)),
            ("90", Duration::from_secs(90)),
        ] {
            let f = ok(&format!("[agent]\ntimeout = {text}\n{}", one("")));
            assert_eq!(f.streams[0].agent.timeout, d, "{text}");
        }
        assert_eq!(parse_duration(" 1h 2m "), Some(Duration::from_secs(3720)));
        assert_eq!(parse_duration("soon"), None);
        assert_eq!(parse_duration(""), None);

        let e = err("[agent]\ntimeout = \"forty\"\n");
        assert_eq!(
            (e.line, e.col, e.message.as_str()),
            (2, 11, "`timeout`: \"forty\" is not a duration")
        );
        assert!(e.help.contains("\"1h30m\""), "{}", e.help);
        assert_eq!(
            at("[agent]\nidle_timeout = -5\n"),
            (
                2,
                16,
                "`idle_timeout` must not be negative, found -5".into()
            )
        );
        assert_eq!(
            at("[agent]\ntimeout = \"0s\"\n"),
            (2, 11, "`timeout` must be longer than zero".into())
        );
        assert_eq!(
            at("[checks]\ncommand_timeout = true\n"),
            (
                2,
                19,
                "`command_timeout` must be a duration (a string such as \"40m\") or a number of \
                 seconds, found boolean"
                    .into()
            )
        );
        // Zero is fine where it means "no pause".
        let f = ok(&format!(
            "[swarm]\nspawn_interval = 0\n{}",
            one("kill_grace = \"0s\"\n")
        ));
        assert_eq!(f.swarm.spawn_interval, Duration::ZERO);
        assert_eq!(f.streams[0].agent.kill_grace, Duration::ZERO);
    }

    #[test]
    fn unknown_keys_name_key_table_position_and_valid_keys() {
        let e = err(&format!("[agent]\nmodle = \"opus\"\n{}", one("")));
        assert_eq!(
            (e.line, e.col, e.message.as_str()),
            (2, 1, "unknown key `modle` in [agent]")
        );
        assert!(e.help.starts_with("did you mean `model`? "), "{}", e.help);
        assert!(
            e.help.ends_with(
                "valid keys in [agent]: command, args, model, permission_mode, timeout, \
                 idle_timeout, max_attempts, env, kill_grace, resume, max_budget_usd"
            ),
            "{}",
            e.help
        );

        let e = err("[swarm]\nmax_paralel = 3\n");
        assert_eq!(
            (e.line, e.col, e.message.as_str()),
            (2, 1, "unknown key `max_paralel` in [swarm]")
        );
        assert!(e.help.starts_with("did you mean `max_parallel`?"));

        let e = err("[checks]\nmodel = \"x\"\n");
        assert_eq!(e.message, "unknown key `model` in [checks]");
        assert!(
            e.help.starts_with("`model` belongs in [agent]. "),
            "{}",
            e.help
        );

        let e = err("model = \"opus\"\n");
        assert_eq!(
            (e.line, e.col, e.message.as_str()),
            (
                1,
                1,
                "unknown key `model` in the top level of the swarm file"
            )
        );
        assert!(e.help.starts_with("`model` belongs in [agent]. "));

        let e = err("[stream]\nid = \"a\"\n");
        assert_eq!(
            (e.line, e.col, e.message.as_str()),
            (
                1,
                2,
                "unknown key `stream` in the top level of the swarm file"
            )
        );
        assert!(e.help.starts_with("did you mean `streams`? "));

        let e = err(&one("   dependencies = []\n"));
        assert_eq!(
            (e.line, e.col, e.message.as_str()),
            (4, 4, "unknown key `dependencies` in [[streams]] `a`")
        );
        assert!(e.help.starts_with("did you mean `depends_on`? "));
        assert!(e.help.contains("valid keys in [[streams]] `a`: id, prompt, vars, inputs, outputs, depends_on, approve, agent, checks, command, args, model"));

        let e = err(&one("words = [1, 2]\n"));
        assert_eq!(e.message, "unknown key `words` in [[streams]] `a`");
        assert!(e.help.starts_with("`words` belongs in [streams.checks]"));

        let e = err(&one(
            "[streams.agent]\nmodel = \"x\"\noutputs = [\"x.md\"]\n",
        ));
        assert_eq!(
            (e.line, e.col, e.message.as_str()),
            (
                6,
                1,
                "unknown key `outputs` in [streams.agent] of stream `a`"
            )
        );
        assert!(e.help.contains("move it above the header"));

        let e = err(&one("[streams.checks]\nwords = [1, 2]\nwordz = 3\n"));
        assert_eq!(
            (e.line, e.col, e.message.as_str()),
            (
                6,
                1,
                "unknown key `wordz` in [streams.checks] of stream `a`"
            )
        );
        assert!(e.help.starts_with("did you mean `words`? "));

        // No close match: no suggestion, still the list.
        let e = err("[swarm]\nzzzzzz = 1\n");
        assert!(e
            .help
            .starts_with("valid keys in [swarm]: target, max_parallel"));
    }

    #[test]
    fn the_first_unknown_key_in_file_order_is_reported() {
        // toml keeps keys sorted by name; messages follow the file.
        let e = err("[agent]\nzeta = 1\nalpha = 2\n");
        assert_eq!(e.message, "unknown key `zeta` in [agent]");
    }

    #[test]
    fn wrong_types_say_what_was_expected_and_found() {
        let cases: &[(&str, (usize, usize, &str))] = &[
            (
                "[swarm]\nmax_parallel = \"4\"\n",
                (
                    2,
                    16,
                    "`max_parallel` must be a positive integer, found string",
                ),
            ),
            (
                "[swarm]\nmax_parallel = 0\n",
                (2, 16, "`max_parallel` must be a positive integer, found 0"),
            ),
            (
                "[swarm]\nmax_parallel = 2.5\n",
                (
                    2,
                    16,
                    "`max_parallel` must be a positive integer, found float",
                ),
            ),
            (
                "[swarm]\ntarget = 1\n",
                (2, 10, "`target` must be a string, found integer"),
            ),
            (
                "[swarm]\ntarget = \"a..b\"\n",
                (2, 10, "`target` \"a..b\" is not a valid branch name"),
            ),
            (
                "[swarm]\nmax_budget_usd = -1\n",
                (
                    2,
                    18,
                    "`max_budget_usd` must be a non-negative number of US dollars, found -1",
                ),
            ),
            (
                "[swarm]\nmax_budget_usd = \"5\"\n",
                (
                    2,
                    18,
                    "`max_budget_usd` must be a non-negative number of US dollars, found string",
                ),
            ),
            (
                "[agent]\nmax_attempts = -2\n",
                (2, 16, "`max_attempts` must be a positive integer, found -2"),
            ),
            (
                "[agent]\nmax_attempts = 99999999999\n",
                (
                    2,
                    16,
                    "`max_attempts` is too large: at most 4294967295, found 99999999999",
                ),
            ),
            (
                "[agent]\nargs = \"--fast\"\n",
                (2, 8, "`args` must be an array of strings, found string"),
            ),
            (
                "[agent]\nargs = [\"a\", 2]\n",
                (2, 14, "`args` entries must be strings, found integer"),
            ),
            (
                "[agent]\nresume = \"yes\"\n",
                (2, 10, "`resume` must be true or false, found string"),
            ),
            (
                "[agent]\ncommand = \"\"\n",
                (2, 11, "`command` must not be empty"),
            ),
            (
                "[agent]\nenv = { A = 1 }\n",
                (2, 13, "`env.A` must be a string, found integer"),
            ),
            (
                "[agent]\nenv = [\"A=1\"]\n",
                (2, 7, "`env` must be a table, found array"),
            ),
            (
                "[agent]\npermission_mode = \"acceptedits\"\n",
                (
                    2,
                    19,
                    "`permission_mode` must be one of default, acceptEdits, plan, \
                     bypassPermissions, dontAsk, auto; found \"acceptedits\"",
                ),
            ),
            (
                "[checks]\nwords = 500\n",
                (
                    2,
                    9,
                    "`words` must be [min, max], two whole numbers, found integer",
                ),
            ),
            (
                "[checks]\nwords = [500]\n",
                (
                    2,
                    9,
                    "`words` must be [min, max], two whole numbers, found 1 entries",
                ),
            ),
            (
                "[checks]\nwords = [500, \"900\"]\n",
                (
                    2,
                    15,
                    "`words` entries must be non-negative integers, found string",
                ),
            ),
            (
                "[checks]\nwords = [-1, 9]\n",
                (
                    2,
                    10,
                    "`words` entries must be non-negative integers, found -1",
                ),
            ),
            (
                "[checks]\nwords = [900, 500]\n",
                (2, 9, "`words` minimum 900 is greater than maximum 500"),
            ),
            (
                "[checks]\nword_tolerance = 1.5\n",
                (
                    2,
                    18,
                    "`word_tolerance` must be a number from 0 to 1, found 1.5",
                ),
            ),
            (
                "[checks]\nrequire = [\"\"]\n",
                (2, 12, "`require` entries must not be empty"),
            ),
            (
                "[checks]\ncanonical = 1\n",
                (2, 13, "`canonical` must be true or false, found integer"),
            ),
            (
                "swarm = 3\n",
                (1, 9, "`swarm` must be a table, found integer"),
            ),
            (
                "streams = \"a\"\n",
                (1, 11, "`streams` must be an array of tables, found string"),
            ),
            (
                "streams = [1]\n",
                (1, 12, "each stream must be a table, found integer"),
            ),
        ];
        for (text, (line, col, msg)) in cases {
            let (l, c, m) = at(text);
            assert_eq!((l, c, m.as_str()), (*line, *col, *msg), "for {text:?}");
        }
        let e = err("[agent]\npermission_mode = \"acceptedits\"\n");
        assert!(
            e.help.starts_with("did you mean \"acceptEdits\"? "),
            "{}",
            e.help
        );
    }

    #[test]
    fn every_claude_permission_mode_is_accepted() {
        for m in PERMISSION_MODES {
            let f = ok(&format!("[agent]\npermission_mode = \"{m}\"\n{}", one("")));
            assert_eq!(f.streams[0].agent.permission_mode, *m);
        }
    }

    #[test]
    fn toml_syntax_errors_have_positions() {
        let e = err("[agent]\nmodel = sonnet\n");
        assert_eq!((e.line, e.col), (2, 9));
        assert!(e.message.starts_with("invalid TOML: "), "{}", e.message);
        assert!(e.help.contains("quotes"), "{}", e.help);

        let e = err("[agent]\nmodel = \"a\"\nmodel = \"b\"\n");
        assert_eq!(
            (e.line, e.col, e.message.as_str()),
            (3, 1, "invalid TOML: duplicate key `model`")
        );
    }

    #[test]
    fn stream_ids_must_be_valid_branch_components() {
        for (id, col) in [
            ("Ch01", 6),
            ("ch 01", 6),
            ("-a", 6),
            ("a..b", 6),
            ("a.", 6),
            ("a.lock", 6),
            ("", 6),
        ] {
            let e = err(&format!(
                "[[streams]]\nid = \"{id}\"\nprompt = \"prompts/plain.md\"\n"
            ));
            assert_eq!(
                (e.line, e.col, e.message.clone()),
                (2, col, format!("invalid stream id `{id}`"))
            );
            assert!(e.help.contains("loki/<id>"));
        }
        let e = err("[[streams]]\nid = \"Ch01\"\nprompt = \"prompts/plain.md\"\n");
        assert!(e.help.ends_with("; try `ch01`"), "{}", e.help);
        let long = "a".repeat(65);
        assert!(!valid_stream_id(&long));
        assert!(valid_stream_id(&"a".repeat(64)));
        for good in ["ch01", "a.b", "a_b-c", "0", "v1.2.3"] {
            assert!(valid_stream_id(good), "{good}");
        }
    }

    #[test]
    fn missing_and_duplicate_ids() {
        let e = err("[[streams]]\nprompt = \"prompts/plain.md\"\n");
        assert_eq!(
            (e.line, e.col, e.message.as_str()),
            (1, 1, "stream #1 has no `id`")
        );
        assert_eq!(
            at("[[streams]]\nid = 7\n"),
            (2, 6, "`id` must be a string, found integer".into())
        );
        let text = "[[streams]]\nid = \"a\"\nprompt = \"prompts/plain.md\"\n\n\
                    [[streams]]\nid = \"b\"\nprompt = \"prompts/plain.md\"\n\n\
                    [[streams]]\n  id = \"a\"\nprompt = \"prompts/plain.md\"\n";
        let e = err(text);
        assert_eq!(
            (e.line, e.col, e.message.as_str()),
            (10, 8, "duplicate stream id `a` (first used at line 2)")
        );
        let e = err("[[streams]]\nid = \"a\"\n");
        assert_eq!(
            (e.line, e.col, e.message.as_str()),
            (1, 1, "stream `a` has no `prompt`")
        );
        assert!(e.help.contains("prompt = \"prompts/a.md\""));
    }

    #[test]
    fn depends_on_must_name_other_streams() {
        let text = "[[streams]]\nid = \"a\"\nprompt = \"prompts/plain.md\"\n\n\
                    [[streams]]\nid = \"b\"\nprompt = \"prompts/plain.md\"\n\
                    depends_on = [\"a\", \"c\"]\n";
        let e = err(text);
        assert_eq!(
            (e.line, e.col, e.message.as_str()),
            (8, 20, "stream `b` depends on unknown stream `c`")
        );
        assert!(e
            .help
            .ends_with("depends_on lists ids of streams in this file: a, b"));

        let e = err(&one(
            "depends_on = [\"ch1\"]\n[[streams]]\nid = \"ch01\"\nprompt = \"prompts/plain.md\"\n",
        ));
        assert!(e.help.starts_with("did you mean `ch01`? "), "{}", e.help);

        let e = err(&one("depends_on = [\"a\"]\n"));
        assert_eq!(
            (e.line, e.col, e.message.as_str()),
            (4, 15, "stream `a` depends on itself")
        );
        assert_eq!(
            at(&one("depends_on = \"b\"\n")),
            (
                4,
                14,
                "`depends_on` must be an array of strings, found string".into()
            )
        );
    }

    #[test]
    fn forward_references_and_repeats_are_fine() {
        let f = ok(&one(
            "depends_on = [\"b\", \"b\"]\n[[streams]]\nid = \"b\"\nprompt = \"prompts/plain.md\"\n",
        ));
        assert_eq!(f.streams[0].depends_on, vec!["b".to_string()]);
        assert_eq!(
            plan::topo_order(&f.streams).unwrap(),
            vec!["b".to_string(), "a".to_string()]
        );
    }

    #[test]
    fn cycles_are_reported_in_order_at_a_depends_on_entry() {
        let text = r#"[[streams]]
id = "a"
prompt = "prompts/plain.md"
depends_on = ["b"]

[[streams]]
id = "b"
prompt = "prompts/plain.md"
depends_on = ["c"]

[[streams]]
id = "c"
prompt = "prompts/plain.md"
depends_on = ["a"]
"#;
        let e = err(text);
        assert_eq!(
            (e.line, e.col, e.message.as_str()),
            (4, 15, "dependency cycle: a -> b -> c -> a")
        );
        assert!(e.help.contains("\"b\" from stream `a`"), "{}", e.help);
    }

    #[test]
    fn prompt_files_must_exist() {
        let dir = std_repo();
        let text = one("").replace("prompts/plain.md", "prompts/missing.md");
        let e = parse_in(&dir, &text).unwrap_err();
        assert_eq!(e.file, dir.path().join("loki.toml"));
        assert_eq!(
            (e.line, e.col, e.message.as_str()),
            (3, 10, "prompt file `prompts/missing.md` not found")
        );
        assert!(e.help.starts_with(&format!(
            "create {} or fix the path",
            dir.path().join("prompts/missing.md").display()
        )));
        assert!(e.help.contains("main checkout"));

        let e = parse_in(&dir, &one("").replace("prompts/plain.md", "prompts")).unwrap_err();
        assert_eq!(e.message, "prompt `prompts` is a folder, not a file");
    }

    #[test]
    fn prompt_paths_are_relative_to_the_swarm_files_folder() {
        let dir = repo(&[("sub/prompts/p.md", "hi {{STREAM_ID}}")]);
        let text = "[[streams]]\nid = \"a\"\nprompt = \"prompts/p.md\"\n";
        let f = parse(text, &dir.path().join("sub/loki.toml")).unwrap();
        assert_eq!(f.root, dir.path().join("sub"));
        assert!(parse(text, &dir.path().join("loki.toml")).is_err());
    }

    #[test]
    fn unfilled_placeholders_point_into_the_template() {
        let dir = std_repo();
        let path = dir.path().join("loki.toml");
        let text = "\n[[streams]]\nid = \"ch01\"\nprompt = \"prompts/chapter.md\"\n\
                    vars = { CHAPTR = \"1\" }\n";
        let e = parse(text, &path).unwrap_err();
        assert_eq!(e.file, dir.path().join("prompts/chapter.md"));
        assert_eq!(
            (e.line, e.col, e.message.as_str()),
            (
                1,
                11,
                "placeholder {{CHAPTER}} is not filled for stream `ch01`"
            )
        );
        assert!(
            e.help.starts_with(
                "the stream fills {{CHAPTR}}: is one of the two misspelt? add `vars = { CHAPTER = \"...\" }` or an input"
            ),
            "{}",
            e.help
        );
        assert!(
            e.help
                .contains(&format!("stream `ch01` ({}:2)", path.display())),
            "{}",
            e.help
        );
        assert!(e.to_string().starts_with(&format!(
            "{}:1:11: placeholder {{{{CHAPTER}}}} is not filled for stream `ch01`\n  help: ",
            dir.path().join("prompts/chapter.md").display()
        )));
    }

    #[test]
    fn vars_inputs_and_builtins_fill_placeholders() {
        let dir = repo(&[(
            "p.md",
            "{{ N }} {{OUTLINE}} {{STREAM_ID}} {{ATTEMPT}} {{FEEDBACK}} {{OUTPUTS}} {{TARGET}} {{BRANCH}}",
        )]);
        let text = "[[streams]]\nid = \"a\"\nprompt = \"p.md\"\n\
                    vars = { N = 3, F = 1.5, B = true, S = \"s\" }\n\
                    inputs = { OUTLINE = \"notes/outline.md\" }\n";
        let f = parse_in(&dir, text).unwrap();
        let s = &f.streams[0];
        let vars: Vec<(&str, &str)> = s
            .vars
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            vars,
            vec![("B", "true"), ("F", "1.5"), ("N", "3"), ("S", "s")]
        );
        assert_eq!(s.inputs["OUTLINE"], "notes/outline.md");
    }

    #[test]
    fn var_and_input_names_are_checked() {
        assert_eq!(
            at(&one("vars = { \"my-var\" = \"x\" }\n")),
            (
                4,
                10,
                "`vars`: \"my-var\" is not a valid placeholder name".into()
            )
        );
        let e = err(&one("vars = { \"1st\" = \"x\" }\n"));
        assert!(e.help.contains("e.g. `_1ST`"), "{}", e.help);
        assert_eq!(
            at(&one("vars = { STREAM_ID = \"x\" }\n")),
            (
                4,
                10,
                "`vars`: {{STREAM_ID}} is a built-in placeholder that loki fills itself".into()
            )
        );
        assert_eq!(
            at(&one("vars = { X = [1] }\n")),
            (
                4,
                14,
                "`vars.X` must be a string, number or boolean, found array".into()
            )
        );
        assert_eq!(
            at(&one("inputs = { X = 3 }\n")),
            (4, 16, "`inputs.X` must be a string, found integer".into())
        );
        assert_eq!(
            at(&one("vars = { X = \"1\" }\ninputs = { X = \"x.md\" }\n")),
            (
                5,
                12,
                "{{X}} is both a var and an input of stream `a`".into()
            )
        );
        assert_eq!(
            at(&one("inputs = { X = \"../x.md\" }\n")),
            (
                4,
                16,
                "`inputs.X`: path \"../x.md\" must not contain `..`".into()
            )
        );
    }

    #[test]
    fn output_paths_stay_in_the_worktree() {
        let cases = [
            (
                "/abs.md",
                "must be relative to the repository root, not absolute",
            ),
            ("../up.md", "must not contain `..`"),
            ("a/../../up.md", "must not contain `..`"),
            (
                ".loki/state/x",
                "must not be under `.loki/` (loki's own folder)",
            ),
            (
                "./.loki/x",
                "must not be under `.loki/` (loki's own folder)",
            ),
            (".git/config", "must not be inside `.git`"),
            ("sub/.git/x", "must not be inside `.git`"),
            (".", "must name a file"),
        ];
        for (p, why) in cases {
            let e = err(&one(&format!("outputs = [\"ok.md\", \"{p}\"]\n")));
            assert_eq!(
                (e.line, e.col, e.message.clone()),
                (4, 21, format!("`outputs`: path \"{p}\" {why}"))
            );
        }
        assert_eq!(
            at(&one("outputs = [\"\"]\n")),
            (4, 12, "`outputs` entries must not be empty".into())
        );
        let f = ok(&one("outputs = [\"chapters/ch01.md\", \".lokirc\"]\n"));
        assert_eq!(f.streams[0].outputs, vec!["chapters/ch01.md", ".lokirc"]);
    }

    #[test]
    fn at_least_one_stream_is_required() {
        for text in ["", "[swarm]\nmax_parallel = 2\n", "# nothing\n"] {
            let e = err(text);
            assert_eq!((e.line, e.col), (0, 0));
            assert_eq!(e.message, "the swarm file defines no streams");
            assert!(e.help.contains("[[streams]]\n    id = \"ch01\""));
        }
        let e = err("streams = []\n");
        assert_eq!((e.line, e.col), (1, 1));
        assert_eq!(e.message, "the swarm file defines no streams");
    }

    #[test]
    fn load_reads_the_file_or_says_how_to_make_one() {
        let dir = std_repo();
        let path = dir.path().join("loki.toml");
        let e = load(&path).unwrap_err();
        assert_eq!(e.file, path);
        assert_eq!((e.line, e.col), (0, 0));
        assert_eq!(e.message, "swarm file not found");
        assert!(e.help.contains("loki init") && e.help.contains("--config"));
        assert_eq!(
            e.to_string(),
            format!(
                "{}: swarm file not found\n  help: run `loki init` to create one here, or pass \
                 `--config <path>` to use another swarm file",
                path.display()
            )
        );

        fs::write(&path, one("")).unwrap();
        let f = load(&path).unwrap();
        assert_eq!(f.streams.len(), 1);

        fs::write(&path, b"# caf\xe9\n").unwrap();
        let e = load(&path).unwrap_err();
        assert_eq!(e.message, "the swarm file is not UTF-8 text");
        assert_eq!((e.line, e.col), (1, 6));

        let e = load(dir.path()).unwrap_err();
        assert_eq!(e.message, "the swarm file is a folder, not a file");
    }

    #[test]
    fn a_realistic_book() {
        let dir = repo(&[
            (
                "prompts/outline.md",
                "Outline a novel titled {{TITLE}} in {{CHAPTERS}} chapters. Write {{OUTPUTS}}.\n",
            ),
            (
                "prompts/chapter.md",
                "You are writing chapter {{ CHAPTER }} of {{TITLE}}.\n\n## Outline\n\n{{OUTLINE}}\n\n\
                 {{FEEDBACK}}\nWrite {{OUTPUTS}} on branch {{BRANCH}}.\n",
            ),
            (
                "prompts/review.md",
                "Review chapters into {{OUTPUTS}}. Style guide:\n{{STYLE}}\n",
            ),
        ]);
        let text = r#"# A book, overnight.
[swarm]
target = "main"
max_parallel = 3
max_budget_usd = 40

[agent]
command = "claude"
model = "sonnet"
permission_mode = "acceptEdits"
timeout = "40m"
idle_timeout = "10m"
max_attempts = 3
env = { IS_SANDBOX = "1" }

[checks]
words = [2000, 4000]
forbid = ["TODO", "[citation needed]"]

[[streams]]
id = "outline"
prompt = "prompts/outline.md"
vars = { TITLE = "The Long Night", CHAPTERS = 4 }
outputs = ["outline.md"]
model = "opus"

[streams.checks]
words = [500, 1500]
approve = true

[[streams]]
id = "ch01"
prompt = "prompts/chapter.md"
vars = { CHAPTER = "1", TITLE = "The Long Night" }
inputs = { OUTLINE = "outline.md" }
outputs = ["chapters/ch01.md"]
depends_on = ["outline"]

[[streams]]
id = "ch02"
prompt = "prompts/chapter.md"
vars = { CHAPTER = "2", TITLE = "The Long Night" }
inputs = { OUTLINE = "outline.md" }
outputs = ["chapters/ch02.md"]
depends_on = ["outline"]

[[streams]]
id = "ch03"
prompt = "prompts/chapter.md"
vars = { CHAPTER = "3", TITLE = "The Long Night" }
inputs = { OUTLINE = "outline.md" }
outputs = ["chapters/ch03.md"]
depends_on = ["outline"]
timeout = "1h"

[[streams]]
id = "ch04"
prompt = "prompts/chapter.md"
vars = { CHAPTER = "4", TITLE = "The Long Night" }
inputs = { OUTLINE = "outline.md" }
outputs = ["chapters/ch04.md"]
depends_on = ["ch03", "outline"]

[streams.agent]
max_attempts = 5
env = { EXTRA = "yes" }

[[streams]]
id = "review"
prompt = "prompts/review.md"
inputs = { STYLE = "style.md" }
outputs = ["review.md"]
depends_on = ["ch01", "ch02", "ch03", "ch04"]
approve = true

[streams.checks]
words = [100, 900]
command = "test -s review.md"
"#;
        let f = parse_in(&dir, text).unwrap();
        let ids: Vec<&str> = f.streams.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["outline", "ch01", "ch02", "ch03", "ch04", "review"]);
        assert_eq!(f.swarm.max_parallel, 3);
        assert_eq!(f.swarm.max_budget_usd, Some(40.0));

        let outline = f.stream("outline").unwrap();
        assert_eq!(outline.agent.model, "opus");
        assert_eq!(outline.vars["CHAPTERS"], "4");
        assert_eq!(outline.checks.words, Some((500, 1500)));
        assert_eq!(outline.checks.forbid.len(), 2);
        assert!(outline.checks.approve);

        let ch03 = f.stream("ch03").unwrap();
        assert_eq!(ch03.agent.timeout, Duration::from_secs(3600));
        assert_eq!(ch03.agent.model, "sonnet");
        assert_eq!(ch03.checks.words, Some((2000, 4000)));
        assert!(!ch03.checks.approve);

        let ch04 = f.stream("ch04").unwrap();
        assert_eq!(ch04.agent.max_attempts, 5);
        assert_eq!(ch04.agent.env.len(), 2);
        assert_eq!(ch04.depends_on, vec!["ch03", "outline"]);

        let review = f.stream("review").unwrap();
        assert!(review.checks.approve);
        assert_eq!(review.checks.command.as_deref(), Some("test -s review.md"));
        assert_eq!(review.checks.words, Some((100, 900)));
        assert_eq!(review.agent.max_attempts, 3);

        assert_eq!(
            plan::topo_order(&f.streams).unwrap(),
            ["outline", "ch01", "ch02", "ch03", "ch04", "review"]
        );
        assert_eq!(plan::dependents_of(&f.streams, "ch03"), ["ch04", "review"]);

        // The same file with a typo in one template placeholder.
        fs::write(
            dir.path().join("prompts/review.md"),
            "Review.\nStyle: {{STYEL}}\n",
        )
        .unwrap();
        let e = parse_in(&dir, text).unwrap_err();
        assert_eq!(e.file, dir.path().join("prompts/review.md"));
        assert_eq!(
            (e.line, e.col, e.message.as_str()),
            (
                2,
                8,
                "placeholder {{STYEL}} is not filled for stream `review`"
            )
        );
        assert!(e
            .help
            .starts_with("the stream fills {{STYLE}}: is one of the two misspelt? "));
        assert!(e.help.contains("loki.toml:68)"), "{}", e.help);
    }

    #[test]
    fn an_output_of_two_unrelated_streams_is_refused() {
        let st = |id: &str, deps: &str, outs: &str| {
            format!(
                "[[streams]]\nid = \"{id}\"\nprompt = \"prompts/plain.md\"\noutputs = [{outs}]\ndepends_on = [{deps}]\n\n"
            )
        };
        let text = format!(
            "{}{}",
            st("a", "", "\"x.md\", \"a.md\""),
            st("b", "", "\"./x.md\"")
        );
        let e = err(&text);
        assert_eq!(
            (e.line, e.col, e.message.as_str()),
            (10, 12, "`outputs`: \"./x.md\" is also an output of stream `a` (line 4, column 12), and neither stream depends on the other: both would create it and the second merge would conflict")
        );
        assert!(e.help.contains("depends_on = [\"a\"]"), "{}", e.help);
        // A stream that depends on the first (even through another) revises it.
        ok(&format!(
            "{}{}{}",
            st("a", "", "\"x.md\""),
            st("m", "\"a\"", "\"m.md\""),
            st("b", "\"m\"", "\"x.md\"")
        ));
        // Two revisers that do not depend on each other still collide.
        let e = err(&format!(
            "{}{}{}",
            st("a", "", "\"x.md\""),
            st("b", "\"a\"", "\"x.md\""),
            st("c", "\"a\"", "\"x.md\"")
        ));
        assert!(e.message.contains("output of stream `b`"), "{e}");
        // Related to the latest owner but not to an earlier one: refused.
        let e = err(&format!(
            "{}{}{}{}",
            st("a", "", "\"x.md\""),
            st("c", "", "\"c.md\""),
            st("b", "\"a\", \"c\"", "\"x.md\""),
            st("d", "\"c\"", "\"x.md\"")
        ));
        assert!(e.message.contains("output of stream `a`"), "{e}");
        // A file already on the target is edited by both, which git may
        // merge cleanly: allowed.
        let dir = git_repo(
            &[
                ("prompts/plain.md", "Do it for {{STREAM_ID}}.\n"),
                ("x.md", "# x\n"),
            ],
            &[],
        );
        let two = format!("{}{}", st("a", "", "\"x.md\""), st("b", "", "\"x.md\""));
        if let Err(e) = parse_in(&dir, &two) {
            panic!("refused: {e}");
        }
    }

    #[test]
    fn an_output_listed_twice_is_refused_at_the_repeat() {
        let e = err(&one("outputs = [\"a.md\", \"b.md\", \"./a.md\"]\n"));
        assert_eq!(
            (e.line, e.col, e.message.as_str()),
            (
                4,
                28,
                "`outputs`: \"./a.md\" is listed twice for stream `a` (first at line 4, column 12)"
            )
        );
        assert!(
            e.help.starts_with("remove the repeated entry"),
            "{}",
            e.help
        );
    }

    #[test]
    fn require_without_outputs_is_refused() {
        let e = err(&format!(
            "[checks]\nrequire = [\"Mira\"]\n\n{}",
            one("outputs = []\n")
        ));
        assert_eq!((e.line, e.col), (7, 11));
        assert_eq!(
            e.message,
            "stream `a` has no outputs, but `require` terms are looked for only in outputs: \
             every attempt would fail"
        );
        assert!(e.help.contains("`require = []`"), "{}", e.help);
        assert!(e.help.contains("\"Mira\""), "{}", e.help);
        // Without the key, at the stream.
        let e = err(&format!("[checks]\nrequire = [\"Mira\"]\n\n{}", one("")));
        assert_eq!(e.line, 4);
        // A stream without outputs is otherwise fine, and may drop `require`.
        ok(&format!(
            "[checks]\nrequire = [\"Mira\"]\nwords = [1, 2]\n\n{}",
            one("checks = { require = [] }\n")
        ));
        ok(&one("outputs = []\n"));
    }

    #[test]
    fn retry_md_may_use_only_its_three_placeholders() {
        let text = "## Attempt {{ATTEMPT}} of {{ MAX_ATTEMPT }}\n\n{{VIOLATIONS}}\n";
        let dir = repo(&[("prompts/plain.md", "x"), ("prompts/retry.md", text)]);
        let e = parse_in(&dir, &one("")).unwrap_err();
        assert_eq!(e.file, dir.path().join("prompts/retry.md"));
        assert_eq!(
            (e.line, e.col, e.message.as_str()),
            (
                1,
                27,
                "placeholder {{MAX_ATTEMPT}} is not filled in prompts/retry.md"
            )
        );
        assert!(
            e.help.starts_with(
                "did you mean {{MAX_ATTEMPTS}}? prompts/retry.md may use only {{ATTEMPT}}, \
                 {{MAX_ATTEMPTS}}, {{VIOLATIONS}};"
            ),
            "{}",
            e.help
        );
        fs::write(
            dir.path().join("prompts/retry.md"),
            "{{ATTEMPT}}\n\n  {{STREAM_ID}}",
        )
        .unwrap();
        let e = parse_in(&dir, &one("")).unwrap_err();
        assert_eq!((e.line, e.col), (3, 3));
        fs::write(dir.path().join("prompts/retry.md"), b"ok\n\xff").unwrap();
        let e = parse_in(&dir, &one("")).unwrap_err();
        assert_eq!(
            (e.line, e.col, e.message.as_str()),
            (2, 1, "prompts/retry.md is not UTF-8 text")
        );
        fs::write(
            dir.path().join("prompts/retry.md"),
            crate::prompt::DEFAULT_RETRY,
        )
        .unwrap();
        parse_in(&dir, &one("")).unwrap();
    }

    #[test]
    fn check_scripts_are_told_from_the_command() {
        let s = |c: &str| script_of(c);
        assert_eq!(
            s("scripts/check.sh --strict"),
            Some(("scripts/check.sh".into(), true))
        );
        assert_eq!(s("./check.sh"), Some(("./check.sh".into(), true)));
        assert_eq!(
            s("LANG=C /opt/x/check"),
            Some(("/opt/x/check".into(), true))
        );
        assert_eq!(
            s("sh scripts/check.sh"),
            Some(("scripts/check.sh".into(), false))
        );
        assert_eq!(s("python3 check.py a"), Some(("check.py".into(), false)));
        for c in [
            "make lint",
            "test -s review.md",
            "sh -c 'x'",
            "\"scripts/check.sh\"",
            "$HOME/check.sh",
            "cd sub && ./x.sh",
            "bash",
            "",
        ] {
            assert_eq!(s(c), None, "{c}");
        }
    }

    /// A git repo on branch `main` with `files` committed, then `loose`
    /// written but not committed.
    fn git_repo(files: &[(&str, &str)], loose: &[(&str, &str)]) -> TempDir {
        let dir = repo(files);
        let git = |args: &[&str]| {
            let out = std::process::Command::new("git")
                .args(args)
                .current_dir(dir.path())
                .output()
                .unwrap();
            assert!(out.status.success(), "git {args:?}: {out:?}");
        };
        git(&["init", "-q", "-b", "main"]);
        git(&["add", "-A"]);
        git(&[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "commit",
            "-q",
            "-m",
            "files",
        ]);
        for (rel, text) in loose {
            let p = dir.path().join(rel);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, text).unwrap();
        }
        dir
    }

    const TWO: &str =
        "[[streams]]\nid = \"outline\"\nprompt = \"q.md\"\noutputs = [\"outline.md\"]\n\n\
                       [[streams]]\nid = \"ch01\"\nprompt = \"p.md\"\n\
                       inputs = { OUTLINE = \"outline.md\", STYLE = \"style.md\" }\n";

    #[test]
    fn inputs_come_from_the_target_tree_or_a_dependency() {
        let p = ("p.md", "{{OUTLINE}} {{STYLE}}");
        let q = ("q.md", "outline");
        // Written by a stream ch01 does not depend on.
        let dir = git_repo(&[p, q, ("style.md", "s")], &[]);
        let e = parse_in(&dir, TWO).unwrap_err();
        assert_eq!(e.file, dir.path().join("loki.toml"));
        assert_eq!(
            (e.line, e.col, e.message.as_str()),
            (
                9,
                22,
                "input {{OUTLINE}} of stream `ch01`: `outline.md` is not in branch `main`, and \
                 no stream `ch01` depends on writes it"
            )
        );
        assert!(
            e.help
                .starts_with("stream `outline` writes it: add \"outline\" to the depends_on"),
            "{}",
            e.help
        );
        // Depending on it (through another stream too) is enough.
        let chain = TWO.replace("inputs =", "depends_on = [\"mid\"]\ninputs =")
            + "\n[[streams]]\nid = \"mid\"\nprompt = \"q.md\"\ndepends_on = [\"outline\"]\n";
        parse_in(&dir, &chain).unwrap();

        // Only in the checkout, not committed.
        let dir = git_repo(&[p, q, ("outline.md", "o")], &[("style.md", "s")]);
        let e = parse_in(&dir, TWO).unwrap_err();
        assert_eq!((e.line, e.col), (9, 44));
        assert!(
            e.help
                .starts_with("it is in your checkout but not committed to `main`"),
            "{}",
            e.help
        );
        // Nowhere at all.
        let dir = git_repo(&[p, q, ("outline.md", "o")], &[]);
        let e = parse_in(&dir, TWO).unwrap_err();
        assert!(
            e.help.starts_with("create it and commit it to `main`"),
            "{}",
            e.help
        );
        // A folder.
        let dir = git_repo(&[p, q, ("outline.md", "o"), ("style.md/x", "s")], &[]);
        let e = parse_in(&dir, TWO).unwrap_err();
        assert_eq!(
            e.message,
            "input {{STYLE}} of stream `ch01`: `style.md` is a folder in branch `main`, not a file"
        );
        // The target named in [swarm] is the tree that counts.
        let dir = git_repo(&[p, q, ("outline.md", "o"), ("style.md", "s")], &[]);
        parse_in(&dir, TWO).unwrap();
        let e = parse_in(&dir, &format!("[swarm]\ntarget = \"nope\"\n{TWO}"));
        assert!(
            e.is_ok(),
            "an unknown target is `loki run`'s to refuse: {e:?}"
        );
    }

    #[test]
    fn check_scripts_must_be_in_the_target_tree_and_executable() {
        let p = ("p.md", "x");
        let text = |cmd: &str| {
            format!("[checks]\ncommand = \"{cmd}\"\n\n[[streams]]\nid = \"a\"\nprompt = \"p.md\"\n")
        };
        let dir = git_repo(&[p], &[("scripts/check.sh", "#!/bin/sh\n")]);
        let e = parse_in(&dir, &text("scripts/check.sh --strict")).unwrap_err();
        assert_eq!(
            (e.line, e.col, e.message.as_str()),
            (
                2,
                11,
                "the check command of stream `a`: `scripts/check.sh` is not in branch `main` (the \
                 command runs in the stream's worktree, which starts from `main`)"
            )
        );
        assert!(e.help.contains("not committed to `main`"), "{}", e.help);

        let dir = git_repo(&[p, ("scripts/check.sh", "#!/bin/sh\n")], &[]);
        let e = parse_in(&dir, &text("./scripts/check.sh")).unwrap_err();
        assert_eq!(
            e.message,
            "the check command of stream `a`: `./scripts/check.sh` is not executable in branch `main`"
        );
        assert!(e.help.contains("chmod +x scripts/check.sh"), "{}", e.help);
        assert!(
            e.help.contains("`command = \"sh ./scripts/check.sh\"`"),
            "{}",
            e.help
        );
        parse_in(&dir, &text("sh scripts/check.sh")).unwrap();
        let e = parse_in(&dir, &text("sh scripts/nope.sh")).unwrap_err();
        assert!(
            e.message.contains("`scripts/nope.sh` is not in branch"),
            "{e}"
        );
        // A stream's own [streams.checks] command is pointed at there.
        let own = format!("{}checks = {{ command = \"bin/x\" }}\n", text("true"));
        let e = parse_in(&dir, &own).unwrap_err();
        assert_eq!((e.line, e.col), (7, 22));
        let e = parse_in(&dir, &text("/nonexistent/loki-check")).unwrap_err();
        assert_eq!(
            e.message,
            "the check command of stream `a`: `/nonexistent/loki-check` does not exist"
        );
        parse_in(&dir, &text("/bin/sh -c true")).unwrap();

        let dir = git_repo(&[p], &[("scripts/check.sh", "#!/bin/sh\n")]);
        let git = |args: &[&str]| {
            std::process::Command::new("git")
                .args(args)
                .current_dir(dir.path())
                .output()
                .unwrap()
        };
        git(&["add", "--chmod=+x", "scripts/check.sh"]);
        git(&[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "commit",
            "-q",
            "-m",
            "x",
        ]);
        parse_in(&dir, &text("scripts/check.sh")).unwrap();
    }

    #[test]
    fn agent_commands_must_resolve_where_they_are_set() {
        let dir = repo(&[("prompts/plain.md", "x")]);
        let bin = dir.path().join("bin");
        fs::create_dir_all(&bin).unwrap();
        fs::write(bin.join("agent"), "#!/bin/sh\n").unwrap();
        fs::write(bin.join("flat"), "#!/bin/sh\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(bin.join("agent"), fs::Permissions::from_mode(0o755)).unwrap();
        let check = |text: &str| {
            let f = parse_in(&dir, text).unwrap();
            check_agent_commands(&f, dir.path())
        };

        check(&format!("[agent]\ncommand = \"bin/agent\"\n\n{}", one(""))).unwrap();
        let abs = bin.join("agent").display().to_string();
        check(&format!("[agent]\ncommand = \"{abs}\"\n\n{}", one(""))).unwrap();

        let e = check(&format!("[agent]\ncommand = \"bin/nope\"\n\n{}", one(""))).unwrap_err();
        assert_eq!(e.file, dir.path().join("loki.toml"));
        assert_eq!(
            (e.line, e.col, e.message.clone()),
            (
                2,
                1,
                format!(
                    "stream `a`: agent command `bin/nope` does not exist ({})",
                    bin.join("nope").display()
                )
            )
        );
        assert!(
            e.help
                .starts_with("put the agent there, or give its right path"),
            "{}",
            e.help
        );

        let e = check(&one("command = \"bin/flat\"\n")).unwrap_err();
        assert_eq!((e.line, e.col), (4, 1));
        assert!(
            e.message.ends_with(
                "is not executable ({})"
                    .replace("{}", &bin.join("flat").display().to_string())
                    .as_str()
            ),
            "{}",
            e.message
        );
        assert_eq!(
            e.help,
            format!(
                "make it executable: chmod +x {}",
                bin.join("flat").display()
            )
        );

        let e = check(&one("[streams.agent]\ncommand = \"loki-no-such-agent\"\n")).unwrap_err();
        assert_eq!((e.line, e.col), (5, 1));
        assert_eq!(
            e.message,
            "stream `a`: agent command `loki-no-such-agent` is not an executable on PATH"
        );
        assert_eq!(
            e.help,
            "put `loki-no-such-agent` on PATH or give its path (absolute, or relative to the \
             repository root)"
        );

        // The default `claude`, looked up on the PATH the agent gets: at
        // [agent] when there is one, else at the stream.
        let e = check(&format!(
            "[agent]\nenv = {{ PATH = \"/nonexistent\" }}\n\n{}",
            one("")
        ))
        .unwrap_err();
        assert_eq!((e.line, e.col), (1, 1));
        assert_eq!(
            e.message,
            "stream `a`: agent command `claude` is not an executable on the PATH set in the \
             agent's `env`"
        );
        assert!(
            e.help
                .starts_with("install Claude Code: npm install -g @anthropic-ai/claude-code"),
            "{}",
            e.help
        );
        let e = check(&format!("\n{}", one("env = { PATH = \"\" }\n"))).unwrap_err();
        assert_eq!((e.line, e.col), (2, 1));
        let path = bin.display().to_string();
        check(&one(&format!(
            "command = \"agent\"\nenv = {{ PATH = \"/nonexistent:{path}\" }}\n"
        )))
        .unwrap();
    }

    #[test]
    fn display_with_and_without_position() {
        let e = ConfigError {
            file: PathBuf::from("loki.toml"),
            line: 3,
            col: 7,
            message: "m".into(),
            help: "h".into(),
        };
        assert_eq!(e.to_string(), "loki.toml:3:7: m\n  help: h");
    }

    #[test]
    fn helpers() {
        assert_eq!(line_col("ab\ncd", 0), (1, 1));
        assert_eq!(line_col("ab\ncd", 3), (2, 1));
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
        assert_eq!(line_col("ab\ncd", 99), (2, 3));
        assert_eq!(line_col("é\né", 4), (2, 1));
        assert_eq!(line_col("é\né", 5), (2, 2));
        assert_eq!(line_col("éa", 1), (1, 1));
        assert_eq!(edit_distance("modle", "model"), 1);
        assert_eq!(edit_distance("Model", "model"), 0);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(suggest("timout", AGENT_KEYS), Some("timeout".into()));
        assert_eq!(suggest("deps", STREAM_KEYS), Some("depends_on".into()));
        assert_eq!(suggest("deps", AGENT_KEYS), None);
        assert_eq!(suggest("xyz", AGENT_KEYS), None);
        assert_eq!(sanitized_id("Chapter 1"), Some("chapter-1".into()));
        assert_eq!(sanitized_id("a..b.lock"), Some("a.b".into()));
        assert_eq!(sanitized_id("ok"), None);
        assert_eq!(sanitized_name("my-var"), "MY_VAR");
    }
}
