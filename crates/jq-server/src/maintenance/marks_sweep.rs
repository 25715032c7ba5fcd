//! The claim's marks (ADR 0021): every [`SWEEP_EVERY`], look below each
//! mark for a due job no announcement lowered it to (rows a claimer held
//! when its server died) and lower the mark — instead of forgetting the
//! marks, which would make the next claims walk every dead entry a pinned
//! horizon keeps.

use std::time::Duration;

use jq_store::Store;
use jq_store::marks::SWEEP_EVERY;

pub struct MarksSweep {
    pub store: Store,
}

impl super::Service for MarksSweep {
    const NAME: &'static str = "marks_sweep";
    /// Sections whose mark came down.
    type Counts = usize;

    fn interval(&self) -> Duration {
        SWEEP_EVERY
    }

    async fn run_once(&self) -> jq_store::Result<usize> {
        let lowered = self.store.sweep_marks().await?;
        if !lowered.is_empty() {
            // Rare by design: each is a job that waited up to a sweep.
            tracing::info!(sections = ?lowered, "due jobs found below the claim's marks; marks lowered");
        }
        Ok(lowered.len())
    }
}
