//! The built `loki` binary running in the background (a supervisor, or
//! `loki logs --follow`, `loki status --watch`): its output is collected as
//! it comes, it can be signalled, waited for with a limit, and it is killed
//! when dropped.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::{fast_path, loki_bin, RUN_LIMIT};

/// A `loki` process started by [`Running::spawn`].
pub struct Running {
    child: Option<Child>,
    pub pid: i32,
    started: Instant,
    out: Arc<Mutex<String>>,
    err: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
}

/// How a [`Running`] ended, with all it printed.
#[derive(Debug)]
pub struct Done {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Done {
    pub fn both(&self) -> String {
        format!(
            "exit {:?} (signal {:?}) after {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.signal, self.elapsed, self.stdout, self.stderr
        )
    }

    pub fn text(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

fn reader(mut pipe: impl Read + Send + 'static, buf: Arc<Mutex<String>>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        loop {
            match pipe.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if let Ok(mut b) = buf.lock() {
                        b.push_str(&String::from_utf8_lossy(&chunk[..n]));
                    }
                }
            }
        }
    })
}

impl Running {
    /// Starts `loki <args>` in `dir`, with the fast python first on PATH and
    /// no `LOKI_SIGNALS_DIR` of the caller's.
    pub fn spawn(dir: &Path, args: &[&str]) -> Running {
        Running::spawn_env(dir, args, &[])
    }

    /// [`Running::spawn`] with `env` set on top (another machine's HOME).
    pub fn spawn_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Running {
        let mut child = Command::new(loki_bin())
            .args(args)
            .current_dir(dir)
            .env("NO_COLOR", "1")
            .env("PATH", fast_path())
            .env_remove("LOKI_SIGNALS_DIR")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting loki");
        let out = Arc::new(Mutex::new(String::new()));
        let err = Arc::new(Mutex::new(String::new()));
        let readers = vec![
            reader(child.stdout.take().expect("stdout"), out.clone()),
            reader(child.stderr.take().expect("stderr"), err.clone()),
        ];
        Running {
            pid: child.id() as i32,
            child: Some(child),
            started: Instant::now(),
            out,
            err,
            readers,
        }
    }

    pub fn signal(&self, sig: Signal) {
        kill(Pid::from_raw(self.pid), sig).expect("signalling loki");
    }

    /// Its stdout so far.
    pub fn stdout(&self) -> String {
        self.out.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Its stderr so far.
    pub fn stderr(&self) -> String {
        self.err.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Both, so far.
    pub fn output(&self) -> String {
        format!(
            "--- stdout\n{}\n--- stderr\n{}",
            self.stdout(),
            self.stderr()
        )
    }

    pub fn exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_some())
    }

    /// Waits for the exit (SIGKILL after [`RUN_LIMIT`], then a panic).
    pub fn wait(self) -> Done {
        self.wait_within(RUN_LIMIT)
    }

    /// Waits up to `limit` for the exit; a loki still running then is
    /// killed and the test fails.
    pub fn wait_within(mut self, limit: Duration) -> Done {
        let mut child = self.child.take().expect("child");
        let until = Instant::now() + limit;
        let status = loop {
            if let Some(st) = child.try_wait().expect("try_wait") {
                break st;
            }
            if Instant::now() >= until {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "loki (pid {}) did not finish within {limit:?}; output so far:\n{}",
                    self.pid,
                    self.output()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        self.done(status)
    }

    /// Kills it (SIGKILL) and returns what it printed.
    pub fn kill(mut self) -> Done {
        let mut child = self.child.take().expect("child");
        let _ = child.kill();
        let status = child.wait().expect("reaping loki");
        self.done(status)
    }

    fn done(&mut self, status: std::process::ExitStatus) -> Done {
        use std::os::unix::process::ExitStatusExt;
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        Done {
            code: status.code(),
            signal: status.signal(),
            stdout: self.stdout(),
            stderr: self.stderr(),
            elapsed: self.started.elapsed(),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
