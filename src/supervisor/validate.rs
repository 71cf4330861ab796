//! The validation stage: an attempt whose deterministic checks passed is
//! judged by the stream's validators (`[checks] validators`) before it may
//! merge.
//!
//! Decisions written down here:
//! - **Staged.** Validators start only when the machine moves the stream to
//!   `validating` (every check of the attempt passed), never for an attempt
//!   that failed a check: cheap judges first, expensive ones after.
//! - **At once, each alone.** A stream's validators are queued together
//!   and start as soon as there is room; each runs in its own disposable
//!   checkout of the attempt's commit (`.loki/validate/<id>/attempt-<n>/
//!   <name>/`, files only: no `.git`, no symlinks), removed when it ends, so
//!   nothing a validator writes can change the draft.
//! - **Room.** Validators share `max_parallel` with the streams' own agents
//!   unless `[swarm] max_validators` gives them a limit of their own; queued
//!   validators get a free slot before a new attempt starts (finish what is
//!   started first).
//! - **Processes.** A validator is an agent process like any other
//!   ([`agent::run`]): its own group under the keeper, `timeout` (a warning
//!   when it runs out) and `idle_timeout`, stopped with the stream, and its
//!   group recorded in the state's `helpers` so a later supervisor sweeps it
//!   after a crash. A stopped validation leaves the stream `validating`; the
//!   next run (or `loki retry`) judges the same commit again.
//! - **Untrusted.** The verdict is read from `LOKI_VERDICT_FILE` (at most
//!   1 MiB, never through a link) or claude's final result text, and only
//!   parsed. Validators get no `LOKI_SIGNALS_DIR`: a judge does not steer.
//! - **One report.** `.loki/runs/<id>/attempt-<n>/validation.json`; its
//!   summary becomes the attempt commit's `Loki-Validation` trailer (the
//!   commit is amended in place, and its `Loki-Cost-USD` then counts the
//!   validators too), and with `validation_report` the report is committed
//!   at that path as part of the attempt.

use std::path::Path;

use crate::checks::verdict::{
    self, Decision, Issue, Severity, ValidationReport, ValidatorResult, ValidatorStatus,
};
use crate::config::Validator;
use crate::model::trailers as keys;
use crate::process::resolve_command;
use crate::prompt;

use super::*;

/// The file name of the report in an attempt's run folder.
pub const VALIDATION_FILE: &str = "validation.json";

/// One stream's validation under way.
pub(super) struct Validation {
    attempt: u32,
    commit: String,
    started: Instant,
    /// Validators not yet ended.
    left: usize,
    results: Vec<ValidatorResult>,
    /// A validator was stopped (Ctrl-C, STOP, cancel, a usage limit): no
    /// verdict is drawn.
    stopped: bool,
    /// A rate or usage limit stopped one: validated again after the wait.
    limited: bool,
    stop: watch::Receiver<Option<StopRequest>>,
}

/// One validator waiting for room.
pub(super) struct ValidatorJob {
    id: String,
    attempt: u32,
    commit: String,
    validator: Validator,
}

/// What a validator's run needs, handed to the blocking preparation.
struct PrepInput {
    layout: Layout,
    stream: StreamConfig,
    prompt_dir: PathBuf,
    target: String,
    attempt: u32,
    commit: String,
    validator: Validator,
    /// A rehearsal or the demo: loki's stand-in judges, spending nothing.
    stand_in: bool,
}

/// A validator ready to start.
struct PreparedValidator {
    launch: agent::Launch,
    checkout: PathBuf,
    verdict_file: PathBuf,
}

impl Dispatcher {
    /// Room for one more validator.
    fn validator_room(&self) -> bool {
        match self.cfg.swarm.max_validators {
            Some(n) => self.validators_running < n.max(1),
            None => {
                let limit = self.limit.min(self.cfg.swarm.max_parallel).max(1);
                self.validators_running + self.running() < limit
            }
        }
    }

    /// Validators running that count against `max_parallel`.
    pub(super) fn shared_validators(&self) -> usize {
        match self.cfg.swarm.max_validators {
            Some(_) => 0,
            None => self.validators_running,
        }
    }

    /// `Effect::Validate`: queues the stream's validators on its attempt's
    /// commit (the branch's head).
    pub(super) async fn start_validation(&mut self, id: &str) {
        if self.validations.contains_key(id) {
            return;
        }
        let Some(slot) = self.slots.get(id) else {
            return;
        };
        // Asked for, then cancelled (or moved on) before it began.
        if slot.st.status != Status::Validating {
            return;
        }
        let attempt = slot.st.attempt;
        let names = slot.cfg.checks.validators.clone();
        let validators: Vec<Validator> = names
            .iter()
            .filter_map(|n| self.cfg.validators.get(n).cloned())
            .collect();
        let root = self.layout.root.clone();
        let branch = crate::model::paths::branch_name(id);
        let head = tokio::task::spawn_blocking(move || git::branch_head(&root, &branch))
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))
            .and_then(|r| r);
        let commit = match head {
            Ok(c) => c,
            Err(e) => {
                let reason = format!("cannot read the attempt's commit to validate: {e:#}");
                self.feed(id, Input::Fatal { reason }).await;
                return;
            }
        };
        if validators.is_empty() {
            // loki.toml no longer names validators for it: nothing judges.
            self.conclude(id, ValidationReport::new(attempt, &commit, Vec::new(), 0.0))
                .await;
            return;
        }
        let (stop_tx, stop_rx) = watch::channel(None);
        if let Some(slot) = self.slots.get_mut(id) {
            slot.stop = Some(stop_tx);
            // What the writer's claude met is not the validators'.
            slot.api_trouble = None;
        }
        self.event(
            "validation",
            Some(id),
            &format!(
                "attempt {attempt}: {} validator(s) judge {}: {}",
                validators.len(),
                &commit[..commit.len().min(12)],
                names.join(", ")
            ),
        );
        self.validations.insert(
            id.to_string(),
            Validation {
                attempt,
                commit: commit.clone(),
                started: Instant::now(),
                left: validators.len(),
                results: Vec::new(),
                stopped: false,
                limited: false,
                stop: stop_rx,
            },
        );
        for validator in validators {
            self.validator_queue.push_back(ValidatorJob {
                id: id.to_string(),
                attempt,
                commit: commit.clone(),
                validator,
            });
        }
        self.pump_validators();
    }

    /// Starts queued validators while there is room.
    pub(super) fn pump_validators(&mut self) {
        while !self.validator_queue.is_empty() && self.validator_room() {
            let Some(job) = self.validator_queue.pop_front() else {
                break;
            };
            let Some(v) = self.validations.get(&job.id) else {
                continue;
            };
            let Some(slot) = self.slots.get(&job.id) else {
                continue;
            };
            self.validators_running += 1;
            let input = PrepInput {
                layout: self.layout.clone(),
                stream: slot.cfg.clone(),
                prompt_dir: self.cfg.root.clone(),
                target: self.target.clone(),
                attempt: job.attempt,
                commit: job.commit.clone(),
                validator: job.validator.clone(),
                stand_in: self.stand_in,
            };
            let stop = v.stop.clone();
            let tx = self.tx.clone();
            let spawner = self.spawner.clone();
            tokio::spawn(run_validator(input, spawner, stop, tx, job.id));
        }
    }

    /// A validator ended: when it was the last of its stream's, the
    /// verdict is drawn.
    pub(super) async fn on_validator_done(
        &mut self,
        id: String,
        attempt: u32,
        result: ValidatorResult,
        halt: Option<Halt>,
    ) {
        let stopped = halt.is_some();
        self.validators_running = self.validators_running.saturating_sub(1);
        let Some(v) = self.validations.get_mut(&id) else {
            return;
        };
        if v.attempt != attempt {
            return;
        }
        v.left = v.left.saturating_sub(1);
        v.stopped |= stopped;
        v.limited |= halt == Some(Halt::Limited);
        if !stopped {
            let line = format!(
                "{} {} ({:.1}s)",
                result.name,
                result.status.as_str(),
                result.duration_seconds
            );
            v.results.push(result);
            self.event("validator", Some(&id), &line);
        }
        if self.validations.get(&id).is_some_and(|v| v.left > 0) {
            self.pump_validators();
            return;
        }
        let Some(v) = self.validations.remove(&id) else {
            return;
        };
        let root = self.layout.clone();
        let dir = root.validate_dir(&id);
        let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(dir)).await;
        if let Some(slot) = self.slots.get_mut(&id) {
            slot.stop = None;
        }
        let status = self.slots.get(&id).map(|s| s.st.status);
        if status != Some(Status::Validating) {
            // Cancelled meanwhile: nothing of it is judged.
            self.pump_validators();
            return;
        }
        if v.stopped {
            self.feed(&id, Input::ValidationStopped).await;
            let limited = v.limited
                || self
                    .slots
                    .get(&id)
                    .is_some_and(|s| s.api_trouble == Some(429));
            let held = self.slots.get(&id).is_some_and(|s| s.held);
            if limited && !held && !self.interrupting && self.usage_ended.is_none() {
                // Judged again once the wait is over (`schedule`).
                if let Some(slot) = self.slots.get_mut(&id) {
                    slot.api_trouble = None;
                }
                if self.backoff_until.is_none() {
                    self.backoff_until = Some(Instant::now() + Duration::from_secs(30));
                }
                self.event(
                    "validation",
                    Some(&id),
                    "a rate or usage limit stopped a validator: the validation is done again \
                     after the wait",
                );
                self.validate_next.push(id.clone());
            }
            self.pump_validators();
            return;
        }
        let mut results = v.results;
        // In the order the stream names them, whatever order they ended in.
        if let Some(slot) = self.slots.get(&id) {
            let order = &slot.cfg.checks.validators;
            results.sort_by_key(|r| order.iter().position(|n| *n == r.name));
        }
        let report = ValidationReport::new(
            v.attempt,
            &v.commit,
            results,
            v.started.elapsed().as_secs_f64(),
        );
        self.conclude(&id, report).await;
        self.pump_validators();
    }

    /// Writes the report, puts its summary (and the file, with
    /// `validation_report`) on the attempt's commit, and feeds the verdict.
    async fn conclude(&mut self, id: &str, report: ValidationReport) {
        let Some(slot) = self.slots.get(id) else {
            return;
        };
        let layout = self.layout.clone();
        let cfg = slot.cfg.clone();
        let agent_cost = slot.st.attempts.last().map_or(0.0, |a| a.cost_usd);
        let written = report.clone();
        let amended = tokio::task::spawn_blocking(move || {
            write_report(&layout, &cfg, &written, agent_cost).map_err(|e| format!("{e:#}"))
        })
        .await
        .unwrap_or_else(|e| Err(format!("writing the validation report: {e}")));
        let commit = match amended {
            Ok(c) => Some(c),
            Err(e) => {
                self.feed(
                    id,
                    Input::Fatal {
                        reason: format!("after the validation: {e}"),
                    },
                )
                .await;
                return;
            }
        };
        let validated = Input::Validated {
            summary: report.summary.clone(),
            cost_usd: report.cost_usd,
            commit,
        };
        if self.step(id, validated).await.is_err() {
            return;
        }
        self.ui.send(UiEvent::Note(format!(
            "{id}: validation {}",
            report.summary
        )));
        match report.decision {
            Decision::Pass => {
                let needs_approval = self.slots.get(id).is_some_and(|s| s.cfg.checks.approve);
                let input = Input::Passed {
                    summary: format!("validation: {}", report.summary),
                    needs_approval,
                };
                self.feed(id, input).await;
            }
            Decision::Fail => {
                let feedback = report
                    .blocking_issues()
                    .iter()
                    .map(|i| format!("- {}", crate::util::one_line(i)))
                    .collect::<Vec<_>>()
                    .join("\n");
                let input = Input::ChecksFailed {
                    summary: format!("validation failed: {}", report.summary),
                    feedback,
                };
                self.feed(id, input).await;
            }
            Decision::Error => {
                let reason = format!(
                    "{}; the draft is kept on its branch: fix the validator, then `loki retry \
                     {id}`",
                    report.errors()
                );
                self.feed(id, Input::Fatal { reason }).await;
            }
        }
    }
}

/// `validation.json` in the attempt's run folder, the report committed at
/// `validation_report` when the stream names one, and the attempt's commit
/// amended with the `Loki-Validation` trailer and the cost with the
/// validators'. Returns the attempt's commit as it now is.
fn write_report(
    layout: &Layout,
    s: &StreamConfig,
    report: &ValidationReport,
    agent_cost: f64,
) -> Result<String> {
    let mut json = serde_json::to_vec_pretty(report).context("encoding the validation report")?;
    json.push(b'\n');
    let path = layout.run_dir(&s.id, report.attempt).join(VALIDATION_FILE);
    crate::util::write_atomic(&path, &json)?;
    if report.commit.is_empty() {
        return Ok(String::new());
    }
    let mut outputs = Vec::new();
    if let Some(rel) = &s.validation_report {
        let wt = layout.worktree(&s.id);
        let inner = crate::util::inside(&wt, &wt, Path::new(rel)).with_context(|| {
            format!(
                "`validation_report` {rel} leads out of the worktree of {}",
                s.id
            )
        })?;
        let to = folders_inside(&wt, &inner)?;
        crate::util::write_atomic(&to, &json)?;
        outputs.push(rel.clone());
    }
    let trailers = vec![
        (keys::VALIDATION.to_string(), report.summary.clone()),
        (
            keys::COST_USD.to_string(),
            format!("{:.4}", agent_cost + report.cost_usd),
        ),
    ];
    git::amend_attempt(&layout.root, &s.id, &report.commit, &outputs, &trailers)
}

/// The path of `rel` (relative, normal components) inside the worktree
/// `wt`, its folders made: every folder on the way must be a real folder,
/// never a link (the agent had the worktree: a `reports` it made a link
/// to `/etc` must not take loki's write there). The file itself is replaced
/// by a rename, which never follows a link either.
fn folders_inside(wt: &Path, rel: &Path) -> Result<PathBuf> {
    let mut at = wt.to_path_buf();
    let parts: Vec<_> = rel.components().collect();
    for (i, c) in parts.iter().enumerate() {
        at.push(c);
        if i + 1 == parts.len() {
            break;
        }
        match std::fs::symlink_metadata(&at) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => anyhow::bail!(
                "`validation_report`: {} is not a folder (a link or a file is in the way)",
                at.display()
            ),
            Err(_) => {
                std::fs::create_dir(&at).with_context(|| format!("creating {}", at.display()))?
            }
        }
    }
    if std::fs::symlink_metadata(&at).is_ok_and(|m| m.is_dir()) {
        anyhow::bail!("`validation_report`: {} is a folder", at.display());
    }
    Ok(at)
}

/// Runs one validator to its end and reports it.
async fn run_validator(
    input: PrepInput,
    spawner: Arc<Spawner>,
    stop: watch::Receiver<Option<StopRequest>>,
    tx: mpsc::UnboundedSender<Msg>,
    id: String,
) {
    let attempt = input.attempt;
    let name = input.validator.name.clone();
    let blocking = input.validator.blocking;
    let timeout = input.validator.agent.timeout;
    let idle = input.validator.agent.idle_timeout;
    let claude = input.validator.agent.is_claude();
    let started_at = now_rfc3339();
    let started = Instant::now();
    let done = |status: ValidatorStatus, issues: Vec<Issue>, cost: f64, error: Option<String>| {
        ValidatorResult {
            name: name.clone(),
            status,
            blocking,
            issues,
            started_at: started_at.clone(),
            ended_at: now_rfc3339(),
            duration_seconds: started.elapsed().as_secs_f64(),
            cost_usd: cost,
            timed_out: false,
            error,
        }
    };
    let prepared = tokio::task::spawn_blocking(move || prepare_validator(&input))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))
        .and_then(|r| r);
    let (result, halt) = match prepared {
        Err(e) => (
            done(
                ValidatorStatus::Error,
                Vec::new(),
                0.0,
                Some(format!("{e:#}")),
            ),
            None,
        ),
        Ok(p) => {
            let (ev_tx, mut ev_rx) = mpsc::unbounded_channel();
            let fwd_tx = tx.clone();
            let fwd_id = id.clone();
            let forward = tokio::spawn(async move {
                while let Some(ev) = ev_rx.recv().await {
                    match ev {
                        AgentEvent::Started(rec) => {
                            let _ = fwd_tx.send(Msg::Process {
                                id: fwd_id.clone(),
                                attempt,
                                rec,
                                role: machine::Role::Validator,
                            });
                        }
                        // A usage window counts for the swarm whoever hit it.
                        AgentEvent::UsageLimit(u) => {
                            let _ = fwd_tx.send(Msg::ValidatorUsage {
                                id: fwd_id.clone(),
                                limit: u,
                            });
                        }
                        _ => {}
                    }
                }
            });
            let out = agent::run(&spawner, p.launch, ev_tx, stop).await;
            let _ = forward.await;
            let verdict_file = p.verdict_file.clone();
            let read = tokio::task::spawn_blocking(move || read_verdict_file(&verdict_file))
                .await
                .unwrap_or(None);
            let checkout = p.checkout.clone();
            let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(checkout)).await;
            let cost = out.result.as_ref().map_or(0.0, |r| {
                if r.cost_invalid.is_none() {
                    r.cost_usd
                } else {
                    0.0
                }
            });
            match judge(&out, read, claude, timeout, idle) {
                Judged::Stopped => (
                    done(ValidatorStatus::Error, Vec::new(), cost, None),
                    Some(Halt::Stopped),
                ),
                Judged::Limited => (
                    done(ValidatorStatus::Error, Vec::new(), cost, None),
                    Some(Halt::Limited),
                ),
                Judged::Verdict {
                    status,
                    issues,
                    timed_out,
                } => {
                    let mut r = done(status, issues, cost, None);
                    r.timed_out = timed_out;
                    (r, None)
                }
                Judged::Error(e) => (
                    done(ValidatorStatus::Error, Vec::new(), cost, Some(e)),
                    None,
                ),
            }
        }
    };
    let _ = tx.send(Msg::ValidatorDone {
        id,
        attempt,
        result: Box::new(result),
        halt,
    });
}

/// Why a validator ended without a verdict that counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Halt {
    /// It was stopped (Ctrl-C twice, SIGTERM, STOP, cancel).
    Stopped,
    /// The API's rate or usage limit ended it: not the draft's fault and
    /// not the validator's; the validation is done again after the wait.
    Limited,
}

/// What a validator's run came to.
#[derive(Debug, PartialEq)]
enum Judged {
    Verdict {
        status: ValidatorStatus,
        issues: Vec<Issue>,
        timed_out: bool,
    },
    Error(String),
    Stopped,
    Limited,
}

/// The verdict file's text, if the validator wrote one (not through a
/// link, at most [`verdict::MAX_VERDICT_BYTES`]).
fn read_verdict_file(path: &Path) -> Option<Result<String, String>> {
    let dir = path.parent()?;
    let name = path.file_name()?;
    match crate::util::read_inside(dir, Path::new(name), verdict::MAX_VERDICT_BYTES) {
        Ok(bytes) => Some(
            String::from_utf8(bytes).map_err(|_| "the verdict file is not UTF-8 text".to_string()),
        ),
        Err(crate::util::FileRefusal::Missing) => None,
        Err(why) => Some(Err(format!("the verdict file {why}"))),
    }
}

/// How a validator's ending and output count (the table in
/// `checks::verdict`).
fn judge(
    out: &agent::AgentOutcome,
    file: Option<Result<String, String>>,
    claude: bool,
    timeout: Duration,
    idle: Duration,
) -> Judged {
    let warn = |what: String| Judged::Verdict {
        status: ValidatorStatus::Warn,
        issues: vec![Issue {
            severity: Severity::Warning,
            message: what,
            place: None,
        }],
        timed_out: true,
    };
    let code = || match (out.exit_code, out.signal) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(s)) => format!("signal {s}"),
        _ => "an unknown status".to_string(),
    };
    let tail = || {
        let t = out.stderr_tail.trim();
        if t.is_empty() {
            String::new()
        } else {
            format!("; stderr: {}", crate::util::one_line(t))
        }
    };
    match &out.ending {
        Ending::Stopped(_) => Judged::Stopped,
        Ending::SpawnFailed(m) => Judged::Error(m.clone()),
        Ending::Timeout => warn(format!(
            "the validator did not finish within its timeout of {}: no verdict",
            humantime::format_duration(timeout)
        )),
        Ending::Idle => warn(format!(
            "the validator printed nothing for {} and was stopped: no verdict",
            humantime::format_duration(idle)
        )),
        Ending::Exited => {
            let limited = out.result.as_ref().is_some_and(|r| {
                r.is_error
                    && (matches!(r.api_status, Some(429 | 503 | 529))
                        || crate::agent::api::usage_limit_in_result(
                            &r.result,
                            chrono::Local::now(),
                        )
                        .is_some())
            });
            if limited {
                return Judged::Limited;
            }
            if out.exit_code != Some(0) {
                return Judged::Error(format!("it ended with {}{}", code(), tail()));
            }
            if let Some(r) = out.result.as_ref().filter(|r| r.is_error) {
                return Judged::Error(format!(
                    "claude reported an error: {}",
                    crate::util::one_line(&r.result)
                ));
            }
            let parsed = match file {
                Some(Ok(text)) => verdict::parse_verdict(&text)
                    .map_err(|e| format!("LOKI_VERDICT_FILE holds no verdict: {e}")),
                Some(Err(e)) => Err(e),
                None if claude => out
                    .result
                    .as_ref()
                    .and_then(|r| verdict::last_verdict_in(&r.result))
                    .ok_or_else(|| {
                        "no verdict: it wrote no LOKI_VERDICT_FILE and its final result holds \
                         no JSON object with a `status`"
                            .to_string()
                    }),
                None => Err("no verdict: it wrote no LOKI_VERDICT_FILE".to_string()),
            };
            match parsed {
                Ok(v) => Judged::Verdict {
                    status: v.status,
                    issues: v.issues,
                    timed_out: false,
                },
                Err(e) => Judged::Error(e),
            }
        }
    }
}

/// The disposable checkout, the rendered prompt and the command of one
/// validator.
fn prepare_validator(input: &PrepInput) -> Result<PreparedValidator> {
    let lay = &input.layout;
    let s = &input.stream;
    let v = &input.validator;
    let run_dir = lay.run_dir(&s.id, input.attempt);
    let verdicts = run_dir.join("validators");
    std::fs::create_dir_all(&verdicts)
        .with_context(|| format!("creating {}", verdicts.display()))?;
    // A verdict left by a validation the last supervisor did not finish is
    // not this run's.
    let verdict_file = verdicts.join(format!("{}.verdict.json", v.name));
    let _ = std::fs::remove_file(&verdict_file);
    let checkout = lay
        .validate_dir(&s.id)
        .join(format!("attempt-{}", input.attempt))
        .join(&v.name);
    if checkout.symlink_metadata().is_ok() {
        std::fs::remove_dir_all(&checkout)
            .with_context(|| format!("removing the old checkout {}", checkout.display()))?;
    }
    git::export_commit(&lay.root, &input.commit, &checkout)?;

    let template = prompt::read_template(&lay.root, &input.prompt_dir, &v.prompt)
        .map_err(|e| anyhow::anyhow!("validator {}: {e}", v.name))?;
    let mut values = attempt::base_values(s, &input.target, input.attempt, "");
    prompt::read_inputs(&checkout, &s.inputs, &mut values)
        .map_err(|e| anyhow::anyhow!("validator {}: {e}", v.name))?;
    values.insert("DRAFT".into(), draft(&checkout, &s.outputs));
    let text = prompt::render(&template, &values).map_err(|missing| {
        anyhow::anyhow!(
            "the prompt of validator {} has placeholders nothing fills: {}",
            v.name,
            missing.join(", ")
        )
    })?;
    let prompt_file = verdicts.join(format!("{}.prompt.md", v.name));
    crate::util::write_atomic(&prompt_file, text.as_bytes())?;

    let mut env: Vec<(String, String)> = vec![
        ("LOKI_STREAM_ID".into(), s.id.to_string()),
        ("LOKI_ATTEMPT".into(), input.attempt.to_string()),
        ("LOKI_PROMPT_FILE".into(), prompt_file.display().to_string()),
        ("LOKI_VALIDATOR".into(), v.name.clone()),
        (
            "LOKI_VERDICT_FILE".into(),
            verdict_file.display().to_string(),
        ),
    ];
    for (k, val) in &v.agent.env {
        env.push((k.clone(), val.clone()));
    }
    let claude = v.agent.is_claude() && !input.stand_in;
    let (program, args) = if input.stand_in {
        let exe = std::env::current_exe()
            .context("locating the loki executable for the stand-in validator")?;
        (exe.display().to_string(), vec!["stand-in".to_string()])
    } else if claude {
        (
            resolve_command(&lay.root, &v.agent.command),
            agent::claude_args_with_prompt_file(&v.agent, &text, None, Some(&prompt_file)),
        )
    } else {
        (
            resolve_command(&lay.root, &v.agent.command),
            v.agent.args.clone(),
        )
    };
    let sandbox = if v.agent.sandbox == crate::config::Sandbox::Bwrap {
        let bwrap = agent::sandbox::locate().context(
            "bwrap (bubblewrap) is gone since the run started\n  help: install bubblewrap \
             again, or set `sandbox = \"none\"` for the validator",
        )?;
        let home = v
            .agent
            .env
            .get("HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(PathBuf::from));
        Some(
            agent::sandbox::Sandbox::for_validator(
                bwrap,
                &lay.root,
                &checkout,
                &verdicts,
                home.as_deref(),
                claude,
            )
            .with_context(|| format!("preparing the sandbox of validator {}", v.name))?,
        )
    } else {
        None
    };
    let launch = agent::Launch {
        program,
        args,
        cwd: checkout.clone(),
        env,
        transcript: lay.validator_transcript(&s.id, input.attempt, &v.name),
        stderr_log: lay.validator_stderr(&s.id, input.attempt, &v.name),
        claude,
        timeout: v.agent.timeout,
        idle_timeout: v.agent.idle_timeout,
        kill_grace: v.agent.kill_grace,
        sandbox,
    };
    Ok(PreparedValidator {
        launch,
        checkout,
        verdict_file,
    })
}

/// `{{DRAFT}}`: each output as committed, under its `=== path ===` line.
fn draft(checkout: &Path, outputs: &[String]) -> String {
    let mut text = String::new();
    for o in outputs {
        text.push_str(&prompt::glob_file_header(o));
        text.push('\n');
        match crate::util::read_inside(checkout, Path::new(o), crate::util::MAX_PROMPT_FILE) {
            Ok(b) => text.push_str(&String::from_utf8_lossy(&b)),
            Err(why) => text.push_str(&format!("(not readable: {why})")),
        }
        text.push_str("\n\n");
    }
    text.trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(ending: Ending, code: Option<i32>) -> agent::AgentOutcome {
        agent::AgentOutcome {
            ending,
            exit_code: code,
            signal: None,
            result: None,
            session_id: None,
            turns: 0,
            stderr_tail: "boom".into(),
        }
    }

    #[test]
    fn the_report_is_never_written_through_a_link_the_agent_made() {
        let wt = tempfile::tempdir().unwrap();
        let away = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(away.path(), wt.path().join("reports")).unwrap();
        let e = folders_inside(wt.path(), Path::new("reports/a.json")).unwrap_err();
        assert!(e.to_string().contains("is not a folder"), "{e}");
        let ok = folders_inside(wt.path(), Path::new("out/deep/a.json")).unwrap();
        assert_eq!(ok, wt.path().join("out/deep/a.json"));
        assert!(wt.path().join("out/deep").is_dir());
    }

    #[test]
    fn a_timeout_warns_and_a_bad_exit_is_an_error() {
        let t = Duration::from_secs(2);
        match judge(&outcome(Ending::Timeout, None), None, false, t, t) {
            Judged::Verdict {
                status, timed_out, ..
            } => {
                assert_eq!(status, ValidatorStatus::Warn);
                assert!(timed_out);
            }
            other => panic!("{other:?}"),
        }
        match judge(&outcome(Ending::Exited, Some(3)), None, false, t, t) {
            Judged::Error(e) => assert!(e.contains("exit code 3") && e.contains("boom"), "{e}"),
            other => panic!("{other:?}"),
        }
        let file = Some(Ok(r#"{"status":"pass"}"#.to_string()));
        assert!(matches!(
            judge(&outcome(Ending::Exited, Some(0)), file, false, t, t),
            Judged::Verdict {
                status: ValidatorStatus::Pass,
                ..
            }
        ));
        assert!(matches!(
            judge(&outcome(Ending::Exited, Some(0)), None, false, t, t),
            Judged::Error(_)
        ));
    }
}
