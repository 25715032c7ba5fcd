//! Maintenance services, one per file (River's habit): assignment
//! timeouts (FR-016), dead workers (FR-020, JQ-112), TTL expiry (FR-004),
//! the gauges, planner statistics, pruning of sent outbox events,
//! retention of finished jobs, the partitions of their history, the
//! indexes of `jobs` (layout), periodic schedules, the watch on long
//! transactions elsewhere on the database server, and the sweep below the
//! claim's marks.
//! Each owns its interval and a `run_once` that does one pass and returns
//! what it changed, so a test can drive one pass alone; [`run`] is the
//! loop they share. Every replica runs them; the store's guarded writes
//! make concurrent passes safe, and what a pass's transitions mean outside
//! PostgreSQL is carried out by `crate::effects`.

pub mod assignment_timeout;
pub mod dead_workers;
pub mod gauges;
pub mod layout;
pub mod long_transactions;
pub mod marks_sweep;
pub mod outbox_prune;
pub mod partitions;
pub mod retention;
pub mod schedules;
pub mod statistics;
pub mod ttl_expiry;

use std::fmt::Debug;
use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// One maintenance pass, run every [`Service::interval`].
pub trait Service: Send + Sync + 'static {
    /// Its name in logs.
    const NAME: &'static str;
    /// What one pass changed.
    type Counts: Debug + Send;

    fn interval(&self) -> Duration;

    /// One pass. An error is logged by [`run`]; the next pass tries again.
    fn run_once(&self) -> impl Future<Output = jq_store::Result<Self::Counts>> + Send;
}

/// Run `service` every interval until `shutdown` (the first pass after one
/// interval: a server that just started has nothing overdue of its own).
pub async fn run<S: Service>(service: S, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(service.interval()) => {}
            _ = shutdown.cancelled() => break,
        }
        match service.run_once().await {
            Ok(counts) => tracing::trace!(service = S::NAME, ?counts, "maintenance pass"),
            Err(e) => tracing::warn!(service = S::NAME, error = %e, "maintenance pass failed"),
        }
    }
    tracing::debug!(service = S::NAME, "stopped");
}
