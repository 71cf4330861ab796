//! Version probes: `<command> --version`, contained like every child (own
//! group, death signal, token) and limited in time. Which commands may be
//! asked is the caller's call: a program that does not know `--version`
//! might do its real work instead.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use super::proc::new_token;
use super::spawn::{contained, kill_group};

/// `<command> --version` time limit.
const VERSION_TIMEOUT: Duration = Duration::from_secs(5);

static VERSIONS: Mutex<BTreeMap<String, String>> = Mutex::new(BTreeMap::new());

/// [`query_version`], cached per command for the life of the process (a
/// failure too, as ""). Callers ask only programs known to answer
/// `--version` (Claude Code, not a plain agent).
pub fn agent_version(command: &str) -> String {
    if let Ok(cache) = VERSIONS.lock() {
        if let Some(v) = cache.get(command) {
            return v.clone();
        }
    }
    let version = query_version(command).unwrap_or_default();
    if let Ok(mut cache) = VERSIONS.lock() {
        cache.insert(command.to_string(), version.clone());
    }
    version
}

/// The first line of `<command> --version`, trimmed; `None` when it cannot
/// start, fails, or does not answer within 5 seconds. Run from the temporary
/// folder, never from the user's checkout. Blocking.
pub fn query_version(command: &str) -> Option<String> {
    let (mut cmd, _) = contained(
        command,
        &["--version".to_string()],
        &std::env::temp_dir(),
        &[],
        new_token(),
        None,
    )
    .ok()?
    .into_parts();
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let pgid = child.id() as i32;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("loki-version".into())
        .spawn(move || {
            let _ = tx.send(child.wait_with_output());
        })
        .ok()?;
    match rx.recv_timeout(VERSION_TIMEOUT) {
        Ok(Ok(out)) if out.status.success() => {
            let text = String::from_utf8_lossy(&out.stdout);
            Some(text.lines().next().unwrap_or("").trim().to_string())
        }
        Ok(_) => None,
        Err(_) => {
            // Still running (or its output is held open): end its group; the
            // waiting thread then reaps it.
            kill_group(pgid);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_of_a_missing_command_is_empty() {
        assert_eq!(agent_version("/definitely/not/here"), "");
        assert_eq!(agent_version("/definitely/not/here"), "");
    }
}
