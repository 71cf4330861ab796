//! Stream worktrees: `.loki/worktrees/<id>` on branch `loki/<id>`, made,
//! reused, repaired and removed here, plus their git registrations, locks
//! and status. Nothing outside `.loki/worktrees/` is ever removed.
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
//! - **Never delete work.** A folder in the way that is no usable worktree is
//!   moved to `.loki/set-aside/`, not deleted; a locked worktree is left alone.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use git2::build::CheckoutBuilder;
use git2::{
    BranchType, ErrorCode, Reference, Repository, StatusOptions, WorktreeAddOptions,
    WorktreeLockStatus, WorktreePruneOptions,
};

use super::integrity::dot_git_target;
use super::{
    branch_oid, check_id, head_branch_ref, merge_base, open_repo, same_path, worktrees_lock,
};
use crate::model::paths::{branch_name, Layout};

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

/// Creates (or reuses) branch `loki/<id>` and worktree `.loki/worktrees/<id>`.
/// A new branch starts at the target's head. An existing branch is reused
/// as it is (it holds earlier attempts); an existing healthy worktree is
/// reused; a stale worktree registration (folder gone) is pruned first.
pub fn prepare_worktree(root: &Path, id: &str, target: &str) -> anyhow::Result<Worktree> {
    check_id(id)?;
    let _serial = worktrees_lock();
    let repo = open_repo(root)?;
    let branch = branch_name(id);
    let layout = Layout::new(root);
    let path = layout.worktree(id);
    let dir = layout.worktrees_dir();
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
    if super::pool::take_locked(root, &path, &format!("refs/heads/{branch}"))? {
        return Ok(Worktree {
            path,
            branch,
            base: base.to_string(),
            reused: false,
        });
    }
    let name = free_worktree_name(&repo, id)?;
    add_worktree(&repo, &name, &path, &reference).with_context(|| {
        format!(
            "adding the worktree {} for branch {branch} in {}",
            path.display(),
            root.display()
        )
    })?;
    // The checkout just wrote every file and the index; no agent has run.
    let admin = repo.commondir().join("worktrees").join(&name);
    super::stat_cache::remember_checkout(&path, &admin.join("index"));
    Ok(Worktree {
        path,
        branch,
        base: base.to_string(),
        reused: false,
    })
}

/// Removes the worktree folder and its registration (like `git worktree
/// remove --force` followed by prune). Only ever under `.loki/worktrees/`.
pub fn remove_worktree(root: &Path, id: &str) -> anyhow::Result<()> {
    retire_worktree(root, id, 0)
}

/// Puts merged stream `id`'s worktree in the pool of at most `capacity`
/// (see `pool.rs`), or removes it like [`remove_worktree`] when the pool is
/// full or the worktree cannot serve again.
pub fn retire_worktree(root: &Path, id: &str, capacity: usize) -> anyhow::Result<()> {
    check_id(id)?;
    let _serial = worktrees_lock();
    let repo = open_repo(root)?;
    let layout = Layout::new(root);
    let path = layout.worktree(id);
    let dir = layout.worktrees_dir();

    // `.loki` or `.loki/worktrees` being a symlink would put the folder
    // somewhere else: refuse rather than delete outside the repo.
    for p in [layout.loki(), dir.clone()] {
        if let Ok(meta) = p.symlink_metadata() {
            if !meta.is_dir() {
                bail!(
                    "{} is not a plain folder (a symlink?); loki removes worktrees only inside {}/",
                    p.display(),
                    dir.display()
                );
            }
        }
    }

    if super::pool::pool_locked(&repo, root, &path, capacity)? {
        return Ok(());
    }
    super::stat_cache::forget(&path);
    let registration = find_registration(&repo, &path)?;
    if let Some(wt) = &registration {
        if let WorktreeLockStatus::Locked(reason) = wt
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
        prune_removed(&wt, &path)?;
    }
    Ok(())
}

/// Prunes registration `wt`, whose folder `path` loki just removed.
pub(super) fn prune_removed(wt: &git2::Worktree, path: &Path) -> Result<()> {
    wt.prune(Some(
        WorktreePruneOptions::new()
            .valid(true)
            .locked(false)
            .working_tree(false),
    ))
    .with_context(|| {
        format!(
            "pruning the worktree registration {} of {}",
            wt.name().unwrap_or("?"),
            path.display()
        )
    })
}

/// Removes git lock files that only loki could have left for stream `id`
/// (its worktree's `index.lock` and `HEAD.lock`, and the lock of
/// `refs/heads/loki/<id>`). Call only while holding the supervisor lock and
/// only for streams the previous supervisor had in flight: then no process
/// can be holding them. Returns what it removed.
pub fn clear_stale_locks(root: &Path, id: &str) -> anyhow::Result<Vec<PathBuf>> {
    check_id(id)?;
    let _serial = worktrees_lock();
    let repo = open_repo(root)?;
    let mut candidates = vec![repo
        .path()
        .join(format!("refs/heads/{}.lock", branch_name(id)))];
    let wt = Layout::new(root).worktree(id);
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

/// The linked worktree registered for `path`, whatever its name.
pub(super) fn find_registration(repo: &Repository, path: &Path) -> Result<Option<git2::Worktree>> {
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

/// Moves a folder that cannot serve as the stream's worktree to
/// `.loki/set-aside/<name>-<unix time>` (never deletes it).
pub(super) fn set_aside(root: &Path, path: &Path) -> Result<PathBuf> {
    let aside = Layout::new(root).set_aside_dir();
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

/// A git worktree registration (`.git/worktrees/<name>`), as plain data.
#[derive(Debug, Clone, PartialEq)]
pub struct Registration {
    /// git's administrative name.
    pub name: String,
    /// The folder it names (which may be gone).
    pub path: PathBuf,
    /// `git worktree lock` is in force.
    pub locked: bool,
    /// Its folder is gone and it is not locked: `git worktree prune` would
    /// remove it.
    pub prunable: bool,
}

/// Every linked worktree registered in the repo at `root`.
pub fn registrations(root: &Path) -> Result<Vec<Registration>> {
    let repo = open_repo(root)?;
    let names = repo
        .worktrees()
        .with_context(|| format!("listing the worktrees of {}", repo.path().display()))?;
    let mut out = Vec::new();
    for name in names.iter().flatten() {
        let Ok(wt) = repo.find_worktree(name) else {
            continue;
        };
        let locked = matches!(wt.is_locked(), Ok(WorktreeLockStatus::Locked(_)));
        // Default options: only an invalid (folder gone), unlocked registration.
        let prunable = wt.is_prunable(None).unwrap_or(false);
        out.push(Registration {
            name: name.to_string(),
            path: wt.path().to_path_buf(),
            locked,
            prunable,
        });
    }
    Ok(out)
}

/// Prunes registration `name` if its folder is gone and it is not locked
/// (`path` is the folder it names, for the message); otherwise does nothing.
pub fn prune_registration(root: &Path, name: &str, path: &Path) -> Result<()> {
    let _serial = worktrees_lock();
    let repo = open_repo(root)?;
    let wt = repo
        .find_worktree(name)
        .with_context(|| format!("finding the worktree registration {name}"))?;
    // Default options: prunes only an invalid (folder gone), unlocked one.
    if wt.is_prunable(None).unwrap_or(false) {
        wt.prune(None).with_context(|| {
            format!(
                "pruning the worktree registration {name} of {}",
                path.display()
            )
        })?;
    }
    Ok(())
}

/// Staged, unstaged and untracked paths (untracked folders recursed into,
/// ignored files left out) of the worktree at `path`, as git reports them.
pub fn uncommitted_paths(path: &Path) -> Result<Vec<String>> {
    let repo = Repository::open(path)
        .with_context(|| format!("opening the worktree {}", path.display()))?;
    let mut opts = StatusOptions::new();
    opts.include_untracked(true)
        .recurse_untracked_dirs(true)
        .include_ignored(false)
        .exclude_submodules(false);
    let statuses = repo
        .statuses(Some(&mut opts))
        .with_context(|| format!("reading the status of {}", path.display()))?;
    Ok(statuses
        .iter()
        .map(|e| String::from_utf8_lossy(e.path_bytes()).into_owned())
        .collect())
}

/// A broken `loki-*` worktree registration that [`repair_registrations`]
/// removed (or, in a dry run, would remove), for the user to read.
#[derive(Debug, Clone, PartialEq)]
pub struct RegistrationRepair {
    /// git's administrative name (`loki-<id>`).
    pub name: String,
    /// The stream folder it named, when known.
    pub path: Option<PathBuf>,
    /// Why it was broken.
    pub why: &'static str,
    /// It was cut short while being added (rather than left with its
    /// folder gone, which `git worktree prune` would remove too).
    pub cut_short: bool,
}

/// Removes the `loki-*` worktree registrations a killed supervisor left
/// broken, so that `git worktree list`, `git worktree prune` and `git fsck`
/// have nothing to say about them:
///
/// - one cut short while libgit2 was adding it (no `HEAD` yet: git lists it
///   with a detached HEAD that "points at nothing", libgit2 does not list it
///   at all), together with its stream folder when that holds nothing but
///   the `.git` file libgit2 wrote (nothing was checked out yet);
/// - one whose folder or `.git` file is gone (what `git worktree prune`
///   would remove; a kill during [`remove_worktree`]), or whose own pruning
///   was cut short (`gitdir` gone, `HEAD` still on a `loki/` branch).
///
/// Only registrations named `loki-*` whose folder is (or, with no `gitdir`
/// file yet, whose stream folder's `.git` names them as) under
/// `.loki/worktrees/` are touched, never a locked one, never the user's own.
/// With `apply` false nothing is changed (for `loki clean --dry-run`);
/// with it, the pool of merged worktrees is emptied first.
pub fn repair_registrations(root: &Path, apply: bool) -> Result<Vec<RegistrationRepair>> {
    let _serial = worktrees_lock();
    let repo = open_repo(root)?;
    if apply {
        // Pooled worktrees first: what a kill left of one is repaired below.
        super::pool::empty_locked(&repo, root)?;
    }
    repair_locked(&repo, root, apply)
}

/// Removes every pooled worktree (`pool.rs`): at the end of a run, so
/// nothing is left behind. Returns how many folders went.
pub fn empty_pool(root: &Path) -> Result<usize> {
    let _serial = worktrees_lock();
    let repo = open_repo(root)?;
    super::pool::empty_locked(&repo, root)
}

/// [`repair_registrations`] with the repo lock already held.
fn repair_locked(repo: &Repository, root: &Path, apply: bool) -> Result<Vec<RegistrationRepair>> {
    let admin_root = repo.commondir().join("worktrees");
    let wt_dir = Layout::new(root).worktrees_dir();
    let mut names: Vec<String> = match fs::read_dir(&admin_root) {
        Ok(entries) => entries
            .flatten()
            .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.starts_with("loki-"))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(e).with_context(|| format!("listing {}", admin_root.display()));
        }
    };
    names.sort();
    // Stream folders by the registration their `.git` file names.
    let mut pointing: Vec<(PathBuf, PathBuf)> = Vec::new();
    if let Ok(entries) = fs::read_dir(&wt_dir) {
        for e in entries.flatten() {
            let folder = e.path();
            if let Some(admin) = dot_git_target(&folder) {
                pointing.push((admin, folder));
            }
        }
    }
    let mut out = Vec::new();
    for name in names {
        let admin = admin_root.join(&name);
        if admin.join("locked").symlink_metadata().is_ok() {
            continue;
        }
        // `gitdir` holds `<folder>/.git`; empty or missing when the kill
        // came before libgit2 wrote it.
        let gitdir = fs::read_to_string(admin.join("gitdir"))
            .ok()
            .map(|s| PathBuf::from(s.trim_end_matches('\n')))
            .filter(|p| p.is_absolute());
        let folder = match &gitdir {
            Some(g) => g.parent().map(Path::to_path_buf),
            None => pointing
                .iter()
                .find(|(a, _)| same_path(a, &admin))
                .map(|(_, f)| f.clone()),
        };
        let ours = match &folder {
            Some(f) => f.parent().is_some_and(|p| same_path(p, &wt_dir)),
            // Nothing names its folder: an empty administrative folder (the
            // kill came right after libgit2 made it), or what a kill while
            // pruning it leaves (`gitdir` already removed, `HEAD` still on
            // a `loki/` branch) is loki's.
            None => is_empty_dir(&admin) || head_on_loki_branch(&admin),
        };
        if !ours {
            continue;
        }
        let complete = admin.join("HEAD").is_file() && gitdir.is_some();
        let why = if !complete {
            "a supervisor was killed while git was adding it"
        } else if !gitdir.as_ref().is_some_and(|g| g.is_file()) {
            "its folder is gone"
        } else {
            continue;
        };
        if apply {
            if !complete {
                if let Some(f) = &folder {
                    remove_unused_folder(root, f, &admin)?;
                }
            }
            fs::remove_dir_all(&admin).with_context(|| {
                format!(
                    "removing the broken worktree registration {}",
                    admin.display()
                )
            })?;
        }
        out.push(RegistrationRepair {
            name,
            path: folder,
            why,
            cut_short: !complete,
        });
    }
    // A stream folder holding nothing but a `.git` that is empty (the kill
    // came between its creation and its writing) or names a `loki-*`
    // registration that is gone: nothing was ever checked out into it.
    for (admin, folder) in fs::read_dir(&wt_dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| (dot_git_target(&e.path()), e.path()))
    {
        let empty_dot_git =
            fs::metadata(folder.join(".git")).is_ok_and(|m| m.is_file() && m.len() == 0);
        let dangling = admin.as_ref().is_some_and(|a| {
            a.parent().is_some_and(|p| same_path(p, &admin_root))
                && a.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("loki-"))
                && a.symlink_metadata().is_err()
        });
        let only_dot_git = holds_only_dot_git(&folder);
        if !(only_dot_git && (empty_dot_git || dangling))
            || out
                .iter()
                .any(|r| r.path.as_ref().is_some_and(|p| same_path(p, &folder)))
        {
            continue;
        }
        if apply {
            fs::remove_file(folder.join(".git"))
                .and_then(|()| fs::remove_dir(&folder))
                .with_context(|| format!("removing the unused folder {}", folder.display()))?;
        }
        let name = admin
            .as_ref()
            .and_then(|a| a.file_name())
            .unwrap_or_else(|| folder.file_name().unwrap_or_default())
            .to_string_lossy()
            .into_owned();
        out.push(RegistrationRepair {
            name,
            path: Some(folder),
            why: "a supervisor was killed while git was adding it",
            cut_short: true,
        });
    }
    Ok(out)
}

/// Whether the registration's `HEAD` is on a `loki/` branch.
fn head_on_loki_branch(admin: &Path) -> bool {
    fs::read_to_string(admin.join("HEAD"))
        .is_ok_and(|h| h.trim_end().starts_with("ref: refs/heads/loki/"))
}

/// The stream folder of a registration cut short: nothing was checked out
/// into it yet, so one holding only the `.git` file naming `admin` (or
/// nothing) is removed; anything else in it is set aside, never deleted.
fn remove_unused_folder(root: &Path, folder: &Path, admin: &Path) -> Result<()> {
    let Ok(meta) = folder.symlink_metadata() else {
        return Ok(());
    };
    let only_dot_git = meta.is_dir()
        && holds_only_dot_git(folder)
        && dot_git_target(folder).is_none_or(|a| same_path(&a, admin));
    if only_dot_git {
        let _ = fs::remove_file(folder.join(".git"));
        fs::remove_dir(folder)
            .with_context(|| format!("removing the unused folder {}", folder.display()))?;
    } else {
        set_aside(root, folder)?;
    }
    Ok(())
}

/// A folder with nothing in it but (maybe) a `.git` entry.
fn holds_only_dot_git(folder: &Path) -> bool {
    fs::read_dir(folder)
        .map(|entries| entries.flatten().all(|e| e.file_name() == ".git"))
        .unwrap_or(false)
}

fn is_empty_dir(p: &Path) -> bool {
    fs::read_dir(p)
        .map(|mut entries| entries.next().is_none())
        .unwrap_or(false)
}
