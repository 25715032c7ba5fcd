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
use tokio_util::sync::CancellationToken;

use crate::Shared;
use crate::convert;
use crate::registry::Free;
use jq_core::weights::RoundRobin;

pub struct Dispatcher {
    pub shared: Arc<Shared>,
    /// The claims' own handle: cycles run one at a time, on one connection.
    pub store: jq_store::Store,
    pub batch_size: u32,
    pub interval: Duration,
    /// Each weighted group's round-robin (JQ-123), continued cycle after
    /// cycle so its shares hold over time, not only within one claim.
    shares: std::sync::Mutex<HashMap<Group, RoundRobin>>,
}

/// Workers that share one claim: the same queues with the same weights
/// (sorted by queue; weights empty when none were given).
type Group = (Vec<String>, Vec<u32>);

fn group_of(f: &Free) -> Group {
    let mut pairs: Vec<(String, u32)> = f
        .queues
        .iter()
        .enumerate()
        .map(|(i, q)| (q.clone(), f.queue_weights.get(i).copied().unwrap_or(0)))
        .collect();
    pairs.sort();
    let weighted = !f.queue_weights.is_empty();
    let (queues, weights): (Vec<String>, Vec<u32>) = pairs.into_iter().unzip();
    (queues, if weighted { weights } else { vec![] })
}

impl Dispatcher {
    /// On its own connection, with the configured claim size and interval.
    pub fn new(shared: &Arc<Shared>) -> Dispatcher {
        let sc = &shared.cfg.scheduler;
        Dispatcher {
            store: shared.store.pinned(),
            shared: shared.clone(),
            batch_size: sc.batch_size,
            interval: Duration::from_millis(sc.interval_ms),
            shares: Default::default(),
        }
    }

    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = self.shared.registry.woken() => {}
                _ = tokio::time::sleep(self.interval) => {}
                _ = shutdown.cancelled() => break,
            }
            // Cycle again at once only while a claim took all it asked for
            // (more may be waiting). One that took less drained what it could
            // see; jobs submitted since woke the dispatcher again, and the
            // interval covers jobs that come due. An empty claim is not free:
            // its lock on the worker rows makes it a commit to flush.
            while self.cycle().await.more && !shutdown.is_cancelled() {}
        }
        tracing::info!("dispatcher stopped");
    }

    /// One cycle. Workers serving the same queues share one claim (one
    /// transaction), each getting at most its free room (JQ-121).
    pub async fn cycle(&self) -> Cycle {
        let s = &self.shared;
        let start = Instant::now();
        // Jobs that left ASSIGNED since the last cycle (returned, timed out,
        // lost) must not meet their old lock in this claim.
        s.effects.release_locks().await;
        let mut assigned = 0;
        let mut more = false;
        let mut groups: BTreeMap<Group, Vec<Free>> = BTreeMap::new();
        for f in s.registry.free() {
            groups.entry(group_of(&f)).or_default().push(f);
        }
        for ((queues, weights), free) in groups {
            let wants: Vec<(String, u32)> = free
                .iter()
                .map(|f| (f.worker_id.clone(), f.free.min(self.batch_size)))
                .collect();
            let claimed = if weights.is_empty() {
                self.store.claim_for(&wants, &queues).await
            } else {
                let key = (queues.clone(), weights.clone());
                let rr = self.shares.lock().unwrap().get(&key).cloned().unwrap_or_default();
                self.store
                    .claim_weighted(&wants, &queues, &weights, &rr)
                    .await
                    .map(|(got, rr)| {
                        self.shares.lock().unwrap().insert(key, rr);
                        got
                    })
            };
            let got = match claimed {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(queues = ?queues, error = %e, "claim failed");
                    continue;
                }
            };
            let asked: u32 = wants.iter().map(|(_, n)| *n).sum();
            more |= asked > 0 && got.len() >= asked as usize;
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
                let expected = jq_store::Expected::of(&a);
                if s.registry
                    .deliver(f, a.job_id, a.attempt, a.created_at, Some(expected), msg)
                {
                    assigned += 1;
                    tracing::debug!(job_id = %a.job_id, worker_id = %f.worker_id, queue = %a.queue, attempt = a.attempt, "assigned");
                } else {
                    // JQ-111: not written to the stream, so straight back.
                    tracing::info!(job_id = %a.job_id, worker_id = %f.worker_id, "stream gone; returning the job");
                    if let Err(e) = s.store.delivery_failed(&f.worker_id, a.job_id, a.attempt).await {
                        tracing::warn!(job_id = %a.job_id, error = %e, "could not return undelivered job; the assignment timeout will");
                    }
                }
            }
        }
        s.registry.cycle_ended(more);
        s.metrics.scheduler_cycle.observe(start.elapsed().as_secs_f64());
        Cycle { assigned, more }
    }
}

/// What one dispatch cycle did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cycle {
    /// Jobs pushed to workers.
    pub assigned: usize,
    /// Some claim was given all it asked for: there may be more to claim.
    pub more: bool,
}

/// JQ-120: wake this dispatcher on submits made through other replicas
/// (`NOTIFY jq_wake`), reconnecting the LISTEN connection when it drops.
pub async fn listen_for_wakes(s: Arc<Shared>, shutdown: CancellationToken) {
    loop {
        let mut listener = match s.store.listen_wake().await {
            Ok(l) => l,
            Err(e) => {
                tracing::debug!(error = %e, "cannot LISTEN yet; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(2)) => continue,
                    _ = shutdown.cancelled() => return,
                }
            }
        };
        loop {
            tokio::select! {
                n = listener.recv() => match n {
                    Ok(n) => {
                        // Marks come down on any notification, this
                        // server's own too (ADR 0021); its own submits
                        // woke the dispatcher already.
                        s.store.heard_wake(&n);
                        if !s.store.own_wake(&n) {
                            s.registry.wake();
                        }
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "LISTEN connection lost; reconnecting");
                        // What was announced meanwhile is lost.
                        s.store.forget_marks();
                        break;
                    }
                },
                _ = shutdown.cancelled() => return,
            }
        }
    }
}
