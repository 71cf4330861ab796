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

/// The instances the concept file's markers make.
const CHARACTERS: [&str; 3] = ["char.sarah-chen", "char.marcus", "char.ellen"];

fn swarm(plan_agent: &std::path::Path) -> String {
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
    s.write(&swarm(&plan));
    s
}

#[test]
fn instances_made_from_a_merged_file_run_in_the_same_run() {
    let s = setup();
    // Before the run: a template is one row with its instances below it;
    // one whose source is not written yet says what it waits for.
    let st = s.loki(&["status"]);
    let table = stdout(&st);
    let row = |t: &str, start: &str| {
        t.lines()
            .find(|l| l.starts_with(start))
            .unwrap_or_else(|| panic!("no row {start:?} in:\n{t}"))
            .to_string()
    };
    assert!(row(&table, "char ").contains("0/3 merged"), "{table}");
    assert!(row(&table, "char ").contains("(template)"), "{table}");
    assert!(
        row(&table, "  char.sarah-chen ").contains("pending"),
        "{table}"
    );
    assert!(
        row(&table, "rel ").contains("waiting")
            && row(&table, "rel ").contains("made when plan merged"),
        "{table}"
    );
    assert!(
        table.contains("; next: char.sarah-chen, char.marcus, char.ellen"),
        "{table}"
    );
    let done = s.run();
    assert_eq!(done.code, Some(0), "{}", done.both());
    let mut all = CHARACTERS.to_vec();
    all.extend([
        "plan",
        "rel.sarah-and-marcus",
        "rel.marcus-and-ellen",
        "cast",
    ]);
    s.assert_all_merged_once(&all);
    assert!(
        done.stdout.contains("7 of 7 streams merged into main"),
        "{}",
        done.both()
    );
    // Progress in steps: each instance that ends says how far its step is.
    assert!(done.stdout.contains("(char 3/3 merged)"), "{}", done.both());
    assert!(done.stdout.contains("(rel 2/2 merged)"), "{}", done.both());
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
    let table = stdout(&s.loki(&["status"]));
    assert!(row(&table, "rel ").contains("2/2 merged"), "{table}");
    // Columns stay aligned with ids longer than the header's 14 characters.
    let status_col = table.find("STATUS").expect("header");
    let long = row(&table, "  rel.sarah-and-marcus ");
    assert_eq!(long.find("merged"), Some(status_col), "{table}");
    assert!(
        row(&table, "  rel.marcus-and-ellen ").contains("merged"),
        "{table}"
    );

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

/// The stand-in writes prose, not the plan's sections: a rehearsal goes
/// on past the fan-out it cannot feed, says so, and touches nothing.
#[test]
fn a_rehearsal_goes_past_a_fan_out_the_stand_in_cannot_feed() {
    let s = setup();
    let refs = s.repo.git(&["show-ref"]);
    let out = s.loki(&["run", "--rehearse", "--plain"]);
    assert!(out.status.success(), "{}", both(&out));
    assert!(
        stdout(&out).contains("rehearsal: the stand-in's output gives template `rh-rel` no item"),
        "{}",
        both(&out)
    );
    assert!(
        stdout(&out).contains("5 of 5 streams merged"),
        "{}",
        both(&out)
    );
    assert_eq!(s.repo.git(&["show-ref"]), refs);
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

/// The book-design workflow loki exists for, in eleven steps: a concept,
/// world and themes; a characters concept; per-character profiles (a
/// fan-out from its markers) in parallel with a relationship plan; one
/// agent per relationship the plan names (made when it merges); an
/// ensemble that reads every profile through a glob; an outline a person
/// approves from another process while the run waits; chapters (a list
/// fan-out); and a compilation that globs every chapter. One `loki run
/// --wait`, from nothing to every stream merged.
#[test]
fn the_eleven_step_book_design_runs_in_one_waiting_run() {
    let s = Swarm::empty();
    s.repo
        .write("input/brief.md", "A pilot who never lands twice.\n");
    s.repo.write("input/characters-concept.md", CONCEPT);
    let simple = |name: &str, input: &str| {
        s.repo.write(
            &format!("prompts/{name}.md"),
            &format!("# {name}\n\n{{{{{input}}}}}\n\nWrite it to {{{{OUTPUTS}}}}.\n"),
        );
    };
    simple("concept", "BRIEF");
    simple("world", "CONCEPT");
    simple("themes", "CONCEPT");
    simple("cast-concept", "WORLD");
    simple("relationships", "CAST");
    simple("ensemble", "PROFILES");
    simple("outline", "ENSEMBLE");
    simple("compile", "CHAPTERS");
    s.repo.write(
        "prompts/profile.md",
        "# Profile of {{NAME}}\n\n{{ITEM}}\n\nWrite the profile to {{OUTPUTS}}.\n",
    );
    s.repo.write(
        "prompts/rel.md",
        "# {{NAME}}\n\n{{ITEM}}\n\nWrite it to {{OUTPUTS}}.\n",
    );
    s.repo.write(
        "prompts/book-chapter.md",
        "# Chapter {{KEY}}\n\n{{OUTLINE}}\n\nWrite the chapter to {{OUTPUTS}}.\n",
    );
    let planner = s.agent_script(
        "planner",
        "",
        "printf '## Sarah and Marcus\\nRivals.\\n\\n## Marcus and Ellen\\nFriends.\\n\\n## Ellen and Sarah\\nSisters.\\n' > plan/relationships.md",
    );
    let step = |id: &str, prompt: &str, inputs: &str, out: &str, deps: &str, extra: &str| {
        format!(
            "[[streams]]\nid = \"{id}\"\nprompt = \"prompts/{prompt}.md\"\ninputs = {{ {inputs} }}\n\
             outputs = [\"{out}\"]\ndepends_on = [{deps}]\n{extra}\n"
        )
    };
    let mut toml = header(4, "");
    toml.push_str(&step(
        "concept",
        "concept",
        "BRIEF = \"input/brief.md\"",
        "book/concept.md",
        "",
        "",
    ));
    toml.push_str(&step(
        "world",
        "world",
        "CONCEPT = \"book/concept.md\"",
        "book/world.md",
        "\"concept\"",
        "",
    ));
    toml.push_str(&step(
        "themes",
        "themes",
        "CONCEPT = \"book/concept.md\"",
        "book/themes.md",
        "\"concept\"",
        "",
    ));
    toml.push_str(&step(
        "cast-concept",
        "cast-concept",
        "WORLD = \"book/world.md\"",
        "book/cast.md",
        "\"world\", \"themes\"",
        "",
    ));
    // Steps 5 and 6 run in parallel.
    toml.push_str(
        "[[streams]]\nid = \"char\"\nprompt = \"prompts/profile.md\"\n\
         for_each = { sections = \"input/characters-concept.md\", marker = \
         '^# (?:MAIN|SECONDARY) CHARACTER:\\s*(?P<name>.+)$' }\n\
         outputs = [\"outputs/character_{{KEY}}.md\"]\ndepends_on = [\"cast-concept\"]\n\n",
    );
    toml.push_str(&step(
        "plan",
        "relationships",
        "CAST = \"book/cast.md\"",
        "plan/relationships.md",
        "\"cast-concept\"",
        &format!("command = \"{}\"", planner.display()),
    ));
    toml.push_str(
        "[[streams]]\nid = \"rel\"\nprompt = \"prompts/rel.md\"\n\
         for_each = { sections = \"plan/relationships.md\", marker = '^## (?P<name>.+)$' }\n\
         outputs = [\"relationships/{{KEY}}.md\"]\ndepends_on = [\"plan\", \"char\"]\n\n",
    );
    toml.push_str(&step(
        "ensemble",
        "ensemble",
        "PROFILES = \"outputs/character_*.md\"",
        "book/ensemble.md",
        "\"char\", \"rel\"",
        "",
    ));
    toml.push_str(&step(
        "outline",
        "outline",
        "ENSEMBLE = \"book/ensemble.md\"",
        "book/outline.md",
        "\"ensemble\"",
        "approve = true",
    ));
    toml.push_str(
        "[[streams]]\nid = \"chapter\"\nprompt = \"prompts/book-chapter.md\"\n\
         for_each = { list = [\"01\", \"02\", \"03\"] }\n\
         inputs = { OUTLINE = \"book/outline.md\" }\n\
         outputs = [\"chapters/ch{{KEY}}.md\"]\ndepends_on = [\"outline\"]\n\n",
    );
    toml.push_str(&step(
        "compile",
        "compile",
        "CHAPTERS = \"chapters/ch*.md\"",
        "book/manuscript.md",
        "\"chapter\"",
        "",
    ));
    s.write(&toml);
    // The swarm file loads: the fan-out from markers is made up front, the
    // one over the plan waits for it.
    let st = s.loki(&["status"]);
    assert!(st.status.success(), "{}", both(&st));
    assert!(stdout(&st).contains("char.ellen"), "{}", both(&st));

    let mut run = s.spawn(&["run", "--plain", "--wait"]);
    s.wait_state("outline", "awaiting approval", |st| {
        st["status"] == "awaiting_approval"
    });
    // Steps 5 and 6 overlapped (four slots for the three profiles and the
    // plan): the plan started before the last profile ended.
    let started = |id: &str| {
        s.state(id)["attempts"][0]["started_at"]
            .as_str()
            .map(str::to_string)
    };
    let ended = |id: &str| {
        s.state(id)["attempts"][0]["ended_at"]
            .as_str()
            .map(str::to_string)
    };
    let plan_start = started("plan").expect("plan started");
    let last_profile_end = CHARACTERS
        .iter()
        .filter_map(|id| ended(id))
        .max()
        .expect("profiles ended");
    assert!(
        plan_start <= last_profile_end,
        "{plan_start} > {last_profile_end}"
    );
    assert!(!run.exited(), "{}", run.output());

    // The approval comes from another process while the run waits.
    let out = s.loki(&["approve", "outline", "--by", "editor"]);
    assert!(out.status.success(), "{}", both(&out));
    let done = run.wait();
    assert_eq!(done.code, Some(0), "{}", done.both());
    let mut all = vec!["concept", "world", "themes", "cast-concept"];
    all.extend(CHARACTERS);
    all.extend([
        "plan",
        "rel.sarah-and-marcus",
        "rel.marcus-and-ellen",
        "rel.ellen-and-sarah",
        "ensemble",
        "outline",
        "chapter.01",
        "chapter.02",
        "chapter.03",
        "compile",
    ]);
    s.assert_all_merged_once(&all);
    assert!(
        done.stdout.contains("17 of 17 streams merged into main"),
        "{}",
        done.both()
    );
    let manuscript = s.prompt("compile", 1);
    for ch in ["01", "02", "03"] {
        assert!(
            manuscript.contains(&format!("=== chapters/ch{ch}.md ===")),
            "{manuscript}"
        );
    }
    assert_eq!(s.state("outline")["approved_by"], "editor");
    assert_clean_repo(&s.repo);
}
