//! Running a child synchronously to its end with its stdout and stderr read
//! together, keeping only the tail (check commands), and running one quietly
//! for its status. The calling thread forks and waits, so the death signal
//! armed for it (see [`super::spawn`]) cannot fire early.

use std::fs;
use std::io::{self, Read};
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::group::kill_now;
use super::proc::{new_token, record_of};
use super::spawn::{contained, Contained};
use crate::model::ProcessRecord;

/// How long to wait for the output to close once the group is gone.
const READ_LIMIT: Duration = Duration::from_secs(2);

/// Told the child's group as soon as it exists, so the caller can record
/// it where a later supervisor's sweep finds it.
pub type OnStart<'a> = &'a (dyn Fn(ProcessRecord) + Sync);

/// One child to run to its end, stdin closed.
#[derive(Clone)]
pub struct Capture<'a> {
    pub program: &'a str,
    pub args: &'a [String],
    pub cwd: &'a Path,
    /// Added to the supervisor's environment.
    pub env: &'a [(String, String)],
    pub timeout: Duration,
    /// How many bytes of the end of the output to keep.
    pub tail: usize,
    pub on_start: Option<OnStart<'a>>,
}

/// Why a captured child could not be started.
#[derive(Debug)]
pub enum CaptureStartError {
    /// The output pipe could not be made (the text says why).
    Pipe(String),
    /// The spawn itself failed.
    Spawn(io::Error),
    /// Its pid does not fit a pid_t.
    Pid,
}

/// How a captured child ended.
#[derive(Debug)]
pub enum Exit {
    Status(ExitStatus),
    /// It ran past the time limit; its group got SIGKILL.
    TimedOut,
    /// Waiting for it failed (the text says why).
    WaitFailed(String),
}

/// What a captured child did.
#[derive(Debug)]
pub struct Captured {
    pub exit: Exit,
    /// The last [`Capture::tail`] bytes of stdout and stderr together.
    pub output: Vec<u8>,
    /// Whether anything before `output` was dropped.
    pub truncated: bool,
    /// Its group, as a record a sweep can act on.
    pub record: ProcessRecord,
}

/// Runs `job` in its own group with the death signal and a token, reading
/// stdout and stderr through one pipe. When the leader exits (or the time
/// limit passes) whatever is left of its group gets SIGKILL, then the
/// leader is reaped. Blocking.
pub fn run_captured(job: &Capture<'_>) -> Result<Captured, CaptureStartError> {
    // Close-on-exec, so children spawned meanwhile by other threads do not
    // inherit the write end (which would keep the output open).
    let (reader, writer) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| CaptureStartError::Pipe(e.to_string()))?;
    let writer2 = writer
        .try_clone()
        .map_err(|e| CaptureStartError::Pipe(e.to_string()))?;
    let token = new_token();
    // Under a keeper that ends what the command leaves at once (no grace:
    // a check's leftovers were always killed outright).
    let kept = contained(
        job.program,
        job.args,
        job.cwd,
        job.env,
        token,
        Some(Duration::ZERO),
    )
    .map_err(CaptureStartError::Spawn)?;
    let (mut command, report) = kept.into_parts();
    command
        .stdout(Stdio::from(writer))
        .stderr(Stdio::from(writer2));
    let spawned = command.spawn();
    // The parent's copies of the write end must close, or reading never ends.
    drop(command);
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => {
            drop(report);
            return Err(CaptureStartError::Spawn(e));
        }
    };
    if let Err(e) = Contained::started(report) {
        let _ = child.wait();
        return Err(CaptureStartError::Spawn(e));
    }
    let Ok(pid) = i32::try_from(child.id()) else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(CaptureStartError::Pid);
    };
    let record = record_of(pid, token);
    if let Some(tell) = job.on_start {
        tell(record);
    }

    let (tx, rx) = mpsc::channel();
    let file = fs::File::from(reader);
    let keep = job.tail;
    std::thread::spawn(move || {
        let _ = tx.send(read_tail(file, keep));
    });

    let started = Instant::now();
    let timeout = job.timeout;
    let mut pause = Duration::from_millis(5);
    // Wait without reaping (WNOWAIT): while the leader is a zombie its pid,
    // and so the group id, cannot be reused, so ending the group is safe.
    let waited: Result<(), Exit> = loop {
        match waitid(
            Id::Pid(Pid::from_raw(pid)),
            WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT,
        ) {
            Ok(WaitStatus::StillAlive) => {}
            Ok(_) => break Ok(()),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => break Err(Exit::WaitFailed(e.to_string())),
        }
        let elapsed = started.elapsed();
        if elapsed >= timeout {
            break Err(Exit::TimedOut);
        }
        std::thread::sleep(pause.min(timeout - elapsed));
        pause = (pause * 2).min(Duration::from_millis(50));
    };
    // Whatever the command left running (in its group or not) ends with it.
    kill_now(&record);
    let status = child.wait();

    let (output, truncated) = rx
        .recv_timeout(READ_LIMIT)
        .unwrap_or_else(|_| (Vec::new(), false));
    let exit = match (waited, status) {
        (Err(why), _) => why,
        (Ok(()), Err(e)) => Exit::WaitFailed(e.to_string()),
        (Ok(()), Ok(status)) => Exit::Status(status),
    };
    Ok(Captured {
        exit,
        output,
        truncated,
        record,
    })
}

/// Keeps the last `keep` bytes of what it reads; true if it dropped some.
fn read_tail(mut r: impl Read, keep: usize) -> (Vec<u8>, bool) {
    let mut buf: Vec<u8> = Vec::new();
    let mut truncated = false;
    let mut chunk = [0u8; 8192];
    loop {
        match r.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if buf.len() > 4 * keep {
                    let cut = buf.len() - keep;
                    buf.drain(..cut);
                    truncated = true;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    if buf.len() > keep {
        let cut = buf.len() - keep;
        buf.drain(..cut);
        truncated = true;
    }
    (buf, truncated)
}

/// A finished quiet run: the child's pid (now reaped) and how it ended.
#[derive(Debug, Clone, Copy)]
pub struct Ran {
    pub pid: i32,
    pub status: ExitStatus,
}

/// Runs `program args…` in the current folder, contained, with all three
/// standard streams closed, and waits for it. Blocking.
pub fn run_quiet(program: &str, args: &[String]) -> io::Result<Ran> {
    let cwd = std::env::current_dir()?;
    let (mut cmd, _) = contained(program, args, &cwd, &[], new_token(), None)?.into_parts();
    let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn()?;
    let pid = i32::try_from(child.id()).map_err(io::Error::other)?;
    let status = child.wait()?;
    Ok(Ran { pid, status })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_end() {
        let data = [b'x'; 100];
        let (t, cut) = read_tail(&data[..], 30);
        assert_eq!((t.len(), cut), (30, true));
        let (t, cut) = read_tail(&b"abc"[..], 30);
        assert_eq!((t, cut), (b"abc".to_vec(), false));
    }

    #[test]
    fn quiet_run_reports_status() {
        let ran = run_quiet("true", &[]).unwrap();
        assert!(ran.status.success() && ran.pid > 0);
        assert!(run_quiet("/definitely/not/here", &[]).is_err());
    }
}
