//! Deterministic checks of what an attempt produced, and their report.
//!
//! [`run_checks`] runs, in this order, every check the stream configures and
//! returns one [`CheckReport`] with one [`CheckEntry`] per file, term or
//! command. The report's status is the worst entry's: `PASS` < `WARN` <
//! `FAIL`. A `WARN` is not a failure; the caller decides what it means.
//!
//! | check | entries | passes when |
//! | --- | --- | --- |
//! | `script` | one when the attempt changed the check command's script or a file in its folder (none otherwise) | never: the script in the worktree is what runs, so an agent may not edit its own judge |
//! | `symlinks` | one per changed path that is a symlink leading out of the worktree or into a `.git` or `.loki` folder (none otherwise) | never: an absolute target, `..` past the root, or a `.git`/`.loki` component fails |
//! | `outputs` | one per output | the file exists, is a regular file reached without a symlink (read up to 64 MiB), and is not empty (for `.md` / `.txt`: not only whitespace) |
//! | `utf8` | one per `.md` / `.txt` output that exists | the file is valid UTF-8 |
//! | `words` | one per output that is UTF-8 text | the word count is inside `[min, max]`; inside the tolerance it warns |
//! | `require` | one per term | the term appears in at least one output |
//! | `forbid` | one per term and file it was found in (one `PASS` per term when absent) | the term appears in no output |
//! | `canonical` | one per versioned duplicate (one `PASS` when there is none) | no `stem-v2.ext`, `stem-final.ext`, `stem (1).ext`… beside an output or a touched file |
//! | `command` | one | the custom command exits 0 within `command_timeout` (one that cannot run at all is a configuration error, below) |
//!
//! ## Counting words
//!
//! [`count_words`] counts as a writer does, on Unicode word boundaries
//! (UAX #29, `unicode-segmentation`), so Cyrillic, Greek, accented and
//! decomposed text count right ("Привет, как дела? Всё хорошо." is 5 words).
//! Rules:
//!
//! - a hyphenated compound is **one** word, as in word processors:
//!   "well-known", "déjà-vu", "mother-in-law" (ASCII hyphen, U+2010 and
//!   U+2011 between two words with no space); dashes with spaces, en and em
//!   dashes and slashes separate words ("and/or" is 2);
//! - apostrophes stay inside words: "don't", "l'homme", "Mira’s" are one each;
//! - numbers are words ("1984", "3.14");
//! - markdown syntax is not: heading `#`, emphasis `*` / `_`, rules `---`,
//!   table pipes, block quotes, list bullets, ordered-list numbers (`1.`),
//!   task boxes (`[x]`), footnote markers (`[^1]`), HTML tags and
//!   `<!-- comments -->`, link and image targets (`[text](url)` counts only
//!   its text) and reference definitions; a bare URL counts as one word.
//!
//! ## Matching terms
//!
//! `require` and `forbid` terms match case-insensitively (Unicode simple case
//! folding: "Дракон" matches "дракон"). At an edge of the term that is a
//! word character the match needs a Unicode word boundary, so "Дракон"
//! matches "дракон," and "дракон-оборотень" but not "драконы"; at an edge
//! that is punctuation ("Dr.", "-v2") the term matches as a substring there.
//! Whitespace inside a term matches any run of whitespace (a line break
//! too), and an apostrophe matches both `'` and `’`. A hit is reported on the
//! line where it starts.
//!
//! ## Versioned duplicates
//!
//! For every output and every file the stream touched (`canonical` name
//! `dir/stem.ext`), a file in the same folder whose name is the canonical
//! one plus version markers is a duplicate: `stem-v2.ext`, `stem_v3.ext`,
//! `stem.v2.ext`, `stem-revised.ext`, `stem-final.ext`, `stem-new.ext`,
//! `stem-old.ext`, `stem-copy.ext`, `stem (1).ext`, `stem copy.ext`,
//! `stem-draft2.ext`, `stem-updated.ext`, `stem-backup.ext`, `stem-orig.ext`,
//! chains of them (`stem-final-v2.ext`), `Copy of stem.ext`, and
//! `stem.ext.bak` / `.orig` / `.old` / `~` (case-insensitive; separators
//! `-`, `_`, `.`, space). A touched file that itself looks versioned while its
//! canonical name exists is a duplicate too. Configured outputs are never
//! duplicates, and nothing under a `backups/` folder is checked. When an
//! output is missing but a versioned copy of it exists, the advice is to
//! rename the copy.
//!
//! ## The custom command
//!
//! `sh -c <command>` in the worktree, stdin closed, started like every
//! child loki runs ([`process::run_captured`]): in its own process group,
//! with the parent-death signal and a `LOKI_AGENT_TOKEN`; with the
//! supervisor's environment plus the stream's vars (as given and as
//! `LOKI_VAR_<NAME>`), the caller's `env`, `LOKI_STREAM_ID` and
//! `LOKI_OUTPUTS` (space-separated). stdout and stderr are read
//! together; the last 4 KiB are the entry's details. On timeout the whole
//! group gets SIGKILL. Processes the command leaves behind in its group
//! are killed once it exits.
//!
//! A command that cannot run at all is not a failed draft: when `sh` says
//! 127 (a command not found) or 126 (not executable), or `sh` cannot be
//! started, the entry fails with [`CheckEntry::cannot_run`] set to what
//! happened and how to fix it, and [`CheckReport::config_error`] returns
//! it, so the caller can fail the stream at once instead of spending every
//! attempt on a swarm-file mistake. (A script whose own last command is
//! missing exits 127 too: a missing tool is the same kind of fault.)

pub mod verdict;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Component, Path};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::Context;
use regex::{Regex, RegexBuilder};
use serde::{Deserialize, Serialize};
use unicode_segmentation::UnicodeSegmentation;

use crate::config::StreamConfig;
use crate::process::{self, CaptureStartError, Exit};
use crate::util::{read_inside, FileRefusal, FOLDER, MAX_OUTPUT_FILE};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Level {
    Pass,
    Warn,
    Fail,
}

impl Level {
    /// "PASS", "WARN", "FAIL".
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Pass => "PASS",
            Level::Warn => "WARN",
            Level::Fail => "FAIL",
        }
    }
}

impl std::fmt::Display for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckEntry {
    /// "changes", "script", "symlinks", "outputs", "utf8", "words", "require", "forbid", "canonical",
    /// "command".
    pub check: String,
    /// The file or term the entry is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    pub status: Level,
    pub details: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lines: Vec<usize>,
    /// Set when the check itself could not run (its command was not found,
    /// is not executable, or could not be started): a fault of the swarm
    /// file or the machine that no attempt can fix. Says what happened and
    /// how to fix it; the entry is also a `FAIL`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cannot_run: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckReport {
    pub status: Level,
    pub entries: Vec<CheckEntry>,
    /// One line: "FAIL: forbid 'dragon' in chapters/ch01.md:3; words 120 < 900".
    pub summary: String,
}

/// How many problems the summary line names before "… and N more".
const SUMMARY_ITEMS: usize = 6;
/// How much of the custom command's output is kept.
const OUTPUT_TAIL: usize = 4096;

impl CheckReport {
    /// The failed (and warned) entries as lines of feedback for the agent,
    /// failures first. Each names the exact file, term, lines or counts and
    /// says what to do. Only a command's output may span several lines; its
    /// continuation lines are indented by two spaces (a markdown list item).
    pub fn violations(&self) -> Vec<String> {
        let mut out = Vec::new();
        for level in [Level::Fail, Level::Warn] {
            for e in self.entries.iter().filter(|e| e.status == level) {
                out.push(violation_line(e));
            }
        }
        out
    }

    /// True unless an entry failed (warnings pass).
    pub fn passed(&self) -> bool {
        self.status != Level::Fail
    }

    /// Why a check could not run at all, with the fix, when one could not
    /// (see [`CheckEntry::cannot_run`]). Retrying cannot help then, and
    /// every retry would burn an agent attempt: the stream should fail at
    /// once with this text.
    pub fn config_error(&self) -> Option<String> {
        self.entries.iter().find_map(|e| e.cannot_run.clone())
    }

    /// Writes the report as pretty JSON, atomically.
    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        let mut json = serde_json::to_vec_pretty(self).context("encoding the check report")?;
        json.push(b'\n');
        crate::util::write_atomic(path, &json)
    }

    /// Reads a report written by [`CheckReport::write`].
    pub fn read(path: &Path) -> anyhow::Result<CheckReport> {
        let text =
            fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }

    /// A multi-line rendering for people (`loki show`): the summary, then one
    /// line per entry, failures and warnings first; multi-line details are
    /// indented below their entry.
    pub fn human(&self) -> String {
        let count = |l: Level| self.entries.iter().filter(|e| e.status == l).count();
        let mut s = format!(
            "{}\n  {} passed, {} warned, {} failed\n",
            self.summary,
            count(Level::Pass),
            count(Level::Warn),
            count(Level::Fail)
        );
        let check_w = self
            .entries
            .iter()
            .map(|e| e.check.chars().count())
            .max()
            .unwrap_or(0);
        for level in [Level::Fail, Level::Warn, Level::Pass] {
            for e in self.entries.iter().filter(|e| e.status == level) {
                let mut lines = e.details.lines();
                let first = lines.next().unwrap_or("");
                let target = e
                    .target
                    .as_deref()
                    .map(|t| format!("{t}: "))
                    .unwrap_or_default();
                s.push_str(&format!(
                    "  {}  {:<check_w$}  {target}{first}\n",
                    e.status, e.check
                ));
                for l in lines {
                    s.push_str(&format!("        {}{l}\n", " ".repeat(check_w + 2)));
                }
            }
        }
        s
    }
}

/// Builds a report from entries and their short forms for the summary.
fn build_report(items: Vec<(CheckEntry, String)>) -> CheckReport {
    let status = items
        .iter()
        .map(|(e, _)| e.status)
        .max()
        .unwrap_or(Level::Pass);
    let summary = if status == Level::Pass {
        match items.len() {
            0 => "PASS: nothing to check".to_string(),
            1 => "PASS: 1 check".to_string(),
            n => format!("PASS: {n} checks"),
        }
    } else {
        let mut problems: Vec<&str> = Vec::new();
        for level in [Level::Fail, Level::Warn] {
            problems.extend(
                items
                    .iter()
                    .filter(|(e, _)| e.status == level)
                    .map(|(_, s)| s.as_str()),
            );
        }
        let mut line = problems
            .iter()
            .take(SUMMARY_ITEMS)
            .copied()
            .collect::<Vec<_>>()
            .join("; ");
        if problems.len() > SUMMARY_ITEMS {
            line.push_str(&format!("; … and {} more", problems.len() - SUMMARY_ITEMS));
        }
        format!("{status}: {line}")
    };
    CheckReport {
        status,
        entries: items.into_iter().map(|(e, _)| e).collect(),
        summary,
    }
}

fn entry(check: &str, target: Option<&str>, status: Level, details: String) -> CheckEntry {
    CheckEntry {
        check: check.to_string(),
        target: target.map(str::to_string),
        status,
        details,
        lines: Vec::new(),
        cannot_run: None,
    }
}

/// One feedback line for the agent.
fn violation_line(e: &CheckEntry) -> String {
    let target = e.target.as_deref().unwrap_or("");
    let d = e.details.trim_end();
    match e.check.as_str() {
        "changes" => {
            format!("{d}. Do the work the prompt asks for and write its files in the repository.")
        }
        "outputs" => format!(
            "{d}. Write `{target}` as a regular file (not a symlink) at exactly this path \
             (relative to the repository root), with its full content."
        ),
        "script" => format!(
            "{d}. Leave `{target}` exactly as it is on the target branch: it judges your \
             work and is not yours to edit."
        ),
        "symlinks" => format!(
            "{d}. Remove the link: write the files themselves inside the repository, and \
             link, if at all, only to files inside it."
        ),
        "utf8" => {
            format!("`{target}` is not valid UTF-8 text ({d}). Rewrite it as plain UTF-8 text.")
        }
        "words" => {
            let advice = if d.contains("fails below") {
                "Expand the text in place until its word count is inside the range"
            } else {
                "Tighten the text in place until its word count is inside the range"
            };
            let word = if e.status == Level::Warn {
                "is slightly outside the word range"
            } else {
                "is outside the word range"
            };
            format!(
                "`{target}` {word}: {d}. {advice} (words are counted as a word processor counts \
                 them; markdown syntax does not count)."
            )
        }
        "require" => format!(
            "{d}. It is required: use `{target}` (any letter case, as a whole word) in the text \
             of the outputs."
        ),
        "forbid" => format!(
            "{d}. `{target}` is forbidden: remove or replace every occurrence, in any letter case."
        ),
        "canonical" => {
            let mut chars = d.chars();
            match chars.next() {
                Some(c) => format!("{}{}.", c.to_uppercase(), chars.as_str()),
                None => String::new(),
            }
        }
        "command" if e.cannot_run.is_some() => format!(
            "The check command could not run ({d}); that is a fault of the swarm's \
             configuration, not of your work: change nothing for it."
        ),
        "command" => {
            let head = match e.target.as_deref() {
                Some(c) => format!("The check command `{c}` failed"),
                None => "The check command failed".to_string(),
            };
            let body = d
                .lines()
                .map(|l| format!("  {l}"))
                .collect::<Vec<_>>()
                .join("\n");
            if body.trim().is_empty() {
                format!("{head}. Fix what it checks.")
            } else {
                format!("{head}; fix what it reports. Its output:\n{body}")
            }
        }
        other => {
            if target.is_empty() {
                format!("{other}: {d}")
            } else {
                format!("{other} `{target}`: {d}")
            }
        }
    }
}

/// An output's content, read once.
struct OutputFile {
    path: String,
    /// `Some` when the file exists and is valid UTF-8.
    text: Option<String>,
}

/// Runs every check configured for `stream` against `worktree`.
/// `touched` = paths the stream changed (for the canonical check).
/// `env` = extra environment for the custom command. Blocking.
pub fn run_checks(
    worktree: &Path,
    stream: &StreamConfig,
    touched: Option<&[String]>,
    env: &[(String, String)],
) -> CheckReport {
    run_checks_watched(worktree, stream, touched, env, None)
}

/// [`run_checks`], telling `on_start` the process group of the check
/// command as soon as it runs (the supervisor records it, so a sweep after
/// a crash ends what is left of it, as it does an agent's).
pub fn run_checks_watched(
    worktree: &Path,
    stream: &StreamConfig,
    touched: Option<&[String]>,
    env: &[(String, String)],
    on_start: Option<process::OnStart<'_>>,
) -> CheckReport {
    let settings = &stream.checks;
    let mut items: Vec<(CheckEntry, String)> = Vec::new();

    // An attempt that leaves the stream exactly as it started has nothing
    // to merge (with `outputs = []` nothing else would notice).
    if touched.is_some_and(<[String]>::is_empty) {
        items.push((
            entry(
                "changes",
                None,
                Level::Fail,
                "no file differs from the target: the attempt changed nothing, so there is nothing to merge".into(),
            ),
            "no change".into(),
        ));
    }
    let touched = touched.unwrap_or_default();
    items.extend(check_symlinks(worktree, touched));
    items.extend(check_script_kept(stream, touched));

    let files = check_outputs(worktree, &stream.outputs, &mut items);

    if let Some((min, max)) = settings.words {
        for f in &files {
            if let Some(text) = &f.text {
                items.push(check_words(
                    &f.path,
                    text,
                    min,
                    max,
                    settings.word_tolerance,
                ));
            }
        }
    }

    let texts: Vec<(&str, &str)> = files
        .iter()
        .filter_map(|f| f.text.as_deref().map(|t| (f.path.as_str(), t)))
        .collect();
    for term in settings.require.iter().filter(|t| !t.trim().is_empty()) {
        items.push(check_require(term, &texts));
    }
    for term in settings.forbid.iter().filter(|t| !t.trim().is_empty()) {
        items.extend(check_forbid(term, &texts));
    }

    if settings.canonical {
        items.extend(check_canonical(worktree, &stream.outputs, touched));
    }

    let mut full_env: Vec<(String, String)> = Vec::new();
    for (k, v) in &stream.vars {
        full_env.push((k.clone(), v.clone()));
        full_env.push((format!("LOKI_VAR_{k}"), v.clone()));
    }
    full_env.extend(env.iter().cloned());
    full_env.push(("LOKI_STREAM_ID".into(), stream.id.to_string()));
    full_env.push(("LOKI_OUTPUTS".into(), stream.outputs.join(" ")));
    if let Some(cmd) = settings.command.as_deref().filter(|c| !c.trim().is_empty()) {
        items.push(check_command(
            worktree,
            cmd,
            &full_env,
            settings.command_timeout,
            on_start,
        ));
    }
    items.extend(named_commands(worktree, settings, &full_env, on_start));

    build_report(items)
}

// --------------------------------------------------------------- script

/// A failure when the attempt changed the script its check command runs:
/// the command runs in the worktree, so an edited script (`exit 0`) would
/// pass whatever the agent wrote.
fn check_script_kept(stream: &StreamConfig, touched: &[String]) -> Vec<(CheckEntry, String)> {
    let checks = &stream.checks;
    checks
        .command
        .iter()
        .chain(checks.commands.iter().map(|c| &c.run))
        .filter_map(|cmd| script_kept(cmd, touched))
        .collect()
}

/// The `script` check of one check command: the attempt left the script
/// it runs, and its folder, as they were.
fn script_kept(cmd: &str, touched: &[String]) -> Option<(CheckEntry, String)> {
    let script = crate::config::check_script_path(cmd)?;
    // The script's folder too: what it sources or imports (`lib.sh`, a
    // Python module beside it) judges as much as the script does.
    let folder = Path::new(&script)
        .parent()
        .filter(|f| !f.as_os_str().is_empty());
    let hit = touched
        .iter()
        .find(|t| **t == script || folder.is_some_and(|f| Path::new(t.as_str()).starts_with(f)))?;
    Some((
        entry(
            "script",
            Some(&script),
            Level::Fail,
            if *hit == script {
                format!("the attempt changed `{script}`, the script the check command runs")
            } else {
                format!("the attempt changed `{hit}`, beside `{script}`, the script the check command runs")
            },
        ),
        format!("{hit} was changed"),
    ))
}

// --------------------------------------------------------------- symlinks

/// One failure per changed path that is a symlink pointing out of the
/// worktree (an absolute target, or `..` past its root): merged, it would
/// let a later agent or the user's tools write through it to a file
/// outside the repository.
fn check_symlinks(worktree: &Path, touched: &[String]) -> Vec<(CheckEntry, String)> {
    let mut out = Vec::new();
    for t in touched {
        let Ok(target) = fs::read_link(worktree.join(t)) else {
            continue;
        };
        let rel = Path::new(t);
        let into_admin = target.components().any(|c| {
            matches!(c, Component::Normal(n) if {
                let n = n.to_string_lossy().to_ascii_lowercase();
                n == ".git" || n == ".loki"
            })
        });
        let escapes = leaves(rel.parent().unwrap_or(Path::new("")), &target);
        if !escapes && !into_admin {
            continue;
        }
        let where_ = if escapes {
            "outside the repository"
        } else {
            "into a .git or .loki folder"
        };
        out.push((
            entry(
                "symlinks",
                Some(t),
                Level::Fail,
                format!("`{t}` is a symlink to `{}`, {where_}", target.display()),
            ),
            format!("{t} links {where_}"),
        ));
    }
    out
}

/// Whether a link in folder `dir` (relative to the worktree root) to
/// `target` points out of the worktree, by the letter of its target.
fn leaves(dir: &Path, target: &Path) -> bool {
    if target.has_root() {
        return true;
    }
    let mut depth = dir
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .count();
    for c in target.components() {
        match c {
            Component::ParentDir if depth == 0 => return true,
            Component::ParentDir => depth -= 1,
            Component::Normal(_) => depth += 1,
            _ => {}
        }
    }
    false
}

// ---------------------------------------------------------------- outputs

fn is_text_name(path: &str) -> bool {
    let lower = path.to_lowercase();
    lower.ends_with(".md") || lower.ends_with(".txt")
}

fn check_outputs(
    worktree: &Path,
    outputs: &[String],
    items: &mut Vec<(CheckEntry, String)>,
) -> Vec<OutputFile> {
    let mut files = Vec::new();
    for out in outputs {
        let text_name = is_text_name(out);
        // Through a link the file would be somewhere else (outside the
        // repository, or where git never commits it): not written here.
        let bytes = match read_inside(worktree, Path::new(out), MAX_OUTPUT_FILE) {
            Ok(b) => b,
            Err(why) => {
                let (details, short) = match &why {
                    FileRefusal::Missing => (
                        format!("missing: {out} was not written"),
                        format!("missing {out}"),
                    ),
                    FileRefusal::NotFile(FOLDER) => (
                        format!("not a file: {out} is a folder"),
                        format!("{out} is a folder"),
                    ),
                    FileRefusal::Symlink { .. } => (
                        format!("not written as a file: {out} {why}"),
                        format!("{out} through a symlink"),
                    ),
                    _ => (
                        format!("unreadable: {out} {why}"),
                        format!("unreadable {out}"),
                    ),
                };
                items.push((entry("outputs", Some(out), Level::Fail, details), short));
                files.push(OutputFile {
                    path: out.clone(),
                    text: None,
                });
                continue;
            }
        };
        let decoded = std::str::from_utf8(&bytes);
        let blank = bytes.is_empty()
            || (text_name && decoded.map(|t| t.trim().is_empty()).unwrap_or(false));
        if blank {
            let details = if bytes.is_empty() {
                format!("empty: {out} has no content")
            } else {
                format!("empty: {out} holds only whitespace")
            };
            items.push((
                entry("outputs", Some(out), Level::Fail, details),
                format!("empty {out}"),
            ));
        } else {
            items.push((
                entry(
                    "outputs",
                    Some(out),
                    Level::Pass,
                    format!("written ({} bytes)", bytes.len()),
                ),
                String::new(),
            ));
        }
        if text_name {
            match decoded {
                Ok(_) => items.push((
                    entry("utf8", Some(out), Level::Pass, "valid UTF-8".into()),
                    String::new(),
                )),
                Err(err) => {
                    let at = err.valid_up_to();
                    let line = bytes[..at].iter().filter(|b| **b == b'\n').count() + 1;
                    items.push((
                        entry(
                            "utf8",
                            Some(out),
                            Level::Fail,
                            format!("invalid UTF-8 at byte {at} (line {line})"),
                        ),
                        format!("not UTF-8 {out}:{line}"),
                    ));
                }
            }
        }
        let text = match String::from_utf8(bytes) {
            Ok(t) if !blank => Some(t),
            Ok(t) if text_name => Some(t),
            _ => None,
        };
        files.push(OutputFile {
            path: out.clone(),
            text,
        });
    }
    files
}

// ------------------------------------------------------------------ words

fn check_words(path: &str, text: &str, min: u64, max: u64, tolerance: f64) -> (CheckEntry, String) {
    let n = count_words(text);
    let t = if tolerance.is_finite() {
        tolerance.clamp(0.0, 1.0)
    } else {
        0.0
    };
    // Small epsilons keep 900 * 0.9 at 810, not 810.0000000001.
    let floor = (min as f64 * (1.0 - t) - 1e-6).ceil().max(0.0) as u64;
    let ceiling = (max as f64 * (1.0 + t) + 1e-6).floor() as u64;
    let range = format!("{min}–{max}");
    let tol = format!("inside the {}% tolerance", (t * 100.0).round() as u64);
    let (status, details, short) = if n < min {
        if n >= floor {
            (
                Level::Warn,
                format!("{n} words; required {range} ({tol}; fails below {floor})"),
                format!("words {path} {n} (range {range})"),
            )
        } else {
            (
                Level::Fail,
                format!("{n} words; required {range} (fails below {floor})"),
                format!("words {path} {n} < {min}"),
            )
        }
    } else if n > max {
        if n <= ceiling {
            (
                Level::Warn,
                format!("{n} words; required {range} ({tol}; fails above {ceiling})"),
                format!("words {path} {n} (range {range})"),
            )
        } else {
            (
                Level::Fail,
                format!("{n} words; required {range} (fails above {ceiling})"),
                format!("words {path} {n} > {max}"),
            )
        }
    } else {
        (
            Level::Pass,
            format!("{n} words; required {range}"),
            String::new(),
        )
    };
    (entry("words", Some(path), status, details), short)
}

fn regex(cell: &'static OnceLock<Option<Regex>>, pattern: &str) -> Option<&'static Regex> {
    cell.get_or_init(|| Regex::new(pattern).ok()).as_ref()
}

/// Removes markdown and HTML syntax that is not prose, keeping the text
/// (see the module docs).
fn strip_markup(text: &str) -> String {
    static COMMENT: OnceLock<Option<Regex>> = OnceLock::new();
    static TAG: OnceLock<Option<Regex>> = OnceLock::new();
    static LINK_TARGET: OnceLock<Option<Regex>> = OnceLock::new();
    static REF_DEF: OnceLock<Option<Regex>> = OnceLock::new();
    static AUTOLINK: OnceLock<Option<Regex>> = OnceLock::new();
    static URL: OnceLock<Option<Regex>> = OnceLock::new();
    static LIST_NUM: OnceLock<Option<Regex>> = OnceLock::new();
    static TASK: OnceLock<Option<Regex>> = OnceLock::new();
    static FOOTNOTE: OnceLock<Option<Regex>> = OnceLock::new();

    let mut s = text.to_string();
    let rules: [(&'static OnceLock<Option<Regex>>, &str, &str); 9] = [
        (&COMMENT, r"(?s)<!--.*?-->", " "),
        (
            &REF_DEF,
            r"(?m)^[ \t]{0,3}\[[^\]\n^][^\]\n]*\]:[ \t]+\S+.*$",
            "",
        ),
        (&LINK_TARGET, r"\]\([^)\s]*(?:\s+[^)]*)?\)", "] "),
        (&AUTOLINK, r"<(?:https?|ftp|mailto):[^>\s]*>", " url "),
        (&TAG, r"</?[A-Za-z][A-Za-z0-9-]*(?:\s[^<>]*)?/?>", " "),
        (&URL, r"\b(?:https?|ftp)://\S+", " url "),
        (
            &TASK,
            r"(?m)^([ \t]*(?:>[ \t]*)*[-*+][ \t]+)\[[ xX]\]",
            "$1",
        ),
        (
            &LIST_NUM,
            r"(?m)^([ \t]*(?:>[ \t]*)*)\d{1,9}[.)]([ \t]|$)",
            "$1$2",
        ),
        (&FOOTNOTE, r"\[\^[^\]\s]+\]:?", " "),
    ];
    for (cell, pattern, replacement) in rules {
        if let Some(re) = regex(cell, pattern) {
            if re.is_match(&s) {
                s = re.replace_all(&s, replacement).into_owned();
            }
        }
    }
    s
}

/// Words as a writer counts them (Unicode-aware).
///
/// UAX #29 words that hold a letter or digit; a hyphenated compound
/// ("well-known") is one word; markdown syntax, HTML tags and comments and
/// link targets are not counted. See the module docs for every rule.
pub fn count_words(text: &str) -> u64 {
    let clean = strip_markup(text);
    let mut count = 0u64;
    let mut prev_end: Option<usize> = None;
    for (start, word) in clean.unicode_word_indices() {
        let joined = prev_end
            .map(|end| matches!(&clean[end..start], "-" | "\u{2010}" | "\u{2011}"))
            .unwrap_or(false);
        if !joined {
            count += 1;
        }
        prev_end = Some(start + word.len());
    }
    count
}

// ------------------------------------------------------------------ terms

fn is_word_char(c: char) -> bool {
    static WORD: OnceLock<Option<Regex>> = OnceLock::new();
    let mut buf = [0u8; 4];
    regex(&WORD, r"^\w$")
        .map(|re| re.is_match(c.encode_utf8(&mut buf)))
        .unwrap_or_else(|| c.is_alphanumeric() || c == '_')
}

/// The regex for a `require` / `forbid` term (see the module docs).
/// Whether `text` mentions `term` the way the `require` and `forbid` checks
/// see it (whole words, any case).
pub fn mentions(text: &str, term: &str) -> bool {
    term_regex(term).is_some_and(|re| re.is_match(text))
}

/// A term ending in `*` (`"больниц*"`) matches any word that starts with
/// it, for languages that inflect (`в больнице`); other terms match whole
/// words only.
fn term_regex(term: &str) -> Option<Regex> {
    let term = term.trim();
    let (term, prefix) = match term.strip_suffix('*') {
        Some(t) if !t.trim().is_empty() => (t.trim_end(), true),
        _ => (term, false),
    };
    let first = term.chars().next()?;
    let last = term.chars().next_back()?;
    let body = term
        .split_whitespace()
        .map(|piece| {
            piece
                .chars()
                .map(|c| match c {
                    '\'' | '’' => "['’]".to_string(),
                    c => regex::escape(c.encode_utf8(&mut [0u8; 4])),
                })
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join(r"\s+");
    let pattern = format!(
        "{}{body}{}",
        if is_word_char(first) { r"\b" } else { "" },
        if prefix {
            r"\w*"
        } else if is_word_char(last) {
            r"\b"
        } else {
            ""
        }
    );
    RegexBuilder::new(&pattern)
        .case_insensitive(true)
        .build()
        .ok()
}

/// 1-based lines on which `re` matches in `text` (where each match starts).
fn match_lines(re: &Regex, text: &str) -> Vec<usize> {
    let newlines: Vec<usize> = text
        .bytes()
        .enumerate()
        .filter(|(_, b)| *b == b'\n')
        .map(|(i, _)| i)
        .collect();
    let mut lines: Vec<usize> = re
        .find_iter(text)
        .map(|m| newlines.partition_point(|&nl| nl < m.start()) + 1)
        .collect();
    lines.dedup();
    lines
}

fn join_lines(lines: &[usize], sep: &str) -> String {
    lines
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(sep)
}

fn check_require(term: &str, texts: &[(&str, &str)]) -> (CheckEntry, String) {
    let term = term.trim();
    let found: Vec<&str> = match term_regex(term) {
        Some(re) => texts
            .iter()
            .filter(|(_, t)| re.is_match(t))
            .map(|(p, _)| *p)
            .collect(),
        None => Vec::new(),
    };
    if found.is_empty() {
        (
            entry(
                "require",
                Some(term),
                Level::Fail,
                format!("`{term}` does not appear in any output"),
            ),
            format!("require `{term}` missing"),
        )
    } else {
        (
            entry(
                "require",
                Some(term),
                Level::Pass,
                format!("`{term}` appears in {}", found.join(", ")),
            ),
            String::new(),
        )
    }
}

fn check_forbid(term: &str, texts: &[(&str, &str)]) -> Vec<(CheckEntry, String)> {
    let term = term.trim();
    let Some(re) = term_regex(term) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (path, text) in texts {
        let lines = match_lines(&re, text);
        if lines.is_empty() {
            continue;
        }
        let on = if lines.len() == 1 { "line" } else { "lines" };
        let mut e = entry(
            "forbid",
            Some(term),
            Level::Fail,
            format!(
                "`{term}` found in {path} on {on} {}",
                join_lines(&lines, ", ")
            ),
        );
        let short = format!("forbid `{term}` in {path}:{}", join_lines(&lines, ","));
        e.lines = lines;
        out.push((e, short));
    }
    if out.is_empty() {
        out.push((
            entry(
                "forbid",
                Some(term),
                Level::Pass,
                format!("`{term}` does not appear in any output"),
            ),
            String::new(),
        ));
    }
    out
}

// -------------------------------------------------------------- canonical

/// If `name` looks like a versioned copy, the canonical file name it copies
/// (same letter case as `name`'s base).
fn canonical_name_of(name: &str) -> Option<String> {
    static BACKUP_SUFFIX: OnceLock<Option<Regex>> = OnceLock::new();
    static COPY_OF: OnceLock<Option<Regex>> = OnceLock::new();
    static MARKER: OnceLock<Option<Regex>> = OnceLock::new();

    let mut name = name.to_string();
    let mut changed = false;
    if let Some(re) = regex(
        &BACKUP_SUFFIX,
        r"(?i)^(.+\..+?)(?:\.bak|\.orig|\.old|\.backup|~)$",
    ) {
        if let Some(c) = re.captures(&name) {
            name = c[1].to_string();
            changed = true;
        }
    }
    if let Some(re) = regex(&COPY_OF, r"(?i)^copy of (.+)$") {
        if let Some(c) = re.captures(&name) {
            name = c[1].to_string();
            changed = true;
        }
    }
    let (mut stem, ext) = match name.rfind('.') {
        Some(i) if i > 0 => (name[..i].to_string(), name[i..].to_string()),
        _ => (name.clone(), String::new()),
    };
    let marker = regex(
        &MARKER,
        concat!(
            r"(?i)^(.*?[^-_. ])(?:[-_. ]+(?:",
            r"v\d+|version[-_ ]?\d*|rev(?:ised|ision)?[-_ ]?\d*|final\d*|new|old|",
            r"copy[-_ ]?\d*|draft[-_ ]?\d*|backup\d*|bak|orig(?:inal)?|updated|edited|",
            r"fixed|tmp|temp",
            r")|\s*\((?:\d+|copy(?: \d+)?)\))$",
        ),
    )?;
    while let Some(c) = marker.captures(&stem) {
        stem = c[1].to_string();
        changed = true;
    }
    changed.then(|| format!("{stem}{ext}"))
}

/// Whether `sibling` can name a versioned copy of `name` at all: cheaply
/// false for most of a big folder's files, so the check costs what the
/// attempt touched, not the folder (the patterns ran on every sibling).
///
/// [`canonical_name_of`] only cuts a prefix (`copy of `), suffixes (`.bak`,
/// `-v2`, ...) and keeps the extension after the last dot, so a copy of
/// `name` contains `name` up to its last dot. Judged in ASCII only (where
/// lowercasing is one letter at a time); any other name goes to the
/// patterns.
fn may_copy(sibling: &str, name: &str) -> bool {
    if !(sibling.is_ascii() && name.is_ascii()) {
        return true;
    }
    let stem = name.rfind('.').map_or(name, |i| &name[..i]).as_bytes();
    stem.is_empty()
        || sibling
            .as_bytes()
            .windows(stem.len())
            .any(|w| w.eq_ignore_ascii_case(stem))
}

fn under_backups(path: &str) -> bool {
    Path::new(path)
        .components()
        .any(|c| matches!(c, Component::Normal(n) if n == "backups"))
}

fn split_path(path: &str) -> (String, String) {
    let path = path.trim_start_matches("./");
    match path.rfind('/') {
        Some(i) => (path[..i].to_string(), path[i + 1..].to_string()),
        None => (String::new(), path.to_string()),
    }
}

fn join_path(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

fn check_canonical(
    worktree: &Path,
    outputs: &[String],
    touched: &[String],
) -> Vec<(CheckEntry, String)> {
    let skip = |p: &str| p.is_empty() || under_backups(p) || p == ".git" || p.starts_with(".git/");
    let outputs_lc: BTreeSet<String> = outputs
        .iter()
        .map(|o| o.trim_start_matches("./").to_lowercase())
        .collect();
    // Folder (relative) → names of the files in it, read once.
    let mut listings: BTreeMap<String, std::rc::Rc<Vec<String>>> = BTreeMap::new();
    let mut list = |dir: &str| -> std::rc::Rc<Vec<String>> {
        std::rc::Rc::clone(listings.entry(dir.to_string()).or_insert_with(|| {
            let Ok(rd) = fs::read_dir(worktree.join(dir)) else {
                return Default::default();
            };
            let mut names: Vec<String> = rd
                .flatten()
                .filter(|e| e.file_type().map(|t| !t.is_dir()).unwrap_or(false))
                .filter_map(|e| e.file_name().into_string().ok())
                .collect();
            names.sort_unstable();
            std::rc::Rc::new(names)
        }))
    };

    // (duplicate, canonical) → whether the canonical file exists.
    let mut found: BTreeMap<(String, String), bool> = BTreeMap::new();
    let mut candidates: BTreeSet<String> = BTreeSet::new();

    // Versioned siblings of every output (even a missing one) and of every
    // touched file that exists.
    let mut canon: Vec<(String, bool)> = outputs
        .iter()
        .map(|o| (o.trim_start_matches("./").to_string(), true))
        .collect();
    canon.extend(
        touched
            .iter()
            .map(|t| (t.trim_start_matches("./").to_string(), false)),
    );
    for (path, is_output) in canon {
        if skip(&path) {
            continue;
        }
        let exists = worktree.join(&path).is_file();
        if !exists && !is_output {
            continue;
        }
        candidates.insert(path.clone());
        let (dir, name) = split_path(&path);
        let name_lc = name.to_lowercase();
        for sibling in list(&dir).iter() {
            if *sibling == name || !may_copy(sibling, &name) {
                continue;
            }
            let sib_path = join_path(&dir, sibling);
            if outputs_lc.contains(&sib_path.to_lowercase()) {
                continue;
            }
            if canonical_name_of(sibling).map(|c| c.to_lowercase()) == Some(name_lc.clone()) {
                found.insert((sib_path, path.clone()), exists);
            }
        }
    }

    // Touched files that themselves look versioned while their canonical
    // name exists.
    for t in touched {
        let t = t.trim_start_matches("./");
        if skip(t) || outputs_lc.contains(&t.to_lowercase()) || !worktree.join(t).is_file() {
            continue;
        }
        let (dir, name) = split_path(t);
        let Some(canonical) = canonical_name_of(&name) else {
            continue;
        };
        let canonical_lc = canonical.to_lowercase();
        if let Some(actual) = list(&dir)
            .iter()
            .find(|n| n.to_lowercase() == canonical_lc && **n != name)
        {
            found.insert((t.to_string(), join_path(&dir, actual)), true);
        }
    }

    if candidates.is_empty() && found.is_empty() {
        return Vec::new();
    }
    if found.is_empty() {
        let n = candidates.len();
        return vec![(
            entry(
                "canonical",
                None,
                Level::Pass,
                format!(
                    "no versioned duplicates beside {n} file{}",
                    if n == 1 { "" } else { "s" }
                ),
            ),
            String::new(),
        )];
    }
    found
        .into_iter()
        .map(|((dup, canonical), exists)| {
            let details = if exists {
                format!(
                    "versioned duplicate `{dup}` beside `{canonical}`: keep one canonical file — \
                     merge its content into `{canonical}` and delete it, or move it to `backups/`"
                )
            } else {
                format!(
                    "versioned duplicate `{dup}` instead of `{canonical}`, which does not exist: \
                     rename it to `{canonical}`"
                )
            };
            (
                entry("canonical", Some(&dup), Level::Fail, details),
                format!("duplicate {dup}"),
            )
        })
        .collect()
}

// ---------------------------------------------------------------- command

fn tail_text(bytes: &[u8], truncated: bool) -> String {
    // Skip UTF-8 continuation bytes a cut may have left at the start.
    let start = if truncated {
        bytes
            .iter()
            .position(|b| (b & 0xC0) != 0x80)
            .unwrap_or(bytes.len())
    } else {
        0
    };
    let text = String::from_utf8_lossy(&bytes[start..]);
    let text = text.trim_start_matches(['\n', '\r']).trim_end();
    if truncated {
        format!("…{text}")
    } else {
        text.to_string()
    }
}

/// `[checks.commands]`, all at once (one thread each: the stage takes as
/// long as the slowest), in name order in the report. A non-blocking
/// command's failure is a warning; one that cannot run at all is still a
/// failure (its entry says how to fix it).
fn named_commands(
    worktree: &Path,
    settings: &crate::config::CheckSettings,
    env: &[(String, String)],
    on_start: Option<process::OnStart<'_>>,
) -> Vec<(CheckEntry, String)> {
    let cmds: Vec<&crate::config::CheckCommand> = settings
        .commands
        .iter()
        .filter(|c| !c.run.trim().is_empty())
        .collect();
    let ran: Vec<(CheckEntry, String)> = std::thread::scope(|scope| {
        let handles: Vec<_> = cmds
            .iter()
            .map(|c| {
                let timeout = c.timeout.unwrap_or(settings.command_timeout);
                scope.spawn(move || check_command(worktree, &c.run, env, timeout, on_start))
            })
            .collect();
        handles
            .into_iter()
            .zip(&cmds)
            .map(|(h, c)| {
                h.join().unwrap_or_else(|_| {
                    (
                        entry(
                            "command",
                            Some(&c.run),
                            Level::Fail,
                            "the check thread panicked".into(),
                        ),
                        "command failed".into(),
                    )
                })
            })
            .collect()
    });
    ran.into_iter()
        .zip(cmds)
        .map(|((mut e, short), c)| {
            // Named in the report and the feedback: `lint = scripts/lint.sh`.
            e.target = Some(format!("{} = {}", c.name, c.run));
            if !c.blocking && e.status == Level::Fail && e.cannot_run.is_none() {
                e.status = Level::Warn;
                e.details = format!("{} (not blocking: a warning)", e.details);
            }
            (e, format!("{}: {short}", c.name))
        })
        .collect()
}

fn check_command(
    worktree: &Path,
    cmd: &str,
    env: &[(String, String)],
    timeout: Duration,
    on_start: Option<process::OnStart<'_>>,
) -> (CheckEntry, String) {
    let fail = |details: String, short: String| {
        (
            entry("command", Some(cmd), Level::Fail, details),
            format!("command {short}"),
        )
    };
    // The command itself could not run: say so, and how to fix it.
    let cannot = |why: String, fix: &str| {
        let mut e = entry("command", Some(cmd), Level::Fail, why.clone());
        e.cannot_run = Some(format!(
            "the check command `{cmd}` could not run: {why}\n  help: {fix}"
        ));
        (e, "command could not run".to_string())
    };
    let start_fix = "the machine could not start `sh`; check that /bin/sh exists and that \
                     processes can be started, then run the swarm again";
    let env: Vec<(String, String)> = env
        .iter()
        .filter(|(k, v)| !(k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0')))
        .cloned()
        .collect();
    let args = ["-c".to_string(), cmd.to_string()];
    let job = process::Capture {
        program: "sh",
        args: &args,
        cwd: worktree,
        env: &env,
        timeout,
        tail: OUTPUT_TAIL,
        on_start,
    };
    let ran = match process::run_captured(&job) {
        Ok(r) => r,
        Err(CaptureStartError::Pipe(e)) => {
            return cannot(format!("could not create a pipe: {e}"), start_fix)
        }
        Err(CaptureStartError::Spawn(e)) => {
            return cannot(
                format!("could not run `sh -c {cmd}` in {}: {e}", worktree.display()),
                start_fix,
            )
        }
        Err(CaptureStartError::Pid) => {
            return cannot("the command's pid is out of range".into(), start_fix)
        }
    };
    let output = tail_text(&ran.output, ran.truncated);
    let status = match ran.exit {
        Exit::Status(status) => Ok(status),
        Exit::TimedOut => Err(format!(
            "timed out after {}",
            humantime::format_duration(timeout)
        )),
        Exit::WaitFailed(e) => Err(format!("could not wait for the command: {e}")),
    };
    match status {
        Ok(status) if status.success() => {
            let details = if output.is_empty() {
                "exit status 0 (no output)".to_string()
            } else {
                output
            };
            (
                entry("command", Some(cmd), Level::Pass, details),
                String::new(),
            )
        }
        Ok(status) if matches!(status.code(), Some(126 | 127)) => {
            // `sh` says 127 when a command is not found and 126 when it is
            // not executable: no draft can fix either.
            let (what, fix) = if status.code() == Some(127) {
                (
                    "a command in it was not found (exit 127)",
                    "fix `command` in [checks] (or the stream's [streams.checks]) of the swarm \
                     file: name a program on PATH, or a script committed to the target branch \
                     (paths are relative to the worktree root), or install what it runs",
                )
            } else {
                (
                    "a command in it is not executable (exit 126)",
                    "make the script executable and commit that (`chmod +x <script>`; git \
                     keeps the bit), or run it through the shell: `command = \"sh <script>\"`",
                )
            };
            let why = if output.is_empty() {
                what.to_string()
            } else {
                format!("{what}: {output}")
            };
            cannot(why, fix)
        }
        Ok(status) => {
            let (short, silent) = match status.code() {
                Some(c) => (format!("exit {c}"), format!("exited with status {c}")),
                None => {
                    use std::os::unix::process::ExitStatusExt;
                    let sig = status.signal().unwrap_or(0);
                    (
                        format!("killed by signal {sig}"),
                        format!("was killed by signal {sig}"),
                    )
                }
            };
            let details = if output.is_empty() {
                format!("{silent} and printed nothing")
            } else {
                output
            };
            fail(details, short)
        }
        Err(why) => {
            let details = if output.is_empty() {
                why.clone()
            } else {
                format!("{why}; its last output:\n{output}")
            };
            fail(details, why)
        }
    }
}

#[cfg(test)]
mod tests;
