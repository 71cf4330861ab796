//! Agents: claude's command line, what its output means, and one attempt
//! of an agent run to its end through [`process`], which
//! owns the spawning (own process group, the keeper, the token a
//! later sweep needs), the timeouts and stopping the whole group.
//!
//! Decisions worth knowing:
//!
//! - **Events.** [`run`] sends [`AgentEvent::Started`] first (nothing else
//!   precedes it), then the events parsed from stdout in output order, and
//!   [`AgentEvent::Exited`] the moment the agent exits by itself (its last
//!   lines may still follow: they are drained while what it left is
//!   ended). Stderr produces no events: it goes to the stderr log and the
//!   outcome's `stderr_tail`, and counts as output for the idle timer.
//! - **Ending the group.** Whatever way the attempt ends, nothing of the
//!   process group outlives [`run`]: when the leader exits by itself, members
//!   it left behind (background jobs) get SIGTERM, `kill_grace`, SIGKILL, and
//!   the attempt still counts as [`Ending::Exited`]. If the `run` future is
//!   dropped midway, the group gets SIGKILL.
//! - **Timeouts.** A zero `timeout` or `idle_timeout` means "no limit".
//! - **Long prompts.** A prompt over [`MAX_PROMPT_ARG`] bytes is not put on
//!   the command line; claude gets a short prompt that tells it to read its
//!   instructions from the file named by `$LOKI_PROMPT_FILE`
//!   ([`claude_args_with_prompt_file`] names the file itself).
//! - **Turns** are counted per distinct top-level assistant message id
//!   (claude prints one `assistant` line per content block); the outcome
//!   prefers claude's own `num_turns` from the `result` line.

pub mod api;
pub mod sandbox;
pub mod standin;
mod stream;

use std::collections::VecDeque;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::config::AgentSettings;
use crate::model::ProcessRecord;
use crate::process::{self, End, Job, Output, Spawner, StartError};
pub use stream::{parse_claude_line, ClaudeStream, ResultInfo};
use stream::{plain_line_events, truncate_chars};

/// Prompts longer than this are not passed on the command line (Linux caps
/// one argument at 128 KiB); the agent is told to read `LOKI_PROMPT_FILE`.
pub const MAX_PROMPT_ARG: usize = 100 * 1024;

/// Stderr lines kept for [`AgentOutcome::stderr_tail`].
const STDERR_TAIL_LINES: usize = 20;
/// Longest stderr line kept in the tail.
const STDERR_TAIL_LINE_CHARS: usize = 400;

/// Everything needed to start one attempt's agent.
#[derive(Debug, Clone)]
pub struct Launch {
    pub program: String,
    pub args: Vec<String>,
    pub cwd: PathBuf,
    /// Added to the supervisor's environment.
    pub env: Vec<(String, String)>,
    /// Raw stdout lines go here (`.loki/logs/<id>/attempt-<n>.jsonl`).
    pub transcript: PathBuf,
    /// Raw stderr goes here (`.loki/logs/<id>/attempt-<n>.stderr.log`).
    pub stderr_log: PathBuf,
    /// Parse stdout as claude stream-json.
    pub claude: bool,
    pub timeout: Duration,
    pub idle_timeout: Duration,
    pub kill_grace: Duration,
    /// Run under bubblewrap (`[agent] sandbox = "bwrap"`).
    pub sandbox: Option<sandbox::Sandbox>,
}

/// Why the supervisor stops an agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopRequest {
    /// FEATURE_READY: the agent says its work is done; go on to checks.
    Finish,
    /// Ctrl-C twice / SIGTERM / STOP: the attempt is interrupted (resumable).
    Interrupt,
    /// CANCEL: the stream is cancelled.
    Cancel,
    /// The API refused the credentials; the swarm pauses.
    Auth,
}

/// What the agent task reports while the agent runs.
#[derive(Debug, Clone, PartialEq)]
pub enum AgentEvent {
    /// The process is running; record it for crash recovery.
    Started(ProcessRecord),
    /// claude's system/init: the session id.
    Init {
        session_id: String,
    },
    /// Latest activity: "writing chapters/ch03.md", "reading outline.md", or a plain output line.
    Activity(String),
    /// claude's system/api_retry (rate limit, overload, authentication).
    ApiRetry {
        status: Option<u16>,
        delay_ms: Option<u64>,
        attempt: Option<u32>,
    },
    /// claude's `rate_limit_event`: where the subscription's usage window
    /// stands.
    UsageLimit(api::UsageLimit),
    /// A turn ended (assistant message); running count.
    Turns(u32),
    Result(ResultInfo),
    /// The agent exited by itself; its end is being handled (what it left
    /// is ended, its last output read). It is no longer coming up: the
    /// start pacing need not wait for that handling.
    Exited,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Ending {
    /// The process exited by itself.
    Exited,
    /// Wall-clock timeout.
    Timeout,
    /// No output for idle_timeout.
    Idle,
    /// The supervisor stopped it.
    Stopped(StopRequest),
    /// It could not be started.
    SpawnFailed(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct AgentOutcome {
    pub ending: Ending,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub result: Option<ResultInfo>,
    pub session_id: Option<String>,
    pub turns: u32,
    /// Last few stderr lines, for failure reasons.
    pub stderr_tail: String,
}

/// claude's arguments: `-p <prompt> --output-format stream-json --verbose
/// --model <model> --permission-mode <mode>` (or
/// `--dangerously-skip-permissions` for bypassPermissions), `--resume <id>`
/// when resuming, `--max-budget-usd` when set, then the user's `args`.
pub fn claude_args(agent: &AgentSettings, prompt: &str, resume: Option<&str>) -> Vec<String> {
    claude_args_with_prompt_file(agent, prompt, resume, None)
}

/// [`claude_args`], naming the prompt file in the stand-in prompt used when
/// `prompt` is longer than [`MAX_PROMPT_ARG`] (otherwise the stand-in points
/// at `$LOKI_PROMPT_FILE`).
///
/// A prompt that starts with `-` (YAML front matter, `---`) gets a leading
/// newline: claude's option parser would take it for an unknown option.
pub fn claude_args_with_prompt_file(
    agent: &AgentSettings,
    prompt: &str,
    resume: Option<&str>,
    prompt_file: Option<&Path>,
) -> Vec<String> {
    let prompt = if prompt.len() > MAX_PROMPT_ARG {
        long_prompt_stand_in(prompt.len(), prompt_file)
    } else if prompt.starts_with('-') {
        format!("\n{prompt}")
    } else {
        prompt.to_string()
    };
    let mut args = vec![
        "-p".to_string(),
        prompt,
        "--output-format".to_string(),
        "stream-json".to_string(),
        "--verbose".to_string(),
        "--model".to_string(),
        agent.model.clone(),
    ];
    match agent.permission_mode.as_str() {
        "" => {}
        "bypassPermissions" => args.push("--dangerously-skip-permissions".to_string()),
        mode => {
            args.push("--permission-mode".to_string());
            args.push(mode.to_string());
        }
    }
    if let Some(persona) = &agent.agent_type {
        args.push("--agent".to_string());
        args.push(persona.clone());
    }
    if let Some(id) = resume {
        args.push("--resume".to_string());
        args.push(id.to_string());
    }
    if let Some(budget) = agent.max_budget_usd {
        args.push("--max-budget-usd".to_string());
        // What is left of a budget is a difference of floats: cents suffice.
        let text = format!("{budget:.4}");
        args.push(text.trim_end_matches('0').trim_end_matches('.').to_string());
    }
    args.extend(agent.args.iter().cloned());
    args
}

fn long_prompt_stand_in(len: usize, prompt_file: Option<&Path>) -> String {
    let place = match prompt_file {
        Some(p) => format!(
            "the file {} (its path is also in the environment variable LOKI_PROMPT_FILE)",
            p.display()
        ),
        None => "the file whose absolute path is in the environment variable \
                 LOKI_PROMPT_FILE (for example `cat \"$LOKI_PROMPT_FILE\"`)"
            .to_string(),
    };
    format!(
        "Your instructions are too long for the command line ({len} bytes). \
         Read them in full from {place}, then follow them exactly as if they \
         had been given here."
    )
}

/// A user-facing reason for a failed spawn.
fn spawn_failure(program: &str, err: &io::Error) -> String {
    let is_path = program.contains('/');
    match err.kind() {
        io::ErrorKind::NotFound if is_path && Path::new(program).exists() => format!(
            "cannot start `{program}`: its interpreter (the #! line) was not found; \
             fix the script or set [agent] command"
        ),
        io::ErrorKind::NotFound if is_path => {
            format!("cannot start `{program}`: no such file; check [agent] command")
        }
        io::ErrorKind::NotFound => format!(
            "cannot start `{program}`: not found on PATH; install it or set [agent] command"
        ),
        io::ErrorKind::PermissionDenied => format!(
            "cannot start `{program}`: permission denied (is it executable?); \
             check [agent] command"
        ),
        _ => format!("cannot start `{program}`: {err}"),
    }
}

/// Turns output lines into events and the outcome's fields.
struct Collector {
    claude: Option<ClaudeStream>,
    events: mpsc::UnboundedSender<AgentEvent>,
    result: Option<ResultInfo>,
    session_id: Option<String>,
    turns: u32,
    tail: VecDeque<String>,
}

impl Collector {
    fn handle(&mut self, out: Output) {
        match out {
            Output::Stdout { line, complete } => {
                let evs = match &mut self.claude {
                    Some(parser) if complete => parser.parse_line(&line),
                    Some(_) => vec![AgentEvent::Activity("(a very long output line)".into())],
                    None => plain_line_events(&line),
                };
                for ev in evs {
                    match &ev {
                        AgentEvent::Init { session_id } => {
                            self.session_id = Some(session_id.clone());
                        }
                        AgentEvent::Turns(n) => self.turns = *n,
                        AgentEvent::Result(r) => {
                            if let Some(id) = &r.session_id {
                                self.session_id = Some(id.clone());
                            }
                            self.result = Some(r.clone());
                        }
                        _ => {}
                    }
                    let _ = self.events.send(ev);
                }
            }
            Output::Exited => {
                let _ = self.events.send(AgentEvent::Exited);
            }
            Output::Stderr(line) => {
                if self.tail.len() == STDERR_TAIL_LINES {
                    self.tail.pop_front();
                }
                self.tail
                    .push_back(truncate_chars(&line, STDERR_TAIL_LINE_CHARS));
            }
        }
    }
}

/// Runs one agent to its end: spawn (own process group, stdin closed,
/// keeper), stream stdout/stderr to the logs and `events`, enforce the
/// timeouts, obey `stop`, stop the group, reap.
pub async fn run(
    spawner: &Spawner,
    launch: Launch,
    events: mpsc::UnboundedSender<AgentEvent>,
    stop: watch::Receiver<Option<StopRequest>>,
) -> AgentOutcome {
    let mut outcome = AgentOutcome {
        ending: Ending::Exited,
        exit_code: None,
        signal: None,
        result: None,
        session_id: None,
        turns: 0,
        stderr_tail: String::new(),
    };
    // Paths the agent names inside its worktree are shown relative to it,
    // whichever spelling of the worktree it uses.
    let canonical_cwd = tokio::fs::canonicalize(&launch.cwd).await.ok();
    let mut collector = Collector {
        claude: launch.claude.then(|| {
            let mut p = ClaudeStream::new(Some(&launch.cwd));
            p.canonical_cwd = canonical_cwd;
            p
        }),
        events: events.clone(),
        result: None,
        session_id: None,
        turns: 0,
        tail: VecDeque::new(),
    };
    let (program, args) = match &launch.sandbox {
        Some(sb) => sb.wrap(&launch.program, &launch.args, &launch.cwd),
        None => (launch.program.clone(), launch.args),
    };
    let job = Job {
        program,
        args,
        cwd: launch.cwd.clone(),
        env: launch.env,
        stdout_log: launch.transcript,
        stderr_log: launch.stderr_log,
        timeout: launch.timeout,
        idle_timeout: launch.idle_timeout,
        kill_grace: launch.kill_grace,
    };
    let started = |rec: ProcessRecord| {
        let _ = events.send(AgentEvent::Started(rec));
    };
    let ran = process::run_job(spawner, job, stop, started, |out| collector.handle(out)).await;
    let finished = match ran {
        Ok(f) => f,
        Err(e) => {
            let msg = match e {
                StartError::NoCwd => format!(
                    "cannot start `{}`: its working directory {} does not exist",
                    launch.program,
                    launch.cwd.display()
                ),
                StartError::Log(e) => format!("cannot start the agent: {e:#}"),
                StartError::Spawn(e) => spawn_failure(&launch.program, &e),
                StartError::Vanished => {
                    format!("`{}` exited before it could be recorded", launch.program)
                }
            };
            outcome.ending = Ending::SpawnFailed(msg);
            return outcome;
        }
    };

    if let Some(st) = finished.status {
        outcome.exit_code = st.code();
        outcome.signal = st.signal();
    }
    outcome.ending = match finished.end {
        End::Exited => Ending::Exited,
        End::Timeout => Ending::Timeout,
        End::Idle => Ending::Idle,
        End::Stopped(req) => Ending::Stopped(req),
    };
    outcome.turns = collector
        .result
        .as_ref()
        .map(|r| r.turns)
        .filter(|&t| t > 0)
        .unwrap_or(collector.turns);
    outcome.result = collector.result;
    outcome.session_id = collector.session_id;
    outcome.stderr_tail = collector.tail.into_iter().collect::<Vec<_>>().join("\n");
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> AgentSettings {
        AgentSettings::default()
    }

    #[test]
    fn an_agent_type_is_claudes_persona() {
        let mut s = settings();
        s.agent_type = Some("character-designer".into());
        let a = claude_args(&s, "do it", Some("sess"));
        let at = a.iter().position(|x| x == "--agent").expect("--agent");
        assert_eq!(a[at + 1], "character-designer");
    }

    #[test]
    fn claude_args_basic() {
        let a = claude_args(&settings(), "do it", None);
        assert_eq!(
            a,
            [
                "-p",
                "do it",
                "--output-format",
                "stream-json",
                "--verbose",
                "--model",
                "sonnet",
                "--permission-mode",
                "acceptEdits"
            ]
        );
    }

    #[test]
    fn claude_args_bypass_resume_budget_user_args() {
        let mut s = settings();
        s.permission_mode = "bypassPermissions".into();
        s.max_budget_usd = Some(2.5 - 0.1 - 0.1 - 0.1 + 0.3);
        s.args = vec!["--max-turns".into(), "7".into()];
        let a = claude_args(&s, "x", Some("sess-1"));
        assert_eq!(
            a[7..],
            [
                "--dangerously-skip-permissions",
                "--resume",
                "sess-1",
                "--max-budget-usd",
                "2.5",
                "--max-turns",
                "7"
            ]
        );
        assert!(!a.iter().any(|x| x == "--permission-mode"));
    }

    #[test]
    fn claude_args_long_prompt_points_at_the_file() {
        let long = "x".repeat(MAX_PROMPT_ARG + 1);
        let a = claude_args(&settings(), &long, None);
        assert!(a[1].len() < 1000);
        assert!(a[1].contains("LOKI_PROMPT_FILE"));
        let a = claude_args_with_prompt_file(
            &settings(),
            &long,
            None,
            Some(Path::new("/r/.loki/runs/a/attempt-1/prompt.md")),
        );
        assert!(a[1].contains("/r/.loki/runs/a/attempt-1/prompt.md"));
        let exact = "y".repeat(MAX_PROMPT_ARG);
        assert_eq!(claude_args(&settings(), &exact, None)[1], exact);
    }

    #[test]
    fn claude_args_dash_prompt_is_not_an_option() {
        let a = claude_args(&settings(), "---\ntitle: x\n---\nWrite.", None);
        assert!(a[1].starts_with('\n'));
        assert!(a[1].ends_with("Write."));
    }

    #[test]
    fn spawn_failure_messages() {
        let nf = io::Error::from(io::ErrorKind::NotFound);
        assert!(spawn_failure("claude", &nf).contains("not found on PATH"));
        assert!(spawn_failure("./nope/agent", &nf).contains("no such file"));
        let pd = io::Error::from(io::ErrorKind::PermissionDenied);
        assert!(spawn_failure("/etc/hosts", &pd).contains("permission denied"));
    }

    /// The dispatcher moves `run` into tasks and shares the spawner.
    #[allow(dead_code)]
    fn run_future_is_send(
        sp: &Spawner,
        l: Launch,
        tx: mpsc::UnboundedSender<AgentEvent>,
        rx: watch::Receiver<Option<StopRequest>>,
    ) {
        fn is_send<T: Send>(_: T) {}
        fn is_sync<T: Send + Sync>() {}
        is_send(run(sp, l, tx, rx));
        is_sync::<Spawner>();
    }
}
