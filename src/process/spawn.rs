//! Starting a child the one way loki starts any: in its own process group
//! (so the whole group can be signalled and nothing of it mistaken for
//! another's), with `PR_SET_PDEATHSIG` (so it dies with the supervisor) and
//! the [`TOKEN_ENV`] token (so a later supervisor can sweep what it left).
//!
//! Async children are forked from one long-lived [`Spawner`] thread: the
//! kernel delivers `PR_SET_PDEATHSIG` when the *thread* that forked a child
//! ends, so ending that thread would kill every child it started. A
//! synchronous caller that waits for its child on its own thread may build
//! the command with [`contained`] directly.

use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::Context;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::sync::oneshot;

use super::proc::{token_text, TOKEN_ENV};

/// `program args…` in `cwd` with `env` added to ours and [`TOKEN_ENV`] set
/// to `token` (last, so nothing overrides it), to be the leader of a new
/// process group that gets SIGKILL when the thread that forks it ends.
/// Stdio is left to the caller.
///
/// The child refuses to start (ESRCH) when the supervisor died before the
/// death signal was armed: nobody would ever stop it.
pub(crate) fn contained(
    program: &str,
    args: &[String],
    cwd: &Path,
    env: &[(String, String)],
    token: u64,
) -> std::process::Command {
    // SAFETY: getpid has no preconditions.
    let supervisor = unsafe { libc::getpid() };
    let mut cmd = std::process::Command::new(program);
    cmd.args(args)
        .current_dir(cwd)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env(TOKEN_ENV, token_text(token))
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
    cmd
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
    let mut cmd = contained(&spec.program, &spec.args, &spec.cwd, &spec.env, spec.token);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    tokio::process::Command::from(cmd).spawn()
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
