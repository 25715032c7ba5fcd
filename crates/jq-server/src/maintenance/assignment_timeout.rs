//! FR-016: ASSIGNED longer than the assignment timeout -> FAILED -> retry.

use std::time::Duration;

use jq_store::Store;

pub struct AssignmentTimeouts {
    pub store: Store,
    pub timeout: Duration,
    pub every: Duration,
}

impl super::Service for AssignmentTimeouts {
    const NAME: &'static str = "assignment_timeout";
    /// Jobs returned for retry (or dead-lettered).
    type Counts = usize;

    fn interval(&self) -> Duration {
        self.every
    }

    async fn run_once(&self) -> jq_store::Result<usize> {
        let ids = self.store.reap_assignment_timeouts(self.timeout).await?;
        if !ids.is_empty() {
            tracing::warn!(jobs = ids.len(), "assignments timed out; jobs returned for retry");
        }
        Ok(ids.len())
    }
}
