//! Opened repositories kept between operations, so that what one operation
//! read stays read for the next.
//!
//! Every git step of a stream (its preparation, its staging, its merge, the
//! update of the user's checkout) used to open the repository afresh. An
//! opening reads its config files, and a fresh repository has an empty
//! object cache: a folder of a thousand outputs was inflated, hash-checked
//! and parsed again by each step that looked at it, and the user's index
//! parsed again by each step that asked about the checkout. Those were the
//! part of a stream's cost that grew with the tree.
//!
//! [`open`] now lends a handle (kept by [`Role`]) from a small process-wide pool (at most
//! [`KEPT`]) and [`Repo`] gives it back when dropped.
//!
//! Why a kept handle reads what is on disk now:
//! - refs are read from their files on every lookup (packed refs again
//!   whenever their file changed);
//! - objects never change once written, and a pack written since is found
//!   by libgit2's refresh on a miss;
//! - the index is re-read by every libgit2 step that uses it when its file
//!   changed (size, time, inode or trailing checksum), which is how git's
//!   own index writes (a rename over it) always show. loki's writers of
//!   a kept handle's index (the update of a checkout, the demo's first
//!   commit) discard the handle ([`Repo::discard`]) when they fail, so no
//!   half-made change stays in memory;
//! - a handle whose git dir is no longer the one it opened (removed, made
//!   again) is dropped, not lent;
//! - config values are read from their files again when they changed,
//!   except the few libgit2 keeps per repository once it looked them up
//!   (`core.autocrlf`, `core.filemode`, `core.ignorecase` and their kin):
//!   a change to those while a supervisor runs takes effect at its next
//!   start.
//!
//! The cache is bounded process-wide ([`super::before_threads`]).

use std::ops::Deref;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, Result};
use git2::Repository;

/// Handles kept at most, over every path: a supervisor works on one
/// repository, and about this many steps run at once.
pub(super) const KEPT: usize = 8;

/// What a handle is kept for. The handles of a user's checkout are kept
/// apart: only merges (one at a time) use them, so the one handle that
/// wrote the checkout's index last is the one that reads it next, and
/// does not parse it again.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Role {
    /// Anything but the user's checkout: refs, objects, worktrees.
    Repository,
    /// The check and the update of a checkout of the target.
    Checkout,
}

/// What identifies the git dir a handle opened: its device and inode.
type Stamp = (u64, u64);

struct Kept {
    path: PathBuf,
    role: Role,
    stamp: Stamp,
    repo: Repository,
}

static POOL: Mutex<Vec<Kept>> = Mutex::new(Vec::new());

fn with_pool<T>(f: impl FnOnce(&mut Vec<Kept>) -> T) -> T {
    f(&mut POOL.lock().unwrap_or_else(|p| p.into_inner()))
}

fn stamp_of(git_dir: &Path) -> Option<Stamp> {
    std::fs::metadata(git_dir).ok().map(|m| (m.dev(), m.ino()))
}

/// An opened repository, lent from the pool and given back on drop (not
/// when dropped during a panic: the step may have left it half-way).
pub(crate) struct Repo {
    kept: Option<Kept>,
}

impl Deref for Repo {
    type Target = Repository;
    fn deref(&self) -> &Repository {
        // `kept` is `None` only inside `drop` and `discard`.
        match &self.kept {
            Some(k) => &k.repo,
            None => unreachable!("a Repo is used after it was given back"),
        }
    }
}

impl Repo {
    /// Drops the handle instead of giving it back (its in-memory state is
    /// not known to match the disk).
    pub(super) fn discard(mut self) {
        self.kept = None;
    }
}

impl Drop for Repo {
    fn drop(&mut self) {
        let Some(kept) = self.kept.take() else {
            return;
        };
        if std::thread::panicking() {
            return;
        }
        with_pool(|pool| {
            pool.push(kept);
            if pool.len() > KEPT {
                pool.remove(0);
            }
        });
    }
}

/// The repository at `path` (a working tree or a git dir, as
/// `Repository::open` takes it): a kept handle when one is free, else a new
/// one.
pub(super) fn open(path: &Path, role: Role) -> Result<Repo> {
    let lent = with_pool(|pool| {
        let at = pool
            .iter()
            .rposition(|k| k.path == path && k.role == role)?;
        Some(pool.swap_remove(at))
    });
    if let Some(kept) = lent {
        if stamp_of(kept.repo.path()) == Some(kept.stamp) {
            return Ok(Repo { kept: Some(kept) });
        }
    }
    let repo = Repository::open(path)
        .with_context(|| format!("opening the git repository at {}", path.display()))?;
    let stamp = stamp_of(repo.path()).unwrap_or((0, 0));
    Ok(Repo {
        kept: Some(Kept {
            path: path.to_path_buf(),
            role,
            stamp,
            repo,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept_for(path: &Path) -> usize {
        with_pool(|pool| pool.iter().filter(|k| k.path == path).count())
    }

    #[test]
    fn a_handle_is_lent_again_and_dropped_when_its_git_dir_was_made_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r");
        Repository::init(&path).unwrap();
        let first = open(&path, Role::Repository).unwrap();
        let first_dir = first.path().to_path_buf();
        drop(first);
        assert_eq!(kept_for(&path), 1);
        let again = open(&path, Role::Repository).unwrap();
        assert_eq!(kept_for(&path), 0, "the kept handle is lent, not copied");
        drop(again);

        // Made again at the same path: the old handle's git dir is gone.
        std::fs::remove_dir_all(&path).unwrap();
        std::fs::create_dir_all(path.join("placeholder")).unwrap();
        Repository::init(&path).unwrap();
        let fresh = open(&path, Role::Repository).unwrap();
        assert_eq!(fresh.path(), first_dir);
        let lent_stamp = fresh.kept.as_ref().map(|k| k.stamp);
        assert_eq!(
            lent_stamp,
            stamp_of(&first_dir),
            "a handle opened on the new git dir is lent, not the old one"
        );
        fresh.discard();
        assert_eq!(kept_for(&path), 0, "a discarded handle is not kept");
    }

    #[test]
    fn at_most_kept_handles_stay() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r");
        Repository::init(&path).unwrap();
        let many: Vec<Repo> = (0..KEPT + 3)
            .map(|_| open(&path, Role::Repository).unwrap())
            .collect();
        drop(many);
        assert!(with_pool(|pool| pool.len()) <= KEPT);
    }
}
