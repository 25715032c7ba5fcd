//! The transactions that hold the database server's horizon back: the age
//! of the oldest (`jq_db_oldest_transaction_seconds`), and a warning naming
//! each one open longer than `db.long_transaction_warn_s`. Such a
//! transaction, in any database of the server, keeps vacuum from removing
//! the rows jq's jobs leave behind; claims slow down while it stays.

use std::sync::Arc;
use std::time::Duration;

use jq_store::Store;
use jq_store::activity::OpenTransaction;
use jq_telemetry::ServerMetrics;

/// How many of the oldest are named.
const NAMED: u32 = 5;

pub struct LongTransactions {
    pub store: Store,
    pub metrics: Arc<ServerMetrics>,
    /// None: never warn.
    pub warn_after: Option<Duration>,
}

/// The ones to warn about among `open` (oldest first).
pub fn too_old(open: &[OpenTransaction], warn_after: Option<Duration>) -> Vec<&OpenTransaction> {
    match warn_after {
        Some(limit) => open.iter().filter(|t| t.age >= limit).collect(),
        None => vec![],
    }
}

impl super::Service for LongTransactions {
    const NAME: &'static str = "long_transactions";
    /// Transactions warned about.
    type Counts = usize;

    fn interval(&self) -> Duration {
        Duration::from_secs(15)
    }

    async fn run_once(&self) -> jq_store::Result<usize> {
        let open = self.store.open_transactions(NAMED).await?;
        self.metrics
            .db_oldest_transaction
            .set(open.first().map_or(0.0, |t| t.age.as_secs_f64()));
        let old = too_old(&open, self.warn_after);
        for t in &old {
            tracing::warn!(
                pid = t.pid,
                database = t.database.as_deref().unwrap_or(""),
                application = %t.application,
                state = %t.state,
                age_s = t.age.as_secs(),
                wrote = t.wrote,
                "a long transaction holds the database server's horizon back: vacuum cannot remove dead rows \
                 in any database while it is open, and claims slow down; end it ({t})"
            );
        }
        Ok(old.len())
    }
}
