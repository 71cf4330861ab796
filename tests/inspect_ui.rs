//! Read-only views driven through the built binary on hand-made state (no
//! agent runs): `loki logs` (raw and follow), `loki status` and `loki show`.

mod common;
use common::*;

use std::time::Duration;

use loki::model::Status;
use loki::store::{StateStore, SupervisorLock};

const LINE1: &str =
    r#"{"type":"system","subtype":"init","session_id":"s1","model":"m","cwd":"/w"}"#;
const LINE2: &str = r#"{"type":"result","subtype":"success","is_error":false,"num_turns":1,"result":"done","total_cost_usd":0.01}"#;

/// A repo whose swarm file names `ch01` and `ch02`, committed.
fn swarm_repo() -> Repo {
    let repo = Repo::new();
    repo.write("prompts/chapter.md", CHAPTER);
    let mut toml = header(2, "");
    toml.push_str(&stream("ch01", &[], "chapters/ch01.md", ""));
    toml.push_str(&stream("ch02", &[], "chapters/ch02.md", ""));
    repo.write("loki.toml", &toml);
    repo.commit_all("swarm");
    repo
}

/// `id` has failed its first attempt (state only; the test writes the logs).
fn failed_once(repo: &Repo, id: &str) {
    store(repo)
        .update(id, 0, |st| {
            st.status = Status::Failed;
            st.attempt = 1;
        })
        .expect("state");
}

fn store(repo: &Repo) -> StateStore {
    StateStore::new(repo.path().join(".loki/state"))
}

#[test]
fn logs_raw_prints_only_the_json_lines() {
    let repo = swarm_repo();
    failed_once(&repo, "ch01");
    let transcript = format!("{LINE1}\n{LINE2}\n");
    repo.write(".loki/logs/ch01/attempt-1.jsonl", &transcript);
    repo.write(".loki/logs/ch01/attempt-1.stderr.log", "boom on stderr\n");

    let out = repo.loki(&["logs", "ch01", "--raw"]);
    assert!(out.status.success(), "{}", both(&out));
    assert_eq!(stdout(&out), transcript, "{}", both(&out));
    for line in stdout(&out).lines() {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    }

    // Rendered for a person: the header and the stderr section stay.
    let out = repo.loki(&["logs", "ch01"]);
    assert!(out.status.success(), "{}", both(&out));
    let text = stdout(&out);
    assert!(text.starts_with("# ch01 attempt 1 — "), "{text}");
    assert!(text.contains("session s1 (m, /w)"), "{text}");
    assert!(
        text.contains("# stderr (") && text.contains("boom on stderr"),
        "{text}"
    );
}

/// A transcript or stderr log with bytes that are not UTF-8 (an agent may
/// print anything) is shown with replacement characters, not refused.
#[test]
fn logs_show_invalid_utf8_as_replacement_characters() {
    let repo = swarm_repo();
    failed_once(&repo, "ch01");
    let dir = repo.path().join(".loki/logs/ch01");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let mut transcript = format!("{LINE1}\n").into_bytes();
    transcript.extend_from_slice(b"plain words \xff\xfe from the agent\n");
    transcript.extend_from_slice(format!("{LINE2}\n").as_bytes());
    std::fs::write(dir.join("attempt-1.jsonl"), &transcript).expect("write");
    std::fs::write(dir.join("attempt-1.stderr.log"), b"bad \xc3 byte\n").expect("write");
    for args in [&["logs", "ch01"][..], &["logs", "ch01", "--raw"][..]] {
        let out = repo.loki(args);
        assert!(out.status.success(), "{args:?}: {}", both(&out));
        let text = stdout(&out);
        assert!(text.contains('\u{FFFD}'), "{args:?}: {text}");
        assert!(text.contains("session s1") || args.len() == 3, "{text}");
    }
}

/// `--follow` waits for a transcript that is not there yet, and prints the
/// last line of an ended attempt even without its newline.
#[test]
fn logs_follow_waits_for_the_transcript_and_keeps_the_last_line() {
    let repo = swarm_repo();
    // A live supervisor (this test holds its lock) is preparing attempt 1.
    let lock = SupervisorLock::acquire(&repo.path().join(".loki/state"))
        .expect("lock")
        .expect("no other supervisor");
    let st = store(&repo)
        .update("ch01", 0, |st| {
            st.status = Status::Preparing;
            st.attempt = 1;
        })
        .expect("state");
    let mut follow = Running::spawn(repo.path(), &["logs", "ch01", "--follow", "--raw"]);
    let told = wait_until(Duration::from_secs(10), || {
        follow.stderr().contains("waiting for attempt 1 of `ch01`")
    });
    assert!(told, "stderr: {}", follow.stderr());
    assert!(
        !follow.exited(),
        "loki logs --follow ended before the transcript came:\n{}",
        follow.output()
    );

    let st = store(&repo)
        .update("ch01", st.version, |st| st.status = Status::Running)
        .expect("state");
    repo.write(".loki/logs/ch01/attempt-1.jsonl", &format!("{LINE1}\n"));
    let first = wait_until(Duration::from_secs(10), || {
        follow.stdout() == format!("{LINE1}\n")
    });
    assert!(first, "stdout: {}", follow.stdout());
    // The agent's last line, without a newline, then the attempt ends.
    repo.write(
        ".loki/logs/ch01/attempt-1.jsonl",
        &format!("{LINE1}\n{LINE2}"),
    );
    store(&repo)
        .update("ch01", st.version, |st| st.status = Status::Checking)
        .expect("state");
    let ended = wait_until(Duration::from_secs(10), || follow.exited());
    let done = if ended { follow.wait() } else { follow.kill() };
    assert!(ended, "loki logs --follow did not end with the attempt");
    assert_eq!(done.stdout, format!("{LINE1}\n{LINE2}\n"));

    // Without --follow a missing transcript is still an error with help.
    let out = repo.loki(&["logs", "ch02"]);
    assert!(!out.status.success(), "{}", both(&out));
    assert!(stderr(&out).contains("help:"), "{}", both(&out));

    // The supervisor dies with ch02 recorded as preparing: following it
    // says so instead of waiting forever.
    store(&repo)
        .update("ch02", 0, |st| {
            st.status = Status::Preparing;
            st.attempt = 1;
        })
        .expect("state");
    drop(lock);
    let out = repo.loki(&["logs", "ch02", "--follow"]);
    assert!(!out.status.success(), "{}", both(&out));
    assert!(
        stderr(&out).contains("no supervisor is running") && stderr(&out).contains("loki run"),
        "{}",
        both(&out)
    );
}

/// A supervisor killed while its agent writes: `--follow` prints what the
/// transcript holds and ends, instead of waiting for lines nobody writes.
#[test]
fn logs_follow_ends_when_the_supervisor_is_gone() {
    let repo = swarm_repo();
    let lock = SupervisorLock::acquire(&repo.path().join(".loki/state"))
        .expect("lock")
        .expect("no other supervisor");
    store(&repo)
        .update("ch01", 0, |st| {
            st.status = Status::Running;
            st.attempt = 1;
        })
        .expect("state");
    repo.write(".loki/logs/ch01/attempt-1.jsonl", &format!("{LINE1}\n"));
    let mut follow = Running::spawn(repo.path(), &["logs", "ch01", "--follow", "--raw"]);
    let first = wait_until(Duration::from_secs(10), || {
        follow.stdout() == format!("{LINE1}\n")
    });
    assert!(first, "stdout: {}", follow.stdout());
    // The witness that it went on following after the end of what was
    // there (and found the supervisor alive): a line written after the
    // first one was printed is printed too.
    {
        use std::io::Write;
        let mut transcript = std::fs::OpenOptions::new()
            .append(true)
            .open(repo.path().join(".loki/logs/ch01/attempt-1.jsonl"))
            .expect("transcript");
        writeln!(transcript, "{LINE2}").expect("append to the transcript");
    }
    let second = wait_until(Duration::from_secs(10), || {
        follow.stdout() == format!("{LINE1}\n{LINE2}\n")
    });
    assert!(second, "stdout: {}", follow.stdout());
    assert!(!follow.exited(), "ended too early");
    drop(lock);
    let ended = wait_until(Duration::from_secs(10), || follow.exited());
    if !ended {
        follow.kill();
    }
    assert!(
        ended,
        "loki logs --follow kept waiting after the supervisor died"
    );
}

#[test]
fn status_notes_when_there_is_no_run_state() {
    let repo = swarm_repo();
    let out = repo.loki(&["status"]);
    assert!(out.status.success(), "{}", both(&out));
    let text = stdout(&out);
    assert_eq!(
        text.lines().last(),
        Some("note: no run state here (.loki/state); `loki log` reads what was merged from git"),
        "{text}"
    );
    let json = status_json(&repo);
    assert_eq!(json["streams"].as_array().map(Vec::len), Some(2), "{json}");
    assert!(json.get("note").is_none(), "{json}");

    // With state, no note.
    store(&repo)
        .update("ch01", 0, |st| st.status = Status::Failed)
        .expect("state");
    let text = stdout(&repo.loki(&["status"]));
    assert!(!text.contains("no run state"), "{text}");
}

/// Into a pipe or a file, `--watch` prints whole tables after blank lines,
/// with no escape codes.
#[test]
fn status_watch_into_a_file_has_no_escape_codes() {
    let repo = swarm_repo();
    let watch = Running::spawn(repo.path(), &["status", "--watch"]);
    let two = wait_until(Duration::from_secs(10), || {
        watch.stdout().matches("STREAM").count() >= 2
    });
    let text = watch.kill().stdout;
    assert!(two, "{text}");
    assert!(!text.contains('\x1b'), "{text:?}");
    assert!(text.starts_with("STREAM"), "{text}");
    assert!(text.contains("\n\nSTREAM"), "{text}");
}

/// A hand-edited state file may hold any text where a commit id belongs.
#[test]
fn show_survives_a_non_ascii_merge_commit() {
    let repo = swarm_repo();
    store(&repo)
        .update("ch01", 0, |st| {
            st.status = Status::Merged;
            st.attempt = 1;
            // Byte 12 falls inside a character.
            st.merge_commit = Some("aéééééééééééé".into());
        })
        .expect("state");
    let out = repo.loki(&["show", "ch01"]);
    // An error (exit 2), not a panic (101).
    assert_eq!(out.status.code(), Some(2), "{}", both(&out));
    assert!(!stderr(&out).contains("panicked"), "{}", both(&out));
    assert!(
        stderr(&out).contains("merge commit aééééééééééé)"),
        "{}",
        both(&out)
    );
}
