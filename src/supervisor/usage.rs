//! Usage windows: a Claude subscription's session (5-hour) and weekly
//! limits, as claude reports them in `rate_limit_event` lines and in the
//! final result of a session the limit cut off.
//!
//! - `rejected`: no attempt starts until the window resets (its
//!   `resetsAt`, plus a margin of 2 s and 1% of the wait for clock skew).
//!   The attempt that hit the limit is stopped as interrupted (or, if its
//!   agent ended first, recorded as rate limited): it does not count
//!   against `max_attempts`, and it resumes its claude session after the
//!   reset. Other running attempts go on until they hit it themselves.
//! - `allowed_warning` at or above `[swarm] pause_at_utilization`: no new
//!   attempt starts until the reset; running ones finish.
//! - A wait longer than `[swarm] max_wait` (a weekly limit, say) ends the
//!   run instead, saying when it would have gone on; the next `loki run`
//!   resumes. A stop request is obeyed during any wait: the wait is only a
//!   timer of the loop.
//! - A reset time that is not known is waited out for 15 minutes, then
//!   tried again. A `rejected` event with neither a reset time nor a
//!   window type is claude's report of a server's throttle (claude 2.1.197
//!   prints it for a plain 429), handled as a rate limit, not as a window.
//! - What claude prints, measured with 2.1.197 against a local server:
//!   `rate_limit_event` lines come only when it runs on a subscription's
//!   OAuth token (with an API key the `anthropic-ratelimit-unified-*`
//!   headers are ignored and a 429 is retried); a 429 with those headers
//!   gives `rejected` with `resetsAt` and `rateLimitType`, then an error
//!   result "You've hit your session limit · resets 4:47pm (UTC)".

use super::*;
use crate::agent::api::UsageLimit;

/// How long a limit without a known reset time is waited out.
const UNKNOWN_RESET: Duration = Duration::from_secs(15 * 60);

/// A wait for a usage window to reset.
#[derive(Debug, Clone)]
pub(super) struct UsageWait {
    pub(super) until: Instant,
    /// What the notes say: "waiting for the session limit to reset at …".
    pub(super) message: String,
}

impl Dispatcher {
    /// Stream `id`'s agent reported where its usage window stands.
    pub(super) async fn usage_limit(&mut self, id: &str, u: UsageLimit) {
        match u.status.as_str() {
            // With neither a reset time nor a window named, claude reports
            // a server's throttle, not a usage window: the 429 handling
            // (api_retry and the result's status) waits that out.
            "rejected" if u.resets_at.is_none() && u.kind.is_none() => {}
            "rejected" => {
                if let Some(slot) = self.slots.get_mut(id) {
                    // Not the agent's fault: never counted (see lifecycle).
                    slot.api_trouble = Some(429);
                }
                if let Some(stop) = self.slots.get(id).and_then(|s| s.stop.clone()) {
                    let _ = stop.send(Some(StopRequest::Interrupt));
                }
                self.wait_for_reset(Some(id), &u, format!("{id} hit {}", u.name()));
            }
            "allowed_warning" => {
                let Some(pause_at) = self.cfg.swarm.pause_at_utilization else {
                    return;
                };
                let Some(used) = u.utilization.filter(|x| *x >= pause_at) else {
                    return;
                };
                self.wait_for_reset(
                    Some(id),
                    &u,
                    format!(
                        "{} is {:.0}% used (pause_at_utilization {pause_at}); running attempts \
                         finish",
                        u.name(),
                        used * 100.0
                    ),
                );
            }
            _ => {}
        }
    }

    /// Starts nothing until `u`'s window resets, or ends the run when that
    /// is further off than `max_wait`.
    fn wait_for_reset(&mut self, id: Option<&str>, u: &UsageLimit, why: String) {
        let now = chrono::Utc::now().timestamp();
        let (wait, at) = match u.resets_at {
            Some(r) => {
                let secs = u64::try_from(r.saturating_sub(now)).unwrap_or(0);
                let margin = Duration::from_secs(2) + Duration::from_secs(secs / 100);
                (Duration::from_secs(secs) + margin, Some(r))
            }
            None => (UNKNOWN_RESET, None),
        };
        let clock = at
            .and_then(|r| chrono::DateTime::from_timestamp(r, 0))
            .map(|t| t.with_timezone(&chrono::Local).format("%H:%M").to_string())
            .unwrap_or_else(|| "an unknown time".into());
        let name = u.name();
        if wait > self.cfg.swarm.max_wait {
            if self.usage_ended.is_some() {
                return;
            }
            let msg = format!(
                "{why}; it resets at {clock} (in {}), later than [swarm] max_wait ({}) lets a run \
                 wait: ending the run, and `loki run` after the reset resumes it (no attempt was \
                 counted)",
                crate::util::fmt_duration(wait),
                crate::util::fmt_duration(self.cfg.swarm.max_wait)
            );
            let resets = chrono::Utc::now()
                + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::zero());
            self.swarm_step(SwarmInput::UsageWait {
                limit: name,
                resets_at: resets.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            });
            self.event("usage_limit", id, &msg);
            self.ui.send(UiEvent::Note(msg.clone()));
            self.usage_ended = Some(msg);
            for slot in self.slots.values() {
                if let Some(stop) = &slot.stop {
                    let _ = stop.send(Some(StopRequest::Interrupt));
                }
            }
            return;
        }
        let until = Instant::now() + wait;
        if self.backoff_until.is_none_or(|t| t < until) {
            self.backoff_until = Some(until);
        }
        if self.usage_wait.as_ref().is_some_and(|w| w.until >= until) {
            return;
        }
        let message = format!(
            "waiting for {name} to reset at {clock} (in {}): no attempt starts before then; {why}",
            crate::util::fmt_duration(wait)
        );
        // `loki status` says it too: the state first, then the event, so
        // whoever reads the event finds the state that goes with it.
        let resets = chrono::Utc::now()
            + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::zero());
        self.swarm_step(SwarmInput::UsageWait {
            limit: name,
            resets_at: resets.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        });
        self.event("usage_limit", id, &message);
        self.ui.send(UiEvent::Note(message.clone()));
        self.usage_wait = Some(UsageWait { until, message });
    }

    /// Writes a swarm-wide change through the door (a refusal: nothing to
    /// do); a write that fails is said, and the run goes on.
    pub(super) fn swarm_step(&mut self, input: SwarmInput) {
        let Ok(next) = machine::handle_swarm(&self.swarm, input) else {
            return;
        };
        match door::commit_swarm(&self.store, self.swarm.version, &next, None) {
            Ok(sw) => self.swarm = sw,
            Err(e) => self.ui.send(UiEvent::Note(format!(
                "cannot write the swarm state: {e:#}"
            ))),
        }
    }

    /// At start-up: a window an earlier run was waiting out still holds
    /// this run back (starting now would only hit the limit again); one
    /// that has reset is forgotten.
    pub(super) fn resume_usage_wait(&mut self) {
        let (Some(limit), Some(at)) = (
            self.swarm.usage_limit.clone(),
            self.swarm.usage_resets_at.clone(),
        ) else {
            return;
        };
        let resets = chrono::DateTime::parse_from_rfc3339(&at).ok();
        let left = resets
            .map(|r| r.timestamp() - chrono::Utc::now().timestamp())
            .unwrap_or(0);
        if left <= 0 {
            self.swarm_step(SwarmInput::UsageOver);
            return;
        }
        let u = UsageLimit {
            status: "rejected".into(),
            resets_at: resets.map(|r| r.timestamp()),
            kind: None,
            utilization: None,
        };
        self.swarm.usage_limit = None;
        self.swarm.usage_resets_at = None;
        self.wait_for_reset(
            None,
            &u,
            format!("an earlier run was waiting for {limit} to reset"),
        );
    }

    /// The wait is over: say so once.
    pub(super) fn usage_wait_over(&mut self, now: Instant) {
        if self.usage_wait.as_ref().is_some_and(|w| w.until <= now) {
            self.usage_wait = None;
            let msg = "the usage window has reset: starting attempts again".to_string();
            self.event("usage_limit", None, &msg);
            self.ui.send(UiEvent::Note(msg));
            self.swarm_step(SwarmInput::UsageOver);
        }
    }
}
