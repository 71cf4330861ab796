//! The supervisor: the loop that owns the in-memory state of every stream
//! while a run lasts.
//!
//! Workers (agent tasks, the signal watcher, the merge worker, blocking git
//! and check work, timers, OS signals) send it [`Msg`]s over one channel.
//! For each message the loop feeds an input to the pure state machine
//! ([`machine`]), which decides; writes the resulting step through the one
//! transaction door ([`door`]: compare-and-swap of the state file, then its
//! events); tells the UI; and only then carries out the step's effects
//! (start a worker, stop an agent, queue a merge). The steering commands
//! run with no supervisor (`commands/steer.rs`, `commands/clean.rs`) go
//! through the same machine and door. This is nextest's runner split
//! (a synchronous decision, then an executor) applied to agents.
//!
//! Decisions written down here:
//! - A new `loki run` runs failed and blocked streams again with a fresh
//!   allowance of `max_attempts` (earlier attempts stay in the record), as
//!   does `loki retry`, but only when something a failed stream reads has
//!   changed since it failed (its prompt template, an input on the target,
//!   its entry in loki.toml; `--retry-failed` skips that test): otherwise
//!   it is left alone and the summary says so. A rerun first merges the
//!   target into the stream's branch (`git::refresh_stream`), so a fix
//!   committed on the target is what the agent sees. A stream that was between attempts (retrying,
//!   interrupted) keeps the allowance it had, so stopping and restarting a
//!   night never buys attempts. Conflicted streams try their merge again;
//!   cancelled ones stay cancelled until `loki retry`.
//! - A signal's `expected_version` is stale when the stream has changed
//!   status since that version (bookkeeping writes such as the agent's pid do
//!   not make an agent's own signal stale).
//! - The run ends when nothing is running and nothing more can start;
//!   streams awaiting approval are listed with the command that merges them.
//!   With `--wait` it stays up until every stream is merged or cancelled
//!   (a failed, blocked or conflicted stream waits for `loki retry`), and
//!   ends early only for a stop request, an authentication failure or the
//!   swarm budget: those need a person at the keyboard anyway.
//! - A manual PAUSE keeps the supervisor waiting for RESUME; an
//!   authentication failure pauses the swarm and ends the run, and the next
//!   `loki run` resumes it.

pub mod attempt;

pub mod door;
mod fanout;
mod lifecycle;
pub mod machine;
mod merges;
mod os_signals;
mod recover;
mod rehearsal;
mod remote;
mod schedule;
mod steering;
mod summary;
mod usage;
mod validate;
pub use remote::lapsed_at;
pub use validate::VALIDATION_FILE;

use merges::merge_worker;
use os_signals::spawn_os_signals;
use rehearsal::rehearsal_setup;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio::sync::{mpsc, watch};

use crate::agent::{self, AgentEvent, AgentOutcome, Ending, StopRequest};
use crate::checks::Level;
use crate::config::{StreamConfig, SwarmFile};
use crate::error::Error;
use crate::git::{self, MergeOutcome};
use crate::model::{Event, Status, StreamState, SwarmState};
use crate::model::{Kind, Layout, Outcome};
use crate::process::{self, Spawner};
use crate::signal_files::{self, Signal, SignalDir, Taken};
use crate::store::{StateStore, SupervisorLock};
use crate::ui::{self, Ui, UiEvent};
use crate::util::now_rfc3339;
use attempt::{FinishInput, Finished, PrepareInput, Prepared};
use machine::{AgentStop, Ctx, Effect, Input, MergeResult, Refusal, Steer, Step, SwarmInput};

/// How often an agent's latest words are written to its state at most.
const ACTIVITY_EVERY: Duration = Duration::from_secs(2);

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
    /// `--wait`: stay up until every stream is merged or cancelled, acting
    /// on approvals, rejections, retries and cancels as they arrive.
    pub wait: bool,
    /// `--retry-failed`: run failed streams again even when nothing they
    /// read has changed since they failed.
    pub retry_failed: bool,
    /// `--remote`: the git remote shared with other supervisors (else
    /// `[swarm] remote`).
    pub remote: Option<String>,
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
    /// A check command or a validator of the attempt started (its group,
    /// to record).
    Process {
        id: String,
        attempt: u32,
        rec: crate::model::ProcessRecord,
        role: machine::Role,
    },
    /// A validator of the attempt ended (`halt`: it was stopped or a
    /// limit ended it, and it has no verdict).
    ValidatorDone {
        id: String,
        attempt: u32,
        result: Box<crate::checks::verdict::ValidatorResult>,
        halt: Option<validate::Halt>,
    },
    /// A validator's claude reported where the usage window stands.
    ValidatorUsage {
        id: String,
        limit: crate::agent::api::UsageLimit,
    },
    Signal(Taken),
    /// The remote worker's news (`remote.rs`).
    Remote(remote::RemoteMsg),
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

struct Slot {
    cfg: StreamConfig,
    st: StreamState,
    /// Version at the last status change: signals naming an older version are stale.
    transition_version: u64,
    stop: Option<watch::Sender<Option<StopRequest>>>,
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
    /// The agent's latest words not yet written, and when they last were:
    /// written at most every [`ACTIVITY_EVERY`], and when the agent ends.
    activity: Option<String>,
    activity_written: Option<Instant>,
    /// The conflict a resolver attempt is working on (from its preparation).
    resolution: Option<git::Resolution>,
}

impl Slot {
    fn new(cfg: StreamConfig, st: StreamState) -> Slot {
        Slot {
            transition_version: st.version,
            cfg,
            st,
            stop: None,
            fail_note: None,
            held: false,
            turns: 0,
            attempt_cost: 0.0,
            result_error: None,
            api_trouble: None,
            agent_label: String::new(),
            resumed: false,
            activity: None,
            activity_written: None,
            resolution: None,
        }
    }
}

struct MergeJob {
    id: String,
    attempt: u32,
    /// Commit a person's edits in the worktree first (`Effect::QueueMerge`).
    with_edits: bool,
    subject: String,
    trailers: Vec<(String, String)>,
}

/// The dispatcher's whole world.
/// See [`Dispatcher::prepare_gate`]: two, so one preparation's prompt and
/// files are written while another's worktree is made.
const PREPARES_AT_ONCE: usize = 2;

struct Dispatcher {
    cfg: SwarmFile,
    layout: Layout,
    store: StateStore,
    signals: SignalDir,
    target: String,
    /// Shared, so a pass over it (every `schedule`) copies no id.
    order: Arc<[String]>,
    /// Who gets a free slot first ([`crate::plan::start_order`]).
    start_order: Arc<[String]>,
    slots: BTreeMap<String, Slot>,
    tx: mpsc::UnboundedSender<Msg>,
    spawner: Arc<Spawner>,
    /// Preparations that may hold a blocking thread at once. Their git
    /// work is serialized anyway (`git`'s worktrees lock), so more would
    /// only park threads on that lock: a start of 100 streams made 100
    /// threads, 3.5 MB of the supervisor's peak memory.
    prepare_gate: Arc<tokio::sync::Semaphore>,
    merge_tx: mpsc::UnboundedSender<MergeJob>,
    ui: Ui,
    swarm: SwarmState,
    rehearse: bool,
    stand_in: bool,
    stand_in_delay_ms: u64,
    /// `loki run --wait` (see [`RunOptions::wait`]).
    wait: bool,
    /// See [`RunOptions::retry_failed`].
    retry_failed: bool,
    /// Failed (and blocked) streams this run left alone: nothing they read
    /// changed since they failed (`recover.rs`).
    left_alone: BTreeSet<String>,
    /// What the run last said it waits for a person for (said again only
    /// when it changes).
    waiting_note: Option<String>,
    /// Ctrl-C once / STOP: start nothing new.
    draining: bool,
    /// Ctrl-C twice / SIGTERM: agents are being stopped.
    interrupting: bool,
    auth_failed: Option<String>,
    /// A usage window the run sits out (`usage.rs`).
    usage_wait: Option<usage::UsageWait>,
    /// A usage window further off than `max_wait`: the run ends, and why.
    usage_ended: Option<String>,
    /// When the last attempt started, and the stream while its agent is
    /// still coming up (no output yet, not exited): only then does the
    /// next start wait for `spawn_interval` (see `schedule.rs`).
    last_start: Option<(Instant, Option<String>)>,
    /// When the pacing (`spawn_interval`) lets the next waiting stream
    /// start: set only when a start was held back by it alone, so a full
    /// set of slots never wakes the loop (that was a busy loop).
    pace_wake: Option<Instant>,
    backoff_until: Option<Instant>,
    limit: usize,
    /// Streams the merge worker has been handed and not yet answered for.
    merge_queued: BTreeSet<String>,
    /// Merges waiting for the user's checkout, retried at this time.
    merge_retry: BTreeMap<String, Instant>,
    budget_noted: bool,
    notes: VecDeque<String>,
    /// Worktree removals after merges, awaited before exit.
    cleanups: Vec<tokio::task::JoinHandle<()>>,
    /// Deferred templates whose instances are not made yet (`fanout.rs`).
    waiting_templates: Vec<crate::config::Template>,
    /// Templates whose fan-out could not be made, and why.
    failed_templates: BTreeMap<String, String>,
    /// Template id → its instances, for every template expanded.
    groups: BTreeMap<String, Vec<String>>,
    /// States of instances of waiting templates, from earlier runs.
    parked: BTreeMap<String, StreamState>,
    /// Streams whose validation the machine asked for, not yet begun
    /// (begun by `schedule`).
    validate_next: Vec<String>,
    /// Validations under way, by stream (`validate.rs`).
    validations: BTreeMap<String, validate::Validation>,
    /// Validators waiting for room.
    validator_queue: VecDeque<validate::ValidatorJob>,
    validators_running: usize,
    /// The swarm is shared through a git remote (`remote.rs`).
    remote: Option<remote::RemoteSide>,
}

/// `loki run`: runs the swarm to its end and returns the process exit code.
pub async fn run(opts: RunOptions) -> Result<i32> {
    // Validation comes first: a refused swarm file creates nothing.
    let cfg = crate::config::load(&opts.config).map_err(anyhow::Error::new)?;
    let root = git::repo_root(&cfg.root)?;
    let target_branch = match &cfg.swarm.target {
        Some(t) => t.clone(),
        None => git::current_branch(&root)?.ok_or_else(|| {
            Error::config("the main worktree is on a detached HEAD and loki.toml names no target")
                .hint("set `target = \"main\"` in [swarm]")
        })?,
    };
    if git::branch_head(&root, &target_branch).is_err() {
        let place = match cfg.swarm.target_at {
            Some((line, col)) => format!("{}:{line}:{col}: ", cfg.path.display()),
            None => String::new(),
        };
        return Err(Error::config(format!(
            "{place}the target branch `{target_branch}` does not exist"
        ))
        .hint(format!(
            "create it (git branch {target_branch}) or set `target` in [swarm] of {} to an existing branch",
            cfg.path.display()
        ))
        .into());
    }

    // The agent must be there before anything is created (a rehearsal and
    // the demo use the stand-in instead).
    if !opts.rehearse && !opts.stand_in {
        crate::config::check_agent_commands(&cfg, &root).map_err(anyhow::Error::new)?;
    }
    // A sandbox that cannot work is refused now, never skipped.
    if cfg
        .streams
        .iter()
        .any(|s| s.agent.sandbox == crate::config::Sandbox::Bwrap)
    {
        let probed = tokio::task::spawn_blocking(crate::agent::sandbox::probe)
            .await
            .map_err(|e| Error::internal(format!("probing bwrap: {e}")))?;
        if let Err((problem, help)) = probed {
            return Err(Error::environment(format!(
                "`sandbox = \"bwrap\"` is set but the sandbox cannot run: {problem}"
            ))
            .hint(help)
            .into());
        }
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
            return Err(Error::refusal(format!(
                "another loki supervisor{who} is already running this swarm in {}",
                root.display()
            ))
            .hint("watch it with `loki status`, or stop it with `loki signal STOP` before starting another")
            .into());
        }
    };
    // A steering command or `loki clean` applying a change directly right
    // now finishes before this run reads any state.
    drop(crate::store::SteerLock::acquire(&layout.state_dir())?);

    let (tx, mut rx) = mpsc::unbounded_channel::<Msg>();
    let remote_name = opts.remote.clone().or_else(|| cfg.swarm.remote.clone());
    if remote_name.is_some() && (opts.rehearse || opts.stand_in) {
        return Err(
            Error::refusal("a rehearsal or demo cannot share a swarm through a remote")
                .hint("leave out --remote (and `remote` in [swarm]) to rehearse")
                .into(),
        );
    }
    let remote = match remote_name {
        Some(name) => Some(remote::connect(&cfg, &root, &name, &target, tx.clone()).await?),
        None => None,
    };
    let (ui, ui_task) = ui::start(opts.ui);
    let spawner = Arc::new(Spawner::start()?);
    let (merge_tx, merge_rx) = mpsc::unbounded_channel::<MergeJob>();
    tokio::spawn(merge_worker(
        root.clone(),
        target.clone(),
        merge_rx,
        tx.clone(),
        remote.as_ref().map(|r| remote::RemoteMerger {
            name: r.name.clone(),
            me: r.me.clone(),
            book: r.book.clone(),
        }),
    ));
    spawn_os_signals(tx.clone());

    let mut d = Dispatcher {
        limit: cfg.swarm.max_parallel.max(1),
        order: crate::plan::topo_order(&cfg.streams)
            .unwrap_or_else(|_| cfg.streams.iter().map(|s| s.id.to_string()).collect())
            .into(),
        start_order: crate::plan::start_order_spread(
            &cfg.streams,
            remote.as_ref().map(|r| r.me.machine.as_str()),
        )
        .into(),
        cfg,
        signals: SignalDir::new(layout.signals_dir()),
        layout,
        store,
        target,
        slots: BTreeMap::new(),
        tx: tx.clone(),
        spawner,
        prepare_gate: Arc::new(tokio::sync::Semaphore::new(PREPARES_AT_ONCE)),
        merge_tx,
        ui,
        swarm: SwarmState::default(),
        rehearse: opts.rehearse,
        stand_in: opts.stand_in || opts.rehearse,
        stand_in_delay_ms: opts.stand_in_delay_ms,
        wait: opts.wait,
        retry_failed: opts.retry_failed,
        left_alone: BTreeSet::new(),
        waiting_note: None,
        draining: false,
        interrupting: false,
        auth_failed: None,
        usage_wait: None,
        usage_ended: None,
        last_start: None,
        pace_wake: None,
        backoff_until: None,
        merge_retry: BTreeMap::new(),
        merge_queued: BTreeSet::new(),
        budget_noted: false,
        notes: VecDeque::new(),
        cleanups: Vec::new(),
        waiting_templates: Vec::new(),
        failed_templates: BTreeMap::new(),
        groups: BTreeMap::new(),
        parked: BTreeMap::new(),
        validate_next: Vec::new(),
        validations: BTreeMap::new(),
        validator_queue: VecDeque::new(),
        validators_running: 0,
        remote,
    };
    d.waiting_templates = d
        .cfg
        .templates
        .iter()
        .filter(|t| t.deferred)
        .cloned()
        .collect();
    for s in &d.cfg.streams {
        if let Some(t) = &s.template {
            d.groups
                .entry(t.clone())
                .or_default()
                .push(s.id.to_string());
        }
    }
    d.recover().await?;
    d.resume_usage_wait();
    let order = d.order.clone();
    d.clear_leftover_locks(&order).await;
    d.replay_unhandled_signals().await;
    // Logged before this supervisor takes any signal: the next one replays
    // the files that end in this pid.
    d.event(
        "supervisor",
        None,
        &format!("started (pid {}), target {}", std::process::id(), d.target),
    );
    d.apply_waiting_signals().await;
    // Worktree registrations a killed supervisor left half-made or
    // orphaned, which git would list as prunable or fsck would flag.
    let root = d.layout.root.clone();
    match tokio::task::spawn_blocking(move || git::repair_registrations(&root, true)).await {
        Ok(Ok(repairs)) => d.notes.extend(
            repairs
                .iter()
                .map(|r| format!("removed the worktree registration {} ({})", r.name, r.why)),
        ),
        Ok(Err(e)) => d
            .notes
            .push_back(format!("could not repair worktree registrations: {e:#}")),
        Err(_) => {}
    }
    d.normalize().await?;
    d.remote_start().await;

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
    for (template, ids) in &d.groups {
        d.ui.send(UiEvent::Group {
            template: template.clone(),
            ids: ids.clone(),
            added: false,
        });
    }
    let order = d.order.clone();
    d.show_states(&order);
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
        if d.wait {
            d.note_waiting();
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
    d.remote_release().await;
    // Worktree removals after merges finish before the process exits.
    for h in std::mem::take(&mut d.cleanups) {
        let _ = h.await;
    }
    // The pool of merged worktrees is not left behind.
    let root = d.layout.root.clone();
    if let Ok(Err(e)) = tokio::task::spawn_blocking(move || git::empty_pool(&root)).await {
        d.notes
            .push_back(format!("could not remove the pooled worktrees: {e:#}"));
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

async fn sleep_until(when: Option<Instant>) {
    match when {
        Some(t) => tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await,
        None => std::future::pending::<()>().await,
    }
}

impl Dispatcher {
    // ----- the door --------------------------------------------------------

    /// The facts the machine needs about stream `id` right now.
    fn ctx(&self, slot: &Slot) -> Ctx {
        Ctx {
            now: now_rfc3339(),
            max_attempts: slot.cfg.agent.max_attempts,
            max_budget_usd: slot.cfg.agent.max_budget_usd,
            target: self.target.clone(),
            approver: default_approver(),
            supervised: true,
            max_resolve: self.cfg.merge.resolver_attempts(&slot.cfg.agent),
            validators: !slot.cfg.checks.validators.is_empty(),
        }
    }

    /// Tells the view where the streams `ids` stand when they did not
    /// get there in this run (start-up, an instance with earlier state).
    fn show_states(&self, ids: &[String]) {
        for id in ids {
            let Some(slot) = self.slots.get(id) else {
                continue;
            };
            if slot.st.status != Status::Pending {
                self.ui.send(UiEvent::Transition {
                    id: id.clone(),
                    attempt: slot.st.attempt,
                    from: slot.st.status,
                    to: slot.st.status,
                    reason: slot.st.reason.clone(),
                });
            }
        }
    }

    /// Feeds `input` to the machine for stream `id` and writes the step
    /// through the door. Returns the effects to carry out, or the refusal
    /// (nothing written).
    async fn step(&mut self, id: &str, input: Input) -> Result<Vec<Effect>, Refusal> {
        let Some(slot) = self.slots.get(id) else {
            return Err(Refusal::new(format!("unknown stream `{id}`")));
        };
        let step = machine::handle(&slot.st, input, &self.ctx(slot))?;
        Ok(self.commit(id, step).await)
    }

    /// [`Self::step`] for inputs whose refusal means "not any more" (a
    /// result that arrives after the stream moved on): ignored.
    async fn feed(&mut self, id: &str, input: Input) {
        if let Ok(effects) = self.step(id, input).await {
            self.perform(id, effects).await;
        }
    }

    /// Writes a step (compare-and-swap at the version the dispatcher holds,
    /// then its events), updates the view, and returns the step's effects.
    ///
    /// The dispatcher is the only writer while it runs (commands send it
    /// signals), so a conflict means someone wrote the file by hand: the
    /// dispatcher's view wins, at the version found, and a warning event
    /// says so. If the write cannot be made at all, the change is kept in
    /// memory, the user is told, and the next write carries it.
    async fn commit(&mut self, id: &str, step: Step) -> Vec<Effect> {
        let Some(slot) = self.slots.get(id) else {
            return Vec::new();
        };
        if !step.changes(&slot.st) && step.events.is_empty() {
            return step.effects;
        }
        let transition = step.transition();
        let mut expected = slot.st.version;
        let mut failure = String::new();
        let mut written = None;
        for _ in 0..5 {
            let store = self.store.clone();
            let s = step.clone();
            let res = tokio::task::spawn_blocking(move || {
                door::commit(&store, expected, &s, &now_rfc3339())
            })
            .await;
            match res {
                Ok(Ok(c)) => {
                    written = Some(c);
                    break;
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
        match written {
            Some(c) => {
                if let Some(e) = &c.event_error {
                    self.ui
                        .send(UiEvent::Note(format!("cannot append to events.jsonl: {e}")));
                }
                if let Some(slot) = self.slots.get_mut(id) {
                    slot.st = c.state;
                }
            }
            None => {
                self.ui.send(UiEvent::Note(format!(
                    "cannot write the state of {id}: {failure}; carrying on in memory"
                )));
                if let Some(slot) = self.slots.get_mut(id) {
                    let v = slot.st.version;
                    slot.st = step.state.clone();
                    slot.st.version = v;
                }
                // The history keeps what happened even though the state
                // file could not say it yet.
                let ts = now_rfc3339();
                for d in &step.events {
                    let v = self.slots.get(id).map_or(0, |s| s.st.version);
                    self.append(machine::event_of(id, d, v, &ts));
                }
            }
        }
        self.remote_note_state(id);
        if let Some((from, to)) = transition {
            if let Some(slot) = self.slots.get_mut(id) {
                slot.transition_version = slot.st.version;
                let reason = slot.st.reason.clone();
                let attempt = slot.st.attempt;
                self.ui.send(UiEvent::Transition {
                    id: id.to_string(),
                    attempt,
                    from,
                    to,
                    reason,
                });
            }
        }
        step.effects
    }

    /// Carries out what a written step asks for.
    async fn perform(&mut self, id: &str, effects: Vec<Effect>) {
        for e in effects {
            match e {
                Effect::QueueMerge { with_edits } => self.queue_merge(id, with_edits),
                Effect::RetryMergeLater => {
                    self.merge_retry
                        .insert(id.to_string(), Instant::now() + Duration::from_secs(2));
                }
                Effect::Cleanup => self.cleanup(id),
                Effect::Validate => {
                    if !self.validate_next.iter().any(|x| x == id) {
                        self.validate_next.push(id.to_string());
                    }
                }
                Effect::StopAgent(how) => {
                    if let Some(stop) = self.slots.get(id).and_then(|s| s.stop.clone()) {
                        let _ = stop.send(Some(match how {
                            AgentStop::Finish => StopRequest::Finish,
                            AgentStop::Cancel => StopRequest::Cancel,
                            AgentStop::Interrupt => StopRequest::Interrupt,
                        }));
                    }
                }
                Effect::FailAttempt(note) => {
                    if let Some(slot) = self.slots.get_mut(id) {
                        slot.fail_note = Some(note);
                    }
                }
                Effect::Hold | Effect::Release => {
                    if let Some(slot) = self.slots.get_mut(id) {
                        slot.held = e == Effect::Hold;
                    }
                }
                Effect::UnblockDependents => {
                    for dep in crate::plan::dependents_of(&self.cfg.streams, id) {
                        // Only blocked dependents move; the machine refuses others.
                        let _ = self.step(&dep, Input::Unblock).await;
                    }
                }
                Effect::Note(n) => self.ui.send(UiEvent::Note(n)),
            }
        }
    }

    fn append(&self, ev: Event) {
        // One short O_APPEND write; cheap enough to do in place.
        if let Err(e) = door::note(&self.store, &ev) {
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
            } => {
                let committed = result.is_ok();
                self.on_finished(id.clone(), attempt, result).await;
                // A passed attempt goes straight to its merge, which pushes
                // it: only work that waits is pushed now.
                let merging = self
                    .slots
                    .get(&id)
                    .is_some_and(|s| matches!(s.st.status, Status::Merging | Status::Merged));
                if committed && !merging {
                    self.remote_progress(&id);
                }
            }
            Msg::MergeDone { id, result } => self.on_merge_done(id, result).await,
            Msg::Process {
                id,
                attempt,
                rec,
                role,
            } => {
                if self.current(&id, attempt) {
                    self.feed(&id, Input::ProcessStarted { rec, role }).await;
                }
            }
            Msg::ValidatorDone {
                id,
                attempt,
                result,
                halt,
            } => self.on_validator_done(id, attempt, *result, halt).await,
            Msg::ValidatorUsage { id, limit } => {
                if self.slots.get(&id).map(|s| s.st.status) == Some(Status::Validating) {
                    self.usage_limit(&id, limit).await;
                }
            }
            Msg::Signal(t) => self.on_signal(t).await,
            Msg::Remote(m) => self.on_remote(m).await,
            Msg::Interrupt => {
                if self.draining {
                    self.interrupt("a second Ctrl-C").await;
                } else {
                    self.draining = true;
                    let running: Vec<String> = self
                        .slots
                        .values()
                        .filter(|s| s.st.status.is_active())
                        .map(|s| s.st.id.to_string())
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
}

/// Who approved, when the signal names nobody: the user running the command.
pub fn default_approver() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "a reviewer".into())
}

/// Streams a signal can reach, for messages.
pub fn known_ids(cfg: &SwarmFile) -> BTreeSet<String> {
    cfg.streams.iter().map(|s| s.id.to_string()).collect()
}
