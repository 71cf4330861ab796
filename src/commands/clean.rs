//! `loki clean [--all] [--dry-run]`: removes what finished streams leave
//! behind: their worktrees, `loki/<id>` branches, run records and transcripts.
//!
//! What is removed (decided from the stream states in `.loki/state/*.json`,
//! and those of a kept rehearsal in `.loki/rehearsal/state/`):
//!
//! | status | without `--all` | with `--all` |
//! | --- | --- | --- |
//! | merged | worktree, branch, runs, logs; the state file stays (it records the merge) | same |
//! | failed, cancelled, blocked | worktree, branch, runs, logs and the state file (the next run starts the stream fresh) | same |
//! | conflicted, interrupted, pending, retrying, awaiting approval, … | kept (they hold work to resolve or resume) | as failed |
//!
//! Decisions worth knowing:
//!
//! - **Never while a supervisor runs.** `loki clean` takes the supervisor
//!   lock itself for as long as it works (a `--dry-run` only asks who holds
//!   it), so no `loki run` can start underneath it.
//! - **Uncommitted work is kept.** Without `--all`, a worktree with
//!   uncommitted changes (staged, unstaged or untracked files) is kept
//!   together with everything else of its stream, and the reason is printed;
//!   `--all` removes it anyway. A locked worktree is always kept.
//! - **Only loki's places.** Nothing outside `.loki/` and the `loki/*`
//!   branches is touched. Worktree registrations are pruned only when their
//!   folder was under `.loki/worktrees/` and is gone (and they are not
//!   locked). A folder in `.loki/worktrees/` that is no registered git
//!   worktree is removed only when it is empty; otherwise it is reported and
//!   kept. Worktrees and `loki/*` branches that no stream state names are
//!   reported, never removed. A `loki-*` registration a killed supervisor
//!   cut short is removed first ([`crate::git::repair_registrations`]). A symlinked `.loki` (or a folder in it) is
//!   never followed.
//! - **Errors do not stop the rest.** An action that fails is reported, the
//!   rest of that stream is left alone, the other streams go on, and the exit
//!   code is 1.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::error::Error;
use crate::git::Registration;
use crate::model::paths::{branch_name, stream_of_branch};
use crate::model::Layout;
use crate::model::Status;
use crate::store::{StateStore, SteerLock, SupervisorLock};
use crate::supervisor::door;

/// Something `loki clean` removes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// A stream's worktree folder and its registration ([`crate::git::remove_worktree`]).
    RemoveWorktree { id: String, path: PathBuf },
    /// A stream's worktree registration whose folder is gone.
    PruneStreamRegistration { id: String, path: PathBuf },
    /// Branch `loki/<id>` ([`crate::git::delete_branch`]).
    DeleteBranch { id: String },
    /// `.loki/runs/<id>` or `.loki/logs/<id>`.
    RemoveDir { path: PathBuf },
    /// `.loki/state/<id>.json` of a stream that is not merged, at the
    /// version it was read at (removed through the state door, so a change
    /// made meanwhile wins).
    RemoveStateFile {
        path: PathBuf,
        state_dir: PathBuf,
        id: String,
        version: u64,
    },
    /// A registration under `.loki/worktrees/` whose folder is gone.
    PruneRegistration { name: String, path: PathBuf },
    /// An empty folder in `.loki/worktrees/` that is no worktree.
    RemoveEmptyFolder { path: PathBuf },
}

/// The removals for one stream, applied in order; the first failure stops them.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamPlan {
    pub id: String,
    pub status: Status,
    pub actions: Vec<Action>,
}

/// What `loki clean` would do.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    pub streams: Vec<StreamPlan>,
    /// Registrations to prune and empty folders to remove, after the streams.
    pub extra: Vec<Action>,
    /// Streams left alone because of their status (`--all` removes them):
    /// `<id> (<status>): …`.
    pub kept_streams: Vec<String>,
    /// Other things left alone, with the reason (one line each, paths
    /// relative to the root).
    pub kept: Vec<String>,
}

/// `loki clean [--all] [--dry-run]` in the repo at `root`. Prints every
/// action (or, with `dry_run`, what it would do) to stdout. Refuses (an
/// error) while a supervisor runs. Returns 0, or 1 when some removal failed.
pub fn run(root: &Path, all: bool, dry_run: bool) -> Result<i32> {
    let root = crate::git::repo_root(root)?;
    let state_dir = Layout::new(&root).state_dir();
    // Hold the steering lock while removing: a run that starts meanwhile
    // waits for it before it reads any state (see `SteerLock`).
    let _gate = if dry_run || !state_dir.is_dir() {
        None
    } else {
        Some(SteerLock::acquire(&state_dir)?)
    };
    if let Some(pid) = SupervisorLock::holder(&state_dir)? {
        return Err(supervisor_running(&root, Some(pid)).into());
    }

    // Registrations a killed supervisor left half-made (`git fsck` flags
    // them; libgit2 does not even list them, so the plan cannot see them).
    let repairs: Vec<_> = crate::git::repair_registrations(&root, !dry_run)?
        .into_iter()
        .filter(|r| !dry_run || r.cut_short)
        .collect();
    for r in &repairs {
        let verb = if dry_run { "would remove" } else { "removed" };
        println!("{verb} the worktree registration {} ({})", r.name, r.why);
    }
    let plan = plan(&root, all)?;
    if dry_run {
        for line in dry_run_lines(&root, &plan) {
            if !repairs.is_empty() && line == "nothing to clean" {
                continue;
            }
            println!("{line}");
        }
        return Ok(0);
    }

    let mut failed = 0usize;
    let mut cleaned = 0usize;
    for sp in &plan.streams {
        let mut ok = true;
        for action in &sp.actions {
            match apply(&root, action) {
                Ok(()) => println!("{}", describe(&root, action, true)),
                Err(e) => {
                    eprintln!(
                        "error: could not {} (stream {}): {e:#}",
                        describe(&root, action, false),
                        sp.id
                    );
                    failed += 1;
                    ok = false;
                    break;
                }
            }
        }
        if ok {
            cleaned += 1;
        }
    }
    // Registrations to prune and empty folders (removals do not add any:
    // a stream's own registration goes with its worktree).
    for action in &plan.extra {
        match apply(&root, action) {
            Ok(()) => println!("{}", describe(&root, action, true)),
            Err(e) => {
                eprintln!("error: could not {}: {e:#}", describe(&root, action, false));
                failed += 1;
            }
        }
    }
    for k in plan.kept_streams.iter().chain(&plan.kept) {
        println!("kept {k}");
    }
    if plan.streams.is_empty() && plan.extra.is_empty() && repairs.is_empty() {
        println!("nothing to clean");
    } else {
        println!("cleaned {}", streams_word(cleaned));
    }
    if !plan.kept_streams.is_empty() {
        println!("`loki clean --all` also removes the kept streams (their work is lost)");
    }
    Ok(if failed > 0 { 1 } else { 0 })
}

/// What `loki clean --dry-run` prints for `plan`: `would remove worktree
/// .loki/worktrees/ch01`, `would delete branch loki/ch01`, …, `would keep …`
/// and a summary line.
pub fn dry_run_lines(root: &Path, plan: &Plan) -> Vec<String> {
    let mut out: Vec<String> = plan
        .streams
        .iter()
        .flat_map(|s| &s.actions)
        .chain(&plan.extra)
        .map(|a| format!("would {}", describe(root, a, false)))
        .collect();
    out.extend(
        plan.kept_streams
            .iter()
            .chain(&plan.kept)
            .map(|k| format!("would keep {k}")),
    );
    if plan.streams.is_empty() && plan.extra.is_empty() {
        out.push("nothing to clean".into());
    } else {
        out.push(format!(
            "would clean {}; nothing was removed (--dry-run)",
            streams_word(plan.streams.len())
        ));
    }
    out
}

/// What `loki clean` would remove in the repo whose main worktree is `root`.
/// Reads only; see the module doc for the rules.
pub fn plan(root: &Path, all: bool) -> Result<Plan> {
    let regs = crate::git::registrations(root)?;
    let mut plan = Plan::default();
    let mut removed_paths = BTreeSet::new();
    let mut named_paths = BTreeSet::new();
    let mut named: BTreeSet<String> = BTreeSet::new();

    for layout in [Layout::new(root), Layout::rehearsal(root)] {
        let state_dir = layout.state_dir();
        if !state_dir.is_dir() {
            continue;
        }
        let store = StateStore::new(&state_dir);
        let states = store
            .load_all()
            .map_err(anyhow::Error::from)
            .with_context(|| format!("reading the stream states in {}", state_dir.display()))?;
        for st in states {
            named.insert(st.id.to_string());
            let removable = all
                || matches!(
                    st.status,
                    Status::Merged | Status::Failed | Status::Cancelled | Status::Blocked
                );
            let mut actions = Vec::new();
            let mut keep_reason: Option<String> = None;

            // The worktree.
            let wt_path = layout.worktree(&st.id);
            named_paths.insert(wt_path.clone());
            let reg = regs.iter().find(|r| same_path(&r.path, &wt_path));
            let folder = wt_path.symlink_metadata().ok();
            match (reg, &folder) {
                (Some(r), _) if r.locked => {
                    keep_reason = Some(format!(
                        "its worktree {} is locked (`git worktree unlock` lets loki remove it)",
                        rel(root, &wt_path)
                    ));
                }
                (Some(_), Some(_)) => {
                    if !all {
                        match crate::git::uncommitted_paths(&wt_path) {
                            Ok(paths) if paths.is_empty() => {}
                            Ok(paths) => {
                                keep_reason = Some(format!(
                                    "{} has uncommitted changes ({}); commit or move them first, or `loki clean --all` removes them",
                                    rel(root, &wt_path),
                                    summarize(&paths)
                                ))
                            }
                            Err(e) => {
                                keep_reason = Some(format!(
                                    "cannot tell whether {} holds uncommitted work ({e:#})",
                                    rel(root, &wt_path)
                                ))
                            }
                        }
                    }
                    actions.push(Action::RemoveWorktree {
                        id: st.id.to_string(),
                        path: wt_path.clone(),
                    });
                }
                (Some(_), None) => actions.push(Action::PruneStreamRegistration {
                    id: st.id.to_string(),
                    path: wt_path.clone(),
                }),
                (None, Some(meta)) => {
                    if meta.is_dir() && is_empty_dir(&wt_path) {
                        actions.push(Action::RemoveEmptyFolder {
                            path: wt_path.clone(),
                        });
                    } else {
                        keep_reason = Some(format!(
                            "{} is not a git worktree and not empty; loki will not delete it (move it away if you do not need it)",
                            rel(root, &wt_path)
                        ));
                    }
                }
                (None, None) => {}
            }

            // The branch.
            if crate::git::branch_exists(root, &branch_name(&st.id))? {
                actions.push(Action::DeleteBranch {
                    id: st.id.to_string(),
                });
            }

            // Run records and transcripts.
            for dir in [layout.runs_dir(&st.id), layout.logs_dir(&st.id)] {
                if dir.symlink_metadata().is_ok() {
                    actions.push(Action::RemoveDir { path: dir });
                }
            }

            if actions.is_empty() && keep_reason.is_none() {
                // Nothing of it is left on disk (a merged stream after its merge).
                if removable && st.status != Status::Merged && st.status.is_terminal() {
                    // Only its state: a failed stream with no work left starts fresh.
                    plan.streams.push(StreamPlan {
                        id: st.id.to_string(),
                        status: st.status,
                        actions: vec![Action::RemoveStateFile {
                            path: layout.state_file(&st.id),
                            state_dir: state_dir.clone(),
                            id: st.id.to_string(),
                            version: st.version,
                        }],
                    });
                }
                continue;
            }
            if !removable {
                plan.kept_streams.push(format!(
                    "{} ({}): it holds work to resolve or resume; `loki clean --all` removes it",
                    st.id, st.status
                ));
                continue;
            }
            if let Some(why) = keep_reason {
                plan.kept.push(format!("{} ({}): {why}", st.id, st.status));
                continue;
            }
            if st.status != Status::Merged {
                actions.push(Action::RemoveStateFile {
                    path: layout.state_file(&st.id),
                    state_dir: state_dir.clone(),
                    id: st.id.to_string(),
                    version: st.version,
                });
            }
            removed_paths.insert(wt_path);
            plan.streams.push(StreamPlan {
                id: st.id.to_string(),
                status: st.status,
                actions,
            });
        }
    }

    let (extra, mut kept) = leftovers(root, &regs, &removed_paths, &named_paths)?;
    plan.extra = extra;

    // Branches no stream state names: reported only.
    for name in crate::git::local_branches(root)? {
        if let Some(id) = stream_of_branch(&name) {
            if !named.contains(id) {
                kept.push(format!(
                    "branch {name}: no stream state names it (delete it with `git branch -D {name}` if you do not need it)"
                ));
            }
        }
    }
    // Registered worktrees in .loki/worktrees/ that no stream state names.
    for r in &regs {
        let Some(id) = stream_folder(root, &r.path) else {
            continue;
        };
        if !named.contains(&id) && r.path.exists() {
            kept.push(format!(
                "worktree {}: no stream state names it (`git worktree remove` removes it)",
                rel(root, &r.path)
            ));
        }
    }
    plan.kept.extend(kept);
    Ok(plan)
}

// ---------------------------------------------------------------------------
// helpers

/// The refusal of `loki clean` while a supervisor runs.
fn supervisor_running(root: &Path, pid: Option<i32>) -> Error {
    let who = pid
        .map(|p| format!("a loki supervisor (pid {p})"))
        .unwrap_or_else(|| "a loki supervisor".to_string());
    Error::refusal(format!(
        "{who} is running in {}; loki clean changes nothing while it runs",
        root.display()
    ))
    .hint("let it finish, or stop it (`loki signal STOP`, or Ctrl-C in its terminal), then run `loki clean` again")
}

fn streams_word(n: usize) -> String {
    if n == 1 {
        "1 stream".into()
    } else {
        format!("{n} streams")
    }
}

/// `removed worktree .loki/worktrees/ch01` (done) or `remove worktree …`.
fn describe(root: &Path, action: &Action, done: bool) -> String {
    let v = |done_word: &str, word: &str| {
        if done {
            done_word.to_string()
        } else {
            word.to_string()
        }
    };
    match action {
        Action::RemoveWorktree { path, .. } => {
            format!("{} worktree {}", v("removed", "remove"), rel(root, path))
        }
        Action::PruneStreamRegistration { path, .. } => format!(
            "{} the worktree registration of {} (its folder is gone)",
            v("pruned", "prune"),
            rel(root, path)
        ),
        Action::DeleteBranch { id } => {
            format!("{} branch {}", v("deleted", "delete"), branch_name(id))
        }
        Action::RemoveDir { path } => format!("{} {}", v("removed", "remove"), rel(root, path)),
        Action::RemoveStateFile { path, .. } => {
            format!("{} state file {}", v("removed", "remove"), rel(root, path))
        }
        Action::PruneRegistration { name, path } => format!(
            "{} worktree registration {name} ({} is gone)",
            v("pruned", "prune"),
            rel(root, path)
        ),
        Action::RemoveEmptyFolder { path } => {
            format!(
                "{} empty folder {}",
                v("removed", "remove"),
                rel(root, path)
            )
        }
    }
}

fn apply(root: &Path, action: &Action) -> Result<()> {
    match action {
        Action::RemoveWorktree { id, .. } | Action::PruneStreamRegistration { id, .. } => {
            crate::git::remove_worktree(root, id)
        }
        Action::DeleteBranch { id } => crate::git::delete_branch(root, id),
        Action::RemoveDir { path } => {
            check_inside_loki(root, path)?;
            let meta = match path.symlink_metadata() {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(e).with_context(|| format!("examining {}", path.display())),
            };
            if meta.is_dir() {
                fs::remove_dir_all(path)
            } else {
                // A symlink or a file: remove it, never what it points at.
                fs::remove_file(path)
            }
            .with_context(|| format!("removing {}", path.display()))
        }
        Action::RemoveStateFile {
            path,
            state_dir,
            id,
            version,
        } => {
            check_inside_loki(root, path)?;
            let store = StateStore::new(state_dir);
            door::forget(&store, id, *version, "removed by `loki clean`")
                .with_context(|| format!("removing {}", path.display()))
        }
        Action::PruneRegistration { name, path } => {
            crate::git::prune_registration(root, name, path)
        }
        Action::RemoveEmptyFolder { path } => {
            check_inside_loki(root, path)?;
            // remove_dir fails on a folder that is no longer empty: never loses a file.
            fs::remove_dir(path)
                .with_context(|| format!("removing the empty folder {}", path.display()))
        }
    }
}

/// Every folder from `<root>/.loki` down to `path`'s parent must be a plain
/// folder (no symlink), so a removal cannot reach outside `.loki/`.
fn check_inside_loki(root: &Path, path: &Path) -> Result<()> {
    let loki = Layout::new(root).loki();
    let rest = path
        .strip_prefix(&loki)
        .with_context(|| format!("{} is not inside {}", path.display(), loki.display()))?;
    let comps: Vec<Component> = rest.components().collect();
    if comps.is_empty() || comps.iter().any(|c| !matches!(c, Component::Normal(_))) {
        bail!(
            "{} is not a plain path inside {}",
            path.display(),
            loki.display()
        );
    }
    let mut dir = loki.clone();
    for (i, c) in comps.iter().enumerate() {
        match dir.symlink_metadata() {
            Ok(m) if m.is_dir() => {}
            Ok(_) => bail!(
                "{} is not a plain folder (a symlink?); loki removes only what lies inside {}",
                dir.display(),
                loki.display()
            ),
            // Nothing there: nothing to remove either.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e).with_context(|| format!("examining {}", dir.display())),
        }
        if i + 1 < comps.len() {
            dir.push(c);
        }
    }
    Ok(())
}

/// Registrations to prune and empty folders to remove in `.loki/worktrees/`,
/// plus what is kept there and why. `removed` are the stream worktrees the
/// plan removes already; `named` the worktree folders of every stream with a
/// state (the stream pass decides about those).
fn leftovers(
    root: &Path,
    regs: &[Registration],
    removed: &BTreeSet<PathBuf>,
    named: &BTreeSet<PathBuf>,
) -> Result<(Vec<Action>, Vec<String>)> {
    let mut actions = Vec::new();
    let mut kept = Vec::new();
    for r in regs {
        if stream_folder(root, &r.path).is_none() || removed.iter().any(|p| same_path(p, &r.path)) {
            continue;
        }
        // Only an invalid (folder gone), unlocked registration.
        if r.prunable {
            actions.push(Action::PruneRegistration {
                name: r.name.clone(),
                path: r.path.clone(),
            });
        }
    }
    let dir = Layout::new(root).worktrees_dir();
    let is_plain_dir = dir.symlink_metadata().map(|m| m.is_dir()).unwrap_or(false);
    if is_plain_dir {
        let entries = fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))?;
        let mut paths = Vec::new();
        for e in entries {
            let e = e.with_context(|| format!("listing {}", dir.display()))?;
            paths.push(e.path());
        }
        paths.sort();
        for p in paths {
            let registered = regs.iter().any(|r| same_path(&r.path, &p));
            if registered || named.iter().any(|n| same_path(n, &p)) {
                continue;
            }
            let is_dir = p.symlink_metadata().map(|m| m.is_dir()).unwrap_or(false);
            if is_dir && is_empty_dir(&p) {
                actions.push(Action::RemoveEmptyFolder { path: p });
            } else {
                kept.push(format!(
                    "{}: not a git worktree and not empty; loki will not delete it (move it away if you do not need it)",
                    rel(root, &p)
                ));
            }
        }
    }
    Ok((actions, kept))
}

/// The folder name when `path` is `<root>/.loki/worktrees/<name>`.
fn stream_folder(root: &Path, path: &Path) -> Option<String> {
    let name = path.file_name()?.to_str()?.to_string();
    let parent = path.parent()?;
    same_path(parent, &Layout::new(root).worktrees_dir()).then_some(name)
}

fn is_empty_dir(p: &Path) -> bool {
    fs::read_dir(p)
        .map(|mut entries| entries.next().is_none())
        .unwrap_or(false)
}

fn summarize(paths: &[String]) -> String {
    let shown: Vec<&str> = paths.iter().take(3).map(String::as_str).collect();
    if paths.len() > 3 {
        format!("{} and {} more", shown.join(", "), paths.len() - 3)
    } else {
        shown.join(", ")
    }
}

/// `path` relative to `root` when inside it.
fn rel(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| path.display().to_string())
}

/// Same file system place, comparing canonical paths (or canonical parents
/// when one of them is gone).
fn same_path(a: &Path, b: &Path) -> bool {
    let canon = |p: &Path| -> PathBuf {
        if let Ok(c) = p.canonicalize() {
            return c;
        }
        match (
            p.parent().and_then(|d| d.canonicalize().ok()),
            p.file_name(),
        ) {
            (Some(d), Some(f)) => d.join(f),
            _ => p.to_path_buf(),
        }
    };
    canon(a) == canon(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removals_stay_inside_plain_loki_folders() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        fs::create_dir_all(root.join(".loki/runs/a")).unwrap();
        assert!(check_inside_loki(root, &root.join(".loki/runs/a")).is_ok());
        assert!(check_inside_loki(root, &root.join("outside")).is_err());
        assert!(check_inside_loki(root, &root.join(".loki/runs/../../x")).is_err());
        let elsewhere = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), root.join(".loki/logs")).unwrap();
        let err = check_inside_loki(root, &root.join(".loki/logs/a")).unwrap_err();
        assert!(err.to_string().contains("not a plain folder"), "{err}");
    }

    #[test]
    fn summaries_are_short() {
        let p: Vec<String> = ["a", "b", "c", "d", "e"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(summarize(&p), "a, b, c and 2 more");
        assert_eq!(summarize(&p[..2]), "a, b");
    }
}
