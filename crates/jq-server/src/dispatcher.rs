//! The push dispatcher (SPEC §4). Each cycle it asks the registry which
//! connected workers have room, claims at most that many jobs per worker
//! from PostgreSQL (priority, then FIFO), and pushes them down the worker's
//! stream. A cycle runs when woken — by a submit (JQ-120), a result freeing
//! capacity, a worker connecting — and at least every `interval` as the
//! safety net (FR-017).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jq_proto::v1;
use tokio::sync::watch;

use crate::Shared;
use crate::convert;
use crate::registry::Free;

pub struct Dispatcher {
    pub shared: Arc<Shared>,
    pub batch_size: u32,
    pub interval: Duration,
}

impl Dispatcher {
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = self.shared.registry.woken() => {}
                _ = tokio::time::sleep(self.interval) => {}
                _ = stop.changed() => break,
            }
            if *stop.borrow() {
                break;
            }
            // Keep cycling while cycles fill workers; stop when idle.
            while self.cycle().await > 0 && !*stop.borrow() {}
        }
        tracing::info!("dispatcher stopped");
    }

    /// One cycle; returns how many jobs it assigned. Workers serving the
    /// same queues share one claim (one transaction), each getting at most
    /// its free room (JQ-121).
    pub async fn cycle(&self) -> usize {
        let s = &self.shared;
        let start = Instant::now();
        let mut assigned = 0;
        let mut groups: BTreeMap<Vec<String>, Vec<Free>> = BTreeMap::new();
        for f in s.registry.free() {
            let mut key = f.queues.clone();
            key.sort();
            groups.entry(key).or_default().push(f);
        }
        for (queues, free) in groups {
            let wants: Vec<(String, u32)> = free
                .iter()
                .map(|f| (f.worker_id.clone(), f.free.min(self.batch_size)))
                .collect();
            let got = match s.store.claim_for(&wants, &queues).await {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(queues = ?queues, error = %e, "claim failed");
                    continue;
                }
            };
            // FR-015: the Redis lock is the second guard; a job whose lock
            // another dispatcher holds is not sent (the assignment timeout
            // recovers it).
            let ids: Vec<uuid::Uuid> = got.iter().map(|(_, a)| a.job_id).collect();
            let locked = s.locks.acquire(&ids).await;
            let by_id: HashMap<&str, &Free> = free.iter().map(|f| (f.worker_id.as_str(), f)).collect();
            for ((worker, a), locked) in got.into_iter().zip(locked) {
                let f = by_id[worker.as_str()];
                if !locked {
                    tracing::error!(job_id = %a.job_id, worker_id = %f.worker_id, "dispatch lock held elsewhere; not sending");
                    continue;
                }
                let msg = v1::ServerMessage {
                    kind: Some(v1::server_message::Kind::Assignment(convert::assignment(&a))),
                };
                s.metrics.scheduler_assigned.with_label_values(&[&a.queue]).inc();
                s.metrics
                    .job_total
                    .with_label_values(&[&a.queue, "ASSIGNED"])
                    .inc();
                let expected = jq_store::Expected {
                    state: a.state.clone(),
                    queue: a.queue.clone(),
                };
                if s.registry
                    .deliver(f, a.job_id, a.attempt, a.created_at, Some(expected), msg)
                {
                    assigned += 1;
                    tracing::debug!(job_id = %a.job_id, worker_id = %f.worker_id, queue = %a.queue, attempt = a.attempt, "assigned");
                } else {
                    // JQ-111: not written to the stream, so straight back.
                    tracing::info!(job_id = %a.job_id, worker_id = %f.worker_id, "stream gone; returning the job");
                    s.locks.release(a.job_id).await;
                    if let Err(e) = s.store.delivery_failed(&f.worker_id, a.job_id, a.attempt).await {
                        tracing::warn!(job_id = %a.job_id, error = %e, "could not return undelivered job; the assignment timeout will");
                    }
                }
            }
        }
        s.metrics.scheduler_cycle.observe(start.elapsed().as_secs_f64());
        assigned
    }
}
