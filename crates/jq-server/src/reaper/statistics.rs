//! Keep planner statistics of the hot tables in step with fast growth
//! (`Store::refresh_statistics`): a fresh install's first burst should not
//! run on plans made for empty tables.

use crate::Shared;

pub async fn pass(s: &Shared) {
    match s.store.refresh_statistics().await {
        Ok(t) if !t.is_empty() => tracing::debug!(tables = ?t, "planner statistics refreshed"),
        Ok(_) => {}
        // E.g. a database user that does not own the tables: autovacuum
        // still gets there, only later.
        Err(e) => tracing::debug!(error = %e, "cannot refresh planner statistics"),
    }
}
