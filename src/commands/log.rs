//! `loki log`: the audit trail, read back from git alone.
//!
//! Every finished stream is a `Merge stream <id>` commit on the target's
//! first-parent line, and every attempt a commit on the stream branch with
//! loki's `Loki-*` trailers (see [`crate::supervisor::attempt::finish`] and the merge
//! worker in [`crate::supervisor`]). The branch is deleted after the merge, but
//! its commits stay reachable through the merge's second parent. So this
//! module needs nothing but the repository: it works in a fresh clone with no
//! `.loki/` folder.
//!
//! How the history is read:
//!
//! - The target's **first-parent** history is walked; a commit with two or
//!   more parents, a subject `Merge stream <id>` and a `Loki-Stream` trailer is
//!   a stream's merge. Streams are listed in merge order, oldest first; a
//!   stream merged twice (it was reset and run again) shows twice.
//! - A merge's **attempt commits** are the commits it brought in (reachable
//!   from its second parent, not from its first) that carry `Loki-Stream: <id>`
//!   and a `Loki-Attempt` trailer, oldest first. Commits the agent made itself
//!   carry no trailers and are not attempts.
//! - An attempt where the agent committed everything itself leaves no loki
//!   commit; its number is listed in `attempts_without_commit` (numbers
//!   1..=`Loki-Attempt` of the merge that no attempt commit names).
//! - Trailers are parsed by libgit2 (`git_message_trailers`, the rules of
//!   `git interpret-trailers`), with a plain last-paragraph parser as a
//!   fallback for messages libgit2 refuses. The first occurrence of a key wins.
//! - The target is `refs/heads/<target>`, else `refs/remotes/origin/<target>`
//!   (a clone that has not checked the branch out), else any revision git
//!   understands.
//!
//! The walk itself and the trailer parsing are git's
//! ([`crate::git::stream_merges`]); this module turns what it finds into
//! the audit and its text.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::git::{trailer, CommitInfo, StreamMerge};
use crate::model::trailers as keys;

/// The audit trail of one target branch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Audit {
    /// The branch (or revision) that was read.
    pub target: String,
    /// Commit the target pointed at.
    pub head: String,
    /// One entry per `Merge stream` commit, oldest first.
    pub streams: Vec<StreamAudit>,
    pub totals: Totals,
}

/// One merged stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamAudit {
    pub id: String,
    pub merge_commit: String,
    /// Committer time of the merge, RFC 3339 in the committer's time zone.
    pub merged_at: String,
    /// Attempt commits, oldest first.
    pub attempts: Vec<AttemptAudit>,
    /// Attempts the stream used (`Loki-Attempts` of the merge; the number of
    /// attempt commits when the trailer is missing).
    pub attempt_count: u32,
    /// Number of the attempt that was merged (`Loki-Attempt` of the merge).
    pub last_attempt: Option<u32>,
    /// Attempt numbers up to `last_attempt` with no attempt commit (the agent
    /// committed its work itself).
    pub attempts_without_commit: Vec<u32>,
    /// The stream's total (`Loki-Cost-USD` of the merge; the sum over the
    /// attempt commits when the trailer is missing).
    pub cost_usd: f64,
    /// `Loki-Checks` of the merge: PASS or WARN.
    pub checks: Option<String>,
    /// `Loki-Validation` of the merge: the validators' summary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation: Option<String>,
    pub agent: Option<String>,
    pub session: Option<String>,
    pub approved_by: Option<String>,
}

/// One attempt commit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptAudit {
    pub n: u32,
    pub commit: String,
    /// `checks passed`, `checks passed with warnings`, `checks failed`,
    /// `agent failed`, `interrupted`, `merge conflict resolved, checks
    /// passed` (a resolver's attempt), or `unknown`.
    pub verdict: String,
    /// `Loki-Checks`: the one-line check summary (PASS / WARN / FAIL …).
    pub checks: Option<String>,
    /// `Loki-Validation`: the validators' summary ("2 pass, 1 warn, 0 fail").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation: Option<String>,
    /// `Loki-Outcome`: why the agent failed.
    pub outcome: Option<String>,
    /// `Loki-Cost-USD` of this attempt.
    pub cost_usd: Option<f64>,
    /// `Loki-Duration` as written (`12.3s`).
    pub duration: Option<String>,
    /// The same in seconds, when it parses.
    pub duration_secs: Option<f64>,
    pub session: Option<String>,
    pub agent: Option<String>,
    /// `Loki-Attempt: n (interrupted)`: work an interrupted attempt left,
    /// committed when the stream resumed.
    pub interrupted: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    /// Merges listed.
    pub streams: u32,
    /// Sum of `attempt_count`.
    pub attempts: u32,
    /// Sum of the streams' `cost_usd`.
    pub cost_usd: f64,
}

/// `loki log [<id>] [--json]`: prints the audit trail of `target` to stdout.
/// With `stream`, only that stream's merges (an error with help when the
/// history has none). Returns the exit code (0).
pub fn run(root: &Path, target: &str, stream: Option<&str>, json: bool) -> Result<i32> {
    let mut audit = collect(root, target)?;
    if let Some(id) = stream {
        let known: Vec<String> = audit.streams.iter().map(|s| s.id.to_string()).collect();
        audit.streams.retain(|s| s.id == id);
        if audit.streams.is_empty() {
            let help = if known.is_empty() {
                format!("no stream has been merged into {target} yet; `loki status` shows where every stream is")
            } else {
                let ids: Vec<String> = known
                    .into_iter()
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect();
                format!(
                    "merged streams: {}; a stream that has not merged yet shows in `loki status`",
                    ids.join(", ")
                )
            };
            return Err(Error::refusal(format!(
                "no merge of stream `{id}` in the history of {target}"
            ))
            .hint(help)
            .into());
        }
        audit.totals = totals(&audit.streams);
    }
    let text = if json {
        let mut s = serde_json::to_string_pretty(&audit).context("encoding the audit as JSON")?;
        s.push('\n');
        s
    } else {
        render(&audit)
    };
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .context("writing the audit to stdout")?;
    Ok(0)
}

/// Reads the audit trail of `target` from the repository at `root`.
pub fn collect(root: &Path, target: &str) -> Result<Audit> {
    let history = crate::git::stream_merges(root, target)?;
    let streams: Vec<StreamAudit> = history.merges.iter().map(stream_audit).collect();
    let totals = totals(&streams);
    Ok(Audit {
        target: target.to_string(),
        head: history.head,
        streams,
        totals,
    })
}

/// The human text of an audit: one block per stream, then the totals.
pub fn render(audit: &Audit) -> String {
    let mut out = String::new();
    if audit.streams.is_empty() {
        out.push_str(&format!(
            "no stream has been merged into {} yet\n",
            audit.target
        ));
        return out;
    }
    let id_width = audit
        .streams
        .iter()
        .map(|s| s.id.chars().count())
        .max()
        .unwrap_or(0);
    for s in &audit.streams {
        let mut line = format!(
            "{:<id_width$}  merged {}  {}  {}",
            s.id,
            short_time(&s.merged_at),
            plural(s.attempt_count, "attempt"),
            usd(s.cost_usd)
        );
        if let Some(by) = &s.approved_by {
            line.push_str(&format!("  approved by {by}"));
        }
        line.push_str(&format!("  {}", short_oid(&s.merge_commit)));
        out.push_str(line.trim_end());
        out.push('\n');
        for a in &s.attempts {
            out.push_str(&attempt_line(a));
            out.push('\n');
        }
        if !s.attempts_without_commit.is_empty() {
            let ns: Vec<String> = s
                .attempts_without_commit
                .iter()
                .map(u32::to_string)
                .collect();
            // Git cannot tell the two apart: an attempt stopped before it
            // changed anything has no commit, and neither has one whose
            // agent committed everything itself.
            out.push_str(&format!(
                "  attempt {}  no commit of loki's (stopped before it changed anything, or the \
                 agent committed its work itself)\n",
                ns.join(", ")
            ));
        }
    }
    let t = &audit.totals;
    out.push_str(&format!(
        "total: {} merged into {}, {}, {}\n",
        plural(t.streams, "stream"),
        audit.target,
        plural(t.attempts, "attempt"),
        usd(t.cost_usd)
    ));
    out
}

// ---------------------------------------------------------------------------
// helpers

fn stream_audit(m: &StreamMerge) -> StreamAudit {
    let id = m.stream.as_str();
    let trailers = &m.merge.trailers;
    let attempts: Vec<AttemptAudit> = m
        .brought_in
        .iter()
        .filter_map(|c| attempt_audit(c, id))
        .collect();

    let last_attempt = trailer(trailers, keys::ATTEMPT).and_then(leading_number);
    let seen: BTreeSet<u32> = attempts.iter().map(|a| a.n).collect();
    let attempts_without_commit = (1..=last_attempt.unwrap_or(0))
        .filter(|n| !seen.contains(n))
        .collect();
    let attempt_count = trailer(trailers, keys::ATTEMPTS)
        .and_then(leading_number)
        .unwrap_or(seen.len() as u32);
    let cost_usd = trailer(trailers, keys::COST_USD)
        .and_then(parse_f64)
        .unwrap_or_else(|| crate::util::total(attempts.iter().filter_map(|a| a.cost_usd)));

    StreamAudit {
        id: id.to_string(),
        merge_commit: m.merge.id.to_string(),
        merged_at: m.merge.committed_at.clone(),
        attempts,
        attempt_count,
        last_attempt,
        attempts_without_commit,
        cost_usd,
        checks: trailer(trailers, keys::CHECKS).map(str::to_string),
        validation: trailer(trailers, keys::VALIDATION).map(str::to_string),
        agent: trailer(trailers, keys::AGENT).map(str::to_string),
        session: trailer(trailers, keys::SESSION).map(str::to_string),
        approved_by: trailer(trailers, keys::APPROVED_BY).map(str::to_string),
    }
}

/// The attempt commit `c` of stream `id`, or `None` when it is not one (a
/// commit the agent made itself carries no `Loki-Attempt`).
fn attempt_audit(c: &CommitInfo, id: &str) -> Option<AttemptAudit> {
    let t = &c.trailers;
    if trailer(t, keys::STREAM) != Some(id) {
        return None;
    }
    let attempt = trailer(t, keys::ATTEMPT)?;
    let n = leading_number(attempt)?;
    let interrupted = attempt.contains("interrupted");
    let verdict = if interrupted {
        "interrupted".to_string()
    } else if attempt.contains("resolve") {
        // A resolver's attempt is committed only when it passed.
        "merge conflict resolved, checks passed".to_string()
    } else {
        verdict_of(c.subject(), trailer(t, keys::CHECKS))
    };
    let duration = trailer(t, keys::DURATION).map(str::to_string);
    Some(AttemptAudit {
        n,
        commit: c.id.to_string(),
        verdict,
        checks: trailer(t, keys::CHECKS).map(str::to_string),
        validation: trailer(t, keys::VALIDATION).map(str::to_string),
        outcome: trailer(t, keys::OUTCOME).map(str::to_string),
        cost_usd: trailer(t, keys::COST_USD).and_then(parse_f64),
        duration_secs: duration.as_deref().and_then(parse_secs),
        duration,
        session: trailer(t, keys::SESSION).map(str::to_string),
        agent: trailer(t, keys::AGENT).map(str::to_string),
        interrupted,
    })
}

pub fn totals(streams: &[StreamAudit]) -> Totals {
    Totals {
        streams: streams.len() as u32,
        attempts: streams.iter().map(|s| s.attempt_count).sum(),
        cost_usd: crate::util::total(streams.iter().map(|s| s.cost_usd)),
    }
}

/// The verdict in the subject's last parentheses (`loki: b attempt 1 (checks
/// failed)`), else one derived from the check summary.
fn verdict_of(subject: &str, checks: Option<&str>) -> String {
    if let Some(open) = subject.rfind(" (") {
        if let Some(inner) = subject[open + 2..].strip_suffix(')') {
            if !inner.is_empty() {
                return inner.to_string();
            }
        }
    }
    match checks.map(|c| c.trim_start().to_ascii_uppercase()) {
        Some(c) if c.starts_with("PASS") => "checks passed".into(),
        Some(c) if c.starts_with("WARN") => "checks passed with warnings".into(),
        Some(c) if c.starts_with("FAIL") => "checks failed".into(),
        _ => "unknown".into(),
    }
}

fn leading_number(s: &str) -> Option<u32> {
    let digits: String = s
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

fn parse_f64(s: &str) -> Option<f64> {
    s.trim()
        .trim_start_matches('$')
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
}

/// `12.3s`, `500ms`, `4m12s`, `1h`: seconds.
fn parse_secs(s: &str) -> Option<f64> {
    let s = s.trim();
    if let Some(v) = s.strip_suffix('s').and_then(|v| v.parse::<f64>().ok()) {
        return Some(v);
    }
    humantime::parse_duration(s).ok().map(|d| d.as_secs_f64())
}

/// `2026-11-21T12:03:44+01:00` → `2026-11-21 12:03`.
fn short_time(rfc3339: &str) -> String {
    match chrono::DateTime::parse_from_rfc3339(rfc3339) {
        Ok(t) => t.format("%Y-%m-%d %H:%M").to_string(),
        Err(_) => rfc3339.to_string(),
    }
}

fn attempt_line(a: &AttemptAudit) -> String {
    let what = match (&a.checks, &a.outcome) {
        _ if a.interrupted => "interrupted (work committed on resume)".to_string(),
        (Some(c), _) if a.verdict.starts_with("merge conflict resolved") => {
            format!("merge conflict resolved; {}", ellipsize(c, 40))
        }
        (Some(c), _) => ellipsize(c, 60),
        (None, Some(o)) => format!("agent failed: {}", ellipsize(o, 46)),
        (None, None) => a.verdict.clone(),
    };
    let mut parts = vec![format!("  attempt {}", a.n), what];
    if let Some(v) = &a.validation {
        parts.push(format!("validators: {}", ellipsize(v, 40)));
    }
    if let Some(c) = a.cost_usd {
        parts.push(usd(c));
    }
    if let Some(d) = &a.duration {
        parts.push(d.clone());
    }
    if let Some(s) = &a.session {
        parts.push(format!("session {}", ellipsize(s, 9)));
    }
    parts.push(short_oid(&a.commit));
    parts.join("  ")
}

fn usd(v: f64) -> String {
    if v != 0.0 && v.abs() < 0.01 {
        format!("${v:.4}")
    } else {
        format!("${v:.2}")
    }
}

fn plural(n: u32, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

fn short_oid(oid: &str) -> String {
    oid.chars().take(8).collect()
}

/// At most `max` characters, the last one `…` when cut.
fn ellipsize(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::git::parse_trailers;

    #[test]
    fn trailers_come_from_the_last_paragraph() {
        let msg = "loki: b attempt 1 (checks failed)\n\nFAIL: forbid\n\nLoki-Stream: b\nLoki-Attempt: 1\nLoki-Cost-USD: 0.2500\nLoki-Checks: FAIL: forbidden term `dragon`\n";
        let t = parse_trailers(msg);
        assert_eq!(trailer(&t, "loki-stream"), Some("b"));
        assert_eq!(trailer(&t, "Loki-Cost-USD").and_then(parse_f64), Some(0.25));
        assert_eq!(
            trailer(&t, "Loki-Checks"),
            Some("FAIL: forbidden term `dragon`")
        );
        assert!(parse_trailers("just a subject\n").is_empty());
        // The fallback parser's own test is in git::history.
    }

    #[test]
    fn verdicts_numbers_and_durations() {
        assert_eq!(
            verdict_of("loki: b attempt 1 (checks failed)", None),
            "checks failed"
        );
        assert_eq!(
            verdict_of("loki: b attempt 1", Some("WARN: x")),
            "checks passed with warnings"
        );
        assert_eq!(verdict_of("loki: b attempt 1", None), "unknown");
        assert_eq!(leading_number("2 (interrupted)"), Some(2));
        assert_eq!(leading_number("x"), None);
        assert_eq!(parse_secs("12.5s"), Some(12.5));
        assert_eq!(parse_secs("4m"), Some(240.0));
        assert_eq!(parse_secs("soon"), None);
    }

    #[test]
    fn money_and_text_are_short() {
        assert_eq!(usd(0.42), "$0.42");
        assert_eq!(usd(0.0), "$0.00");
        assert_eq!(usd(0.0034), "$0.0034");
        assert_eq!(ellipsize("abcdef", 4), "abc…");
        assert_eq!(ellipsize("abc", 4), "abc");
        assert_eq!(short_time("2026-11-21T12:03:44+01:00"), "2026-11-21 12:03");
        assert_eq!(plural(1, "attempt"), "1 attempt");
        assert_eq!(plural(3, "attempt"), "3 attempts");
    }
}
