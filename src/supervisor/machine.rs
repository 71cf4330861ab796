//! The state machine: the one place that decides how a stream's state
//! changes.
//!
//! [`handle`] takes a stream's state, an [`Input`] (an attempt starting or
//! ending, a check result, a merge result, a steering command, start-up
//! recovery, a dependency's fate) and a [`Ctx`] of the facts it may not
//! look up itself (the time, the stream's limits, whether a supervisor is
//! running), and returns a [`Step`]: the new state, the events to append
//! and the [`Effect`]s to carry out — or a [`Refusal`] saying why the input
//! does not apply. It does no I/O, reads no clock and spawns nothing, so
//! every transition is unit-tested below without a process or a
//! repository.
//!
//! The caller writes the step through the one transaction door
//! ([`super::door`]) and only then carries out its effects: the supervisor's
//! loop when one runs, the steering commands (`loki approve`, …) when none
//! does. Both go through this function, so the two paths cannot drift.
//! This is nextest's dispatcher shape (a synchronous `handle_event`
//! returning a `#[must_use]` response) and watchexec's supervisor `Job`.

use crate::git::MergeOutcome;
use crate::model::{
    AttemptRecord, Event, Kind, Outcome, ProcessRecord, Status, StreamState, SwarmState,
};
use crate::util::one_line;

/// The facts a decision may depend on that the state does not hold.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// The time to record (RFC 3339), handed in so decisions are pure.
    pub now: String,
    /// The stream's `max_attempts`.
    pub max_attempts: u32,
    /// The stream's `max_budget_usd`.
    pub max_budget_usd: Option<f64>,
    /// The branch merges go into (for messages).
    pub target: String,
    /// Who approves when an approval names nobody.
    pub approver: String,
    /// A supervisor runs this stream (false: a command applies directly, so
    /// nothing can stop or finish a running agent).
    pub supervised: bool,
    /// Resolver attempts a merge conflict of this stream gets (`[merge]`);
    /// 0 with no supervisor, which cannot run one.
    pub max_resolve: u32,
    /// The stream has validators (`[checks] validators`): an attempt whose
    /// checks pass is judged by them before it may merge.
    pub validators: bool,
}

/// A steering request: a signal file or a command.
#[derive(Debug, Clone, PartialEq)]
pub struct Steer {
    pub kind: Kind,
    pub note: Option<String>,
    /// REJECT counted against `max_attempts` (`loki reject --count`).
    pub count: bool,
}

/// What a merge attempt came to.
#[derive(Debug, Clone, PartialEq)]
pub enum MergeResult {
    Merged {
        commit: String,
    },
    AlreadyMerged,
    Conflict {
        paths: Vec<String>,
    },
    /// The user's uncommitted changes are in the way: the merge waits.
    UserChanges {
        root: String,
        paths: Vec<String>,
    },
    /// The shared remote cannot be reached: the merge waits.
    Unreachable(String),
    Failed(String),
}

impl MergeResult {
    /// The machine's view of what the git door answered (and the note that
    /// the user's checkout could not be brought up to date, if any).
    pub fn from_outcome(
        result: Result<MergeOutcome, String>,
        root: &std::path::Path,
    ) -> (MergeResult, Option<String>) {
        match result {
            Ok(MergeOutcome::Merged {
                commit,
                checkout_behind,
            }) => (MergeResult::Merged { commit }, checkout_behind),
            Ok(MergeOutcome::AlreadyMerged { checkout_behind }) => {
                (MergeResult::AlreadyMerged, checkout_behind)
            }
            Ok(MergeOutcome::Conflict { paths }) => (MergeResult::Conflict { paths }, None),
            // Git has no merge of loki's for it: the stream fails, uncredited.
            Ok(MergeOutcome::NotCredited { why }) => (MergeResult::Failed(why), None),
            Ok(MergeOutcome::Unreachable { why }) => (MergeResult::Unreachable(why), None),
            Ok(MergeOutcome::UserChanges { paths }) => (
                MergeResult::UserChanges {
                    root: root.display().to_string(),
                    paths,
                },
                None,
            ),
            Err(e) => (MergeResult::Failed(e), None),
        }
    }
}

/// Everything that can happen to a stream.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// A slot is free: attempt `n` starts preparing.
    Start { n: u32 },
    /// The worktree and prompt are ready; the agent is about to start.
    Prepared {
        worktree: String,
        base: String,
        agent: String,
    },
    /// Preparing succeeded but new starts were stopped meanwhile: the
    /// attempt ends unstarted (and uncounted); the stream resumes later.
    HeldBack { why: String },
    /// A process group of the attempt exists: the agent's, or a check
    /// command's. Recorded, so a later supervisor's sweep can end it.
    ProcessStarted { rec: ProcessRecord, role: Role },
    /// claude named its session.
    Session(String),
    /// The agent's latest words, for `loki status` (no event: views follow
    /// the agent live from the transcript and the UI).
    Activity(String),
    /// The attempt's record closes (cost and turns of this attempt).
    AttemptEnded {
        outcome: Outcome,
        exit: Option<i32>,
        reason: Option<String>,
        cost_usd: f64,
        turns: u32,
    },
    /// The agent was cut off (Ctrl-C, STOP, a refused key, a lost session):
    /// the stream waits, interrupted, to be resumed.
    Interrupted { why: String, forget_session: bool },
    /// The agent ended; its work is being committed and checked.
    Checking { why: Option<String> },
    /// The attempt's commit and check level.
    Checked {
        commit: Option<String>,
        level: Option<String>,
    },
    /// The attempt did not pass: another attempt with `feedback` while the
    /// allowance (and the stream budget) lasts, else failed.
    Unsuccessful { reason: String, feedback: String },
    /// The checks failed (the attempt's outcome becomes `check_failed`).
    ChecksFailed { summary: String, feedback: String },
    /// A rate limit ended the attempt: retried without counting it.
    RateLimited { why: String },
    /// Nothing another attempt could fix (a check that cannot run, a spent
    /// budget, a missing input): failed now.
    Fatal { reason: String },
    /// A resolver attempt did not resolve the conflict (its agent failed,
    /// a marker or a change outside the conflict is left, a check failed):
    /// the stream is conflicted, for a person.
    ResolveFailed { why: String },
    /// Every check passed (from `checking`), or the validators passed the
    /// attempt (from `validating`).
    Passed {
        summary: String,
        needs_approval: bool,
    },
    /// The validators of the attempt have all ended: their summary line
    /// (the `Loki-Validation` trailer), what they cost, and the attempt's
    /// commit, which now carries the trailer. A decision follows
    /// (`Passed`, `ChecksFailed`, `Fatal`).
    Validated {
        summary: String,
        cost_usd: f64,
        commit: Option<String>,
    },
    /// The validators were stopped (Ctrl-C, SIGTERM, STOP) before they all
    /// ended: the stream stays `validating`, and the next run (or `loki
    /// retry`) validates the same commit again.
    ValidationStopped,
    /// The merge worker's answer.
    Merge(MergeResult),
    /// Start-up: whatever was in flight when the last supervisor stopped
    /// becomes something this run resumes.
    Recover,
    /// Start-up: the state says merged, but the target's history has no
    /// merge of the stream (a forged or stale state file). Git is the truth:
    /// the stream is pending again.
    NotOnTarget,
    /// Another supervisor sharing the swarm's remote merged the stream
    /// (its done record names `commit`, which is in the remote target).
    MergedElsewhere { commit: String, by: String },
    /// This supervisor took the stream over from another one, whose last
    /// attempt was `attempt`: the next attempt is numbered after it and
    /// gets its `feedback` (the branch is the one it pushed).
    Adopt {
        attempt: u32,
        feedback: Option<String>,
        from: String,
    },
    /// A dependency can no longer merge.
    DependencyLost { dep: String, status: Status },
    /// A dependency is retried: a stream it blocked may run again.
    Unblock,
    /// A signal or a steering command.
    Steer(Steer),
}

/// Whose process group was started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Agent,
    Check,
    Validator,
}

/// What the caller does after the step is written.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Hand the stream to the merge worker (or, with no supervisor, merge now).
    /// `with_edits`: a person sent it there (approved it, or retried its
    /// conflict), so what they changed by hand in its worktree since the
    /// attempt's commit is committed and merged too; otherwise exactly the
    /// attempt's commit is merged, as its checks saw it, and the worktree is
    /// not walked again.
    QueueMerge { with_edits: bool },
    /// Try the merge again later (the user's checkout is in the way).
    RetryMergeLater,
    /// Remove the worktree and branch of a merged stream.
    Cleanup,
    /// Run the stream's validators on its attempt's commit.
    Validate,
    /// Ask the running agent to stop.
    StopAgent(AgentStop),
    /// TESTS_FAILED while running: the attempt fails with this note.
    FailAttempt(String),
    /// STOP_<id>: do not restart the stream in this run.
    Hold,
    /// RETRY: a held stream may start again.
    Release,
    /// Blocked dependents of this stream get another chance.
    UnblockDependents,
    /// Tell the user (not an event: the view's business).
    Note(String),
}

/// How a running agent is asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentStop {
    /// Its work is done (FEATURE_READY, MERGE_REQUESTED, TESTS_FAILED): end
    /// it gracefully and check.
    Finish,
    Cancel,
    Interrupt,
}

/// An event to append, without the version (the door fills it in once the
/// state is written).
#[derive(Debug, Clone, PartialEq)]
pub struct EventDraft {
    pub kind: &'static str,
    pub from: Option<Status>,
    pub to: Option<Status>,
    pub message: String,
}

/// The answer to one input. Must be written (door) and carried out; only
/// [`handle`] makes one.
#[must_use]
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub state: StreamState,
    pub events: Vec<EventDraft>,
    pub effects: Vec<Effect>,
}

impl Step {
    /// The status change this step makes, if any.
    pub fn transition(&self) -> Option<(Status, Status)> {
        self.events
            .iter()
            .find(|e| e.kind == "transition")
            .and_then(|e| Some((e.from?, e.to?)))
    }

    /// Whether anything in the stored state changes.
    pub fn changes(&self, before: &StreamState) -> bool {
        &self.state != before
    }
}

/// Why an input does not apply to the stream as it is, and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub why: String,
    pub hint: Option<String>,
}

impl Refusal {
    pub fn new(why: impl Into<String>) -> Refusal {
        Refusal {
            why: why.into(),
            hint: None,
        }
    }

    fn hint(mut self, hint: impl Into<String>) -> Refusal {
        self.hint = Some(hint.into());
        self
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.why)
    }
}

impl From<Refusal> for crate::error::Error {
    fn from(r: Refusal) -> Self {
        let e = crate::error::Error::refusal(r.why);
        match r.hint {
            Some(h) => e.hint(h),
            None => e,
        }
    }
}

/// A step being built: the state so far plus what the caller must do.
struct Builder<'a> {
    st: StreamState,
    events: Vec<EventDraft>,
    effects: Vec<Effect>,
    ctx: &'a Ctx,
}

impl<'a> Builder<'a> {
    fn new(st: &StreamState, ctx: &'a Ctx) -> Self {
        Builder {
            st: st.clone(),
            events: Vec::new(),
            effects: Vec::new(),
            ctx,
        }
    }

    /// A status change: the reason replaces the old one; a terminal status
    /// records when the stream finished.
    fn go(&mut self, to: Status, reason: Option<String>) -> &mut Self {
        let from = self.st.status;
        self.st.status = to;
        self.st.reason = reason.clone();
        if to.is_terminal() {
            self.st.finished_at = Some(self.ctx.now.clone());
        }
        self.events.push(EventDraft {
            kind: "transition",
            from: Some(from),
            to: Some(to),
            message: reason.unwrap_or_default(),
        });
        self
    }

    fn event(&mut self, kind: &'static str, message: String) -> &mut Self {
        self.events.push(EventDraft {
            kind,
            from: None,
            to: None,
            message,
        });
        self
    }

    fn effect(&mut self, e: Effect) -> &mut Self {
        self.effects.push(e);
        self
    }

    fn last_attempt(&mut self) -> Option<&mut AttemptRecord> {
        self.st.attempts.last_mut()
    }

    /// Another attempt while the allowance and the budget last, else failed.
    fn retry_or_fail(&mut self, reason: String, feedback: String) -> &mut Self {
        if let Some(b) = self.ctx.max_budget_usd {
            if self.st.cost_usd >= b {
                let why = format!(
                    "{reason}; stream budget reached (${:.2} of ${b:.2}), so no further attempt (raise max_budget_usd to go on)",
                    self.st.cost_usd
                );
                return self.go(Status::Failed, Some(why));
            }
        }
        let max = self.ctx.max_attempts;
        let used = self.st.used_attempts();
        if used < max {
            self.go(
                Status::Retrying,
                Some(format!("{reason} ({} attempt(s) left)", max - used)),
            );
            let n = self.st.attempt;
            self.st.add_feedback(n, &feedback);
            self
        } else {
            self.go(
                Status::Failed,
                Some(format!("{reason} (after {max} attempt(s))")),
            )
        }
    }

    fn done(self) -> Step {
        Step {
            state: self.st,
            events: self.events,
            effects: self.effects,
        }
    }
}

/// Decides what `input` does to the stream in state `st`.
pub fn handle(st: &StreamState, input: Input, ctx: &Ctx) -> Result<Step, Refusal> {
    use Status::*;
    let mut b = Builder::new(st, ctx);
    let s = st.status;
    let wrong = |what: &str| Refusal::new(format!("stream {} is {s}, {what}", st.id));
    match input {
        Input::Start { n } => {
            if !matches!(s, Pending | Ready | Retrying | Interrupted) {
                return Err(wrong("not waiting to start"));
            }
            b.go(Preparing, None);
            b.st.attempt = n;
            let resolver = b.st.resolving();
            // An approval of an earlier attempt's draft is not one of this
            // one; a resolver's attempt only merges what was approved.
            if !resolver {
                b.st.approved_by = None;
            } else {
                b.st.resolve_attempts += 1;
            }
            if b.st.started_at.is_none() {
                b.st.started_at = Some(ctx.now.clone());
            }
            b.st.finished_at = None;
            b.st.attempts.push(AttemptRecord {
                n,
                started_at: ctx.now.clone(),
                // A resolver's attempt counts against max_resolve_attempts.
                counted: !resolver,
                ..Default::default()
            });
        }
        Input::Prepared {
            worktree,
            base,
            agent,
        } => {
            if s != Preparing {
                return Err(wrong("not preparing"));
            }
            b.go(Running, None);
            b.st.worktree = Some(worktree);
            if b.st.base_commit.is_none() {
                b.st.base_commit = Some(base);
            }
            b.st.agent = Some(agent);
            b.st.last_message = None;
        }
        Input::HeldBack { why } => {
            if s != Preparing {
                return Err(wrong("not preparing"));
            }
            close_attempt(&mut b, Outcome::NotStarted, None, None, 0.0, 0);
            b.go(Interrupted, Some(why));
            if let Some(a) = b.last_attempt() {
                a.counted = false;
            }
        }
        Input::ProcessStarted { rec, role } => {
            match role {
                Role::Agent => b.st.process = Some(rec),
                // Several may run at once: each is kept until they end (a
                // check command's is also the stream's `process`, as it was
                // before named commands ran side by side).
                Role::Check => {
                    b.st.process = Some(rec);
                    b.st.helpers.push(rec);
                }
                Role::Validator => b.st.helpers.push(rec),
            }
            let (kind, what) = match role {
                Role::Agent => ("agent", "attempt"),
                Role::Check => ("process", "the check command of attempt"),
                Role::Validator => ("validator", "a validator of attempt"),
            };
            b.event(
                kind,
                format!(
                    "{what} {} started: pid {} (group {})",
                    st.attempt, rec.pid, rec.pgid
                ),
            );
        }
        Input::Session(sid) => {
            b.st.session_id = Some(sid.clone());
            if let Some(a) = b.last_attempt() {
                a.session_id = Some(sid);
            }
        }
        Input::Activity(text) => b.st.last_message = Some(text),
        Input::AttemptEnded {
            outcome,
            exit,
            reason,
            cost_usd,
            turns,
        } => close_attempt(&mut b, outcome, exit, reason, cost_usd, turns),
        Input::Interrupted {
            why,
            forget_session,
        } => {
            if !matches!(s, Running | Preparing) {
                return Err(wrong("not running"));
            }
            b.go(Interrupted, Some(why));
            if forget_session {
                b.st.session_id = None;
            }
        }
        Input::Checking { why } => {
            if s != Running {
                return Err(wrong("not running"));
            }
            b.go(Checking, why);
        }
        Input::Checked { commit, level } => {
            // The check commands, if any, have ended and been reaped.
            b.st.process = None;
            b.st.helpers.clear();
            if let Some(a) = b.last_attempt() {
                a.commit = commit;
                a.checks = level;
            }
        }
        Input::Unsuccessful { reason, feedback } => {
            // Preparing failed, or the agent or the work after it did.
            if !matches!(s, Preparing | Checking) {
                return Err(wrong("not preparing or checking"));
            }
            b.retry_or_fail(reason, feedback);
        }
        Input::RateLimited { .. } if s != Checking => {
            return Err(wrong("not checking"));
        }
        Input::ChecksFailed { .. } | Input::Passed { .. }
            if !matches!(s, Checking | Validating) =>
        {
            return Err(wrong("not checking or validating"));
        }
        Input::Validated { .. } | Input::ValidationStopped if s != Validating => {
            return Err(wrong("not validating"));
        }
        Input::Fatal { .. }
            if !matches!(
                s,
                Pending
                    | Ready
                    | Retrying
                    | Interrupted
                    | Preparing
                    | Running
                    | Checking
                    | Validating
            ) =>
        {
            return Err(wrong("not starting, running, checking or validating"));
        }
        Input::ChecksFailed { summary, feedback } => {
            let outcome = match s {
                Validating => Outcome::ValidationFailed,
                _ => Outcome::CheckFailed,
            };
            if let Some(a) = b.last_attempt() {
                a.outcome = outcome.as_str().into();
            }
            b.retry_or_fail(summary, feedback);
        }
        Input::Validated {
            summary,
            cost_usd,
            commit,
        } => {
            b.st.helpers.clear();
            b.st.cost_usd += cost_usd;
            if let Some(a) = b.last_attempt() {
                a.validation = Some(summary.clone());
                a.validation_cost_usd += cost_usd;
                a.cost_usd += cost_usd;
                if commit.is_some() {
                    a.commit = commit;
                }
            }
            b.event("validation", summary);
        }
        Input::ValidationStopped => {
            b.st.helpers.clear();
            b.event(
                "validation",
                "the validators were stopped; the same commit is validated again by the next \
                 run or `loki retry`"
                    .to_string(),
            );
        }
        // What earlier attempts did wrong still holds: the limited one
        // added nothing.
        Input::RateLimited { why } => {
            b.go(Retrying, Some(why));
        }
        Input::Fatal { reason } => {
            b.go(Failed, Some(reason));
        }
        Input::ResolveFailed { why } => {
            if !matches!(s, Preparing | Running | Checking) || !st.resolving() {
                return Err(wrong("not resolving a conflict"));
            }
            b.st.resolve_paths.clear();
            b.go(Conflicted, Some(why));
        }
        Input::Passed {
            summary,
            needs_approval,
        } => {
            if s == Checking && b.ctx.validators && !st.resolving() {
                b.go(Validating, Some(format!("{summary}; validating")));
                b.effect(Effect::Validate);
                return Ok(b.done());
            }
            if needs_approval && !st.resolving() {
                b.go(
                    AwaitingApproval,
                    Some(format!("{summary}; approve with `loki approve {}`", st.id)),
                );
            } else {
                b.go(Merging, None);
                b.effect(Effect::QueueMerge { with_edits: false });
            }
            b.st.feedback = None;
            b.st.feedback_log.clear();
            b.st.resolve_paths.clear();
        }
        Input::Merge(result) => {
            if s != Merging {
                return Err(wrong("not merging"));
            }
            merge_result(&mut b, result);
        }
        Input::Recover => recover(&mut b),
        Input::NotOnTarget => {
            if s != Merged {
                return Err(wrong("not merged"));
            }
            let target = b.ctx.target.clone();
            let why = format!(
                "its state said merged, but {target} has no `Merge stream {}` commit: corrected from git, it runs again",
                st.id
            );
            b.go(Pending, Some(why.clone()));
            b.st.merge_commit = None;
            b.st.finished_at = None;
            b.st.renew_allowance();
            b.effect(Effect::Note(format!("{}: {why}", st.id)));
        }
        Input::MergedElsewhere { commit, by } => {
            if s == Merged || (s.is_active() && s != Merging) {
                return Err(wrong("merged, or in this supervisor's hands"));
            }
            let target = b.ctx.target.clone();
            b.go(Merged, Some(format!("merged into {target} by {by}")));
            b.st.merge_commit = Some(commit.clone());
            b.st.process = None;
            b.st.finished_at = Some(ctx.now.clone());
            b.event("merge", format!("merged into {target} as {commit} by {by}"));
            if b.st.attempt > 0 || b.st.worktree.is_some() {
                b.effect(Effect::Cleanup);
            }
        }
        Input::Adopt {
            attempt,
            feedback,
            from,
        } => {
            if !matches!(s, Pending | Retrying | Interrupted) {
                return Err(wrong("not waiting to start"));
            }
            if attempt > b.st.attempt {
                b.st.attempt = attempt;
            }
            if let Some(f) = feedback.filter(|f| !f.trim().is_empty()) {
                if b.st.feedback.is_none() {
                    b.st.feedback = Some(f);
                }
            }
            b.event(
                "remote",
                format!("taken over from {from} after its attempt {attempt}: going on from the branch it pushed"),
            );
        }
        Input::DependencyLost { dep, status } => {
            if s != Pending {
                return Err(wrong("not pending"));
            }
            b.go(Blocked, Some(format!("dependency {dep} is {status}")));
        }
        Input::Unblock => {
            if s != Blocked {
                return Err(wrong("not blocked"));
            }
            b.go(Pending, None);
        }
        Input::Steer(req) => steer(&mut b, req)?,
    }
    Ok(b.done())
}

/// Closes the current attempt's record: its cost joins the stream's, and
/// an outcome that does not count leaves the allowance untouched.
fn close_attempt(
    b: &mut Builder<'_>,
    outcome: Outcome,
    exit: Option<i32>,
    reason: Option<String>,
    cost_usd: f64,
    turns: u32,
) {
    let now = b.ctx.now.clone();
    b.st.process = None;
    if b.st.attempts.last().is_some_and(|a| a.ended_at.is_none()) {
        b.st.cost_usd += cost_usd;
    }
    if let Some(a) = b.st.attempts.last_mut() {
        if a.ended_at.is_none() {
            a.ended_at = Some(now);
            a.cost_usd = cost_usd;
            a.turns = turns;
        }
        a.outcome = outcome.as_str().into();
        a.exit_code = exit;
        a.reason = reason;
        if !outcome.counts() {
            a.counted = false;
        }
    }
}

/// How the reason of a merge that waits for the user's checkout begins.
const MERGE_WAIT: &str = "waiting to merge";

fn merge_result(b: &mut Builder<'_>, result: MergeResult) {
    let id = b.st.id.to_string();
    let target = b.ctx.target.clone();
    match result {
        MergeResult::Merged { commit } => {
            b.go(Status::Merged, None);
            b.st.resolve_attempts = 0;
            b.st.merge_commit = Some(commit.clone());
            b.st.process = None;
            b.event("merge", format!("merged into {target} as {commit}"));
            b.effect(Effect::Cleanup);
        }
        MergeResult::AlreadyMerged => {
            b.go(Status::Merged, Some("already merged".into()));
            b.effect(Effect::Cleanup);
        }
        MergeResult::Conflict { paths } if b.st.resolve_attempts < b.ctx.max_resolve => {
            let why = format!(
                "merge conflict in {}: a resolver attempt merges {target} into loki/{id} and resolves it",
                paths.join(", "),
            );
            b.go(Status::Retrying, Some(why));
            b.st.resolve_paths = paths;
        }
        MergeResult::Conflict { paths } => {
            let why = format!(
                "merge conflict in {}: resolve it in .loki/worktrees/{id} (merge {target} into loki/{id} and commit), then `loki retry {id}`",
                paths.join(", "),
            );
            b.go(Status::Conflicted, Some(why));
        }
        MergeResult::UserChanges { root, paths } => {
            let why = format!(
                "{MERGE_WAIT}: your uncommitted changes in {root} touch {}; commit or stash them and the merge goes on",
                paths.join(", ")
            );
            if b.st.reason.as_deref() != Some(why.as_str()) {
                b.st.reason = Some(why.clone());
                b.event("merge_wait", why.clone());
                b.effect(Effect::Note(format!("{id}: {why}")));
            }
            b.effect(Effect::RetryMergeLater);
        }
        MergeResult::Unreachable(e) => {
            let why = format!("{MERGE_WAIT}: the remote cannot be reached ({e})");
            if b.st.reason.as_deref() != Some(why.as_str()) {
                b.st.reason = Some(why.clone());
                b.event("merge_wait", why);
            }
            b.effect(Effect::RetryMergeLater);
        }
        MergeResult::Failed(e) => {
            b.go(Status::Failed, Some(format!("merge failed: {e}")));
        }
    }
}

fn recover(b: &mut Builder<'_>) {
    use Status::*;
    let now = b.ctx.now.clone();
    // Leftover agents were swept before recovery: no record stays.
    b.st.process = None;
    b.st.helpers.clear();
    match b.st.status {
        // The commit is made and its checks passed: only the judging is
        // done again.
        Validating => {
            b.event(
                "validation",
                "the previous supervisor stopped during validation: validating again".to_string(),
            );
            b.effect(Effect::Validate);
        }
        Preparing | Running | Checking => {
            let started = b.st.status != Preparing;
            b.go(
                Interrupted,
                Some("the previous supervisor stopped during this attempt".into()),
            );
            b.st.process = None;
            if let Some(a) = b.st.attempts.last_mut() {
                if a.ended_at.is_none() {
                    a.ended_at = Some(now);
                    // An attempt whose agent never started left no work to salvage.
                    a.outcome = if started {
                        Outcome::Interrupted
                    } else {
                        Outcome::NotStarted
                    }
                    .as_str()
                    .into();
                    a.counted = false;
                }
            }
        }
        Ready => {
            b.go(Pending, None);
        }
        Failed | Blocked => {
            b.go(Pending, Some("running again".into()));
            b.st.process = None;
            b.st.renew_allowance();
        }
        // A merge in flight is queued again (the merge is idempotent: an
        // already merged branch is found so); only a conflicted stream
        // changes status. A wait for the user's checkout is forgotten, so
        // this run says it again if it still holds.
        Merging => {
            if b.st
                .reason
                .as_deref()
                .is_some_and(|r| r.starts_with(MERGE_WAIT))
            {
                b.st.reason = None;
            }
            b.effect(Effect::QueueMerge {
                with_edits: b.st.approved_by.is_some(),
            });
        }
        // A new run gives a conflict its resolver attempts again.
        Conflicted => {
            b.go(Merging, None);
            b.st.resolve_attempts = 0;
            b.effect(Effect::QueueMerge {
                with_edits: b.st.approved_by.is_some(),
            });
        }
        Merged => {
            b.effect(Effect::Cleanup);
        }
        _ => {}
    }
}

/// What a signal or command does, by kind and status.
fn steer(b: &mut Builder<'_>, req: Steer) -> Result<(), Refusal> {
    use Status::*;
    let s = b.st.status;
    let id = b.st.id.to_string();
    let kind = req.kind;
    let no = |what: &str| {
        Err(
            Refusal::new(format!("{}: stream {id} is {s}, {what}", kind.as_str()))
                .hint("`loki status` shows where every stream is"),
        )
    };
    let not_supervised = || {
        Err(Refusal::new(format!(
            "{}: stream {id} is recorded as {s} but no supervisor is running",
            kind.as_str()
        ))
        .hint("`loki run` resumes it"))
    };
    let note = req.note.clone();
    let approver = || note.clone().unwrap_or_else(|| b.ctx.approver.clone());
    match kind {
        Kind::Approve | Kind::MergeRequested if s == AwaitingApproval => {
            let who = approver();
            b.go(Merging, Some(format!("approved by {who}")));
            b.st.approved_by = Some(who);
            b.effect(Effect::QueueMerge { with_edits: true });
        }
        Kind::MergeRequested | Kind::FeatureReady if s == Running => {
            if !b.ctx.supervised {
                return not_supervised();
            }
            // The agent may say it is done; only a person approves (an
            // agent can write this signal, so it never passes `approve`).
            b.effect(Effect::StopAgent(AgentStop::Finish));
        }
        Kind::Approve => return no("not awaiting approval"),
        Kind::Reject if s != AwaitingApproval => return no("not awaiting approval"),
        Kind::MergeRequested => return no("neither running nor awaiting approval"),
        Kind::FeatureReady => return no("not running"),
        Kind::TestsFailed if s == Running => {
            if !b.ctx.supervised {
                return not_supervised();
            }
            let n = note.unwrap_or_else(|| "the tests failed".into());
            b.st.tests = Some(format!("failed: {n}"));
            b.effect(Effect::FailAttempt(n));
            b.effect(Effect::StopAgent(AgentStop::Finish));
        }
        Kind::TestsFailed if s != AwaitingApproval => {
            return no("neither running nor awaiting approval")
        }
        Kind::Reject | Kind::TestsFailed => {
            // Awaiting approval: the draft goes back to the agent.
            let fb = note.unwrap_or_else(|| "A reviewer rejected the draft without a note.".into());
            let tests_failed = kind == Kind::TestsFailed;
            if tests_failed {
                b.st.tests = Some(format!("failed: {fb}"));
            }
            if let Some(a) = b.last_attempt() {
                a.outcome = Outcome::Rejected.as_str().into();
            }
            let feedback = format!("- Reviewer: {fb}");
            let reason = format!("rejected: {}", one_line(&fb));
            if tests_failed || req.count {
                // Counted: like a failed check, it may use up the allowance.
                if let Some(a) = b.last_attempt() {
                    a.counted = true;
                }
                b.retry_or_fail(reason, feedback);
            } else {
                b.go(Retrying, Some(reason));
                let n = b.st.attempt;
                b.st.add_feedback(n, &feedback);
                if let Some(a) = b.last_attempt() {
                    a.counted = false;
                }
            }
        }
        Kind::TestsPassed => {
            b.st.tests = Some(match &note {
                Some(n) => format!("passed: {n}"),
                None => "passed".into(),
            });
        }
        Kind::Cancel => match s {
            Merged | Cancelled => return no("already finished"),
            Merging => return no("being merged"),
            _ => {
                if s == Preparing {
                    // No agent yet: the attempt ends here.
                    close_attempt(b, Outcome::Cancelled, None, None, 0.0, 0);
                }
                b.go(
                    Cancelled,
                    Some(
                        note.map(|n| format!("cancelled: {n}"))
                            .unwrap_or_else(|| "cancelled".into()),
                    ),
                );
                b.effect(Effect::StopAgent(AgentStop::Cancel));
            }
        },
        // A validation that was stopped is done again.
        Kind::Retry if s == Validating => {
            if !b.ctx.supervised {
                return not_supervised();
            }
            b.effect(Effect::Release);
            b.effect(Effect::Validate);
        }
        Kind::Retry => match s {
            Failed | Blocked | Cancelled | Interrupted | Conflicted => {
                b.st.renew_allowance();
                b.effect(Effect::Release);
                match s {
                    Conflicted => {
                        b.go(Merging, Some("merging again".into()));
                        b.effect(Effect::QueueMerge { with_edits: true });
                    }
                    // Stays interrupted: it resumes as soon as a slot is free.
                    Interrupted => {
                        b.effect(Effect::Note(format!("{id}: resuming")));
                    }
                    _ => {
                        b.go(Pending, Some("retry requested".into()));
                        b.effect(Effect::UnblockDependents);
                    }
                }
            }
            _ => return no("not failed, blocked, cancelled, interrupted or conflicted"),
        },
        Kind::Pause => match s {
            Merged | Cancelled => return no("already finished"),
            _ if b.st.paused => return no("already paused"),
            _ => b.st.paused = true,
        },
        Kind::Resume => {
            if !b.st.paused {
                return no("not paused");
            }
            b.st.paused = false;
        }
        Kind::Stop => match s {
            // The validators stop; the stream stays validating (held) and
            // `loki retry` or the next run validates again.
            Validating => {
                if !b.ctx.supervised {
                    return not_supervised();
                }
                b.effect(Effect::Hold);
                b.effect(Effect::StopAgent(AgentStop::Interrupt));
            }
            Running | Preparing => {
                if !b.ctx.supervised {
                    return not_supervised();
                }
                b.effect(Effect::Hold);
                b.effect(Effect::StopAgent(AgentStop::Interrupt));
                if s == Preparing {
                    // No agent yet: the attempt ends unstarted and uncounted.
                    close_attempt(b, Outcome::NotStarted, None, None, 0.0, 0);
                    b.go(Interrupted, Some("stopped by STOP".into()));
                }
            }
            _ => return no("not running"),
        },
    }
    Ok(())
}

/// What can happen to the swarm as a whole.
#[derive(Debug, Clone, PartialEq)]
pub enum SwarmInput {
    /// PAUSE / `loki pause`: start nothing new.
    Pause { reason: String },
    /// RESUME / `loki resume`.
    Resume,
    /// The API refused the credentials: the supervisor's own pause, which
    /// the next `loki run` lifts. A pause the user made stays theirs.
    AuthPause { reason: String },
    /// A new run lifts the supervisor's own pause.
    LiftAuthPause,
    /// A usage window is waited out until `resets_at` (RFC 3339).
    UsageWait { limit: String, resets_at: String },
    /// The wait is over (or a new run starts without one).
    UsageOver,
}

/// Decides what `input` does to the swarm's state.
pub fn handle_swarm(sw: &SwarmState, input: SwarmInput) -> Result<SwarmState, Refusal> {
    let mut next = sw.clone();
    match input {
        SwarmInput::Pause { reason } => {
            // Over the supervisor's own pause (a refused key), the user's
            // pause takes its place, so the next run does not lift it.
            if sw.paused && !sw.auth_paused {
                return Err(Refusal::new("the swarm is already paused"));
            }
            next.paused = true;
            next.auth_paused = false;
            next.pause_reason = Some(reason);
        }
        SwarmInput::Resume => {
            if !sw.paused {
                return Err(Refusal::new("the swarm is not paused"));
            }
            next.paused = false;
            next.auth_paused = false;
            next.pause_reason = None;
        }
        SwarmInput::AuthPause { reason } => {
            if sw.paused {
                return Err(Refusal::new("the swarm is already paused"));
            }
            next.paused = true;
            next.auth_paused = true;
            next.pause_reason = Some(reason);
        }
        SwarmInput::LiftAuthPause => {
            if !(sw.paused && sw.auth_paused) {
                return Err(Refusal::new("the swarm is not paused by the supervisor"));
            }
            next.paused = false;
            next.auth_paused = false;
            next.pause_reason = None;
        }
        SwarmInput::UsageWait { limit, resets_at } => {
            next.usage_limit = Some(limit);
            next.usage_resets_at = Some(resets_at);
        }
        SwarmInput::UsageOver => {
            if sw.usage_limit.is_none() && sw.usage_resets_at.is_none() {
                return Err(Refusal::new("no usage window is waited out"));
            }
            next.usage_limit = None;
            next.usage_resets_at = None;
        }
    }
    Ok(next)
}

/// How the next attempt starts.
#[derive(Debug, Clone, PartialEq)]
pub enum Kickoff {
    /// The full prompt.
    Fresh,
    /// After a failed attempt or a rejection: feedback for the agent.
    Retry { feedback: String, last: bool },
    /// After an interruption: continue where it stopped.
    Continue,
}

/// An interrupted attempt whose agent ran is continued; one stopped before
/// its agent started is simply started again, as a retry if it was one.
/// Attempts held back before their agent started are looked past: what
/// counts is whether the last agent that did start was cut off (a crash,
/// Ctrl-C, STOP, a refused key) or ended (a failed check: then this is a
/// retry).
pub fn next_start(st: &StreamState, max_attempts: u32) -> Kickoff {
    let agent_ran = cut_off_attempt(st).is_some();
    let retry = || Kickoff::Retry {
        feedback: st.feedback.clone().unwrap_or_default(),
        last: st.used_attempts() + 1 >= max_attempts,
    };
    match st.status {
        Status::Interrupted if agent_ran => Kickoff::Continue,
        Status::Interrupted if st.feedback.is_some() => retry(),
        Status::Retrying => retry(),
        _ => Kickoff::Fresh,
    }
}

/// The attempt whose interrupted work the next attempt salvages, if any.
pub fn cut_off_attempt(st: &StreamState) -> Option<u32> {
    let ran = st
        .attempts
        .iter()
        .rev()
        .find(|a| a.outcome != Outcome::NotStarted.as_str())
        .is_some_and(|a| {
            matches!(
                Outcome::parse(&a.outcome),
                Some(Outcome::Interrupted | Outcome::Auth)
            )
        });
    (st.status == Status::Interrupted && st.attempt > 0 && ran).then_some(st.attempt)
}

/// The event a step's draft becomes once the state is written at `version`.
pub fn event_of(id: &str, draft: &EventDraft, version: u64, ts: &str) -> Event {
    Event {
        ts: ts.to_string(),
        kind: draft.kind.into(),
        stream: Some(id.to_string()),
        from: draft.from,
        to: draft.to,
        version: Some(version),
        message: draft.message.clone(),
        signal_file: None,
    }
}

#[cfg(test)]
#[path = "machine_tests.rs"]
pub(crate) mod tests;
