//! One attempt's life as the loop sees it: starting it, hearing its agent,
//! ending its record, and turning the check result into the next step.
//! The blocking work itself is in [`super::attempt`]; every state change
//! is a machine input.

use super::attempt::ProcessSink;
use super::machine::Role;
use super::*;
use crate::agent::api::{api_error_class, resume_failed, ApiTrouble};

impl Dispatcher {
    // ----- attempts -------------------------------------------------------

    pub(super) async fn start_attempt(&mut self, id: &str) {
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
                self.feed(id, Input::Fatal { reason: why }).await;
                return;
            }
            stream_cfg.agent.max_budget_usd = Some(left);
        }
        let resolving = slot.st.resolving();
        let kickoff = machine::next_start(&slot.st, max);
        // A stream that runs again after it failed, was blocked or was
        // cancelled starts from what the target holds now.
        let refresh = slot.st.status == Status::Pending
            && matches!(kickoff, machine::Kickoff::Fresh)
            && slot.st.attempt > 0;
        // A resolver starts from the conflict, in a session of its own.
        let interrupted_attempt = machine::cut_off_attempt(&slot.st).filter(|_| !resolving);
        let session = slot.st.session_id.clone().filter(|_| !resolving);
        if self.step(id, Input::Start { n }).await.is_err() {
            return;
        }
        // Through a remote, the claim says at once which attempt runs (a
        // supervisor taking the stream over numbers its own after it); a
        // first attempt is what the claim itself says.
        if n > 1 {
            self.remote_progress(id);
        }
        let Some(slot) = self.slots.get_mut(id) else {
            return;
        };
        slot.turns = 0;
        slot.attempt_cost = 0.0;
        slot.result_error = None;
        slot.api_trouble = None;
        slot.fail_note = None;
        slot.activity = None;
        slot.activity_written = None;
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
            base: slot.st.base_commit.clone(),
            refresh: refresh && !resolving,
            resolve: resolving,
        };
        let tx = self.tx.clone();
        let idc = id.to_string();
        let gate = self.prepare_gate.clone();
        tokio::spawn(async move {
            // Never closed, so a permit always comes.
            let permit = gate.acquire_owned().await.ok();
            let result = tokio::task::spawn_blocking(move || {
                let _permit = permit;
                attempt::prepare(&input)
            })
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

    pub(super) fn current(&self, id: &str, attempt: u32) -> bool {
        self.slots.get(id).is_some_and(|s| s.st.attempt == attempt)
    }

    pub(super) async fn on_prepared(
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
                self.end_attempt_record(&id, Outcome::Failed, None, Some(reason.clone()))
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
            self.feed(&id, Input::HeldBack { why }).await;
            return;
        }
        let wt = prepared.worktree.clone();
        let label = prepared.agent_label.clone();
        let running = Input::Prepared {
            worktree: wt.path.display().to_string(),
            base: wt.base.clone(),
            agent: label.clone(),
        };
        if self.step(&id, running).await.is_err() {
            return;
        }
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
        slot.resolution = prepared.resolution.clone();
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

    pub(super) async fn on_agent_event(&mut self, id: String, n: u32, ev: AgentEvent) {
        if !self.current(&id, n) {
            return;
        }
        if !matches!(ev, AgentEvent::Started(_)) {
            self.agent_is_up(&id);
        }
        match ev {
            AgentEvent::Started(rec) => {
                let input = Input::ProcessStarted {
                    rec,
                    role: Role::Agent,
                };
                self.feed(&id, input).await
            }
            AgentEvent::Init { session_id } => self.feed(&id, Input::Session(session_id)).await,
            AgentEvent::Activity(text) => {
                self.ui.send(UiEvent::Activity {
                    id: id.clone(),
                    text: text.clone(),
                });
                let due = match self.slots.get_mut(&id) {
                    Some(slot) => {
                        slot.activity = Some(text);
                        slot.activity_written
                            .is_none_or(|t| t.elapsed() >= ACTIVITY_EVERY)
                    }
                    None => false,
                };
                if due {
                    self.write_activity(&id).await;
                }
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
            AgentEvent::UsageLimit(u) => self.usage_limit(&id, u).await,
            // Up (above); the end itself comes as `Msg::AgentDone`.
            AgentEvent::Exited => {}
            AgentEvent::Result(info) => {
                let budget = self.slots.get(&id).and_then(|s| s.cfg.agent.max_budget_usd);
                let cost = self.counted_cost(&id, &info);
                if let Some(bad) = info.cost_invalid {
                    let msg = format!(
                        "{id}: the agent reported a cost of {bad}, which is not a cost; the attempt is counted as ${cost:.2}, what was left of its budget"
                    );
                    self.event("warning", Some(&id), &msg);
                    self.ui.send(UiEvent::Note(msg));
                }
                if let Some(slot) = self.slots.get_mut(&id) {
                    slot.attempt_cost = cost;
                    slot.turns = info.turns.max(slot.turns);
                    if info.is_error {
                        slot.result_error = Some(if info.result.is_empty() {
                            info.subtype.clone()
                        } else {
                            info.result.clone()
                        });
                    }
                    let total = slot.st.cost_usd + cost;
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
                // A session the usage limit cut off: its window is waited
                // out, and the attempt is not counted.
                let limit = info
                    .is_error
                    .then(|| {
                        crate::agent::api::usage_limit_in_result(&info.result, chrono::Local::now())
                    })
                    .flatten();
                if let Some(u) = limit {
                    // The event's exact reset beats the text's minute.
                    if self.usage_wait.is_none() && self.usage_ended.is_none() {
                        self.usage_limit(&id, u).await;
                    } else if let Some(slot) = self.slots.get_mut(&id) {
                        slot.api_trouble = Some(429);
                    }
                    return;
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

    /// A resolver's attempt ended: its resolution, checked and committed as
    /// a merge of the target, goes to the merge worker; anything short of
    /// that leaves the stream conflicted, with the reason and nothing of
    /// the resolution on its branch.
    async fn on_resolved(
        &mut self,
        id: &str,
        agent_failed: bool,
        result: std::result::Result<Finished, String>,
    ) {
        let why = match result {
            Err(e) => Some(format!("the resolution could not be checked: {e}")),
            Ok(f) => {
                if let Some(r) = &f.report {
                    self.event("check", Some(id), &r.summary);
                }
                let checked = Input::Checked {
                    commit: f.commit.clone(),
                    level: f
                        .report
                        .as_ref()
                        .map(|r| format!("{:?}", r.status).to_uppercase()),
                };
                self.feed(id, checked).await;
                if agent_failed {
                    let reason = self.slots[id]
                        .st
                        .attempts
                        .last()
                        .and_then(|a| a.reason.clone())
                        .unwrap_or_else(|| "the resolver failed".into());
                    Some(format!("the resolver attempt failed: {reason}"))
                } else if !f.tampered.is_empty() {
                    Some(format!(
                        "the resolver altered the worktree: {}",
                        f.tampered.join("; ")
                    ))
                } else if let Some(problem) = f.resolve_failure {
                    Some(problem)
                } else {
                    match &f.report {
                        Some(r) if r.status == Level::Fail => {
                            Some(format!("the resolution fails its checks: {}", r.summary))
                        }
                        Some(_) if f.commit.is_some() => None,
                        _ => Some("the resolution was not committed".into()),
                    }
                }
            }
        };
        let input = match why {
            Some(why) => {
                let why = format!(
                    "{why}; the merge conflict is left for you: resolve it in \
                     .loki/worktrees/{id} (merge {} into loki/{id} and commit), then `loki \
                     retry {id}`",
                    self.target
                );
                Input::ResolveFailed { why }
            }
            None => Input::Passed {
                summary: "conflict resolved and checked".into(),
                needs_approval: false,
            },
        };
        if let Ok(effects) = self.step(id, input).await {
            self.perform(id, effects).await;
        }
    }

    /// 429 / 529: no new spawns until the retry time; concurrency halves and
    /// comes back one step per successful attempt.
    pub(super) fn rate_limited(&mut self, id: &str, delay_ms: Option<u64>) {
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
    pub(super) async fn auth_failure(&mut self, id: &str, code: u16) {
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
        let pause = SwarmInput::AuthPause {
            reason: msg.clone(),
        };
        if let Ok(next) = machine::handle_swarm(&self.swarm, pause) {
            let store = self.store.clone();
            let v = self.swarm.version;
            if let Ok(Ok(s)) =
                tokio::task::spawn_blocking(move || door::commit_swarm(&store, v, &next, None))
                    .await
            {
                self.swarm = s;
            }
        }
        self.stop_all(StopRequest::Auth);
    }

    pub(super) fn stop_all(&mut self, why: StopRequest) {
        for slot in self.slots.values_mut() {
            if let Some(stop) = &slot.stop {
                let _ = stop.send(Some(why));
            }
        }
    }

    /// Closes the current attempt's record with this attempt's cost and turns.
    pub(super) async fn end_attempt_record(
        &mut self,
        id: &str,
        outcome: Outcome,
        exit: Option<i32>,
        reason: Option<String>,
    ) {
        let (cost_usd, turns) = match self.slots.get(id) {
            Some(s) => (s.attempt_cost, s.turns),
            None => return,
        };
        let input = Input::AttemptEnded {
            outcome,
            exit,
            reason,
            cost_usd,
            turns,
        };
        self.feed(id, input).await;
    }

    pub(super) async fn on_agent_done(&mut self, id: String, n: u32, out: AgentOutcome) {
        if !self.current(&id, n) {
            return;
        }
        self.agent_is_up(&id);
        // The agent's last words are kept with its state.
        self.write_activity(&id).await;
        let cost = out.result.as_ref().map(|r| self.counted_cost(&id, r));
        if let Some(slot) = self.slots.get_mut(&id) {
            slot.stop = None;
            if let Some(r) = &out.result {
                slot.attempt_cost = cost.unwrap_or(0.0);
                slot.turns = slot.turns.max(r.turns);
            }
        }
        let slot = &self.slots[&id];
        let status = slot.st.status;
        let exit = out.exit_code;
        if status == Status::Cancelled {
            // Cancelled while its agent was ending (a FEATURE_READY or STOP
            // under way): whatever the ending, the attempt ends there and
            // nothing of it is checked or merged.
            self.end_attempt_record(&id, Outcome::Cancelled, exit, None)
                .await;
            return;
        }
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
            && result_error.as_deref().is_some_and(resume_failed);
        if session_lost {
            self.session_lost(&id, exit, result_error).await;
            return;
        }
        // What the attempt amounted to: (outcome, ok, failure reason).
        let (outcome, ok, why): (Outcome, bool, Option<String>) = match &out.ending {
            Ending::SpawnFailed(m) => {
                let m = m.clone();
                self.end_attempt_record(&id, Outcome::Failed, None, Some(m.clone()))
                    .await;
                self.fail(&id, m).await;
                return;
            }
            Ending::Stopped(StopRequest::Interrupt) => {
                self.end_attempt_record(&id, Outcome::Interrupted, exit, None)
                    .await;
                let limited = self
                    .slots
                    .get(&id)
                    .is_some_and(|s| s.api_trouble == Some(429));
                let why = if self.interrupting {
                    "stopped by the user; resume with `loki run`"
                } else if limited {
                    "stopped at the usage limit; it resumes its session after the reset"
                } else {
                    "stopped by STOP; resume with `loki retry`"
                };
                let input = Input::Interrupted {
                    why: why.into(),
                    forget_session: false,
                };
                self.feed(&id, input).await;
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
                self.end_attempt_record(&id, Outcome::Cancelled, exit, None)
                    .await;
                if status != Status::Cancelled {
                    let cancel = Steer {
                        kind: Kind::Cancel,
                        note: None,
                        count: false,
                    };
                    self.feed(&id, Input::Steer(cancel)).await;
                }
                return;
            }
            Ending::Stopped(StopRequest::Finish) => match self.slots[&id].fail_note.clone() {
                Some(note) => (
                    Outcome::Failed,
                    false,
                    Some(format!("TESTS_FAILED: {note}")),
                ),
                None => (Outcome::Ok, true, None),
            },
            Ending::Timeout => (
                Outcome::Timeout,
                false,
                Some(format!(
                    "timeout: still running after {}",
                    humantime::format_duration(self.slots[&id].cfg.agent.timeout)
                )),
            ),
            Ending::Idle => (
                Outcome::Idle,
                false,
                Some(format!(
                    "idle: no output for {}; the agent was stopped",
                    humantime::format_duration(self.slots[&id].cfg.agent.idle_timeout)
                )),
            ),
            Ending::Exited => {
                if exit == Some(0) && result_error.is_none() {
                    (Outcome::Ok, true, None)
                } else if matches!(api, Some(429) | Some(529) | Some(503)) {
                    (
                        Outcome::RateLimited,
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
                        Outcome::Failed,
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
                        Outcome::Failed,
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
        let mut trailers = self.attempt_trailers(slot);
        let resolution = slot
            .resolution
            .as_ref()
            .filter(|_| slot.st.resolving())
            .map(|r| r.target_head.clone());
        if resolution.is_some() {
            for (k, v) in trailers.iter_mut() {
                if k == crate::model::trailers::ATTEMPT {
                    *v = format!("{n} (resolve)");
                }
            }
        }
        let input = FinishInput {
            layout: self.layout.clone(),
            stream: slot.cfg.clone(),
            attempt: n,
            base: slot.st.base_commit.clone().unwrap_or_default(),
            agent_ok: ok,
            agent_failure: why.clone(),
            trailers,
            on_process: Some(self.process_sink(&id, n)),
            resolution,
        };
        if self.step(&id, Input::Checking { why }).await.is_err() {
            return;
        }
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
    pub(super) async fn session_lost(
        &mut self,
        id: &str,
        exit: Option<i32>,
        error: Option<String>,
    ) {
        let old = self.slots[id].st.session_id.clone().unwrap_or_default();
        let detail = error
            .map(|e| format!(" ({})", crate::util::one_line(&e)))
            .unwrap_or_default();
        let why = format!(
            "claude could not resume session {old}{detail}; starting again in a new session"
        );
        self.end_attempt_record(id, Outcome::SessionLost, exit, Some(why.clone()))
            .await;
        self.event("session", Some(id), &why);
        let input = Input::Interrupted {
            why,
            forget_session: true,
        };
        self.feed(id, input).await;
    }

    /// An attempt ended by an authentication failure: uncounted, and the
    /// stream waits (interrupted) for the next `loki run`.
    pub(super) async fn auth_stopped(&mut self, id: &str, exit: Option<i32>) {
        let why = "the API refused the credentials";
        self.end_attempt_record(id, Outcome::Auth, exit, Some(why.into()))
            .await;
        let input = Input::Interrupted {
            why: format!("paused: {why}"),
            forget_session: false,
        };
        self.feed(id, input).await;
    }

    /// What an attempt's result counts as spent: its cost, or, when the
    /// agent reported no valid cost, the most it could have spent: what was
    /// left of the stream's budget (claude's `--max-budget-usd`), else of
    /// the swarm's. A bad number can never lift a budget.
    fn counted_cost(&self, id: &str, info: &crate::agent::ResultInfo) -> f64 {
        if info.cost_invalid.is_none() {
            return info.cost_usd;
        }
        let Some(slot) = self.slots.get(id) else {
            return 0.0;
        };
        let stream_left = slot
            .cfg
            .agent
            .max_budget_usd
            .map(|b| (b - slot.st.cost_usd).max(0.0));
        let swarm_left = self
            .cfg
            .swarm
            .max_budget_usd
            .map(|b| (b - self.total_cost()).max(0.0));
        stream_left.or(swarm_left).unwrap_or(0.0)
    }

    /// Writes the agent's latest words, if any are waiting.
    pub(super) async fn write_activity(&mut self, id: &str) {
        let Some(text) = self.slots.get_mut(id).and_then(|s| {
            s.activity_written = Some(Instant::now());
            s.activity.take()
        }) else {
            return;
        };
        self.feed(id, Input::Activity(text)).await;
    }

    /// Where the attempt's blocking work reports a check command's group.
    fn process_sink(&self, id: &str, attempt: u32) -> ProcessSink {
        let tx = self.tx.clone();
        let id = id.to_string();
        ProcessSink(std::sync::Arc::new(move |rec| {
            let _ = tx.send(Msg::Process {
                id: id.clone(),
                attempt,
                rec,
                role: machine::Role::Check,
            });
        }))
    }

    pub(super) fn attempt_trailers(&self, slot: &Slot) -> Vec<(String, String)> {
        let agent = if slot.agent_label.is_empty() {
            &slot.cfg.agent.command
        } else {
            &slot.agent_label
        };
        crate::model::trailers::attempt_trailers(&slot.st, agent)
    }

    pub(super) async fn on_finished(
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
            .map(|a| a.outcome != Outcome::Ok.as_str())
            .unwrap_or(true);
        let outcome_now = self.slots[&id]
            .st
            .attempts
            .last()
            .map(|a| a.outcome.clone())
            .unwrap_or_default();
        if self.slots[&id].st.resolving() {
            self.on_resolved(&id, agent_failed, result).await;
            return;
        }
        match result {
            Err(e) => {
                self.retry_or_fail(&id, format!("after the attempt: {e}"), e)
                    .await;
            }
            Ok(f) => {
                let level = f.report.as_ref().map(|r| r.status);
                let summary = f.report.as_ref().map(|r| r.summary.clone());
                let checked = Input::Checked {
                    commit: f.commit.clone(),
                    level: level.map(|l| format!("{l:?}").to_uppercase()),
                };
                self.feed(&id, checked).await;
                if let Some(s) = &summary {
                    self.event("check", Some(&id), s);
                }
                if !f.tampered.is_empty() {
                    // Counted like failed checks: the agent did it, and is
                    // told what not to do again.
                    let feedback = f
                        .tampered
                        .iter()
                        .map(|t| format!("- {t}"))
                        .collect::<Vec<_>>()
                        .join("\n");
                    let input = Input::ChecksFailed {
                        summary: format!("the worktree was altered: {}", f.tampered.join("; ")),
                        feedback,
                    };
                    self.feed(&id, input).await;
                    return;
                }
                if agent_failed {
                    let why = self.slots[&id]
                        .st
                        .attempts
                        .last()
                        .and_then(|a| a.reason.clone())
                        .unwrap_or_else(|| "the agent failed".into());
                    if outcome_now == Outcome::RateLimited.as_str() {
                        // Not the agent's fault: retry without burning an attempt.
                        self.feed(&id, Input::RateLimited { why }).await;
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
                    let input = Input::ChecksFailed {
                        summary: report.summary.clone(),
                        feedback,
                    };
                    self.feed(&id, input).await;
                    return;
                }
                let slot = &self.slots[&id];
                let passed = Input::Passed {
                    summary: report.summary.clone(),
                    needs_approval: slot.cfg.checks.approve,
                };
                self.feed(&id, passed).await;
            }
        }
    }

    /// After a failed attempt: retry with feedback while the allowance lasts,
    /// otherwise the stream fails and its dependents are blocked.
    pub(super) async fn retry_or_fail(&mut self, id: &str, reason: String, feedback: String) {
        self.feed(id, Input::Unsuccessful { reason, feedback })
            .await;
    }

    pub(super) async fn fail(&mut self, id: &str, reason: String) {
        self.feed(id, Input::Fatal { reason }).await;
    }
}
