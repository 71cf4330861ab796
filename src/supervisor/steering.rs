//! Signals while the supervisor runs: taken from the watcher, checked for
//! staleness, decided by the machine's `Steer` input, and acknowledged in
//! `events.jsonl` (so a crash before that replays them).

use super::*;

impl Dispatcher {
    pub(super) async fn on_signal(&mut self, taken: Taken) {
        let sig = match taken {
            Taken::Rejected { name, reason } => {
                self.event("signal_rejected", None, &format!("{name}: {reason}"));
                self.ui
                    .send(UiEvent::Note(format!("rejected signal {name}: {reason}")));
                return;
            }
            Taken::Signal(s) => s,
        };
        let label = sig.name.clone();
        match sig.stream.clone() {
            None => self.swarm_signal(&sig).await,
            Some(id) => {
                let Some(slot) = self.slots.get(id.as_str()) else {
                    let known: Vec<&str> = self.order.iter().map(String::as_str).collect();
                    self.reject(
                        &sig,
                        &format!(
                            "unknown stream `{id}`; streams in this swarm: {}",
                            known.join(", ")
                        ),
                    );
                    return;
                };
                if let Some(e) = sig.expected_version {
                    if e < slot.transition_version || e > slot.st.version {
                        let why = format!(
                            "stale: expected version {e}, but stream {id} is at version {} ({} since version {})",
                            slot.st.version, slot.st.status, slot.transition_version
                        );
                        self.reject(&sig, &why);
                        return;
                    }
                }
                let steer = Steer {
                    kind: sig.kind,
                    note: sig.note.clone(),
                    count: sig.count,
                };
                match self.step(&id, Input::Steer(steer)).await {
                    Err(why) => self.reject(&sig, &why.why),
                    Ok(effects) => {
                        // Applied first, then recorded as handled: a crash in
                        // between replays it, and the replay is then stale
                        // or inapplicable (rejected), never applied twice.
                        self.perform(&id, effects).await;
                        let msg = format!(
                            "{label}{}",
                            sig.note
                                .as_ref()
                                .map(|n| format!(": {n}"))
                                .unwrap_or_default()
                        );
                        self.signal_event(Some(&id), &msg, &sig);
                    }
                }
            }
        }
    }

    pub(super) fn reject(&self, sig: &Signal, why: &str) {
        if let Err(e) = self.signals.reject(sig, why) {
            self.ui.send(UiEvent::Note(format!(
                "cannot move signal {} to rejected/: {e:#}",
                sig.name
            )));
        }
        self.event(
            "signal_rejected",
            sig.stream.as_deref(),
            &format!("{}: {why}", sig.name),
        );
        self.ui.send(UiEvent::Note(format!(
            "rejected signal {}: {why}",
            sig.name
        )));
    }

    pub(super) async fn swarm_signal(&mut self, sig: &Signal) {
        let store = self.store.clone();
        let v = self.swarm.version;
        if let Some(e) = sig.expected_version.filter(|e| *e != v) {
            self.reject(
                sig,
                &format!("stale: expected swarm version {e}, but swarm.json is at version {v}"),
            );
            return;
        }
        match sig.kind {
            Kind::Pause | Kind::Resume => {
                let pause = sig.kind == Kind::Pause;
                let input = if pause {
                    SwarmInput::Pause {
                        reason: sig.note.clone().unwrap_or_else(|| "paused by PAUSE".into()),
                    }
                } else {
                    SwarmInput::Resume
                };
                let next = match machine::handle_swarm(&self.swarm, input) {
                    Ok(n) => n,
                    Err(why) => {
                        self.reject(sig, &why.why);
                        return;
                    }
                };
                match tokio::task::spawn_blocking(move || {
                    door::commit_swarm(&store, v, &next, None)
                })
                .await
                {
                    Ok(Ok(s)) => self.swarm = s,
                    Ok(Err(e)) => {
                        self.reject(sig, &format!("cannot write swarm state: {e}"));
                        return;
                    }
                    Err(e) => {
                        self.reject(sig, &format!("cannot write swarm state: {e}"));
                        return;
                    }
                }
                let msg = if pause {
                    "swarm paused: no new attempts until RESUME (running ones go on)"
                } else {
                    "swarm resumed"
                };
                self.signal_event(None, &format!("{}: {msg}", sig.name), sig);
                self.ui.send(UiEvent::Note(msg.into()));
            }
            Kind::Stop => {
                self.draining = true;
                let msg =
                    "STOP: starting nothing new; the supervisor exits when running attempts finish";
                self.signal_event(None, &format!("{}: {msg}", sig.name), sig);
                self.ui.send(UiEvent::Note(msg.into()));
            }
            _ => self.reject(sig, &format!("{} needs a stream id", sig.kind.as_str())),
        }
    }
}
