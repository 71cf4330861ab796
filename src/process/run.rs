//! Running one async child to its end: spawn it contained (see
//! [`super::spawn`]), copy stdout and stderr to their logs and hand their
//! lines to the caller as they come, enforce a wall clock and an idle
//! timeout, obey a stop request, end the whole group and reap.
//!
//! What the lines mean is the caller's business (an agent's stream-json,
//! say): this module knows nothing about what it runs.
//!
//! - **Ending the group.** Whatever way the run ends, nothing of the process
//!   group outlives [`run_job`]: when the leader exits by itself, members it
//!   left behind (background jobs) get SIGTERM, `kill_grace`, SIGKILL, and
//!   the run still counts as [`End::Exited`]. If the future is dropped
//!   midway, the group gets SIGKILL.
//! - **Timeouts.** A zero `timeout` or `idle_timeout` means "no limit".
//!   Output on either pipe counts as activity for the idle timer.

use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::group::{end_group, members_now, sweep_leftover, GroupGuard};
use super::proc::{new_token, record_of};
use super::spawn::{SpawnSpec, Spawner};
use crate::model::ProcessRecord;

/// Longest stdout line kept for the caller; longer lines still go to the
/// log in full but are handed over cut, as not complete.
const MAX_LINE: usize = 8 * 1024 * 1024;
/// After the group is gone, how long to wait for the output pipes to close
/// (a process that left the group may still hold them).
const DRAIN_LIMIT: Duration = Duration::from_secs(2);

/// Everything needed to run one child.
#[derive(Debug, Clone)]
pub struct Job {
    pub program: String,
    pub args: Vec<String>,
    pub cwd: PathBuf,
    /// Added to the supervisor's environment.
    pub env: Vec<(String, String)>,
    /// Raw stdout is appended here.
    pub stdout_log: PathBuf,
    /// Raw stderr is appended here.
    pub stderr_log: PathBuf,
    pub timeout: Duration,
    pub idle_timeout: Duration,
    pub kill_grace: Duration,
}

/// One line of output, without its line ending.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// `complete` is false when the line was longer than the parse limit
    /// and has been cut.
    Stdout {
        line: String,
        complete: bool,
    },
    Stderr(String),
    /// The leader exited by itself (what it printed may still be on its
    /// way, and what it left is ended next): said at once, so a caller
    /// that waits for the program to be up or done need not wait for that.
    Exited,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum End<S> {
    /// The process exited by itself.
    Exited,
    /// Wall-clock timeout.
    Timeout,
    /// No output for idle_timeout.
    Idle,
    /// The caller asked it to stop.
    Stopped(S),
}

/// Why a child could not be started.
#[derive(Debug)]
pub enum StartError {
    /// Its working directory does not exist.
    NoCwd,
    /// A log could not be opened.
    Log(anyhow::Error),
    /// The spawn itself failed.
    Spawn(io::Error),
    /// It was gone before its pid could be read.
    Vanished,
}

/// A run that ended.
#[derive(Debug, Clone)]
pub struct Finished<S> {
    pub end: End<S>,
    /// The leader's exit status, when it was reaped (none when the run was
    /// stopped before it started).
    pub status: Option<ExitStatus>,
}

/// Runs `job` to its end. `on_start` gets the group's record as soon as the
/// child runs, before any output; `on_output` gets every line in order, the
/// ones printed before the end included. A stop request already present in
/// `stop` ends the run before anything is started.
pub async fn run_job<S: Copy>(
    spawner: &Spawner,
    job: Job,
    mut stop: watch::Receiver<Option<S>>,
    on_start: impl FnOnce(ProcessRecord),
    mut on_output: impl FnMut(Output),
) -> Result<Finished<S>, StartError> {
    let already = *stop.borrow_and_update();
    if let Some(req) = already {
        return Ok(Finished {
            end: End::Stopped(req),
            status: None,
        });
    }
    match tokio::fs::metadata(&job.cwd).await {
        Ok(m) if m.is_dir() => {}
        _ => return Err(StartError::NoCwd),
    }
    let stdout_log = open_log(&job.stdout_log).await.map_err(StartError::Log)?;
    let stderr_log = open_log(&job.stderr_log).await.map_err(StartError::Log)?;

    let token = new_token();
    let spec = SpawnSpec {
        program: job.program.clone(),
        args: job.args.clone(),
        cwd: job.cwd.clone(),
        env: job.env.clone(),
        token,
        kill_grace: job.kill_grace,
    };
    let mut child = spawner.spawn(spec).await.map_err(StartError::Spawn)?;
    let start = Instant::now();
    let Some(pid) = child.id().map(|p| p as i32) else {
        return Err(StartError::Vanished);
    };
    let rec = record_of(pid, token);
    let mut guard = GroupGuard::new(rec);
    on_start(rec);

    let (otx, mut orx) = mpsc::unbounded_channel();
    let mut pumps = Vec::new();
    if let Some(out) = child.stdout.take() {
        pumps.push(tokio::spawn(pump(out, stdout_log, true, otx.clone())));
    }
    if let Some(err) = child.stderr.take() {
        pumps.push(tokio::spawn(pump(err, stderr_log, false, otx.clone())));
    }
    drop(otx);

    let wall = deadline(start, job.timeout);
    let mut idle = deadline(start, job.idle_timeout);
    let mut output_open = true;
    let mut stop_open = true;
    let mut status: Option<ExitStatus> = None;
    let end = loop {
        tokio::select! {
            msg = orx.recv(), if output_open => match msg {
                Some(m) => {
                    idle = deadline(Instant::now(), job.idle_timeout);
                    on_output(m);
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
                on_output(Output::Exited);
                break End::Exited;
            }
            _ = tokio::time::sleep_until(wall) => break End::Timeout,
            _ = tokio::time::sleep_until(idle) => break End::Idle,
            changed = stop.changed(), if stop_open => match changed {
                Ok(()) => {
                    let req = *stop.borrow_and_update();
                    if let Some(req) = req {
                        break End::Stopped(req);
                    }
                }
                Err(_) => stop_open = false,
            },
        }
    };

    if matches!(end, End::Exited) && status.is_none() {
        // wait() failed: the leader is reaped or unknown; only sweep members.
        let members = members_now(rec).await;
        if !members.is_empty() {
            let grace = job.kill_grace;
            let _ = tokio::task::spawn_blocking(move || sweep_leftover(&rec, grace)).await;
        }
    } else {
        end_group(&mut child, rec, job.kill_grace, &mut status).await;
    }
    guard.leader_reaped = guard.leader_reaped || status.is_some();

    // What the child printed before it ended is still worth reading.
    let _ = tokio::time::timeout(DRAIN_LIMIT, async {
        while let Some(m) = orx.recv().await {
            on_output(m);
        }
    })
    .await;
    for p in &pumps {
        p.abort();
    }
    guard.disarm();
    Ok(Finished { end, status })
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

/// `start + d`, with zero meaning "never" and no overflow.
fn deadline(start: Instant, d: Duration) -> Instant {
    let far = Duration::from_secs(100 * 365 * 24 * 3600);
    if d.is_zero() {
        return start + far;
    }
    start.checked_add(d).unwrap_or(start + far)
}
