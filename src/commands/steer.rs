//! Steering commands (`loki approve`, `reject`, `cancel`, `retry`, `pause`,
//! `resume`, `signal`): while a supervisor holds the lock they write a signal
//! file for it; with none running they take the lock themselves and apply the
//! same decision directly through the state store's compare-and-swap (an
//! approval then merges at once).

use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::git::{self, MergeOutcome};
use crate::model::Layout;
use crate::signal_files::{Kind, SignalDir};
use crate::store::{Event, StateStore, Status, StreamState, SupervisorLock};
use crate::supervisor::{decide, default_approver, Decision};
use crate::util::now_rfc3339;

/// What a steering command asks.
#[derive(Debug, Clone)]
pub struct Request {
    pub kind: Kind,
    pub stream: Option<String>,
    pub expected_version: Option<u64>,
    pub note: Option<String>,
    /// `loki reject --count`: the rejected attempt counts against max_attempts.
    pub count: bool,
    /// The stream's `max_attempts`, for a counted rejection applied directly.
    pub max_attempts: Option<u32>,
}

/// Sends or applies `req` in the repo at `root`; returns what to tell the user.
pub fn steer(root: &Path, target: &str, req: &Request) -> Result<String> {
    let layout = Layout::new(root);
    if req.stream.is_none() && !req.kind.allows_no_stream() {
        bail!(
            "{} needs a stream id\n  help: loki signal {} <id>",
            req.kind.as_str(),
            req.kind.as_str()
        );
    }
    let state_dir = layout.state_dir();
    std::fs::create_dir_all(&state_dir)
        .with_context(|| format!("creating {}", state_dir.display()))?;
    let lock = match SupervisorLock::acquire(&state_dir)? {
        Ok(lock) => lock,
        Err(pid) => {
            let dir = SignalDir::new(layout.signals_dir());
            let path = dir.write(
                req.kind,
                req.stream.as_deref(),
                req.expected_version,
                req.note.as_deref(),
                req.count,
            )?;
            let who = pid.map(|p| format!(" (pid {p})")).unwrap_or_default();
            return Ok(format!(
                "sent {} to the running supervisor{who}; follow it with `loki status`",
                path.file_name()
                    .map(|n| n.to_string_lossy().to_string())
                    .unwrap_or_default()
            ));
        }
    };
    let store = StateStore::new(&state_dir);
    let result = apply_direct(&layout, &store, target, req);
    drop(lock);
    result
}

fn apply_direct(
    layout: &Layout,
    store: &StateStore,
    target: &str,
    req: &Request,
) -> Result<String> {
    let Some(id) = req.stream.as_deref() else {
        let sw = store.load_swarm()?;
        return match req.kind {
            Kind::Pause | Kind::Resume => {
                let pause = req.kind == Kind::Pause;
                let note = req.note.clone();
                let expected = req.expected_version.unwrap_or(sw.version);
                if expected != sw.version {
                    bail!(
                        "stale: expected swarm version {expected}, but swarm.json is at version {}\n  help: check `loki status --json` and try again",
                        sw.version
                    );
                }
                store.update_swarm(expected, |s| {
                    s.paused = pause;
                    s.auth_paused = false;
                    s.pause_reason = if pause {
                        Some(note.unwrap_or_else(|| "paused by `loki pause`".into()))
                    } else {
                        None
                    };
                })?;
                log(
                    store,
                    None,
                    &format!(
                        "{} applied directly (no supervisor running)",
                        req.kind.as_str()
                    ),
                );
                Ok(if pause {
                    "swarm paused: `loki run` will start nothing new until `loki resume`".into()
                } else {
                    "swarm resumed".into()
                })
            }
            _ => bail!(
                "{}: no supervisor is running, so there is nothing to stop",
                req.kind.as_str()
            ),
        };
    };
    let Some(st) = store.load(id)? else {
        bail!("no state for stream `{id}` yet\n  help: `loki status` lists the streams; a stream gets state when `loki run` first sees it");
    };
    let expected = req.expected_version.unwrap_or(st.version);
    if expected != st.version {
        bail!(
            "stale: expected version {expected}, but stream {id} is at version {} ({})\n  help: check `loki status --json` and try again",
            st.version,
            st.status
        );
    }
    let decision = decide(req.kind, &st).map_err(|e| anyhow::anyhow!(e))?;
    let note = req.note.clone();
    let write = |change: &dyn Fn(&mut StreamState)| -> Result<StreamState> {
        Ok(store.update(id, expected, |s| change(s))?)
    };
    let msg = match decision {
        Decision::Approve => {
            let who = note.clone().unwrap_or_else(default_approver);
            let st = write(&|s| {
                s.status = Status::Merging;
                s.approved_by = Some(who.clone());
                s.reason = Some(format!("approved by {who}"));
            })?;
            log(store, Some(id), &format!("approved by {who}; merging"));
            merge_now(layout, store, target, st)?
        }
        Decision::Reject => {
            let fb = note
                .clone()
                .unwrap_or_else(|| "A reviewer rejected the draft without a note.".into());
            let counted = req.count || req.kind == Kind::TestsFailed;
            let tests_failed = req.kind == Kind::TestsFailed;
            let max = req.max_attempts.unwrap_or(u32::MAX);
            // Counted, it may use up the allowance, as a failed check does.
            let used_up = counted && st.used_attempts() >= max;
            let st = write(&|s| {
                if tests_failed {
                    s.tests = Some(format!("failed: {fb}"));
                }
                if let Some(a) = s.attempts.last_mut() {
                    a.counted = counted;
                    a.outcome = "rejected".into();
                }
                if used_up {
                    s.status = Status::Failed;
                    s.reason = Some(format!("rejected: {fb} (after {max} attempt(s))"));
                    s.finished_at = Some(now_rfc3339());
                } else {
                    s.status = Status::Retrying;
                    s.feedback = Some(format!("- Reviewer: {fb}"));
                    s.reason = Some(format!("rejected: {fb}"));
                }
            })?;
            if st.status == Status::Failed {
                log(
                    store,
                    Some(id),
                    "rejected (counted); no attempt left: failed",
                );
                format!("{id} rejected; that was its last attempt (max_attempts = {max}), so it is failed; `loki retry {id}` gives it a fresh allowance")
            } else {
                log(
                    store,
                    Some(id),
                    "rejected; the next `loki run` starts another attempt with the note as feedback",
                );
                format!(
                    "{id} rejected; `loki run` starts another attempt with your note as feedback"
                )
            }
        }
        Decision::Cancel => {
            write(&|s| {
                s.status = Status::Cancelled;
                s.reason = Some(
                    note.clone()
                        .map(|n| format!("cancelled: {n}"))
                        .unwrap_or_else(|| "cancelled".into()),
                );
                s.finished_at = Some(now_rfc3339());
            })?;
            log(store, Some(id), "cancelled");
            format!("{id} cancelled; its worktree and branch are kept (`loki clean` removes them)")
        }
        Decision::Retry => {
            let conflicted = st.status == Status::Conflicted;
            write(&|s| {
                s.renew_allowance();
                s.status = if conflicted {
                    Status::Merging
                } else if s.status == Status::Interrupted {
                    Status::Interrupted
                } else {
                    Status::Pending
                };
                s.reason = Some("retry requested".into());
            })?;
            log(store, Some(id), "retry requested");
            format!("{id} will run again at the next `loki run`")
        }
        Decision::RecordTests(what) => {
            write(&|s| {
                s.tests = Some(match &note {
                    Some(n) => format!("{what}: {n}"),
                    None => what.to_string(),
                })
            })?;
            log(store, Some(id), &format!("tests {what}"));
            format!("recorded: tests {what} for {id}")
        }
        Decision::PauseStream => {
            write(&|s| s.paused = true)?;
            format!("{id} paused")
        }
        Decision::ResumeStream => {
            write(&|s| s.paused = false)?;
            format!("{id} resumed")
        }
        Decision::FinishRunning { .. } | Decision::FailRunning | Decision::StopStream => {
            bail!(
                "{}: stream {id} is recorded as {} but no supervisor is running\n  help: `loki run` resumes it",
                req.kind.as_str(),
                st.status
            )
        }
    };
    Ok(msg)
}

/// Merges an approved stream while holding the supervisor lock.
fn merge_now(layout: &Layout, store: &StateStore, target: &str, st: StreamState) -> Result<String> {
    let id = st.id.clone();
    let trailers = crate::model::trailers::merge_trailers(&st, "unknown");
    crate::supervisor::attempt::commit_review_edits(layout, &id, st.attempt)?;
    let outcome = git::merge_stream(
        &layout.root,
        &id,
        target,
        &format!("Merge stream {id}"),
        &trailers,
    )?;
    let v = st.version;
    match outcome {
        MergeOutcome::Merged {
            commit,
            checkout_behind,
        } => {
            if let Some(why) = &checkout_behind {
                eprintln!("warning: {id} merged, but {why}");
            }
            let c = commit.clone();
            store.update(&id, v, |s| {
                s.status = Status::Merged;
                s.merge_commit = Some(c);
                s.reason = None;
                s.finished_at = Some(now_rfc3339());
            })?;
            let _ = git::remove_worktree(&layout.root, &id);
            let _ = git::delete_branch(&layout.root, &id);
            log(
                store,
                Some(&id),
                &format!("merged into {target} as {commit}"),
            );
            Ok(format!(
                "{id} approved and merged into {target} ({})",
                &commit[..commit.len().min(12)]
            ))
        }
        MergeOutcome::AlreadyMerged { checkout_behind } => {
            if let Some(why) = &checkout_behind {
                eprintln!("warning: {id} merged, but {why}");
            }
            store.update(&id, v, |s| {
                s.status = Status::Merged;
                s.finished_at = Some(now_rfc3339());
            })?;
            Ok(format!("{id} was already merged into {target}"))
        }
        MergeOutcome::Conflict { paths } => {
            let why = format!("merge conflict in {}", paths.join(", "));
            let w = why.clone();
            store.update(&id, v, |s| {
                s.status = Status::Conflicted;
                s.reason = Some(w);
            })?;
            bail!("{id}: {why}; resolve it in .loki/worktrees/{id}, commit, then `loki retry {id}`")
        }
        MergeOutcome::UserChanges { paths } => {
            bail!(
                "{id} is approved, but your uncommitted changes touch {}; commit or stash them, then `loki run` merges it",
                paths.join(", ")
            )
        }
    }
}

fn log(store: &StateStore, stream: Option<&str>, message: &str) {
    let _ = store.append_event(&Event {
        ts: now_rfc3339(),
        kind: "command".into(),
        stream: stream.map(str::to_string),
        from: None,
        to: None,
        version: None,
        message: message.into(),
        signal_file: None,
    });
}
