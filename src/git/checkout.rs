//! The user's own checkout of the target, which is sacred: checked before a
//! merge moves the target, updated after it only on the merge's own paths,
//! and resynced after a crash between the two.
//!
//! Decisions worth knowing:
//!
//! - **What blocks a merge.** Every worktree (the main one and any linked
//!   one) that has the target checked out is checked before the ref moves: a
//!   path the merge changes must be unmodified there (index and working
//!   tree), and a path the merge adds must not exist on disk (untracked *or
//!   ignored*), nor may a file or symlink sit where the merge needs a
//!   folder. If the checkout is in the middle of a merge, rebase or
//!   cherry-pick, every dirty path counts.
//! - **How it is updated.** After the ref moved, exactly the merge's paths
//!   are written (a checkout limited to those paths, staged in the git dir
//!   and renamed into place file by file, so a kill never leaves a
//!   half-written file); staged and unstaged changes on any other path stay
//!   as they were.
//! - **The resync.** After a crash, a merged path whose index entry is still
//!   the pre-merge one is finished only when its content on disk is the
//!   merge's or the pre-merge one; anything else is the user's and stays.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use git2::build::CheckoutBuilder;
use git2::{DiffOptions, ObjectType, Oid, Repository, RepositoryState, Tree};

use super::handles::Repo;
use super::tree_merge::changed_paths;
use super::{current_index, diff_paths, dirty_paths, head_branch_ref, normalize, open_checkout};
use crate::model::paths::{is_loki_path, Layout};

/// Working folders (main worktree and linked ones) whose HEAD is `target_ref`.
pub(super) fn checkouts_of(repo: &Repository, target_ref: &str) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    if let Some(workdir) = repo.workdir() {
        if head_branch_ref(repo)?.as_deref() == Some(target_ref) {
            out.push(normalize(workdir));
        }
    }
    for name in repo.worktrees()?.iter().flatten() {
        // The registration's HEAD file is the worktree's HEAD: it says
        // whether the target is checked out there, so no worktree is
        // opened and a merge costs the same with 1 worktree as with 24. A
        // worktree moved or removed meanwhile (the worktrees' lock is not
        // held here) is no checkout of the target.
        let head = crate::util::read_inside(
            &repo.commondir().join("worktrees").join(name),
            Path::new("HEAD"),
            4096,
        );
        let names_target = head.is_ok_and(|b| {
            String::from_utf8_lossy(&b)
                .trim()
                .strip_prefix("ref:")
                .map(str::trim)
                == Some(target_ref)
        });
        if !names_target {
            continue;
        }
        let Ok(wt) = repo.find_worktree(name) else {
            continue;
        };
        if wt.validate().is_ok() {
            out.push(normalize(wt.path()));
        }
    }
    Ok(out)
}

/// What to tell the user about a checkout that could not be updated.
pub(super) fn behind_note(dir: &Path, target: &str, e: &anyhow::Error) -> String {
    format!(
        "the checkout in {} could not be brought up to date ({e:#}); run `git status` there, and `git checkout {target} -- <path>` for each merged path it shows",
        dir.display()
    )
}

/// The user's paths in the checkout at `dir` that the merge (which changes
/// `changed` relative to `t_tree`) would overwrite or delete.
pub(super) fn user_conflicts(
    wrepo: &Repository,
    dir: &Path,
    t_tree: &Tree,
    changed: &BTreeSet<String>,
) -> Result<Vec<String>> {
    if wrepo.state() != RepositoryState::Clean {
        let dirty = dirty_paths(wrepo, None)?;
        let busy: Vec<String> = dirty.iter().filter(|p| !is_loki_path(p)).cloned().collect();
        if !busy.is_empty() {
            return Ok(busy);
        }
    }
    // Only the merge's paths are asked about (and what lies under them):
    // the check costs what the merge changes, not the size of the checkout.
    // A file where the merge needs a folder is found on disk below.
    let dirty = dirty_paths(wrepo, Some(changed))?;
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
            Some(Some(ObjectType::Tree)) => {
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
            // A tracked file the merge turns into a folder is the merge's to
            // replace (the user's edits to it count as dirty above). Any
            // other file or link where the merge needs a folder is in the
            // way, the user's own or a tracked folder they replaced.
            let replaced_file = tracked.is_some()
                && tracked != Some(Some(ObjectType::Tree))
                && changed.contains(p.to_string_lossy().as_ref());
            if !replaced_file {
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

/// Does `a` equal `b` or lie inside it (or the other way round)?
fn overlaps(a: &str, b: &str) -> bool {
    let inside =
        |x: &str, y: &str| x.len() > y.len() && x.starts_with(y) && x.as_bytes()[y.len()] == b'/';
    a == b || inside(a, b) || inside(b, a)
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
pub(super) fn update_checkout(dir: &Path, tree_id: Oid, changed: &BTreeSet<String>) -> Result<()> {
    update_checkout_in(open_checkout(dir)?, tree_id, changed)
}

/// [`update_checkout`] through an opened handle of the checkout. A handle
/// this fails with is discarded, not kept (`handles.rs`): its index in
/// memory may hold changes its file does not.
pub(super) fn update_checkout_in(
    wrepo: Repo,
    tree_id: Oid,
    changed: &BTreeSet<String>,
) -> Result<()> {
    let result = write_marked(&wrepo, tree_id, changed);
    if result.is_err() {
        wrepo.discard();
    }
    result
}

/// [`write_checkout`] with the marker of a checkout in flight around it.
fn write_marked(wrepo: &Repository, tree_id: Oid, changed: &BTreeSet<String>) -> Result<()> {
    // Says, should this process die midway, that the index.lock it leaves
    // is loki's (see `clear_abandoned_target_locks`).
    let marker = checkout_marker(wrepo);
    if let Some(m) = &marker {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        let line = format!("{}\t{ms}\n", wrepo.path().join("index.lock").display());
        let _ = m.parent().map(fs::create_dir_all);
        let _ = fs::write(m, line);
    }
    let result = write_checkout(wrepo, tree_id, changed);
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
            Ok(e) if e.kind() == Some(ObjectType::Commit) => gitlinks.push((p.as_str(), e.id())),
            Ok(e) if e.kind() != Some(ObjectType::Tree) => writes.push(p.as_str()),
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
    let mut index = current_index(wrepo)?;
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

/// After a crash between a merge's ref update and its checkout update:
/// every checkout of the target whose index still holds the pre-merge
/// version of a merged path, with the file on disk either already the
/// merge's or unchanged, gets that path from the merge. Paths the user
/// changed are left alone. Returns what could not be brought up to date
/// (the merge itself is done either way).
pub(super) fn resync_checkouts(
    repo: &Repository,
    target_ref: &str,
    merge: Oid,
) -> Result<Option<String>> {
    let commit = repo.find_commit(merge)?;
    if commit.parent_count() < 2 {
        return Ok(None);
    }
    let old_tree = commit.parent(0)?.tree()?;
    let new_tree = commit.tree()?;
    let changed = changed_paths(repo, old_tree.id(), new_tree.id())?;
    let mut behind = Vec::new();
    for dir in checkouts_of(repo, target_ref)? {
        let wrepo = open_checkout(&dir)?;
        // A staging folder a kill left holds only copies of committed files.
        let _ = remove_stage(&stage_dir(&wrepo));
        if changed.is_empty() {
            continue;
        }
        let index = current_index(&wrepo)?;
        let new_tree = wrepo.find_tree(new_tree.id())?;
        let differs = differs_from_tree(&wrepo, &new_tree, &changed)?;
        let old_tree = wrepo.find_tree(old_tree.id())?;
        let differs_old = differs_from_tree(&wrepo, &old_tree, &changed)?;
        // The blob at `p`; a folder counts as no file.
        let blob = |t: &Tree, p: &Path| {
            t.get_path(p)
                .ok()
                .filter(|e| e.kind() != Some(ObjectType::Tree))
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

/// `<main checkout>/.loki/checkout-in-flight`: which index loki is
/// writing, and since when, while it updates a checkout after a merge.
pub(super) fn checkout_marker(repo: &Repository) -> Option<PathBuf> {
    let common = repo.commondir();
    let root = if common.file_name().is_some_and(|n| n == ".git") {
        common.parent()?
    } else {
        repo.workdir()?
    };
    Some(Layout::new(root).checkout_marker())
}

pub(super) fn read_checkout_marker(path: &Path) -> Option<(PathBuf, std::time::SystemTime)> {
    let text = fs::read_to_string(path).ok()?;
    let (lock, ms) = text.trim_end().rsplit_once('\t')?;
    let ms: u64 = ms.parse().ok()?;
    Some((
        PathBuf::from(lock),
        std::time::UNIX_EPOCH + Duration::from_millis(ms),
    ))
}
