//! Refresh the gauges that come from the database or the registry:
//! `jq_job_queue_depth`, `jq_worker_active_count`,
//! `jq_worker_job_concurrency`, `jq_outbox_backlog`.

use jq_core::JobStatus;

use crate::Shared;

pub async fn pass(s: &Shared) {
    let m = &s.metrics;
    if let Ok(queues) = s.store.list_queues().await
        && let Ok(depths) = s.store.depth_by_queue().await
    {
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
    }
    if let Ok(n) = s.store.outbox_backlog().await {
        m.outbox_backlog.set(n as i64);
    }
    m.worker_active.set(s.registry.connected() as i64);
    m.worker_concurrency.reset();
    for (w, n) in s.registry.in_flight() {
        m.worker_concurrency.with_label_values(&[&w]).set(n as i64);
    }
}
