//! Prompt templates: `{{NAME}}` placeholders filled from a stream's vars,
//! its file inputs (read from the stream's worktree) and loki's built-ins.
//! A placeholder left unfilled is refused, never sent to an agent.
//!
//! Syntax: `{{NAME}}` or `{{ NAME }}` (spaces or tabs inside the braces are
//! allowed and mean the same placeholder), where `NAME` is
//! `[A-Za-z_][A-Za-z0-9_]*`. Anything else is plain text and is left alone:
//! single braces, `{{` followed by something that is not a name (`{{ 1 }}`,
//! `{{#each}}`), an unclosed `{{NAME`. In `{{{NAME}}}` the inner `{{NAME}}` is
//! the placeholder and the outer braces stay.
//!
//! Rendering is a single pass over the template: a value that itself
//! contains `{{X}}` (say an input file that quotes a template) is inserted
//! literally and never expanded again.

use std::collections::BTreeMap;
use std::path::{Component, Path};

use crate::util::FileRefusal;

/// The resolver's prompt, used when the repo has no `prompts/resolve.md`
/// (which `loki init` installs from the same text).
pub const RESOLVE_TEMPLATE: &str = include_str!("../prompts/resolve.md");

/// Where a resolver's template lives, relative to the repository root.
pub const RESOLVE_FILE: &str = "prompts/resolve.md";

/// Placeholders `prompts/resolve.md` may use: a resolver fills exactly these.
pub const RESOLVE_PLACEHOLDERS: &[&str] = &[
    "CONFLICTED_FILES",
    "CONFLICTED_PATHS",
    "OURS",
    "THEIRS",
    "STREAM_PROMPT",
    "TARGET_MERGES",
    "TARGET",
    "STREAM_ID",
    "OUTPUTS",
];

/// Placeholders a validator's prompt may use besides the stream's vars,
/// inputs and built-ins: `{{DRAFT}}` is the attempt's outputs, each under a
/// `=== path ===` line, as committed.
pub const VALIDATOR_PLACEHOLDERS: &[&str] = &["DRAFT"];

/// Built-in retry preamble, used when the repo has no `prompts/retry.md`.
pub const DEFAULT_RETRY: &str = include_str!("../prompts/retry.md");

/// Where a retry's preamble template lives, relative to the repository root.
pub const RETRY_FILE: &str = "prompts/retry.md";

/// The repository's `prompts/retry.md` under `root`, or the built-in text
/// when it cannot be read as loki reads every prompt file
/// ([`crate::util::read_inside`]: no link, no FIFO, at most 8 MiB) or is
/// not UTF-8.
pub fn retry_template(root: &Path) -> String {
    crate::util::read_inside(root, Path::new(RETRY_FILE), crate::util::MAX_PROMPT_FILE)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .unwrap_or_else(|| DEFAULT_RETRY.to_string())
}

/// The template `path` (relative to the swarm file's folder `base`) from
/// the checkout at `root`, read as the swarm file's check read it: inside
/// the repository, no link on the way, a regular file of at most 8 MiB, UTF-8.
pub fn read_template(root: &Path, base: &Path, path: &Path) -> Result<String, String> {
    let shown = base.join(path);
    let bytes = crate::util::read_under(root, base, path, crate::util::MAX_PROMPT_FILE)
        .map_err(|why| format!("the prompt template {} {why}", shown.display()))?
        .1;
    String::from_utf8(bytes)
        .map_err(|_| format!("the prompt template {} is not UTF-8 text", shown.display()))
}

/// One placeholder occurrence in a template.
struct Occurrence<'t> {
    /// Byte offset of the opening `{{`.
    start: usize,
    /// Byte offset just past the closing `}}`.
    end: usize,
    name: &'t str,
}

fn is_name_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_'
}

fn is_name_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// True when `name` is a valid placeholder name: `[A-Za-z_][A-Za-z0-9_]*`.
pub fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty() && is_name_start(b[0]) && b[1..].iter().all(|&c| is_name_char(c))
}

/// If a placeholder starts at byte `i` (which holds `{{`), returns
/// (name start, name end, end past `}}`).
fn match_at(b: &[u8], i: usize) -> Option<(usize, usize, usize)> {
    let skip_blanks = |mut j: usize| {
        while j < b.len() && (b[j] == b' ' || b[j] == b'\t') {
            j += 1;
        }
        j
    };
    let mut j = skip_blanks(i + 2);
    let name_start = j;
    if j < b.len() && is_name_start(b[j]) {
        j += 1;
    } else {
        return None;
    }
    while j < b.len() && is_name_char(b[j]) {
        j += 1;
    }
    let name_end = j;
    j = skip_blanks(j);
    if j + 1 < b.len() && b[j] == b'}' && b[j + 1] == b'}' {
        Some((name_start, name_end, j + 2))
    } else {
        None
    }
}

/// Every placeholder occurrence, in order.
fn scan(template: &str) -> Vec<Occurrence<'_>> {
    let b = template.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i + 1 < b.len() {
        if b[i] == b'{' && b[i + 1] == b'{' {
            if let Some((ns, ne, end)) = match_at(b, i) {
                // All matched bytes are ASCII, so these are char boundaries.
                out.push(Occurrence {
                    start: i,
                    end,
                    name: &template[ns..ne],
                });
                i = end;
                continue;
            }
        }
        i += 1;
    }
    out
}

/// Names of the `{{NAME}}` placeholders in `template`, in order of first
/// appearance, with the 1-based (line, col) of each first appearance.
/// Names are `[A-Za-z_][A-Za-z0-9_]*`, optional spaces inside the braces.
pub fn placeholders(template: &str) -> Vec<(String, usize, usize)> {
    let mut out: Vec<(String, usize, usize)> = Vec::new();
    // Track line/col incrementally: occurrences come in order.
    let mut line = 1;
    let mut line_start = 0;
    let mut pos = 0;
    for occ in scan(template) {
        let segment = &template[pos..occ.start];
        for (k, c) in segment.char_indices() {
            if c == '\n' {
                line += 1;
                line_start = pos + k + 1;
            }
        }
        pos = occ.start;
        if out.iter().any(|(n, _, _)| n == occ.name) {
            continue;
        }
        let col = template[line_start..occ.start].chars().count() + 1;
        out.push((occ.name.to_string(), line, col));
    }
    out
}

/// Replaces every placeholder with its value. `Err(names)` lists the
/// placeholders that `values` does not fill (nothing is rendered then).
pub fn render(template: &str, values: &BTreeMap<String, String>) -> Result<String, Vec<String>> {
    let occurrences = scan(template);
    let mut missing: Vec<String> = Vec::new();
    for occ in &occurrences {
        if !values.contains_key(occ.name) && !missing.iter().any(|m| m == occ.name) {
            missing.push(occ.name.to_string());
        }
    }
    if !missing.is_empty() {
        return Err(missing);
    }
    let mut out = String::with_capacity(template.len());
    let mut pos = 0;
    for occ in &occurrences {
        out.push_str(&template[pos..occ.start]);
        if let Some(v) = values.get(occ.name) {
            out.push_str(v);
        }
        pos = occ.end;
    }
    out.push_str(&template[pos..]);
    Ok(out)
}

/// The line that introduces each file of a glob input.
pub fn glob_file_header(rel: &str) -> String {
    format!("=== {rel} ===")
}

/// A glob input: every regular file of the worktree matching `pattern`, in
/// path order, each introduced by [`glob_file_header`] and followed by a
/// blank line. Folders are walked without following links (a link is
/// neither listed nor entered), `.git` is skipped, and no file may be
/// larger than [`crate::util::MAX_PROMPT_FILE`], nor all of them together.
fn read_glob(worktree: &Path, name: &str, pattern: &str) -> Result<String, String> {
    let wt = worktree.display();
    let base = crate::util::glob_base(pattern);
    // The base itself must be plain folders, no link on the way.
    if !base.is_empty() {
        let mut at = worktree.to_path_buf();
        for part in base.split('/') {
            at.push(part);
            if std::fs::symlink_metadata(&at).is_ok_and(|m| m.file_type().is_symlink()) {
                return Err(format!(
                    "input {{{{{name}}}}}: `{base}` in the worktree {wt} is reached through a \
                     symlink"
                ));
            }
        }
    }
    let found: Vec<String> = crate::util::files_under(worktree, &base)
        .into_iter()
        .filter(|rel| crate::util::glob_match(pattern, rel))
        .collect();
    if found.is_empty() {
        return Err(format!(
            "input {{{{{name}}}}}: no file in the worktree {wt} matches `{pattern}` (commit one \
             to the target branch, or list the stream that writes them in depends_on)"
        ));
    }
    let mut out = String::new();
    for rel in found {
        let bytes =
            crate::util::read_inside(worktree, Path::new(&rel), crate::util::MAX_PROMPT_FILE)
                .map_err(|why| {
                    format!("input {{{{{name}}}}}: `{rel}` in the worktree {wt} {why}")
                })?;
        let text = String::from_utf8(bytes).map_err(|_| {
            format!("input {{{{{name}}}}}: `{rel}` in the worktree {wt} is not UTF-8 text")
        })?;
        out.push_str(&glob_file_header(&rel));
        out.push('\n');
        out.push_str(text.trim_end());
        out.push_str("\n\n");
        if out.len() as u64 > crate::util::MAX_PROMPT_FILE {
            return Err(format!(
                "input {{{{{name}}}}}: the files matching `{pattern}` in the worktree {wt} \
                 are larger than 8 MiB together"
            ));
        }
    }
    Ok(out.trim_end().to_string())
}

/// Replaces the placeholders `values` fills and leaves every other one as
/// written: a fan-out fills its own names (`{{KEY}}`) in a template's
/// paths and vars, and the prompt's own placeholders wait for the attempt.
pub fn fill_known(template: &str, values: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(template.len());
    let mut pos = 0;
    for occ in scan(template) {
        if let Some(v) = values.get(occ.name) {
            out.push_str(&template[pos..occ.start]);
            out.push_str(v);
            pos = occ.end;
        }
    }
    out.push_str(&template[pos..]);
    out
}

/// Why an input path may not be used, if it may not: it must be a
/// non-empty relative path without `..`.
fn refuse_path(rel: &str) -> Option<&'static str> {
    let p = Path::new(rel);
    if rel.is_empty() {
        return Some("is empty");
    }
    if p.is_absolute() || p.has_root() {
        return Some("is absolute");
    }
    if p.components().any(|c| matches!(c, Component::ParentDir)) {
        return Some("contains `..`");
    }
    if !p.components().any(|c| matches!(c, Component::Normal(_))) {
        return Some("names no file");
    }
    None
}

/// Reads each input file (path relative to `worktree`) into `values` under
/// its placeholder name. `Err` says which input and which path is missing.
///
/// Paths that leave the worktree are refused: absolute paths, `..`, and a
/// symlink anywhere on the path. Files must be regular, UTF-8 text and at
/// most [`crate::util::MAX_PROMPT_FILE`] bytes.
pub fn read_inputs(
    worktree: &Path,
    inputs: &BTreeMap<String, String>,
    values: &mut BTreeMap<String, String>,
) -> Result<(), String> {
    let wt = worktree.display();
    for (name, rel) in inputs {
        if let Some(why) = refuse_path(rel) {
            return Err(format!(
                "input {{{{{name}}}}}: path `{rel}` {why}; input paths must be relative to \
                 the worktree {wt} and stay inside it"
            ));
        }
        if crate::util::is_glob(rel) {
            values.insert(name.clone(), read_glob(worktree, name, rel)?);
            continue;
        }
        let bytes = match crate::util::read_inside(
            worktree,
            Path::new(rel),
            crate::util::MAX_PROMPT_FILE,
        ) {
            Ok(b) => b,
            Err(FileRefusal::Missing) => {
                return Err(format!(
                    "input {{{{{name}}}}}: `{rel}` not found in the worktree {wt} (commit it to \
                     the target branch, or list the stream that writes it in depends_on)"
                ));
            }
            Err(why) => {
                return Err(format!(
                    "input {{{{{name}}}}}: `{rel}` in the worktree {wt} {why}"
                ));
            }
        };
        let text = String::from_utf8(bytes).map_err(|_| {
            format!("input {{{{{name}}}}}: `{rel}` in the worktree {wt} is not UTF-8 text")
        })?;
        values.insert(name.clone(), text);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vals(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn finds_placeholders_with_positions_in_first_appearance_order() {
        let t = "# {{TITLE}}\n\nWrite chapter {{ CHAPTER }} of {{TITLE}}.\n  {{\tOUTLINE\t}}";
        assert_eq!(
            placeholders(t),
            vec![
                ("TITLE".to_string(), 1, 3),
                ("CHAPTER".to_string(), 3, 15),
                ("OUTLINE".to_string(), 4, 3),
            ]
        );
    }

    #[test]
    fn columns_count_characters_not_bytes() {
        let t = "é€ {{X}}\nα{{Y}}";
        assert_eq!(
            placeholders(t),
            vec![("X".to_string(), 1, 4), ("Y".to_string(), 2, 2)]
        );
    }

    #[test]
    fn non_placeholders_are_plain_text() {
        let t = "{ X } {X} {{ 1X }} {{#each}} {{X-Y}} {{X {{}} }} {{ }} {{X}";
        assert!(placeholders(t).is_empty());
        assert_eq!(render(t, &BTreeMap::new()).unwrap(), t);
    }

    #[test]
    fn triple_braces_keep_the_outer_ones() {
        let t = "{{{X}}}";
        assert_eq!(placeholders(t), vec![("X".to_string(), 1, 2)]);
        assert_eq!(render(t, &vals(&[("X", "v")])).unwrap(), "{v}");
    }

    #[test]
    fn name_rules() {
        assert!(valid_name("A"));
        assert!(valid_name("_x9"));
        assert!(valid_name("CHAPTER_1"));
        assert!(!valid_name(""));
        assert!(!valid_name("1A"));
        assert!(!valid_name("A-B"));
        assert!(!valid_name("A B"));
        assert!(!valid_name("É"));
    }

    #[test]
    fn renders_every_occurrence_and_spaced_forms() {
        let t = "{{A}} and {{ A }} then {{B}}.";
        let out = render(t, &vals(&[("A", "1"), ("B", "two"), ("UNUSED", "x")])).unwrap();
        assert_eq!(out, "1 and 1 then two.");
    }

    #[test]
    fn missing_values_are_listed_once_in_order_and_nothing_renders() {
        let t = "{{C}} {{A}} {{C}} {{B}}";
        assert_eq!(
            render(t, &vals(&[("A", "a")])),
            Err(vec!["C".to_string(), "B".to_string()])
        );
    }

    #[test]
    fn substituted_values_are_not_expanded_again() {
        let t = "Outline:\n{{OUTLINE}}\nEnd {{N}}";
        let out = render(
            t,
            &vals(&[("OUTLINE", "use {{N}} and {{OUTLINE}}"), ("N", "7")]),
        )
        .unwrap();
        assert_eq!(out, "Outline:\nuse {{N}} and {{OUTLINE}}\nEnd 7");
    }

    #[test]
    fn empty_and_plain_templates() {
        assert_eq!(render("", &BTreeMap::new()).unwrap(), "");
        assert_eq!(render("no braces", &BTreeMap::new()).unwrap(), "no braces");
        assert_eq!(render("{{", &BTreeMap::new()).unwrap(), "{{");
    }

    #[test]
    fn reads_inputs_from_the_worktree() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("notes")).unwrap();
        std::fs::write(dir.path().join("notes/outline.md"), "1. {{X}} stays\n").unwrap();
        let inputs = vals(&[("OUTLINE", "notes/outline.md")]);
        let mut values = vals(&[("N", "1")]);
        read_inputs(dir.path(), &inputs, &mut values).unwrap();
        assert_eq!(values["OUTLINE"], "1. {{X}} stays\n");
        assert_eq!(values["N"], "1");
        let out = render("{{OUTLINE}}", &values).unwrap();
        assert_eq!(out, "1. {{X}} stays\n");
    }

    #[test]
    fn missing_input_names_placeholder_path_and_worktree() {
        let dir = tempfile::tempdir().unwrap();
        let inputs = vals(&[("OUTLINE", "outline.md")]);
        let err = read_inputs(dir.path(), &inputs, &mut BTreeMap::new()).unwrap_err();
        assert!(err.starts_with("input {{OUTLINE}}: `outline.md` not found in the worktree "));
        assert!(err.contains(&dir.path().display().to_string()));
    }

    #[test]
    fn escaping_input_paths_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for (rel, why) in [
            ("../secret.md", "contains `..`"),
            ("a/../../b", "contains `..`"),
            ("/etc/passwd", "is absolute"),
            ("", "is empty"),
            (".", "names no file"),
        ] {
            let inputs = vals(&[("X", rel)]);
            let err = read_inputs(dir.path(), &inputs, &mut BTreeMap::new()).unwrap_err();
            assert!(
                err.starts_with(&format!("input {{{{X}}}}: path `{rel}` {why};")),
                "{err}"
            );
            assert!(err.contains(&dir.path().display().to_string()), "{err}");
        }
    }

    #[test]
    fn symlinks_out_of_the_worktree_are_refused() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret.md"), "s").unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret.md"), dir.path().join("link.md"))
            .unwrap();
        let inputs = vals(&[("X", "link.md")]);
        let err = read_inputs(dir.path(), &inputs, &mut BTreeMap::new()).unwrap_err();
        assert!(
            err.contains(&format!(
                "`link.md` points to `{}`",
                outside.path().join("secret.md").display()
            )),
            "{err}"
        );
        // A link inside the worktree is refused too: a symlink anywhere on
        // the path is.
        std::fs::create_dir(dir.path().join("real")).unwrap();
        std::fs::write(dir.path().join("real/a.md"), "a").unwrap();
        std::os::unix::fs::symlink("real", dir.path().join("via")).unwrap();
        let inputs = vals(&[("X", "via/a.md")]);
        let err = read_inputs(dir.path(), &inputs, &mut BTreeMap::new()).unwrap_err();
        assert!(err.contains("`via` points to `real`"), "{err}");
    }

    #[test]
    fn folders_and_binary_inputs_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("d")).unwrap();
        std::fs::write(dir.path().join("b.bin"), [0xff, 0xfe, 0x00]).unwrap();
        let err = read_inputs(dir.path(), &vals(&[("X", "d")]), &mut BTreeMap::new()).unwrap_err();
        assert!(err.contains("is a folder"), "{err}");
        let err =
            read_inputs(dir.path(), &vals(&[("X", "b.bin")]), &mut BTreeMap::new()).unwrap_err();
        assert!(err.contains("is not UTF-8 text"), "{err}");
    }
}
