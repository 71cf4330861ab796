//! What the user sees while a swarm runs. The UI consumes events from the
//! dispatcher over a channel and decides nothing; a slow terminal can never
//! slow the supervisor (the channel is unbounded and redraws are rate-bounded
//! by indicatif).
//!
//! Two renderers: live bars (indicatif) when stdout is a terminal, plain
//! timestamped lines (one per event, no control characters) otherwise or with
//! `--plain`.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::mpsc;

use crate::state::Status;

/// What the dispatcher tells the UI.
#[derive(Debug, Clone, PartialEq)]
pub enum UiEvent {
    Start {
        total: usize,
        target: String,
        parallel: usize,
        rehearse: bool,
    },
    Transition {
        id: String,
        attempt: u32,
        from: Status,
        to: Status,
        reason: Option<String>,
    },
    Activity {
        id: String,
        text: String,
    },
    Progress {
        id: String,
        turns: u32,
        cost_usd: f64,
    },
    /// Supervisor messages: Ctrl-C, rate limits, budget, signals.
    Note(String),
    Finish,
}

/// Handle the dispatcher sends to.
#[derive(Clone)]
pub struct Ui {
    tx: mpsc::UnboundedSender<UiEvent>,
}

impl Ui {
    pub fn send(&self, ev: UiEvent) {
        let _ = self.tx.send(ev);
    }
}

/// Which renderer to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Live,
    Plain,
    Quiet,
}

impl Mode {
    /// Live on a terminal unless `plain`; plain otherwise.
    pub fn detect(plain: bool) -> Mode {
        if plain
            || !std::io::stdout().is_terminal()
            || std::env::var_os("TERM").is_some_and(|t| t == "dumb")
        {
            Mode::Plain
        } else {
            Mode::Live
        }
    }
}

/// Starts the renderer task; it ends after `UiEvent::Finish`.
pub fn start(mode: Mode) -> (Ui, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let handle = tokio::spawn(async move {
        match mode {
            Mode::Live => live(rx).await,
            Mode::Plain => plain(rx, &mut std::io::stdout()).await,
            Mode::Quiet => {
                let mut rx = rx;
                while let Some(ev) = rx.recv().await {
                    if ev == UiEvent::Finish {
                        break;
                    }
                }
            }
        }
    });
    (Ui { tx }, handle)
}

/// One plain line for an event (without the time stamp); `None` for events
/// that plain mode does not print (per-turn progress).
pub fn plain_line(ev: &UiEvent) -> Option<String> {
    match ev {
        UiEvent::Start {
            total,
            target,
            parallel,
            rehearse,
        } => Some(format!(
            "{}swarm of {total} streams into {target}, {parallel} at a time",
            if *rehearse { "rehearsal: " } else { "" }
        )),
        UiEvent::Transition {
            id,
            attempt,
            from: _,
            to,
            reason,
        } => {
            let mut s = format!("{id:<12} {:<17}", to.as_str());
            if *attempt > 0
                && matches!(
                    to,
                    Status::Running | Status::Preparing | Status::Checking | Status::Retrying
                )
            {
                s.push_str(&format!(" attempt {attempt}"));
            }
            if let Some(r) = reason {
                s.push_str(&format!(" {}", clean(r)));
            }
            Some(s.trim_end().to_string())
        }
        UiEvent::Activity { id, text } => {
            Some(format!("{id:<12} {:<17} {}", "activity", clean(text)))
        }
        UiEvent::Progress { .. } => None,
        UiEvent::Note(n) => Some(format!("{:<12} {}", "loki", clean(n))),
        UiEvent::Finish => None,
    }
}

/// No control characters in plain output, one line per event.
fn clean(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_string()
}

async fn plain(mut rx: mpsc::UnboundedReceiver<UiEvent>, out: &mut impl Write) {
    // Activity lines are rate-limited per stream so a chatty agent cannot
    // flood a log file.
    let mut last_activity: BTreeMap<String, Instant> = BTreeMap::new();
    while let Some(ev) = rx.recv().await {
        if ev == UiEvent::Finish {
            break;
        }
        if let UiEvent::Activity { id, .. } = &ev {
            let now = Instant::now();
            if let Some(t) = last_activity.get(id) {
                if now.duration_since(*t) < Duration::from_secs(2) {
                    continue;
                }
            }
            last_activity.insert(id.clone(), now);
        }
        if let Some(line) = plain_line(&ev) {
            let ts = chrono::Local::now().format("%H:%M:%S");
            let _ = writeln!(out, "{ts} {line}");
            let _ = out.flush();
        }
    }
}

struct Row {
    bar: ProgressBar,
    attempt: u32,
    activity: String,
    turns: u32,
    cost: f64,
    since: Instant,
}

async fn live(mut rx: mpsc::UnboundedReceiver<UiEvent>) {
    let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stdout_with_hz(4));
    let color = std::env::var_os("NO_COLOR").is_none();
    let overall_style = ProgressStyle::with_template(if color {
        "{prefix:.bold} [{bar:30.cyan/blue}] {pos}/{len} merged  {msg}"
    } else {
        "{prefix} [{bar:30}] {pos}/{len} merged  {msg}"
    })
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    let row_style = ProgressStyle::with_template(if color {
        "  {spinner:.green} {prefix:<12} {msg}"
    } else {
        "  {spinner} {prefix:<12} {msg}"
    })
    .unwrap_or_else(|_| ProgressStyle::default_spinner());
    let overall = multi.add(ProgressBar::new(0));
    overall.set_style(overall_style);
    overall.set_prefix("loki");
    overall.enable_steady_tick(Duration::from_millis(500));
    let started = Instant::now();
    let mut rows: BTreeMap<String, Row> = BTreeMap::new();
    let mut statuses: BTreeMap<String, Status> = BTreeMap::new();
    let mut costs: BTreeMap<String, f64> = BTreeMap::new();
    let mut total = 0usize;

    while let Some(ev) = rx.recv().await {
        match &ev {
            UiEvent::Finish => break,
            UiEvent::Start { total: t, .. } => {
                total = *t;
                overall.set_length(*t as u64);
                if let Some(l) = plain_line(&ev) {
                    let _ = multi.println(l);
                }
            }
            UiEvent::Transition {
                id,
                attempt,
                to,
                reason,
                ..
            } => {
                statuses.insert(id.clone(), *to);
                let active = matches!(
                    to,
                    Status::Preparing
                        | Status::Running
                        | Status::Checking
                        | Status::Merging
                        | Status::Retrying
                );
                if active {
                    let row = rows.entry(id.clone()).or_insert_with(|| {
                        let bar = multi.add(ProgressBar::new_spinner());
                        bar.set_style(row_style.clone());
                        bar.set_prefix(id.clone());
                        bar.enable_steady_tick(Duration::from_millis(250));
                        Row {
                            bar,
                            attempt: *attempt,
                            activity: String::new(),
                            turns: 0,
                            cost: 0.0,
                            since: Instant::now(),
                        }
                    });
                    if row.attempt != *attempt {
                        row.attempt = *attempt;
                        row.since = Instant::now();
                    }
                    row.activity = match to {
                        Status::Running => "starting".into(),
                        other => other.as_str().replace('_', " "),
                    };
                    render_row(row);
                } else {
                    if let Some(row) = rows.remove(id) {
                        row.bar.finish_and_clear();
                        multi.remove(&row.bar);
                    }
                    if to.is_terminal()
                        || matches!(to, Status::AwaitingApproval | Status::Interrupted)
                    {
                        let mark = match to {
                            Status::Merged => "✓",
                            Status::AwaitingApproval | Status::Interrupted => "…",
                            _ => "✗",
                        };
                        let mut line = format!("{mark} {id:<12} {}", to.as_str());
                        if let Some(c) = costs.get(id) {
                            line.push_str(&format!("  ${c:.2}"));
                        }
                        if let Some(r) = reason {
                            line.push_str(&format!("  {}", clean(r)));
                        }
                        let _ = multi.println(line);
                    }
                }
            }
            UiEvent::Activity { id, text } => {
                if let Some(row) = rows.get_mut(id) {
                    row.activity = clean(text);
                    render_row(row);
                }
            }
            UiEvent::Progress {
                id,
                turns,
                cost_usd,
            } => {
                costs.insert(id.clone(), *cost_usd);
                if let Some(row) = rows.get_mut(id) {
                    row.turns = *turns;
                    row.cost = *cost_usd;
                    render_row(row);
                }
            }
            UiEvent::Note(n) => {
                let _ = multi.println(format!("loki: {}", clean(n)));
            }
        }
        let merged = statuses.values().filter(|s| **s == Status::Merged).count();
        let running = statuses
            .values()
            .filter(|s| {
                matches!(
                    s,
                    Status::Preparing | Status::Running | Status::Checking | Status::Merging
                )
            })
            .count();
        let failed = statuses
            .values()
            .filter(|s| matches!(s, Status::Failed | Status::Blocked | Status::Conflicted))
            .count();
        let waiting = total.saturating_sub(merged + running + failed);
        let cost: f64 = costs.values().sum::<f64>().max(0.0);
        overall.set_position(merged as u64);
        overall.set_message(format!(
            "{running} running  {waiting} waiting  {failed} failed  ${cost:.2}  {}",
            crate::util::fmt_duration(started.elapsed())
        ));
    }
    for (_, row) in rows {
        row.bar.finish_and_clear();
    }
    overall.finish_and_clear();
}

fn render_row(row: &Row) {
    let mut msg = format!("attempt {}  {}", row.attempt, row.activity);
    if row.turns > 0 {
        msg.push_str(&format!("  {} turns", row.turns));
    }
    if row.cost > 0.0 {
        msg.push_str(&format!("  ${:.2}", row.cost));
    }
    msg.push_str(&format!(
        "  {}",
        crate::util::fmt_duration(row.since.elapsed())
    ));
    row.bar.set_message(msg);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The exact plain lines (without the time stamp) for a scripted run.
    #[test]
    fn plain_lines_for_a_scripted_sequence() {
        let t = |id: &str, attempt: u32, from: Status, to: Status, reason: Option<&str>| {
            UiEvent::Transition {
                id: id.into(),
                attempt,
                from,
                to,
                reason: reason.map(str::to_string),
            }
        };
        let events = vec![
            UiEvent::Start {
                total: 2,
                target: "main".into(),
                parallel: 4,
                rehearse: false,
            },
            t("ch01", 1, Status::Pending, Status::Preparing, None),
            t("ch01", 1, Status::Preparing, Status::Running, None),
            UiEvent::Activity {
                id: "ch01".into(),
                text: "writing chapters/ch01.md".into(),
            },
            UiEvent::Progress {
                id: "ch01".into(),
                turns: 3,
                cost_usd: 0.12,
            },
            t("ch01", 1, Status::Running, Status::Checking, None),
            t(
                "ch01",
                1,
                Status::Checking,
                Status::Retrying,
                Some("FAIL: forbid `dragon` in chapters/ch01.md:3 (2 attempt(s) left)"),
            ),
            t("ch01", 2, Status::Retrying, Status::Preparing, None),
            t("ch01", 2, Status::Checking, Status::Merging, None),
            t("ch01", 2, Status::Merging, Status::Merged, None),
            t(
                "ch02",
                0,
                Status::Pending,
                Status::Blocked,
                Some("dependency ch01 is failed"),
            ),
            UiEvent::Note("Ctrl-C: stopping".into()),
            UiEvent::Finish,
        ];
        let lines: Vec<String> = events.iter().filter_map(plain_line).collect();
        assert_eq!(
            lines,
            vec![
                "swarm of 2 streams into main, 4 at a time",
                "ch01         preparing         attempt 1",
                "ch01         running           attempt 1",
                "ch01         activity          writing chapters/ch01.md",
                "ch01         checking          attempt 1",
                "ch01         retrying          attempt 1 FAIL: forbid `dragon` in chapters/ch01.md:3 (2 attempt(s) left)",
                "ch01         preparing         attempt 2",
                "ch01         merging",
                "ch01         merged",
                "ch02         blocked           dependency ch01 is failed",
                "loki         Ctrl-C: stopping",
            ]
        );
    }

    #[test]
    fn plain_lines_have_no_control_characters() {
        let ev = UiEvent::Transition {
            id: "ch01".into(),
            attempt: 2,
            from: Status::Checking,
            to: Status::Retrying,
            reason: Some("forbid `dragon`\non line 3\x1b[31m".into()),
        };
        let line = plain_line(&ev).unwrap();
        assert!(!line.chars().any(|c| c.is_control()), "{line:?}");
        assert!(line.starts_with("ch01"));
    }
}
