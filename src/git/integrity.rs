//! A stream's worktree as loki made it, checked (and put back) after every
//! attempt, because the agent that ran in it is untrusted.
//!
//! What an agent can do in its worktree that would make git lie to loki:
//!
//! - **Rewrite `.git`.** `gitdir: <repo>/.git` in the worktree's `.git` file
//!   turns every git command run there into one on the user's checkout: a
//!   commit "in the worktree" lands straight on the target and rewrites the
//!   user's index.
//! - **Move HEAD.** `git checkout -b other` (or a detached HEAD) makes a
//!   commit of the worktree go somewhere `loki/<id>` never sees, so the
//!   branch looks merged already while the target has none of the work.
//! - **Move `loki/<id>`** off the commit it started from.
//!
//! So nothing here reads the worktree's own `.git` file: its repository is
//! opened through the registration the main repository keeps
//! (`<git dir>/worktrees/<name>`, found by the worktree's path), and the
//! supervisor's commit is made through it onto `refs/heads/loki/<id>` (see
//! `commit.rs`). [`guard_worktree`] reports each of the above as a reason the
//! attempt fails (the agent gets it as feedback) and repairs it, so checks,
//! commits and the next attempt see the worktree as loki made it. A branch
//! moved off its base is put back at the base (the commits it held stay in
//! the reflog).
//!
//! Refs other than `loki/<id>` (an agent's `git update-ref refs/heads/main`)
//! cannot be told apart from the user's own work here; the merge refuses to
//! credit a branch that reached the target without loki's merge commit
//! (`merge.rs`), and `[agent] sandbox = "bwrap"` makes them read-only.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use git2::{Oid, Repository};

use super::worktree::{find_registration, set_aside};
use super::{check_id, open_repo, same_path};
use crate::model::paths::{branch_name, Layout};

/// The worktree repository of stream `id`, opened through its registration
/// in the main repository, never through the worktree's `.git` file. Also
/// returns the registration's folder.
pub(super) fn open_stream_worktree(
    repo: &Repository,
    root: &Path,
    id: &str,
) -> Result<(Repository, PathBuf)> {
    let path = Layout::new(root).worktree(id);
    let Some(reg) = find_registration(repo, &path)? else {
        bail!(
            "the worktree {} has no registration in {} (was it removed by hand?)\n  help: `loki clean {id}` removes what is left, or `loki retry {id}` makes it again",
            path.display(),
            repo.commondir().join("worktrees").display()
        );
    };
    let admin = repo
        .commondir()
        .join("worktrees")
        .join(reg.name().unwrap_or_default());
    let wrepo = Repository::open(&admin)
        .with_context(|| format!("opening the worktree repository {}", admin.display()))?;
    match wrepo.workdir() {
        Some(w) if same_path(w, &path) => Ok((wrepo, admin)),
        other => bail!(
            "the registration {} names the folder {}, not {}\n  help: `loki clean {id}` removes the worktree so the next attempt makes it again",
            admin.display(),
            other.map(|w| w.display().to_string()).unwrap_or_default(),
            path.display()
        ),
    }
}

/// Copies the objects a sandboxed agent's git wrote to its private folder
/// (`<registration>/loki-objects`, see `agent/sandbox.rs`) into the
/// repository, each written again (so hashed again: a forged object file
/// is not imported), then removes the folder. Returns how many were new.
pub(super) fn import_agent_objects(repo: &Repository, admin: &Path) -> Result<usize> {
    let private = admin.join(crate::model::paths::AGENT_OBJECTS);
    if !private.is_dir() {
        return Ok(0);
    }
    let ctx = || format!("importing the agent's objects from {}", private.display());
    let theirs = git2::Odb::new().with_context(ctx)?;
    theirs
        .add_disk_alternate(&private.to_string_lossy())
        .with_context(ctx)?;
    let mut ids = Vec::new();
    theirs
        .foreach(|id| {
            ids.push(*id);
            true
        })
        .with_context(ctx)?;
    let ours = repo.odb().with_context(ctx)?;
    let mut new = 0;
    for id in ids {
        if ours.exists(id) {
            continue;
        }
        // Unreadable or not what its name says: left out (anything that
        // needs it then fails to read, and says so).
        let Ok(obj) = theirs.read(id) else { continue };
        if ours.write(obj.kind(), obj.data()).ok() == Some(id) {
            new += 1;
        }
    }
    fs::remove_dir_all(&private).with_context(ctx)?;
    Ok(new)
}

/// Checks stream `id`'s worktree after an attempt (see the module doc) and
/// puts back what the agent changed. Returns one reason per change, empty
/// when the worktree is as loki made it. `base` is the commit the branch
/// started from.
pub fn guard_worktree(root: &Path, id: &str, base: &str) -> Result<Vec<String>> {
    check_id(id)?;
    let repo = open_repo(root)?;
    let path = Layout::new(root).worktree(id);
    let branch = branch_name(id);
    let wanted_head = format!("refs/heads/{branch}");
    let (wrepo, admin) = open_stream_worktree(&repo, root, id)?;
    import_agent_objects(&repo, &admin)?;
    let mut problems = Vec::new();

    // The `.git` file must point at the registration.
    let dotgit = path.join(".git");
    let points_home = dot_git_target(&path).is_some_and(|gd| same_path(&gd, &admin));
    if !points_home {
        let what = describe_dotgit(&dotgit);
        problems.push(format!(
            "the worktree's .git {what}; it must stay `gitdir: {}` (loki put it back)",
            admin.display()
        ));
        if dotgit.symlink_metadata().is_ok_and(|m| m.is_dir()) {
            // A repository the agent made (`git init`): kept, set aside.
            set_aside(root, &dotgit)?;
        } else if dotgit.symlink_metadata().is_ok() {
            fs::remove_file(&dotgit)
                .with_context(|| format!("removing the altered {}", dotgit.display()))?;
        }
        crate::util::write_atomic(&dotgit, format!("gitdir: {}\n", admin.display()).as_bytes())
            .with_context(|| format!("restoring {}", dotgit.display()))?;
    }

    // The branch must still descend from its base.
    let base_oid = Oid::from_str(base).ok();
    let branch_head = repo
        .find_reference(&wanted_head)
        .ok()
        .and_then(|r| r.peel_to_commit().ok())
        .map(|c| c.id());
    let descends = match (branch_head, base_oid) {
        (Some(h), Some(b)) => h == b || repo.graph_descendant_of(h, b).unwrap_or(false),
        (Some(_), None) => true,
        (None, _) => false,
    };
    if !descends {
        let Some(b) = base_oid else {
            bail!("{branch} is gone from {} and its base is unknown\n  help: `loki retry {id}` starts the stream again", root.display());
        };
        problems.push(match branch_head {
            Some(h) => format!(
                "{branch} was moved to {h}, which does not descend from the commit it started from ({b}); loki put it back there"
            ),
            None => format!("{branch} was deleted; loki made it again at the commit it started from ({b})"),
        });
        // A plain ref update: libgit2's branch API refuses to move a branch
        // a worktree has checked out.
        repo.reference(
            &wanted_head,
            b,
            true,
            &format!("loki: {branch} put back at its base"),
        )
        .with_context(|| format!("putting {branch} back at {b}"))?;
    }

    // HEAD must stay on loki/<id>.
    let head_text = fs::read_to_string(admin.join("HEAD")).unwrap_or_default();
    let head = head_text.trim();
    if head != format!("ref: {wanted_head}") {
        let on = match head.strip_prefix("ref: refs/heads/") {
            Some(other) => format!("branch {other}"),
            None if head.is_empty() => "nothing".to_string(),
            None => format!("a detached HEAD ({head})"),
        };
        problems.push(format!(
            "the agent moved the worktree's HEAD to {on}; loki commits only on {branch} (loki put HEAD back, keeping the files)"
        ));
        wrepo
            .set_head(&wanted_head)
            .with_context(|| format!("putting the HEAD of {} back on {branch}", path.display()))?;
        // The index described the other branch: make it describe ours, so
        // the files the agent left count as its changes.
        let tree = wrepo
            .head()
            .and_then(|h| h.peel_to_tree())
            .with_context(|| format!("reading {branch}"))?;
        let mut index = wrepo
            .index()
            .with_context(|| format!("reading the index of {}", path.display()))?;
        index
            .read_tree(&tree)
            .and_then(|()| index.write())
            .with_context(|| format!("resetting the index of {}", path.display()))?;
    }
    Ok(problems)
}

/// The worktree's `.git` file as text: a bounded read that neither follows
/// a link nor blocks on a FIFO the agent put there.
fn read_dotgit(worktree: &Path) -> Option<String> {
    crate::util::read_inside(worktree, Path::new(".git"), 4096)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
}

/// Where a worktree folder's `.git` file points (`gitdir: <path>`, a
/// relative one taken from the folder); `None` when it is no regular file,
/// cannot be read as short text, or says something else.
pub(super) fn dot_git_target(folder: &Path) -> Option<PathBuf> {
    let text = read_dotgit(folder)?;
    let gd = Path::new(text.strip_prefix("gitdir:")?.trim());
    Some(if gd.is_absolute() {
        gd.to_path_buf()
    } else {
        folder.join(gd)
    })
}

/// What the worktree's `.git` is now, for the reason the attempt fails.
fn describe_dotgit(dotgit: &Path) -> String {
    match dotgit.symlink_metadata() {
        Err(_) => "was removed".into(),
        Ok(m) if m.file_type().is_symlink() => format!(
            "was replaced by a symlink to {}",
            fs::read_link(dotgit)
                .map(|t| t.display().to_string())
                .unwrap_or_default()
        ),
        Ok(m) if m.is_dir() => "was replaced by a repository of its own".into(),
        Ok(m) if !m.file_type().is_file() => "was replaced by something that is not a file".into(),
        Ok(_) => {
            let Some(text) = dotgit.parent().and_then(read_dotgit) else {
                return "was replaced by a file loki cannot read as text (or over 4 KiB)".into();
            };
            let first = text.lines().next().unwrap_or("").trim();
            format!("was changed to `{}`", crate::util::one_line(first))
        }
    }
}
