//! The one transaction door: every change to a stream's or the swarm's
//! state, whether the supervisor makes it or a command applies it with no
//! supervisor running, is a [`machine`](super::machine) step written here
//! as a compare-and-swap of the state file followed by its events in
//! `events.jsonl`. One door means one event schema and no second copy of
//! the rules to drift.
//!
//! The state is written first, then the events (with the version the write
//! produced): a crash between the two loses an event line, never a state
//! change, and `loki run` works from the state.

use crate::model::{Event, StreamState, SwarmState};
use crate::store::{StateStore, StoreError};

use super::machine::{event_of, Step};

/// A step as written.
#[derive(Debug)]
pub struct Committed {
    pub state: StreamState,
    /// The events as appended (version filled in).
    pub events: Vec<Event>,
    /// Appending failed after the state was written (the change stands).
    pub event_error: Option<String>,
}

/// Writes `step` over the stream's state at version `expected`, then
/// appends its events. A version mismatch is [`StoreError::Conflict`] and
/// writes nothing.
pub fn commit(
    store: &StateStore,
    expected: u64,
    step: &Step,
    ts: &str,
) -> Result<Committed, StoreError> {
    let content = step.state.clone();
    let id = content.id.to_string();
    let state = store.update(&id, expected, move |st| {
        let v = st.version;
        *st = content;
        st.version = v;
    })?;
    let events: Vec<Event> = step
        .events
        .iter()
        .map(|d| event_of(&id, d, state.version, ts))
        .collect();
    let mut event_error = None;
    for ev in &events {
        if let Err(e) = store.append_event(ev) {
            event_error = Some(e.to_string());
            break;
        }
    }
    Ok(Committed {
        state,
        events,
        event_error,
    })
}

/// Creates the state of a stream seen for the first time (version 1,
/// pending); refused if it exists.
pub fn create(store: &StateStore, id: &str) -> Result<StreamState, StoreError> {
    store.update(id, 0, |_| {})
}

/// Writes a new swarm state at version `expected`, then its event.
pub fn commit_swarm(
    store: &StateStore,
    expected: u64,
    next: &SwarmState,
    event: Option<&Event>,
) -> Result<SwarmState, StoreError> {
    let content = next.clone();
    let sw = store.update_swarm(expected, move |s| {
        let v = s.version;
        *s = content;
        s.version = v;
    })?;
    if let Some(ev) = event {
        let mut ev = ev.clone();
        ev.version = Some(sw.version);
        // The pause stands even if its line cannot be appended.
        let _ = store.append_event(&ev);
    }
    Ok(sw)
}

/// Removes a stream's state at version `expected` (`loki clean`), with an
/// event saying so: the state goes through the door on its way out too.
pub fn forget(store: &StateStore, id: &str, expected: u64, why: &str) -> Result<(), StoreError> {
    if !store.remove(id, expected)? {
        return Ok(());
    }
    let _ = store.append_event(&Event {
        ts: crate::util::now_rfc3339(),
        kind: "forgotten".into(),
        stream: Some(id.to_string()),
        from: None,
        to: None,
        version: Some(expected),
        message: why.into(),
        signal_file: None,
    });
    Ok(())
}

/// A line that is not a stream's transition (the supervisor's own notes,
/// signals, commands), appended through the same door.
pub fn note(store: &StateStore, ev: &Event) -> Result<(), StoreError> {
    store.append_event(ev)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Kind, Status};
    use crate::supervisor::machine::{handle, Ctx, Input, Steer};

    /// The machine tests' context, as a command with no supervisor sees it.
    fn ctx() -> Ctx {
        Ctx {
            supervised: false,
            max_resolve: 0,
            validators: false,
            ..crate::supervisor::machine::tests::ctx()
        }
    }

    #[test]
    fn a_step_is_written_with_its_events_at_the_new_version() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path());
        let st = create(&store, "ch01").unwrap();
        let cancel = Input::Steer(Steer {
            kind: Kind::Cancel,
            note: None,
            count: false,
        });
        let step = handle(&st, cancel, &ctx()).unwrap();
        let c = commit(&store, st.version, &step, "t").unwrap();
        assert_eq!(c.state.status, Status::Cancelled);
        assert_eq!(c.state.version, st.version + 1);
        let on_disk = store.load("ch01").unwrap().unwrap();
        assert_eq!(on_disk, c.state);
        let events = store.read_events().unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].kind, "transition");
        assert_eq!(events[0].version, Some(c.state.version));
        assert_eq!(events[0].to, Some(Status::Cancelled));
    }

    #[test]
    fn a_stale_step_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path());
        let st = create(&store, "ch01").unwrap();
        let pause = Input::Steer(Steer {
            kind: Kind::Pause,
            note: None,
            count: false,
        });
        let step = handle(&st, pause, &ctx()).unwrap();
        commit(&store, st.version, &step, "t").unwrap();
        // The same step again, at the version it was decided on: refused.
        let e = commit(&store, st.version, &step, "t").unwrap_err();
        assert!(matches!(e, StoreError::Conflict { .. }), "{e}");
        assert_eq!(store.load("ch01").unwrap().unwrap().version, st.version + 1);
        assert!(
            store.read_events().unwrap().is_empty(),
            "a pause is no transition"
        );
        assert!(create(&store, "ch01").is_err(), "exists already");
    }

    #[test]
    fn forget_removes_only_the_version_it_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path());
        let st = create(&store, "ch01").unwrap();
        // Moved on meanwhile: the removal loses, the state stays.
        store.update("ch01", st.version, |_| {}).unwrap();
        let e = forget(&store, "ch01", st.version, "clean").unwrap_err();
        assert!(matches!(e, StoreError::Conflict { .. }), "{e}");
        assert!(store.load("ch01").unwrap().is_some());
        forget(&store, "ch01", st.version + 1, "clean").unwrap();
        assert!(store.load("ch01").unwrap().is_none());
        let events = store.read_events().unwrap();
        assert_eq!(events.last().map(|e| e.kind.as_str()), Some("forgotten"));
        // Already gone: nothing to do.
        forget(&store, "ch01", 9, "clean").unwrap();
    }
}
