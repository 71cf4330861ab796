//! `loki run --wait`: a run that stays up for people. Approvals and retries
//! sent from another process while it waits are acted on at once, and the
//! run ends when every stream is merged.

mod common;
use common::*;

#[test]
fn a_waiting_run_merges_an_approval_sent_from_another_process() {
    let s = Swarm::new(
        2,
        &[
            stream("gate", &[], "chapters/gate.md", "approve = true"),
            stream("free", &[], "chapters/free.md", ""),
            stream("after", &["gate"], "chapters/after.md", ""),
        ],
    );
    let mut run = s.spawn(&["run", "--plain", "--wait"]);
    s.wait_state("gate", "awaiting approval", |st| {
        st["status"] == "awaiting_approval"
    });
    s.wait_state("free", "merged", |st| st["status"] == "merged");
    // The note says what waits and how to end the wait.
    s.wait_for("the waiting note", || {
        run.stdout()
            .contains("waiting (--wait) for people: gate awaits approval (loki approve gate)")
    });
    // Without --wait the run would have ended here.
    assert!(!run.exited(), "{}", run.output());
    // Status shows the wait for a person apart from the work.
    let table = stdout(&s.loki(&["status"]));
    let row = table
        .lines()
        .find(|l| l.starts_with("gate "))
        .unwrap_or_else(|| panic!("no row for gate:\n{table}"));
    assert!(row.contains("waiting for approval for "), "{table}");
    assert!(row.contains("(loki approve gate)"), "{table}");
    assert!(table.contains("; next: approve gate"), "{table}");

    let out = s.loki(&["approve", "gate", "--by", "maria"]);
    assert!(out.status.success(), "{}", both(&out));
    let done = run.wait();
    assert_eq!(done.code, Some(0), "{}", done.both());
    s.assert_all_merged_once(&["gate", "free", "after"]);
    assert_eq!(s.state("gate")["approved_by"], "maria");
}

#[test]
fn a_waiting_run_takes_a_retry_of_a_failed_stream() {
    let s = Swarm::new(
        1,
        &[stream_with(
            "flaky",
            &[],
            &[("FAKE_AGENT_FAIL", "@1")],
            "max_attempts = 1",
        )],
    );
    let mut run = s.spawn(&["run", "--plain", "--wait"]);
    s.wait_state("flaky", "failed", |st| st["status"] == "failed");
    s.wait_for("the waiting note", || {
        run.stdout().contains("flaky is failed (loki retry flaky)")
    });
    assert!(!run.exited(), "{}", run.output());
    let out = s.loki(&["retry", "flaky"]);
    assert!(out.status.success(), "{}", both(&out));
    let done = run.wait();
    assert_eq!(done.code, Some(0), "{}", done.both());
    s.assert_all_merged_once(&["flaky"]);
    assert_eq!(s.state("flaky")["attempt"], 2);
}

#[test]
fn a_waiting_run_still_ends_on_ctrl_c() {
    let s = Swarm::new(
        1,
        &[stream("gate", &[], "chapters/gate.md", "approve = true")],
    );
    let run = s.spawn(&["run", "--plain", "--wait"]);
    s.wait_state("gate", "awaiting approval", |st| {
        st["status"] == "awaiting_approval"
    });
    s.wait_for("the waiting note", || {
        run.stdout().contains("waiting (--wait)")
    });
    run.signal(nix::sys::signal::Signal::SIGINT);
    let done = run.wait();
    assert_eq!(done.code, Some(130), "{}", done.both());
    assert_eq!(s.state("gate")["status"], "awaiting_approval");
}
