//! Validators' verdicts and the one report an attempt's validation makes.
//!
//! A validator (a reviewer agent, `[validators.<name>]`) answers with JSON:
//! `{"status": "pass" | "fail" | "warn", "issues": [{"severity": "blocking"
//! | "warning", "message": "…", "where": "…"}]}`, in the file named by
//! `LOKI_VERDICT_FILE` or, for claude, as the last JSON object of its final
//! `result` text. The verdict is untrusted text like anything an agent
//! writes: it is parsed, bounded and never executed.
//!
//! How a validator counts (the README says the same):
//!
//! | what happened | status | the draft |
//! | --- | --- | --- |
//! | verdict `pass` | pass | passes |
//! | verdict `warn` | warn | passes; its issues are warnings |
//! | verdict `fail`, blocking validator | fail | does not merge: the issues are the next attempt's feedback |
//! | verdict `fail`, `blocking = false` | fail | passes; its issues are warnings |
//! | ran out of its `timeout` | warn | passes, with a warning that it did not finish |
//! | exited non-zero, or no parseable verdict | error | not judged: a blocking validator's error fails the stream at once, spending no further attempt on a draft nobody could judge (the draft is kept on its branch; fix the validator and `loki retry`); a non-blocking one's is a warning |
//! | a rate or usage limit ended it | (none) | judged again after the wait, with no new attempt |

use serde::{Deserialize, Serialize};

/// The most of a verdict file or a result text that is read.
pub const MAX_VERDICT_BYTES: u64 = 1024 * 1024;
/// Issues kept per validator (a verdict could list millions).
const MAX_ISSUES: usize = 100;
/// Longest issue message or place kept, in characters.
const MAX_ISSUE_CHARS: usize = 2000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ValidatorStatus {
    Pass,
    Warn,
    Fail,
    /// No verdict: the validator exited non-zero, gave nothing parseable,
    /// or could not start.
    Error,
}

impl ValidatorStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ValidatorStatus::Pass => "pass",
            ValidatorStatus::Warn => "warn",
            ValidatorStatus::Fail => "fail",
            ValidatorStatus::Error => "error",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Blocking,
    Warning,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Issue {
    pub severity: Severity,
    pub message: String,
    #[serde(rename = "where", default, skip_serializing_if = "Option::is_none")]
    pub place: Option<String>,
}

/// What a validator said.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub status: ValidatorStatus,
    pub issues: Vec<Issue>,
}

#[derive(Deserialize)]
struct RawVerdict {
    status: String,
    #[serde(default)]
    issues: Vec<RawIssue>,
}

#[derive(Deserialize)]
struct RawIssue {
    #[serde(default)]
    severity: Option<String>,
    #[serde(default)]
    message: Option<serde_json::Value>,
    #[serde(rename = "where", default)]
    place: Option<serde_json::Value>,
}

fn clip(s: &str) -> String {
    if s.chars().count() <= MAX_ISSUE_CHARS {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(MAX_ISSUE_CHARS).collect();
        t.push('…');
        t
    }
}

fn text_of(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Parses one verdict object. `Err` says what is wrong with it.
pub fn parse_verdict(text: &str) -> Result<Verdict, String> {
    let raw: RawVerdict =
        serde_json::from_str(text.trim()).map_err(|e| format!("not a verdict object: {e}"))?;
    let status = match raw.status.to_ascii_lowercase().as_str() {
        "pass" => ValidatorStatus::Pass,
        "warn" => ValidatorStatus::Warn,
        "fail" => ValidatorStatus::Fail,
        other => {
            return Err(format!(
                "`status` is \"{}\", not \"pass\", \"fail\" or \"warn\"",
                other.escape_default()
            ))
        }
    };
    let mut issues = Vec::new();
    for i in raw.issues.into_iter().take(MAX_ISSUES) {
        // An issue of a failing verdict blocks unless it says otherwise.
        let severity = match i
            .severity
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("warning" | "warn") => Severity::Warning,
            Some("blocking" | "block" | "error") => Severity::Blocking,
            _ if status == ValidatorStatus::Fail => Severity::Blocking,
            _ => Severity::Warning,
        };
        let message = i.message.as_ref().map(text_of).unwrap_or_default();
        if message.trim().is_empty() {
            continue;
        }
        issues.push(Issue {
            severity,
            message: clip(message.trim()),
            place: i
                .place
                .as_ref()
                .map(text_of)
                .filter(|p| !p.trim().is_empty())
                .map(|p| clip(p.trim())),
        });
    }
    Ok(Verdict { status, issues })
}

/// The last JSON object in `text` that is a verdict (claude's final
/// `result` text: prose, then the verdict, perhaps in a ```json fence).
pub fn last_verdict_in(text: &str) -> Option<Verdict> {
    let text = match text.len() as u64 > MAX_VERDICT_BYTES {
        true => {
            let mut start = text.len() - MAX_VERDICT_BYTES as usize;
            while !text.is_char_boundary(start) {
                start += 1;
            }
            &text[start..]
        }
        false => text,
    };
    let starts: Vec<usize> = text.match_indices('{').map(|(i, _)| i).collect();
    for &i in starts.iter().rev() {
        let mut values =
            serde_json::Deserializer::from_str(&text[i..]).into_iter::<serde_json::Value>();
        let Some(Ok(v)) = values.next() else {
            continue;
        };
        if v.get("status").is_none() {
            continue;
        }
        if let Ok(verdict) = parse_verdict(&v.to_string()) {
            return Some(verdict);
        }
    }
    None
}

/// One validator's part of the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValidatorResult {
    pub name: String,
    pub status: ValidatorStatus,
    pub blocking: bool,
    #[serde(default)]
    pub issues: Vec<Issue>,
    pub started_at: String,
    pub ended_at: String,
    pub duration_seconds: f64,
    #[serde(default)]
    pub cost_usd: f64,
    /// It ran out of its `timeout` (a warning).
    #[serde(default)]
    pub timed_out: bool,
    /// Why it has no verdict, when it has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ValidatorResult {
    /// Its issues that block the merge: a blocking validator's failing
    /// verdict's blocking issues (all of them when it marks none blocking,
    /// or a line saying it failed when it lists none).
    pub fn blocking_issues(&self) -> Vec<String> {
        if !self.blocking || self.status != ValidatorStatus::Fail {
            return Vec::new();
        }
        let marked: Vec<&Issue> = self
            .issues
            .iter()
            .filter(|i| i.severity == Severity::Blocking)
            .collect();
        let chosen: Vec<&Issue> = if marked.is_empty() {
            self.issues.iter().collect()
        } else {
            marked
        };
        if chosen.is_empty() {
            return vec![format!(
                "[{}] the reviewer failed the draft without naming an issue",
                self.name
            )];
        }
        chosen
            .iter()
            .map(|i| match &i.place {
                Some(p) => format!("[{}] {} (at {})", self.name, i.message, p),
                None => format!("[{}] {}", self.name, i.message),
            })
            .collect()
    }
}

/// What the validation as a whole decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// Every blocking validator passed or warned: the draft goes on.
    Pass,
    /// A blocking validator failed it: another attempt, with its issues.
    Fail,
    /// A blocking validator gave no verdict: the draft is not judged.
    Error,
}

/// `.loki/runs/<id>/attempt-<n>/validation.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValidationReport {
    pub attempt: u32,
    /// The commit the validators judged.
    pub commit: String,
    pub decision: Decision,
    pub validators_run: usize,
    pub passed: usize,
    pub failed: usize,
    pub warned: usize,
    pub errored: usize,
    /// From the first validator's start to the last one's end.
    pub execution_time_seconds: f64,
    pub cost_usd: f64,
    /// "2 pass, 1 warn, 0 fail" (and ", 1 error" when one errored): the
    /// `Loki-Validation` trailer.
    pub summary: String,
    pub validators: Vec<ValidatorResult>,
}

impl ValidationReport {
    pub fn new(
        attempt: u32,
        commit: &str,
        validators: Vec<ValidatorResult>,
        execution_time_seconds: f64,
    ) -> ValidationReport {
        let count = |s: ValidatorStatus| validators.iter().filter(|v| v.status == s).count();
        let (passed, warned, failed, errored) = (
            count(ValidatorStatus::Pass),
            count(ValidatorStatus::Warn),
            count(ValidatorStatus::Fail),
            count(ValidatorStatus::Error),
        );
        let mut summary = format!("{passed} pass, {warned} warn, {failed} fail");
        if errored > 0 {
            summary.push_str(&format!(", {errored} error"));
        }
        let blocking = |s: ValidatorStatus| validators.iter().any(|v| v.blocking && v.status == s);
        let decision = if blocking(ValidatorStatus::Fail) {
            Decision::Fail
        } else if blocking(ValidatorStatus::Error) {
            Decision::Error
        } else {
            Decision::Pass
        };
        let cost_usd = crate::util::total(validators.iter().map(|v| v.cost_usd));
        ValidationReport {
            attempt,
            commit: commit.to_string(),
            decision,
            validators_run: validators.len(),
            passed,
            failed,
            warned,
            errored,
            execution_time_seconds,
            cost_usd,
            summary,
            validators,
        }
    }

    /// Feedback lines for the next attempt: every blocking issue.
    pub fn blocking_issues(&self) -> Vec<String> {
        self.validators
            .iter()
            .flat_map(ValidatorResult::blocking_issues)
            .collect()
    }

    /// Why the draft was not judged: each blocking validator's error.
    pub fn errors(&self) -> String {
        self.validators
            .iter()
            .filter(|v| v.blocking && v.status == ValidatorStatus::Error)
            .map(|v| {
                format!(
                    "validator {} gave no verdict: {}",
                    v.name,
                    v.error.as_deref().unwrap_or("unknown error")
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// A multi-line rendering for people (`loki show`).
    pub fn human(&self) -> String {
        let mut s = format!(
            "{} ({}, {:.1}s, ${:.4})\n",
            self.summary,
            self.decision_word(),
            self.execution_time_seconds,
            self.cost_usd
        );
        for v in &self.validators {
            let mut line = format!(
                "  {} {}{} ({:.1}s, ${:.4})",
                v.status.as_str().to_uppercase(),
                v.name,
                if v.blocking { "" } else { " (non-blocking)" },
                v.duration_seconds,
                v.cost_usd
            );
            if let Some(e) = &v.error {
                line.push_str(&format!(": {}", crate::util::one_line(e)));
            }
            s.push_str(&line);
            s.push('\n');
            for i in &v.issues {
                let sev = match i.severity {
                    Severity::Blocking => "blocking",
                    Severity::Warning => "warning",
                };
                let place = i
                    .place
                    .as_deref()
                    .map(|p| format!(" (at {p})"))
                    .unwrap_or_default();
                s.push_str(&format!(
                    "      {sev}: {}{place}\n",
                    crate::util::one_line(&i.message)
                ));
            }
        }
        s
    }

    fn decision_word(&self) -> &'static str {
        match self.decision {
            Decision::Pass => "passed",
            Decision::Fail => "failed",
            Decision::Error => "not judged",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_verdict_in_claudes_prose_is_found() {
        let text = "I read it. Example: {\"status\": \"pass\"} was the old one.\n```json\n{\"status\": \"fail\", \"issues\": [{\"severity\": \"blocking\", \"message\": \"Mira is dead in ch02\", \"where\": \"chapters/ch03.md:12\"}]}\n```\nDone.";
        let v = last_verdict_in(text).unwrap();
        assert_eq!(v.status, ValidatorStatus::Fail);
        assert_eq!(v.issues[0].place.as_deref(), Some("chapters/ch03.md:12"));
        assert!(last_verdict_in("no json here {not json}").is_none());
        assert!(last_verdict_in("{\"status\": \"maybe\"}").is_none());
    }

    #[test]
    fn an_unmarked_issue_of_a_failing_verdict_blocks() {
        let v = parse_verdict(r#"{"status":"FAIL","issues":[{"message":"x"},{"severity":"warning","message":"y"},{"message":""}]}"#).unwrap();
        assert_eq!(v.issues.len(), 2);
        assert_eq!(v.issues[0].severity, Severity::Blocking);
        assert_eq!(v.issues[1].severity, Severity::Warning);
        assert!(parse_verdict("[]").is_err());
    }

    fn result(name: &str, status: ValidatorStatus, blocking: bool) -> ValidatorResult {
        ValidatorResult {
            name: name.into(),
            status,
            blocking,
            issues: vec![Issue {
                severity: Severity::Blocking,
                message: format!("{name} says no"),
                place: None,
            }],
            started_at: String::new(),
            ended_at: String::new(),
            duration_seconds: 1.0,
            cost_usd: 0.25,
            timed_out: false,
            error: (status == ValidatorStatus::Error).then(|| "exit code 3".into()),
        }
    }

    #[test]
    fn only_blocking_validators_decide() {
        use ValidatorStatus::*;
        let r = ValidationReport::new(
            2,
            "abc",
            vec![
                result("a", Pass, true),
                result("b", Fail, false),
                result("c", Warn, true),
                result("d", Error, false),
            ],
            3.0,
        );
        assert_eq!(r.decision, Decision::Pass);
        assert_eq!(r.summary, "1 pass, 1 warn, 1 fail, 1 error");
        assert!(r.blocking_issues().is_empty());
        assert_eq!(r.cost_usd, 1.0);
        let r = ValidationReport::new(2, "abc", vec![result("a", Error, true)], 1.0);
        assert_eq!(r.decision, Decision::Error);
        assert!(r.errors().contains("exit code 3"));
        let r = ValidationReport::new(
            2,
            "abc",
            vec![result("a", Error, true), result("b", Fail, true)],
            1.0,
        );
        assert_eq!(r.decision, Decision::Fail);
        assert_eq!(r.blocking_issues(), vec!["[b] b says no".to_string()]);
    }
}
