//! `loki log` (the audit trail read back from git alone) and `loki clean`,
//! on real finished runs of the built binary with a small shell agent that
//! speaks Claude Code's stream-json (session id and cost).

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::time::Duration;

use loki::model::Status;
use loki::store::{StateStore, SupervisorLock};

/// The agent: its file name is `claude`, so loki reads its stream-json.
/// Stream `b` writes the forbidden word `dragon` on its first attempt;
/// streams `x` and `y` also write the same unlisted file with different
/// content, each once both worktrees exist (so both branch off before
/// either merges, however slow the machine):
/// loki refuses a swarm file that gives one output to two unrelated
/// streams, but agents can still collide on a file no one listed.
const AGENT: &str = r#"#!/bin/sh
if [ "$1" = "--version" ]; then echo "0.0.1 (test agent)"; exit 0; fi
id="$LOKI_STREAM_ID"
n="$LOKI_ATTEMPT"
text="The lantern kept burning through the night while the river ran on."
if [ "$id" = "b" ] && [ "$n" = "1" ]; then text="$text A dragon slept under the bridge."; fi
file="out/$id.md"
case "$id" in
  x|y) i=0
       while { [ ! -d ../x ] || [ ! -d ../y ]; } && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done
       printf 'This is the version of stream %s.\n' "$id" > shared.md ;;
esac
mkdir -p "$(dirname "$file")"
printf '# %s\n\n%s\n' "$id" "$text" > "$file"
case "$id-$n" in
  a-1) cost=0.12 ;;
  b-1) cost=0.25 ;;
  b-2) cost=0.30 ;;
  *) cost=0.05 ;;
esac
printf '{"type":"system","subtype":"init","session_id":"sess-%s-%s"}\n' "$id" "$n"
printf '{"type":"result","subtype":"success","is_error":false,"num_turns":1,"result":"done","session_id":"sess-%s-%s","total_cost_usd":%s}\n' "$id" "$n" "$cost"
"#;

const PROMPT: &str = "Write {{OUTPUTS}} for stream {{STREAM_ID}}.\n\n{{FEEDBACK}}\n";

const HEADER: &str = r#"[swarm]
target = "main"
max_parallel = 3
spawn_interval = "0s"

[agent]
command = "bin/claude"
timeout = "60s"
idle_timeout = "30s"
kill_grace = "1s"
max_attempts = 3

"#;

/// A git repo on `main` with the agent, the prompt and `swarm` as loki.toml, committed.
fn audit_repo(swarm: &str) -> Repo {
    let r = Repo::with_prefix("loki-audit-");
    r.write("bin/claude", AGENT);
    make_executable(&r.path().join("bin/claude"));
    r.write("prompts/p.md", PROMPT);
    r.write("loki.toml", &format!("{HEADER}{swarm}"));
    r.write(".loki/.gitignore", loki::commands::init::LOKI_GITIGNORE);
    r.commit_all("swarm");
    r
}

fn store(repo: &Repo) -> StateStore {
    StateStore::new(repo.path().join(".loki/state"))
}

fn status(repo: &Repo, id: &str) -> Option<Status> {
    store(repo).load(id).ok().flatten().map(|s| s.status)
}

/// `loki <args>` in `dir` to its end (a slow machine gets three minutes).
fn loki(dir: &Path, args: &[&str]) -> Done {
    Running::spawn(dir, args).wait_within(Duration::from_secs(180))
}

fn swarm_stream(id: &str, output: &str, extra: &str) -> String {
    format!("[[streams]]\nid = \"{id}\"\nprompt = \"prompts/p.md\"\noutputs = [\"{output}\"]\n{extra}\n")
}

/// `a` waits for approval (given as alice between two runs); `b` depends on
/// `a` and fails its first attempt's `forbid` check.
fn audited_run() -> Repo {
    let mut swarm = swarm_stream("a", "out/a.md", "approve = true");
    swarm.push_str(&swarm_stream(
        "b",
        "out/b.md",
        "depends_on = [\"a\"]\n[streams.checks]\nforbid = [\"dragon\"]",
    ));
    let repo = audit_repo(&swarm);
    // The run stops when all that is left waits for a human.
    let first = loki(repo.path(), &["run", "--plain"]);
    assert_eq!(first.code, Some(1), "loki run: {}", first.both());
    assert_eq!(
        status(&repo, "a"),
        Some(Status::AwaitingApproval),
        "{}",
        first.both()
    );
    let approve = loki(repo.path(), &["approve", "a", "--by", "alice"]);
    assert_eq!(approve.code, Some(0), "loki approve: {}", approve.both());
    let second = loki(repo.path(), &["run", "--plain"]);
    assert_eq!(second.code, Some(0), "loki run: {}", second.both());
    assert_eq!(status(&repo, "b"), Some(Status::Merged));
    repo
}

#[test]
fn log_reads_the_audit_trail_from_a_fresh_clone() {
    let repo = audited_run();
    let clone_parent = tempfile::tempdir().expect("tempdir");
    let clone = clone_parent.path().join("clone");
    git_in(
        clone_parent.path(),
        &["clone", "-q", &repo.path().display().to_string(), "clone"],
    );
    assert!(
        !clone.join(".loki/state").exists(),
        "a clone has no run-time state"
    );

    let audit = loki::commands::log::collect(&clone, "main").expect("collect");
    let ids: Vec<&str> = audit.streams.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, vec!["a", "b"], "merge order, oldest first");

    let a = &audit.streams[0];
    assert_eq!(a.attempt_count, 1);
    assert_eq!(a.attempts.len(), 1, "{a:?}");
    assert_eq!(a.attempts[0].n, 1);
    assert_eq!(a.attempts[0].verdict, "checks passed");
    assert_eq!(a.attempts[0].cost_usd, Some(0.12));
    assert_eq!(a.attempts[0].session.as_deref(), Some("sess-a-1"));
    assert!(
        a.attempts[0]
            .duration
            .as_deref()
            .is_some_and(|d| d.ends_with('s')),
        "{a:?}"
    );
    assert!(
        a.attempts[0]
            .agent
            .as_deref()
            .is_some_and(|g| g.contains("claude")),
        "{a:?}"
    );
    assert_eq!(a.approved_by.as_deref(), Some("alice"));
    assert!((a.cost_usd - 0.12).abs() < 1e-9, "{a:?}");
    assert_eq!(a.merge_commit, repo.git(&["rev-parse", "main~1"]).trim());

    let b = &audit.streams[1];
    assert_eq!(b.attempt_count, 2, "{b:?}");
    let ns: Vec<u32> = b.attempts.iter().map(|x| x.n).collect();
    assert_eq!(ns, vec![1, 2], "{b:?}");
    let first = &b.attempts[0];
    assert_eq!(first.verdict, "checks failed");
    let checks = first.checks.as_deref().expect("checks of attempt 1");
    assert!(
        checks.starts_with("FAIL") && checks.contains("dragon"),
        "{checks}"
    );
    assert_eq!(first.cost_usd, Some(0.25));
    assert_eq!(b.attempts[1].verdict, "checks passed");
    assert!(
        b.attempts[1]
            .checks
            .as_deref()
            .is_some_and(|c| c.starts_with("PASS")),
        "{b:?}"
    );
    assert_eq!(b.attempts[1].cost_usd, Some(0.30));
    assert!((b.cost_usd - 0.55).abs() < 1e-9, "{b:?}");
    assert_eq!(b.approved_by, None);
    assert!(b.attempts_without_commit.is_empty(), "{b:?}");
    // Every attempt commit is in the clone's history and names its stream.
    for x in a.attempts.iter().chain(&b.attempts) {
        assert_eq!(
            git_in(&clone, &["cat-file", "-t", &x.commit]).trim(),
            "commit"
        );
    }

    assert_eq!(audit.totals.streams, 2);
    assert_eq!(audit.totals.attempts, 3);
    assert!(
        (audit.totals.cost_usd - 0.67).abs() < 1e-9,
        "{:?}",
        audit.totals
    );

    // The human text: one block per stream, then the totals.
    let text = loki::commands::log::render(&audit);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("a  merged "), "{text}");
    assert!(
        lines[0].contains("1 attempt  $0.12  approved by alice"),
        "{text}"
    );
    assert!(lines[1].starts_with("  attempt 1  PASS"), "{text}");
    assert!(
        lines[1].contains("$0.12") && lines[1].contains("session sess-a-1"),
        "{text}"
    );
    assert!(
        lines[2].starts_with("b  merged ") && lines[2].contains("2 attempts  $0.55"),
        "{text}"
    );
    assert!(
        lines[3].starts_with("  attempt 1  FAIL") && lines[3].contains("dragon"),
        "{text}"
    );
    assert!(
        lines[4].starts_with("  attempt 2  PASS") && lines[4].contains("$0.30"),
        "{text}"
    );
    assert_eq!(
        lines.last().copied(),
        Some("total: 2 streams merged into main, 3 attempts, $0.67"),
        "{text}"
    );

    // --json is the same audit, serialized.
    let json = serde_json::to_value(&audit).expect("json");
    assert_eq!(
        json["streams"][1]["attempts"][0]["verdict"],
        "checks failed"
    );
    assert_eq!(json["totals"]["attempts"], 3);
    assert_eq!(
        loki::commands::log::run(&clone, "main", Some("b"), true).expect("run"),
        0
    );
    assert_eq!(
        loki::commands::log::run(&clone, "main", None, false).expect("run"),
        0
    );

    // An id the history does not hold: an error with help.
    let err = loki::commands::log::run(&clone, "main", Some("zz"), false).unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("zz") && msg.contains("help:") && msg.contains("a, b"),
        "{msg}"
    );
    let err = loki::commands::log::collect(&clone, "nope").unwrap_err();
    assert!(format!("{err:#}").contains("nope"), "{err:#}");

    // The same through the binary, when the CLI has `loki log`.
    {
        let out = loki(&clone, &["log"]);
        assert_eq!(out.code, Some(0), "{}", out.both());
        assert_eq!(out.stdout, text, "{}", out.both());
        let out = loki(&clone, &["log", "b", "--json"]);
        assert_eq!(out.code, Some(0), "{}", out.both());
        let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("log --json");
        assert_eq!(v["streams"].as_array().map(Vec::len), Some(1), "{v}");
        assert_eq!(v["streams"][0]["id"], "b");
        assert_eq!(v["totals"]["attempts"], 2);
        let out = loki(&clone, &["log", "zz"]);
        assert_ne!(out.code, Some(0), "{}", out.both());
        assert!(out.stderr.contains("help:"), "{}", out.both());
    }

    // Without run state, `loki status` shows every stream pending and says
    // where the merges are read from; its JSON is unchanged.
    {
        let out = loki(&clone, &["status"]);
        assert_eq!(out.code, Some(0), "{}", out.both());
        assert!(
            out.stdout.contains("no run state here")
                && out
                    .stdout
                    .contains("`loki log` reads what was merged from git"),
            "{}",
            out.both()
        );
        let out = loki(&clone, &["status", "--json"]);
        assert_eq!(out.code, Some(0), "{}", out.both());
        assert!(!out.stdout.contains("no run state"), "{}", out.both());
        let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("status --json");
        let keys: Vec<&str> = v
            .as_object()
            .map(|o| o.keys().map(String::as_str).collect())
            .unwrap_or_default();
        assert_eq!(keys, vec!["streams", "swarm"], "{v}");
    }

    // `--branch` reads another branch (a kept rehearsal branch, say); a
    // swarm file that does not load is a warning naming the branch read.
    {
        git_in(&clone, &["branch", "loki-rehearsal/kept", "main"]);
        git_in(&clone, &["checkout", "-q", "-b", "side", "main~2"]);
        std::fs::write(clone.join("loki.toml"), "[swarm\nbroken").expect("break loki.toml");
        let out = loki(&clone, &["log"]);
        assert_eq!(out.code, Some(0), "{}", out.both());
        assert!(
            out.stderr.contains("warning: reading branch side")
                && out.stderr.contains("loki.toml")
                && out.stderr.contains("--branch"),
            "{}",
            out.both()
        );
        assert_eq!(
            out.stdout,
            "no stream has been merged into side yet\n",
            "{}",
            out.both()
        );
        let out = loki(&clone, &["log", "--branch", "loki-rehearsal/kept"]);
        assert_eq!(out.code, Some(0), "{}", out.both());
        assert!(out.stderr.is_empty(), "{}", out.both());
        assert!(
            out.stdout
                .ends_with("total: 2 streams merged into loki-rehearsal/kept, 3 attempts, $0.67\n"),
            "{}",
            out.both()
        );
        let out = loki(&clone, &["log", "--branch", "nope"]);
        assert_ne!(out.code, Some(0), "{}", out.both());
        assert!(out.stderr.contains("nope"), "{}", out.both());
        git_in(&clone, &["checkout", "-q", "-f", "main"]);
    }
    assert!(
        !clone.join(".loki/state").exists(),
        "loki log wrote nothing"
    );
}

/// Files and folders outside `.git` and `.loki`, with contents.
fn snapshot_outside_loki(root: &Path) -> Vec<(String, Vec<u8>)> {
    snapshot_except(root, &[".git", ".loki"])
}

/// Every file under `dir` (relative paths), for before/after comparisons.
fn tree(dir: &Path) -> Vec<PathBuf> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            out.push(p.strip_prefix(root).expect("prefix").to_path_buf());
            if p.is_dir() && !p.is_symlink() {
                walk(root, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

fn refs(repo: &Repo, with_loki: bool) -> String {
    repo.git(&["for-each-ref", "--format=%(refname) %(objectname)"])
        .lines()
        .filter(|l| with_loki || !l.starts_with("refs/heads/loki/"))
        .map(|l| format!("{l}\n"))
        .collect()
}

#[test]
fn clean_keeps_conflicted_work_until_all_and_touches_nothing_else() {
    let mut swarm = swarm_stream("a", "out/a.md", "");
    swarm.push_str(&swarm_stream("x", "out/x.md", ""));
    swarm.push_str(&swarm_stream("y", "out/y.md", ""));
    let repo = audit_repo(&swarm);
    let ran = loki(repo.path(), &["run", "--plain"]);
    assert_eq!(
        ran.code,
        Some(1),
        "one stream must conflict: {}",
        ran.both()
    );
    assert_eq!(status(&repo, "a"), Some(Status::Merged), "{}", ran.both());
    let (merged, conflicted) = match (status(&repo, "x"), status(&repo, "y")) {
        (Some(Status::Merged), Some(Status::Conflicted)) => ("x", "y"),
        (Some(Status::Conflicted), Some(Status::Merged)) => ("y", "x"),
        other => panic!(
            "expected one of x, y merged and the other conflicted: {other:?}\n{}",
            ran.both()
        ),
    };
    let root = repo.path();
    let wt = root.join(".loki/worktrees").join(conflicted);
    assert!(wt.is_dir(), "a conflicted stream keeps its worktree");
    // The user's own notes inside the conflicted worktree.
    let planted = wt.join("notes/mine.txt");
    std::fs::create_dir_all(planted.parent().expect("parent")).expect("mkdir");
    std::fs::write(&planted, "my resolution plan\n").expect("plant");
    // Run records of the merged streams exist before cleaning.
    assert!(root.join(".loki/runs/a").is_dir());
    assert!(root.join(".loki/logs/a").is_dir());
    // An empty stray folder and a non-empty one in .loki/worktrees/.
    std::fs::create_dir_all(root.join(".loki/worktrees/empty-stray")).expect("mkdir");
    std::fs::create_dir_all(root.join(".loki/worktrees/full-stray")).expect("mkdir");
    std::fs::write(root.join(".loki/worktrees/full-stray/keep.txt"), "mine\n").expect("write");

    let outside = snapshot_outside_loki(root);
    let user_refs = refs(&repo, false);
    let status_before = repo.git(&["status", "--porcelain"]);

    // Refused while a supervisor holds the lock; nothing changes.
    let loki_before = tree(&root.join(".loki"));
    let refs_before = refs(&repo, true);
    {
        let lock = SupervisorLock::acquire(&root.join(".loki/state"))
            .expect("lock")
            .expect("free lock");
        for dry in [false, true] {
            let err = loki::commands::clean::run(root, true, dry).unwrap_err();
            let msg = format!("{err:#}");
            assert!(
                msg.contains("supervisor") && msg.contains(&std::process::id().to_string()),
                "{msg}"
            );
            assert!(msg.contains("help:"), "{msg}");
        }
        drop(lock);
    }
    assert_eq!(tree(&root.join(".loki")), loki_before);
    assert_eq!(refs(&repo, true), refs_before);

    // Without --all: the merged streams' leftovers go, the conflicted stream stays.
    let plan = loki::commands::clean::plan(root, false).expect("plan");
    assert!(
        plan.kept_streams
            .iter()
            .any(|k| k.starts_with(&format!("{conflicted} (conflicted)"))),
        "{plan:?}"
    );
    assert_eq!(
        loki::commands::clean::run(root, false, false).expect("clean"),
        0
    );
    assert!(planted.is_file(), "the planted file survives `loki clean`");
    assert!(wt.join("shared.md").is_file());
    assert!(repo
        .git(&["branch", "--list", &format!("loki/{conflicted}")])
        .contains(conflicted));
    for id in ["a", merged] {
        assert!(!root.join(".loki/runs").join(id).exists(), "runs of {id}");
        assert!(!root.join(".loki/logs").join(id).exists(), "logs of {id}");
        assert_eq!(
            status(&repo, id),
            Some(Status::Merged),
            "a merged stream keeps its state file"
        );
    }
    assert!(root.join(".loki/runs").join(conflicted).is_dir());
    assert_eq!(status(&repo, conflicted), Some(Status::Conflicted));
    assert!(
        !root.join(".loki/worktrees/empty-stray").exists(),
        "an empty stray folder goes"
    );
    assert!(
        root.join(".loki/worktrees/full-stray/keep.txt").is_file(),
        "a non-empty stray folder stays"
    );
    // Idempotent: a second clean has nothing more to remove.
    let again = loki::commands::clean::plan(root, false).expect("plan");
    assert!(
        again.streams.is_empty() && again.extra.is_empty(),
        "{again:?}"
    );

    // --all --dry-run lists the conflicted worktree and removes nothing.
    let loki_before = tree(&root.join(".loki"));
    let refs_before = refs(&repo, true);
    let plan = loki::commands::clean::plan(root, true).expect("plan");
    let lines = loki::commands::clean::dry_run_lines(root, &plan);
    let want = format!("would remove worktree .loki/worktrees/{conflicted}");
    assert!(lines.contains(&want), "{lines:?}");
    assert!(
        lines.contains(&format!("would delete branch loki/{conflicted}")),
        "{lines:?}"
    );
    assert_eq!(
        loki::commands::clean::run(root, true, true).expect("dry run"),
        0
    );
    {
        let out = loki(root, &["clean", "--all", "--dry-run"]);
        assert_eq!(out.code, Some(0), "{}", out.both());
        assert!(out.stdout.contains(&want), "{}", out.both());
    }
    assert_eq!(
        tree(&root.join(".loki")),
        loki_before,
        "--dry-run removed something"
    );
    assert_eq!(refs(&repo, true), refs_before);
    assert!(planted.is_file());

    // --all removes it: worktree, branch, run files and state file.
    assert_eq!(
        loki::commands::clean::run(root, true, false).expect("clean --all"),
        0
    );
    assert!(!wt.exists());
    assert!(repo.git(&["branch", "--list", "loki/*"]).trim().is_empty());
    assert!(!root.join(".loki/runs").join(conflicted).exists());
    assert!(!root.join(".loki/logs").join(conflicted).exists());
    assert_eq!(
        status(&repo, conflicted),
        None,
        "the next run starts it fresh"
    );
    assert_eq!(status(&repo, "a"), Some(Status::Merged));
    let wts = repo.git(&["worktree", "list", "--porcelain"]);
    assert_eq!(wts.matches("worktree ").count(), 1, "{wts}");
    assert!(
        root.join(".loki/worktrees/full-stray/keep.txt").is_file(),
        "kept even with --all"
    );
    repo.git(&["fsck", "--strict"]);

    // Nothing outside .loki/ and loki/* branches changed.
    assert_eq!(snapshot_outside_loki(root), outside);
    assert_eq!(refs(&repo, false), user_refs);
    assert_eq!(repo.git(&["status", "--porcelain"]), status_before);
}

/// A history made by hand: an interrupted attempt, an attempt the agent
/// committed itself (no loki commit), and merges that are not loki's.
#[test]
fn log_reports_interrupted_attempts_and_attempts_without_a_commit() {
    let repo = audit_repo("");
    let root = repo.path();
    repo.git(&["switch", "-q", "-c", "loki/z"]);
    repo.write("z.md", "draft\n");
    repo.git(&["add", "-A"]);
    repo.git(&[
        "commit",
        "-q",
        "-m",
        "loki: z attempt 1 (interrupted)",
        "-m",
        "Work the interrupted attempt left.",
        "-m",
        "Loki-Stream: z\nLoki-Attempt: 1 (interrupted)",
    ]);
    repo.write("z.md", "final\n");
    repo.git(&["commit", "-q", "-am", "the agent's own commit"]);
    repo.git(&["switch", "-q", "main"]);
    // A user's merge of another branch is not a stream.
    repo.git(&["switch", "-q", "-c", "feature"]);
    repo.write("f.md", "f\n");
    repo.git(&["add", "-A"]);
    repo.git(&["commit", "-q", "-m", "feature"]);
    repo.git(&["switch", "-q", "main"]);
    repo.git(&[
        "merge",
        "-q",
        "--no-ff",
        "feature",
        "-m",
        "Merge branch 'feature'",
    ]);
    repo.git(&[
        "merge", "-q", "--no-ff", "loki/z", "-m", "Merge stream z",
        "-m", "Loki-Stream: z\nLoki-Attempt: 2\nLoki-Attempts: 2\nLoki-Cost-USD: 0.5000\nLoki-Checks: PASS\nLoki-Approved-By: bob",
    ]);
    repo.git(&["branch", "-q", "-D", "loki/z"]);

    let audit = loki::commands::log::collect(root, "main").expect("collect");
    assert_eq!(audit.streams.len(), 1, "{audit:?}");
    let z = &audit.streams[0];
    assert_eq!(z.id, "z");
    assert_eq!(z.attempts.len(), 1, "{z:?}");
    assert!(z.attempts[0].interrupted);
    assert_eq!(z.attempts[0].verdict, "interrupted");
    assert_eq!(z.attempts[0].cost_usd, None);
    assert_eq!(z.attempts_without_commit, vec![2]);
    assert_eq!((z.attempt_count, z.last_attempt), (2, Some(2)));
    assert_eq!(z.approved_by.as_deref(), Some("bob"));
    assert_eq!(z.checks.as_deref(), Some("PASS"));
    let text = loki::commands::log::render(&audit);
    assert!(text.contains("  attempt 1  interrupted"), "{text}");
    assert!(
        text.contains("  attempt 2  no commit of loki's (stopped before it changed anything"),
        "{text}"
    );
    assert!(
        text.ends_with("total: 1 stream merged into main, 2 attempts, $0.50\n"),
        "{text}"
    );

    // No stream merged yet: says so.
    let empty = audit_repo("");
    let audit = loki::commands::log::collect(empty.path(), "main").expect("collect");
    assert!(audit.streams.is_empty());
    assert_eq!(
        loki::commands::log::render(&audit),
        "no stream has been merged into main yet\n"
    );
    let err = loki::commands::log::run(empty.path(), "main", Some("z"), false).unwrap_err();
    assert!(format!("{err:#}").contains("help:"), "{err:#}");
}

/// Without --all, a worktree with uncommitted work is kept even when its
/// stream failed; --all removes it. A blocked stream with nothing on disk
/// loses only its state file.
#[test]
fn clean_keeps_uncommitted_work_of_a_failed_stream_unless_all() {
    let repo = audit_repo("");
    let root = repo.path();
    let store = store(&repo);
    let wt = loki::git::prepare_worktree(root, "f", "main").expect("worktree");
    store
        .update("f", 0, |s| s.status = Status::Failed)
        .expect("state");
    store
        .update("blk", 0, |s| s.status = Status::Blocked)
        .expect("state");
    std::fs::write(wt.path.join("draft.md"), "unsaved\n").expect("write");

    let plan = loki::commands::clean::plan(root, false).expect("plan");
    assert!(
        plan.kept
            .iter()
            .any(|k| k.starts_with("f (failed)") && k.contains("draft.md")),
        "{plan:?}"
    );
    assert_eq!(plan.streams.len(), 1, "{plan:?}");
    assert_eq!(plan.streams[0].id, "blk");
    assert_eq!(
        loki::commands::clean::run(root, false, false).expect("clean"),
        0
    );
    assert!(wt.path.join("draft.md").is_file());
    assert_eq!(status(&repo, "f"), Some(Status::Failed));
    assert_eq!(status(&repo, "blk"), None);

    assert_eq!(
        loki::commands::clean::run(root, true, false).expect("clean --all"),
        0
    );
    assert!(!wt.path.exists());
    assert_eq!(status(&repo, "f"), None);
    assert!(repo.git(&["branch", "--list", "loki/*"]).trim().is_empty());
    let wts = repo.git(&["worktree", "list", "--porcelain"]);
    assert_eq!(wts.matches("worktree ").count(), 1, "{wts}");
}
