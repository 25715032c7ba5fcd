//! FR-004: PENDING past its TTL -> DEAD_LETTERED (TTL_EXPIRED).

use std::time::Duration;

use jq_store::Store;

pub struct TtlExpiry {
    pub store: Store,
    pub every: Duration,
}

impl super::Service for TtlExpiry {
    const NAME: &'static str = "ttl_expiry";
    /// Jobs dead-lettered.
    type Counts = usize;

    fn interval(&self) -> Duration {
        self.every
    }

    async fn run_once(&self) -> jq_store::Result<usize> {
        let ids = self.store.reap_expired().await?;
        if !ids.is_empty() {
            tracing::info!(jobs = ids.len(), "jobs expired before starting; dead-lettered");
        }
        Ok(ids.len())
    }
}
