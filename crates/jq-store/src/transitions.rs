//! Single-job commands (SPEC §3): ack, report, cancel, retry, delivery
//! failure, and the bulk redrive. Each reads the job, hands it to the
//! executor (`crate::executor`) with its command, and on a lost race reads
//! and decides again.

use jq_core::submit::validate_worker_id;
use jq_core::{Command, Effects, JobState, JobStatus, Outcome, TransitionError};
use uuid::Uuid;

use crate::executor::{Order, Record, Row, Verdict, applied_ids};
use crate::rows::{Candidate, JOB_COLUMNS};
use crate::{Result, Store, StoreError};

/// A worker's report of one attempt (FR-029).
#[derive(Debug, Clone, PartialEq)]
pub struct ResultReport {
    pub worker_id: String,
    pub job_id: Uuid,
    pub attempt: u32,
    pub outcome: Outcome,
    pub result: Vec<u8>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportOutcome {
    /// The job's status afterwards.
    pub status: JobStatus,
    /// The same report had already been applied.
    pub duplicate: bool,
}

impl ReportOutcome {
    /// From a decision: no effects means the report was already applied.
    pub(crate) fn of(before: &JobState, effects: Option<&Effects>) -> ReportOutcome {
        match effects {
            None => ReportOutcome {
                status: before.status,
                duplicate: true,
            },
            Some(e) => ReportOutcome {
                status: e.next.status,
                duplicate: false,
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelOutcome {
    /// PENDING/ASSIGNED: dead-lettered now. `notify` names the worker that
    /// may already hold the assignment.
    Cancelled { notify: Option<(String, u32)> },
    /// RUNNING: the worker must kill it (JQ-113).
    KillRequested { worker_id: String, attempt: u32 },
}

impl Store {
    /// Read a job with its queue's backoff.
    pub(crate) async fn load_row(&self, id: Uuid) -> Result<Row> {
        let c: Option<Candidate> = sqlx::query_as(&format!(
            "SELECT {JOB_COLUMNS}, q.backoff_base_ms, q.backoff_max_ms FROM jobs j JOIN queues q ON q.name = j.queue \
             WHERE j.id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        c.as_ref().map(Row::from).ok_or(StoreError::JobNotFound(id))
    }

    /// Decide `order` for one job and write it; on a lost race, read and
    /// decide again. A refusal is the error; `None` effects: the same
    /// report was applied before.
    pub(crate) async fn execute_one(
        &self,
        id: Uuid,
        order: &Order,
    ) -> Result<(String, JobState, Option<Effects>)> {
        for _ in 0..8 {
            let row = self.load_row(id).await?;
            match self.execute(vec![(row, order.clone())]).await?.pop() {
                Some(Verdict::Applied {
                    queue,
                    before,
                    effects,
                    ..
                }) => return Ok((queue, before, Some(effects))),
                Some(Verdict::AlreadyApplied { queue, before }) => return Ok((queue, before, None)),
                Some(Verdict::Refused(e)) => return Err(e.into()),
                Some(Verdict::Lost) | None => {
                    tracing::debug!(job_id = %id, command = order.cmd.name(), "lost a race; deciding again");
                }
            }
        }
        Err(StoreError::Contention(id))
    }

    /// ASSIGNED -> RUNNING by the holder of the attempt (JQ-110).
    pub async fn ack(&self, worker_id: &str, job_id: Uuid, attempt: u32) -> Result<()> {
        validate_worker_id(worker_id)?;
        let order = Order::new(Command::Ack {
            worker_id: worker_id.to_string(),
            attempt,
        });
        let order = &order;
        self.run("ack_job", move || async move {
            self.execute_one(job_id, order).await.map(|_| ())
        })
        .await
    }

    /// Apply a worker's result (FR-029); idempotent per (job, attempt).
    pub async fn report(&self, r: &ResultReport) -> Result<ReportOutcome> {
        validate_worker_id(&r.worker_id)?;
        let order = &r.order();
        self.run("report_result", || async move {
            let (_, before, effects) = self.execute_one(r.job_id, order).await?;
            Ok(ReportOutcome::of(&before, effects.as_ref()))
        })
        .await
    }

    /// Operator cancel (FR-012, JQ-113).
    pub async fn cancel(&self, job_id: Uuid) -> Result<CancelOutcome> {
        let order = &Order::new(Command::Cancel);
        self.run("cancel_job", || async move {
            let (_, _, effects) = self.execute_one(job_id, order).await?;
            let e = effects.expect("cancel is never a duplicate");
            Ok(match (e.steps.is_empty(), e.notify_cancel) {
                (true, Some((worker_id, attempt))) => CancelOutcome::KillRequested { worker_id, attempt },
                (_, notify) => CancelOutcome::Cancelled { notify },
            })
        })
        .await
    }

    /// Operator retry of one DEAD_LETTERED or FAILED job (FR-013).
    pub async fn retry(&self, job_id: Uuid) -> Result<()> {
        let order = &manual_retry();
        self.run("retry_job", || async move {
            self.execute_one(job_id, order).await.map(|_| ())
        })
        .await
    }

    /// Bulk redrive (JQ-150): up to `limit` jobs of `queue` in `status`
    /// (DEAD_LETTERED or FAILED), oldest first, back to PENDING.
    pub async fn retry_many(&self, queue: &str, status: JobStatus, limit: u32) -> Result<Vec<Uuid>> {
        if !matches!(status, JobStatus::DeadLettered | JobStatus::Failed) {
            return Err(TransitionError::InvalidState {
                command: "retry",
                status,
            }
            .into());
        }
        jq_core::submit::validate_queue_name(queue)?;
        let limit = limit.clamp(1, 10_000) as i64;
        self.run("retry_jobs", || async move {
            self.require_queue(queue).await?;
            let rows: Vec<Candidate> = sqlx::query_as(&format!(
                "SELECT {JOB_COLUMNS}, q.backoff_base_ms, q.backoff_max_ms FROM jobs j JOIN queues q ON q.name = j.queue \
                 WHERE j.queue = $1 AND j.status = '{status}' AND j.phase = {phase} ORDER BY j.created_at, j.seq LIMIT $2",
                status = status.as_str(),
                phase = crate::layout::phase(status),
            ))
            .bind(queue)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
            let work = rows.iter().map(|c| (Row::from(c), manual_retry())).collect();
            Ok(applied_ids("retry_jobs", &self.execute(work).await?))
        })
        .await
    }

    /// JQ-111: the assignment never reached the worker; back to PENDING now.
    pub async fn delivery_failed(&self, worker_id: &str, job_id: Uuid, attempt: u32) -> Result<()> {
        validate_worker_id(worker_id)?;
        let order = Order::new(Command::DeliveryFailed {
            worker_id: worker_id.to_string(),
            attempt,
        });
        let order = &order;
        self.run("delivery_failed", move || async move {
            self.execute_one(job_id, order).await.map(|_| ())
        })
        .await
    }
}

/// An operator's re-queue: the last attempt's error goes with it.
fn manual_retry() -> Order {
    Order {
        cmd: Command::ManualRetry,
        record: Record::ClearError,
    }
}

impl ResultReport {
    /// The report as a command and what its write records: the one place a
    /// report is shaped for the executor.
    pub(crate) fn order(&self) -> Order {
        Order {
            cmd: Command::Report {
                worker_id: self.worker_id.clone(),
                attempt: self.attempt,
                outcome: self.outcome,
            },
            record: Record::Report {
                result: self.result.clone(),
                error: self.error.clone(),
            },
        }
    }
}
