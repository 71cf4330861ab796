//! Prompt templates: `{{NAME}}` placeholders filled from a stream's vars,
//! its file inputs (read from the stream's worktree) and loki's built-ins.
//! A placeholder left unfilled is refused, never sent to an agent.

use std::collections::BTreeMap;
use std::path::Path;

/// Names of the `{{NAME}}` placeholders in `template`, in order of first
/// appearance, with the 1-based (line, col) of each first appearance.
/// Names are `[A-Za-z_][A-Za-z0-9_]*`, optional spaces inside the braces.
pub fn placeholders(template: &str) -> Vec<(String, usize, usize)> {
    let _ = template;
    todo!("prompt::placeholders")
}

/// Replaces every placeholder with its value. `Err(names)` lists the
/// placeholders that `values` does not fill (nothing is rendered then).
pub fn render(template: &str, values: &BTreeMap<String, String>) -> Result<String, Vec<String>> {
    let _ = (template, values);
    todo!("prompt::render")
}

/// Reads each input file (path relative to `worktree`) into `values` under
/// its placeholder name. `Err` says which input and which path is missing.
pub fn read_inputs(
    worktree: &Path,
    inputs: &BTreeMap<String, String>,
    values: &mut BTreeMap<String, String>,
) -> Result<(), String> {
    let _ = (worktree, inputs, values);
    todo!("prompt::read_inputs")
}
