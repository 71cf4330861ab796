//! A graph that grows while it runs: a per-character fan-out from the
//! markers of a concept file, a per-relationship fan-out over a file an
//! earlier stream writes (made when that stream merges, in the same run),
//! and a stream whose input globs every profile. Then a later run after
//! the relationships changed on the target: merged instances stay merged,
//! a new item runs, a vanished one is reported as dropped.

mod common;
use common::*;

const CONCEPT: &str = "# Cast\n\n\
    # MAIN CHARACTER: Sarah Chen\nA pilot who never lands twice in one place.\n\n\
    # SECONDARY CHARACTER: Marcus\nA mechanic.\n\n\
    # SECONDARY CHARACTER: Ellen\nThe tower's voice.\n---\nNotes that belong to nobody.\n";

fn swarm(s: &Swarm, plan_agent: &std::path::Path) -> String {
    let mut toml = header(3, "");
    toml.push_str(
        "[[streams]]\nid = \"char\"\nprompt = \"prompts/profile.md\"\n\
         for_each = { sections = \"input/characters-concept.md\", marker = \
         '^# (?:MAIN|SECONDARY) CHARACTER:\\s*(?P<name>.+)$' }\n\
         outputs = [\"outputs/character_{{KEY}}.md\"]\n\n",
    );
    toml.push_str(&format!(
        "[[streams]]\nid = \"plan\"\nprompt = \"prompts/plan.md\"\ncommand = \"{}\"\n\
         inputs = {{ PROFILES = \"outputs/character_*.md\" }}\n\
         outputs = [\"plan/relationships.md\"]\ndepends_on = [\"char\"]\n\n",
        plan_agent.display()
    ));
    toml.push_str(
        "[[streams]]\nid = \"rel\"\nprompt = \"prompts/rel.md\"\n\
         for_each = { sections = \"plan/relationships.md\", marker = '^## (?P<name>.+)$' }\n\
         outputs = [\"relationships/{{KEY}}.md\"]\ndepends_on = [\"plan\"]\n\n\
         [[streams]]\nid = \"cast\"\nprompt = \"prompts/cast.md\"\n\
         inputs = { PROFILES = \"outputs/character_*.md\" }\n\
         outputs = [\"cast.md\"]\ndepends_on = [\"char\", \"rel\"]\n",
    );
    let _ = s;
    toml
}

fn setup() -> Swarm {
    let s = Swarm::empty();
    s.repo.write("input/characters-concept.md", CONCEPT);
    s.repo.write(
        "prompts/profile.md",
        "# Profile of {{NAME}}\n\nFrom the concept:\n\n{{ITEM}}\n\nWrite the profile to {{OUTPUTS}}.\n",
    );
    s.repo.write(
        "prompts/plan.md",
        "# Relationships\n\n{{PROFILES}}\n\nWrite the plan to {{OUTPUTS}}.\n",
    );
    s.repo.write(
        "prompts/rel.md",
        "# Relationship {{NAME}}\n\n{{ITEM}}\n\nWrite it to {{OUTPUTS}}.\n",
    );
    s.repo.write(
        "prompts/cast.md",
        "# The cast\n\n{{PROFILES}}\n\nWrite the cast list to {{OUTPUTS}}.\n",
    );
    // The plan's agent writes two relationships after the fake agent's work.
    let plan = s.agent_script(
        "plan-agent",
        "",
        "printf '# Relationships\\n\\n## Sarah and Marcus\\nRivals.\\n\\n## Marcus and Ellen\\nOld friends.\\n' > plan/relationships.md",
    );
    s.write(&swarm(&s, &plan));
    s
}

#[test]
fn instances_made_from_a_merged_file_run_in_the_same_run() {
    let s = setup();
    let done = s.run();
    assert_eq!(done.code, Some(0), "{}", done.both());
    let all = [
        "char.sarah-chen",
        "char.marcus",
        "char.ellen",
        "plan",
        "rel.sarah-and-marcus",
        "rel.marcus-and-ellen",
        "cast",
    ];
    s.assert_all_merged_once(&all);
    assert!(
        done.stdout.contains("7 of 7 streams merged into main"),
        "{}",
        done.both()
    );
    assert!(
        done.text().contains(
            "template `rel` made 2 instance(s) from the sections of `plan/relationships.md` \
             (marker `^## (?P<name>.+)$`): rel.sarah-and-marcus, rel.marcus-and-ellen"
        ),
        "{}",
        done.both()
    );

    // Each instance got its own section, marker line included.
    let p = s.prompt("char.sarah-chen", 1);
    assert!(p.contains("# Profile of Sarah Chen"), "{p}");
    assert!(
        p.contains("# MAIN CHARACTER: Sarah Chen\nA pilot who never lands twice in one place."),
        "{p}"
    );
    assert!(!p.contains("Marcus"), "{p}");
    let e = s.prompt("char.ellen", 1);
    assert!(!e.contains("Notes that belong to nobody"), "{e}");
    let r = s.prompt("rel.marcus-and-ellen", 1);
    assert!(r.contains("## Marcus and Ellen\nOld friends."), "{r}");

    // The glob input: every profile, in path order, each under its name.
    let c = s.prompt("cast", 1);
    let at = |f: &str| {
        c.find(&format!("=== outputs/character_{f}.md ==="))
            .unwrap_or_else(|| panic!("{f} missing from:\n{c}"))
    };
    assert!(at("ellen") < at("marcus") && at("marcus") < at("sarah-chen"));
    assert!(c.contains("*Stream char.marcus, attempt 1.*"), "{c}");

    // The order git recorded (oldest first): rel's instances after plan,
    // cast last.
    let mut merges = s.merges();
    merges.reverse();
    let pos = |id: &str| {
        merges
            .iter()
            .position(|m| *m == format!("Merge stream {id}"))
            .expect(id)
    };
    assert!(pos("plan") < pos("rel.sarah-and-marcus"));
    assert!(pos("rel.marcus-and-ellen") < pos("cast"));
    assert!(pos("char.ellen") < pos("plan"));
    assert_clean_repo(&s.repo);

    // A later run after the relationships changed on the target.
    s.repo.write(
        "plan/relationships.md",
        "## Sarah and Marcus\nRivals.\n\n## Sarah and Ellen\nSisters.\n",
    );
    s.repo.commit_all("rethink the relationships");
    let again = s.run();
    assert_eq!(again.code, Some(0), "{}", again.both());
    assert!(
        again.text().contains(
            "rel.marcus-and-ellen is dropped: its item is no longer in the sections of \
             `plan/relationships.md` (marker `^## (?P<name>.+)$`) of template `rel`"
        ),
        "{}",
        again.both()
    );
    let merges = s.merges();
    assert_eq!(
        merges
            .iter()
            .filter(|m| *m == "Merge stream rel.sarah-and-ellen")
            .count(),
        1,
        "{merges:?}"
    );
    // Merged instances were not run again.
    assert_eq!(
        merges
            .iter()
            .filter(|m| *m == "Merge stream rel.sarah-and-marcus")
            .count(),
        1,
        "{merges:?}"
    );
    assert_eq!(s.state("rel.marcus-and-ellen")["status"], "merged");
    assert!(s.state_file("rel.marcus-and-ellen").exists());
}

#[test]
fn a_fan_out_that_finds_nothing_blocks_its_dependents() {
    let s = Swarm::empty();
    s.repo.write(
        "prompts/rel.md",
        "# Relationship {{KEY}}\n\nWrite it to {{OUTPUTS}}.\n",
    );
    let mut toml = header(2, "");
    toml.push_str(&stream("plan", &[], "plan/relationships.md", ""));
    toml.push_str(
        "[[streams]]\nid = \"rel\"\nprompt = \"prompts/rel.md\"\n\
         for_each = { sections = \"plan/relationships.md\", marker = '^## (?P<name>.+)$' }\n\
         outputs = [\"relationships/{{KEY}}.md\"]\ndepends_on = [\"plan\"]\n\n",
    );
    toml.push_str(&stream("cast", &["rel"], "cast.md", ""));
    s.write(&toml);
    let done = s.run();
    assert_ne!(done.code, Some(0), "{}", done.both());
    let text = done.text();
    assert!(
        text.contains("the fan-out of template `rel` was not made: ")
            && text.contains(
                "the fan-out of stream `rel` found no item in the sections of \
                 `plan/relationships.md`"
            ),
        "{}",
        done.both()
    );
    assert!(text.contains("loki.toml:"), "{text}");
    assert_eq!(s.state("plan")["status"], "merged");
    assert_eq!(s.state("cast")["status"], "blocked");
}
