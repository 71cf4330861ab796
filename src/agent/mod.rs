//! Agent processes: building the command line, spawning each agent in its
//! own process group from one long-lived spawner thread (so
//! `PR_SET_PDEATHSIG` fires only when the supervisor dies, not when some
//! worker thread ends), reading its output as it comes, enforcing the wall
//! clock and idle timeouts, and stopping the whole group: `killpg(SIGTERM)`,
//! a grace period, `killpg(SIGKILL)`, reap. `kill_on_drop` is never relied on.
//!
//! Decisions worth knowing:
//!
//! - **Events.** [`run`] sends [`AgentEvent::Started`] first (nothing else
//!   precedes it), then the events parsed from stdout in output order. Stderr
//!   produces no events: it goes to the stderr log and the outcome's
//!   `stderr_tail`, and counts as output for the idle timer.
//! - **Ending the group.** Whatever way the attempt ends, nothing of the
//!   process group outlives [`run`]: when the leader exits by itself, members
//!   it left behind (background jobs) get SIGTERM, `kill_grace`, SIGKILL, and
//!   the attempt still counts as [`Ending::Exited`]. The leader is never
//!   reaped before the first `killpg`, so the group id cannot have been reused.
//!   If the `run` future is dropped midway, the group gets SIGKILL.
//! - **Timeouts.** A zero `timeout` or `idle_timeout` means "no limit".
//! - **Long prompts.** A prompt over [`MAX_PROMPT_ARG`] bytes is not put on
//!   the command line; claude gets a short prompt that tells it to read its
//!   instructions from the file named by `$LOKI_PROMPT_FILE`
//!   ([`claude_args_with_prompt_file`] names the file itself).
//! - **The spawner thread** lives until the process exits, even after its
//!   [`Spawner`] is dropped: the kernel delivers `PR_SET_PDEATHSIG` when the
//!   *thread* that forked a child ends, so ending that thread would kill
//!   every agent it started.
//! - **Turns** are counted per distinct top-level assistant message id
//!   (claude prints one `assistant` line per content block); the outcome
//!   prefers claude's own `num_turns` from the `result` line.

pub mod api;
pub mod standin;

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context;
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::config::AgentSettings;
use crate::store::ProcessRecord;

/// Prompts longer than this are not passed on the command line (Linux caps
/// one argument at 128 KiB); the agent is told to read `LOKI_PROMPT_FILE`.
pub const MAX_PROMPT_ARG: usize = 100 * 1024;

/// Longest stdout line kept for parsing; longer lines still go to the
/// transcript in full but are not parsed.
const MAX_LINE: usize = 8 * 1024 * 1024;
/// Stderr lines kept for [`AgentOutcome::stderr_tail`].
const STDERR_TAIL_LINES: usize = 20;
/// Longest stderr line kept in the tail.
const STDERR_TAIL_LINE_CHARS: usize = 400;
/// Longest activity text.
const ACTIVITY_CHARS: usize = 80;
/// After the group is gone, how long to wait for the output pipes to close
/// (a process that left the group may still hold them).
const DRAIN_LIMIT: Duration = Duration::from_secs(2);
/// After SIGKILL, how long to wait for the leader and the group to vanish.
const KILL_LIMIT: Duration = Duration::from_secs(5);
/// Polling period while waiting for a group to empty.
const POLL: Duration = Duration::from_millis(20);
/// `<command> --version` time limit.
const VERSION_TIMEOUT: Duration = Duration::from_secs(5);

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
    /// `api_error_status`: the HTTP status of the API error that ended the
    /// run (401, 429, …), when claude gives it.
    pub api_status: Option<u16>,
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

/// One spawn, done on the spawner thread.
struct SpawnRequest {
    program: String,
    args: Vec<String>,
    cwd: PathBuf,
    env: Vec<(String, String)>,
    reply: oneshot::Sender<io::Result<tokio::process::Child>>,
}

/// The long-lived thread every agent is forked from.
pub struct Spawner {
    tx: std::sync::mpsc::Sender<SpawnRequest>,
}

impl std::fmt::Debug for Spawner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spawner").finish_non_exhaustive()
    }
}

impl Spawner {
    /// Starts the spawner thread; must be called inside a tokio runtime.
    pub fn start() -> anyhow::Result<Spawner> {
        let handle = tokio::runtime::Handle::try_current()
            .context("the agent spawner must be started inside a tokio runtime")?;
        let (tx, rx) = std::sync::mpsc::channel::<SpawnRequest>();
        // SAFETY: getpid has no preconditions.
        let supervisor = unsafe { libc::getpid() };
        std::thread::Builder::new()
            .name("loki-spawner".into())
            .spawn(move || {
                for req in rx {
                    let spawned = {
                        let _rt = handle.enter();
                        spawn_child(&req, supervisor)
                    };
                    if let Err(Ok(child)) = req.reply.send(spawned) {
                        // Nobody waits for this agent any more (the run was
                        // cancelled while spawning): end it at once.
                        if let Some(pid) = child.id() {
                            let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
                        }
                    }
                }
                drop(handle);
                // PR_SET_PDEATHSIG fires when the forking *thread* ends, so
                // this thread must outlive every agent it started: park it
                // until the process exits.
                loop {
                    std::thread::park();
                }
            })
            .context("starting the agent spawner thread")?;
        Ok(Spawner { tx })
    }

    async fn spawn(&self, launch: &Launch) -> io::Result<tokio::process::Child> {
        let (reply, rx) = oneshot::channel();
        let req = SpawnRequest {
            program: launch.program.clone(),
            args: launch.args.clone(),
            cwd: launch.cwd.clone(),
            env: launch.env.clone(),
            reply,
        };
        self.tx
            .send(req)
            .map_err(|_| io::Error::other("the agent spawner thread has stopped"))?;
        rx.await
            .map_err(|_| io::Error::other("the agent spawner thread dropped the request"))?
    }
}

/// Runs on the spawner thread, inside the runtime's context.
fn spawn_child(req: &SpawnRequest, supervisor: libc::pid_t) -> io::Result<tokio::process::Child> {
    let mut cmd = tokio::process::Command::new(&req.program);
    cmd.args(&req.args)
        .current_dir(&req.cwd)
        .envs(req.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    // SAFETY: the closure runs between fork and exec and only calls
    // async-signal-safe functions (prctl, getppid) without allocating.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
            ) == -1
            {
                return Err(io::Error::last_os_error());
            }
            // The supervisor died before the prctl: nobody would ever stop us.
            if libc::getppid() != supervisor {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    cmd.spawn()
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

/// Keeps a started group from outliving a `run` future that is dropped
/// midway: SIGKILL to the group.
struct GroupGuard {
    rec: ProcessRecord,
    leader_reaped: bool,
    done: bool,
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        // While the leader is unreaped its pid (= the pgid) cannot be reused.
        if !self.leader_reaped || !group_members(&self.rec).is_empty() {
            let _ = killpg(Pid::from_raw(self.rec.pgid), Signal::SIGKILL);
        }
    }
}

enum Output {
    Stdout { line: String, complete: bool },
    Stderr(String),
}

/// Copies one pipe to its log and sends its lines to the run loop.
async fn pump<R: AsyncRead + Unpin>(
    pipe: R,
    mut log: tokio::fs::File,
    is_stdout: bool,
    tx: mpsc::UnboundedSender<Output>,
) {
    let mut reader = BufReader::with_capacity(64 * 1024, pipe);
    let mut line: Vec<u8> = Vec::new();
    let mut overflow = false;
    let mut log_ok = true;
    loop {
        let (chunk_len, newline) = {
            let chunk = match reader.fill_buf().await {
                Ok(c) => c,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            };
            if chunk.is_empty() {
                break;
            }
            let (take, newline) = match chunk.iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None => (chunk.len(), false),
            };
            let part = &chunk[..take];
            if log_ok && log.write_all(part).await.is_err() {
                log_ok = false;
            }
            let room = MAX_LINE.saturating_sub(line.len());
            if part.len() > room {
                overflow = true;
            }
            line.extend_from_slice(&part[..part.len().min(room)]);
            (take, newline)
        };
        reader.consume(chunk_len);
        if newline {
            if send_line(&tx, &line, !overflow, is_stdout).is_err() {
                // The run loop is gone; keep copying to the log only.
            }
            line.clear();
            overflow = false;
        }
    }
    if !line.is_empty() {
        let _ = send_line(&tx, &line, !overflow, is_stdout);
    }
    let _ = log.flush().await;
}

fn send_line(
    tx: &mpsc::UnboundedSender<Output>,
    raw: &[u8],
    complete: bool,
    is_stdout: bool,
) -> Result<(), ()> {
    let mut text = String::from_utf8_lossy(raw).into_owned();
    while text.ends_with('\n') || text.ends_with('\r') {
        text.pop();
    }
    let msg = if is_stdout {
        Output::Stdout {
            line: text,
            complete,
        }
    } else {
        Output::Stderr(text)
    };
    tx.send(msg).map_err(|_| ())
}

async fn open_log(path: &Path) -> anyhow::Result<tokio::fs::File> {
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir)
            .await
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .await
        .with_context(|| format!("opening {}", path.display()))
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

fn plain_line_events(line: &str) -> Vec<AgentEvent> {
    let t = line.trim();
    if t.is_empty() {
        Vec::new()
    } else {
        vec![AgentEvent::Activity(truncate_chars(t, ACTIVITY_CHARS))]
    }
}

/// `start + d`, with zero meaning "never" and no overflow.
fn deadline(start: Instant, d: Duration) -> Instant {
    let far = Duration::from_secs(100 * 365 * 24 * 3600);
    if d.is_zero() {
        return start + far;
    }
    start.checked_add(d).unwrap_or(start + far)
}

async fn members_now(rec: ProcessRecord) -> Vec<i32> {
    tokio::task::spawn_blocking(move || group_members(&rec))
        .await
        .unwrap_or_default()
}

/// Waits until no member of the group is left or `until` passes; true if
/// the group is empty.
async fn wait_group_empty(rec: ProcessRecord, until: Instant) -> bool {
    loop {
        if members_now(rec).await.is_empty() {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Ends the whole group: SIGTERM, up to `grace` for the leader to exit and
/// the group to empty, SIGKILL, reap. `status` is the leader's exit status if
/// it has already been reaped.
async fn end_group(
    child: &mut tokio::process::Child,
    rec: ProcessRecord,
    grace: Duration,
    status: &mut Option<ExitStatus>,
) {
    let pgid = Pid::from_raw(rec.pgid);
    if status.is_some() && members_now(rec).await.is_empty() {
        return;
    }
    let _ = killpg(pgid, Signal::SIGTERM);
    let until = Instant::now() + grace;
    if status.is_none() {
        if let Ok(Ok(st)) = tokio::time::timeout_at(until, child.wait()).await {
            *status = Some(st);
        }
    }
    if status.is_some() && wait_group_empty(rec, until).await {
        return;
    }
    if status.is_none() || !members_now(rec).await.is_empty() {
        let _ = killpg(pgid, Signal::SIGKILL);
    }
    if status.is_none() {
        if let Ok(Ok(st)) = tokio::time::timeout(KILL_LIMIT, child.wait()).await {
            *status = Some(st);
        }
    }
    wait_group_empty(rec, Instant::now() + KILL_LIMIT).await;
}

/// Runs one agent to its end: spawn (own process group, stdin closed,
/// PDEATHSIG), stream stdout/stderr to the logs and `events`, enforce the
/// timeouts, obey `stop`, stop the group, reap.
pub async fn run(
    spawner: &Spawner,
    launch: Launch,
    events: mpsc::UnboundedSender<AgentEvent>,
    mut stop: watch::Receiver<Option<StopRequest>>,
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
    let failed = |mut o: AgentOutcome, msg: String| {
        o.ending = Ending::SpawnFailed(msg);
        o
    };
    let already = *stop.borrow_and_update();
    if let Some(req) = already {
        outcome.ending = Ending::Stopped(req);
        return outcome;
    }
    match tokio::fs::metadata(&launch.cwd).await {
        Ok(m) if m.is_dir() => {}
        _ => {
            let msg = format!(
                "cannot start `{}`: its working directory {} does not exist",
                launch.program,
                launch.cwd.display()
            );
            return failed(outcome, msg);
        }
    }
    let transcript = match open_log(&launch.transcript).await {
        Ok(f) => f,
        Err(e) => return failed(outcome, format!("cannot start the agent: {e:#}")),
    };
    let stderr_log = match open_log(&launch.stderr_log).await {
        Ok(f) => f,
        Err(e) => return failed(outcome, format!("cannot start the agent: {e:#}")),
    };
    let canonical_cwd = tokio::fs::canonicalize(&launch.cwd).await.ok();

    let token = new_token();
    let mut launch = launch;
    launch
        .env
        .push(("LOKI_AGENT_TOKEN".into(), format!("{token:016x}")));
    let mut child = match spawner.spawn(&launch).await {
        Ok(c) => c,
        Err(e) => return failed(outcome, spawn_failure(&launch.program, &e)),
    };
    let start = Instant::now();
    let Some(pid) = child.id().map(|p| p as i32) else {
        return failed(
            outcome,
            format!("`{}` exited before it could be recorded", launch.program),
        );
    };
    let rec = ProcessRecord {
        pid,
        pgid: pid,
        start_time: proc_start_time(pid).unwrap_or(0),
        boot: boot_hash(),
        token,
    };
    let mut guard = GroupGuard {
        rec,
        leader_reaped: false,
        done: false,
    };
    let _ = events.send(AgentEvent::Started(rec));

    let (otx, mut orx) = mpsc::unbounded_channel();
    let mut pumps = Vec::new();
    if let Some(out) = child.stdout.take() {
        pumps.push(tokio::spawn(pump(out, transcript, true, otx.clone())));
    }
    if let Some(err) = child.stderr.take() {
        pumps.push(tokio::spawn(pump(err, stderr_log, false, otx.clone())));
    }
    drop(otx);

    let mut collector = Collector {
        claude: launch.claude.then(|| {
            let mut p = ClaudeStream::new(Some(&launch.cwd));
            p.canonical_cwd = canonical_cwd;
            p
        }),
        events,
        result: None,
        session_id: None,
        turns: 0,
        tail: VecDeque::new(),
    };

    let wall = deadline(start, launch.timeout);
    let mut idle = deadline(start, launch.idle_timeout);
    let mut output_open = true;
    let mut stop_open = true;
    let mut status: Option<ExitStatus> = None;
    let ending = loop {
        tokio::select! {
            msg = orx.recv(), if output_open => match msg {
                Some(m) => {
                    idle = deadline(Instant::now(), launch.idle_timeout);
                    collector.handle(m);
                }
                None => output_open = false,
            },
            st = child.wait() => {
                match st {
                    Ok(st) => status = Some(st),
                    Err(_) => {
                        // Cannot wait for it: treat it as gone and sweep the group.
                    }
                }
                guard.leader_reaped = true;
                break Ending::Exited;
            }
            _ = tokio::time::sleep_until(wall) => break Ending::Timeout,
            _ = tokio::time::sleep_until(idle) => break Ending::Idle,
            changed = stop.changed(), if stop_open => match changed {
                Ok(()) => {
                    let req = *stop.borrow_and_update();
                    if let Some(req) = req {
                        break Ending::Stopped(req);
                    }
                }
                Err(_) => stop_open = false,
            },
        }
    };

    if ending == Ending::Exited && status.is_none() {
        // wait() failed: the leader is reaped or unknown; only sweep members.
        let members = members_now(rec).await;
        if !members.is_empty() {
            let grace = launch.kill_grace;
            let _ = tokio::task::spawn_blocking(move || sweep_leftover(&rec, grace)).await;
        }
    } else {
        end_group(&mut child, rec, launch.kill_grace, &mut status).await;
    }
    guard.leader_reaped = guard.leader_reaped || status.is_some();

    // What the agent printed before it ended is still worth reading.
    let _ = tokio::time::timeout(DRAIN_LIMIT, async {
        while let Some(m) = orx.recv().await {
            collector.handle(m);
        }
    })
    .await;
    for p in &pumps {
        p.abort();
    }
    guard.done = true;

    if let Some(st) = status {
        outcome.exit_code = st.code();
        outcome.signal = st.signal();
    }
    outcome.ending = ending;
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

/// A stateful reader of claude's stream-json (it counts turns across lines).
#[derive(Debug, Clone, Default)]
pub struct ClaudeStream {
    cwd: Option<PathBuf>,
    canonical_cwd: Option<PathBuf>,
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
    ResultInfo {
        is_error,
        cost_usd: v
            .get("total_cost_usd")
            .or_else(|| v.get("cost_usd"))
            .and_then(Value::as_f64)
            .unwrap_or(0.0),
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
        session_id: v
            .get("session_id")
            .and_then(Value::as_str)
            .map(str::to_string),
        api_status: v
            .get("api_error_status")
            .and_then(Value::as_u64)
            .and_then(|n| u16::try_from(n).ok()),
        subtype,
    }
}

/// At most `max` characters; a cut string ends in `…`.
fn truncate_chars(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// The fields of `/proc/<pid>/stat` loki needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat {
    state: char,
    pgrp: i32,
    start_time: u64,
}

/// Parses `/proc/<pid>/stat`. The command name (field 2) may hold spaces and
/// parentheses, so the fields are split after the *last* `)`.
fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state); field n is fields[n - 3].
    Some(Stat {
        state: fields.first()?.chars().next()?,
        pgrp: fields.get(5 - 3)?.parse().ok()?,
        start_time: fields.get(22 - 3)?.parse().ok()?,
    })
}

fn read_stat(pid: i32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

/// Field 22 of /proc/<pid>/stat (start time in clock ticks since boot).
pub fn proc_start_time(pid: i32) -> Option<u64> {
    if pid <= 0 {
        return None;
    }
    read_stat(pid).map(|s| s.start_time)
}

/// A hash of `/proc/sys/kernel/random/boot_id` (0 when unreadable).
pub fn boot_hash() -> u64 {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|id| crate::util::fnv1a(id.trim().as_bytes()))
        .unwrap_or(0)
}

/// A value no other agent of this machine carries: pid, time and a counter.
fn new_token() -> u64 {
    static COUNT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let seed = format!("{}-{nanos}-{n}", std::process::id());
    crate::util::fnv1a(seed.as_bytes()).max(1)
}

/// Whether `/proc/<pid>/environ` holds `LOKI_AGENT_TOKEN=<token>`.
fn carries_token(pid: i32, token: u64) -> bool {
    let want = format!("LOKI_AGENT_TOKEN={token:016x}");
    std::fs::read(format!("/proc/{pid}/environ"))
        .is_ok_and(|env| env.split(|b| *b == 0).any(|v| v == want.as_bytes()))
}

/// Live processes in the recorded group that started no earlier than its
/// leader did (so a reused pid is never mistaken for ours), for a group this
/// supervisor started and has watched since: while any member lives the
/// kernel never hands the group's number to another process.
///
/// Zombies are not counted (they cannot be signalled and vanish when
/// reaped). Nothing is returned for a record of another boot, or when a
/// live process holds the group's number as its pid but started at another
/// time than the recorded leader (the number was reused for a stranger's
/// group).
pub fn group_members(rec: &ProcessRecord) -> Vec<i32> {
    members(rec, false)
}

/// [`group_members`] of a group recorded by an earlier supervisor. Between
/// the two the group may have emptied and its number gone to a stranger
/// whose own leader has exited too: so when the recorded leader is gone,
/// only processes whose environment carries the record's token count.
pub fn leftover_members(rec: &ProcessRecord) -> Vec<i32> {
    members(rec, true)
}

fn members(rec: &ProcessRecord, leftover: bool) -> Vec<i32> {
    if rec.pgid <= 1 {
        return Vec::new();
    }
    if rec.boot != 0 && rec.boot != boot_hash() {
        return Vec::new();
    }
    let mut leader_ours = false;
    if rec.pid == rec.pgid && rec.start_time != 0 {
        if let Some(leader) = read_stat(rec.pgid) {
            if leader.start_time != rec.start_time && !matches!(leader.state, 'Z' | 'X') {
                return Vec::new();
            }
            leader_ours = leader.start_time == rec.start_time;
        }
    }
    let need_token = leftover && rec.token != 0 && !leader_ours;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut members: Vec<i32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| {
            read_stat(pid).is_some_and(|s| {
                s.pgrp == rec.pgid
                    && s.start_time >= rec.start_time
                    && !matches!(s.state, 'Z' | 'X')
            }) && (!need_token || carries_token(pid, rec.token))
        })
        .collect();
    members.sort_unstable();
    members
}

/// Ends what is left of a group recorded by an earlier supervisor:
/// SIGTERM, `grace`, SIGKILL. Returns how many processes it found.
/// Nothing outside the group members above is ever signalled. Blocking.
///
/// Members are signalled one by one (never `killpg`), re-listed before every
/// round, so a member forked meanwhile is caught by a later round.
pub fn sweep_leftover(rec: &ProcessRecord, grace: Duration) -> usize {
    let found = leftover_members(rec);
    if found.is_empty() {
        return 0;
    }
    // Every round lists with the same care: a leader that dies meanwhile
    // leaves only token carriers to be signalled.
    let signal_all = |sig: Signal| {
        for pid in leftover_members(rec) {
            let _ = kill(Pid::from_raw(pid), sig);
        }
    };
    let poll = std::time::Duration::from_millis(20);
    signal_all(Signal::SIGTERM);
    let until = std::time::Instant::now() + grace;
    while std::time::Instant::now() < until {
        if leftover_members(rec).is_empty() {
            return found.len();
        }
        std::thread::sleep(poll);
    }
    let until = std::time::Instant::now() + KILL_LIMIT;
    loop {
        if leftover_members(rec).is_empty() || std::time::Instant::now() >= until {
            break;
        }
        signal_all(Signal::SIGKILL);
        std::thread::sleep(poll);
    }
    found.len()
}

static VERSIONS: Mutex<BTreeMap<String, String>> = Mutex::new(BTreeMap::new());

/// `<command> --version`, first line, cached per command; "" if it fails.
///
/// Only for Claude Code: a plain agent may not know `--version` and would do
/// its real work instead, so callers never ask one. Run from the temporary
/// folder, never from the user's checkout, limited to 5 seconds; the answer
/// (also "") is cached for the life of the process.
pub fn agent_version(command: &str) -> String {
    if let Ok(cache) = VERSIONS.lock() {
        if let Some(v) = cache.get(command) {
            return v.clone();
        }
    }
    let version = query_version(command).unwrap_or_default();
    if let Ok(mut cache) = VERSIONS.lock() {
        cache.insert(command.to_string(), version.clone());
    }
    version
}

fn query_version(command: &str) -> Option<String> {
    use std::os::unix::process::CommandExt;
    let child = std::process::Command::new(command)
        .arg("--version")
        .current_dir(std::env::temp_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .ok()?;
    let pgid = child.id() as i32;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("loki-version".into())
        .spawn(move || {
            let _ = tx.send(child.wait_with_output());
        })
        .ok()?;
    match rx.recv_timeout(VERSION_TIMEOUT) {
        Ok(Ok(out)) if out.status.success() => {
            let text = String::from_utf8_lossy(&out.stdout);
            Some(text.lines().next().unwrap_or("").trim().to_string())
        }
        Ok(_) => None,
        Err(_) => {
            // Still running (or its output is held open): end its group; the
            // waiting thread then reaps it.
            let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> AgentSettings {
        AgentSettings::default()
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
    fn stat_with_parens_and_spaces_in_comm() {
        let line = "4242 (we(ird) ) name) S 1 4240 4240 0 -1 4194560 100 0 0 0 \
                    1 2 0 0 20 0 1 0 987654 1000 10 18446744073709551615";
        let s = parse_stat(line).unwrap();
        assert_eq!(s.state, 'S');
        assert_eq!(s.pgrp, 4240);
        assert_eq!(s.start_time, 987654);
        assert_eq!(parse_stat("12 (x) S 1"), None);
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn own_start_time_and_group() {
        let me = std::process::id() as i32;
        let st = proc_start_time(me).unwrap();
        assert!(st > 0);
        assert_eq!(proc_start_time(-1), None);
        let pgid = nix::unistd::getpgrp().as_raw();
        let rec = ProcessRecord {
            pid: pgid,
            pgid,
            start_time: 0,
            boot: boot_hash(),
            token: 0,
        };
        assert!(group_members(&rec).contains(&me));
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
            })]
        );
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

    #[test]
    fn version_of_a_missing_command_is_empty() {
        assert_eq!(agent_version("/definitely/not/here"), "");
        assert_eq!(agent_version("/definitely/not/here"), "");
    }
}
