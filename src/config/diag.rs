//! Diagnostics: a refusal names file, line and column (1-based, the column
//! in characters) and says how to fix it; and the "did you mean" that many
//! refusals offer.

use std::fmt;
use std::path::{Path, PathBuf};

/// 1-based (line, column) of a place in a file; (0, 0) when the refusal is
/// about the file as a whole.
pub(super) type At = (usize, usize);

pub(super) type Res<T> = Result<T, ConfigError>;

/// A refusal of the swarm file (or of a prompt template it names).
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based; 0 when the error is about the file as a whole.
    pub line: usize,
    /// 1-based; 0 when unknown.
    pub col: usize,
    pub message: String,
    /// How to fix it.
    pub help: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file.display(),
                self.line,
                self.col,
                self.message
            )?;
        } else {
            write!(f, "{}: {}", self.file.display(), self.message)?;
        }
        if !self.help.is_empty() {
            write!(f, "\n  help: {}", self.help)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    /// A refusal at `at` in `file`.
    pub(super) fn at(
        file: &Path,
        at: At,
        message: impl Into<String>,
        help: impl Into<String>,
    ) -> ConfigError {
        ConfigError {
            file: file.to_path_buf(),
            line: at.0,
            col: at.1,
            message: message.into(),
            help: help.into(),
        }
    }

    /// A refusal of `file` as a whole (no position).
    pub(super) fn whole(
        file: &Path,
        message: impl Into<String>,
        help: impl Into<String>,
    ) -> ConfigError {
        ConfigError::at(file, (0, 0), message, help)
    }
}

/// 1-based (line, column) of byte `offset` in `text`; the column counts
/// characters, not bytes.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    LineIndex::new(text).line_col(text, offset)
}

/// Where each line of a text starts, so that the position of every span of
/// a large swarm file costs a binary search, not a scan from its start.
pub(super) struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    pub(super) fn new(text: &str) -> LineIndex {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex { starts }
    }

    /// [`line_col`] of `offset` in the `text` this index was made from.
    pub(super) fn line_col(&self, text: &str, offset: usize) -> (usize, usize) {
        let mut off = offset.min(text.len());
        while !text.is_char_boundary(off) {
            off -= 1;
        }
        let line = self.starts.partition_point(|&s| s <= off);
        let start = self.starts[line - 1];
        (line, text[start..off].chars().count() + 1)
    }
}

/// `bytes` as text, or a refusal at the first byte that is not UTF-8.
pub(super) fn utf8_text(path: &Path, bytes: Vec<u8>, what: &str, help: &str) -> Res<String> {
    String::from_utf8(bytes).map_err(|e| {
        let valid = e.utf8_error().valid_up_to();
        let prefix = String::from_utf8_lossy(&e.as_bytes()[..valid]).into_owned();
        let (line, col) = line_col(&prefix, valid);
        ConfigError {
            file: path.to_path_buf(),
            line,
            col,
            message: format!("{what} is not UTF-8 text"),
            help: help.to_string(),
        }
    })
}

/// Common wrong names for keys, and the key meant.
const ALIASES: &[(&str, &str)] = &[
    ("dependencies", "depends_on"),
    ("deps", "depends_on"),
    ("depends", "depends_on"),
    ("needs", "depends_on"),
    ("after", "depends_on"),
    ("variables", "vars"),
    ("permissions", "permission_mode"),
    ("mode", "permission_mode"),
    ("budget", "max_budget_usd"),
    ("parallel", "max_parallel"),
    ("jobs", "max_parallel"),
    ("concurrency", "max_parallel"),
    ("retries", "max_attempts"),
    ("attempts", "max_attempts"),
    ("branch", "target"),
    ("environment", "env"),
    ("template", "prompt"),
    ("name", "id"),
];

/// Edit distance with transpositions (optimal string alignment), ignoring case.
pub(super) fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.to_lowercase().chars().collect();
    let b: Vec<char> = b.to_lowercase().chars().collect();
    let mut d: Vec<Vec<usize>> = (0..=a.len())
        .map(|i| (0..=b.len()).map(|j| if i == 0 { j } else { i }).collect())
        .collect();
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

/// The candidate closest to `word`, if one is close enough to be a typo.
pub(super) fn suggest<S: AsRef<str>>(word: &str, candidates: &[S]) -> Option<String> {
    if let Some((_, to)) = ALIASES.iter().find(|(from, _)| *from == word) {
        if candidates.iter().any(|c| c.as_ref() == *to) {
            return Some(to.to_string());
        }
    }
    let len = word.chars().count();
    let limit = (len / 3).max(1);
    candidates
        .iter()
        .map(|c| (edit_distance(word, c.as_ref()), c.as_ref()))
        .filter(|(d, _)| *d <= limit && *d < len)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c.to_string())
}
