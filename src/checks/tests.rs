//! Unit tests of the checks and their report.

use super::*;
use crate::config::{AgentSettings, CheckSettings};
use std::time::Instant;

fn stream(outputs: &[&str], checks: CheckSettings) -> StreamConfig {
    StreamConfig {
        id: crate::model::StreamId::parse("ch01").unwrap(),
        prompt: "prompts/chapter.md".into(),
        vars: BTreeMap::new(),
        inputs: BTreeMap::new(),
        outputs: outputs.iter().map(|s| s.to_string()).collect(),
        depends_on: Vec::new(),
        agent: AgentSettings::default(),
        checks,
        template: None,
        validation_report: None,
    }
}

/// Only the checks under test: canonical off.
fn only() -> CheckSettings {
    CheckSettings {
        canonical: false,
        ..CheckSettings::default()
    }
}

fn write(dir: &Path, rel: &str, content: &str) {
    let p = dir.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, content).unwrap();
}

fn e(check: &str, target: &str, status: Level, details: &str) -> CheckEntry {
    entry(check, Some(target), status, details.to_string())
}

fn words(n: usize) -> String {
    vec!["word"; n].join(" ")
}

// ------------------------------------------------------------ words

#[test]
fn counts_cyrillic_and_accented_words() {
    assert_eq!(count_words("Привет, как дела? Всё хорошо."), 5);
    assert_eq!(count_words("Café naïve, façade; Ærøskøbing."), 4);
    // Decomposed accents (e + U+0301) stay inside their word.
    assert_eq!(count_words("Cafe\u{301} re\u{301}sume\u{301}"), 2);
    assert_eq!(count_words("Ἐν ἀρχῇ ἦν ὁ λόγος"), 5);
    assert_eq!(count_words(""), 0);
    assert_eq!(count_words("  \n\t "), 0);
}

#[test]
fn counts_hyphens_apostrophes_and_numbers_like_a_writer() {
    assert_eq!(count_words("a well-known, mother-in-law déjà-vu"), 4);
    assert_eq!(count_words("non\u{2011}breaking hy\u{2010}phen"), 2);
    assert_eq!(count_words("word - word — word—word and/or"), 6);
    assert_eq!(count_words("Don't stop; l'homme, Mira’s dog."), 5);
    assert_eq!(count_words("In 1984 pi was 3.14."), 5);
}

#[test]
fn markdown_syntax_is_not_counted() {
    let md = "---\n# The Title\n\n## Part *one*\n\n\
                  * **bold** item\n- _under_ item\n\n---\n\n\
                  1. First [a link](https://example.com/a-b \"t\")\n2) Second ![img](p.png)\n\
                  - [x] done\n> quoted text\n\n| a | b |\n|---|---|\n\
                  <!-- a note\nfor me -->\n<div class=\"x\">inside</div><br/>\n\
                  see https://example.com/x?y=z now[^1]\n\n[^1]: Foot note.\n\
                  [ref]: https://example.com/ref\n***\n";
    // The Title Part one bold item under item First a link Second img
    // done quoted text a b inside see url now Foot note
    assert_eq!(count_words(md), 24);
}

#[test]
fn words_pass_warn_and_fail_with_tolerance() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.md", &words(1000));
    write(dir.path(), "b.md", &words(850));
    write(dir.path(), "c.md", &words(412));
    write(dir.path(), "d.md", &words(1300));
    write(dir.path(), "e.md", &words(1400));
    write(dir.path(), "f.md", &words(810));
    let s = stream(
        &["a.md", "b.md", "c.md", "d.md", "e.md", "f.md"],
        CheckSettings {
            words: Some((900, 1200)),
            ..only()
        },
    );
    let r = run_checks(dir.path(), &s, None, &[]);
    let w: Vec<&CheckEntry> = r.entries.iter().filter(|e| e.check == "words").collect();
    assert_eq!(
        w,
        vec![
            &e(
                "words",
                "a.md",
                Level::Pass,
                "1000 words; required 900–1200"
            ),
            &e(
                "words",
                "b.md",
                Level::Warn,
                "850 words; required 900–1200 (inside the 10% tolerance; fails below 810)"
            ),
            &e(
                "words",
                "c.md",
                Level::Fail,
                "412 words; required 900–1200 (fails below 810)"
            ),
            &e(
                "words",
                "d.md",
                Level::Warn,
                "1300 words; required 900–1200 (inside the 10% tolerance; fails above 1320)"
            ),
            &e(
                "words",
                "e.md",
                Level::Fail,
                "1400 words; required 900–1200 (fails above 1320)"
            ),
            &e(
                "words",
                "f.md",
                Level::Warn,
                "810 words; required 900–1200 (inside the 10% tolerance; fails below 810)"
            ),
        ]
    );
    assert_eq!(r.status, Level::Fail);
    assert_eq!(
        r.summary,
        "FAIL: words c.md 412 < 900; words e.md 1400 > 1200; words b.md 850 (range 900–1200); \
             words d.md 1300 (range 900–1200); words f.md 810 (range 900–1200)"
    );
}

#[test]
fn words_warning_only_report() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "chapters/ch01.md",
        &format!("# Title\n\n{}", words(849)),
    );
    let s = stream(
        &["chapters/ch01.md"],
        CheckSettings {
            words: Some((900, 1200)),
            ..only()
        },
    );
    let r = run_checks(dir.path(), &s, None, &[]);
    assert_eq!(
        r,
        CheckReport {
            status: Level::Warn,
            entries: vec![
                e(
                    "outputs",
                    "chapters/ch01.md",
                    Level::Pass,
                    "written (4253 bytes)"
                ),
                e("utf8", "chapters/ch01.md", Level::Pass, "valid UTF-8"),
                e(
                    "words",
                    "chapters/ch01.md",
                    Level::Warn,
                    "850 words; required 900–1200 (inside the 10% tolerance; fails below 810)"
                ),
            ],
            summary: "WARN: words chapters/ch01.md 850 (range 900–1200)".into(),
        }
    );
    assert!(r.passed());
    assert_eq!(r.violations().len(), 1);
    assert!(r.violations()[0].starts_with(
        "`chapters/ch01.md` is slightly outside the word range: 850 words; required 900–1200"
    ));
    assert!(r.violations()[0].contains("Expand the text"));
}

// ---------------------------------------------------------- outputs

#[test]
fn outputs_pass_and_fail_exactly() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "chapters/ch01.md", "Hello.\n");
    write(dir.path(), "chapters/ch02.md", "");
    write(dir.path(), "chapters/ch04.txt", " \n\n");
    fs::write(dir.path().join("chapters/ch05.md"), b"ok\n\xff\xfe").unwrap();
    fs::write(dir.path().join("cover.png"), b"\x89PNG\xff").unwrap();
    let s = stream(
        &[
            "chapters/ch01.md",
            "chapters/ch02.md",
            "chapters/ch03.md",
            "chapters/ch04.txt",
            "chapters/ch05.md",
            "cover.png",
        ],
        only(),
    );
    let r = run_checks(dir.path(), &s, None, &[]);
    assert_eq!(
        r.entries,
        vec![
            e(
                "outputs",
                "chapters/ch01.md",
                Level::Pass,
                "written (7 bytes)"
            ),
            e("utf8", "chapters/ch01.md", Level::Pass, "valid UTF-8"),
            e(
                "outputs",
                "chapters/ch02.md",
                Level::Fail,
                "empty: chapters/ch02.md has no content"
            ),
            e("utf8", "chapters/ch02.md", Level::Pass, "valid UTF-8"),
            e(
                "outputs",
                "chapters/ch03.md",
                Level::Fail,
                "missing: chapters/ch03.md was not written"
            ),
            e(
                "outputs",
                "chapters/ch04.txt",
                Level::Fail,
                "empty: chapters/ch04.txt holds only whitespace"
            ),
            e("utf8", "chapters/ch04.txt", Level::Pass, "valid UTF-8"),
            e(
                "outputs",
                "chapters/ch05.md",
                Level::Pass,
                "written (5 bytes)"
            ),
            e(
                "utf8",
                "chapters/ch05.md",
                Level::Fail,
                "invalid UTF-8 at byte 3 (line 2)"
            ),
            e("outputs", "cover.png", Level::Pass, "written (5 bytes)"),
        ]
    );
    assert_eq!(
        r.summary,
        "FAIL: empty chapters/ch02.md; missing chapters/ch03.md; empty chapters/ch04.txt; \
             not UTF-8 chapters/ch05.md:2"
    );
    let v = r.violations();
    assert_eq!(v.len(), 4);
    assert_eq!(
        v[1],
        "missing: chapters/ch03.md was not written. Write `chapters/ch03.md` as a regular file \
             (not a symlink) at exactly this path (relative to the repository root), with its \
             full content."
    );
}

#[test]
fn all_passing_report_counts_checks() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.md", "Mira walks.\n");
    let s = stream(
        &["a.md"],
        CheckSettings {
            require: vec!["mira".into()],
            forbid: vec!["dragon".into()],
            ..CheckSettings::default()
        },
    );
    let r = run_checks(dir.path(), &s, Some(&["a.md".into()]), &[]);
    assert_eq!(r.status, Level::Pass);
    assert_eq!(r.summary, "PASS: 5 checks");
    assert!(r.violations().is_empty());
    assert_eq!(
        r.entries[2..],
        [
            e("require", "mira", Level::Pass, "`mira` appears in a.md"),
            e(
                "forbid",
                "dragon",
                Level::Pass,
                "`dragon` does not appear in any output"
            ),
            entry(
                "canonical",
                None,
                Level::Pass,
                "no versioned duplicates beside 1 file".into()
            ),
        ]
    );
    let empty = run_checks(dir.path(), &stream(&[], only()), None, &[]);
    assert_eq!(empty.summary, "PASS: nothing to check");
}

#[test]
fn an_attempt_that_changed_nothing_fails() {
    let dir = tempfile::tempdir().unwrap();
    let r = run_checks(dir.path(), &stream(&[], only()), Some(&[]), &[]);
    assert_eq!(r.status, Level::Fail);
    assert_eq!(r.summary, "FAIL: no change");
    assert_eq!(
        r.violations(),
        [
            "no file differs from the target: the attempt changed nothing, so there is \
              nothing to merge. Do the work the prompt asks for and write its files in the \
              repository."
        ]
    );
    // Something changed, or git could not say: no such entry.
    let changed = run_checks(
        dir.path(),
        &stream(&[], only()),
        Some(&["x.rs".into()]),
        &[],
    );
    assert_eq!(changed.summary, "PASS: nothing to check");
}

// ------------------------------------------------------------ terms

#[test]
fn forbid_names_every_line_per_file() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "chapters/ch01.md",
        "One.\nTwo.\nA Dragon!\nFour.\nfive\nsix\nthe dragon's lair, dragon.\n",
    );
    write(
        dir.path(),
        "chapters/ch02.md",
        "Dragonfly.\nno DRAGON here? yes.\n",
    );
    let s = stream(
        &["chapters/ch01.md", "chapters/ch02.md"],
        CheckSettings {
            forbid: vec!["dragon".into(), "unicorn".into()],
            ..only()
        },
    );
    let r = run_checks(dir.path(), &s, None, &[]);
    let f: Vec<&CheckEntry> = r.entries.iter().filter(|e| e.check == "forbid").collect();
    let mut one = e(
        "forbid",
        "dragon",
        Level::Fail,
        "`dragon` found in chapters/ch01.md on lines 3, 7",
    );
    one.lines = vec![3, 7];
    let mut two = e(
        "forbid",
        "dragon",
        Level::Fail,
        "`dragon` found in chapters/ch02.md on line 2",
    );
    two.lines = vec![2];
    let three = e(
        "forbid",
        "unicorn",
        Level::Pass,
        "`unicorn` does not appear in any output",
    );
    assert_eq!(f, vec![&one, &two, &three]);
    assert_eq!(
        r.summary,
        "FAIL: forbid `dragon` in chapters/ch01.md:3,7; forbid `dragon` in chapters/ch02.md:2"
    );
    assert_eq!(
        r.violations()[0],
        "`dragon` found in chapters/ch01.md on lines 3, 7. `dragon` is forbidden: remove or \
             replace every occurrence, in any letter case."
    );
}

#[test]
fn require_fails_when_absent_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.md", "Miranda was here.\n");
    write(dir.path(), "b.md", "Nobody.\n");
    let s = stream(
        &["a.md", "b.md"],
        CheckSettings {
            require: vec!["Mira".into(), "nobody".into(), "  ".into()],
            ..only()
        },
    );
    let r = run_checks(dir.path(), &s, None, &[]);
    let q: Vec<&CheckEntry> = r.entries.iter().filter(|e| e.check == "require").collect();
    assert_eq!(
        q,
        vec![
            &e(
                "require",
                "Mira",
                Level::Fail,
                "`Mira` does not appear in any output"
            ),
            &e("require", "nobody", Level::Pass, "`nobody` appears in b.md"),
        ]
    );
    assert_eq!(r.summary, "FAIL: require `Mira` missing");
    assert!(r.violations()[0].starts_with("`Mira` does not appear in any output. It is required"));
}

/// Inflected languages: `"больниц*"` finds "в больнице"; without the star
/// the whole word is still required.
#[test]
fn a_term_ending_in_a_star_matches_every_word_it_starts() {
    let re = term_regex("больниц*").unwrap();
    assert!(re.is_match("Она лежала в больнице."));
    assert!(re.is_match("БОЛЬНИЦА"));
    assert!(!re.is_match("предбольничный"));
    assert!(!term_regex("больница").unwrap().is_match("в больнице"));
    let re = term_regex("dragon*").unwrap();
    assert!(re.is_match("the dragons") && re.is_match("Dragon.") && !re.is_match("snapdragon"));
    // A lone star is no term to widen: it stays a literal.
    assert!(term_regex("*").is_some_and(|re| re.is_match("a * b")));

    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "ch.md", "Утром.\nОна лежала в больнице.\n");
    let s = stream(
        &["ch.md"],
        CheckSettings {
            forbid: vec!["больниц*".into()],
            ..only()
        },
    );
    let r = run_checks(dir.path(), &s, None, &[]);
    assert_eq!(r.status, Level::Fail, "{}", r.human());
    assert!(
        r.human().contains("`больниц*` found in ch.md on line 2"),
        "{}",
        r.human()
    );
}

#[test]
fn cyrillic_terms_match_case_insensitively_as_whole_words() {
    let re = term_regex("Дракон").unwrap();
    assert!(re.is_match("и тут дракон, огромный"));
    assert!(re.is_match("ДРАКОН"));
    assert!(!re.is_match("драконы летят"));
    assert!(!re.is_match("юдраконы"));
    assert_eq!(
        match_lines(&re, "Раз.\nдракон,\nдраконы\nЁж и Дракон"),
        vec![2, 4]
    );

    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "ch.md", "Жил-был дракон,\nи драконы.\nВсё.\n");
    let s = stream(
        &["ch.md"],
        CheckSettings {
            forbid: vec!["Дракон".into()],
            require: vec!["всё".into(), "жил".into()],
            ..only()
        },
    );
    let r = run_checks(dir.path(), &s, None, &[]);
    let mut hit = e(
        "forbid",
        "Дракон",
        Level::Fail,
        "`Дракон` found in ch.md on line 1",
    );
    hit.lines = vec![1];
    assert!(r.entries.contains(&hit));
    assert!(r
        .entries
        .contains(&e("require", "всё", Level::Pass, "`всё` appears in ch.md")));
    assert!(r
        .entries
        .contains(&e("require", "жил", Level::Pass, "`жил` appears in ch.md")));
}

#[test]
fn punctuation_edges_phrases_and_apostrophes() {
    let dr = term_regex("Dr.").unwrap();
    assert!(dr.is_match("see dr. Who"));
    assert!(!dr.is_match("drive"));
    assert!(!dr.is_match("Adr. x"));
    let v2 = term_regex("-v2").unwrap();
    assert!(v2.is_match("plan-v2.md"));
    assert!(!v2.is_match("plan-v20"));
    let phrase = term_regex("Dark  Lord").unwrap();
    assert!(phrase.is_match("the dark\nlord rose"));
    assert!(!phrase.is_match("darklord"));
    let apos = term_regex("don't").unwrap();
    assert!(apos.is_match("I Don’t know"));
    let accent = term_regex("ÉLAN").unwrap();
    assert!(accent.is_match("with élan."));
    assert!(!accent.is_match("élans"));
    let special = term_regex("a+b (c)").unwrap();
    assert!(special.is_match("A+B (C)"));
}

// -------------------------------------------------------- canonical

#[test]
fn versioned_names_are_recognised() {
    for (name, canonical) in [
        ("plan-v2.md", "plan.md"),
        ("plan_v3.md", "plan.md"),
        ("plan.v2.md", "plan.md"),
        ("Plan-V12.md", "Plan.md"),
        ("scene-0204-blueprint-revised.md", "scene-0204-blueprint.md"),
        ("ch01-final.md", "ch01.md"),
        ("ch01-new.md", "ch01.md"),
        ("ch01-old.md", "ch01.md"),
        ("ch01-copy.md", "ch01.md"),
        ("ch01 (1).md", "ch01.md"),
        ("ch01 copy.md", "ch01.md"),
        ("ch01 copy 2.md", "ch01.md"),
        ("ch01-draft2.md", "ch01.md"),
        ("ch01-final-v2.md", "ch01.md"),
        ("ch01_FINAL_final.md", "ch01.md"),
        ("ch01.md.bak", "ch01.md"),
        ("ch01.md~", "ch01.md"),
        ("Copy of ch01.md", "ch01.md"),
        ("notes-updated", "notes"),
    ] {
        assert_eq!(
            canonical_name_of(name).as_deref(),
            Some(canonical),
            "{name}"
        );
    }
    for name in [
        "ch01.md",
        "new.md",
        "final.md",
        "v2.md",
        "the-old-man.md",
        "chapter-2.md",
        "api-v2x.md",
        ".gitignore",
    ] {
        assert_eq!(canonical_name_of(name), None, "{name}");
    }
}

/// The cheap test in front of the patterns never turns away a copy: over
/// every pair of names built from stems, markers, prefixes and suffixes,
/// each sibling the patterns map onto a name passes `may_copy` for it.
#[test]
fn may_copy_never_turns_away_a_versioned_copy() {
    let stems = [
        "ch01",
        "Plan",
        "notes",
        "a.b",
        "x",
        "scene-0204-blueprint",
        "ΟΔΟΣ",
    ];
    let exts = ["", ".md", ".MD", ".tar.gz"];
    let markers = [
        "",
        "-v2",
        "_FINAL_final",
        " (1)",
        " copy 2",
        "-draft2",
        ".v3",
    ];
    let around = [
        ("", ""),
        ("Copy of ", ""),
        ("", ".bak"),
        ("", "~"),
        ("copy of ", ".orig"),
    ];
    let mut names = Vec::new();
    for stem in stems {
        for ext in exts {
            names.push(format!("{stem}{ext}"));
            for m in markers {
                for (pre, post) in around {
                    names.push(format!("{pre}{stem}{m}{ext}{post}"));
                }
            }
        }
    }
    let mut copies = 0;
    for sibling in &names {
        let Some(canonical) = canonical_name_of(sibling) else {
            continue;
        };
        for name in &names {
            if canonical.to_lowercase() == name.to_lowercase() {
                copies += 1;
                assert!(may_copy(sibling, name), "{sibling} copies {name}");
            }
        }
    }
    assert!(copies > 500, "only {copies} copies were tried");
    assert!(!may_copy("s0001.md", "s0002.md"));
}

#[test]
fn canonical_flags_duplicates_and_exempts_backups() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for f in [
        "chapters/ch01.md",
        "chapters/ch01-final.md",
        "chapters/ch01 (1).md",
        "chapters/CH01_v3.md",
        "chapters/ch02.md",
        "plan.md",
        "plan-v2.md",
        "notes.md",
        "notes-old.md",
        "backups/chapters/ch01-v2.md",
        "backups/plan-v3.md",
        "backups/plan.md",
        "chapters/ch03-new.md",
    ] {
        write(d, f, "text\n");
    }
    let s = stream(
        &["chapters/ch01.md", "chapters/ch02.md", "chapters/ch03.md"],
        only(),
    );
    let s = StreamConfig {
        checks: CheckSettings::default(),
        template: None,
        ..s
    };
    let touched: Vec<String> = ["plan-v2.md", "backups/plan-v3.md", "chapters/ch01.md"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let r = run_checks(d, &s, Some(&touched), &[]);
    let c: Vec<&CheckEntry> = r
        .entries
        .iter()
        .filter(|e| e.check == "canonical")
        .collect();
    let beside = |dup: &str, canon: &str| {
        e(
            "canonical",
            dup,
            Level::Fail,
            &format!(
                "versioned duplicate `{dup}` beside `{canon}`: keep one canonical file — \
                     merge its content into `{canon}` and delete it, or move it to `backups/`"
            ),
        )
    };
    assert_eq!(
        c,
        vec![
            &beside("chapters/CH01_v3.md", "chapters/ch01.md"),
            &beside("chapters/ch01 (1).md", "chapters/ch01.md"),
            &beside("chapters/ch01-final.md", "chapters/ch01.md"),
            &e(
                "canonical",
                "chapters/ch03-new.md",
                Level::Fail,
                "versioned duplicate `chapters/ch03-new.md` instead of `chapters/ch03.md`, \
                     which does not exist: rename it to `chapters/ch03.md`"
            ),
            &beside("plan-v2.md", "plan.md"),
        ]
    );
    // notes-old.md is beside notes.md, but the stream touched neither.
    assert!(!r.summary.contains("notes"));
    assert!(r
        .summary
        .starts_with("FAIL: missing chapters/ch03.md; duplicate chapters/CH01_v3.md;"));
    assert!(r.violations().contains(
        &"Versioned duplicate `plan-v2.md` beside `plan.md`: keep one canonical file — merge \
              its content into `plan.md` and delete it, or move it to `backups/`."
            .to_string()
    ));
}

#[test]
fn canonical_passes_without_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "plan.md", "x\n");
    write(dir.path(), "plan-notes.md", "x\n");
    write(dir.path(), "backups/plan-v2.md", "x\n");
    let s = StreamConfig {
        checks: CheckSettings::default(),
        template: None,
        ..stream(&["plan.md"], only())
    };
    let r = run_checks(
        dir.path(),
        &s,
        Some(&["plan.md".into(), "gone-v2.md".into()]),
        &[],
    );
    assert_eq!(r.status, Level::Pass);
    assert_eq!(
        r.entries.last().unwrap().details,
        "no versioned duplicates beside 1 file"
    );
}

// ---------------------------------------------------------- command

fn with_command(cmd: &str, timeout: Duration) -> StreamConfig {
    let mut s = stream(
        &["out.md"],
        CheckSettings {
            command: Some(cmd.into()),
            command_timeout: timeout,
            ..only()
        },
    );
    s.vars.insert("CHAPTER".into(), "7".into());
    s
}

fn command_entry(r: &CheckReport) -> &CheckEntry {
    r.entries.iter().find(|e| e.check == "command").unwrap()
}

#[test]
fn command_passes_with_its_output_and_environment() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "out.md", "x\n");
    let s = with_command(
            "test -f out.md && echo \"$CHAPTER $LOKI_VAR_CHAPTER $LOKI_STREAM_ID $LOKI_OUTPUTS $EXTRA\"; \
             read x; echo \"stdin:$x\" >&2",
            Duration::from_secs(10),
        );
    let env = vec![("EXTRA".to_string(), "yes".to_string())];
    let r = run_checks(dir.path(), &s, None, &env);
    assert_eq!(
        command_entry(&r),
        &e(
            "command",
            s.checks.command.as_deref().unwrap(),
            Level::Pass,
            "7 7 ch01 out.md yes\nstdin:"
        )
    );
    assert_eq!(r.status, Level::Pass);
}

#[test]
fn command_failure_keeps_output_tail() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "out.md", "x\n");
    let s = with_command("echo 'too short' >&2; exit 3", Duration::from_secs(10));
    let r = run_checks(dir.path(), &s, None, &[]);
    assert_eq!(
        command_entry(&r),
        &e(
            "command",
            "echo 'too short' >&2; exit 3",
            Level::Fail,
            "too short"
        )
    );
    assert_eq!(r.summary, "FAIL: command exit 3");
    assert_eq!(
        r.violations(),
        vec![
            "The check command `echo 'too short' >&2; exit 3` failed; fix what it reports. \
                 Its output:\n  too short"
                .to_string()
        ]
    );

    let silent = run_checks(
        dir.path(),
        &with_command("exit 1", Duration::from_secs(10)),
        None,
        &[],
    );
    assert_eq!(
        command_entry(&silent).details,
        "exited with status 1 and printed nothing"
    );

    let long = run_checks(
        dir.path(),
        &with_command(
            "i=0; while [ $i -lt 2000 ]; do echo \"line $i\"; i=$((i+1)); done; exit 1",
            Duration::from_secs(20),
        ),
        None,
        &[],
    );
    let d = &command_entry(&long).details;
    assert!(d.starts_with('…'));
    assert!(d.ends_with("line 1999"));
    assert!(d.len() <= OUTPUT_TAIL + '…'.len_utf8());
}

#[test]
fn a_command_that_cannot_run_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "out.md", "x\n");
    write(dir.path(), "flat.sh", "#!/bin/sh\necho hi\n");
    let r = run_checks(
        dir.path(),
        &with_command("scripts/missing.sh --strict", Duration::from_secs(10)),
        None,
        &[],
    );
    let c = command_entry(&r);
    assert_eq!(c.status, Level::Fail);
    assert!(
        c.details
            .starts_with("a command in it was not found (exit 127): "),
        "{}",
        c.details
    );
    assert!(c.details.contains("scripts/missing.sh"), "{}", c.details);
    assert_eq!(r.summary, "FAIL: command could not run");
    let why = r.config_error().expect("a config error");
    assert!(
        why.starts_with(
            "the check command `scripts/missing.sh --strict` could not run: a command in it \
                 was not found (exit 127): "
        ),
        "{why}"
    );
    assert!(why.contains("\n  help: fix `command` in [checks]"), "{why}");
    assert!(
        r.violations()[0].starts_with("The check command could not run (a command in it"),
        "{:?}",
        r.violations()
    );
    // It survives the report's JSON.
    let back: CheckReport = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
    assert_eq!(back.config_error(), Some(why));

    let r = run_checks(
        dir.path(),
        &with_command("./flat.sh", Duration::from_secs(10)),
        None,
        &[],
    );
    let why = r.config_error().expect("a config error");
    assert!(
        why.contains("could not run: a command in it is not executable (exit 126)"),
        "{why}"
    );
    assert!(why.contains("help: make the script executable"), "{why}");

    // An ordinary failure is the draft's, not the configuration's.
    let r = run_checks(
        dir.path(),
        &with_command("exit 3", Duration::from_secs(10)),
        None,
        &[],
    );
    assert_eq!(r.config_error(), None);
    assert!(!serde_json::to_string(&r).unwrap().contains("cannot_run"));
}

#[test]
fn command_timeout_kills_the_group_fast() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "out.md", "x\n");
    let started = Instant::now();
    let r = run_checks(
        dir.path(),
        &with_command("sleep 5 & sleep 5", Duration::from_millis(300)),
        None,
        &[],
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        command_entry(&r),
        &e(
            "command",
            "sleep 5 & sleep 5",
            Level::Fail,
            "timed out after 300ms"
        )
    );
    assert_eq!(r.summary, "FAIL: command timed out after 300ms");
    let five = humantime::format_duration(Duration::from_secs(300)).to_string();
    assert_eq!(five, "5m");
}

#[test]
fn command_leftovers_do_not_hang_the_check() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "out.md", "x\n");
    let started = Instant::now();
    let r = run_checks(
        dir.path(),
        &with_command("sleep 30 & echo started", Duration::from_secs(10)),
        None,
        &[],
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(command_entry(&r).details, "started");
    assert_eq!(command_entry(&r).status, Level::Pass);
}

// ----------------------------------------------------------- report

#[test]
fn report_json_shape_and_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.md", "the dragon\n");
    let s = stream(
        &["a.md"],
        CheckSettings {
            forbid: vec!["dragon".into()],
            ..only()
        },
    );
    let r = run_checks(dir.path(), &s, None, &[]);
    let v = serde_json::to_value(&r).unwrap();
    assert_eq!(
        v,
        serde_json::json!({
            "status": "FAIL",
            "entries": [
                {"check": "outputs", "target": "a.md", "status": "PASS", "details": "written (11 bytes)"},
                {"check": "utf8", "target": "a.md", "status": "PASS", "details": "valid UTF-8"},
                {"check": "forbid", "target": "dragon", "status": "FAIL",
                 "details": "`dragon` found in a.md on line 1", "lines": [1]},
            ],
            "summary": "FAIL: forbid `dragon` in a.md:1",
        })
    );
    let path = dir.path().join("runs/checks.json");
    r.write(&path).unwrap();
    assert_eq!(CheckReport::read(&path).unwrap(), r);
    assert_eq!(serde_json::to_value(Level::Warn).unwrap(), "WARN");
    assert_eq!(serde_json::to_value(Level::Pass).unwrap(), "PASS");

    let human = r.human();
    assert_eq!(
        human,
        "FAIL: forbid `dragon` in a.md:1\n  2 passed, 0 warned, 1 failed\n\
             \x20 FAIL  forbid   dragon: `dragon` found in a.md on line 1\n\
             \x20 PASS  outputs  a.md: written (11 bytes)\n\
             \x20 PASS  utf8     a.md: valid UTF-8\n"
    );
}

#[test]
fn summary_is_capped() {
    let items = (0..9)
        .map(|i| (e("forbid", "x", Level::Fail, "d"), format!("item {i}")))
        .collect();
    assert_eq!(
        build_report(items).summary,
        "FAIL: item 0; item 1; item 2; item 3; item 4; item 5; … and 3 more"
    );
}

// ------------------------------------------------------------ untrusted changes

/// A link into `.git` or `.loki` stays "inside" by the letter of its
/// target, but merged it points into the user's git dir or loki's state:
/// it fails like a link out of the repository.
#[test]
fn links_into_git_or_loki_folders_fail() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::os::unix::fs::symlink(".git/hooks", d.join("hooks")).unwrap();
    std::os::unix::fs::symlink("../.LOKI/state", d.join("sub-state")).unwrap();
    std::os::unix::fs::symlink("notes.md", d.join("alias.md")).unwrap();
    let touched: Vec<String> = ["hooks", "sub-state", "alias.md"]
        .map(String::from)
        .to_vec();
    let r = run_checks(d, &stream(&[], only()), Some(&touched), &[]);
    let failed: Vec<&str> = r
        .entries
        .iter()
        .filter(|e| e.check == "symlinks" && e.status == Level::Fail)
        .filter_map(|e| e.target.as_deref())
        .collect();
    assert_eq!(failed, ["hooks", "sub-state"], "{:#?}", r.entries);
}

/// What the check command's script sources or imports judges as much as
/// the script: a changed file in its folder fails the `script` check; a
/// change elsewhere does not.
#[test]
fn a_change_beside_the_check_script_fails() {
    let checks = CheckSettings {
        command: Some("python3 checks/verify.py --strict".into()),
        ..only()
    };
    let s = stream(&[], checks);
    let script = |touched: &[&str]| {
        let t: Vec<String> = touched.iter().map(|s| s.to_string()).collect();
        check_script_kept(&s, &t)
            .into_iter()
            .next()
            .map(|(e, _)| e.details)
    };
    assert_eq!(
        script(&["checks/json.py"]).as_deref(),
        Some("the attempt changed `checks/json.py`, beside `checks/verify.py`, the script the check command runs")
    );
    assert!(script(&["checks/verify.py"]).is_some());
    assert_eq!(script(&["chapters/ch01.md", "checksum.txt"]), None);
}
