//! The git remote several supervisors share a swarm through: fetching what
//! it holds, claims made and renewed by compare-and-swap on its refs, a
//! stream's progress pushed under its claim, merges pushed to its target
//! with an expected old value, and the local target following it.
//!
//! Decisions worth knowing:
//!
//! - **The git CLI, not libgit2, talks to the remote.** It speaks every
//!   transport the user's own `git push` does (ssh with their config and
//!   agent, http with their credential helper, `git://`, local paths), and
//!   `--force-with-lease=<ref>:<old>` with `--atomic` is exactly the
//!   server-side compare-and-swap the protocol needs (receive-pack checks
//!   each old value under the ref's lock). Objects are still made in
//!   process with libgit2. Every call has a time limit (a hung network
//!   never hangs the supervisor) and never prompts (`GIT_TERMINAL_PROMPT=0`).
//! - **What the remote holds is read from one fetch** into this clone's
//!   `refs/remotes/<remote>/<target>` and `refs/loki-remote/<remote>/…`
//!   (claims, done records, stream branches), pruned, so a deleted claim
//!   disappears here too. Views read those local refs, never a file.
//! - **Fencing.** A stream's branch is pushed only in one atomic push with
//!   its claim's renewal, and a merge only in one atomic push that also
//!   deletes the claim and creates `refs/loki/done/<id>`: a supervisor that
//!   lost its claim (its lease ran out while it was cut off) can push
//!   neither, whatever its clock says.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use git2::{ErrorCode, Oid, Repository};

use super::checkout::{behind_note, checkouts_of, update_checkout, user_conflicts};
use super::merge::{loki_merge_of, merged_tree};
use super::tree_merge::changed_paths;
use super::{
    check_id, compose_message, open_checkout, open_repo, signature, target_lock, worktrees_lock,
};
use crate::model::claim::{parse_record, record_message, Claim, Done};
use crate::model::paths::branch_name;

/// The longest any one git command talking to the remote may take.
const NETWORK_LIMIT: Duration = Duration::from_secs(60);

/// How often a merge is redone because the remote target moved.
const MAX_REMOTE_TRIES: u32 = 30;

/// Whether `name` can be a git remote's name.
pub fn valid_remote_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && git2::Remote::is_valid_name(name)
}

/// The ref a claim lives at on the remote.
pub fn claim_ref(id: &str) -> String {
    format!("refs/loki/claims/{id}")
}

/// The ref that records a stream merged into the remote target.
pub fn done_ref(id: &str) -> String {
    format!("refs/loki/done/{id}")
}

/// A claim as fetched.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimRef {
    pub oid: String,
    /// `None`: its message is no claim record (not written by loki).
    pub claim: Option<Claim>,
}

/// A done record as fetched.
#[derive(Debug, Clone, PartialEq)]
pub struct DoneRef {
    pub oid: String,
    pub done: Option<Done>,
    /// Its merge commit is in the remote target's history: only then does
    /// the stream count as merged.
    pub on_target: bool,
}

/// What the remote held at the last fetch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RemoteView {
    /// The remote target's head.
    pub target: Option<String>,
    pub claims: BTreeMap<String, ClaimRef>,
    pub done: BTreeMap<String, DoneRef>,
    /// Stream branches pushed (`loki/<id>`), by id.
    pub branches: BTreeMap<String, String>,
}

/// The remote could not be reached (a network error, a time-out, a refused
/// connection): worth trying again later, unlike a refused push.
#[derive(Debug)]
pub struct Unreachable(pub String);

impl std::fmt::Display for Unreachable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Unreachable {}

/// Runs `git -C root <args>` with a time limit; its stdout and stderr.
fn git_cli(root: &Path, args: &[String]) -> Result<(bool, String, String)> {
    let mut cmd = Command::new("git");
    cmd.arg("-C")
        .arg(root)
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own group, so a time-out ends ssh and the helpers too.
        .process_group(0);
    let what = || format!("git {}", args.join(" "));
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {}", what()))?;
    let (mut out, mut err) = (String::new(), String::new());
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let reader = std::thread::spawn(move || {
        let mut e = String::new();
        if let Some(s) = stderr.as_mut() {
            let _ = s.read_to_string(&mut e);
        }
        e
    });
    if let Some(s) = stdout.as_mut() {
        let _ = s.read_to_string(&mut out);
    }
    let deadline = Instant::now() + NETWORK_LIMIT;
    let status = loop {
        if let Some(st) = child.try_wait().context("waiting for git")? {
            break st;
        }
        if Instant::now() >= deadline {
            // SAFETY-free: kill(2) on the group the child leads.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
            bail!("{} took longer than {}s", what(), NETWORK_LIMIT.as_secs());
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    if let Ok(e) = reader.join() {
        err = e;
    }
    Ok((status.success(), out, err))
}

/// Checks that `remote` is a remote of the clone at `root`; its URL.
pub fn remote_url(root: &Path, remote: &str) -> Result<String> {
    let repo = open_repo(root)?;
    let r = repo.find_remote(remote).map_err(|e| match e.code() {
        ErrorCode::NotFound | ErrorCode::InvalidSpec => anyhow::anyhow!(
            "this clone ({}) has no git remote `{remote}`\n  help: `git remote -v` lists its remotes; add one with `git remote add {remote} <url>`",
            root.display()
        ),
        _ => anyhow::anyhow!("reading the remote `{remote}` in {}: {e}", root.display()),
    })?;
    Ok(r.url().unwrap_or_default().to_string())
}

fn tracking_target(remote: &str, target: &str) -> String {
    format!("refs/remotes/{remote}/{target}")
}

fn mirror(remote: &str) -> String {
    format!("refs/loki-remote/{remote}")
}

/// Fetches into the same refs of one clone run one at a time (two at once
/// fail to lock them): within this process by this lock, and across
/// processes (a supervisor and `loki status --remote` in one clone) by a
/// flock on `<git dir>/loki/fetch.lock`.
static FETCH_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The flock on the clone's fetch lock file, released when dropped.
struct FetchLock {
    _file: std::fs::File,
}

impl FetchLock {
    fn take(root: &Path) -> Result<FetchLock> {
        use std::os::fd::AsRawFd;
        let dir = open_repo(root)?.commondir().join("loki");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join("fetch.lock");
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        // SAFETY: flock on a descriptor this function owns; no memory is passed.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("locking {}", path.display()));
        }
        Ok(FetchLock { _file: f })
    }
}

/// Fetches the remote's target, claims, done records and stream branches
/// into this clone, then reads them ([`read_view`]).
pub fn fetch(root: &Path, remote: &str, target: &str) -> Result<RemoteView> {
    let _one = FETCH_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let _clone = FetchLock::take(root)?;
    let m = mirror(remote);
    let args: Vec<String> = vec![
        "fetch".into(),
        "--quiet".into(),
        "--prune".into(),
        "--no-tags".into(),
        "--no-write-fetch-head".into(),
        remote.into(),
        format!("+refs/heads/{target}:{}", tracking_target(remote, target)),
        format!("+refs/loki/claims/*:{m}/claims/*"),
        format!("+refs/loki/done/*:{m}/done/*"),
        format!("+refs/heads/loki/*:{m}/heads/*"),
    ];
    let (ok, _, err) = git_cli(root, &args)?;
    if !ok {
        return Err(Unreachable(format!(
            "fetching from the remote `{remote}` failed: {}\n  help: check that `git fetch {remote}` works in {}",
            err.trim(),
            root.display()
        ))
        .into());
    }
    read_view(root, remote, target)
}

/// The file at `rel` in the remote target as last fetched (`None`: not
/// there).
pub fn file_on_remote(
    root: &Path,
    remote: &str,
    target: &str,
    rel: &str,
) -> Result<Option<Vec<u8>>> {
    let repo = open_repo(root)?;
    let Ok(t) = repo.refname_to_id(&tracking_target(remote, target)) else {
        return Ok(None);
    };
    let tree = repo.find_commit(t)?.tree()?;
    let Ok(entry) = tree.get_path(Path::new(rel)) else {
        return Ok(None);
    };
    Ok(repo
        .find_blob(entry.id())
        .ok()
        .map(|b| b.content().to_vec()))
}

/// What the remote holds for stream `id` beyond its claim, asked with one
/// `ls-remote` (which writes no ref here, so it needs no fetch lock):
/// whether it has a done record, and the head of its pushed branch.
pub fn stream_refs(root: &Path, remote: &str, id: &str) -> Result<(bool, Option<String>)> {
    check_id(id)?;
    let branch = format!("refs/heads/{}", branch_name(id));
    let args: Vec<String> = vec![
        "ls-remote".into(),
        remote.into(),
        done_ref(id),
        branch.clone(),
    ];
    let (ok, out, err) = git_cli(root, &args)?;
    if !ok {
        return Err(Unreachable(format!(
            "asking the remote `{remote}` about {id} failed: {}",
            err.trim()
        ))
        .into());
    }
    let mut done = false;
    let mut head = None;
    for line in out.lines() {
        let mut parts = line.split_whitespace();
        let (Some(oid), Some(name)) = (parts.next(), parts.next()) else {
            continue;
        };
        if name == done_ref(id) {
            done = true;
        } else if name == branch {
            head = Some(oid.to_string());
        }
    }
    Ok((done, head))
}

/// What the last fetch brought (no network).
pub fn read_view(root: &Path, remote: &str, target: &str) -> Result<RemoteView> {
    let repo = open_repo(root)?;
    let m = mirror(remote);
    let target_oid = repo.refname_to_id(&tracking_target(remote, target)).ok();
    let mut view = RemoteView {
        target: target_oid.map(|o| o.to_string()),
        ..Default::default()
    };
    let refs = repo
        .references_glob(&format!("{m}/*"))
        .with_context(|| format!("reading the refs fetched from `{remote}`"))?;
    for r in refs.flatten() {
        let (Some(name), Some(oid)) = (r.name().map(str::to_string), r.target()) else {
            continue;
        };
        let rest = &name[m.len() + 1..];
        let Some((kind, id)) = rest.split_once('/') else {
            continue;
        };
        if !crate::model::valid_stream_id(id) {
            continue;
        }
        let message = || {
            repo.find_commit(oid)
                .ok()
                .and_then(|c| c.message_raw().map(str::to_string))
                .unwrap_or_default()
        };
        match kind {
            "claims" => {
                view.claims.insert(
                    id.to_string(),
                    ClaimRef {
                        oid: oid.to_string(),
                        claim: parse_record(&message()).filter(|c: &Claim| c.stream == id),
                    },
                );
            }
            "done" => {
                let done: Option<Done> = parse_record(&message()).filter(|d: &Done| d.stream == id);
                let on_target = match (&done, target_oid) {
                    (Some(d), Some(t)) => Oid::from_str(&d.merge)
                        .is_ok_and(|m| m == t || repo.graph_descendant_of(t, m).unwrap_or(false)),
                    _ => false,
                };
                view.done.insert(
                    id.to_string(),
                    DoneRef {
                        oid: oid.to_string(),
                        done,
                        on_target,
                    },
                );
            }
            "heads" => {
                view.branches.insert(id.to_string(), oid.to_string());
            }
            _ => {}
        }
    }
    Ok(view)
}

/// One ref a push changes, with the value it must have on the remote.
#[derive(Debug, Clone)]
struct Update {
    dst: String,
    /// `None`: delete the ref.
    new: Option<String>,
    /// `None`: whatever it is (a forced push); `Some("")`: it must not
    /// exist; `Some(oid)`: it must be that.
    expect: Option<String>,
}

/// How a push went, per ref (`true`: it took).
fn push(root: &Path, remote: &str, updates: &[Update], atomic: bool) -> Result<Vec<bool>> {
    let mut args: Vec<String> = vec!["push".into(), "--porcelain".into(), "--no-verify".into()];
    if atomic {
        args.push("--atomic".into());
    }
    for u in updates {
        if let Some(e) = &u.expect {
            args.push(format!("--force-with-lease={}:{e}", u.dst));
        }
    }
    args.push(remote.into());
    for u in updates {
        let src = u.new.clone().unwrap_or_default();
        let force = if u.expect.is_none() && u.new.is_some() {
            "+"
        } else {
            ""
        };
        args.push(format!("{force}{src}:{}", u.dst));
    }
    let (ok, out, err) = git_cli(root, &args)?;
    let mut results: BTreeMap<String, bool> = BTreeMap::new();
    for line in out.lines() {
        let mut parts = line.splitn(3, '\t');
        let (Some(flag), Some(refs)) = (parts.next(), parts.next()) else {
            continue;
        };
        if flag.len() != 1 {
            continue;
        }
        let Some((_, dst)) = refs.rsplit_once(':') else {
            continue;
        };
        results.insert(dst.to_string(), flag != "!");
    }
    if !ok && results.is_empty() {
        return Err(Unreachable(format!(
            "pushing to the remote `{remote}` failed: {}\n  help: check that `git push {remote}` works in {}",
            err.trim(),
            root.display()
        ))
        .into());
    }
    Ok(updates
        .iter()
        .map(|u| results.get(&u.dst).copied().unwrap_or(ok))
        .collect())
}

/// Makes the record commit for `claim` (its parent: the claim it renews
/// or takes over), in this clone's object store.
fn claim_commit(repo: &Repository, claim: &Claim, parent: Option<&str>) -> Result<Oid> {
    let sig = signature(repo)?;
    let tree = repo.find_tree(repo.treebuilder(None)?.write()?)?;
    let parent = parent
        .and_then(|p| Oid::from_str(p).ok())
        .and_then(|p| repo.find_commit(p).ok());
    let parents: Vec<&git2::Commit> = parent.iter().collect();
    let msg = record_message("claim", &claim.stream, claim);
    Ok(repo.commit(None, &sig, &sig, &msg, &tree, &parents)?)
}

/// Claims (or renews, or takes over) stream `claim.stream` on the remote:
/// the push succeeds only if its claim ref is still `expect` (`None`: it
/// must not exist). With `branch`, the stream's local branch is pushed in
/// the same atomic push. Returns the new claim commit, or `None` when
/// someone else's push won.
pub fn push_claim(
    root: &Path,
    remote: &str,
    claim: &Claim,
    expect: Option<&str>,
    branch: bool,
) -> Result<Option<String>> {
    let id = claim.stream.as_str();
    check_id(id)?;
    let (oid, head) = {
        let _serial = target_lock();
        let repo = open_repo(root)?;
        let oid = claim_commit(&repo, claim, expect)?;
        let head = if branch {
            repo.refname_to_id(&format!("refs/heads/{}", branch_name(id)))
                .ok()
        } else {
            None
        };
        (oid, head)
    };
    let mut updates = vec![Update {
        dst: claim_ref(id),
        new: Some(oid.to_string()),
        expect: Some(expect.unwrap_or_default().to_string()),
    }];
    if let Some(h) = head {
        updates.push(Update {
            dst: format!("refs/heads/{}", branch_name(id)),
            new: Some(h.to_string()),
            expect: None,
        });
    }
    let took = push(root, remote, &updates, true)?;
    Ok(took.iter().all(|t| *t).then(|| oid.to_string()))
}

/// Renews several claims in one (non-atomic) push: each moves only from
/// the commit this supervisor last pushed. Returns, per claim, its new
/// commit or `None` when it was lost.
pub fn renew_claims(
    root: &Path,
    remote: &str,
    claims: &[(Claim, String)],
) -> Result<Vec<Option<String>>> {
    if claims.is_empty() {
        return Ok(Vec::new());
    }
    let mut updates = Vec::new();
    {
        let _serial = target_lock();
        let repo = open_repo(root)?;
        for (c, old) in claims {
            check_id(&c.stream)?;
            let oid = claim_commit(&repo, c, Some(old))?;
            updates.push(Update {
                dst: claim_ref(&c.stream),
                new: Some(oid.to_string()),
                expect: Some(old.clone()),
            });
        }
    }
    let took = push(root, remote, &updates, false)?;
    Ok(updates
        .into_iter()
        .zip(took)
        .map(|(u, t)| t.then_some(u.new).flatten())
        .collect())
}

/// Deletes a claim, only while it is still `expect`. Returns whether it
/// took.
pub fn release_claim(root: &Path, remote: &str, id: &str, expect: &str) -> Result<bool> {
    check_id(id)?;
    let update = Update {
        dst: claim_ref(id),
        new: None,
        expect: Some(expect.to_string()),
    };
    Ok(push(root, remote, &[update], true)?.iter().all(|t| *t))
}

/// Sets the local branch `loki/<id>` to the one the remote holds (fetched
/// by [`fetch`]), so a stream taken over goes on from the work pushed
/// there. A local branch with commits the remote's lacks is kept under
/// `refs/loki/kept/<id>/<short oid>` first (nothing is lost). A worktree
/// of the stream in this clone is set to the branch's files. Returns
/// whether the branch moved.
pub fn adopt_branch(root: &Path, remote: &str, id: &str) -> Result<bool> {
    check_id(id)?;
    let _serial = worktrees_lock();
    let repo = open_repo(root)?;
    let Ok(theirs) = repo.refname_to_id(&format!("{}/heads/{id}", mirror(remote))) else {
        return Ok(false);
    };
    let local_ref = format!("refs/heads/{}", branch_name(id));
    let ours = repo.refname_to_id(&local_ref).ok();
    if ours == Some(theirs) {
        return Ok(false);
    }
    if let Some(o) = ours {
        if !repo.graph_descendant_of(theirs, o)? {
            let keep = format!("refs/loki/kept/{id}/{}", &o.to_string()[..12]);
            repo.reference(&keep, o, true, "loki: kept before taking over")?;
        }
    }
    repo.reference(&local_ref, theirs, true, "loki: take over from the remote")
        .with_context(|| format!("setting {local_ref} to the remote's"))?;
    let wt = crate::model::Layout::new(root).worktree(id);
    if wt.join(".git").exists() {
        if let Ok(wrepo) = Repository::open(&wt) {
            let tree = wrepo.find_commit(theirs)?.tree_id();
            let wtree = wrepo.find_tree(tree)?;
            let mut opts = git2::build::CheckoutBuilder::new();
            opts.force().remove_untracked(false);
            wrepo.checkout_tree(wtree.as_object(), Some(&mut opts))?;
        }
    }
    Ok(true)
}

/// How [`merge_to_remote`] went.
#[derive(Debug, Clone, PartialEq)]
pub enum RemoteMerge {
    /// The remote target is now `commit`; `follow`: why this clone's target
    /// could not follow it, if it could not.
    Merged {
        commit: String,
        follow: Option<String>,
    },
    /// The branch is in the remote target already, by a merge of loki's.
    AlreadyMerged,
    /// In the target, but no merge of loki's brought it there.
    NotCredited {
        why: String,
    },
    Conflict {
        paths: Vec<String>,
    },
    /// The claim is not this supervisor's any more: nothing was pushed.
    ClaimLost,
}

/// Merges `loki/<id>` into the remote's `target` and pushes it, in one
/// atomic push that also deletes the claim (which must still be `claim`)
/// and records `done` (its `merge` is filled in here). When the target
/// moved, the merge is redone on its new head. This clone's target then
/// follows ([`follow_target`]).
#[allow(clippy::too_many_arguments)]
pub fn merge_to_remote(
    root: &Path,
    remote: &str,
    id: &str,
    target: &str,
    subject: &str,
    trailers: &[(String, String)],
    claim: &str,
    mut done: Done,
) -> Result<RemoteMerge> {
    check_id(id)?;
    let branch = branch_name(id);
    let tracking = tracking_target(remote, target);
    let ctx = || format!("merging {branch} into {remote}/{target}");
    for _ in 0..MAX_REMOTE_TRIES {
        let view = fetch(root, remote, target)?;
        if view.done.get(id).is_some_and(|d| d.on_target) {
            // Merged already (by this claim before a crash, or by another
            // supervisor): the claim, if still ours, goes.
            if view.claims.get(id).map(|c| c.oid.as_str()) == Some(claim) {
                release_claim(root, remote, id, claim)?;
            }
            return Ok(RemoteMerge::AlreadyMerged);
        }
        if view.claims.get(id).map(|c| c.oid.as_str()) != Some(claim) {
            return Ok(RemoteMerge::ClaimLost);
        }
        let (commit, t) = {
            let _serial = target_lock();
            let repo = open_repo(root)?;
            let t = repo
                .refname_to_id(&tracking)
                .with_context(|| format!("{remote} has no branch {target}"))?;
            let b = repo
                .refname_to_id(&format!("refs/heads/{branch}"))
                .with_context(ctx)?;
            if t == b || repo.graph_descendant_of(t, b).with_context(ctx)? {
                if loki_merge_of(&repo, t, id, b).with_context(ctx)?.is_some() {
                    return Ok(RemoteMerge::AlreadyMerged);
                }
                return Ok(RemoteMerge::NotCredited {
                    why: format!(
                        "{branch} is already in {remote}/{target}, but no `Merge stream {id}` commit of loki's brought it there\n  help: `git log --oneline -3 {remote}/{target}` shows what moved it; `loki retry {id}` runs the stream again"
                    ),
                });
            }
            let tree = match merged_tree(&repo, t, b).with_context(ctx)? {
                Ok(tree) => repo.find_tree(tree).with_context(ctx)?,
                Err(paths) => return Ok(RemoteMerge::Conflict { paths }),
            };
            let t_commit = repo.find_commit(t).with_context(ctx)?;
            let b_commit = repo.find_commit(b).with_context(ctx)?;
            let sig = signature(&repo)?;
            let message = compose_message(subject, "", trailers);
            let commit = repo
                .commit(None, &sig, &sig, &message, &tree, &[&t_commit, &b_commit])
                .with_context(ctx)?;
            (commit, t)
        };
        done.merge = commit.to_string();
        let done_oid = {
            let repo = open_repo(root)?;
            let sig = signature(&repo)?;
            let tree = repo.find_tree(repo.treebuilder(None)?.write()?)?;
            let last_claim = repo.find_commit(Oid::from_str(claim)?)?;
            let merge = repo.find_commit(commit)?;
            repo.commit(
                None,
                &sig,
                &sig,
                &record_message("done", id, &done),
                &tree,
                &[&last_claim, &merge],
            )?
        };
        let mut updates = vec![
            Update {
                dst: format!("refs/heads/{target}"),
                new: Some(commit.to_string()),
                expect: Some(t.to_string()),
            },
            Update {
                dst: done_ref(id),
                new: Some(done_oid.to_string()),
                expect: Some(String::new()),
            },
            Update {
                dst: claim_ref(id),
                new: None,
                expect: Some(claim.to_string()),
            },
        ];
        // The pushed progress goes with the claim: the merge holds it.
        if let Some(pushed) = view.branches.get(id) {
            updates.push(Update {
                dst: format!("refs/heads/{branch}"),
                new: None,
                expect: Some(pushed.clone()),
            });
        }
        if push(root, remote, &updates, true)?.iter().all(|t| *t) {
            {
                let repo = open_repo(root)?;
                repo.reference(&tracking, commit, true, "loki: merged")?;
            }
            let follow = follow_target(root, remote, target)?;
            return Ok(RemoteMerge::Merged {
                commit: commit.to_string(),
                follow,
            });
        }
        // The target moved (or the claim did): fetched again next round.
    }
    bail!(
        "{remote}/{target} kept moving while merging {branch} ({MAX_REMOTE_TRIES} tries)\n  help: try again when fewer machines are merging"
    )
}

/// Brings this clone's `target` up to the remote's (as last fetched) when
/// it is behind it, updating the checkouts of it on the paths that changed,
/// as a merge does. Returns why it could not, if it could not: the local
/// target has commits the remote lacks, or the user's changes are in the
/// way.
pub fn follow_target(root: &Path, remote: &str, target: &str) -> Result<Option<String>> {
    let _serial = target_lock();
    let repo = open_repo(root)?;
    let target_ref = format!("refs/heads/{target}");
    let ctx = || {
        format!(
            "bringing {target} up to {remote}/{target} in {}",
            root.display()
        )
    };
    let Ok(theirs) = repo.refname_to_id(&tracking_target(remote, target)) else {
        return Ok(None);
    };
    let ours = repo.refname_to_id(&target_ref).with_context(ctx)?;
    if ours == theirs || repo.graph_descendant_of(ours, theirs).with_context(ctx)? {
        return Ok(None);
    }
    if !repo.graph_descendant_of(theirs, ours).with_context(ctx)? {
        return Ok(Some(format!(
            "{target} has commits that {remote}/{target} lacks, so it does not follow the swarm's merges; push them (`git push {remote} {target}`) or rebase them onto {remote}/{target}"
        )));
    }
    let old_tree = repo.find_commit(ours)?.tree()?;
    let new_commit = repo.find_commit(theirs)?;
    let new_tree = new_commit.tree()?;
    let changed = changed_paths(&repo, old_tree.id(), new_tree.id()).with_context(ctx)?;
    let checkouts = checkouts_of(&repo, &target_ref).with_context(ctx)?;
    let mut blocked = Vec::new();
    for wt in &checkouts {
        let wrepo = open_checkout(wt)?;
        blocked.extend(user_conflicts(&wrepo, wt, &old_tree, &changed)?);
    }
    if !blocked.is_empty() {
        return Ok(Some(format!(
            "{target} stays behind {remote}/{target}: your uncommitted changes touch {}; commit or stash them, then `git merge --ff-only {remote}/{target}`",
            blocked.join(", ")
        )));
    }
    match repo.reference_matching(
        &target_ref,
        theirs,
        true,
        ours,
        &format!("loki: follow {remote}/{target}"),
    ) {
        Ok(_) => {}
        // Moved underneath: the next fetch tries again.
        Err(e) if matches!(e.code(), ErrorCode::Modified | ErrorCode::Locked) => return Ok(None),
        Err(e) => return Err(e).with_context(ctx),
    }
    let mut behind = Vec::new();
    for wt in &checkouts {
        if let Err(e) = update_checkout(wt, new_tree.id(), &changed) {
            behind.push(behind_note(wt, target, &e));
        }
    }
    Ok((!behind.is_empty()).then(|| behind.join("; ")))
}
