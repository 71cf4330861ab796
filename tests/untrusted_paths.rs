//! Nothing outside the repository, at run time: an agent that makes its
//! output a symlink (to `/etc/passwd`, to a file beside it, or writes it
//! through a folder link to a place outside the repository), or whose
//! changes add a link that leads out of its worktree, fails its checks with
//! that reason, and nothing of it reaches the target.

mod common;
use common::*;

use loki::checks::{CheckReport, Level};

/// The agent: what each stream does, by `LOKI_STREAM_ID`, in its worktree.
const AGENT: &str = r#"#!/bin/sh
set -e
text="Mira walks to the harbour and counts the boats."
case "$LOKI_STREAM_ID" in
  passwd) mkdir -p chapters && ln -s /etc/passwd chapters/passwd.md ;;
  through) ln -s "$OUTSIDE" chapters && echo "$text" > chapters/through.md ;;
  beside) echo "$text" > real.md && ln -s real.md beside.md ;;
  escape) echo "$text" > escape.md && ln -s ../../../.. up && ln -s /etc etc ;;
  inside) echo "$text" > inside.md && ln -s inside.md alias.md ;;
esac
"#;

fn report(s: &Swarm, id: &str) -> CheckReport {
    CheckReport::read(
        &s.path()
            .join(format!(".loki/runs/{id}/attempt-1/checks.json")),
    )
    .unwrap_or_else(|e| panic!("{id}: {e:#}"))
}

/// The failed entries of `id`'s first attempt, as (check, target, details).
fn failures(s: &Swarm, id: &str) -> Vec<(String, String, String)> {
    report(s, id)
        .entries
        .into_iter()
        .filter(|e| e.status == Level::Fail)
        .map(|e| (e.check, e.target.unwrap_or_default(), e.details))
        .collect()
}

#[test]
fn symlinked_outputs_and_links_out_of_the_worktree_fail_their_checks() {
    let s = Swarm::empty();
    let outside = s.scratch("outside");
    std::fs::create_dir_all(&outside).expect("mkdir outside");
    let agent = s.scratch("agent.sh");
    std::fs::write(&agent, AGENT).expect("agent");
    make_executable(&agent);

    let mut toml = format!(
        "[swarm]\ntarget = \"main\"\nmax_parallel = 5\nspawn_interval = \"0s\"\n\n\
         [agent]\ncommand = \"{}\"\ntimeout = \"60s\"\nkill_grace = \"1s\"\nmax_attempts = 1\n\
         env = {{ OUTSIDE = \"{}\" }}\n\n",
        agent.display(),
        outside.display()
    );
    for (id, output) in [
        ("passwd", "chapters/passwd.md"),
        ("through", "chapters/through.md"),
        ("beside", "beside.md"),
        ("escape", "escape.md"),
        ("inside", "inside.md"),
    ] {
        toml.push_str(&format!(
            "[[streams]]\nid = \"{id}\"\nprompt = \"prompts/chapter.md\"\n\
             vars = {{ CHAPTER = \"{id}\" }}\noutputs = [\"{output}\"]\n\n"
        ));
    }
    s.write(&toml);
    let done = s.run();

    // The output is a link out of the repository: not written, and a link
    // that leads out.
    let passwd = failures(&s, "passwd");
    let checks: Vec<(&str, &str)> = passwd
        .iter()
        .map(|(c, t, _)| (c.as_str(), t.as_str()))
        .collect();
    assert_eq!(
        checks,
        [
            ("symlinks", "chapters/passwd.md"),
            ("outputs", "chapters/passwd.md")
        ],
        "{passwd:?}\n{}",
        done.both()
    );
    assert!(
        passwd[1]
            .2
            .contains("`chapters/passwd.md` points to `/etc/passwd`"),
        "{passwd:?}"
    );

    // Written through a folder link: the file is outside the repository.
    assert!(outside.join("through.md").is_file());
    let through = failures(&s, "through");
    let want_out = format!("`chapters` points to `{}`", outside.display());
    assert!(
        through
            .iter()
            .any(|(c, t, d)| c == "outputs" && t == "chapters/through.md" && d.contains(&want_out)),
        "{through:?}"
    );
    let want_link = format!(
        "`chapters` is a symlink to `{}`, outside the repository",
        outside.display()
    );
    assert!(
        through
            .iter()
            .any(|(c, t, d)| c == "symlinks" && t == "chapters" && d == &want_link),
        "{through:?}"
    );

    // A link to a file beside it is not a written output either.
    let beside = failures(&s, "beside");
    assert!(
        beside.len() == 1 && beside[0].2.contains("`beside.md` points to `real.md`"),
        "{beside:?}"
    );

    // The outputs are fine; the links the attempt added lead out.
    let escape = failures(&s, "escape");
    let mut links: Vec<(&str, &str)> = escape
        .iter()
        .map(|(c, t, _)| (c.as_str(), t.as_str()))
        .collect();
    links.sort();
    assert_eq!(
        links,
        [("symlinks", "etc"), ("symlinks", "up")],
        "{escape:?}"
    );
    let violations = report(&s, "escape").violations().join("\n");
    assert!(
        violations.contains("`up` is a symlink to `../../../..`, outside the repository"),
        "{violations}"
    );

    // A link inside the worktree that is not an output is left alone.
    assert!(failures(&s, "inside").is_empty(), "{}", done.both());
    assert_eq!(stream_status(&s.repo, "inside"), "merged");

    for id in ["passwd", "through", "beside", "escape"] {
        assert_eq!(
            stream_status(&s.repo, id),
            "failed",
            "{id}\n{}",
            done.both()
        );
    }
    let tree = s.repo.git(&["ls-tree", "-r", "--name-only", "main"]);
    for path in [
        "chapters/passwd.md",
        "chapters",
        "chapters/through.md",
        "beside.md",
        "up",
        "etc",
    ] {
        assert!(
            !tree
                .lines()
                .any(|l| l == path || l.starts_with(&format!("{path}/"))),
            "{path} reached main:\n{tree}"
        );
    }
}

/// An agent that makes one output a link to `/dev/zero` and another a FIFO
/// used to hang `loki status` and `loki show` (they read outputs to count
/// words) and the checks themselves (reading the FIFO blocks; `/dev/zero`
/// fills the memory). They read outputs as the checks do now: the two
/// commands answer while the agent runs, and the attempt fails its checks.
#[test]
fn outputs_that_are_a_fifo_or_a_link_to_dev_zero_hang_nothing() {
    let s = Swarm::empty();
    let ready = s.scratch("ready");
    let go = s.scratch("go");
    let agent = s.scratch("agent.sh");
    std::fs::write(
        &agent,
        format!(
            "#!/bin/sh\nset -e\nmkdir -p chapters\nln -s /dev/zero chapters/zero.md\n\
             mkfifo chapters/fifo.md\ntouch '{}'\nwhile [ ! -e '{}' ]; do sleep 0.05; done\n",
            ready.display(),
            go.display()
        ),
    )
    .expect("agent");
    make_executable(&agent);
    s.write(&format!(
        "[swarm]\ntarget = \"main\"\nspawn_interval = \"0s\"\n\n\
         [agent]\ncommand = \"{}\"\ntimeout = \"60s\"\nkill_grace = \"1s\"\nmax_attempts = 1\n\n\
         [[streams]]\nid = \"a\"\nprompt = \"prompts/chapter.md\"\nvars = {{ CHAPTER = \"1\" }}\n\
         outputs = [\"chapters/zero.md\", \"chapters/fifo.md\"]\n",
        agent.display()
    ));
    let run = s.start();
    s.wait_for("the agent made its outputs", || ready.exists());
    for args in [&["status"][..], &["show", "a"][..]] {
        let done = s.spawn(args).wait_within(WAIT_LIMIT);
        assert_eq!(done.code, Some(0), "loki {args:?}: {}", done.both());
    }
    std::fs::write(&go, "").expect("go");
    let done = run.wait();
    let fails = failures(&s, "a");
    let outputs: Vec<(&str, &str)> = fails
        .iter()
        .filter(|(c, _, _)| c == "outputs")
        .map(|(_, t, d)| (t.as_str(), d.as_str()))
        .collect();
    assert_eq!(outputs.len(), 2, "{fails:?}\n{}", done.both());
    assert!(
        outputs[0]
            .1
            .contains("`chapters/zero.md` points to `/dev/zero`"),
        "{outputs:?}"
    );
    assert_eq!(
        outputs[1].1,
        "unreadable: chapters/fifo.md is a FIFO (named pipe), not a regular file"
    );
    assert_eq!(stream_status(&s.repo, "a"), "failed", "{}", done.both());
}

/// An agent that rewrites the script its check command runs (to `exit 0`)
/// does not pass by it: the attempt fails the `script` check, and nothing
/// reaches the target.
#[test]
fn an_agent_that_edits_its_check_script_fails() {
    edited_check_script_fails("printf '#!/bin/sh\\nexit 0\\n' > scripts/check.sh");
}

/// The same edit hidden from `git status`: the agent marks the script
/// assume-unchanged in its worktree's index, so a status of the worktree
/// (which reads that index) sees nothing. What the attempt touched is read
/// from loki's own staging of the folder instead, so the `script` check
/// still fails and nothing reaches the target.
#[test]
fn an_edit_of_the_check_script_hidden_in_the_index_still_fails() {
    edited_check_script_fails(
        "git update-index --assume-unchanged scripts/check.sh\n\
         printf '#!/bin/sh\\nexit 0\\n' > scripts/check.sh\n\
         test -z \"$(git status --porcelain scripts)\" || exit 9",
    );
}

/// A stream whose check command runs `scripts/check.sh` (which fails),
/// run by an agent that first does `edit`: the attempt must fail the
/// `script` check and never merge.
fn edited_check_script_fails(edit: &str) {
    let s = Swarm::empty();
    let agent = s.agent_script("agent.sh", edit, "");
    s.repo.write(
        "scripts/check.sh",
        "#!/bin/sh\necho 'the draft is not good yet' >&2\nexit 1\n",
    );
    make_executable(&s.path().join("scripts/check.sh"));
    let toml = header_with(&agent, 1, 1);
    s.write(&format!(
        "{toml}{}",
        stream(
            "s1",
            &[],
            "chapters/s1.md",
            "checks = { command = \"sh scripts/check.sh\" }"
        )
    ));

    let done = s.run();
    assert_eq!(done.code, Some(1), "{}", done.both());
    let failed = failures(&s, "s1");
    assert!(
        failed
            .iter()
            .any(|(c, t, d)| c == "script" && t == "scripts/check.sh" && d.contains("changed")),
        "{failed:?}"
    );
    assert_eq!(stream_status(&s.repo, "s1"), "failed");
    assert!(!first_parent_subjects(&s.repo, "main").contains(&"Merge stream s1".to_string()));
}

/// An output a .gitignore leaves out (the agent's, or your global
/// excludes) is committed all the same: it passed its checks, so it reaches
/// the target instead of a merge that silently lacks it.
#[test]
fn an_output_a_gitignore_leaves_out_still_reaches_the_target() {
    let s = Swarm::empty();
    let agent = s.agent_script("agent.sh", "", "echo 'chapters/' >> .gitignore");
    s.write(&format!(
        "{}{}",
        header_with(&agent, 1, 1),
        stream("s1", &[], "chapters/s1.md", "")
    ));
    let done = s.run();
    assert_eq!(done.code, Some(0), "{}", done.both());
    let on_main = s.repo.git(&["show", "main:chapters/s1.md"]);
    assert!(on_main.starts_with("*Stream s1"), "{on_main}");
    s.assert_all_merged_once(&["s1"]);
}
