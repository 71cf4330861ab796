//! Rendering refusals, and the helpers behind positions and suggestions.

use super::super::diag::{edit_distance, suggest, LineIndex};
use super::super::parse::{sanitized_id, AGENT_KEYS, STREAM_KEYS};
use super::super::values::sanitized_name;
use super::*;

#[test]
fn display_with_and_without_position() {
    let e = ConfigError {
        file: PathBuf::from("loki.toml"),
        line: 3,
        col: 7,
        message: "m".into(),
        help: "h".into(),
    };
    assert_eq!(e.to_string(), "loki.toml:3:7: m\n  help: h");
}

#[test]
fn helpers() {
    assert_eq!(line_col("ab\ncd", 0), (1, 1));
    assert_eq!(line_col("ab\ncd", 3), (2, 1));
    assert_eq!(line_col("ab\ncd", 4), (2, 2));
    assert_eq!(line_col("ab\ncd", 99), (2, 3));
    assert_eq!(line_col("é\né", 4), (2, 1));
    assert_eq!(line_col("é\né", 5), (2, 2));
    assert_eq!(line_col("éa", 1), (1, 1));
    assert_eq!(edit_distance("modle", "model"), 1);
    assert_eq!(edit_distance("Model", "model"), 0);
    assert_eq!(edit_distance("", "abc"), 3);
    assert_eq!(suggest("timout", AGENT_KEYS), Some("timeout".into()));
    assert_eq!(suggest("deps", STREAM_KEYS), Some("depends_on".into()));
    assert_eq!(suggest("deps", AGENT_KEYS), None);
    assert_eq!(suggest("xyz", AGENT_KEYS), None);
    assert_eq!(sanitized_id("Chapter 1"), Some("chapter-1".into()));
    assert_eq!(sanitized_id("a..b.lock"), Some("a.b".into()));
    assert_eq!(sanitized_id("ok"), None);
    assert_eq!(sanitized_name("my-var"), "MY_VAR");
}

/// The line index answers as a scan from the start would, for every byte
/// (inside a multi-byte character too) and past the end.
#[test]
fn the_line_index_agrees_with_a_scan_at_every_offset() {
    let text = "[swarm]\ntarget = \"главная\"\n\n  x = 1\r\nlast";
    let scan = |offset: usize| {
        let mut off = offset.min(text.len());
        while !text.is_char_boundary(off) {
            off -= 1;
        }
        let before = &text[..off];
        let line = before.matches('\n').count() + 1;
        let start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
        (line, before[start..].chars().count() + 1)
    };
    let index = LineIndex::new(text);
    for offset in 0..text.len() + 3 {
        assert_eq!(
            index.line_col(text, offset),
            scan(offset),
            "offset {offset}"
        );
    }
}
