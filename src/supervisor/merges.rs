//! Merging: the one merge worker (merges are done one at a time, in
//! order), its results fed back to the machine, and the clean-up of merged
//! streams.

use super::*;

/// The one merge worker: merges are done one at a time, in order.
pub(super) async fn merge_worker(
    root: PathBuf,
    target: String,
    mut rx: mpsc::UnboundedReceiver<MergeJob>,
    tx: mpsc::UnboundedSender<Msg>,
    remote: Option<super::remote::RemoteMerger>,
) {
    while let Some(job) = rx.recv().await {
        let root = root.clone();
        let target = target.clone();
        let id = job.id.to_string();
        let remote = remote.clone();
        let result = tokio::task::spawn_blocking(move || {
            if job.with_edits {
                attempt::commit_review_edits(&Layout::new(&root), &job.id, job.attempt)
                    .map_err(|e| format!("{e:#}"))?;
            }
            match remote {
                // Through the remote: pushed there, then followed here.
                Some(r) => r.merge(&root, &job.id, &target, &job.subject, &job.trailers),
                None => git::merge_stream(&root, &job.id, &target, &job.subject, &job.trailers)
                    .map_err(|e| format!("{e:#}")),
            }
        })
        .await
        .unwrap_or_else(|e| Err(format!("merge task failed: {e}")));
        if tx.send(Msg::MergeDone { id, result }).is_err() {
            break;
        }
    }
}

impl Dispatcher {
    // ----- merging --------------------------------------------------------

    /// Hands the stream to the merge worker, once: a stream already queued
    /// (a signal's approval before start-up queued it again) is not merged twice.
    pub(super) fn queue_merge(&mut self, id: &str, with_edits: bool) {
        let Some(slot) = self.slots.get(id) else {
            return;
        };
        if !self.merge_queued.insert(id.to_string()) {
            return;
        }
        let st = &slot.st;
        let trailers = crate::model::trailers::merge_trailers(st, &slot.cfg.agent.command);
        let _ = self.merge_tx.send(MergeJob {
            id: id.to_string(),
            attempt: st.attempt,
            with_edits,
            subject: format!("Merge stream {id}"),
            trailers,
        });
    }

    pub(super) async fn on_merge_done(
        &mut self,
        id: String,
        result: std::result::Result<MergeOutcome, String>,
    ) {
        self.merge_queued.remove(&id);
        if self
            .slots
            .get(&id)
            .is_none_or(|s| s.st.status != Status::Merging)
        {
            return;
        }
        let (input, checkout_behind) = MergeResult::from_outcome(result, &self.layout.root);
        self.feed(&id, Input::Merge(input)).await;
        self.checkout_behind_warning(&id, checkout_behind);
    }

    /// A merged stream whose checkout update failed: said, never a failure.
    pub(super) fn checkout_behind_warning(&mut self, id: &str, why: Option<String>) {
        if let Some(why) = why {
            let msg = format!("{id} merged, but {why}");
            self.event("warning", Some(id), &msg);
            self.ui.send(UiEvent::Note(msg));
        }
    }

    pub(super) fn cleanup(&mut self, id: &str) {
        let root = self.layout.root.clone();
        let id = id.to_string();
        let ui = self.ui.clone();
        // Up to max_parallel merged worktrees wait to be switched to the
        // next streams' branches (`git/pool.rs`).
        let pool = self.cfg.swarm.max_parallel.max(1);
        let h = tokio::spawn(async move {
            let r = tokio::task::spawn_blocking(move || -> Result<()> {
                git::retire_worktree(&root, &id, pool)?;
                git::delete_branch(&root, &id)?;
                Ok(())
            })
            .await;
            if let Ok(Err(e)) = r {
                ui.send(UiEvent::Note(format!("cleanup after merge: {e:#}")));
            }
        });
        self.cleanups.push(h);
    }
}
