//! The machine's transitions and refusals, status by status and input by
//! input, without a process, a repository or a clock.

use super::*;
use crate::model::SwarmState;

const ALL: &[Status] = &[
    Status::Pending,
    Status::Ready,
    Status::Preparing,
    Status::Running,
    Status::Checking,
    Status::Validating,
    Status::Retrying,
    Status::AwaitingApproval,
    Status::Merging,
    Status::Merged,
    Status::Failed,
    Status::Conflicted,
    Status::Blocked,
    Status::Cancelled,
    Status::Interrupted,
];

/// The context the machine's and the door's tests decide in: a fixed
/// time, 3 attempts, no budget, a supervisor running.
pub(crate) fn ctx() -> Ctx {
    Ctx {
        now: "2026-12-01T00:00:00Z".into(),
        max_attempts: 3,
        max_budget_usd: None,
        target: "main".into(),
        approver: "ana".into(),
        supervised: true,
        max_resolve: 0,
        validators: false,
    }
}

/// A stream in `status` with one finished, counted attempt.
fn stream(status: Status) -> StreamState {
    StreamState {
        id: crate::model::StreamId::parse("ch01").unwrap(),
        version: 7,
        status,
        attempt: 1,
        attempts: vec![AttemptRecord {
            n: 1,
            started_at: "2026-11-30T23:00:00Z".into(),
            ended_at: Some("2026-11-30T23:10:00Z".into()),
            outcome: "ok".into(),
            counted: true,
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn steer(kind: Kind) -> Input {
    Input::Steer(Steer {
        kind,
        note: None,
        count: false,
    })
}

fn status_after(st: &StreamState, input: Input) -> Result<Status, Refusal> {
    handle(st, input, &ctx()).map(|s| s.state.status)
}

/// What every signal kind does in every status: the new status, or `None`
/// for a refusal. Flags and records are tested separately below.
#[test]
fn every_signal_in_every_status() {
    use Status::*;
    for &s in ALL {
        let st = stream(s);
        for &kind in Kind::ALL {
            let got = status_after(&st, steer(kind)).ok();
            let want: Option<Status> = match (kind, s) {
                (Kind::Approve, AwaitingApproval) => Some(Merging),
                (Kind::Approve, _) => None,
                (Kind::MergeRequested, AwaitingApproval) => Some(Merging),
                (Kind::MergeRequested, Running) => Some(Running),
                (Kind::MergeRequested, _) => None,
                (Kind::FeatureReady, Running) => Some(Running),
                (Kind::FeatureReady, _) => None,
                (Kind::Reject, AwaitingApproval) => Some(Retrying),
                (Kind::Reject, _) => None,
                (Kind::TestsFailed, Running) => Some(Running),
                (Kind::TestsFailed, AwaitingApproval) => Some(Retrying),
                (Kind::TestsFailed, _) => None,
                (Kind::TestsPassed, s) => Some(s),
                (Kind::Cancel, Merged | Cancelled | Merging) => None,
                (Kind::Cancel, _) => Some(Cancelled),
                (Kind::Retry, Conflicted) => Some(Merging),
                (Kind::Retry, Interrupted) => Some(Interrupted),
                (Kind::Retry, Failed | Blocked | Cancelled) => Some(Pending),
                (Kind::Retry, Validating) => Some(Validating),
                (Kind::Retry, _) => None,
                (Kind::Pause, Merged | Cancelled) => None,
                (Kind::Pause, s) => Some(s),
                (Kind::Resume, _) => None, // not paused
                (Kind::Stop, Preparing) => Some(Interrupted),
                (Kind::Stop, Running) => Some(Running),
                (Kind::Stop, Validating) => Some(Validating),
                (Kind::Stop, _) => None,
            };
            assert_eq!(got, want, "{} in {s}", kind.as_str());
        }
    }
}

#[test]
fn a_refusal_names_the_signal_the_stream_and_its_status() {
    let e = handle(&stream(Status::Running), steer(Kind::Approve), &ctx()).unwrap_err();
    assert_eq!(
        e.why,
        "APPROVE: stream ch01 is running, not awaiting approval"
    );
    let e = handle(&stream(Status::Merged), steer(Kind::Cancel), &ctx()).unwrap_err();
    assert_eq!(e.why, "CANCEL: stream ch01 is merged, already finished");
}

#[test]
fn approval_records_who_and_queues_the_merge() {
    let step = handle(
        &stream(Status::AwaitingApproval),
        Input::Steer(Steer {
            kind: Kind::Approve,
            note: Some("maria".into()),
            count: false,
        }),
        &ctx(),
    )
    .unwrap();
    assert_eq!(step.state.approved_by.as_deref(), Some("maria"));
    assert_eq!(step.state.reason.as_deref(), Some("approved by maria"));
    assert_eq!(step.effects, vec![Effect::QueueMerge { with_edits: true }]);
    assert_eq!(
        step.transition(),
        Some((Status::AwaitingApproval, Status::Merging))
    );
    // Nobody named: the user running the command.
    let step = handle(
        &stream(Status::AwaitingApproval),
        steer(Kind::Approve),
        &ctx(),
    )
    .unwrap();
    assert_eq!(step.state.approved_by.as_deref(), Some("ana"));
}

#[test]
fn signals_to_a_running_agent_need_a_supervisor() {
    let direct = Ctx {
        supervised: false,
        max_resolve: 0,
        validators: false,
        ..ctx()
    };
    for kind in [
        Kind::MergeRequested,
        Kind::FeatureReady,
        Kind::TestsFailed,
        Kind::Stop,
    ] {
        let e = handle(&stream(Status::Running), steer(kind), &direct).unwrap_err();
        assert!(
            e.why
                .contains("is recorded as running but no supervisor is running"),
            "{}: {e}",
            kind.as_str()
        );
    }
    let step = handle(
        &stream(Status::Running),
        steer(Kind::MergeRequested),
        &ctx(),
    )
    .unwrap();
    // An agent can write MERGE_REQUESTED: it ends the attempt, and never
    // stands for a person's approval.
    assert_eq!(step.effects, vec![Effect::StopAgent(AgentStop::Finish)]);
    assert_eq!(step.state.approved_by, None);
    let step = handle(&stream(Status::Running), steer(Kind::TestsFailed), &ctx()).unwrap();
    assert_eq!(
        step.state.tests.as_deref(),
        Some("failed: the tests failed")
    );
    assert_eq!(
        step.effects,
        vec![
            Effect::FailAttempt("the tests failed".into()),
            Effect::StopAgent(AgentStop::Finish)
        ]
    );
    let step = handle(&stream(Status::Running), steer(Kind::Stop), &ctx()).unwrap();
    assert_eq!(
        step.effects,
        vec![Effect::Hold, Effect::StopAgent(AgentStop::Interrupt)]
    );
}

#[test]
fn an_uncounted_rejection_keeps_the_allowance() {
    let st = stream(Status::AwaitingApproval);
    let step = handle(
        &st,
        Input::Steer(Steer {
            kind: Kind::Reject,
            note: Some("more rain".into()),
            count: false,
        }),
        &ctx(),
    )
    .unwrap();
    assert_eq!(step.state.status, Status::Retrying);
    assert_eq!(
        step.state.feedback.as_deref(),
        Some("- Reviewer: more rain")
    );
    assert_eq!(step.state.reason.as_deref(), Some("rejected: more rain"));
    let a = step.state.attempts.last().unwrap();
    assert_eq!((a.outcome.as_str(), a.counted), ("rejected", false));
    assert_eq!(step.state.used_attempts(), 0);
}

#[test]
fn a_counted_rejection_of_the_last_attempt_fails_the_stream() {
    let st = stream(Status::AwaitingApproval);
    let one = Ctx {
        max_attempts: 1,
        ..ctx()
    };
    let step = handle(
        &st,
        Input::Steer(Steer {
            kind: Kind::Reject,
            note: Some("no".into()),
            count: true,
        }),
        &one,
    )
    .unwrap();
    assert_eq!(step.state.status, Status::Failed);
    assert_eq!(
        step.state.reason.as_deref(),
        Some("rejected: no (after 1 attempt(s))")
    );
    assert_eq!(
        step.state.finished_at.as_deref(),
        Some("2026-12-01T00:00:00Z")
    );
    // With attempts left it retries and says how many.
    let step = handle(
        &st,
        Input::Steer(Steer {
            kind: Kind::Reject,
            note: Some("no".into()),
            count: true,
        }),
        &ctx(),
    )
    .unwrap();
    assert_eq!(
        step.state.reason.as_deref(),
        Some("rejected: no (2 attempt(s) left)")
    );
    // TESTS_FAILED on a draft awaiting approval always counts.
    let step = handle(&st, steer(Kind::TestsFailed), &one).unwrap();
    assert_eq!(step.state.status, Status::Failed);
    assert!(step.state.tests.as_deref().unwrap().starts_with("failed: "));
}

#[test]
fn retry_renews_the_allowance_and_unblocks_dependents() {
    let mut st = stream(Status::Failed);
    st.attempts[0].outcome = "failed".into();
    let step = handle(&st, steer(Kind::Retry), &ctx()).unwrap();
    assert_eq!(step.state.status, Status::Pending);
    assert_eq!(step.state.used_attempts(), 0);
    assert_eq!(
        step.effects,
        vec![Effect::Release, Effect::UnblockDependents]
    );
    let step = handle(&stream(Status::Conflicted), steer(Kind::Retry), &ctx()).unwrap();
    assert_eq!(
        step.effects,
        vec![Effect::Release, Effect::QueueMerge { with_edits: true }]
    );
    assert_eq!(step.state.reason.as_deref(), Some("merging again"));
}

#[test]
fn cancel_of_a_preparing_stream_ends_its_attempt() {
    let mut st = stream(Status::Preparing);
    st.attempts[0].ended_at = None;
    st.attempts[0].outcome = String::new();
    let step = handle(
        &st,
        Input::Steer(Steer {
            kind: Kind::Cancel,
            note: Some("not needed".into()),
            count: false,
        }),
        &ctx(),
    )
    .unwrap();
    assert_eq!(step.state.status, Status::Cancelled);
    assert_eq!(step.state.reason.as_deref(), Some("cancelled: not needed"));
    let a = step.state.attempts.last().unwrap();
    assert_eq!(a.outcome, "cancelled");
    assert!(a.ended_at.is_some());
    assert_eq!(step.effects, vec![Effect::StopAgent(AgentStop::Cancel)]);
}

#[test]
fn pause_resume_and_tests_passed_change_only_their_fields() {
    let st = stream(Status::Pending);
    let paused = handle(&st, steer(Kind::Pause), &ctx()).unwrap();
    assert!(paused.state.paused);
    assert!(paused.events.is_empty(), "no status change, no transition");
    assert_eq!(
        handle(&paused.state, steer(Kind::Pause), &ctx())
            .unwrap_err()
            .why,
        "PAUSE: stream ch01 is pending, already paused"
    );
    let resumed = handle(&paused.state, steer(Kind::Resume), &ctx()).unwrap();
    assert!(!resumed.state.paused);
    let tested = handle(
        &st,
        Input::Steer(Steer {
            kind: Kind::TestsPassed,
            note: Some("ci 41".into()),
            count: false,
        }),
        &ctx(),
    )
    .unwrap();
    assert_eq!(tested.state.tests.as_deref(), Some("passed: ci 41"));
}

#[test]
fn an_attempt_starts_prepares_runs_and_is_checked() {
    let st = stream(Status::Pending);
    let start = handle(&st, Input::Start { n: 2 }, &ctx()).unwrap();
    assert_eq!(start.state.status, Status::Preparing);
    assert_eq!(start.state.attempt, 2);
    assert_eq!(start.state.attempts.len(), 2);
    assert!(start.state.attempts[1].counted);
    for s in [Status::Running, Status::Merged, Status::AwaitingApproval] {
        assert!(handle(&stream(s), Input::Start { n: 2 }, &ctx()).is_err());
    }
    let prepared = Input::Prepared {
        worktree: "/r/.loki/worktrees/ch01".into(),
        base: "abc".into(),
        agent: "claude 2.1.197".into(),
    };
    let run = handle(&start.state, prepared.clone(), &ctx()).unwrap();
    assert_eq!(run.state.status, Status::Running);
    assert_eq!(run.state.base_commit.as_deref(), Some("abc"));
    assert!(
        handle(&run.state, prepared, &ctx()).is_err(),
        "not preparing"
    );
    let rec = ProcessRecord {
        pid: 10,
        pgid: 10,
        start_time: 5,
        boot: 0,
        token: 0,
    };
    let started = handle(
        &run.state,
        Input::ProcessStarted {
            rec,
            role: Role::Agent,
        },
        &ctx(),
    )
    .unwrap();
    assert_eq!(started.state.process, Some(rec));
    assert_eq!(started.events[0].kind, "agent");
    let session = handle(&started.state, Input::Session("s-1".into()), &ctx()).unwrap();
    assert_eq!(
        session.state.attempts.last().unwrap().session_id.as_deref(),
        Some("s-1")
    );
    let ended = handle(
        &session.state,
        Input::AttemptEnded {
            outcome: Outcome::Ok,
            exit: Some(0),
            reason: None,
            cost_usd: 0.25,
            turns: 4,
        },
        &ctx(),
    )
    .unwrap();
    assert_eq!(ended.state.process, None);
    assert_eq!(ended.state.cost_usd, 0.25);
    let a = ended.state.attempts.last().unwrap();
    assert_eq!((a.turns, a.exit_code, a.counted), (4, Some(0), true));
    // A record closes once: its cost is not added twice.
    let again = handle(
        &ended.state,
        Input::AttemptEnded {
            outcome: Outcome::Ok,
            exit: Some(0),
            reason: None,
            cost_usd: 0.25,
            turns: 4,
        },
        &ctx(),
    )
    .unwrap();
    assert_eq!(again.state.cost_usd, 0.25);
    let checking = handle(&ended.state, Input::Checking { why: None }, &ctx()).unwrap();
    assert_eq!(checking.state.status, Status::Checking);
    let checked = handle(
        &checking.state,
        Input::Checked {
            commit: Some("def".into()),
            level: Some("PASS".into()),
        },
        &ctx(),
    )
    .unwrap();
    assert_eq!(
        checked.state.attempts.last().unwrap().checks.as_deref(),
        Some("PASS")
    );
}

#[test]
fn outcomes_know_whether_they_count() {
    for &o in Outcome::ALL {
        assert_eq!(Outcome::parse(o.as_str()), Some(o));
        let mut st = stream(Status::Running);
        st.attempts[0].ended_at = None;
        let step = handle(
            &st,
            Input::AttemptEnded {
                outcome: o,
                exit: None,
                reason: None,
                cost_usd: 0.0,
                turns: 0,
            },
            &ctx(),
        )
        .unwrap();
        assert_eq!(step.state.attempts[0].counted, o.counts(), "{o}");
    }
    assert!(!Outcome::RateLimited.counts());
    assert!(Outcome::CheckFailed.counts());
}

#[test]
fn a_failed_attempt_retries_until_the_allowance_or_the_budget_is_spent() {
    let st = stream(Status::Checking);
    let step = handle(
        &st,
        Input::Unsuccessful {
            reason: "exit code 1".into(),
            feedback: "- fix it".into(),
        },
        &ctx(),
    )
    .unwrap();
    assert_eq!(step.state.status, Status::Retrying);
    assert_eq!(
        step.state.reason.as_deref(),
        Some("exit code 1 (2 attempt(s) left)")
    );
    assert_eq!(step.state.feedback.as_deref(), Some("- fix it"));
    let spent = Ctx {
        max_budget_usd: Some(0.5),
        ..ctx()
    };
    let mut rich = st.clone();
    rich.cost_usd = 0.75;
    let step = handle(
        &rich,
        Input::Unsuccessful {
            reason: "exit code 1".into(),
            feedback: String::new(),
        },
        &spent,
    )
    .unwrap();
    assert_eq!(step.state.status, Status::Failed);
    assert!(step
        .state
        .reason
        .unwrap()
        .contains("stream budget reached ($0.75 of $0.50)"));
    let step = handle(
        &st,
        Input::ChecksFailed {
            summary: "FAIL: words".into(),
            feedback: "- too short".into(),
        },
        &ctx(),
    )
    .unwrap();
    assert_eq!(step.state.attempts[0].outcome, "check_failed");
    let step = handle(&st, Input::RateLimited { why: "429".into() }, &ctx()).unwrap();
    assert_eq!(
        (step.state.status, step.state.feedback),
        (Status::Retrying, None)
    );
    let step = handle(
        &st,
        Input::Fatal {
            reason: "no".into(),
        },
        &ctx(),
    )
    .unwrap();
    assert_eq!(step.state.status, Status::Failed);
}

#[test]
fn a_passed_attempt_waits_for_approval_when_asked() {
    let st = stream(Status::Checking);
    let pass = |needs_approval| Input::Passed {
        summary: "PASS".into(),
        needs_approval,
    };
    let step = handle(&st, pass(true), &ctx()).unwrap();
    assert_eq!(step.state.status, Status::AwaitingApproval);
    assert_eq!(
        step.state.reason.as_deref(),
        Some("PASS; approve with `loki approve ch01`")
    );
    assert!(step.effects.is_empty());
    let step = handle(&st, pass(false), &ctx()).unwrap();
    assert_eq!(step.state.status, Status::Merging);
    assert_eq!(step.effects, vec![Effect::QueueMerge { with_edits: false }]);
}

#[test]
fn merge_results() {
    let st = stream(Status::Merging);
    let merged = handle(
        &st,
        Input::Merge(MergeResult::Merged {
            commit: "c0ffee".into(),
        }),
        &ctx(),
    )
    .unwrap();
    assert_eq!(merged.state.status, Status::Merged);
    assert_eq!(merged.state.merge_commit.as_deref(), Some("c0ffee"));
    assert_eq!(merged.events[1].message, "merged into main as c0ffee");
    assert_eq!(merged.effects, vec![Effect::Cleanup]);
    let already = handle(&st, Input::Merge(MergeResult::AlreadyMerged), &ctx()).unwrap();
    assert_eq!(already.state.reason.as_deref(), Some("already merged"));
    let conflict = handle(
        &st,
        Input::Merge(MergeResult::Conflict {
            paths: vec!["a.md".into()],
        }),
        &ctx(),
    )
    .unwrap();
    assert_eq!(conflict.state.status, Status::Conflicted);
    assert!(conflict
        .state
        .reason
        .unwrap()
        .starts_with("merge conflict in a.md"));
    let wait = MergeResult::UserChanges {
        root: "/r".into(),
        paths: vec!["a.md".into()],
    };
    let waiting = handle(&st, Input::Merge(wait.clone()), &ctx()).unwrap();
    assert_eq!(waiting.state.status, Status::Merging);
    assert_eq!(waiting.events[0].kind, "merge_wait");
    // Said once: the same wait again only retries.
    let again = handle(&waiting.state, Input::Merge(wait), &ctx()).unwrap();
    assert!(again.events.is_empty());
    assert_eq!(again.effects, vec![Effect::RetryMergeLater]);
    // A shared remote that does not answer: the merge waits too, said once.
    let cut = MergeResult::Unreachable("connection refused".into());
    let cut_off = handle(&st, Input::Merge(cut.clone()), &ctx()).unwrap();
    assert_eq!(cut_off.state.status, Status::Merging);
    assert_eq!(cut_off.effects, vec![Effect::RetryMergeLater]);
    assert!(cut_off
        .state
        .reason
        .as_deref()
        .is_some_and(|r| r.contains("the remote cannot be reached (connection refused)")));
    let again = handle(&cut_off.state, Input::Merge(cut), &ctx()).unwrap();
    assert!(again.events.is_empty());
    let failed = handle(&st, Input::Merge(MergeResult::Failed("io".into())), &ctx()).unwrap();
    assert_eq!(failed.state.reason.as_deref(), Some("merge failed: io"));
    // A result for a stream that is no longer merging is refused.
    assert!(handle(
        &stream(Status::Cancelled),
        Input::Merge(MergeResult::AlreadyMerged),
        &ctx()
    )
    .is_err());
}

#[test]
fn recovery_of_every_status() {
    use Status::*;
    for &s in ALL {
        let mut st = stream(s);
        st.attempts[0].ended_at = None;
        st.process = Some(ProcessRecord {
            pid: 9,
            pgid: 9,
            start_time: 1,
            boot: 0,
            token: 0,
        });
        let step = handle(&st, Input::Recover, &ctx()).unwrap();
        let want = match s {
            Preparing | Running | Checking => Interrupted,
            Ready | Failed | Blocked => Pending,
            Merging | Conflicted => Merging,
            s => s,
        };
        assert_eq!(step.state.status, want, "{s}");
        assert_eq!(step.state.process, None, "{s}");
        match s {
            Preparing => assert_eq!(step.state.attempts[0].outcome, "not_started"),
            Running | Checking => assert_eq!(step.state.attempts[0].outcome, "interrupted"),
            Merging | Conflicted => {
                assert_eq!(step.effects, vec![Effect::QueueMerge { with_edits: false }])
            }
            Merged => assert_eq!(step.effects, vec![Effect::Cleanup]),
            _ => {}
        }
    }
}

/// A merged state the target's history does not back is pending again, with
/// its allowance renewed; no other status may be corrected so.
#[test]
fn a_merged_state_git_does_not_back_is_pending_again() {
    for &s in ALL {
        let mut st = stream(s);
        st.merge_commit = Some("abc".into());
        st.allowance_floor = 0;
        let step = handle(&st, Input::NotOnTarget, &ctx());
        if s != Status::Merged {
            assert!(step.is_err(), "{s}");
            continue;
        }
        let step = step.unwrap();
        assert_eq!(step.state.status, Status::Pending);
        assert_eq!(step.state.merge_commit, None);
        assert_eq!(step.state.allowance_floor, st.counted_attempts());
        let why = step.state.reason.clone().unwrap_or_default();
        assert!(why.contains("corrected from git"), "{why}");
        assert!(why.contains("`Merge stream ch01`"), "{why}");
    }
}

#[test]
fn dependencies_block_and_unblock() {
    let st = stream(Status::Pending);
    let step = handle(
        &st,
        Input::DependencyLost {
            dep: "outline".into(),
            status: Status::Failed,
        },
        &ctx(),
    )
    .unwrap();
    assert_eq!(step.state.status, Status::Blocked);
    assert_eq!(
        step.state.reason.as_deref(),
        Some("dependency outline is failed")
    );
    assert_eq!(
        step.state.finished_at.as_deref(),
        Some("2026-12-01T00:00:00Z")
    );
    let back = handle(&step.state, Input::Unblock, &ctx()).unwrap();
    assert_eq!(back.state.status, Status::Pending);
    assert!(handle(&st, Input::Unblock, &ctx()).is_err());
}

#[test]
fn held_back_and_interrupted_attempts_are_not_counted() {
    let mut st = stream(Status::Preparing);
    st.attempts[0].ended_at = None;
    let held = handle(
        &st,
        Input::HeldBack {
            why: "paused".into(),
        },
        &ctx(),
    )
    .unwrap();
    assert_eq!(held.state.status, Status::Interrupted);
    assert!(!held.state.attempts[0].counted);
    let mut st = stream(Status::Running);
    st.session_id = Some("s".into());
    let lost = handle(
        &st,
        Input::Interrupted {
            why: "lost".into(),
            forget_session: true,
        },
        &ctx(),
    )
    .unwrap();
    assert_eq!(lost.state.session_id, None);
}

#[test]
fn the_next_start_continues_only_cut_off_work() {
    let mut st = stream(Status::Interrupted);
    st.attempts[0].outcome = "interrupted".into();
    assert_eq!(next_start(&st, 3), Kickoff::Continue);
    assert_eq!(cut_off_attempt(&st), Some(1));
    st.attempts[0].outcome = "check_failed".into();
    st.feedback = Some("- x".into());
    assert_eq!(
        next_start(&st, 3),
        Kickoff::Retry {
            feedback: "- x".into(),
            last: false
        }
    );
    st.status = Status::Pending;
    st.feedback = None;
    assert_eq!(next_start(&st, 3), Kickoff::Fresh);
}

#[test]
fn the_swarm_pauses_and_resumes_once() {
    let sw = SwarmState::default();
    let p = handle_swarm(
        &sw,
        SwarmInput::Pause {
            reason: "night".into(),
        },
    )
    .unwrap();
    assert!(p.paused && !p.auth_paused);
    assert!(handle_swarm(&p, SwarmInput::Pause { reason: "x".into() }).is_err());
    assert!(
        handle_swarm(&p, SwarmInput::LiftAuthPause).is_err(),
        "the user's pause"
    );
    let r = handle_swarm(&p, SwarmInput::Resume).unwrap();
    assert!(!r.paused && r.pause_reason.is_none());
    assert!(handle_swarm(&r, SwarmInput::Resume).is_err());
    let a = handle_swarm(
        &r,
        SwarmInput::AuthPause {
            reason: "401".into(),
        },
    )
    .unwrap();
    assert!(a.paused && a.auth_paused);
    assert!(!handle_swarm(&a, SwarmInput::LiftAuthPause).unwrap().paused);
}

/// Every input other than a steering request, in every status: the status
/// it leads to, or a refusal. Inputs that record what an agent did (its
/// process, session, cost) apply whatever the status, because a cancel or
/// STOP may overtake them and the record must still be kept.
#[test]
fn every_input_in_every_status() {
    use Status::*;
    let rec = ProcessRecord {
        pid: 3,
        pgid: 3,
        start_time: 1,
        boot: 0,
        token: 0,
    };
    let inputs: Vec<(&str, Input)> = vec![
        ("start", Input::Start { n: 2 }),
        (
            "prepared",
            Input::Prepared {
                worktree: "w".into(),
                base: "b".into(),
                agent: "a".into(),
            },
        ),
        ("held_back", Input::HeldBack { why: "x".into() }),
        (
            "agent_started",
            Input::ProcessStarted {
                rec,
                role: Role::Agent,
            },
        ),
        ("session", Input::Session("s".into())),
        ("activity", Input::Activity("writing".into())),
        (
            "attempt_ended",
            Input::AttemptEnded {
                outcome: Outcome::Ok,
                exit: Some(0),
                reason: None,
                cost_usd: 0.0,
                turns: 1,
            },
        ),
        (
            "interrupted",
            Input::Interrupted {
                why: "x".into(),
                forget_session: false,
            },
        ),
        ("checking", Input::Checking { why: None }),
        (
            "checked",
            Input::Checked {
                commit: None,
                level: None,
            },
        ),
        (
            "unsuccessful",
            Input::Unsuccessful {
                reason: "x".into(),
                feedback: "y".into(),
            },
        ),
        (
            "checks_failed",
            Input::ChecksFailed {
                summary: "x".into(),
                feedback: "y".into(),
            },
        ),
        ("rate_limited", Input::RateLimited { why: "x".into() }),
        ("fatal", Input::Fatal { reason: "x".into() }),
        (
            "passed",
            Input::Passed {
                summary: "x".into(),
                needs_approval: false,
            },
        ),
        (
            "merge",
            Input::Merge(MergeResult::Merged { commit: "c".into() }),
        ),
        (
            "dependency_lost",
            Input::DependencyLost {
                dep: "d".into(),
                status: Failed,
            },
        ),
        ("unblock", Input::Unblock),
        (
            "validated",
            Input::Validated {
                summary: "1 pass, 0 warn, 0 fail".into(),
                cost_usd: 0.5,
                commit: None,
            },
        ),
        ("validation_stopped", Input::ValidationStopped),
    ];
    for &s in ALL {
        for (name, input) in &inputs {
            let got = status_after(&stream(s), input.clone()).ok();
            let want = match (*name, s) {
                ("start", Pending | Ready | Retrying | Interrupted) => Some(Preparing),
                ("start", _) => None,
                ("prepared", Preparing) => Some(Running),
                ("held_back", Preparing) => Some(Interrupted),
                ("prepared" | "held_back", _) => None,
                ("agent_started" | "session" | "activity" | "attempt_ended" | "checked", s) => {
                    Some(s)
                }
                ("interrupted", Running | Preparing) => Some(Interrupted),
                ("interrupted", _) => None,
                ("checking", Running) => Some(Checking),
                ("checking", _) => None,
                ("unsuccessful", Preparing | Checking) => Some(Retrying),
                ("checks_failed" | "rate_limited", Checking) => Some(Retrying),
                ("checks_failed", Validating) => Some(Retrying),
                ("passed", Checking | Validating) => Some(Merging),
                ("unsuccessful" | "checks_failed" | "rate_limited" | "passed", _) => None,
                ("validated" | "validation_stopped", Validating) => Some(Validating),
                ("validated" | "validation_stopped", _) => None,
                (
                    "fatal",
                    Pending | Ready | Retrying | Interrupted | Preparing | Running | Checking
                    | Validating,
                ) => Some(Failed),
                ("fatal", _) => None,
                ("merge", Merging) => Some(Merged),
                ("merge", _) => None,
                ("dependency_lost", Pending) => Some(Blocked),
                ("dependency_lost", _) => None,
                ("unblock", Blocked) => Some(Pending),
                ("unblock", _) => None,
                (other, _) => panic!("no expectation for {other}"),
            };
            assert_eq!(got, want, "{name} in {s}");
        }
    }
}

/// A step that changes status says so in a `transition` event whose
/// from/to match; one that does not, has none.
#[test]
fn transition_events_match_the_status_change() {
    for &s in ALL {
        for &kind in Kind::ALL {
            let st = stream(s);
            if let Ok(step) = handle(&st, steer(kind), &ctx()) {
                match step.transition() {
                    Some((from, to)) => {
                        assert_eq!(from, s);
                        assert_eq!(to, step.state.status);
                    }
                    None => assert_eq!(step.state.status, s, "{} in {s}", kind.as_str()),
                }
                assert_eq!(step.state.version, st.version, "the door bumps versions");
            }
        }
    }
}

#[test]
fn stop_before_the_agent_started_ends_the_attempt_uncounted() {
    let mut st = stream(Status::Preparing);
    st.attempts[0].ended_at = None;
    st.attempts[0].outcome = String::new();
    let step = handle(&st, steer(Kind::Stop), &ctx()).unwrap();
    assert_eq!(step.state.status, Status::Interrupted);
    let a = &step.state.attempts[0];
    assert_eq!((a.outcome.as_str(), a.counted), ("not_started", false));
    assert!(a.ended_at.is_some());
}

#[test]
fn an_approval_does_not_outlive_its_attempt() {
    let mut st = stream(Status::Retrying);
    st.approved_by = Some("maria".into());
    let step = handle(&st, Input::Start { n: 2 }, &ctx()).unwrap();
    assert_eq!(step.state.approved_by, None);
}

#[test]
fn a_cancelled_stream_is_never_checked_or_interrupted() {
    let st = stream(Status::Cancelled);
    assert!(handle(&st, Input::Checking { why: None }, &ctx()).is_err());
    let stop = Input::Interrupted {
        why: "x".into(),
        forget_session: false,
    };
    assert!(handle(&st, stop, &ctx()).is_err());
}

#[test]
fn the_users_pause_replaces_the_supervisors_own() {
    let auth = SwarmState {
        paused: true,
        auth_paused: true,
        pause_reason: Some("401".into()),
        ..Default::default()
    };
    let p = handle_swarm(
        &auth,
        SwarmInput::Pause {
            reason: "mine".into(),
        },
    )
    .unwrap();
    assert!(p.paused && !p.auth_paused);
    assert_eq!(p.pause_reason.as_deref(), Some("mine"));
}

#[test]
fn recovery_forgets_only_a_merge_wait() {
    let mut st = stream(Status::Merging);
    st.reason = Some("waiting to merge: your uncommitted changes in /r touch a.md; …".into());
    let step = handle(&st, Input::Recover, &ctx()).unwrap();
    assert_eq!(step.state.reason, None);
    st.reason = Some("approved by maria".into());
    let step = handle(&st, Input::Recover, &ctx()).unwrap();
    assert!(!step.changes(&st), "nothing to write");
}

/// A conflict with a resolver attempt to spare goes to one (uncounted,
/// approval kept), whose failure leaves the stream conflicted; with none
/// left, the conflict waits for a person as before.
#[test]
fn a_conflict_gets_a_resolver_attempt_then_waits_for_a_person() {
    let mut st = stream(Status::Merging);
    st.approved_by = Some("maria".into());
    let resolving = Ctx {
        max_resolve: 1,
        validators: false,
        ..ctx()
    };
    let conflict = Input::Merge(MergeResult::Conflict {
        paths: vec!["bible.md".into()],
    });
    let step = handle(&st, conflict.clone(), &resolving).unwrap();
    assert_eq!(step.state.status, Status::Retrying);
    assert_eq!(step.state.resolve_paths, vec!["bible.md".to_string()]);
    assert!(step
        .state
        .reason
        .as_deref()
        .is_some_and(|r| r.contains("a resolver attempt merges main into loki/ch01")));

    let started = handle(&step.state, Input::Start { n: 2 }, &resolving).unwrap();
    let a = started.state.attempts.last().unwrap();
    assert!(!a.counted, "a resolver attempt is not one of max_attempts");
    assert_eq!(started.state.resolve_attempts, 1);
    assert_eq!(started.state.approved_by.as_deref(), Some("maria"));
    assert_eq!(started.state.used_attempts(), st.used_attempts());

    let failed = handle(
        &started.state,
        Input::ResolveFailed {
            why: "a marker is left".into(),
        },
        &resolving,
    )
    .unwrap();
    assert_eq!(failed.state.status, Status::Conflicted);
    assert!(failed.state.resolve_paths.is_empty());

    // A resolution that passes merges without asking for approval again.
    let mut checking = started.state.clone();
    checking.status = Status::Checking;
    let passed = handle(
        &checking,
        Input::Passed {
            summary: "ok".into(),
            needs_approval: true,
        },
        &resolving,
    )
    .unwrap();
    assert_eq!(passed.state.status, Status::Merging);
    assert_eq!(
        passed.effects,
        vec![Effect::QueueMerge { with_edits: false }]
    );

    // The next conflict, with the resolver attempt used: for a person.
    let mut again = passed.state.clone();
    again.resolve_paths.clear();
    let step = handle(&again, conflict.clone(), &resolving).unwrap();
    assert_eq!(step.state.status, Status::Conflicted);
    // Without a resolver (resolve = "none", or no supervisor): as before.
    let step = handle(&st, conflict, &ctx()).unwrap();
    assert_eq!(step.state.status, Status::Conflicted);
}

/// With validators, an attempt whose checks pass is judged before it may
/// merge; their cost joins the stream's, a failure is retried with their
/// issues, and a stopped or crashed validation is done again.
#[test]
fn validators_judge_an_attempt_between_its_checks_and_its_merge() {
    let mut c = ctx();
    c.validators = true;
    let passed = || Input::Passed {
        summary: "PASS: 3 checks".into(),
        needs_approval: false,
    };
    let step = handle(&stream(Status::Checking), passed(), &c).unwrap();
    assert_eq!(step.state.status, Status::Validating);
    assert_eq!(step.effects, vec![Effect::Validate]);
    // A resolver's attempt is not judged again.
    let mut resolving = stream(Status::Checking);
    resolving.resolve_paths = vec!["a.md".into()];
    let step2 = handle(&resolving, passed(), &c).unwrap();
    assert_eq!(step2.state.status, Status::Merging);

    let mut st = step.state;
    st.helpers.push(ProcessRecord {
        pid: 9,
        pgid: 9,
        start_time: 1,
        boot: 0,
        token: 0,
    });
    st.cost_usd = 1.0;
    st.attempts[0].cost_usd = 1.0;
    let v = Input::Validated {
        summary: "1 pass, 0 warn, 1 fail".into(),
        cost_usd: 0.25,
        commit: Some("abc".into()),
    };
    let st = handle(&st, v, &c).unwrap().state;
    assert!(st.helpers.is_empty());
    assert_eq!(st.cost_usd, 1.25);
    let a = &st.attempts[0];
    assert_eq!(a.validation.as_deref(), Some("1 pass, 0 warn, 1 fail"));
    assert_eq!((a.cost_usd, a.validation_cost_usd), (1.25, 0.25));
    assert_eq!(a.commit.as_deref(), Some("abc"));
    let failed = Input::ChecksFailed {
        summary: "validation failed".into(),
        feedback: "- [plot] Mira is dead".into(),
    };
    let after = handle(&st, failed, &c).unwrap().state;
    assert_eq!(after.status, Status::Retrying);
    assert_eq!(after.attempts[0].outcome, "validation_failed");
    assert!(after.feedback.unwrap_or_default().contains("Mira is dead"));
    // From validating, a pass goes on to the merge.
    let merged = handle(&st, passed(), &c).unwrap();
    assert_eq!(merged.state.status, Status::Merging);
    assert_eq!(
        merged.effects,
        vec![Effect::QueueMerge { with_edits: false }]
    );

    // A crash during validation: the same commit is validated again.
    let rec = handle(&stream(Status::Validating), Input::Recover, &c).unwrap();
    assert_eq!(rec.state.status, Status::Validating);
    assert_eq!(rec.effects, vec![Effect::Validate]);
    // STOP holds it; `loki retry` validates again.
    let stop = handle(&stream(Status::Validating), steer(Kind::Stop), &c).unwrap();
    assert_eq!(
        stop.effects,
        vec![Effect::Hold, Effect::StopAgent(AgentStop::Interrupt)]
    );
    let retry = handle(&stream(Status::Validating), steer(Kind::Retry), &c).unwrap();
    assert_eq!(retry.effects, vec![Effect::Release, Effect::Validate]);
}

/// A merge another supervisor pushed to the shared remote merges the stream
/// here from any status but the ones this supervisor is working in.
#[test]
fn a_merge_made_elsewhere_merges_a_stream_not_in_this_supervisors_hands() {
    for &s in ALL {
        let st = stream(s);
        let input = Input::MergedElsewhere {
            commit: "m1".into(),
            by: "box-2 (pid 9)".into(),
        };
        let step = handle(&st, input, &ctx());
        let busy = matches!(
            s,
            Status::Preparing | Status::Running | Status::Checking | Status::Validating
        );
        if busy || s == Status::Merged {
            assert!(step.is_err(), "{s}");
            continue;
        }
        let step = step.unwrap();
        assert_eq!(step.state.status, Status::Merged, "{s}");
        assert_eq!(step.state.merge_commit.as_deref(), Some("m1"));
        assert_eq!(
            step.state.reason.as_deref(),
            Some("merged into main by box-2 (pid 9)")
        );
        assert!(step.effects.contains(&Effect::Cleanup), "{s}");
    }
}

/// Taking a stream over numbers the next attempt after the last holder's
/// and passes its feedback on; only a stream waiting to start is adopted.
#[test]
fn a_stream_taken_over_goes_on_from_the_last_holders_attempt() {
    for &s in ALL {
        let mut st = stream(s);
        st.feedback = None;
        let input = Input::Adopt {
            attempt: 4,
            feedback: Some("longer, please".into()),
            from: "box-1 (pid 3)".into(),
        };
        let step = handle(&st, input, &ctx());
        if !matches!(s, Status::Pending | Status::Retrying | Status::Interrupted) {
            assert!(step.is_err(), "{s}");
            continue;
        }
        let step = step.unwrap();
        assert_eq!(step.state.status, s, "adopting changes no status");
        assert_eq!(step.state.attempt, 4);
        assert_eq!(step.state.feedback.as_deref(), Some("longer, please"));
        assert!(step
            .events
            .iter()
            .any(|e| e.message.contains("box-1 (pid 3)")));
        let start = handle(&step.state, Input::Start { n: 5 }, &ctx()).unwrap();
        assert_eq!(start.state.attempt, 5);
    }
}
