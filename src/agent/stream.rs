//! Reading claude's stream-json: one line at a time into [`AgentEvent`]s,
//! counting turns across lines, and the `result` line's [`ResultInfo`].
//!
//! Turns are counted per distinct top-level assistant message id (claude
//! prints one `assistant` line per content block); the outcome prefers
//! claude's own `num_turns` from the `result` line.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::AgentEvent;

/// Longest activity text.
pub(super) const ACTIVITY_CHARS: usize = 80;

/// The `result` line of claude's stream-json.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResultInfo {
    pub is_error: bool,
    pub subtype: String,
    pub cost_usd: f64,
    pub turns: u32,
    pub result: String,
    pub session_id: Option<String>,
    /// `api_error_status`: the HTTP status of the API error that ended the
    /// run (401, 429, …), when claude gives it.
    pub api_status: Option<u16>,
    /// The cost the agent reported when it was not a cost (negative, not
    /// finite, or more than [`MAX_PLAUSIBLE_COST`]); `cost_usd` is then 0
    /// and the supervisor counts the attempt conservatively.
    pub cost_invalid: Option<f64>,
}

/// More than this for one attempt is not a cost but a bad number.
pub const MAX_PLAUSIBLE_COST: f64 = 1_000_000.0;

/// A stateful reader of claude's stream-json (it counts turns across lines).
#[derive(Debug, Clone, Default)]
pub struct ClaudeStream {
    cwd: Option<PathBuf>,
    pub(super) canonical_cwd: Option<PathBuf>,
    turns: u32,
    last_message_id: Option<String>,
}

impl ClaudeStream {
    /// `cwd`: file paths inside it are shown relative to it.
    pub fn new(cwd: Option<&Path>) -> ClaudeStream {
        ClaudeStream {
            cwd: cwd.map(Path::to_path_buf),
            ..ClaudeStream::default()
        }
    }

    /// Turns counted so far.
    pub fn turns(&self) -> u32 {
        self.turns
    }

    /// The events one stdout line stands for. Lines that are not JSON become
    /// an [`AgentEvent::Activity`]; JSON of no interest yields nothing.
    pub fn parse_line(&mut self, line: &str) -> Vec<AgentEvent> {
        let trimmed = line.trim();
        if trimmed.is_empty() {
            return Vec::new();
        }
        let v: Value = match serde_json::from_str(trimmed) {
            Ok(v @ Value::Object(_)) => v,
            _ => return plain_line_events(trimmed),
        };
        let mut out = Vec::new();
        match v.get("type").and_then(Value::as_str) {
            Some("system") => match v.get("subtype").and_then(Value::as_str) {
                Some("init") => {
                    if let Some(id) = v.get("session_id").and_then(Value::as_str) {
                        out.push(AgentEvent::Init {
                            session_id: id.to_string(),
                        });
                    }
                }
                Some("api_retry") => out.push(api_retry(&v)),
                _ => {}
            },
            Some("assistant") => self.assistant(&v, &mut out),
            Some("result") => out.push(AgentEvent::Result(result_info(&v))),
            Some("rate_limit_event") => {
                if let Some(u) = rate_limit_event(&v) {
                    out.push(AgentEvent::UsageLimit(u));
                }
            }
            _ => {}
        }
        out
    }

    fn assistant(&mut self, v: &Value, out: &mut Vec<AgentEvent>) {
        let msg = v.get("message").unwrap_or(&Value::Null);
        let top_level = matches!(v.get("parent_tool_use_id"), None | Some(Value::Null));
        if top_level {
            let id = msg.get("id").and_then(Value::as_str).map(str::to_string);
            if id.is_none() || id != self.last_message_id {
                self.turns += 1;
                self.last_message_id = id;
                out.push(AgentEvent::Turns(self.turns));
            }
        }
        let Some(blocks) = msg.get("content").and_then(Value::as_array) else {
            return;
        };
        for block in blocks {
            match block.get("type").and_then(Value::as_str) {
                Some("tool_use") => {
                    let name = block.get("name").and_then(Value::as_str).unwrap_or("tool");
                    let input = block.get("input").unwrap_or(&Value::Null);
                    out.push(AgentEvent::Activity(self.describe_tool(name, input)));
                }
                Some("text") => {
                    let text = block.get("text").and_then(Value::as_str).unwrap_or("");
                    if let Some(first) = text.lines().map(str::trim).find(|l| !l.is_empty()) {
                        out.push(AgentEvent::Activity(truncate_chars(first, ACTIVITY_CHARS)));
                    }
                }
                _ => {}
            }
        }
    }

    fn describe_tool(&self, name: &str, input: &Value) -> String {
        let s = |key: &str| input.get(key).and_then(Value::as_str).unwrap_or("");
        let text = match name {
            "Write" => format!("writing {}", self.relative(s("file_path"))),
            "Edit" | "MultiEdit" => format!("editing {}", self.relative(s("file_path"))),
            "NotebookEdit" => format!("editing {}", self.relative(s("notebook_path"))),
            "Read" => format!("reading {}", self.relative(s("file_path"))),
            "Bash" => {
                let cmd = s("command").lines().next().unwrap_or("").trim();
                format!("running: {cmd}")
            }
            other => other.to_string(),
        };
        truncate_chars(&text, ACTIVITY_CHARS)
    }

    fn relative(&self, path: &str) -> String {
        let p = Path::new(path);
        for base in [&self.cwd, &self.canonical_cwd].into_iter().flatten() {
            if let Ok(rel) = p.strip_prefix(base) {
                let rel = rel.display().to_string();
                return if rel.is_empty() { ".".to_string() } else { rel };
            }
        }
        path.to_string()
    }
}

/// One claude stream-json line, parsed on its own (turns count from 1).
pub fn parse_claude_line(line: &str) -> Vec<AgentEvent> {
    ClaudeStream::new(None).parse_line(line)
}

/// `{"type":"rate_limit_event","rate_limit_info":{"status","resetsAt",
/// "rateLimitType","utilization",…}}`.
fn rate_limit_event(v: &Value) -> Option<super::api::UsageLimit> {
    let info = v.get("rate_limit_info")?;
    let status = info.get("status")?.as_str()?.to_string();
    let resets_at = info.get("resetsAt").and_then(|r| {
        r.as_i64()
            .or_else(|| r.as_f64().map(|f| f as i64))
            .or_else(|| r.as_str()?.parse().ok())
    });
    Some(super::api::UsageLimit {
        status,
        resets_at,
        kind: str_field(info, "rateLimitType"),
        utilization: info
            .get("utilization")
            .and_then(Value::as_f64)
            .filter(|u| u.is_finite()),
    })
}

/// A string field of a JSON object, owned.
fn str_field(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_string)
}

fn api_retry(v: &Value) -> AgentEvent {
    let num = |keys: &[&str]| -> Option<f64> {
        keys.iter()
            .filter_map(|k| v.get(*k))
            .find_map(|x| x.as_f64().or_else(|| x.as_str()?.parse().ok()))
    };
    let status = num(&["error_status", "status"])
        .filter(|s| (0.0..=f64::from(u16::MAX)).contains(s))
        .map(|s| s as u16);
    let delay_ms = num(&["retry_delay_ms", "retry_in_ms", "delay_ms"])
        .filter(|d| d.is_finite() && *d >= 0.0)
        .map(|d| d.round() as u64);
    let attempt = num(&["attempt", "retry_attempt"])
        .filter(|a| (0.0..=f64::from(u32::MAX)).contains(a))
        .map(|a| a as u32);
    AgentEvent::ApiRetry {
        status,
        delay_ms,
        attempt,
    }
}

fn result_info(v: &Value) -> ResultInfo {
    let subtype = v
        .get("subtype")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let is_error = v
        .get("is_error")
        .and_then(Value::as_bool)
        .unwrap_or(!subtype.is_empty() && subtype != "success");
    let reported = v
        .get("total_cost_usd")
        .or_else(|| v.get("cost_usd"))
        .and_then(Value::as_f64);
    let (cost_usd, cost_invalid) = match reported {
        Some(c) if c.is_finite() && (0.0..=MAX_PLAUSIBLE_COST).contains(&c) => (c, None),
        Some(c) => (0.0, Some(c)),
        None => (0.0, None),
    };
    ResultInfo {
        is_error,
        cost_usd,
        cost_invalid,
        turns: v
            .get("num_turns")
            .and_then(Value::as_u64)
            .map(|n| n.min(u64::from(u32::MAX)) as u32)
            .unwrap_or(0),
        // An error result often has no `result` text but an `errors` list
        // ("No conversation found with session ID: …"): that is the reason.
        result: match v.get("result").and_then(Value::as_str) {
            Some(r) if !r.is_empty() => r.to_string(),
            _ => v
                .get("errors")
                .and_then(Value::as_array)
                .map(|es| {
                    es.iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join("; ")
                })
                .unwrap_or_default(),
        },
        session_id: str_field(v, "session_id"),
        api_status: v
            .get("api_error_status")
            .and_then(Value::as_u64)
            .and_then(|n| u16::try_from(n).ok()),
        subtype,
    }
}

/// At most `max` characters; a cut string ends in `…`.
pub(super) fn truncate_chars(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// A line that is not stream-json: its trimmed text is the activity.
pub(super) fn plain_line_events(line: &str) -> Vec<AgentEvent> {
    let t = line.trim();
    if t.is_empty() {
        Vec::new()
    } else {
        vec![AgentEvent::Activity(truncate_chars(t, ACTIVITY_CHARS))]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_events_are_usage_windows() {
        let l = r#"{"type":"rate_limit_event","rate_limit_info":{"status":"rejected","resetsAt":1764640800,"rateLimitType":"five_hour","utilization":1.0},"session_id":"s"}"#;
        assert_eq!(
            parse_claude_line(l),
            vec![AgentEvent::UsageLimit(crate::agent::api::UsageLimit {
                status: "rejected".into(),
                resets_at: Some(1764640800),
                kind: Some("five_hour".into()),
                utilization: Some(1.0),
            })]
        );
    }

    #[test]
    fn parses_claude_lines() {
        let mut p = ClaudeStream::new(Some(Path::new("/w/tree")));
        assert_eq!(
            p.parse_line(r#"{"type":"system","subtype":"init","session_id":"abc","tools":[]}"#),
            [AgentEvent::Init {
                session_id: "abc".into()
            }]
        );
        let a = r#"{"type":"assistant","message":{"id":"m1","content":[{"type":"tool_use","name":"Write","input":{"file_path":"/w/tree/ch/01.md","content":"x"}}]},"parent_tool_use_id":null}"#;
        assert_eq!(
            p.parse_line(a),
            [
                AgentEvent::Turns(1),
                AgentEvent::Activity("writing ch/01.md".into())
            ]
        );
        // Same message id, next content block: no new turn.
        let b = r#"{"type":"assistant","message":{"id":"m1","content":[{"type":"text","text":"\n  Done with the draft.\nMore"}]}}"#;
        assert_eq!(
            p.parse_line(b),
            [AgentEvent::Activity("Done with the draft.".into())]
        );
        let c = r#"{"type":"assistant","message":{"id":"m2","content":[{"type":"tool_use","name":"Read","input":{"file_path":"/etc/hosts"}},{"type":"tool_use","name":"Bash","input":{"command":"ls -la\necho hi"}},{"type":"tool_use","name":"Edit","input":{"file_path":"/w/tree/a.md"}},{"type":"tool_use","name":"Glob","input":{}}]}}"#;
        assert_eq!(
            p.parse_line(c),
            [
                AgentEvent::Turns(2),
                AgentEvent::Activity("reading /etc/hosts".into()),
                AgentEvent::Activity("running: ls -la".into()),
                AgentEvent::Activity("editing a.md".into()),
                AgentEvent::Activity("Glob".into()),
            ]
        );
        // Sub-agent messages do not count as turns.
        let d = r#"{"type":"assistant","message":{"id":"m3","content":[]},"parent_tool_use_id":"toolu_1"}"#;
        assert_eq!(p.parse_line(d), []);
        assert_eq!(p.turns(), 2);
        let r = r#"{"type":"system","subtype":"api_retry","attempt":2,"max_retries":10,"retry_delay_ms":519.83,"error_status":429,"error":"rate_limit"}"#;
        assert_eq!(
            p.parse_line(r),
            [AgentEvent::ApiRetry {
                status: Some(429),
                delay_ms: Some(520),
                attempt: Some(2)
            }]
        );
        let r = r#"{"type":"system","subtype":"api_retry","retry_in_ms":100,"error_status":null}"#;
        assert_eq!(
            p.parse_line(r),
            [AgentEvent::ApiRetry {
                status: None,
                delay_ms: Some(100),
                attempt: None
            }]
        );
        let res = r#"{"type":"result","subtype":"success","is_error":false,"num_turns":4,"result":"ok","session_id":"abc","total_cost_usd":0.25}"#;
        assert_eq!(
            p.parse_line(res),
            [AgentEvent::Result(ResultInfo {
                is_error: false,
                subtype: "success".into(),
                cost_usd: 0.25,
                turns: 4,
                result: "ok".into(),
                session_id: Some("abc".into()),
                api_status: None,
                cost_invalid: None,
            })]
        );
        // A cost that is not one is reported as such, and counts 0 here.
        for bad in ["-999.92", "1e308"] {
            let line = format!(
                r#"{{"type":"result","subtype":"success","is_error":false,"total_cost_usd":{bad}}}"#
            );
            match &p.parse_line(&line)[..] {
                [AgentEvent::Result(r)] => {
                    assert_eq!(r.cost_usd, 0.0, "{bad}");
                    assert_eq!(r.cost_invalid, Some(bad.parse().unwrap()), "{bad}");
                }
                other => panic!("{other:?}"),
            }
        }
        let err = r#"{"type":"result","subtype":"error_max_turns"}"#;
        match &p.parse_line(err)[..] {
            [AgentEvent::Result(r)] => assert!(r.is_error),
            other => panic!("{other:?}"),
        }
        // The real line claude prints for a `--resume` of a lost session.
        let lost = r#"{"type":"result","subtype":"error_during_execution","is_error":true,"num_turns":0,"session_id":"1b4e","total_cost_usd":0,"errors":["No conversation found with session ID: 1b4e"]}"#;
        match &p.parse_line(lost)[..] {
            [AgentEvent::Result(r)] => {
                assert!(r.is_error);
                assert_eq!(r.result, "No conversation found with session ID: 1b4e");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            p.parse_line("plain words"),
            [AgentEvent::Activity("plain words".into())]
        );
        assert_eq!(p.parse_line(r#"{"type":"user","message":{}}"#), []);
        assert_eq!(p.parse_line("   "), []);
        assert_eq!(
            parse_claude_line("[1,2]"),
            [AgentEvent::Activity("[1,2]".into())]
        );
    }

    #[test]
    fn truncation_is_char_safe() {
        assert_eq!(truncate_chars("héllo", 10), "héllo");
        let t = truncate_chars(&"é".repeat(200), ACTIVITY_CHARS);
        assert_eq!(t.chars().count(), ACTIVITY_CHARS);
        assert!(t.ends_with('…'));
    }
}
