//! Carrying out lifecycle decisions (SPEC §3).
//!
//! [`Store::apply_planned`] writes a batch of decided transitions in one
//! statement: each job row is updated only if it is still in the state the
//! decision saw (every column of [`JobState`], a compare-and-set), and only
//! updated jobs get their `job_events` rows, which are also the outbox the
//! relay publishes (ADR 0012). Single-job operations read the job, ask
//! [`jq_core::transition`], write, and on a lost race decide again.

use jq_core::{Command, Context, Decision, Effects, JobState, JobStatus, Outcome, TransitionError};
use sqlx::PgExecutor;
use uuid::Uuid;

use jq_core::input::job_text;
use jq_core::submit::validate_worker_id;

use crate::rows::{JOB_COLUMNS, JobRow, backoff};
use crate::{Result, Store, StoreError};

/// A decided transition of one job, ready to write.
#[derive(Debug, Clone)]
pub(crate) struct Planned {
    pub id: Uuid,
    pub before: JobState,
    pub effects: Effects,
    /// Some(..): overwrite the result column.
    pub result: Option<Option<Vec<u8>>>,
    /// Some(..): overwrite the error column.
    pub error: Option<Option<String>>,
    /// Detail text on the first event (e.g. the failure message).
    pub detail: Option<String>,
}

impl Planned {
    pub fn new(id: Uuid, before: JobState, effects: Effects) -> Planned {
        Planned {
            id,
            before,
            effects,
            result: None,
            error: None,
            detail: None,
        }
    }

    /// The worker an event names: the one that held the attempt, or the one
    /// that just got it.
    fn event_worker(&self) -> Option<&str> {
        if self.before.status.is_in_flight() {
            self.before.worker_id.as_deref()
        } else if self.effects.next.status.is_in_flight() {
            self.effects.next.worker_id.as_deref()
        } else {
            None
        }
    }
}

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
    /// `apply_planned` on this handle's connection (pinned or pooled),
    /// committed as it returns; its steps go to the transition observer.
    pub(crate) async fn apply_planned_here(&self, planned: &[Planned]) -> Result<Vec<Uuid>> {
        if planned.is_empty() {
            return Ok(vec![]);
        }
        let mut conn = self.conn().await?;
        let r = Store::apply_planned(&mut *conn, planned).await;
        let written = conn.settle(r)?;
        Ok(self.committed_writes(planned, written))
    }

    /// `apply_planned` on the pool, committed as it returns; its steps go
    /// to the transition observer.
    pub(crate) async fn apply_planned_now(&self, planned: &[Planned]) -> Result<Vec<Uuid>> {
        let written = Store::apply_planned(&self.pool, planned).await?;
        Ok(self.committed_writes(planned, written))
    }

    /// Report the steps of the written rows (committed) and return their ids.
    pub(crate) fn committed_writes(&self, planned: &[Planned], written: Vec<(Uuid, String)>) -> Vec<Uuid> {
        let queues: std::collections::HashMap<Uuid, &str> =
            written.iter().map(|(id, q)| (*id, q.as_str())).collect();
        self.committed(
            planned
                .iter()
                .filter_map(|p| queues.get(&p.id).map(|q| (*q, p)))
                .flat_map(|(q, p)| p.effects.steps.iter().map(move |s| (q, s))),
        );
        written.into_iter().map(|(id, _)| id).collect()
    }

    /// Write decided transitions; returns the rows actually changed, with
    /// their queues. Not yet reported to the transition observer: the
    /// caller does that once the write has committed.
    pub(crate) async fn apply_planned<'e>(
        exec: impl PgExecutor<'e>,
        planned: &[Planned],
    ) -> Result<Vec<(Uuid, String)>> {
        if planned.is_empty() {
            return Ok(vec![]);
        }
        let n = planned.len();
        let mut id = Vec::with_capacity(n);
        let mut from_status = Vec::with_capacity(n);
        let mut from_attempt = Vec::with_capacity(n);
        let mut to_status = Vec::with_capacity(n);
        let mut attempt = Vec::with_capacity(n);
        let mut retries = Vec::with_capacity(n);
        let mut worker = Vec::with_capacity(n);
        let mut cancel = Vec::with_capacity(n);
        let mut delay_ms = Vec::with_capacity(n);
        let mut clear_expiry = Vec::with_capacity(n);
        let mut report_attempt = Vec::with_capacity(n);
        let mut report_kind = Vec::with_capacity(n);
        let mut set_result = Vec::with_capacity(n);
        let mut result = Vec::with_capacity(n);
        let mut set_error = Vec::with_capacity(n);
        let mut error = Vec::with_capacity(n);
        // The rest of the state the decision saw, for the guard.
        let mut from_retries = Vec::with_capacity(n);
        let mut from_worker = Vec::with_capacity(n);
        let mut from_cancel = Vec::with_capacity(n);
        let mut from_report_attempt = Vec::with_capacity(n);
        let mut from_report_kind = Vec::with_capacity(n);
        // One row per step.
        let mut e_id = vec![];
        let mut e_job = vec![];
        let mut e_from: Vec<Option<&str>> = vec![];
        let mut e_to = vec![];
        let mut e_reason = vec![];
        let mut e_worker = vec![];
        let mut e_attempt = vec![];
        let mut e_detail = vec![];
        let mut e_ord = vec![];
        for p in planned {
            let next = &p.effects.next;
            id.push(p.id);
            from_status.push(p.before.status.as_str());
            from_attempt.push(p.before.attempt as i32);
            to_status.push(next.status.as_str());
            attempt.push(next.attempt as i32);
            retries.push(next.retries as i32);
            worker.push(next.worker_id.as_deref());
            cancel.push(next.cancel_requested);
            delay_ms.push(p.effects.not_before.map(|d| d.as_millis() as i64));
            clear_expiry.push(p.effects.clear_expiry);
            let changed_report = next.last_report != p.before.last_report;
            report_attempt.push(
                next.last_report
                    .filter(|_| changed_report)
                    .map(|r| r.attempt as i32),
            );
            report_kind.push(
                next.last_report
                    .filter(|_| changed_report)
                    .map(|r| r.kind.as_str()),
            );
            set_result.push(p.result.is_some());
            result.push(p.result.clone().flatten());
            set_error.push(p.error.is_some());
            // Job-produced text is stored whatever it holds (JQ-105).
            error.push(
                p.error
                    .as_ref()
                    .and_then(|e| e.as_deref())
                    .map(|t| job_text(t).into_owned()),
            );
            from_retries.push(p.before.retries as i32);
            from_worker.push(p.before.worker_id.as_deref());
            from_cancel.push(p.before.cancel_requested);
            from_report_attempt.push(p.before.last_report.map(|r| r.attempt as i32));
            from_report_kind.push(p.before.last_report.map(|r| r.kind.as_str()));
            for (i, s) in p.effects.steps.iter().enumerate() {
                e_id.push(Uuid::new_v4());
                e_job.push(p.id);
                e_from.push(s.from.map(JobStatus::as_str));
                e_to.push(s.to.as_str());
                e_reason.push(s.reason.as_str());
                e_worker.push(p.event_worker());
                e_attempt.push(next.attempt as i32);
                e_detail.push(if i == 0 {
                    p.detail.as_deref().map(|t| job_text(t).into_owned())
                } else {
                    None
                });
                e_ord.push(e_ord.len() as i32);
            }
        }
        let written: Vec<(Uuid, String)> = sqlx::query_as(
            r#"
WITH input AS (
    SELECT * FROM unnest($1::uuid[], $2::text[], $3::int[], $4::text[], $5::int[], $6::int[], $7::text[],
                         $8::bool[], $9::bigint[], $10::bool[], $11::int[], $12::text[], $13::bool[],
                         $14::bytea[], $15::bool[], $16::text[], $26::int[], $27::text[], $28::bool[],
                         $29::int[], $30::text[])
        AS t(id, from_status, from_attempt, to_status, attempt, retries, worker_id, cancel_requested,
             delay_ms, clear_expiry, report_attempt, report_kind, set_result, result, set_error, error,
             from_retries, from_worker, from_cancel, from_report_attempt, from_report_kind)
), upd AS (
    UPDATE jobs j SET
        status = i.to_status::job_status,
        attempt = i.attempt,
        retries = i.retries,
        worker_id = i.worker_id,
        cancel_requested = i.cancel_requested,
        not_before = CASE WHEN i.delay_ms IS NULL THEN j.not_before
                          ELSE now() + i.delay_ms * interval '1 millisecond' END,
        expires_at = CASE WHEN i.clear_expiry THEN NULL ELSE j.expires_at END,
        last_report_attempt = coalesce(i.report_attempt, j.last_report_attempt),
        last_report_kind = coalesce(i.report_kind, j.last_report_kind),
        result = CASE WHEN i.set_result THEN i.result ELSE j.result END,
        error = CASE WHEN i.set_error THEN i.error ELSE j.error END,
        assigned_at = CASE WHEN i.to_status = 'ASSIGNED' AND i.from_status <> 'ASSIGNED' THEN now()
                           ELSE j.assigned_at END,
        started_at = CASE WHEN i.to_status = 'RUNNING' AND i.from_status <> 'RUNNING' THEN now()
                          ELSE j.started_at END,
        completed_at = CASE WHEN i.to_status IN ('DONE', 'DEAD_LETTERED') AND i.from_status <> i.to_status THEN now()
                            WHEN i.to_status = 'PENDING' THEN NULL
                            ELSE j.completed_at END,
        updated_at = now()
    FROM input i
    WHERE j.id = i.id AND j.status = i.from_status::job_status AND j.attempt = i.from_attempt
      AND j.retries = i.from_retries AND j.worker_id IS NOT DISTINCT FROM i.from_worker
      AND j.cancel_requested = i.from_cancel
      AND j.last_report_attempt IS NOT DISTINCT FROM i.from_report_attempt
      AND j.last_report_kind IS NOT DISTINCT FROM i.from_report_kind
    RETURNING j.id, j.queue
), ev AS (
    INSERT INTO job_events (event_id, job_id, queue, from_status, to_status, reason, worker_id, attempt, detail)
    SELECT e.event_id, e.job_id, u.queue, e.from_status::job_status, e.to_status::job_status, e.reason,
           e.worker_id, e.attempt, e.detail
    FROM unnest($17::uuid[], $18::uuid[], $19::text[], $20::text[], $21::text[], $22::text[], $23::int[],
                $24::text[], $25::int[])
        AS e(event_id, job_id, from_status, to_status, reason, worker_id, attempt, detail, ord)
    JOIN upd u ON u.id = e.job_id
    ORDER BY e.ord
)
SELECT id, queue FROM upd"#,
        )
        .bind(&id)
        .bind(&from_status)
        .bind(&from_attempt)
        .bind(&to_status)
        .bind(&attempt)
        .bind(&retries)
        .bind(&worker)
        .bind(&cancel)
        .bind(&delay_ms)
        .bind(&clear_expiry)
        .bind(&report_attempt)
        .bind(&report_kind)
        .bind(&set_result)
        .bind(&result)
        .bind(&set_error)
        .bind(&error)
        .bind(&e_id)
        .bind(&e_job)
        .bind(&e_from)
        .bind(&e_to)
        .bind(&e_reason)
        .bind(&e_worker)
        .bind(&e_attempt)
        .bind(&e_detail)
        .bind(&e_ord)
        .bind(&from_retries)
        .bind(&from_worker)
        .bind(&from_cancel)
        .bind(&from_report_attempt)
        .bind(&from_report_kind)
        .fetch_all(exec)
        .await?;
        Ok(written)
    }

    /// Read a job's state and its queue's backoff policy.
    async fn load_for_decision(&self, id: Uuid) -> Result<(JobRow, Context)> {
        let row: Option<(JobRow, i64, i64)> = sqlx::query_as::<_, Candidate>(&format!(
            "SELECT {JOB_COLUMNS}, q.backoff_base_ms, q.backoff_max_ms FROM jobs j JOIN queues q ON q.name = j.queue \
             WHERE j.id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .map(|r| (r.job, r.backoff_base_ms, r.backoff_max_ms));
        let (job, base, max) = row.ok_or(StoreError::JobNotFound(id))?;
        let ctx = Context {
            backoff: backoff(base, max),
            jitter_unit: self.jitter_unit(),
        };
        Ok((job, ctx))
    }

    /// Decide `cmd` for one job and write it; on a lost race, decide again
    /// from the new state. `shape` adds result/error/detail to the write.
    pub(crate) async fn act(
        &self,
        id: Uuid,
        cmd: &Command,
        shape: impl Fn(&mut Planned),
    ) -> Result<(JobState, Option<Effects>)> {
        for _ in 0..8 {
            let (row, ctx) = self.load_for_decision(id).await?;
            let before = row.state();
            match transition(&before, cmd, &ctx)? {
                Decision::AlreadyApplied => return Ok((before, None)),
                Decision::Apply(effects) => {
                    let mut p = Planned::new(id, before.clone(), effects);
                    shape(&mut p);
                    if self.apply_planned_now(std::slice::from_ref(&p)).await?.len() == 1 {
                        return Ok((before, Some(p.effects)));
                    }
                    tracing::debug!(job_id = %id, command = cmd.name(), "lost a race; deciding again");
                }
            }
        }
        Err(StoreError::Contention(id))
    }

    /// ASSIGNED -> RUNNING by the holder of the attempt (JQ-110).
    pub async fn ack(&self, worker_id: &str, job_id: Uuid, attempt: u32) -> Result<()> {
        validate_worker_id(worker_id)?;
        let cmd = Command::Ack {
            worker_id: worker_id.to_string(),
            attempt,
        };
        let cmd = &cmd;
        self.run("ack_job", move || async move {
            self.act(job_id, cmd, |_| {}).await.map(|_| ())
        })
        .await
    }

    /// Apply a worker's result (FR-029); idempotent per (job, attempt).
    pub async fn report(&self, r: &ResultReport) -> Result<ReportOutcome> {
        validate_worker_id(&r.worker_id)?;
        let cmd = Command::Report {
            worker_id: r.worker_id.clone(),
            attempt: r.attempt,
            outcome: r.outcome,
        };
        let cmd = &cmd;
        self.run("report_result", || async move {
            let (before, effects) = self
                .act(r.job_id, cmd, |p| {
                    p.result = Some(Some(r.result.clone()));
                    p.error = Some(r.error.clone());
                    p.detail = r.error.clone();
                })
                .await?;
            Ok(ReportOutcome::of(&before, effects.as_ref()))
        })
        .await
    }

    /// Operator cancel (FR-012, JQ-113).
    pub async fn cancel(&self, job_id: Uuid) -> Result<CancelOutcome> {
        self.run("cancel_job", || async move {
            let (_, effects) = self.act(job_id, &Command::Cancel, |_| {}).await?;
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
        self.run("retry_job", || async move {
            self.act(job_id, &Command::ManualRetry, |p| p.error = Some(None))
                .await
                .map(|_| ())
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
            let rows: Vec<JobRow> = sqlx::query_as(&format!(
                "SELECT {JOB_COLUMNS} FROM jobs j WHERE j.queue = $1 AND j.status = $2::job_status \
                 ORDER BY j.created_at, j.seq LIMIT $3"
            ))
            .bind(queue)
            .bind(status.as_str())
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
            let ctx = Context::default();
            let mut planned = Vec::with_capacity(rows.len());
            for r in &rows {
                if let Decision::Apply(e) = transition(&r.state(), &Command::ManualRetry, &ctx)? {
                    let mut p = Planned::new(r.id, r.state(), e);
                    p.error = Some(None);
                    planned.push(p);
                }
            }
            self.apply_planned_now(&planned).await
        })
        .await
    }

    /// JQ-111: the assignment never reached the worker; back to PENDING now.
    pub async fn delivery_failed(&self, worker_id: &str, job_id: Uuid, attempt: u32) -> Result<()> {
        validate_worker_id(worker_id)?;
        let cmd = Command::DeliveryFailed {
            worker_id: worker_id.to_string(),
            attempt,
        };
        let cmd = &cmd;
        self.run("delivery_failed", move || async move {
            self.act(job_id, cmd, |_| {}).await.map(|_| ())
        })
        .await
    }
}

use crate::rows::Candidate;
use jq_core::transition;
