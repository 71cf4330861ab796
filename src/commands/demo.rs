//! `loki demo`: a sample book repo in a temporary folder, run with the
//! built-in stand-in agent (no tokens, no API key) with live progress,
//! then the merged book's `git log --graph`. It shows what loki is for:
//! one profile stream per character (a fan-out from the markers of the
//! character bible), six chapters with a chain, a fan-out and a fan-in,
//! a chapter whose first draft fails a check and passes on the retry with
//! the violation as feedback, and a last chapter that waits for approval,
//! which the demo gives itself (saying so) while the run waits. The
//! repository is made and its graph drawn through [`crate::git`] (no git
//! CLI).

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

const PROFILE: &str = "# Profile: {{NAME}}\n\n\
From the character bible:\n\n{{ITEM}}\n\n\
Write a one-page profile of {{NAME}} to {{OUTPUTS}}, between 180 and 260 words.\n";

/// The chapter whose first draft slips (see the stand-in).
const SLIPS: &str = "ch03";
/// The chapter that waits for approval.
const GATED: &str = "ch06";

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
        "# The demo swarm: a profile per character of bible.md (a fan-out), then six chapters:\n\
# a chain (1 → 2 → 3), a fan-out (1 → 4) and a fan-in (3 + 4 → 5); ch06 waits for approval.\n\
[swarm]\ntarget = \"main\"\nmax_parallel = 2\nspawn_interval = \"0s\"\n\n\
[agent]\ncommand = \"claude\"   # the demo runs loki's stand-in agent instead\nmax_attempts = 2\n\n\
[checks]\nwords = [180, 260]\nrequire = [\"Mira\"]\nforbid = [\"suddenly\"]\n\n\
[[streams]]\nid = \"profile\"\nprompt = \"prompts/profile.md\"\n\
for_each = { sections = \"bible.md\", marker = '^- \\*\\*(?P<name>[^*]+)\\*\\*' }\n\
outputs = [\"characters/{{KEY}}.md\"]\n\n",
    );
    for (id, title, deps) in CHAPTERS {
        let n = id.trim_start_matches("ch").trim_start_matches('0');
        let mut deps: Vec<String> = deps.iter().map(|d| format!("\"{d}\"")).collect();
        if deps.is_empty() {
            deps.push("\"profile\"".into());
        }
        let prompt = if *id == SLIPS {
            "prompts/chapter-slip.md"
        } else {
            "prompts/chapter.md"
        };
        let gate = if *id == GATED { "approve = true\n" } else { "" };
        s.push_str(&format!(
            "[[streams]]\nid = \"{id}\"\nprompt = \"{prompt}\"\nvars = {{ CHAPTER = \"{n}\", TITLE = \"{title}\" }}\n\
inputs = {{ OUTLINE = \"outline.md\", BIBLE = \"bible.md\" }}\noutputs = [\"chapters/{id}.md\"]\ndepends_on = [{}]\n{gate}\n",
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
        dir.join("prompts/chapter-slip.md"),
        &format!(
            "{TEMPLATE}\n<!-- For the demo: stand-in: slip \"suddenly\" on the first attempt \
             (a forbidden word, so the first draft fails its check) -->\n"
        ),
    )?;
    w(dir.join("prompts/profile.md"), PROFILE)?;
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
    println!("(the stand-in agent writes the chapters: no tokens, no API key)");
    println!(
        "Watch for: a profile per character of bible.md (a fan-out), {SLIPS} failing a check \
         and passing on the retry, and {GATED} waiting for approval, which the demo gives \
         itself.\n"
    );
    let approver = tokio::spawn(approve_when_waiting(dir.clone()));
    let code = crate::supervisor::run(crate::supervisor::RunOptions {
        config: dir.join("loki.toml"),
        ui: crate::ui::Mode::detect(plain),
        rehearse: false,
        keep: false,
        stand_in: true,
        stand_in_delay_ms: if plain { 0 } else { 700 },
        wait: true,
        retry_failed: false,
        remote: None,
    })
    .await;
    approver.abort();
    let code = code?;
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

/// Gives the approval [`GATED`] waits for, the way `loki approve` would
/// (a signal to the running supervisor), and says so. The demo's own
/// person at the keyboard: it looks at the state every 200 ms. Should a
/// stream fail (the stand-in never makes one fail), it sends STOP instead,
/// so the waiting run ends rather than waiting for a retry.
async fn approve_when_waiting(dir: PathBuf) {
    use crate::model::{Kind, Status};
    let store = crate::store::StateStore::new(Layout::new(&dir).state_dir());
    let send = |kind: Kind, id: Option<String>, note: Option<String>| {
        let d = dir.clone();
        tokio::task::spawn_blocking(move || {
            super::steer(Some(d.join("loki.toml")), &d, kind, id, None, note, false)
        })
    };
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let states = store.load_all().unwrap_or_default();
        if states.iter().any(|s| {
            matches!(
                s.status,
                Status::Failed | Status::Blocked | Status::Conflicted
            )
        }) {
            println!("loki demo: a stream did not pass; stopping the run");
            let _ = send(Kind::Stop, None, None).await;
            return;
        }
        let waiting = states
            .iter()
            .any(|s| s.id == GATED && s.status == Status::AwaitingApproval);
        if !waiting {
            continue;
        }
        println!(
            "loki demo: {GATED} waits for a person's approval; the demo approves it, as \
             `loki approve {GATED} --by loki-demo` would"
        );
        let _ = send(
            Kind::Approve,
            Some(GATED.to_string()),
            Some("loki-demo".into()),
        )
        .await;
        return;
    }
}
