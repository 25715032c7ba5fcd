//! Issue 21, ADR 0017: the partitions of `job_events`. Each pass creates
//! the ones the next few widths need, then drops those whose history all
//! belongs to jobs retention deleted (re-filing the rows of jobs that still
//! exist first). Every replica runs it; one at a time does the work.

use std::time::Duration;

use jq_store::Store;
use jq_store::retention::Retentions;

pub struct Partitions {
    pub store: Store,
    pub server: Retentions,
    pub width: Duration,
    pub every: Duration,
}

/// What one pass did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub created: usize,
    pub dropped: usize,
    /// Rows moved out of dropped partitions because their job still exists.
    pub refiled: u64,
}

impl super::Service for Partitions {
    const NAME: &'static str = "partitions";
    type Counts = Counts;

    fn interval(&self) -> Duration {
        self.every
    }

    async fn run_once(&self) -> jq_store::Result<Counts> {
        // Ahead first: a pass that fails while dropping still leaves every
        // insert a partition to land in.
        let created = self.store.ensure_event_partitions(self.width).await?.len();
        let expired = self.store.expire_event_partitions(self.server).await?;
        Ok(Counts {
            created,
            dropped: expired.len(),
            refiled: expired.iter().map(|e| e.refiled).sum(),
        })
    }
}
