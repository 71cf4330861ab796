//! What loki itself saw of a stream's files, so a commit hashes only the
//! files that changed, not the whole tree.
//!
//! A stream's commit never trusts the worktree's own index (the agent can
//! write it; see `integrity.rs`), so without this every commit hashed every
//! file again: on a 5,000-file tree that was two thirds of the supervisor's
//! CPU. Instead loki keeps, in its own memory, the index entries (stat data
//! and blob id) it wrote itself when no agent was running: after a fresh
//! checkout and after each of its commits. A commit starts from the
//! branch's tree and takes an entry's stat data only where it names the
//! same blob and mode at the same path; libgit2 then hashes a file again
//! only when its size, mode, mtime, ctime, inode or owner differ, and
//! reports the paths it staged, so only the folders on their way are
//! written (`tree_edit.rs`).
//!
//! Why this is safe against an agent: the cache is never in a file, so no
//! agent can write it, and ctime is set by the kernel on every change of a
//! file (nothing unprivileged can set it back), so a rewritten file always
//! looks changed. A repository that turns stat checks off or down
//! (`core.ignorestat`, `core.trustctime = false`) gets no cache: every file
//! is hashed, as before. A new supervisor starts empty and hashes each
//! stream's files once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use git2::{Index, IndexEntry, Repository};

/// Entries by worktree path.
static SEEN: Mutex<BTreeMap<PathBuf, Vec<IndexEntry>>> = Mutex::new(BTreeMap::new());

fn with_seen<T>(f: impl FnOnce(&mut BTreeMap<PathBuf, Vec<IndexEntry>>) -> T) -> T {
    f(&mut SEEN.lock().unwrap_or_else(|p| p.into_inner()))
}

/// Whether stat data can be trusted in `repo` (a stream's worktree).
pub(super) fn stat_is_trusted(repo: &Repository) -> bool {
    let Ok(cfg) = repo.config() else {
        return false;
    };
    let ignore_stat = cfg.get_bool("core.ignorestat").unwrap_or(false);
    let trust_ctime = cfg.get_bool("core.trustctime").unwrap_or(true);
    !ignore_stat && trust_ctime
}

/// Records `index` (just written by loki to its file, no agent running) as
/// what loki saw of the worktree at `path`.
///
/// An entry is kept only when its file's ctime is older than the index
/// file's (git's "racily clean" rule, judged by the filesystem's own
/// clock): a file changed later, even within the same clock tick as the
/// checkout, then always has a newer ctime than the entry. The index file's
/// time is read now, before any agent runs, and kept in memory.
pub(super) fn remember(path: &Path, index: &Index) {
    remember_as(path, index, index.path());
}

/// [`remember`] for an index loki wrote to a file of its own and then
/// renamed to `index_file`.
pub(super) fn remember_as(path: &Path, index: &Index, index_file: Option<&Path>) {
    use std::os::unix::fs::MetadataExt;
    let stamp = index_file
        .and_then(|p| std::fs::metadata(p).ok())
        .map(|m| (m.ctime(), m.ctime_nsec()));
    let Some(stamp) = stamp else {
        forget(path);
        return;
    };
    let entries: Vec<IndexEntry> = index
        .iter()
        .filter(|e| {
            let ctime = (
                i64::from(e.ctime.seconds()),
                i64::from(e.ctime.nanoseconds()),
            );
            // An entry without stat data (hashed, found unchanged) says nothing.
            let has_stat = e.mtime.seconds() != 0 || e.ctime.seconds() != 0;
            stage_of(e) == 0 && !e.id.is_zero() && has_stat && ctime < stamp
        })
        .collect();
    with_seen(|seen| seen.insert(path.to_path_buf(), entries));
}

/// [`remember`] for the index a checkout just wrote to `index_file`.
pub(super) fn remember_checkout(path: &Path, index_file: &Path) {
    match Index::open(index_file) {
        Ok(index) => remember(path, &index),
        Err(_) => forget(path),
    }
}

/// Forgets the worktree at `path` (removed, or handed to another stream).
pub(super) fn forget(path: &Path) {
    with_seen(|seen| seen.remove(path));
}

/// Puts the entries loki saw for the worktree at `path` into `index`
/// (empty). The caller then reads the branch's tree into it: libgit2's
/// `read_tree` keeps an old entry's stat data exactly when it names the
/// same blob and mode at the same path and drops every other entry.
pub(super) fn seed(path: &Path, index: &mut Index) -> Result<(), git2::Error> {
    let entries = with_seen(|seen| {
        seen.get(path)
            .map(|v| v.iter().map(copy).collect::<Vec<_>>())
    });
    // In index order, so each insertion appends.
    for e in entries.unwrap_or_default() {
        index.add(&e)?;
    }
    Ok(())
}

/// Gives the entries of `index` that have no stat data (libgit2 hashes
/// such a file, finds it unchanged and leaves the entry as it was) the stat
/// data of their file in `workdir`, so the next commit and the next
/// checkout need not hash or rewrite it again. Call after the tree was
/// written and before the index is, with no agent running: the entry's
/// blob was just found equal to the file.
pub(super) fn fill_missing(workdir: &Path, index: &mut Index) -> Result<(), git2::Error> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::MetadataExt;
    let missing: Vec<IndexEntry> = index
        .iter()
        .filter(|e| stage_of(e) == 0 && e.mtime.seconds() == 0 && e.ctime.seconds() == 0)
        .collect();
    for mut e in missing {
        let rel = Path::new(std::ffi::OsStr::from_bytes(&e.path));
        let Ok(m) = std::fs::symlink_metadata(workdir.join(rel)) else {
            continue;
        };
        let kind_matches = if e.mode & 0o170000 == 0o120000 {
            m.file_type().is_symlink()
        } else {
            m.file_type().is_file()
        };
        if !kind_matches {
            continue;
        }
        // The index format keeps 32 bits of each.
        e.ctime = git2::IndexTime::new(m.ctime() as i32, m.ctime_nsec() as u32);
        e.mtime = git2::IndexTime::new(m.mtime() as i32, m.mtime_nsec() as u32);
        e.dev = m.dev() as u32;
        e.ino = m.ino() as u32;
        e.uid = m.uid();
        e.gid = m.gid();
        e.file_size = m.size() as u32;
        index.add(&e)?;
    }
    Ok(())
}

fn stage_of(e: &IndexEntry) -> u16 {
    (e.flags >> 12) & 0x3
}

fn copy(e: &IndexEntry) -> IndexEntry {
    IndexEntry {
        ctime: e.ctime,
        mtime: e.mtime,
        dev: e.dev,
        ino: e.ino,
        mode: e.mode,
        uid: e.uid,
        gid: e.gid,
        file_size: e.file_size,
        id: e.id,
        flags: e.flags,
        flags_extended: e.flags_extended,
        path: e.path.clone(),
    }
}
