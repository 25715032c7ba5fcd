//! Level 1 of the test pyramid: the lifecycle driven by `proptest-state-machine`.
//!
//! The system under test is a minimal in-memory queue whose every decision
//! comes from `jq_core::transition` (selection of due jobs uses
//! `DispatchKey`); the reference is the independent model in
//! `jq_core::testing`. After every operation the answers and the full state
//! must agree, and the invariants of SPEC §3 must hold.

use std::time::Duration;

use jq_core::testing::{Expect, Model, ModelMachine, Op, Refusal};
use jq_core::*;
use proptest::prelude::*;
use proptest_state_machine::{ReferenceStateMachine, StateMachineTest, prop_state_machine};

const MIN: u64 = 60;

#[derive(Debug, Clone)]
struct HJob {
    state: JobState,
    key: DispatchKey,
    not_before: u64,
    expires_at: Option<u64>,
    assigned_at: Option<u64>,
    events: u32,
}

#[derive(Debug, Clone)]
struct Harness {
    now: u64,
    jobs: Vec<HJob>,
    workers: Vec<(WorkerStatus, u64)>,
    ctx: Context,
    cfg: jq_core::testing::ModelConfig,
}

fn wid(w: usize) -> String {
    format!("w{w}")
}

fn widx(s: &Option<String>) -> Option<usize> {
    s.as_ref().map(|s| s[1..].parse().unwrap())
}

fn refusal(e: &TransitionError) -> Refusal {
    match e {
        TransitionError::StaleAttempt { .. } => Refusal::Stale,
        TransitionError::NotOwner { .. } => Refusal::NotOwner,
        TransitionError::InvalidState { .. } => Refusal::InvalidState,
        TransitionError::ConflictingReport { .. } => Refusal::Conflict,
    }
}

impl Harness {
    /// Apply a command through `transition`, carrying out its effects.
    fn run(&mut self, j: usize, cmd: Command) -> Result<Decision, TransitionError> {
        let d = transition(&self.jobs[j].state, &cmd, &self.ctx)?;
        if let Decision::Apply(e) = &d {
            let now = self.now;
            let h = &mut self.jobs[j];
            for s in &e.steps {
                assert!(is_allowed(s.from, s.to), "illegal step {s:?}");
            }
            h.events += e.steps.len() as u32;
            if let Some(d) = e.not_before {
                h.not_before = now + d.as_secs() / MIN;
            }
            if e.clear_expiry {
                h.expires_at = None;
            }
            if e.steps.iter().any(|s| s.to == JobStatus::Assigned) {
                h.assigned_at = Some(now);
            }
            assert!(e.next.attempt >= h.state.attempt);
            h.state = e.next.clone();
        }
        Ok(d)
    }

    fn creds(&self, j: usize, stale: bool) -> (String, u32) {
        let s = &self.jobs[j].state;
        let attempt = jq_core::testing::presented_attempt(s.attempt, stale);
        (s.worker_id.clone().unwrap_or_else(|| wid(0)), attempt)
    }

    fn pick(&self, job: usize) -> Option<usize> {
        (!self.jobs.is_empty()).then(|| job % self.jobs.len())
    }

    fn report(&mut self, job: usize, stale: bool, outcome: Outcome) -> Expect {
        let Some(j) = self.pick(job) else {
            return Expect::NoJob;
        };
        let (worker_id, attempt) = self.creds(j, stale);
        match self.run(
            j,
            Command::Report {
                worker_id,
                attempt,
                outcome,
            },
        ) {
            Ok(Decision::Apply(_)) => Expect::Ok,
            Ok(Decision::AlreadyApplied) => Expect::Duplicate,
            Err(e) => Expect::Refused(refusal(&e)),
        }
    }

    fn apply(&mut self, op: &Op) -> Expect {
        let now = self.now;
        match *op {
            Op::Submit {
                priority,
                max_retries,
                delay,
                ttl,
            } => {
                let seq = self.jobs.len() as i64;
                self.jobs.push(HJob {
                    state: JobState::new(max_retries),
                    key: DispatchKey {
                        priority,
                        created_at_micros: now as i64,
                        seq,
                    },
                    not_before: now + delay,
                    expires_at: ttl.map(|t| now + delay + t),
                    assigned_at: None,
                    events: 1,
                });
                Expect::Ok
            }
            Op::Claim { worker, limit } => {
                let w = worker % self.workers.len();
                if !self.workers[w].0.takes_new_jobs() {
                    return Expect::Claimed(vec![]);
                }
                let mut due: Vec<usize> = (0..self.jobs.len())
                    .filter(|&i| {
                        let h = &self.jobs[i];
                        h.state.status == JobStatus::Pending
                            && h.not_before <= now
                            && h.expires_at.is_none_or(|e| e > now)
                    })
                    .collect();
                due.sort_by_key(|&i| self.jobs[i].key);
                due.truncate(limit);
                for &i in &due {
                    self.run(i, Command::Claim { worker_id: wid(w) })
                        .expect("due job is claimable");
                }
                Expect::Claimed(due)
            }
            Op::Ack { job, stale } => {
                let Some(j) = self.pick(job) else {
                    return Expect::NoJob;
                };
                let (worker_id, attempt) = self.creds(j, stale);
                match self.run(j, Command::Ack { worker_id, attempt }) {
                    Ok(_) => Expect::Ok,
                    Err(e) => Expect::Refused(refusal(&e)),
                }
            }
            Op::Complete { job, stale } => self.report(job, stale, Outcome::Succeeded),
            Op::Fail {
                job,
                stale,
                retryable,
            } => self.report(job, stale, Outcome::Failed { retryable }),
            Op::ReportCancelled { job } => self.report(job, false, Outcome::Cancelled),
            Op::DeliveryFailed { job } => {
                let Some(j) = self.pick(job) else {
                    return Expect::NoJob;
                };
                let (worker_id, attempt) = self.creds(j, false);
                match self.run(j, Command::DeliveryFailed { worker_id, attempt }) {
                    Ok(_) => Expect::Ok,
                    Err(e) => Expect::Refused(refusal(&e)),
                }
            }
            Op::Cancel { job } => {
                let Some(j) = self.pick(job) else {
                    return Expect::NoJob;
                };
                match self.run(j, Command::Cancel) {
                    Ok(Decision::Apply(e)) if e.steps.is_empty() => Expect::CancelRequested,
                    Ok(_) => Expect::Ok,
                    Err(e) => Expect::Refused(refusal(&e)),
                }
            }
            Op::Retry { job } => {
                let Some(j) = self.pick(job) else {
                    return Expect::NoJob;
                };
                match self.run(j, Command::ManualRetry) {
                    Ok(_) => Expect::Ok,
                    Err(e) => Expect::Refused(refusal(&e)),
                }
            }
            Op::Register { worker } => {
                let w = worker % self.workers.len();
                self.workers[w] = (WorkerStatus::Online, now);
                let held: Vec<usize> = (0..self.jobs.len())
                    .filter(|&i| {
                        let s = &self.jobs[i].state;
                        s.status.is_in_flight() && widx(&s.worker_id) == Some(w)
                    })
                    .collect();
                for i in held {
                    let s = &self.jobs[i].state;
                    let cmd = Command::WorkerLost {
                        worker_id: wid(w),
                        attempt: s.attempt,
                    };
                    self.run(i, cmd).unwrap();
                }
                Expect::Ok
            }
            Op::Heartbeat { worker } => {
                let w = worker % self.workers.len();
                if self.workers[w].0 == WorkerStatus::Offline {
                    return Expect::Heartbeat { registered: false };
                }
                self.workers[w].1 = now;
                Expect::Heartbeat { registered: true }
            }
            Op::Drain { worker } => {
                let w = worker % self.workers.len();
                if self.workers[w].0 == WorkerStatus::Offline {
                    return Expect::Refused(Refusal::InvalidState);
                }
                self.workers[w].0 = WorkerStatus::Draining;
                Expect::Ok
            }
            Op::Advance { minutes } => {
                self.now += minutes;
                Expect::Ok
            }
            Op::ReapAssignments => {
                let t = self.cfg.assignment_timeout;
                let hit: Vec<usize> = (0..self.jobs.len())
                    .filter(|&i| {
                        let h = &self.jobs[i];
                        h.state.status == JobStatus::Assigned && h.assigned_at.is_some_and(|a| a + t <= now)
                    })
                    .collect();
                for &i in &hit {
                    let attempt = self.jobs[i].state.attempt;
                    self.run(i, Command::AssignmentTimeout { attempt }).unwrap();
                }
                Expect::Reaped(hit)
            }
            Op::ReapWorkers => {
                let t = self.cfg.heartbeat_timeout;
                let mut dead = vec![];
                for (w, wk) in self.workers.iter_mut().enumerate() {
                    if wk.0 != WorkerStatus::Offline && wk.1 + t <= now {
                        wk.0 = WorkerStatus::Offline;
                        dead.push(w);
                    }
                }
                let hit: Vec<usize> = (0..self.jobs.len())
                    .filter(|&i| {
                        let s = &self.jobs[i].state;
                        s.status.is_in_flight() && widx(&s.worker_id).is_some_and(|w| dead.contains(&w))
                    })
                    .collect();
                for &i in &hit {
                    let s = &self.jobs[i].state;
                    let cmd = Command::WorkerLost {
                        worker_id: s.worker_id.clone().unwrap(),
                        attempt: s.attempt,
                    };
                    self.run(i, cmd).unwrap();
                }
                Expect::Reaped(hit)
            }
            Op::ReapTtl => {
                let hit: Vec<usize> = (0..self.jobs.len())
                    .filter(|&i| {
                        let h = &self.jobs[i];
                        h.state.status == JobStatus::Pending && h.expires_at.is_some_and(|e| e <= now)
                    })
                    .collect();
                for &i in &hit {
                    self.run(i, Command::TtlExpired).unwrap();
                }
                Expect::Reaped(hit)
            }
        }
    }
}

struct CoreLifecycle;

impl StateMachineTest for CoreLifecycle {
    type SystemUnderTest = Harness;
    type Reference = ModelMachine;

    fn init_test(model: &Model) -> Harness {
        let c = model.cfg;
        Harness {
            now: 0,
            jobs: vec![],
            workers: vec![(WorkerStatus::Online, 0); c.workers],
            ctx: Context {
                backoff: BackoffPolicy {
                    base: Duration::from_secs(c.backoff_base * MIN),
                    max: Duration::from_secs(c.backoff_max * MIN),
                },
                jitter_unit: 0.0,
            },
            cfg: c,
        }
    }

    fn apply(mut sut: Harness, model: &Model, op: Op) -> Harness {
        let got = sut.apply(&op);
        assert_eq!(got, model.last, "answer to {op:?}");
        sut
    }

    fn check_invariants(sut: &Harness, model: &Model) {
        assert_eq!(sut.jobs.len(), model.jobs.len());
        for (i, (h, m)) in sut.jobs.iter().zip(&model.jobs).enumerate() {
            let s = &h.state;
            let ctx = format!("job {i}: {s:?} vs {m:?}");
            assert_eq!(s.status, m.status, "{ctx}");
            assert_eq!(s.attempt, m.attempt, "{ctx}");
            assert_eq!(s.retries, m.retries, "{ctx}");
            assert_eq!(widx(&s.worker_id), m.worker, "{ctx}");
            assert_eq!(s.cancel_requested, m.cancel_requested, "{ctx}");
            assert_eq!(h.events, m.events, "{ctx}");
            assert_eq!(h.expires_at, m.expires_at, "{ctx}");
            if s.status == JobStatus::Pending {
                assert_eq!(h.not_before, m.not_before, "{ctx}");
            }
            // SPEC invariants, independent of the model.
            assert!(s.retries <= s.max_retries, "{ctx}");
            assert!(!s.cancel_requested || s.status == JobStatus::Running, "{ctx}");
            if s.status.is_in_flight() {
                assert!(s.attempt > 0 && s.worker_id.is_some(), "{ctx}");
            }
        }
        for (w, (hs, ms)) in sut.workers.iter().zip(&model.workers).enumerate() {
            assert_eq!(hs.0, ms.status, "worker {w}");
            assert_eq!(hs.1, ms.last_heartbeat, "worker {w}");
        }
    }
}

prop_state_machine! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        max_shrink_iters: 4096,
        .. ProptestConfig::default()
    })]

    #[test]
    fn fr_010_jq_110_lifecycle_matches_reference_model(sequential 1..60 => CoreLifecycle);
}

/// The reference model on its own must respect the SPEC invariants too, or
/// both sides could agree on a wrong answer.
#[test]
fn fr_010_reference_model_keeps_spec_invariants() {
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 256,
        ..Default::default()
    });
    let strat = ModelMachine::sequential_strategy(1..80);
    runner
        .run(&strat, |(mut model, ops, _)| {
            for op in &ops {
                let before = model.clone();
                model.apply(op);
                for (b, a) in before.jobs.iter().zip(&model.jobs) {
                    prop_assert!(a.attempt >= b.attempt);
                    prop_assert!(a.events >= b.events);
                    if b.status.is_terminal() && a.status != b.status {
                        prop_assert!(
                            matches!(op, Op::Retry { .. }),
                            "only a retry leaves a terminal state: {op:?}"
                        );
                    }
                }
            }
            Ok(())
        })
        .unwrap();
}
