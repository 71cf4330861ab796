//! A temporary git repo with a swarm file, the built `loki` binary run in
//! it to its end, and git CLI assertions.

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
        Repo::with_prefix("loki-test-")
    }

    /// [`Repo::new`] in a temporary folder named `<prefix>…`.
    pub fn with_prefix(prefix: &str) -> Repo {
        let dir = tempfile::Builder::new()
            .prefix(prefix)
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
        git_in(self.path(), args)
    }

    pub fn commit_all(&self, msg: &str) {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "-m", msg]);
    }

    /// Writes the chapter template `template`, `.loki/.gitignore` and
    /// `toml` as `loki.toml`, and commits them: a swarm ready to run.
    pub fn write_swarm(&self, template: &str, toml: &str) {
        self.write("prompts/chapter.md", template);
        self.write(".loki/.gitignore", loki::commands::init::LOKI_GITIGNORE);
        self.write("loki.toml", toml);
        self.commit_all("swarm");
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
        snapshot_except(self.path(), &[".git"])
    }
}

/// Files and folders under `root` with their contents, sorted, leaving out
/// the top-level entries named in `skip`; for before/after comparisons.
pub fn snapshot_except(root: &Path, skip: &[&str]) -> Vec<(String, Vec<u8>)> {
    fn walk(root: &Path, dir: &Path, skip: &[&str], out: &mut Vec<(String, Vec<u8>)>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            let rel = p.strip_prefix(root).expect("prefix").display().to_string();
            if skip.contains(&rel.as_str()) {
                continue;
            }
            if p.is_dir() {
                out.push((format!("{rel}/"), Vec::new()));
                walk(root, &p, skip, out);
            } else {
                out.push((rel, std::fs::read(&p).unwrap_or_default()));
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, skip, &mut out);
    out.sort();
    out
}

/// `loki <args>` in `dir`, with git told not to look above it for a
/// repository (so a folder that is none stays none).
pub fn loki_outside_a_repo(dir: &Path, args: &[&str]) -> Output {
    Command::new(loki_bin())
        .args(args)
        .current_dir(dir)
        .env("GIT_CEILING_DIRECTORIES", dir.parent().expect("parent"))
        .output()
        .expect("run")
}

/// Makes the file at `p` executable (an agent or a check written by a test).
pub fn make_executable(p: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// Runs git in `dir`; panics on failure; returns stdout.
pub fn git_in(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
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

/// The stream `id` of `loki status --json`.
pub fn status_stream(repo: &Repo, id: &str) -> serde_json::Value {
    status_json(repo)["streams"]
        .as_array()
        .expect("streams")
        .iter()
        .find(|s| s["id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("stream {id} not in `loki status --json`"))
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

/// Asserts `git fsck --strict` finds nothing wrong in the repository at `dir`.
pub fn assert_fsck_clean(dir: &Path) {
    let fsck = Command::new("git")
        .args(["fsck", "--strict"])
        .current_dir(dir)
        .output()
        .expect("fsck");
    assert!(
        fsck.status.success(),
        "git fsck: {}",
        String::from_utf8_lossy(&fsck.stderr)
    );
}

/// Asserts the repo is healthy to the git CLI and loki left nothing behind.
pub fn assert_clean_repo(repo: &Repo) {
    assert_fsck_clean(repo.path());
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

/// [`header`] with `agent` as the command and `max_attempts` attempts.
pub fn header_with(agent: &Path, max_parallel: usize, max_attempts: u32) -> String {
    header(max_parallel, "")
        .replace(
            &format!("command = \"{}\"", fake_agent().display()),
            &format!("command = \"{}\"", agent.display()),
        )
        .replace(
            "max_attempts = 3",
            &format!("max_attempts = {max_attempts}"),
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

/// [`stream`] writing `chapters/<id>.md`, with an `env = {...}` and extra keys.
pub fn stream_with(id: &str, deps: &[&str], env: &[(&str, &str)], extra: &str) -> String {
    let env: Vec<String> = env.iter().map(|(k, v)| format!("{k} = \"{v}\"")).collect();
    let mut more = String::new();
    if !env.is_empty() {
        more.push_str(&format!("env = {{ {} }}\n", env.join(", ")));
    }
    more.push_str(extra);
    stream(id, deps, &format!("chapters/{id}.md"), &more)
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

/// `git fsck --strict`'s complaints, empty when it has none (a HEAD that
/// "points at nothing" is reported on stderr, with exit 0 in some git
/// versions).
pub fn fsck_complaints(repo: &Repo) -> String {
    let out = Command::new("git")
        .args(["fsck", "--strict"])
        .current_dir(repo.path())
        .output()
        .expect("git fsck");
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    if out.status.success() && !err.contains("error") && !err.contains("points at nothing") {
        String::new()
    } else {
        err
    }
}

/// What git has to say about the worktree registrations: prunable entries
/// in `git worktree list --porcelain` and what `git worktree prune` would
/// remove; empty when every registration is sound.
pub fn worktree_complaints(repo: &Repo) -> String {
    let list = repo.git(&["worktree", "list", "--porcelain"]);
    let prune = Command::new("git")
        .args(["worktree", "prune", "--dry-run", "--verbose"])
        .current_dir(repo.path())
        .output()
        .expect("git worktree prune");
    let mut out = format!(
        "{}{}",
        String::from_utf8_lossy(&prune.stdout),
        String::from_utf8_lossy(&prune.stderr)
    )
    .trim()
    .to_string();
    if list.contains("prunable") {
        out.push_str(&format!("\ngit worktree list:\n{list}"));
    }
    out
}
