//! Pass 2: prompt templates, `prompts/retry.md`, shared outputs, and inputs
//! and check scripts in the target tree.

use super::super::repo::script_of;
use super::*;

#[test]
fn prompt_files_must_exist() {
    let dir = std_repo();
    let text = one("").replace("prompts/plain.md", "prompts/missing.md");
    let e = parse_in(&dir, &text).unwrap_err();
    assert_eq!(e.file, dir.path().join("loki.toml"));
    assert_eq!(
        (e.line, e.col, e.message.as_str()),
        (3, 10, "prompt file `prompts/missing.md` not found")
    );
    assert!(e.help.starts_with(&format!(
        "create {} or fix the path",
        dir.path().join("prompts/missing.md").display()
    )));
    assert!(e.help.contains("main checkout"));

    let e = parse_in(&dir, &one("").replace("prompts/plain.md", "prompts")).unwrap_err();
    assert_eq!(e.message, "prompt `prompts` is a folder, not a file");
}

#[test]
fn prompt_paths_are_relative_to_the_swarm_files_folder() {
    let dir = repo(&[("sub/prompts/p.md", "hi {{STREAM_ID}}")]);
    let text = "[[streams]]\nid = \"a\"\nprompt = \"prompts/p.md\"\n";
    let f = parse(text, &dir.path().join("sub/loki.toml")).unwrap();
    assert_eq!(f.root, dir.path().join("sub"));
    assert!(parse(text, &dir.path().join("loki.toml")).is_err());
}

#[test]
fn unfilled_placeholders_point_into_the_template() {
    let dir = std_repo();
    let path = dir.path().join("loki.toml");
    let text = "\n[[streams]]\nid = \"ch01\"\nprompt = \"prompts/chapter.md\"\n\
                vars = { CHAPTR = \"1\" }\n";
    let e = parse(text, &path).unwrap_err();
    assert_eq!(e.file, dir.path().join("prompts/chapter.md"));
    assert_eq!(
        (e.line, e.col, e.message.as_str()),
        (
            1,
            11,
            "placeholder {{CHAPTER}} is not filled for stream `ch01`"
        )
    );
    assert!(
        e.help.starts_with(
            "the stream fills {{CHAPTR}}: is one of the two misspelt? add `vars = { CHAPTER = \"...\" }` or an input"
        ),
        "{}",
        e.help
    );
    assert!(
        e.help
            .contains(&format!("stream `ch01` ({}:2)", path.display())),
        "{}",
        e.help
    );
    assert!(e.to_string().starts_with(&format!(
        "{}:1:11: placeholder {{{{CHAPTER}}}} is not filled for stream `ch01`\n  help: ",
        dir.path().join("prompts/chapter.md").display()
    )));
}

#[test]
fn vars_inputs_and_builtins_fill_placeholders() {
    let dir = repo(&[(
        "p.md",
        "{{ N }} {{OUTLINE}} {{STREAM_ID}} {{ATTEMPT}} {{FEEDBACK}} {{OUTPUTS}} {{TARGET}} {{BRANCH}}",
    )]);
    let text = "[[streams]]\nid = \"a\"\nprompt = \"p.md\"\n\
                vars = { N = 3, F = 1.5, B = true, S = \"s\" }\n\
                inputs = { OUTLINE = \"notes/outline.md\" }\n";
    let f = parse_in(&dir, text).unwrap();
    let s = &f.streams[0];
    let vars: Vec<(&str, &str)> = s
        .vars
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        vars,
        vec![("B", "true"), ("F", "1.5"), ("N", "3"), ("S", "s")]
    );
    assert_eq!(s.inputs["OUTLINE"], "notes/outline.md");
}

#[test]
fn an_output_of_two_unrelated_streams_is_refused() {
    let st = |id: &str, deps: &str, outs: &str| {
        format!(
            "[[streams]]\nid = \"{id}\"\nprompt = \"prompts/plain.md\"\noutputs = [{outs}]\ndepends_on = [{deps}]\n\n"
        )
    };
    let text = format!(
        "{}{}",
        st("a", "", "\"x.md\", \"a.md\""),
        st("b", "", "\"./x.md\"")
    );
    let e = err(&text);
    assert_eq!(
        (e.line, e.col, e.message.as_str()),
        (10, 12, "`outputs`: \"./x.md\" is also an output of stream `a` (line 4, column 12), and neither stream depends on the other: both would create it and the second merge would conflict")
    );
    assert!(e.help.contains("depends_on = [\"a\"]"), "{}", e.help);
    // A stream that depends on the first (even through another) revises it.
    ok(&format!(
        "{}{}{}",
        st("a", "", "\"x.md\""),
        st("m", "\"a\"", "\"m.md\""),
        st("b", "\"m\"", "\"x.md\"")
    ));
    // Two revisers that do not depend on each other still collide.
    let e = err(&format!(
        "{}{}{}",
        st("a", "", "\"x.md\""),
        st("b", "\"a\"", "\"x.md\""),
        st("c", "\"a\"", "\"x.md\"")
    ));
    assert!(e.message.contains("output of stream `b`"), "{e}");
    // Related to the latest owner but not to an earlier one: refused.
    let e = err(&format!(
        "{}{}{}{}",
        st("a", "", "\"x.md\""),
        st("c", "", "\"c.md\""),
        st("b", "\"a\", \"c\"", "\"x.md\""),
        st("d", "\"c\"", "\"x.md\"")
    ));
    assert!(e.message.contains("output of stream `a`"), "{e}");
    // A file already on the target is edited by both, which git may
    // merge cleanly: allowed.
    let dir = git_repo(
        &[
            ("prompts/plain.md", "Do it for {{STREAM_ID}}.\n"),
            ("x.md", "# x\n"),
        ],
        &[],
    );
    let two = format!("{}{}", st("a", "", "\"x.md\""), st("b", "", "\"x.md\""));
    if let Err(e) = parse_in(&dir, &two) {
        panic!("refused: {e}");
    }
}

#[test]
fn retry_md_may_use_only_its_three_placeholders() {
    let text = "## Attempt {{ATTEMPT}} of {{ MAX_ATTEMPT }}\n\n{{VIOLATIONS}}\n";
    let dir = repo(&[("prompts/plain.md", "x"), ("prompts/retry.md", text)]);
    let e = parse_in(&dir, &one("")).unwrap_err();
    assert_eq!(e.file, dir.path().join("prompts/retry.md"));
    assert_eq!(
        (e.line, e.col, e.message.as_str()),
        (
            1,
            27,
            "placeholder {{MAX_ATTEMPT}} is not filled in prompts/retry.md"
        )
    );
    assert!(
        e.help.starts_with(
            "did you mean {{MAX_ATTEMPTS}}? prompts/retry.md may use only {{ATTEMPT}}, \
             {{MAX_ATTEMPTS}}, {{VIOLATIONS}};"
        ),
        "{}",
        e.help
    );
    fs::write(
        dir.path().join("prompts/retry.md"),
        "{{ATTEMPT}}\n\n  {{STREAM_ID}}",
    )
    .unwrap();
    let e = parse_in(&dir, &one("")).unwrap_err();
    assert_eq!((e.line, e.col), (3, 3));
    fs::write(dir.path().join("prompts/retry.md"), b"ok\n\xff").unwrap();
    let e = parse_in(&dir, &one("")).unwrap_err();
    assert_eq!(
        (e.line, e.col, e.message.as_str()),
        (2, 1, "prompts/retry.md is not UTF-8 text")
    );
    fs::write(
        dir.path().join("prompts/retry.md"),
        crate::prompt::DEFAULT_RETRY,
    )
    .unwrap();
    parse_in(&dir, &one("")).unwrap();
}

#[test]
fn check_scripts_are_told_from_the_command() {
    let s = |c: &str| script_of(c);
    assert_eq!(
        s("scripts/check.sh --strict"),
        Some(("scripts/check.sh".into(), true))
    );
    assert_eq!(s("./check.sh"), Some(("./check.sh".into(), true)));
    assert_eq!(
        s("LANG=C /opt/x/check"),
        Some(("/opt/x/check".into(), true))
    );
    assert_eq!(
        s("sh scripts/check.sh"),
        Some(("scripts/check.sh".into(), false))
    );
    assert_eq!(s("python3 check.py a"), Some(("check.py".into(), false)));
    for c in [
        "make lint",
        "test -s review.md",
        "sh -c 'x'",
        "\"scripts/check.sh\"",
        "$HOME/check.sh",
        "cd sub && ./x.sh",
        "bash",
        "",
    ] {
        assert_eq!(s(c), None, "{c}");
    }
}

const TWO: &str =
    "[[streams]]\nid = \"outline\"\nprompt = \"q.md\"\noutputs = [\"outline.md\"]\n\n\
                   [[streams]]\nid = \"ch01\"\nprompt = \"p.md\"\n\
                   inputs = { OUTLINE = \"outline.md\", STYLE = \"style.md\" }\n";

#[test]
fn inputs_come_from_the_target_tree_or_a_dependency() {
    let p = ("p.md", "{{OUTLINE}} {{STYLE}}");
    let q = ("q.md", "outline");
    // Written by a stream ch01 does not depend on.
    let dir = git_repo(&[p, q, ("style.md", "s")], &[]);
    let e = parse_in(&dir, TWO).unwrap_err();
    assert_eq!(e.file, dir.path().join("loki.toml"));
    assert_eq!(
        (e.line, e.col, e.message.as_str()),
        (
            9,
            22,
            "input {{OUTLINE}} of stream `ch01`: `outline.md` is not in branch `main`, and \
             no stream that `ch01` depends on writes it"
        )
    );
    assert!(
        e.help
            .starts_with("stream `outline` writes it: add \"outline\" to the depends_on"),
        "{}",
        e.help
    );
    // Depending on it (through another stream too) is enough.
    let chain = TWO.replace("inputs =", "depends_on = [\"mid\"]\ninputs =")
        + "\n[[streams]]\nid = \"mid\"\nprompt = \"q.md\"\ndepends_on = [\"outline\"]\n";
    parse_in(&dir, &chain).unwrap();

    // Only in the checkout, not committed.
    let dir = git_repo(&[p, q, ("outline.md", "o")], &[("style.md", "s")]);
    let e = parse_in(&dir, TWO).unwrap_err();
    assert_eq!((e.line, e.col), (9, 44));
    assert!(
        e.help
            .starts_with("it is in your checkout but not committed to `main`"),
        "{}",
        e.help
    );
    // Nowhere at all.
    let dir = git_repo(&[p, q, ("outline.md", "o")], &[]);
    let e = parse_in(&dir, TWO).unwrap_err();
    assert!(
        e.help.starts_with("create it and commit it to `main`"),
        "{}",
        e.help
    );
    // A folder.
    let dir = git_repo(&[p, q, ("outline.md", "o"), ("style.md/x", "s")], &[]);
    let e = parse_in(&dir, TWO).unwrap_err();
    assert_eq!(
        e.message,
        "input {{STYLE}} of stream `ch01`: `style.md` is a folder in branch `main`, not a file"
    );
    // The target named in [swarm] is the tree that counts.
    let dir = git_repo(&[p, q, ("outline.md", "o"), ("style.md", "s")], &[]);
    parse_in(&dir, TWO).unwrap();
    let e = parse_in(&dir, &format!("[swarm]\ntarget = \"nope\"\n{TWO}"));
    assert!(
        e.is_ok(),
        "an unknown target is `loki run`'s to refuse: {e:?}"
    );
}

#[test]
fn check_scripts_must_be_in_the_target_tree_and_executable() {
    let p = ("p.md", "x");
    let text = |cmd: &str| {
        format!("[checks]\ncommand = \"{cmd}\"\n\n[[streams]]\nid = \"a\"\nprompt = \"p.md\"\n")
    };
    let dir = git_repo(&[p], &[("scripts/check.sh", "#!/bin/sh\n")]);
    let e = parse_in(&dir, &text("scripts/check.sh --strict")).unwrap_err();
    assert_eq!(
        (e.line, e.col, e.message.as_str()),
        (
            2,
            11,
            "the check command of stream `a`: `scripts/check.sh` is not in branch `main` (the \
             command runs in the stream's worktree, which starts from `main`)"
        )
    );
    assert!(e.help.contains("not committed to `main`"), "{}", e.help);

    let dir = git_repo(&[p, ("scripts/check.sh", "#!/bin/sh\n")], &[]);
    let e = parse_in(&dir, &text("./scripts/check.sh")).unwrap_err();
    assert_eq!(
        e.message,
        "the check command of stream `a`: `./scripts/check.sh` is not executable in branch `main`"
    );
    assert!(e.help.contains("chmod +x scripts/check.sh"), "{}", e.help);
    assert!(
        e.help.contains("`command = \"sh ./scripts/check.sh\"`"),
        "{}",
        e.help
    );
    parse_in(&dir, &text("sh scripts/check.sh")).unwrap();
    let e = parse_in(&dir, &text("sh scripts/nope.sh")).unwrap_err();
    assert!(
        e.message.contains("`scripts/nope.sh` is not in branch"),
        "{e}"
    );
    // A stream's own [streams.checks] command is pointed at there.
    let own = format!("{}checks = {{ command = \"bin/x\" }}\n", text("true"));
    let e = parse_in(&dir, &own).unwrap_err();
    assert_eq!((e.line, e.col), (7, 22));
    let e = parse_in(&dir, &text("/nonexistent/loki-check")).unwrap_err();
    assert_eq!(
        e.message,
        "the check command of stream `a`: `/nonexistent/loki-check` does not exist"
    );
    parse_in(&dir, &text("/bin/sh -c true")).unwrap();

    let dir = git_repo(&[p], &[("scripts/check.sh", "#!/bin/sh\n")]);
    run_ok(
        "git",
        &["add", "--chmod=+x", "scripts/check.sh"],
        dir.path(),
    );
    commit(&dir, "x");
    parse_in(&dir, &text("scripts/check.sh")).unwrap();
}

#[test]
fn named_check_commands_are_read_and_their_scripts_checked() {
    let dir = git_repo(
        &[
            ("prompts/plain.md", "Just do it for {{STREAM_ID}}.\n"),
            ("scripts/lint.sh", "#!/bin/sh\nexit 0\n"),
        ],
        &[],
    );
    let text = "[checks.commands]\nlint = \"sh scripts/lint.sh\"\n\
                style = { run = \"sh scripts/style.sh\", timeout = \"2m\", blocking = false }\n\n\
                [[streams]]\nid = \"a\"\nprompt = \"prompts/plain.md\"\n";
    let e = parse_in(&dir, text).unwrap_err();
    assert_eq!(
        (e.line, e.col, e.message.as_str()),
        (
            3,
            17,
            "the check command `style` of stream `a`: `scripts/style.sh` is not in branch `main` (the command runs in the stream's worktree, which starts from `main`)"
        )
    );
    let ok = parse_in(&dir, &text.replace("scripts/style.sh", "scripts/lint.sh")).unwrap();
    let cmds = &ok.streams[0].checks.commands;
    assert_eq!(cmds.len(), 2);
    assert_eq!((cmds[1].name.as_str(), cmds[1].blocking), ("style", false));
    assert_eq!(cmds[1].timeout, Some(Duration::from_secs(120)));
    let e = parse_in(&dir, &text.replace("timeout = \"2m\"", "after = 1")).unwrap_err();
    assert_eq!(e.message, "unknown key `after` in `commands.style`");
}
