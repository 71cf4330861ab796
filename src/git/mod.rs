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
//!
//! Decisions worth knowing:
//!
//! - **Worktree names.** git's administrative name of a stream's worktree is
//!   `loki-<id>` (`.git/worktrees/loki-<id>`), with a numeric suffix if that
//!   name is taken. Existing worktrees are found by *path*, so a worktree the
//!   user made with `git worktree add .loki/worktrees/<id> loki/<id>` is
//!   reused too.
//! - **Base.** [`Worktree::base`] is the commit the branch forked from the
//!   target: the target's head for a new branch, the merge base of branch and
//!   target for an existing one.
//! - **Already merged.** A branch whose head is the target's head or one of
//!   its ancestors has nothing to merge: [`MergeOutcome::AlreadyMerged`]. That
//!   includes a branch without any commit of its own, so commit the worktree
//!   ([`commit_all`]) before merging.
//! - **The user's checkout.** Every worktree (the main one and any linked one)
//!   that has the target checked out is checked before the ref moves: a path
//!   the merge changes must be unmodified there (index and working tree), and
//!   a path the merge adds must not exist on disk (untracked *or ignored*),
//!   nor may a file or symlink sit where the merge needs a folder. If the
//!   checkout is in the middle of a merge, rebase or cherry-pick, every dirty
//!   path counts. After the ref moved, exactly the merge's paths are written
//!   (a checkout limited to those paths, staged in the git dir and renamed
//!   into place file by file, so a kill never leaves a half-written file);
//!   staged and unstaged changes on any other path stay as they were.
//! - **Serialised merges.** Merges inside one process take a global lock (the
//!   design has one merge worker anyway); other writers (the user's
//!   `git commit`, another tool) are handled by the compare-and-swap.

pub mod tree;
pub use tree::{valid_branch_name, BranchTree, TreeEntry};

use std::collections::BTreeSet;
use std::fs;
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use git2::build::CheckoutBuilder;
use git2::{
    BranchType, Commit, Diff, DiffFormat, DiffOptions, ErrorCode, IndexAddOption, Oid, Reference,
    Repository, RepositoryState, Signature, StatusOptions, Tree, WorktreeAddOptions,
    WorktreePruneOptions,
};

/// Identity used when the repo has no `user.name` / `user.email`.
pub const FALLBACK_NAME: &str = "loki";
pub const FALLBACK_EMAIL: &str = "loki@localhost";

/// How often a merge is redone because the target moved (or its ref was
/// locked) before giving up.
const MAX_MERGE_TRIES: u32 = 50;

/// Changes to the repository's structure in this process run one at a
/// time: merges, worktree additions and removals, branch deletions.
/// libgit2's worktree add, prune and "is this branch checked out" scans are
/// not safe to interleave on one repository (seen: a worktree add failing
/// with "already checked out" while another worktree was being removed).
static REPO_LOCK: Mutex<()> = Mutex::new(());

fn repo_lock() -> std::sync::MutexGuard<'static, ()> {
    REPO_LOCK
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

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
    /// Conflicting paths; the target is untouched.
    Conflict { paths: Vec<String> },
    /// The user's checkout has changes on paths the merge touches.
    UserChanges { paths: Vec<String> },
}

/// Root of the main worktree of the repo containing `dir`.
/// Errors say "not a git repository" or "the repository has no commit yet".
pub fn repo_root(dir: &Path) -> anyhow::Result<PathBuf> {
    if !dir.exists() {
        bail!("the folder {} does not exist", dir.display());
    }
    let repo = match Repository::discover(dir) {
        Ok(repo) => repo,
        Err(e) if e.code() == ErrorCode::NotFound => bail!(
            "not a git repository (or any parent): {}\n  help: run `git init` there and make a first commit, or run loki inside a git repository",
            dir.display()
        ),
        Err(e) => {
            return Err(e)
                .with_context(|| format!("opening the git repository around {}", dir.display()))
        }
    };
    let main = if repo.is_worktree() {
        let common = repo.commondir().to_path_buf();
        Repository::open(&common).with_context(|| {
            format!(
                "opening the main repository ({}) of the worktree at {}",
                common.display(),
                dir.display()
            )
        })?
    } else {
        repo
    };
    let Some(workdir) = main.workdir() else {
        bail!(
            "the repository at {} is bare (it has no working tree)\n  help: run loki in a clone with a working tree",
            main.path().display()
        );
    };
    let root = normalize(workdir);
    match main.head() {
        Ok(_) => {}
        Err(e) if matches!(e.code(), ErrorCode::UnbornBranch | ErrorCode::NotFound) => {
            let has_branch = main
                .branches(Some(BranchType::Local))
                .map(|mut b| b.next().is_some())
                .unwrap_or(false);
            if !has_branch {
                bail!(
                    "the repository at {} has no commit yet\n  help: make a first commit (for example `git add -A && git commit -m \"first commit\"`), then try again",
                    root.display()
                );
            }
        }
        Err(e) => {
            return Err(e)
                .with_context(|| format!("reading HEAD of the repository at {}", root.display()))
        }
    }
    Ok(root)
}

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

/// Creates (or reuses) branch `loki/<id>` and worktree `.loki/worktrees/<id>`.
/// A new branch starts at the target's head. An existing branch is reused
/// as it is (it holds earlier attempts); an existing healthy worktree is
/// reused; a stale worktree registration (folder gone) is pruned first.
pub fn prepare_worktree(root: &Path, id: &str, target: &str) -> anyhow::Result<Worktree> {
    check_id(id)?;
    let _serial = repo_lock();
    let repo = open_repo(root)?;
    let branch = branch_name(id);
    let path = worktree_path(root, id);
    let dir = worktrees_dir(root);
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let target_head = branch_oid(&repo, root, target)?;

    // A registration for this folder: reuse it when healthy, prune it when
    // its folder is gone.
    if let Some(wt) = find_registration(&repo, &path)? {
        let folder_exists = path.symlink_metadata().is_ok();
        if folder_exists {
            let wrepo = match (wt.validate(), Repository::open(&path)) {
                (Ok(()), Ok(wrepo)) => Some(wrepo),
                // A registration half-written by a killed supervisor: the
                // folder is set aside (nothing is deleted) and made again.
                _ => None,
            };
            let Some(wrepo) = wrepo else {
                set_aside(root, &path)?;
                let _ = wt.prune(Some(
                    WorktreePruneOptions::new()
                        .valid(true)
                        .locked(true)
                        .working_tree(false),
                ));
                drop(repo);
                drop(_serial);
                return prepare_worktree(root, id, target);
            };
            let head = head_branch_ref(&wrepo)
                .with_context(|| format!("reading HEAD of the worktree {}", path.display()))?;
            let wanted = format!("refs/heads/{branch}");
            if head.as_deref() != Some(wanted.as_str()) {
                let on = head
                    .map(|h| format!("branch {}", h.trim_start_matches("refs/heads/")))
                    .unwrap_or_else(|| "a detached HEAD".to_string());
                bail!(
                    "the worktree {} is on {on}, not on {branch}\n  help: switch it back (`git -C {} switch {branch}`) or remove it with `loki clean {id}`",
                    path.display(),
                    path.display()
                );
            }
            // A supervisor killed while libgit2 was checking the worktree out
            // leaves files missing and no index (written last). Finish the
            // checkout rather than reuse a half-empty tree, whose "deleted"
            // files a salvage commit would otherwise record.
            if !wrepo.path().join("index").exists() {
                let mut cb = CheckoutBuilder::new();
                cb.force();
                wrepo.checkout_head(Some(&mut cb)).with_context(|| {
                    format!("completing the interrupted checkout of {}", path.display())
                })?;
            }
            let head = branch_oid(&repo, root, &branch)?;
            let base = merge_base(&repo, head, target_head, &branch, target)?;
            return Ok(Worktree {
                path,
                branch,
                base: base.to_string(),
                reused: true,
            });
        }
        wt.prune(Some(
            WorktreePruneOptions::new()
                .valid(true)
                .locked(true)
                .working_tree(false),
        ))
        .with_context(|| {
            format!(
                "pruning the stale worktree registration {} (its folder {} is gone) in {}",
                wt.name().unwrap_or("?"),
                path.display(),
                root.display()
            )
        })?;
    }

    // A folder that is no worktree: never delete what is in it.
    if let Ok(meta) = path.symlink_metadata() {
        let empty_dir = meta.is_dir()
            && fs::read_dir(&path)
                .map(|mut entries| entries.next().is_none())
                .unwrap_or(false);
        if empty_dir {
            fs::remove_dir(&path)
                .with_context(|| format!("removing the empty folder {}", path.display()))?;
        } else {
            // .loki/worktrees/ is loki's, but what is in it may be work:
            // set it aside under .loki/set-aside/ instead of deleting it.
            set_aside(root, &path)?;
        }
    }

    let base = match repo.find_branch(&branch, BranchType::Local) {
        Ok(b) => {
            let head = b
                .get()
                .peel_to_commit()
                .with_context(|| format!("reading the head of {branch} in {}", root.display()))?
                .id();
            merge_base(&repo, head, target_head, &branch, target)?
        }
        Err(e) if e.code() == ErrorCode::NotFound => {
            let commit = repo
                .find_commit(target_head)
                .with_context(|| format!("reading the head of {target} in {}", root.display()))?;
            repo.branch(&branch, &commit, false).with_context(|| {
                format!("creating branch {branch} at {target} in {}", root.display())
            })?;
            target_head
        }
        Err(e) => {
            return Err(e)
                .with_context(|| format!("looking up branch {branch} in {}", root.display()))
        }
    };

    let reference = repo
        .find_reference(&format!("refs/heads/{branch}"))
        .with_context(|| format!("looking up branch {branch} in {}", root.display()))?;
    let name = free_worktree_name(&repo, id)?;
    add_worktree(&repo, &name, &path, &reference).with_context(|| {
        format!(
            "adding the worktree {} for branch {branch} in {}",
            path.display(),
            root.display()
        )
    })?;
    Ok(Worktree {
        path,
        branch,
        base: base.to_string(),
        reused: false,
    })
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
    let _serial = repo_lock();
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
        if t == b || repo.graph_descendant_of(t, b).with_context(ctx)? {
            // A supervisor killed between moving the ref and updating the
            // checkout left the checkout behind: finish that now.
            let behind = resync_checkouts(&repo, &target_ref, t).with_context(ctx)?;
            return Ok(MergeOutcome::AlreadyMerged {
                checkout_behind: joined(behind),
            });
        }
        let t_commit = repo.find_commit(t).with_context(ctx)?;
        let b_commit = repo.find_commit(b).with_context(ctx)?;
        let mut index = repo
            .merge_commits(&t_commit, &b_commit, None)
            .with_context(ctx)?;
        if index.has_conflicts() {
            return Ok(MergeOutcome::Conflict {
                paths: conflict_paths(&index).with_context(ctx)?,
            });
        }
        let tree_id = index.write_tree_to(&repo).with_context(ctx)?;
        let new_tree = repo.find_tree(tree_id).with_context(ctx)?;
        let t_tree = t_commit.tree().with_context(ctx)?;
        let changed = {
            let diff = repo
                .diff_tree_to_tree(Some(&t_tree), Some(&new_tree), None)
                .with_context(ctx)?;
            diff_paths(&diff)
        };

        let checkouts = checkouts_of(&repo, &target_ref).with_context(ctx)?;
        let mut blocked = BTreeSet::new();
        for wt in &checkouts {
            blocked.extend(
                user_conflicts(wt, &t_tree, &changed)
                    .with_context(|| format!("checking your changes in {}", wt.display()))?,
            );
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
            for wt in &checkouts {
                if let Err(e) = update_checkout(wt, tree_id, &changed) {
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

/// Removes the worktree folder and its registration (like `git worktree
/// remove --force` followed by prune). Only ever under `.loki/worktrees/`.
pub fn remove_worktree(root: &Path, id: &str) -> anyhow::Result<()> {
    check_id(id)?;
    let _serial = repo_lock();
    let repo = open_repo(root)?;
    let path = worktree_path(root, id);
    let dir = worktrees_dir(root);

    // `.loki` or `.loki/worktrees` being a symlink would put the folder
    // somewhere else: refuse rather than delete outside the repo.
    for p in [root.join(".loki"), dir.clone()] {
        if let Ok(meta) = p.symlink_metadata() {
            if !meta.is_dir() {
                bail!(
                    "{} is not a plain folder (a symlink?); loki removes worktrees only inside {}/.loki/worktrees/",
                    p.display(),
                    root.display()
                );
            }
        }
    }

    let registration = find_registration(&repo, &path)?;
    if let Some(wt) = &registration {
        if let git2::WorktreeLockStatus::Locked(reason) = wt
            .is_locked()
            .with_context(|| format!("reading the lock of the worktree {}", path.display()))?
        {
            bail!(
                "the worktree {} is locked{}; loki leaves it alone\n  help: `git worktree unlock {}` lets loki remove it",
                path.display(),
                reason.map(|r| format!(" ({r})")).unwrap_or_default(),
                path.display()
            );
        }
    }

    if let Ok(meta) = path.symlink_metadata() {
        if meta.is_dir() {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        }
        .with_context(|| format!("removing the worktree folder {}", path.display()))?;
    }

    if let Some(wt) = registration {
        wt.prune(Some(
            WorktreePruneOptions::new()
                .valid(true)
                .locked(false)
                .working_tree(false),
        ))
        .with_context(|| {
            format!(
                "pruning the worktree registration {} of {} in {}",
                wt.name().unwrap_or("?"),
                path.display(),
                root.display()
            )
        })?;
    }
    Ok(())
}

/// Deletes branch `loki/<id>` if it exists.
pub fn delete_branch(root: &Path, id: &str) -> anyhow::Result<()> {
    check_id(id)?;
    let _serial = repo_lock();
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

    let path = worktree_path(root, id);
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

// ---------------------------------------------------------------------------
// helpers

fn branch_name(id: &str) -> String {
    format!("loki/{id}")
}

fn worktrees_dir(root: &Path) -> PathBuf {
    root.join(".loki").join("worktrees")
}

fn worktree_path(root: &Path, id: &str) -> PathBuf {
    worktrees_dir(root).join(id)
}

/// Stream ids become folder and branch names: `[a-z0-9][a-z0-9._-]{0,63}`,
/// and whatever git refuses in a ref name (`..`, a trailing `.` or `.lock`).
fn check_id(id: &str) -> Result<()> {
    let ok_chars = id
        .bytes()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"._-".contains(&c));
    let ok_first = id
        .bytes()
        .next()
        .map(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        .unwrap_or(false);
    if !ok_chars
        || !ok_first
        || id.len() > 64
        || !Reference::is_valid_name(&format!("refs/heads/loki/{id}"))
    {
        bail!(
            "{id:?} is not a valid stream id\n  help: ids are 1-64 characters of a-z, 0-9, '.', '_' and '-', starting with a letter or digit (no '..', no trailing '.' or '.lock')"
        );
    }
    Ok(())
}

fn open_repo(path: &Path) -> Result<Repository> {
    Repository::open(path)
        .with_context(|| format!("opening the git repository at {}", path.display()))
}

/// The ref HEAD points at (`refs/heads/...`), or `None` when detached.
fn head_branch_ref(repo: &Repository) -> Result<Option<String>, git2::Error> {
    let head = repo.find_reference("HEAD")?;
    Ok(head.symbolic_target().map(str::to_string))
}

fn branch_oid(repo: &Repository, root: &Path, branch: &str) -> Result<Oid> {
    let b = match repo.find_branch(branch, BranchType::Local) {
        Ok(b) => b,
        Err(e) if e.code() == ErrorCode::NotFound => bail!(
            "branch {branch} does not exist in {}\n  help: `git branch` lists the branches; check the target in loki.toml",
            root.display()
        ),
        Err(e) => {
            return Err(e).with_context(|| format!("looking up branch {branch} in {}", root.display()))
        }
    };
    let commit = b
        .get()
        .peel_to_commit()
        .with_context(|| format!("reading the head of branch {branch} in {}", root.display()))?;
    Ok(commit.id())
}

fn merge_base(repo: &Repository, a: Oid, b: Oid, a_name: &str, b_name: &str) -> Result<Oid> {
    repo.merge_base(a, b).with_context(|| {
        format!(
            "{a_name} and {b_name} have no common commit in {}",
            repo.workdir().unwrap_or(repo.path()).display()
        )
    })
}

fn signature(repo: &Repository) -> Result<Signature<'static>> {
    let config = repo.config().ok();
    let get = |key: &str| {
        config
            .as_ref()
            .and_then(|c| c.get_string(key).ok())
            .filter(|v| !v.trim().is_empty())
    };
    let name = get("user.name").unwrap_or_else(|| FALLBACK_NAME.to_string());
    let email = get("user.email").unwrap_or_else(|| FALLBACK_EMAIL.to_string());
    // A name git2 refuses (with '<' or '>') falls back to loki's identity.
    Signature::now(&name, &email)
        .or_else(|_| Signature::now(FALLBACK_NAME, FALLBACK_EMAIL))
        .context("making a commit signature")
}

/// `subject`, a blank line and `body` (if any), a blank line and the
/// trailers as `Key: value` lines (one line each).
fn compose_message(subject: &str, body: &str, trailers: &[(String, String)]) -> String {
    let mut msg = subject.trim().to_string();
    let body = body.trim();
    if !body.is_empty() {
        msg.push_str("\n\n");
        msg.push_str(body);
    }
    if !trailers.is_empty() {
        msg.push_str("\n\n");
        for (key, value) in trailers {
            let key: String = key
                .trim()
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' {
                        c
                    } else {
                        '-'
                    }
                })
                .collect();
            let value = value.split_whitespace().collect::<Vec<_>>().join(" ");
            msg.push_str(&key);
            msg.push_str(": ");
            msg.push_str(&value);
            msg.push('\n');
        }
    } else {
        msg.push('\n');
    }
    msg
}

/// Lexically normalized path: no `.`, no trailing slash.
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

fn same_path(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => {
            // One of them is gone: compare the canonical parents.
            let canon = |p: &Path| {
                let p = normalize(p);
                match (
                    p.parent().and_then(|d| d.canonicalize().ok()),
                    p.file_name(),
                ) {
                    (Some(d), Some(f)) => d.join(f),
                    _ => p,
                }
            };
            canon(a) == canon(b)
        }
    }
}

/// The linked worktree registered for `path`, whatever its name.
fn find_registration(repo: &Repository, path: &Path) -> Result<Option<git2::Worktree>> {
    let names = repo
        .worktrees()
        .with_context(|| format!("listing the worktrees of {}", repo.path().display()))?;
    for name in names.iter().flatten() {
        let Ok(wt) = repo.find_worktree(name) else {
            continue;
        };
        if same_path(wt.path(), path) {
            return Ok(Some(wt));
        }
    }
    Ok(None)
}

/// `loki-<id>`, or `loki-<id>-<n>` if git already uses that name.
fn free_worktree_name(repo: &Repository, id: &str) -> Result<String> {
    let admin = repo.commondir().join("worktrees");
    let taken: BTreeSet<String> = repo
        .worktrees()
        .with_context(|| format!("listing the worktrees of {}", repo.path().display()))?
        .iter()
        .flatten()
        .map(str::to_string)
        .collect();
    (1..1000)
        .map(|n| {
            if n == 1 {
                format!("loki-{id}")
            } else {
                format!("loki-{id}-{n}")
            }
        })
        .find(|name| !taken.contains(name) && admin.join(name).symlink_metadata().is_err())
        .ok_or_else(|| {
            anyhow!(
                "no free worktree name for stream {id} in {}",
                admin.display()
            )
        })
}

/// `git worktree add` for an existing branch. libgit2 leaves a half-made
/// registration behind when it fails midway; remove what it made.
fn add_worktree(repo: &Repository, name: &str, path: &Path, reference: &Reference) -> Result<()> {
    let mut opts = WorktreeAddOptions::new();
    opts.reference(Some(reference));
    match repo.worktree(name, path, Some(&opts)) {
        Ok(_) => Ok(()),
        Err(e) => {
            let admin = repo.commondir().join("worktrees").join(name);
            if admin.is_dir() {
                let _ = fs::remove_dir_all(&admin);
            }
            if path.symlink_metadata().is_ok() {
                let _ = fs::remove_dir_all(path);
            }
            Err(e.into())
        }
    }
}

/// Paths on either side of every delta.
fn diff_paths(diff: &Diff) -> BTreeSet<String> {
    let mut paths = BTreeSet::new();
    for delta in diff.deltas() {
        for file in [delta.old_file(), delta.new_file()] {
            if let Some(p) = file.path() {
                paths.insert(p.to_string_lossy().into_owned());
            }
        }
    }
    paths
}

/// Staged, unstaged and untracked (recursing into untracked folders) paths.
fn dirty_paths(repo: &Repository) -> Result<BTreeSet<String>, git2::Error> {
    let mut opts = StatusOptions::new();
    opts.include_untracked(true)
        .recurse_untracked_dirs(true)
        .include_ignored(false)
        .exclude_submodules(false);
    let statuses = repo.statuses(Some(&mut opts))?;
    Ok(statuses
        .iter()
        .map(|e| {
            String::from_utf8_lossy(e.path_bytes())
                .trim_end_matches('/')
                .to_string()
        })
        .collect())
}

fn conflict_paths(index: &git2::Index) -> Result<Vec<String>, git2::Error> {
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

/// Working folders (main worktree and linked ones) whose HEAD is `target_ref`.
fn checkouts_of(repo: &Repository, target_ref: &str) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    if let Some(workdir) = repo.workdir() {
        if head_branch_ref(repo)?.as_deref() == Some(target_ref) {
            out.push(normalize(workdir));
        }
    }
    for name in repo.worktrees()?.iter().flatten() {
        let Ok(wt) = repo.find_worktree(name) else {
            continue;
        };
        if wt.validate().is_err() {
            continue;
        }
        let Ok(wrepo) = Repository::open_from_worktree(&wt) else {
            continue;
        };
        if head_branch_ref(&wrepo)?.as_deref() == Some(target_ref) {
            out.push(normalize(wt.path()));
        }
    }
    Ok(out)
}

/// What to tell the user about a checkout that could not be updated.
fn behind_note(dir: &Path, target: &str, e: &anyhow::Error) -> String {
    format!(
        "the checkout in {} could not be brought up to date ({e:#}); run `git status` there, and `git checkout {target} -- <path>` for each merged path it shows",
        dir.display()
    )
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

/// After a crash between a merge's ref update and its checkout update:
/// every checkout of the target whose index still holds the pre-merge
/// version of a merged path, with the file on disk either already the
/// merge's or unchanged, gets that path from the merge. Paths the user
/// changed are left alone. Returns what could not be brought up to date
/// (the merge itself is done either way).
fn resync_checkouts(repo: &Repository, target_ref: &str, merge: Oid) -> Result<Option<String>> {
    let commit = repo.find_commit(merge)?;
    if commit.parent_count() < 2 {
        return Ok(None);
    }
    let old_tree = commit.parent(0)?.tree()?;
    let new_tree = commit.tree()?;
    let diff = repo.diff_tree_to_tree(Some(&old_tree), Some(&new_tree), None)?;
    let changed = diff_paths(&diff);
    let mut behind = Vec::new();
    for dir in checkouts_of(repo, target_ref)? {
        let wrepo = open_repo(&dir)?;
        // A staging folder a kill left holds only copies of committed files.
        let _ = remove_stage(&stage_dir(&wrepo));
        if changed.is_empty() {
            continue;
        }
        let index = wrepo.index()?;
        let new_tree = wrepo.find_tree(new_tree.id())?;
        let differs = differs_from_tree(&wrepo, &new_tree, &changed)?;
        let old_tree = wrepo.find_tree(old_tree.id())?;
        let differs_old = differs_from_tree(&wrepo, &old_tree, &changed)?;
        // The blob at `p`; a folder counts as no file.
        let blob = |t: &Tree, p: &Path| {
            t.get_path(p)
                .ok()
                .filter(|e| e.kind() != Some(git2::ObjectType::Tree))
                .map(|e| e.id())
        };
        let mut stale = BTreeSet::new();
        for p in &changed {
            let path = Path::new(p);
            let in_index = index.get_path(path, 0).map(|e| e.id);
            let in_old = blob(&old_tree, path);
            let in_new = blob(&new_tree, path);
            if in_index == in_new || in_index != in_old {
                continue; // up to date, or the user staged something else
            }
            // On disk as the merge has it (already written or removed), or
            // still exactly as before the merge (not reached yet): the
            // merge's to finish. Decided by content alone, ignored files
            // included: anything else is the user's and stays.
            if !differs.contains(p) || !differs_old.contains(p) {
                stale.insert(p.clone());
                continue;
            }
            // A folder the merge turns into a file, not yet replaced: the
            // checkout removes it only once empty.
            if in_new.is_some() && dir.join(path).is_dir() && !dir.join(path).is_symlink() {
                stale.insert(p.clone());
            }
        }
        // Copies the cross-file-system fallback of `place` left half-made.
        for p in &changed {
            let tmp = tmp_beside(&dir.join(p));
            if tmp.symlink_metadata().is_ok_and(|m| !m.is_dir()) {
                let _ = fs::remove_file(&tmp);
            }
        }
        if !stale.is_empty() {
            if let Err(e) = update_checkout(&dir, new_tree.id(), &stale) {
                behind.push(behind_note(
                    &dir,
                    target_ref.trim_start_matches("refs/heads/"),
                    &e,
                ));
            }
        }
    }
    Ok((!behind.is_empty()).then(|| behind.join("; ")))
}

/// Which of `paths` differ on disk in `wrepo`'s checkout from `tree`
/// (libgit2 compares with the repo's filters applied, a symlink as a link;
/// a path in neither the tree nor on disk does not differ).
fn differs_from_tree(
    wrepo: &Repository,
    tree: &Tree,
    paths: &BTreeSet<String>,
) -> Result<BTreeSet<String>> {
    let mut opts = DiffOptions::new();
    opts.include_untracked(true)
        .recurse_untracked_dirs(true)
        .include_ignored(true)
        .recurse_ignored_dirs(true)
        .include_typechange(true)
        .disable_pathspec_match(true);
    for p in paths {
        opts.pathspec(p.as_str());
    }
    let diff = wrepo.diff_tree_to_workdir(Some(tree), Some(&mut opts))?;
    Ok(diff_paths(&diff))
}

/// Removes git lock files that only loki could have left for stream `id`
/// (its worktree's `index.lock` and `HEAD.lock`, and the lock of
/// `refs/heads/loki/<id>`). Call only while holding the supervisor lock and
/// only for streams the previous supervisor had in flight: then no process
/// can be holding them. Returns what it removed.
pub fn clear_stale_locks(root: &Path, id: &str) -> anyhow::Result<Vec<PathBuf>> {
    check_id(id)?;
    let _serial = repo_lock();
    let repo = open_repo(root)?;
    let mut candidates = vec![repo
        .path()
        .join("refs/heads/loki")
        .join(format!("{id}.lock"))];
    let wt = worktree_path(root, id);
    if let Ok(wrepo) = Repository::open(&wt) {
        candidates.push(wrepo.path().join("index.lock"));
        candidates.push(wrepo.path().join("HEAD.lock"));
    }
    let mut removed = Vec::new();
    for c in candidates {
        if c.symlink_metadata().is_ok() {
            fs::remove_file(&c)
                .with_context(|| format!("removing the stale lock {}", c.display()))?;
            removed.push(c);
        }
    }
    Ok(removed)
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
///   checkout of it was in flight (the marker [`update_checkout`] leaves
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
    let _serial = repo_lock();
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

/// `<main checkout>/.loki/checkout-in-flight`: which index loki is
/// writing, and since when, while it updates a checkout after a merge.
fn checkout_marker(repo: &Repository) -> Option<PathBuf> {
    let common = repo.commondir();
    let root = if common.file_name().is_some_and(|n| n == ".git") {
        common.parent()?
    } else {
        repo.workdir()?
    };
    Some(root.join(".loki").join("checkout-in-flight"))
}

fn read_checkout_marker(path: &Path) -> Option<(PathBuf, std::time::SystemTime)> {
    let text = fs::read_to_string(path).ok()?;
    let (lock, ms) = text.trim_end().rsplit_once('\t')?;
    let ms: u64 = ms.parse().ok()?;
    Some((
        PathBuf::from(lock),
        std::time::UNIX_EPOCH + Duration::from_millis(ms),
    ))
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

/// Moves a folder that cannot serve as the stream's worktree to
/// `.loki/set-aside/<name>-<unix time>` (never deletes it).
fn set_aside(root: &Path, path: &Path) -> Result<PathBuf> {
    let aside = root.join(".loki").join("set-aside");
    fs::create_dir_all(&aside).with_context(|| format!("creating {}", aside.display()))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "worktree".into());
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let dest = aside.join(format!("{name}-{stamp}"));
    fs::rename(path, &dest).with_context(|| {
        format!(
            "moving the unusable folder {} to {}",
            path.display(),
            dest.display()
        )
    })?;
    eprintln!(
        "loki: {} was not a usable worktree; moved it to {} (nothing deleted)",
        path.display(),
        dest.display()
    );
    Ok(dest)
}

/// Does `a` equal `b` or lie inside it (or the other way round)?
fn overlaps(a: &str, b: &str) -> bool {
    let inside =
        |x: &str, y: &str| x.len() > y.len() && x.starts_with(y) && x.as_bytes()[y.len()] == b'/';
    a == b || inside(a, b) || inside(b, a)
}

/// The user's paths in the checkout at `dir` that the merge (which changes
/// `changed` relative to `t_tree`) would overwrite or delete.
fn user_conflicts(dir: &Path, t_tree: &Tree, changed: &BTreeSet<String>) -> Result<Vec<String>> {
    let wrepo = open_repo(dir)?;
    let dirty = dirty_paths(&wrepo)?;
    if wrepo.state() != RepositoryState::Clean {
        let busy: Vec<String> = dirty
            .iter()
            .filter(|p| !p.starts_with(".loki/"))
            .cloned()
            .collect();
        if !busy.is_empty() {
            return Ok(busy);
        }
    }
    let mut hits: BTreeSet<String> = dirty
        .iter()
        .filter(|p| changed.iter().any(|c| overlaps(p, c)))
        .cloned()
        .collect();
    // Untracked and ignored things on disk where the merge adds a path.
    for c in changed {
        match t_tree.get_path(Path::new(c)).ok().map(|e| e.kind()) {
            // A folder the merge turns into a file: whatever is on disk in
            // it that the merge does not remove (ignored files too, which
            // status leaves out) is in the way.
            Some(Some(git2::ObjectType::Tree)) => {
                for rel in entries_under(dir, c) {
                    if !changed.contains(&rel) {
                        hits.insert(rel);
                    }
                }
                continue;
            }
            Some(_) => continue,
            None => {}
        }
        if dir.join(c).symlink_metadata().is_ok() {
            hits.insert(c.clone());
        }
        let mut prefix = Path::new(c).parent();
        while let Some(p) = prefix {
            if p.as_os_str().is_empty() {
                break;
            }
            let tracked = t_tree.get_path(p).ok().map(|e| e.kind());
            let tracked_dir = tracked == Some(Some(git2::ObjectType::Tree));
            // A tracked file the merge turns into a folder is the merge's to
            // replace (the user's edits to it count as dirty above).
            let replaced_file = tracked.is_some() && changed.contains(p.to_string_lossy().as_ref());
            if !tracked_dir && !replaced_file {
                if let Ok(meta) = dir.join(p).symlink_metadata() {
                    if !meta.is_dir() {
                        hits.insert(p.to_string_lossy().into_owned());
                    }
                }
            }
            prefix = p.parent();
        }
    }
    Ok(hits.into_iter().collect())
}

/// Files, symlinks and empty folders on disk under `rel` in `dir`, as
/// repo-relative paths (symlinks are not followed).
fn entries_under(dir: &Path, rel: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![rel.to_string()];
    while let Some(r) = todo.pop() {
        let Ok(rd) = fs::read_dir(dir.join(&r)) else {
            continue;
        };
        let mut empty = true;
        for e in rd.flatten() {
            empty = false;
            let child = format!("{r}/{}", e.file_name().to_string_lossy());
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                todo.push(child);
            } else {
                out.push(child);
            }
        }
        if empty && r != rel {
            out.push(r);
        }
    }
    out
}

/// Writes exactly the merge's paths into the checkout at `dir` (index and
/// files). [`user_conflicts`] found none of them modified by the user.
///
/// The index entries of those paths are then set from the files written:
/// libgit2 compares against HEAD, which already is the merge, so a file
/// that is on disk already (a checkout cut short by a crash) would
/// otherwise keep its stale index entry.
fn update_checkout(dir: &Path, tree_id: Oid, changed: &BTreeSet<String>) -> Result<()> {
    let wrepo = open_repo(dir)?;
    // Says, should this process die midway, that the index.lock it leaves
    // is loki's (see `clear_abandoned_target_locks`).
    let marker = checkout_marker(&wrepo);
    if let Some(m) = &marker {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        let line = format!("{}\t{ms}\n", wrepo.path().join("index.lock").display());
        let _ = m.parent().map(fs::create_dir_all);
        let _ = fs::write(m, line);
    }
    let result = write_checkout(&wrepo, tree_id, changed);
    if let Some(m) = &marker {
        let _ = fs::remove_file(m);
    }
    result
}

/// Writes the merge's files so that a kill at any instant leaves each path
/// whole: its old content or its new one, never a half-written file (which
/// the resync after a crash could not tell from a user's edit). libgit2
/// writes every file (with the repo's filters applied) into a staging folder
/// in the checkout's git dir; each is then renamed into place, and removed
/// paths are deleted first. The index entries follow from what was done,
/// even when a step fails midway (then the error is returned).
fn write_checkout(wrepo: &Repository, tree_id: Oid, changed: &BTreeSet<String>) -> Result<()> {
    let workdir = wrepo
        .workdir()
        .ok_or_else(|| anyhow!("{} has no working tree", wrepo.path().display()))?
        .to_path_buf();
    let tree = wrepo.find_tree(tree_id)?;
    let stage = stage_dir(wrepo);
    remove_stage(&stage)?;
    fs::create_dir_all(&stage).with_context(|| format!("creating {}", stage.display()))?;

    let mut writes = Vec::new();
    let mut gitlinks = Vec::new();
    let mut removals = Vec::new();
    for p in changed {
        match tree.get_path(Path::new(p)) {
            Ok(e) if e.kind() == Some(git2::ObjectType::Commit) => {
                gitlinks.push((p.as_str(), e.id()))
            }
            Ok(e) if e.kind() != Some(git2::ObjectType::Tree) => writes.push(p.as_str()),
            // Gone, or a file that became a folder (whose files are listed
            // themselves): the file goes.
            _ => removals.push(p.as_str()),
        }
    }
    if !writes.is_empty() {
        let mut cb = CheckoutBuilder::new();
        cb.force()
            .disable_pathspec_match(true)
            .update_index(false)
            .target_dir(&stage);
        for p in &writes {
            cb.path(*p);
        }
        wrepo
            .checkout_tree(tree.as_object(), Some(&mut cb))
            .with_context(|| format!("writing the merged files into {}", stage.display()))?;
    }
    let mut removed = Vec::new();
    let mut written = Vec::new();
    let moved = (|| -> Result<()> {
        // Removals first: a file the merge deletes may sit where it adds a folder.
        for p in &removals {
            let path = workdir.join(p);
            if path.symlink_metadata().is_ok_and(|m| !m.is_dir()) {
                fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
            }
            prune_empty_parents(&workdir, &path);
            removed.push(*p);
        }
        for p in &writes {
            place(&stage.join(p), &workdir.join(p))?;
            written.push(*p);
        }
        for (p, _) in &gitlinks {
            let to = workdir.join(p);
            fs::create_dir_all(&to).with_context(|| format!("creating {}", to.display()))?;
        }
        Ok(())
    })();
    let _ = remove_stage(&stage);

    // The index as it is now (the user's git may have written it meanwhile).
    let mut index = wrepo.index()?;
    index.read(true)?;
    for p in &written {
        index.add_path(Path::new(p))?;
    }
    if moved.is_ok() {
        for (p, id) in &gitlinks {
            index.add(&gitlink_entry(p, *id))?;
        }
    }
    for p in &removed {
        if index.get_path(Path::new(p), 0).is_some() {
            index.remove_path(Path::new(p))?;
        }
    }
    index.write()?;
    moved
}

/// Moves the staged `from` over `to` in one rename. When the git dir is on
/// another file system, a copy is made beside `to` first (a symlink as a
/// symlink) and renamed over it: `to` itself is never written through, so
/// a symlink there is replaced, not followed.
fn place(from: &Path, to: &Path) -> Result<()> {
    if let Some(parent) = to.parent() {
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    if to.symlink_metadata().is_ok_and(|m| m.is_dir()) {
        // A folder the merge turns into a file; empty by now, else it holds
        // something of the user's (user_conflicts refuses that) and the
        // rename below fails rather than touch it.
        let _ = fs::remove_dir(to);
    }
    match fs::rename(from, to) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(nix::libc::EXDEV) => {
            let tmp = tmp_beside(to);
            let _ = fs::remove_file(&tmp);
            let copied = (|| -> Result<()> {
                let meta = from
                    .symlink_metadata()
                    .with_context(|| format!("reading {}", from.display()))?;
                if meta.file_type().is_symlink() {
                    let target = fs::read_link(from)
                        .with_context(|| format!("reading {}", from.display()))?;
                    std::os::unix::fs::symlink(&target, &tmp)
                        .with_context(|| format!("writing {}", tmp.display()))?;
                } else {
                    fs::copy(from, &tmp).with_context(|| format!("writing {}", tmp.display()))?;
                }
                fs::rename(&tmp, to).with_context(|| format!("moving {} into place", to.display()))
            })();
            if copied.is_err() {
                let _ = fs::remove_file(&tmp);
            }
            copied
        }
        Err(e) => Err(e).with_context(|| format!("moving {} into place", to.display())),
    }
}

/// `<folder>/.<name>.loki-tmp`: where [`place`] makes its copy when it
/// cannot rename across file systems (removed by the resync after a kill).
fn tmp_beside(to: &Path) -> PathBuf {
    let name = to
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    to.with_file_name(format!(".{name}.loki-tmp"))
}

/// The index entry of a submodule at `path` (a gitlink to commit `id`).
fn gitlink_entry(path: &str, id: Oid) -> git2::IndexEntry {
    let zero = git2::IndexTime::new(0, 0);
    git2::IndexEntry {
        ctime: zero,
        mtime: zero,
        dev: 0,
        ino: 0,
        mode: 0o160000,
        uid: 0,
        gid: 0,
        file_size: 0,
        id,
        flags: path.len().min(0xfff) as u16,
        flags_extended: 0,
        path: path.as_bytes().to_vec(),
    }
}

/// `<checkout's git dir>/loki-checkout`: where [`write_checkout`] stages
/// the merged files.
fn stage_dir(wrepo: &Repository) -> PathBuf {
    wrepo.path().join("loki-checkout")
}

/// Removes the staging folder of [`write_checkout`] (loki's own, in the git
/// dir; one left by a crash holds only copies of committed files).
fn remove_stage(stage: &Path) -> Result<()> {
    if stage.symlink_metadata().is_ok() {
        fs::remove_dir_all(stage).with_context(|| format!("removing {}", stage.display()))?;
    }
    Ok(())
}

/// Removes the folders above `path` that a deletion left empty, up to `top`.
fn prune_empty_parents(top: &Path, path: &Path) {
    let mut dir = path.parent();
    while let Some(d) = dir {
        if d == top || !d.starts_with(top) || fs::remove_dir(d).is_err() {
            break;
        }
        dir = d.parent();
    }
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
