//! `loki.toml`: parsing and validation, in passes.
//!
//! - `parse.rs` (pass 1): text to the typed [`SwarmFile`] of `types.rs`,
//!   with the value readers in `values.rs`; no disk. Unknown keys, wrong
//!   types, ids, `depends_on`, cycles.
//! - `repo.rs` (pass 2): that file against the repository: prompt files and
//!   their placeholders, `prompts/retry.md`, outputs shared by unrelated
//!   streams, inputs and check scripts in the target branch's tree (read
//!   through [`crate::git::BranchTree`]).
//! - `preflight.rs`: whether each agent command resolves
//!   ([`check_agent_commands`]), asked by `loki run` when it starts, not by
//!   [`load`].
//! - `diag.rs`: [`ConfigError`] and its `file:line:col` rendering.
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
//!   `..`, outside `.loki/` and `.git` (in any letter case: on a
//!   case-insensitive disk `.GIT` is `.git`). No string may hold a NUL byte.
//! - Nothing outside the repository: prompt files (read from the checkout)
//!   must lie inside it, and prompts, inputs and check scripts must be
//!   regular files reached without a symlink (in the checkout for prompts,
//!   in the target's tree for the others), read with
//!   [`crate::util::read_inside`] (at most 8 MiB, nothing opened that is
//!   not a regular file). An output may not be a folder or lie behind a
//!   link committed to the target. `depends_on` repeats are ignored; an
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
//!   `prompts/retry.md`, shared outputs, outputs that are folders or behind
//!   links, then each stream's inputs and check script.

mod diag;
pub mod fanout;
mod parse;
mod preflight;
mod repo;
mod types;
mod values;

#[cfg(test)]
mod tests;

use std::fs;
use std::io::ErrorKind;
use std::path::Path;
use std::time::Duration;

pub use diag::{line_col, ConfigError};
pub use parse::normal_path;
pub use preflight::{agent_command_problem, check_agent_commands};
pub use types::{
    AgentSettings, CheckCommand, CheckSettings, ForEach, MergeSettings, Sandbox, StreamConfig,
    SwarmFile, SwarmSettings, Template, Validator, BUILTIN_PLACEHOLDERS, PERMISSION_MODES,
    RETRY_PLACEHOLDERS, SANDBOXES,
};

use diag::utf8_text;

/// Reads and validates the swarm file at `path`. Reads prompt templates to
/// check their placeholders; creates nothing.
pub fn load(path: &Path) -> Result<SwarmFile, ConfigError> {
    let whole = |message: String, help: &str| ConfigError::whole(path, message, help);
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

/// [`load`], plus the instances of deferred templates whose source is on
/// the target now ([`fanout::expand_known`]): for commands that look at a
/// swarm without supervising it.
pub fn load_expanded(path: &Path) -> Result<SwarmFile, ConfigError> {
    let mut swarm = load(path)?;
    fanout::expand_known(&mut swarm);
    Ok(swarm)
}

/// Parses and validates swarm-file text; `path` is used for messages and to
/// find prompt files (relative to its folder). Pass 1 (the text alone),
/// then pass 2 (against the repository the file is in).
pub fn parse(text: &str, path: &Path) -> Result<SwarmFile, ConfigError> {
    let mut parsed = parse::parse(text, path)?;
    let stand_ins = fanout::expand(&mut parsed)?;
    repo::check(&parsed)?;
    let mut swarm = parsed.swarm;
    fanout::drop_stand_ins(&mut swarm, &stand_ins);
    Ok(swarm)
}

/// Parses "40m", "1h30m", "10s", "500ms" (humantime) or a bare number of seconds.
/// The script file inside the repository a check command runs (relative,
/// normalised), when it names one: what an attempt must not change.
pub fn check_script_path(command: &str) -> Option<String> {
    let (script, _) = repo::script_of(command)?;
    let p = Path::new(&script);
    if p.is_absolute() {
        return None;
    }
    let parts: Vec<&str> = script
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    Some(parts.join("/"))
}

pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if let Ok(n) = s.parse::<u64>() {
        return Some(Duration::from_secs(n));
    }
    humantime::parse_duration(s).ok()
}

pub use crate::model::id::valid_stream_id;
