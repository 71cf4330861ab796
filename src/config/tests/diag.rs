//! Rendering refusals, and the helpers behind positions and suggestions.

use super::super::diag::{edit_distance, suggest};
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
