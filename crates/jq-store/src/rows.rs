//! Row shapes and their conversion to `jq-core` records and states.

use std::time::Duration;

use chrono::{DateTime, Utc};
use jq_core::records::{Job, JobEvent, Queue, Worker};
use jq_core::submit::Retention;
use jq_core::{BackoffPolicy, JobState, JobStatus, LastReport, QueueSettings, ReportKind, WorkerStatus};
use uuid::Uuid;

/// Columns of [`JobRow`], for `SELECT {JOB_COLUMNS} FROM jobs j`.
pub(crate) const JOB_COLUMNS: &str = "j.id, j.queue, j.status::text AS status, j.priority, j.payload, j.result, \
    j.error, j.attempt, j.retries, j.max_retries, j.worker_id, j.idempotency_key, j.cancel_requested, \
    j.last_report_attempt, j.last_report_kind, j.created_at, j.not_before, j.expires_at, j.assigned_at, \
    j.started_at, j.completed_at, j.updated_at, j.seq, j.scheduled_at";

#[derive(sqlx::FromRow)]
pub(crate) struct JobRow {
    pub id: Uuid,
    pub queue: String,
    pub status: String,
    pub priority: i16,
    pub payload: Vec<u8>,
    pub result: Option<Vec<u8>>,
    pub error: Option<String>,
    pub attempt: i32,
    pub retries: i32,
    pub max_retries: i32,
    pub worker_id: Option<String>,
    pub idempotency_key: Option<String>,
    pub cancel_requested: bool,
    pub last_report_attempt: Option<i32>,
    pub last_report_kind: Option<String>,
    pub created_at: DateTime<Utc>,
    pub not_before: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub assigned_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
    pub seq: i64,
    pub scheduled_at: Option<DateTime<Utc>>,
}

pub(crate) fn status(s: &str) -> JobStatus {
    // The column is a PostgreSQL enum with exactly these labels.
    s.parse()
        .unwrap_or_else(|_| panic!("unknown job_status {s:?} in database"))
}

pub(crate) fn worker_status(s: &str) -> WorkerStatus {
    s.parse()
        .unwrap_or_else(|_| panic!("unknown worker_status {s:?} in database"))
}

pub(crate) fn u32_of(v: i32) -> u32 {
    u32::try_from(v).unwrap_or(0)
}

impl JobRow {
    pub fn state(&self) -> JobState {
        JobRow::state_of(
            &self.status,
            self.attempt,
            self.retries,
            self.max_retries,
            self.worker_id.clone(),
            self.cancel_requested,
            self.last_report_attempt,
            self.last_report_kind.as_deref(),
        )
    }

    /// Lifecycle state from its columns (also used by batch decisions,
    /// which load only these).
    #[allow(clippy::too_many_arguments)]
    pub fn state_of(
        status_text: &str,
        attempt: i32,
        retries: i32,
        max_retries: i32,
        worker_id: Option<String>,
        cancel_requested: bool,
        last_report_attempt: Option<i32>,
        last_report_kind: Option<&str>,
    ) -> JobState {
        JobState {
            status: status(status_text),
            attempt: u32_of(attempt),
            retries: u32_of(retries),
            max_retries: u32_of(max_retries),
            worker_id,
            cancel_requested,
            last_report: match (last_report_attempt, last_report_kind.and_then(ReportKind::parse)) {
                (Some(a), Some(kind)) => Some(LastReport {
                    attempt: u32_of(a),
                    kind,
                }),
                _ => None,
            },
        }
    }

    pub fn into_job(self) -> Job {
        Job {
            id: self.id,
            status: status(&self.status),
            queue: self.queue,
            priority: self.priority.clamp(0, 9) as u8,
            payload: self.payload,
            result: self.result,
            error: self.error,
            attempt: u32_of(self.attempt),
            retries: u32_of(self.retries),
            max_retries: u32_of(self.max_retries),
            worker_id: self.worker_id,
            idempotency_key: self.idempotency_key,
            cancel_requested: self.cancel_requested,
            created_at: self.created_at,
            not_before: self.not_before,
            expires_at: self.expires_at,
            assigned_at: self.assigned_at,
            started_at: self.started_at,
            completed_at: self.completed_at,
            updated_at: self.updated_at,
        }
    }
}

pub(crate) const QUEUE_COLUMNS: &str = "name, max_retries, default_ttl_s, default_timeout_s, backoff_base_ms, \
    backoff_max_ms, concurrency_limit, rate_limit_per_s, retain_done_s, retain_dead_s, priority_weights, paused, created_at";

#[derive(sqlx::FromRow)]
pub(crate) struct QueueRow {
    pub name: String,
    pub max_retries: i32,
    pub default_ttl_s: Option<i32>,
    pub default_timeout_s: Option<i32>,
    pub backoff_base_ms: i64,
    pub backoff_max_ms: i64,
    pub concurrency_limit: Option<i32>,
    pub rate_limit_per_s: Option<f64>,
    pub retain_done_s: Option<i64>,
    pub retain_dead_s: Option<i64>,
    pub priority_weights: Option<String>,
    pub paused: bool,
    pub created_at: DateTime<Utc>,
}

pub(crate) fn secs(v: Option<i32>) -> Option<Duration> {
    v.map(|s| Duration::from_secs(u64::try_from(s).unwrap_or(0)))
}

/// A retention column: NULL the server's default, 0 forever, n seconds.
pub(crate) fn retention(v: Option<i64>) -> Retention {
    v.map_or(Retention::ServerDefault, |s| {
        Retention::from_seconds(s.max(0)).unwrap_or(Retention::ServerDefault)
    })
}

/// The column form of a retention.
pub(crate) fn retention_col(r: Retention) -> Option<i64> {
    (r != Retention::ServerDefault).then(|| r.as_seconds())
}

/// The stored canonical form; one that no longer parses (never written by
/// jq) reads as strict priority rather than failing every read.
pub(crate) fn weights(text: &str) -> Option<jq_core::weights::PriorityWeights> {
    jq_core::weights::PriorityWeights::parse(text).ok()
}

pub(crate) fn backoff(base_ms: i64, max_ms: i64) -> BackoffPolicy {
    BackoffPolicy {
        base: Duration::from_millis(u64::try_from(base_ms).unwrap_or(0)),
        max: Duration::from_millis(u64::try_from(max_ms).unwrap_or(0)),
    }
}

impl From<QueueRow> for Queue {
    fn from(r: QueueRow) -> Queue {
        Queue {
            name: r.name,
            settings: QueueSettings {
                max_retries: u32_of(r.max_retries),
                default_ttl: secs(r.default_ttl_s),
                default_timeout: secs(r.default_timeout_s),
                backoff: backoff(r.backoff_base_ms, r.backoff_max_ms),
                concurrency_limit: r.concurrency_limit.map(u32_of),
                rate_limit_per_second: r.rate_limit_per_s,
                retain_done: retention(r.retain_done_s),
                retain_dead: retention(r.retain_dead_s),
                priority_weights: r.priority_weights.as_deref().and_then(weights),
            },
            paused: r.paused,
            created_at: r.created_at,
        }
    }
}

pub(crate) const WORKER_COLUMNS: &str = "w.id, w.hostname, w.concurrency, w.queues, w.queue_weights, w.status::text AS status, \
    w.version, w.registered_at, w.last_heartbeat_at, \
    (SELECT count(*) FROM jobs j WHERE j.worker_id = w.id AND j.status IN ('ASSIGNED', 'RUNNING') AND j.phase = 1) AS active_jobs";

#[derive(sqlx::FromRow)]
pub(crate) struct WorkerRow {
    pub id: String,
    pub hostname: String,
    pub concurrency: i32,
    pub queues: Vec<String>,
    pub queue_weights: Option<Vec<i32>>,
    pub status: String,
    pub version: String,
    pub registered_at: DateTime<Utc>,
    pub last_heartbeat_at: DateTime<Utc>,
    pub active_jobs: i64,
}

impl From<WorkerRow> for Worker {
    fn from(r: WorkerRow) -> Worker {
        Worker {
            status: worker_status(&r.status),
            id: r.id,
            hostname: r.hostname,
            concurrency: u32_of(r.concurrency),
            queues: r.queues,
            queue_weights: r
                .queue_weights
                .unwrap_or_default()
                .into_iter()
                .map(u32_of)
                .collect(),
            version: r.version,
            registered_at: r.registered_at,
            last_heartbeat_at: r.last_heartbeat_at,
            active_jobs: u32::try_from(r.active_jobs).unwrap_or(u32::MAX),
        }
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct EventRow {
    pub event_id: Uuid,
    pub job_id: Uuid,
    pub queue: String,
    pub from_status: Option<String>,
    pub to_status: String,
    pub reason: String,
    pub worker_id: Option<String>,
    pub attempt: i32,
    pub detail: Option<String>,
    pub occurred_at: DateTime<Utc>,
}

impl From<EventRow> for JobEvent {
    fn from(r: EventRow) -> JobEvent {
        JobEvent {
            event_id: r.event_id,
            job_id: r.job_id,
            queue: r.queue,
            from: r.from_status.as_deref().map(status),
            to: status(&r.to_status),
            reason: r.reason,
            worker_id: r.worker_id,
            attempt: u32_of(r.attempt),
            detail: r.detail,
            occurred_at: r.occurred_at,
        }
    }
}

/// A job with its queue's backoff policy, for decisions that may retry.
#[derive(sqlx::FromRow)]
pub(crate) struct Candidate {
    #[sqlx(flatten)]
    pub job: JobRow,
    pub backoff_base_ms: i64,
    pub backoff_max_ms: i64,
}
