//! Plain records of stored things, as the store returns them and the edges
//! (gRPC, CLI) present them. Data only; rules live in [`crate::lifecycle`].

use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::lifecycle::Reason;
use crate::status::{JobStatus, WorkerStatus};
use crate::submit::QueueSettings;

/// A job with everything `job status` shows (FR-030).
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub id: Uuid,
    pub queue: String,
    pub status: JobStatus,
    pub priority: u8,
    pub payload: Vec<u8>,
    pub result: Option<Vec<u8>>,
    pub error: Option<String>,
    pub attempt: u32,
    pub retries: u32,
    pub max_retries: u32,
    pub worker_id: Option<String>,
    pub idempotency_key: Option<String>,
    pub cancel_requested: bool,
    pub created_at: DateTime<Utc>,
    pub not_before: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub assigned_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

/// One row of a job's history (FR-011, FR-031).
#[derive(Debug, Clone, PartialEq)]
pub struct JobEvent {
    pub event_id: Uuid,
    pub job_id: Uuid,
    pub queue: String,
    pub from: Option<JobStatus>,
    pub to: JobStatus,
    /// Known reasons parse to [`Reason`]; kept as text so old rows always load.
    pub reason: String,
    pub worker_id: Option<String>,
    pub attempt: u32,
    pub detail: Option<String>,
    pub occurred_at: DateTime<Utc>,
}

impl JobEvent {
    pub fn reason(&self) -> Option<Reason> {
        Reason::parse(&self.reason)
    }
}

/// A queue with its settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Queue {
    pub name: String,
    pub settings: QueueSettings,
    pub paused: bool,
    pub created_at: DateTime<Utc>,
}

/// FR-028 numbers for one queue.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueueStats {
    pub queue: String,
    pub pending: u64,
    /// PENDING but held by `not_before` (delayed or backing off).
    pub scheduled: u64,
    pub assigned: u64,
    pub running: u64,
    pub done: u64,
    pub failed: u64,
    pub dead_lettered: u64,
    /// Jobs that reached DONE or DEAD_LETTERED.
    pub total_processed: u64,
    /// Mean RUNNING -> DONE time, seconds.
    pub avg_processing_seconds: f64,
    /// Failed attempts / finished attempts.
    pub error_rate: f64,
}

impl QueueStats {
    pub fn depth(&self, status: JobStatus) -> u64 {
        match status {
            JobStatus::Pending => self.pending,
            JobStatus::Assigned => self.assigned,
            JobStatus::Running => self.running,
            JobStatus::Done => self.done,
            JobStatus::Failed => self.failed,
            JobStatus::DeadLettered => self.dead_lettered,
        }
    }
}

/// A registered worker (FR-018).
#[derive(Debug, Clone, PartialEq)]
pub struct Worker {
    pub id: String,
    pub hostname: String,
    pub concurrency: u32,
    pub queues: Vec<String>,
    /// One weight per queue (JQ-123); empty when none was given.
    pub queue_weights: Vec<u32>,
    pub status: WorkerStatus,
    pub version: String,
    pub registered_at: DateTime<Utc>,
    pub last_heartbeat_at: DateTime<Utc>,
    /// Jobs ASSIGNED to or RUNNING on it now.
    pub active_jobs: u32,
}

/// What a worker announces when it registers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WorkerRegistration {
    pub id: String,
    pub hostname: String,
    pub concurrency: u32,
    pub queues: Vec<String>,
    /// One weight per queue (JQ-123): its slots fill in proportion while
    /// every queue has work. Empty: by dispatch order (FR-014).
    pub queue_weights: Vec<u32>,
    pub version: String,
    /// Leases a reconnecting worker is still running: kept. Every other
    /// ASSIGNED/RUNNING job of this id belongs to a lost incarnation.
    pub keep: Vec<Lease>,
    /// Register as DRAINING: a draining worker that reconnects (e.g. after
    /// a server restart) must not start taking work again.
    pub draining: bool,
}

/// The (job, attempt) a worker holds (JQ-110).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Lease {
    pub job_id: Uuid,
    pub attempt: u32,
}

/// A job handed to a worker by a claim.
#[derive(Debug, Clone, PartialEq)]
pub struct Assignment {
    pub job_id: Uuid,
    pub queue: String,
    pub attempt: u32,
    pub priority: u8,
    pub payload: Vec<u8>,
    pub retries: u32,
    pub timeout: Option<Duration>,
    /// The queue's retry backoff as the claim read it.
    pub backoff: crate::BackoffPolicy,
    pub created_at: DateTime<Utc>,
    /// The occurrence a periodic schedule submitted it for (JQ-124).
    pub scheduled_at: Option<DateTime<Utc>>,
    /// The job's state as the claim left it. The server decides the
    /// worker's ack and result from it without reading the row again; the
    /// write still checks that it is the row's state.
    pub state: crate::JobState,
}

/// One unsent event from the transactional outbox (JQ-160).
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxEvent {
    /// Outbox sequence: the relay publishes in this order.
    pub id: i64,
    pub event_id: Uuid,
    /// Logical topic (without the configured prefix).
    pub topic: String,
    /// Kafka key: job id, or worker id for worker events.
    pub key: String,
    pub occurred_at: DateTime<Utc>,
    pub body: EventBody,
}

/// What an outbox event says.
#[derive(Debug, Clone, PartialEq)]
pub enum EventBody {
    /// A job's transition (`job.*` topics).
    Job {
        job_id: Uuid,
        queue: String,
        /// None on the submit.
        from: Option<JobStatus>,
        to: JobStatus,
        reason: String,
        worker_id: Option<String>,
        attempt: u32,
        detail: Option<String>,
    },
    /// A worker's state (`worker.heartbeat`).
    Worker {
        worker_id: String,
        status: WorkerStatus,
        active_jobs: u32,
        concurrency: u32,
    },
}

impl OutboxEvent {
    /// The job a job event is about.
    pub fn job_id(&self) -> Option<Uuid> {
        match &self.body {
            EventBody::Job { job_id, .. } => Some(*job_id),
            EventBody::Worker { .. } => None,
        }
    }
}
