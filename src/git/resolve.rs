//! A merge conflict handed to a resolver attempt: the target merged into
//! the stream's branch in its worktree, git's conflict markers left in the
//! files (as `git merge` leaves them), and afterwards what the resolver
//! left checked: no marker, and no change outside the conflicted paths and
//! the stream's own outputs relative to what the merge made of every other
//! path. The resolution is committed by [`super::commit_resolution`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{Context, Result};
use git2::{Oid, Repository};

use super::integrity::open_stream_worktree;
use super::{branch_oid, check_id, open_repo, worktrees_lock};
use crate::model::paths::branch_name;

/// What a resolver is given.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolution {
    /// Paths git could not merge, now holding its conflict markers.
    pub conflicted: Vec<String>,
    /// The target's commit that was merged: the resolution's second parent.
    pub target_head: String,
    /// Subjects of the stream's commits since the two sides parted.
    pub ours: Vec<String>,
    /// Subjects of the target's commits since then.
    pub theirs: Vec<String>,
}

/// Merges `target` into branch `loki/<id>` in its worktree, leaving the
/// conflicts as `git merge` does (markers in the files, MERGE_HEAD).
pub fn start_resolution(root: &Path, id: &str, target: &str) -> Result<Resolution> {
    check_id(id)?;
    let _serial = worktrees_lock();
    let repo = open_repo(root)?;
    let branch = branch_name(id);
    let ctx = || format!("merging {target} into {branch} in its worktree");
    let t = branch_oid(&repo, root, target)?;
    let b = branch_oid(&repo, root, &branch)?;
    let (wrepo, _) = open_stream_worktree(&repo, root, id)?;
    // A resolver cut off earlier left its merge half-done: start it again
    // from the branch (what it had written is not kept).
    if wrepo.state() != git2::RepositoryState::Clean {
        wrepo.cleanup_state().with_context(ctx)?;
        let head = wrepo.find_commit(b).with_context(ctx)?;
        let mut hard = git2::build::CheckoutBuilder::new();
        hard.force().remove_untracked(true);
        wrepo
            .reset(head.as_object(), git2::ResetType::Hard, Some(&mut hard))
            .with_context(ctx)?;
    }
    let annotated = wrepo.find_annotated_commit(t).with_context(ctx)?;
    let mut checkout = git2::build::CheckoutBuilder::new();
    checkout
        .allow_conflicts(true)
        .conflict_style_merge(true)
        .force();
    wrepo
        .merge(&[&annotated], None, Some(&mut checkout))
        .with_context(ctx)?;
    let index = wrepo.index().with_context(ctx)?;
    let mut conflicted = BTreeSet::new();
    for c in index.conflicts().with_context(ctx)? {
        let c = c.with_context(ctx)?;
        for e in [c.our, c.their, c.ancestor].into_iter().flatten() {
            conflicted.insert(String::from_utf8_lossy(&e.path).into_owned());
        }
    }
    let base = repo.merge_base(b, t).with_context(ctx)?;
    Ok(Resolution {
        conflicted: conflicted.into_iter().collect(),
        target_head: t.to_string(),
        ours: subjects(&repo, b, base)?,
        theirs: subjects(&repo, t, base)?,
    })
}

/// First lines of the commits from `from` back to (not including) `until`,
/// newest first, at most 20.
fn subjects(repo: &Repository, from: Oid, until: Oid) -> Result<Vec<String>> {
    let mut walk = repo.revwalk().context("walking history")?;
    walk.push(from).context("walking history")?;
    walk.hide(until).context("walking history")?;
    let mut out = Vec::new();
    for oid in walk.take(20) {
        let c = repo
            .find_commit(oid.context("walking history")?)
            .context("reading a commit")?;
        out.push(c.summary().unwrap_or("").to_string());
    }
    Ok(out)
}

/// What is wrong with the resolver's work in the worktree of `id`, given
/// the target's commit it merged and the paths it may change (the
/// conflicted ones and the stream's outputs): files still holding a
/// conflict marker, and paths whose content differs from what the merge
/// made of them (a change the conflict did not call for). Both empty: the
/// resolution may be committed.
pub fn resolution_problems(
    root: &Path,
    id: &str,
    target_head: &str,
    may_change: &[String],
) -> Result<(Vec<String>, Vec<String>)> {
    check_id(id)?;
    let repo = open_repo(root)?;
    let branch = branch_name(id);
    let ctx = || format!("checking the resolution of {branch}");
    let b = branch_oid(&repo, root, &branch)?;
    let t = Oid::from_str(target_head).with_context(ctx)?;
    let ours = repo.find_commit(b).with_context(ctx)?;
    let theirs = repo.find_commit(t).with_context(ctx)?;
    let merged = repo.merge_commits(&ours, &theirs, None).with_context(ctx)?;
    let mut expected: BTreeMap<String, Oid> = BTreeMap::new();
    let mut conflicted: BTreeSet<String> = BTreeSet::new();
    for e in merged.iter() {
        let path = String::from_utf8_lossy(&e.path).into_owned();
        let stage = (e.flags >> 12) & 0x3;
        if stage == 0 {
            expected.insert(path, e.id);
        } else {
            conflicted.insert(path);
        }
    }
    let (wrepo, _) = open_stream_worktree(&repo, root, id)?;
    let wt = crate::model::Layout::new(root).worktree(id);
    let allowed = |p: &str| {
        conflicted.contains(p) || may_change.iter().any(|o| crate::util::glob_match(o, p))
    };
    let mut markers = Vec::new();
    let mut strays = Vec::new();
    let mut seen = BTreeSet::new();
    for rel in crate::util::files_under(&wt, "") {
        if wrepo.status_should_ignore(Path::new(&rel)).unwrap_or(false)
            && !expected.contains_key(&rel)
        {
            continue;
        }
        seen.insert(rel.clone());
        let bytes = std::fs::read(wt.join(&rel)).unwrap_or_default();
        if has_marker(&bytes) {
            markers.push(rel.clone());
        }
        let now = Oid::hash_object(git2::ObjectType::Blob, &bytes).with_context(ctx)?;
        let changed = expected.get(&rel) != Some(&now);
        if changed && !allowed(&rel) {
            strays.push(rel);
        }
    }
    for p in expected.keys() {
        if !seen.contains(p) && !allowed(p) {
            strays.push(format!("{p} (deleted)"));
        }
    }
    Ok((markers, strays))
}

/// A line git writes around a conflict: `<<<<<<< `, `=======`, `>>>>>>> `.
fn has_marker(bytes: &[u8]) -> bool {
    String::from_utf8_lossy(bytes).lines().any(|l| {
        l.starts_with("<<<<<<< ")
            || l.starts_with(">>>>>>> ")
            || l == "<<<<<<<"
            || l == ">>>>>>>"
            || l == "======="
    })
}
