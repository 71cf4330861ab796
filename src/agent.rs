//! Agent processes: building the command line, spawning each agent in its
//! own process group from one long-lived spawner thread (so
//! `PR_SET_PDEATHSIG` fires only when the supervisor dies, not when some
//! worker thread ends), reading its output as it comes, enforcing the wall
//! clock and idle timeouts, and stopping the whole group: `killpg(SIGTERM)`,
//! a grace period, `killpg(SIGKILL)`, reap. `kill_on_drop` is never relied on.

use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::config::AgentSettings;
use crate::state::ProcessRecord;

/// Prompts longer than this are not passed on the command line (Linux caps
/// one argument at 128 KiB); the agent is told to read `LOKI_PROMPT_FILE`.
pub const MAX_PROMPT_ARG: usize = 100 * 1024;

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
    /// A budget was exceeded.
    Budget,
}

/// The `result` line of claude's stream-json.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResultInfo {
    pub is_error: bool,
    pub subtype: String,
    pub cost_usd: f64,
    pub turns: u32,
    pub result: String,
    pub session_id: Option<String>,
}

/// What the agent task reports while the agent runs.
#[derive(Debug, Clone, PartialEq)]
pub enum AgentEvent {
    /// The process is running; record it for crash recovery.
    Started(ProcessRecord),
    /// claude's system/init: the session id.
    Init { session_id: String },
    /// Latest activity: "writing chapters/ch03.md", "reading outline.md", or a plain output line.
    Activity(String),
    /// claude's system/api_retry (rate limit, overload, authentication).
    ApiRetry { status: Option<u16>, delay_ms: Option<u64>, attempt: Option<u32> },
    /// A turn ended (assistant message); running count.
    Turns(u32),
    Result(ResultInfo),
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
    let _ = (agent, prompt, resume);
    todo!("agent::claude_args")
}

/// The long-lived thread every agent is forked from.
pub struct Spawner {
    _private: (),
}

impl Spawner {
    /// Starts the spawner thread; must be called inside a tokio runtime.
    pub fn start() -> anyhow::Result<Spawner> {
        todo!("Spawner::start")
    }
}

/// Runs one agent to its end: spawn (own process group, stdin closed,
/// PDEATHSIG), stream stdout/stderr to the logs and `events`, enforce the
/// timeouts, obey `stop`, stop the group, reap.
pub async fn run(
    spawner: &Spawner,
    launch: Launch,
    events: mpsc::UnboundedSender<AgentEvent>,
    stop: watch::Receiver<Option<StopRequest>>,
) -> AgentOutcome {
    let _ = (spawner, launch, events, stop);
    todo!("agent::run")
}

/// Field 22 of /proc/<pid>/stat (start time in clock ticks since boot).
pub fn proc_start_time(pid: i32) -> Option<u64> {
    let _ = pid;
    todo!("agent::proc_start_time")
}

/// Live processes in the recorded group that started no earlier than its
/// leader did (so a reused pid is never mistaken for ours).
pub fn group_members(rec: &ProcessRecord) -> Vec<i32> {
    let _ = rec;
    todo!("agent::group_members")
}

/// Ends what is left of a group recorded by an earlier supervisor:
/// SIGTERM, `grace`, SIGKILL. Returns how many processes it found.
/// Nothing outside the group members above is ever signalled. Blocking.
pub fn sweep_leftover(rec: &ProcessRecord, grace: Duration) -> usize {
    let _ = (rec, grace);
    todo!("agent::sweep_leftover")
}

/// `<command> --version`, first line, cached per command; "" if it fails.
pub fn agent_version(command: &str) -> String {
    let _ = command;
    todo!("agent::agent_version")
}
