//! Refresh the gauges that come from the database or the registry:
//! `jq_job_queue_depth`, `jq_worker_active_count`,
//! `jq_worker_job_concurrency`, `jq_outbox_backlog`, `jq_outbox_lag_seconds`,
//! `jq_schedule_lag_seconds`.
//!
//! A scrape runs on another thread at any moment, so a pass never empties a
//! gauge vector to refill it: everything is read first, then each series is
//! overwritten and only the series that no longer exist are removed.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jq_core::JobStatus;
use jq_store::Store;
use jq_store::retention::Publishing;
use jq_telemetry::ServerMetrics;
use prometheus::IntGaugeVec;

use crate::registry::Registry;

pub struct Gauges {
    store: Store,
    registry: Arc<Registry>,
    metrics: Arc<ServerMetrics>,
    publishing: Publishing,
    /// Label sets the last pass set, per vector, to remove what went away.
    shown: Mutex<Shown>,
    /// How long the last pass's depth count took.
    cost: Mutex<Duration>,
}

/// The depth count may use at most 1/`SHARE` of one connection's time: it
/// walks the live set's partial indexes, which a transaction pinning the
/// horizon lengthens with every job that passes (ADR 0021), so the gauges
/// are refreshed less often then instead of slowing the database further.
const SHARE: u32 = 50;
const EVERY: Duration = Duration::from_secs(2);
const AT_MOST_EVERY: Duration = Duration::from_secs(60);

#[derive(Default)]
struct Shown {
    depth: HashSet<Vec<String>>,
    concurrency: HashSet<Vec<String>>,
}

impl Gauges {
    pub fn new(
        store: Store,
        registry: Arc<Registry>,
        metrics: Arc<ServerMetrics>,
        publishing: Publishing,
    ) -> Self {
        Gauges {
            store,
            registry,
            metrics,
            publishing,
            shown: Mutex::default(),
            cost: Mutex::default(),
        }
    }
}

/// Set every series in `now` and remove those of `shown` not in it.
fn replace(vec: &IntGaugeVec, shown: &mut HashSet<Vec<String>>, now: Vec<(Vec<String>, i64)>) {
    let next: HashSet<Vec<String>> = now.iter().map(|(l, _)| l.clone()).collect();
    for (labels, n) in &now {
        let l: Vec<&str> = labels.iter().map(String::as_str).collect();
        vec.with_label_values(&l).set(*n);
    }
    for gone in shown.difference(&next) {
        let l: Vec<&str> = gone.iter().map(String::as_str).collect();
        // Absent already is fine: the end state is the same.
        let _ = vec.remove_label_values(&l);
    }
    *shown = next;
}

impl super::Service for Gauges {
    const NAME: &'static str = "gauges";
    /// Queues whose depths were set.
    type Counts = usize;

    fn interval(&self) -> Duration {
        let cost = *self.cost.lock().unwrap();
        (cost * SHARE).clamp(EVERY, AT_MOST_EVERY)
    }

    async fn run_once(&self) -> jq_store::Result<usize> {
        let queues = self.store.list_queues().await?;
        let started = std::time::Instant::now();
        let depths = self.store.depth_by_queue().await?;
        *self.cost.lock().unwrap() = started.elapsed();
        let outbox = self.store.outbox_pending(self.publishing).await?;
        let lag = self.store.schedule_lag().await?;
        // Every live queue shows every non-terminal status, zero included,
        // so a drained queue reads 0 rather than its last value.
        let mut depth = Vec::new();
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
                depth.push((vec![q.name.clone(), st.as_str().to_owned()], n as i64));
            }
        }
        let concurrency = self
            .registry
            .in_flight()
            .into_iter()
            .map(|(w, n)| (vec![w], n as i64))
            .collect();
        let m = &self.metrics;
        let mut shown = self.shown.lock().unwrap();
        replace(&m.queue_depth, &mut shown.depth, depth);
        m.outbox_backlog.set(outbox.events as i64);
        m.outbox_lag.set(outbox.lag.as_secs_f64());
        m.schedule_lag.set(lag.as_secs_f64());
        // The registry's gauges last: a scrape that sees a worker's
        // concurrency sees the depths of the same pass.
        m.worker_active.set(self.registry.connected() as i64);
        replace(&m.worker_concurrency, &mut shown.concurrency, concurrency);
        Ok(queues.len())
    }
}
