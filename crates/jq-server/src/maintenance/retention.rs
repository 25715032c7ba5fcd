//! Issue 21: finished jobs leave once their queue's retention has passed
//! (`retention.*` for queues without their own). While the relay publishes
//! to Kafka, a job whose events are not all published stays until they are.

use std::time::Duration;

use jq_store::Store;
use jq_store::retention::{Publishing, Retentions};

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
        let ids = self.store.prune_finished(self.server, self.publishing).await?;
        if !ids.is_empty() {
            tracing::debug!(jobs = ids.len(), "finished jobs past their retention deleted");
        }
        Ok(ids.len())
    }
}
