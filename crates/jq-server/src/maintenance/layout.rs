//! Issue 21 item 3, ADR 0018: the indexes of `jobs` move from `status` to
//! `phase`. Each pass builds any phase index still missing and, once the
//! grace for servers of the previous version has passed, drops the
//! indexes that name `status`. After that a pass is two catalog reads.

use std::time::Duration;

use jq_store::Store;
use jq_store::layout::LayoutStep;

pub struct Layout {
    pub store: Store,
    pub every: Duration,
}

impl super::Service for Layout {
    const NAME: &'static str = "layout";
    type Counts = LayoutStep;

    fn interval(&self) -> Duration {
        self.every
    }

    async fn run_once(&self) -> jq_store::Result<LayoutStep> {
        self.store.advance_layout().await
    }
}
