//! Merging a stream into its target, one at a time, in memory, and what a
//! merge killed midway leaves for the next supervisor to finish: the journal
//! naming the merge in flight and the target's abandoned git locks.
//!
//! Decisions worth knowing:
//!
//! - **Already merged, by git's word.** A branch whose head is already in
//!   the target counts as merged ([`MergeOutcome::AlreadyMerged`]) only when
//!   the target's first-parent line holds loki's `Merge stream <id>` commit
//!   (with its `Loki-Stream` trailer) whose second parent is or descends from
//!   that head: a supervisor killed after moving the ref. Otherwise
//!   ([`MergeOutcome::NotCredited`]) the stream changed nothing, or something
//!   other than loki moved the target or the branch (an agent's
//!   `git update-ref`): no credit for work loki never merged. Commit the
//!   worktree ([`super::commit_stream`]) before merging.
//! - **Compare-and-swap.** The target ref moves with `reference_matching`:
//!   if it moved underneath (the user's `git commit`, another tool), the merge
//!   is redone on the new head, up to `MAX_MERGE_TRIES` times.
//! - **The journal.** Between the ref update and the checkout update a file
//!   in the git dir names the merge commit, so a supervisor killed then has
//!   its checkout update finished by the next merge (see `checkout.rs`).
//! - **Serialised merges.** Merges inside one process take the target's
//!   lock (the design has one merge worker anyway), never the worktrees'
//!   one: a worktree being prepared or removed does not hold a merge up.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use git2::{ErrorCode, Oid, Repository};

use super::checkout::{
    behind_note, checkout_marker, checkouts_of, read_checkout_marker, resync_checkouts,
    update_checkout_in, user_conflicts,
};
use super::tree_merge::{changed_paths, merge_by_subtree};
use super::{
    branch_oid, check_id, compose_message, open_checkout, open_repo, signature, target_lock,
    worktrees_lock,
};
use crate::model::paths::branch_name;

/// How often a merge is redone because the target moved (or its ref was
/// locked) before giving up.
const MAX_MERGE_TRIES: u32 = 50;

#[derive(Debug, Clone, PartialEq)]
pub enum MergeOutcome {
    /// The target now points at this merge commit. `checkout_behind`: the
    /// user's checkout could not be brought up to date (why, and how to do
    /// it by hand); the merge itself is done.
    Merged {
        commit: String,
        checkout_behind: Option<String>,
    },
    /// The branch was merged before (its head is already in the target).
    /// `checkout_behind`: a checkout that a killed merge left half-updated
    /// could not be completed (why, and how to do it by hand).
    AlreadyMerged { checkout_behind: Option<String> },
    /// The branch's head is in the target, but no merge of loki's brought it
    /// there (why, and what to do).
    NotCredited { why: String },
    /// Conflicting paths; the target is untouched.
    Conflict { paths: Vec<String> },
    /// The user's checkout has changes on paths the merge touches.
    UserChanges { paths: Vec<String> },
    /// A shared remote could not be reached: nothing was merged; the merge
    /// is tried again later.
    Unreachable { why: String },
}

/// Merges branch `loki/<id>` into `target` as described in the module doc.
pub fn merge_stream(
    root: &Path,
    id: &str,
    target: &str,
    subject: &str,
    trailers: &[(String, String)],
) -> anyhow::Result<MergeOutcome> {
    merge_stream_with_hook(root, id, target, subject, trailers, &mut |_| {})
}

/// [`merge_stream`], calling `before_ref_update(try)` after the merge commit
/// is made and before the target ref is swapped (`try` counts from 0). Tests
/// use it to move the target underneath a merge.
#[doc(hidden)]
pub fn merge_stream_with_hook(
    root: &Path,
    id: &str,
    target: &str,
    subject: &str,
    trailers: &[(String, String)],
    before_ref_update: &mut dyn FnMut(u32),
) -> anyhow::Result<MergeOutcome> {
    check_id(id)?;
    let _serial = target_lock();
    let repo = open_repo(root)?;
    let branch = branch_name(id);
    let target_ref = format!("refs/heads/{target}");
    let sig = signature(&repo)?;
    let message = compose_message(subject, "", trailers);
    let ctx = || format!("merging {branch} into {target} in {}", root.display());
    // A merge a killed supervisor left half-written into the checkouts is
    // finished before anything else moves the target.
    let journal = merge_journal(&repo, &target_ref);
    let earlier = finish_journaled_merge(&repo, &target_ref, &journal).with_context(ctx)?;
    let joined = |b: Option<String>| match (earlier.clone(), b) {
        (Some(a), Some(b)) => Some(format!("{a}; {b}")),
        (a, b) => a.or(b),
    };

    for attempt in 0..MAX_MERGE_TRIES {
        let t = branch_oid(&repo, root, target)?;
        let b = branch_oid(&repo, root, &branch)?;
        // Computed once, for both questions: is the branch in the target
        // already (its own head is the one base), and what is merged.
        let bases = merge_bases_of(&repo, t, b).with_context(ctx)?;
        if t == b || bases == [b] {
            if loki_merge_of(&repo, t, id, b).with_context(ctx)?.is_none() {
                let short = &b.to_string()[..10];
                return Ok(MergeOutcome::NotCredited {
                    why: format!(
                        "{branch} ({short}) is already in {target}, but no `Merge stream {id}` commit of loki's brought it there: the stream changed nothing, or something other than loki moved {target} or {branch} (an agent's `git update-ref` or `git checkout`?)\n  help: `git log --oneline -3 {target}` shows what moved it; `loki retry {id}` runs the stream again"
                    ),
                });
            }
            // A supervisor killed between moving the ref and updating the
            // checkout left the checkout behind: finish that now.
            let behind = resync_checkouts(&repo, &target_ref, t).with_context(ctx)?;
            return Ok(MergeOutcome::AlreadyMerged {
                checkout_behind: joined(behind),
            });
        }
        let tree_id = match merged_tree_over(&repo, t, b, &bases).with_context(ctx)? {
            Ok(tree) => tree,
            Err(paths) => return Ok(MergeOutcome::Conflict { paths }),
        };
        let t_commit = repo.find_commit(t).with_context(ctx)?;
        let b_commit = repo.find_commit(b).with_context(ctx)?;
        let new_tree = repo.find_tree(tree_id).with_context(ctx)?;
        let t_tree = t_commit.tree().with_context(ctx)?;
        let changed = changed_paths(&repo, t_tree.id(), tree_id).with_context(ctx)?;

        let checkouts = checkouts_of(&repo, &target_ref).with_context(ctx)?;
        // One handle of each checkout for both the check and the update, so
        // its index is read once.
        let mut handles = Vec::with_capacity(checkouts.len());
        let mut blocked = BTreeSet::new();
        for wt in &checkouts {
            let checking = || format!("checking your changes in {}", wt.display());
            let wrepo = open_checkout(wt).with_context(checking)?;
            blocked.extend(user_conflicts(&wrepo, wt, &t_tree, &changed).with_context(checking)?);
            handles.push(wrepo);
        }
        if !blocked.is_empty() {
            return Ok(MergeOutcome::UserChanges {
                paths: blocked.into_iter().collect(),
            });
        }

        let commit = repo
            .commit(
                None,
                &sig,
                &sig,
                &message,
                &new_tree,
                &[&t_commit, &b_commit],
            )
            .with_context(ctx)?;
        before_ref_update(attempt);
        // Says, should this process die before the checkouts are updated,
        // which merge the next one must finish writing into them.
        crate::util::write_atomic(&journal, format!("{commit}\n").as_bytes()).with_context(ctx)?;
        match repo.reference_matching(
            &target_ref,
            commit,
            true,
            t,
            &format!("loki: merge stream {id}"),
        ) {
            Ok(_) => {}
            Err(e) if e.code() == ErrorCode::Modified => continue,
            Err(e) if e.code() == ErrorCode::Locked => {
                std::thread::sleep(Duration::from_millis(20 * u64::from(attempt + 1).min(10)));
                continue;
            }
            Err(e) => return Err(e).with_context(ctx),
        }

        // The merge is done once the ref moved: a checkout that cannot be
        // updated now (its index locked by the user's own git, say) is
        // reported, never a reason to call the merge failed.
        let mut behind = Vec::new();
        if !changed.is_empty() {
            for (wt, wrepo) in checkouts.iter().zip(handles) {
                if let Err(e) = update_checkout_in(wrepo, tree_id, &changed) {
                    behind.push(behind_note(wt, target, &e));
                }
            }
        }
        let _ = fs::remove_file(&journal);
        return Ok(MergeOutcome::Merged {
            commit: commit.to_string(),
            checkout_behind: joined((!behind.is_empty()).then(|| behind.join("; "))),
        });
    }
    bail!(
        "{target} kept moving while merging {branch} in {} ({MAX_MERGE_TRIES} tries)\n  help: try again when nothing else is committing to {target}",
        root.display()
    )
}

/// What [`refresh_stream`] did to a stream's branch.
#[derive(Debug, Clone, PartialEq)]
pub enum Refresh {
    /// The branch already holds the target's head.
    UpToDate,
    /// A merge of the target is now the branch's head; the worktree holds it.
    /// `target`: the target's head it merged, the stream's new base.
    Merged { commit: String, target: String },
    /// Merging the target conflicts on these paths; nothing was changed.
    Conflict { paths: Vec<String> },
}

/// Brings branch `loki/<id>` up to date with `target` before a stream runs
/// again after a failure: a two-parent merge of the target into the branch
/// (recorded in its history, `Loki-Stream` trailer), the worktree's files
/// and index set to it. A stream that reruns then reads inputs, prompts'
/// sources and whatever a fix changed as the target has them now. The
/// worktree holds nothing uncommitted at that point (each attempt's work is
/// committed when it ends), so its files are simply replaced. The branch
/// moves with a compare-and-swap.
pub fn refresh_stream(root: &Path, id: &str, target: &str) -> anyhow::Result<Refresh> {
    check_id(id)?;
    let _serial = worktrees_lock();
    let repo = open_repo(root)?;
    let branch = branch_name(id);
    let branch_ref = format!("refs/heads/{branch}");
    let ctx = || format!("merging {target} into {branch} in {}", root.display());
    let t = branch_oid(&repo, root, target)?;
    let b = branch_oid(&repo, root, &branch)?;
    if t == b || repo.graph_descendant_of(b, t).with_context(ctx)? {
        return Ok(Refresh::UpToDate);
    }
    let t_commit = repo.find_commit(t).with_context(ctx)?;
    let b_commit = repo.find_commit(b).with_context(ctx)?;
    let mut index = repo
        .merge_commits(&b_commit, &t_commit, None)
        .with_context(ctx)?;
    if index.has_conflicts() {
        return Ok(Refresh::Conflict {
            paths: conflict_paths(&index).with_context(ctx)?,
        });
    }
    let tree_id = index.write_tree_to(&repo).with_context(ctx)?;
    let tree = repo.find_tree(tree_id).with_context(ctx)?;
    let sig = signature(&repo)?;
    let message = compose_message(
        &format!("loki: bring {branch} up to date with {target}"),
        &format!("The stream runs again after a failure: it starts from what {target} holds now."),
        &[(crate::model::trailers::STREAM.into(), id.to_string())],
    );
    let commit = repo
        .commit(None, &sig, &sig, &message, &tree, &[&b_commit, &t_commit])
        .with_context(ctx)?;
    repo.reference_matching(
        &branch_ref,
        commit,
        true,
        b,
        &format!("loki: refresh {branch}"),
    )
    .with_context(ctx)?;
    let (wrepo, _) = super::integrity::open_stream_worktree(&repo, root, id)?;
    let mut opts = git2::build::CheckoutBuilder::new();
    opts.force();
    // The worktree's own handle on the tree: libgit2 checks out only
    // objects looked up through the repository doing the checkout.
    let wtree = wrepo.find_tree(tree_id).with_context(ctx)?;
    wrepo
        .checkout_tree(wtree.as_object(), Some(&mut opts))
        .with_context(|| format!("writing the merge of {target} into the worktree of {id}"))?;
    Ok(Refresh::Merged {
        commit: commit.to_string(),
        target: t.to_string(),
    })
}

/// loki's merge of stream `id` on `t`'s first-parent line that brought in
/// `b` (its second parent is `b` or descends from it), if any.
pub(super) fn loki_merge_of(
    repo: &Repository,
    t: Oid,
    id: &str,
    b: Oid,
) -> Result<Option<Oid>, git2::Error> {
    for oid in super::history::first_parent_line(repo, t)? {
        let commit = repo.find_commit(oid)?;
        if super::history::merged_stream_of(&commit).as_deref() != Some(id) {
            continue;
        }
        let p2 = commit.parent_id(1)?;
        if (p2 == b || repo.graph_descendant_of(p2, b)?) && merge_tree_is_honest(repo, &commit)? {
            return Ok(Some(oid));
        }
    }
    Ok(None)
}

/// Whether a merge commit's tree is what merging its two parents gives: a
/// commit that only says `Merge stream <id>` (made by hand, or by an agent
/// with `git commit-tree`) with some other tree is no merge of loki's.
fn merge_tree_is_honest(repo: &Repository, merge: &git2::Commit) -> Result<bool, git2::Error> {
    Ok(merged_tree(repo, merge.parent_id(0)?, merge.parent_id(1)?)? == Ok(merge.tree_id()))
}

/// The tree of `b` merged into `t`, in memory, or the paths that conflict.
pub(super) fn merged_tree(
    repo: &Repository,
    t: Oid,
    b: Oid,
) -> Result<Result<Oid, Vec<String>>, git2::Error> {
    merged_tree_over(repo, t, b, &merge_bases_of(repo, t, b)?)
}

/// The merge bases of `t` and `b` (an error for unrelated histories: no
/// stream's branch can be one).
fn merge_bases_of(repo: &Repository, t: Oid, b: Oid) -> Result<Vec<Oid>, git2::Error> {
    Ok(repo.merge_bases(t, b)?.iter().copied().collect())
}

/// [`merged_tree`] given the merge bases of `t` and `b`.
fn merged_tree_over(
    repo: &Repository,
    t: Oid,
    b: Oid,
    bases: &[Oid],
) -> Result<Result<Oid, Vec<String>>, git2::Error> {
    let t_commit = repo.find_commit(t)?;
    let b_commit = repo.find_commit(b)?;
    // One merge base (libgit2 would merge several into a virtual one first)
    // and only folders that differ: the merge costs what changed.
    if let [base] = bases {
        let base_tree = repo.find_commit(*base)?.tree_id();
        let quick = merge_by_subtree(repo, base_tree, t_commit.tree_id(), b_commit.tree_id())?;
        if let Some(tree) = quick {
            return Ok(Ok(tree));
        }
    }
    let mut index = repo.merge_commits(&t_commit, &b_commit, None)?;
    if index.has_conflicts() {
        return Ok(Err(conflict_paths(&index)?));
    }
    index.write_tree_to(repo).map(Ok)
}

pub(super) fn conflict_paths(index: &git2::Index) -> Result<Vec<String>, git2::Error> {
    let mut paths = BTreeSet::new();
    for conflict in index.conflicts()? {
        let conflict = conflict?;
        for entry in [&conflict.our, &conflict.their, &conflict.ancestor]
            .into_iter()
            .flatten()
        {
            paths.insert(String::from_utf8_lossy(&entry.path).into_owned());
        }
    }
    Ok(paths.into_iter().collect())
}

/// `<git common dir>/loki/merge-in-flight-<hash of the target ref>`: the
/// merge commit whose checkout update is under way (one per target, so a
/// rehearsal's scratch target and the real one never share it).
fn merge_journal(repo: &Repository, target_ref: &str) -> PathBuf {
    repo.commondir().join("loki").join(format!(
        "merge-in-flight-{:016x}",
        crate::util::fnv1a(target_ref.as_bytes())
    ))
}

/// The journal file a merge into `target` keeps while it updates the
/// checkouts (tests write it to stand for a supervisor killed then).
pub fn merge_journal_path(root: &Path, target: &str) -> anyhow::Result<PathBuf> {
    let repo = open_repo(root)?;
    Ok(merge_journal(&repo, &format!("refs/heads/{target}")))
}

/// Finishes the checkout update of the merge the journal names, if that
/// merge reached the target (a kill before the ref moved leaves a journal
/// naming a commit that never landed: nothing to do). Returns what could
/// not be brought up to date.
fn finish_journaled_merge(
    repo: &Repository,
    target_ref: &str,
    journal: &Path,
) -> Result<Option<String>> {
    let Ok(text) = fs::read_to_string(journal) else {
        return Ok(None);
    };
    let mut behind = None;
    if let Ok(merge) = Oid::from_str(text.trim()) {
        let head = repo.refname_to_id(target_ref).ok();
        let landed =
            head.is_some_and(|h| h == merge || repo.graph_descendant_of(h, merge).unwrap_or(false));
        if landed && repo.find_commit(merge).is_ok() {
            behind = resync_checkouts(repo, target_ref, merge)?;
        }
    }
    let _ = fs::remove_file(journal);
    Ok(behind)
}

/// What [`clear_abandoned_target_locks`] did.
#[derive(Debug, Default, PartialEq)]
pub struct LockCleanup {
    pub removed: Vec<PathBuf>,
    /// Locks left alone because they may be the user's own (`git commit -a`
    /// keeps `index.lock`, closed, for as long as its editor is open).
    pub kept: Vec<PathBuf>,
}

/// Removes the git locks a merge killed midway can leave on the target.
///
/// - `refs/heads/<target>.lock`: git holds a ref lock only for the instant
///   of the update, so one that no process has open and that is at least
///   `min_age` old (a younger one is waited for) is abandoned.
/// - The `index.lock` of a checkout of the target: only when loki's own
///   checkout of it was in flight (the marker `checkout::update_checkout` leaves
///   names it) and the lock dates from then; any other is kept and
///   reported, since the user's `git commit -a` holds one, closed, while
///   its editor is open.
///
/// Call only under the supervisor lock, and only when the previous
/// supervisor had a merge in flight.
pub fn clear_abandoned_target_locks(
    root: &Path,
    target: &str,
    min_age: Duration,
) -> anyhow::Result<LockCleanup> {
    let _serial = target_lock();
    let repo = open_repo(root)?;
    let target_ref = format!("refs/heads/{target}");
    let marker = checkout_marker(&repo);
    let in_flight = marker.as_deref().and_then(read_checkout_marker);
    let mut locks = vec![(repo.path().join(format!("{target_ref}.lock")), false)];
    for dir in checkouts_of(&repo, &target_ref)? {
        if let Ok(w) = Repository::open(&dir) {
            locks.push((w.path().join("index.lock"), true));
        }
    }
    let mut out = LockCleanup::default();
    for (lock, is_index) in locks {
        let Ok(meta) = lock.symlink_metadata() else {
            continue;
        };
        let mtime = meta.modified().ok();
        let age = mtime.and_then(|m| m.elapsed().ok()).unwrap_or_default();
        if is_index {
            let ours = in_flight.as_ref().is_some_and(|(path, started)| {
                *path == lock
                    && mtime.is_some_and(|m| {
                        m + Duration::from_secs(1) >= *started
                            && m <= *started + Duration::from_secs(60)
                    })
            });
            if !ours {
                out.kept.push(lock);
                continue;
            }
        }
        if age < min_age {
            std::thread::sleep(min_age - age);
        }
        if !lock.exists() {
            continue;
        }
        if is_open_by_any_process(&lock) {
            out.kept.push(lock);
            continue;
        }
        fs::remove_file(&lock)
            .with_context(|| format!("removing the abandoned lock {}", lock.display()))?;
        out.removed.push(lock);
    }
    if let Some(m) = marker {
        let _ = fs::remove_file(m);
    }
    Ok(out)
}

/// Whether some process has `path` open (a link in `/proc/<pid>/fd/`).
/// Processes whose descriptors cannot be read count as not having it.
fn is_open_by_any_process(path: &Path) -> bool {
    let Ok(procs) = fs::read_dir("/proc") else {
        return true; // cannot tell: assume it is in use
    };
    for p in procs.flatten() {
        if !p
            .file_name()
            .to_string_lossy()
            .bytes()
            .all(|b| b.is_ascii_digit())
        {
            continue;
        }
        let Ok(fds) = fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        if fds
            .flatten()
            .any(|fd| fs::read_link(fd.path()).is_ok_and(|t| t == path))
        {
            return true;
        }
    }
    false
}
