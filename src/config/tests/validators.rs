//! `[validators.<name>]` and `[checks] validators`.

use super::*;

const VALIDATORS: &str = "[agent]\nmodel = \"opus\"\ntimeout = \"30m\"\n\n\
[validators.canon-guardian]\nprompt = \"prompts/canon.md\"\ntimeout = \"120s\"\nmodel = \"haiku\"\n\n\
[validators.style]\nprompt = \"prompts/canon.md\"\nblocking = false\n\n\
[checks]\nvalidators = [\"canon-guardian\", \"style\"]\n\n";

/// The standard prompts and a validator's.
fn vrepo() -> TempDir {
    repo(&[
        ("prompts/plain.md", "Just do it for {{STREAM_ID}}.\n"),
        ("prompts/canon.md", "Judge {{STREAM_ID}}:\n{{DRAFT}}\n"),
    ])
}

#[test]
fn a_validator_takes_the_agent_settings_with_its_own_on_top() {
    let dir = vrepo();
    let f = parse_in(&dir, &format!(
        "{VALIDATORS}{}\n[[streams]]\nid = \"b\"\nprompt = \"prompts/plain.md\"\n[streams.checks]\nvalidators = [\"style\"]\n",
        one("")
    ))
    .unwrap();
    let v = &f.validators["canon-guardian"];
    assert_eq!(v.prompt, PathBuf::from("prompts/canon.md"));
    assert!(v.blocking);
    assert_eq!(v.agent.timeout, Duration::from_secs(120));
    assert_eq!(v.agent.model, "haiku");
    let style = &f.validators["style"];
    assert!(!style.blocking);
    assert_eq!(style.agent.model, "opus");
    assert_eq!(style.agent.timeout, Duration::from_secs(1800));
    assert_eq!(f.streams[0].checks.validators, ["canon-guardian", "style"]);
    assert_eq!(f.streams[1].checks.validators, ["style"]);
}

#[test]
fn an_unknown_validator_is_named_where_it_is_used() {
    let e = err(&format!(
        "{VALIDATORS}{}[streams.checks]\nvalidators = [\"canon-guardain\"]\n",
        one("")
    ));
    assert_eq!(e.message, "unknown validator `canon-guardain`");
    assert_eq!((e.line, e.col), (21, 15), "{e}");
    assert!(e.help.contains("did you mean `canon-guardian`?"), "{e}");
    let e = err(&format!("[checks]\nvalidators = [\"x\"]\n\n{}", one("")));
    assert_eq!((e.line, e.col), (2, 15), "{e}");
    assert!(e.help.contains("none is declared"), "{e}");
}

#[test]
fn a_validator_needs_a_prompt_and_known_keys() {
    let e = err(&format!(
        "[validators.canon]\ntimeout = \"1m\"\n\n{}",
        one("")
    ));
    assert_eq!(e.message, "validator `canon` has no `prompt`");
    let e = err(&format!(
        "[validators.canon]\nprompt = \"p.md\"\nwords = [1, 2]\n\n{}",
        one("")
    ));
    assert_eq!(e.message, "unknown key `words` in [validators.canon]");
    assert!(e.help.starts_with("`words` belongs in [checks]"), "{e}");
    let e = err(&format!(
        "[validators.Canon]\nprompt = \"p.md\"\n\n{}",
        one("")
    ));
    assert!(e.message.contains("is not a validator name"), "{e}");
}

#[test]
fn a_validator_prompt_must_exist_and_be_filled_by_each_stream() {
    let dir = repo(&[
        ("prompts/plain.md", "Do {{STREAM_ID}}.\n"),
        (
            "prompts/canon.md",
            "Judge {{STREAM_ID}} in {{BOOK}}:\n{{DRAFT}}\n",
        ),
    ]);
    let text = |vars: &str| {
        format!(
            "[validators.canon]\nprompt = \"prompts/canon.md\"\n\n[checks]\nvalidators = [\"canon\"]\n\n{}",
            one(vars)
        )
    };
    let f = parse_in(&dir, &text("vars = { BOOK = \"Tides\" }\n"));
    assert!(f.is_ok(), "{f:?}");
    let e = parse_in(&dir, &text("")).unwrap_err();
    assert!(
        e.message
            .contains("placeholder {{BOOK}} of validator `canon` is not filled for stream `a`"),
        "{e}"
    );
    assert!(e.file.ends_with("prompts/canon.md"), "{e}");
    assert_eq!((e.line, e.col), (1, 24), "{e}");
    fs::remove_file(dir.path().join("prompts/canon.md")).unwrap();
    let e = parse_in(&dir, &text("vars = { BOOK = \"Tides\" }\n")).unwrap_err();
    assert_eq!(e.message, "prompt file `prompts/canon.md` not found");
    assert_eq!((e.line, e.col), (2, 10), "{e}");
}

#[test]
fn max_validators_and_validation_report_are_read() {
    let f = ok(&format!(
        "[swarm]\nmax_validators = 3\n\n{}",
        one("validation_report = \"reports/a.json\"\n")
    ));
    assert_eq!(f.swarm.max_validators, Some(3));
    assert_eq!(
        f.streams[0].validation_report.as_deref(),
        Some("reports/a.json")
    );
    let e = err(&one("validation_report = \"../a.json\"\n"));
    assert!(e.message.contains("validation_report"), "{e}");
}
