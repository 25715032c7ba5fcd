//! FR-004: PENDING past its TTL -> DEAD_LETTERED (TTL_EXPIRED).

use crate::Shared;

pub async fn pass(s: &Shared) -> usize {
    match s.store.reap_expired().await {
        Ok(ids) => {
            if !ids.is_empty() {
                tracing::info!(jobs = ids.len(), "jobs expired before starting; dead-lettered");
            }
            ids.len()
        }
        Err(e) => {
            tracing::warn!(error = %e, "ttl pass failed");
            0
        }
    }
}
