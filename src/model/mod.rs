//! Plain data shared by every layer: stream ids, statuses and state
//! records, signal kinds, events, every `.loki/` path and branch name, and
//! the `Loki-*` trailer keys. Nothing here does I/O beyond creating the
//! run-time folders ([`paths::Layout::ensure`]).

pub mod claim;
pub mod id;
pub mod paths;
pub mod signal;
pub mod state;
pub mod trailers;

pub use id::{valid_stream_id, InvalidId, StreamId};
pub use paths::Layout;
pub use signal::Kind;
pub use state::{AttemptRecord, Event, Outcome, ProcessRecord, Status, StreamState, SwarmState};
