//! Scheduling: which streams may start, how many at once, when the loop
//! must wake up, and when the run is over.

use super::*;

impl Dispatcher {
    // ----- scheduling -----------------------------------------------------

    pub(super) fn running(&self) -> usize {
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

    /// Worktrees the pipeline holds: attempts under way and streams waiting
    /// for (or in) their merge. Bounded by [`pipeline_bound`], so fast
    /// agents cannot pile up worktrees faster than the one merge worker
    /// empties them.
    pub(super) fn in_pipeline(&self) -> usize {
        self.slots
            .values()
            .filter(|s| {
                matches!(
                    s.st.status,
                    Status::Preparing
                        | Status::Running
                        | Status::Checking
                        | Status::Validating
                        | Status::Merging
                )
            })
            .count()
    }

    pub(super) fn merged(&self, id: &str) -> bool {
        self.slots
            .get(id)
            .map(|s| s.st.status == Status::Merged)
            .unwrap_or(false)
    }

    /// What the swarm spent: here, and on the other machines sharing it
    /// (as the remote records it).
    pub(super) fn total_cost(&self) -> f64 {
        crate::util::total(self.slots.values().map(|s| s.st.cost_usd)) + self.remote_cost()
    }

    pub(super) fn budget_reached(&self) -> bool {
        match self.cfg.swarm.max_budget_usd {
            Some(b) => self.total_cost() >= b,
            None => false,
        }
    }

    /// Whether a stream in this state would start an attempt if a slot were free.
    pub(super) fn startable(&self, slot: &Slot) -> bool {
        if slot.st.paused || slot.held {
            return false;
        }
        let ready = match slot.st.status {
            Status::Pending => slot.cfg.depends_on.iter().all(|d| self.merged(d)),
            Status::Retrying | Status::Interrupted => true,
            _ => false,
        };
        ready && self.remote_allows(&slot.st.id)
    }

    /// Blocks streams whose dependencies can no longer merge, then starts as
    /// many attempts as the limits allow.
    pub(super) async fn schedule(&mut self) {
        self.pace_wake = None;
        if !self.waiting_templates.is_empty() && !self.interrupting {
            self.expand_templates().await;
        }
        // Blocked: a dependency failed, was cancelled, conflicted or is blocked.
        loop {
            let mut changed = false;
            let order = self.order.clone();
            for id in order.iter() {
                let slot = &self.slots[id.as_str()];
                if slot.st.status != Status::Pending {
                    continue;
                }
                let bad = slot.cfg.depends_on.iter().find(|d| {
                    self.failed_templates.contains_key(d.as_str())
                        || (!self.merged(d) && self.remote_lost(d).is_some())
                        || self
                            .slots
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
                    // A template whose fan-out failed counts as failed.
                    let status = self
                        .remote_lost(&dep)
                        .filter(|_| !self.merged(&dep))
                        .or_else(|| self.slots.get(&dep).map(|s| s.st.status))
                        .unwrap_or(Status::Failed);
                    self.feed(id, Input::DependencyLost { dep, status }).await;
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }

        // Validations asked for begin even while draining (they finish an
        // attempt under way); after a stop request the next run does them.
        // A rate or usage limit's wait holds them back too.
        let waiting =
            self.backoff_until.is_some_and(|t| t > Instant::now()) || self.usage_ended.is_some();
        if !self.interrupting && !waiting {
            for id in std::mem::take(&mut self.validate_next) {
                self.start_validation(&id).await;
            }
            self.pump_validators();
        }

        if self.draining
            || self.interrupting
            || self.swarm.paused
            || self.auth_failed.is_some()
            || self.usage_ended.is_some()
        {
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
        let bound = pipeline_bound(self.cfg.swarm.max_parallel);
        // Counted once per pass (each start adds one), not once per
        // candidate: a pass over a large swarm stays linear.
        let claiming = self.remote.as_ref().map_or(0, |r| r.claiming.len());
        let (mut running, mut in_pipeline) = (
            self.running() + self.shared_validators() + claiming,
            self.in_pipeline() + claiming,
        );
        if running >= limit || in_pipeline >= bound {
            return;
        }
        let start_order = self.start_order.clone();
        for id in start_order.iter() {
            if running >= limit || in_pipeline >= bound {
                break;
            }
            if !self.startable(&self.slots[id.as_str()]) {
                continue;
            }
            // Through a remote, a stream starts only once it is claimed:
            // the slot is kept for it until the claim's answer.
            if !self.holds(id) {
                if self.request_claim(id) {
                    running += 1;
                    in_pipeline += 1;
                }
                continue;
            }
            if let Some((last, Some(_))) = &self.last_start {
                if last.elapsed() < self.cfg.swarm.spawn_interval {
                    self.pace_wake = Some(*last + self.cfg.swarm.spawn_interval);
                    break; // the timer, or the agent's first output, wakes us
                }
            }
            self.last_start = Some((Instant::now(), Some(id.clone())));
            self.start_attempt(id).await;
            running += 1;
            in_pipeline += 1;
        }
    }

    /// Stream `id`'s agent is up (it printed something, or it ended): the
    /// next start need not wait for it any longer.
    pub(super) fn agent_is_up(&mut self, id: &str) {
        if let Some((_, starting)) = &mut self.last_start {
            if starting.as_deref() == Some(id) {
                *starting = None;
                self.pace_wake = None;
            }
        }
    }

    pub(super) fn next_wake(&self) -> Option<Instant> {
        let mut t: Option<Instant> = None;
        let mut consider = |x: Instant| t = Some(t.map_or(x, |y| y.min(x)));
        if let Some(b) = self.backoff_until {
            consider(b);
        }
        if let Some(p) = self.pace_wake {
            consider(p);
        }
        for at in self.merge_retry.values() {
            consider(*at);
        }
        t
    }

    pub(super) fn fire_timers(&mut self) {
        let now = Instant::now();
        if self.backoff_until.is_some_and(|t| t <= now) {
            self.backoff_until = None;
        }
        self.usage_wait_over(now);
        let due: Vec<String> = self
            .merge_retry
            .iter()
            .filter(|(_, t)| **t <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for id in due {
            self.merge_retry.remove(&id);
            // The wait was for the user's checkout: a person's edits were
            // taken when the merge was first asked for; an approved stream's
            // are taken again, as at a restart.
            let approved = match self.slots.get(&id) {
                Some(s) if s.st.status == Status::Merging => s.st.approved_by.is_some(),
                _ => continue,
            };
            self.queue_merge(&id, approved);
        }
    }

    /// True when nothing runs and nothing more can start in this run.
    pub(super) fn finished(&self) -> bool {
        // An agent that is still being stopped (cancelled, interrupted)
        // keeps the run alive until it is reaped and recorded.
        if self.slots.values().any(|s| s.stop.is_some()) {
            return false;
        }
        // A merge that waits for the user's checkout is not work under way:
        // a stop request (STOP, a second Ctrl-C, SIGTERM) ends the run
        // anyway, the stream stays merging, and the next run merges it.
        let stopping = self.interrupting || self.draining;
        let active = self.slots.values().any(|s| match s.st.status {
            Status::Preparing | Status::Running | Status::Checking => true,
            // Held by STOP, or waiting for the next run after a stop
            // request: no validator of it runs.
            Status::Validating => {
                let id = s.st.id.as_str();
                self.validations.contains_key(id)
                    || (!self.interrupting && self.validate_next.iter().any(|x| x == id))
            }
            Status::Merging => {
                !(stopping
                    && self.merge_retry.contains_key(s.st.id.as_str())
                    && !self.merge_queued.contains(s.st.id.as_str()))
            }
            _ => false,
        });
        if active {
            return false;
        }
        if self.interrupting
            || self.draining
            || self.auth_failed.is_some()
            || self.usage_ended.is_some()
        {
            return true;
        }
        // Other machines hold streams this run may still need.
        if self.remote_waits() && !self.budget_reached() {
            return false;
        }
        if self.wait && !self.budget_reached() {
            return self.waiting_templates.is_empty()
                && self
                    .slots
                    .values()
                    .all(|s| matches!(s.st.status, Status::Merged | Status::Cancelled));
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
}

impl Dispatcher {
    /// With `--wait`, when nothing runs: says once what the run waits for
    /// a person for, and with which command each wait ends.
    pub(super) fn note_waiting(&mut self) {
        let busy = self.slots.values().any(|s| {
            s.st.status.is_active() || s.st.status == Status::Merging || self.startable(s)
        });
        if busy {
            return;
        }
        let mut parts = Vec::new();
        for id in self.order.iter() {
            let s = &self.slots[id.as_str()];
            let how = match s.st.status {
                Status::AwaitingApproval => format!("{id} awaits approval (loki approve {id})"),
                Status::Failed | Status::Blocked | Status::Conflicted => {
                    format!("{id} is {} (loki retry {id})", s.st.status)
                }
                Status::Pending | Status::Retrying | Status::Interrupted if s.st.paused => {
                    format!("{id} is paused (loki resume)")
                }
                _ => continue,
            };
            parts.push(how);
        }
        if self.swarm.paused {
            parts.push("the swarm is paused (loki resume)".into());
        }
        if parts.is_empty() {
            return;
        }
        let note = format!(
            "waiting (--wait) for people: {}; Ctrl-C ends the run",
            parts.join("; ")
        );
        if self.waiting_note.as_deref() != Some(note.as_str()) {
            self.event("supervisor", None, &note);
            self.ui.send(UiEvent::Note(note.clone()));
            self.waiting_note = Some(note);
        }
    }
}

/// At most this many streams hold a worktree in the pipeline at once
/// (running, checking, or waiting for their merge): `max_parallel` running
/// and as many finished ones waiting to merge. When it is reached, the
/// finished ones are merged before anything new starts.
pub(super) fn pipeline_bound(max_parallel: usize) -> usize {
    max_parallel.max(1).saturating_mul(2)
}
