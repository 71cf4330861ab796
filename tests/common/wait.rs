//! Waiting for something to happen. A test never sleeps to show that
//! something did not happen: it waits here for a later event that would have
//! come after it, then asserts.

use std::time::{Duration, Instant};

/// Longest wait for something a run must reach.
pub const WAIT_LIMIT: Duration = Duration::from_secs(20);

/// Longest any single `loki run` of the end-to-end tests may take.
pub const RUN_LIMIT: Duration = Duration::from_secs(40);

/// How often a wait looks again.
const POLL: Duration = Duration::from_millis(10);

/// Polls `cond` until it holds or `limit` has passed; whether it held.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        std::thread::sleep(POLL);
    }
}

/// Like [`wait_until`], with a tighter poll for instants that last only
/// milliseconds (a merge in flight, a checkout half done). Gives up early
/// when `stop` holds (the run ended).
pub fn wait_closely(
    limit: Duration,
    mut stop: impl FnMut() -> bool,
    mut cond: impl FnMut() -> bool,
) -> bool {
    let until = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if stop() || Instant::now() >= until {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Waits until `cond` holds; panics after `limit` saying what never
/// happened and what `context` says about the state then.
pub fn wait_for(
    what: &str,
    limit: Duration,
    cond: impl FnMut() -> bool,
    context: impl FnOnce() -> String,
) {
    if !wait_until(limit, cond) {
        panic!("never happened within {limit:?}: {what}\n{}", context());
    }
}
