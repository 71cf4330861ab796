//! Read-mostly views for a person reviewing a stream: `loki show <id>` and
//! `loki check [<id>]`. Nothing here changes a stream's state.
//!
//! ## `loki show <id>`
//!
//! One screen (or a few) with everything needed to approve or reject a draft
//! without opening another file, in this order:
//!
//! 1. **Header**: id, status and why, attempt `n of max` (and how many
//!    attempts did not count), cost, branch and worktree, and the approval
//!    state with the exact command to approve or reject.
//! 2. **Outputs**: each configured output with its word count (counted as the
//!    `words` check counts) and line count. A file of at most
//!    [`WHOLE_FILE_LINES`] lines is shown whole; a longer one shows its first
//!    [`HEAD_LINES`] lines and says how many more there are and where the
//!    whole file is. Outputs are read from the worktree (what the reviewer
//!    sees on disk), or from the branch when the worktree is gone.
//! 3. **Checks**: the latest check report (`checks.json` of the last attempt
//!    that ran checks), rendered with [`CheckReport::human`]; a newer
//!    `loki check` report (`manual-check.json`) is shown after it.
//! 4. **Final message**: the `result` of the last `{"type":"result"}` line of
//!    the last attempt's transcript; for a plain agent (no result line), the
//!    last [`TAIL_LINES`] lines it printed; after a failed attempt, the tail of
//!    its stderr too.
//! 5. **Diff** against the target ([`git::diff_against_target`]: the branch,
//!    plus the worktree's uncommitted changes), with a file/line summary. Up
//!    to [`MAX_DIFF_LINES`] lines are printed; beyond that it says how to see
//!    the rest.
//!
//! It works for any stream that has a worktree or a branch (running, failed,
//! awaiting approval, conflicted, cancelled…); for a merged stream or one that
//! never started it says so and how to look instead.
//!
//! ## `loki check [<id>]`
//!
//! Runs the stream's configured checks ([`checks::run_checks`]) on its
//! current worktree, without an agent, so a draft fixed by hand can be
//! re-checked. The touched paths (for the `canonical` check) are those that
//! differ from the stream's `base_commit` (or, without state, from the merge
//! base of the branch and the target). The custom command gets
//! `LOKI_STREAM_ID`, `LOKI_ATTEMPT` (the stream's current attempt) and
//! `LOKI_CHECK_MANUAL=1`.
//!
//! The report is printed and written to `.loki/runs/<id>/manual-check.json`
//! (so `loki show` can show it); the stream's state is never written, and the
//! supervisor never reads that file. Exit code 0 on PASS or WARN, 1 on FAIL.
//! Without an id, every stream of the swarm file that has a worktree is
//! checked, and the exit code is 1 if any of them fails.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::checks::{self, CheckReport, Level};
use crate::config::{StreamConfig, SwarmFile};
use crate::error::Error;
use crate::git;
use crate::model::paths::branch_name;
use crate::model::Layout;
use crate::model::{Status, StreamState};
use crate::store::StateStore;

/// An output of at most this many lines is shown whole.
pub const WHOLE_FILE_LINES: usize = 60;
/// A longer output shows this many lines from its start.
pub const HEAD_LINES: usize = 40;
/// A plain agent's final message: its last this many output lines.
pub const TAIL_LINES: usize = 15;
/// The diff is cut after this many lines.
pub const MAX_DIFF_LINES: usize = 1500;

/// Name of the report `loki check` writes in `.loki/runs/<id>/`.
pub const MANUAL_CHECK_FILE: &str = "manual-check.json";

/// `loki show <id>`: prints [`show_text`]; exit code 0.
pub fn show(root: &Path, cfg: &SwarmFile, target: &str, id: &str) -> Result<i32> {
    let text = show_text(root, cfg, target, id)?;
    print!("{text}");
    Ok(0)
}

/// What `loki show <id>` prints (see the module docs).
pub fn show_text(root: &Path, cfg: &SwarmFile, target: &str, id: &str) -> Result<String> {
    let stream = find_stream(cfg, id)?;
    let layout = Layout::new(root);
    let store = StateStore::new(layout.state_dir());
    let st = store
        .load(id)?
        .unwrap_or_else(|| StreamState::new(&stream.id));
    let wt = layout.worktree(id);
    let has_worktree = wt.is_dir();
    let branch = branch_name(id);
    let has_branch = git::branch_head(root, &branch).is_ok();
    if !has_worktree && !has_branch {
        if st.status == Status::Merged {
            if let Some(text) = merged_text(root, stream, target, id)? {
                return Ok(text);
            }
            // By characters: a hand-edited state file may hold any text.
            let short: String = st
                .merge_commit
                .as_deref()
                .map(|c| c.chars().take(12).collect())
                .unwrap_or_else(|| "?".into());
            return Err(Error::refusal(format!(
                "stream `{id}` is merged into {target} (merge commit {short}); its branch and worktree are gone, so there is nothing left to review"
            ))
            .hint(format!("`git show --stat {short}` shows what it merged; `loki logs {id}` shows its transcript"))
            .into());
        }
        return Err(Error::refusal(format!(
            "stream `{id}` has no branch or worktree yet (status: {})",
            st.status
        ))
        .hint("`loki run` starts it; `loki status` shows where every stream is")
        .into());
    }

    let cmd = loki_command(root, cfg);
    let mut out = String::new();
    header(&mut out, stream, &st, &cmd, &wt, has_worktree, root);
    outputs_section(&mut out, root, stream, &wt, has_worktree, &branch);
    checks_section(&mut out, &layout, &st);
    validation_section(&mut out, &layout, &st);
    final_message_section(&mut out, &layout, &st);
    diff_section(&mut out, root, id, target, &branch);
    Ok(out)
}

/// What `loki show` says of a merged stream, from git alone: its merges'
/// attempts, checks, cost and approval (as `loki log <id>` reads them),
/// and the files each merge changed, with the words of its outputs as the
/// target holds them. `None` when the target's history has no merge of it.
fn merged_text(
    root: &Path,
    stream: &StreamConfig,
    target: &str,
    id: &str,
) -> Result<Option<String>> {
    let mut audit = super::log::collect(root, target)?;
    audit.streams.retain(|s| s.id == id);
    if audit.streams.is_empty() {
        return Ok(None);
    }
    audit.totals = super::log::totals(&audit.streams);
    let mut out = format!("stream {id} is merged into {target}; what git records of it:\n\n");
    out.push_str(&super::log::render(&audit));
    let tree = git::BranchTree::open(root, Some(target));
    for m in &audit.streams {
        let short: String = m.merge_commit.chars().take(8).collect();
        section(&mut out, &format!("files merge {short} changed"));
        for path in git::merge_paths(root, &m.merge_commit)? {
            let output = stream
                .outputs
                .iter()
                .any(|o| crate::config::normal_path(o) == path);
            let words = tree
                .as_ref()
                .filter(|_| output)
                .and_then(|t| t.read(&path, crate::util::MAX_OUTPUT_FILE))
                .and_then(|b| String::from_utf8(b).ok())
                .map(|text| {
                    format!(
                        "  ({} words in {target})",
                        crate::checks::count_words(&text)
                    )
                })
                .unwrap_or_default();
            out.push_str(&format!(
                "  {path}{}{words}\n",
                if output { "  output" } else { "" }
            ));
        }
        out.push_str(&format!(
            "  (`git show --stat {short}` shows the merge; `loki logs {id}` the transcripts)\n"
        ));
    }
    Ok(Some(out))
}

/// `loki check [<id>]` (see the module docs): prints the report(s) and
/// returns 0 on PASS / WARN, 1 on FAIL.
pub fn check(root: &Path, cfg: &SwarmFile, id: Option<&str>) -> Result<i32> {
    let layout = Layout::new(root);
    let store = StateStore::new(layout.state_dir());
    let Some(id) = id else {
        let with_worktree: Vec<&StreamConfig> = cfg
            .streams
            .iter()
            .filter(|s| layout.worktree(&s.id).is_dir())
            .collect();
        if with_worktree.is_empty() {
            println!(
                "no stream has a worktree to check (merged streams' worktrees are removed; `loki status` shows every stream)"
            );
            return Ok(0);
        }
        let mut failed = Vec::new();
        let mut counts = [0usize; 3];
        for (i, s) in with_worktree.iter().enumerate() {
            if i > 0 {
                println!();
            }
            let report = check_and_print(root, cfg, &layout, &store, s)?;
            counts[report.status as usize] += 1;
            if report.status == Level::Fail {
                failed.push(s.id.as_str());
            }
        }
        println!(
            "\nchecked {} stream(s): {} PASS, {} WARN, {} FAIL{}",
            with_worktree.len(),
            counts[Level::Pass as usize],
            counts[Level::Warn as usize],
            counts[Level::Fail as usize],
            if failed.is_empty() {
                String::new()
            } else {
                format!(" ({})", failed.join(", "))
            }
        );
        return Ok(if failed.is_empty() { 0 } else { 1 });
    };
    let stream = find_stream(cfg, id)?;
    if !layout.worktree(id).is_dir() {
        let st = store.load(id)?;
        let status = st.as_ref().map(|s| s.status).unwrap_or_default();
        let help = match status {
            Status::Merged => "it is merged, and its worktree was removed after the merge; `git log` shows what was merged".to_string(),
            Status::Pending | Status::Ready => {
                "it has not started yet; `loki run` creates its worktree".to_string()
            }
            _ => format!(
                "`loki retry {id}` and `loki run` recreate it from branch {} (if the branch still exists)",
                branch_name(id)
            ),
        };
        return Err(Error::refusal(format!(
            "stream `{id}` has no worktree at {} (status: {status})",
            layout.worktree(id).display()
        ))
        .hint(help)
        .into());
    }
    let report = check_and_print(root, cfg, &layout, &store, stream)?;
    Ok(if report.status == Level::Fail { 1 } else { 0 })
}

/// Runs the checks of `stream` on its worktree and writes
/// `.loki/runs/<id>/manual-check.json`; nothing else is written.
pub fn check_stream(root: &Path, cfg: &SwarmFile, id: &str) -> Result<CheckReport> {
    let stream = find_stream(cfg, id)?;
    let layout = Layout::new(root);
    let store = StateStore::new(layout.state_dir());
    let st = store.load(id)?;
    run_manual(root, cfg, &layout, stream, st.as_ref())
}

fn check_and_print(
    root: &Path,
    cfg: &SwarmFile,
    layout: &Layout,
    store: &StateStore,
    stream: &StreamConfig,
) -> Result<CheckReport> {
    let st = store.load(&stream.id)?;
    let wt = layout.worktree(&stream.id);
    println!("== {} ({})", stream.id, rel(root, &wt));
    if let Some(s) = &st {
        if matches!(
            s.status,
            Status::Preparing | Status::Running | Status::Checking
        ) {
            println!(
                "note: stream {} is {} right now; this is a snapshot of a worktree an agent may still be changing",
                stream.id, s.status
            );
        }
    }
    let report = run_manual(root, cfg, layout, stream, st.as_ref())?;
    print!("{}", report.human());
    println!(
        "report written to {}",
        rel(root, &manual_check_path(layout, &stream.id))
    );
    Ok(report)
}

fn run_manual(
    root: &Path,
    cfg: &SwarmFile,
    layout: &Layout,
    stream: &StreamConfig,
    st: Option<&StreamState>,
) -> Result<CheckReport> {
    let wt = layout.worktree(&stream.id);
    if !wt.is_dir() {
        return Err(Error::refusal(format!(
            "stream `{}` has no worktree at {}",
            stream.id,
            wt.display()
        ))
        .hint("`loki status` shows where it is")
        .into());
    }
    let base = st
        .and_then(|s| s.base_commit.clone())
        .or_else(|| fallback_base(root, cfg, &stream.id));
    let touched = base.and_then(|b| git::touched_paths(root, &stream.id, &b).ok());
    let env = vec![
        ("LOKI_STREAM_ID".to_string(), stream.id.to_string()),
        (
            "LOKI_ATTEMPT".to_string(),
            st.map(|s| s.attempt).unwrap_or(0).to_string(),
        ),
        ("LOKI_CHECK_MANUAL".to_string(), "1".to_string()),
    ];
    let report = checks::run_checks(&wt, stream, touched.as_deref(), &env);
    report.write(&manual_check_path(layout, &stream.id))?;
    Ok(report)
}

/// The merge base of `loki/<id>` and the target, when the state names no base.
fn fallback_base(root: &Path, cfg: &SwarmFile, id: &str) -> Option<String> {
    let target = match &cfg.swarm.target {
        Some(t) => t.clone(),
        None => git::current_branch(root).ok().flatten()?,
    };
    git::branch_merge_base(root, &branch_name(id), &target).ok()
}

fn manual_check_path(layout: &Layout, id: &str) -> PathBuf {
    layout.runs_dir(id).join(MANUAL_CHECK_FILE)
}

fn find_stream<'a>(cfg: &'a SwarmFile, id: &str) -> Result<&'a StreamConfig> {
    match cfg.stream(id) {
        Some(s) => Ok(s),
        None => {
            let known: Vec<&str> = cfg.streams.iter().map(|s| s.id.as_str()).collect();
            Err(Error::refusal(format!("unknown stream `{id}`"))
                .hint(format!(
                    "streams in {}: {}",
                    cfg.path.display(),
                    known.join(", ")
                ))
                .into())
        }
    }
}

/// `loki`, or `loki -c <path>` when the swarm file is not `loki.toml` at the root.
fn loki_command(root: &Path, cfg: &SwarmFile) -> String {
    let default = root.join("loki.toml");
    let same = match (default.canonicalize(), cfg.path.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => default == cfg.path,
    };
    if same {
        "loki".to_string()
    } else {
        format!("loki -c {}", cfg.path.display())
    }
}

/// `path` relative to `root` when it is inside it.
fn rel(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| path.display().to_string())
}

fn section(out: &mut String, title: &str) {
    let _ = writeln!(out, "\n== {title}");
}

fn header(
    out: &mut String,
    stream: &StreamConfig,
    st: &StreamState,
    cmd: &str,
    wt: &Path,
    has_worktree: bool,
    root: &Path,
) {
    let id = &stream.id;
    let _ = writeln!(out, "stream {id}: {}", st.status);
    if let Some(r) = &st.reason {
        let _ = writeln!(out, "  why:       {}", crate::util::one_line(r));
    }
    let max = stream.agent.max_attempts;
    let n = st.attempt;
    let mut attempt = if n == 0 {
        "none yet".to_string()
    } else if n <= max {
        format!("{n} of {max}")
    } else {
        format!("{n} ({max} allowed per run)")
    };
    let uncounted = st.attempts.iter().filter(|a| !a.counted).count();
    if uncounted > 0 {
        let _ = write!(
            attempt,
            "; {uncounted} did not count (rejected, interrupted or rate-limited)"
        );
    }
    let _ = writeln!(out, "  attempt:   {attempt}");
    let _ = writeln!(
        out,
        "  cost:      ${:.4} over {} attempt(s)",
        st.cost_usd,
        st.attempts.len()
    );
    let wt_text = if has_worktree {
        rel(root, wt)
    } else {
        "(none)".to_string()
    };
    let _ = writeln!(
        out,
        "  branch:    {}   worktree: {wt_text}",
        branch_name(id)
    );
    let approval = if st.status == Status::AwaitingApproval {
        format!(
            "waiting for you: `{cmd} approve {id}` merges it; `{cmd} reject {id} --note \"what to change\"` sends it back for another attempt"
        )
    } else if let Some(who) = &st.approved_by {
        format!("approved by {who}")
    } else if stream.checks.approve {
        format!(
            "required: once its checks pass it waits for `{cmd} approve {id}` (or `{cmd} reject {id} --note \"…\"`)"
        )
    } else {
        "not required (it merges as soon as its checks pass)".to_string()
    };
    let _ = writeln!(out, "  approval:  {approval}");
    let next = match st.status {
        Status::Failed | Status::Blocked | Status::Cancelled => Some(format!(
            "`{cmd} retry {id}`, then `{cmd} run`: another attempt with a fresh allowance, revising this worktree"
        )),
        Status::Interrupted => Some(format!("`{cmd} run` resumes it")),
        Status::Retrying | Status::Pending => Some(format!("`{cmd} run` starts its next attempt")),
        Status::Conflicted => Some(format!(
            "resolve the conflict in its worktree (merge the target into {} and commit), then `{cmd} retry {id}`",
            branch_name(id)
        )),
        _ => None,
    };
    if let Some(n) = next {
        let _ = writeln!(out, "  next:      {n}");
    }
    if has_worktree {
        if let Ok(dirty) = git::uncommitted_paths(wt) {
            if !dirty.is_empty() {
                let _ = writeln!(
                    out,
                    "  note:      uncommitted changes in the worktree (not on the branch yet): {}",
                    dirty.join(", ")
                );
            }
        }
    }
}

/// An output's bytes: from the worktree, or from the branch when there is none.
fn read_output(
    root: &Path,
    wt: &Path,
    has_worktree: bool,
    branch: &str,
    path: &str,
) -> Option<Vec<u8>> {
    if has_worktree {
        // As the checks read it: never through a link, never a FIFO.
        return crate::util::read_inside(wt, Path::new(path), crate::util::MAX_OUTPUT_FILE).ok();
    }
    git::file_on_branch(root, branch, path).ok()
}

fn outputs_section(
    out: &mut String,
    root: &Path,
    stream: &StreamConfig,
    wt: &Path,
    has_worktree: bool,
    branch: &str,
) {
    let from = if has_worktree {
        format!("from the worktree {}", rel(root, wt))
    } else {
        format!("from branch {branch}")
    };
    section(out, &format!("outputs ({from})"));
    if stream.outputs.is_empty() {
        let _ = writeln!(out, "(this stream configures no outputs)");
    }
    for path in &stream.outputs {
        let Some(bytes) = read_output(root, wt, has_worktree, branch, path) else {
            let _ = writeln!(out, "{path}: missing");
            continue;
        };
        let Ok(text) = String::from_utf8(bytes.clone()) else {
            let _ = writeln!(out, "{path}: not UTF-8 text ({} bytes)", bytes.len());
            continue;
        };
        let words = checks::count_words(&text);
        let lines: Vec<&str> = text.lines().collect();
        let range = stream
            .checks
            .words
            .map(|(a, b)| format!(" (required {a}–{b})"))
            .unwrap_or_default();
        let _ = writeln!(out, "{path}: {words} words{range}, {} lines", lines.len());
        if text.trim().is_empty() {
            let _ = writeln!(out, "    (empty)");
            continue;
        }
        let shown = if lines.len() <= WHOLE_FILE_LINES {
            lines.len()
        } else {
            HEAD_LINES
        };
        for l in &lines[..shown] {
            if l.is_empty() {
                out.push('\n');
            } else {
                let _ = writeln!(out, "    {l}");
            }
        }
        if shown < lines.len() {
            let whole = if has_worktree {
                rel(root, &wt.join(path))
            } else {
                format!("git show {branch}:{path}")
            };
            let _ = writeln!(
                out,
                "    … {} more lines (the whole file: {whole})",
                lines.len() - shown
            );
        }
    }
}

/// The latest validation report (`validation.json`), when a validator ran.
fn validation_section(out: &mut String, layout: &Layout, st: &StreamState) {
    let latest = (1..=st.attempt).rev().find_map(|n| {
        let p = layout
            .run_dir(&st.id, n)
            .join(crate::supervisor::VALIDATION_FILE);
        p.exists().then_some((n, p))
    });
    let Some((n, path)) = latest else {
        return;
    };
    section(out, &format!("validation (attempt {n})"));
    let read = std::fs::read_to_string(&path)
        .map_err(anyhow::Error::from)
        .and_then(|t| {
            serde_json::from_str::<crate::checks::verdict::ValidationReport>(&t)
                .map_err(anyhow::Error::from)
        });
    match read {
        Ok(r) => out.push_str(&r.human()),
        Err(e) => {
            let _ = writeln!(out, "(cannot read {}: {e:#})", path.display());
        }
    }
}

fn checks_section(out: &mut String, layout: &Layout, st: &StreamState) {
    let id = &st.id;
    let latest = (1..=st.attempt).rev().find_map(|n| {
        let p = layout.run_dir(id, n).join("checks.json");
        p.exists().then_some((n, p))
    });
    let title = match &latest {
        Some((n, _)) => format!("checks (attempt {n})"),
        None => "checks".to_string(),
    };
    section(out, &title);
    let mut attempt_mtime = None;
    match latest {
        None => {
            let _ = writeln!(out, "(no attempt has run its checks yet)");
        }
        Some((n, path)) => {
            if n != st.attempt {
                let why = st
                    .attempts
                    .iter()
                    .rev()
                    .find(|a| a.n == st.attempt)
                    .and_then(|a| a.reason.clone())
                    .map(|r| format!(": {}", crate::util::one_line(&r)))
                    .unwrap_or_default();
                let _ = writeln!(
                    out,
                    "attempt {} ran no checks (the agent did not finish{why}); the latest report is from attempt {n}:",
                    st.attempt
                );
            }
            match CheckReport::read(&path) {
                Ok(r) => out.push_str(&r.human()),
                Err(e) => {
                    let _ = writeln!(out, "(cannot read the report: {e:#})");
                }
            }
            attempt_mtime = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
        }
    }
    let manual = manual_check_path(layout, id);
    let manual_mtime = std::fs::metadata(&manual).and_then(|m| m.modified()).ok();
    let newer = match (manual_mtime, attempt_mtime) {
        (Some(m), Some(a)) => m > a,
        (Some(_), None) => true,
        _ => false,
    };
    if newer {
        if let Ok(r) = CheckReport::read(&manual) {
            let when = manual_mtime
                .map(|t| {
                    chrono::DateTime::<chrono::Utc>::from(t)
                        .format(" at %Y-%m-%d %H:%M:%S UTC")
                        .to_string()
                })
                .unwrap_or_default();
            let _ = writeln!(out, "\nlater, by hand (`loki check {id}`{when}):");
            out.push_str(&r.human());
        }
    }
}

/// The `result` of the last result line of a transcript, and whether it was an error.
pub fn final_result(transcript: &str) -> Option<(String, bool)> {
    transcript.lines().rev().find_map(|l| {
        let v: serde_json::Value = serde_json::from_str(l.trim()).ok()?;
        if v["type"] != "result" {
            return None;
        }
        let text = v["result"].as_str().unwrap_or("").to_string();
        Some((text, v["is_error"] == true))
    })
}

fn final_message_section(out: &mut String, layout: &Layout, st: &StreamState) {
    let n = st.attempt;
    if n == 0 {
        section(out, "final message");
        let _ = writeln!(out, "(no attempt yet)");
        return;
    }
    section(out, &format!("final message (attempt {n})"));
    let path = layout.transcript(&st.id, n);
    match std::fs::read(&path) {
        Err(_) => {
            let _ = writeln!(out, "(no transcript at {})", path.display());
        }
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            if let Some((msg, is_error)) = final_result(&text) {
                if is_error {
                    let _ = writeln!(out, "(the agent reported an error)");
                }
                let msg = msg.trim_end();
                if msg.is_empty() {
                    let _ = writeln!(out, "(the result line carries no text)");
                } else {
                    let _ = writeln!(out, "{msg}");
                }
            } else {
                let rendered: Vec<String> = text
                    .lines()
                    .filter_map(crate::commands::logs::render_line)
                    .flat_map(|s| s.lines().map(str::to_string).collect::<Vec<_>>())
                    .filter(|l| !l.trim().is_empty())
                    .collect();
                if rendered.is_empty() {
                    let _ = writeln!(out, "(the agent printed nothing)");
                } else {
                    let skip = rendered.len().saturating_sub(TAIL_LINES);
                    if skip > 0 {
                        let _ = writeln!(
                            out,
                            "(no result line; the last {TAIL_LINES} lines the agent printed)"
                        );
                    }
                    for l in &rendered[skip..] {
                        let _ = writeln!(out, "{l}");
                    }
                }
            }
        }
    }
    let failed = st
        .attempts
        .iter()
        .rev()
        .find(|a| a.n == n)
        .is_some_and(|a| {
            !a.outcome.is_empty()
                && !matches!(a.outcome.as_str(), "ok" | "check_failed" | "rejected")
        });
    if failed {
        if let Ok(err) = std::fs::read_to_string(layout.stderr_log(&st.id, n)) {
            let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
            if !lines.is_empty() {
                let skip = lines.len().saturating_sub(TAIL_LINES);
                let _ = writeln!(out, "stderr (last lines):");
                for l in &lines[skip..] {
                    let _ = writeln!(out, "    {l}");
                }
            }
        }
    }
}

fn diff_section(out: &mut String, root: &Path, id: &str, target: &str, branch: &str) {
    match git::diff_against_target(root, id, target) {
        Err(e) => {
            section(out, &format!("diff against {target}"));
            let _ = writeln!(out, "(cannot diff: {e:#})");
        }
        Ok(diff) => {
            let files = diff
                .lines()
                .filter(|l| l.starts_with("diff --git "))
                .count();
            let added = diff
                .lines()
                .filter(|l| l.starts_with('+') && !l.starts_with("+++ "))
                .count();
            let removed = diff
                .lines()
                .filter(|l| l.starts_with('-') && !l.starts_with("--- "))
                .count();
            section(
                out,
                &format!(
                    "diff against {target}: {files} file(s) changed, +{added} −{removed} lines"
                ),
            );
            if diff.trim().is_empty() {
                let _ = writeln!(out, "(no changes)");
                return;
            }
            let lines: Vec<&str> = diff.lines().collect();
            let shown = lines.len().min(MAX_DIFF_LINES);
            for l in &lines[..shown] {
                let _ = writeln!(out, "{l}");
            }
            if shown < lines.len() {
                let _ = writeln!(
                    out,
                    "… {} more lines (all of it: `git diff {target}...{branch}`, plus the worktree's uncommitted changes)",
                    lines.len() - shown
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_result_takes_the_last_result_line() {
        let t = "{\"type\":\"system\",\"subtype\":\"init\"}\nnot json\n\
                 {\"type\":\"result\",\"result\":\"first\",\"is_error\":false}\n\
                 {\"type\":\"result\",\"result\":\"Wrote a.md.\\nDone.\",\"is_error\":false}\n\
                 trailing text\n";
        assert_eq!(
            final_result(t),
            Some(("Wrote a.md.\nDone.".to_string(), false))
        );
        assert_eq!(final_result("plain\nlines\n"), None);
        assert_eq!(
            final_result("{\"type\":\"result\",\"result\":\"boom\",\"is_error\":true}"),
            Some(("boom".to_string(), true))
        );
    }
}
