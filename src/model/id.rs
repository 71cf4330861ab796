//! Stream ids: the one rule for what an id may be ([`valid_stream_id`]),
//! and the [`StreamId`] newtype that holds an id which passed it, made at
//! the doors ids come in by (the swarm file, state files and their names,
//! signal names).

/// The characters and length of an id: `[a-z0-9][a-z0-9._-]{0,63}`.
fn valid_id(id: &str) -> bool {
    let b = id.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b[1..].iter().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'_' | b'-')
        })
}

/// The one rule for a stream id: [`valid_id`]'s characters, and usable as a git ref
/// component (no `..`, not ending in `.` or `.lock`), so `loki/<id>` is a
/// valid branch name.
pub fn valid_stream_id(id: &str) -> bool {
    valid_id(id) && !id.contains("..") && !id.ends_with('.') && !id.ends_with(".lock")
}

/// A stream id that passed [`valid_stream_id`]. The ways to make one are
/// [`StreamId::parse`] and deserializing (which parses), so code that holds
/// a `StreamId` never checks it again: the swarm file, the state files and
/// the signal names are the doors ids come in by. (`Default`, the empty id,
/// exists only for `StreamState::default()` in tests and is never stored:
/// the store sets the id from the file name it validated.)
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct StreamId(String);

/// Why a text is not a stream id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a stream id: 1 to 64 characters of lowercase letters, digits, `.`, `_` and `-`, starting with a letter or digit, without `..` and not ending in `.` or `.lock`")]
pub struct InvalidId(pub String);

impl StreamId {
    pub fn parse(id: &str) -> Result<StreamId, InvalidId> {
        if valid_stream_id(id) {
            Ok(StreamId(id.to_string()))
        } else {
            Err(InvalidId(id.to_string()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for StreamId {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for StreamId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// An id is a valid file and folder name (`.loki/state/<id>.json`,
/// `.loki/worktrees/<id>`).
impl AsRef<std::path::Path> for StreamId {
    fn as_ref(&self) -> &std::path::Path {
        std::path::Path::new(&self.0)
    }
}

impl std::borrow::Borrow<str> for StreamId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for StreamId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl PartialEq<str> for StreamId {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for StreamId {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl PartialEq<String> for StreamId {
    fn eq(&self, other: &String) -> bool {
        &self.0 == other
    }
}

impl From<StreamId> for String {
    fn from(id: StreamId) -> String {
        id.0
    }
}

impl<'de> serde::Deserialize<'de> for StreamId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<StreamId, D::Error> {
        let s = String::deserialize(d)?;
        StreamId::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_valid_ids_are_made() {
        for good in ["a", "ch01", "scene.3-b_x", &"a".repeat(64)] {
            assert_eq!(StreamId::parse(good).unwrap().as_str(), good);
        }
        for bad in [
            "",
            "A",
            "-a",
            "a..b",
            "a.",
            "a.lock",
            "a/b",
            &"a".repeat(65),
        ] {
            assert!(StreamId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_state_file_with_a_bad_id_does_not_deserialize() {
        let ok: StreamId = serde_json::from_str("\"ch01\"").unwrap();
        assert_eq!(ok, "ch01");
        let e = serde_json::from_str::<StreamId>("\"../x\"").unwrap_err();
        assert!(e.to_string().contains("is not a stream id"), "{e}");
    }
}
