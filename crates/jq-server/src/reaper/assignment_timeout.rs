//! FR-016: ASSIGNED longer than the assignment timeout -> FAILED -> retry.

use std::time::Duration;

use crate::Shared;

pub async fn pass(s: &Shared, timeout: Duration) -> usize {
    match s.store.reap_assignment_timeouts(timeout).await {
        Ok(ids) => {
            if !ids.is_empty() {
                tracing::warn!(jobs = ids.len(), "assignments timed out; jobs returned for retry");
            }
            ids.len()
        }
        Err(e) => {
            tracing::warn!(error = %e, "assignment-timeout pass failed");
            0
        }
    }
}
