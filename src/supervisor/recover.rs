//! Start-up: loading or creating every stream's state, ending leftover
//! agents of a dead supervisor, replaying signals it took but never
//! handled, and turning whatever was in flight into something this run
//! resumes (each through the machine's `Recover` input).

use super::*;
use crate::model::paths::branch_name;
use fanout::is_instance_of;

impl Dispatcher {
    // ----- start-up -----------------------------------------------------

    /// Loads or creates every stream's state, ends leftover agents of a dead
    /// supervisor, and turns whatever was in flight into something resumable.
    pub(super) async fn recover(&mut self) -> Result<()> {
        let store = self.store.clone();
        let existing = tokio::task::spawn_blocking(move || store.load_all())
            .await
            .context("loading state")??;
        let mut existing: BTreeMap<String, StreamState> = existing
            .into_iter()
            .map(|s| (s.id.to_string(), s))
            .collect();
        let store = self.store.clone();
        self.swarm = tokio::task::spawn_blocking(move || store.load_swarm())
            .await
            .context("loading state")??;
        if self.swarm.paused && self.swarm.auth_paused {
            // The supervisor's own pause after a refused key: a new run is
            // the user's way of saying the credentials are fixed.
            let why = self.swarm.pause_reason.clone().unwrap_or_default();
            self.notes
                .push_back(format!("resuming a paused swarm ({why})"));
            let store = self.store.clone();
            let v = self.swarm.version;
            if let Ok(next) = machine::handle_swarm(&self.swarm, SwarmInput::LiftAuthPause) {
                self.swarm =
                    tokio::task::spawn_blocking(move || door::commit_swarm(&store, v, &next, None))
                        .await
                        .context("writing swarm state")??;
            }
        } else if self.swarm.paused {
            let why = self.swarm.pause_reason.clone().unwrap_or_default();
            self.notes.push_back(format!(
                "the swarm is paused ({why}): starting nothing until `loki resume` (Ctrl-C leaves)"
            ));
        }

        // Leftover agents first: nothing else happens until they are gone.
        // Leftovers do not say which stream's settings they ran under
        // (loki.toml may have changed): the longest grace any stream allows.
        let grace = self
            .cfg
            .streams
            .iter()
            .map(|s| s.agent.kill_grace)
            .max()
            .unwrap_or(Duration::from_secs(10));
        let leftovers: Vec<_> = existing
            .values()
            .flat_map(|s| {
                s.process
                    .iter()
                    .chain(s.helpers.iter())
                    .map(|p| (s.id.to_string(), *p))
                    .collect::<Vec<_>>()
            })
            .collect();
        for (id, rec) in leftovers {
            let n = tokio::task::spawn_blocking(move || process::sweep_leftover(&rec, grace))
                .await
                .unwrap_or(0);
            if n > 0 {
                self.notes.push_back(format!(
                    "ended {n} leftover process(es) of stream {id} from an earlier supervisor"
                ));
            }
        }

        for s in self.cfg.streams.clone() {
            let st = match existing.remove(s.id.as_str()) {
                Some(st) => st,
                None => {
                    let store = self.store.clone();
                    let id = s.id.to_string();
                    tokio::task::spawn_blocking(move || door::create(&store, &id))
                        .await
                        .context("creating stream state")??
                }
            };
            self.slots.insert(s.id.to_string(), Slot::new(s, st));
        }
        for (id, st) in existing {
            // An instance of a template whose items are not known yet:
            // kept aside until the fan-out is made (`fanout.rs`).
            if self
                .waiting_templates
                .iter()
                .any(|t| is_instance_of(&id, t))
            {
                self.parked.insert(id, st);
                continue;
            }
            let note = match self.cfg.templates.iter().find(|t| is_instance_of(&id, t)) {
                Some(t) => format!(
                    "{id} is dropped: its item is no longer in {} of template `{}` (its state \
                     and history are kept)",
                    t.for_each.describe(),
                    t.stream.id
                ),
                None => format!("state for stream {id} is kept, but loki.toml no longer names it"),
            };
            self.notes.push_back(note);
        }
        Ok(())
    }

    /// Signals the previous supervisor took into `processed/` but died
    /// before handling (no `signal` event names their file), applied now,
    /// before anything newer. Only that supervisor's files count (their
    /// names end in its pid, from its `started` event): older ones were
    /// handled or given up by theirs. A swarm-wide STOP was meant for the
    /// supervisor that died and is not replayed. If `events.jsonl` cannot
    /// be read, nothing is replayed (and the user is told).
    pub(super) async fn replay_unhandled_signals(&mut self) {
        let store = self.store.clone();
        let dir = self.signals.clone();
        let found = tokio::task::spawn_blocking(move || -> Result<Vec<Taken>, String> {
            let events = store.read_events().map_err(|e| e.to_string())?;
            let Some(pid) = events.iter().rev().find_map(|e| {
                let rest = e.message.strip_prefix("started (pid ")?;
                (e.kind == "supervisor")
                    .then(|| rest.split(')').next())??
                    .parse::<u32>()
                    .ok()
            }) else {
                return Ok(Vec::new());
            };
            let handled: BTreeSet<String> =
                events.into_iter().filter_map(|e| e.signal_file).collect();
            let suffix = format!("-{pid}");
            Ok(dir
                .processed()
                .into_iter()
                .filter(|f| f.ends_with(&suffix) && !handled.contains(f))
                .filter_map(|f| dir.retake(&f))
                .collect())
        })
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
        let taken = match found {
            Ok(t) => t,
            Err(e) => {
                self.notes.push_back(format!(
                    "signals taken by the stopped supervisor are not replayed: {e}"
                ));
                return;
            }
        };
        for t in taken {
            if let Taken::Signal(s) = &t {
                if s.kind == Kind::Stop && s.stream.is_none() {
                    self.signal_event(
                        None,
                        &format!(
                            "{}: not replayed (it was meant for the stopped supervisor)",
                            s.name
                        ),
                        s,
                    );
                    continue;
                }
                self.notes.push_back(format!(
                    "applying signal {} taken by the stopped supervisor but not yet handled",
                    s.name
                ));
            }
            self.on_signal(t).await;
        }
    }

    /// Signals written while no supervisor ran, applied to the state as it
    /// was left (before start-up turns failed streams into pending ones), so
    /// that a RETRY of a failed stream means what its writer meant.
    pub(super) async fn apply_waiting_signals(&mut self) {
        let dir = self.signals.clone();
        let taken = tokio::task::spawn_blocking(move || dir.scan())
            .await
            .unwrap_or_default();
        for t in taken {
            self.on_signal(t).await;
        }
    }

    /// Turns whatever was in flight when the last supervisor stopped into
    /// something this run resumes.
    pub(super) async fn normalize(&mut self) -> Result<()> {
        let ids = self.order.clone();
        self.normalize_streams(&ids).await;
        Ok(())
    }

    /// [`Self::normalize`] for the streams `ids` (in order): at start-up
    /// every stream, later the instances of a fan-out that had state.
    /// Git locks a killed supervisor left in loki's own refs and worktrees
    /// (of `ids`), which would fail every resumed attempt, cleared: before
    /// anything of this run can take a lock itself (a signal applied at
    /// start-up queues a merge at once), so only a dead process's lock can
    /// be there (we hold the supervisor lock).
    pub(super) async fn clear_leftover_locks(&mut self, ids: &[String]) {
        // Git locks a killed supervisor left in loki's own refs and
        // worktrees would fail every resumed attempt: clear them (we hold
        // the supervisor lock, so nothing else of loki's can hold them).
        // A merged stream whose clean-up (worktree removal, branch
        // deletion) was cut short counts too: a lock left on its branch
        // would keep the branch forever.
        let merged_leftovers = self.merged_leftovers(ids);
        let in_flight: Vec<String> = ids
            .iter()
            .filter_map(|id| self.slots.get(id))
            .filter(|s| {
                matches!(
                    s.st.status,
                    Status::Preparing
                        | Status::Running
                        | Status::Checking
                        | Status::Validating
                        | Status::Merging
                        | Status::AwaitingApproval
                        | Status::Interrupted
                ) || merged_leftovers.contains(s.st.id.as_str())
            })
            .map(|s| s.st.id.to_string())
            .collect();
        let any_merging = ids
            .iter()
            .filter_map(|id| self.slots.get(id))
            .any(|s| matches!(s.st.status, Status::Merging | Status::AwaitingApproval));
        let root = self.layout.root.clone();
        let target = self.target.clone();
        let (removed, kept) = tokio::task::spawn_blocking(move || {
            let mut removed = Vec::new();
            for id in &in_flight {
                if let Ok(r) = git::clear_stale_locks(&root, id) {
                    removed.extend(r);
                }
            }
            let mut kept = Vec::new();
            if any_merging {
                if let Ok(r) =
                    git::clear_abandoned_target_locks(&root, &target, Duration::from_secs(2))
                {
                    removed.extend(r.removed);
                    kept = r.kept;
                }
            }
            (removed, kept)
        })
        .await
        .unwrap_or_default();
        for r in removed {
            self.notes.push_back(format!(
                "removed a git lock left by the stopped supervisor: {}",
                r.display()
            ));
        }
        for k in kept {
            self.notes.push_back(format!(
                "{} exists: if no git command of yours is running, the stopped supervisor left it; remove it so the merge can update your checkout",
                k.display()
            ));
        }
    }

    pub(super) async fn normalize_streams(&mut self, ids: &[String]) {
        self.check_merges_against_git(ids).await;
        let merged_leftovers = self.merged_leftovers(ids);
        let alone = self.unchanged_failures(ids).await;
        for id in ids {
            if alone.contains(id) {
                continue;
            }
            let Ok(effects) = self.step(id, Input::Recover).await else {
                continue;
            };
            let (cleanup, effects): (Vec<Effect>, Vec<Effect>) =
                effects.into_iter().partition(|e| *e == Effect::Cleanup);
            self.perform(id, effects).await;
            if !cleanup.is_empty() && merged_leftovers.contains(id.as_str()) {
                // A merged stream whose worktree or branch a crash left behind.
                let root = self.layout.root.clone();
                let idc = id.clone();
                let done = tokio::task::spawn_blocking(move || -> Result<()> {
                    git::remove_worktree(&root, &idc)?;
                    git::delete_branch(&root, &idc)
                })
                .await;
                if let Ok(Err(e)) = done {
                    self.notes.push_back(format!(
                        "{id} is merged, but its worktree or branch could not be removed: {e:#}"
                    ));
                }
            }
        }
    }

    /// Failed streams that nothing they read has changed for since their
    /// last attempt ([`attempt::reads_digest`]), and the blocked streams
    /// that wait only on those: a new run leaves them as they are instead
    /// of spending a fresh allowance on the same task (`--retry-failed` or
    /// `loki retry <id>` runs them anyway). A failure recorded without a
    /// digest (an older loki) runs again. `ids` in dependency order.
    async fn unchanged_failures(&mut self, ids: &[String]) -> BTreeSet<String> {
        let mut alone = BTreeSet::new();
        if self.retry_failed {
            return alone;
        }
        for id in ids {
            let Some(slot) = self.slots.get(id) else {
                continue;
            };
            match slot.st.status {
                Status::Failed if slot.st.attempt > 0 => {
                    let file = self
                        .layout
                        .run_dir(id, slot.st.attempt)
                        .join(attempt::READS_FILE);
                    let cfg = slot.cfg.clone();
                    let (root, dir, target) = (
                        self.layout.root.clone(),
                        self.cfg.root.clone(),
                        self.target.clone(),
                    );
                    let same = tokio::task::spawn_blocking(move || {
                        let before = std::fs::read_to_string(&file).ok()?;
                        let now = attempt::reads_digest(&cfg, &root, &dir, &target);
                        Some(before.trim() == now)
                    })
                    .await
                    .ok()
                    .flatten()
                    .unwrap_or(false);
                    if same {
                        alone.insert(id.clone());
                    }
                }
                Status::Blocked
                    if slot.cfg.depends_on.iter().any(|d| alone.contains(d))
                        && slot.cfg.depends_on.iter().all(|d| {
                            alone.contains(d)
                                || self.slots.get(d).is_some_and(|s| {
                                    !matches!(s.st.status, Status::Failed | Status::Blocked)
                                })
                        }) =>
                {
                    alone.insert(id.clone());
                }
                _ => {}
            }
        }
        for id in &alone {
            self.left_alone.insert(id.clone());
        }
        alone
    }

    /// Git is the truth: a state that says merged (written by anything, an
    /// agent included) while the target's history has no merge of that
    /// stream is corrected to pending, and said so. If the history cannot be
    /// read, the states are kept and the user is told.
    async fn check_merges_against_git(&mut self, ids: &[String]) {
        let claimed: Vec<String> = ids
            .iter()
            .filter(|id| self.slots.contains_key(id.as_str()))
            .filter(|id| self.slots[id.as_str()].st.status == Status::Merged)
            .cloned()
            .collect();
        if claimed.is_empty() {
            return;
        }
        let root = self.layout.root.clone();
        let target = self.target.clone();
        let merged = tokio::task::spawn_blocking(move || git::merged_streams(&root, &target))
            .await
            .map_err(anyhow::Error::from)
            .and_then(|r| r);
        let merged = match merged {
            Ok(m) => m,
            Err(e) => {
                self.notes.push_back(format!(
                    "merged streams are not checked against {}'s history: {e:#}",
                    self.target
                ));
                return;
            }
        };
        for id in claimed {
            // The state's own merge commit must be one of them: a state that
            // names no merge, or another one, is not backed by git.
            let named = self.slots[id.as_str()].st.merge_commit.clone();
            let backed = merged.get(&id).is_some_and(|found| {
                named.is_none() || named.as_ref().is_some_and(|c| found.contains(c))
            });
            if !backed {
                if let Ok(effects) = self.step(&id, Input::NotOnTarget).await {
                    self.perform(&id, effects).await;
                }
            }
        }
    }

    /// Merged streams whose worktree folder or branch is still there (a
    /// crash cut their clean-up short): one listing of the branches, not a
    /// lookup per stream.
    fn merged_leftovers(&self, ids: &[String]) -> BTreeSet<String> {
        let branches: BTreeSet<String> = git::local_branches(&self.layout.root)
            .unwrap_or_default()
            .into_iter()
            .collect();
        ids.iter()
            .filter_map(|id| self.slots.get(id))
            .filter(|s| s.st.status == Status::Merged)
            .filter(|s| {
                self.layout.worktree(&s.st.id).symlink_metadata().is_ok()
                    || branches.contains(&branch_name(&s.st.id))
            })
            .map(|s| s.st.id.to_string())
            .collect()
    }
}
