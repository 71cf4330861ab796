//! Both passes together, from a file on disk.

use super::*;
use crate::plan;

#[test]
fn load_reads_the_file_or_says_how_to_make_one() {
    let dir = std_repo();
    let path = dir.path().join("loki.toml");
    let e = load(&path).unwrap_err();
    assert_eq!(e.file, path);
    assert_eq!((e.line, e.col), (0, 0));
    assert_eq!(e.message, "swarm file not found");
    assert!(e.help.contains("loki init") && e.help.contains("--config"));
    assert_eq!(
        e.to_string(),
        format!(
            "{}: swarm file not found\n  help: run `loki init` to create one here, or pass \
             `--config <path>` to use another swarm file",
            path.display()
        )
    );

    fs::write(&path, one("")).unwrap();
    let f = load(&path).unwrap();
    assert_eq!(f.streams.len(), 1);

    fs::write(&path, b"# caf\xe9\n").unwrap();
    let e = load(&path).unwrap_err();
    assert_eq!(e.message, "the swarm file is not UTF-8 text");
    assert_eq!((e.line, e.col), (1, 6));

    let e = load(dir.path()).unwrap_err();
    assert_eq!(e.message, "the swarm file is a folder, not a file");
}

#[test]
fn a_realistic_book() {
    let dir = repo(&[
        (
            "prompts/outline.md",
            "Outline a novel titled {{TITLE}} in {{CHAPTERS}} chapters. Write {{OUTPUTS}}.\n",
        ),
        (
            "prompts/chapter.md",
            "You are writing chapter {{ CHAPTER }} of {{TITLE}}.\n\n## Outline\n\n{{OUTLINE}}\n\n\
             {{FEEDBACK}}\nWrite {{OUTPUTS}} on branch {{BRANCH}}.\n",
        ),
        (
            "prompts/review.md",
            "Review chapters into {{OUTPUTS}}. Style guide:\n{{STYLE}}\n",
        ),
    ]);
    let text = r#"# A book, overnight.
[swarm]
target = "main"
max_parallel = 3
max_budget_usd = 40

[agent]
command = "claude"
model = "sonnet"
permission_mode = "acceptEdits"
timeout = "40m"
idle_timeout = "10m"
max_attempts = 3
env = { IS_SANDBOX = "1" }

[checks]
words = [2000, 4000]
forbid = ["TODO", "[citation needed]"]

[[streams]]
id = "outline"
prompt = "prompts/outline.md"
vars = { TITLE = "The Long Night", CHAPTERS = 4 }
outputs = ["outline.md"]
model = "opus"

[streams.checks]
words = [500, 1500]
approve = true

[[streams]]
id = "ch01"
prompt = "prompts/chapter.md"
vars = { CHAPTER = "1", TITLE = "The Long Night" }
inputs = { OUTLINE = "outline.md" }
outputs = ["chapters/ch01.md"]
depends_on = ["outline"]

[[streams]]
id = "ch02"
prompt = "prompts/chapter.md"
vars = { CHAPTER = "2", TITLE = "The Long Night" }
inputs = { OUTLINE = "outline.md" }
outputs = ["chapters/ch02.md"]
depends_on = ["outline"]

[[streams]]
id = "ch03"
prompt = "prompts/chapter.md"
vars = { CHAPTER = "3", TITLE = "The Long Night" }
inputs = { OUTLINE = "outline.md" }
outputs = ["chapters/ch03.md"]
depends_on = ["outline"]
timeout = "1h"

[[streams]]
id = "ch04"
prompt = "prompts/chapter.md"
vars = { CHAPTER = "4", TITLE = "The Long Night" }
inputs = { OUTLINE = "outline.md" }
outputs = ["chapters/ch04.md"]
depends_on = ["ch03", "outline"]

[streams.agent]
max_attempts = 5
env = { EXTRA = "yes" }

[[streams]]
id = "review"
prompt = "prompts/review.md"
inputs = { STYLE = "style.md" }
outputs = ["review.md"]
depends_on = ["ch01", "ch02", "ch03", "ch04"]
approve = true

[streams.checks]
words = [100, 900]
command = "test -s review.md"
"#;
    let f = parse_in(&dir, text).unwrap();
    let ids: Vec<&str> = f.streams.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["outline", "ch01", "ch02", "ch03", "ch04", "review"]);
    assert_eq!(f.swarm.max_parallel, 3);
    assert_eq!(f.swarm.max_budget_usd, Some(40.0));

    let outline = f.stream("outline").unwrap();
    assert_eq!(outline.agent.model, "opus");
    assert_eq!(outline.vars["CHAPTERS"], "4");
    assert_eq!(outline.checks.words, Some((500, 1500)));
    assert_eq!(outline.checks.forbid.len(), 2);
    assert!(outline.checks.approve);

    let ch03 = f.stream("ch03").unwrap();
    assert_eq!(ch03.agent.timeout, Duration::from_secs(3600));
    assert_eq!(ch03.agent.model, "sonnet");
    assert_eq!(ch03.checks.words, Some((2000, 4000)));
    assert!(!ch03.checks.approve);

    let ch04 = f.stream("ch04").unwrap();
    assert_eq!(ch04.agent.max_attempts, 5);
    assert_eq!(ch04.agent.env.len(), 2);
    assert_eq!(ch04.depends_on, vec!["ch03", "outline"]);

    let review = f.stream("review").unwrap();
    assert!(review.checks.approve);
    assert_eq!(review.checks.command.as_deref(), Some("test -s review.md"));
    assert_eq!(review.checks.words, Some((100, 900)));
    assert_eq!(review.agent.max_attempts, 3);

    assert_eq!(
        plan::topo_order(&f.streams).unwrap(),
        ["outline", "ch01", "ch02", "ch03", "ch04", "review"]
    );
    assert_eq!(plan::dependents_of(&f.streams, "ch03"), ["ch04", "review"]);

    // The same file with a typo in one template placeholder.
    fs::write(
        dir.path().join("prompts/review.md"),
        "Review.\nStyle: {{STYEL}}\n",
    )
    .unwrap();
    let e = parse_in(&dir, text).unwrap_err();
    assert_eq!(e.file, dir.path().join("prompts/review.md"));
    assert_eq!(
        (e.line, e.col, e.message.as_str()),
        (
            2,
            8,
            "placeholder {{STYEL}} is not filled for stream `review`"
        )
    );
    assert!(e
        .help
        .starts_with("the stream fills {{STYLE}}: is one of the two misspelt? "));
    assert!(e.help.contains("loki.toml:68)"), "{}", e.help);
}
