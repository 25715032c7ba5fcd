//! The transactional outbox's read side (JQ-160): the relay reads unsent
//! events in order, marks them sent once Kafka acknowledged them, and
//! prunes sent ones after the retention.
//!
//! Only one relay in the cluster publishes at a time: it must hold the
//! [`RelayLease`], a session advisory lock on a connection of its own. If
//! that server dies, PostgreSQL drops the lock with the connection and
//! another replica's relay takes over where the first stopped.

use jq_core::records::OutboxEvent;
use sqlx::Connection;
use uuid::Uuid;

use crate::rows::{status, u32_of, worker_status};
use crate::{Result, Store};

/// Advisory-lock key of the relay ("jqrelay").
const RELAY_LOCK: i64 = 0x006a_7172_656c_6179;

/// Proof that this process is the cluster's relay; dropping it releases.
pub struct RelayLease {
    conn: sqlx::PgConnection,
}

impl RelayLease {
    /// Still ours? (The connection is alive, so the lock is held.)
    pub async fn alive(&mut self) -> bool {
        self.conn.ping().await.is_ok()
    }
}

#[derive(sqlx::FromRow)]
struct Row {
    id: i64,
    event_id: Uuid,
    topic: String,
    partition_key: String,
    job_id: Option<Uuid>,
    queue: Option<String>,
    from_status: Option<String>,
    to_status: Option<String>,
    reason: Option<String>,
    worker_id: Option<String>,
    attempt: Option<i32>,
    detail: Option<String>,
    worker_status: Option<String>,
    active_jobs: Option<i32>,
    concurrency: Option<i32>,
    occurred_at: chrono::DateTime<chrono::Utc>,
}

impl Store {
    /// Try to become the relay; `None` while another process holds it.
    pub async fn try_relay_lease(&self) -> Result<Option<RelayLease>> {
        let mut conn = self.pool.acquire().await?;
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(RELAY_LOCK)
            .fetch_one(&mut *conn)
            .await?;
        if got {
            // Taken out of the pool: the lock lives and dies with this
            // session, never handed to another caller.
            Ok(Some(RelayLease { conn: conn.detach() }))
        } else {
            Ok(None)
        }
    }

    /// Up to `limit` unsent events, oldest first.
    pub async fn outbox_unsent(&self, limit: u32) -> Result<Vec<OutboxEvent>> {
        self.run("outbox_unsent", || async move {
            let rows: Vec<Row> = sqlx::query_as(
                "SELECT id, event_id, topic, partition_key, job_id, queue, from_status::text AS from_status, \
                 to_status::text AS to_status, reason, worker_id, attempt, detail, \
                 worker_status::text AS worker_status, active_jobs, concurrency, occurred_at \
                 FROM event_outbox WHERE sent_at IS NULL ORDER BY id LIMIT $1",
            )
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
            Ok(rows
                .into_iter()
                .map(|r| OutboxEvent {
                    id: r.id,
                    event_id: r.event_id,
                    topic: r.topic,
                    key: r.partition_key,
                    job_id: r.job_id,
                    queue: r.queue,
                    from: r.from_status.as_deref().map(status),
                    to: r.to_status.as_deref().map(status),
                    reason: r.reason,
                    worker_id: r.worker_id,
                    attempt: r.attempt.map(u32_of),
                    detail: r.detail,
                    worker_status: r.worker_status.as_deref().map(worker_status),
                    active_jobs: r.active_jobs.map(u32_of),
                    concurrency: r.concurrency.map(u32_of),
                    occurred_at: r.occurred_at,
                })
                .collect())
        })
        .await
    }

    /// Mark events acknowledged by the broker.
    pub async fn outbox_mark_sent(&self, ids: &[i64]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        self.run("outbox_mark_sent", || async move {
            sqlx::query("UPDATE event_outbox SET sent_at = now() WHERE id = ANY($1) AND sent_at IS NULL")
                .bind(ids)
                .execute(&self.pool)
                .await?;
            Ok(())
        })
        .await
    }

    /// Delete events sent more than `retention` ago; returns how many.
    pub async fn outbox_prune(&self, retention: std::time::Duration) -> Result<u64> {
        self.run("outbox_prune", || async move {
            let n = sqlx::query("DELETE FROM event_outbox WHERE sent_at < now() - $1 * interval '1 second'")
                .bind(retention.as_secs_f64())
                .execute(&self.pool)
                .await?
                .rows_affected();
            Ok(n)
        })
        .await
    }
}

/// How job history and outbox agree (the "every transition has exactly
/// one event" property the fault-injection suite checks).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventAudit {
    /// Rows in `job_events`.
    pub transitions: u64,
    /// Transitions with no outbox row of the same event id (not counting
    /// rows already pruned after delivery).
    pub missing: u64,
    /// Event ids with more than one outbox row.
    pub duplicated: u64,
    /// Job outbox rows whose event id is in no `job_events` row.
    pub orphans: u64,
}

impl Store {
    /// Compare `job_events` with the job events in `event_outbox`.
    pub async fn audit_events(&self) -> Result<EventAudit> {
        self.run("audit_events", || async move {
            let (transitions, missing, duplicated, orphans): (i64, i64, i64, i64) = sqlx::query_as(
                "SELECT (SELECT count(*) FROM job_events), \
                 (SELECT count(*) FROM job_events e WHERE NOT EXISTS \
                    (SELECT 1 FROM event_outbox o WHERE o.event_id = e.event_id)), \
                 (SELECT count(*) FROM (SELECT event_id FROM event_outbox GROUP BY event_id HAVING count(*) > 1) d), \
                 (SELECT count(*) FROM event_outbox o WHERE o.job_id IS NOT NULL AND NOT EXISTS \
                    (SELECT 1 FROM job_events e WHERE e.event_id = o.event_id))",
            )
            .fetch_one(&self.pool)
            .await?;
            Ok(EventAudit {
                transitions: transitions as u64,
                missing: missing as u64,
                duplicated: duplicated as u64,
                orphans: orphans as u64,
            })
        })
        .await
    }
}
