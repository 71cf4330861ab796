//! Stream ids: the one rule for what an id may be, checked at every door
//! an id comes in by (the swarm file, signal names, state file names,
//! command arguments).

/// Valid stream id: `[a-z0-9][a-z0-9._-]{0,63}`.
pub fn valid_id(id: &str) -> bool {
    let b = id.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b[1..].iter().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'_' | b'-')
        })
}

/// A stream id the swarm file accepts: [`valid_id`] and usable as a git ref
/// component (no `..`, not ending in `.` or `.lock`), so `loki/<id>` is a
/// valid branch name.
pub fn valid_stream_id(id: &str) -> bool {
    valid_id(id) && !id.contains("..") && !id.ends_with('.') && !id.ends_with(".lock")
}
