//! Everything that touches git, through git2: this folder is the only user
//! of git2 in loki. Each function borrows its own `Repository` (it is not
//! `Sync`) from the handles kept between operations (`handles.rs`); callers
//! run them in `spawn_blocking`. Callers get plain data
//! (strings, paths and the types defined here), never a git2 type.
//!
//! Worktrees live only under `.loki/worktrees/<id>` on branch `loki/<id>`
//! (names from [`crate::model::paths`]). Merges are made in memory
//! (`merge_commits` + `write_tree_to`) as a non-fast-forward commit with two
//! parents, and the target ref moves by compare-and-swap
//! (`reference_matching`); if it moved underneath, the merge is redone on the
//! new head. The user's own checkout is updated only when that is safe: if
//! they have uncommitted changes (or untracked files) on paths the merge
//! touches, the merge waits and says which.
//!
//! Where each part lives (each file's doc says the decisions it makes):
//!
//! | file | owns |
//! | --- | --- |
//! | `mod.rs` | finding the repository, the id check, the shared helpers (signature, message, paths, status), the process-wide locks |
//! | `handles.rs` | opened repositories kept between operations, so their object cache and index stay read |
//! | `branch.rs` | reading, creating and deleting branches; files and merge bases on a branch |
//! | `worktree.rs` | preparing, reusing and removing stream worktrees, their registrations and locks |
//! | `commit.rs` | staging a stream's worktree once for its checks and its commit, committing it onto its branch, what it touched, its diff against the target |
//! | `pool.rs` | merged streams' worktrees kept to be switched to the next stream's branch |
//! | `stat_cache.rs` | the stat data loki saw of each worktree's files, so a commit hashes only what changed |
//! | `integrity.rs` | opening a stream's worktree through its registration; what an agent changed in its `.git`, HEAD or branch, put back |
//! | `tree_merge.rs` | merges and diffs of trees that look only inside the folders that differ |
//! | `merge.rs` | merging a stream into the target, the journal of a merge in flight, the target's abandoned locks |
//! | `checkout.rs` | the safe update of the user's checkout after a merge, and its resync after a crash |
//! | `history.rs` | reading history back: stream merges and their attempts, trailers, the graph |
//! | `init.rs` | making a new repository with a first commit (the demo's) |
//! | `remote.rs` | the remote several supervisors share: fetches, claims, pushed progress and merges (the git CLI) |
//!
//! **Serialised changes.** Inside one process, changes to the worktrees'
//! structure take one lock (`WORKTREES_LOCK`) and changes to the target
//! and its checkouts another (`TARGET_LOCK`), so a merge never waits for a
//! worktree being prepared or removed (on a 5,000-file tree a fresh
//! worktree's checkout takes a few hundred milliseconds). Merges stay
//! serialized on the target; preparations stay serialized with one
//! another, because libgit2's worktree add is not safe to interleave, and
//! take milliseconds when the pool serves them. Other writers (the user's
//! `git commit`, another tool) are handled by the compare-and-swap.
//!
//! **Cost of the change, not of the tree.** A stream's worktree is a pooled
//! one switched to its branch (`pool.rs`); its commits hash only files whose
//! stat data changed since loki saw them (`stat_cache.rs`), and a tree
//! it writes (staged or merged) is its base with the changed entries
//! spliced in, every other entry's bytes copied (`tree_edit.rs`); its worktree is walked once when the agent is done,
//! for both what the checks judge and what is committed (`commit.rs`);
//! the repositories opened for it are kept for the next step, with what
//! they read (`handles.rs`). Three process-wide libgit2 options: parsed
//! trees are cached up to 1 MiB ([`before_threads`]: a folder of a few
//! hundred outputs was inflated again each time one merge looked at it),
//! the whole cache is bounded, and libgit2's check that every
//! entry of a tree it writes exists is off (it read each entry of every
//! changed folder); instead the objects an attempt changed are looked up
//! against its base (`Staged::touched_since`), and everything else is the
//! target's own. Every local step is done with libgit2, in process,
//! chosen per step from `benches/git_steps.rs`, which times each step both
//! ways on one 5,000-file repository (medians of 7, ms, loki / CLI, on
//! tmpfs): prepare 13.8 / 104.5 (a pooled worktree switched, against `git
//! worktree add`), commit 11.3 / 59.1 (`git add -A` + `git commit`), merge
//! 3.1 / 17.8 (in memory, looking only inside the folders that differ
//! (`tree_merge.rs`), the user's checkout asked only about the merge's
//! paths; against `git merge --no-ff` in the main checkout), clean-up 0.5 /
//! 15.1 (`git worktree remove` + `git branch -D`). Before `tree_merge.rs`
//! the merge was the one step the CLI did faster (46.2 / 24.3); it would
//! have stayed in process anyway, because `git merge` works in the user's
//! own checkout (it refuses or stops half-way on their changes, and cannot
//! be a compare-and-swap of the target ref). The talk to a shared
//! remote is the exception: the git CLI (`remote.rs` says why).

pub mod tree;
pub use tree::{export_commit, valid_branch_name, BranchTree, TreeEntry};

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;

use anyhow::{bail, Context, Result};
use git2::{BranchType, Diff, ErrorCode, Oid, Reference, Repository, Signature, StatusOptions};

use crate::model::paths::branch_name;

mod branch;
mod checkout;
mod commit;
mod handles;
mod history;
mod init;
mod integrity;
mod merge;
mod pool;
pub mod remote;
mod resolve;
mod stat_cache;
mod tree_edit;
mod tree_merge;
mod worktree;

pub use branch::{
    branch_exists, branch_head, branch_merge_base, create_branch, current_branch, delete_branch,
    delete_named_branch, file_on_branch, local_branches,
};
pub use commit::{
    amend_attempt, commit_resolution, commit_stream, diff_against_target, stage_stream,
    touched_paths, Staged,
};
pub use history::{
    graph_oneline, merge_paths, merged_streams, parse_trailers, stream_merges, trailer, CommitInfo,
    MergeHistory, StreamMerge,
};
pub use init::init_with_commit;
pub use integrity::guard_worktree;
pub use merge::{
    clear_abandoned_target_locks, merge_journal_path, merge_stream, merge_stream_with_hook,
    refresh_stream, LockCleanup, MergeOutcome, Refresh,
};
pub use remote::valid_remote_name;
pub use resolve::{resolution_problems, start_resolution, Resolution};
pub use worktree::{
    clear_stale_locks, empty_pool, prepare_worktree, prune_registration, registrations,
    remove_worktree, repair_registrations, retire_worktree, uncommitted_paths, Registration,
    RegistrationRepair, Worktree,
};

/// Identity used when the repo has no `user.name` / `user.email`.
pub const FALLBACK_NAME: &str = "loki";
pub const FALLBACK_EMAIL: &str = "loki@localhost";

/// Changes to the worktrees' structure in this process run one at a time:
/// worktree additions, pool moves, removals and prunes, branch creations
/// and deletions, and the refresh of a stream's branch in its worktree.
/// libgit2's worktree add, prune and "is this branch checked out" scans are
/// not safe to interleave on one repository (seen: a worktree add failing
/// with "already checked out" while another worktree was being removed).
static WORKTREES_LOCK: Mutex<()> = Mutex::new(());

/// Changes to a target branch and the checkouts of it run one at a time:
/// merges (local, or pushed to a shared remote), the follow of a remote's
/// target, the clean-up of a killed merge's locks, and loki's refs beside
/// them. They never wait for a worktree's preparation or removal: a merge
/// reads the worktrees' registrations without the other lock, and skips
/// any that is changing under it (none of those is a checkout of the
/// target). No function takes both locks.
static TARGET_LOCK: Mutex<()> = Mutex::new(());

fn worktrees_lock() -> std::sync::MutexGuard<'static, ()> {
    WORKTREES_LOCK
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn target_lock() -> std::sync::MutexGuard<'static, ()> {
    TARGET_LOCK
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
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

/// Stream ids become folder and branch names: the one rule
/// ([`crate::model::valid_stream_id`]), checked again here because this is
/// where an id touches the disk and the refs.
fn check_id(id: &str) -> Result<()> {
    if !crate::model::valid_stream_id(id)
        || !Reference::is_valid_name(&format!("refs/heads/{}", branch_name(id)))
    {
        return Err(crate::error::Error::refusal(format!("{id:?} is not a valid stream id"))
            .hint("ids are 1-64 characters of a-z, 0-9, '.', '_' and '-', starting with a letter or digit (no '..', no trailing '.' or '.lock')")
            .into());
    }
    Ok(())
}

/// Sets libgit2's process-wide options; to be called once, before any
/// thread starts (libgit2 reads them unsynchronized).
///
/// A repository caches parsed trees only up to 4 KiB by default, so a
/// folder of a few hundred files (a book's chapters, every stream's
/// outputs) was read and inflated again each of the half-dozen times one
/// merge looks at it. Trees up to 1 MiB (about 25,000 entries) are cached
/// now, and the handles that hold the cache are kept between operations
/// (`handles.rs`), so the whole cache is bounded to [`CACHE_BYTES`]
/// (libgit2's default is 256 MiB) and libgit2 evicts beyond it.
pub fn before_threads() {
    // SAFETY: called before any thread exists (see above), with a kind
    // the option accepts.
    let _ = unsafe { git2::opts::set_cache_object_limit(git2::ObjectType::Tree, 1 << 20) };
    // SAFETY: as above; the option takes one `ssize_t`.
    unsafe {
        libgit2_sys::git_libgit2_opts(
            libgit2_sys::GIT_OPT_SET_CACHE_MAX_SIZE as std::ffi::c_int,
            CACHE_BYTES as libc::ssize_t,
        );
    }
}

/// The bound on libgit2's object cache, over every kept handle: a few
/// hundred versions of a thousand-entry folder.
const CACHE_BYTES: usize = 32 << 20;

fn open_repo(path: &Path) -> Result<handles::Repo> {
    lax_object_creation();
    handles::open(path, handles::Role::Repository)
}

/// [`open_repo`] for a checkout of the target a merge checks and updates
/// (its index read once, by the handle that wrote it last).
fn open_checkout(dir: &Path) -> Result<handles::Repo> {
    lax_object_creation();
    handles::open(dir, handles::Role::Checkout)
}

/// libgit2's check that every entry of a tree it writes exists reads each
/// entry of every changed folder (a header read of each loose object):
/// with a folder of 1,000 outputs, a tenth of a stream's cost. loki checks
/// the objects an attempt changed instead (`Staged::touched_since`);
/// everything else is the target's own.
fn lax_object_creation() {
    static LAX: std::sync::Once = std::sync::Once::new();
    LAX.call_once(|| git2::opts::strict_object_creation(false));
}

/// `repo`'s index as its file has it now. A kept handle (`handles.rs`)
/// holds the index it read last; this reads the file again only when it
/// changed since (its size, time, inode or trailing checksum).
fn current_index(repo: &Repository) -> Result<git2::Index, git2::Error> {
    let mut index = repo.index()?;
    index.read(false)?;
    Ok(index)
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

/// Staged, unstaged and untracked (recursing into untracked folders) paths:
/// all of them, or only those that are or lie under one of `among` (then
/// git reads only those paths' folders).
fn dirty_paths(
    repo: &Repository,
    among: Option<&BTreeSet<String>>,
) -> Result<BTreeSet<String>, git2::Error> {
    let mut opts = StatusOptions::new();
    opts.include_untracked(true)
        .recurse_untracked_dirs(true)
        .include_ignored(false)
        .exclude_submodules(false);
    if let Some(paths) = among {
        if paths.is_empty() {
            return Ok(BTreeSet::new());
        }
        // Literal paths, not patterns: a path with `*` in it is itself.
        opts.disable_pathspec_match(true);
        for p in paths {
            opts.pathspec(p);
        }
    }
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

/// The common git dir of the repository at `root` (what every linked
/// worktree shares: objects, refs, the worktrees' registrations).
pub fn common_dir(root: &Path) -> Result<PathBuf> {
    Ok(open_repo(root)?.commondir().to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A merge does not wait for the worktrees' lock: a worktree being
    /// prepared or removed (a full checkout of a large tree, say) holds
    /// that lock, and the merge goes on beside it.
    #[test]
    fn a_merge_goes_on_while_the_worktrees_lock_is_held() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("repo");
        std::fs::create_dir_all(root.join(".loki")).unwrap();
        std::fs::write(root.join("README.md"), "# book\n").unwrap();
        std::fs::write(
            root.join(".loki/.gitignore"),
            crate::model::paths::LOKI_GITIGNORE,
        )
        .unwrap();
        init_with_commit(&root, "main", "t", "t@example.com", "first").unwrap();
        let root = repo_root(&root).unwrap();
        let wt = prepare_worktree(&root, "s1", "main").unwrap();
        std::fs::write(wt.path.join("s1.md"), "the draft\n").unwrap();
        commit_stream(&root, "s1", &[], "loki: s1 attempt 1", "", &[]).unwrap();

        let held = worktrees_lock();
        let (tx, rx) = std::sync::mpsc::channel();
        let r = root.clone();
        std::thread::spawn(move || {
            let _ = tx.send(
                merge_stream(&r, "s1", "main", "Merge stream s1", &[]).map_err(|e| e.to_string()),
            );
        });
        let outcome = rx
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("the merge waited for the worktrees' lock");
        drop(held);
        assert!(
            matches!(outcome, Ok(MergeOutcome::Merged { .. })),
            "{outcome:?}"
        );
        assert_eq!(
            std::fs::read_to_string(root.join("s1.md")).unwrap(),
            "the draft\n"
        );
    }
}
