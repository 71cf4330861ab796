//! The summary printed when a run ends, and its exit code.

use super::*;

impl Dispatcher {
    // ----- the end ----------------------------------------------------------

    /// 0 when every stream merged; 130 when a stop request (a signal, a
    /// Ctrl-C, STOP) ended the run before that; 1 when it ran to its end
    /// with streams left unmerged.
    pub(super) fn summary(&self) -> i32 {
        if self.interrupting {
            return 130;
        }
        if self.slots.values().all(|s| s.st.status == Status::Merged) {
            0
        } else if self.draining {
            130
        } else {
            1
        }
    }

    pub(super) fn summary_text(&self) -> String {
        let mut by: BTreeMap<Status, Vec<&Slot>> = BTreeMap::new();
        for id in self.order.iter() {
            let s = &self.slots[id];
            by.entry(s.st.status).or_default().push(s);
        }
        let count = |st: Status| by.get(&st).map(|v| v.len()).unwrap_or(0);
        let mut out = String::new();
        out.push_str(&format!(
            "\n{}{} of {} streams merged into {}",
            if self.rehearse { "rehearsal: " } else { "" },
            count(Status::Merged),
            self.slots.len(),
            self.target
        ));
        let others: Vec<String> = by
            .iter()
            .filter(|(k, _)| **k != Status::Merged)
            .map(|(k, v)| format!("{} {}", v.len(), k.as_str().replace('_', " ")))
            .collect();
        if !others.is_empty() {
            out.push_str(&format!(", {}", others.join(", ")));
        }
        out.push_str(&format!("; cost ${:.2}\n", self.total_cost()));
        let logs = self.layout.loki().join("logs");
        for (status, slots) in &by {
            if *status == Status::Merged {
                continue;
            }
            for s in slots {
                let mut line = format!("  {:<12} {:<17}", s.st.id, status.as_str());
                if let Some(r) = &s.st.reason {
                    line.push_str(&format!(" {}", crate::util::one_line(r)));
                } else if *status == Status::Pending {
                    let waiting: Vec<&str> = s
                        .cfg
                        .depends_on
                        .iter()
                        .filter(|d| !self.merged(d))
                        .map(String::as_str)
                        .collect();
                    if !waiting.is_empty() {
                        line.push_str(&format!(" waiting for {}", waiting.join(", ")));
                    }
                }
                out.push_str(&line);
                out.push('\n');
                if self.left_alone.contains(s.st.id.as_str()) {
                    let id = &s.st.id;
                    let why = if *status == Status::Failed {
                        "nothing it reads (its prompt, inputs, loki.toml entry) changed since it \
                         failed"
                    } else {
                        "it waits for streams left alone"
                    };
                    out.push_str(&format!(
                        "  {:<12} left alone: {why}; `loki retry {id}` or `loki run \
                         --retry-failed` runs it again\n",
                        ""
                    ));
                }
                if matches!(
                    status,
                    Status::Failed | Status::Interrupted | Status::Conflicted | Status::Retrying
                ) && s.st.attempt > 0
                {
                    out.push_str(&format!(
                        "  {:<12} logs: {}\n",
                        "",
                        logs.join(&s.st.id).display()
                    ));
                }
            }
        }
        if let Some(u) = &self.usage_ended {
            out.push_str(&format!("usage limit: {u}\n"));
        } else if let Some(w) = &self.usage_wait {
            out.push_str(&format!("usage limit: {}\n", w.message));
        }
        if let Some(a) = &self.auth_failed {
            out.push_str(&format!("paused: {a}\n"));
        } else if self.interrupting {
            out.push_str("interrupted: resume with `loki run`\n");
        } else if self.swarm.paused {
            out.push_str("the swarm is paused: `loki resume`, then `loki run`\n");
        }
        if by.contains_key(&Status::AwaitingApproval) {
            out.push_str("review with `loki show <id>`, then `loki approve <id>` or `loki reject <id> --note \"...\"`\n");
        }
        out
    }
}
