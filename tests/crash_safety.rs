//! Crash safety of what a killed supervisor leaves in git (issue 11, case
//! 5) and of its lock (case 8): each partial worktree registration a
//! `kill -9` can leave is built here exactly as libgit2's
//! `git_worktree_add` leaves it when cut short (its steps, in order: mkdir
//! `.git/worktrees/<name>`, mkdir the folder, write the folder's `.git`,
//! write `commondir`, write `gitdir`, `HEAD.lock` renamed to `HEAD`, check
//! out, write `index`), and the next `loki run` or `loki clean --all` must
//! leave git with nothing to say about it.

mod common;
use common::*;

use std::fs;
use std::path::PathBuf;
use std::time::Duration;

/// How far `git_worktree_add` got before the kill.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
enum Cut {
    /// `.git/worktrees/loki-a/` made, nothing in it.
    AdminDir,
    /// And the empty stream folder.
    Folder,
    /// And the folder's `.git`, created but not written yet.
    EmptyDotGit,
    /// And the folder's `.git` written.
    DotGit,
    /// And `commondir`.
    Commondir,
    /// And `gitdir`.
    Gitdir,
    /// And `HEAD.lock` (the kill of the issue: `HEAD.lock commondir gitdir`).
    HeadLock,
}

const CUTS: [Cut; 7] = [
    Cut::AdminDir,
    Cut::Folder,
    Cut::EmptyDotGit,
    Cut::DotGit,
    Cut::Commondir,
    Cut::Gitdir,
    Cut::HeadLock,
];

fn one_stream() -> Swarm {
    Swarm::new(1, &[stream_with("a", &[], &[], "")])
}

/// The repo's path as libgit2 writes it (canonical).
fn root(s: &Swarm) -> PathBuf {
    s.path().canonicalize().expect("canonical repo path")
}

/// Builds the registration of stream `a` as a kill at `cut` leaves it
/// (the branch `loki/a` is made before the worktree, so it exists).
fn cut_registration(s: &Swarm, cut: Cut) {
    let root = root(s);
    s.repo.git(&["branch", "loki/a", "main"]);
    let admin = root.join(".git/worktrees/loki-a");
    let folder = root.join(".loki/worktrees/a");
    fs::create_dir_all(&admin).expect("admin dir");
    if cut >= Cut::Folder {
        fs::create_dir_all(&folder).expect("folder");
    }
    if cut == Cut::EmptyDotGit {
        fs::write(folder.join(".git"), "").expect(".git");
    }
    if cut >= Cut::DotGit {
        fs::write(
            folder.join(".git"),
            format!("gitdir: {}/\n", admin.display()),
        )
        .expect(".git");
    }
    if cut >= Cut::Commondir {
        fs::write(
            admin.join("commondir"),
            format!("{}/\n", root.join(".git").display()),
        )
        .expect("commondir");
    }
    if cut >= Cut::Gitdir {
        fs::write(
            admin.join("gitdir"),
            format!("{}\n", folder.join(".git").display()),
        )
        .expect("gitdir");
    }
    if cut >= Cut::HeadLock {
        fs::write(admin.join("HEAD.lock"), "").expect("HEAD.lock");
    }
}

/// Git has nothing to say: no prunable entry, nothing to prune, a clean
/// fsck, and no `loki-*` registration left at all.
fn assert_git_quiet(s: &Swarm, when: &str) {
    let wt = worktree_complaints(&s.repo);
    assert!(wt.is_empty(), "{when}: {wt}");
    let fsck = fsck_complaints(&s.repo);
    assert!(fsck.is_empty(), "{when}: git fsck: {fsck}");
    let admin = s.path().join(".git/worktrees");
    let left: Vec<String> = fs::read_dir(&admin)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "{when}: registrations left: {left:?}");
}

#[test]
fn a_registration_cut_short_at_any_step_is_gone_after_the_next_run() {
    for cut in CUTS {
        let s = one_stream();
        cut_registration(&s, cut);
        let done = s.run();
        assert_eq!(done.code, Some(0), "{cut:?}: {}", done.both());
        s.assert_all_merged_once(&["a"]);
        assert_git_quiet(&s, &format!("{cut:?}"));
        // The folder held nothing but libgit2's `.git`: nothing to keep.
        assert!(
            !s.path().join(".loki/set-aside").exists(),
            "{cut:?}: an unused folder was set aside instead of removed"
        );
    }
}

#[test]
fn a_registration_cut_short_is_gone_after_loki_clean_all() {
    for cut in [Cut::AdminDir, Cut::DotGit, Cut::HeadLock] {
        let s = one_stream();
        cut_registration(&s, cut);
        let dry = s.loki(&["clean", "--all", "--dry-run"]);
        assert!(
            stdout(&dry).contains("would remove the worktree registration loki-a"),
            "{cut:?}: {}",
            both(&dry)
        );
        let out = s.loki(&["clean", "--all"]);
        assert_eq!(out.status.code(), Some(0), "{cut:?}: {}", both(&out));
        assert!(
            stdout(&out).contains("removed the worktree registration loki-a"),
            "{cut:?}: {}",
            both(&out)
        );
        assert_git_quiet(&s, &format!("{cut:?} after clean"));
        assert!(!s.path().join(".loki/worktrees/a").exists(), "{cut:?}");
    }
}

#[test]
fn a_registration_whose_folder_is_gone_is_pruned_by_the_next_run() {
    // A kill during the removal of a merged or abandoned worktree, or a
    // registration cut short whose folder was removed by hand since.
    for cut_short in [false, true] {
        let s = one_stream();
        if cut_short {
            cut_registration(&s, Cut::HeadLock);
        } else {
            s.repo.git(&["branch", "loki/a", "main"]);
            s.repo
                .git(&["worktree", "add", "-q", ".loki/worktrees/a", "loki/a"]);
            // git names it after the folder; loki's own are `loki-<id>`.
            let admin = s.path().join(".git/worktrees");
            fs::rename(admin.join("a"), admin.join("loki-a")).expect("rename");
            let dot_git = s.path().join(".loki/worktrees/a/.git");
            let text = fs::read_to_string(&dot_git).expect(".git");
            fs::write(&dot_git, text.replace("/worktrees/a", "/worktrees/loki-a")).expect(".git");
        }
        fs::remove_dir_all(s.path().join(".loki/worktrees/a")).expect("rm folder");
        assert!(
            cut_short
                || s.repo
                    .git(&["worktree", "list", "--porcelain"])
                    .contains("prunable"),
            "the setup is not what a kill leaves"
        );
        let done = s.run();
        assert_eq!(done.code, Some(0), "{}", done.both());
        s.assert_all_merged_once(&["a"]);
        assert_git_quiet(&s, &format!("cut short: {cut_short}"));
    }
}

/// A kill while libgit2 prunes a registration (after the folder went, in
/// [`remove_worktree`]'s order) can leave its administrative folder without
/// `gitdir` but with `HEAD` and the rest: libgit2 no longer lists it, git
/// says "gitdir file does not exist" until it is pruned.
#[test]
fn a_registration_whose_prune_was_cut_short_is_gone_after_the_next_run() {
    let s = one_stream();
    s.repo.git(&["branch", "loki/a", "main"]);
    s.repo
        .git(&["worktree", "add", "-q", ".loki/worktrees/a", "loki/a"]);
    let admin = s.path().join(".git/worktrees");
    fs::rename(admin.join("a"), admin.join("loki-a")).expect("rename");
    fs::remove_dir_all(s.path().join(".loki/worktrees/a")).expect("rm folder");
    fs::remove_file(admin.join("loki-a/gitdir")).expect("rm gitdir");
    assert!(
        !worktree_complaints(&s.repo).is_empty(),
        "not what a kill leaves"
    );
    let done = s.run();
    assert_eq!(done.code, Some(0), "{}", done.both());
    s.assert_all_merged_once(&["a"]);
    assert_git_quiet(&s, "prune cut short");
}

#[test]
fn the_users_own_worktrees_are_never_touched() {
    let s = one_stream();
    // A worktree of the user's named `loki-*` outside .loki/worktrees/,
    // whose folder is gone (prunable, but not loki's to prune), and one
    // cut short the same way loki's can be.
    let elsewhere = s.scratch("loki-mine");
    s.repo.git(&[
        "worktree",
        "add",
        "-q",
        "-b",
        "mine",
        &elsewhere.display().to_string(),
    ]);
    fs::remove_dir_all(&elsewhere).expect("rm user's folder");
    let admin = s.path().join(".git/worktrees");
    let half = admin.join("loki-half");
    fs::create_dir_all(&half).expect("mkdir");
    fs::write(
        half.join("gitdir"),
        format!("{}\n", s.scratch("loki-half/.git").display()),
    )
    .expect("gitdir");
    fs::write(half.join("HEAD.lock"), "").expect("HEAD.lock");
    let before = snapshot_except(&admin, &[]);

    let done = s.run();
    assert_eq!(done.code, Some(0), "{}", done.both());
    let out = s.loki(&["clean", "--all"]);
    assert_eq!(out.status.code(), Some(0), "{}", both(&out));
    assert_eq!(
        snapshot_except(&admin, &[]),
        before,
        "loki changed the user's worktree registrations"
    );
}

/// Case 8: `loki run` is never refused because a reader (`loki status`,
/// `show`, `log`, a steering command asking whether a supervisor runs) looks
/// at the supervisor lock meanwhile. Readers here ask through the same code
/// path as those commands, from eight threads without a pause, so that at
/// every instant one of them is looking.
const READERS: usize = 8;

#[test]
fn a_run_is_never_refused_because_readers_look_at_the_lock() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let s = one_stream();
    let state_dir = s.state_dir();
    fs::create_dir_all(&state_dir).expect("state dir");
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        for _ in 0..READERS {
            scope.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    let _ = loki::store::SupervisorLock::holder(&state_dir);
                }
            });
        }
        // And a real `loki status` in a loop, as a user's watch would.
        scope.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                let _ = s.loki(&["status"]);
            }
        });
        for n in 0..3 {
            let done = s
                .spawn(&["run", "--plain"])
                .wait_within(Duration::from_secs(120));
            if done.code != Some(0) {
                stop.store(true, Ordering::Relaxed);
                panic!("run {n} was refused while readers looked: {}", done.both());
            }
        }
        stop.store(true, Ordering::Relaxed);
    });
    s.assert_all_merged_once(&["a"]);
}

/// A reader that stays in its look for longer than a moment (stopped by
/// Ctrl-Z or descheduled mid-look: before the fix every reader took the
/// lock file shared, and `loki run` gave up after retrying for 1 s): here
/// it holds a shared flock on the lock file, as the old readers did, for
/// the whole run. Nothing a reader does with the file may refuse a run.
#[test]
fn a_run_is_never_refused_because_a_reader_lingers_on_the_lock() {
    use std::os::fd::AsRawFd;
    let s = one_stream();
    let state_dir = s.state_dir();
    fs::create_dir_all(&state_dir).expect("state dir");
    let reader = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(state_dir.join("supervisor.lock"))
        .expect("open lock");
    // SAFETY: flock on a descriptor this test owns.
    assert_eq!(unsafe { libc::flock(reader.as_raw_fd(), libc::LOCK_SH) }, 0);
    let done = s.run();
    assert_eq!(done.code, Some(0), "{}", done.both());
    s.assert_all_merged_once(&["a"]);
    drop(reader);
}

/// A supervisor that holds the lock is still seen by every reader, and a
/// second `loki run` is refused naming it.
#[test]
fn a_running_supervisor_is_still_seen_and_a_second_run_refused() {
    let s = one_stream();
    let state_dir = s.state_dir();
    let lock = loki::store::SupervisorLock::acquire(&state_dir)
        .expect("lock")
        .expect("free");
    let me = std::process::id() as i32;
    assert_eq!(
        loki::store::SupervisorLock::holder(&state_dir).expect("holder"),
        Some(me)
    );
    let done = s.run();
    assert_ne!(done.code, Some(0), "{}", done.both());
    assert!(
        done.both().contains("already running") && done.both().contains(&format!("pid {me}")),
        "{}",
        done.both()
    );
    drop(lock);
    assert_eq!(
        loki::store::SupervisorLock::holder(&state_dir).expect("holder"),
        None
    );
}
