//! Issue 21: finished jobs leave once their queue's retention has passed
//! (`retention.*` for queues without their own). While the relay publishes
//! to Kafka, a job whose events are not all published stays until they are.

use std::time::Duration;

use jq_store::Store;
use jq_store::retention::{PRUNE_BATCH, Publishing, Retentions};

/// Most batches one pass runs (a quarter of a million jobs); the next pass
/// goes on.
const MAX_BATCHES: usize = 50;

pub struct Retention {
    pub store: Store,
    pub server: Retentions,
    pub publishing: Publishing,
    pub every: Duration,
}

impl super::Service for Retention {
    const NAME: &'static str = "retention";
    /// Jobs deleted.
    type Counts = usize;

    fn interval(&self) -> Duration {
        self.every
    }

    async fn run_once(&self) -> jq_store::Result<usize> {
        // Batches of one transaction each, until one comes back short: a
        // busy queue's backlog is worked off in one pass, not one batch per
        // interval, yet no transaction holds many rows.
        let mut pruned = 0;
        for _ in 0..MAX_BATCHES {
            let ids = self.store.prune_finished(self.server, self.publishing).await?;
            pruned += ids.len();
            if (ids.len() as i64) < PRUNE_BATCH {
                break;
            }
        }
        if pruned > 0 {
            tracing::debug!(jobs = pruned, "finished jobs past their retention deleted");
        }
        Ok(pruned)
    }
}
