//! Read-only views for people: `loki logs` (an attempt's transcript rendered
//! from its JSON lines) and `loki doctor` (is this machine ready for a night
//! run?). Nothing here changes state.

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::error::Error;
use crate::model::Layout;
use crate::model::{Status, StreamState};
use crate::store::{StateStore, SupervisorLock};

/// One transcript line for a person: `None` for lines not worth showing.
pub fn render_line(line: &str) -> Option<String> {
    let v: serde_json::Value = match serde_json::from_str(line) {
        Ok(v) => v,
        Err(_) => return Some(line.to_string()),
    };
    let short = |s: &str, n: usize| -> String {
        let one = s.split_whitespace().collect::<Vec<_>>().join(" ");
        if one.chars().count() > n {
            format!("{}…", one.chars().take(n).collect::<String>())
        } else {
            one
        }
    };
    match (v["type"].as_str(), v["subtype"].as_str()) {
        (Some("system"), Some("init")) => Some(format!(
            "session {} ({}, {})",
            v["session_id"].as_str().unwrap_or("?"),
            v["model"].as_str().unwrap_or("?"),
            v["cwd"].as_str().unwrap_or("?")
        )),
        (Some("system"), Some("api_retry")) => Some(format!(
            "! API {} — retry {} of {} in {} ms",
            v["error_status"]
                .as_u64()
                .map(|s| s.to_string())
                .unwrap_or_else(|| "error".into()),
            v["attempt"].as_u64().unwrap_or(0),
            v["max_retries"].as_u64().unwrap_or(0),
            v["retry_delay_ms"].as_f64().unwrap_or(0.0).round()
        )),
        (Some("assistant"), _) => {
            let mut out = Vec::new();
            for block in v["message"]["content"].as_array().into_iter().flatten() {
                match block["type"].as_str() {
                    Some("text") => out.push(format!(
                        "assistant: {}",
                        short(block["text"].as_str().unwrap_or(""), 400)
                    )),
                    Some("tool_use") => {
                        let input = &block["input"];
                        let what = input["file_path"]
                            .as_str()
                            .or_else(|| input["command"].as_str())
                            .or_else(|| input["pattern"].as_str())
                            .map(|s| short(s, 200))
                            .unwrap_or_default();
                        out.push(format!(
                            "→ {} {what}",
                            block["name"].as_str().unwrap_or("tool")
                        ));
                    }
                    Some("thinking") => out.push("(thinking)".into()),
                    _ => {}
                }
            }
            (!out.is_empty()).then(|| out.join("\n"))
        }
        (Some("user"), _) => {
            let mut out = Vec::new();
            for block in v["message"]["content"].as_array().into_iter().flatten() {
                if block["type"] == "tool_result" {
                    let text = match &block["content"] {
                        serde_json::Value::String(s) => s.clone(),
                        serde_json::Value::Array(a) => a
                            .iter()
                            .filter_map(|b| b["text"].as_str())
                            .collect::<Vec<_>>()
                            .join(" "),
                        _ => String::new(),
                    };
                    let mark = if block["is_error"] == true {
                        "← error"
                    } else {
                        "←"
                    };
                    out.push(format!("{mark} {}", short(&text, 200)));
                }
            }
            (!out.is_empty()).then(|| out.join("\n"))
        }
        (Some("result"), sub) => Some(format!(
            "= {}{}: {} turns, ${:.4}, {:.1}s\n{}",
            sub.unwrap_or("result"),
            if v["is_error"] == true {
                " (error)"
            } else {
                ""
            },
            v["num_turns"].as_u64().unwrap_or(0),
            v["total_cost_usd"].as_f64().unwrap_or(0.0),
            v["duration_ms"].as_f64().unwrap_or(0.0) / 1000.0,
            v["result"].as_str().unwrap_or("")
        )),
        _ => None,
    }
}

/// `loki logs <id> [--attempt N] [--follow] [--raw]`.
///
/// `--raw` prints the transcript's JSON lines and nothing else, so the output
/// can be piped to `jq`. `--follow` waits (saying so on stderr) for an attempt
/// that has not written its transcript yet, and prints until the attempt ends.
pub fn logs(root: &Path, id: &str, attempt: Option<u32>, follow: bool, raw: bool) -> Result<i32> {
    let layout = Layout::new(root);
    let store = StateStore::new(layout.state_dir());
    let (n, path, file) = open_transcript(&layout, &store, id, attempt, follow)?;
    if !raw {
        println!("# {id} attempt {n} — {}", path.display());
    }
    let mut reader = BufReader::new(file);
    let mut out = std::io::stdout();
    // Bytes, not text: an agent may write anything, and one invalid UTF-8
    // byte is shown as a replacement character, never an error.
    let mut bytes = Vec::new();
    loop {
        bytes.clear();
        let got = reader
            .read_until(b'\n', &mut bytes)
            .with_context(|| format!("reading {}", path.display()))?;
        let line = String::from_utf8_lossy(&bytes);
        if got > 0 && line.ends_with('\n') {
            print_line(&mut out, line.trim_end(), raw);
            continue;
        }
        if follow {
            // A half-written line: rewind and wait for the rest.
            if got > 0 {
                reader
                    .seek(SeekFrom::Current(-(got as i64)))
                    .context("seeking in the transcript")?;
            }
            if attempt_running(&store, id, n) {
                if supervisor_alive(&layout) {
                    std::thread::sleep(FOLLOW_POLL);
                    continue;
                }
                eprintln!(
                    "the supervisor is gone while attempt {n} of `{id}` was running; `loki run` resumes it"
                );
            }
            // The attempt has ended: what it wrote last (perhaps while we
            // looked at its state, perhaps without a final newline) is shown.
            let mut rest = Vec::new();
            reader
                .read_to_end(&mut rest)
                .with_context(|| format!("reading {}", path.display()))?;
            for l in String::from_utf8_lossy(&rest).lines() {
                print_line(&mut out, l, raw);
            }
        } else if got > 0 {
            print_line(&mut out, line.trim_end(), raw);
        }
        break;
    }
    let stderr = layout.stderr_log(id, n);
    if !raw {
        if let Ok(text) = std::fs::read(&stderr).map(|b| String::from_utf8_lossy(&b).into_owned()) {
            if !text.trim().is_empty() {
                println!("# stderr ({})", stderr.display());
                print!("{text}");
            }
        }
    }
    Ok(0)
}

/// How often `--follow` looks for more of the transcript.
const FOLLOW_POLL: Duration = Duration::from_millis(200);

/// Whether a supervisor holds the lock: without one, a stream recorded as
/// preparing or running is what a killed supervisor left, and nothing will
/// write its transcript until the next `loki run`. A lock that cannot be
/// read counts as held (keep following rather than stop early).
fn supervisor_alive(layout: &Layout) -> bool {
    SupervisorLock::holder(&layout.state_dir())
        .map(|pid| pid.is_some())
        .unwrap_or(true)
}

/// Whether attempt `n` of `id` is still writing its transcript.
fn attempt_running(store: &StateStore, id: &str, n: u32) -> bool {
    store
        .load(id)
        .ok()
        .flatten()
        .is_some_and(|s| s.attempt == n && matches!(s.status, Status::Preparing | Status::Running))
}

/// Whether attempt `n` of `st` has yet to write its transcript: it is being
/// prepared or started, or it is a later attempt of a stream still going.
fn transcript_may_come(st: &StreamState, n: u32) -> bool {
    if st.attempt == n {
        matches!(st.status, Status::Preparing | Status::Running)
    } else {
        st.attempt < n && !st.status.is_terminal()
    }
}

/// Opens the transcript `loki logs` shows: the given attempt or the latest.
/// With `follow`, an attempt that has not started writing yet is waited for.
fn open_transcript(
    layout: &Layout,
    store: &StateStore,
    id: &str,
    attempt: Option<u32>,
    follow: bool,
) -> Result<(u32, PathBuf, std::fs::File)> {
    let mut told = false;
    loop {
        let st = store.load(id)?;
        let latest = st.as_ref().map(|s| s.attempt).filter(|n| *n > 0);
        // Following a stream that has not started: its first attempt.
        let first = st.as_ref().filter(|_| follow).map(|_| 1);
        let Some(n) = attempt.or(latest).or(first) else {
            return Err(Error::refusal(format!("stream `{id}` has no attempt yet"))
                .hint("`loki status` lists the streams and their attempts")
                .into());
        };
        let path = layout.transcript(id, n);
        match std::fs::File::open(&path) {
            Ok(f) => return Ok((n, path, f)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(e).with_context(|| format!("opening {}", path.display()));
            }
        }
        let Some(st) = st.filter(|s| follow && transcript_may_come(s, n)) else {
            return Err(Error::refusal(format!(
                "no transcript for attempt {n} of `{id}` at {}",
                path.display()
            ))
            .hint("`loki status` shows which attempts exist")
            .into());
        };
        if st.attempt == n && !supervisor_alive(layout) {
            return Err(Error::refusal(format!(
                "stream `{id}` is recorded as {} in attempt {n}, but no supervisor is running, so no transcript is coming",
                st.status
            ))
            .hint(format!("`loki run` resumes it; then `loki logs {id} --follow`"))
            .into());
        }
        if !told {
            eprintln!(
                "waiting for attempt {n} of `{id}` to start writing its transcript (status: {}); Ctrl-C to stop",
                st.status
            );
            told = true;
        }
        std::thread::sleep(FOLLOW_POLL);
    }
}

fn print_line(out: &mut impl Write, line: &str, raw: bool) {
    let text = if raw {
        Some(line.to_string())
    } else {
        render_line(line)
    };
    if let Some(t) = text {
        let _ = writeln!(out, "{t}");
    }
}

/// One line of `loki doctor`.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub level: &'static str,
    pub what: String,
    pub detail: String,
    pub fix: String,
}

fn finding(
    level: &'static str,
    what: &str,
    detail: impl Into<String>,
    fix: impl Into<String>,
) -> Finding {
    Finding {
        level,
        what: what.into(),
        detail: detail.into(),
        fix: fix.into(),
    }
}

/// `loki doctor`: git, the agent commands, credentials, inotify limits, the
/// dashboard's port, disk, and the swarm file. Exit code 1 when anything FAILs.
pub fn doctor(cwd: &Path, config: Option<&Path>) -> Result<i32> {
    let mut f = Vec::new();
    match crate::process::query_version("git") {
        Some(v) => f.push(finding("OK", "git", v, "")),
        None => f.push(finding("WARN", "git", "the git CLI is not on PATH", "loki run does not need it, but loki demo does, and you will want `git log` to read the audit trail: install git")),
    }
    let root = crate::git::repo_root(cwd);
    match &root {
        Ok(r) => f.push(finding("OK", "repository", r.display().to_string(), "")),
        Err(e) => f.push(finding(
            "FAIL",
            "repository",
            format!("{e:#}"),
            "run loki inside a git repository with at least one commit",
        )),
    }
    let cfg_path = match (config, &root) {
        (Some(p), _) => Some(p.to_path_buf()),
        (None, Ok(r)) => Some(r.join("loki.toml")),
        _ => None,
    };
    // One entry per distinct agent command, with the settings it runs under.
    let mut agents: Vec<crate::config::AgentSettings> = Vec::new();
    let mut wants_bwrap = false;
    if let Some(p) = &cfg_path {
        match crate::config::load(p) {
            Ok(cfg) => {
                f.push(finding(
                    "OK",
                    "swarm file",
                    format!("{} ({} streams)", p.display(), cfg.streams.len()),
                    "",
                ));
                for s in &cfg.streams {
                    wants_bwrap |= s.agent.sandbox == crate::config::Sandbox::Bwrap;
                    if !agents.iter().any(|a| a.command == s.agent.command) {
                        agents.push(s.agent.clone());
                    }
                }
            }
            Err(e) => f.push(finding(
                "FAIL",
                "swarm file",
                e.to_string(),
                "fix the swarm file as the message says (or `loki init` for an example)",
            )),
        }
    }
    if agents.is_empty() {
        agents.push(crate::config::AgentSettings::default());
    }
    let here = cwd.to_path_buf();
    let base = root.as_ref().unwrap_or(&here);
    for a in &agents {
        let c = &a.command;
        // The same test `loki run` makes before it creates anything.
        if let Some((problem, fix)) = crate::config::agent_command_problem(base, a) {
            f.push(finding("FAIL", "agent", problem, fix));
            continue;
        }
        let resolved = crate::process::resolve_command(base, c);
        if !a.is_claude() {
            // A plain agent is never run by doctor: it might do real work.
            f.push(finding("OK", "agent", format!("{c}: found"), ""));
            continue;
        }
        let v = crate::process::agent_version(&resolved);
        if v.is_empty() {
            f.push(finding(
                "FAIL",
                "agent",
                format!("`{c} --version` did not answer within 5 s"),
                "reinstall Claude Code: npm install -g @anthropic-ai/claude-code",
            ));
        } else {
            f.push(finding("OK", "agent", format!("{c}: {v}"), ""));
        }
    }
    let commands: Vec<&String> = agents.iter().map(|a| &a.command).collect();
    if commands
        .iter()
        .any(|c| Path::new(c).file_name().is_some_and(|n| n == "claude"))
    {
        let home = std::env::var_os("HOME")
            .map(std::path::PathBuf::from)
            .unwrap_or_default();
        if std::env::var_os("ANTHROPIC_API_KEY").is_some() {
            f.push(finding("OK", "credentials", "ANTHROPIC_API_KEY is set", ""));
        } else if std::env::var_os("ANTHROPIC_AUTH_TOKEN").is_some() {
            f.push(finding(
                "OK",
                "credentials",
                "ANTHROPIC_AUTH_TOKEN is set",
                "",
            ));
        } else if home.join(".claude/.credentials.json").exists() {
            f.push(finding(
                "OK",
                "credentials",
                "Claude Code login found in ~/.claude",
                "",
            ));
        } else {
            f.push(finding(
                "WARN",
                "credentials",
                "no ANTHROPIC_API_KEY and no Claude Code login found",
                "export ANTHROPIC_API_KEY=… or run `claude` once and /login",
            ));
        }
    }
    // The sandbox: a failure matters only to a swarm that asks for it.
    match crate::agent::sandbox::probe() {
        Ok(bwrap) => f.push(finding(
            "OK",
            "sandbox",
            format!("{} works (`--ro-bind / / true`)", bwrap.display()),
            "",
        )),
        Err((problem, fix)) => f.push(finding(
            if wants_bwrap { "FAIL" } else { "WARN" },
            "sandbox",
            if wants_bwrap {
                format!("sandbox = \"bwrap\" is set, but {problem}")
            } else {
                format!("{problem} (needed only for sandbox = \"bwrap\")")
            },
            fix,
        )),
    }
    let read_num = |p: &str| {
        std::fs::read_to_string(p)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
    };
    match (read_num("/proc/sys/fs/inotify/max_user_watches"), read_num("/proc/sys/fs/inotify/max_user_instances")) {
        (Some(w), Some(i)) if w >= 1024 && i >= 16 => f.push(finding("OK", "inotify", format!("max_user_watches {w}, max_user_instances {i}"), "")),
        (Some(w), Some(i)) => f.push(finding("WARN", "inotify", format!("max_user_watches {w}, max_user_instances {i} are low; loki falls back to polling the signal folder"), "sysctl fs.inotify.max_user_instances=128 fs.inotify.max_user_watches=65536")),
        _ => f.push(finding("WARN", "inotify", "cannot read the inotify limits", "loki falls back to polling the signal folder")),
    }
    // The dashboard's default port (`loki serve`, `loki run --serve`).
    let port = super::serve::DEFAULT_PORT;
    match std::net::TcpListener::bind(("127.0.0.1", port)) {
        Ok(_) => f.push(finding("OK", "dashboard", format!("port {port} on 127.0.0.1 is free for `loki serve`"), "")),
        Err(e) => f.push(finding(
            "WARN",
            "dashboard",
            format!("port {port} on 127.0.0.1 is taken ({e}): a dashboard may already run there"),
            format!("open the one running, or pick another port: `loki serve --port {}` / `loki run --serve={}`", port + 1, port + 1),
        )),
    }
    if let Ok(r) = &root {
        match nix::sys::statvfs::statvfs(r.as_path()) {
            Ok(s) => {
                // The field types differ between targets (u32 on some).
                #[allow(clippy::unnecessary_cast)]
                let free = s.blocks_available() as u64 * s.fragment_size() as u64;
                let gib = free as f64 / (1u64 << 30) as f64;
                let level = if gib < 0.5 {
                    "FAIL"
                } else if gib < 2.0 {
                    "WARN"
                } else {
                    "OK"
                };
                f.push(finding(
                    level,
                    "disk",
                    format!(
                        "{gib:.1} GiB free for worktrees under {}",
                        r.join(".loki").display()
                    ),
                    if level == "OK" {
                        ""
                    } else {
                        "free some disk space: every stream gets a full checkout"
                    },
                ));
            }
            Err(e) => f.push(finding(
                "WARN",
                "disk",
                format!("cannot read free space: {e}"),
                "",
            )),
        }
        if let Ok(Some(pid)) = crate::store::SupervisorLock::holder(&Layout::new(r).state_dir()) {
            f.push(finding(
                "OK",
                "supervisor",
                format!("running (pid {pid})"),
                "",
            ));
        }
    }
    let mut fail = false;
    for x in &f {
        fail |= x.level == "FAIL";
        println!("{:<4}  {:<12} {}", x.level, x.what, x.detail);
        if !x.fix.is_empty() {
            println!("      {:<12} fix: {}", "", x.fix);
        }
    }
    Ok(if fail { 1 } else { 0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transcript_lines_read_like_a_conversation() {
        let init =
            r#"{"type":"system","subtype":"init","session_id":"abc","model":"sonnet","cwd":"/w"}"#;
        assert_eq!(render_line(init).unwrap(), "session abc (sonnet, /w)");
        let tool = r#"{"type":"assistant","message":{"content":[{"type":"tool_use","name":"Write","input":{"file_path":"/w/ch01.md","content":"x"}}]}}"#;
        assert_eq!(render_line(tool).unwrap(), "→ Write /w/ch01.md");
        let res = r#"{"type":"result","subtype":"success","is_error":false,"num_turns":3,"total_cost_usd":0.25,"duration_ms":1500,"result":"Done."}"#;
        assert_eq!(
            render_line(res).unwrap(),
            "= success: 3 turns, $0.2500, 1.5s\nDone."
        );
        let retry = r#"{"type":"system","subtype":"api_retry","attempt":2,"max_retries":10,"retry_delay_ms":1187.4,"error_status":429}"#;
        assert_eq!(
            render_line(retry).unwrap(),
            "! API 429 — retry 2 of 10 in 1187 ms"
        );
        assert_eq!(render_line("plain text").unwrap(), "plain text");
    }
}
