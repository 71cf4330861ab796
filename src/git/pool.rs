//! A pool of merged streams' worktrees, so that a new stream's worktree is
//! made by switching a finished one to its branch (libgit2 writes only the
//! files that differ) instead of a full checkout, and a merged stream's
//! worktree is not deleted file by file. On a 5,000-file tree the checkout
//! and the removal were most of what a stream cost loki.
//!
//! - **Where.** A pooled worktree is `.loki/worktrees/.pool-<n>` (a stream
//!   id cannot start with '.'), registered with git like any other, its HEAD
//!   detached at the commit that was merged, so no branch is checked out
//!   there and `loki/<id>` can be deleted.
//! - **What it holds.** Only what is in the target: a worktree is pooled
//!   after its stream merged, and taking it runs a forced checkout that
//!   also removes untracked and ignored files, so nothing one agent left
//!   reaches the next.
//! - **How many.** At most `capacity` (the supervisor passes `max_parallel`);
//!   a full pool removes the worktree instead. The end of a run, start-up
//!   and `loki clean` empty it ([`empty_pool`], called by
//!   `repair_registrations`).
//! - **Crash safety.** Taking writes the branch into HEAD and checks it out
//!   while the folder is still in the pool, then points the registration at
//!   the stream's folder and renames the folder; pooling renames first and
//!   repoints second. A kill between two steps leaves a pooled folder whose
//!   registration names another folder, or a registration whose folder is
//!   gone: emptying the pool removes the first, pruning the second, and the
//!   stream's next prepare makes a fresh worktree.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use git2::build::CheckoutBuilder;
use git2::{Repository, WorktreeLockStatus};

use super::integrity::dot_git_target;
use super::worktree::{find_registration, prune_removed};
use super::{same_path, stat_cache};
use crate::model::paths::Layout;

/// What a pooled folder's name starts with.
const POOL_PREFIX: &str = ".pool-";

/// The pooled folders under `.loki/worktrees/`, in name order.
fn pooled(root: &Path) -> Vec<PathBuf> {
    let dir = Layout::new(root).worktrees_dir();
    let mut out: Vec<PathBuf> = fs::read_dir(&dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(POOL_PREFIX))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// The registration folder of the worktree at `folder` when its `.git`
/// names one whose `gitdir` names `folder` back (a healthy worktree).
fn healthy_admin(folder: &Path) -> Option<PathBuf> {
    let admin = dot_git_target(folder)?;
    let gitdir = fs::read_to_string(admin.join("gitdir")).ok()?;
    let named = Path::new(gitdir.trim()).parent()?.to_path_buf();
    same_path(&named, folder).then_some(admin)
}

/// Points registration `admin` at the worktree folder `folder`.
fn point_registration(admin: &Path, folder: &Path) -> Result<()> {
    let text = format!("{}\n", folder.join(".git").display());
    crate::util::write_atomic(&admin.join("gitdir"), text.as_bytes())
        .with_context(|| format!("pointing {} at {}", admin.display(), folder.display()))
}

/// Pools the worktree at `path` (a merged stream's) when the pool has room
/// and the worktree is healthy and unlocked; returns whether it did. The
/// caller removes it otherwise. Called with the repo lock held.
pub(super) fn pool_locked(
    repo: &Repository,
    root: &Path,
    path: &Path,
    capacity: usize,
) -> Result<bool> {
    if capacity == 0 || pooled(root).len() >= capacity {
        return Ok(false);
    }
    let Some(wt) = find_registration(repo, path)? else {
        return Ok(false);
    };
    if matches!(wt.is_locked(), Ok(WorktreeLockStatus::Locked(_))) || wt.validate().is_err() {
        return Ok(false);
    }
    let Some(admin) = healthy_admin(path) else {
        return Ok(false);
    };
    let ctx = || format!("pooling the worktree {}", path.display());
    let wrepo = Repository::open(path).with_context(ctx)?;
    let head = wrepo
        .head()
        .and_then(|h| h.peel_to_commit())
        .with_context(ctx)?
        .id();
    wrepo.set_head_detached(head).with_context(ctx)?;
    drop(wrepo);
    let dir = Layout::new(root).worktrees_dir();
    // Fewer than `capacity` are taken, so one of the first capacity+1 is free.
    let Some(slot) = (1..=capacity + 1)
        .map(|n| dir.join(format!("{POOL_PREFIX}{n}")))
        .find(|p| p.symlink_metadata().is_err())
    else {
        return Ok(false);
    };
    stat_cache::forget(path);
    fs::rename(path, &slot)
        .with_context(|| format!("moving {} to {}", path.display(), slot.display()))?;
    point_registration(&admin, &slot)?;
    Ok(true)
}

/// Makes a pooled worktree the worktree of branch `branch_ref`
/// (`refs/heads/loki/<id>`) at `path`; returns whether one was taken.
/// Called with the repo lock held, after the branch exists and nothing is
/// at `path`.
pub(super) fn take_locked(root: &Path, path: &Path, branch_ref: &str) -> Result<bool> {
    for folder in pooled(root) {
        let Some(admin) = healthy_admin(&folder) else {
            continue;
        };
        let Ok(wrepo) = Repository::open(&folder) else {
            continue;
        };
        let ctx = || {
            format!(
                "switching the pooled worktree {} to {branch_ref}",
                folder.display()
            )
        };
        wrepo
            .reference_symbolic("HEAD", branch_ref, true, "loki: a pooled worktree")
            .with_context(ctx)?;
        let mut cb = CheckoutBuilder::new();
        cb.force().remove_untracked(true).remove_ignored(true);
        wrepo.checkout_head(Some(&mut cb)).with_context(ctx)?;
        // The index the checkout just wrote, as it holds it (not read back).
        let index = wrepo.index().ok();
        drop(wrepo);
        point_registration(&admin, path)?;
        fs::rename(&folder, path)
            .with_context(|| format!("moving {} to {}", folder.display(), path.display()))?;
        // The checkout wrote the files that differ and the index; no agent ran.
        match index {
            Some(index) => stat_cache::remember(path, &index),
            None => stat_cache::forget(path),
        }
        return Ok(true);
    }
    Ok(false)
}

/// Removes every pooled worktree (folder and registration) and every
/// pooled folder a kill left without one. Returns how many folders went.
/// Called with the repo lock held.
pub(super) fn empty_locked(repo: &Repository, root: &Path) -> Result<usize> {
    let mut removed = 0;
    for folder in pooled(root) {
        let registration = find_registration(repo, &folder)?;
        fs::remove_dir_all(&folder)
            .with_context(|| format!("removing the pooled worktree {}", folder.display()))?;
        removed += 1;
        if let Some(wt) = registration {
            prune_removed(&wt, &folder)?;
        }
    }
    Ok(removed)
}
