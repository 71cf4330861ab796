//! `loki status --remote`: the whole swarm across machines, read from the
//! remote's refs alone (one fetch into this clone's mirror of them), never
//! from this clone's state files.

use std::path::{Path, PathBuf};

use anyhow::Result;
use serde_json::json;

use crate::error::Error;
use crate::git::remote as gremote;

/// Prints the remote's view of every stream of the swarm file (and of any
/// claim the remote holds for a stream the file does not name).
pub fn status(config: Option<PathBuf>, cwd: &Path, name: &str, json_out: bool) -> Result<i32> {
    let path = super::config_path(config, cwd)?;
    let cfg = crate::config::load_expanded(&path).map_err(anyhow::Error::new)?;
    let root = crate::git::repo_root(&cfg.root)?;
    let name = match (name.is_empty(), &cfg.swarm.remote) {
        (false, _) => name.to_string(),
        (true, Some(r)) => r.clone(),
        (true, None) => {
            return Err(
                Error::config("`loki status --remote` needs a remote's name")
                    .hint("give one (`loki status --remote origin`) or set `remote` in [swarm]")
                    .into(),
            )
        }
    };
    let target = match &cfg.swarm.target {
        Some(t) => t.clone(),
        None => crate::git::current_branch(&root)?.unwrap_or_else(|| "main".into()),
    };
    gremote::remote_url(&root, &name).map_err(|e| Error::config(format!("{e:#}")))?;
    let view =
        gremote::fetch(&root, &name, &target).map_err(|e| Error::environment(format!("{e:#}")))?;
    let lease = cfg.swarm.lease;
    let mut ids: Vec<String> = cfg.streams.iter().map(|s| s.id.to_string()).collect();
    for id in view.claims.keys().chain(view.done.keys()) {
        if !ids.contains(id) {
            ids.push(id.clone());
        }
    }
    let mut rows = Vec::new();
    let mut cost = 0.0;
    for id in &ids {
        let row = if let Some(d) = view.done.get(id).filter(|d| d.on_target) {
            let done = d.done.as_ref();
            cost += done.map_or(0.0, |d| d.cost_usd);
            json!({
                "id": id,
                "state": "merged",
                "holder": done.map(|d| d.by.label()),
                "since": done.map(|d| d.at.clone()),
                "merge": done.map(|d| d.merge.clone()),
                "cost_usd": done.map_or(0.0, |d| d.cost_usd),
            })
        } else if let Some(c) = view.claims.get(id) {
            match &c.claim {
                Some(claim) => {
                    cost += claim.cost_usd;
                    let lapsed = crate::supervisor::lapsed_at(claim, lease);
                    let lease_state = match lapsed {
                        None => "parked".to_string(),
                        Some(s) if s > 0.0 => format!("expired {:.0}s ago: may be taken over", s),
                        Some(s) => format!("ok ({:.0}s left)", -s),
                    };
                    json!({
                        "id": id,
                        "state": if lapsed.is_none() { "parked" } else { "held" },
                        "holder": claim.holder.label(),
                        "since": claim.since,
                        "status": claim.status,
                        "attempt": claim.attempt,
                        "lease": lease_state,
                        "expires": claim.expires,
                        "cost_usd": claim.cost_usd,
                    })
                }
                None => json!({
                    "id": id,
                    "state": "unreadable claim",
                    "lease": format!("{} is no claim of loki's; delete the ref to free the stream", gremote::claim_ref(id)),
                }),
            }
        } else {
            json!({"id": id, "state": "free"})
        };
        rows.push(row);
    }
    if json_out {
        let out = json!({
            "remote": name,
            "target": target,
            "target_head": view.target,
            "cost_usd": cost,
            "streams": rows,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(0);
    }
    let text = |v: &serde_json::Value, k: &str| -> String {
        match &v[k] {
            serde_json::Value::Null => "-".into(),
            serde_json::Value::String(s) => crate::util::one_line(s),
            other => other.to_string(),
        }
    };
    println!(
        "remote {name}, target {target} at {}",
        view.target
            .as_deref()
            .map_or("-", |t| &t[..t.len().min(10)])
    );
    println!(
        "{:<20} {:<9} {:<24} {:<17} {:<25} LEASE",
        "STREAM", "STATE", "HOLDER", "STATUS", "SINCE"
    );
    for r in &rows {
        println!(
            "{:<20} {:<9} {:<24} {:<17} {:<25} {}",
            text(r, "id"),
            text(r, "state"),
            text(r, "holder"),
            text(r, "status"),
            text(r, "since"),
            text(r, "lease")
        );
    }
    let merged = rows.iter().filter(|r| r["state"] == "merged").count();
    let held = rows.iter().filter(|r| r["state"] == "held").count();
    println!(
        "{merged} of {} merged, {held} held; ${cost:.2} recorded on the remote",
        rows.len()
    );
    Ok(0)
}
