//! The end-to-end fixture: a [`Repo`] with a swarm file, the supervisors
//! started in it, what they write (`.loki/state/*.json`, `events.jsonl`,
//! the signal folders), and the process groups of the agents they caused.
//!
//! Every agent group the runs recorded (from `events.jsonl`, the state
//! files' `process` field, or pids a test adds) is remembered; a test
//! asserts through `/proc` that none of their processes is left, and a
//! dropped [`Swarm`] kills whatever is left of them when a test fails
//! halfway.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

use super::*;

pub struct Swarm {
    pub repo: Repo,
    /// Ticks since boot when the test began (minus a little slack).
    pub since: u64,
    /// Groups learnt so far (and pids the test added).
    pgids: Mutex<BTreeSet<i32>>,
    /// A folder outside the repo (pid files, a bin dir, symlink targets).
    pub scratch: tempfile::TempDir,
}

impl Swarm {
    /// A repo with one commit and no swarm file yet (see [`Swarm::write`]).
    pub fn empty() -> Swarm {
        Swarm {
            repo: Repo::new(),
            since: now_ticks().saturating_sub(2),
            pgids: Mutex::new(BTreeSet::new()),
            scratch: tempfile::Builder::new()
                .prefix("loki-e2e-")
                .tempdir()
                .expect("tempdir"),
        }
    }

    /// A repo whose committed swarm file is `header(max_parallel)` and
    /// `streams`, with the chapter template.
    pub fn new(max_parallel: usize, streams: &[String]) -> Swarm {
        let s = Swarm::empty();
        let mut toml = header(max_parallel, "");
        for st in streams {
            toml.push_str(st);
        }
        s.write(&toml);
        s
    }

    /// Commits `toml` as the swarm file, with the chapter template.
    pub fn write(&self, toml: &str) {
        self.repo.write_swarm(CHAPTER, toml);
    }

    pub fn path(&self) -> &Path {
        self.repo.path()
    }

    /// `name` in the scratch folder.
    pub fn scratch(&self, name: &str) -> PathBuf {
        self.scratch.path().join(name)
    }

    /// A shell script `name` in the scratch folder that runs `before`, the
    /// fake agent with loki's arguments, then `after`, and exits with the
    /// fake agent's status: a hostile agent's extra steps around honest work.
    pub fn agent_script(&self, name: &str, before: &str, after: &str) -> PathBuf {
        let path = self.scratch(name);
        std::fs::write(
            &path,
            format!(
                "#!/bin/sh\n{before}\n'{}' \"$@\"\nrc=$?\n{after}\nexit $rc\n",
                fake_agent().display()
            ),
        )
        .expect("agent script");
        make_executable(&path);
        path
    }

    /// The fake agent as `bin/claude` in the scratch folder (loki knows
    /// claude by the file name and reads its stream-json).
    pub fn fake_claude(&self) -> PathBuf {
        let bin = self.scratch("bin");
        std::fs::create_dir_all(&bin).expect("mkdir bin");
        let claude = bin.join("claude");
        std::os::unix::fs::symlink(fake_agent(), &claude).expect("symlink claude");
        claude
    }

    // ----- running loki --------------------------------------------------

    /// `loki <args>` to its end.
    pub fn loki(&self, args: &[&str]) -> std::process::Output {
        self.repo.loki(args)
    }

    /// `loki <args>` in the background.
    pub fn spawn(&self, args: &[&str]) -> Running {
        Running::spawn(self.path(), args)
    }

    /// `loki run --plain` in the background.
    pub fn start(&self) -> Running {
        self.spawn(&["run", "--plain"])
    }

    /// `loki run --plain` to its end.
    pub fn run(&self) -> Done {
        self.start().wait()
    }

    // ----- state files ---------------------------------------------------

    pub fn state_dir(&self) -> PathBuf {
        self.path().join(".loki/state")
    }

    pub fn state_file(&self, id: &str) -> PathBuf {
        self.state_dir().join(format!("{id}.json"))
    }

    /// `.loki/state/<id>.json`; panics when it is missing or unreadable.
    pub fn state(&self, id: &str) -> Value {
        let text = std::fs::read_to_string(self.state_file(id))
            .unwrap_or_else(|e| panic!("reading the state of {id}: {e}"));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("state of {id}: {e}"))
    }

    /// `.loki/state/<id>.json`, if it exists and parses.
    pub fn try_state(&self, id: &str) -> Option<Value> {
        let text = std::fs::read_to_string(self.state_file(id)).ok()?;
        serde_json::from_str(&text).ok()
    }

    pub fn state_bytes(&self, id: &str) -> Vec<u8> {
        std::fs::read(self.state_file(id)).expect("state file")
    }

    /// Every stream state file, by id.
    pub fn states(&self) -> BTreeMap<String, Value> {
        let mut out = BTreeMap::new();
        let Ok(dir) = std::fs::read_dir(self.state_dir()) else {
            return out;
        };
        for e in dir.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            let Some(id) = name.strip_suffix(".json") else {
                continue;
            };
            if id == "swarm" {
                continue;
            }
            if let Ok(text) = std::fs::read_to_string(e.path()) {
                if let Ok(v) = serde_json::from_str::<Value>(&text) {
                    out.insert(id.to_string(), v);
                }
            }
        }
        out
    }

    /// `swarm.json` (`{}` before the first run writes it).
    pub fn swarm_state(&self) -> Value {
        let text = std::fs::read_to_string(self.state_dir().join("swarm.json"))
            .unwrap_or_else(|_| "{}".into());
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    /// The stream `id` of `loki status --json`.
    pub fn json_stream(&self, id: &str) -> Value {
        status_stream(&self.repo, id)
    }

    /// `.loki/runs/<id>/attempt-<n>/prompt.md`.
    pub fn prompt(&self, id: &str, n: u32) -> String {
        self.repo
            .read(&format!(".loki/runs/{id}/attempt-{n}/prompt.md"))
    }

    // ----- events.jsonl --------------------------------------------------

    pub fn events_text(&self) -> String {
        std::fs::read_to_string(self.state_dir().join("events.jsonl")).unwrap_or_default()
    }

    pub fn events(&self) -> Vec<Value> {
        self.events_text()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Whether `events.jsonl` has an event of `kind` whose message starts
    /// with `prefix` and contains `needle`.
    pub fn has_event(&self, kind: &str, prefix: &str, needle: &str) -> bool {
        self.events().iter().any(|e| {
            let m = e["message"].as_str().unwrap_or("");
            e["kind"] == kind && m.starts_with(prefix) && m.contains(needle)
        })
    }

    /// Whether a transition of `id` into `to` was logged.
    pub fn transitioned(&self, id: &str, to: &str) -> bool {
        self.events()
            .iter()
            .any(|e| e["kind"] == "transition" && e["stream"] == id && e["to"] == to)
    }

    // ----- waiting -------------------------------------------------------

    /// Waits until `pred` holds; panics with the events after [`WAIT_LIMIT`].
    pub fn wait_for(&self, what: &str, pred: impl FnMut() -> bool) {
        wait_for(what, WAIT_LIMIT, pred, || {
            format!("events:\n{}", self.events_text())
        });
    }

    /// Waits until `pred` holds for the stream's state file; returns it.
    pub fn wait_state(&self, id: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let mut last = None;
        wait_for(
            &format!("stream {id}: {what}"),
            WAIT_LIMIT,
            || {
                last = self.try_state(id);
                last.as_ref().is_some_and(&pred)
            },
            || {
                format!(
                    "state: {:?}\nevents:\n{}",
                    self.try_state(id),
                    self.events_text()
                )
            },
        );
        last.expect("state")
    }

    /// Waits until the stream's agent is running and recorded (its group is
    /// remembered); returns the state.
    pub fn wait_running(&self, id: &str) -> Value {
        let v = self.wait_state(id, "running with a recorded process", |v| {
            v["status"] == "running"
                && v["process"]["pid"].as_i64().is_some()
                && v["process"]["pgid"].as_i64().is_some()
        });
        self.groups();
        v
    }

    /// [`Swarm::wait_running`], returning the agent's pid.
    pub fn wait_running_pid(&self, id: &str) -> i32 {
        self.wait_running(id)["process"]["pid"]
            .as_i64()
            .expect("pid") as i32
    }

    /// Waits for an event as [`Swarm::has_event`] finds it.
    pub fn wait_event(&self, kind: &str, prefix: &str, needle: &str) {
        self.wait_for(
            &format!("a `{kind}` event `{prefix}…` containing `{needle}`"),
            || self.has_event(kind, prefix, needle),
        );
    }

    // ----- signal files --------------------------------------------------

    pub fn signals(&self) -> PathBuf {
        self.path().join(".loki/signals")
    }

    /// Drops a signal the way agents do: a dot-temp, renamed into place.
    pub fn drop_signal(&self, name: &str, body: &[u8]) {
        let dir = self.signals();
        std::fs::create_dir_all(&dir).expect("mkdir signals");
        let tmp = dir.join(format!(".tmp-{}-{name}", std::process::id()));
        std::fs::write(&tmp, body).expect("write signal");
        std::fs::rename(&tmp, dir.join(name)).expect("rename signal");
    }

    /// Files of `sub` (`processed` or `rejected`) that a signal dropped as
    /// `name` became (`<name>.<nanos>-<pid>`), without the `.reason` files.
    pub fn taken(&self, sub: &str, name: &str) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let Ok(dir) = std::fs::read_dir(self.signals().join(sub)) else {
            return out;
        };
        for e in dir.flatten() {
            let file = e.file_name().to_string_lossy().to_string();
            if file.ends_with(".reason") {
                continue;
            }
            let Some((orig, unique)) = file.rsplit_once('.') else {
                continue;
            };
            let unique_ok = unique
                .split_once('-')
                .is_some_and(|(a, b)| is_digits(a) && is_digits(b));
            if orig == name && unique_ok {
                out.push(e.path());
            }
        }
        out.sort();
        out
    }

    /// Reason texts of the rejected signals dropped as `name`.
    pub fn reasons(&self, name: &str) -> Vec<String> {
        self.taken("rejected", name)
            .iter()
            .map(|p| {
                let mut r = p.as_os_str().to_os_string();
                r.push(".reason");
                std::fs::read_to_string(&r).unwrap_or_default()
            })
            .collect()
    }

    /// Waits until `n` signals dropped as `name` are rejected, each with its
    /// reason file; returns the reason texts (`signal: <name>\nreason: <why>\n`).
    pub fn wait_rejected_n(&self, name: &str, n: usize) -> Vec<String> {
        let mut reasons = Vec::new();
        self.wait_for(
            &format!("{n} signal(s) {name} rejected with a reason"),
            || {
                reasons = self.reasons(name);
                reasons.len() >= n && reasons.iter().all(|r| r.contains("reason: "))
            },
        );
        reasons
    }

    pub fn wait_rejected(&self, name: &str) -> String {
        self.wait_rejected_n(name, 1).remove(0)
    }

    /// A witness that the running supervisor went round its loop: a PAUSE
    /// while the swarm is paused is rejected ("already paused") by the main
    /// loop, and each turn of that loop first starts whatever may start. So
    /// once it is rejected, every chance to start something that came
    /// before this call has been taken, and a test can assert that nothing
    /// started.
    pub fn ping_paused(&self) {
        let before = self.taken("rejected", "PAUSE").len();
        self.drop_signal("PAUSE", b"");
        let reasons = self.wait_rejected_n("PAUSE", before + 1);
        assert!(
            reasons.iter().any(|r| r.contains("already paused")),
            "{reasons:?}"
        );
        self.wait_event("signal_rejected", "PAUSE: ", "already paused");
    }

    /// Names in the signal folder itself (not in its subfolders).
    pub fn waiting_signals(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.signals())
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().to_string())
                    .filter(|n| n != "processed" && n != "rejected")
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    // ----- agent processes -----------------------------------------------

    /// Learns every process group the runs recorded: `events.jsonl`
    /// ("attempt n started: pid P (group G)"), the state files' `process`
    /// field, and pids the test added.
    pub fn groups(&self) -> BTreeSet<i32> {
        let mut set = self.pgids.lock().map(|g| g.clone()).unwrap_or_default();
        for e in self.events() {
            if e["kind"] != "agent" {
                continue;
            }
            if let Some(g) = e["message"]
                .as_str()
                .and_then(|m| m.split("(group ").nth(1))
                .and_then(|r| r.split(')').next())
                .and_then(|g| g.trim().parse::<i32>().ok())
            {
                set.insert(g);
            }
        }
        for st in self.states().values() {
            if let Some(g) = st["process"]["pgid"].as_i64() {
                set.insert(g as i32);
            }
        }
        if let Ok(mut g) = self.pgids.lock() {
            g.extend(set.iter().copied());
        }
        set
    }

    /// Remembers the group of `pid` (and `pid` itself).
    pub fn add_group(&self, pid: i32) {
        let g = stat(pid).map(|s| s.pgrp).unwrap_or(pid);
        if let Ok(mut set) = self.pgids.lock() {
            set.insert(g);
            set.insert(pid);
        }
    }

    /// No process of any recorded group is alive, now.
    pub fn assert_no_leftovers(&self, when: &str) {
        let groups = self.groups();
        assert!(
            !groups.is_empty(),
            "{when}: no agent process group was recorded"
        );
        let left = live_members(&groups, self.since);
        assert!(
            left.is_empty(),
            "{when}: processes of the run's agent groups are still alive (pid, pgid): {left:?}; groups {groups:?}"
        );
    }

    /// No process of any recorded group is alive, once a killed one has
    /// had a moment to leave /proc.
    pub fn assert_no_agent_left(&self) {
        let groups = self.groups();
        assert!(!groups.is_empty(), "no agent process group was recorded");
        for g in groups {
            let left = wait_group_gone(g, self.since);
            assert!(
                left.is_empty(),
                "processes of agent group {g} are still alive: {left:?}"
            );
        }
    }

    // ----- git -----------------------------------------------------------

    /// Merge subjects on main's first-parent line, newest first.
    pub fn merges(&self) -> Vec<String> {
        first_parent_subjects(&self.repo, "main")
            .into_iter()
            .filter(|s| s.starts_with("Merge stream "))
            .collect()
    }

    /// Every commit the state records is still in the object store and
    /// reachable from the target or the stream's branch.
    pub fn assert_no_commit_lost(&self) {
        for (id, st) in self.states() {
            let mut commits: Vec<String> = st["attempts"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x["commit"].as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            if let Some(m) = st["merge_commit"].as_str() {
                commits.push(m.to_string());
            }
            for c in commits {
                let reachable = ["main".to_string(), format!("loki/{id}")].iter().any(|r| {
                    Command::new("git")
                        .args(["merge-base", "--is-ancestor", &c, r])
                        .current_dir(self.path())
                        .stderr(Stdio::null())
                        .status()
                        .is_ok_and(|s| s.success())
                });
                assert!(
                    reachable,
                    "commit {c} of stream {id} is reachable from neither main nor loki/{id}"
                );
            }
        }
    }

    /// The run is complete: every id merged exactly once into main, git is
    /// healthy, nothing is left behind.
    pub fn assert_all_merged_once(&self, ids: &[&str]) {
        let subjects = first_parent_subjects(&self.repo, "main");
        for id in ids {
            let n = subjects
                .iter()
                .filter(|s| **s == format!("Merge stream {id}"))
                .count();
            assert_eq!(
                n, 1,
                "`Merge stream {id}` appears {n} times on main: {subjects:?}"
            );
            assert_eq!(stream_status(&self.repo, id), "merged", "stream {id}");
        }
        assert_clean_repo(&self.repo);
        self.assert_no_commit_lost();
    }
}

impl Drop for Swarm {
    /// Whatever happened, nothing of the recorded groups outlives the test.
    fn drop(&mut self) {
        let groups = self.groups();
        for _ in 0..50 {
            let left = live_members(&groups, self.since);
            if left.is_empty() {
                break;
            }
            for (pid, _) in left {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}
