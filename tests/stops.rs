//! Every stop is obeyed (issue 11): SIGTERM, SIGHUP, a second Ctrl-C and
//! `loki signal STOP` end a run from each state in which it waits rather
//! than works — a rate-limit wait, a budget hold and a paused swarm (the
//! merge that waits for the user's checkout is covered in
//! tests/supervision.rs). Each wait here is 30 s or more; the run must end
//! well before it.

mod common;
use common::*;

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

/// How the run is asked to stop.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Stop {
    Term,
    Hup,
    /// Ctrl-C twice (the second once the first is acknowledged).
    IntTwice,
    /// `loki signal STOP`.
    SignalFile,
}

/// Well under every wait the tests set up (30 s).
const PROMPTLY: Duration = Duration::from_secs(20);

fn stop(s: &Swarm, run: &Running, how: Stop) {
    match how {
        Stop::Term => run.signal(Signal::SIGTERM),
        Stop::Hup => run.signal(Signal::SIGHUP),
        Stop::IntTwice => {
            run.signal(Signal::SIGINT);
            // Two signals sent at once may arrive as one: the second goes
            // once the first is recorded.
            s.wait_event("supervisor", "Ctrl-C", "");
            run.signal(Signal::SIGINT);
        }
        Stop::SignalFile => {
            let out = s.loki(&["signal", "STOP"]);
            assert!(out.status.success(), "{}", both(&out));
        }
    }
}

/// Waits for the run's end, which must come promptly; returns it.
fn ends_promptly(run: Running, how: Stop, state: &str) -> Done {
    let started = Instant::now();
    let done = run.wait_within(Duration::from_secs(60));
    assert!(
        started.elapsed() < PROMPTLY,
        "{state}, {how:?}: the run took {:?} to end:\n{}",
        started.elapsed(),
        done.both()
    );
    done
}

/// Every stop request ends a run it cut short with 130, STOP included
/// (README's exit codes).
const STOPPED: i32 = 130;

/// A rate-limit wait: `a`'s first attempt ends with claude's "rate limited"
/// result (api_error_status 429, no retry time: loki waits 30 s before it
/// starts any agent again), with nothing running meanwhile.
#[test]
fn a_stop_ends_a_run_that_waits_out_a_rate_limit() {
    for how in [Stop::Term, Stop::SignalFile, Stop::Hup] {
        let s = Swarm::empty();
        let claude = s.fake_claude();
        let mut toml = header(1, "");
        toml = toml.replace(
            &format!("command = \"{}\"", fake_agent().display()),
            &format!("command = \"{}\"", claude.display()),
        );
        toml.push_str(&stream_with(
            "a",
            &[],
            &[("FAKE_AGENT_RESULT_STATUS", "429@1")],
            "",
        ));
        s.write(&toml);
        let run = s.start();
        s.wait_event("rate_limit", "", "rate limited");
        stop(&s, &run, how);
        let done = ends_promptly(run, how, "rate-limit wait");
        assert_eq!(done.code, Some(STOPPED), "{how:?}: {}", done.both());
        assert_ne!(s.state("a")["status"], "merged", "{how:?}");
        s.assert_no_leftovers(&format!("{how:?}"));
        // Nothing was lost: the next run (the limit long gone) merges it.
        let again = s.run();
        assert_eq!(again.code, Some(0), "{how:?}: {}", again.both());
        s.assert_all_merged_once(&["a"]);
    }
}

/// A budget hold: the swarm budget is spent by `s1` while `s2` still runs
/// (30 s) and `s3` waits; nothing new may start. SIGTERM, SIGHUP and a
/// second Ctrl-C stop `s2` at once; STOP lets it finish (STOP's meaning),
/// here after 3 s, and then the run ends without starting `s3`.
#[test]
fn a_stop_ends_a_run_held_by_the_budget() {
    for how in [Stop::Term, Stop::Hup, Stop::IntTwice, Stop::SignalFile] {
        let s = Swarm::empty();
        let claude = s.fake_claude();
        let slow = if how == Stop::SignalFile { "3" } else { "30" };
        let mut toml = format!(
            "[swarm]\ntarget = \"main\"\nmax_parallel = 2\nspawn_interval = \"0s\"\nmax_budget_usd = 0.005\n\n\
             [agent]\ncommand = \"{}\"\ntimeout = \"60s\"\nidle_timeout = \"45s\"\nkill_grace = \"1s\"\nmax_attempts = 3\n\n",
            claude.display()
        );
        toml.push_str(&stream_with("s1", &[], &[], ""));
        toml.push_str(&stream_with("s2", &[], &[("FAKE_AGENT_SLOW", slow)], ""));
        toml.push_str(&stream_with("s3", &["s1"], &[], ""));
        s.write(&toml);
        let run = s.start();
        s.wait_event("budget", "", "swarm budget reached");
        assert_eq!(s.state("s2")["status"], "running", "{how:?}");
        stop(&s, &run, how);
        let done = ends_promptly(run, how, "budget hold");
        assert_eq!(done.code, Some(STOPPED), "{how:?}: {}", done.both());
        let s2 = s.state("s2")["status"].clone();
        if how == Stop::SignalFile {
            assert_eq!(s2, "merged", "{how:?}: STOP lets running attempts finish");
        } else {
            assert_eq!(s2, "interrupted", "{how:?}");
        }
        assert_eq!(
            s.state("s3")["attempts"].as_array().map_or(0, Vec::len),
            0,
            "{how:?}"
        );
        s.assert_no_leftovers(&format!("{how:?}"));
    }
}

/// A paused swarm (`loki pause` before the run): the run starts nothing and
/// waits for RESUME; a stop ends it.
#[test]
fn a_stop_ends_a_run_of_a_paused_swarm() {
    for how in [Stop::Term, Stop::SignalFile, Stop::Hup] {
        let s = Swarm::new(1, &[stream_with("a", &[], &[], "")]);
        let out = s.loki(&["pause"]);
        assert!(out.status.success(), "{}", both(&out));
        let run = s.start();
        s.wait_for("the run says it is paused", || {
            run.output().contains("paused")
        });
        s.ping_paused();
        stop(&s, &run, how);
        let done = ends_promptly(run, how, "paused swarm");
        assert_eq!(done.code, Some(STOPPED), "{how:?}: {}", done.both());
        assert_eq!(s.state("a")["status"], "pending", "{how:?}");
        assert_eq!(
            s.swarm_state()["paused"],
            true,
            "{how:?}: the pause is kept"
        );
    }
}
