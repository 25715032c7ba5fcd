//! Reference model of a whole queue, for model-based tests (DESIGN test
//! pyramid levels 1 and 2). Written as a plain, independent restatement of
//! SPEC §3-§5 — deliberately not calling [`crate::transition`] — so a test
//! that drives a real implementation (core harness, PostgreSQL store) with
//! the same operations can compare results and state after every step.
//!
//! Time is whole **minutes** since the start of the run. The store test maps
//! a minute to 60 real seconds and advances the clock by shifting stored
//! timestamps back, so the few real seconds a case takes never cross a
//! boundary the model predicts.

use proptest::prelude::*;
use proptest_state_machine::ReferenceStateMachine;

use crate::lifecycle::ReportKind;
use crate::status::{JobStatus, WorkerStatus};

/// Timeouts and backoff of the modelled deployment, in minutes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelConfig {
    pub workers: usize,
    pub assignment_timeout: u64,
    pub heartbeat_timeout: u64,
    pub backoff_base: u64,
    pub backoff_max: u64,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            workers: 3,
            assignment_timeout: 10,
            heartbeat_timeout: 20,
            backoff_base: 2,
            backoff_max: 16,
        }
    }
}

/// The attempt an operation presents: the current one, or a wrong one
/// (the previous attempt, or 1 before any claim) when `stale`. Shared by
/// the model and every implementation under test so they present alike.
pub fn presented_attempt(current: u32, stale: bool) -> u32 {
    match (stale, current) {
        (false, a) => a,
        (true, 0) => 1,
        (true, a) => a - 1,
    }
}

/// One modelled job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelJob {
    pub status: JobStatus,
    pub attempt: u32,
    pub retries: u32,
    pub max_retries: u32,
    pub priority: u8,
    pub created_at: u64,
    pub not_before: u64,
    pub expires_at: Option<u64>,
    /// Index of the worker holding the attempt.
    pub worker: Option<usize>,
    pub assigned_at: Option<u64>,
    pub cancel_requested: bool,
    pub last_report: Option<(u32, ReportKind)>,
    /// Transitions recorded so far (the submission included).
    pub events: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelWorker {
    pub status: WorkerStatus,
    pub last_heartbeat: u64,
}

/// Operations on the queue. Job and worker indices are taken modulo the
/// number that exist when the operation runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Submit {
        priority: u8,
        max_retries: u32,
        delay: u64,
        ttl: Option<u64>,
    },
    Claim {
        worker: usize,
        limit: usize,
    },
    Ack {
        job: usize,
        stale: bool,
    },
    Complete {
        job: usize,
        stale: bool,
    },
    Fail {
        job: usize,
        stale: bool,
        retryable: bool,
    },
    ReportCancelled {
        job: usize,
    },
    DeliveryFailed {
        job: usize,
    },
    Cancel {
        job: usize,
    },
    Retry {
        job: usize,
    },
    Register {
        worker: usize,
    },
    Heartbeat {
        worker: usize,
    },
    Drain {
        worker: usize,
    },
    Advance {
        minutes: u64,
    },
    ReapAssignments,
    ReapWorkers,
    ReapTtl,
}

/// Why an implementation must refuse an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Stale,
    NotOwner,
    InvalidState,
    Conflict,
}

/// What an operation must answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    Ok,
    /// A repeated report: success, nothing changed.
    Duplicate,
    /// Cancel of a RUNNING job: the worker is asked to kill it.
    CancelRequested,
    Refused(Refusal),
    /// Job indices claimed, in dispatch order.
    Claimed(Vec<usize>),
    /// Job indices a reaper changed, ascending.
    Reaped(Vec<usize>),
    Heartbeat {
        registered: bool,
    },
    /// The operation names a job but none exists yet.
    NoJob,
}

/// The whole modelled queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Model {
    pub cfg: ModelConfig,
    pub now: u64,
    pub jobs: Vec<ModelJob>,
    pub workers: Vec<ModelWorker>,
    /// Answer of the last applied operation.
    pub last: Expect,
}

impl Model {
    pub fn new(cfg: ModelConfig) -> Self {
        Model {
            cfg,
            now: 0,
            jobs: vec![],
            workers: (0..cfg.workers)
                .map(|_| ModelWorker {
                    status: WorkerStatus::Online,
                    last_heartbeat: 0,
                })
                .collect(),
            last: Expect::Ok,
        }
    }

    /// Resolve a job index the way implementations must.
    pub fn job_index(&self, job: usize) -> Option<usize> {
        (!self.jobs.is_empty()).then(|| job % self.jobs.len())
    }

    pub fn worker_index(&self, worker: usize) -> usize {
        worker % self.workers.len()
    }

    /// The (worker, attempt) an operation on job `j` presents: the holder (or
    /// worker 0) and the current attempt, or a wrong attempt when `stale`.
    pub fn credentials(&self, j: usize, stale: bool) -> (usize, u32) {
        let job = &self.jobs[j];
        let attempt = presented_attempt(job.attempt, stale);
        (job.worker.unwrap_or(0), attempt)
    }

    fn backoff(&self, retries: u32) -> u64 {
        let exp = 1u64.checked_shl(retries.min(40)).unwrap_or(u64::MAX);
        self.cfg
            .backoff_base
            .saturating_mul(exp)
            .min(self.cfg.backoff_max)
    }

    /// A failure of job `j` from its current state: FAILED then PENDING
    /// (with backoff when it spends a retry), or DEAD_LETTERED.
    fn fail(&mut self, j: usize, how: Fails) {
        let (counted, retryable) = match how {
            Fails::Counted => (true, true),
            Fails::Uncounted => (false, true),
            Fails::Permanently => (true, false),
        };
        let now = self.now;
        let delay = self.backoff(self.jobs[j].retries);
        let job = &mut self.jobs[j];
        job.events += 2;
        job.cancel_requested = false;
        if !retryable || (counted && job.retries >= job.max_retries) {
            job.status = JobStatus::DeadLettered;
        } else {
            job.status = JobStatus::Pending;
            job.worker = None;
            if counted {
                job.retries += 1;
                job.not_before = now + delay;
            } else {
                job.not_before = now;
            }
        }
    }

    fn dead_letter_cancelled(&mut self, j: usize) {
        let job = &mut self.jobs[j];
        job.status = JobStatus::DeadLettered;
        job.cancel_requested = false;
        job.events += 1;
    }

    fn report(&mut self, j: usize, stale: bool, kind: ReportKind, retryable: bool) -> Expect {
        let (w, attempt) = self.credentials(j, stale);
        let job = &self.jobs[j];
        if let Some((a, k)) = job.last_report
            && a == attempt
        {
            return if k == kind {
                Expect::Duplicate
            } else {
                Expect::Refused(Refusal::Conflict)
            };
        }
        if attempt == 0 || attempt != job.attempt {
            return Expect::Refused(Refusal::Stale);
        }
        if job.worker != Some(w) {
            return Expect::Refused(Refusal::NotOwner);
        }
        if job.status != JobStatus::Running {
            return Expect::Refused(Refusal::InvalidState);
        }
        let cancel_requested = job.cancel_requested;
        self.jobs[j].last_report = Some((attempt, kind));
        match kind {
            ReportKind::Succeeded => {
                let job = &mut self.jobs[j];
                job.status = JobStatus::Done;
                job.cancel_requested = false;
                job.events += 1;
            }
            _ if cancel_requested => self.dead_letter_cancelled(j),
            ReportKind::Failed if retryable => self.fail(j, Fails::Counted),
            ReportKind::Failed => self.fail(j, Fails::Permanently),
            ReportKind::Cancelled => self.fail(j, Fails::Counted),
        }
        Expect::Ok
    }

    /// Apply `op`, record and return what an implementation must answer.
    pub fn apply(&mut self, op: &Op) -> Expect {
        let e = self.apply_inner(op);
        self.last = e.clone();
        e
    }

    fn apply_inner(&mut self, op: &Op) -> Expect {
        let now = self.now;
        match *op {
            Op::Submit {
                priority,
                max_retries,
                delay,
                ttl,
            } => {
                self.jobs.push(ModelJob {
                    status: JobStatus::Pending,
                    attempt: 0,
                    retries: 0,
                    max_retries,
                    priority,
                    created_at: now,
                    not_before: now + delay,
                    // TTL counts from when the job may first run.
                    expires_at: ttl.map(|t| now + delay + t),
                    worker: None,
                    assigned_at: None,
                    cancel_requested: false,
                    last_report: None,
                    events: 1,
                });
                Expect::Ok
            }
            Op::Claim { worker, limit } => {
                let w = self.worker_index(worker);
                if self.workers[w].status != WorkerStatus::Online {
                    return Expect::Claimed(vec![]);
                }
                let mut due: Vec<usize> = (0..self.jobs.len())
                    .filter(|&i| {
                        let j = &self.jobs[i];
                        j.status == JobStatus::Pending
                            && j.not_before <= now
                            && j.expires_at.is_none_or(|e| e > now)
                    })
                    .collect();
                // Priority descending, then creation order (index = submit order).
                due.sort_by_key(|&i| (std::cmp::Reverse(self.jobs[i].priority), i));
                due.truncate(limit);
                for &i in &due {
                    let j = &mut self.jobs[i];
                    j.status = JobStatus::Assigned;
                    j.attempt += 1;
                    j.worker = Some(w);
                    j.assigned_at = Some(now);
                    j.cancel_requested = false;
                    j.events += 1;
                }
                Expect::Claimed(due)
            }
            Op::Ack { job, stale } => {
                let Some(j) = self.job_index(job) else {
                    return Expect::NoJob;
                };
                let (w, attempt) = self.credentials(j, stale);
                let jb = &mut self.jobs[j];
                if attempt == 0 || attempt != jb.attempt {
                    return Expect::Refused(Refusal::Stale);
                }
                if jb.worker != Some(w) {
                    return Expect::Refused(Refusal::NotOwner);
                }
                if jb.status != JobStatus::Assigned {
                    return Expect::Refused(Refusal::InvalidState);
                }
                jb.status = JobStatus::Running;
                jb.expires_at = None;
                jb.events += 1;
                Expect::Ok
            }
            Op::Complete { job, stale } => match self.job_index(job) {
                None => Expect::NoJob,
                Some(j) => self.report(j, stale, ReportKind::Succeeded, true),
            },
            Op::Fail {
                job,
                stale,
                retryable,
            } => match self.job_index(job) {
                None => Expect::NoJob,
                Some(j) => self.report(j, stale, ReportKind::Failed, retryable),
            },
            Op::ReportCancelled { job } => match self.job_index(job) {
                None => Expect::NoJob,
                Some(j) => self.report(j, false, ReportKind::Cancelled, true),
            },
            Op::DeliveryFailed { job } => {
                let Some(j) = self.job_index(job) else {
                    return Expect::NoJob;
                };
                if self.jobs[j].status != JobStatus::Assigned {
                    return Expect::Refused(Refusal::InvalidState);
                }
                self.fail(j, Fails::Uncounted);
                Expect::Ok
            }
            Op::Cancel { job } => {
                let Some(j) = self.job_index(job) else {
                    return Expect::NoJob;
                };
                match self.jobs[j].status {
                    JobStatus::Pending | JobStatus::Assigned => {
                        self.dead_letter_cancelled(j);
                        Expect::Ok
                    }
                    JobStatus::Running => {
                        self.jobs[j].cancel_requested = true;
                        Expect::CancelRequested
                    }
                    _ => Expect::Refused(Refusal::InvalidState),
                }
            }
            Op::Retry { job } => {
                let Some(j) = self.job_index(job) else {
                    return Expect::NoJob;
                };
                let jb = &mut self.jobs[j];
                if !matches!(jb.status, JobStatus::DeadLettered | JobStatus::Failed) {
                    return Expect::Refused(Refusal::InvalidState);
                }
                jb.status = JobStatus::Pending;
                jb.retries = 0;
                jb.worker = None;
                jb.cancel_requested = false;
                jb.not_before = now;
                jb.expires_at = None;
                jb.events += 1;
                Expect::Ok
            }
            Op::Register { worker } => {
                let w = self.worker_index(worker);
                self.workers[w] = ModelWorker {
                    status: WorkerStatus::Online,
                    last_heartbeat: now,
                };
                // A registration is a new incarnation: whatever the id held
                // before is lost with the old process.
                let held: Vec<usize> = (0..self.jobs.len())
                    .filter(|&i| self.jobs[i].status.is_in_flight() && self.jobs[i].worker == Some(w))
                    .collect();
                for i in held {
                    if self.jobs[i].cancel_requested {
                        self.dead_letter_cancelled(i);
                    } else {
                        self.fail(i, Fails::Counted);
                    }
                }
                Expect::Ok
            }
            Op::Heartbeat { worker } => {
                let w = self.worker_index(worker);
                let wk = &mut self.workers[w];
                if wk.status == WorkerStatus::Offline {
                    return Expect::Heartbeat { registered: false };
                }
                wk.last_heartbeat = now;
                Expect::Heartbeat { registered: true }
            }
            Op::Drain { worker } => {
                let w = self.worker_index(worker);
                let wk = &mut self.workers[w];
                if wk.status == WorkerStatus::Offline {
                    return Expect::Refused(Refusal::InvalidState);
                }
                wk.status = WorkerStatus::Draining;
                Expect::Ok
            }
            Op::Advance { minutes } => {
                self.now += minutes;
                Expect::Ok
            }
            Op::ReapAssignments => {
                let timeout = self.cfg.assignment_timeout;
                let hit: Vec<usize> = (0..self.jobs.len())
                    .filter(|&i| {
                        let j = &self.jobs[i];
                        j.status == JobStatus::Assigned && j.assigned_at.is_some_and(|a| a + timeout <= now)
                    })
                    .collect();
                for &i in &hit {
                    self.fail(i, Fails::Counted);
                }
                Expect::Reaped(hit)
            }
            Op::ReapWorkers => {
                let timeout = self.cfg.heartbeat_timeout;
                let dead: Vec<usize> = (0..self.workers.len())
                    .filter(|&w| {
                        let wk = &self.workers[w];
                        wk.status != WorkerStatus::Offline && wk.last_heartbeat + timeout <= now
                    })
                    .collect();
                for &w in &dead {
                    self.workers[w].status = WorkerStatus::Offline;
                }
                let hit: Vec<usize> = (0..self.jobs.len())
                    .filter(|&i| {
                        let j = &self.jobs[i];
                        j.status.is_in_flight() && j.worker.is_some_and(|w| dead.contains(&w))
                    })
                    .collect();
                for &i in &hit {
                    if self.jobs[i].cancel_requested {
                        self.dead_letter_cancelled(i);
                    } else {
                        self.fail(i, Fails::Counted);
                    }
                }
                Expect::Reaped(hit)
            }
            Op::ReapTtl => {
                let hit: Vec<usize> = (0..self.jobs.len())
                    .filter(|&i| {
                        let j = &self.jobs[i];
                        j.status == JobStatus::Pending && j.expires_at.is_some_and(|e| e <= now)
                    })
                    .collect();
                for &i in &hit {
                    let j = &mut self.jobs[i];
                    j.status = JobStatus::DeadLettered;
                    j.events += 1;
                }
                Expect::Reaped(hit)
            }
        }
    }
}

/// Operations weighted toward the ones that move jobs forward.
pub fn op_strategy() -> impl Strategy<Value = Op> {
    let job = 0usize..64;
    prop_oneof![
        4 => (0u8..10, 0u32..3, prop_oneof![3 => Just(0u64), 1 => 1u64..8], prop::option::weighted(0.3, 1u64..40))
            .prop_map(|(priority, max_retries, delay, ttl)| Op::Submit { priority, max_retries, delay, ttl }),
        4 => (0usize..3, 1usize..4).prop_map(|(worker, limit)| Op::Claim { worker, limit }),
        4 => (job.clone(), prop::bool::weighted(0.15)).prop_map(|(job, stale)| Op::Ack { job, stale }),
        3 => (job.clone(), prop::bool::weighted(0.15)).prop_map(|(job, stale)| Op::Complete { job, stale }),
        3 => (job.clone(), prop::bool::weighted(0.15), prop::bool::weighted(0.85))
            .prop_map(|(job, stale, retryable)| Op::Fail { job, stale, retryable }),
        1 => job.clone().prop_map(|job| Op::ReportCancelled { job }),
        1 => job.clone().prop_map(|job| Op::DeliveryFailed { job }),
        1 => job.clone().prop_map(|job| Op::Cancel { job }),
        1 => job.prop_map(|job| Op::Retry { job }),
        1 => (0usize..3).prop_map(|worker| Op::Register { worker }),
        2 => (0usize..3).prop_map(|worker| Op::Heartbeat { worker }),
        1 => (0usize..3).prop_map(|worker| Op::Drain { worker }),
        3 => (1u64..30).prop_map(|minutes| Op::Advance { minutes }),
        1 => Just(Op::ReapAssignments),
        1 => Just(Op::ReapWorkers),
        1 => Just(Op::ReapTtl),
    ]
}

/// [`ReferenceStateMachine`] over [`Model`] with the default config.
pub struct ModelMachine;

impl ReferenceStateMachine for ModelMachine {
    type State = Model;
    type Transition = Op;

    fn init_state() -> BoxedStrategy<Self::State> {
        Just(Model::new(ModelConfig::default())).boxed()
    }

    fn transitions(_state: &Self::State) -> BoxedStrategy<Self::Transition> {
        op_strategy().boxed()
    }

    fn apply(mut state: Self::State, op: &Self::Transition) -> Self::State {
        state.apply(op);
        state
    }
}

/// How a failure counts in the model (kept apart from the decider's own).
#[derive(Debug, Clone, Copy)]
enum Fails {
    /// Spends a retry.
    Counted,
    /// Retried at once, spending nothing (an undelivered assignment).
    Uncounted,
    /// Dead-lettered whatever is left.
    Permanently,
}
