//! Everything that touches git, through git2. Each function opens its own
//! `Repository` (it is not `Sync`); callers run them in `spawn_blocking`.
//!
//! Worktrees live only under `.loki/worktrees/<id>` on branch `loki/<id>`.
//! Merges are made in memory (`merge_commits` + `write_tree_to`) as a
//! non-fast-forward commit with two parents, and the target ref moves by
//! compare-and-swap (`reference_matching`); if it moved underneath, the merge
//! is redone on the new head. The user's own checkout is updated only when
//! that is safe: if they have uncommitted changes (or untracked files) on
//! paths the merge touches, the merge waits and says which.

use std::path::{Path, PathBuf};

/// Identity used when the repo has no `user.name` / `user.email`.
pub const FALLBACK_NAME: &str = "loki";
pub const FALLBACK_EMAIL: &str = "loki@localhost";

/// A stream's worktree, ready for an attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct Worktree {
    pub path: PathBuf,
    pub branch: String,
    /// Commit the branch started from (the target's head then).
    pub base: String,
    /// The worktree existed and was reused.
    pub reused: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum MergeOutcome {
    /// The target now points at this merge commit.
    Merged { commit: String },
    /// The branch was merged before (its head is already in the target).
    AlreadyMerged,
    /// Conflicting paths; the target is untouched.
    Conflict { paths: Vec<String> },
    /// The user's checkout has changes on paths the merge touches.
    UserChanges { paths: Vec<String> },
}

/// Root of the main worktree of the repo containing `dir`.
/// Errors say "not a git repository" or "the repository has no commit yet".
pub fn repo_root(dir: &Path) -> anyhow::Result<PathBuf> {
    let _ = dir;
    todo!("git::repo_root")
}

/// Name of the branch checked out in the main worktree (`None` if detached).
pub fn current_branch(root: &Path) -> anyhow::Result<Option<String>> {
    let _ = root;
    todo!("git::current_branch")
}

/// Commit id the branch points at.
pub fn branch_head(root: &Path, branch: &str) -> anyhow::Result<String> {
    let _ = (root, branch);
    todo!("git::branch_head")
}

/// Creates (or reuses) branch `loki/<id>` and worktree `.loki/worktrees/<id>`.
/// A new branch starts at the target's head. An existing branch is reused
/// as it is (it holds earlier attempts); an existing healthy worktree is
/// reused; a stale worktree registration (folder gone) is pruned first.
pub fn prepare_worktree(root: &Path, id: &str, target: &str) -> anyhow::Result<Worktree> {
    let _ = (root, id, target);
    todo!("git::prepare_worktree")
}

/// Stages everything in the worktree (new, changed and deleted files,
/// honouring .gitignore) and commits it on the worktree's branch if anything
/// changed. Returns the new commit, or `None` when there was nothing to commit.
/// `trailers` are appended after a blank line as `Key: value`.
pub fn commit_all(
    worktree: &Path,
    subject: &str,
    body: &str,
    trailers: &[(String, String)],
) -> anyhow::Result<Option<String>> {
    let _ = (worktree, subject, body, trailers);
    todo!("git::commit_all")
}

/// Paths (relative to the worktree) that differ between `base` and the
/// worktree's current state: committed since base, staged, unstaged, untracked.
pub fn touched_paths(worktree: &Path, base: &str) -> anyhow::Result<Vec<String>> {
    let _ = (worktree, base);
    todo!("git::touched_paths")
}

/// Merges branch `loki/<id>` into `target` as described in the module doc.
pub fn merge_stream(
    root: &Path,
    id: &str,
    target: &str,
    subject: &str,
    trailers: &[(String, String)],
) -> anyhow::Result<MergeOutcome> {
    let _ = (root, id, target, subject, trailers);
    todo!("git::merge_stream")
}

/// Removes the worktree folder and its registration (like `git worktree
/// remove --force` followed by prune). Only ever under `.loki/worktrees/`.
pub fn remove_worktree(root: &Path, id: &str) -> anyhow::Result<()> {
    let _ = (root, id);
    todo!("git::remove_worktree")
}

/// Deletes branch `loki/<id>` if it exists.
pub fn delete_branch(root: &Path, id: &str) -> anyhow::Result<()> {
    let _ = (root, id);
    todo!("git::delete_branch")
}

/// The diff of branch `loki/<id>` (or its worktree) against the merge base
/// with `target`, as a unified patch.
pub fn diff_against_target(root: &Path, id: &str, target: &str) -> anyhow::Result<String> {
    let _ = (root, id, target);
    todo!("git::diff_against_target")
}
