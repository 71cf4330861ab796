//! Branches: which one is checked out, where one points, creating and
//! deleting them, and reading what a branch holds (a file, a merge base)
//! without a worktree. Stream branches are `loki/<id>`
//! ([`crate::model::paths::branch_name`]); other names (a rehearsal's
//! scratch target) are passed whole.

use std::path::Path;

use anyhow::{Context, Result};
use git2::{BranchType, ErrorCode, Oid};

use super::{branch_oid, check_id, head_branch_ref, merge_base, open_repo, worktrees_lock};
use crate::model::paths::branch_name;

/// Name of the branch checked out in the main worktree (`None` if detached).
pub fn current_branch(root: &Path) -> anyhow::Result<Option<String>> {
    let repo = open_repo(root)?;
    Ok(head_branch_ref(&repo)
        .with_context(|| format!("reading HEAD of the repository at {}", root.display()))?
        .and_then(|r| r.strip_prefix("refs/heads/").map(str::to_string)))
}

/// Commit id the branch points at.
pub fn branch_head(root: &Path, branch: &str) -> anyhow::Result<String> {
    let repo = open_repo(root)?;
    Ok(branch_oid(&repo, root, branch)?.to_string())
}

/// Deletes branch `loki/<id>` if it exists.
pub fn delete_branch(root: &Path, id: &str) -> anyhow::Result<()> {
    check_id(id)?;
    let _serial = worktrees_lock();
    let repo = open_repo(root)?;
    let branch = branch_name(id);
    let mut b = match repo.find_branch(&branch, BranchType::Local) {
        Ok(b) => b,
        Err(e) if e.code() == ErrorCode::NotFound => return Ok(()),
        Err(e) => {
            return Err(e)
                .with_context(|| format!("looking up branch {branch} in {}", root.display()))
        }
    };
    b.delete().with_context(|| {
        format!(
            "deleting branch {branch} in {}\n  help: if a worktree still has it checked out, remove the worktree first (`loki clean {id}`)",
            root.display()
        )
    })
}

/// Whether local branch `branch` exists.
pub fn branch_exists(root: &Path, branch: &str) -> Result<bool> {
    let repo = open_repo(root)?;
    let found = match repo.find_branch(branch, BranchType::Local) {
        Ok(_) => Ok(true),
        Err(e) if e.code() == ErrorCode::NotFound => Ok(false),
        Err(e) => {
            Err(e).with_context(|| format!("looking up branch {branch} in {}", root.display()))
        }
    };
    found
}

/// The names of every local branch (a name that is not UTF-8 is left out).
pub fn local_branches(root: &Path) -> Result<Vec<String>> {
    let repo = open_repo(root)?;
    let ctx = || format!("listing the branches of {}", root.display());
    let mut out = Vec::new();
    for b in repo.branches(Some(BranchType::Local)).with_context(ctx)? {
        let (b, _) = b.with_context(ctx)?;
        if let Ok(Some(name)) = b.name() {
            out.push(name.to_string());
        }
    }
    Ok(out)
}

/// Creates local branch `branch` at `commit` (a full commit id); fails if
/// it exists. A rehearsal's scratch target is made this way.
pub fn create_branch(root: &Path, branch: &str, commit: &str) -> Result<()> {
    let _serial = worktrees_lock();
    let repo = open_repo(root)?;
    let oid = Oid::from_str(commit).with_context(|| format!("reading the commit id {commit}"))?;
    let commit = repo
        .find_commit(oid)
        .with_context(|| format!("reading commit {oid} in {}", root.display()))?;
    repo.branch(branch, &commit, false)
        .with_context(|| format!("creating branch {branch} in {}", root.display()))?;
    Ok(())
}

/// Deletes local branch `branch` (a whole name, not a stream id) if it exists.
pub fn delete_named_branch(root: &Path, branch: &str) -> Result<()> {
    let _serial = worktrees_lock();
    let repo = open_repo(root)?;
    let mut b = match repo.find_branch(branch, BranchType::Local) {
        Ok(b) => b,
        Err(e) if e.code() == ErrorCode::NotFound => return Ok(()),
        Err(e) => {
            return Err(e)
                .with_context(|| format!("looking up branch {branch} in {}", root.display()))
        }
    };
    b.delete()
        .with_context(|| format!("deleting branch {branch} in {}", root.display()))
}

/// The merge base of branches `a` and `b`.
pub fn branch_merge_base(root: &Path, a: &str, b: &str) -> Result<String> {
    let repo = open_repo(root)?;
    let a_oid = branch_oid(&repo, root, a)?;
    let b_oid = branch_oid(&repo, root, b)?;
    Ok(merge_base(&repo, a_oid, b_oid, a, b)?.to_string())
}

/// The bytes of `path` (repo-relative) as committed at the head of branch
/// `branch`, read from the object database (no worktree needed).
pub fn file_on_branch(root: &Path, branch: &str, path: &str) -> Result<Vec<u8>> {
    let repo = open_repo(root)?;
    let ctx = || format!("reading {path} on branch {branch} in {}", root.display());
    let tree = repo
        .find_branch(branch, BranchType::Local)
        .and_then(|b| b.get().peel_to_tree())
        .with_context(ctx)?;
    let entry = tree.get_path(Path::new(path)).with_context(ctx)?;
    let blob = entry
        .to_object(&repo)
        .and_then(|o| o.peel_to_blob())
        .with_context(ctx)?;
    Ok(blob.content().to_vec())
}
