//! Steering commands (`loki approve`, `reject`, `cancel`, `retry`, `pause`,
//! `resume`, `signal`): while a supervisor holds the lock they write a signal
//! file for it; with none running they take the lock themselves and feed
//! the same input to the same state machine, written through the same door
//! ([`crate::supervisor::door`]), so both paths produce the same state and
//! the same events. An approval then merges at once, and the merge's result
//! goes through the machine as well.

use std::path::Path;

use anyhow::{Context, Result};

use crate::error::Error;
use crate::git;
use crate::model::{Event, Kind, Layout, Status, StreamState};
use crate::signal_files::SignalDir;
use crate::store::{StateStore, SteerLock, SupervisorLock};
use crate::supervisor::door;
use crate::supervisor::machine::{self, Ctx, Effect, Input, MergeResult, Steer, SwarmInput};
use crate::supervisor::{attempt, default_approver};
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
    /// The stream's `max_budget_usd`.
    pub max_budget_usd: Option<f64>,
    /// Streams that depend on this one (a retry unblocks them).
    pub dependents: Vec<String>,
    /// The stream's agent command, for the merge's `Loki-Agent` trailer
    /// when the state does not name the agent (as the merge worker does).
    pub agent: String,
    /// `[swarm] remote`: the swarm is shared, so a merge goes through the
    /// remote, which only a supervisor does (the next `loki run`).
    pub remote: Option<String>,
}

/// Sends or applies `req` in the repo at `root`; returns what to tell the user.
pub fn steer(root: &Path, target: &str, req: &Request) -> Result<String> {
    let layout = Layout::new(root);
    if req.stream.is_none() && !req.kind.allows_no_stream() {
        return Err(
            Error::refusal(format!("{} needs a stream id", req.kind.as_str()))
                .hint(format!("loki signal {} <id>", req.kind.as_str()))
                .into(),
        );
    }
    let state_dir = layout.state_dir();
    std::fs::create_dir_all(&state_dir)
        .with_context(|| format!("creating {}", state_dir.display()))?;
    // One command at a time changes state directly; a supervisor that
    // starts meanwhile waits for it (see `SteerLock`).
    let gate = SteerLock::acquire(&state_dir)?;
    if let Some(pid) = SupervisorLock::holder(&state_dir)? {
        drop(gate);
        let dir = SignalDir::new(layout.signals_dir());
        let path = dir.write(
            req.kind,
            req.stream.as_deref(),
            req.expected_version,
            req.note.as_deref(),
            req.count,
        )?;
        return Ok(format!(
            "sent {} to the running supervisor (pid {pid}); follow it with `loki status`",
            path.file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default()
        ));
    }
    let store = StateStore::new(&state_dir);
    let result = match req.stream.as_deref() {
        None => apply_swarm(&store, req),
        Some(id) => apply_direct(&layout, &store, target, id, req),
    };
    drop(gate);
    result
}

/// The machine's context for a command applied with no supervisor running.
pub fn direct_ctx(req: &Request, target: &str) -> Ctx {
    Ctx {
        now: now_rfc3339(),
        max_attempts: req.max_attempts.unwrap_or(u32::MAX),
        max_budget_usd: req.max_budget_usd,
        target: target.to_string(),
        approver: default_approver(),
        supervised: false,
        max_resolve: 0,
        validators: false,
    }
}

fn apply_swarm(store: &StateStore, req: &Request) -> Result<String> {
    let sw = store.load_swarm()?;
    let pause = match req.kind {
        Kind::Pause => true,
        Kind::Resume => false,
        _ => {
            return Err(Error::refusal(format!(
                "{}: no supervisor is running, so there is nothing to stop",
                req.kind.as_str()
            ))
            .into())
        }
    };
    let expected = req.expected_version.unwrap_or(sw.version);
    if expected != sw.version {
        return Err(Error::refusal(format!(
            "stale: expected swarm version {expected}, but swarm.json is at version {}",
            sw.version
        ))
        .hint("check `loki status --json` and try again")
        .into());
    }
    let input = if pause {
        SwarmInput::Pause {
            reason: req
                .note
                .clone()
                .unwrap_or_else(|| "paused by `loki pause`".into()),
        }
    } else {
        SwarmInput::Resume
    };
    let next = machine::handle_swarm(&sw, input).map_err(Error::from)?;
    let ev = command_event(
        None,
        &format!(
            "{} applied directly (no supervisor running)",
            req.kind.as_str()
        ),
    );
    door::commit_swarm(store, expected, &next, Some(&ev))?;
    Ok(if pause {
        "swarm paused: `loki run` will start nothing new until `loki resume`".into()
    } else {
        "swarm resumed".into()
    })
}

fn apply_direct(
    layout: &Layout,
    store: &StateStore,
    target: &str,
    id: &str,
    req: &Request,
) -> Result<String> {
    let Some(st) = store.load(id)? else {
        return Err(Error::refusal(format!("no state for stream `{id}` yet"))
            .hint("`loki status` lists the streams; a stream gets state when `loki run` first sees it")
            .into());
    };
    let expected = req.expected_version.unwrap_or(st.version);
    if expected != st.version {
        return Err(Error::refusal(format!(
            "stale: expected version {expected}, but stream {id} is at version {} ({})",
            st.version, st.status
        ))
        .hint("check `loki status --json` and try again")
        .into());
    }
    let ctx = direct_ctx(req, target);
    let input = Input::Steer(Steer {
        kind: req.kind,
        note: req.note.clone(),
        count: req.count,
    });
    let step = machine::handle(&st, input, &ctx).map_err(Error::from)?;
    let effects = step.effects.clone();
    let written = door::commit(store, expected, &step, &now_rfc3339())?.state;
    let _ = door::note(
        store,
        &command_event(Some(id), &format!("{} applied directly", req.kind.as_str())),
    );
    for e in &effects {
        if *e == Effect::UnblockDependents {
            unblock(store, &req.dependents, &ctx);
        }
    }
    if effects
        .iter()
        .any(|e| matches!(e, Effect::QueueMerge { .. }))
        && written.status == Status::Merging
    {
        if req.kind == Kind::Retry {
            // A conflicted stream is merged again by the next `loki run`.
            return Ok(format!("{id} will run again at the next `loki run`"));
        }
        if let Some(r) = &req.remote {
            return Ok(format!(
                "{id} approved; the swarm is shared through the remote `{r}`, so the next `loki run` merges it there"
            ));
        }
        return merge_now(layout, store, &ctx, written, &req.agent);
    }
    Ok(message(id, req, &written))
}

/// Blocked dependents of a retried stream get another chance, each through
/// the machine.
fn unblock(store: &StateStore, dependents: &[String], ctx: &Ctx) {
    for dep in dependents {
        if let Ok(Some(st)) = store.load(dep) {
            if let Ok(step) = machine::handle(&st, Input::Unblock, ctx) {
                let _ = door::commit(store, st.version, &step, &now_rfc3339());
            }
        }
    }
}

/// What the user is told after a command applied directly.
fn message(id: &str, req: &Request, st: &StreamState) -> String {
    match req.kind {
        Kind::Reject | Kind::TestsFailed
            if st.status == Status::Failed
                && st.reason.as_deref().is_some_and(|r| r.contains("budget")) =>
        {
            format!(
                "{id} rejected and failed: {}; `loki retry {id}` gives it a fresh allowance",
                st.reason.as_deref().unwrap_or_default()
            )
        }
        Kind::Reject | Kind::TestsFailed if st.status == Status::Failed => format!(
            "{id} rejected; that was its last attempt (max_attempts = {}), so it is failed; `loki retry {id}` gives it a fresh allowance",
            req.max_attempts.unwrap_or(0)
        ),
        Kind::Reject | Kind::TestsFailed => {
            format!("{id} rejected; `loki run` starts another attempt with your note as feedback")
        }
        Kind::Cancel => {
            format!("{id} cancelled; its worktree and branch are kept (`loki clean` removes them)")
        }
        Kind::Retry => format!("{id} will run again at the next `loki run`"),
        Kind::TestsPassed => format!("recorded: tests passed for {id}"),
        Kind::Pause => format!("{id} paused"),
        Kind::Resume => format!("{id} resumed"),
        _ => format!("{id}: {}", st.status),
    }
}

/// Merges an approved stream while holding the supervisor lock; the
/// result goes through the machine like the merge worker's.
fn merge_now(
    layout: &Layout,
    store: &StateStore,
    ctx: &Ctx,
    st: StreamState,
    agent: &str,
) -> Result<String> {
    let id = st.id.to_string();
    let target = ctx.target.as_str();
    let trailers = crate::model::trailers::merge_trailers(&st, agent);
    attempt::commit_review_edits(layout, &id, st.attempt)?;
    let outcome = git::merge_stream(
        &layout.root,
        &id,
        target,
        &format!("Merge stream {id}"),
        &trailers,
    )
    .map_err(|e| format!("{e:#}"));
    let (result, checkout_behind) = MergeResult::from_outcome(outcome, &layout.root);
    if let Some(why) = &checkout_behind {
        eprintln!("warning: {id} merged, but {why}");
    }
    let ctx = Ctx {
        now: now_rfc3339(),
        ..ctx.clone()
    };
    let step = machine::handle(&st, Input::Merge(result.clone()), &ctx).map_err(Error::from)?;
    let written = door::commit(store, st.version, &step, &ctx.now)?.state;
    if step.effects.contains(&Effect::Cleanup) {
        let _ = git::remove_worktree(&layout.root, &id);
        let _ = git::delete_branch(&layout.root, &id);
    }
    match result {
        MergeResult::Merged { commit } => Ok(format!(
            "{id} approved and merged into {target} ({})",
            &commit[..commit.len().min(12)]
        )),
        MergeResult::AlreadyMerged => Ok(format!("{id} was already merged into {target}")),
        MergeResult::Conflict { paths } => Err(Error::refusal(format!(
            "{id}: merge conflict in {}",
            paths.join(", ")
        ))
        .hint(format!(
            "resolve it in .loki/worktrees/{id}, commit, then `loki retry {id}`"
        ))
        .into()),
        MergeResult::UserChanges { paths, .. } => Err(Error::refusal(format!(
            "{id} is approved, but your uncommitted changes touch {}",
            paths.join(", ")
        ))
        .hint("commit or stash them, then `loki run` merges it")
        .into()),
        MergeResult::Unreachable(e) => Err(Error::environment(format!(
            "{id} is approved, but the remote cannot be reached: {e}"
        ))
        .hint("`loki run` merges it once the remote answers")
        .into()),
        MergeResult::Failed(e) => Err(Error::internal(format!(
            "{id}: the merge failed: {e} (the stream is now {})",
            written.status
        ))
        .into()),
    }
}

/// The line a command applied directly adds beside its transition.
fn command_event(stream: Option<&str>, message: &str) -> Event {
    Event {
        ts: now_rfc3339(),
        kind: "command".into(),
        stream: stream.map(str::to_string),
        from: None,
        to: None,
        version: None,
        message: message.into(),
        signal_file: None,
    }
}
