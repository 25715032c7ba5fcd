//! Retention (issue 21, ADR 0016 step 1): finished jobs and their history
//! are deleted once their queue's retention has passed. A deleted job reads
//! as NOT_FOUND, and its idempotency key is free again.
//!
//! Each pass walks every queue's DONE and DEAD_LETTERED jobs oldest first
//! by finish time (`jobs_done_at`, `jobs_dead_at`) and stops at the queue's
//! cutoff, so it reads what it deletes and no more; a queue that keeps its
//! jobs is not read at all.

use std::time::Duration;

use jq_core::JobStatus;
use uuid::Uuid;

use crate::{Result, Store};

/// The server's retentions, for queues that do not set their own
/// (`Duration::ZERO`: kept until deleted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retentions {
    pub done: Duration,
    pub dead_lettered: Duration,
}

/// Whether the relay publishes events: while it does, a job whose events
/// are not all published is kept until they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Publishing {
    /// Kafka is configured: no event is deleted before it was published.
    Kafka,
    /// No Kafka: history is deleted with its job, published or not, so
    /// it never counts as backlog.
    Off,
}

/// Most jobs one queue gives up per status in one statement (one
/// transaction); a caller that got at least this many goes again.
pub const PRUNE_BATCH: i64 = 5000;

/// One status of one queue, with its retention in seconds (0: keep); the
/// rows are locked, skipping any another replica's pass holds.
fn doomed(status: JobStatus, column: &str, default_param: &str) -> String {
    let phase = crate::layout::phase(status);
    let status = status.as_str();
    let unpublished = crate::outbox::UNPUBLISHED;
    format!(
        "SELECT d.id FROM queues q CROSS JOIN LATERAL ( \
             SELECT j.id FROM jobs j \
             WHERE j.queue = q.name AND j.status = '{status}' AND j.phase = {phase} \
               AND j.completed_at < now() - make_interval(secs => coalesce(q.{column}, {default_param})::float8) \
               AND NOT ($3 AND EXISTS (SELECT 1 FROM job_events e WHERE e.job_id = j.id \
                                         AND {unpublished})) \
             ORDER BY j.completed_at LIMIT {PRUNE_BATCH} FOR UPDATE OF j SKIP LOCKED) d \
         WHERE coalesce(q.{column}, {default_param}) > 0"
    )
}

impl Store {
    /// Delete the finished jobs whose retention has passed; returns their
    /// ids. Their history is no longer readable (every read of events
    /// starts from the job) and leaves with its partition
    /// ([`Store::expire_event_partitions`]); only rows re-filed into
    /// `job_events_kept` are deleted here. One transaction: the jobs are
    /// chosen and locked (a manual retry of a dead letter waits for it),
    /// then deleted by id. Deleting by a bound list of ids keeps the
    /// deletes on their indexes: as one statement joining the chosen rows,
    /// the planner hashed all of `job_events` (3 s per batch at 4 M events,
    /// against 0.2 s; docs/benchmarks.md, session 10).
    pub async fn prune_finished(&self, server: Retentions, publishing: Publishing) -> Result<Vec<Uuid>> {
        let choose = format!(
            "{} UNION ALL {}",
            doomed(JobStatus::Done, "retain_done_s", "$1"),
            doomed(JobStatus::DeadLettered, "retain_dead_s", "$2"),
        );
        let secs = |d: Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
        let choose = &choose;
        self.run("prune_finished", || async move {
            let mut tx = self.pool.begin().await?;
            let body = async {
                let ids: Vec<Uuid> = sqlx::query_scalar(choose)
                    .bind(secs(server.done))
                    .bind(secs(server.dead_lettered))
                    .bind(publishing == Publishing::Kafka)
                    .fetch_all(&mut *tx)
                    .await?;
                if ids.is_empty() {
                    return Ok(ids);
                }
                // Their events go with their partitions (`partitions`),
                // except those re-filed as kept until deleted.
                sqlx::query("DELETE FROM job_events WHERE bucket = 'infinity' AND job_id = ANY($1)")
                    .bind(&ids)
                    .execute(&mut *tx)
                    .await?;
                Ok(
                    sqlx::query_scalar("DELETE FROM jobs WHERE id = ANY($1) RETURNING id")
                        .bind(&ids)
                        .fetch_all(&mut *tx)
                        .await?,
                )
            }
            .await;
            crate::finish(tx, body).await
        })
        .await
    }
}
