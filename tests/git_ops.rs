//! Integration tests of `loki::git` on temporary repos made with the git CLI.
//! Every test checks that the git CLI agrees with what loki did.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use loki::git::{self, MergeOutcome};
use tempfile::TempDir;

const GITIGNORE: &str = "state/\nsignals/\nlogs/\nruns/\nworktrees/\n";

fn git_raw(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@t"])
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .expect("running git")
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = git_raw(dir, args);
    assert!(
        out.status.success(),
        "git {args:?} in {} failed:\n{}{}",
        dir.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn write(dir: &Path, rel: &str, text: &str) {
    let p = dir.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, text).unwrap();
}

fn read(dir: &Path, rel: &str) -> String {
    fs::read_to_string(dir.join(rel)).unwrap()
}

/// A repo on `main` with one commit: README.md, a.txt, b.txt and
/// `.loki/.gitignore` (as `loki init` writes it).
fn repo() -> (TempDir, PathBuf) {
    let tmp = TempDir::new().unwrap();
    let root = tmp.path().join("repo");
    fs::create_dir(&root).unwrap();
    git(&root, &["init", "-q", "-b", "main"]);
    write(&root, "README.md", "# book\n");
    write(&root, "a.txt", "one\ntwo\nthree\n");
    write(&root, "b.txt", "bee\n");
    write(&root, ".loki/.gitignore", GITIGNORE);
    git(&root, &["add", "-A"]);
    git(&root, &["commit", "-q", "-m", "first"]);
    let root = git::repo_root(&root).unwrap();
    (tmp, root)
}

fn commit_on(root: &Path, rel: &str, text: &str, msg: &str) -> String {
    write(root, rel, text);
    git(root, &["add", "-A"]);
    git(root, &["commit", "-q", "-m", msg]);
    rev(root, "HEAD")
}

fn rev(dir: &Path, what: &str) -> String {
    git(dir, &["rev-parse", what]).trim().to_string()
}

fn status(dir: &Path) -> String {
    git(dir, &["status", "--porcelain"])
}

fn fsck_clean(root: &Path) {
    let out = git_raw(root, &["fsck", "--strict", "--no-progress"]);
    assert!(
        out.status.success(),
        "git fsck failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        !text.contains("error") && !text.contains("missing") && !text.contains("broken"),
        "git fsck complained: {text}"
    );
}

/// `git worktree list --porcelain` as (path, HEAD, branch) triples.
fn worktree_list(root: &Path) -> Vec<(String, String, String)> {
    let text = git(root, &["worktree", "list", "--porcelain"]);
    let mut out = Vec::new();
    for block in text.split("\n\n").filter(|b| !b.trim().is_empty()) {
        let mut path = String::new();
        let mut head = String::new();
        let mut branch = String::new();
        for line in block.lines() {
            if let Some(p) = line.strip_prefix("worktree ") {
                path = p.to_string();
            } else if let Some(h) = line.strip_prefix("HEAD ") {
                head = h.to_string();
            } else if let Some(b) = line.strip_prefix("branch ") {
                branch = b.to_string();
            } else if line.starts_with("prunable") {
                panic!("git worktree list shows a prunable worktree:\n{text}");
            }
        }
        out.push((path, head, branch));
    }
    out
}

fn trailers(id: &str, attempt: u32) -> Vec<(String, String)> {
    vec![
        ("Loki-Stream".to_string(), id.to_string()),
        ("Loki-Attempt".to_string(), attempt.to_string()),
        ("Loki-Agent".to_string(), "fake-agent 1.0".to_string()),
    ]
}

/// Prepares stream `id`, writes `files` in its worktree and commits them.
fn stream_with(root: &Path, id: &str, files: &[(&str, &str)]) -> git::Worktree {
    let wt = git::prepare_worktree(root, id, "main").unwrap();
    for (rel, text) in files {
        write(&wt.path, rel, text);
    }
    commit_attempt(root, id)
        .unwrap()
        .expect("something to commit");
    wt
}

/// Commits stream `id`'s worktree as its attempt 1.
fn commit_attempt(root: &Path, id: &str) -> anyhow::Result<Option<String>> {
    git::commit_stream(
        root,
        id,
        &[],
        &format!("loki: {id} attempt 1"),
        "",
        &trailers(id, 1),
    )
}

fn merge(root: &Path, id: &str) -> MergeOutcome {
    git::merge_stream(
        root,
        id,
        "main",
        &format!("Merge stream {id}"),
        &trailers(id, 1),
    )
    .unwrap()
}

fn merged_commit(outcome: MergeOutcome) -> String {
    match outcome {
        MergeOutcome::Merged {
            commit,
            checkout_behind: None,
        } => commit,
        other => panic!("expected a merge, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------
// repo_root, current_branch, branch_head

#[test]
fn repo_root_errors_and_worktrees() {
    let tmp = TempDir::new().unwrap();
    let plain = tmp.path().join("plain");
    fs::create_dir(&plain).unwrap();
    let err = format!("{:#}", git::repo_root(&plain).unwrap_err());
    assert!(err.contains("not a git repository"), "{err}");
    assert!(err.contains("git init"), "{err}");

    let empty = tmp.path().join("empty");
    fs::create_dir(&empty).unwrap();
    git(&empty, &["init", "-q", "-b", "main"]);
    let err = format!("{:#}", git::repo_root(&empty).unwrap_err());
    assert!(err.contains("has no commit yet"), "{err}");
    assert!(err.contains("first commit"), "{err}");

    let (_tmp, root) = repo();
    fs::create_dir_all(root.join("deep/er")).unwrap();
    assert_eq!(git::repo_root(&root.join("deep/er")).unwrap(), root);
    let wt = git::prepare_worktree(&root, "ch01", "main").unwrap();
    assert_eq!(git::repo_root(&wt.path).unwrap(), root);
    fs::create_dir_all(wt.path.join("sub")).unwrap();
    assert_eq!(git::repo_root(&wt.path.join("sub")).unwrap(), root);
}

#[test]
fn current_branch_and_branch_head() {
    let (_tmp, root) = repo();
    assert_eq!(git::current_branch(&root).unwrap().as_deref(), Some("main"));
    assert_eq!(git::branch_head(&root, "main").unwrap(), rev(&root, "main"));
    let err = format!("{:#}", git::branch_head(&root, "nope").unwrap_err());
    assert!(
        err.contains("nope") && err.contains("does not exist"),
        "{err}"
    );
    git(&root, &["switch", "-q", "--detach"]);
    assert_eq!(git::current_branch(&root).unwrap(), None);
}

// ---------------------------------------------------------------------------
// prepare_worktree

#[test]
fn prepare_creates_branch_and_worktree() {
    let (_tmp, root) = repo();
    let head = rev(&root, "main");
    let wt = git::prepare_worktree(&root, "ch01", "main").unwrap();
    assert_eq!(wt.path, root.join(".loki/worktrees/ch01"));
    assert_eq!(wt.branch, "loki/ch01");
    assert_eq!(wt.base, head);
    assert!(!wt.reused);
    assert_eq!(rev(&root, "loki/ch01"), head);
    assert_eq!(read(&wt.path, "a.txt"), "one\ntwo\nthree\n");

    let list = worktree_list(&root);
    assert_eq!(list.len(), 2, "{list:?}");
    assert!(list
        .iter()
        .any(|(p, h, b)| Path::new(p) == wt.path && *h == head && b == "refs/heads/loki/ch01"));
    assert_eq!(status(&wt.path), "");
    assert_eq!(status(&root), "");
    assert_eq!(
        git(&wt.path, &["rev-parse", "--abbrev-ref", "HEAD"]).trim(),
        "loki/ch01"
    );
    fsck_clean(&root);
}

#[test]
fn prepare_reuses_a_healthy_worktree_with_its_work() {
    let (_tmp, root) = repo();
    let first = git::prepare_worktree(&root, "ch01", "main").unwrap();
    write(&first.path, "draft.md", "work in progress\n");
    git::commit_stream(&root, "ch01", &[], "attempt 1", "", &trailers("ch01", 1)).unwrap();
    write(&first.path, "uncommitted.md", "still here\n");
    // The target moves on meanwhile: base stays where the branch forked.
    commit_on(&root, "other.txt", "x\n", "other work");

    let again = git::prepare_worktree(&root, "ch01", "main").unwrap();
    assert!(again.reused);
    assert_eq!(again.path, first.path);
    assert_eq!(again.base, first.base);
    assert_eq!(read(&again.path, "uncommitted.md"), "still here\n");
    assert_eq!(read(&again.path, "draft.md"), "work in progress\n");
    assert_eq!(worktree_list(&root).len(), 2);
}

#[test]
fn prepare_adds_a_worktree_for_an_existing_branch() {
    let (_tmp, root) = repo();
    let fork = rev(&root, "main");
    git(&root, &["branch", "loki/ch02"]);
    git(&root, &["switch", "-q", "loki/ch02"]);
    let branch_head = commit_on(&root, "earlier.md", "earlier attempt\n", "earlier");
    git(&root, &["switch", "-q", "main"]);
    commit_on(&root, "main-only.md", "m\n", "main moves");

    let wt = git::prepare_worktree(&root, "ch02", "main").unwrap();
    assert!(!wt.reused);
    assert_eq!(wt.base, fork, "base is the merge base of branch and target");
    assert_eq!(
        rev(&wt.path, "HEAD"),
        branch_head,
        "the branch is reused as it is"
    );
    assert_eq!(read(&wt.path, "earlier.md"), "earlier attempt\n");
    assert!(!wt.path.join("main-only.md").exists());
    assert_eq!(status(&wt.path), "");
    fsck_clean(&root);
}

#[test]
fn prepare_prunes_a_stale_registration() {
    let (_tmp, root) = repo();
    let wt = git::prepare_worktree(&root, "ch03", "main").unwrap();
    write(&wt.path, "x.md", "x\n");
    let commit = git::commit_stream(&root, "ch03", &[], "attempt 1", "", &[])
        .unwrap()
        .unwrap();
    fs::remove_dir_all(&wt.path).unwrap();
    assert!(git(&root, &["worktree", "list", "--porcelain"]).contains("prunable"));

    let again = git::prepare_worktree(&root, "ch03", "main").unwrap();
    assert!(!again.reused);
    assert_eq!(
        rev(&again.path, "HEAD"),
        commit,
        "the branch keeps its commits"
    );
    assert_eq!(read(&again.path, "x.md"), "x\n");
    let list = worktree_list(&root); // panics on "prunable"
    assert_eq!(list.len(), 2, "{list:?}");
    assert_eq!(status(&again.path), "");
    fsck_clean(&root);
}

#[test]
fn prepare_sets_aside_a_folder_that_is_not_a_worktree() {
    let (_tmp, root) = repo();
    write(&root, ".loki/worktrees/ch04/notes.md", "my notes\n");
    let wt = git::prepare_worktree(&root, "ch04", "main").unwrap();
    // Nothing is deleted: the folder is moved under .loki/set-aside/.
    let aside: Vec<_> = fs::read_dir(root.join(".loki/set-aside"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert!(aside[0]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .starts_with("ch04-"));
    assert_eq!(
        fs::read_to_string(aside[0].join("notes.md")).unwrap(),
        "my notes\n"
    );
    assert!(wt.path.join(".git").exists());
    assert_eq!(worktree_list(&root).len(), 2);
    fsck_clean(&root);

    // An empty folder is fine.
    fs::create_dir_all(root.join(".loki/worktrees/ch05")).unwrap();
    let wt = git::prepare_worktree(&root, "ch05", "main").unwrap();
    assert_eq!(status(&wt.path), "");
}

#[test]
fn prepare_reuses_a_worktree_made_with_the_git_cli() {
    let (_tmp, root) = repo();
    git(
        &root,
        &[
            "worktree",
            "add",
            "-q",
            "-b",
            "loki/ch06",
            ".loki/worktrees/ch06",
            "main",
        ],
    );
    let wt = git::prepare_worktree(&root, "ch06", "main").unwrap();
    assert!(wt.reused);
    assert_eq!(wt.base, rev(&root, "main"));
}

#[test]
fn prepare_refuses_a_worktree_on_another_branch() {
    let (_tmp, root) = repo();
    let wt = git::prepare_worktree(&root, "ch07", "main").unwrap();
    git(&wt.path, &["switch", "-q", "-c", "elsewhere"]);
    let err = format!(
        "{:#}",
        git::prepare_worktree(&root, "ch07", "main").unwrap_err()
    );
    assert!(
        err.contains("elsewhere") && err.contains("loki/ch07"),
        "{err}"
    );
}

#[test]
fn bad_ids_and_targets_are_refused() {
    let (_tmp, root) = repo();
    for id in ["../x", "a/b", "", "a..b", "x.lock", "Upper"] {
        assert!(git::prepare_worktree(&root, id, "main").is_err(), "{id:?}");
    }
    let err = format!(
        "{:#}",
        git::prepare_worktree(&root, "ch01", "trunk").unwrap_err()
    );
    assert!(err.contains("trunk"), "{err}");
}

// ---------------------------------------------------------------------------
// the pool of merged worktrees

/// Merges stream `id` with `files` and pools its worktree (capacity 4),
/// leaving an ignored and an untracked file behind as an agent might.
fn merged_and_pooled(root: &Path, id: &str, files: &[(&str, &str)]) -> PathBuf {
    let wt = stream_with(root, id, files);
    merged_commit(merge(root, id));
    write(&wt.path, ".loki/state/junk.json", "{}\n");
    write(&wt.path, "stray.txt", "left by the agent\n");
    git::retire_worktree(root, id, 4).unwrap();
    git::delete_branch(root, id).unwrap();
    wt.path
}

#[test]
fn a_pooled_worktree_serves_the_next_stream_with_the_targets_files_only() {
    let (_tmp, root) = repo();
    let old = merged_and_pooled(&root, "ch01", &[("chapters/ch01.md", "one\n")]);
    assert!(!old.exists(), "the merged stream's folder is gone");
    assert!(
        root.join(".loki/worktrees/.pool-1/chapters/ch01.md")
            .is_file(),
        "and waits in the pool"
    );
    commit_on(&root, "notes.md", "the user's note\n", "user commit");

    let wt = git::prepare_worktree(&root, "ch02", "main").unwrap();
    assert!(!wt.reused);
    assert_eq!(wt.base, rev(&root, "main"));
    assert!(!root.join(".loki/worktrees/.pool-1").exists(), "taken");
    assert_eq!(read(&wt.path, "chapters/ch01.md"), "one\n");
    assert_eq!(read(&wt.path, "notes.md"), "the user's note\n");
    assert!(!wt.path.join("stray.txt").exists(), "untracked files go");
    assert!(
        !wt.path.join(".loki/state/junk.json").exists(),
        "ignored files go"
    );
    assert_eq!(status(&wt.path), "");
    assert_eq!(
        git(&wt.path, &["rev-parse", "--abbrev-ref", "HEAD"]).trim(),
        "loki/ch02"
    );
    // The stream works as in a fresh worktree.
    write(&wt.path, "chapters/ch02.md", "two\n");
    commit_attempt(&root, "ch02").unwrap().expect("a change");
    merged_commit(merge(&root, "ch02"));
    assert_eq!(git(&root, &["show", "main:chapters/ch02.md"]), "two\n");
    let list = worktree_list(&root);
    assert_eq!(list.len(), 2, "{list:?}");
    assert!(list[1].0.ends_with(".loki/worktrees/ch02"), "{list:?}");
    fsck_clean(&root);
}

#[test]
fn a_full_pool_removes_and_emptying_leaves_nothing() {
    let (_tmp, root) = repo();
    let wt = stream_with(&root, "ch01", &[("a1.md", "1\n")]);
    merged_commit(merge(&root, "ch01"));
    git::retire_worktree(&root, "ch01", 0).unwrap();
    assert!(!wt.path.exists());
    assert!(!root.join(".loki/worktrees/.pool-1").exists(), "no room");
    for id in ["ch02", "ch03"] {
        stream_with(&root, id, &[(&format!("{id}.md"), "text\n")]);
    }
    for id in ["ch02", "ch03"] {
        merged_commit(merge(&root, id));
        git::retire_worktree(&root, id, 4).unwrap();
        git::delete_branch(&root, id).unwrap();
    }
    assert!(root.join(".loki/worktrees/.pool-2").is_dir());
    assert_eq!(git::empty_pool(&root).unwrap(), 2);
    assert_eq!(worktree_list(&root).len(), 1);
    assert_eq!(
        fs::read_dir(root.join(".loki/worktrees")).unwrap().count(),
        0
    );
    fsck_clean(&root);
}

/// A kill between the two steps of taking (registration repointed, folder
/// not yet moved) or of pooling (folder moved, registration not yet
/// repointed): start-up's repair leaves git clean and the stream starts.
#[test]
fn a_pool_move_cut_short_is_repaired_at_start_up() {
    for (case, taking) in [("taking", true), ("pooling", false)] {
        let (_tmp, root) = repo();
        merged_and_pooled(&root, "ch01", &[("a1.md", "1\n")]);
        let pooled = root.join(".loki/worktrees/.pool-1");
        let admin = PathBuf::from(git(&pooled, &["rev-parse", "--absolute-git-dir"]).trim());
        let elsewhere = if taking {
            root.join(".loki/worktrees/ch02")
        } else {
            root.join(".loki/worktrees/ch01")
        };
        fs::write(
            admin.join("gitdir"),
            format!("{}\n", elsewhere.join(".git").display()),
        )
        .unwrap();
        git::repair_registrations(&root, true).unwrap();
        assert!(!pooled.exists(), "{case}: the orphan pooled folder went");
        let wt = git::prepare_worktree(&root, "ch02", "main").unwrap();
        assert_eq!(read(&wt.path, "a1.md"), "1\n", "{case}");
        assert_eq!(worktree_list(&root).len(), 2, "{case}");
        fsck_clean(&root);
    }
}

// ---------------------------------------------------------------------------
// commit_stream and touched_paths

/// Rewrites `rel` in place with `text` (same length as before) and puts its
/// modification time back, as an agent hiding a change from a stat check
/// would. Only the ctime, which nothing unprivileged can set, still differs.
fn rewrite_keeping_mtime(dir: &Path, rel: &str, text: &str) {
    use std::io::Write;
    let p = dir.join(rel);
    let before = fs::metadata(&p).unwrap();
    assert_eq!(before.len(), text.len() as u64, "same size, or no trick");
    let mut f = fs::OpenOptions::new().write(true).open(&p).unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f.set_modified(before.modified().unwrap()).unwrap();
    drop(f);
    let after = fs::metadata(&p).unwrap();
    assert_eq!(after.modified().unwrap(), before.modified().unwrap());
}

/// Waits until the filesystem's clock has moved past the ctime of `rel`,
/// so loki's next index write trusts the stat data it has for it.
fn wait_for_a_newer_ctime(dir: &Path, rel: &str) {
    use std::os::unix::fs::MetadataExt;
    let m = fs::metadata(dir.join(rel)).unwrap();
    let old = (m.ctime(), m.ctime_nsec());
    let probe = dir.join(".loki-test-probe");
    loop {
        fs::write(&probe, "tick").unwrap();
        let p = fs::metadata(&probe).unwrap();
        if (p.ctime(), p.ctime_nsec()) > old {
            break;
        }
        std::thread::yield_now();
    }
    fs::remove_file(&probe).unwrap();
}

/// Prepares `id` and commits a change to `rel`, a clock tick before loki's
/// index write, so loki trusts the stat data it has for `rel`.
fn trusted_after_a_commit(root: &Path, id: &str, rel: &str, text: &str) -> git::Worktree {
    let wt = git::prepare_worktree(root, id, "main").unwrap();
    write(&wt.path, rel, text);
    wait_for_a_newer_ctime(&wt.path, rel);
    commit_attempt(root, id).unwrap().expect("a change");
    wt
}

/// A rewrite that keeps size and mtime, after loki trusted the file's stat
/// data, still reaches the branch; `config` is set on the repo first.
fn a_hidden_rewrite_is_committed(config: Option<(&str, &str)>) {
    let (_tmp, root) = repo();
    if let Some((key, value)) = config {
        git(&root, &["config", key, value]);
    }
    let wt = trusted_after_a_commit(&root, "ch01", "b.txt", "bee2\n");
    rewrite_keeping_mtime(&wt.path, "b.txt", "BEE2\n");
    commit_attempt(&root, "ch01")
        .unwrap()
        .expect("the change is seen");
    assert_eq!(git(&root, &["show", "loki/ch01:b.txt"]), "BEE2\n");
    assert_eq!(status(&wt.path), "", "the worktree's index matches");
}

#[test]
fn a_change_that_keeps_size_and_mtime_is_still_committed() {
    a_hidden_rewrite_is_committed(None);
}

/// Without ctime, size+mtime+inode would hide the rewrite: no stat cache.
#[test]
fn a_repository_that_distrusts_ctime_gets_every_file_hashed() {
    a_hidden_rewrite_is_committed(Some(("core.trustctime", "false")));
}

#[test]
fn commit_stream_stages_everything_with_trailers() {
    let (_tmp, root) = repo();
    let wt = git::prepare_worktree(&root, "ch01", "main").unwrap();
    write(&wt.path, "chapters/ch01.md", "It was a dark night.\n");
    write(&wt.path, "a.txt", "one\nTWO\nthree\n");
    fs::remove_file(wt.path.join("b.txt")).unwrap();
    write(&wt.path, ".loki/state/junk.json", "{}\n"); // ignored
    write(&wt.path, ".gitignore", "*.tmp\n");
    write(&wt.path, "scratch.tmp", "ignored\n");

    let commit = git::commit_stream(
        &root,
        "ch01",
        &[],
        "loki: ch01 attempt 1 (checks passed)",
        "All checks passed.\nwords: 5",
        &trailers("ch01", 1),
    )
    .unwrap()
    .expect("a commit");
    assert_eq!(rev(&wt.path, "HEAD"), commit);
    assert_eq!(rev(&root, "loki/ch01"), commit);
    assert_eq!(
        rev(&root, "main"),
        wt.base,
        "only the stream's branch moves"
    );

    let msg = git(&wt.path, &["log", "-1", "--format=%B"]);
    assert_eq!(
        msg.trim_end(),
        "loki: ch01 attempt 1 (checks passed)\n\nAll checks passed.\nwords: 5\n\n\
         Loki-Stream: ch01\nLoki-Attempt: 1\nLoki-Agent: fake-agent 1.0"
    );
    let parsed = git(&wt.path, &["log", "-1", "--format=%(trailers:only,unfold)"]);
    assert_eq!(
        parsed.trim_end(),
        "Loki-Stream: ch01\nLoki-Attempt: 1\nLoki-Agent: fake-agent 1.0"
    );
    let out = Command::new("git")
        .args(["interpret-trailers", "--parse"])
        .current_dir(&wt.path)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(msg.as_bytes())?;
            child.wait_with_output()
        })
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim_end(),
        "Loki-Stream: ch01\nLoki-Attempt: 1\nLoki-Agent: fake-agent 1.0"
    );

    let files = git(&wt.path, &["ls-tree", "-r", "--name-only", "HEAD"]);
    let files: Vec<&str> = files.lines().collect();
    assert_eq!(
        files,
        [
            ".gitignore",
            ".loki/.gitignore",
            "README.md",
            "a.txt",
            "chapters/ch01.md"
        ]
    );
    assert_eq!(status(&wt.path), "");
    assert_eq!(
        git(&wt.path, &["log", "-1", "--format=%P"]).trim(),
        wt.base,
        "one parent: the previous head"
    );

    // Nothing left: no commit.
    assert_eq!(
        git::commit_stream(&root, "ch01", &[], "again", "", &[]).unwrap(),
        None
    );
    fsck_clean(&root);
}

#[test]
fn commit_stream_uses_the_configured_identity() {
    let (_tmp, root) = repo();
    git(&root, &["config", "user.name", "Ada Writer"]);
    git(&root, &["config", "user.email", "ada@example.com"]);
    let wt = git::prepare_worktree(&root, "ch01", "main").unwrap();
    write(&wt.path, "x.md", "x\n");
    git::commit_stream(&root, "ch01", &[], "subject only", "", &[])
        .unwrap()
        .unwrap();
    assert_eq!(
        git(&wt.path, &["log", "-1", "--format=%an <%ae>|%cn <%ce>|%B"]).trim_end(),
        "Ada Writer <ada@example.com>|Ada Writer <ada@example.com>|subject only"
    );
}

#[test]
fn commit_stream_after_the_agent_committed_itself() {
    let (_tmp, root) = repo();
    let wt = git::prepare_worktree(&root, "ch01", "main").unwrap();
    let agent_commit = commit_on(&wt.path, "agent.md", "by the agent\n", "agent: draft");
    write(&wt.path, "left-over.md", "not committed by the agent\n");

    let commit = commit_attempt(&root, "ch01").unwrap().unwrap();
    assert_eq!(
        git(&wt.path, &["log", "-1", "--format=%P", &commit]).trim(),
        agent_commit
    );
    assert_eq!(
        git(
            &wt.path,
            &["log", "--format=%s", &format!("{}..HEAD", wt.base)]
        ),
        "loki: ch01 attempt 1\nagent: draft\n"
    );
    assert_eq!(rev(&root, "loki/ch01"), commit);

    // The agent committed everything: nothing for loki to commit.
    commit_on(&wt.path, "more.md", "more\n", "agent: more");
    assert_eq!(
        git::commit_stream(&root, "ch01", &[], "x", "", &[]).unwrap(),
        None
    );
}

#[test]
fn touched_paths_covers_commits_index_worktree_and_untracked() {
    let (_tmp, root) = repo();
    let wt = git::prepare_worktree(&root, "ch01", "main").unwrap();
    commit_on(&wt.path, "committed.md", "c\n", "agent");
    write(&wt.path, "staged.md", "s\n");
    git(&wt.path, &["add", "staged.md"]);
    write(&wt.path, "a.txt", "changed\n");
    fs::remove_file(wt.path.join("b.txt")).unwrap();
    write(&wt.path, "new/deep/file.md", "u\n");
    write(&wt.path, ".loki/logs/x.log", "ignored\n");

    let touched = git::touched_paths(&root, "ch01", &wt.base).unwrap();
    assert_eq!(
        touched,
        [
            "a.txt",
            "b.txt",
            "committed.md",
            "new/deep/file.md",
            "staged.md"
        ]
    );
    // After committing, the same paths (from the commits alone).
    git::commit_stream(&root, "ch01", &[], "attempt", "", &[])
        .unwrap()
        .unwrap();
    assert_eq!(
        git::touched_paths(&root, "ch01", &wt.base).unwrap(),
        touched
    );
}

// ---------------------------------------------------------------------------
// merge_stream

#[test]
fn clean_merge_looks_like_git_merge_no_ff() {
    let (_tmp, root) = repo();
    let before = rev(&root, "main");
    let wt = git::prepare_worktree(&root, "ch01", "main").unwrap();
    write(&wt.path, "chapters/ch01.md", "Chapter one.\n");
    write(&wt.path, "a.txt", "one\ntwo\nthree\nfour\n");
    fs::remove_file(wt.path.join("b.txt")).unwrap();
    commit_attempt(&root, "ch01").unwrap().unwrap();
    let branch_head = rev(&root, "loki/ch01");

    let commit = merged_commit(merge(&root, "ch01"));
    assert_eq!(rev(&root, "main"), commit);
    let parents = git(&root, &["log", "-1", "--format=%P", &commit]);
    let parents: Vec<&str> = parents.split_whitespace().collect();
    assert_eq!(parents, [before.as_str(), branch_head.as_str()]);
    assert_eq!(
        git(&root, &["log", "-1", "--format=%B", &commit]).trim_end(),
        "Merge stream ch01\n\nLoki-Stream: ch01\nLoki-Attempt: 1\nLoki-Agent: fake-agent 1.0"
    );
    let graph = git(&root, &["log", "--graph", "--format=%s", "main"]);
    assert!(
        graph.starts_with("*   Merge stream ch01\n|\\  \n"),
        "{graph}"
    );
    assert!(graph.contains("| * loki: ch01 attempt 1"), "{graph}");
    fsck_clean(&root);

    // The user's checkout (main checked out) follows, cleanly.
    assert_eq!(read(&root, "chapters/ch01.md"), "Chapter one.\n");
    assert_eq!(read(&root, "a.txt"), "one\ntwo\nthree\nfour\n");
    assert!(!root.join("b.txt").exists());
    assert_eq!(status(&root), "");
    assert_eq!(git(&root, &["diff", "--cached", "--name-only"]), "");
    let list = worktree_list(&root);
    let main = list
        .iter()
        .find(|(p, _, _)| Path::new(p) == root)
        .expect("main worktree listed");
    assert_eq!(
        (main.1.as_str(), main.2.as_str()),
        (commit.as_str(), "refs/heads/main")
    );
    // The reflog says who moved main.
    assert!(git(&root, &["reflog", "-1", "main"]).contains("loki: merge stream ch01"));

    assert_eq!(
        merge(&root, "ch01"),
        MergeOutcome::AlreadyMerged {
            checkout_behind: None
        }
    );
    assert_eq!(rev(&root, "main"), commit);
}

#[test]
fn conflict_leaves_the_target_untouched() {
    let (_tmp, root) = repo();
    let wt = stream_with(&root, "ch01", &[("a.txt", "one\nstream\nthree\n")]);
    let main_head = commit_on(&root, "a.txt", "one\nuser\nthree\n", "user edit");

    let outcome = merge(&root, "ch01");
    assert_eq!(
        outcome,
        MergeOutcome::Conflict {
            paths: vec!["a.txt".to_string()]
        }
    );
    assert_eq!(rev(&root, "main"), main_head);
    assert_eq!(read(&root, "a.txt"), "one\nuser\nthree\n");
    assert_eq!(status(&root), "");
    assert!(wt.path.exists(), "the worktree is kept");
    assert_eq!(git(&root, &["rev-list", "--merges", "main"]), "");
    fsck_clean(&root);
}

#[test]
fn user_changes_on_a_touched_path_wait_then_merge() {
    let (_tmp, root) = repo();
    stream_with(&root, "ch01", &[("a.txt", "one\ntwo\nthree\nfour\n")]);
    let main_head = rev(&root, "main");
    write(&root, "a.txt", "one\ntwo (user)\nthree\n");

    assert_eq!(
        merge(&root, "ch01"),
        MergeOutcome::UserChanges {
            paths: vec!["a.txt".to_string()]
        }
    );
    assert_eq!(rev(&root, "main"), main_head);
    assert_eq!(read(&root, "a.txt"), "one\ntwo (user)\nthree\n");
    assert_eq!(status(&root), " M a.txt\n");

    // Staged counts too.
    git(&root, &["add", "a.txt"]);
    assert!(matches!(
        merge(&root, "ch01"),
        MergeOutcome::UserChanges { .. }
    ));
    assert_eq!(status(&root), "M  a.txt\n");

    // The user commits: the merge goes ahead on top of their commit.
    git(&root, &["commit", "-q", "-m", "user"]);
    let user_commit = rev(&root, "main");
    let commit = merged_commit(merge(&root, "ch01"));
    assert_eq!(
        git(&root, &["log", "-1", "--format=%P", &commit])
            .split_whitespace()
            .next(),
        Some(user_commit.as_str())
    );
    assert_eq!(read(&root, "a.txt"), "one\ntwo (user)\nthree\nfour\n");
    assert_eq!(status(&root), "");
    fsck_clean(&root);
}

/// loki keeps its opened repositories between merges, with the index each
/// read: a change the user staged since (and only staged, the file on disk
/// put back as it was) is still seen, and still blocks the next merge.
#[test]
fn a_change_the_user_staged_between_two_merges_blocks_the_second() {
    let (_tmp, root) = repo();
    stream_with(&root, "ch00", &[("b.txt", "bee two\n")]);
    merged_commit(merge(&root, "ch00"));
    stream_with(&root, "ch01", &[("a.txt", "one\ntwo\nthree\nfour\n")]);
    write(&root, "a.txt", "one (staged)\n");
    git(&root, &["add", "a.txt"]);
    write(&root, "a.txt", "one\ntwo\nthree\n");
    assert_eq!(status(&root), "MM a.txt\n");

    assert_eq!(
        merge(&root, "ch01"),
        MergeOutcome::UserChanges {
            paths: vec!["a.txt".to_string()]
        }
    );
    assert_eq!(status(&root), "MM a.txt\n", "the staged change is kept");
    assert_eq!(git(&root, &["show", ":a.txt"]), "one (staged)\n");
}

#[test]
fn untracked_or_ignored_files_where_the_merge_adds_one_block_it() {
    let (_tmp, root) = repo();
    stream_with(
        &root,
        "ch01",
        &[
            ("notes/new.md", "from the stream\n"),
            ("build.log", "stream\n"),
        ],
    );
    let main_head = rev(&root, "main");
    write(&root, "notes/new.md", "the user's own\n");
    assert_eq!(
        merge(&root, "ch01"),
        MergeOutcome::UserChanges {
            paths: vec!["notes/new.md".to_string()]
        }
    );
    fs::remove_dir_all(root.join("notes")).unwrap();

    // An ignored file is a user file too.
    write(&root, ".git/info/exclude", "*.log\n");
    write(&root, "build.log", "the user's log\n");
    assert_eq!(status(&root), "");
    assert_eq!(
        merge(&root, "ch01"),
        MergeOutcome::UserChanges {
            paths: vec!["build.log".to_string()]
        }
    );
    assert_eq!(read(&root, "build.log"), "the user's log\n");

    // A file where the merge needs a folder.
    fs::remove_file(root.join("build.log")).unwrap();
    write(&root, "notes", "a file named notes\n");
    assert_eq!(
        merge(&root, "ch01"),
        MergeOutcome::UserChanges {
            paths: vec!["notes".to_string()]
        }
    );
    assert_eq!(rev(&root, "main"), main_head);
    fs::remove_file(root.join("notes")).unwrap();

    merged_commit(merge(&root, "ch01"));
    assert_eq!(read(&root, "notes/new.md"), "from the stream\n");
    assert_eq!(read(&root, "build.log"), "stream\n");
}

/// The check of the user's checkout asks git only about the merge's paths:
/// what the user did to a folder above them, or to paths far from them,
/// must still be judged right.
#[test]
fn a_file_the_user_put_where_the_merge_needs_a_tracked_folder_blocks_it() {
    let (_tmp, root) = repo();
    commit_on(&root, "notes/old.md", "old\n", "notes");
    stream_with(&root, "ch01", &[("notes/new.md", "from the stream\n")]);
    let main_head = rev(&root, "main");
    // The user replaced the tracked folder by a file, and edited b.txt.
    fs::remove_dir_all(root.join("notes")).unwrap();
    write(&root, "notes", "the user's own file\n");
    write(&root, "b.txt", "the user's bee\n");
    assert_eq!(
        merge(&root, "ch01"),
        MergeOutcome::UserChanges {
            paths: vec!["notes".to_string()]
        }
    );
    assert_eq!(rev(&root, "main"), main_head);
    assert_eq!(read(&root, "notes"), "the user's own file\n");
    // The folder back, the merge goes ahead and b.txt keeps the user's edit.
    fs::remove_file(root.join("notes")).unwrap();
    git(&root, &["checkout", "--", "notes"]);
    merged_commit(merge(&root, "ch01"));
    assert_eq!(read(&root, "notes/new.md"), "from the stream\n");
    assert_eq!(read(&root, "b.txt"), "the user's bee\n");
    assert_eq!(status(&root), " M b.txt\n");
}

#[test]
fn user_changes_elsewhere_survive_the_merge() {
    let (_tmp, root) = repo();
    stream_with(&root, "ch01", &[("chapters/ch01.md", "Chapter one.\n")]);
    write(&root, "a.txt", "one\ntwo\nthree\n(user, unstaged)\n");
    write(&root, "b.txt", "bee (user, staged)\n");
    git(&root, &["add", "b.txt"]);
    write(&root, "mine.md", "untracked user file\n");
    write(
        &root,
        "chapters/draft.md",
        "user draft next to the stream's file\n",
    );
    assert_eq!(
        status(&root),
        " M a.txt\nM  b.txt\n?? chapters/\n?? mine.md\n"
    );

    merged_commit(merge(&root, "ch01"));
    assert_eq!(read(&root, "chapters/ch01.md"), "Chapter one.\n");
    assert_eq!(read(&root, "a.txt"), "one\ntwo\nthree\n(user, unstaged)\n");
    assert_eq!(read(&root, "b.txt"), "bee (user, staged)\n");
    assert_eq!(read(&root, "mine.md"), "untracked user file\n");
    assert_eq!(
        read(&root, "chapters/draft.md"),
        "user draft next to the stream's file\n"
    );
    assert_eq!(
        status(&root),
        " M a.txt\nM  b.txt\n?? chapters/draft.md\n?? mine.md\n"
    );
    fsck_clean(&root);
}

#[test]
fn target_not_checked_out_moves_only_the_ref() {
    let (_tmp, root) = repo();
    stream_with(&root, "ch01", &[("chapters/ch01.md", "Chapter one.\n")]);
    git(&root, &["switch", "-q", "-c", "feature"]);
    write(&root, "a.txt", "user work on feature\n");
    let before_status = status(&root);
    let feature = rev(&root, "feature");

    let commit = merged_commit(merge(&root, "ch01"));
    assert_eq!(rev(&root, "main"), commit);
    assert_eq!(
        git::current_branch(&root).unwrap().as_deref(),
        Some("feature")
    );
    assert_eq!(rev(&root, "HEAD"), feature);
    assert!(!root.join("chapters/ch01.md").exists());
    assert_eq!(read(&root, "a.txt"), "user work on feature\n");
    assert_eq!(status(&root), before_status);
    fsck_clean(&root);
}

#[test]
fn a_linked_checkout_of_the_target_is_updated_too() {
    let (_tmp, root) = repo();
    git(&root, &["switch", "-q", "-c", "feature"]);
    let other = root.parent().unwrap().join("main-checkout");
    git(
        &root,
        &["worktree", "add", "-q", other.to_str().unwrap(), "main"],
    );
    stream_with(&root, "ch01", &[("chapters/ch01.md", "Chapter one.\n")]);
    merged_commit(merge(&root, "ch01"));
    assert_eq!(read(&other, "chapters/ch01.md"), "Chapter one.\n");
    assert_eq!(status(&other), "");
}

#[test]
fn ref_moved_under_the_merge_is_redone_on_the_new_head() {
    let (_tmp, root) = repo();
    let stream_head = {
        stream_with(&root, "ch01", &[("chapters/ch01.md", "Chapter one.\n")]);
        rev(&root, "loki/ch01")
    };
    let mut user_commit = String::new();
    let mut tries = Vec::new();
    let outcome = git::merge_stream_with_hook(
        &root,
        "ch01",
        "main",
        "Merge stream ch01",
        &trailers("ch01", 1),
        &mut |attempt| {
            tries.push(attempt);
            if attempt == 0 {
                // The user commits while loki merges.
                user_commit = commit_on(&root, "user.md", "user\n", "user commit");
            }
        },
    )
    .unwrap();
    assert_eq!(tries, [0, 1]);
    let commit = merged_commit(outcome);
    let parents = git(&root, &["log", "-1", "--format=%P", &commit]);
    assert_eq!(
        parents.split_whitespace().collect::<Vec<_>>(),
        [user_commit.as_str(), stream_head.as_str()]
    );
    assert_eq!(read(&root, "user.md"), "user\n");
    assert_eq!(read(&root, "chapters/ch01.md"), "Chapter one.\n");
    assert_eq!(status(&root), "");
    fsck_clean(&root);
}

#[test]
fn sequential_and_concurrent_merges_lose_nothing() {
    let (_tmp, root) = repo();
    let ids = ["ch01", "ch02", "ch03", "ch04"];
    let mut heads = Vec::new();
    for id in ids {
        stream_with(
            &root,
            id,
            &[(&format!("chapters/{id}.md"), &format!("{id}\n"))],
        );
        heads.push(rev(&root, &format!("loki/{id}")));
    }
    // Two one after the other.
    let first = merged_commit(merge(&root, "ch01"));
    let second = merged_commit(merge(&root, "ch02"));
    assert_eq!(
        git(&root, &["log", "-1", "--format=%P", &second])
            .split_whitespace()
            .next(),
        Some(first.as_str())
    );
    // Two at once.
    let threads: Vec<_> = ["ch03", "ch04"]
        .into_iter()
        .map(|id| {
            let root = root.clone();
            std::thread::spawn(move || merge(&root, id))
        })
        .collect();
    for t in threads {
        merged_commit(t.join().unwrap());
    }
    for head in &heads {
        let out = git_raw(&root, &["merge-base", "--is-ancestor", head, "main"]);
        assert!(out.status.success(), "{head} is not in main");
    }
    assert_eq!(
        git(&root, &["rev-list", "--merges", "--count", "main"]).trim(),
        "4"
    );
    for id in ids {
        assert_eq!(read(&root, &format!("chapters/{id}.md")), format!("{id}\n"));
    }
    assert_eq!(status(&root), "");
    fsck_clean(&root);
}

/// Git is the truth: a branch already in the target counts as merged only
/// through loki's merge commit. One without commits changed nothing; one
/// that something else moved the target to (an agent's `git update-ref`) is
/// no merge of loki's either.
#[test]
fn a_branch_in_the_target_without_lokis_merge_is_not_credited() {
    let (_tmp, root) = repo();
    git::prepare_worktree(&root, "ch01", "main").unwrap();
    let out = merge(&root, "ch01");
    let MergeOutcome::NotCredited { why } = &out else {
        panic!("{out:?}");
    };
    assert!(why.contains("no `Merge stream ch01` commit"), "{why}");
    assert!(why.contains("help: "), "{why}");

    let wt = stream_with(&root, "ch02", &[("b.md", "b\n")]);
    git(&wt.path, &["update-ref", "refs/heads/main", "HEAD"]);
    let out = merge(&root, "ch02");
    assert!(matches!(out, MergeOutcome::NotCredited { .. }), "{out:?}");

    // A commit that only says it is loki's merge (made with commit-tree,
    // keeping main's tree without the stream's work) is none.
    stream_with(&root, "ch03", &[("c.md", "c\n")]);
    let fake = git(
        &root,
        &[
            "commit-tree",
            "main^{tree}",
            "-p",
            "main",
            "-p",
            "loki/ch03",
            "-m",
            "Merge stream ch03",
            "-m",
            "Loki-Stream: ch03",
        ],
    );
    git(&root, &["update-ref", "refs/heads/main", fake.trim()]);
    let out = merge(&root, "ch03");
    assert!(matches!(out, MergeOutcome::NotCredited { .. }), "{out:?}");
    assert!(
        git(&root, &["branch", "--list", "loki/ch02"]).contains("loki/ch02"),
        "the branch is kept"
    );
    let err = format!(
        "{:#}",
        git::merge_stream(&root, "nope", "main", "x", &[]).unwrap_err()
    );
    assert!(err.contains("loki/nope"), "{err}");
}

/// The user's checkout is written file by file through a staging folder in
/// the git dir (so a kill never leaves a half-written file): files that
/// become folders and back, deletions, modes and symlinks all arrive, and
/// nothing is left behind.
#[test]
fn the_checkout_follows_type_changes_modes_and_deletions() {
    use std::os::unix::fs::PermissionsExt;
    let (_tmp, root) = repo();
    commit_on(&root, "was-dir/x.txt", "x\n", "a folder");
    commit_on(&root, "was-file", "a file\n", "a file");
    commit_on(&root, "gone/deep/y.txt", "y\n", "deep");
    let wt = git::prepare_worktree(&root, "ch01", "main").unwrap();
    fs::remove_dir_all(wt.path.join("was-dir")).unwrap();
    write(&wt.path, "was-dir", "now a file\n");
    fs::remove_file(wt.path.join("was-file")).unwrap();
    write(&wt.path, "was-file/inside.md", "now a folder\n");
    fs::remove_dir_all(wt.path.join("gone")).unwrap();
    write(&wt.path, "run.sh", "#!/bin/sh\necho hi\n");
    fs::set_permissions(wt.path.join("run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("a.txt", wt.path.join("link")).unwrap();
    commit_attempt(&root, "ch01").unwrap().unwrap();
    // What a crash during an earlier checkout left in the git dir.
    write(&root, ".git/loki-checkout/a.txt", "half");

    merged_commit(merge(&root, "ch01"));
    assert_eq!(status(&root), "");
    assert_eq!(read(&root, "was-dir"), "now a file\n");
    assert_eq!(read(&root, "was-file/inside.md"), "now a folder\n");
    assert!(!root.join("gone").exists(), "emptied folders are removed");
    let mode = fs::metadata(root.join("run.sh"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o111, 0o111, "run.sh is executable: {mode:o}");
    assert_eq!(
        fs::read_link(root.join("link")).unwrap(),
        Path::new("a.txt")
    );
    assert!(!root.join(".git/loki-checkout").exists());
    assert_eq!(read(&root, "a.txt"), "one\ntwo\nthree\n");
    fsck_clean(&root);
}

/// A kill in the middle of the renames: some paths are the merge's on
/// disk (written, or removed), others still the old ones (a folder not yet
/// replaced by its file, an added file not yet there), and the index is
/// the old one. The merge's second pass finishes every path.
#[test]
fn a_checkout_killed_midway_through_the_renames_is_finished() {
    let (_tmp, root) = repo();
    commit_on(&root, "was-dir/x.txt", "x\n", "a folder");
    commit_on(&root, "gone/y.txt", "y\n", "to delete");
    commit_on(&root, "notes.md", "old notes\n", "notes");
    let wt = git::prepare_worktree(&root, "ch01", "main").unwrap();
    fs::remove_dir_all(wt.path.join("was-dir")).unwrap();
    write(&wt.path, "was-dir", "now a file\n");
    fs::remove_dir_all(wt.path.join("gone")).unwrap();
    write(&wt.path, "notes.md", "new notes\n");
    write(&wt.path, "run.sh", "#!/bin/sh\n");
    std::os::unix::fs::symlink("notes.md", wt.path.join("link")).unwrap();
    commit_attempt(&root, "ch01").unwrap().unwrap();
    merged_commit(merge(&root, "ch01"));
    assert_eq!(status(&root), "");

    // The state at the kill: the old index; `gone/` removed, notes.md and
    // the link written; was-dir still the folder, run.sh not yet there.
    git(&root, &["read-tree", "HEAD^1"]);
    fs::remove_file(root.join("was-dir")).unwrap();
    write(&root, "was-dir/x.txt", "x\n");
    fs::remove_file(root.join("run.sh")).unwrap();
    write(&root, ".git/loki-checkout/run.sh", "#!/bin/sh\n");
    assert!(!status(&root).is_empty());

    assert_eq!(
        merge(&root, "ch01"),
        MergeOutcome::AlreadyMerged {
            checkout_behind: None
        }
    );
    assert_eq!(status(&root), "", "the checkout was finished");
    assert_eq!(read(&root, "was-dir"), "now a file\n");
    assert_eq!(read(&root, "notes.md"), "new notes\n");
    assert_eq!(read(&root, "run.sh"), "#!/bin/sh\n");
    assert!(!root.join("gone").exists());
    assert!(!root.join(".git/loki-checkout").exists());
    fsck_clean(&root);
}

/// After a kill before the index was written, the user makes their own
/// file where the merge removed or added one, ignored by `.gitignore`
/// (which `git status` does not show): it is theirs, kept as they wrote it.
#[test]
fn the_users_ignored_files_made_after_a_crash_are_kept() {
    let (_tmp, root) = repo();
    commit_on(&root, ".gitignore", "*.env\n", "ignore");
    write(&root, "config.env", "old\n");
    git(&root, &["add", "-f", "config.env"]);
    git(&root, &["commit", "-q", "-m", "a tracked config"]);
    let wt = git::prepare_worktree(&root, "ch01", "main").unwrap();
    git(&wt.path, &["rm", "-q", "--cached", "config.env"]);
    write(&wt.path, "build.env", "the merge's\n");
    git(&wt.path, &["add", "-f", "build.env"]);
    git(
        &wt.path,
        &["commit", "-q", "-m", "untrack one, add another"],
    );
    fs::remove_file(wt.path.join("config.env")).unwrap();
    merged_commit(merge(&root, "ch01"));

    // The kill: the old index; then the user's own files.
    git(&root, &["read-tree", "HEAD^1"]);
    write(&root, "config.env", "USER SECRET\n");
    write(&root, "build.env", "USER BUILD\n");
    let out = merge(&root, "ch01");
    assert!(matches!(out, MergeOutcome::AlreadyMerged { .. }), "{out:?}");
    assert_eq!(read(&root, "config.env"), "USER SECRET\n");
    assert_eq!(read(&root, "build.env"), "USER BUILD\n");
}

/// A supervisor killed while it wrote a merge into the checkout, then
/// another stream merged first on the next run: the journal of the merge
/// in flight makes that next merge finish the first one's paths before it
/// moves the target, instead of only looking at the newest merge.
#[test]
fn a_merge_killed_midway_is_finished_before_the_next_merge() {
    let (_tmp, root) = repo();
    commit_on(&root, "notes.md", "old notes\n", "notes");
    stream_with(&root, "ch01", &[("notes.md", "new notes\n")]);
    stream_with(&root, "ch02", &[("other.md", "other\n")]);
    let first = merged_commit(merge(&root, "ch01"));
    // The kill: the ref moved, nothing written yet, the journal left.
    git(&root, &["read-tree", "HEAD^1"]);
    write(&root, "notes.md", "old notes\n");
    let journal = git::merge_journal_path(&root, "main").unwrap();
    fs::create_dir_all(journal.parent().unwrap()).unwrap();
    fs::write(&journal, format!("{first}\n")).unwrap();

    merged_commit(merge(&root, "ch02"));
    assert_eq!(status(&root), "", "the first merge was finished");
    assert_eq!(read(&root, "notes.md"), "new notes\n");
    assert!(!journal.exists());
    // A journal naming a merge that never reached the target is dropped.
    fs::write(&journal, "0123456789012345678901234567890123456789\n").unwrap();
    stream_with(&root, "ch03", &[("third.md", "three\n")]);
    merged_commit(merge(&root, "ch03"));
    assert!(!journal.exists());
    assert_eq!(status(&root), "");
}

/// A folder the merge turns into a file must hold nothing but what the
/// merge removes: an ignored file of the user's there (which `git status`
/// does not show) makes the merge wait and names it; nothing is touched.
#[test]
fn an_ignored_file_in_a_folder_the_merge_replaces_blocks_it() {
    let (_tmp, root) = repo();
    commit_on(&root, ".gitignore", "*.pyc\n", "ignore");
    commit_on(&root, "pkg/mod.py", "x = 1\n", "a package");
    let main_before = rev(&root, "main");
    let wt = git::prepare_worktree(&root, "ch01", "main").unwrap();
    fs::remove_dir_all(wt.path.join("pkg")).unwrap();
    write(&wt.path, "pkg", "now a file\n");
    commit_attempt(&root, "ch01").unwrap().unwrap();
    write(&root, "pkg/mod.pyc", "compiled");

    assert_eq!(
        merge(&root, "ch01"),
        MergeOutcome::UserChanges {
            paths: vec!["pkg/mod.pyc".into()]
        }
    );
    assert_eq!(rev(&root, "main"), main_before);
    assert_eq!(read(&root, "pkg/mod.pyc"), "compiled");
    fs::remove_file(root.join("pkg/mod.pyc")).unwrap();
    merged_commit(merge(&root, "ch01"));
    assert_eq!(read(&root, "pkg"), "now a file\n");
    assert_eq!(status(&root), "");
}

/// A supervisor killed while writing the merge into the user's checkout
/// leaves the merged files on disk but the index behind (and, killed at
/// the wrong instant, `.git/index.lock`). The next supervisor clears the
/// abandoned lock and the merge's second pass brings the index up to date:
/// the files on disk are the merge's, so they are not mistaken for the
/// user's.
#[test]
fn a_checkout_cut_short_by_a_crash_is_completed_and_its_lock_cleared() {
    let (_tmp, root) = repo();
    commit_on(&root, "notes.md", "old notes\n", "notes");
    stream_with(
        &root,
        "ch01",
        &[("chapters/ch01.md", "one\n"), ("notes.md", "new notes\n")],
    );
    merged_commit(merge(&root, "ch01"));
    assert_eq!(status(&root), "");
    // The state after the crash: the index as before the merge, the files
    // written, an index.lock nobody holds.
    git(&root, &["rm", "-q", "--cached", "chapters/ch01.md"]);
    git(
        &root,
        &[
            "update-index",
            "--cacheinfo",
            &format!("100644,{},notes.md", rev(&root, "HEAD^1:notes.md")),
        ],
    );
    assert!(!status(&root).is_empty());
    // An index.lock with no sign that loki was writing it may be the
    // user's (`git commit -a` keeps one while its editor is open): kept.
    let lock = root.join(".git/index.lock");
    fs::write(&lock, "").unwrap();
    let r = git::clear_abandoned_target_locks(&root, "main", Duration::from_millis(100)).unwrap();
    assert_eq!(r.kept, vec![lock.clone()]);
    assert!(r.removed.is_empty() && lock.exists());
    // loki's checkout was in flight when it was killed: the marker it
    // leaves names the lock, which dates from then.
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    fs::write(
        root.join(".loki/checkout-in-flight"),
        format!("{}\t{ms}\n", lock.display()),
    )
    .unwrap();
    let r = git::clear_abandoned_target_locks(&root, "main", Duration::from_millis(100)).unwrap();
    assert_eq!(r.removed, vec![lock.clone()]);
    assert!(!root.join(".loki/checkout-in-flight").exists());
    assert_eq!(
        merge(&root, "ch01"),
        MergeOutcome::AlreadyMerged {
            checkout_behind: None
        }
    );
    assert_eq!(status(&root), "", "the checkout was completed");
    assert_eq!(read(&root, "notes.md"), "new notes\n");
    // Even then, a lock some process holds open is never removed.
    let held = fs::File::create(&lock).unwrap();
    fs::write(
        root.join(".loki/checkout-in-flight"),
        format!("{}\t{ms}\n", lock.display()),
    )
    .unwrap();
    let r = git::clear_abandoned_target_locks(&root, "main", Duration::from_millis(100)).unwrap();
    assert!(r.removed.is_empty());
    assert!(lock.exists());
    drop(held);
    fs::remove_file(&lock).unwrap();
    fsck_clean(&root);
}

// ---------------------------------------------------------------------------
// remove_worktree, delete_branch, diff_against_target

#[test]
fn remove_worktree_and_delete_branch_leave_git_clean() {
    let (_tmp, root) = repo();
    let wt = stream_with(&root, "ch01", &[("chapters/ch01.md", "Chapter one.\n")]);
    write(&wt.path, "left-over.tmp", "loki-owned scratch\n");
    merged_commit(merge(&root, "ch01"));

    git::remove_worktree(&root, "ch01").unwrap();
    git::delete_branch(&root, "ch01").unwrap();
    assert!(!wt.path.exists());
    assert!(root.join(".loki/worktrees").is_dir());
    assert_eq!(worktree_list(&root).len(), 1);
    assert_eq!(git(&root, &["branch", "--list", "loki/*"]), "");
    assert!(!root.join(".git/worktrees/loki-ch01").exists());
    assert_eq!(read(&root, "chapters/ch01.md"), "Chapter one.\n");
    fsck_clean(&root);

    // Idempotent.
    git::remove_worktree(&root, "ch01").unwrap();
    git::delete_branch(&root, "ch01").unwrap();

    // Folder already gone, registration still there.
    let wt = git::prepare_worktree(&root, "ch02", "main").unwrap();
    fs::remove_dir_all(&wt.path).unwrap();
    git::remove_worktree(&root, "ch02").unwrap();
    assert_eq!(worktree_list(&root).len(), 1);
    git::delete_branch(&root, "ch02").unwrap();
    assert_eq!(git(&root, &["branch", "--list", "loki/*"]), "");
}

#[test]
fn delete_branch_refuses_while_the_worktree_has_it() {
    let (_tmp, root) = repo();
    git::prepare_worktree(&root, "ch01", "main").unwrap();
    let err = format!("{:#}", git::delete_branch(&root, "ch01").unwrap_err());
    assert!(err.contains("loki/ch01"), "{err}");
    assert!(git(&root, &["branch", "--list", "loki/*"]).contains("loki/ch01"));
}

#[test]
fn diff_against_target_shows_worktree_then_branch() {
    let (_tmp, root) = repo();
    let wt = stream_with(&root, "ch01", &[("committed.md", "committed line\n")]);
    write(&wt.path, "a.txt", "one\ntwo\nthree\nuncommitted line\n");
    write(&wt.path, "fresh/untracked.md", "untracked line\n");
    // The target moving on does not show up in the stream's diff.
    commit_on(&root, "main-only.md", "main line\n", "main moves");

    let diff = git::diff_against_target(&root, "ch01", "main").unwrap();
    assert!(
        diff.contains("diff --git a/committed.md b/committed.md"),
        "{diff}"
    );
    assert!(diff.contains("+committed line"), "{diff}");
    assert!(diff.contains("+uncommitted line"), "{diff}");
    assert!(diff.contains("+untracked line"), "{diff}");
    assert!(!diff.contains("main line"), "{diff}");

    git::remove_worktree(&root, "ch01").unwrap();
    let diff = git::diff_against_target(&root, "ch01", "main").unwrap();
    assert!(diff.contains("+committed line"), "{diff}");
    assert!(!diff.contains("uncommitted line"), "{diff}");
    assert!(!diff.contains("main line"), "{diff}");
    // git apply accepts it.
    let patch = root.parent().unwrap().join("stream.patch");
    fs::write(&patch, &diff).unwrap();
    git(&root, &["apply", "--check", patch.to_str().unwrap()]);
}

#[test]
fn unmerged_user_paths_elsewhere_do_not_block_or_break() {
    let (_tmp, root) = repo();
    stream_with(&root, "ch01", &[("chapters/ch01.md", "Chapter one.\n")]);
    // A `git stash pop` that conflicts leaves a.txt unmerged (state stays clean).
    write(&root, "a.txt", "one\nstashed\nthree\n");
    git(&root, &["stash", "-q"]);
    commit_on(&root, "a.txt", "one\ncommitted\nthree\n", "user");
    let out = git_raw(&root, &["stash", "pop"]);
    assert!(!out.status.success());
    assert_eq!(status(&root), "UU a.txt\n");
    let a_before = read(&root, "a.txt");

    merged_commit(merge(&root, "ch01"));
    assert_eq!(read(&root, "chapters/ch01.md"), "Chapter one.\n");
    assert_eq!(read(&root, "a.txt"), a_before);
    assert_eq!(status(&root), "UU a.txt\n");
}

#[test]
fn ids_with_dots_and_underscores_work() {
    let (_tmp, root) = repo();
    let wt = stream_with(&root, "v1.2_x-y", &[("x.md", "x\n")]);
    assert_eq!(wt.branch, "loki/v1.2_x-y");
    assert_eq!(status(&wt.path), "");
    merged_commit(merge(&root, "v1.2_x-y"));
    git::remove_worktree(&root, "v1.2_x-y").unwrap();
    git::delete_branch(&root, "v1.2_x-y").unwrap();
    assert_eq!(worktree_list(&root).len(), 1);
    fsck_clean(&root);
}
