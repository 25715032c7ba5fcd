//! Keep planner statistics of the hot tables in step with fast growth
//! (`Store::refresh_statistics`): a fresh install's first burst should not
//! run on plans made for empty tables.

use std::time::Duration;

use jq_store::Store;

pub struct Statistics {
    pub store: Store,
}

impl super::Service for Statistics {
    const NAME: &'static str = "statistics";
    /// Tables analyzed.
    type Counts = Vec<String>;

    fn interval(&self) -> Duration {
        Duration::from_secs(1)
    }

    async fn run_once(&self) -> jq_store::Result<Vec<String>> {
        match self.store.refresh_statistics().await {
            Ok(t) => {
                if !t.is_empty() {
                    tracing::debug!(tables = ?t, "planner statistics refreshed");
                }
                Ok(t)
            }
            // E.g. a database user that does not own the tables: autovacuum
            // still gets there, only later. Not worth a warning each second.
            Err(e) => {
                tracing::debug!(error = %e, "cannot refresh planner statistics");
                Ok(vec![])
            }
        }
    }
}
