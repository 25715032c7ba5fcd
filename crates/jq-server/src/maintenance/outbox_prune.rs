//! JQ-160: sent `event_outbox` rows are deleted after their retention
//! (`kafka.outbox_retention_s`); with Kafka off, unsent ones too, since
//! nothing will send them.

use std::time::Duration;

use jq_store::Store;
use jq_store::retention::Publishing;

pub struct OutboxPrune {
    pub store: Store,
    pub retention: Duration,
    pub publishing: Publishing,
}

impl super::Service for OutboxPrune {
    const NAME: &'static str = "outbox_prune";
    /// Events deleted.
    type Counts = u64;

    fn interval(&self) -> Duration {
        Duration::from_secs(60)
    }

    async fn run_once(&self) -> jq_store::Result<u64> {
        let n = self.store.outbox_prune(self.retention, self.publishing).await?;
        if n > 0 {
            tracing::debug!(pruned = n, "sent outbox events pruned");
        }
        Ok(n)
    }
}
