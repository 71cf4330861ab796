//! Committing a stream's worktree and reading what it changed: the
//! supervisor's commit of whatever an attempt left uncommitted (with loki's
//! trailers), the paths an attempt touched (for the `canonical` check), and
//! the diff a reviewer sees in `loki show`.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{bail, Context, Result};
use git2::{
    Commit, Diff, DiffFormat, DiffOptions, ErrorCode, IndexAddOption, Repository, RepositoryState,
};

use super::worktree::find_registration;
use super::{
    branch_oid, check_id, compose_message, diff_paths, dirty_paths, head_branch_ref, merge_base,
    open_repo, signature,
};
use crate::model::paths::{branch_name, Layout};

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
    let repo = open_repo(worktree)?;
    let head_ref = head_branch_ref(&repo)
        .with_context(|| format!("reading HEAD of {}", worktree.display()))?;
    let Some(head_ref) = head_ref else {
        bail!(
            "HEAD of {} is detached (a rebase or checkout left in progress?); loki commits only on a branch\n  help: finish or abort it (`git -C {} rebase --abort`, `git -C {} switch -`)",
            worktree.display(),
            worktree.display(),
            worktree.display()
        );
    };
    let mut index = repo
        .index()
        .with_context(|| format!("reading the index of {}", worktree.display()))?;
    index
        .add_all(["*"], IndexAddOption::DEFAULT, None)
        .with_context(|| format!("staging the files of {}", worktree.display()))?;
    index
        .update_all(["*"], None)
        .with_context(|| format!("staging deletions in {}", worktree.display()))?;
    index
        .write()
        .with_context(|| format!("writing the index of {}", worktree.display()))?;
    let tree_id = index
        .write_tree()
        .with_context(|| format!("writing the tree of {}", worktree.display()))?;
    let parent = match repo.head() {
        Ok(head) => Some(
            head.peel_to_commit()
                .with_context(|| format!("reading the head commit of {}", worktree.display()))?,
        ),
        Err(e) if e.code() == ErrorCode::UnbornBranch => None,
        Err(e) => return Err(e).with_context(|| format!("reading HEAD of {}", worktree.display())),
    };
    if let Some(parent) = &parent {
        if parent.tree_id() == tree_id {
            return Ok(None);
        }
    }
    let tree = repo
        .find_tree(tree_id)
        .with_context(|| format!("reading the new tree of {}", worktree.display()))?;
    let sig = signature(&repo)?;
    let message = compose_message(subject, body, trailers);
    let parents: Vec<&Commit> = parent.iter().collect();
    let id = repo
        .commit(Some("HEAD"), &sig, &sig, &message, &tree, &parents)
        .with_context(|| format!("committing on {head_ref} in {}", worktree.display()))?;
    if repo.state() != RepositoryState::Clean {
        // An agent's half-done merge or cherry-pick: its result is committed now.
        repo.cleanup_state()
            .with_context(|| format!("clearing the merge state of {}", worktree.display()))?;
    }
    Ok(Some(id.to_string()))
}

/// Paths (relative to the worktree) that differ between `base` and the
/// worktree's current state: committed since base, staged, unstaged, untracked.
pub fn touched_paths(worktree: &Path, base: &str) -> anyhow::Result<Vec<String>> {
    let repo = open_repo(worktree)?;
    let base_tree = repo
        .revparse_single(base)
        .and_then(|o| o.peel_to_tree())
        .with_context(|| format!("reading commit {base} in {}", worktree.display()))?;
    let head_tree = repo
        .head()
        .and_then(|h| h.peel_to_tree())
        .with_context(|| format!("reading HEAD of {}", worktree.display()))?;
    let mut paths = BTreeSet::new();
    let diff = repo
        .diff_tree_to_tree(Some(&base_tree), Some(&head_tree), None)
        .with_context(|| format!("comparing {base} with HEAD in {}", worktree.display()))?;
    paths.extend(diff_paths(&diff));
    paths.extend(
        dirty_paths(&repo)
            .with_context(|| format!("reading the status of {}", worktree.display()))?,
    );
    Ok(paths.into_iter().collect())
}

/// The diff of branch `loki/<id>` (or its worktree) against the merge base
/// with `target`, as a unified patch.
pub fn diff_against_target(root: &Path, id: &str, target: &str) -> anyhow::Result<String> {
    check_id(id)?;
    let repo = open_repo(root)?;
    let branch = branch_name(id);
    let t = branch_oid(&repo, root, target)?;
    let b = branch_oid(&repo, root, &branch)?;
    let base = merge_base(&repo, b, t, &branch, target)?;
    let ctx = || format!("diffing {branch} against {target} in {}", root.display());
    let base_tree_id = repo.find_commit(base).with_context(ctx)?.tree_id();

    let mut opts = DiffOptions::new();
    opts.include_untracked(true)
        .recurse_untracked_dirs(true)
        .show_untracked_content(true);

    let path = Layout::new(root).worktree(id);
    let healthy = find_registration(&repo, &path)?
        .map(|wt| wt.validate().is_ok())
        .unwrap_or(false);
    if healthy {
        if let Ok(wrepo) = Repository::open(&path) {
            let base_tree = wrepo.find_tree(base_tree_id).with_context(ctx)?;
            let diff = wrepo
                .diff_tree_to_workdir_with_index(Some(&base_tree), Some(&mut opts))
                .with_context(ctx)?;
            return patch_text(&diff).with_context(ctx);
        }
    }
    let base_tree = repo.find_tree(base_tree_id).with_context(ctx)?;
    let b_tree = repo
        .find_commit(b)
        .and_then(|c| c.tree())
        .with_context(ctx)?;
    let diff = repo
        .diff_tree_to_tree(Some(&base_tree), Some(&b_tree), Some(&mut opts))
        .with_context(ctx)?;
    patch_text(&diff).with_context(ctx)
}

fn patch_text(diff: &Diff) -> Result<String, git2::Error> {
    let mut out = Vec::new();
    diff.print(DiffFormat::Patch, |_delta, _hunk, line| {
        if matches!(line.origin(), '+' | '-' | ' ') {
            out.push(line.origin() as u8);
        }
        out.extend_from_slice(line.content());
        true
    })?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}
