//! The one place a committed transition's effects outside PostgreSQL are
//! carried out, whatever applied it (RPC, dispatcher, reaper, stream
//! close): the store hands every transition here once it has committed
//! ([`jq_store::TransitionObserver`]), and handlers never repeat any of it.
//!
//! - `jq_job_total{queue,status}` counts each step (FR-040), so it equals
//!   the `job_events` rows by `to_status`.
//! - A job that leaves ASSIGNED no longer needs its dispatch lock (FR-015).
//!   Releases are queued and sent by [`Effects::release_locks`], which the
//!   worker-call lane runs before answering and the dispatcher before each
//!   claim, so its own next claim never meets a lock it meant to drop.
//! - The registry follows the attempts it handed out: an ack records the
//!   state the report will be decided from, and an attempt that ended
//!   frees its worker's room.
//! - A cancel reaches the worker holding the attempt (JQ-113); one on
//!   another replica hears it in its heartbeat answer.
//! - A job back in PENDING and due now wakes the dispatcher (JQ-120).

use std::sync::{Arc, Mutex};

use jq_core::JobStatus;
use jq_proto::v1;
use jq_store::Transition;
use jq_telemetry::ServerMetrics;
use uuid::Uuid;

use crate::grpc::control;
use crate::locks::Locks;
use crate::registry::Registry;

pub struct Effects {
    metrics: Arc<ServerMetrics>,
    registry: Arc<Registry>,
    locks: Arc<Locks>,
    /// Dispatch locks to release, in the order their jobs left ASSIGNED.
    unlock: Mutex<Vec<Uuid>>,
}

impl Effects {
    pub fn new(metrics: Arc<ServerMetrics>, registry: Arc<Registry>, locks: Arc<Locks>) -> Effects {
        Effects {
            metrics,
            registry,
            locks,
            unlock: Mutex::new(vec![]),
        }
    }

    /// One step into `step.to`, for `jq_job_total{queue,status}`.
    fn count(&self, queue: &str, step: &jq_store::Step) {
        self.metrics
            .job_total
            .with_label_values(&[queue, step.to.as_str()])
            .inc();
    }

    /// Release the dispatch locks of every job that left ASSIGNED so far,
    /// in one pipelined round trip.
    pub async fn release_locks(&self) {
        let jobs = std::mem::take(&mut *self.unlock.lock().expect("unlock list"));
        if !jobs.is_empty() {
            self.locks.release_many(&jobs).await;
        }
    }
}

impl jq_store::TransitionObserver for Effects {
    fn submitted(&self, queue: &str, step: &jq_store::Step) {
        self.count(queue, step);
    }

    fn applied(&self, t: &Transition<'_>) {
        for step in &t.effects.steps {
            self.count(t.queue, step);
        }
        let (before, next) = (t.before, &t.effects.next);
        if before.status == JobStatus::Assigned && next.status != JobStatus::Assigned {
            self.unlock.lock().expect("unlock list").push(t.job_id);
        }
        if let Some(worker) = before
            .worker_id
            .as_deref()
            .filter(|_| before.status.is_in_flight())
        {
            let same_attempt = next.status.is_in_flight() && next.attempt == before.attempt;
            if before.status == JobStatus::Assigned && next.status == JobStatus::Running && same_attempt {
                if let Some(created) = self.registry.acked(worker, t.job_id, next.clone()) {
                    let waited = (chrono::Utc::now() - created).num_microseconds().unwrap_or(0) as f64 / 1e6;
                    self.metrics.submit_to_start.observe(waited.max(0.0));
                }
            } else if !same_attempt {
                self.registry.finished(worker, t.job_id);
            }
        }
        if let Some((worker, attempt)) = &t.effects.notify_cancel {
            self.registry.send(
                worker,
                control(v1::server_message::Kind::CancelJob(v1::CancelJob {
                    job_id: t.job_id.to_string(),
                    attempt: *attempt,
                })),
            );
        }
        if next.status == JobStatus::Pending && t.effects.not_before.is_none() {
            self.registry.wake();
        }
    }
}
