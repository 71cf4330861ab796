//! `loki init`: installs a commented swarm file, the prompt templates and
//! `.loki/.gitignore` into a git repo. It never overwrites: if any file it
//! would write exists, it writes nothing and says which.

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::error::Error;

/// `.loki/.gitignore` (the repo's own `.loki/` folder is the source).
pub use crate::model::paths::LOKI_GITIGNORE;
/// `prompts/chapter.md`.
pub const CHAPTER_TEMPLATE: &str = include_str!("../../prompts/chapter.md");
/// `prompts/retry.md`.
pub const RETRY_TEMPLATE: &str = include_str!("../../prompts/retry.md");
/// `loki.toml`, with `{{TARGET}}` replaced by the current branch.
pub const SWARM_TEMPLATE: &str = include_str!("templates/loki.toml");
/// `outline.md`, the example's input (written only when missing).
pub const OUTLINE: &str = include_str!("templates/outline.md");

#[derive(Debug)]
pub struct InitReport {
    pub root: PathBuf,
    pub target: String,
    pub written: Vec<String>,
    pub kept: Vec<String>,
}

/// Runs `loki init` in the repo containing `dir`.
pub fn init(dir: &Path) -> Result<InitReport> {
    let root = super::repo_root(dir)?;
    let target = crate::git::current_branch(&root)?.unwrap_or_else(|| "main".to_string());
    let swarm = SWARM_TEMPLATE.replace("{{TARGET}}", &target);
    let files: Vec<(&str, String)> = vec![
        ("loki.toml", swarm),
        ("prompts/chapter.md", CHAPTER_TEMPLATE.to_string()),
        ("prompts/retry.md", RETRY_TEMPLATE.to_string()),
        (
            "prompts/resolve.md",
            crate::prompt::RESOLVE_TEMPLATE.to_string(),
        ),
        (".loki/.gitignore", LOKI_GITIGNORE.to_string()),
    ];
    let existing: Vec<&str> = files
        .iter()
        .filter(|(p, _)| root.join(p).symlink_metadata().is_ok())
        .map(|(p, _)| *p)
        .collect();
    if !existing.is_empty() {
        let them = if existing.len() == 1 { "it" } else { "them" };
        return Err(Error::refusal(format!(
            "loki init would overwrite {} in {}; nothing was written.",
            existing.join(", "),
            root.display(),
        ))
        .hint(format!(
            "move {them} aside (or edit {them} by hand) and run `loki init` again"
        ))
        .into());
    }
    let mut written = Vec::new();
    for (p, content) in &files {
        crate::util::write_new(&root.join(p), content.as_bytes())?;
        written.push(p.to_string());
    }
    let mut kept = Vec::new();
    if root.join("outline.md").symlink_metadata().is_ok() {
        kept.push("outline.md".to_string());
    } else {
        crate::util::write_new(&root.join("outline.md"), OUTLINE.as_bytes())?;
        written.push("outline.md".to_string());
    }
    Ok(InitReport {
        root,
        target,
        written,
        kept,
    })
}
