//! A bare git remote served over a real network protocol on 127.0.0.1
//! (`git daemon`, pushes enabled), and clones of it standing for the
//! machines of a shared swarm, each with its own HOME.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{free_port, git_in, wait_until};

pub struct GitDaemon {
    child: Child,
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
        let bare = base.path().join("remote.git");
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
        let child = Command::new("git")
            .args([
                "daemon",
                "--reuseaddr",
                "--listen=127.0.0.1",
                &format!("--port={port}"),
                &format!("--base-path={}", base.path().display()),
                "--export-all",
                "--enable=receive-pack",
                &base.path().display().to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting git daemon");
        let d = GitDaemon { child, port, base };
        let url = d.url();
        assert!(
            wait_until(Duration::from_secs(20), || Command::new("git")
                .args(["ls-remote", &url])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())),
            "git daemon never answered on {url}"
        );
        let _ = bare;
        d
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
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
