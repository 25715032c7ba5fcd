//! FR-020/JQ-112: workers silent past the heartbeat timeout go OFFLINE and
//! their jobs fail into the retry logic; deregistered workers' leftovers
//! are reclaimed by the same pass (NFR-015).

use std::sync::Arc;
use std::time::Duration;

use jq_store::{ReapReport, Store};

use crate::registry::Registry;

pub struct DeadWorkers {
    pub store: Store,
    /// Streams of workers declared dead are closed here.
    pub registry: Arc<Registry>,
    pub timeout: Duration,
    pub every: Duration,
}

impl super::Service for DeadWorkers {
    const NAME: &'static str = "dead_workers";
    type Counts = ReapReport;

    fn interval(&self) -> Duration {
        self.every
    }

    async fn run_once(&self) -> jq_store::Result<ReapReport> {
        let r = self.store.reap_dead_workers(self.timeout).await?;
        for w in &r.workers_offline {
            tracing::warn!(worker_id = %w, "worker missed its heartbeat timeout; marked OFFLINE");
            self.registry.remove(w);
        }
        if !r.jobs.is_empty() {
            tracing::warn!(jobs = r.jobs.len(), "jobs of offline workers returned for retry");
        }
        Ok(r)
    }
}
