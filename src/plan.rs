//! The dependency graph of streams: validation order, readiness, who is
//! blocked by a failure.

use std::collections::BTreeMap;

use crate::config::StreamConfig;

/// Stream ids in an order where every stream comes after its dependencies
/// (ties keep file order). `Err(cycle)` names the ids of one cycle, in order,
/// first id repeated at the end (`a -> b -> a`).
pub fn topo_order(streams: &[StreamConfig]) -> Result<Vec<String>, Vec<String>> {
    let _ = streams;
    todo!("plan::topo_order")
}

/// Every stream that depends on `id`, directly or not (not `id` itself), in
/// topological order.
pub fn dependents_of(streams: &[StreamConfig], id: &str) -> Vec<String> {
    let _ = (streams, id);
    todo!("plan::dependents_of")
}

/// True when every dependency of `stream` is in `merged`.
pub fn deps_met(stream: &StreamConfig, merged: &BTreeMap<String, bool>) -> bool {
    stream
        .depends_on
        .iter()
        .all(|d| merged.get(d).copied().unwrap_or(false))
}
