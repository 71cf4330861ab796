//! `loki import <workflow_config.json>`: a commented swarm file made from
//! a step-graph workflow config of the book-design orchestrator's shape:
//!
//! ```json
//! {"steps": {"1": {"name": "Concept", "description": "…",
//!                  "prompt_template": "concept.md", "agent_type": "concept-designer",
//!                  "model": "opus", "inputs": {"BRIEF": "input/brief.md"},
//!                  "outputs": {"concept": "outputs/concept.md"}, "depends_on": []}}}
//! ```
//!
//! Decisions: a step becomes a `[[streams]]` table whose id is a slug of
//! its name (else `step-<key>`); `prompt_template` is a path under
//! `prompts/` unless it names a folder itself; `agent_type` is claude's
//! `--agent` persona (`.claude/agents/<type>.md`), a first-class `[agent]`
//! key; `depends_on` may name steps by key or by name. Whatever cannot be
//! mapped (an unknown field, a dependency on no step, a placeholder name
//! loki cannot use) is reported step by step and left out, never guessed.
//! The import never overwrites a file, and says whether the result loads.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Result;
use serde_json::Value;

use crate::error::Error;

/// The fields of a step that loki maps.
const STEP_FIELDS: &[&str] = &[
    "name",
    "description",
    "prompt_template",
    "agent_type",
    "model",
    "inputs",
    "outputs",
    "depends_on",
];

/// What an import made of a workflow config.
#[derive(Debug, Clone, PartialEq)]
pub struct Converted {
    /// The swarm file's text.
    pub toml: String,
    pub streams: usize,
    /// One line per thing that could not be mapped, naming its step.
    pub unmapped: Vec<String>,
}

/// The swarm file for the workflow config `text` (`file` names it in
/// messages and in the header comment).
pub fn convert(text: &str, file: &str) -> Result<Converted> {
    let doc: Value = serde_json::from_str(text).map_err(|e| {
        Error::config(format!(
            "{file}:{}:{}: not valid JSON: {e}",
            e.line(),
            e.column()
        ))
        .hint("fix the JSON syntax; a workflow config is {\"steps\": {\"1\": {...}, ...}}")
    })?;
    let Some(steps) = doc.get("steps").and_then(Value::as_object) else {
        return Err(Error::config(format!(
            "{file}: has no `steps` object at its top level"
        ))
        .hint("a workflow config is {\"steps\": {\"1\": {\"name\": ..., \"prompt_template\": ...}, ...}}")
        .into());
    };
    // Steps in the order of their keys, numbers as numbers.
    let mut keys: Vec<&String> = steps.keys().collect();
    keys.sort_by_key(|k| (k.parse::<u64>().unwrap_or(u64::MAX), (*k).clone()));

    let mut unmapped = Vec::new();
    let mut ids: BTreeMap<String, String> = BTreeMap::new(); // key or name -> id
    let mut taken: Vec<String> = Vec::new();
    for k in &keys {
        let name = steps[*k].get("name").and_then(Value::as_str).unwrap_or("");
        let mut id = crate::util::slug(name);
        if id.is_empty() || crate::model::StreamId::parse(&id).is_err() {
            id = format!("step-{}", crate::util::slug(k));
        }
        if taken.contains(&id) {
            id = format!("{id}-{}", crate::util::slug(k));
        }
        taken.push(id.clone());
        ids.insert((*k).clone(), id.clone());
        if !name.is_empty() {
            ids.entry(name.to_string()).or_insert(id);
        }
    }

    let mut out = String::new();
    out.push_str(&format!(
        "# Imported by `loki import` from {file} ({} steps). Edit freely: every key is\n\
         # documented in loki's README (\"The swarm file\").\n\n\
         [swarm]\nmax_parallel = 4\n\n\
         [agent]\ncommand = \"claude\"\n",
        keys.len()
    ));
    let mut streams = 0;
    for k in &keys {
        let step = &steps[*k];
        let id = &ids[*k];
        let here = |what: &str| format!("step {k} ({id}): {what}");
        let Some(obj) = step.as_object() else {
            unmapped.push(here("is not an object; left out"));
            continue;
        };
        for f in obj.keys() {
            if !STEP_FIELDS.contains(&f.as_str()) {
                unmapped.push(here(&format!("field `{f}` has no loki setting; left out")));
            }
        }
        let text_of = |f: &str| obj.get(f).and_then(Value::as_str).map(str::to_string);
        let Some(template) = text_of("prompt_template") else {
            unmapped.push(here(
                "has no `prompt_template`, and a stream needs a prompt; left out",
            ));
            continue;
        };
        let prompt = if template.contains('/') {
            template.clone()
        } else {
            format!("prompts/{template}")
        };
        out.push('\n');
        let title = text_of("name").unwrap_or_else(|| format!("step {k}"));
        out.push_str(&format!("# Step {k}: {}\n", one_line(&title)));
        if let Some(d) = text_of("description") {
            out.push_str(&format!("# {}\n", one_line(&d)));
        }
        out.push_str(&format!("[[streams]]\nid = {}\n", q(id)));
        out.push_str(&format!("prompt = {}\n", q(&prompt)));
        if let Some(m) = text_of("model") {
            out.push_str(&format!("model = {}\n", q(&m)));
        }
        if let Some(t) = text_of("agent_type") {
            out.push_str(&format!(
                "agent_type = {}   # claude --agent: .claude/agents/{t}.md\n",
                q(&t)
            ));
        }
        if let Some(inputs) = obj.get("inputs").and_then(Value::as_object) {
            let mut parts = Vec::new();
            for (name, path) in inputs {
                let Some(path) = path.as_str() else {
                    unmapped.push(here(&format!("input `{name}` is not a path; left out")));
                    continue;
                };
                let placeholder = placeholder_name(name);
                if placeholder != *name {
                    unmapped.push(here(&format!(
                        "input `{name}` is {{{{{placeholder}}}}} (placeholder names are \
                         letters, digits and `_`): rename it in {prompt} too"
                    )));
                }
                parts.push(format!("{placeholder} = {}", q(path)));
            }
            if !parts.is_empty() {
                out.push_str(&format!("inputs = {{ {} }}\n", parts.join(", ")));
            }
        }
        let outputs: Vec<String> = obj
            .get("outputs")
            .and_then(Value::as_object)
            .map(|o| o.values().filter_map(Value::as_str).map(q).collect())
            .unwrap_or_default();
        out.push_str(&format!("outputs = [{}]\n", outputs.join(", ")));
        let mut deps = Vec::new();
        for d in obj
            .get("depends_on")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let key = match d {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                other => other.to_string(),
            };
            match ids.get(&key) {
                Some(dep) if dep != id => deps.push(q(dep)),
                _ => unmapped.push(here(&format!(
                    "depends on `{key}`, which names no other step; left out"
                ))),
            }
        }
        out.push_str(&format!("depends_on = [{}]\n", deps.join(", ")));
        streams += 1;
    }
    Ok(Converted {
        toml: out,
        streams,
        unmapped,
    })
}

/// `loki import`: converts `json` into a new swarm file at `output`.
pub fn import(json: &Path, output: &Path) -> Result<Converted> {
    let text = std::fs::read_to_string(json).map_err(|e| {
        Error::environment(format!("cannot read {}: {e}", json.display()))
            .hint("pass the path of the workflow config, e.g. `loki import workflow_config.json`")
    })?;
    let label = json.display().to_string();
    let converted = convert(&text, &label)?;
    if output.symlink_metadata().is_ok() {
        return Err(Error::refusal(format!(
            "loki import would overwrite {}; nothing was written",
            output.display()
        ))
        .hint("move it aside, or write elsewhere with `--output <path>`")
        .into());
    }
    crate::util::write_new(output, converted.toml.as_bytes())?;
    Ok(converted)
}

/// Where `loki import` writes without `--output`: loki.toml at the root of
/// the repository around `cwd`.
pub fn default_output(cwd: &Path) -> Result<PathBuf> {
    Ok(super::repo_root(cwd)?.join("loki.toml"))
}

/// A TOML string literal.
fn q(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `name` as a placeholder name: letters, digits and `_`, not starting
/// with a digit.
fn placeholder_name(name: &str) -> String {
    let mut s: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if s.is_empty() || s.starts_with(|c: char| c.is_ascii_digit()) {
        s.insert(0, '_');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_become_streams_and_what_cannot_be_mapped_is_named() {
        let json = r#"{"steps": {
            "2": {"name": "Character Profiles", "prompt_template": "chars.md",
                  "agent_type": "character-designer", "model": "opus",
                  "inputs": {"CONCEPT": "outputs/concept.md", "world-notes": "notes.md"},
                  "outputs": {"profiles": "outputs/characters.md"},
                  "depends_on": ["1", "9"], "retries": 3},
            "1": {"name": "Concept", "description": "The book's concept,\nin short.",
                  "prompt_template": "prompts/concept.md",
                  "outputs": {"concept": "outputs/concept.md"}},
            "10": {"name": "No prompt"}
        }}"#;
        let c = convert(json, "wf.json").unwrap();
        assert_eq!(c.streams, 2);
        let concept = c.toml.find("id = \"concept\"").unwrap();
        let chars = c.toml.find("id = \"character-profiles\"").unwrap();
        assert!(concept < chars, "{}", c.toml);
        assert!(c.toml.contains("# The book's concept, in short.\n"));
        assert!(c.toml.contains(
            "prompt = \"prompts/chars.md\"\nmodel = \"opus\"\nagent_type = \"character-designer\""
        ));
        assert!(c
            .toml
            .contains("inputs = { CONCEPT = \"outputs/concept.md\", world_notes = \"notes.md\" }"));
        assert!(c.toml.contains("depends_on = [\"concept\"]"));
        assert_eq!(
            c.unmapped,
            vec![
                "step 2 (character-profiles): field `retries` has no loki setting; left out",
                "step 2 (character-profiles): input `world-notes` is {{world_notes}} \
                 (placeholder names are letters, digits and `_`): rename it in \
                 prompts/chars.md too",
                "step 2 (character-profiles): depends on `9`, which names no other step; \
                 left out",
                "step 10 (no-prompt): has no `prompt_template`, and a stream needs a \
                 prompt; left out",
            ]
        );
        // What it writes is a swarm file loki reads (with no repository
        // around it, only its own checks).
        let dir = tempfile::tempdir().unwrap();
        for p in ["prompts/chars.md", "prompts/concept.md"] {
            let f = dir.path().join(p);
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(f, "Write {{OUTPUTS}}. {{CONCEPT}} {{world_notes}}\n").unwrap();
        }
        std::fs::write(
            dir.path().join("prompts/concept.md"),
            "Write {{OUTPUTS}}.\n",
        )
        .unwrap();
        let f = crate::config::parse(&c.toml, &dir.path().join("loki.toml")).unwrap();
        assert_eq!(f.streams.len(), 2);
        assert_eq!(
            f.streams[1].agent.agent_type.as_deref(),
            Some("character-designer")
        );
    }

    #[test]
    fn bad_json_names_line_and_column() {
        let e = convert("{\"steps\": {\n  \"1\": {,}\n}}", "wf.json").unwrap_err();
        assert!(
            e.to_string().starts_with("wf.json:2:9: not valid JSON"),
            "{e}"
        );
        let e = convert("{\"stages\": {}}", "wf.json").unwrap_err();
        assert!(e.to_string().contains("has no `steps` object"), "{e}");
    }
}
