//! Fan-out: templates with `for_each`, their instances, deferred
//! templates, glob inputs, and the refusals of each.

use super::*;

const PROFILE: &str = "Profile {{NAME}} ({{KEY}}) into {{OUTPUTS}}.\n\n{{ITEM}}\n";
const CONCEPT: &str = "# The cast\n\nintro text\n\n\
                       # MAIN CHARACTER: Sarah Chen\nA pilot.\n\n\
                       # SECONDARY CHARACTER: Marcus\nA mechanic.\n---\nnot part of Marcus\n";
const MARKER: &str = r"'^# (?:MAIN|SECONDARY) CHARACTER:\s*(?P<name>.+)$'";

fn ids(f: &SwarmFile) -> Vec<&str> {
    f.streams.iter().map(|s| s.id.as_str()).collect()
}

fn book_repo(extra: &[(&str, &str)]) -> TempDir {
    let mut files = vec![
        ("prompts/profile.md", PROFILE),
        ("prompts/plain.md", "Just do it for {{STREAM_ID}}.\n"),
        ("prompts/list.md", "Write {{KEY}}: {{ITEM}}.\n"),
        ("prompts/cast.md", "All of them:\n{{PROFILES}}\n"),
        ("input/characters-concept.md", CONCEPT),
    ];
    files.extend_from_slice(extra);
    git_repo(&files, &[])
}

fn sections_swarm(extra: &str) -> String {
    format!(
        "[[streams]]\nid = \"char\"\nprompt = \"prompts/profile.md\"\n\
         for_each = {{ sections = \"input/characters-concept.md\", marker = {MARKER} }}\n\
         outputs = [\"outputs/character_{{{{KEY}}}}.md\"]\n\n{extra}"
    )
}

#[test]
fn sections_split_at_the_marker_and_end_at_the_next_one_or_a_rule() {
    let dir = book_repo(&[]);
    let f = parse_in(&dir, &sections_swarm("")).unwrap();
    assert_eq!(ids(&f), vec!["char.sarah-chen", "char.marcus"]);
    let sarah = &f.streams[0];
    assert_eq!(sarah.vars["KEY"], "sarah-chen");
    assert_eq!(sarah.vars["NAME"], "Sarah Chen");
    assert_eq!(sarah.vars["ITEM"], "# MAIN CHARACTER: Sarah Chen\nA pilot.");
    assert_eq!(sarah.outputs, vec!["outputs/character_sarah-chen.md"]);
    assert_eq!(sarah.template.as_deref(), Some("char"));
    assert_eq!(
        f.streams[1].vars["ITEM"],
        "# SECONDARY CHARACTER: Marcus\nA mechanic."
    );
    assert!(!f.templates[0].deferred);
}

#[test]
fn a_list_fans_out_and_a_dependency_on_the_template_waits_for_every_instance() {
    let text = "[[streams]]\nid = \"ch\"\nprompt = \"prompts/list.md\"\n\
                for_each = { list = [\"Opening\", \"The Storm\"] }\n\
                outputs = [\"chapters/{{KEY}}.md\"]\n\n\
                [[streams]]\nid = \"review\"\nprompt = \"prompts/plain.md\"\n\
                depends_on = [\"ch\"]\n\n\
                [[streams]]\nid = \"polish\"\nprompt = \"prompts/list.md\"\n\
                for_each = { list = [\"opening\", \"the storm\"] }\n\
                outputs = [\"final/{{KEY}}.md\"]\ndepends_on = [\"ch.{{KEY}}\", \"review\"]\n";
    let dir = book_repo(&[]);
    let f = parse_in(&dir, text).unwrap();
    assert_eq!(
        ids(&f),
        vec![
            "ch.opening",
            "ch.the-storm",
            "review",
            "polish.opening",
            "polish.the-storm"
        ]
    );
    assert_eq!(f.streams[1].vars["ITEM"], "The Storm");
    assert_eq!(f.streams[2].depends_on, vec!["ch.opening", "ch.the-storm"]);
    assert_eq!(f.streams[4].depends_on, vec!["ch.the-storm", "review"]);
}

#[test]
fn a_glob_fans_out_over_the_targets_files() {
    let dir = book_repo(&[
        ("outputs/character_sarah.md", "Sarah's profile"),
        ("outputs/character_marcus.md", "Marcus's profile"),
        ("outputs/other.md", "no"),
    ]);
    let text = "[[streams]]\nid = \"voice\"\nprompt = \"prompts/list.md\"\n\
                for_each = { glob = \"outputs/character_*.md\" }\n\
                outputs = [\"voice/{{KEY}}.md\"]\nvars = { FROM = \"{{PATH}}\" }\n";
    let f = parse_in(&dir, text).unwrap();
    assert_eq!(
        ids(&f),
        vec!["voice.character-marcus", "voice.character-sarah"]
    );
    assert_eq!(f.streams[0].vars["ITEM"], "Marcus's profile");
    assert_eq!(f.streams[0].vars["FROM"], "outputs/character_marcus.md");
}

#[test]
fn a_source_an_upstream_stream_writes_is_expanded_later() {
    // `rel` fans out over a file `plan` writes; `cast` reads every
    // profile through a glob that the `char` template covers.
    let extra = "[[streams]]\nid = \"plan\"\nprompt = \"prompts/plain.md\"\n\
                 outputs = [\"plan/relationships.md\"]\ndepends_on = [\"char\"]\n\n\
                 [[streams]]\nid = \"rel\"\nprompt = \"prompts/list.md\"\n\
                 for_each = { sections = \"plan/relationships.md\", marker = '^## (.+)$' }\n\
                 outputs = [\"rel/{{KEY}}.md\"]\ndepends_on = [\"plan\"]\n\n\
                 [[streams]]\nid = \"cast\"\nprompt = \"prompts/cast.md\"\n\
                 inputs = { PROFILES = \"outputs/character_*.md\" }\n\
                 outputs = [\"cast.md\"]\ndepends_on = [\"char\", \"rel\"]\n";
    let dir = book_repo(&[]);
    let f = parse_in(&dir, &sections_swarm(extra)).unwrap();
    assert_eq!(
        ids(&f),
        vec!["char.sarah-chen", "char.marcus", "plan", "cast"]
    );
    let rel = f.template("rel").unwrap();
    assert!(rel.deferred);
    assert!(!f.template("char").unwrap().deferred);
    let cast = f.stream("cast").unwrap();
    assert_eq!(
        cast.depends_on,
        vec!["char.sarah-chen", "char.marcus", "rel"]
    );
}

#[test]
fn fan_out_refusals_name_the_place() {
    let dir = book_repo(&[]);
    let refuse = |text: &str| -> ConfigError {
        match parse_in(&dir, text) {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(e) => {
                assert!(!e.help.is_empty(), "no help for {e}");
                e
            }
        }
    };

    // A marker that is not a regular expression.
    let e = refuse(&sections_swarm("").replace(MARKER, "'^# (unclosed'"));
    assert_eq!((e.line, e.col), (4, 65), "{e}");
    assert!(
        e.message
            .starts_with("`for_each.marker` is not a valid regular expression"),
        "{e}"
    );

    // Two items with one key: both are named.
    let e = refuse(
        "[[streams]]\nid = \"ch\"\nprompt = \"prompts/list.md\"\n\
         for_each = { list = [\"The Storm\", \"the storm!\"] }\noutputs = [\"c/{{KEY}}.md\"]\n",
    );
    assert_eq!((e.line, e.col), (4, 12), "{e}");
    assert_eq!(
        e.message,
        "list entry 2 (\"the storm!\") and list entry 1 (\"The Storm\") both give the key \
         `the-storm` (the instance `ch.the-storm`)"
    );

    // A glob input no stream can produce.
    let e = refuse(
        "[[streams]]\nid = \"cast\"\nprompt = \"prompts/cast.md\"\n\
         inputs = { PROFILES = \"outputs/character_*.md\" }\n",
    );
    assert_eq!((e.line, e.col), (4, 23), "{e}");
    assert_eq!(
        e.message,
        "input {{PROFILES}} of stream `cast`: no file in branch `main` matches \
         `outputs/character_*.md`, and no stream that `cast` depends on writes one"
    );

    // {{KEY}} outside a template.
    let e = refuse(
        "[[streams]]\nid = \"a\"\nprompt = \"prompts/plain.md\"\noutputs = [\"x/{{KEY}}.md\"]\n",
    );
    assert_eq!((e.line, e.col), (4, 12), "{e}");
    assert_eq!(
        e.message,
        "{{KEY}} in `outputs` of stream `a`: it is filled only in a stream with `for_each`"
    );

    // No item, and no allow_empty.
    let e = refuse(&sections_swarm("").replace("CHARACTER:", "VILLAIN:"));
    assert_eq!((e.line, e.col), (4, 12), "{e}");
    assert!(
        e.message.starts_with(
            "the fan-out of stream `char` found no item in the sections of \
             `input/characters-concept.md`"
        ),
        "{e}"
    );
    let allowed = sections_swarm("allow_empty = true\n").replace("CHARACTER:", "VILLAIN:");
    assert!(parse_in(&dir, &allowed).unwrap().streams.is_empty());

    // A source that is neither in the target nor written upstream.
    let e = refuse(&sections_swarm("").replace("input/characters-concept.md", "input/gone.md"));
    assert_eq!(e.message, "`input/gone.md` is not in branch `main`");

    // Every instance would write the same file.
    let e = refuse(
        "[[streams]]\nid = \"ch\"\nprompt = \"prompts/list.md\"\n\
         for_each = { list = [\"a\", \"b\"] }\noutputs = [\"c/all.md\"]\n",
    );
    assert_eq!((e.line, e.col), (5, 12), "{e}");
    assert!(e.help.contains("c/all-{{KEY}}.md"), "{}", e.help);

    // allow_empty without for_each; two sources; pairing with a plain stream.
    let e = refuse(&one("allow_empty = true\n"));
    assert_eq!((e.line, e.col), (4, 1), "{e}");
    let e = refuse(&one("for_each = { list = [\"a\"], glob = \"*.md\" }\n"));
    assert_eq!(
        e.message,
        "`for_each` needs exactly one source: `sections`, `glob` or `list`"
    );
    let e = refuse(
        "[[streams]]\nid = \"b\"\nprompt = \"prompts/plain.md\"\n\n\
         [[streams]]\nid = \"ch\"\nprompt = \"prompts/list.md\"\n\
         for_each = { list = [\"a\"] }\ndepends_on = [\"b.{{KEY}}\"]\n",
    );
    assert_eq!((e.line, e.col), (9, 15), "{e}");
    assert_eq!(
        e.message,
        "stream `ch` depends on `b.{{KEY}}`, but `b` is not a stream with `for_each`"
    );
    // A partner that does not exist.
    let e = refuse(
        "[[streams]]\nid = \"a\"\nprompt = \"prompts/list.md\"\n\
         for_each = { list = [\"x\"] }\noutputs = [\"a/{{KEY}}.md\"]\n\n\
         [[streams]]\nid = \"b\"\nprompt = \"prompts/list.md\"\n\
         for_each = { list = [\"y\"] }\noutputs = [\"b/{{KEY}}.md\"]\n\
         depends_on = [\"a.{{KEY}}\"]\n",
    );
    assert_eq!(
        e.message,
        "list entry 1 (\"y\"): it depends on `a.y` (`a.{{KEY}}`), but `a` has no such instance"
    );
}

#[test]
fn a_glob_input_is_satisfied_by_an_upstream_template() {
    let extra = "[[streams]]\nid = \"cast\"\nprompt = \"prompts/cast.md\"\n\
                 inputs = { PROFILES = \"outputs/character_*.md\" }\n\
                 outputs = [\"cast.md\"]\ndepends_on = [\"char\"]\n";
    let dir = book_repo(&[]);
    let f = parse_in(&dir, &sections_swarm(extra)).unwrap();
    assert_eq!(
        f.stream("cast").unwrap().inputs["PROFILES"],
        "outputs/character_*.md"
    );
    // Without the dependency, nothing writes them.
    let e = parse_in(
        &dir,
        &sections_swarm(&extra.replace("depends_on = [\"char\"]\n", "")),
    )
    .unwrap_err();
    assert!(
        e.message.contains("no file in branch `main` matches"),
        "{e}"
    );
}
