//! Several supervisors, one swarm: the protocol over a shared git remote
//! (`loki run --remote <name>`, `[swarm] remote`).
//!
//! - **Claims.** Before a stream starts, its supervisor creates
//!   `refs/loki/claims/<id>` on the remote with a push that succeeds only if
//!   the ref does not exist (`--force-with-lease=<ref>:`): of several racing
//!   supervisors exactly one wins, by the server's word. A supervisor never
//!   starts a stream it does not hold. The claim (a commit, see
//!   [`crate::model::claim`]) names the holder and a lease expiry; the
//!   remote worker renews every held claim every third of `[swarm] lease`
//!   by compare-and-swap from the commit it last pushed.
//! - **Progress.** When an attempt after the first starts, and when an
//!   attempt's commit does not go straight to its merge (checks failed,
//!   validators to come), the stream's branch is pushed in one atomic push
//!   with its claim's renewal, so a supervisor that lost the claim cannot
//!   overwrite the new holder's branch. A passed attempt reaches the remote
//!   inside its merge.
//! - **Take-over.** A claim whose expiry is more than half a lease past (the
//!   margin absorbs clock skew between machines) may be replaced by another
//!   supervisor, again by compare-and-swap from the commit it saw; the new
//!   holder fetches the pushed branch and goes on from it (a resume: the
//!   next attempt is numbered after the last one and gets its feedback).
//! - **Merges** are pushed to the remote target with its expected old
//!   value, in one atomic push that also deletes the claim and creates
//!   `refs/loki/done/<id>` (whose history is the claim's). When the target
//!   moved, the merge is redone on the new head. A dependency counts as
//!   merged only when its done record's merge is in the remote target.
//! - **The run's end.** Claims of streams that wait for a person (failed,
//!   blocked, conflicted, cancelled, awaiting approval) are parked (no
//!   expiry: nobody takes them over; the holder's next run, or deleting the
//!   ref, frees them); every other claim is released: pushed with its branch
//!   and an expiry already past, so another supervisor takes it over at
//!   once, with its attempt count and feedback. A killed supervisor
//!   releases nothing: its leases run out. A fresh claim of a stream whose
//!   branch is on the remote (its claim deleted by hand) goes on from that
//!   branch too.
//! - **Limits stay per machine** (`max_parallel`, budgets of a stream); the
//!   swarm budget counts what the remote's claims and done records say the
//!   other machines spent.

use std::path::Path;
use std::sync::{Arc, Mutex};

use crate::git::remote::{self as gremote, RemoteMerge, RemoteView};
use crate::model::claim::{Claim, Done, Holder};

use super::*;

/// How often the remote is fetched: often enough that a dependency merged
/// elsewhere starts here within a moment, at one round trip each time.
pub(super) fn poll_every(lease: Duration) -> Duration {
    (lease / 12).clamp(Duration::from_millis(250), Duration::from_secs(1))
}

/// A claim this supervisor holds.
#[derive(Debug, Clone)]
pub(super) struct HeldClaim {
    /// The claim commit last pushed (what the next push expects).
    pub oid: String,
    pub claim: Claim,
    /// What earlier holders spent on the stream (carried in the claim).
    pub inherited_cost: f64,
    /// The claim of another holder this one replaced, as it was then.
    pub previous: Option<Claim>,
}

/// The claims held, shared by the dispatcher, the remote worker and the
/// merge worker. A stream's lock is held across every push that moves its
/// claim, so a renewal and a merge of the same claim never race, while a
/// claim of one stream need not wait for the merge of another.
#[derive(Debug, Default)]
pub(super) struct Book {
    pub held: Mutex<BTreeMap<String, HeldClaim>>,
    locks: Mutex<BTreeMap<String, Arc<Mutex<()>>>>,
}

impl Book {
    fn held(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, HeldClaim>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }
    /// The lock of stream `id`'s claim.
    fn lock_of(&self, id: &str) -> Arc<Mutex<()>> {
        self.locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(id.to_string())
            .or_default()
            .clone()
    }
}

fn hold(lock: &Mutex<()>) -> std::sync::MutexGuard<'_, ()> {
    lock.lock().unwrap_or_else(|p| p.into_inner())
}

/// What the merge worker needs to merge through the remote.
#[derive(Clone)]
pub(super) struct RemoteMerger {
    pub name: String,
    pub me: Holder,
    pub book: Arc<Book>,
}

impl RemoteMerger {
    /// Merges `id` into the remote target (see the module doc), as the
    /// merge worker's outcome.
    pub(super) fn merge(
        &self,
        root: &Path,
        id: &str,
        target: &str,
        subject: &str,
        trailers: &[(String, String)],
    ) -> std::result::Result<MergeOutcome, String> {
        let lock = self.book.lock_of(id);
        let _push = hold(&lock);
        let Some(held) = self.book.held().get(id).cloned() else {
            // A merge pushed by this clone before a crash: its claim went
            // with it, and its done record says so.
            let view = match gremote::fetch(root, &self.name, target) {
                Ok(v) => v,
                Err(e) => {
                    return Ok(MergeOutcome::Unreachable {
                        why: format!("{e:#}"),
                    })
                }
            };
            if view.done.get(id).is_some_and(|d| d.on_target) {
                return Ok(MergeOutcome::AlreadyMerged {
                    checkout_behind: None,
                });
            }
            return Err(format!(
                "{id} is not held by this supervisor on the remote `{}`: nothing was merged",
                self.name
            ));
        };
        let done = Done {
            stream: id.to_string(),
            merge: String::new(),
            by: self.me.clone(),
            at: now_rfc3339(),
            cost_usd: held.claim.cost_usd,
        };
        let out = match gremote::merge_to_remote(
            root, &self.name, id, target, subject, trailers, &held.oid, done,
        ) {
            Ok(out) => out,
            Err(e) if e.downcast_ref::<gremote::Unreachable>().is_some() => {
                return Ok(MergeOutcome::Unreachable {
                    why: format!("{e:#}"),
                })
            }
            Err(e) => return Err(format!("{e:#}")),
        };
        let outcome = match out {
            RemoteMerge::Merged { commit, follow } => MergeOutcome::Merged {
                commit,
                checkout_behind: follow,
            },
            RemoteMerge::AlreadyMerged => MergeOutcome::AlreadyMerged {
                checkout_behind: None,
            },
            RemoteMerge::NotCredited { why } => MergeOutcome::NotCredited { why },
            RemoteMerge::Conflict { paths } => MergeOutcome::Conflict { paths },
            RemoteMerge::ClaimLost => {
                self.book.held().remove(id);
                return Err(format!(
                    "the claim on {id} was taken over by another supervisor (this one's lease ran out): nothing was merged"
                ));
            }
        };
        if matches!(
            outcome,
            MergeOutcome::Merged { .. } | MergeOutcome::AlreadyMerged { .. }
        ) {
            self.book.held().remove(id);
        }
        Ok(outcome)
    }
}

/// What the dispatcher asks the remote worker to do.
#[derive(Debug)]
pub(super) enum RemoteJob {
    /// Take stream `claim.stream`: create its claim, or replace `expect`
    /// (a claim that ran out, or this clone's own from an earlier run).
    Claim {
        claim: Box<Claim>,
        expect: Option<String>,
        inherited_cost: f64,
        /// The other holder's claim it replaces, as last seen.
        previous: Option<Box<Claim>>,
    },
    /// Push the stream's branch with its claim's renewal.
    Progress { id: String },
    /// The run ends: park or release every claim held, then stop.
    Release {
        parked: BTreeSet<String>,
        done: tokio::sync::oneshot::Sender<Vec<String>>,
    },
}

/// What the remote worker reports.
#[derive(Debug)]
pub enum RemoteMsg {
    /// A fresh view of the remote (and, if this clone's target could not
    /// follow the remote's, why).
    View {
        view: Box<RemoteView>,
        follow: Option<String>,
    },
    /// The claim push for `id` ended: `won`, or someone else holds it
    /// (`Err`: the push could not be made at all).
    Claimed {
        id: String,
        result: std::result::Result<bool, String>,
    },
    /// A held claim was lost: another supervisor took it over.
    Lost { id: String },
    /// The remote could not be reached (said once until it can again).
    Trouble(String),
}

/// The dispatcher's side of the protocol.
pub(super) struct RemoteSide {
    pub name: String,
    pub me: Holder,
    pub lease: Duration,
    pub book: Arc<Book>,
    pub view: RemoteView,
    /// Claims asked for and not yet answered.
    pub claiming: BTreeSet<String>,
    /// Claims lost to another supervisor since the last view: not tried
    /// again until a fetch says who holds them.
    pub lost_races: BTreeSet<String>,
    pub jobs: mpsc::UnboundedSender<RemoteJob>,
    /// The last trouble said, so it is said once.
    pub trouble: Option<String>,
    pub follow_note: Option<String>,
}

/// Checks the remote and starts its worker: the remote must be reachable,
/// hold the target, and hold the same swarm file as this clone. Claims an
/// earlier run of this clone left (a crash, parked streams) are taken
/// back before anything is recovered, so a merge or a validation in
/// flight goes on under this supervisor's claim.
pub(super) async fn connect(
    cfg: &SwarmFile,
    root: &Path,
    name: &str,
    target: &str,
    tx: mpsc::UnboundedSender<Msg>,
) -> Result<RemoteSide> {
    let place = cfg
        .swarm
        .remote
        .as_ref()
        .map(|_| format!("{}: ", cfg.path.display()))
        .unwrap_or_default();
    gremote::remote_url(root, name).map_err(|e| Error::config(format!("{place}{e:#}")))?;
    let (r, n, t) = (root.to_path_buf(), name.to_string(), target.to_string());
    let view = tokio::task::spawn_blocking(move || gremote::fetch(&r, &n, &t))
        .await
        .map_err(|e| Error::internal(format!("the fetch task failed: {e}")))?
        .map_err(|e| Error::environment(format!("{e:#}")))?;
    if view.target.is_none() {
        return Err(Error::environment(format!(
            "the remote `{name}` has no branch `{target}` to share the swarm on"
        ))
        .hint(format!("push it first: git push {name} {target}"))
        .into());
    }
    let rel = cfg
        .path
        .strip_prefix(root)
        .ok()
        .map(Path::to_path_buf)
        .or_else(|| {
            let p = cfg.path.canonicalize().ok()?;
            let r = root.canonicalize().ok()?;
            p.strip_prefix(r).ok().map(Path::to_path_buf)
        });
    if let Some(rel) = rel {
        let theirs = gremote::file_on_remote(root, name, target, &rel.to_string_lossy())?;
        let ours = std::fs::read(&cfg.path).ok();
        if theirs != ours {
            return Err(Error::refusal(format!(
                "{} is not the swarm file on {name}/{target}: every supervisor sharing the swarm must run the same one",
                cfg.path.display()
            ))
            .hint(format!(
                "commit and push yours (git push {name} {target}), or take theirs (git pull --ff-only {name} {target})"
            ))
            .into());
        }
    }
    let me = holder(root);
    let lease = cfg.swarm.lease;
    let book = Arc::new(Book::default());
    // Claims of an earlier run of this clone: ours again.
    let ours: Vec<(Claim, String)> = view
        .claims
        .values()
        .filter_map(|c| c.claim.clone().map(|cl| (cl, c.oid.clone())))
        .filter(|(c, _)| c.holder.same_clone(&me))
        .collect();
    for (old, oid) in ours {
        let mut claim = old.clone();
        claim.holder = me.clone();
        claim.renewed = now_rfc3339();
        claim.expires = Some(expiry(lease));
        let (r, n, b) = (root.to_path_buf(), name.to_string(), book.clone());
        let _ = tokio::task::spawn_blocking(move || {
            let lock = b.lock_of(&claim.stream);
            let _push = hold(&lock);
            if let Ok(Some(new)) = gremote::push_claim(&r, &n, &claim, Some(&oid), false) {
                b.held().insert(
                    claim.stream.clone(),
                    HeldClaim {
                        oid: new,
                        claim,
                        inherited_cost: 0.0,
                        previous: None,
                    },
                );
            }
        })
        .await;
    }
    let (jobs, jobs_rx) = mpsc::unbounded_channel();
    tokio::spawn(remote_worker(
        root.to_path_buf(),
        name.to_string(),
        target.to_string(),
        lease,
        book.clone(),
        jobs_rx,
        tx,
    ));
    Ok(RemoteSide {
        name: name.to_string(),
        me,
        lease,
        book,
        view,
        claiming: BTreeSet::new(),
        lost_races: BTreeSet::new(),
        jobs,
        trouble: None,
        follow_note: None,
    })
}

/// Who this supervisor is on the remote.
pub(super) fn holder(root: &Path) -> Holder {
    let machine = std::env::var("LOKI_MACHINE")
        .ok()
        .filter(|m| !m.trim().is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| "unknown".into());
    Holder {
        machine,
        clone: root.display().to_string(),
        pid: std::process::id(),
        started_at: now_rfc3339(),
    }
}

/// The claim record's expiry for a renewal now.
fn expiry(lease: Duration) -> String {
    let d = chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::seconds(120));
    (chrono::Utc::now() + d).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The expiry of a released claim: a lease and a half ago, so it counts as
/// lapsed at once (see [`lapsed`]).
fn lapsed_expiry(lease: Duration) -> String {
    let d = chrono::Duration::from_std(lease + lease / 2 + Duration::from_secs(1))
        .unwrap_or(chrono::Duration::seconds(181));
    (chrono::Utc::now() - d).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Whether a claim's lease is over, judged with a margin of half a lease
/// (clock skew between machines, a renewal delayed by a slow push).
pub(super) fn lapsed(claim: &Claim, lease: Duration) -> bool {
    lapsed_at(claim, lease).is_some_and(|secs| secs > 0.0)
}

/// Seconds since a claim became free to take over (negative: how long it
/// has left); `None` for a parked claim.
pub fn lapsed_at(claim: &Claim, lease: Duration) -> Option<f64> {
    let exp = claim
        .expires
        .as_deref()
        .and_then(|e| chrono::DateTime::parse_from_rfc3339(e).ok())?;
    let margin = chrono::Duration::from_std(lease / 2).unwrap_or(chrono::Duration::seconds(60));
    Some(
        (chrono::Utc::now() - (exp.with_timezone(&chrono::Utc) + margin)).num_milliseconds() as f64
            / 1000.0,
    )
}

/// Statuses a holder is done with until a person acts: a claim in one of
/// these is parked at the run's end, and dependents elsewhere are blocked.
pub(super) fn waits_for_person(status: &str) -> bool {
    matches!(
        status,
        "failed" | "blocked" | "cancelled" | "conflicted" | "awaiting_approval"
    )
}

/// The remote worker: one network operation at a time, in order: claims,
/// pushes of progress, renewals every third of the lease, and a fetch every
/// [`poll_every`], whose view it reports.
pub(super) async fn remote_worker(
    root: PathBuf,
    name: String,
    target: String,
    lease: Duration,
    book: Arc<Book>,
    mut rx: mpsc::UnboundedReceiver<RemoteJob>,
    tx: mpsc::UnboundedSender<Msg>,
) {
    let mut tick = tokio::time::interval(poll_every(lease));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_renewal = Instant::now();
    loop {
        tokio::select! {
            job = rx.recv() => {
                let Some(job) = job else { break };
                match job {
                    // Claims of different streams are independent: each runs
                    // at once, beside the worker's fetches and pushes.
                    RemoteJob::Claim { claim, expect, inherited_cost, previous } => {
                        let (root, name, book, target, tx) =
                            (root.clone(), name.clone(), book.clone(), target.clone(), tx.clone());
                        tokio::spawn(async move {
                            let id = claim.stream.clone();
                            let (r, n, b, t) = (root.clone(), name.clone(), book.clone(), target.clone());
                            let result = tokio::task::spawn_blocking(move || {
                                let taken = Taken { expect, inherited_cost, previous: previous.map(|p| *p) };
                                claim_now(&r, &n, &t, &b, *claim, taken)
                            })
                            .await
                            .unwrap_or_else(|e| Err(format!("the claim task failed: {e}")));
                            // A race lost: who won is fetched now, not at the next tick.
                            let lost = matches!(result, Ok(false));
                            let _ = tx.send(Msg::Remote(RemoteMsg::Claimed { id, result }));
                            if lost {
                                let _ = tx.send(Msg::Remote(fetch_view(&root, &name, &target).await));
                            }
                        });
                    }
                    RemoteJob::Progress { id } => {
                        let (root2, name2, book2) = (root.clone(), name.clone(), book.clone());
                        let lost = tokio::task::spawn_blocking(move || {
                            progress_now(&root2, &name2, &book2, &id, lease)
                        })
                        .await
                        .unwrap_or(Ok(None));
                        report(&tx, lost);
                    }
                    RemoteJob::Release { parked, done } => {
                        let (root2, name2, book2) = (root.clone(), name.clone(), book.clone());
                        let notes = tokio::task::spawn_blocking(move || {
                            release_all(&root2, &name2, &book2, &parked, lease)
                        })
                        .await
                        .unwrap_or_default();
                        let _ = done.send(notes);
                        break;
                    }
                }
            }
            _ = tick.tick() => {
                if last_renewal.elapsed() >= lease / 3 {
                    last_renewal = Instant::now();
                    let (root2, name2, book2) = (root.clone(), name.clone(), book.clone());
                    let lost = tokio::task::spawn_blocking(move || renew_now(&root2, &name2, &book2, lease))
                        .await
                        .unwrap_or(Ok(Vec::new()));
                    match lost {
                        Ok(ids) => {
                            for id in ids {
                                let _ = tx.send(Msg::Remote(RemoteMsg::Lost { id }));
                            }
                        }
                        Err(e) => {
                            let _ = tx.send(Msg::Remote(RemoteMsg::Trouble(e)));
                        }
                    }
                }
                if tx.send(Msg::Remote(fetch_view(&root, &name, &target).await)).is_err() {
                    break;
                }
            }
        }
    }
}

/// A fetch, this clone's target brought up to the remote's, and the view.
async fn fetch_view(root: &Path, name: &str, target: &str) -> RemoteMsg {
    let (root, name, target) = (root.to_path_buf(), name.to_string(), target.to_string());
    let seen = tokio::task::spawn_blocking(move || {
        let view = gremote::fetch(&root, &name, &target)?;
        let follow = gremote::follow_target(&root, &name, &target)?;
        anyhow::Ok((view, follow))
    })
    .await;
    match seen {
        Ok(Ok((view, follow))) => RemoteMsg::View {
            view: Box::new(view),
            follow,
        },
        Ok(Err(e)) => RemoteMsg::Trouble(format!("{e:#}")),
        Err(e) => RemoteMsg::Trouble(format!("the fetch task failed: {e}")),
    }
}

fn report(tx: &mpsc::UnboundedSender<Msg>, lost: std::result::Result<Option<String>, String>) {
    match lost {
        Ok(Some(id)) => {
            let _ = tx.send(Msg::Remote(RemoteMsg::Lost { id }));
        }
        Ok(None) => {}
        Err(e) => {
            let _ = tx.send(Msg::Remote(RemoteMsg::Trouble(e)));
        }
    }
}

/// Pushes a claim; on a win it is in the book and, when it replaces
/// another holder's, the branch that holder pushed is this clone's.
/// What a claim replaces: the claim commit it expects (none: the ref must
/// not exist), and another holder's claim with what that holder spent.
struct Taken {
    expect: Option<String>,
    inherited_cost: f64,
    previous: Option<Claim>,
}

fn claim_now(
    root: &Path,
    remote: &str,
    target: &str,
    book: &Book,
    claim: Claim,
    taken: Taken,
) -> std::result::Result<bool, String> {
    let Taken {
        expect,
        inherited_cost,
        previous,
    } = taken;
    let id = claim.stream.clone();
    let lock = book.lock_of(&id);
    let _push = hold(&lock);
    let won = gremote::push_claim(root, remote, &claim, expect.as_deref(), false)
        .map_err(|e| format!("{e:#}"))?;
    let Some(oid) = won else {
        return Ok(false);
    };
    // A claim ref that is not there may be one a merge just deleted: the
    // merge's done record was created in the same atomic push, so asking
    // the remote after the win shows it, and the claim is given back.
    let (done, pushed) = gremote::stream_refs(root, remote, &id).map_err(|e| format!("{e:#}"))?;
    if done {
        gremote::release_claim(root, remote, &id, &oid).map_err(|e| format!("{e:#}"))?;
        return Ok(false);
    }
    // The branch as pushed by an earlier holder, fetched after the win (no
    // push of theirs can land after it: theirs are fenced by the claim).
    if pushed.is_some() {
        gremote::fetch(root, remote, target).map_err(|e| format!("{e:#}"))?;
        gremote::adopt_branch(root, remote, &id).map_err(|e| format!("{e:#}"))?;
    }
    book.held().insert(
        id,
        HeldClaim {
            oid,
            claim,
            inherited_cost,
            previous,
        },
    );
    Ok(true)
}

/// The claim as it is to be pushed now.
fn renewed(h: &HeldClaim, lease: Duration) -> Claim {
    let mut c = h.claim.clone();
    c.renewed = now_rfc3339();
    c.expires = Some(expiry(lease));
    c
}

fn progress_now(
    root: &Path,
    remote: &str,
    book: &Book,
    id: &str,
    lease: Duration,
) -> std::result::Result<Option<String>, String> {
    let lock = book.lock_of(id);
    let _push = hold(&lock);
    let Some(h) = book.held().get(id).cloned() else {
        return Ok(None);
    };
    let claim = renewed(&h, lease);
    match gremote::push_claim(root, remote, &claim, Some(&h.oid), true) {
        Ok(Some(oid)) => {
            if let Some(e) = book.held().get_mut(id) {
                e.oid = oid;
            }
            Ok(None)
        }
        Ok(None) => {
            book.held().remove(id);
            Ok(Some(id.to_string()))
        }
        Err(e) => Err(format!("{e:#}")),
    }
}

/// Renews every held claim; the ids of those lost.
fn renew_now(
    root: &Path,
    remote: &str,
    book: &Book,
    lease: Duration,
) -> std::result::Result<Vec<String>, String> {
    let held: Vec<(String, HeldClaim)> = book
        .held()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    // A claim being pushed right now (its merge, its progress) is renewed
    // by that push or the next round: never waited for here.
    let locks: Vec<(String, Arc<Mutex<()>>)> = held
        .iter()
        .map(|(id, _)| (id.clone(), book.lock_of(id)))
        .collect();
    let mut guards = Vec::new();
    let mut free = BTreeSet::new();
    for (id, l) in &locks {
        if let Ok(g) = l.try_lock() {
            guards.push(g);
            free.insert(id.clone());
        }
    }
    let current = book.held().clone();
    let batch: Vec<(Claim, String)> = held
        .iter()
        .filter(|(id, h)| free.contains(id) && h.claim.expires.is_some())
        .filter_map(|(id, _)| current.get(id))
        .map(|h| (renewed(h, lease), h.oid.clone()))
        .collect();
    let results = gremote::renew_claims(root, remote, &batch).map_err(|e| format!("{e:#}"))?;
    let mut lost = Vec::new();
    let mut book_held = book.held();
    for ((claim, _), r) in batch.iter().zip(results) {
        match r {
            Some(oid) => {
                if let Some(e) = book_held.get_mut(&claim.stream) {
                    e.oid = oid;
                }
            }
            None => {
                book_held.remove(&claim.stream);
                lost.push(claim.stream.clone());
            }
        }
    }
    Ok(lost)
}

/// The run's end: parks the claims of `parked` streams and releases every
/// other one. Returns what could not be done.
fn release_all(
    root: &Path,
    remote: &str,
    book: &Book,
    parked: &BTreeSet<String>,
    lease: Duration,
) -> Vec<String> {
    let ids: Vec<String> = book.held().keys().cloned().collect();
    let mut notes = Vec::new();
    for id in ids {
        let lock = book.lock_of(&id);
        let _push = hold(&lock);
        // Gone meanwhile: merged (its claim went with the merge).
        let Some(h) = book.held().remove(&id) else {
            continue;
        };
        // Parked: no expiry. Released: lapsed already, so another
        // supervisor takes it over at once, with its attempt count and
        // feedback, from the branch pushed with it.
        let mut c = h.claim.clone();
        c.renewed = now_rfc3339();
        c.expires = if parked.contains(&id) {
            None
        } else {
            Some(lapsed_expiry(lease))
        };
        let res = gremote::push_claim(root, remote, &c, Some(&h.oid), true).map(|r| r.is_some());
        match res {
            Ok(true) => {}
            Ok(false) => notes.push(format!(
                "the claim on {id} had been taken over by another supervisor"
            )),
            Err(e) => notes.push(format!(
                "could not give up the claim on {id} ({e:#}); its lease runs out by itself"
            )),
        }
    }
    notes
}

impl Dispatcher {
    /// Whether stream `id` may start here as far as the remote goes:
    /// held by this supervisor, or free to claim.
    pub(super) fn remote_allows(&self, id: &str) -> bool {
        let Some(r) = &self.remote else {
            return true;
        };
        r.book.held().contains_key(id) || self.claimable(id).is_some()
    }

    /// Whether this supervisor holds `id` (always, with no remote).
    pub(super) fn holds(&self, id: &str) -> bool {
        self.remote
            .as_ref()
            .is_none_or(|r| r.book.held().contains_key(id))
    }

    /// `Some(expect)` when stream `id` may be claimed (`expect`: the claim
    /// commit it replaces, if any).
    pub(super) fn claimable(&self, id: &str) -> Option<Option<String>> {
        let r = self.remote.as_ref()?;
        if r.view.done.contains_key(id) || r.claiming.contains(id) || r.lost_races.contains(id) {
            return None;
        }
        let Some(c) = r.view.claims.get(id) else {
            return Some(None);
        };
        let claim = c.claim.as_ref()?;
        let mine = claim.holder.same_clone(&r.me);
        if mine || lapsed(claim, r.lease) {
            return Some(Some(c.oid.clone()));
        }
        None
    }

    /// A dependency's status as another supervisor's claim says it, when
    /// that status means it will not merge without a person.
    pub(super) fn remote_lost(&self, dep: &str) -> Option<Status> {
        let r = self.remote.as_ref()?;
        if r.book.held().contains_key(dep) {
            return None;
        }
        let claim = r.view.claims.get(dep)?.claim.as_ref()?;
        if claim.holder.same_clone(&r.me) || !waits_for_person(&claim.status) {
            return None;
        }
        match claim.status.as_str() {
            "failed" => Some(Status::Failed),
            "blocked" => Some(Status::Blocked),
            "cancelled" => Some(Status::Cancelled),
            "conflicted" => Some(Status::Conflicted),
            // Awaiting approval elsewhere: it may still merge.
            _ => None,
        }
    }

    /// Work other supervisors hold that this run may still need: a claim
    /// of a stream not merged here, under a live lease, that nobody
    /// waits on a person for; or a claim of ours still being pushed.
    pub(super) fn remote_waits(&self) -> bool {
        let Some(r) = &self.remote else {
            return false;
        };
        // A claim asked for, or one just lost whose winner the next fetch
        // shows.
        if !r.claiming.is_empty() || !r.lost_races.is_empty() {
            return true;
        }
        r.view.claims.iter().any(|(id, c)| {
            let Some(claim) = &c.claim else { return false };
            !self.merged(id)
                && self.slots.contains_key(id)
                && !claim.holder.same_clone(&r.me)
                && claim.expires.is_some()
                && !lapsed(claim, r.lease)
                && !waits_for_person(&claim.status)
        })
    }

    /// What the other machines spent, as the remote records it.
    pub(super) fn remote_cost(&self) -> f64 {
        let Some(r) = &self.remote else {
            return 0.0;
        };
        let held = r.book.held();
        let claims = r
            .view
            .claims
            .iter()
            .filter(|(id, _)| !held.contains_key(*id))
            .filter_map(|(_, c)| c.claim.as_ref())
            .filter(|c| !c.holder.same_clone(&r.me))
            .map(|c| c.cost_usd);
        // Done by another machine: all of it. Done here: what earlier
        // holders spent before this one took it over (the rest is in this
        // clone's state).
        let done = r.view.done.iter().filter_map(|(id, d)| {
            let d = d.done.as_ref()?;
            if !d.by.same_clone(&r.me) {
                return Some(d.cost_usd);
            }
            let here = self.slots.get(id).map_or(0.0, |s| s.st.cost_usd);
            Some((d.cost_usd - here).max(0.0))
        });
        let inherited = held.values().map(|h| h.inherited_cost);
        crate::util::total(claims.chain(done).chain(inherited))
    }

    /// Asks for the claim on `id`; true when asked (the start waits for
    /// the answer).
    pub(super) fn request_claim(&mut self, id: &str) -> bool {
        // While the remote does not answer, no claim is tried (each would
        // fail at once); the next fetch that works lifts this.
        if self.remote.as_ref().is_some_and(|r| r.trouble.is_some()) {
            return false;
        }
        let Some(expect) = self.claimable(id) else {
            return false;
        };
        let Some(slot) = self.slots.get(id) else {
            return false;
        };
        let Some(r) = self.remote.as_mut() else {
            return false;
        };
        let before = expect
            .as_ref()
            .and_then(|_| r.view.claims.get(id))
            .and_then(|c| c.claim.clone());
        let before_record = before.clone();
        let now = now_rfc3339();
        let inherited_cost = before
            .as_ref()
            .filter(|b| !b.holder.same_clone(&r.me))
            .map_or(0.0, |b| b.cost_usd);
        let claim = Claim {
            stream: id.to_string(),
            holder: r.me.clone(),
            since: now.clone(),
            renewed: now,
            expires: Some(expiry(r.lease)),
            status: slot.st.status.to_string(),
            attempt: slot.st.attempt,
            cost_usd: slot.st.cost_usd + inherited_cost,
            feedback: slot.st.feedback.clone(),
            took_over_from: before
                .filter(|b| !b.holder.same_clone(&r.me))
                .map(|b| b.holder),
        };
        r.claiming.insert(id.to_string());
        let _ = r.jobs.send(RemoteJob::Claim {
            previous: claim
                .took_over_from
                .as_ref()
                .and(before_record)
                .map(Box::new),
            claim: Box::new(claim),
            expect,
            inherited_cost,
        });
        true
    }

    /// Keeps the record of a held claim in step with the stream's state
    /// (pushed at the next renewal).
    pub(super) fn remote_note_state(&self, id: &str) {
        let (Some(r), Some(slot)) = (&self.remote, self.slots.get(id)) else {
            return;
        };
        if let Some(h) = r.book.held().get_mut(id) {
            h.claim.status = slot.st.status.to_string();
            h.claim.attempt = slot.st.attempt;
            h.claim.cost_usd = slot.st.cost_usd + h.inherited_cost;
            h.claim.feedback = slot.st.feedback.clone();
        }
    }

    /// Pushes the stream's branch (its attempt's commit is made).
    pub(super) fn remote_progress(&self, id: &str) {
        if let Some(r) = &self.remote {
            if r.book.held().contains_key(id) {
                let _ = r.jobs.send(RemoteJob::Progress { id: id.to_string() });
            }
        }
    }

    pub(super) async fn on_remote(&mut self, msg: RemoteMsg) {
        match msg {
            RemoteMsg::View { view, follow } => {
                let Some(r) = self.remote.as_mut() else {
                    return;
                };
                if r.trouble.take().is_some() {
                    self.ui.send(UiEvent::Note(format!(
                        "the remote `{}` answers again",
                        r.name
                    )));
                }
                if follow.is_some() && follow != r.follow_note {
                    if let Some(n) = &follow {
                        self.ui.send(UiEvent::Note(n.clone()));
                    }
                }
                r.follow_note = follow;
                r.view = *view;
                r.lost_races.clear();
                let done: Vec<(String, String, String)> = r
                    .view
                    .done
                    .iter()
                    .filter(|(_, d)| d.on_target)
                    .filter_map(|(id, d)| {
                        d.done
                            .as_ref()
                            .map(|x| (id.clone(), x.merge.clone(), x.by.label()))
                    })
                    .collect();
                for (id, commit, by) in done {
                    // This supervisor's own merge: its answer says so.
                    if self.merge_queued.contains(&id) {
                        continue;
                    }
                    let local = self.slots.get(&id).map(|s| s.st.status);
                    if local.is_some_and(|s| s != Status::Merged && !s.is_active()) {
                        self.feed(&id, Input::MergedElsewhere { commit, by }).await;
                    }
                }
            }
            RemoteMsg::Claimed { id, result } => {
                let Some(r) = self.remote.as_mut() else {
                    return;
                };
                r.claiming.remove(&id);
                match result {
                    Ok(true) => {
                        // The replaced claim as it was when this one was
                        // asked for (the view may show this one by now).
                        let taken = r.book.held().get(&id).and_then(|h| {
                            h.claim
                                .took_over_from
                                .clone()
                                .map(|f| (f, h.previous.clone()))
                        });
                        self.event(
                            "remote",
                            Some(&id),
                            &format!("claimed on the remote `{}`", self.remote_name()),
                        );
                        if let Some((from, Some(before))) = taken {
                            let mine = self.slots.get(&id).map_or(0, |s| s.st.attempt);
                            if before.attempt > mine {
                                self.feed(
                                    &id,
                                    Input::Adopt {
                                        attempt: before.attempt,
                                        feedback: before.feedback.clone(),
                                        from: from.label(),
                                    },
                                )
                                .await;
                            }
                        }
                    }
                    Ok(false) => {
                        // Someone else's push won: a fetch follows, showing whose.
                        r.lost_races.insert(id);
                    }
                    Err(e) => self.remote_trouble(e),
                }
            }
            RemoteMsg::Lost { id } => {
                let msg = format!(
                    "{id}: another supervisor took its claim over on the remote (this one's lease ran out); its agent is stopped and it is left to them"
                );
                self.event("remote", Some(&id), &msg);
                self.ui.send(UiEvent::Note(msg));
                if let Some(slot) = self.slots.get_mut(&id) {
                    slot.held = true;
                    if let Some(stop) = slot.stop.clone() {
                        let _ = stop.send(Some(StopRequest::Interrupt));
                    }
                }
            }
            RemoteMsg::Trouble(e) => self.remote_trouble(e),
        }
    }

    fn remote_name(&self) -> String {
        self.remote
            .as_ref()
            .map(|r| r.name.clone())
            .unwrap_or_default()
    }

    fn remote_trouble(&mut self, e: String) {
        let Some(r) = self.remote.as_mut() else {
            return;
        };
        if r.trouble.as_deref() != Some(e.as_str()) {
            r.trouble = Some(e.clone());
            let msg = format!("the remote `{}`: {e}", r.name);
            self.event("warning", None, &msg);
            self.ui.send(UiEvent::Note(msg));
        }
    }

    /// After recovery: what the first fetch said (streams merged by other
    /// machines are merged here too).
    pub(super) async fn remote_start(&mut self) {
        let Some(r) = &self.remote else {
            return;
        };
        let (root, name, target) = (
            self.layout.root.clone(),
            r.name.clone(),
            self.target.clone(),
        );
        let follow =
            tokio::task::spawn_blocking(move || gremote::follow_target(&root, &name, &target))
                .await
                .ok()
                .and_then(|r| r.ok())
                .flatten();
        let view = Box::new(r.view.clone());
        self.on_remote(RemoteMsg::View { view, follow }).await;
    }

    /// The run's end: parks or releases every claim held (see the module
    /// doc) and stops the remote worker.
    pub(super) async fn remote_release(&mut self) {
        let Some(r) = &self.remote else {
            return;
        };
        let parked: BTreeSet<String> = self
            .slots
            .iter()
            .filter(|(_, s)| waits_for_person(&s.st.status.to_string()))
            .map(|(id, _)| id.clone())
            .collect();
        let order: Vec<String> = r.book.held().keys().cloned().collect();
        for id in &order {
            self.remote_note_state(id);
        }
        let Some(r) = &self.remote else {
            return;
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        if r.jobs.send(RemoteJob::Release { parked, done: tx }).is_ok() {
            if let Ok(Ok(notes)) = tokio::time::timeout(Duration::from_secs(120), rx).await {
                self.notes.extend(notes);
            }
        }
    }
}
