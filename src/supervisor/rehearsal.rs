//! The rehearsal (`loki run --rehearse`): the whole swarm run with the
//! stand-in agent on a scratch branch, under its own ids, state and lock,
//! undone when it ends.

use super::*;
use crate::model::paths::rehearsal_branch_name;
use crate::model::StreamId;

/// Rehearsal: stream ids get an `rh-` prefix (their own branches and
/// worktrees), state lives in `.loki/rehearsal/`, and merges go into a
/// scratch branch made at the target's head. The rehearsal's own lock is
/// taken before its folder is cleared, so two rehearsals never share it.
pub(super) fn rehearsal_setup(
    mut cfg: SwarmFile,
    root: &std::path::Path,
    target: &str,
    keep: bool,
) -> Result<(SwarmFile, Rehearsal)> {
    let lock = match SupervisorLock::acquire_at(&Layout::new(root).rehearsal_lock())? {
        Ok(lock) => lock,
        Err(pid) => {
            let who = pid.map(|p| format!(" (pid {p})")).unwrap_or_default();
            return Err(crate::error::Error::refusal(format!(
                "another rehearsal{who} is running in {}",
                root.display()
            ))
            .hint("wait for it to end; a rehearsal takes seconds")
            .into());
        }
    };
    let layout = Layout::rehearsal(root);
    // A rehearsal always starts from nothing.
    if let Err(e) = std::fs::remove_dir_all(layout.loki()) {
        if e.kind() != std::io::ErrorKind::NotFound {
            return Err(
                anyhow::Error::new(e).context(format!("clearing {}", layout.loki().display()))
            );
        }
    }
    // Templates too: their instances (`rh-<template>.<key>`) come from
    // the renamed template and wait for renamed streams.
    let streams = cfg
        .streams
        .iter_mut()
        .chain(cfg.templates.iter_mut().map(|t| &mut t.stream));
    for s in streams {
        s.id = StreamId::parse(&rehearsal_id(&s.id))?;
        s.depends_on = s.depends_on.iter().map(|d| rehearsal_id(d)).collect();
        s.template = s.template.as_deref().map(rehearsal_id);
        s.checks.approve = false;
        s.agent.max_attempts = 1;
    }
    cfg.swarm.spawn_interval = Duration::ZERO;
    cfg.swarm.max_budget_usd = None;
    let ids = cfg.streams.iter().map(|s| s.id.to_string()).collect();

    let stamp = chrono::Utc::now().format("%Y%m%d-%H%M%S").to_string();
    let scratch = rehearsal_branch_name(&stamp, std::process::id());
    let head = git::branch_head(root, target)?;
    git::create_branch(root, &scratch, &head)
        .with_context(|| format!("creating the scratch branch {scratch}"))?;
    let guard = Rehearsal {
        layout,
        scratch,
        real_target: target.to_string(),
        ids,
        keep,
        keep_files: false,
        _lock: lock,
    };
    Ok((cfg, guard))
}

/// A rehearsal stream's id: `rh-<id>`, kept within the 64 characters an id
/// (and so a state file and branch name) may have: a long id is cut and a
/// hash of the whole id keeps it unique.
fn rehearsal_id(id: &str) -> String {
    let full = format!("rh-{id}");
    if full.len() <= 64 {
        return full;
    }
    let hash = crate::util::fnv1a(id.as_bytes());
    // Ids are ASCII, so any byte index is a character boundary.
    format!("rh-{}-{:08x}", &id[..52], hash as u32)
}

/// A rehearsal in progress; dropping it removes its branches, worktrees
/// and (unless `--keep`) its scratch branch and files.
pub(super) struct Rehearsal {
    pub(super) layout: Layout,
    pub(super) scratch: String,
    real_target: String,
    ids: Vec<String>,
    keep: bool,
    /// Keep `.loki/rehearsal/` (logs, reports) because something failed.
    pub(super) keep_files: bool,
    _lock: SupervisorLock,
}

impl Drop for Rehearsal {
    fn drop(&mut self) {
        let root = &self.layout.root;
        for id in &self.ids {
            let _ = git::remove_worktree(root, id);
            let _ = git::delete_branch(root, id);
        }
        if self.keep {
            println!(
                "rehearsal kept on branch {} (the real target {} is untouched)",
                self.scratch, self.real_target
            );
            return;
        }
        let _ = git::delete_named_branch(root, &self.scratch);
        if self.keep_files {
            println!(
                "rehearsal done; scratch branch deleted; its logs and check reports are kept in {} until the next rehearsal; {} is untouched",
                self.layout.loki().display(),
                self.real_target
            );
        } else {
            let _ = std::fs::remove_dir_all(self.layout.loki());
            println!(
                "rehearsal done; scratch branch deleted (keep it with --keep); {} is untouched",
                self.real_target
            );
        }
    }
}
