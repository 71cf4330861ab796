//! `[agent] sandbox = "bwrap"`: the agent runs under bubblewrap with the
//! whole filesystem read-only except what it must write: its worktree, its
//! own registration in the git dir, the `loki/` branch refs and their
//! reflogs, the signal folder, a private `/tmp`, and the agent's own config
//! (for claude `~/.claude` and `~/.claude.json`). So it cannot write the
//! user's checkout (`.loki/state/` included), the user's objects, refs and
//! reflogs, or anything outside the repo. The network stays shared: the
//! agent needs its API.
//!
//! - **Objects.** The repository's object folder stays read-only (a
//!   writable folder would let an agent delete every pack): the agent's git
//!   writes new objects to a private folder in its registration
//!   (`GIT_OBJECT_DIRECTORY`, with the real one as an alternate), which the
//!   supervisor copies into the repository after the attempt, each object
//!   hashed again (`git::import_agent_objects`).
//! - **Escapes.** A new session (no controlling terminal: no TIOCSTI), and
//!   new pid, IPC and UTS namespaces: the agent cannot signal the
//!   supervisor, and everything in the sandbox dies with its init. The
//!   user's session bus and agent sockets (`/run/user`, docker's socket,
//!   `DBUS_SESSION_BUS_ADDRESS`, `SSH_AUTH_SOCK`) are hidden, so nothing can
//!   ask a service outside to write for it.
//!
//! bwrap runs under the keeper (see `process`), with `--die-with-parent`;
//! the keeper still sees (by host pid) and ends every process the agent
//! starts.

use std::path::{Path, PathBuf};

use crate::process;

/// Where bwrap is looked for first (Debian's package `bubblewrap`).
const BWRAP: &str = "/usr/bin/bwrap";

/// What one sandboxed agent may see and write.
#[derive(Debug, Clone, PartialEq)]
pub struct Sandbox {
    /// The bwrap executable.
    pub bwrap: PathBuf,
    /// Shown read-only again after the private `/tmp` (which would hide
    /// them when they live under `/tmp`): the repo, the home folder.
    pub readable: Vec<PathBuf>,
    /// Writable; each must exist.
    pub writable: Vec<PathBuf>,
    /// The agent's private object folder and the repository's, its
    /// alternate (`None` in unit tests of the argument order).
    pub objects: Option<(PathBuf, PathBuf)>,
}

/// What a sandboxed agent needs, as the supervisor knows it.
#[derive(Debug, Clone)]
pub struct Places<'a> {
    /// The repository root (the user's checkout).
    pub root: &'a Path,
    /// The stream's worktree.
    pub worktree: &'a Path,
    /// The repository's common git dir.
    pub git_common: &'a Path,
    /// The worktree's registration, `<common>/worktrees/<name>`.
    pub registration: &'a Path,
    /// `.loki/signals/`: agents write their signal files there.
    pub signals: &'a Path,
    /// The agent's home folder, if it has one.
    pub home: Option<&'a Path>,
    /// Whether the agent is claude (its config in the home folder is
    /// writable).
    pub claude: bool,
}

impl Sandbox {
    /// The sandbox for one attempt. Creates the git dir folders a commit
    /// writes to when they are missing (bwrap binds only what exists).
    pub fn for_attempt(bwrap: PathBuf, p: &Places<'_>) -> std::io::Result<Sandbox> {
        let git = p.git_common;
        let private = p.registration.join(crate::model::paths::AGENT_OBJECTS);
        let made = [
            git.join("refs/heads/loki"),
            git.join("logs/refs/heads/loki"),
            private.clone(),
        ];
        for dir in &made {
            std::fs::create_dir_all(dir)?;
        }
        let mut readable = vec![p.root.to_path_buf(), git.to_path_buf()];
        let mut writable = vec![
            p.worktree.to_path_buf(),
            p.registration.to_path_buf(),
            p.signals.to_path_buf(),
        ];
        writable.extend(made[..2].iter().cloned());
        home_places(p.home, p.claude, &mut readable, &mut writable)?;
        Ok(Sandbox {
            bwrap,
            readable,
            writable,
            objects: Some((private, git.join("objects"))),
        })
    }

    /// The sandbox of a validator: everything read-only but its disposable
    /// `checkout`, the folder its verdict goes to, and claude's config in
    /// `home`. No git dir is writable: a validator commits nothing.
    pub fn for_validator(
        bwrap: PathBuf,
        root: &Path,
        checkout: &Path,
        verdicts: &Path,
        home: Option<&Path>,
        claude: bool,
    ) -> std::io::Result<Sandbox> {
        let mut readable = vec![root.to_path_buf()];
        let mut writable = vec![checkout.to_path_buf(), verdicts.to_path_buf()];
        home_places(home, claude, &mut readable, &mut writable)?;
        Ok(Sandbox {
            bwrap,
            readable,
            writable,
            objects: None,
        })
    }

    /// `program args…` wrapped: bwrap's command line to run instead.
    pub fn wrap(&self, program: &str, args: &[String], cwd: &Path) -> (String, Vec<String>) {
        let mut out: Vec<String> = [
            "--die-with-parent",
            "--new-session",
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
            "--ro-bind",
            "/",
            "/",
            "--dev",
            "/dev",
            "--proc",
            "/proc",
            "--tmpfs",
            "/tmp",
            "--setenv",
            "TMPDIR",
            "/tmp",
            "--unsetenv",
            "DBUS_SESSION_BUS_ADDRESS",
            "--unsetenv",
            "SSH_AUTH_SOCK",
            "--unsetenv",
            "XDG_RUNTIME_DIR",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // Services that would write for the agent: hidden (by their real
        // paths: /var/run is usually a link to /run).
        let mut hidden: Vec<(bool, PathBuf)> = Vec::new();
        for (dir, place) in [
            (true, "/run/user"),
            (true, "/var/run/user"),
            (false, "/run/docker.sock"),
            (false, "/var/run/docker.sock"),
            (false, "/run/podman/podman.sock"),
        ] {
            if let Ok(real) = Path::new(place).canonicalize() {
                if real.is_dir() == dir && !hidden.iter().any(|(_, p)| *p == real) {
                    hidden.push((dir, real));
                }
            }
        }
        for (dir, real) in hidden {
            let at = real.display().to_string();
            if dir {
                out.extend(["--tmpfs".to_string(), at]);
            } else {
                out.extend(["--ro-bind".to_string(), "/dev/null".to_string(), at]);
            }
        }
        if let Some((private, shared)) = &self.objects {
            out.extend([
                "--setenv".to_string(),
                "GIT_OBJECT_DIRECTORY".to_string(),
                private.display().to_string(),
                "--setenv".to_string(),
                "GIT_ALTERNATE_OBJECT_DIRECTORIES".to_string(),
                shared.display().to_string(),
            ]);
        }
        // Outer folders first, so a writable one inside a read-only one
        // is bound on top of it.
        let depth = |p: &PathBuf| p.components().count();
        let mut ro = self.readable.clone();
        ro.sort_by_key(depth);
        let mut rw = self.writable.clone();
        rw.sort_by_key(depth);
        for (flag, paths) in [("--ro-bind", ro), ("--bind", rw)] {
            for path in paths {
                let text = path.display().to_string();
                out.extend([flag.to_string(), text.clone(), text]);
            }
        }
        out.extend([
            "--chdir".to_string(),
            cwd.display().to_string(),
            "--".to_string(),
            program.to_string(),
        ]);
        out.extend(args.iter().cloned());
        (self.bwrap.display().to_string(), out)
    }
}

/// The home folder is readable; for claude its config there is writable:
/// claude keeps its sessions in it, even on a first run.
fn home_places(
    home: Option<&Path>,
    claude: bool,
    readable: &mut Vec<PathBuf>,
    writable: &mut Vec<PathBuf>,
) -> std::io::Result<()> {
    let Some(home) = home.filter(|h| h.is_dir()) else {
        return Ok(());
    };
    readable.push(home.to_path_buf());
    if claude {
        std::fs::create_dir_all(home.join(".claude"))?;
        for config in [home.join(".claude"), home.join(".claude.json")] {
            if config.exists() {
                writable.push(config);
            }
        }
    }
    Ok(())
}

/// Names the bwrap to use instead of looking for one.
pub const BWRAP_ENV: &str = "LOKI_BWRAP";

/// The bwrap executable: `$LOKI_BWRAP` when set, else /usr/bin/bwrap, else
/// the first on PATH.
pub fn locate() -> Option<PathBuf> {
    if let Some(chosen) = std::env::var_os(BWRAP_ENV) {
        return process::find_executable(&chosen.to_string_lossy());
    }
    process::find_executable(BWRAP).or_else(|| process::find_executable("bwrap"))
}

/// bwrap when it is installed and can make its namespaces here (it runs
/// `bwrap --ro-bind / / true`); otherwise why not and what to do, as
/// `(problem, help)`. Blocking (at most a few seconds).
pub fn probe() -> Result<PathBuf, (String, String)> {
    let install = "install bubblewrap (`apt-get install bubblewrap`), or set \
                   `sandbox = \"none\"` in [agent] to run agents unsandboxed";
    let Some(bwrap) = locate() else {
        return Err((
            match std::env::var_os(BWRAP_ENV) {
                Some(p) => format!(
                    "bwrap (bubblewrap) is not installed at {} (named by ${BWRAP_ENV})",
                    p.to_string_lossy()
                ),
                None => "bwrap (bubblewrap) is not installed: neither /usr/bin/bwrap nor \
                         `bwrap` on PATH"
                    .to_string(),
            },
            install.to_string(),
        ));
    };
    let program = bwrap.display().to_string();
    let args: Vec<String> = ["--ro-bind", "/", "/", "true"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let job = process::Capture {
        program: &program,
        args: &args,
        cwd: &std::env::temp_dir(),
        env: &[],
        timeout: std::time::Duration::from_secs(10),
        tail: 2000,
        on_start: None,
    };
    let namespaces = "bwrap needs user namespaces (sysctl kernel.unprivileged_userns_clone=1, \
                      or a container started with them allowed) or to run as root; or set \
                      `sandbox = \"none\"` in [agent]";
    match process::run_captured(&job) {
        Ok(ran) => match ran.exit {
            process::Exit::Status(st) if st.success() => Ok(bwrap),
            process::Exit::Status(st) => {
                let said = String::from_utf8_lossy(&ran.output).trim().to_string();
                let said = if said.is_empty() {
                    String::new()
                } else {
                    format!(": {said}")
                };
                Err((
                    format!("`{program} --ro-bind / / true` failed ({st}){said}"),
                    namespaces.to_string(),
                ))
            }
            process::Exit::TimedOut => Err((
                format!("`{program} --ro-bind / / true` did not finish within 10 s"),
                namespaces.to_string(),
            )),
            process::Exit::WaitFailed(e) => Err((
                format!("could not wait for `{program}`: {e}"),
                namespaces.to_string(),
            )),
        },
        Err(e) => Err((
            format!("cannot run `{program}`: {e:?}"),
            install.to_string(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_binds_outer_folders_first_and_writable_ones_last() {
        let sb = Sandbox {
            bwrap: PathBuf::from("/usr/bin/bwrap"),
            readable: vec![PathBuf::from("/tmp/r/.git"), PathBuf::from("/tmp/r")],
            writable: vec![
                PathBuf::from("/tmp/r/.git/objects"),
                PathBuf::from("/tmp/r/.loki/worktrees/a"),
            ],
            objects: None,
        };
        let (program, args) = sb.wrap("agent", &["-x".to_string()], Path::new("/tmp/r/wt"));
        assert_eq!(program, "/usr/bin/bwrap");
        let at = |s: &str| args.iter().position(|a| a == s).unwrap();
        assert_eq!(args[0], "--die-with-parent");
        assert!(at("--tmpfs") < at("/tmp/r"));
        assert!(at("/tmp/r") < at("/tmp/r/.git"));
        assert!(at("/tmp/r/.git") < at("/tmp/r/.git/objects"));
        assert_eq!(args[at("/tmp/r/.git/objects") - 1], "--bind");
        assert_eq!(args[at("/tmp/r/.git") - 1], "--ro-bind");
        assert_eq!(
            &args[args.len() - 5..],
            ["--chdir", "/tmp/r/wt", "--", "agent", "-x"]
        );
    }
}
