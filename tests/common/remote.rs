//! A bare git remote served over a real network protocol on 127.0.0.1
//! (`git daemon`, pushes enabled), and clones of it standing for the
//! machines of a shared swarm, each with its own HOME.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{free_port, git_in, wait_until};

pub struct GitDaemon {
    child: Option<Child>,
    pub port: u16,
    /// Holds `remote.git` (and the clones, beside it).
    pub base: tempfile::TempDir,
}

impl GitDaemon {
    /// Serves a bare copy of `seed` as `git://127.0.0.1:<port>/remote.git`,
    /// once it answers.
    pub fn serve(seed: &Path) -> GitDaemon {
        let base = tempfile::Builder::new()
            .prefix("loki-remote-")
            .tempdir()
            .expect("tempdir");
        git_in(
            base.path(),
            &[
                "clone",
                "-q",
                "--bare",
                &seed.display().to_string(),
                "remote.git",
            ],
        );
        let port = free_port();
        let mut d = GitDaemon {
            child: None,
            port,
            base,
        };
        d.start_again();
        d
    }

    /// Stops serving (the remote's machine is cut off).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // `git daemon` serves from a child process: the whole group goes.
            let _ = kill(Pid::from_raw(-(c.id() as i32)), Signal::SIGKILL);
            let _ = c.wait();
        }
    }

    /// Serves again on the same port, once it answers.
    pub fn start_again(&mut self) {
        self.stop();
        let child = Command::new("git")
            .args([
                "daemon",
                "--reuseaddr",
                "--listen=127.0.0.1",
                &format!("--port={}", self.port),
                &format!("--base-path={}", self.base.path().display()),
                "--export-all",
                "--enable=receive-pack",
                &self.base.path().display().to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("starting git daemon");
        self.child = Some(child);
        let url = self.url();
        assert!(
            wait_until(Duration::from_secs(20), || Command::new("git")
                .args(["ls-remote", &url])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())),
            "git daemon never answered on {url}"
        );
    }

    pub fn url(&self) -> String {
        format!("git://127.0.0.1:{}/remote.git", self.port)
    }

    /// The bare repository the daemon serves.
    pub fn bare(&self) -> PathBuf {
        self.base.path().join("remote.git")
    }

    /// `git <args>` in the bare repository.
    pub fn git(&self, args: &[&str]) -> String {
        git_in(&self.bare(), args)
    }

    /// A clone `name` (remote `origin`) with its own HOME folder beside it
    /// (returned second).
    pub fn clone_as(&self, name: &str) -> (PathBuf, PathBuf) {
        let dir = self.base.path().join(name);
        git_in(self.base.path(), &["clone", "-q", &self.url(), name]);
        git_in(&dir, &["config", "user.name", name]);
        git_in(
            &dir,
            &["config", "user.email", &format!("{name}@example.com")],
        );
        let home = self.base.path().join(format!("home-{name}"));
        std::fs::create_dir_all(&home).expect("mkdir home");
        (dir, home)
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        self.stop();
    }
}
