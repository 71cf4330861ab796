//! The state of a stream and of the swarm, as stored in `.loki/state/`,
//! and the events appended to `events.jsonl`: plain data, no I/O.

use serde::{Deserialize, Serialize};

use super::id::StreamId;

/// The lifecycle of a stream (see DESIGN.md).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord,
)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    #[default]
    Pending,
    Ready,
    Preparing,
    Running,
    Checking,
    /// The checks passed; the stream's validators are judging the commit.
    Validating,
    Retrying,
    AwaitingApproval,
    Merging,
    Merged,
    Failed,
    Conflicted,
    Blocked,
    Cancelled,
    Interrupted,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Ready => "ready",
            Status::Preparing => "preparing",
            Status::Running => "running",
            Status::Checking => "checking",
            Status::Validating => "validating",
            Status::Retrying => "retrying",
            Status::AwaitingApproval => "awaiting_approval",
            Status::Merging => "merging",
            Status::Merged => "merged",
            Status::Failed => "failed",
            Status::Conflicted => "conflicted",
            Status::Blocked => "blocked",
            Status::Cancelled => "cancelled",
            Status::Interrupted => "interrupted",
        }
    }

    /// A state in which the supervisor is working on the stream (an agent,
    /// its checks or its merge).
    pub fn is_active(self) -> bool {
        matches!(
            self,
            Status::Preparing
                | Status::Running
                | Status::Checking
                | Status::Validating
                | Status::Merging
        )
    }

    /// A state a run ends in (nothing more happens without a human or a new run).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Status::Merged
                | Status::Failed
                | Status::Conflicted
                | Status::Blocked
                | Status::Cancelled
        )
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One run of the agent for a stream.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AttemptRecord {
    pub n: u32,
    pub started_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<String>,
    /// "ok", "failed", "check_failed", "timeout", "idle", "interrupted", "rate_limited", "auth",
    /// "session_lost" (a `--resume` of a session claude no longer had), "not_started" (held
    /// back before its agent started), "stopped", "cancelled"
    #[serde(default)]
    pub outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default)]
    pub cost_usd: f64,
    #[serde(default)]
    pub turns: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// Commit the supervisor made (or found) after the attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// PASS / WARN / FAIL of the checks, when they ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checks: Option<String>,
    /// The validators' summary ("2 pass, 1 warn, 0 fail"), when they ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation: Option<String>,
    /// What the validators of this attempt cost (also in `cost_usd`).
    #[serde(default, skip_serializing_if = "is_zero_f64")]
    pub validation_cost_usd: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Whether it counts against max_attempts (a human reject or a rate-limit wait does not).
    #[serde(default = "yes")]
    pub counted: bool,
}

fn yes() -> bool {
    true
}

/// The running agent of a stream, recorded so that a restarted supervisor
/// can find and end leftovers without hitting a reused pid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessRecord {
    pub pid: i32,
    pub pgid: i32,
    /// Field 22 of /proc/<pid>/stat (clock ticks since boot).
    pub start_time: u64,
    /// A hash of the kernel's boot id: start times mean nothing after a
    /// reboot, so a record of another boot is never acted on (0: unknown).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub boot: u64,
    /// `LOKI_AGENT_TOKEN` in the agent's environment, inherited by what it
    /// starts: a leftover whose leader is gone is only signalled if its
    /// environment carries it (0: none recorded).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub token: u64,
}

fn is_zero_f64(n: &f64) -> bool {
    *n == 0.0
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn is_zero_u32(n: &u32) -> bool {
    *n == 0
}

/// Everything loki knows about one stream; `.loki/state/<id>.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StreamState {
    pub id: StreamId,
    /// Bumped by every write (the compare-and-swap key).
    pub version: u64,
    pub status: Status,
    /// Number of the current or last attempt (0 before the first).
    pub attempt: u32,
    #[serde(default)]
    pub attempts: Vec<AttemptRecord>,
    /// Counted attempts made before the current allowance of
    /// `max_attempts` began (a failed stream run again, `loki retry`).
    #[serde(default)]
    pub allowance_floor: u32,
    pub branch: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worktree: Option<String>,
    /// Target head the branch started from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_commit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// Sum over attempts.
    #[serde(default)]
    pub cost_usd: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// Why the stream is failed / blocked / conflicted / waiting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Latest activity (tool use or output line), for status displays.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_message: Option<String>,
    /// Feedback for the next attempt: what every earlier attempt of this
    /// allowance did wrong ([`Self::add_feedback`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feedback: Option<String>,
    /// Each failed attempt of this allowance and its feedback lines, which
    /// `feedback` is made from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub feedback_log: Vec<(u32, Vec<String>)>,
    /// The paths of a merge conflict a resolver attempt is to resolve (the
    /// next attempt is that resolver's while this is not empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resolve_paths: Vec<String>,
    /// Resolver attempts used on this stream's conflicts since its last
    /// merge, retry or run.
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub resolve_attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<ProcessRecord>,
    /// The groups of the attempt's check commands and validators that may
    /// still run (several at once), for a later supervisor's sweep.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub helpers: Vec<ProcessRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merge_commit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_by: Option<String>,
    /// Set by PAUSE_<id>: no new attempt starts until RESUME_<id>.
    #[serde(default)]
    pub paused: bool,
    /// Latest TESTS_PASSED / TESTS_FAILED signal, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tests: Option<String>,
    /// Agent command and version used, for commit trailers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
}

impl StreamState {
    pub fn new(id: &StreamId) -> Self {
        StreamState {
            id: id.clone(),
            branch: super::paths::branch_name(id),
            ..Default::default()
        }
    }

    /// Attempts that count against max_attempts.
    pub fn counted_attempts(&self) -> u32 {
        self.attempts.iter().filter(|a| a.counted).count() as u32
    }

    /// Counted attempts of the current allowance.
    pub fn used_attempts(&self) -> u32 {
        self.counted_attempts().saturating_sub(self.allowance_floor)
    }

    /// A fresh allowance of `max_attempts` starts now.
    pub fn renew_allowance(&mut self) {
        self.allowance_floor = self.counted_attempts();
        self.feedback_log.clear();
        self.resolve_attempts = 0;
    }

    /// The next (or running) attempt is a resolver's.
    pub fn resolving(&self) -> bool {
        !self.resolve_paths.is_empty()
    }

    /// Records what attempt `attempt` did wrong (`text`, one item per
    /// line) and makes [`Self::feedback`] the whole of it: with one failed
    /// attempt, its lines; with more, one group per attempt (`Attempt 2:`),
    /// each line said once, where it first came up, with the later
    /// attempts that repeated it (`(again in attempt 3)`). So a third
    /// attempt is told the first one's forbidden word as well as the
    /// second one's note.
    pub fn add_feedback(&mut self, attempt: u32, text: &str) {
        let lines: Vec<String> = text
            .lines()
            .map(str::trim_end)
            .filter(|l| !l.trim().is_empty())
            .map(str::to_string)
            .collect();
        match self.feedback_log.iter_mut().find(|(n, _)| *n == attempt) {
            Some((_, old)) => old.extend(lines),
            None => self.feedback_log.push((attempt, lines)),
        }
        if self.feedback_log.len() == 1 {
            self.feedback = Some(text.to_string());
            return;
        }
        let mut out = String::new();
        let mut said: Vec<&String> = Vec::new();
        for (i, (n, lines)) in self.feedback_log.iter().enumerate() {
            let fresh: Vec<&String> =
                lines
                    .iter()
                    .filter(|l| !said.contains(l))
                    .fold(Vec::new(), |mut v, l| {
                        if !v.contains(&l) {
                            v.push(l);
                        }
                        v
                    });
            if fresh.is_empty() {
                continue;
            }
            out.push_str(&format!("Attempt {n}:\n"));
            for l in &fresh {
                let again: Vec<String> = self.feedback_log[i + 1..]
                    .iter()
                    .filter(|(_, later)| later.contains(l))
                    .map(|(m, _)| m.to_string())
                    .collect();
                out.push_str(l);
                if !again.is_empty() {
                    out.push_str(&format!(" (again in attempt {})", again.join(", ")));
                }
                out.push('\n');
            }
            said.extend(fresh);
        }
        self.feedback = Some(out.trim_end().to_string());
    }
}

/// Swarm-wide state; `.loki/state/swarm.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SwarmState {
    pub version: u64,
    #[serde(default)]
    pub paused: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause_reason: Option<String>,
    /// The pause is the supervisor's own, after the API refused the
    /// credentials: the next `loki run` lifts it. A pause asked for with
    /// `loki pause` / PAUSE stays until `loki resume`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub auth_paused: bool,
    /// A usage window the supervisor waits out: which limit, and when
    /// (RFC 3339) attempts start again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_limit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_resets_at: Option<String>,
}

/// A line of `.loki/state/events.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub ts: String,
    /// "transition", "signal", "signal_rejected", "attempt", "merge", "check", "warning", "supervisor"...
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Status>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Status>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// For a signal the supervisor handled: its file in `processed/` or
    /// `rejected/`. A taken file with no such event was never handled (the
    /// supervisor died first) and is replayed at the next start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal_file: Option<String>,
}

/// How an attempt ended, as written in [`AttemptRecord::outcome`]. The
/// enum knows whether an attempt that ended so counts against
/// `max_attempts`: an attempt cut off by the user, the API or the machine
/// is not the agent's failure and is not counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Failed,
    CheckFailed,
    ValidationFailed,
    Timeout,
    Idle,
    Rejected,
    Cancelled,
    Interrupted,
    NotStarted,
    RateLimited,
    Auth,
    SessionLost,
}

impl Outcome {
    pub const ALL: &'static [Outcome] = &[
        Outcome::Ok,
        Outcome::Failed,
        Outcome::CheckFailed,
        Outcome::ValidationFailed,
        Outcome::Timeout,
        Outcome::Idle,
        Outcome::Rejected,
        Outcome::Cancelled,
        Outcome::Interrupted,
        Outcome::NotStarted,
        Outcome::RateLimited,
        Outcome::Auth,
        Outcome::SessionLost,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Failed => "failed",
            Outcome::CheckFailed => "check_failed",
            Outcome::ValidationFailed => "validation_failed",
            Outcome::Timeout => "timeout",
            Outcome::Idle => "idle",
            Outcome::Rejected => "rejected",
            Outcome::Cancelled => "cancelled",
            Outcome::Interrupted => "interrupted",
            Outcome::NotStarted => "not_started",
            Outcome::RateLimited => "rate_limited",
            Outcome::Auth => "auth",
            Outcome::SessionLost => "session_lost",
        }
    }

    pub fn parse(s: &str) -> Option<Outcome> {
        Outcome::ALL.iter().copied().find(|o| o.as_str() == s)
    }

    /// Whether an attempt that ended so uses up one of `max_attempts`
    /// (a rejection's count is the reviewer's choice and set apart).
    pub fn counts(self) -> bool {
        !matches!(
            self,
            Outcome::Interrupted
                | Outcome::NotStarted
                | Outcome::RateLimited
                | Outcome::Auth
                | Outcome::SessionLost
        )
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feedback_accumulates_by_attempt_and_says_each_line_once() {
        let mut st = StreamState::default();
        st.add_feedback(1, "- `dragon` found in a.md on line 3\n");
        assert_eq!(
            st.feedback.as_deref(),
            Some("- `dragon` found in a.md on line 3\n")
        );
        st.add_feedback(2, "- a.md has 12 words, fewer than 50\n");
        st.add_feedback(3, "- `dragon` found in a.md on line 3\n- Reviewer: braver");
        assert_eq!(
            st.feedback.as_deref(),
            Some(
                "Attempt 1:\n- `dragon` found in a.md on line 3 (again in attempt 3)\n\
                 Attempt 2:\n- a.md has 12 words, fewer than 50\n\
                 Attempt 3:\n- Reviewer: braver"
            )
        );
        // A fresh allowance starts a new record.
        st.renew_allowance();
        st.add_feedback(4, "- x");
        assert_eq!(st.feedback.as_deref(), Some("- x"));
    }
}
