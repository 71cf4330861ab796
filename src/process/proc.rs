//! What `/proc` says about a process group: start times (so a reused pid is
//! never taken for ours), the boot a record belongs to, the token a child's
//! environment carries, and which processes are still in a recorded group.

use crate::model::ProcessRecord;

/// The environment variable every child loki starts carries, inherited by
/// what it starts: after a crash it tells our leftovers from strangers.
pub const TOKEN_ENV: &str = "LOKI_AGENT_TOKEN";

/// The fields of `/proc/<pid>/stat` loki needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stat {
    pub(crate) state: char,
    pub(crate) ppid: i32,
    pub(crate) pgrp: i32,
    pub(crate) start_time: u64,
}

/// Parses `/proc/<pid>/stat`. The command name (field 2) may hold spaces and
/// parentheses, so the fields are split after the *last* `)`.
pub(crate) fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state); field n is fields[n - 3].
    Some(Stat {
        state: fields.first()?.chars().next()?,
        ppid: fields.get(4 - 3)?.parse().ok()?,
        pgrp: fields.get(5 - 3)?.parse().ok()?,
        start_time: fields.get(22 - 3)?.parse().ok()?,
    })
}

pub(crate) fn read_stat(pid: i32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

/// Field 22 of `/proc/<pid>/stat` (start time in clock ticks since boot).
pub fn proc_start_time(pid: i32) -> Option<u64> {
    if pid <= 0 {
        return None;
    }
    read_stat(pid).map(|s| s.start_time)
}

/// Whether process `pid` still runs and is the one that started at
/// `start_time` (0: unknown, any start time counts); a zombie does not run.
/// Where /proc cannot tell (hidden), a live pid counts.
pub fn is_alive(pid: i32, start_time: u64) -> bool {
    if pid <= 0 {
        return false;
    }
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
        Err(nix::errno::Errno::ESRCH) => false,
        // Alive (EPERM: alive but someone else's).
        _ => match read_stat(pid) {
            Some(s) => {
                !matches!(s.state, 'Z' | 'X' | 'x')
                    && (start_time == 0 || s.start_time == 0 || s.start_time == start_time)
            }
            None => true,
        },
    }
}

/// This process's own start time (field 22 of its `/proc/self/stat`).
pub fn own_start_time() -> u64 {
    static START: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *START.get_or_init(|| proc_start_time(std::process::id() as i32).unwrap_or(0))
}

/// A hash of `/proc/sys/kernel/random/boot_id` (0 when unreadable).
pub fn boot_hash() -> u64 {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|id| crate::util::fnv1a(id.trim().as_bytes()))
        .unwrap_or(0)
}

/// A value no other child of this machine carries: pid, time and a counter.
pub(crate) fn new_token() -> u64 {
    static COUNT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let seed = format!("{}-{nanos}-{n}", std::process::id());
    crate::util::fnv1a(seed.as_bytes()).max(1)
}

/// How a token is written into [`TOKEN_ENV`].
pub(crate) fn token_text(token: u64) -> String {
    format!("{token:016x}")
}

/// Whether `/proc/<pid>/environ` holds `LOKI_AGENT_TOKEN=<token>`.
pub(crate) fn carries_token(pid: i32, token: u64) -> bool {
    let want = format!("{TOKEN_ENV}={}", token_text(token));
    std::fs::read(format!("/proc/{pid}/environ"))
        .is_ok_and(|env| env.split(|b| *b == 0).any(|v| v == want.as_bytes()))
}

/// The record of a child just started as the leader of its own group.
pub(crate) fn record_of(pid: i32, token: u64) -> ProcessRecord {
    ProcessRecord {
        pid,
        pgid: pid,
        start_time: proc_start_time(pid).unwrap_or(0),
        boot: boot_hash(),
        token,
    }
}

/// Every live process of the run a record names, listed from `/proc`:
/// the members of its group, every process whose environment carries its
/// token (a `setsid()` escapee keeps it), and, while the recorded leader
/// runs, every descendant of the leader (one that cleared its
/// environment). Only processes that started no earlier than the leader
/// count, so a reused pid is never mistaken for ours.
///
/// This is for a group this supervisor started and has watched since:
/// while any member lives the kernel never hands the group's number to
/// another process. Zombies are not counted (they cannot be signalled and
/// vanish when reaped). Nothing is returned for a record of another boot,
/// or when a live process holds the group's number as its pid but started
/// at another time than the recorded leader (the number was reused).
pub fn group_members(rec: &ProcessRecord) -> Vec<i32> {
    members(rec, false)
}

/// [`group_members`] of a group recorded by an earlier supervisor. Between
/// the two the group may have emptied and its number gone to a stranger
/// whose own leader has exited too: so when the recorded leader is gone,
/// only processes whose environment carries the record's token count.
pub fn leftover_members(rec: &ProcessRecord) -> Vec<i32> {
    members(rec, true)
}

fn members(rec: &ProcessRecord, leftover: bool) -> Vec<i32> {
    if rec.pgid <= 1 {
        return Vec::new();
    }
    if rec.boot != 0 && rec.boot != boot_hash() {
        return Vec::new();
    }
    let mut leader_ours = false;
    if rec.pid == rec.pgid && rec.start_time != 0 {
        if let Some(leader) = read_stat(rec.pgid) {
            if leader.start_time != rec.start_time && !matches!(leader.state, 'Z' | 'X') {
                return Vec::new();
            }
            leader_ours = leader.start_time == rec.start_time;
        }
    }
    let need_token = leftover && rec.token != 0 && !leader_ours;
    let procs: std::collections::HashMap<i32, Stat> = all_stats()
        .into_iter()
        .filter(|(_, s)| s.start_time >= rec.start_time && !matches!(s.state, 'Z' | 'X'))
        .collect();
    // A descendant of the leader: its chain of parents reaches the leader
    // through processes that are all ours (started after it).
    let descends = |mut pid: i32| {
        for _ in 0..procs.len() {
            match procs.get(&pid) {
                Some(s) if s.ppid == rec.pid => return true,
                Some(s) => pid = s.ppid,
                None => return false,
            }
        }
        false
    };
    let mut members: Vec<i32> = procs
        .iter()
        .filter(|(&pid, s)| {
            let token = || rec.token != 0 && carries_token(pid, rec.token);
            (s.pgrp == rec.pgid && !need_token)
                || (leader_ours && rec.pid != 0 && (pid == rec.pid || descends(pid)))
                || token()
        })
        .map(|(&pid, _)| pid)
        .collect();
    members.sort_unstable();
    members
}

/// Every process `/proc` lists, with its stat fields.
pub(crate) fn all_stats() -> Vec<(i32, Stat)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| Some((pid, read_stat(pid)?)))
        .collect()
}

/// Live descendants of `root` (by parent links as `/proc` shows them now).
pub(crate) fn descendants(root: i32) -> Vec<i32> {
    let stats = all_stats();
    let parent: std::collections::HashMap<i32, i32> =
        stats.iter().map(|(pid, s)| (*pid, s.ppid)).collect();
    stats
        .iter()
        .filter(|(_, s)| !matches!(s.state, 'Z' | 'X'))
        .filter(|(pid, _)| {
            let mut p = *pid;
            for _ in 0..parent.len() {
                match parent.get(&p) {
                    Some(&pp) if pp == root => return true,
                    Some(&pp) if pp > 1 => p = pp,
                    _ => return false,
                }
            }
            false
        })
        .map(|(pid, _)| *pid)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_parens_and_spaces_in_comm() {
        let line = "4242 (we(ird) ) name) S 1 4240 4240 0 -1 4194560 100 0 0 0 \
                    1 2 0 0 20 0 1 0 987654 1000 10 18446744073709551615";
        let s = parse_stat(line).unwrap();
        assert_eq!(s.state, 'S');
        assert_eq!(s.ppid, 1);
        assert_eq!(s.pgrp, 4240);
        assert_eq!(s.start_time, 987654);
        assert_eq!(parse_stat("12 (x) S 1"), None);
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn own_start_time_and_group() {
        let me = std::process::id() as i32;
        let st = proc_start_time(me).unwrap();
        assert!(st > 0);
        assert_eq!(proc_start_time(-1), None);
        let pgid = nix::unistd::getpgrp().as_raw();
        let rec = ProcessRecord {
            pid: pgid,
            pgid,
            start_time: 0,
            boot: boot_hash(),
            token: 0,
        };
        assert!(group_members(&rec).contains(&me));
    }
}
