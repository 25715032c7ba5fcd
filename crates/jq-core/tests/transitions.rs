//! Every legal and illegal transition of SPEC §3, named by requirement.

use std::time::Duration;

use jq_core::*;

const W: &str = "w1";

fn ctx() -> Context {
    Context::default()
}

fn job(status: JobStatus, attempt: u32) -> JobState {
    JobState {
        status,
        attempt,
        retries: 0,
        max_retries: 3,
        worker_id: (attempt > 0).then(|| W.to_string()),
        cancel_requested: false,
        last_report: None,
    }
}

fn apply(j: &JobState, c: Command) -> Result<Effects, TransitionError> {
    match transition(j, &c, &ctx())? {
        Decision::Apply(e) => Ok(e),
        Decision::AlreadyApplied => panic!("unexpected duplicate"),
    }
}

fn path(e: &Effects) -> Vec<(Option<JobStatus>, JobStatus, Reason)> {
    e.steps.iter().map(|s| (s.from, s.to, s.reason)).collect()
}

fn ack(a: u32) -> Command {
    Command::Ack {
        worker_id: W.into(),
        attempt: a,
    }
}

fn report(a: u32, outcome: Outcome) -> Command {
    Command::Report {
        worker_id: W.into(),
        attempt: a,
        outcome,
    }
}

fn all_commands(attempt: u32) -> Vec<Command> {
    vec![
        Command::Claim { worker_id: W.into() },
        ack(attempt),
        report(attempt, Outcome::Succeeded),
        report(attempt, Outcome::Failed { retryable: true }),
        report(attempt, Outcome::Failed { retryable: false }),
        report(attempt, Outcome::Cancelled),
        Command::AssignmentTimeout { attempt },
        Command::WorkerLost {
            worker_id: W.into(),
            attempt,
        },
        Command::DeliveryFailed {
            worker_id: W.into(),
            attempt,
        },
        Command::TtlExpired,
        Command::Cancel,
        Command::ManualRetry,
    ]
}

use JobStatus::*;

#[test]
fn fr_010_allowed_transitions_are_exactly_the_spec_list() {
    let spec = [
        (None, Pending),
        (Some(Pending), Assigned),
        (Some(Assigned), Running),
        (Some(Running), Done),
        (Some(Running), Failed),
        (Some(Failed), Pending),
        (Some(Failed), DeadLettered),
        (Some(Assigned), Failed),
        (Some(Pending), DeadLettered),
        (Some(Assigned), DeadLettered),
        (Some(Running), DeadLettered),
        (Some(DeadLettered), Pending),
    ];
    let froms = std::iter::once(None).chain(JobStatus::ALL.into_iter().map(Some));
    let mut n = 0;
    for from in froms {
        for to in JobStatus::ALL {
            assert_eq!(
                is_allowed(from, to),
                spec.contains(&(from, to)),
                "{from:?} -> {to:?}"
            );
            n += usize::from(is_allowed(from, to));
        }
    }
    assert_eq!(n, spec.len());
}

/// Exhaustive: every command in every state either is refused (and changes
/// nothing) or yields only allowed steps that start at the current state and
/// chain into the reported next state.
#[test]
fn fr_010_every_command_in_every_state_only_takes_allowed_steps() {
    let mut applied = 0;
    for status in JobStatus::ALL {
        for attempt in [0, 1, 2] {
            for cancel_requested in [false, true] {
                let mut j = job(status, attempt);
                j.cancel_requested = cancel_requested && status == Running;
                for c in all_commands(attempt) {
                    match transition(&j, &c, &ctx()) {
                        Err(_) => {}
                        Ok(Decision::AlreadyApplied) => panic!("no report recorded yet"),
                        Ok(Decision::Apply(e)) => {
                            applied += 1;
                            let mut cur = j.status;
                            for s in &e.steps {
                                assert_eq!(s.from, Some(cur), "{status:?} {c:?}");
                                assert!(is_allowed(s.from, s.to), "{s:?} from {c:?}");
                                cur = s.to;
                            }
                            assert_eq!(cur, e.next.status, "{status:?} {c:?}");
                            assert!(e.next.attempt >= j.attempt, "attempt never goes back");
                        }
                    }
                }
            }
        }
    }
    assert!(applied > 20);
}

#[test]
fn fr_010_claim_ack_complete_happy_path() {
    let j = JobState::new(3);
    let e = apply(&j, Command::Claim { worker_id: W.into() }).unwrap();
    assert_eq!(path(&e), vec![(Some(Pending), Assigned, Reason::Claimed)]);
    assert_eq!(e.next.attempt, 1);
    assert_eq!(e.next.worker_id.as_deref(), Some(W));
    let e = apply(&e.next, ack(1)).unwrap();
    assert_eq!(path(&e), vec![(Some(Assigned), Running, Reason::Started)]);
    assert!(e.clear_expiry, "TTL stops applying once the job started");
    let e = apply(&e.next, report(1, Outcome::Succeeded)).unwrap();
    assert_eq!(path(&e), vec![(Some(Running), Done, Reason::Completed)]);
    assert_eq!(e.next.status, Done);
}

#[test]
fn fr_010_rejects_done_to_running() {
    let j = job(Done, 1);
    for c in [ack(1), Command::Claim { worker_id: W.into() }, Command::Cancel] {
        assert!(matches!(
            transition(&j, &c, &ctx()),
            Err(TransitionError::InvalidState { status: Done, .. })
        ));
    }
}

#[test]
fn fr_010_claim_only_from_pending() {
    for s in [Assigned, Running, Done, Failed, DeadLettered] {
        assert!(
            apply(&job(s, 1), Command::Claim { worker_id: W.into() }).is_err(),
            "{s}"
        );
    }
}

#[test]
fn fr_012_cancel_pending_and_assigned_dead_letters() {
    let e = apply(&job(Pending, 0), Command::Cancel).unwrap();
    assert_eq!(path(&e), vec![(Some(Pending), DeadLettered, Reason::Cancelled)]);
    assert_eq!(e.notify_cancel, None);
    let e = apply(&job(Assigned, 2), Command::Cancel).unwrap();
    assert_eq!(path(&e), vec![(Some(Assigned), DeadLettered, Reason::Cancelled)]);
    assert_eq!(
        e.notify_cancel,
        Some((W.to_string(), 2)),
        "the worker may have it already"
    );
}

#[test]
fn fr_012_cancel_in_other_states_is_refused() {
    for s in [Done, Failed, DeadLettered] {
        let err = apply(&job(s, 1), Command::Cancel).unwrap_err();
        assert_eq!(
            err,
            TransitionError::InvalidState {
                command: "cancel",
                status: s
            }
        );
        assert!(err.to_string().contains(s.as_str()));
    }
}

#[test]
fn jq_113_cancel_running_asks_the_worker_then_dead_letters() {
    let e = apply(&job(Running, 4), Command::Cancel).unwrap();
    assert!(e.steps.is_empty(), "no state change until the kill is confirmed");
    assert!(e.next.cancel_requested);
    assert_eq!(e.notify_cancel, Some((W.to_string(), 4)));
    // Worker confirms the kill.
    let c = apply(&e.next, report(4, Outcome::Cancelled)).unwrap();
    assert_eq!(path(&c), vec![(Some(Running), DeadLettered, Reason::Cancelled)]);
    // The kill shows up as a failure: still a cancel, never a retry.
    let c = apply(&e.next, report(4, Outcome::Failed { retryable: true })).unwrap();
    assert_eq!(path(&c), vec![(Some(Running), DeadLettered, Reason::Cancelled)]);
    // Or the worker dies: its lease expiry ends the cancel.
    let c = apply(
        &e.next,
        Command::WorkerLost {
            worker_id: W.into(),
            attempt: 4,
        },
    )
    .unwrap();
    assert_eq!(path(&c), vec![(Some(Running), DeadLettered, Reason::Cancelled)]);
    // The job finished before the kill landed: it is DONE.
    let c = apply(&e.next, report(4, Outcome::Succeeded)).unwrap();
    assert_eq!(c.next.status, Done);
    assert!(
        !c.next.cancel_requested,
        "a finished job has nothing left to cancel"
    );
}

#[test]
fn fr_013_manual_retry_from_dead_letter_or_failed_resets_retries() {
    for s in [DeadLettered, Failed] {
        let mut j = job(s, 5);
        j.retries = 3;
        let e = apply(&j, Command::ManualRetry).unwrap();
        assert_eq!(path(&e), vec![(Some(s), Pending, Reason::ManualRetry)]);
        assert_eq!(e.next.retries, 0);
        assert_eq!(e.next.attempt, 5, "the fencing token is never reset");
        assert_eq!(e.next.worker_id, None);
        assert_eq!(e.not_before, Some(Duration::ZERO));
        assert!(e.clear_expiry);
    }
    for s in [Pending, Assigned, Running, Done] {
        assert!(apply(&job(s, 1), Command::ManualRetry).is_err(), "{s}");
    }
}

#[test]
fn fr_016_assignment_timeout_fails_and_schedules_retry() {
    let e = apply(&job(Assigned, 1), Command::AssignmentTimeout { attempt: 1 }).unwrap();
    assert_eq!(
        path(&e),
        vec![
            (Some(Assigned), Failed, Reason::AssignmentTimeout),
            (Some(Failed), Pending, Reason::RetryScheduled)
        ]
    );
    assert_eq!(e.next.retries, 1);
    assert_eq!(e.not_before, Some(Duration::from_secs(5)));
    // A newer attempt is not timed out by a reaper holding an old snapshot.
    assert!(matches!(
        apply(&job(Assigned, 2), Command::AssignmentTimeout { attempt: 1 }),
        Err(TransitionError::StaleAttempt { .. })
    ));
    assert!(apply(&job(Running, 1), Command::AssignmentTimeout { attempt: 1 }).is_err());
}

#[test]
fn fr_020_worker_lost_fails_assigned_and_running_jobs() {
    for s in [Assigned, Running] {
        let e = apply(
            &job(s, 1),
            Command::WorkerLost {
                worker_id: W.into(),
                attempt: 1,
            },
        )
        .unwrap();
        assert_eq!(
            path(&e),
            vec![
                (Some(s), Failed, Reason::WorkerLost),
                (Some(Failed), Pending, Reason::RetryScheduled)
            ]
        );
        assert_eq!(e.next.worker_id, None);
    }
    assert!(
        apply(
            &job(Pending, 1),
            Command::WorkerLost {
                worker_id: W.into(),
                attempt: 1
            }
        )
        .is_err()
    );
}

#[test]
fn jq_112_worker_deaths_count_against_max_retries() {
    let mut j = JobState::new(2);
    let mut deaths = 0;
    loop {
        let e = apply(&j, Command::Claim { worker_id: W.into() }).unwrap();
        let a = e.next.attempt;
        let e = apply(
            &e.next,
            Command::WorkerLost {
                worker_id: W.into(),
                attempt: a,
            },
        )
        .unwrap();
        deaths += 1;
        j = e.next;
        if j.status == DeadLettered {
            assert_eq!(e.steps[1].reason, Reason::RetriesExhausted);
            break;
        }
        assert!(deaths < 10, "a job that kills its worker must not loop forever");
    }
    assert_eq!(deaths, 3, "max_retries=2: first run + 2 retries");
}

#[test]
fn fr_033_failure_with_retries_left_goes_back_to_pending_with_backoff() {
    let policy = BackoffPolicy {
        base: Duration::from_secs(5),
        max: Duration::from_secs(300),
    };
    let mut j = job(Running, 3);
    j.retries = 2;
    j.max_retries = 5;
    let c = Context {
        backoff: policy,
        jitter_unit: 0.5,
    };
    let Decision::Apply(e) = transition(&j, &report(3, Outcome::Failed { retryable: true }), &c).unwrap()
    else {
        panic!()
    };
    assert_eq!(
        path(&e),
        vec![
            (Some(Running), Failed, Reason::Failed),
            (Some(Failed), Pending, Reason::RetryScheduled)
        ]
    );
    assert_eq!(e.next.retries, 3);
    assert_eq!(e.not_before, Some(policy.delay(2, 0.5)));
    assert_eq!(e.not_before, Some(Duration::from_secs(21)));
}

#[test]
fn fr_034_exhausted_retries_dead_letter() {
    let mut j = job(Running, 4);
    j.retries = 3;
    j.max_retries = 3;
    let e = apply(&j, report(4, Outcome::Failed { retryable: true })).unwrap();
    assert_eq!(
        path(&e),
        vec![
            (Some(Running), Failed, Reason::Failed),
            (Some(Failed), DeadLettered, Reason::RetriesExhausted)
        ]
    );
    assert_eq!(e.not_before, None);
    // max_retries = 0: the first failure dead-letters.
    let mut j = job(Running, 1);
    j.max_retries = 0;
    assert_eq!(
        apply(&j, report(1, Outcome::Failed { retryable: true }))
            .unwrap()
            .next
            .status,
        DeadLettered
    );
}

#[test]
fn fr_029_non_retryable_failure_dead_letters_at_once() {
    let e = apply(&job(Running, 1), report(1, Outcome::Failed { retryable: false })).unwrap();
    assert_eq!(e.steps[1].reason, Reason::PermanentFailure);
    assert_eq!(e.next.status, DeadLettered);
}

#[test]
fn fr_004_ttl_expiry_only_from_pending() {
    let e = apply(&job(Pending, 0), Command::TtlExpired).unwrap();
    assert_eq!(path(&e), vec![(Some(Pending), DeadLettered, Reason::TtlExpired)]);
    for s in [Assigned, Running, Done, Failed, DeadLettered] {
        assert!(apply(&job(s, 1), Command::TtlExpired).is_err(), "{s}");
    }
}

#[test]
fn jq_110_stale_attempt_cannot_ack_complete_or_fail() {
    for (status, cmd) in [
        (Assigned, ack(1)),
        (Running, report(1, Outcome::Succeeded)),
        (Running, report(1, Outcome::Failed { retryable: true })),
        (Running, report(1, Outcome::Cancelled)),
    ] {
        let j = job(status, 2);
        assert_eq!(
            transition(&j, &cmd, &ctx()),
            Err(TransitionError::StaleAttempt {
                presented: 1,
                current: 2
            }),
            "{cmd:?}"
        );
    }
    // A future attempt is as wrong as a past one.
    assert!(matches!(
        apply(&job(Assigned, 2), ack(3)),
        Err(TransitionError::StaleAttempt { .. })
    ));
}

#[test]
fn jq_110_another_worker_cannot_use_the_attempt() {
    let j = job(Running, 1);
    let c = Command::Report {
        worker_id: "intruder".into(),
        attempt: 1,
        outcome: Outcome::Succeeded,
    };
    assert_eq!(
        transition(&j, &c, &ctx()),
        Err(TransitionError::NotOwner { attempt: 1 })
    );
}

#[test]
fn jq_110_zombie_cannot_overwrite_a_terminal_state() {
    // Attempt 1 was declared lost, the job retried and finished as attempt 2.
    let mut j = job(Done, 2);
    j.last_report = Some(LastReport {
        attempt: 2,
        kind: ReportKind::Succeeded,
    });
    let zombie = report(1, Outcome::Failed { retryable: true });
    assert!(matches!(
        transition(&j, &zombie, &ctx()),
        Err(TransitionError::StaleAttempt { .. })
    ));
}

#[test]
fn jq_110_result_reporting_is_idempotent_per_attempt() {
    let e = apply(&job(Running, 1), report(1, Outcome::Succeeded)).unwrap();
    assert_eq!(
        transition(&e.next, &report(1, Outcome::Succeeded), &ctx()),
        Ok(Decision::AlreadyApplied)
    );
    assert_eq!(
        transition(&e.next, &report(1, Outcome::Failed { retryable: true }), &ctx()),
        Err(TransitionError::ConflictingReport {
            attempt: 1,
            recorded: "SUCCEEDED"
        })
    );
    // A repeated failure report after the retry was scheduled changes nothing.
    let f = apply(&job(Running, 1), report(1, Outcome::Failed { retryable: true })).unwrap();
    assert_eq!(f.next.status, Pending);
    assert_eq!(
        transition(&f.next, &report(1, Outcome::Failed { retryable: true }), &ctx()),
        Ok(Decision::AlreadyApplied)
    );
}

#[test]
fn jq_111_delivery_failure_requeues_at_once_without_using_a_retry() {
    let e = apply(
        &job(Assigned, 1),
        Command::DeliveryFailed {
            worker_id: W.into(),
            attempt: 1,
        },
    )
    .unwrap();
    assert_eq!(
        path(&e),
        vec![
            (Some(Assigned), Failed, Reason::DeliveryFailed),
            (Some(Failed), Pending, Reason::RetryScheduled)
        ]
    );
    assert_eq!(e.next.retries, 0);
    assert_eq!(e.not_before, Some(Duration::ZERO));
    // Even with no retries left the job is not dead-lettered for our fault.
    let mut j = job(Assigned, 1);
    j.max_retries = 0;
    let e = apply(
        &j,
        Command::DeliveryFailed {
            worker_id: W.into(),
            attempt: 1,
        },
    )
    .unwrap();
    assert_eq!(e.next.status, Pending);
}

#[test]
fn fr_029_report_needs_an_acknowledged_job() {
    assert!(matches!(
        apply(&job(Assigned, 1), report(1, Outcome::Succeeded)),
        Err(TransitionError::InvalidState { status: Assigned, .. })
    ));
}

#[test]
fn reasons_round_trip_through_text() {
    for r in Reason::ALL {
        assert_eq!(Reason::parse(r.as_str()), Some(r));
    }
    assert_eq!(Reason::parse("NOPE"), None);
}
