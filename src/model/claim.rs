//! What several supervisors sharing one swarm through a git remote record
//! there (`supervisor/remote.rs` has the protocol): who holds a stream
//! (`refs/loki/claims/<id>`) and which streams are merged
//! (`refs/loki/done/<id>`). Each is a commit with an empty tree whose
//! message is one line and this record as JSON; a claim's renewals are a
//! chain of such commits, so `git log refs/loki/done/<id>` is the stream's
//! whole claim history.

use serde::{Deserialize, Serialize};

/// The largest record message read back (anything could have pushed it).
pub const MAX_RECORD: usize = 64 * 1024;

/// One supervisor: the machine (`LOKI_MACHINE`, else the host name), the
/// clone it runs in, its pid and when it started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Holder {
    pub machine: String,
    pub clone: String,
    pub pid: u32,
    pub started_at: String,
}

impl Holder {
    /// Same machine and clone: this supervisor or an earlier one of the
    /// same clone (which the supervisor lock says is gone).
    pub fn same_clone(&self, other: &Holder) -> bool {
        self.machine == other.machine && self.clone == other.clone
    }

    /// `machine (pid N)`, for views.
    pub fn label(&self) -> String {
        format!("{} (pid {})", self.machine, self.pid)
    }
}

/// A stream held by a supervisor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claim {
    pub stream: String,
    pub holder: Holder,
    /// When this holder took the stream.
    pub since: String,
    /// When the holder last renewed the claim.
    pub renewed: String,
    /// When the claim lapses unless renewed again; `None`: parked (the
    /// holder's run ended with the stream waiting for a person: failed,
    /// blocked, conflicted, cancelled or awaiting approval), never taken
    /// over by the clock.
    pub expires: Option<String>,
    /// The holder's status of the stream.
    pub status: String,
    /// The holder's last attempt number.
    pub attempt: u32,
    /// What the stream cost on the holder's machine.
    pub cost_usd: f64,
    /// The feedback the next attempt is to get.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feedback: Option<String>,
    /// The holder this one took the stream over from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub took_over_from: Option<Holder>,
}

/// A stream merged into the remote target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Done {
    pub stream: String,
    /// The merge commit on the target.
    pub merge: String,
    pub by: Holder,
    pub at: String,
    pub cost_usd: f64,
}

/// The commit message a record is stored as.
pub fn record_message<T: Serialize>(what: &str, stream: &str, record: &T) -> String {
    let json = serde_json::to_string(record).unwrap_or_else(|_| "{}".into());
    format!("loki {what} {stream}\n\n{json}\n")
}

/// The record in a commit message written by [`record_message`]; `None`
/// for anything else (too long, no JSON, the wrong shape).
pub fn parse_record<T: for<'de> Deserialize<'de>>(message: &str) -> Option<T> {
    if message.len() > MAX_RECORD {
        return None;
    }
    let start = message.find('{')?;
    serde_json::from_str(message[start..].trim()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holder() -> Holder {
        Holder {
            machine: "m1".into(),
            clone: "/c".into(),
            pid: 7,
            started_at: "2026-12-01T00:00:00Z".into(),
        }
    }

    #[test]
    fn a_claim_reads_back_from_its_message_and_junk_is_none() {
        let c = Claim {
            stream: "ch01".into(),
            holder: holder(),
            since: "t0".into(),
            renewed: "t1".into(),
            expires: Some("t2".into()),
            status: "running".into(),
            attempt: 2,
            cost_usd: 0.5,
            feedback: Some("say {more}".into()),
            took_over_from: None,
        };
        let msg = record_message("claim", "ch01", &c);
        assert!(msg.starts_with("loki claim ch01\n\n{"));
        assert_eq!(parse_record::<Claim>(&msg), Some(c));
        assert_eq!(parse_record::<Claim>("loki claim x\n\nnot json"), None);
        assert_eq!(parse_record::<Claim>(&"{".repeat(MAX_RECORD + 1)), None);
        let other = Holder { pid: 9, ..holder() };
        assert!(holder().same_clone(&other));
        assert!(!holder().same_clone(&Holder {
            clone: "/d".into(),
            ..holder()
        }));
    }
}
