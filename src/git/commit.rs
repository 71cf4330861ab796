//! Committing a stream's worktree and reading what it changed: the
//! supervisor's commit of whatever an attempt left uncommitted (with loki's
//! trailers), the paths an attempt touched (for the `canonical` check), and
//! the diff a reviewer sees in `loki show`.

use std::collections::BTreeSet;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use anyhow::{Context, Result};
use git2::{
    Commit, Diff, DiffFormat, DiffOptions, ErrorCode, Index, IndexAddOption, Oid, Repository,
    RepositoryState,
};

use super::integrity::{import_agent_objects, open_stream_worktree};
use super::stat_cache;
use super::tree_edit;
use super::tree_merge::changed_paths;
use super::worktree::find_registration;
use super::{
    branch_oid, check_id, compose_message, current_index, diff_paths, dirty_paths, merge_base,
    open_repo, signature,
};
use crate::model::paths::{branch_name, Layout};

/// Commits stream `id`'s worktree onto `loki/<id>`: every file in it (new,
/// changed and deleted, honouring .gitignore except for the stream's
/// declared `outputs`), with `trailers` after a blank
/// line as `Key: value`. Returns the new commit, or `None` when nothing
/// changed.
///
/// Made through the main repository and the worktree's registration, never
/// the worktree's own `.git` file, HEAD or index contents (an agent may have
/// altered them; see `integrity.rs`): the index is rebuilt from the branch's
/// tree and every file whose stat data changed since loki last saw it is
/// hashed again, so what is committed is exactly what is in the folder, and
/// the branch moves by compare-and-swap. The
/// worktree's index is then written to match, so `git status` there is clean.
pub fn commit_stream(
    root: &Path,
    id: &str,
    outputs: &[String],
    subject: &str,
    body: &str,
    trailers: &[(String, String)],
) -> anyhow::Result<Option<String>> {
    commit_worktree(root, id, outputs, subject, body, trailers, Shape::Next)
}

/// [`commit_stream`] for a resolver's attempt: the worktree's files as a
/// two-parent merge of the branch and `target_head` (the target's commit
/// the resolver merged), made even when the tree is the branch's own.
pub fn commit_resolution(
    root: &Path,
    id: &str,
    outputs: &[String],
    subject: &str,
    body: &str,
    trailers: &[(String, String)],
    target_head: &str,
) -> anyhow::Result<Option<String>> {
    commit_worktree(
        root,
        id,
        outputs,
        subject,
        body,
        trailers,
        Shape::Merge(target_head),
    )
}

/// Replaces the attempt's commit `tip` (the branch's head) by one with the
/// worktree's files (so a file loki wrote there since, such as a
/// `validation_report`, joins it), the same parents, and `trailers` added
/// to its message: the validators' verdict belongs to the attempt's
/// commit, made before they ran. The branch moves by compare-and-swap from
/// `tip`; nothing but loki has seen `tip` (it is not merged or pushed yet).
/// A trailer the message already has is replaced.
pub fn amend_attempt(
    root: &Path,
    id: &str,
    tip: &str,
    outputs: &[String],
    trailers: &[(String, String)],
) -> anyhow::Result<String> {
    commit_worktree(root, id, outputs, "", "", trailers, Shape::Amend(tip))?
        .with_context(|| format!("amending the commit {tip} of stream {id}"))
}

/// What the commit of a worktree is made as.
#[derive(Clone, Copy)]
enum Shape<'a> {
    /// A new commit on the branch (none when nothing changed).
    Next,
    /// A merge of the branch and this commit of the target.
    Merge(&'a str),
    /// In place of the branch's head, which must be this commit.
    Amend(&'a str),
}

fn commit_worktree(
    root: &Path,
    id: &str,
    outputs: &[String],
    subject: &str,
    body: &str,
    trailers: &[(String, String)],
    shape: Shape<'_>,
) -> anyhow::Result<Option<String>> {
    stage_stream(root, id, outputs)?.commit_as(subject, body, trailers, shape)
}

/// Stream `id`'s worktree staged by loki: the index a commit of it writes
/// and that index's tree (its blobs written), made as [`commit_stream`]
/// describes. Staged once when the agent is done, it answers both what
/// the attempt changed ([`Staged::touched_since`], for the checks) and
/// what is committed ([`Staged::commit`]): the worktree is walked once
/// for the two, and a stream whose checks run no command (the built-in
/// checks only read files) commits exactly the tree its checks judged.
pub struct Staged {
    repo: super::handles::Repo,
    wrepo: Repository,
    path: std::path::PathBuf,
    /// The worktree's registration folder (its git dir).
    admin: std::path::PathBuf,
    id: String,
    branch_ref: String,
    parent: Oid,
    index: Index,
    tree: Oid,
}

/// The file in a worktree's git dir that loki's staging index is written
/// to before it is renamed over the worktree's `index`.
const OWN_INDEX: &str = "loki-index";

/// Stages stream `id`'s worktree (see [`Staged`]).
pub fn stage_stream(root: &Path, id: &str, outputs: &[String]) -> anyhow::Result<Staged> {
    check_id(id)?;
    let repo = open_repo(root)?;
    let (wrepo, admin) = open_stream_worktree(&repo, root, id)?;
    import_agent_objects(&repo, &admin)?;
    let branch = branch_name(id);
    let branch_ref = format!("refs/heads/{branch}");
    let path = Layout::new(root).worktree(id);
    let ctx = || format!("staging {} for {branch}", path.display());
    let parent_commit = repo
        .find_reference(&branch_ref)
        .and_then(|r| r.peel_to_commit())
        .with_context(ctx)?;
    let (parent, parent_tree) = (parent_commit.id(), parent_commit.tree_id());
    drop(parent_commit);
    // Nothing the agent staged or stat-cached is trusted, or even read (an
    // index of a thousand files took a tenth of the staging to parse): a
    // new index of loki's own, renamed over the worktree's when committed,
    // holds the branch's tree with the stat data loki itself saw
    // (`stat_cache.rs`), then the folder's files, hashed where their stat
    // data changed.
    let own_index = admin.join(OWN_INDEX);
    match std::fs::remove_file(&own_index) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(ctx),
    }
    let mut index = Index::open(&own_index).with_context(ctx)?;
    if stat_cache::stat_is_trusted(&wrepo) {
        stat_cache::seed(&path, &mut index).with_context(ctx)?;
    }
    index
        .read_tree(&repo.find_tree(parent_tree).with_context(ctx)?)
        .with_context(ctx)?;
    wrepo.set_index(&mut index).with_context(ctx)?;
    // One walk: new, changed and deleted files (libgit2's add-all removes
    // what is gone from the folder, as update-all would). Untracked ignored
    // files stay out; tracked ones are updated (as git). The paths it
    // reports are the only ones whose entry may differ from the branch's:
    // the tree is written as the branch's with those alone (`tree_edit.rs`).
    let mut changed: Vec<Vec<u8>> = Vec::new();
    let mut note = |p: &Path, _: &[u8]| {
        changed.push(p.as_os_str().as_bytes().to_vec());
        0
    };
    index
        .add_all(["*"], IndexAddOption::DEFAULT, Some(&mut note))
        .with_context(ctx)?;
    // A declared output is committed even when a .gitignore (the agent's,
    // or your global excludes) would leave it out: otherwise it passes its
    // checks here and never reaches the target.
    for out in outputs {
        let rel = Path::new(out);
        let is_file = crate::util::check_inside(&path, rel).is_ok_and(|m| m.is_file());
        if is_file && index.get_path(rel, 0).is_none() {
            index.add_path(rel).with_context(ctx)?;
            changed.push(out.as_bytes().to_vec());
        }
    }
    let tree =
        match tree_edit::staged_tree(&repo, &index, parent_tree, &changed).with_context(ctx)? {
            Some(tree) => tree,
            None => index.write_tree_to(&repo).with_context(ctx)?,
        };
    Ok(Staged {
        repo,
        wrepo,
        path,
        admin,
        id: id.to_string(),
        branch_ref,
        parent,
        index,
        tree,
    })
}

impl Staged {
    /// Paths (relative to the worktree) whose entry differs between commit
    /// `base` and the staged tree: whatever the attempt changed, committed
    /// by the agent or not. Costs the folders that differ, not the tree.
    ///
    /// Refused when a file the attempt changed names an object the
    /// repository does not have. An agent can commit a tree that names a
    /// blob it never wrote (`update-index --cacheinfo`, `write-tree
    /// --missing-ok`) with the matching file on disk, which loki then finds
    /// unchanged and does not write either: merged, the target would name
    /// a missing object. Whatever equals `base` is the target's own and is
    /// there; every other object is checked here, by a lookup of each
    /// (libgit2's check on writing a tree is off: it read the header of
    /// every entry of each changed folder, whether changed or not).
    pub fn touched_since(&self, base: &str) -> anyhow::Result<Vec<String>> {
        let base_tree = self
            .repo
            .revparse_single(base)
            .and_then(|o| o.peel_to_commit())
            .with_context(|| format!("reading commit {base} in {}", self.path.display()))?
            .tree_id();
        let paths = changed_paths(&self.repo, base_tree, self.tree).with_context(|| {
            format!(
                "comparing {base} with what is staged in {}",
                self.path.display()
            )
        })?;
        let odb = self
            .repo
            .odb()
            .with_context(|| format!("opening the object database of {}", self.path.display()))?;
        let tree = self
            .repo
            .find_tree(self.tree)
            .with_context(|| format!("reading what is staged in {}", self.path.display()))?;
        for p in &paths {
            let Ok(entry) = tree.get_path(Path::new(p)) else {
                continue; // deleted
            };
            let is_blob = entry.kind() == Some(git2::ObjectType::Blob);
            if is_blob && !odb.exists(entry.id()) {
                anyhow::bail!(
                    "{p} names the object {}, which is not in the repository: the agent's commit names a file it never wrote into git\n  help: `loki retry {}` runs the stream again",
                    entry.id(),
                    self.id
                );
            }
        }
        Ok(paths.into_iter().collect())
    }

    /// Commits the staged tree onto the branch as [`commit_stream`] does.
    pub fn commit(
        self,
        subject: &str,
        body: &str,
        trailers: &[(String, String)],
    ) -> anyhow::Result<Option<String>> {
        self.commit_as(subject, body, trailers, Shape::Next)
    }

    fn commit_as(
        mut self,
        subject: &str,
        body: &str,
        trailers: &[(String, String)],
        shape: Shape<'_>,
    ) -> anyhow::Result<Option<String>> {
        let (repo, id, path) = (&self.repo, self.id.as_str(), self.path.as_path());
        let branch_ref = self.branch_ref.as_str();
        let branch = branch_name(id);
        let ctx = || format!("committing {} onto {branch}", path.display());
        let parent = repo.find_commit(self.parent).with_context(ctx)?;
        let tree_id = self.tree;
        stat_cache::fill_missing(path, &mut self.index).with_context(ctx)?;
        self.index.write().with_context(ctx)?;
        let index_file = self.admin.join("index");
        std::fs::rename(self.admin.join(OWN_INDEX), &index_file).with_context(ctx)?;
        stat_cache::remember_as(path, &self.index, Some(&index_file));
        let theirs = match shape {
            Shape::Merge(t) => Some(
                git2::Oid::from_str(t)
                    .and_then(|o| repo.find_commit(o))
                    .with_context(ctx)?,
            ),
            _ => None,
        };
        if parent.tree_id() == tree_id && matches!(shape, Shape::Next) {
            return Ok(None);
        }
        let tree = repo.find_tree(tree_id).with_context(ctx)?;
        let sig = signature(repo)?;
        let (message, parents) = match shape {
            Shape::Amend(tip) => {
                if parent.id().to_string() != tip {
                    anyhow::bail!(
                        "{branch} moved from {tip} to {} while its attempt was validated",
                        parent.id()
                    );
                }
                // A trailer given again (the cost, now with the validators')
                // replaces the old line.
                let old = parent.message().unwrap_or_default();
                let kept: Vec<&str> = old
                    .trim_end()
                    .lines()
                    .filter(|l| {
                        !trailers
                            .iter()
                            .any(|(k, _)| l.starts_with(&format!("{k}: ")))
                    })
                    .collect();
                let mut message = kept.join("\n");
                message.push('\n');
                for (k, v) in trailers {
                    message.push_str(&format!("{k}: {v}\n"));
                }
                (message, parent.parents().collect::<Vec<_>>())
            }
            _ => {
                let mut parents = vec![parent.clone()];
                parents.extend(theirs.iter().cloned());
                (compose_message(subject, body, trailers), parents)
            }
        };
        let parents: Vec<&Commit> = parents.iter().collect();
        let id_new = repo
            .commit(None, &sig, &sig, &message, &tree, &parents)
            .with_context(ctx)?;
        // Compare-and-swap from the commit staged on: a branch moved since
        // (by anything but loki) is never overwritten.
        repo.reference_matching(
            branch_ref,
            id_new,
            true,
            parent.id(),
            &format!("loki: commit of the worktree of stream {id}"),
        )
        .with_context(ctx)?;
        if self.wrepo.state() != RepositoryState::Clean {
            // An agent's half-done merge or cherry-pick: its result is committed now.
            self.wrepo.cleanup_state().with_context(ctx)?;
        }
        Ok(Some(id_new.to_string()))
    }
}

/// Stages everything in the folder `dir` and commits it on its HEAD branch
/// (only for a repository loki made itself: the demo's first commit).
pub(super) fn commit_all(dir: &Path, subject: &str) -> anyhow::Result<Option<String>> {
    let repo = open_repo(dir)?;
    let staged = (|| -> anyhow::Result<Oid> {
        let mut index = current_index(&repo)
            .with_context(|| format!("reading the index of {}", dir.display()))?;
        index
            .add_all(["*"], IndexAddOption::DEFAULT, None)
            .and_then(|()| index.write())
            .with_context(|| format!("staging the files of {}", dir.display()))?;
        index
            .write_tree()
            .with_context(|| format!("writing the tree of {}", dir.display()))
    })();
    let tree_id = match staged {
        Ok(id) => id,
        Err(e) => {
            // The index in memory may hold changes its file does not.
            repo.discard();
            return Err(e);
        }
    };
    let parent = match repo.head() {
        Ok(head) => Some(
            head.peel_to_commit()
                .with_context(|| format!("reading the head commit of {}", dir.display()))?,
        ),
        Err(e) if e.code() == ErrorCode::UnbornBranch => None,
        Err(e) => return Err(e).with_context(|| format!("reading HEAD of {}", dir.display())),
    };
    if parent.as_ref().is_some_and(|p| p.tree_id() == tree_id) {
        return Ok(None);
    }
    let tree = repo
        .find_tree(tree_id)
        .with_context(|| format!("reading the new tree of {}", dir.display()))?;
    let sig = signature(&repo)?;
    let message = compose_message(subject, "", &[]);
    let parents: Vec<&Commit> = parent.iter().collect();
    let id = repo
        .commit(Some("HEAD"), &sig, &sig, &message, &tree, &parents)
        .with_context(|| format!("committing in {}", dir.display()))?;
    Ok(Some(id.to_string()))
}

/// Paths (relative to the worktree) of stream `id` that differ between
/// `base` and the worktree's current state: committed since base, staged,
/// unstaged, untracked. Read through the worktree's registration, never its
/// `.git` file.
pub fn touched_paths(root: &Path, id: &str, base: &str) -> anyhow::Result<Vec<String>> {
    check_id(id)?;
    let main = open_repo(root)?;
    let (repo, _) = open_stream_worktree(&main, root, id)?;
    let worktree = Layout::new(root).worktree(id);
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
        dirty_paths(&repo, None)
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
