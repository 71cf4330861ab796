//! A graph that grows while it runs: the instances of a deferred template
//! (its `for_each` source is written by a stream it depends on) are made
//! once every dependency has merged, from the source as merged on the
//! target, and run in the same `loki run`.
//!
//! Until then the template's id names no stream, so whatever depends on it
//! waits. When the fan-out is made, those dependencies become the
//! instances; when it cannot be made (the source is gone, no item without
//! `allow_empty`, two items with one key) or a dependency of the template
//! failed, the template is failed and its dependents are blocked, with the
//! reason in the run's notes and events.
//!
//! An instance that has state from an earlier run keeps it (merged stays
//! merged, checked against git like every state at start-up); state of an
//! instance whose item is gone is kept and reported as dropped.

use super::*;
use crate::config::Template;

/// Whether `id` names an instance of `t` (`<template>.<key>`).
pub(super) fn is_instance_of(id: &str, t: &Template) -> bool {
    id.strip_prefix(t.stream.id.as_str())
        .is_some_and(|rest| rest.starts_with('.') && rest.len() > 1 && !rest[1..].contains('.'))
}

/// Where a dependency of a waiting template stands.
enum DepState {
    Merged,
    Waiting,
    /// It can no longer merge: why.
    Lost(String),
}

impl Dispatcher {
    fn dep_state(&self, d: &str) -> DepState {
        let d = crate::config::fanout::pairing(d).unwrap_or(d);
        if let Some(why) = self.failed_templates.get(d) {
            return DepState::Lost(format!("template `{d}` failed: {why}"));
        }
        if let Some(ids) = self.groups.get(d) {
            let mut state = DepState::Merged;
            for id in ids {
                match self.dep_state(id) {
                    DepState::Merged => {}
                    DepState::Waiting => state = DepState::Waiting,
                    lost => return lost,
                }
            }
            return state;
        }
        match self.slots.get(d).map(|s| s.st.status) {
            Some(Status::Merged) => DepState::Merged,
            Some(
                s @ (Status::Failed | Status::Blocked | Status::Cancelled | Status::Conflicted),
            ) => DepState::Lost(format!("`{d}` is {s}")),
            // A template still waiting (or a stream not yet known).
            _ => DepState::Waiting,
        }
    }

    /// Makes the fan-out of every waiting template whose dependencies have
    /// all merged; fails those whose dependencies cannot. Returns whether
    /// anything changed.
    pub(super) async fn expand_templates(&mut self) -> bool {
        let mut changed = false;
        loop {
            let mut progress = false;
            for tpl in self.waiting_templates.clone() {
                let id = tpl.stream.id.to_string();
                let mut ready = true;
                let mut lost = None;
                for d in &tpl.stream.depends_on {
                    match self.dep_state(d) {
                        DepState::Merged => {}
                        DepState::Waiting => ready = false,
                        DepState::Lost(why) => {
                            lost = Some(why);
                            break;
                        }
                    }
                }
                if let Some(why) = lost {
                    self.fail_template(&id, format!("blocked: {why}"));
                    progress = true;
                    continue;
                }
                if !ready {
                    continue;
                }
                progress = true;
                let root = self.layout.root.clone();
                let target = self.target.clone();
                let cfg = self.cfg.clone();
                let groups = self.groups.clone();
                let mut t = tpl.clone();
                // The stand-in writes prose, not the sections or files a
                // real agent would: a rehearsal goes on past an empty
                // fan-out (and says so) instead of failing it.
                t.allow_empty |= self.rehearse;
                let made = tokio::task::spawn_blocking(move || {
                    let tree = git::BranchTree::open(&root, Some(&target)).ok_or_else(|| {
                        format!("the branch `{target}` cannot be read to make the fan-out")
                    })?;
                    crate::config::fanout::expand_deferred(&cfg, &t, &tree, &groups)
                        .map_err(|e| e.to_string())
                })
                .await
                .unwrap_or_else(|e| Err(format!("the fan-out task failed: {e}")));
                match made {
                    Ok(list) if list.is_empty() && self.rehearse && !tpl.allow_empty => {
                        self.ui.send(UiEvent::Note(format!(
                            "rehearsal: the stand-in's output gives template `{id}` no item in \
                             {}; with a real agent it fans out over what that agent writes",
                            tpl.for_each.describe()
                        )));
                        self.add_instances(&tpl, list).await
                    }
                    Ok(list) => self.add_instances(&tpl, list).await,
                    Err(why) => self.fail_template(&id, why),
                }
            }
            if !progress {
                break;
            }
            changed = true;
        }
        changed
    }

    fn fail_template(&mut self, id: &str, why: String) {
        self.waiting_templates.retain(|t| t.stream.id != id);
        let msg = format!("the fan-out of template `{id}` was not made: {why}");
        self.event("fanout", None, &msg);
        self.ui.send(UiEvent::Note(msg));
        self.failed_templates.insert(id.to_string(), why);
    }

    /// Gives the instances of `tpl` their slots (state from an earlier run
    /// where there is one), turns dependencies on the template into
    /// dependencies on them, and orders the swarm again.
    async fn add_instances(&mut self, tpl: &Template, list: Vec<StreamConfig>) {
        let tid = tpl.stream.id.to_string();
        self.waiting_templates.retain(|t| t.stream.id != tid);
        let ids: Vec<String> = list.iter().map(|s| s.id.to_string()).collect();
        let mut adopted = Vec::new();
        for s in list {
            let id = s.id.to_string();
            let st = match self.parked.remove(&id) {
                Some(st) => {
                    adopted.push(id.clone());
                    st
                }
                None => {
                    let store = self.store.clone();
                    let idc = id.clone();
                    match tokio::task::spawn_blocking(move || door::create(&store, &idc)).await {
                        Ok(Ok(st)) => st,
                        Ok(Err(e)) => {
                            self.fail_template(
                                &tid,
                                format!("the state of `{id}` cannot be created: {e:#}"),
                            );
                            return;
                        }
                        Err(e) => {
                            self.fail_template(&tid, format!("creating the state of `{id}`: {e}"));
                            return;
                        }
                    }
                }
            };
            self.cfg.streams.push(s.clone());
            self.slots.insert(id, Slot::new(s, st));
        }
        self.groups.insert(tid.clone(), ids.clone());
        // Whoever waited for the template now waits for its instances.
        let swap = |deps: &mut Vec<String>| {
            if deps.contains(&tid) {
                let mut next = Vec::new();
                for d in deps.drain(..) {
                    let add = if d == tid { ids.clone() } else { vec![d] };
                    for x in add {
                        if !next.contains(&x) {
                            next.push(x);
                        }
                    }
                }
                *deps = next;
            }
        };
        for s in &mut self.cfg.streams {
            swap(&mut s.depends_on);
        }
        for slot in self.slots.values_mut() {
            swap(&mut slot.cfg.depends_on);
        }
        self.order = crate::plan::topo_order(&self.cfg.streams)
            .unwrap_or_else(|_| self.cfg.streams.iter().map(|s| s.id.to_string()).collect())
            .into();
        self.start_order = crate::plan::start_order_spread(
            &self.cfg.streams,
            self.remote.as_ref().map(|r| r.me.machine.as_str()),
        )
        .into();

        let dropped: Vec<String> = self
            .parked
            .keys()
            .filter(|id| is_instance_of(id, tpl))
            .cloned()
            .collect();
        for id in dropped {
            self.parked.remove(&id);
            let msg = format!(
                "{id} is dropped: its item is no longer in {} of template `{tid}` (its state and \
                 history are kept)",
                tpl.for_each.describe()
            );
            self.ui.send(UiEvent::Note(msg));
        }
        let msg = format!(
            "template `{tid}` made {} instance(s) from {}: {}",
            ids.len(),
            tpl.for_each.describe(),
            if ids.is_empty() {
                "none (allow_empty)".to_string()
            } else {
                ids.join(", ")
            }
        );
        self.event("fanout", None, &msg);
        self.ui.send(UiEvent::Note(msg));
        self.ui.send(UiEvent::Group {
            template: tid.clone(),
            ids: ids.clone(),
            added: true,
        });
        if !adopted.is_empty() {
            self.clear_leftover_locks(&adopted).await;
            self.normalize_streams(&adopted).await;
        }
        self.show_states(&ids);
    }
}
