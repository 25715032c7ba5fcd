//! JQ-124: fire the periodic schedules that are due. Every replica runs
//! it; a due schedule is fired by whichever claims it first (SKIP LOCKED,
//! no leader), with its occurrences' jobs in the claiming transaction.

use std::sync::Arc;
use std::time::Duration;

use jq_store::Store;
use jq_telemetry::ServerMetrics;

/// Often enough that a secondly schedule fires on time (an occurrence is
/// missed once it is later than the gap to the next one), cheap when
/// nothing is due: one index probe that locks nothing.
pub const INTERVAL: Duration = Duration::from_millis(250);

/// Schedules claimed per transaction.
const BATCH: u32 = 50;

pub struct Schedules {
    pub store: Store,
    pub metrics: Arc<ServerMetrics>,
    /// Woken when jobs were submitted: the wake-up NOTIFY reaches the other
    /// replicas, and this one's listener ignores its own.
    pub registry: Arc<crate::registry::Registry>,
}

impl super::Service for Schedules {
    const NAME: &'static str = "schedules";
    /// Jobs submitted.
    type Counts = usize;

    fn interval(&self) -> Duration {
        INTERVAL
    }

    async fn run_once(&self) -> jq_store::Result<usize> {
        let mut total = 0;
        loop {
            let fired = self.store.fire_due_schedules(BATCH).await?;
            for f in &fired {
                total += f.jobs.len();
                self.metrics
                    .schedule_fires
                    .with_label_values(&[&f.schedule])
                    .inc_by(f.jobs.len() as u64);
                if f.skipped > 0 {
                    tracing::info!(schedule = %f.schedule, skipped = f.skipped, lag_s = f.lag.as_secs_f64(),
                        "schedule occurrences skipped (missed, overlapping or beyond the catch-up cap)");
                }
                tracing::debug!(schedule = %f.schedule, jobs = f.jobs.len(), "schedule fired");
            }
            if fired.len() < BATCH as usize {
                if total > 0 {
                    self.registry.wake();
                }
                return Ok(total);
            }
        }
    }
}
