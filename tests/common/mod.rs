//! Shared helpers for the integration tests: temporary git repos, the built
//! `loki` binary, the fake agent, and git CLI assertions.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn loki_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_loki"))
}

pub fn fake_agent() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/fake-agent")
}

pub fn mock_anthropic() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/mock-anthropic")
}

/// A temporary git repo with one commit on `main`.
pub struct Repo {
    pub dir: tempfile::TempDir,
}

impl Repo {
    pub fn new() -> Repo {
        let dir = tempfile::Builder::new()
            .prefix("loki-test-")
            .tempdir()
            .expect("tempdir");
        let r = Repo { dir };
        r.git(&["init", "-q", "-b", "main"]);
        r.git(&["config", "user.name", "Test User"]);
        r.git(&["config", "user.email", "test@example.com"]);
        r.write("README.md", "# a book\n");
        r.git(&["add", "-A"]);
        r.git(&["commit", "-q", "-m", "initial"]);
        r
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self, rel: &str, content: &str) {
        let p = self.path().join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, content).expect("write");
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path().join(rel))
            .unwrap_or_else(|e| panic!("reading {rel}: {e}"))
    }

    /// Runs git; panics on failure; returns stdout.
    pub fn git(&self, args: &[&str]) -> String {
        let out = Command::new("git")
            .args(args)
            .current_dir(self.path())
            .output()
            .expect("git");
        assert!(
            out.status.success(),
            "git {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    pub fn commit_all(&self, msg: &str) {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "-m", msg]);
    }

    /// Runs `loki <args>` in the repo with the fake agent reachable.
    pub fn loki(&self, args: &[&str]) -> Output {
        self.loki_env(args, &[])
    }

    pub fn loki_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut c = Command::new(loki_bin());
        c.args(args)
            .current_dir(self.path())
            .env("NO_COLOR", "1")
            .env("PATH", fast_path());
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().expect("running loki")
    }

    /// Files and folders under the repo (excluding .git), for before/after comparisons.
    pub fn snapshot(&self) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        walk(self.path(), self.path(), &mut out);
        out.sort();
        out
    }
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, Vec<u8>)>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        let rel = p.strip_prefix(root).expect("prefix").display().to_string();
        if rel == ".git" {
            continue;
        }
        if p.is_dir() {
            out.push((format!("{rel}/"), Vec::new()));
            walk(root, &p, out);
        } else {
            out.push((rel, std::fs::read(&p).unwrap_or_default()));
        }
    }
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

pub fn both(o: &Output) -> String {
    format!("--- stdout\n{}\n--- stderr\n{}", stdout(o), stderr(o))
}

/// `loki status --json` parsed.
pub fn status_json(repo: &Repo) -> serde_json::Value {
    let o = repo.loki(&["status", "--json"]);
    assert!(o.status.success(), "status failed: {}", both(&o));
    serde_json::from_slice(&o.stdout).expect("status json")
}

pub fn stream_status(repo: &Repo, id: &str) -> String {
    let v = status_json(repo);
    v["streams"]
        .as_array()
        .expect("streams")
        .iter()
        .find(|s| s["id"] == id)
        .map(|s| s["status"].as_str().unwrap_or("").to_string())
        .unwrap_or_default()
}

/// Subjects of the first-parent history of `branch`, newest first.
pub fn first_parent_subjects(repo: &Repo, branch: &str) -> Vec<String> {
    repo.git(&["log", "--first-parent", "--format=%s", branch])
        .lines()
        .map(str::to_string)
        .collect()
}

/// Trailers of a commit as (key, value) pairs.
pub fn trailers(repo: &Repo, rev: &str) -> Vec<(String, String)> {
    let msg = repo.git(&["log", "-1", "--format=%B", rev]);
    let out = Command::new("git")
        .args(["interpret-trailers", "--parse"])
        .current_dir(repo.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().expect("stdin").write_all(msg.as_bytes())?;
            c.wait_with_output()
        })
        .expect("interpret-trailers");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            l.split_once(": ")
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect()
}

/// Asserts the repo is healthy to the git CLI and loki left nothing behind.
pub fn assert_clean_repo(repo: &Repo) {
    let fsck = Command::new("git")
        .args(["fsck", "--strict"])
        .current_dir(repo.path())
        .output()
        .expect("fsck");
    assert!(
        fsck.status.success(),
        "git fsck: {}",
        String::from_utf8_lossy(&fsck.stderr)
    );
    let wts = repo.git(&["worktree", "list", "--porcelain"]);
    assert_eq!(
        wts.matches("worktree ").count(),
        1,
        "leftover worktrees:\n{wts}"
    );
    let branches = repo.git(&["branch", "--list", "loki/*"]);
    assert!(branches.trim().is_empty(), "leftover branches: {branches}");
    let wt_dir = repo.path().join(".loki/worktrees");
    if wt_dir.exists() {
        let n = std::fs::read_dir(&wt_dir).expect("read worktrees").count();
        assert_eq!(n, 0, "leftover worktree folders");
    }
    let st = repo.git(&["status", "--porcelain"]);
    assert!(st.trim().is_empty(), "git status not clean:\n{st}");
}

/// Swarm-file header using the fake agent, no spawn stagger.
pub fn header(max_parallel: usize, extra_agent: &str) -> String {
    format!(
        "[swarm]\ntarget = \"main\"\nmax_parallel = {max_parallel}\nspawn_interval = \"0s\"\n\n[agent]\ncommand = \"{}\"\ntimeout = \"60s\"\nidle_timeout = \"30s\"\nkill_grace = \"1s\"\nmax_attempts = 3\n{extra_agent}\n",
        fake_agent().display()
    )
}

/// A stream table.
pub fn stream(id: &str, deps: &[&str], output: &str, extra: &str) -> String {
    let deps: Vec<String> = deps.iter().map(|d| format!("\"{d}\"")).collect();
    format!(
        "[[streams]]\nid = \"{id}\"\nprompt = \"prompts/chapter.md\"\nvars = {{ CHAPTER = \"{id}\" }}\noutputs = [\"{output}\"]\ndepends_on = [{}]\n{extra}\n",
        deps.join(", ")
    )
}

/// A chapter template the fake agent understands.
pub const CHAPTER: &str =
    "# Chapter {{CHAPTER}}\n\nWrite the chapter to {{OUTPUTS}}.\n\n{{FEEDBACK}}\n";

/// The folder of the real python3 interpreter (not a pyenv shim, which costs
/// ~0.35 s per start), to put first on PATH for the Python test scripts.
pub fn fast_path() -> String {
    use std::sync::OnceLock;
    static DIR: OnceLock<Option<String>> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let out = Command::new("python3")
            .args(["-c", "import sys; print(sys.executable)"])
            .output()
            .ok()?;
        let exe = String::from_utf8_lossy(&out.stdout).trim().to_string();
        Path::new(&exe).parent().map(|p| p.display().to_string())
    });
    let path = std::env::var("PATH").unwrap_or_default();
    match dir {
        Some(d) => format!("{d}:{path}"),
        None => path,
    }
}

/// A running scripts/mock-anthropic; killed on drop.
pub struct MockApi {
    pub child: std::process::Child,
    pub port: u16,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl MockApi {
    pub fn start(args: &[&str]) -> MockApi {
        use std::io::BufRead;
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("requests.jsonl");
        let mut child = Command::new(mock_anthropic())
            .args(["--port", "0", "--log"])
            .arg(&log)
            .args(args)
            .env("PATH", fast_path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("starting scripts/mock-anthropic");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .expect("PORT line");
        let port = line
            .trim()
            .strip_prefix("PORT ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("bad first line from mock-anthropic: {line:?}"));
        MockApi {
            child,
            port,
            log,
            _dir: dir,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Lines of the request log.
    pub fn requests(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

impl Drop for MockApi {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The installed Claude Code CLI; the real-claude tests fail (never skip)
/// without it.
pub fn require_claude() -> PathBuf {
    let out = Command::new("claude").arg("--version").output();
    match out {
        Ok(o) if o.status.success() => {}
        _ => panic!("the real Claude Code CLI is needed: npm install -g @anthropic-ai/claude-code@2.1.197 (.ci/run does this)"),
    }
    let which = Command::new("sh")
        .args(["-c", "command -v claude"])
        .output()
        .expect("sh");
    PathBuf::from(String::from_utf8_lossy(&which.stdout).trim())
}

/// Pids of live processes whose command line mentions `needle` (for
/// asserting that no agent of a run is left).
pub fn pids_matching(needle: &str) -> Vec<i32> {
    let mut out = Vec::new();
    let me = std::process::id() as i32;
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if pid == me {
            continue;
        }
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if stat
            .rsplit_once(')')
            .map(|(_, r)| r.trim_start().starts_with('Z'))
            .unwrap_or(true)
        {
            continue;
        }
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmd).contains(needle) {
            out.push(pid);
        }
    }
    out
}

/// Pids of live (non-zombie) processes whose working directory is inside `dir`.
pub fn pids_in(dir: &Path) -> Vec<i32> {
    let mut out = Vec::new();
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if stat
            .rsplit_once(')')
            .map(|(_, r)| r.trim_start().starts_with('Z'))
            .unwrap_or(true)
        {
            continue;
        }
        if let Ok(cwd) = std::fs::read_link(format!("/proc/{pid}/cwd")) {
            if cwd.starts_with(&dir) {
                out.push(pid);
            }
        }
    }
    out
}
