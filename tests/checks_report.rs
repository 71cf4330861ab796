//! The check report as the rest of loki sees it: a chapter stream with every
//! check configured, run through the public API, written to disk and read back.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use loki::checks::{count_words, run_checks, CheckReport, Level};
use loki::config::{AgentSettings, CheckSettings, StreamConfig};

fn write(dir: &Path, rel: &str, content: &str) {
    let p = dir.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, content).unwrap();
}

fn chapter_stream() -> StreamConfig {
    StreamConfig {
        id: loki::model::StreamId::parse("ch01").unwrap(),
        prompt: "prompts/chapter.md".into(),
        vars: [("CHAPTER".to_string(), "1".to_string())]
            .into_iter()
            .collect(),
        inputs: Default::default(),
        outputs: vec!["chapters/ch01.md".into()],
        depends_on: Vec::new(),
        agent: AgentSettings::default(),
        checks: CheckSettings {
            words: Some((20, 40)),
            require: vec!["Mira".into()],
            forbid: vec!["дракон".into()],
            command: Some("scripts/check.sh".into()),
            command_timeout: Duration::from_secs(20),
            ..CheckSettings::default()
        },
        template: None,
        validation_report: None,
    }
}

#[test]
fn a_failing_chapter_gets_exact_feedback_and_a_readable_report() {
    let dir = tempfile::tempdir().unwrap();
    let wt = dir.path();
    write(
        wt,
        "chapters/ch01.md",
        "# Глава 1\n\nМира шла домой.\nВдруг — Дракон!\nКонец.\n",
    );
    write(wt, "chapters/ch01-final.md", "old draft\n");
    write(
        wt,
        "scripts/check.sh",
        "#!/bin/sh\necho \"checking chapter $LOKI_VAR_CHAPTER: $LOKI_OUTPUTS\"\nexit 2\n",
    );
    fs::set_permissions(
        wt.join("scripts/check.sh"),
        fs::Permissions::from_mode(0o755),
    )
    .unwrap();

    let touched = vec!["chapters/ch01.md".to_string()];
    let report = run_checks(wt, &chapter_stream(), Some(&touched), &[]);

    assert_eq!(report.status, Level::Fail);
    assert!(!report.passed());
    assert_eq!(
        report.summary,
        "FAIL: words chapters/ch01.md 8 < 20; require `Mira` missing; \
         forbid `дракон` in chapters/ch01.md:4; duplicate chapters/ch01-final.md; command exit 2"
    );
    let v = report.violations();
    assert_eq!(v.len(), 5);
    assert!(v[2].starts_with("`дракон` found in chapters/ch01.md on line 4."));
    assert!(v[3].contains("merge its content into `chapters/ch01.md`"));
    assert!(v[4].ends_with("Its output:\n  checking chapter 1: chapters/ch01.md"));

    let path = wt.join(".loki/runs/ch01/attempt-1/checks.json");
    report.write(&path).unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(json["status"], "FAIL");
    assert_eq!(json["entries"][0]["check"], "outputs");
    assert_eq!(json["entries"][0]["status"], "PASS");
    assert_eq!(CheckReport::read(&path).unwrap(), report);

    let human = report.human();
    assert!(human.starts_with("FAIL: words chapters/ch01.md 8 < 20;"));
    assert!(human.contains("2 passed, 0 warned, 5 failed"));
}

#[test]
fn writer_word_counts() {
    assert_eq!(count_words("Привет, как дела? Всё хорошо."), 5);
    assert_eq!(count_words("## A well-known *tale*\n\n---\n"), 3);
}

/// A check command that cannot run is the swarm file's fault, not the
/// draft's: the report says so, with the fix, and keeps saying so once
/// written and read back, so the dispatcher can fail the stream at once.
#[test]
fn a_check_command_that_cannot_run_is_a_configuration_error() {
    let dir = tempfile::tempdir().unwrap();
    let wt = dir.path();
    write(wt, "chapters/ch01.md", "# Chapter\n\nMira walks home.\n");
    let mut s = chapter_stream();
    s.checks = CheckSettings {
        command: Some("loki-test-no-such-check --strict".into()),
        ..CheckSettings::default()
    };
    let report = run_checks(wt, &s, None, &[]);
    assert_eq!(report.status, Level::Fail);
    assert_eq!(report.summary, "FAIL: command could not run");
    let why = report.config_error().expect("a configuration error");
    assert!(
        why.starts_with(
            "the check command `loki-test-no-such-check --strict` could not run: a command in \
             it was not found (exit 127)"
        ),
        "{why}"
    );
    assert!(why.contains("\n  help: fix `command` in [checks]"), "{why}");

    let path = wt.join("checks.json");
    report.write(&path).unwrap();
    assert_eq!(CheckReport::read(&path).unwrap().config_error(), Some(why));
}
