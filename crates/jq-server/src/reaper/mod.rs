//! Maintenance passes, each in its own module (the River habit): assignment
//! timeouts (FR-016), dead workers (FR-020, JQ-112), TTL expiry (FR-004),
//! the gauges refresher, and planner statistics of fast-growing tables.
//! Every replica runs them; the store's guarded writes make concurrent
//! passes safe.

pub mod assignment_timeout;
pub mod dead_workers;
pub mod gauges;
pub mod statistics;
pub mod ttl;

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;

/// Run `pass` every `every` until `stop` flips.
pub async fn every<F, Fut>(name: &'static str, every: Duration, mut stop: watch::Receiver<bool>, mut pass: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => pass().await,
            _ = stop.changed() => break,
        }
        if *stop.borrow() {
            break;
        }
    }
    tracing::debug!(reaper = name, "stopped");
}
