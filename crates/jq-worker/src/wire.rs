//! The worker's edge: every protobuf message is made or read here, and the
//! rest of the crate speaks `jq-core` types (leases, statuses, outcomes)
//! and its own ([`Attempt`], [`Message`]). A message the server should
//! never send (a job id that is not a UUID) is logged and dropped here.

use std::time::Duration;

use jq_client::Clients;
use jq_core::WorkerStatus;
use jq_core::records::Lease;
use jq_proto::v1::{self, server_message::Kind};
use jq_proto::{job_status_from_proto, worker_status_from_proto};
use tonic::Status;
use uuid::Uuid;

use crate::calls::Calls;
use crate::job::{Attempt, Report};

/// What the assignment stream carries.
#[derive(Debug)]
pub enum Message {
    Assignment(Attempt),
    /// Stop this attempt and report it cancelled (JQ-113).
    Cancel(Lease),
    /// Finish running jobs, take no new ones (FR-023).
    Drain,
    /// Finish running jobs, then exit (FR-024).
    Shutdown,
}

/// The server's answer to a registration.
pub struct Registered {
    pub server_version: String,
    pub heartbeat_interval: Option<Duration>,
    pub heartbeat_timeout: Option<Duration>,
}

/// The server's answer to a heartbeat.
pub struct HeartbeatAnswer {
    /// False: the server does not know this worker; register again.
    pub registered: bool,
    /// Leases no longer this worker's: stop them, report nothing.
    pub stale: Vec<Lease>,
    /// Leases whose job an operator cancelled.
    pub cancel: Vec<Lease>,
    pub status: Option<WorkerStatus>,
}

/// What this worker tells the server when it registers.
pub struct Registration<'a> {
    pub worker_id: &'a str,
    pub hostname: &'a str,
    pub concurrency: u32,
    pub queues: &'a [String],
    /// One per queue (JQ-123), or empty.
    pub queue_weights: &'a [u32],
    pub version: &'a str,
    pub held: Vec<Lease>,
    pub draining: bool,
}

fn lease_out(l: &Lease) -> v1::Lease {
    v1::Lease {
        job_id: l.job_id.to_string(),
        attempt: l.attempt,
    }
}

fn lease_in(job_id: &str, attempt: u32) -> Option<Lease> {
    match Uuid::parse_str(job_id) {
        Ok(job_id) => Some(Lease { job_id, attempt }),
        Err(_) => {
            tracing::warn!(job_id, "the server named a job that is not a UUID; ignored");
            None
        }
    }
}

fn leases_in(v: &[v1::Lease]) -> Vec<Lease> {
    v.iter().filter_map(|l| lease_in(&l.job_id, l.attempt)).collect()
}

fn ms(v: u32) -> Option<Duration> {
    (v > 0).then(|| Duration::from_millis(u64::from(v)))
}

pub async fn register(clients: &Clients, r: Registration<'_>) -> Result<Registered, Status> {
    let req = v1::RegisterRequest {
        worker_id: r.worker_id.to_string(),
        hostname: r.hostname.to_string(),
        concurrency: r.concurrency,
        queues: r.queues.to_vec(),
        queue_weights: r.queue_weights.to_vec(),
        version: r.version.to_string(),
        in_flight: r.held.iter().map(lease_out).collect(),
        draining: r.draining,
    };
    let r = clients.workers.clone().register(req).await?.into_inner();
    Ok(Registered {
        server_version: r.server_version,
        heartbeat_interval: ms(r.heartbeat_interval_ms),
        heartbeat_timeout: ms(r.heartbeat_timeout_ms),
    })
}

pub async fn heartbeat(
    clients: &Clients,
    worker_id: &str,
    held: &[Lease],
) -> Result<HeartbeatAnswer, Status> {
    let req = v1::HeartbeatRequest {
        worker_id: worker_id.to_string(),
        in_flight: held.iter().map(lease_out).collect(),
    };
    let r = clients.workers.clone().heartbeat(req).await?.into_inner();
    Ok(HeartbeatAnswer {
        registered: r.registered,
        stale: leases_in(&r.stale),
        cancel: leases_in(&r.cancel),
        status: worker_status_from_proto(r.status),
    })
}

pub async fn deregister(clients: &Clients, worker_id: &str) -> Result<(), Status> {
    let req = v1::DeregisterRequest {
        worker_id: worker_id.to_string(),
    };
    clients.workers.clone().deregister(req).await.map(|_| ())
}

/// The assignment stream, read as [`Message`]s.
pub struct Assignments {
    stream: tonic::Streaming<v1::ServerMessage>,
    worker_id: String,
}

impl Assignments {
    pub async fn open(clients: &Clients, worker_id: &str) -> Result<Assignments, Status> {
        let req = v1::StreamAssignmentsRequest {
            worker_id: worker_id.to_string(),
        };
        let stream = clients
            .workers
            .clone()
            .stream_assignments(req)
            .await?
            .into_inner();
        Ok(Assignments {
            stream,
            worker_id: worker_id.to_string(),
        })
    }

    /// The next message; `Ok(None)` when the server closed the stream.
    /// Cancel-safe (a message is read whole or not at all).
    pub async fn next(&mut self) -> Result<Option<Message>, Status> {
        loop {
            let Some(m) = self.stream.message().await? else {
                return Ok(None);
            };
            let message = match m.kind {
                Some(Kind::Assignment(a)) => lease_in(&a.job_id, a.attempt).map(|l| {
                    Message::Assignment(Attempt {
                        job_id: l.job_id,
                        queue: a.queue,
                        attempt: a.attempt,
                        retries: a.retries,
                        payload: a.payload,
                        timeout: a.timeout_seconds.map(|s| Duration::from_secs(u64::from(s))),
                        worker_id: self.worker_id.clone(),
                        scheduled_at: a.scheduled_at.as_ref().and_then(jq_proto::from_timestamp),
                    })
                }),
                Some(Kind::CancelJob(c)) => lease_in(&c.job_id, c.attempt).map(Message::Cancel),
                Some(Kind::Drain(_)) => Some(Message::Drain),
                Some(Kind::Shutdown(_)) => Some(Message::Shutdown),
                None => None,
            };
            if let Some(message) = message {
                return Ok(Some(message));
            }
        }
    }
}

/// AckJob for `a`, batched with the acks queued meanwhile.
pub async fn ack(calls: &Calls, a: &Attempt) -> Result<(), Status> {
    calls
        .ack(v1::AckJobRequest {
            worker_id: a.worker_id.clone(),
            job_id: a.job_id.to_string(),
            attempt: a.attempt,
        })
        .await
}

/// ReportResult for `a`, batched; the job's status afterwards (as the
/// server says it; `None` if it names none we know).
pub async fn report(calls: &Calls, a: &Attempt, r: &Report) -> Result<Option<jq_core::JobStatus>, Status> {
    let (outcome, retryable) = match r.outcome {
        jq_core::Outcome::Succeeded => (v1::Outcome::Succeeded, false),
        jq_core::Outcome::Failed { retryable } => (v1::Outcome::Failed, retryable),
        jq_core::Outcome::Cancelled => (v1::Outcome::Cancelled, false),
    };
    let req = v1::ReportResultRequest {
        worker_id: a.worker_id.clone(),
        job_id: a.job_id.to_string(),
        attempt: a.attempt,
        outcome: outcome as i32,
        result: r.result.clone(),
        error: r.error.clone().unwrap_or_default(),
        retryable,
        exit_code: r.exit_code,
        signal: r.signal,
        duration_ms: r.duration.as_millis() as u64,
    };
    let resp = calls.report(req).await?;
    Ok(job_status_from_proto(resp.status))
}
