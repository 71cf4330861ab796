//! The `Loki-*` trailers loki writes on its commits and reads back for
//! `loki log`: the keys are defined once here.

use super::state::StreamState;

pub const STREAM: &str = "Loki-Stream";
pub const ATTEMPT: &str = "Loki-Attempt";
pub const ATTEMPTS: &str = "Loki-Attempts";
pub const AGENT: &str = "Loki-Agent";
pub const SESSION: &str = "Loki-Session";
pub const COST_USD: &str = "Loki-Cost-USD";
pub const CHECKS: &str = "Loki-Checks";
/// The validators' summary: "6 pass, 1 warn, 0 fail".
pub const VALIDATION: &str = "Loki-Validation";
pub const OUTCOME: &str = "Loki-Outcome";
pub const DURATION: &str = "Loki-Duration";
pub const APPROVED_BY: &str = "Loki-Approved-By";

/// The trailers of a `Merge stream <id>` commit, from the stream's state
/// (`agent` names the agent when the state does not).
pub fn merge_trailers(st: &StreamState, agent: &str) -> Vec<(String, String)> {
    let mut trailers = vec![
        (STREAM.to_string(), st.id.to_string()),
        (ATTEMPT.to_string(), st.attempt.to_string()),
        (ATTEMPTS.to_string(), st.attempts.len().to_string()),
        (
            AGENT.to_string(),
            st.agent.clone().unwrap_or_else(|| agent.to_string()),
        ),
    ];
    if let Some(s) = &st.session_id {
        trailers.push((SESSION.into(), s.clone()));
    }
    trailers.push((COST_USD.into(), format!("{:.4}", st.cost_usd)));
    if let Some(c) = st.attempts.iter().rev().find_map(|a| a.checks.clone()) {
        trailers.push((CHECKS.into(), c));
    }
    if let Some(v) = st.attempts.last().and_then(|a| a.validation.clone()) {
        trailers.push((VALIDATION.into(), v));
    }
    if let Some(a) = &st.approved_by {
        trailers.push((APPROVED_BY.into(), a.clone()));
    }
    trailers
}

/// The trailers of an attempt's commit: who ran it, in which session, what
/// this attempt cost and how long it took.
pub fn attempt_trailers(st: &StreamState, agent: &str) -> Vec<(String, String)> {
    let mut t = vec![
        (STREAM.to_string(), st.id.to_string()),
        (ATTEMPT.to_string(), st.attempt.to_string()),
        (AGENT.to_string(), agent.to_string()),
    ];
    if let Some(s) = &st.session_id {
        t.push((SESSION.into(), s.clone()));
    }
    let cost = st.attempts.last().map(|a| a.cost_usd).unwrap_or(0.0);
    t.push((COST_USD.into(), format!("{cost:.4}")));
    if let Some(a) = st.attempts.last() {
        if let Some(secs) = a
            .ended_at
            .as_deref()
            .and_then(|e| crate::util::secs_between(&a.started_at, e))
        {
            t.push((DURATION.into(), format!("{secs:.1}s")));
        }
    }
    t
}
