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
pub const OUTCOME: &str = "Loki-Outcome";
pub const DURATION: &str = "Loki-Duration";
pub const APPROVED_BY: &str = "Loki-Approved-By";

/// The trailers of a `Merge stream <id>` commit, from the stream's state
/// (`agent` names the agent when the state does not).
pub fn merge_trailers(st: &StreamState, agent: &str) -> Vec<(String, String)> {
    let mut trailers = vec![
        ("Loki-Stream".to_string(), st.id.to_string()),
        ("Loki-Attempt".to_string(), st.attempt.to_string()),
        ("Loki-Attempts".to_string(), st.attempts.len().to_string()),
        (
            "Loki-Agent".to_string(),
            st.agent.clone().unwrap_or_else(|| agent.to_string()),
        ),
    ];
    if let Some(s) = &st.session_id {
        trailers.push(("Loki-Session".into(), s.clone()));
    }
    trailers.push(("Loki-Cost-USD".into(), format!("{:.4}", st.cost_usd)));
    if let Some(c) = st.attempts.iter().rev().find_map(|a| a.checks.clone()) {
        trailers.push(("Loki-Checks".into(), c));
    }
    if let Some(a) = &st.approved_by {
        trailers.push(("Loki-Approved-By".into(), a.clone()));
    }
    trailers
}
