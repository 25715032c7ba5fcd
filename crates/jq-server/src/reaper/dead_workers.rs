//! FR-020/JQ-112: workers silent past the heartbeat timeout go OFFLINE and
//! their jobs fail into the retry logic; deregistered workers' leftovers
//! are reclaimed by the same pass (NFR-015).

use std::time::Duration;

use crate::Shared;

pub async fn pass(s: &Shared, timeout: Duration) -> usize {
    match s.store.reap_dead_workers(timeout).await {
        Ok(r) => {
            for w in &r.workers_offline {
                tracing::warn!(worker_id = %w, "worker missed its heartbeat timeout; marked OFFLINE");
                s.registry.remove(w);
            }
            if !r.jobs.is_empty() {
                tracing::warn!(jobs = r.jobs.len(), "jobs of offline workers returned for retry");
            }
            r.jobs.len()
        }
        Err(e) => {
            tracing::warn!(error = %e, "dead-worker pass failed");
            0
        }
    }
}
