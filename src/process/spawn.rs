//! Starting a child the one way loki starts any: in its own process group
//! (so the whole group can be signalled and nothing of it mistaken for
//! another's), with `PR_SET_PDEATHSIG` (so it dies with the supervisor) and
//! the [`TOKEN_ENV`] token (so a later supervisor can sweep what it left).
//!
//! Async children are started from one long-lived [`Spawner`] thread: the
//! kernel delivers `PR_SET_PDEATHSIG` when the *thread* that started a
//! child ends, so ending that thread would kill every child it started. A
//! synchronous caller that waits for its child on its own thread may build
//! the command with [`contained`] directly.
//!
//! A kept child (the keeper running the program) is started with nothing
//! to run between fork and exec: the keeper arms its own death signal and
//! checks its parent, and its report pipe is its stdin. So the standard
//! library starts it with `posix_spawn` (a `vfork`), not `fork`: a fork of
//! the supervisor copied its page tables and write-protected its memory,
//! which then cost it about a thousand page faults per stream, and more
//! with every thread busy on another core.

use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::sync::oneshot;

use super::keep::KEEP_SUBCOMMAND;
use super::proc::{token_text, TOKEN_ENV};

/// Where the keeper is (see [`super::keep`]); set once by the loki
/// binary. Without one, children are started directly: a library caller
/// then gets only the group, the death signal of the leader and the token.
static KEEPER: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Makes `exe` (a loki binary that knows `__keep`, normally
/// `/proc/self/exe`) the keeper of every agent and check command started
/// from now on. The first call wins.
pub fn use_keeper(exe: impl Into<PathBuf>) {
    let _ = KEEPER.set(exe.into());
}

/// A child to start: the command (its stdin already set: see
/// [`contained`]), and, when it runs under a keeper, the read end of the
/// pipe on which the keeper says whether the program itself started.
pub(crate) struct Contained {
    pub(crate) cmd: std::process::Command,
    report: Option<OwnedFd>,
}

impl Contained {
    /// To be called right after the spawn (successful or not), with the
    /// command dropped (it holds the pipe's write end): the keeper's word
    /// on the program's start, as the error the spawn itself would have
    /// given without a keeper.
    pub(crate) fn started(report: Option<OwnedFd>) -> io::Result<()> {
        let Some(read) = report else {
            return Ok(());
        };
        let mut buf = [0u8; 4];
        let mut got = 0;
        let mut file = std::fs::File::from(read);
        while got < buf.len() {
            match file.read(&mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        if got == buf.len() {
            return Err(io::Error::from_raw_os_error(i32::from_ne_bytes(buf)));
        }
        Ok(())
    }

    /// Splits it for the caller: set stdout and stderr on the command (never
    /// stdin), spawn, drop the command, then [`Contained::started`] with
    /// the report.
    pub(crate) fn into_parts(self) -> (std::process::Command, Option<OwnedFd>) {
        (self.cmd, self.report)
    }
}

/// `program args…` in `cwd` with `env` added to ours and [`TOKEN_ENV`] set
/// to `token` (last, so nothing overrides it), to be the leader of a new
/// process group that gets a death signal when the thread that starts it
/// ends. The program's stdin is closed (`/dev/null`); stdout and stderr
/// are left to the caller.
///
/// With `kept` (the grace between SIGTERM and SIGKILL) and a keeper set by
/// [`use_keeper`], the leader is the keeper running the program: it arms
/// its own death signal, SIGTERM, which it catches to end every
/// descendant, and reports on its stdin (a pipe) whether the program
/// started, then gives the program `/dev/null` there. Otherwise the program
/// is the leader and its death signal SIGKILL, armed between fork and exec.
///
/// The child refuses to start (ESRCH) when the supervisor died before the
/// death signal was armed: nobody would ever stop it.
pub(crate) fn contained(
    program: &str,
    args: &[String],
    cwd: &Path,
    env: &[(String, String)],
    token: u64,
    kept: Option<Duration>,
) -> io::Result<Contained> {
    // SAFETY: getpid has no preconditions.
    let supervisor = unsafe { libc::getpid() };
    let keeper = kept.and_then(|grace| Some((KEEPER.get()?, grace)));
    let mut report = None;
    let mut cmd = match keeper {
        Some((exe, grace)) => {
            // Close-on-exec; the keeper's stdin is its own copy.
            let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
            let mut cmd = std::process::Command::new(exe);
            cmd.arg0("loki-keep")
                .arg(KEEP_SUBCOMMAND)
                .arg("--grace-ms")
                .arg(grace.as_millis().to_string())
                .arg("--report-fd")
                .arg("0")
                .arg("--parent-pid")
                .arg(supervisor.to_string())
                .arg("--")
                .arg(program)
                .args(args)
                .stdin(Stdio::from(write));
            report = Some(read);
            cmd
        }
        None => {
            let mut cmd = std::process::Command::new(program);
            cmd.args(args).stdin(Stdio::null());
            // SAFETY: the closure runs between fork and exec and only calls
            // async-signal-safe functions (prctl, getppid) without allocating.
            unsafe {
                cmd.pre_exec(move || arm_death_signal(libc::SIGKILL, supervisor));
            }
            cmd
        }
    };
    cmd.current_dir(cwd)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env(TOKEN_ENV, token_text(token))
        .process_group(0);
    Ok(Contained { cmd, report })
}

/// Arms this process's parent-death signal `sig`, then checks that its
/// parent is still `parent`: when the parent died before the signal was
/// armed, nobody would ever stop this process (ESRCH). Only
/// async-signal-safe calls, no allocation: it runs between fork and exec
/// for a direct start, and first thing in the keeper.
pub(crate) fn arm_death_signal(sig: libc::c_int, parent: i32) -> io::Result<()> {
    // SAFETY: prctl with these arguments only sets a flag of this process;
    // getppid has no preconditions.
    unsafe {
        if libc::prctl(
            libc::PR_SET_PDEATHSIG,
            sig as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        ) == -1
        {
            return Err(io::Error::last_os_error());
        }
        if libc::getppid() != parent {
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
    }
    Ok(())
}

/// Ends a group at once. Only for a group whose leader is not yet reaped
/// (so its number cannot have been reused).
pub(crate) fn kill_group(pgid: i32) {
    let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
}

/// One async child to start: stdin closed, stdout and stderr piped.
#[derive(Debug, Clone)]
pub(crate) struct SpawnSpec {
    pub program: String,
    pub args: Vec<String>,
    pub cwd: PathBuf,
    /// Added to the supervisor's environment.
    pub env: Vec<(String, String)>,
    /// The value of [`TOKEN_ENV`].
    pub token: u64,
    /// Between SIGTERM and SIGKILL, for the keeper.
    pub kill_grace: Duration,
}

/// One spawn, done on the spawner thread.
struct SpawnRequest {
    spec: SpawnSpec,
    reply: oneshot::Sender<io::Result<tokio::process::Child>>,
}

/// The long-lived thread every async child is forked from.
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
    ///
    /// The thread lives until the process exits, even after its `Spawner`
    /// is dropped (see the module docs).
    pub fn start() -> anyhow::Result<Spawner> {
        let handle = tokio::runtime::Handle::try_current()
            .context("the agent spawner must be started inside a tokio runtime")?;
        let (tx, rx) = std::sync::mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("loki-spawner".into())
            .spawn(move || {
                for req in rx {
                    let spawned = {
                        let _rt = handle.enter();
                        spawn_child(&req.spec)
                    };
                    if let Err(Ok(child)) = req.reply.send(spawned) {
                        // Nobody waits for this child any more (the run was
                        // cancelled while spawning): end it at once.
                        if let Some(pid) = child.id() {
                            kill_group(pid as i32);
                        }
                    }
                }
                drop(handle);
                // PR_SET_PDEATHSIG fires when the forking *thread* ends, so
                // this thread must outlive every child it started: park it
                // until the process exits.
                loop {
                    std::thread::park();
                }
            })
            .context("starting the agent spawner thread")?;
        Ok(Spawner { tx })
    }

    /// Starts `spec` on the spawner thread.
    pub(crate) async fn spawn(&self, spec: SpawnSpec) -> io::Result<tokio::process::Child> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(SpawnRequest { spec, reply })
            .map_err(|_| io::Error::other("the agent spawner thread has stopped"))?;
        rx.await
            .map_err(|_| io::Error::other("the agent spawner thread dropped the request"))?
    }
}

/// Runs on the spawner thread, inside the runtime's context.
fn spawn_child(spec: &SpawnSpec) -> io::Result<tokio::process::Child> {
    let contained = contained(
        &spec.program,
        &spec.args,
        &spec.cwd,
        &spec.env,
        spec.token,
        Some(spec.kill_grace),
    )?;
    let (mut cmd, report) = contained.into_parts();
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    // The command (and its copy of the report pipe) is dropped here.
    let child = tokio::process::Command::from(cmd).spawn()?;
    // When the keeper could not start the program it exits by itself; the
    // runtime reaps it.
    Contained::started(report)?;
    Ok(child)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spawner_is_shareable() {
        fn is_sync<T: Send + Sync>() {}
        is_sync::<Spawner>();
    }
}
