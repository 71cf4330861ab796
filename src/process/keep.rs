//! The keeper: a tiny loki (`loki __keep`, re-executed from
//! `/proc/self/exe`) between the supervisor and every agent and check
//! command, so that nothing an attempt starts outlives it.
//!
//! The kernel gives the parent-death signal to one process only, and a
//! child that calls `setsid()` leaves its group, so neither a death signal
//! nor `killpg` reaches everything an agent starts. The keeper is a
//! *subreaper* (`PR_SET_CHILD_SUBREAPER`): every orphan below it is
//! reparented to it instead of to init, so all that is left of the attempt
//! is always its descendants. It ends them all, SIGTERM, `kill_grace`,
//! SIGKILL, when
//!
//! - the program it runs exits (background jobs and escapees it left),
//! - it gets SIGTERM, SIGINT or SIGHUP (the supervisor's `killpg`), or
//! - the supervisor dies: its parent-death signal is SIGTERM, which it
//!   catches, unlike the SIGKILL a directly started child gets.
//!
//! It runs the program as its child in its own process group, with stdin
//! closed (`/dev/null`: the keeper's own stdin is the pipe on which it
//! reports a failed start), stdout, stderr and the environment untouched,
//! and exits as the program did (its code, or the same signal). No
//! runtime, no allocation-heavy work, no panics: it only waits for signals
//! and reads `/proc`.

use std::ffi::OsString;
use std::io::Write;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::proc::descendants;

/// The hidden subcommand that makes loki a keeper.
pub const KEEP_SUBCOMMAND: &str = "__keep";

/// How the program ended, to be passed on as the keeper's own ending.
#[derive(Clone, Copy)]
enum Ended {
    Code(i32),
    Signal(Signal),
}

/// The signals the keeper waits for instead of dying of them.
fn waited_signals() -> SigSet {
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGQUIT,
        Signal::SIGCHLD,
    ] {
        set.add(s);
    }
    set
}

/// Runs `program args…` kept (see the module docs) and returns the exit
/// code to leave with, unless it leaves by the program's signal itself.
/// `report_fd`, when given, is a pipe on which the keeper writes the
/// errno (4 bytes, native order) of a failed start, and which it closes
/// as soon as the program runs: so the supervisor reports "not found" as
/// it would without a keeper. When it is stdin (0), the program gets
/// `/dev/null` there instead.
///
/// With `parent` (the supervisor's pid), the keeper arms its own death
/// signal, SIGTERM, first (the supervisor starts it with nothing run
/// between fork and exec, so it can use `posix_spawn`), and refuses to go
/// on (ESRCH) when its parent is already another process: the supervisor
/// died before the signal was armed, and nobody would ever stop it.
pub fn keep(
    grace: Duration,
    report_fd: Option<i32>,
    parent: Option<i32>,
    program: &OsString,
    args: &[OsString],
) -> i32 {
    let report = report_fd.and_then(take_fd);
    if let Some(parent) = parent {
        if let Err(e) = super::spawn::arm_death_signal(libc::SIGTERM, parent) {
            let errno = e.raw_os_error().unwrap_or(libc::EIO);
            if let Some(fd) = report {
                let _ = std::fs::File::from(fd).write_all(&errno.to_ne_bytes());
            }
            return 127;
        }
    }
    // SAFETY: prctl with these arguments only sets a flag of this process.
    let subreaper = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if subreaper == -1 {
        say(&format!(
            "cannot become a subreaper ({}); processes that leave the agent's group may \
             outlive it",
            std::io::Error::last_os_error()
        ));
    }
    let set = waited_signals();
    if let Err(e) = set.thread_block() {
        say(&format!("cannot block signals: {e}"));
    }
    // SAFETY: getpid has no preconditions.
    let me = unsafe { libc::getpid() };
    let mut cmd = std::process::Command::new(program);
    cmd.args(args);
    // SAFETY: between fork and exec only async-signal-safe calls are made
    // (sigprocmask, prctl, getppid), without allocating.
    unsafe {
        cmd.pre_exec(move || {
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
            // The keeper is the program's parent: if it is killed outright
            // (SIGKILL), the program goes with it.
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) == -1
            {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() != me {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    let child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => {
            let errno = e.raw_os_error().unwrap_or(libc::EIO);
            match report {
                Some(fd) => {
                    let _ = std::fs::File::from(fd).write_all(&errno.to_ne_bytes());
                }
                None => say(&format!("cannot start {}: {e}", program.to_string_lossy())),
            }
            return 127;
        }
    };
    drop(report);
    let child = Pid::from_raw(child.id() as i32);
    match watch(child, grace, &set) {
        Ended::Code(code) => code,
        Ended::Signal(sig) => leave_by(sig),
    }
}

/// Waits for the program and for stop signals; ends every descendant once
/// either comes; returns when no child is left.
fn watch(child: Pid, grace: Duration, set: &SigSet) -> Ended {
    let mut ended: Option<Ended> = None;
    // When the SIGTERM went out; SIGKILL follows `grace` later.
    let mut ending: Option<Instant> = None;
    let begin_end = |ending: &mut Option<Instant>| {
        if ending.is_none() {
            *ending = Some(Instant::now());
            signal_descendants(Signal::SIGTERM);
        }
    };
    loop {
        let mut none_left = false;
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => break,
                Ok(WaitStatus::Exited(pid, code)) if pid == child => {
                    ended = Some(Ended::Code(code))
                }
                Ok(WaitStatus::Signaled(pid, sig, _)) if pid == child => {
                    ended = Some(Ended::Signal(sig))
                }
                Ok(_) => {}
                Err(Errno::EINTR) => {}
                Err(_) => {
                    none_left = true;
                    break;
                }
            }
        }
        if none_left {
            // Every child reaped: nothing of the attempt is left (a
            // subreaper inherits every orphan below it, so no child means
            // no descendant), and there is nobody to signal.
            return ended.unwrap_or(Ended::Code(127));
        }
        if ended.is_some() {
            begin_end(&mut ending);
        }
        let tick = match ending {
            Some(at) => {
                if at.elapsed() >= grace {
                    signal_descendants(Signal::SIGKILL);
                }
                Duration::from_millis(20)
            }
            None => Duration::from_secs(1),
        };
        match wait_signal(set, tick) {
            Some(libc::SIGCHLD) | None => {}
            Some(_) => begin_end(&mut ending),
        }
    }
}

/// A line on stderr, if it can still be written (never a panic: the
/// supervisor reading it may be gone).
fn say(what: &str) {
    let _ = writeln!(std::io::stderr(), "loki keeper: {what}");
}

/// Sends `sig` to every live descendant (the program included).
fn signal_descendants(sig: Signal) {
    // SAFETY: getpid has no preconditions.
    let me = unsafe { libc::getpid() };
    for pid in descendants(me) {
        let _ = kill(Pid::from_raw(pid), sig);
    }
}

/// The next of the blocked signals, or `None` after `timeout`.
fn wait_signal(set: &SigSet, timeout: Duration) -> Option<i32> {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    let raw: &libc::sigset_t = set.as_ref();
    // SAFETY: both pointers are valid for the call; no siginfo is asked.
    let sig = unsafe { libc::sigtimedwait(raw, std::ptr::null_mut(), &ts) };
    (sig > 0).then_some(sig)
}

/// Ends this process by `sig`, as the program ended, without a core dump.
fn leave_by(sig: Signal) -> i32 {
    let no_core = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain system calls on this process with valid arguments.
    unsafe {
        libc::setrlimit(libc::RLIMIT_CORE, &no_core);
        libc::signal(sig as libc::c_int, libc::SIG_DFL);
    }
    let mut only = SigSet::empty();
    only.add(sig);
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(&only), None);
    let _ = nix::sys::signal::raise(sig);
    128 + sig as i32
}

/// The report pipe as an owned descriptor, closed when the program is
/// started (close-on-exec meanwhile, so the program never holds it). One
/// passed as stdin is moved off it, and stdin becomes `/dev/null`.
fn take_fd(fd: i32) -> Option<OwnedFd> {
    if fd == 0 {
        // SAFETY: fcntl on any number is safe; it fails for a closed one.
        let moved = unsafe { libc::fcntl(0, libc::F_DUPFD_CLOEXEC, 3) };
        // The pipe must leave stdin whatever happens, or the program would
        // hold it open and the supervisor wait on it for the whole run.
        match std::fs::File::open("/dev/null") {
            // SAFETY: dup2 onto stdin of a descriptor open here.
            Ok(null) => unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), 0) },
            // SAFETY: closing stdin, which this process owns.
            Err(_) => unsafe { libc::close(0) },
        };
        if moved == -1 {
            return None;
        }
        // SAFETY: `moved` was just made by fcntl and nothing else owns it.
        return Some(unsafe { OwnedFd::from_raw_fd(moved) });
    }
    // SAFETY: fcntl on any number is safe; it fails for a closed one.
    if fd < 3 || unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } == -1 {
        return None;
    }
    // SAFETY: the descriptor is open (fcntl succeeded) and nothing else in
    // this process owns it: it was passed to us by number for this use.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}
