//! What the user sees while a swarm runs. The UI consumes events from the
//! dispatcher over a channel and decides nothing; a slow terminal can never
//! slow the supervisor (the channel is unbounded and redraws are rate-bounded
//! by indicatif; rows refresh on one 1 s tick, not a timer each).
//!
//! Two renderers: live bars (indicatif) when stdout is a terminal, plain
//! timestamped lines (no control characters) otherwise or with `--plain`.
//! Both show the same things: per stream its attempt, activity, turns and
//! cost; overall the counts by state and the cost (plain prints them each
//! time a stream ends).

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::mpsc;

use crate::model::Status;

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
    /// The instances of a template: known at the start (`added` false) or
    /// made while the run goes on (`added`: they join the total).
    Group {
        template: String,
        ids: Vec<String>,
        added: bool,
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

/// The line announcing the swarm (both renderers print it).
fn start_line(total: usize, target: &str, parallel: usize, rehearse: bool) -> String {
    format!(
        "{}swarm of {total} streams into {target}, {parallel} at a time",
        if rehearse { "rehearsal: " } else { "" }
    )
}

/// The supervisor is at work on the stream: a row in the live view, and
/// `running` in the counts (a retry is work in progress, not waiting).
fn in_progress(s: Status) -> bool {
    s.is_active() || s == Status::Retrying
}

/// A stream is done for this run: nothing more happens without a human.
fn finished(to: Status) -> bool {
    to.is_terminal() || matches!(to, Status::AwaitingApproval | Status::Interrupted)
}

/// What one stream has shown so far.
#[derive(Debug, Default)]
struct Seen {
    status: Status,
    attempt: u32,
    /// Turns of the current attempt.
    turns: u32,
    /// Cost over all attempts, once the agent has reported one.
    cost: Option<f64>,
}

/// Both renderers' memory of the swarm: each stream's status, attempt,
/// turns and cost, from which the overall counts are made.
#[derive(Debug, Default)]
struct Tally {
    total: usize,
    streams: BTreeMap<String, Seen>,
    /// Instance id → its template, and each template's instances.
    group_of: BTreeMap<String, String>,
    groups: BTreeMap<String, Vec<String>>,
}

/// The overall counts.
#[derive(Debug, Default, PartialEq)]
struct Counts {
    merged: usize,
    running: usize,
    waiting: usize,
    failed: usize,
    awaiting_approval: usize,
    cancelled: usize,
    interrupted: usize,
    /// Apart from `failed`, as the run's summary counts them.
    blocked: usize,
    conflicted: usize,
    cost: f64,
}

impl Tally {
    fn apply(&mut self, ev: &UiEvent) {
        match ev {
            UiEvent::Start { total, .. } => self.total = *total,
            UiEvent::Group {
                template,
                ids,
                added,
            } => {
                if *added {
                    self.total += ids.len();
                }
                for id in ids {
                    self.group_of.insert(id.clone(), template.clone());
                }
                self.groups.insert(template.clone(), ids.clone());
            }
            UiEvent::Transition {
                id, attempt, to, ..
            } => {
                let s = self.streams.entry(id.clone()).or_default();
                if s.attempt != *attempt {
                    s.attempt = *attempt;
                    s.turns = 0;
                }
                s.status = *to;
            }
            UiEvent::Progress {
                id,
                turns,
                cost_usd,
            } => {
                let s = self.streams.entry(id.clone()).or_default();
                s.turns = *turns;
                s.cost = Some(cost_usd.max(0.0));
            }
            UiEvent::Activity { .. } | UiEvent::Note(_) | UiEvent::Finish => {}
        }
    }

    fn counts(&self) -> Counts {
        let mut c = Counts::default();
        for s in self.streams.values() {
            match s.status {
                Status::Merged => c.merged += 1,
                st if in_progress(st) => c.running += 1,
                Status::Failed => c.failed += 1,
                Status::Blocked => c.blocked += 1,
                Status::Conflicted => c.conflicted += 1,
                Status::AwaitingApproval => c.awaiting_approval += 1,
                Status::Cancelled => c.cancelled += 1,
                Status::Interrupted => c.interrupted += 1,
                _ => {}
            }
            c.cost += s.cost.unwrap_or(0.0);
        }
        c.waiting = self.total().saturating_sub(
            c.merged
                + c.running
                + c.failed
                + c.blocked
                + c.conflicted
                + c.awaiting_approval
                + c.cancelled
                + c.interrupted,
        );
        c
    }

    /// Streams in the swarm (those seen, if the start was missed).
    fn total(&self) -> usize {
        self.total.max(self.streams.len())
    }

    /// `2 running  1 waiting  0 failed  1 awaiting approval  $0.42`: the
    /// rarer states only when some stream is in them.
    fn summary(&self) -> String {
        let c = self.counts();
        let mut s = format!(
            "{} running  {} waiting  {} failed",
            c.running, c.waiting, c.failed
        );
        for (n, what) in [
            (c.blocked, "blocked"),
            (c.conflicted, "conflicted"),
            (c.awaiting_approval, "awaiting approval"),
            (c.cancelled, "cancelled"),
            (c.interrupted, "interrupted"),
        ] {
            if n > 0 {
                s.push_str(&format!("  {n} {what}"));
            }
        }
        s.push_str(&format!("  ${:.2}", c.cost));
        s
    }

    /// `3 turns`, `$0.12`: what is known of a stream's work (its current
    /// attempt's turns, its cost over all attempts).
    fn usage(&self, id: &str) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(s) = self.streams.get(id) {
            match s.turns {
                0 => {}
                1 => out.push("1 turn".into()),
                n => out.push(format!("{n} turns")),
            }
            if let Some(c) = s.cost.filter(|c| *c > 0.0) {
                out.push(format!("${c:.2}"));
            }
        }
        out
    }

    fn cost(&self, id: &str) -> Option<f64> {
        self.streams.get(id).and_then(|s| s.cost)
    }

    /// `(char 2/3 merged)` for an instance of a template: the step's
    /// progress, said when one of its instances ends.
    fn step_progress(&self, id: &str) -> Option<String> {
        let t = self.group_of.get(id)?;
        let ids = self.groups.get(t)?;
        let merged = ids
            .iter()
            .filter(|i| {
                self.streams
                    .get(*i)
                    .is_some_and(|s| s.status == Status::Merged)
            })
            .count();
        Some(format!("({t} {merged}/{} merged)", ids.len()))
    }
}

/// Plain mode: one line per event (without the time stamp), carrying what
/// the live view shows. Activity lines are rate-limited per stream so a
/// chatty agent cannot flood a log file.
#[derive(Debug, Default)]
pub struct PlainLines {
    tally: Tally,
    last_activity: BTreeMap<String, Instant>,
}

/// At most one activity line per stream in this long.
const ACTIVITY_EVERY: Duration = Duration::from_secs(2);

impl PlainLines {
    /// The lines for `ev`, which arrived at `now`.
    pub fn lines(&mut self, ev: &UiEvent, now: Instant) -> Vec<String> {
        self.tally.apply(ev);
        match ev {
            UiEvent::Start {
                total,
                target,
                parallel,
                rehearse,
            } => vec![start_line(*total, target, *parallel, *rehearse)],
            UiEvent::Transition {
                id,
                attempt,
                from,
                to,
                reason,
            } => {
                let mut s = format!("{id:<12} {:<17}", to.as_str());
                if *attempt > 0
                    && matches!(
                        to,
                        Status::Running
                            | Status::Preparing
                            | Status::Checking
                            | Status::Validating
                            | Status::Retrying
                    )
                {
                    s.push_str(&format!(" attempt {attempt}"));
                }
                let done = finished(*to);
                if let Some(c) = self.tally.cost(id).filter(|_| done) {
                    s.push_str(&format!(" ${c:.2}"));
                }
                if let Some(r) = reason {
                    s.push_str(&format!(" {}", clean(r)));
                }
                if let Some(p) = self.tally.step_progress(id).filter(|_| done && from != to) {
                    s.push_str(&format!(" {p}"));
                }
                let mut out = vec![s.trim_end().to_string()];
                // A stream that ends now (not one replayed at the start of
                // a run) moves the overall counts.
                if done && from != to {
                    out.push(format!(
                        "{:<12} {}/{} merged  {}",
                        "loki",
                        self.tally.counts().merged,
                        self.tally.total(),
                        self.tally.summary()
                    ));
                }
                out
            }
            UiEvent::Activity { id, text } => {
                if let Some(t) = self.last_activity.get(id) {
                    if now.saturating_duration_since(*t) < ACTIVITY_EVERY {
                        return Vec::new();
                    }
                }
                self.last_activity.insert(id.clone(), now);
                let mut s = format!("{id:<12} {:<17} {}", "activity", clean(text));
                let usage = self.tally.usage(id);
                if !usage.is_empty() {
                    s.push_str(&format!("  ({})", usage.join(", ")));
                }
                vec![s]
            }
            UiEvent::Note(n) => vec![format!("{:<12} {}", "loki", clean(n))],
            UiEvent::Progress { .. } | UiEvent::Group { .. } | UiEvent::Finish => Vec::new(),
        }
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
    let mut lines = PlainLines::default();
    while let Some(ev) = rx.recv().await {
        if ev == UiEvent::Finish {
            break;
        }
        let got = lines.lines(&ev, Instant::now());
        if got.is_empty() {
            continue;
        }
        let ts = chrono::Local::now().format("%H:%M:%S");
        for line in got {
            let _ = writeln!(out, "{ts} {line}");
        }
        let _ = out.flush();
    }
}

/// How often the live view refreshes durations while no event comes (a long
/// tool call sends none). Rows are redrawn on this tick only, never by a
/// timer of their own, so a 200-stream swarm costs one pass a second.
const LIVE_TICK: Duration = Duration::from_secs(1);

struct Row {
    bar: ProgressBar,
    attempt: u32,
    activity: String,
    /// When the current attempt's row appeared.
    since: Instant,
}

/// The live view: the overall bar and one spinner row per active stream.
struct Live {
    multi: MultiProgress,
    overall: ProgressBar,
    row_style: ProgressStyle,
    rows: BTreeMap<String, Row>,
    tally: Tally,
    started: Instant,
}

impl Live {
    fn new(target: ProgressDrawTarget) -> Live {
        let multi = MultiProgress::with_draw_target(target);
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
        // Drawn from `Start` on, when the number of streams is known (a bar
        // of 0 streams would show full).
        let overall = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::hidden());
        overall.set_style(overall_style);
        overall.set_prefix("loki");
        Live {
            multi,
            overall,
            row_style,
            rows: BTreeMap::new(),
            tally: Tally::default(),
            started: Instant::now(),
        }
    }

    fn event(&mut self, ev: &UiEvent) {
        self.tally.apply(ev);
        match ev {
            UiEvent::Finish => {}
            UiEvent::Group { .. } => {
                self.overall.set_length(self.tally.total() as u64);
                self.overall_line(Instant::now());
            }
            UiEvent::Start {
                total,
                target,
                parallel,
                rehearse,
            } => {
                self.overall.set_length(*total as u64);
                let _ = self
                    .multi
                    .println(start_line(*total, target, *parallel, *rehearse));
                self.overall = self.multi.insert(0, self.overall.clone());
                // One timer for the whole view: it redraws what the 1 s tick
                // (and events) changed but the draw rate limit held back.
                self.overall.enable_steady_tick(Duration::from_millis(500));
            }
            UiEvent::Transition {
                id,
                attempt,
                to,
                reason,
                ..
            } => {
                if in_progress(*to) {
                    let row = self.rows.entry(id.clone()).or_insert_with(|| {
                        let bar = self.multi.add(ProgressBar::new_spinner());
                        bar.set_style(self.row_style.clone());
                        bar.set_prefix(id.clone());
                        Row {
                            bar,
                            attempt: *attempt,
                            activity: String::new(),
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
                    render_row(id, row, &self.tally, Instant::now());
                } else {
                    if let Some(row) = self.rows.remove(id) {
                        row.bar.finish_and_clear();
                        self.multi.remove(&row.bar);
                    }
                    if finished(*to) {
                        let mark = match to {
                            Status::Merged => "✓",
                            Status::AwaitingApproval | Status::Interrupted => "…",
                            _ => "✗",
                        };
                        let mut line = format!("{mark} {id:<12} {}", to.as_str());
                        if let Some(c) = self.tally.cost(id) {
                            line.push_str(&format!("  ${c:.2}"));
                        }
                        if let Some(r) = reason {
                            line.push_str(&format!("  {}", clean(r)));
                        }
                        if let Some(p) = self.tally.step_progress(id) {
                            line.push_str(&format!("  {p}"));
                        }
                        let _ = self.multi.println(line);
                    }
                }
                self.overall_line(Instant::now());
            }
            UiEvent::Activity { id, text } => {
                if let Some(row) = self.rows.get_mut(id) {
                    row.activity = clean(text);
                    render_row(id, row, &self.tally, Instant::now());
                }
            }
            UiEvent::Progress { id, .. } => {
                if let Some(row) = self.rows.get(id) {
                    render_row(id, row, &self.tally, Instant::now());
                }
            }
            UiEvent::Note(n) => {
                let _ = self.multi.println(format!("loki: {}", clean(n)));
            }
        }
    }

    /// Durations move on: every row and the overall line, redrawn at `now`.
    fn tick(&mut self, now: Instant) {
        for (id, row) in &self.rows {
            render_row(id, row, &self.tally, now);
            row.bar.tick();
        }
        self.overall_line(now);
    }

    fn overall_line(&self, now: Instant) {
        self.overall.set_position(self.tally.counts().merged as u64);
        self.overall.set_message(format!(
            "{}  {}",
            self.tally.summary(),
            crate::util::fmt_duration(now.saturating_duration_since(self.started))
        ));
    }

    fn finish(self) {
        for (_, row) in self.rows {
            row.bar.finish_and_clear();
        }
        self.overall.finish_and_clear();
    }
}

/// Feeds events to the live view, and ticks it every `every` so durations
/// advance between events; returns at `UiEvent::Finish`.
async fn drive_live(rx: &mut mpsc::UnboundedReceiver<UiEvent>, view: &mut Live, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            ev = rx.recv() => match ev {
                None | Some(UiEvent::Finish) => break,
                Some(ev) => view.event(&ev),
            },
            _ = tick.tick() => view.tick(Instant::now()),
        }
    }
}

async fn live(mut rx: mpsc::UnboundedReceiver<UiEvent>) {
    let mut view = Live::new(ProgressDrawTarget::stdout_with_hz(4));
    drive_live(&mut rx, &mut view, LIVE_TICK).await;
    view.finish();
}

fn render_row(id: &str, row: &Row, tally: &Tally, now: Instant) {
    let mut msg = format!("attempt {}  {}", row.attempt, row.activity);
    for u in tally.usage(id) {
        msg.push_str(&format!("  {u}"));
    }
    msg.push_str(&format!(
        "  {}",
        crate::util::fmt_duration(now.saturating_duration_since(row.since))
    ));
    row.bar.set_message(msg);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(id: &str, attempt: u32, from: Status, to: Status, reason: Option<&str>) -> UiEvent {
        UiEvent::Transition {
            id: id.into(),
            attempt,
            from,
            to,
            reason: reason.map(str::to_string),
        }
    }

    fn activity(id: &str, text: &str) -> UiEvent {
        UiEvent::Activity {
            id: id.into(),
            text: text.into(),
        }
    }

    /// The exact plain lines (without the time stamp) for a scripted run;
    /// each event comes at the given second.
    #[test]
    fn plain_lines_for_a_scripted_sequence() {
        let events = vec![
            (
                0,
                UiEvent::Start {
                    total: 2,
                    target: "main".into(),
                    parallel: 4,
                    rehearse: false,
                },
            ),
            (0, t("ch01", 1, Status::Pending, Status::Preparing, None)),
            (0, t("ch01", 1, Status::Preparing, Status::Running, None)),
            (1, activity("ch01", "writing chapters/ch01.md")),
            (
                2,
                UiEvent::Progress {
                    id: "ch01".into(),
                    turns: 3,
                    cost_usd: 0.12,
                },
            ),
            // Within 2 s of the last activity line: held back.
            (2, activity("ch01", "reading outline.md")),
            (4, activity("ch01", "running wc -w")),
            (5, t("ch01", 1, Status::Running, Status::Checking, None)),
            (
                5,
                t(
                    "ch01",
                    1,
                    Status::Checking,
                    Status::Retrying,
                    Some("FAIL: forbid `dragon` in chapters/ch01.md:3 (2 attempt(s) left)"),
                ),
            ),
            (6, t("ch01", 2, Status::Retrying, Status::Preparing, None)),
            (6, t("ch01", 2, Status::Preparing, Status::Running, None)),
            (
                7,
                UiEvent::Progress {
                    id: "ch01".into(),
                    turns: 1,
                    cost_usd: 0.2,
                },
            ),
            (8, activity("ch01", "writing chapters/ch01.md")),
            (9, t("ch01", 2, Status::Checking, Status::Merging, None)),
            (9, t("ch01", 2, Status::Merging, Status::Merged, None)),
            (
                9,
                t(
                    "ch02",
                    0,
                    Status::Pending,
                    Status::Blocked,
                    Some("dependency ch01 is failed"),
                ),
            ),
            (10, UiEvent::Note("Ctrl-C: stopping".into())),
            (10, UiEvent::Finish),
        ];
        let t0 = Instant::now();
        let mut plain = PlainLines::default();
        let lines: Vec<String> = events
            .iter()
            .flat_map(|(at, ev)| plain.lines(ev, t0 + Duration::from_secs(*at)))
            .collect();
        assert_eq!(
            lines,
            vec![
                "swarm of 2 streams into main, 4 at a time",
                "ch01         preparing         attempt 1",
                "ch01         running           attempt 1",
                "ch01         activity          writing chapters/ch01.md",
                "ch01         activity          running wc -w  (3 turns, $0.12)",
                "ch01         checking          attempt 1",
                "ch01         retrying          attempt 1 FAIL: forbid `dragon` in chapters/ch01.md:3 (2 attempt(s) left)",
                "ch01         preparing         attempt 2",
                "ch01         running           attempt 2",
                "ch01         activity          writing chapters/ch01.md  (1 turn, $0.20)",
                "ch01         merging",
                "ch01         merged            $0.20",
                "loki         1/2 merged  0 running  1 waiting  0 failed  $0.20",
                "ch02         blocked           dependency ch01 is failed",
                "loki         1/2 merged  0 running  0 waiting  0 failed  1 blocked  $0.20",
                "loki         Ctrl-C: stopping",
            ]
        );
    }

    #[test]
    fn plain_lines_have_no_control_characters() {
        let ev = t(
            "ch01",
            2,
            Status::Checking,
            Status::Retrying,
            Some("forbid `dragon`\non line 3\x1b[31m"),
        );
        let lines = PlainLines::default().lines(&ev, Instant::now());
        assert_eq!(lines.len(), 1);
        assert!(!lines[0].chars().any(|c| c.is_control()), "{lines:?}");
        assert!(lines[0].starts_with("ch01"));
    }

    /// States replayed at the start of a run are not news: no counts line.
    #[test]
    fn replayed_states_print_no_counts() {
        let mut plain = PlainLines::default();
        let now = Instant::now();
        let lines = plain.lines(&t("ch01", 1, Status::Merged, Status::Merged, None), now);
        assert_eq!(lines, vec!["ch01         merged"]);
    }

    /// Retrying is work in progress; the rarer end states are named (only
    /// when some stream is in them) instead of being counted as waiting.
    #[test]
    fn overall_counts_name_every_kind_of_stream() {
        let mut tally = Tally::default();
        tally.apply(&UiEvent::Start {
            total: 7,
            target: "main".into(),
            parallel: 2,
            rehearse: false,
        });
        assert_eq!(tally.summary(), "0 running  7 waiting  0 failed  $0.00");
        for (id, to) in [
            ("a", Status::Retrying),
            ("b", Status::Running),
            ("c", Status::AwaitingApproval),
            ("d", Status::Cancelled),
            ("e", Status::Interrupted),
            ("f", Status::Conflicted),
            ("g", Status::Blocked),
        ] {
            tally.apply(&t(id, 1, Status::Pending, to, None));
        }
        tally.apply(&UiEvent::Progress {
            id: "a".into(),
            turns: 2,
            cost_usd: 0.5,
        });
        assert_eq!(
            tally.counts(),
            Counts {
                merged: 0,
                running: 2,
                waiting: 0,
                failed: 0,
                awaiting_approval: 1,
                cancelled: 1,
                interrupted: 1,
                blocked: 1,
                conflicted: 1,
                cost: 0.5,
            }
        );
        // Blocked and conflicted streams are not failed ones (the run's
        // summary does not count them so either).
        assert_eq!(
            tally.summary(),
            "2 running  0 waiting  0 failed  1 blocked  1 conflicted  1 awaiting approval  1 cancelled  1 interrupted  $0.50"
        );
    }

    /// A long tool call sends no events; the row's and the overall
    /// durations still advance.
    #[tokio::test]
    async fn live_durations_advance_without_events() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut view = Live::new(ProgressDrawTarget::hidden());
        tx.send(UiEvent::Start {
            total: 1,
            target: "main".into(),
            parallel: 1,
            rehearse: false,
        })
        .ok();
        tx.send(t("ch01", 1, Status::Pending, Status::Running, None))
            .ok();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(1300)).await;
            tx.send(UiEvent::Finish).ok();
        });
        drive_live(&mut rx, &mut view, Duration::from_millis(100)).await;
        let row = view.rows["ch01"].bar.message();
        assert!(
            row.starts_with("attempt 1  starting") && row.ends_with("  1s"),
            "{row}"
        );
        let overall = view.overall.message();
        assert!(
            overall.starts_with("1 running  0 waiting  0 failed") && overall.ends_with("  1s"),
            "{overall}"
        );
        view.finish();
    }
}
