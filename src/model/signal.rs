//! What a signal (or a steering command) asks for: the kinds of
//! `.loki/signals/<KIND>_<id>`, loki-mode's names plus loki's own.

use serde::{Deserialize, Serialize};

/// A signal's or steering command's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Kind {
    MergeRequested,
    FeatureReady,
    TestsPassed,
    TestsFailed,
    Approve,
    Reject,
    Cancel,
    Retry,
    Pause,
    Resume,
    Stop,
}

impl Kind {
    pub const ALL: &'static [Kind] = &[
        Kind::MergeRequested,
        Kind::FeatureReady,
        Kind::TestsPassed,
        Kind::TestsFailed,
        Kind::Approve,
        Kind::Reject,
        Kind::Cancel,
        Kind::Retry,
        Kind::Pause,
        Kind::Resume,
        Kind::Stop,
    ];

    /// `MERGE_REQUESTED`, `APPROVE`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::MergeRequested => "MERGE_REQUESTED",
            Kind::FeatureReady => "FEATURE_READY",
            Kind::TestsPassed => "TESTS_PASSED",
            Kind::TestsFailed => "TESTS_FAILED",
            Kind::Approve => "APPROVE",
            Kind::Reject => "REJECT",
            Kind::Cancel => "CANCEL",
            Kind::Retry => "RETRY",
            Kind::Pause => "PAUSE",
            Kind::Resume => "RESUME",
            Kind::Stop => "STOP",
        }
    }

    /// Case-insensitive.
    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL
            .iter()
            .copied()
            .find(|k| k.as_str().eq_ignore_ascii_case(s))
    }

    /// Kinds that may stand without a stream id (whole swarm).
    pub fn allows_no_stream(self) -> bool {
        matches!(self, Kind::Pause | Kind::Resume | Kind::Stop)
    }
}
