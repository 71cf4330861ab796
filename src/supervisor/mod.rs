//! The dispatcher: the one task that owns the state of every stream and the
//! only code that changes it.
//!
//! Workers (agent tasks, the signal watcher, the merge worker, blocking git
//! and check work, timers, OS signals) send it [`Msg`]s over one channel. For
//! each message it decides, writes the new state through the state store's
//! compare-and-swap (before acting on it), appends the transition to
//! `events.jsonl`, tells the UI, and only then tells a worker what to do.
//! This is nextest's runner split (dispatcher + executors) applied to agents.
//!
//! Decisions written down here:
//! - A new `loki run` runs failed and blocked streams again with a fresh
//!   allowance of `max_attempts` (earlier attempts stay in the record), as
//!   does `loki retry`; a stream that was between attempts (retrying,
//!   interrupted) keeps the allowance it had, so stopping and restarting a
//!   night never buys attempts. Conflicted streams try their merge again;
//!   cancelled ones stay cancelled until `loki retry`.
//! - A signal's `expected_version` is stale when the stream has changed
//!   status since that version (bookkeeping writes such as the agent's pid do
//!   not make an agent's own signal stale).
//! - The run ends when nothing is running and nothing more can start;
//!   streams awaiting approval are listed with the command that merges them.
//! - A manual PAUSE keeps the supervisor waiting for RESUME; an
//!   authentication failure pauses the swarm and ends the run, and the next
//!   `loki run` resumes it.

pub mod attempt;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio::sync::{mpsc, watch};

use crate::agent::{self, AgentEvent, AgentOutcome, Ending, Spawner, StopRequest};
use crate::checks::Level;
use crate::config::{StreamConfig, SwarmFile};
use crate::git::{self, MergeOutcome};
use crate::model::paths::rehearsal_branch_name;
use crate::model::Layout;
use crate::signal_files::{self, Kind, Signal, SignalDir, Taken};
use crate::store::{
    AttemptRecord, Event, StateStore, Status, StreamState, SupervisorLock, SwarmState,
};
use crate::ui::{self, Ui, UiEvent};
use crate::util::now_rfc3339;
use attempt::{FinishInput, Finished, Kickoff, PrepareInput, Prepared};

/// How `loki run` was asked to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub config: PathBuf,
    pub ui: ui::Mode,
    /// Use the built-in stand-in agent on a scratch branch.
    pub rehearse: bool,
    /// Keep the rehearsal's scratch branch.
    pub keep: bool,
    /// Use the stand-in agent on the real target (`loki demo`).
    pub stand_in: bool,
    /// Slow the stand-in down so live progress can be seen (`loki demo`).
    pub stand_in_delay_ms: u64,
}

/// Everything the dispatcher hears.
#[derive(Debug)]
pub enum Msg {
    Prepared {
        id: String,
        attempt: u32,
        result: std::result::Result<Box<Prepared>, PrepError>,
    },
    Agent {
        id: String,
        attempt: u32,
        ev: AgentEvent,
    },
    AgentDone {
        id: String,
        attempt: u32,
        outcome: AgentOutcome,
    },
    Finished {
        id: String,
        attempt: u32,
        result: std::result::Result<Finished, String>,
    },
    MergeDone {
        id: String,
        result: std::result::Result<MergeOutcome, String>,
    },
    Signal(Taken),
    /// SIGINT.
    Interrupt,
    /// SIGTERM / SIGHUP: stop now.
    Terminate(&'static str),
}

#[derive(Debug)]
pub struct PrepError {
    pub message: String,
    /// Retrying cannot help (missing input, bad template, agent not found).
    pub fatal: bool,
}

/// What a signal asks for, given the stream's status. Shared with the
/// direct path that commands take when no supervisor runs.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// awaiting_approval → merging.
    Approve,
    /// A running agent says its work is done: stop it gracefully, check.
    /// `approve` when the request was MERGE_REQUESTED.
    FinishRunning {
        approve: bool,
    },
    /// awaiting_approval → retrying with the note as feedback.
    Reject,
    /// TESTS_FAILED on a running agent: stop it; the attempt failed.
    FailRunning,
    Cancel,
    /// failed / blocked / cancelled / interrupted → pending (fresh allowance);
    /// conflicted → merging again.
    Retry,
    /// TESTS_PASSED: recorded.
    RecordTests(&'static str),
    PauseStream,
    ResumeStream,
    /// STOP_<id>: stop the agent; the stream is interrupted.
    StopStream,
}

/// Decides what signal `kind` does to a stream in `status`; `Err` is the
/// reason it does not apply (the signal is then rejected).
pub fn decide(kind: Kind, st: &StreamState) -> std::result::Result<Decision, String> {
    use Status::*;
    let s = st.status;
    let no = |what: &str| {
        Err(format!(
            "{}: stream {} is {}, {what}",
            kind.as_str(),
            st.id,
            s.as_str()
        ))
    };
    match kind {
        Kind::Approve => match s {
            AwaitingApproval => Ok(Decision::Approve),
            _ => no("not awaiting approval"),
        },
        Kind::MergeRequested => match s {
            AwaitingApproval => Ok(Decision::Approve),
            Running => Ok(Decision::FinishRunning { approve: true }),
            _ => no("neither running nor awaiting approval"),
        },
        Kind::FeatureReady => match s {
            Running => Ok(Decision::FinishRunning { approve: false }),
            _ => no("not running"),
        },
        Kind::Reject => match s {
            AwaitingApproval => Ok(Decision::Reject),
            _ => no("not awaiting approval"),
        },
        Kind::TestsFailed => match s {
            Running => Ok(Decision::FailRunning),
            AwaitingApproval => Ok(Decision::Reject),
            _ => no("neither running nor awaiting approval"),
        },
        Kind::TestsPassed => Ok(Decision::RecordTests("passed")),
        Kind::Cancel => match s {
            Merged | Cancelled => no("already finished"),
            Merging => no("being merged"),
            _ => Ok(Decision::Cancel),
        },
        Kind::Retry => match s {
            Failed | Blocked | Cancelled | Interrupted | Conflicted => Ok(Decision::Retry),
            _ => no("not failed, blocked, cancelled, interrupted or conflicted"),
        },
        Kind::Pause => match s {
            Merged | Cancelled => no("already finished"),
            _ if st.paused => no("already paused"),
            _ => Ok(Decision::PauseStream),
        },
        Kind::Resume => {
            if st.paused {
                Ok(Decision::ResumeStream)
            } else {
                no("not paused")
            }
        }
        Kind::Stop => match s {
            Running | Preparing => Ok(Decision::StopStream),
            _ => no("not running"),
        },
    }
}

struct Slot {
    cfg: StreamConfig,
    st: StreamState,
    /// Version at the last status change: signals naming an older version are stale.
    transition_version: u64,
    stop: Option<watch::Sender<Option<StopRequest>>>,
    /// Approval already given (MERGE_REQUESTED while running).
    pre_approved: bool,
    /// TESTS_FAILED arrived while running: the attempt fails with this feedback.
    fail_note: Option<String>,
    /// STOP_<id> in this run: do not restart until RETRY or the next run.
    held: bool,
    turns: u32,
    attempt_cost: f64,
    result_error: Option<String>,
    /// Set when the current attempt hit a rate limit or auth failure.
    api_trouble: Option<u16>,
    agent_label: String,
    /// The running attempt was launched with `--resume` (claude confirms
    /// the session with system/init, recorded in the attempt's record).
    resumed: bool,
}

impl Slot {
    fn used(&self) -> u32 {
        self.st.used_attempts()
    }
}

struct MergeJob {
    id: String,
    attempt: u32,
    subject: String,
    trailers: Vec<(String, String)>,
}

/// The dispatcher's whole world.
struct Dispatcher {
    cfg: SwarmFile,
    layout: Layout,
    store: StateStore,
    signals: SignalDir,
    target: String,
    order: Vec<String>,
    slots: BTreeMap<String, Slot>,
    tx: mpsc::UnboundedSender<Msg>,
    spawner: Arc<Spawner>,
    merge_tx: mpsc::UnboundedSender<MergeJob>,
    ui: Ui,
    swarm: SwarmState,
    rehearse: bool,
    stand_in: bool,
    stand_in_delay_ms: u64,
    /// Ctrl-C once / STOP: start nothing new.
    draining: bool,
    /// Ctrl-C twice / SIGTERM: agents are being stopped.
    interrupting: bool,
    auth_failed: Option<String>,
    last_start: Option<Instant>,
    backoff_until: Option<Instant>,
    limit: usize,
    /// Merges waiting for the user's checkout, retried at this time.
    merge_retry: BTreeMap<String, Instant>,
    budget_noted: bool,
    notes: VecDeque<String>,
    /// Worktree removals after merges, awaited before exit.
    cleanups: Vec<tokio::task::JoinHandle<()>>,
}

/// `loki run`: runs the swarm to its end and returns the process exit code.
pub async fn run(opts: RunOptions) -> Result<i32> {
    // Validation comes first: a refused swarm file creates nothing.
    let cfg = crate::config::load(&opts.config).map_err(anyhow::Error::new)?;
    let root = git::repo_root(&cfg.root)?;
    let target_branch = match &cfg.swarm.target {
        Some(t) => t.clone(),
        None => git::current_branch(&root)?.context(
            "the main worktree is on a detached HEAD and loki.toml names no target\n  help: set `target = \"main\"` in [swarm]",
        )?,
    };
    if git::branch_head(&root, &target_branch).is_err() {
        let place = match cfg.swarm.target_at {
            Some((line, col)) => format!("{}:{line}:{col}: ", cfg.path.display()),
            None => String::new(),
        };
        anyhow::bail!(
            "{place}the target branch `{target_branch}` does not exist\n  help: create it (git branch {target_branch}) or set `target` in [swarm] of {} to an existing branch",
            cfg.path.display()
        );
    }

    // The agent must be there before anything is created (a rehearsal and
    // the demo use the stand-in instead).
    if !opts.rehearse && !opts.stand_in {
        crate::config::check_agent_commands(&cfg, &root).map_err(anyhow::Error::new)?;
    }

    // A rehearsal's guard undoes it (branches, worktrees, scratch branch)
    // however this function returns, error or not.
    let (cfg, layout, target, mut rehearsal) = if opts.rehearse {
        let (cfg, guard) = rehearsal_setup(cfg, &root, &target_branch, opts.keep)?;
        let layout = guard.layout.clone();
        let scratch = guard.scratch.clone();
        (cfg, layout, scratch, Some(guard))
    } else {
        (cfg, Layout::new(&root), target_branch.clone(), None)
    };
    layout.ensure()?;
    let store = StateStore::new(layout.state_dir());
    let _lock = match SupervisorLock::acquire(&layout.state_dir())? {
        Ok(lock) => lock,
        Err(pid) => {
            let who = pid.map(|p| format!(" (pid {p})")).unwrap_or_default();
            anyhow::bail!(
                "another loki supervisor{who} is already running this swarm in {}\n  help: watch it with `loki status`, or stop it with `loki signal STOP` before starting another",
                root.display()
            );
        }
    };

    let (tx, mut rx) = mpsc::unbounded_channel::<Msg>();
    let (ui, ui_task) = ui::start(opts.ui);
    let spawner = Arc::new(Spawner::start()?);
    let (merge_tx, merge_rx) = mpsc::unbounded_channel::<MergeJob>();
    tokio::spawn(merge_worker(
        root.clone(),
        target.clone(),
        merge_rx,
        tx.clone(),
    ));
    spawn_os_signals(tx.clone());

    let mut d = Dispatcher {
        limit: cfg.swarm.max_parallel.max(1),
        order: crate::plan::topo_order(&cfg.streams)
            .unwrap_or_else(|_| cfg.streams.iter().map(|s| s.id.clone()).collect()),
        cfg,
        signals: SignalDir::new(layout.signals_dir()),
        layout,
        store,
        target,
        slots: BTreeMap::new(),
        tx: tx.clone(),
        spawner,
        merge_tx,
        ui,
        swarm: SwarmState::default(),
        rehearse: opts.rehearse,
        stand_in: opts.stand_in || opts.rehearse,
        stand_in_delay_ms: opts.stand_in_delay_ms,
        draining: false,
        interrupting: false,
        auth_failed: None,
        last_start: None,
        backoff_until: None,
        merge_retry: BTreeMap::new(),
        budget_noted: false,
        notes: VecDeque::new(),
        cleanups: Vec::new(),
    };
    d.recover().await?;
    d.replay_unhandled_signals().await;
    // Logged before this supervisor takes any signal: the next one replays
    // the files that end in this pid.
    d.event(
        "supervisor",
        None,
        &format!("started (pid {}), target {}", std::process::id(), d.target),
    );
    d.apply_waiting_signals().await;
    d.normalize().await?;

    // The watcher sends what it takes straight to this loop; before the run
    // ends it is stopped (which joins its thread) and drained, so a signal
    // it took is always applied.
    let (sig_tx, mut sig_rx) = mpsc::unbounded_channel::<Taken>();
    let mut watch = Some(signal_files::watch(d.signals.clone(), sig_tx.clone())?);

    d.ui.send(UiEvent::Start {
        total: d.slots.len(),
        target: d.target.clone(),
        parallel: d.cfg.swarm.max_parallel,
        rehearse: d.rehearse,
    });
    for s in d.order.clone() {
        let slot = &d.slots[&s];
        if slot.st.status != Status::Pending {
            d.ui.send(UiEvent::Transition {
                id: s.clone(),
                attempt: slot.st.attempt,
                from: slot.st.status,
                to: slot.st.status,
                reason: slot.st.reason.clone(),
            });
        }
    }
    while let Some(n) = d.notes.pop_front() {
        d.ui.send(UiEvent::Note(n));
    }

    loop {
        d.schedule().await;
        if d.finished() {
            if let Some(w) = watch.take() {
                let _ = tokio::task::spawn_blocking(move || drop(w)).await;
            }
            let mut late = Vec::new();
            while let Ok(t) = sig_rx.try_recv() {
                late.push(t);
            }
            let dir = d.signals.clone();
            late.extend(
                tokio::task::spawn_blocking(move || dir.scan())
                    .await
                    .unwrap_or_default(),
            );
            if late.is_empty() {
                break;
            }
            for t in late {
                d.on_signal(t).await;
            }
            watch = Some(signal_files::watch(d.signals.clone(), sig_tx.clone())?);
            continue;
        }
        let wake = d.next_wake();
        tokio::select! {
            m = rx.recv() => {
                if let Some(m) = m {
                    d.handle(m).await;
                }
            }
            t = sig_rx.recv() => {
                if let Some(t) = t {
                    d.on_signal(t).await;
                }
            }
            _ = sleep_until(wake) => {}
        }
        // Timers are checked on every turn of the loop.
        d.fire_timers();
    }
    drop(watch);
    // Worktree removals after merges finish before the process exits.
    for h in std::mem::take(&mut d.cleanups) {
        let _ = h.await;
    }

    d.event("supervisor", None, "finished");
    let code = d.summary();
    d.ui.send(UiEvent::Finish);
    let _ = ui_task.await;
    let summary = d.summary_text();
    print!("{summary}");
    if let Some(r) = rehearsal.as_mut() {
        // What failed can be read in its logs after the rehearsal is gone.
        r.keep_files = code != 0;
    }
    drop(rehearsal);
    Ok(code)
}

/// What an error `result` of claude says about the API.
#[derive(Debug, Clone, Copy, PartialEq)]
enum ApiTrouble {
    Auth,
    RateLimit,
}

/// Classifies claude's final error: its `api_error_status` when given, else
/// the text (`API Error: Request rejected (429) …`, `Invalid API key · …`).
/// Codes count only as whole numbers beside "API error"/"status", so a
/// chapter about room 401 is not an authentication failure.
fn api_error_class(status: Option<u16>, result: &str) -> Option<ApiTrouble> {
    match status {
        Some(401 | 403) => return Some(ApiTrouble::Auth),
        Some(429 | 529) => return Some(ApiTrouble::RateLimit),
        _ => {}
    }
    let text = result.to_lowercase();
    let has_code = |code: &str| {
        text.match_indices(code).any(|(i, _)| {
            let before = text[..i].chars().next_back();
            let after = text[i + code.len()..].chars().next();
            !before.is_some_and(|c| c.is_ascii_digit())
                && !after.is_some_and(|c| c.is_ascii_digit())
        })
    };
    let api = text.contains("api error") || text.contains("api_error") || text.contains("status");
    if (api && (has_code("401") || has_code("403")))
        || text.contains("authentication")
        || text.contains("invalid api key")
        || text.contains("/login")
    {
        Some(ApiTrouble::Auth)
    } else if (api && (has_code("429") || has_code("529")))
        || text.contains("rate limit")
        || text.contains("rate_limit")
        || text.contains("overloaded")
    {
        Some(ApiTrouble::RateLimit)
    } else {
        None
    }
}

async fn sleep_until(when: Option<Instant>) {
    match when {
        Some(t) => tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await,
        None => std::future::pending::<()>().await,
    }
}

/// SIGINT → Interrupt (the dispatcher counts them); SIGTERM and SIGHUP →
/// Terminate.
fn spawn_os_signals(tx: mpsc::UnboundedSender<Msg>) {
    use tokio::signal::unix::{signal, SignalKind};
    let t = tx.clone();
    tokio::spawn(async move {
        if let Ok(mut s) = signal(SignalKind::interrupt()) {
            while s.recv().await.is_some() {
                if t.send(Msg::Interrupt).is_err() {
                    break;
                }
            }
        }
    });
    for (kind, name) in [
        (SignalKind::terminate(), "SIGTERM"),
        (SignalKind::hangup(), "SIGHUP"),
    ] {
        let t = tx.clone();
        tokio::spawn(async move {
            if let Ok(mut s) = signal(kind) {
                while s.recv().await.is_some() {
                    if t.send(Msg::Terminate(name)).is_err() {
                        break;
                    }
                }
            }
        });
    }
}

/// The one merge worker: merges are done one at a time, in order.
async fn merge_worker(
    root: PathBuf,
    target: String,
    mut rx: mpsc::UnboundedReceiver<MergeJob>,
    tx: mpsc::UnboundedSender<Msg>,
) {
    while let Some(job) = rx.recv().await {
        let root = root.clone();
        let target = target.clone();
        let id = job.id.clone();
        let result = tokio::task::spawn_blocking(move || {
            attempt::commit_review_edits(&Layout::new(&root), &job.id, job.attempt)
                .map_err(|e| format!("{e:#}"))?;
            git::merge_stream(&root, &job.id, &target, &job.subject, &job.trailers)
                .map_err(|e| format!("{e:#}"))
        })
        .await
        .unwrap_or_else(|e| Err(format!("merge task failed: {e}")));
        if tx.send(Msg::MergeDone { id, result }).is_err() {
            break;
        }
    }
}

/// Rehearsal: stream ids get an `rh-` prefix (their own branches and
/// worktrees), state lives in `.loki/rehearsal/`, and merges go into a
/// scratch branch made at the target's head. The rehearsal's own lock is
/// taken before its folder is cleared, so two rehearsals never share it.
fn rehearsal_setup(
    mut cfg: SwarmFile,
    root: &std::path::Path,
    target: &str,
    keep: bool,
) -> Result<(SwarmFile, Rehearsal)> {
    let lock = match SupervisorLock::acquire_at(&root.join(".loki").join("rehearsal.lock"))? {
        Ok(lock) => lock,
        Err(pid) => {
            let who = pid.map(|p| format!(" (pid {p})")).unwrap_or_default();
            anyhow::bail!(
                "another rehearsal{who} is running in {}\n  help: wait for it to end; a rehearsal takes seconds",
                root.display()
            );
        }
    };
    let layout = Layout::rehearsal(root);
    // A rehearsal always starts from nothing.
    if let Err(e) = std::fs::remove_dir_all(layout.loki()) {
        if e.kind() != std::io::ErrorKind::NotFound {
            return Err(
                anyhow::Error::new(e).context(format!("clearing {}", layout.loki().display()))
            );
        }
    }
    for s in &mut cfg.streams {
        s.id = rehearsal_id(&s.id);
        s.depends_on = s.depends_on.iter().map(|d| rehearsal_id(d)).collect();
        s.checks.approve = false;
        s.agent.max_attempts = 1;
    }
    cfg.swarm.spawn_interval = Duration::ZERO;
    cfg.swarm.max_budget_usd = None;
    let ids = cfg.streams.iter().map(|s| s.id.clone()).collect();

    let stamp = chrono::Utc::now().format("%Y%m%d-%H%M%S").to_string();
    let scratch = rehearsal_branch_name(&stamp, std::process::id());
    let head = git::branch_head(root, target)?;
    git::create_branch(root, &scratch, &head)
        .with_context(|| format!("creating the scratch branch {scratch}"))?;
    let guard = Rehearsal {
        layout,
        scratch,
        real_target: target.to_string(),
        ids,
        keep,
        keep_files: false,
        _lock: lock,
    };
    Ok((cfg, guard))
}

/// A rehearsal stream's id: `rh-<id>`, kept within the 64 characters an id
/// (and so a state file and branch name) may have: a long id is cut and a
/// hash of the whole id keeps it unique.
fn rehearsal_id(id: &str) -> String {
    let full = format!("rh-{id}");
    if full.len() <= 64 {
        return full;
    }
    let hash = crate::util::fnv1a(id.as_bytes());
    // Ids are ASCII, so any byte index is a character boundary.
    format!("rh-{}-{:08x}", &id[..52], hash as u32)
}

/// A rehearsal in progress; dropping it removes its branches, worktrees
/// and (unless `--keep`) its scratch branch and files.
struct Rehearsal {
    layout: Layout,
    scratch: String,
    real_target: String,
    ids: Vec<String>,
    keep: bool,
    /// Keep `.loki/rehearsal/` (logs, reports) because something failed.
    keep_files: bool,
    _lock: SupervisorLock,
}

impl Drop for Rehearsal {
    fn drop(&mut self) {
        let root = &self.layout.root;
        for id in &self.ids {
            let _ = git::remove_worktree(root, id);
            let _ = git::delete_branch(root, id);
        }
        if self.keep {
            println!(
                "rehearsal kept on branch {} (the real target {} is untouched)",
                self.scratch, self.real_target
            );
            return;
        }
        let _ = git::delete_named_branch(root, &self.scratch);
        if self.keep_files {
            println!(
                "rehearsal done; scratch branch deleted; its logs and check reports are kept in {} until the next rehearsal; {} is untouched",
                self.layout.loki().display(),
                self.real_target
            );
        } else {
            let _ = std::fs::remove_dir_all(self.layout.loki());
            println!(
                "rehearsal done; scratch branch deleted (keep it with --keep); {} is untouched",
                self.real_target
            );
        }
    }
}

impl Dispatcher {
    // ----- start-up -----------------------------------------------------

    /// Loads or creates every stream's state, ends leftover agents of a dead
    /// supervisor, and turns whatever was in flight into something resumable.
    async fn recover(&mut self) -> Result<()> {
        let store = self.store.clone();
        let existing = tokio::task::spawn_blocking(move || store.load_all())
            .await
            .context("loading state")??;
        let mut existing: BTreeMap<String, StreamState> =
            existing.into_iter().map(|s| (s.id.clone(), s)).collect();
        let store = self.store.clone();
        self.swarm = tokio::task::spawn_blocking(move || store.load_swarm())
            .await
            .context("loading state")??;
        if self.swarm.paused && self.swarm.auth_paused {
            // The supervisor's own pause after a refused key: a new run is
            // the user's way of saying the credentials are fixed.
            let why = self.swarm.pause_reason.clone().unwrap_or_default();
            self.notes
                .push_back(format!("resuming a paused swarm ({why})"));
            let store = self.store.clone();
            let v = self.swarm.version;
            self.swarm = tokio::task::spawn_blocking(move || {
                store.update_swarm(v, |s| {
                    s.paused = false;
                    s.auth_paused = false;
                    s.pause_reason = None;
                })
            })
            .await
            .context("writing swarm state")??;
        } else if self.swarm.paused {
            let why = self.swarm.pause_reason.clone().unwrap_or_default();
            self.notes.push_back(format!(
                "the swarm is paused ({why}): starting nothing until `loki resume` (Ctrl-C leaves)"
            ));
        }

        // Leftover agents first: nothing else happens until they are gone.
        // Leftovers do not say which stream's settings they ran under
        // (loki.toml may have changed): the longest grace any stream allows.
        let grace = self
            .cfg
            .streams
            .iter()
            .map(|s| s.agent.kill_grace)
            .max()
            .unwrap_or(Duration::from_secs(10));
        let leftovers: Vec<_> = existing
            .values()
            .filter_map(|s| s.process.map(|p| (s.id.clone(), p)))
            .collect();
        for (id, rec) in leftovers {
            let n = tokio::task::spawn_blocking(move || agent::sweep_leftover(&rec, grace))
                .await
                .unwrap_or(0);
            if n > 0 {
                self.notes.push_back(format!(
                    "ended {n} leftover process(es) of stream {id} from an earlier supervisor"
                ));
            }
        }

        for s in self.cfg.streams.clone() {
            let st = match existing.remove(&s.id) {
                Some(st) => st,
                None => {
                    let store = self.store.clone();
                    let id = s.id.clone();
                    tokio::task::spawn_blocking(move || store.update(&id, 0, |_| {}))
                        .await
                        .context("creating stream state")??
                }
            };
            let tv = st.version;
            self.slots.insert(
                s.id.clone(),
                Slot {
                    cfg: s,
                    st,
                    transition_version: tv,
                    stop: None,
                    pre_approved: false,
                    fail_note: None,
                    held: false,
                    turns: 0,
                    attempt_cost: 0.0,
                    result_error: None,
                    api_trouble: None,
                    agent_label: String::new(),
                    resumed: false,
                },
            );
        }
        for id in existing.keys() {
            self.notes.push_back(format!(
                "state for stream {id} is kept, but loki.toml no longer names it"
            ));
        }
        Ok(())
    }

    /// Signals the previous supervisor took into `processed/` but died
    /// before handling (no `signal` event names their file), applied now,
    /// before anything newer. Only that supervisor's files count (their
    /// names end in its pid, from its `started` event): older ones were
    /// handled or given up by theirs. A swarm-wide STOP was meant for the
    /// supervisor that died and is not replayed. If `events.jsonl` cannot
    /// be read, nothing is replayed (and the user is told).
    async fn replay_unhandled_signals(&mut self) {
        let store = self.store.clone();
        let dir = self.signals.clone();
        let found = tokio::task::spawn_blocking(move || -> Result<Vec<Taken>, String> {
            let events = store.read_events().map_err(|e| e.to_string())?;
            let Some(pid) = events.iter().rev().find_map(|e| {
                let rest = e.message.strip_prefix("started (pid ")?;
                (e.kind == "supervisor")
                    .then(|| rest.split(')').next())??
                    .parse::<u32>()
                    .ok()
            }) else {
                return Ok(Vec::new());
            };
            let handled: BTreeSet<String> =
                events.into_iter().filter_map(|e| e.signal_file).collect();
            let suffix = format!("-{pid}");
            Ok(dir
                .processed()
                .into_iter()
                .filter(|f| f.ends_with(&suffix) && !handled.contains(f))
                .filter_map(|f| dir.retake(&f))
                .collect())
        })
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
        let taken = match found {
            Ok(t) => t,
            Err(e) => {
                self.notes.push_back(format!(
                    "signals taken by the stopped supervisor are not replayed: {e}"
                ));
                return;
            }
        };
        for t in taken {
            if let Taken::Signal(s) = &t {
                if s.kind == Kind::Stop && s.stream.is_none() {
                    self.signal_event(
                        None,
                        &format!(
                            "{}: not replayed (it was meant for the stopped supervisor)",
                            s.name
                        ),
                        s,
                    );
                    continue;
                }
                self.notes.push_back(format!(
                    "applying signal {} taken by the stopped supervisor but not yet handled",
                    s.name
                ));
            }
            self.on_signal(t).await;
        }
    }

    /// Signals written while no supervisor ran, applied to the state as it
    /// was left (before start-up turns failed streams into pending ones), so
    /// that a RETRY of a failed stream means what its writer meant.
    async fn apply_waiting_signals(&mut self) {
        let dir = self.signals.clone();
        let taken = tokio::task::spawn_blocking(move || dir.scan())
            .await
            .unwrap_or_default();
        for t in taken {
            self.on_signal(t).await;
        }
    }

    /// Turns whatever was in flight when the last supervisor stopped into
    /// something this run resumes.
    async fn normalize(&mut self) -> Result<()> {
        // Git locks a killed supervisor left in loki's own refs and
        // worktrees would fail every resumed attempt: clear them (we hold
        // the supervisor lock, so nothing else of loki's can hold them).
        let in_flight: Vec<String> = self
            .slots
            .values()
            .filter(|s| {
                matches!(
                    s.st.status,
                    Status::Preparing
                        | Status::Running
                        | Status::Checking
                        | Status::Merging
                        | Status::Interrupted
                )
            })
            .map(|s| s.st.id.clone())
            .collect();
        let any_merging = self.slots.values().any(|s| s.st.status == Status::Merging);
        let root = self.layout.root.clone();
        let target = self.target.clone();
        let (removed, kept) = tokio::task::spawn_blocking(move || {
            let mut removed = Vec::new();
            for id in &in_flight {
                if let Ok(r) = git::clear_stale_locks(&root, id) {
                    removed.extend(r);
                }
            }
            let mut kept = Vec::new();
            if any_merging {
                if let Ok(r) =
                    git::clear_abandoned_target_locks(&root, &target, Duration::from_secs(2))
                {
                    removed.extend(r.removed);
                    kept = r.kept;
                }
            }
            (removed, kept)
        })
        .await
        .unwrap_or_default();
        for r in removed {
            self.notes.push_back(format!(
                "removed a git lock left by the stopped supervisor: {}",
                r.display()
            ));
        }
        for k in kept {
            self.notes.push_back(format!(
                "{} exists: if no git command of yours is running, the stopped supervisor left it; remove it so the merge can update your checkout",
                k.display()
            ));
        }

        for id in self.order.clone() {
            let status = self.slots[&id].st.status;
            match status {
                Status::Preparing | Status::Running | Status::Checking => {
                    let started = status != Status::Preparing;
                    self.transition(
                        &id,
                        Status::Interrupted,
                        Some("the previous supervisor stopped during this attempt".into()),
                        move |st| {
                            st.process = None;
                            if let Some(a) = st.attempts.last_mut() {
                                if a.ended_at.is_none() {
                                    a.ended_at = Some(now_rfc3339());
                                    // An attempt whose agent never started
                                    // left no work to salvage.
                                    a.outcome = if started {
                                        "interrupted"
                                    } else {
                                        "not_started"
                                    }
                                    .into();
                                    a.counted = false;
                                }
                            }
                        },
                    )
                    .await;
                }
                Status::Ready => self.transition(&id, Status::Pending, None, |_| {}).await,
                Status::Failed | Status::Blocked => {
                    self.transition(&id, Status::Pending, Some("running again".into()), |st| {
                        st.process = None;
                        st.renew_allowance();
                    })
                    .await;
                }
                Status::Merging | Status::Conflicted => {
                    self.transition(&id, Status::Merging, None, |_| {}).await;
                    self.queue_merge(&id);
                }
                Status::Merged => {
                    let wt = self.layout.worktree(&id);
                    let root = self.layout.root.clone();
                    let idc = id.clone();
                    if wt.exists() || git::branch_head(&root, &format!("loki/{id}")).is_ok() {
                        let _ = tokio::task::spawn_blocking(move || {
                            let _ = git::remove_worktree(&root, &idc);
                            let _ = git::delete_branch(&root, &idc);
                        })
                        .await;
                    }
                }
                _ => {
                    if self.slots[&id].st.process.is_some() {
                        self.write(&id, |st| st.process = None).await;
                    }
                }
            }
        }
        Ok(())
    }

    // ----- persistence ----------------------------------------------------

    /// Writes a change to the stream's state (compare-and-swap at the version
    /// the dispatcher holds).
    ///
    /// The dispatcher is the only writer while it runs (commands send it
    /// signals), so a conflict means someone wrote the file by hand: the
    /// dispatcher's view wins, at the version found, and a warning event
    /// says so. If the write cannot be made at all, the change is kept in
    /// memory, the user is told, and the next write carries it.
    async fn write(
        &mut self,
        id: &str,
        change: impl Fn(&mut StreamState) + Send + Sync + Clone + 'static,
    ) {
        let Some(slot) = self.slots.get(id) else {
            return;
        };
        let mut expected = slot.st.version;
        let mut next = slot.st.clone();
        change(&mut next);
        let mut failure = String::new();
        for _ in 0..5 {
            let store = self.store.clone();
            let idc = id.to_string();
            let content = next.clone();
            let res = tokio::task::spawn_blocking(move || {
                store.update(&idc, expected, move |st| {
                    let v = st.version;
                    *st = content;
                    st.version = v;
                })
            })
            .await;
            match res {
                Ok(Ok(st)) => {
                    if let Some(slot) = self.slots.get_mut(id) {
                        slot.st = st;
                    }
                    return;
                }
                Ok(Err(crate::store::StoreError::Conflict { found, .. })) => {
                    self.event(
                        "warning",
                        Some(id),
                        &format!(
                            "the state file of {id} was changed outside the supervisor (version {found}, expected {expected}); the supervisor's view is kept"
                        ),
                    );
                    expected = found;
                    failure = format!("it kept changing underneath (version {found})");
                }
                Ok(Err(e)) => {
                    failure = e.to_string();
                    break;
                }
                Err(e) => {
                    failure = format!("the writer task failed: {e}");
                    break;
                }
            }
        }
        self.ui.send(UiEvent::Note(format!(
            "cannot write the state of {id}: {failure}; carrying on in memory"
        )));
        if let Some(slot) = self.slots.get_mut(id) {
            change(&mut slot.st);
        }
    }

    /// A status change: persisted, logged, shown.
    async fn transition(
        &mut self,
        id: &str,
        to: Status,
        reason: Option<String>,
        change: impl Fn(&mut StreamState) + Send + Sync + Clone + 'static,
    ) {
        let Some(from) = self.slots.get(id).map(|s| s.st.status) else {
            return;
        };
        let r = reason.clone();
        self.write(id, move |st| {
            st.status = to;
            st.reason = r.clone();
            if to.is_terminal() {
                st.finished_at = Some(now_rfc3339());
            }
            change(st);
        })
        .await;
        let (attempt, version) = match self.slots.get_mut(id) {
            Some(slot) => {
                slot.transition_version = slot.st.version;
                (slot.st.attempt, slot.st.version)
            }
            None => return,
        };
        let ev = Event {
            ts: now_rfc3339(),
            kind: "transition".into(),
            stream: Some(id.to_string()),
            from: Some(from),
            to: Some(to),
            version: Some(version),
            message: reason.clone().unwrap_or_default(),
            signal_file: None,
        };
        self.append(ev);
        self.ui.send(UiEvent::Transition {
            id: id.to_string(),
            attempt,
            from,
            to,
            reason,
        });
    }

    fn append(&self, ev: Event) {
        // One short O_APPEND write; cheap enough to do in place.
        if let Err(e) = self.store.append_event(&ev) {
            self.ui
                .send(UiEvent::Note(format!("cannot append to events.jsonl: {e}")));
        }
    }

    /// A `signal` event naming the signal's file in `processed/`: the mark
    /// that it was handled (see [`Self::replay_unhandled_signals`]).
    fn signal_event(&self, stream: Option<&str>, message: &str, sig: &Signal) {
        self.append(Event {
            ts: now_rfc3339(),
            kind: "signal".into(),
            stream: stream.map(str::to_string),
            from: None,
            to: None,
            version: stream.and_then(|s| self.slots.get(s)).map(|s| s.st.version),
            message: message.into(),
            signal_file: sig
                .path
                .file_name()
                .map(|f| f.to_string_lossy().into_owned()),
        });
    }

    fn event(&self, kind: &str, stream: Option<&str>, message: &str) {
        self.append(Event {
            ts: now_rfc3339(),
            kind: kind.into(),
            stream: stream.map(str::to_string),
            from: None,
            to: None,
            version: stream.and_then(|s| self.slots.get(s)).map(|s| s.st.version),
            message: message.into(),
            signal_file: None,
        });
    }

    // ----- scheduling -----------------------------------------------------

    fn running(&self) -> usize {
        self.slots
            .values()
            .filter(|s| {
                matches!(
                    s.st.status,
                    Status::Preparing | Status::Running | Status::Checking
                )
            })
            .count()
    }

    fn merged(&self, id: &str) -> bool {
        self.slots
            .get(id)
            .map(|s| s.st.status == Status::Merged)
            .unwrap_or(false)
    }

    fn total_cost(&self) -> f64 {
        self.slots.values().map(|s| s.st.cost_usd).sum()
    }

    fn budget_reached(&self) -> bool {
        match self.cfg.swarm.max_budget_usd {
            Some(b) => self.total_cost() >= b,
            None => false,
        }
    }

    /// Whether a stream in this state would start an attempt if a slot were free.
    fn startable(&self, slot: &Slot) -> bool {
        if slot.st.paused || slot.held {
            return false;
        }
        match slot.st.status {
            Status::Pending => slot.cfg.depends_on.iter().all(|d| self.merged(d)),
            Status::Retrying | Status::Interrupted => true,
            _ => false,
        }
    }

    /// Blocks streams whose dependencies can no longer merge, then starts as
    /// many attempts as the limits allow.
    async fn schedule(&mut self) {
        // Blocked: a dependency failed, was cancelled, conflicted or is blocked.
        loop {
            let mut changed = false;
            for id in self.order.clone() {
                let slot = &self.slots[&id];
                if slot.st.status != Status::Pending {
                    continue;
                }
                let bad = slot.cfg.depends_on.iter().find(|d| {
                    self.slots
                        .get(*d)
                        .map(|s| {
                            matches!(
                                s.st.status,
                                Status::Failed
                                    | Status::Blocked
                                    | Status::Cancelled
                                    | Status::Conflicted
                            )
                        })
                        .unwrap_or(false)
                });
                if let Some(dep) = bad.cloned() {
                    let why = format!("dependency {dep} is {}", self.slots[&dep].st.status);
                    self.transition(&id, Status::Blocked, Some(why), |_| {})
                        .await;
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }

        if self.draining || self.interrupting || self.swarm.paused || self.auth_failed.is_some() {
            return;
        }
        if self.budget_reached() {
            if !self.budget_noted && self.slots.values().any(|s| self.startable(s)) {
                self.budget_noted = true;
                let msg = format!(
                    "swarm budget reached: ${:.2} spent of ${:.2}; starting no new attempts, letting running ones finish (raise [swarm] max_budget_usd to go on)",
                    self.total_cost(),
                    self.cfg.swarm.max_budget_usd.unwrap_or(0.0)
                );
                self.event("budget", None, &msg);
                self.ui.send(UiEvent::Note(msg));
            }
            return;
        }
        let now = Instant::now();
        if self.backoff_until.is_some_and(|t| t > now) {
            return;
        }
        let limit = self.limit.min(self.cfg.swarm.max_parallel).max(1);
        for id in self.order.clone() {
            if self.running() >= limit {
                break;
            }
            if !self.startable(&self.slots[&id]) {
                continue;
            }
            if let Some(last) = self.last_start {
                if last.elapsed() < self.cfg.swarm.spawn_interval {
                    break; // the timer wakes us
                }
            }
            self.last_start = Some(Instant::now());
            self.start_attempt(&id).await;
        }
    }

    fn next_wake(&self) -> Option<Instant> {
        let mut t: Option<Instant> = None;
        let mut consider = |x: Instant| t = Some(t.map_or(x, |y| y.min(x)));
        if let Some(b) = self.backoff_until {
            consider(b);
        }
        if let Some(last) = self.last_start {
            if self.slots.values().any(|s| self.startable(s)) {
                consider(last + self.cfg.swarm.spawn_interval);
            }
        }
        for at in self.merge_retry.values() {
            consider(*at);
        }
        t
    }

    fn fire_timers(&mut self) {
        let now = Instant::now();
        if self.backoff_until.is_some_and(|t| t <= now) {
            self.backoff_until = None;
        }
        let due: Vec<String> = self
            .merge_retry
            .iter()
            .filter(|(_, t)| **t <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for id in due {
            self.merge_retry.remove(&id);
            if self
                .slots
                .get(&id)
                .is_some_and(|s| s.st.status == Status::Merging)
            {
                self.queue_merge(&id);
            }
        }
    }

    /// True when nothing runs and nothing more can start in this run.
    fn finished(&self) -> bool {
        // An agent that is still being stopped (cancelled, interrupted)
        // keeps the run alive until it is reaped and recorded.
        if self.slots.values().any(|s| s.stop.is_some()) {
            return false;
        }
        let active = self.slots.values().any(|s| {
            matches!(
                s.st.status,
                Status::Preparing | Status::Running | Status::Checking | Status::Merging
            )
        });
        if active {
            return false;
        }
        if self.interrupting || self.draining || self.auth_failed.is_some() {
            return true;
        }
        if self.swarm.paused {
            // A manual pause waits for RESUME (or Ctrl-C), while there is
            // anything a RESUME would start.
            return !self.slots.values().any(|s| self.startable(s));
        }
        if self.budget_reached() {
            return true;
        }
        !self.slots.values().any(|s| self.startable(s))
    }

    // ----- attempts -------------------------------------------------------

    async fn start_attempt(&mut self, id: &str) {
        let Some(slot) = self.slots.get(id) else {
            return;
        };
        let n = slot.st.attempt + 1;
        let max = slot.cfg.agent.max_attempts;
        // The stream budget covers all its attempts: an attempt gets what is
        // left of it (passed to claude as --max-budget-usd), and none starts
        // once it is spent.
        let mut stream_cfg = slot.cfg.clone();
        if let Some(b) = slot.cfg.agent.max_budget_usd {
            let left = b - slot.st.cost_usd;
            // Less than half a cent is spent (and would read as $0 to claude).
            if left < 0.005 {
                let why = format!(
                    "stream budget spent (${:.2} of ${b:.2}); raise max_budget_usd and `loki retry {id}` to go on",
                    slot.st.cost_usd
                );
                self.fail(id, why).await;
                return;
            }
            stream_cfg.agent.max_budget_usd = Some(left);
        }
        // An interrupted attempt whose agent ran is continued (and its work
        // salvaged); one stopped before its agent started is simply started
        // again, as a retry if it was one. Attempts held back before their
        // agent started are looked past: what counts is whether the last
        // agent that did start was cut off (a crash, Ctrl-C, STOP, a refused
        // key) or ended (a failed check: then this is a retry).
        let agent_ran = slot
            .st
            .attempts
            .iter()
            .rev()
            .find(|a| a.outcome != "not_started")
            .is_some_and(|a| matches!(a.outcome.as_str(), "interrupted" | "auth"));
        let retry = || Kickoff::Retry {
            feedback: slot.st.feedback.clone().unwrap_or_default(),
            last: slot.used() + 1 >= max,
        };
        let kickoff = match slot.st.status {
            Status::Interrupted if slot.st.attempt > 0 && agent_ran => Kickoff::Continue,
            Status::Interrupted if slot.st.feedback.is_some() => retry(),
            Status::Retrying => retry(),
            _ => Kickoff::Fresh,
        };
        let interrupted_attempt =
            (slot.st.status == Status::Interrupted && slot.st.attempt > 0 && agent_ran)
                .then_some(slot.st.attempt);
        let session = slot.st.session_id.clone();
        let started = now_rfc3339();
        self.transition(id, Status::Preparing, None, move |st| {
            st.attempt = n;
            st.started_at.get_or_insert_with(now_rfc3339);
            st.finished_at = None;
            st.attempts.push(AttemptRecord {
                n,
                started_at: started.clone(),
                counted: true,
                ..Default::default()
            });
        })
        .await;
        let Some(slot) = self.slots.get_mut(id) else {
            return;
        };
        slot.turns = 0;
        slot.attempt_cost = 0.0;
        slot.result_error = None;
        slot.api_trouble = None;
        slot.fail_note = None;
        let input = PrepareInput {
            layout: self.layout.clone(),
            stream: stream_cfg,
            prompt_dir: self.cfg.root.clone(),
            target: self.target.clone(),
            attempt: n,
            max_attempts: max,
            kickoff,
            session,
            state_version: slot.st.version,
            stand_in: self.stand_in,
            interrupted_attempt,
        };
        let tx = self.tx.clone();
        let idc = id.to_string();
        tokio::spawn(async move {
            let result = tokio::task::spawn_blocking(move || attempt::prepare(&input))
                .await
                .map_err(|e| PrepError {
                    message: format!("preparing failed: {e}"),
                    fatal: false,
                })
                .and_then(|r| {
                    r.map(Box::new).map_err(|e| PrepError {
                        fatal: e.downcast_ref::<attempt::Fatal>().is_some(),
                        message: format!("{e:#}"),
                    })
                });
            let _ = tx.send(Msg::Prepared {
                id: idc,
                attempt: n,
                result,
            });
        });
    }

    fn current(&self, id: &str, attempt: u32) -> bool {
        self.slots.get(id).is_some_and(|s| s.st.attempt == attempt)
    }

    async fn on_prepared(
        &mut self,
        id: String,
        n: u32,
        result: std::result::Result<Box<Prepared>, PrepError>,
    ) {
        if !self.current(&id, n) || self.slots[&id].st.status != Status::Preparing {
            return; // cancelled or stopped meanwhile
        }
        let prepared = match result {
            Ok(p) => p,
            Err(e) => {
                let reason = e.message.clone();
                self.end_attempt_record(&id, "failed", None, Some(reason.clone()))
                    .await;
                if e.fatal {
                    self.fail(&id, reason).await;
                } else {
                    self.retry_or_fail(&id, reason.clone(), reason).await;
                }
                return;
            }
        };
        // Whatever stopped new starts while this stream was preparing (Ctrl-C,
        // STOP, a pause, a refused key, a spent budget) also holds its
        // agent back; the stream resumes from here later.
        let held_back = if self.interrupting {
            Some("stopped before the agent started".to_string())
        } else if self.auth_failed.is_some() {
            Some("not started: the API refused the credentials".into())
        } else if self.draining {
            Some("not started: the run is stopping; `loki run` starts it".into())
        } else if self.swarm.paused {
            Some("not started: the swarm is paused".into())
        } else if self.budget_reached() {
            Some("not started: the swarm budget is spent".into())
        } else {
            None
        };
        if let Some(why) = held_back {
            self.end_attempt_record(&id, "not_started", None, None)
                .await;
            self.transition(&id, Status::Interrupted, Some(why), |st| {
                if let Some(a) = st.attempts.last_mut() {
                    a.counted = false;
                }
            })
            .await;
            return;
        }
        let wt = prepared.worktree.clone();
        let label = prepared.agent_label.clone();
        let wt_path = wt.path.display().to_string();
        let base = wt.base.clone();
        let labelc = label.clone();
        self.transition(&id, Status::Running, None, move |st| {
            st.worktree = Some(wt_path.clone());
            st.base_commit.get_or_insert_with(|| base.clone());
            st.agent = Some(labelc.clone());
            st.last_message = None;
        })
        .await;
        if let Some(c) = &prepared.salvaged {
            self.event(
                "commit",
                Some(&id),
                &format!("committed the interrupted work as {c}"),
            );
        }
        let Some(slot) = self.slots.get_mut(&id) else {
            return;
        };
        slot.agent_label = label;
        slot.resumed = prepared.resumed;
        let mut launch = prepared.launch.clone();
        if self.stand_in && self.stand_in_delay_ms > 0 {
            launch.env.push((
                "LOKI_STAND_IN_DELAY_MS".into(),
                self.stand_in_delay_ms.to_string(),
            ));
        }
        // The agent sees the version its Running state has.
        for (k, v) in launch.env.iter_mut() {
            if k == "LOKI_STATE_VERSION" {
                *v = slot.st.version.to_string();
            }
        }
        let (stop_tx, stop_rx) = watch::channel(None);
        slot.stop = Some(stop_tx);
        let spawner = self.spawner.clone();
        let tx = self.tx.clone();
        let idc = id.clone();
        tokio::spawn(async move {
            let (etx, mut erx) = mpsc::unbounded_channel::<AgentEvent>();
            let ftx = tx.clone();
            let fid = idc.clone();
            let forward = tokio::spawn(async move {
                while let Some(ev) = erx.recv().await {
                    let _ = ftx.send(Msg::Agent {
                        id: fid.clone(),
                        attempt: n,
                        ev,
                    });
                }
            });
            let outcome = agent::run(&spawner, launch, etx, stop_rx).await;
            let _ = forward.await;
            let _ = tx.send(Msg::AgentDone {
                id: idc,
                attempt: n,
                outcome,
            });
        });
    }

    async fn on_agent_event(&mut self, id: String, n: u32, ev: AgentEvent) {
        if !self.current(&id, n) {
            return;
        }
        match ev {
            AgentEvent::Started(rec) => {
                self.write(&id, move |st| st.process = Some(rec)).await;
                self.event(
                    "agent",
                    Some(&id),
                    &format!("attempt {n} started: pid {} (group {})", rec.pid, rec.pgid),
                );
            }
            AgentEvent::Init { session_id } => {
                let sid = session_id.clone();
                self.write(&id, move |st| {
                    st.session_id = Some(sid.clone());
                    if let Some(a) = st.attempts.last_mut() {
                        a.session_id = Some(sid.clone());
                    }
                })
                .await;
            }
            AgentEvent::Activity(text) => {
                if let Some(slot) = self.slots.get_mut(&id) {
                    slot.st.last_message = Some(text.clone());
                }
                self.ui.send(UiEvent::Activity { id, text });
            }
            AgentEvent::Turns(t) => {
                let cost = match self.slots.get_mut(&id) {
                    Some(slot) => {
                        slot.turns = t;
                        slot.st.cost_usd + slot.attempt_cost
                    }
                    None => return,
                };
                self.ui.send(UiEvent::Progress {
                    id,
                    turns: t,
                    cost_usd: cost,
                });
            }
            AgentEvent::ApiRetry {
                status,
                delay_ms,
                attempt,
            } => {
                let code = status.unwrap_or(0);
                let msg = format!(
                    "{id}: the API answered {} (retry {} in {} ms)",
                    status
                        .map(|s| s.to_string())
                        .unwrap_or_else(|| "an error".into()),
                    attempt.map(|a| a.to_string()).unwrap_or_else(|| "?".into()),
                    delay_ms
                        .map(|d| d.to_string())
                        .unwrap_or_else(|| "?".into())
                );
                self.event("api_retry", Some(&id), &msg);
                if let Some(slot) = self.slots.get_mut(&id) {
                    slot.api_trouble = Some(code);
                }
                match code {
                    401 | 403 => self.auth_failure(&id, code).await,
                    429 | 529 | 503 => self.rate_limited(&id, delay_ms),
                    _ => {}
                }
            }
            AgentEvent::Result(info) => {
                let budget = self.slots.get(&id).and_then(|s| s.cfg.agent.max_budget_usd);
                if let Some(slot) = self.slots.get_mut(&id) {
                    slot.attempt_cost = info.cost_usd;
                    slot.turns = info.turns.max(slot.turns);
                    if info.is_error {
                        slot.result_error = Some(if info.result.is_empty() {
                            info.subtype.clone()
                        } else {
                            info.result.clone()
                        });
                    }
                    let total = slot.st.cost_usd + info.cost_usd;
                    let turns = slot.turns;
                    self.ui.send(UiEvent::Progress {
                        id: id.clone(),
                        turns,
                        cost_usd: total,
                    });
                    if let Some(b) = budget {
                        if total >= b {
                            self.event(
                                "budget",
                                Some(&id),
                                &format!("stream budget reached: ${total:.2} of ${b:.2}"),
                            );
                        }
                    }
                }
                let trouble = info
                    .is_error
                    .then(|| api_error_class(info.api_status, &info.result))
                    .flatten();
                if let Some(trouble) = trouble {
                    let code = match trouble {
                        ApiTrouble::Auth => 401,
                        ApiTrouble::RateLimit => 429,
                    };
                    if let Some(slot) = self.slots.get_mut(&id) {
                        slot.api_trouble = Some(code);
                    }
                    match trouble {
                        ApiTrouble::Auth => self.auth_failure(&id, code).await,
                        // A limit seen only in the final result (no api_retry
                        // line): waited out the same way.
                        ApiTrouble::RateLimit => self.rate_limited(&id, None),
                    }
                }
            }
        }
    }

    /// 429 / 529: no new spawns until the retry time; concurrency halves and
    /// comes back one step per successful attempt.
    fn rate_limited(&mut self, id: &str, delay_ms: Option<u64>) {
        let wait = Duration::from_millis(delay_ms.unwrap_or(30_000).clamp(1_000, 15 * 60_000));
        let until = Instant::now() + wait;
        if self.backoff_until.is_none_or(|t| t < until) {
            self.backoff_until = Some(until);
        }
        let before = self.limit;
        self.limit = (self.running().max(1) / 2).max(1).min(self.limit);
        let msg = format!(
            "rate limited ({id}): no new agents for {}; parallel limit {} → {}",
            crate::util::fmt_duration(wait),
            before,
            self.limit
        );
        self.event("rate_limit", Some(id), &msg);
        self.ui.send(UiEvent::Note(msg));
    }

    /// 401 / 403: every agent stops, the swarm pauses, the run ends with
    /// how to fix the credentials.
    async fn auth_failure(&mut self, id: &str, code: u16) {
        if self.auth_failed.is_some() {
            return;
        }
        let msg = format!(
            "the API refused the credentials ({code}) for stream {id}: set a valid ANTHROPIC_API_KEY (or run `claude /login`), then run `loki run` to resume; no attempt was counted"
        );
        self.auth_failed = Some(msg.clone());
        self.ui.send(UiEvent::Note(msg.clone()));
        self.event("auth", Some(id), &msg);
        // A pause the user made stays theirs (lifted only by `loki resume`);
        // otherwise the swarm is paused as the supervisor's own, which the
        // next `loki run` lifts.
        if !self.swarm.paused {
            let store = self.store.clone();
            let v = self.swarm.version;
            let m = msg.clone();
            if let Ok(Ok(s)) = tokio::task::spawn_blocking(move || {
                store.update_swarm(v, |s| {
                    s.paused = true;
                    s.auth_paused = true;
                    s.pause_reason = Some(m);
                })
            })
            .await
            {
                self.swarm = s;
            }
        }
        self.stop_all(StopRequest::Auth);
    }

    fn stop_all(&mut self, why: StopRequest) {
        for slot in self.slots.values_mut() {
            if let Some(stop) = &slot.stop {
                let _ = stop.send(Some(why));
            }
        }
    }

    async fn end_attempt_record(
        &mut self,
        id: &str,
        outcome: &str,
        exit: Option<i32>,
        reason: Option<String>,
    ) {
        let (cost, turns) = match self.slots.get(id) {
            Some(s) => (s.attempt_cost, s.turns),
            None => return,
        };
        let outcome = outcome.to_string();
        self.write(id, move |st| {
            st.process = None;
            st.cost_usd += if st.attempts.last().is_some_and(|a| a.ended_at.is_none()) {
                cost
            } else {
                0.0
            };
            if let Some(a) = st.attempts.last_mut() {
                if a.ended_at.is_none() {
                    a.ended_at = Some(now_rfc3339());
                    a.cost_usd = cost;
                    a.turns = turns;
                }
                a.outcome = outcome.clone();
                a.exit_code = exit;
                a.reason = reason.clone();
                if matches!(
                    outcome.as_str(),
                    "interrupted" | "not_started" | "rate_limited" | "auth" | "session_lost"
                ) {
                    a.counted = false;
                }
            }
        })
        .await;
    }

    async fn on_agent_done(&mut self, id: String, n: u32, out: AgentOutcome) {
        if !self.current(&id, n) {
            return;
        }
        if let Some(slot) = self.slots.get_mut(&id) {
            slot.stop = None;
            if let Some(r) = &out.result {
                slot.attempt_cost = r.cost_usd;
                slot.turns = slot.turns.max(r.turns);
            }
        }
        let slot = &self.slots[&id];
        let status = slot.st.status;
        let exit = out.exit_code;
        let tail = out.stderr_tail.trim().to_string();
        let with_tail = |s: String| {
            if tail.is_empty() {
                s
            } else {
                format!("{s}; stderr: {}", crate::util::one_line(&tail))
            }
        };
        let result_error = slot.result_error.clone();
        let api = slot.api_trouble;

        let auth_stop = self.auth_failed.is_some() || matches!(api, Some(401 | 403));
        // `--resume` of a session claude no longer has (an attempt killed
        // before its transcript was written, a cleared ~/.claude): claude
        // exits at once, without a system/init, saying "No conversation
        // found with session ID". Not the agent's failure: the same attempt
        // starts again in a new session, uncounted. Any other early exit
        // is an ordinary failure.
        let session_lost = slot.resumed
            && slot
                .st
                .attempts
                .last()
                .is_none_or(|a| a.session_id.is_none())
            && out.ending == Ending::Exited
            && !auth_stop
            && api.is_none()
            && result_error
                .as_deref()
                .is_some_and(|e| e.to_lowercase().contains("no conversation found"));
        if session_lost {
            self.session_lost(&id, exit, result_error).await;
            return;
        }
        // What the attempt amounted to: (outcome, ok, failure reason).
        let (outcome, ok, why): (&str, bool, Option<String>) = match &out.ending {
            Ending::SpawnFailed(m) => {
                let m = m.clone();
                self.end_attempt_record(&id, "failed", None, Some(m.clone()))
                    .await;
                self.fail(&id, m).await;
                return;
            }
            Ending::Stopped(StopRequest::Interrupt) => {
                self.end_attempt_record(&id, "interrupted", exit, None)
                    .await;
                let why = if self.interrupting {
                    "stopped by the user; resume with `loki run`"
                } else {
                    "stopped by STOP; resume with `loki retry`"
                };
                self.transition(&id, Status::Interrupted, Some(why.into()), |_| {})
                    .await;
                return;
            }
            // Stopped because the API refused the key, or ended by itself
            // after that (its own retries exhausted): not failed, no
            // attempt burned.
            Ending::Stopped(StopRequest::Auth) => {
                self.auth_stopped(&id, exit).await;
                return;
            }
            Ending::Exited if auth_stop => {
                self.auth_stopped(&id, exit).await;
                return;
            }
            Ending::Stopped(StopRequest::Cancel) => {
                self.end_attempt_record(&id, "cancelled", exit, None).await;
                if status != Status::Cancelled {
                    self.transition(&id, Status::Cancelled, Some("cancelled".into()), |_| {})
                        .await;
                }
                return;
            }
            Ending::Stopped(StopRequest::Finish) => match self.slots[&id].fail_note.clone() {
                Some(note) => ("failed", false, Some(format!("TESTS_FAILED: {note}"))),
                None => ("ok", true, None),
            },
            Ending::Timeout => (
                "timeout",
                false,
                Some(format!(
                    "timeout: still running after {}",
                    humantime::format_duration(self.slots[&id].cfg.agent.timeout)
                )),
            ),
            Ending::Idle => (
                "idle",
                false,
                Some(format!(
                    "idle: no output for {}; the agent was stopped",
                    humantime::format_duration(self.slots[&id].cfg.agent.idle_timeout)
                )),
            ),
            Ending::Exited => {
                if exit == Some(0) && result_error.is_none() {
                    ("ok", true, None)
                } else if matches!(api, Some(429) | Some(529) | Some(503)) {
                    (
                        "rate_limited",
                        false,
                        Some(with_tail(format!(
                            "rate limited: {}",
                            result_error
                                .clone()
                                .unwrap_or_else(|| "the API kept answering 429".into())
                        ))),
                    )
                } else if let Some(e) = result_error.clone() {
                    (
                        "failed",
                        false,
                        Some(format!(
                            "the agent reported an error: {}",
                            crate::util::one_line(&e)
                        )),
                    )
                } else {
                    let code = match (exit, out.signal) {
                        (Some(c), _) => format!("exit code {c}"),
                        (None, Some(s)) => format!("killed by signal {s}"),
                        _ => "an unknown status".into(),
                    };
                    (
                        "failed",
                        false,
                        Some(with_tail(format!("the agent ended with {code}"))),
                    )
                }
            }
        };
        self.end_attempt_record(&id, outcome, exit, why.clone())
            .await;
        if ok {
            // Success restores concurrency one step after a rate limit.
            self.limit = (self.limit + 1).min(self.cfg.swarm.max_parallel.max(1));
        }
        let slot = &self.slots[&id];
        let trailers = self.attempt_trailers(slot);
        let input = FinishInput {
            layout: self.layout.clone(),
            stream: slot.cfg.clone(),
            attempt: n,
            base: slot.st.base_commit.clone().unwrap_or_default(),
            agent_ok: ok,
            agent_failure: why.clone(),
            trailers,
        };
        self.transition(&id, Status::Checking, why, |_| {}).await;
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let result = tokio::task::spawn_blocking(move || {
                attempt::finish(&input).map_err(|e| format!("{e:#}"))
            })
            .await
            .unwrap_or_else(|e| Err(format!("checking failed: {e}")));
            let _ = tx.send(Msg::Finished {
                id,
                attempt: n,
                result,
            });
        });
    }

    /// The resumed session was gone: forget it and let the stream start
    /// again (interrupted streams are restarted as slots free up).
    async fn session_lost(&mut self, id: &str, exit: Option<i32>, error: Option<String>) {
        let old = self.slots[id].st.session_id.clone().unwrap_or_default();
        let detail = error
            .map(|e| format!(" ({})", crate::util::one_line(&e)))
            .unwrap_or_default();
        let why = format!(
            "claude could not resume session {old}{detail}; starting again in a new session"
        );
        self.end_attempt_record(id, "session_lost", exit, Some(why.clone()))
            .await;
        self.event("session", Some(id), &why);
        self.transition(id, Status::Interrupted, Some(why), |st| {
            st.session_id = None;
        })
        .await;
    }

    /// An attempt ended by an authentication failure: uncounted, and the
    /// stream waits (interrupted) for the next `loki run`.
    async fn auth_stopped(&mut self, id: &str, exit: Option<i32>) {
        let why = "the API refused the credentials";
        self.end_attempt_record(id, "auth", exit, Some(why.into()))
            .await;
        self.transition(
            id,
            Status::Interrupted,
            Some(format!("paused: {why}")),
            |_| {},
        )
        .await;
    }

    fn attempt_trailers(&self, slot: &Slot) -> Vec<(String, String)> {
        let st = &slot.st;
        let mut t = vec![
            ("Loki-Stream".to_string(), st.id.clone()),
            ("Loki-Attempt".to_string(), st.attempt.to_string()),
            (
                "Loki-Agent".to_string(),
                if slot.agent_label.is_empty() {
                    slot.cfg.agent.command.clone()
                } else {
                    slot.agent_label.clone()
                },
            ),
        ];
        if let Some(s) = &st.session_id {
            t.push(("Loki-Session".into(), s.clone()));
        }
        let cost = st.attempts.last().map(|a| a.cost_usd).unwrap_or(0.0);
        t.push(("Loki-Cost-USD".into(), format!("{cost:.4}")));
        if let Some(a) = st.attempts.last() {
            if let Some(secs) = a
                .ended_at
                .as_deref()
                .and_then(|e| crate::util::secs_between(&a.started_at, e))
            {
                t.push(("Loki-Duration".into(), format!("{secs:.1}s")));
            }
        }
        t
    }

    async fn on_finished(
        &mut self,
        id: String,
        n: u32,
        result: std::result::Result<Finished, String>,
    ) {
        if !self.current(&id, n) || self.slots[&id].st.status != Status::Checking {
            return;
        }
        let agent_failed = self.slots[&id]
            .st
            .attempts
            .last()
            .map(|a| a.outcome != "ok")
            .unwrap_or(true);
        let outcome_now = self.slots[&id]
            .st
            .attempts
            .last()
            .map(|a| a.outcome.clone())
            .unwrap_or_default();
        match result {
            Err(e) => {
                self.retry_or_fail(&id, format!("after the attempt: {e}"), e)
                    .await;
            }
            Ok(f) => {
                let commit = f.commit.clone();
                let level = f.report.as_ref().map(|r| r.status);
                let summary = f.report.as_ref().map(|r| r.summary.clone());
                let lvl = level.map(|l| format!("{l:?}").to_uppercase());
                self.write(&id, move |st| {
                    if let Some(a) = st.attempts.last_mut() {
                        a.commit = commit.clone();
                        a.checks = lvl.clone();
                    }
                })
                .await;
                if let Some(s) = &summary {
                    self.event("check", Some(&id), s);
                }
                if agent_failed {
                    let why = self.slots[&id]
                        .st
                        .attempts
                        .last()
                        .and_then(|a| a.reason.clone())
                        .unwrap_or_else(|| "the agent failed".into());
                    if outcome_now == "rate_limited" {
                        // Not the agent's fault: retry without burning an attempt.
                        self.transition(&id, Status::Retrying, Some(why), |st| st.feedback = None)
                            .await;
                        return;
                    }
                    let feedback = format!("- The previous attempt did not complete: {why}");
                    self.retry_or_fail(&id, why, feedback).await;
                    return;
                }
                let Some(report) = f.report else {
                    self.retry_or_fail(&id, "no check report".into(), String::new())
                        .await;
                    return;
                };
                if let Some(why) = report.config_error() {
                    // The check itself cannot run: no attempt of the agent
                    // can fix that, so none is burned.
                    self.fail(&id, why).await;
                    return;
                }
                if report.status == Level::Fail {
                    let feedback = report
                        .violations()
                        .iter()
                        .map(|v| format!("- {v}"))
                        .collect::<Vec<_>>()
                        .join("\n");
                    self.write(&id, |st| {
                        if let Some(a) = st.attempts.last_mut() {
                            a.outcome = "check_failed".into();
                        }
                    })
                    .await;
                    self.retry_or_fail(&id, report.summary.clone(), feedback)
                        .await;
                    return;
                }
                let slot = &self.slots[&id];
                if slot.cfg.checks.approve && !slot.pre_approved {
                    self.transition(
                        &id,
                        Status::AwaitingApproval,
                        Some(format!(
                            "{}; approve with `loki approve {id}`",
                            report.summary
                        )),
                        |st| st.feedback = None,
                    )
                    .await;
                } else {
                    self.transition(&id, Status::Merging, None, |st| st.feedback = None)
                        .await;
                    self.queue_merge(&id);
                }
            }
        }
    }

    /// After a failed attempt: retry with feedback while the allowance lasts,
    /// otherwise the stream fails and its dependents are blocked.
    async fn retry_or_fail(&mut self, id: &str, reason: String, feedback: String) {
        let Some(slot) = self.slots.get(id) else {
            return;
        };
        if let Some(b) = slot.cfg.agent.max_budget_usd {
            if slot.st.cost_usd >= b {
                let why = format!(
                    "{reason}; stream budget reached (${:.2} of ${b:.2}), so no further attempt (raise max_budget_usd to go on)",
                    slot.st.cost_usd
                );
                self.fail(id, why).await;
                return;
            }
        }
        if slot.used() < slot.cfg.agent.max_attempts {
            let left = slot.cfg.agent.max_attempts - slot.used();
            let fb = feedback.clone();
            self.transition(
                id,
                Status::Retrying,
                Some(format!("{reason} ({left} attempt(s) left)")),
                move |st| st.feedback = Some(fb.clone()),
            )
            .await;
        } else {
            let max = slot.cfg.agent.max_attempts;
            self.fail(id, format!("{reason} (after {max} attempt(s))"))
                .await;
        }
    }

    async fn fail(&mut self, id: &str, reason: String) {
        self.transition(id, Status::Failed, Some(reason), |_| {})
            .await;
    }

    // ----- merging --------------------------------------------------------

    fn queue_merge(&mut self, id: &str) {
        let Some(slot) = self.slots.get(id) else {
            return;
        };
        let st = &slot.st;
        let trailers = crate::model::trailers::merge_trailers(st, &slot.cfg.agent.command);
        let _ = self.merge_tx.send(MergeJob {
            id: id.to_string(),
            attempt: st.attempt,
            subject: format!("Merge stream {id}"),
            trailers,
        });
    }

    async fn on_merge_done(
        &mut self,
        id: String,
        result: std::result::Result<MergeOutcome, String>,
    ) {
        if self
            .slots
            .get(&id)
            .is_none_or(|s| s.st.status != Status::Merging)
        {
            return;
        }
        match result {
            Ok(MergeOutcome::Merged {
                commit,
                checkout_behind,
            }) => {
                let c = commit.clone();
                self.transition(&id, Status::Merged, None, move |st| {
                    st.merge_commit = Some(c.clone());
                    st.process = None;
                })
                .await;
                self.event(
                    "merge",
                    Some(&id),
                    &format!("merged into {} as {commit}", self.target),
                );
                self.checkout_behind_warning(&id, checkout_behind);
                self.cleanup(&id);
            }
            Ok(MergeOutcome::AlreadyMerged { checkout_behind }) => {
                self.transition(&id, Status::Merged, Some("already merged".into()), |_| {})
                    .await;
                self.checkout_behind_warning(&id, checkout_behind);
                self.cleanup(&id);
            }
            Ok(MergeOutcome::Conflict { paths }) => {
                let why = format!(
                    "merge conflict in {}: resolve it in .loki/worktrees/{id} (merge {} into loki/{id} and commit), then `loki retry {id}`",
                    paths.join(", "),
                    self.target
                );
                self.transition(&id, Status::Conflicted, Some(why), |_| {})
                    .await;
            }
            Ok(MergeOutcome::UserChanges { paths }) => {
                let why = format!(
                    "waiting to merge: your uncommitted changes in {} touch {}; commit or stash them and the merge goes on",
                    self.layout.root.display(),
                    paths.join(", ")
                );
                if self.slots[&id].st.reason.as_deref() != Some(why.as_str()) {
                    let w = why.clone();
                    self.write(&id, move |st| st.reason = Some(w.clone())).await;
                    self.ui.send(UiEvent::Note(format!("{id}: {why}")));
                    self.event("merge_wait", Some(&id), &why);
                }
                self.merge_retry
                    .insert(id, Instant::now() + Duration::from_secs(2));
            }
            Err(e) => {
                self.transition(
                    &id,
                    Status::Failed,
                    Some(format!("merge failed: {e}")),
                    |_| {},
                )
                .await;
            }
        }
    }

    /// A merged stream whose checkout update failed: said, never a failure.
    fn checkout_behind_warning(&mut self, id: &str, why: Option<String>) {
        if let Some(why) = why {
            let msg = format!("{id} merged, but {why}");
            self.event("warning", Some(id), &msg);
            self.ui.send(UiEvent::Note(msg));
        }
    }

    fn cleanup(&mut self, id: &str) {
        let root = self.layout.root.clone();
        let id = id.to_string();
        let ui = self.ui.clone();
        let h = tokio::spawn(async move {
            let r = tokio::task::spawn_blocking(move || -> Result<()> {
                git::remove_worktree(&root, &id)?;
                git::delete_branch(&root, &id)?;
                Ok(())
            })
            .await;
            if let Ok(Err(e)) = r {
                ui.send(UiEvent::Note(format!("cleanup after merge: {e:#}")));
            }
        });
        self.cleanups.push(h);
    }

    // ----- messages -------------------------------------------------------

    async fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Prepared {
                id,
                attempt,
                result,
            } => self.on_prepared(id, attempt, result).await,
            Msg::Agent { id, attempt, ev } => self.on_agent_event(id, attempt, ev).await,
            Msg::AgentDone {
                id,
                attempt,
                outcome,
            } => self.on_agent_done(id, attempt, outcome).await,
            Msg::Finished {
                id,
                attempt,
                result,
            } => self.on_finished(id, attempt, result).await,
            Msg::MergeDone { id, result } => self.on_merge_done(id, result).await,
            Msg::Signal(t) => self.on_signal(t).await,
            Msg::Interrupt => {
                if self.draining {
                    self.interrupt("a second Ctrl-C").await;
                } else {
                    self.draining = true;
                    let running: Vec<String> = self
                        .slots
                        .values()
                        .filter(|s| s.st.status.is_active())
                        .map(|s| s.st.id.clone())
                        .collect();
                    let msg = if running.is_empty() {
                        "Ctrl-C: stopping".to_string()
                    } else {
                        format!("Ctrl-C: starting nothing new; letting {} finish. Press Ctrl-C again to stop them now.", running.join(", "))
                    };
                    self.event("supervisor", None, &msg);
                    self.ui.send(UiEvent::Note(msg));
                }
            }
            Msg::Terminate(name) => self.interrupt(name).await,
        }
    }

    async fn interrupt(&mut self, why: &str) {
        if self.interrupting {
            return;
        }
        self.interrupting = true;
        self.draining = true;
        let msg =
            format!("{why}: stopping every agent (SIGTERM, then SIGKILL after the grace period)");
        self.event("supervisor", None, &msg);
        self.ui.send(UiEvent::Note(msg));
        self.stop_all(StopRequest::Interrupt);
    }

    async fn on_signal(&mut self, taken: Taken) {
        let sig = match taken {
            Taken::Rejected { name, reason } => {
                self.event("signal_rejected", None, &format!("{name}: {reason}"));
                self.ui
                    .send(UiEvent::Note(format!("rejected signal {name}: {reason}")));
                return;
            }
            Taken::Signal(s) => s,
        };
        let label = sig.name.clone();
        match sig.stream.clone() {
            None => self.swarm_signal(&sig).await,
            Some(id) => {
                let Some(slot) = self.slots.get(&id) else {
                    let known: Vec<&str> = self.order.iter().map(String::as_str).collect();
                    self.reject(
                        &sig,
                        &format!(
                            "unknown stream `{id}`; streams in this swarm: {}",
                            known.join(", ")
                        ),
                    );
                    return;
                };
                if let Some(e) = sig.expected_version {
                    if e < slot.transition_version || e > slot.st.version {
                        let why = format!(
                            "stale: expected version {e}, but stream {id} is at version {} ({} since version {})",
                            slot.st.version, slot.st.status, slot.transition_version
                        );
                        self.reject(&sig, &why);
                        return;
                    }
                }
                match decide(sig.kind, &slot.st) {
                    Err(why) => self.reject(&sig, &why),
                    Ok(d) => {
                        // Applied first, then recorded as handled: a crash in
                        // between replays it, and the replay is then stale
                        // or inapplicable (rejected), never applied twice.
                        self.apply(&id, d, &sig).await;
                        let msg = format!(
                            "{label}{}",
                            sig.note
                                .as_ref()
                                .map(|n| format!(": {n}"))
                                .unwrap_or_default()
                        );
                        self.signal_event(Some(&id), &msg, &sig);
                    }
                }
            }
        }
    }

    fn reject(&self, sig: &Signal, why: &str) {
        if let Err(e) = self.signals.reject(sig, why) {
            self.ui.send(UiEvent::Note(format!(
                "cannot move signal {} to rejected/: {e:#}",
                sig.name
            )));
        }
        self.event(
            "signal_rejected",
            sig.stream.as_deref(),
            &format!("{}: {why}", sig.name),
        );
        self.ui.send(UiEvent::Note(format!(
            "rejected signal {}: {why}",
            sig.name
        )));
    }

    async fn swarm_signal(&mut self, sig: &Signal) {
        let store = self.store.clone();
        let v = self.swarm.version;
        if let Some(e) = sig.expected_version.filter(|e| *e != v) {
            self.reject(
                sig,
                &format!("stale: expected swarm version {e}, but swarm.json is at version {v}"),
            );
            return;
        }
        match sig.kind {
            Kind::Pause | Kind::Resume => {
                let pause = sig.kind == Kind::Pause;
                if self.swarm.paused == pause {
                    self.reject(
                        sig,
                        if pause {
                            "the swarm is already paused"
                        } else {
                            "the swarm is not paused"
                        },
                    );
                    return;
                }
                let note = sig.note.clone();
                match tokio::task::spawn_blocking(move || {
                    store.update_swarm(v, |s| {
                        s.paused = pause;
                        s.auth_paused = false;
                        s.pause_reason = if pause {
                            Some(note.unwrap_or_else(|| "paused by PAUSE".into()))
                        } else {
                            None
                        };
                    })
                })
                .await
                {
                    Ok(Ok(s)) => self.swarm = s,
                    Ok(Err(e)) => {
                        self.reject(sig, &format!("cannot write swarm state: {e}"));
                        return;
                    }
                    Err(e) => {
                        self.reject(sig, &format!("cannot write swarm state: {e}"));
                        return;
                    }
                }
                let msg = if pause {
                    "swarm paused: no new attempts until RESUME (running ones go on)"
                } else {
                    "swarm resumed"
                };
                self.signal_event(None, &format!("{}: {msg}", sig.name), sig);
                self.ui.send(UiEvent::Note(msg.into()));
            }
            Kind::Stop => {
                self.draining = true;
                let msg =
                    "STOP: starting nothing new; the supervisor exits when running attempts finish";
                self.signal_event(None, &format!("{}: {msg}", sig.name), sig);
                self.ui.send(UiEvent::Note(msg.into()));
            }
            _ => self.reject(sig, &format!("{} needs a stream id", sig.kind.as_str())),
        }
    }

    async fn apply(&mut self, id: &str, d: Decision, sig: &Signal) {
        let note = sig.note.clone();
        match d {
            Decision::Approve => {
                let who = note.clone().unwrap_or_else(default_approver);
                self.transition(
                    id,
                    Status::Merging,
                    Some(format!("approved by {who}")),
                    move |st| st.approved_by = Some(who.clone()),
                )
                .await;
                self.queue_merge(id);
            }
            Decision::FinishRunning { approve } => {
                if let Some(slot) = self.slots.get_mut(id) {
                    if approve {
                        slot.pre_approved = true;
                        let who = note.clone().unwrap_or_else(default_approver);
                        slot.st.approved_by = Some(who);
                    }
                    if let Some(stop) = &slot.stop {
                        let _ = stop.send(Some(StopRequest::Finish));
                    }
                }
            }
            Decision::FailRunning => {
                let n = note.clone().unwrap_or_else(|| "the tests failed".into());
                let t = format!("failed: {n}");
                self.write(id, move |st| st.tests = Some(t.clone())).await;
                if let Some(slot) = self.slots.get_mut(id) {
                    slot.fail_note = Some(n);
                    if let Some(stop) = &slot.stop {
                        let _ = stop.send(Some(StopRequest::Finish));
                    }
                }
            }
            Decision::Reject => {
                let fb = note
                    .clone()
                    .unwrap_or_else(|| "A reviewer rejected the draft without a note.".into());
                let tests_failed = sig.kind == Kind::TestsFailed;
                let fbc = format!("- Reviewer: {fb}");
                let reason = format!("rejected: {}", crate::util::one_line(&fb));
                self.write(id, move |st| {
                    if tests_failed {
                        st.tests = Some(format!("failed: {fb}"));
                    }
                    if let Some(a) = st.attempts.last_mut() {
                        a.outcome = "rejected".into();
                    }
                })
                .await;
                if tests_failed || sig.count {
                    // Counted: like a failed check, it may use up the allowance.
                    self.retry_or_fail(id, reason, fbc).await;
                } else {
                    self.transition(id, Status::Retrying, Some(reason), move |st| {
                        st.feedback = Some(fbc.clone());
                        if let Some(a) = st.attempts.last_mut() {
                            a.counted = false;
                        }
                    })
                    .await;
                }
            }
            Decision::Cancel => {
                let running = self.slots.get(id).and_then(|s| s.stop.clone());
                let preparing = self
                    .slots
                    .get(id)
                    .is_some_and(|s| s.st.status == Status::Preparing);
                if preparing {
                    // No agent yet: the attempt ends here.
                    self.end_attempt_record(id, "cancelled", None, None).await;
                }
                self.transition(
                    id,
                    Status::Cancelled,
                    Some(
                        note.clone()
                            .map(|n| format!("cancelled: {n}"))
                            .unwrap_or_else(|| "cancelled".into()),
                    ),
                    |_| {},
                )
                .await;
                if let Some(stop) = running {
                    let _ = stop.send(Some(StopRequest::Cancel));
                }
            }
            Decision::Retry => {
                let status = self.slots[id].st.status;
                if let Some(slot) = self.slots.get_mut(id) {
                    slot.held = false;
                }
                self.write(id, StreamState::renew_allowance).await;
                if status == Status::Conflicted {
                    self.transition(id, Status::Merging, Some("merging again".into()), |_| {})
                        .await;
                    self.queue_merge(id);
                } else if status == Status::Interrupted {
                    // Stays interrupted: it resumes as soon as a slot is free.
                    self.ui.send(UiEvent::Note(format!("{id}: resuming")));
                } else {
                    self.transition(id, Status::Pending, Some("retry requested".into()), |_| {})
                        .await;
                    // Dependents blocked by it get another chance too.
                    for dep in crate::plan::dependents_of(&self.cfg.streams, id) {
                        if self
                            .slots
                            .get(&dep)
                            .is_some_and(|s| s.st.status == Status::Blocked)
                        {
                            self.transition(&dep, Status::Pending, None, |_| {}).await;
                        }
                    }
                }
            }
            Decision::RecordTests(what) => {
                let n = note.clone();
                self.write(id, move |st| {
                    st.tests = Some(match &n {
                        Some(n) => format!("{what}: {n}"),
                        None => what.to_string(),
                    })
                })
                .await;
            }
            Decision::PauseStream => self.write(id, |st| st.paused = true).await,
            Decision::ResumeStream => self.write(id, |st| st.paused = false).await,
            Decision::StopStream => {
                if let Some(slot) = self.slots.get_mut(id) {
                    slot.held = true;
                    if let Some(stop) = &slot.stop {
                        let _ = stop.send(Some(StopRequest::Interrupt));
                    }
                }
                if self.slots[id].st.status == Status::Preparing {
                    self.transition(
                        id,
                        Status::Interrupted,
                        Some("stopped by STOP".into()),
                        |_| {},
                    )
                    .await;
                }
            }
        }
    }

    // ----- the end ----------------------------------------------------------

    fn summary(&self) -> i32 {
        if self.interrupting {
            return 130;
        }
        if self.slots.values().all(|s| s.st.status == Status::Merged) {
            0
        } else {
            1
        }
    }

    fn summary_text(&self) -> String {
        let mut by: BTreeMap<Status, Vec<&Slot>> = BTreeMap::new();
        for id in &self.order {
            let s = &self.slots[id];
            by.entry(s.st.status).or_default().push(s);
        }
        let count = |st: Status| by.get(&st).map(|v| v.len()).unwrap_or(0);
        let mut out = String::new();
        out.push_str(&format!(
            "\n{}{} of {} streams merged into {}",
            if self.rehearse { "rehearsal: " } else { "" },
            count(Status::Merged),
            self.slots.len(),
            self.target
        ));
        let others: Vec<String> = by
            .iter()
            .filter(|(k, _)| **k != Status::Merged)
            .map(|(k, v)| format!("{} {}", v.len(), k.as_str().replace('_', " ")))
            .collect();
        if !others.is_empty() {
            out.push_str(&format!(", {}", others.join(", ")));
        }
        out.push_str(&format!("; cost ${:.2}\n", self.total_cost()));
        let logs = self.layout.loki().join("logs");
        for (status, slots) in &by {
            if *status == Status::Merged {
                continue;
            }
            for s in slots {
                let mut line = format!("  {:<12} {:<17}", s.st.id, status.as_str());
                if let Some(r) = &s.st.reason {
                    line.push_str(&format!(" {}", crate::util::one_line(r)));
                } else if *status == Status::Pending {
                    let waiting: Vec<&str> = s
                        .cfg
                        .depends_on
                        .iter()
                        .filter(|d| !self.merged(d))
                        .map(String::as_str)
                        .collect();
                    if !waiting.is_empty() {
                        line.push_str(&format!(" waiting for {}", waiting.join(", ")));
                    }
                }
                out.push_str(&line);
                out.push('\n');
                if matches!(
                    status,
                    Status::Failed | Status::Interrupted | Status::Conflicted | Status::Retrying
                ) && s.st.attempt > 0
                {
                    out.push_str(&format!(
                        "  {:<12} logs: {}\n",
                        "",
                        logs.join(&s.st.id).display()
                    ));
                }
            }
        }
        if let Some(a) = &self.auth_failed {
            out.push_str(&format!("paused: {a}\n"));
        } else if self.interrupting {
            out.push_str("interrupted: resume with `loki run`\n");
        } else if self.swarm.paused {
            out.push_str("the swarm is paused: `loki resume`, then `loki run`\n");
        }
        if by.contains_key(&Status::AwaitingApproval) {
            out.push_str("review with `loki show <id>`, then `loki approve <id>` or `loki reject <id> --note \"...\"`\n");
        }
        out
    }
}

/// Who approved, when the signal names nobody: the user running the command.
pub fn default_approver() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "a reviewer".into())
}

/// Streams a signal can reach, for messages.
pub fn known_ids(cfg: &SwarmFile) -> BTreeSet<String> {
    cfg.streams.iter().map(|s| s.id.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_errors_are_classified_by_status_then_text() {
        use ApiTrouble::*;
        let c = api_error_class;
        assert_eq!(
            c(Some(401), "Invalid API key · Fix external API key"),
            Some(Auth)
        );
        assert_eq!(c(Some(403), ""), Some(Auth));
        assert_eq!(c(Some(429), ""), Some(RateLimit));
        assert_eq!(c(Some(529), ""), Some(RateLimit));
        assert_eq!(c(None, "Invalid API key · Please run /login"), Some(Auth));
        assert_eq!(
            c(
                None,
                "API Error: Request rejected (429) · rate limit (mock)"
            ),
            Some(RateLimit)
        );
        assert_eq!(c(None, "API Error: 529 Overloaded"), Some(RateLimit));
        assert_eq!(c(None, "Reached max turns (12)"), None);
        assert_eq!(c(None, "the guest in room 401 left at 4290"), None);
        assert_eq!(c(Some(500), "API Error: 500 internal"), None);
    }
}
