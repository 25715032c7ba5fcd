//! The job lifecycle state machine (docs/requirements.md, "Lifecycle"):
//! the one place that decides whether a transition is legal and what it
//! does.
//!
//! [`transition`] is pure: it takes the job's current [`JobState`] and a
//! [`Command`] and returns a [`Decision`]. The store applies a decision in
//! one statement: the state change plus one `job_events` row per [`Step`],
//! which is also that step's outbox entry (ADR 0012). The write is guarded
//! by the whole [`JobState`] the decision saw (a compare-and-set, ADR 0009),
//! so a lost race changes nothing. Time never enters here: delays are
//! returned as durations and added to the database clock by the store.

use std::time::Duration;

use crate::backoff::BackoffPolicy;
use crate::status::JobStatus;

/// Why a transition happened; stored in `job_events.reason` and events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Job created (no previous state).
    Submitted,
    /// Job created by a periodic schedule for one occurrence (JQ-124).
    Scheduled,
    /// PENDING -> ASSIGNED by a dispatcher claim.
    Claimed,
    /// ASSIGNED -> RUNNING: the worker acknowledged the assignment.
    Started,
    /// RUNNING -> DONE.
    Completed,
    /// RUNNING -> FAILED: the handler reported a failure.
    Failed,
    /// ASSIGNED -> FAILED: not acknowledged within the assignment timeout (FR-016).
    AssignmentTimeout,
    /// ASSIGNED/RUNNING -> FAILED: the worker stopped heartbeating (FR-020).
    WorkerLost,
    /// ASSIGNED -> FAILED: the assignment could not be written to the worker's
    /// stream (JQ-111); not counted against max_retries.
    DeliveryFailed,
    /// FAILED -> PENDING with a backoff delay (FR-033).
    RetryScheduled,
    /// FAILED -> DEAD_LETTERED: max_retries used up (FR-034).
    RetriesExhausted,
    /// FAILED -> DEAD_LETTERED: the worker reported a non-retryable failure.
    PermanentFailure,
    /// PENDING -> DEAD_LETTERED: not started within its TTL (FR-004).
    TtlExpired,
    /// -> DEAD_LETTERED by an operator (FR-012, JQ-113).
    Cancelled,
    /// DEAD_LETTERED/FAILED -> PENDING by an operator (FR-013, JQ-150).
    ManualRetry,
}

impl Reason {
    pub const ALL: [Reason; 15] = [
        Reason::Submitted,
        Reason::Scheduled,
        Reason::Claimed,
        Reason::Started,
        Reason::Completed,
        Reason::Failed,
        Reason::AssignmentTimeout,
        Reason::WorkerLost,
        Reason::DeliveryFailed,
        Reason::RetryScheduled,
        Reason::RetriesExhausted,
        Reason::PermanentFailure,
        Reason::TtlExpired,
        Reason::Cancelled,
        Reason::ManualRetry,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Submitted => "SUBMITTED",
            Reason::Scheduled => "SCHEDULED",
            Reason::Claimed => "CLAIMED",
            Reason::Started => "STARTED",
            Reason::Completed => "COMPLETED",
            Reason::Failed => "FAILED",
            Reason::AssignmentTimeout => "ASSIGNMENT_TIMEOUT",
            Reason::WorkerLost => "WORKER_LOST",
            Reason::DeliveryFailed => "DELIVERY_FAILED",
            Reason::RetryScheduled => "RETRY_SCHEDULED",
            Reason::RetriesExhausted => "RETRIES_EXHAUSTED",
            Reason::PermanentFailure => "PERMANENT_FAILURE",
            Reason::TtlExpired => "TTL_EXPIRED",
            Reason::Cancelled => "CANCELLED",
            Reason::ManualRetry => "MANUAL_RETRY",
        }
    }

    pub fn parse(s: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// The transitions FR-010 allows, and no others. `None` is "not yet created".
pub fn is_allowed(from: Option<JobStatus>, to: JobStatus) -> bool {
    use JobStatus::*;
    matches!(
        (from, to),
        (None, Pending)
            | (Some(Pending), Assigned)
            | (Some(Assigned), Running)
            | (Some(Running), Done)
            | (Some(Running), Failed)
            | (Some(Failed), Pending)
            | (Some(Failed), DeadLettered)
            | (Some(Assigned), Failed)
            | (Some(Pending), DeadLettered)
            | (Some(Assigned), DeadLettered)
            | (Some(Running), DeadLettered)
            | (Some(DeadLettered), Pending)
    )
}

/// How a worker says an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    Succeeded,
    /// `retryable: false` dead-letters at once (PERMANENT_FAILURE).
    Failed {
        retryable: bool,
    },
    /// The worker killed the attempt after a cancel request (JQ-113).
    Cancelled,
}

impl Outcome {
    /// The kind recorded for idempotent reports: a repeat of the same kind for
    /// the same attempt is a duplicate, a different kind a conflict.
    pub fn kind(self) -> ReportKind {
        match self {
            Outcome::Succeeded => ReportKind::Succeeded,
            Outcome::Failed { .. } => ReportKind::Failed,
            Outcome::Cancelled => ReportKind::Cancelled,
        }
    }
}

/// The recorded kind of a worker's report (see [`Outcome::kind`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReportKind {
    Succeeded,
    Failed,
    Cancelled,
}

impl ReportKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ReportKind::Succeeded => "SUCCEEDED",
            ReportKind::Failed => "FAILED",
            ReportKind::Cancelled => "CANCELLED",
        }
    }

    pub fn parse(s: &str) -> Option<ReportKind> {
        [ReportKind::Succeeded, ReportKind::Failed, ReportKind::Cancelled]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

/// The last worker report applied to a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastReport {
    pub attempt: u32,
    pub kind: ReportKind,
}

/// What the state machine needs to know about a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobState {
    pub status: JobStatus,
    /// Fencing token: incremented by every claim, never reset (JQ-110).
    pub attempt: u32,
    /// Failed attempts counted against `max_retries`; reset by manual retry.
    pub retries: u32,
    pub max_retries: u32,
    /// Worker holding (or, once terminal, last holding) the attempt.
    pub worker_id: Option<String>,
    /// An operator asked to cancel the RUNNING attempt (JQ-113).
    pub cancel_requested: bool,
    pub last_report: Option<LastReport>,
}

impl JobState {
    /// A freshly submitted job.
    pub fn new(max_retries: u32) -> Self {
        JobState {
            status: JobStatus::Pending,
            attempt: 0,
            retries: 0,
            max_retries,
            worker_id: None,
            cancel_requested: false,
            last_report: None,
        }
    }
}

/// Something that may change a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// A dispatcher hands the job to `worker_id` (PENDING -> ASSIGNED).
    Claim { worker_id: String },
    /// The worker starts the attempt (ASSIGNED -> RUNNING).
    Ack { worker_id: String, attempt: u32 },
    /// The worker reports how the attempt ended.
    Report {
        worker_id: String,
        attempt: u32,
        outcome: Outcome,
    },
    /// Reaper: the attempt stayed ASSIGNED past the assignment timeout.
    AssignmentTimeout { attempt: u32 },
    /// Reaper: the worker holding the attempt missed its heartbeat timeout.
    WorkerLost { worker_id: String, attempt: u32 },
    /// The server could not write the assignment to the worker's stream.
    DeliveryFailed { worker_id: String, attempt: u32 },
    /// Reaper: PENDING past its TTL without having started.
    TtlExpired,
    /// Operator cancel (FR-012, JQ-113).
    Cancel,
    /// Operator retry (FR-013, JQ-150).
    ManualRetry,
}

impl Command {
    /// Short name for error messages and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Claim { .. } => "claim",
            Command::Ack { .. } => "ack",
            Command::Report { .. } => "report result",
            Command::AssignmentTimeout { .. } => "assignment timeout",
            Command::WorkerLost { .. } => "worker lost",
            Command::DeliveryFailed { .. } => "delivery failed",
            Command::TtlExpired => "ttl expiry",
            Command::Cancel => "cancel",
            Command::ManualRetry => "retry",
        }
    }
}

/// One state change; becomes one `job_events` row, which is also its
/// outbox entry (ADR 0012).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    pub from: Option<JobStatus>,
    pub to: JobStatus,
    pub reason: Reason,
}

/// What applying a command does. `steps` may be empty (a cancel request on a
/// RUNNING job changes a flag, not the state).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effects {
    pub steps: Vec<Step>,
    /// The job's state afterwards.
    pub next: JobState,
    /// Hold the job until database-now + this (retry backoff; FR-033).
    pub not_before: Option<Duration>,
    /// Drop the TTL: the job started, or an operator re-queued it.
    pub clear_expiry: bool,
    /// Tell this worker to stop this attempt (JQ-113).
    pub notify_cancel: Option<(String, u32)>,
}

/// The answer of [`transition`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Apply(Effects),
    /// The same report for the same attempt was already applied (JQ-110
    /// idempotency): answer success, change nothing.
    AlreadyApplied,
}

/// Why a command is refused. Refusal never changes anything.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    /// The caller holds an older (or unknown) attempt than the job's.
    #[error("stale attempt {presented}: the job is at attempt {current}")]
    StaleAttempt { presented: u32, current: u32 },
    /// The attempt is right but the caller does not hold it (another worker
    /// does, or the job was taken back).
    #[error("attempt {attempt} is not held by this worker")]
    NotOwner { attempt: u32 },
    /// The command makes no sense in the job's current state.
    #[error("cannot {command} a job that is {status}")]
    InvalidState {
        command: &'static str,
        status: JobStatus,
    },
    /// A different outcome was already recorded for this attempt.
    #[error("attempt {attempt} already reported as {recorded}")]
    ConflictingReport { attempt: u32, recorded: &'static str },
}

/// Inputs that are not part of the job: the queue's backoff policy and a
/// random number for jitter (injectable so tests are deterministic).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Context {
    pub backoff: BackoffPolicy,
    /// Uniform in [0, 1); see [`BackoffPolicy::delay`].
    pub jitter_unit: f64,
}

impl Default for Context {
    fn default() -> Self {
        Context {
            backoff: BackoffPolicy::default(),
            jitter_unit: 0.0,
        }
    }
}

/// Decide what `cmd` does to a job in state `job`. The only place that
/// decides; every caller applies the result and never re-implements it.
pub fn transition(job: &JobState, cmd: &Command, ctx: &Context) -> Result<Decision, TransitionError> {
    use JobStatus::*;
    let mut next = job.clone();
    let refuse = || TransitionError::InvalidState {
        command: cmd.name(),
        status: job.status,
    };
    let effects = match cmd {
        Command::Claim { worker_id } => {
            if job.status != Pending {
                return Err(refuse());
            }
            next.status = Assigned;
            next.attempt = job.attempt + 1;
            next.worker_id = Some(worker_id.clone());
            next.cancel_requested = false;
            simple(next, Pending, Assigned, Reason::Claimed)
        }
        Command::Ack { worker_id, attempt } => {
            fence(job, worker_id, *attempt)?;
            if job.status != Assigned {
                return Err(refuse());
            }
            next.status = Running;
            let mut e = simple(next, Assigned, Running, Reason::Started);
            e.clear_expiry = true;
            e
        }
        Command::Report {
            worker_id,
            attempt,
            outcome,
        } => {
            if let Some(last) = job.last_report
                && last.attempt == *attempt
            {
                // A repeat changes nothing, so it needs no ownership check.
                return if last.kind == outcome.kind() {
                    Ok(Decision::AlreadyApplied)
                } else {
                    Err(TransitionError::ConflictingReport {
                        attempt: *attempt,
                        recorded: last.kind.as_str(),
                    })
                };
            }
            fence(job, worker_id, *attempt)?;
            if job.status != Running {
                return Err(refuse());
            }
            next.last_report = Some(LastReport {
                attempt: *attempt,
                kind: outcome.kind(),
            });
            match outcome {
                Outcome::Succeeded => {
                    next.status = Done;
                    next.cancel_requested = false;
                    simple(next, Running, Done, Reason::Completed)
                }
                // A failure after a cancel request is the kill landing.
                _ if job.cancel_requested => cancelled(next, Running),
                Outcome::Failed { retryable } => {
                    fail(job, next, Running, Reason::Failed, Failure::of(*retryable), ctx)
                }
                // Cancelled without a request: treat as a retryable failure so
                // the job is never stranded.
                Outcome::Cancelled => fail(job, next, Running, Reason::Failed, Failure::Counted, ctx),
            }
        }
        Command::AssignmentTimeout { attempt } => {
            if job.status != Assigned {
                return Err(refuse());
            }
            fence_attempt(job, *attempt)?;
            fail(
                job,
                next,
                Assigned,
                Reason::AssignmentTimeout,
                Failure::Counted,
                ctx,
            )
        }
        Command::WorkerLost { worker_id, attempt } => {
            if !job.status.is_in_flight() {
                return Err(refuse());
            }
            fence(job, worker_id, *attempt)?;
            if job.cancel_requested {
                cancelled(next, job.status)
            } else {
                fail(job, next, job.status, Reason::WorkerLost, Failure::Counted, ctx)
            }
        }
        Command::DeliveryFailed { worker_id, attempt } => {
            if job.status != Assigned {
                return Err(refuse());
            }
            fence(job, worker_id, *attempt)?;
            fail(
                job,
                next,
                Assigned,
                Reason::DeliveryFailed,
                Failure::Uncounted,
                ctx,
            )
        }
        Command::TtlExpired => {
            if job.status != Pending {
                return Err(refuse());
            }
            next.status = DeadLettered;
            simple(next, Pending, DeadLettered, Reason::TtlExpired)
        }
        Command::Cancel => match job.status {
            Pending => cancelled(next, Pending),
            Assigned => {
                let mut e = cancelled(next, Assigned);
                e.notify_cancel = job.worker_id.clone().map(|w| (w, job.attempt));
                e
            }
            Running => {
                next.cancel_requested = true;
                Effects {
                    steps: vec![],
                    next,
                    not_before: None,
                    clear_expiry: false,
                    notify_cancel: job.worker_id.clone().map(|w| (w, job.attempt)),
                }
            }
            _ => return Err(refuse()),
        },
        Command::ManualRetry => {
            if !matches!(job.status, DeadLettered | Failed) {
                return Err(refuse());
            }
            next.status = Pending;
            next.retries = 0;
            next.worker_id = None;
            next.cancel_requested = false;
            let mut e = simple(next, job.status, Pending, Reason::ManualRetry);
            e.not_before = Some(Duration::ZERO);
            e.clear_expiry = true;
            e
        }
    };
    debug_assert!(effects.steps.iter().all(|s| is_allowed(s.from, s.to)));
    Ok(Decision::Apply(effects))
}

fn simple(next: JobState, from: JobStatus, to: JobStatus, reason: Reason) -> Effects {
    Effects {
        steps: vec![Step {
            from: Some(from),
            to,
            reason,
        }],
        next,
        not_before: None,
        clear_expiry: false,
        notify_cancel: None,
    }
}

fn cancelled(mut next: JobState, from: JobStatus) -> Effects {
    next.status = JobStatus::DeadLettered;
    next.cancel_requested = false;
    simple(next, from, JobStatus::DeadLettered, Reason::Cancelled)
}

/// What a failed attempt leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// Uses up a retry; retried with backoff while any are left (JQ-112).
    Counted,
    /// Retried at once without using a retry: the attempt never reached
    /// the worker (JQ-111).
    Uncounted,
    /// Dead-lettered whatever the retries left (PERMANENT_FAILURE).
    Permanent,
}

impl Failure {
    fn of(retryable: bool) -> Failure {
        if retryable {
            Failure::Counted
        } else {
            Failure::Permanent
        }
    }
}

/// `from` -> FAILED, then at once FAILED -> PENDING (with backoff) or
/// FAILED -> DEAD_LETTERED, committed together (FR-010, FR-033, FR-034).
fn fail(
    job: &JobState,
    mut next: JobState,
    from: JobStatus,
    reason: Reason,
    failure: Failure,
    ctx: &Context,
) -> Effects {
    let counted = failure != Failure::Uncounted;
    let retryable = failure != Failure::Permanent;
    let mut steps = vec![Step {
        from: Some(from),
        to: JobStatus::Failed,
        reason,
    }];
    let mut not_before = None;
    let exhausted = counted && job.retries >= job.max_retries;
    if !retryable || exhausted {
        next.status = JobStatus::DeadLettered;
        let why = if retryable {
            Reason::RetriesExhausted
        } else {
            Reason::PermanentFailure
        };
        steps.push(Step {
            from: Some(JobStatus::Failed),
            to: JobStatus::DeadLettered,
            reason: why,
        });
    } else {
        next.status = JobStatus::Pending;
        next.worker_id = None;
        if counted {
            not_before = Some(ctx.backoff.delay(job.retries, ctx.jitter_unit));
            next.retries = job.retries + 1;
        } else {
            not_before = Some(Duration::ZERO);
        }
        steps.push(Step {
            from: Some(JobStatus::Failed),
            to: JobStatus::Pending,
            reason: Reason::RetryScheduled,
        });
    }
    next.cancel_requested = false;
    Effects {
        steps,
        next,
        not_before,
        clear_expiry: false,
        notify_cancel: None,
    }
}

fn fence_attempt(job: &JobState, attempt: u32) -> Result<(), TransitionError> {
    if attempt != job.attempt || attempt == 0 {
        return Err(TransitionError::StaleAttempt {
            presented: attempt,
            current: job.attempt,
        });
    }
    Ok(())
}

/// JQ-110: only the holder of the current attempt may act on the job.
fn fence(job: &JobState, worker_id: &str, attempt: u32) -> Result<(), TransitionError> {
    fence_attempt(job, attempt)?;
    if job.worker_id.as_deref() != Some(worker_id) {
        return Err(TransitionError::NotOwner { attempt });
    }
    Ok(())
}
