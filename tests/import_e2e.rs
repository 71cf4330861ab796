//! `loki import`: a workflow config of the book-design orchestrator's
//! shape becomes a swarm file that rehearses and runs, with each step's
//! `agent_type` passed to claude as `--agent`; the import never writes
//! over a file.

mod common;
use common::*;

const WORKFLOW: &str = r#"{"steps": {
  "1": {"name": "Concept", "description": "The book in a page.",
        "prompt_template": "concept.md", "agent_type": "concept-designer", "model": "opus",
        "inputs": {"BRIEF": "input/brief.md"},
        "outputs": {"concept": "outputs/concept.md"}, "depends_on": []},
  "2": {"name": "World", "prompt_template": "world.md", "agent_type": "world-builder",
        "inputs": {"CONCEPT": "outputs/concept.md"},
        "outputs": {"world": "outputs/world.md"}, "depends_on": ["1"]},
  "3": {"name": "Characters", "prompt_template": "characters.md",
        "agent_type": "character-designer",
        "inputs": {"CONCEPT": "outputs/concept.md"},
        "outputs": {"characters": "outputs/characters.md"}, "depends_on": ["1"]},
  "4": {"name": "Outline", "prompt_template": "outline.md",
        "inputs": {"WORLD": "outputs/world.md", "CHARACTERS": "outputs/characters.md"},
        "outputs": {"outline": "outputs/outline.md"}, "depends_on": ["World", "3"],
        "temperature": 0.7}
}}"#;

#[test]
fn an_imported_workflow_rehearses_and_runs_with_its_personas() {
    let s = Swarm::empty();
    s.repo
        .write("input/brief.md", "A pilot who never lands twice.\n");
    for (p, input) in [
        ("concept", "BRIEF"),
        ("world", "CONCEPT"),
        ("characters", "CONCEPT"),
    ] {
        s.repo.write(
            &format!("prompts/{p}.md"),
            &format!("# {p}\n\n{{{{{input}}}}}\n\nWrite it to {{{{OUTPUTS}}}}.\n"),
        );
    }
    s.repo.write(
        "prompts/outline.md",
        "# Outline\n\n{{WORLD}}\n\n{{CHARACTERS}}\n\nWrite it to {{OUTPUTS}}.\n",
    );
    s.repo.write("workflow_config.json", WORKFLOW);
    s.repo
        .write(".loki/.gitignore", loki::commands::init::LOKI_GITIGNORE);
    s.repo.commit_all("prompts and the workflow");

    let out = s.loki(&["import", "workflow_config.json"]);
    assert!(out.status.success(), "{}", both(&out));
    let text = stdout(&out);
    assert!(
        text.contains("with 4 stream(s) from workflow_config.json"),
        "{text}"
    );
    assert!(
        text.contains(
            "not mapped: step 4 (outline): field `temperature` has no loki setting; left out"
        ),
        "{text}"
    );
    assert!(text.contains("loads: 4 stream(s)"), "{text}");
    let toml = s.repo.read("loki.toml");
    assert!(
        toml.contains("depends_on = [\"world\", \"characters\"]"),
        "{toml}"
    );

    // A second import would overwrite it: refused, nothing changed.
    let before = s.repo.snapshot();
    let again = s.loki(&["import", "workflow_config.json"]);
    assert_eq!(again.status.code(), Some(2), "{}", both(&again));
    assert!(
        stderr(&again).contains("would overwrite"),
        "{}",
        both(&again)
    );
    assert_eq!(s.repo.snapshot(), before);

    s.repo.commit_all("imported swarm");
    let rehearsal = s.loki(&["run", "--rehearse", "--plain"]);
    assert!(rehearsal.status.success(), "{}", both(&rehearsal));

    // The real run, with the fake agent standing in for claude.
    let claude = s.fake_claude();
    let bin = claude.parent().expect("bin").display().to_string();
    let args_log = s.scratch("args.jsonl");
    let path = format!("{bin}:{}", fast_path());
    let out = s.repo.loki_env(
        &["run", "--plain"],
        &[
            ("PATH", path.as_str()),
            ("FAKE_AGENT_ARGS_LOG", &args_log.display().to_string()),
        ],
    );
    assert!(out.status.success(), "{}", both(&out));
    s.assert_all_merged_once(&["concept", "world", "characters", "outline"]);
    let log = std::fs::read_to_string(&args_log).expect("args log");
    assert!(
        log.contains("\"--agent\", \"character-designer\"")
            || log.contains("\"--agent\",\"character-designer\""),
        "{log}"
    );
    let outline = s.prompt("outline", 1);
    assert!(outline.contains("*Stream world, attempt 1.*"), "{outline}");
}
