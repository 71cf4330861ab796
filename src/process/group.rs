//! Ending a process group: `killpg(SIGTERM)`, a grace period,
//! `killpg(SIGKILL)`, reap; and sweeping what an earlier supervisor left.
//! `kill_on_drop` is never relied on.
//!
//! The leader is never reaped before the first `killpg`, so the group id
//! cannot have been reused; once it is reaped, only members listed through
//! `/proc` ([`group_members`]) are ever signalled.

use std::process::ExitStatus;
use std::time::Duration;

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use tokio::time::Instant;

use super::proc::{group_members, leftover_members};
use crate::model::ProcessRecord;

/// After SIGKILL, how long to wait for the leader and the group to vanish.
pub(crate) const KILL_LIMIT: Duration = Duration::from_secs(5);
/// Polling period while waiting for a group to empty.
const POLL: Duration = Duration::from_millis(20);

/// SIGKILLs the group when dropped before [`GroupGuard::disarm`], so a
/// dropped run future leaves nothing behind.
pub(crate) struct GroupGuard {
    pub(crate) rec: ProcessRecord,
    pub(crate) leader_reaped: bool,
    done: bool,
}

impl GroupGuard {
    pub(crate) fn new(rec: ProcessRecord) -> GroupGuard {
        GroupGuard {
            rec,
            leader_reaped: false,
            done: false,
        }
    }

    /// The group has been ended properly.
    pub(crate) fn disarm(&mut self) {
        self.done = true;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        // While the leader is unreaped its pid (= the pgid) cannot be reused.
        if !self.leader_reaped {
            let _ = killpg(Pid::from_raw(self.rec.pgid), Signal::SIGKILL);
        }
        for pid in group_members(&self.rec) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

pub(crate) async fn members_now(rec: ProcessRecord) -> Vec<i32> {
    tokio::task::spawn_blocking(move || group_members(&rec))
        .await
        .unwrap_or_default()
}

/// Sends `sig` to the whole run: the group (by `killpg` while the leader
/// is unreaped, so its number is still ours) and every member one by one
/// (token carriers and descendants that left the group). Returns whether
/// any member was left to signal.
async fn signal_run(rec: ProcessRecord, sig: Signal, leader_unreaped: bool) -> bool {
    if leader_unreaped {
        let _ = killpg(Pid::from_raw(rec.pgid), sig);
    }
    let members = members_now(rec).await;
    for &pid in &members {
        let _ = kill(Pid::from_raw(pid), sig);
    }
    !members.is_empty()
}

/// Waits until no member of the group is left or `until` passes; true if
/// the group is empty.
async fn wait_group_empty(rec: ProcessRecord, until: Instant) -> bool {
    loop {
        if members_now(rec).await.is_empty() {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Ends the whole run: SIGTERM, up to `grace` for the leader to exit and
/// every member to go, SIGKILL (repeated until none is left, so a member
/// forked meanwhile goes too), reap. `status` is the leader's exit status
/// if it has already been reaped.
pub(crate) async fn end_group(
    child: &mut tokio::process::Child,
    rec: ProcessRecord,
    grace: Duration,
    status: &mut Option<ExitStatus>,
) {
    if status.is_some() && members_now(rec).await.is_empty() {
        return;
    }
    signal_run(rec, Signal::SIGTERM, status.is_none()).await;
    let until = Instant::now() + grace;
    if status.is_none() {
        if let Ok(Ok(st)) = tokio::time::timeout_at(until, child.wait()).await {
            *status = Some(st);
        }
    }
    if status.is_some() && wait_group_empty(rec, until).await {
        return;
    }
    let until = Instant::now() + KILL_LIMIT;
    loop {
        let unreaped = status.is_none();
        let left = signal_run(rec, Signal::SIGKILL, unreaped).await;
        if unreaped {
            if let Ok(Ok(st)) = tokio::time::timeout(POLL, child.wait()).await {
                *status = Some(st);
            }
        }
        if (!left && status.is_some()) || Instant::now() >= until {
            break;
        }
        if !unreaped {
            tokio::time::sleep(POLL).await;
        }
    }
}

/// SIGKILLs the whole run at once, repeated until nothing of it is left
/// (at most [`KILL_LIMIT`]). For a run whose leader is not yet reaped.
/// Blocking.
pub(crate) fn kill_now(rec: &ProcessRecord) {
    let until = std::time::Instant::now() + KILL_LIMIT;
    let _ = killpg(Pid::from_raw(rec.pgid), Signal::SIGKILL);
    loop {
        let members = group_members(rec);
        if members.is_empty() || std::time::Instant::now() >= until {
            return;
        }
        for pid in members {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        std::thread::sleep(POLL);
    }
}

/// Ends what is left of a run recorded by an earlier supervisor:
/// SIGTERM, `grace`, SIGKILL. Returns how many processes it found.
/// Nothing but [`leftover_members`] (the group, the token's carriers, a
/// live leader's descendants) is ever signalled. Blocking.
///
/// Members are signalled one by one (never `killpg`), re-listed before every
/// round, so a member forked meanwhile is caught by a later round.
pub fn sweep_leftover(rec: &ProcessRecord, grace: Duration) -> usize {
    let found = leftover_members(rec);
    if found.is_empty() {
        return 0;
    }
    // Every round lists with the same care: a leader that dies meanwhile
    // leaves only token carriers to be signalled.
    let signal_all = |sig: Signal| {
        for pid in leftover_members(rec) {
            let _ = kill(Pid::from_raw(pid), sig);
        }
    };
    let poll = std::time::Duration::from_millis(20);
    signal_all(Signal::SIGTERM);
    let until = std::time::Instant::now() + grace;
    while std::time::Instant::now() < until {
        if leftover_members(rec).is_empty() {
            return found.len();
        }
        std::thread::sleep(poll);
    }
    let until = std::time::Instant::now() + KILL_LIMIT;
    loop {
        if leftover_members(rec).is_empty() || std::time::Instant::now() >= until {
            break;
        }
        signal_all(Signal::SIGKILL);
        std::thread::sleep(poll);
    }
    found.len()
}
