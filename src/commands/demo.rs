//! `loki demo`: a sample book repo in a temporary folder (an outline, a
//! character bible, six chapter streams with a dependency chain, a fan-in
//! and checks), run with the built-in stand-in agent (no tokens, no API
//! key) with live progress, then the merged book's `git log --graph`.
//! The repository is made and its graph drawn through [`crate::git`]
//! (no git CLI).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::error::Error;
use crate::model::Layout;

const OUTLINE: &str = "# The Ferry at Kelp — outline\n\n\
1. Arrival: Mira reaches the harbour town of Kelp at dusk.\n\
2. The Ferryman: Mira meets Oskar, who will not cross to the island.\n\
3. The Ledger: in the ferry office Mira finds a ledger of crossings that stops ten years ago.\n\
4. The Island Light: a light shows on the island where nobody lives.\n\
5. The Crossing: Mira and Oskar cross in the storm.\n\
6. Home Water: what they found, and who comes back.\n";

const BIBLE: &str = "# Character bible\n\n\
- **Mira** (34): a surveyor, careful, dry humour; keeps a notebook of tides.\n\
- **Oskar** (61): the ferryman; gentle, stubborn, lost his brother to the crossing.\n";

const TEMPLATE: &str = "# Chapter {{CHAPTER}}: {{TITLE}}\n\n\
You are drafting one chapter of a short novel. Keep names and facts consistent\n\
with the outline, the character bible and the chapters already in this folder.\n\n\
## Outline\n\n{{OUTLINE}}\n\n## Characters\n\n{{BIBLE}}\n\n\
Write the chapter to {{OUTPUTS}}, between 180 and 260 words, in plain Markdown.\n\n\
{{FEEDBACK}}\n";

/// The streams: (id, title, depends_on).
const CHAPTERS: &[(&str, &str, &[&str])] = &[
    ("ch01", "Arrival", &[]),
    ("ch02", "The Ferryman", &["ch01"]),
    ("ch03", "The Ledger", &["ch02"]),
    ("ch04", "The Island Light", &["ch01"]),
    ("ch05", "The Crossing", &["ch03", "ch04"]),
    ("ch06", "Home Water", &["ch05"]),
];

fn swarm_file() -> String {
    let mut s = String::from(
        "# The demo swarm: six chapters, a chain (1 → 2 → 3), a fan-out (1 → 4) and a fan-in (3 + 4 → 5).\n\
[swarm]\ntarget = \"main\"\nmax_parallel = 2\nspawn_interval = \"0s\"\n\n\
[agent]\ncommand = \"claude\"   # the demo runs loki's stand-in agent instead\nmax_attempts = 2\n\n\
[checks]\nwords = [180, 260]\nrequire = [\"Mira\"]\nforbid = [\"suddenly\"]\n\n",
    );
    for (id, title, deps) in CHAPTERS {
        let n = id.trim_start_matches("ch").trim_start_matches('0');
        let deps: Vec<String> = deps.iter().map(|d| format!("\"{d}\"")).collect();
        s.push_str(&format!(
            "[[streams]]\nid = \"{id}\"\nprompt = \"prompts/chapter.md\"\nvars = {{ CHAPTER = \"{n}\", TITLE = \"{title}\" }}\n\
inputs = {{ OUTLINE = \"outline.md\", BIBLE = \"bible.md\" }}\noutputs = [\"chapters/{id}.md\"]\ndepends_on = [{}]\n\n",
            deps.join(", ")
        ));
    }
    s
}

/// Creates the sample repo; returns its folder (kept after the demo).
pub fn create(parent: Option<&Path>) -> Result<PathBuf> {
    let mut b = tempfile::Builder::new();
    b.prefix("loki-demo-");
    let dir = match parent {
        Some(p) => {
            // `--dir` names where the demo goes: made if it is not there yet.
            std::fs::create_dir_all(p).map_err(|e| {
                Error::environment(format!("creating {} for the demo", p.display()))
                    .hint("pass `--dir` a folder you can write to")
                    .with_source(e)
            })?;
            b.tempdir_in(p)
        }
        None => b.tempdir(),
    }
    .context("creating a temporary folder for the demo")?;
    let dir = dir.keep();
    let w = |path: PathBuf, text: &str| -> Result<()> {
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
    };
    w(dir.join("outline.md"), OUTLINE)?;
    w(dir.join("bible.md"), BIBLE)?;
    w(dir.join("prompts/chapter.md"), TEMPLATE)?;
    w(
        dir.join("prompts/retry.md"),
        crate::commands::init::RETRY_TEMPLATE,
    )?;
    w(
        Layout::new(&dir).loki().join(".gitignore"),
        crate::commands::init::LOKI_GITIGNORE,
    )?;
    w(dir.join("loki.toml"), &swarm_file())?;
    crate::git::init_with_commit(
        &dir,
        "main",
        "loki demo",
        "demo@loki.invalid",
        "The Ferry at Kelp: outline, characters and the swarm file",
    )?;
    Ok(dir)
}

/// `loki demo`.
pub async fn run(plain: bool, parent: Option<&Path>) -> Result<i32> {
    let dir = create(parent)?;
    println!("loki demo: a six-chapter book in {}", dir.display());
    println!("(the stand-in agent writes the chapters: no tokens, no API key)\n");
    let code = crate::supervisor::run(crate::supervisor::RunOptions {
        config: dir.join("loki.toml"),
        ui: crate::ui::Mode::detect(plain),
        rehearse: false,
        keep: false,
        stand_in: true,
        stand_in_delay_ms: if plain { 0 } else { 700 },
        wait: false,
        retry_failed: false,
    })
    .await?;
    println!("\n$ git log --graph --oneline");
    match crate::git::graph_oneline(&dir, "main") {
        Ok(g) => print!("{g}"),
        Err(e) => println!("(cannot show the graph: {e:#})"),
    }
    println!(
        "\nThe book is in {}/chapters; try `loki status` and `git log` there.",
        dir.display()
    );
    Ok(code)
}
