//! The scripted Messages API server and the real Claude Code CLI.

use std::path::PathBuf;
use std::process::Command;

use super::{fast_path, mock_anthropic};

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
