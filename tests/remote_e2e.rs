//! Several machines, one swarm: supervisors in separate clones (each with
//! its own HOME) share a bare remote served by `git daemon` on 127.0.0.1.
//! Streams are claimed on the remote, progress and merges are pushed to
//! it, and a supervisor killed with `kill -9` has its streams taken over
//! after their lease, from the branches it pushed.

mod common;
use common::*;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

/// The swarm shared in these tests: 24 streams in four chains of six
/// (`sNN` depends on `s(NN-4)`), each agent taking about a second.
/// `s09`'s first draft is too short (its check fails, so attempt 1 is
/// committed and pushed) and its second attempt takes 40 s: the
/// supervisor running it is the one killed.
fn shared_swarm() -> Swarm {
    let s = Swarm::empty();
    let mut toml = header(2, "env = { FAKE_AGENT_SLOW = \"1\" }").replace(
        "spawn_interval = \"0s\"\n",
        "spawn_interval = \"0s\"\nlease = \"3s\"\nremote = \"origin\"\n",
    );
    for i in 0..24 {
        let id = format!("s{i:02}");
        let dep = (i >= 4).then(|| format!("s{:02}", i - 4));
        let deps: Vec<&str> = dep.iter().map(String::as_str).collect();
        if id == "s09" {
            toml.push_str(&stream_with(
                &id,
                &deps,
                &[("FAKE_AGENT_WORDS", "10@1"), ("FAKE_AGENT_SLOW", "40@2")],
                "[streams.checks]\nwords = [100, 400]\n",
            ));
        } else {
            toml.push_str(&stream_with(&id, &deps, &[], ""));
        }
    }
    s.write(&toml);
    s
}

/// A supervisor on "machine" `name`: `loki run --plain` in its clone.
fn start(clone: &Path, home: &Path, name: &str) -> Running {
    Running::spawn_env(
        clone,
        &["run", "--plain"],
        &[
            ("HOME", &home.display().to_string()),
            ("LOKI_MACHINE", name),
        ],
    )
}

fn state(clone: &Path, id: &str) -> Option<Value> {
    let text = std::fs::read_to_string(clone.join(format!(".loki/state/{id}.json"))).ok()?;
    serde_json::from_str(&text).ok()
}

fn ts(s: &str) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("{s}: {e}"))
        .with_timezone(&chrono::Utc)
}

/// Whether commit `merge` on the remote has `work` in its history.
fn holds(d: &GitDaemon, merge: &str, work: &str) -> bool {
    std::process::Command::new("git")
        .args(["merge-base", "--is-ancestor", work, merge])
        .current_dir(d.bare())
        .status()
        .expect("git merge-base")
        .success()
}

/// The JSON records (claims, then the done record) on the first-parent
/// line of `refs/loki/done/<id>`, oldest first.
fn claim_history(d: &GitDaemon, id: &str) -> Vec<Value> {
    let log = d.git(&[
        "log",
        "--first-parent",
        "--reverse",
        "--format=%B%x00",
        &format!("refs/loki/done/{id}"),
    ]);
    log.split('\0')
        .filter_map(|m| m.find('{').map(|i| m[i..].trim().to_string()))
        .filter(|j| !j.is_empty())
        .map(|j| serde_json::from_str(&j).unwrap_or_else(|e| panic!("{j}: {e}")))
        .collect()
}

#[test]
fn three_supervisors_share_a_swarm_and_a_killed_ones_streams_are_taken_over() {
    let seed = shared_swarm();
    let d = GitDaemon::serve(seed.path());
    let tag = std::process::id();
    let names: Vec<String> = (1..=3).map(|i| format!("m{i}-{tag}")).collect();
    let clones: Vec<(PathBuf, PathBuf)> = names.iter().map(|n| d.clone_as(n)).collect();
    let mut runs: Vec<Option<Running>> = clones
        .iter()
        .zip(&names)
        .map(|((c, h), n)| Some(start(c, h, n)))
        .collect();

    // The supervisor running s09's long second attempt, once its first
    // attempt is on the remote.
    let mut victim = None;
    wait_for(
        "a supervisor runs s09's attempt 2 with attempt 1 pushed",
        Duration::from_secs(120),
        || {
            // Attempt 1's work is pushed, and the claim says attempt 2 runs.
            let pushed = d
                .git(&["for-each-ref", "--format=%(refname)", "refs/heads/loki/s09"])
                .contains("loki/s09")
                && d.git(&[
                    "for-each-ref",
                    "--format=%(contents)",
                    "refs/loki/claims/s09",
                ])
                .contains("\"attempt\":2");
            victim = clones.iter().position(|(c, _)| {
                state(c, "s09").is_some_and(|st| st["attempt"] == 2 && st["status"] == "running")
            });
            pushed && victim.is_some()
        },
        || {
            runs.iter()
                .flatten()
                .map(|r| r.output())
                .collect::<Vec<_>>()
                .join("\n=====\n")
        },
    );
    let victim = victim.unwrap_or_default();
    let pushed_attempt_1 = d
        .git(&["rev-parse", "refs/heads/loki/s09"])
        .trim()
        .to_string();

    // While it runs, the remote's refs alone say who holds what.
    let watcher = (victim + 1) % 3;
    let out = Running::spawn_env(
        &clones[watcher].0,
        &["status", "--remote", "--json"],
        &[("HOME", &clones[watcher].1.display().to_string())],
    )
    .wait();
    let view: Value =
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.both()));
    let s09 = view["streams"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["id"] == "s09"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(s09["state"], "held", "{s09}");
    assert!(
        s09["holder"]
            .as_str()
            .unwrap_or("")
            .starts_with(&names[victim]),
        "{s09}"
    );

    let killed_at = chrono::Utc::now();
    let killed = runs[victim].take().map(Running::kill);
    let victim_env = format!("LOKI_MACHINE={}", names[victim]);
    let left = wait_env_gone(&victim_env, Duration::from_secs(20));
    assert!(
        left.is_empty(),
        "the killed supervisor's agents live on: {left:?}"
    );

    let mut outputs = BTreeMap::new();
    for (i, r) in runs.iter_mut().enumerate() {
        if let Some(r) = r.take() {
            let done = r.wait_within(Duration::from_secs(240));
            assert_eq!(done.code, Some(0), "{}: {}", names[i], done.both());
            outputs.insert(i, done);
        }
    }
    let context = || {
        outputs
            .values()
            .map(|o| o.both())
            .chain(killed.iter().map(|k| k.both()))
            .collect::<Vec<_>>()
            .join("\n=====\n")
    };

    // Every stream merged exactly once on the remote target.
    let subjects = d.git(&["log", "--first-parent", "--format=%s", "main"]);
    for i in 0..24 {
        let id = format!("s{i:02}");
        let n = subjects
            .lines()
            .filter(|l| *l == format!("Merge stream {id}"))
            .count();
        assert_eq!(n, 1, "{id} merged {n} times\n{subjects}\n{}", context());
    }
    // Nothing of the protocol is left but the done records.
    assert!(
        d.git(&["for-each-ref", "refs/loki/claims", "refs/heads/loki"])
            .trim()
            .is_empty(),
        "claims or stream branches left on the remote"
    );
    assert_fsck_clean(&d.bare());

    // No stream was attempted by two live supervisors at once: the attempt
    // records of the three clones (the killed one's open attempt ends at
    // the kill) never overlap across clones.
    let mut by_stream: BTreeMap<String, Vec<(usize, u32, i64, i64)>> = BTreeMap::new();
    for (ci, (clone, _)) in clones.iter().enumerate() {
        for i in 0..24 {
            let id = format!("s{i:02}");
            let Some(st) = state(clone, &id) else {
                continue;
            };
            for a in st["attempts"].as_array().cloned().unwrap_or_default() {
                let start = ts(a["started_at"].as_str().unwrap_or_default()).timestamp_millis();
                let end = match a["ended_at"].as_str() {
                    Some(e) => ts(e).timestamp_millis(),
                    None => {
                        assert_eq!(ci, victim, "{id}: an open attempt in a live clone");
                        killed_at.timestamp_millis()
                    }
                };
                by_stream.entry(id.clone()).or_default().push((
                    ci,
                    a["n"].as_u64().unwrap_or(0) as u32,
                    start,
                    end,
                ));
            }
        }
    }
    for (id, attempts) in &by_stream {
        for a in attempts {
            for b in attempts {
                if a.0 < b.0 {
                    assert!(
                        a.3 <= b.2 || b.3 <= a.2,
                        "{id}: attempts {a:?} and {b:?} of two supervisors overlap"
                    );
                }
            }
        }
    }

    // From the claim histories: every stream the killed machine held and
    // did not merge changed hands only after its lease ran out (and a
    // holder is never followed by another while its lease lasts).
    let mut taken_over = Vec::new();
    for i in 0..24 {
        let id = format!("s{i:02}");
        let history = claim_history(&d, &id);
        for pair in history.windows(2) {
            let (a, b) = (&pair[0], &pair[1]);
            if a["holder"] == b["holder"] || b["holder"].is_null() {
                continue;
            }
            assert_eq!(
                a["holder"]["machine"],
                names[victim].as_str(),
                "{id}: {a} then {b}"
            );
            assert_eq!(b["took_over_from"], a["holder"], "{id}: {b}");
            assert!(
                ts(b["since"].as_str().unwrap_or_default())
                    > ts(a["expires"].as_str().unwrap_or_default()),
                "{id}: taken over before the lease ran out: {a} then {b}"
            );
            taken_over.push(id.clone());
        }
    }
    assert!(taken_over.contains(&"s09".to_string()), "{taken_over:?}");

    // s09 went on from the pushed branch: the taker's attempt is numbered
    // 3, and the merged work holds the killed machine's attempt 1.
    let history = claim_history(&d, "s09");
    let holders: Vec<String> = history
        .iter()
        .filter_map(|r| r["holder"]["machine"].as_str().map(str::to_string))
        .collect();
    assert_eq!(holders.first(), Some(&names[victim]), "{history:#?}");
    let taker = holders
        .iter()
        .find(|h| **h != names[victim])
        .cloned()
        .unwrap_or_else(|| panic!("s09 never changed hands: {history:#?}"));
    let last_of_victim = history
        .iter()
        .rfind(|r| r["holder"]["machine"] == names[victim].as_str())
        .cloned()
        .unwrap_or_default();
    let first_of_taker = history
        .iter()
        .find(|r| r["holder"]["machine"] == taker.as_str())
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        first_of_taker["took_over_from"]["machine"],
        names[victim].as_str()
    );
    assert!(
        ts(first_of_taker["since"].as_str().unwrap_or_default())
            > ts(last_of_victim["expires"].as_str().unwrap_or_default()),
        "taken over before the lease ran out: {last_of_victim} then {first_of_taker}"
    );
    let ti = names.iter().position(|n| *n == taker).unwrap_or_default();
    let taken = state(&clones[ti].0, "s09").unwrap_or_default();
    assert_eq!(taken["status"], "merged", "{taken}");
    assert_eq!(
        taken["attempts"][0]["n"],
        3,
        "{taken}\n{history:#?}\n{}",
        context()
    );
    let merge = taken["merge_commit"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        holds(&d, &merge, &pushed_attempt_1),
        "the merge of s09 does not hold the pushed attempt 1"
    );

    // Every clone's target followed the remote's.
    let head = d.git(&["rev-parse", "main"]);
    for (i, (clone, _)) in clones.iter().enumerate() {
        if i != victim {
            assert_eq!(git_in(clone, &["rev-parse", "main"]), head, "{}", names[i]);
        }
    }
}

#[test]
fn a_swarm_file_the_remote_does_not_have_is_refused_and_nothing_is_claimed() {
    let seed = Swarm::empty();
    let mut toml = header(1, "").replace(
        "spawn_interval = \"0s\"\n",
        "spawn_interval = \"0s\"\nremote = \"origin\"\n",
    );
    toml.push_str(&stream("ch01", &[], "chapters/ch01.md", ""));
    seed.write(&toml);
    let d = GitDaemon::serve(seed.path());
    let (clone, home) = d.clone_as("solo");
    let toml = std::fs::read_to_string(clone.join("loki.toml")).expect("loki.toml");
    std::fs::write(
        clone.join("loki.toml"),
        toml.replace("max_parallel = 1", "max_parallel = 2"),
    )
    .expect("write");
    git_in(&clone, &["commit", "-qam", "more at once"]);
    let home = home.display().to_string();
    let done = Running::spawn_env(&clone, &["run", "--plain"], &[("HOME", &home)]).wait();
    assert_eq!(done.code, Some(2), "{}", done.both());
    assert!(
        done.stderr.contains("is not the swarm file on origin/main")
            && done.stderr.contains("git push origin main"),
        "{}",
        done.both()
    );
    assert!(d.git(&["for-each-ref", "refs/loki"]).trim().is_empty());

    // A remote the clone does not have is named, with how to add it.
    let done = Running::spawn_env(
        &clone,
        &["run", "--plain", "--remote", "elsewhere"],
        &[("HOME", &home)],
    )
    .wait();
    assert_ne!(done.code, Some(0));
    assert!(
        done.stderr.contains("no git remote `elsewhere`") && done.stderr.contains("git remote add"),
        "{}",
        done.both()
    );
}

#[test]
fn a_remote_that_stops_answering_holds_the_merge_and_nothing_is_lost() {
    let seed = Swarm::empty();
    let mut toml = header(1, "env = { FAKE_AGENT_SLOW = \"1\" }").replace(
        "spawn_interval = \"0s\"\n",
        "spawn_interval = \"0s\"\nlease = \"30s\"\nremote = \"origin\"\n",
    );
    toml.push_str(&stream("a", &[], "chapters/a.md", ""));
    toml.push_str(&stream("b", &["a"], "chapters/b.md", ""));
    seed.write(&toml);
    let mut d = GitDaemon::serve(seed.path());
    let (clone, home) = d.clone_as("cut");
    let home = home.display().to_string();
    let run = Running::spawn_env(&clone, &["run", "--plain"], &[("HOME", &home)]);
    wait_for(
        "a runs",
        Duration::from_secs(60),
        || state(&clone, "a").is_some_and(|s| s["status"] == "running"),
        || run.output(),
    );
    d.stop();
    // The attempt ends and its merge waits for the remote, saying why.
    wait_for(
        "a waits to merge for the remote",
        Duration::from_secs(60),
        || {
            state(&clone, "a").is_some_and(|s| {
                s["status"] == "merging"
                    && s["reason"]
                        .as_str()
                        .is_some_and(|r| r.contains("the remote cannot be reached"))
            })
        },
        || run.output(),
    );
    assert!(
        run.output().contains("the remote `origin`"),
        "{}",
        run.output()
    );
    assert_eq!(
        state(&clone, "b").map(|s| s["status"].clone()),
        Some(Value::from("pending"))
    );
    d.start_again();
    let done = run.wait_within(Duration::from_secs(120));
    assert_eq!(done.code, Some(0), "{}", done.both());
    let subjects = d.git(&["log", "--first-parent", "--format=%s", "main"]);
    assert_eq!(
        subjects
            .lines()
            .filter(|l| l.starts_with("Merge stream "))
            .collect::<Vec<_>>(),
        vec!["Merge stream b", "Merge stream a"],
        "{subjects}"
    );
    assert!(d
        .git(&["for-each-ref", "refs/loki/claims"])
        .trim()
        .is_empty());
    assert_eq!(
        git_in(&clone, &["rev-parse", "main"]),
        d.git(&["rev-parse", "main"])
    );
}

#[test]
fn the_swarm_budget_counts_what_other_machines_spent() {
    let seed = Swarm::empty();
    let claude = seed.fake_claude();
    let mut toml = format!(
        "[swarm]\ntarget = \"main\"\nmax_parallel = 1\nspawn_interval = \"0s\"\nmax_budget_usd = 0.02\n\
         remote = \"origin\"\nlease = \"30s\"\n\n[agent]\ncommand = \"{}\"\ntimeout = \"60s\"\n\
         kill_grace = \"1s\"\nenv = {{ FAKE_AGENT_COST = \"0.01\" }}\n\n",
        claude.display()
    );
    for id in ["s1", "s2", "s3", "s4"] {
        toml.push_str(&stream(id, &[], &format!("chapters/{id}.md"), ""));
    }
    seed.write(&toml);
    let d = GitDaemon::serve(seed.path());
    let merges = || {
        d.git(&["log", "--first-parent", "--format=%s", "main"])
            .lines()
            .filter(|l| l.starts_with("Merge stream "))
            .count()
    };
    let (first, home1) = d.clone_as("spender");
    let home1 = home1.display().to_string();
    let done = Running::spawn_env(&first, &["run", "--plain"], &[("HOME", &home1)]).wait();
    assert_eq!(done.code, Some(1), "{}", done.both());
    assert_eq!(merges(), 2, "{}", done.both());

    // Another machine, with nothing spent here: the remote's done records
    // say the swarm's $0.02 is gone, so it starts nothing.
    let (second, home2) = d.clone_as("latecomer");
    let home2 = home2.display().to_string();
    let done = Running::spawn_env(&second, &["run", "--plain"], &[("HOME", &home2)]).wait();
    assert_eq!(done.code, Some(1), "{}", done.both());
    assert!(
        done.text()
            .contains("swarm budget reached: $0.02 spent of $0.02"),
        "{}",
        done.both()
    );
    assert_eq!(merges(), 2);
    for id in ["s3", "s4"] {
        let attempts =
            state(&second, id).map_or(0, |s| s["attempts"].as_array().map_or(0, Vec::len));
        assert_eq!(attempts, 0, "{id} started on the second machine");
    }
    assert!(d
        .git(&["for-each-ref", "refs/loki/claims"])
        .trim()
        .is_empty());
}

#[test]
fn a_stream_stopped_on_one_machine_goes_on_elsewhere_from_its_pushed_branch() {
    let seed = Swarm::empty();
    let mut toml = header(1, "").replace(
        "spawn_interval = \"0s\"\n",
        "spawn_interval = \"0s\"\nlease = \"30s\"\nremote = \"origin\"\n",
    );
    toml.push_str(&stream_with(
        "x",
        &[],
        &[("FAKE_AGENT_WORDS", "10@1"), ("FAKE_AGENT_SLOW", "30@2")],
        "[streams.checks]\nwords = [100, 400]\n",
    ));
    seed.write(&toml);
    let d = GitDaemon::serve(seed.path());
    let (first, home1) = d.clone_as("first");
    let (second, home2) = d.clone_as("second");
    let run = start(&first, &home1, "first");
    wait_for(
        "x runs its attempt 2 on the first machine",
        Duration::from_secs(60),
        || state(&first, "x").is_some_and(|s| s["attempt"] == 2 && s["status"] == "running"),
        || run.output(),
    );
    // Stopped for the night: its claim is released with the branch.
    run.signal(nix::sys::signal::Signal::SIGTERM);
    let done = run.wait_within(Duration::from_secs(60));
    assert_eq!(done.code, Some(130), "{}", done.both());
    let pushed = d
        .git(&["rev-parse", "refs/heads/loki/x"])
        .trim()
        .to_string();
    let claim = d.git(&["for-each-ref", "--format=%(contents)", "refs/loki/claims/x"]);
    assert!(claim.contains("\"attempt\":2"), "{claim}");

    // The second machine takes it over at once and goes on from it.
    let done = start(&second, &home2, "second").wait_within(Duration::from_secs(60));
    assert_eq!(done.code, Some(0), "{}", done.both());
    let st = state(&second, "x").unwrap_or_default();
    assert_eq!(st["status"], "merged", "{st}");
    assert_eq!(st["attempts"][0]["n"], 3, "{st}");
    let merge = st["merge_commit"].as_str().unwrap_or_default().to_string();
    assert!(
        holds(&d, &merge, &pushed),
        "the merge of x does not hold the first machine's work"
    );
    let history = claim_history(&d, "x");
    let machines: Vec<&str> = history
        .iter()
        .filter_map(|r| r["holder"]["machine"].as_str())
        .collect();
    assert_eq!(machines.first(), Some(&"first"), "{history:#?}");
    assert_eq!(machines.last(), Some(&"second"), "{history:#?}");
    assert!(
        history
            .iter()
            .any(|r| r["took_over_from"]["machine"] == "first"),
        "{history:#?}"
    );
}
