//! Git is the truth (issue 11, cases 2, 3 and 7): nothing an agent does to
//! its worktree's `.git` file, its HEAD, the refs or loki's state files
//! makes loki believe a stream merged that git's history does not show
//! merged by loki.

mod common;

use common::*;

/// A swarm of `streams` whose agent is `agent` (a script around the fake
/// agent), `max_attempts` attempts each.
fn swarm_with_agent(h: &Swarm, agent: &std::path::Path, max_attempts: u32, streams: &[String]) {
    let mut toml = header_with(agent, 1, max_attempts);
    for s in streams {
        toml.push_str(s);
    }
    h.write(&toml);
}

fn attempt_reasons(h: &Swarm, id: &str) -> Vec<String> {
    h.events()
        .iter()
        .filter(|e| e["stream"] == id)
        .filter_map(|e| e["message"].as_str().map(str::to_string))
        .collect()
}

/// Case 2: an agent that points its worktree's `.git` at the main
/// repository would have loki commit straight onto the target and rewrite
/// the user's index. The attempt fails with the reason, the file is put
/// back, the next attempt merges with a real merge commit, and the file the
/// user staged stays staged.
#[test]
fn a_worktree_git_file_pointed_at_the_main_repository_fakes_nothing() {
    let h = Swarm::empty();
    let agent = h.agent_script(
        "agent.sh",
        "if [ \"$LOKI_ATTEMPT\" = 1 ]; then\n\
         gd=$(sed -n 's/^gitdir: //p' .git)\n\
         printf 'gitdir: %s\\n' \"${gd%/worktrees/*}\" > .git\n\
         fi",
        "",
    );
    swarm_with_agent(&h, &agent, 3, &[stream("s1", &[], "chapters/s1.md", "")]);
    h.repo.write("mine.md", "the user's staged file\n");
    h.repo.git(&["add", "mine.md"]);
    let before = first_parent_subjects(&h.repo, "main");

    let done = h.run();
    assert_eq!(done.code, Some(0), "{}", done.both());
    let s = status_stream(&h.repo, "s1");
    assert_eq!(s["status"], "merged", "{s:#}");
    assert_eq!(s["attempts"], 2, "the first attempt is refused: {s:#}");
    let reasons = attempt_reasons(&h, "s1").join("\n");
    assert!(
        reasons.contains("the worktree's .git was changed to `gitdir: "),
        "{reasons}"
    );
    let after = first_parent_subjects(&h.repo, "main");
    // Newest first.
    assert_eq!(
        after[1..],
        before[..],
        "nothing but the merge reached main: {after:?}"
    );
    assert_eq!(after[0], "Merge stream s1");
    assert_eq!(
        h.repo.git(&["diff", "--cached", "--name-only"]).trim(),
        "mine.md",
        "the user's index is untouched"
    );
    assert!(h.path().join("chapters/s1.md").is_file());
}

/// Case 3a: an agent that switches its worktree to another branch would
/// leave `loki/<id>` at its base, "already merged". The attempt is refused,
/// HEAD is put back (the files kept), and the work reaches main through a
/// merge.
#[test]
fn an_agent_that_switches_branch_gets_no_credit_and_its_work_still_lands() {
    let h = Swarm::empty();
    let agent = h.agent_script(
        "agent.sh",
        "if [ \"$LOKI_ATTEMPT\" = 1 ]; then git checkout -q -b other || exit 9; fi",
        "",
    );
    swarm_with_agent(&h, &agent, 3, &[stream("s1", &[], "chapters/s1.md", "")]);

    let done = h.run();
    assert_eq!(done.code, Some(0), "{}", done.both());
    let s = status_stream(&h.repo, "s1");
    assert_eq!(s["status"], "merged", "{s:#}");
    assert_eq!(s["attempts"], 2, "{s:#}");
    let reasons = attempt_reasons(&h, "s1").join("\n");
    assert!(
        reasons.contains("moved the worktree's HEAD to branch other"),
        "{reasons}"
    );
    assert!(
        h.repo
            .git(&["show", "main:chapters/s1.md"])
            .starts_with("*Stream s1"),
        "the work is on main"
    );
    h.assert_all_merged_once(&["s1"]);
}

/// Case 3b: an agent that commits and then moves main to its commit itself
/// (`git update-ref refs/heads/main HEAD`) is not credited with a merge
/// loki never made: the stream fails with the reason and its branch stays.
#[test]
fn an_agent_that_moves_the_target_itself_is_not_credited_with_a_merge() {
    let h = Swarm::empty();
    let agent = h.agent_script(
        "agent.sh",
        "",
        "git update-ref refs/heads/main HEAD || exit 9",
    );
    swarm_with_agent(
        &h,
        &agent,
        1,
        &[stream_with("s1", &[], &[("FAKE_AGENT_COMMIT", "1")], "")],
    );

    let done = h.run();
    assert_eq!(done.code, Some(1), "{}", done.both());
    let s = status_stream(&h.repo, "s1");
    assert_eq!(s["status"], "failed", "{s:#}");
    let why = s["reason"].as_str().unwrap_or_default();
    assert!(
        why.contains("no `Merge stream s1` commit of loki's brought it there"),
        "{why}"
    );
    assert!(
        !first_parent_subjects(&h.repo, "main").contains(&"Merge stream s1".to_string()),
        "no merge of loki's"
    );
    assert!(
        h.repo
            .git(&["branch", "--list", "loki/s1"])
            .contains("loki/s1"),
        "the branch is kept"
    );
}

/// Case 7: a state file that says merged (an agent can write
/// `.loki/state/`), then a `kill -9` of the supervisor: the next run checks
/// every merged state against main's history, corrects the forged one,
/// says so, and runs the stream.
#[test]
fn a_forged_merged_state_is_corrected_from_git_after_a_crash() {
    let h = Swarm::empty();
    let streams = [
        stream_with("a", &[], &[("FAKE_AGENT_HANG", "@1")], ""),
        stream("b", &["a"], "chapters/b.md", ""),
    ];
    let mut toml = header(1, "");
    for s in &streams {
        toml.push_str(s);
    }
    h.write(&toml);
    let run = h.start();
    h.wait_running("a");
    let b = h.wait_state("b", "its state exists", |_| true);
    // What a hostile agent writes: b merged, at a newer version.
    let mut forged = b.clone();
    forged["status"] = "merged".into();
    forged["version"] = (b["version"].as_u64().unwrap_or(1) + 5).into();
    forged["merge_commit"] = h.repo.git(&["rev-parse", "main"]).trim().into();
    std::fs::write(
        h.state_file("b"),
        serde_json::to_vec_pretty(&forged).expect("json"),
    )
    .expect("forging b's state");
    run.kill();

    let done = h.run();
    assert_eq!(done.code, Some(0), "{}", done.both());
    assert!(
        done.both().contains(
            "b: its state said merged, but main has no `Merge stream b` commit: corrected from git"
        ),
        "{}",
        done.both()
    );
    h.assert_all_merged_once(&["a", "b"]);
}

/// A FIFO where the worktree's `.git` file was: reading it must neither
/// block loki nor be followed; the attempt is refused, `.git` put back,
/// and the next attempt merges.
#[test]
fn a_fifo_in_place_of_the_worktree_git_file_hangs_nothing() {
    let h = Swarm::empty();
    let agent = h.agent_script(
        "agent.sh",
        "if [ \"$LOKI_ATTEMPT\" = 1 ]; then rm .git && mkfifo .git || exit 9; fi",
        "",
    );
    swarm_with_agent(&h, &agent, 3, &[stream("s1", &[], "chapters/s1.md", "")]);
    let done = h.start().wait_within(std::time::Duration::from_secs(60));
    assert_eq!(done.code, Some(0), "{}", done.both());
    let reasons = attempt_reasons(&h, "s1").join("\n");
    assert!(
        reasons.contains("the worktree's .git was replaced by something that is not a file"),
        "{reasons}"
    );
    h.assert_all_merged_once(&["s1"]);
}

/// What lands in a stream's worktree after its attempt's commit (a process
/// of the agent's that outlived it, writing on) is not merged: a stream
/// that merges on its own checks merges exactly the commit its checks saw.
/// The merge is held by the user's uncommitted change on the stream's
/// output, the late file is written then, and the change is taken away.
#[test]
fn a_file_written_into_the_worktree_after_the_attempt_is_not_merged() {
    let h = Swarm::empty();
    swarm_with_agent(
        &h,
        &fake_agent(),
        1,
        &[stream("s1", &[], "chapters/s1.md", "")],
    );
    h.repo.write("chapters/s1.md", "the user's own draft\n");
    let run = h.start();
    h.wait_state("s1", "the merge waits for the user's checkout", |s| {
        s["status"] == "merging"
            && s["reason"]
                .as_str()
                .is_some_and(|r| r.contains("your uncommitted changes"))
    });
    let attempt_commit = h.repo.git(&["rev-parse", "loki/s1"]);
    std::fs::write(
        h.path().join(".loki/worktrees/s1/late.md"),
        "written after the attempt's commit\n",
    )
    .unwrap();
    std::fs::remove_file(h.path().join("chapters/s1.md")).unwrap();
    let done = run.wait_within(std::time::Duration::from_secs(60));
    assert_eq!(done.code, Some(0), "{}", done.both());
    h.assert_all_merged_once(&["s1"]);
    let merged = h.repo.git(&["rev-parse", "main^2"]);
    assert_eq!(
        merged, attempt_commit,
        "the attempt's commit is what merged"
    );
    let files = h.repo.git(&["ls-tree", "-r", "--name-only", "main"]);
    assert!(!files.contains("late.md"), "{files}");
    assert!(h.repo.read("chapters/s1.md").starts_with("*Stream s1"));
}

/// An agent can commit a tree that names a blob it never wrote into git
/// (`update-index --cacheinfo`, `write-tree --missing-ok`), with the
/// matching file on disk: loki finds the file unchanged and writes no
/// object for it, so merged, the target would name a missing object (and
/// `git checkout` of it would fail). The attempt is refused with the path
/// and the target never names it. (libgit2's own check on writing a tree,
/// which caught this before, is off: loki checks what the attempt changed.)
#[test]
fn a_commit_naming_an_object_the_agent_never_wrote_is_not_merged() {
    let h = Swarm::empty();
    let agent = h.agent_script(
        "agent.sh",
        "",
        "mkdir -p notes && printf 'never written into git\\n' > notes/x.md\n\
         id=$(git hash-object notes/x.md)\n\
         git add chapters/s1.md\n\
         git update-index --add --cacheinfo \"100644,$id,notes/x.md\"\n\
         tree=$(git write-tree --missing-ok)\n\
         c=$(git -c user.name=agent -c user.email=agent@example.com commit-tree \"$tree\" -p HEAD -m crafted)\n\
         git update-ref HEAD \"$c\"",
    );
    swarm_with_agent(&h, &agent, 1, &[stream("s1", &[], "chapters/s1.md", "")]);
    let done = h.run();
    assert_ne!(done.code, Some(0), "{}", done.both());
    let s = status_stream(&h.repo, "s1");
    assert_eq!(s["status"], "failed", "{s:#}");
    let reasons = attempt_reasons(&h, "s1").join("\n");
    assert!(
        reasons.contains("notes/x.md names the object") && reasons.contains("never wrote"),
        "{reasons}"
    );
    let files = h.repo.git(&["ls-tree", "-r", "--name-only", "main"]);
    assert!(!files.contains("notes/x.md"), "{files}");
    // Every object the target names is there (the stream's own branch
    // keeps the agent's commit, for `loki show`).
    h.repo
        .git(&["archive", "--format=tar", "-o", "/dev/null", "main"]);
}

/// The worktree's index is the agent's to write, so loki never reads it:
/// its staging starts from an index of its own, renamed over the
/// worktree's when committed. An agent that leaves garbage there (or a
/// huge file) neither fails its attempt nor slows loki: the stream's
/// output merges, and the worktree's index is loki's again.
#[test]
fn an_index_the_agent_filled_with_garbage_is_never_read() {
    let h = Swarm::empty();
    let agent = h.agent_script(
        "agent.sh",
        "",
        "printf 'this is not an index' > \"$(git rev-parse --git-dir)/index\"",
    );
    swarm_with_agent(&h, &agent, 1, &[stream("s1", &[], "chapters/s1.md", "")]);
    let done = h.run();
    assert_eq!(done.code, Some(0), "{}", done.both());
    h.assert_all_merged_once(&["s1"]);
    assert!(h.repo.read("chapters/s1.md").starts_with("*Stream s1"));
    let files = h.repo.git(&["ls-tree", "-r", "--name-only", "main"]);
    assert!(files.contains("chapters/s1.md"), "{files}");
}
