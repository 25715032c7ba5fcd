//! Refresh the gauges that come from the database or the registry:
//! `jq_job_queue_depth`, `jq_worker_active_count`,
//! `jq_worker_job_concurrency`, `jq_outbox_backlog`.

use std::sync::Arc;
use std::time::Duration;

use jq_core::JobStatus;
use jq_store::Store;
use jq_telemetry::ServerMetrics;

use crate::registry::Registry;

pub struct Gauges {
    pub store: Store,
    pub registry: Arc<Registry>,
    pub metrics: Arc<ServerMetrics>,
}

impl super::Service for Gauges {
    const NAME: &'static str = "gauges";
    /// Queues whose depths were set.
    type Counts = usize;

    fn interval(&self) -> Duration {
        Duration::from_secs(2)
    }

    async fn run_once(&self) -> jq_store::Result<usize> {
        // The registry's gauges first: they need no database.
        let m = &self.metrics;
        m.worker_active.set(self.registry.connected() as i64);
        m.worker_concurrency.reset();
        for (w, n) in self.registry.in_flight() {
            m.worker_concurrency.with_label_values(&[&w]).set(n as i64);
        }
        let queues = self.store.list_queues().await?;
        let depths = self.store.depth_by_queue().await?;
        // Every live queue shows every non-terminal status, zero included,
        // so a drained queue reads 0 rather than its last value.
        m.queue_depth.reset();
        for q in &queues {
            for st in [
                JobStatus::Pending,
                JobStatus::Assigned,
                JobStatus::Running,
                JobStatus::Failed,
            ] {
                let n = depths
                    .iter()
                    .find(|(dq, ds, _)| dq == &q.name && *ds == st)
                    .map_or(0, |d| d.2);
                m.queue_depth
                    .with_label_values(&[&q.name, st.as_str()])
                    .set(n as i64);
            }
        }
        m.outbox_backlog.set(self.store.outbox_backlog().await? as i64);
        Ok(queues.len())
    }
}
