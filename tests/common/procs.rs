//! `/proc` readings: whether a process lives, its group, and which
//! processes of a group are left, so a test can show that no agent of a run
//! survived it.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

/// What `/proc/<pid>/stat` says of a process that matters here.
#[derive(Debug, Clone, Copy)]
pub struct Stat {
    pub state: char,
    pub pgrp: i32,
    /// Field 22: start time in clock ticks since boot.
    pub start: u64,
}

pub fn stat(pid: i32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(Stat {
        state: f.first()?.chars().next()?,
        pgrp: f.get(2)?.parse().ok()?,
        start: f.get(19)?.parse().ok()?,
    })
}

/// Clock ticks since boot, comparable with [`Stat::start`].
pub fn now_ticks() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let up = std::fs::read_to_string("/proc/uptime").expect("/proc/uptime");
    let secs: f64 = up
        .split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .expect("uptime");
    (secs * hz) as u64
}

/// Alive = listed in /proc and not a zombie.
pub fn alive(pid: i32) -> bool {
    stat(pid).is_some_and(|s| !matches!(s.state, 'Z' | 'X'))
}

fn all_pids() -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()))
        .collect()
}

/// Live processes whose group is one of `pgids` and that started no earlier
/// than `since` (so a stranger with a reused number never counts), as
/// (pid, pgid).
pub fn live_members(pgids: &BTreeSet<i32>, since: u64) -> Vec<(i32, i32)> {
    let mut out: Vec<(i32, i32)> = all_pids()
        .into_iter()
        .filter_map(|pid| {
            let s = stat(pid)?;
            (pgids.contains(&s.pgrp) && s.start >= since && !matches!(s.state, 'Z' | 'X'))
                .then_some((pid, s.pgrp))
        })
        .collect();
    out.sort_unstable();
    out
}

/// Live processes of group `pgid` that started at or after `since`.
pub fn group_members(pgid: i32, since: u64) -> Vec<i32> {
    live_members(&BTreeSet::from([pgid]), since)
        .into_iter()
        .map(|(pid, _)| pid)
        .collect()
}

/// Waits up to 3 s (a killed process needs a moment to be gone from /proc)
/// for group `pgid` to have no live member; returns those left.
pub fn wait_group_gone(pgid: i32, since: u64) -> Vec<i32> {
    let until = Instant::now() + Duration::from_secs(3);
    loop {
        let left = group_members(pgid, since);
        if left.is_empty() || Instant::now() >= until {
            return left;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Pids of live processes whose command line mentions `needle` (for
/// asserting that no agent of a run is left).
pub fn pids_matching(needle: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    all_pids()
        .into_iter()
        .filter(|&pid| pid != me && alive(pid))
        .filter(|pid| {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            String::from_utf8_lossy(&cmd).contains(needle)
        })
        .collect()
}

/// Pids of live processes whose working directory is inside `dir`.
pub fn pids_in(dir: &Path) -> Vec<i32> {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    all_pids()
        .into_iter()
        .filter(|&pid| alive(pid))
        .filter(|pid| {
            std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd.starts_with(&dir))
        })
        .collect()
}

/// Pids of live processes whose environment holds the entry `key=value`
/// (say an attempt's `LOKI_AGENT_TOKEN`), this process excluded.
pub fn pids_with_env(entry: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    let mut pids: Vec<i32> = all_pids()
        .into_iter()
        .filter(|&pid| pid != me && alive(pid))
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|v| v == entry.as_bytes()))
        })
        .collect();
    pids.sort_unstable();
    pids
}

/// Waits up to `limit` for no live process to hold `entry` in its
/// environment; returns those left.
pub fn wait_env_gone(entry: &str, limit: Duration) -> Vec<i32> {
    let until = Instant::now() + limit;
    loop {
        let left = pids_with_env(entry);
        if left.is_empty() || Instant::now() >= until {
            return left;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
