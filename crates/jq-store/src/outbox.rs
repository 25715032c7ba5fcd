//! The transactional outbox's read side (JQ-160), two sources (ADR 0012):
//!
//! - `job_events` is the outbox of job events. The relay publishes them by
//!   windows of writing-transaction ids ([`EventWindow`]) and marks them
//!   sent by moving one cursor, so publishing writes nothing per event.
//! - `event_outbox` holds worker events, events written before schema v4,
//!   and the unpublished events of deleted jobs; the relay marks each row
//!   sent once Kafka acknowledged it and prunes sent rows after the
//!   retention.
//!
//! Only one relay in the cluster publishes at a time: it must hold the
//! [`RelayLease`], a session advisory lock on a connection of its own. If
//! that server dies, PostgreSQL drops the lock with the connection and
//! another replica's relay takes over where the first stopped.

use std::collections::HashSet;

use jq_core::events::topic_of;
use jq_core::records::{EventBody, OutboxEvent};
use sqlx::Connection;
use uuid::Uuid;

use crate::retention::Publishing;
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
    /// NULL on copies of a deleted job's events: derived from the statuses.
    topic: Option<String>,
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

impl Row {
    /// The event as published; a job event without a stored topic (every
    /// `job_events` row, and copies of deleted jobs' events) gets the topic
    /// of its statuses.
    fn into_event(self) -> OutboxEvent {
        let from = self.from_status.as_deref().map(status);
        let to = self.to_status.as_deref().map(status);
        let topic = match self.topic {
            Some(t) => t,
            None => topic_of(from, to.unwrap_or(jq_core::JobStatus::Pending)).to_string(),
        };
        // A row is a job's event exactly when it names a job: worker events
        // (workers.rs, reaper.rs) are written without one.
        let body = match self.job_id {
            Some(job_id) => EventBody::Job {
                job_id,
                queue: self.queue.unwrap_or_default(),
                from,
                to: to.unwrap_or(jq_core::JobStatus::Pending),
                reason: self.reason.unwrap_or_default(),
                worker_id: self.worker_id,
                attempt: self.attempt.map_or(0, u32_of),
                detail: self.detail,
            },
            None => EventBody::Worker {
                worker_id: self.worker_id.unwrap_or_default(),
                status: self
                    .worker_status
                    .as_deref()
                    .map_or(jq_core::WorkerStatus::Offline, worker_status),
                active_jobs: self.active_jobs.map_or(0, u32_of),
                concurrency: self.concurrency.map_or(0, u32_of),
            },
        };
        OutboxEvent {
            id: self.id,
            event_id: self.event_id,
            topic,
            key: self.partition_key,
            occurred_at: self.occurred_at,
            body,
        }
    }
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
            Ok(rows.into_iter().map(Row::into_event).collect())
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
    /// With Kafka off nothing will ever send them, so events older than
    /// `retention` go sent or not (as a pruned job's history does, ADR
    /// 0017): worker events would otherwise pile up forever.
    pub async fn outbox_prune(&self, retention: std::time::Duration, publishing: Publishing) -> Result<u64> {
        let older = match publishing {
            Publishing::Kafka => "sent_at",
            Publishing::Off => "coalesce(sent_at, occurred_at)",
        };
        self.run("outbox_prune", || async move {
            let n = sqlx::query(&format!(
                "DELETE FROM event_outbox WHERE {older} < now() - $1 * interval '1 second'"
            ))
            .bind(retention.as_secs_f64())
            .execute(&self.pool)
            .await?
            .rows_affected();
            Ok(n)
        })
        .await
    }
}

/// SQL: job event `e` is not yet published (ADR 0020). Below `high` every
/// committed event is published except those of the `pending`
/// transactions; `published_below` is at most `high` when this relay moved
/// it, and may be above it when a previous version's relay did (during a
/// rolling upgrade), which published everything below it.
pub(crate) const UNPUBLISHED: &str = "(e.txid >= (SELECT greatest(high, published_below) FROM relay_cursor) \
     OR e.txid = ANY ((SELECT pending FROM relay_cursor)::bigint[]) \
        AND e.txid >= (SELECT published_below FROM relay_cursor))";

/// SQL that copies the unpublished events of the jobs chosen by `cond`
/// (over `job_events e`) into `event_outbox`, for a statement that deletes
/// those jobs' history: their events are still published, in order.
pub(crate) fn keep_unpublished(cond: &str) -> String {
    format!(
        "INSERT INTO event_outbox (event_id, topic, partition_key, job_id, queue, from_status, to_status, \
                                   reason, worker_id, attempt, detail, occurred_at) \
         SELECT e.event_id, NULL, e.job_id::text, e.job_id, e.queue, e.from_status, e.to_status, e.reason, \
                e.worker_id, e.attempt, e.detail, e.occurred_at \
         FROM job_events e WHERE ({cond}) AND {UNPUBLISHED} ORDER BY e.id"
    )
}

/// The relay's position (ADR 0020): every committed job event whose
/// transaction id is below `high` is published, except those of the
/// transactions in `pending`, which were still running when it read; and
/// every transaction below `below` has ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RelayCursor {
    pub below: i64,
    pub high: i64,
    pub pending: Vec<i64>,
}

/// Job events the relay may publish next (ADR 0020): the committed events
/// of the transactions that were pending, and of those in `[high, upto)`
/// that have ended, in `job_events` id order. A job's events commit in
/// their id order (the job's row lock serializes them), so a committed
/// event never waits for the cluster's oldest transaction.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventWindow {
    pub events: Vec<OutboxEvent>,
    /// The relay's position once `events` are published; `None` when
    /// nothing was read (the position stays).
    pub next: Option<RelayCursor>,
    /// Events were found but none could go yet: each follows an event of
    /// the same job beyond the window. The caller widens the next window.
    /// (No events with `next` set: the window held only pruned jobs'
    /// history, and the position moves past it.)
    pub held: bool,
}

#[derive(sqlx::FromRow)]
struct WindowRow {
    #[sqlx(flatten)]
    event: Row,
    high: i64,
    upto: i64,
    xmin: i64,
    /// The transactions running when the window was read.
    running: Vec<i64>,
    txid: i64,
    /// An event of the same job with a smaller id lies beyond the window.
    later_pred: bool,
    /// Its job is gone: pruned while Kafka was off, its history waiting
    /// for its partition to be dropped. Never published, yet it moves the
    /// window like any other.
    pruned: bool,
}

/// The window's read, one statement, so the snapshot it reads by is the
/// one whose running transactions it reports. (The CTEs are materialized:
/// inlined, each bound was computed again for every row.) `upto` is the
/// snapshot's `xmax` (every transaction from it on started later), or lower
/// so that about `$1` events are read from `high` on — but never so low
/// that one transaction's events are split. Rows come unordered: with
/// `ORDER BY e.id` the planner walked `job_events_pkey` over the whole
/// table instead of the `txid` ranges. `pruned` is a scalar subquery, not
/// `NOT EXISTS`: that one the planner may run as a hash of every job.
const WINDOW_SQL: &str = "\
WITH c AS MATERIALIZED (
    SELECT greatest(r.high, r.published_below) AS high,
           ARRAY(SELECT p FROM unnest(r.pending) p WHERE p >= r.published_below) AS pending,
           pg_current_snapshot() AS snap
    FROM relay_cursor r
), b AS MATERIALIZED (
    SELECT c.high, c.pending,
           pg_snapshot_xmin(c.snap)::text::bigint AS xmin,
           pg_snapshot_xmax(c.snap)::text::bigint AS xmax,
           ARRAY(SELECT x::text::bigint FROM pg_snapshot_xip(c.snap) x) AS running,
           (SELECT min(e.txid) FROM job_events e
            WHERE e.txid >= c.high AND e.txid < pg_snapshot_xmax(c.snap)::text::bigint) AS first,
           (SELECT e.txid FROM job_events e
            WHERE e.txid >= c.high AND e.txid < pg_snapshot_xmax(c.snap)::text::bigint
            ORDER BY e.txid OFFSET $1 LIMIT 1) AS nth
    FROM c
), w AS MATERIALIZED (
    SELECT high, pending, xmin, running,
           CASE WHEN nth IS NULL THEN xmax WHEN nth = first THEN nth + 1 ELSE nth END AS upto
    FROM b
), ev AS (
    SELECT e.* FROM w JOIN job_events e ON e.txid >= w.high AND e.txid < w.upto
    UNION ALL
    SELECT e.* FROM w JOIN job_events e ON e.txid = ANY (w.pending) AND e.txid < w.high
)
SELECT w.high, w.upto, w.xmin, w.running, e.id, e.event_id, NULL::text AS topic,
       e.job_id::text AS partition_key, e.job_id,
       e.queue, e.from_status::text AS from_status, e.to_status::text AS to_status, e.reason, e.worker_id,
       e.attempt, e.detail, NULL::text AS worker_status, NULL::int AS active_jobs, NULL::int AS concurrency,
       e.occurred_at, e.txid,
       EXISTS (SELECT 1 FROM job_events p WHERE p.job_id = e.job_id AND p.id < e.id AND p.txid >= w.upto)
           AS later_pred,
       (SELECT 1 FROM jobs j WHERE j.id = e.job_id) IS NULL AS pruned
FROM w CROSS JOIN ev e";

/// Lower `upto` until no event below it follows an event of the same job
/// at or above it, so that one job's events go out in order even when a
/// transaction with a smaller id wrote its later event (it waited for the
/// job's row lock). `rows` are `(id order) (job, txid, later_pred)`.
fn settle_window(rows: &[(Uuid, i64, bool)], mut upto: i64) -> i64 {
    for (_, txid, later) in rows {
        if *later {
            upto = upto.min(*txid);
        }
    }
    loop {
        let before = upto;
        let mut blocked: HashSet<Uuid> = HashSet::new();
        for (job, txid, _) in rows {
            if *txid >= upto {
                blocked.insert(*job);
            } else if blocked.contains(job) {
                upto = *txid;
                blocked.insert(*job);
            }
        }
        if upto == before {
            return upto;
        }
    }
}

impl Store {
    /// The next [`EventWindow`] of about `limit` job events from `high` on
    /// (`u32::MAX`: every one that has committed).
    pub async fn job_events_window(&self, limit: u32) -> Result<EventWindow> {
        self.run("job_events_window", || async move {
            let mut rows: Vec<WindowRow> = sqlx::query_as(WINDOW_SQL)
                .bind(i64::from(limit.max(1)) - 1)
                .fetch_all(&self.pool)
                .await?;
            rows.sort_unstable_by_key(|r| r.event.id);
            // No row: nothing to publish, and the position may stay.
            let Some(first) = rows.first() else {
                return Ok(EventWindow::default());
            };
            let (high, upto, xmin) = (first.high, first.upto, first.xmin);
            let running = first.running.clone();
            let keys: Vec<(Uuid, i64, bool)> = rows
                .iter()
                .map(|r| (r.event.job_id.unwrap_or_default(), r.txid, r.later_pred))
                .collect();
            let upto = settle_window(&keys, upto);
            // An event of a pending transaction (below `high`) held back
            // by one beyond the window: nothing goes until the window
            // reaches that one.
            if upto < high {
                return Ok(EventWindow {
                    held: true,
                    ..Default::default()
                });
            }
            let below: Vec<WindowRow> = rows.into_iter().filter(|r| r.txid < upto).collect();
            if below.is_empty() {
                return Ok(EventWindow {
                    held: true,
                    ..Default::default()
                });
            }
            let events: Vec<OutboxEvent> = below
                .into_iter()
                .filter(|r| !r.pruned)
                .map(|r| r.event.into_event())
                .collect();
            Ok(EventWindow {
                events,
                next: Some(RelayCursor {
                    below: xmin.min(upto),
                    high: upto,
                    pending: running.into_iter().filter(|x| *x < upto).collect(),
                }),
                held: false,
            })
        })
        .await
    }

    /// The plan of the window read (a test holds it to the `txid` index).
    pub async fn explain_job_events_window(&self) -> Result<String> {
        let lines: Vec<String> = sqlx::query_scalar(&format!("EXPLAIN {WINDOW_SQL}"))
            .bind(499_i64)
            .fetch_all(&self.pool)
            .await?;
        Ok(lines.join("\n"))
    }

    /// The relay's position, as stored.
    pub async fn relay_cursor(&self) -> Result<RelayCursor> {
        self.run("relay_cursor", || async move {
            let (below, high, pending): (i64, i64, Vec<i64>) =
                sqlx::query_as("SELECT published_below, high, pending FROM relay_cursor")
                    .fetch_one(&self.pool)
                    .await?;
            Ok(RelayCursor { below, high, pending })
        })
        .await
    }

    /// The events of a window are published: store the position after it.
    /// Never backwards (a relay that lost its lease mid-window).
    pub async fn job_events_published(&self, next: &RelayCursor) -> Result<()> {
        self.run("job_events_published", || async move {
            sqlx::query(
                "UPDATE relay_cursor SET published_below = greatest(published_below, $1), high = $2, \
                 pending = $3 WHERE greatest(high, published_below) <= $2",
            )
            .bind(next.below)
            .bind(next.high)
            .bind(&next.pending)
            .execute(&self.pool)
            .await?;
            Ok(())
        })
        .await
    }

    /// Events the relay has still to publish (FR-038 backlog): both
    /// sources. Without Kafka no relay runs and nothing is waiting: 0,
    /// without a query. (Counted, it would be every event of the retained
    /// history, read every two seconds by the gauges: 18 ms per 250,000
    /// events here, and a week's history at 1,000 jobs/s is 2.4 G. If
    /// Kafka is configured later, the relay publishes what is still there.)
    /// With Kafka on, a job is pruned only once its events are published,
    /// so the count is of the window's index alone.
    pub async fn outbox_backlog(&self, publishing: Publishing) -> Result<u64> {
        Ok(self.outbox_pending(publishing).await?.events)
    }

    /// The backlog and how old its oldest committed event is (JQ-161,
    /// `jq_outbox_lag_seconds`): both sources, what this snapshot sees
    /// (an open transaction's events are not yet committed, so not late).
    pub async fn outbox_pending(&self, publishing: Publishing) -> Result<OutboxPending> {
        if publishing == Publishing::Off {
            return Ok(OutboxPending::default());
        }
        self.run("outbox_backlog", || async move {
            let (n, lag): (i64, Option<f64>) = sqlx::query_as(&format!(
                "WITH o AS (SELECT count(*) AS n, min(occurred_at) AS oldest FROM event_outbox WHERE sent_at IS NULL), \
                      e AS (SELECT count(*) AS n, min(e.occurred_at) AS oldest FROM job_events e WHERE {UNPUBLISHED}) \
                 SELECT o.n + e.n, extract(epoch FROM now() - least(o.oldest, e.oldest))::float8 FROM o, e"
            ))
            .fetch_one(&self.pool)
            .await?;
            Ok(OutboxPending {
                events: n as u64,
                lag: std::time::Duration::from_secs_f64(lag.unwrap_or(0.0).max(0.0)),
            })
        })
        .await
    }
}

/// What [`Store::outbox_pending`] reports.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct OutboxPending {
    /// Events not yet acknowledged by Kafka.
    pub events: u64,
    /// Age of the oldest of them (0 when none).
    pub lag: std::time::Duration,
}

/// How job history and outbox agree (the "every transition has exactly
/// one event" property the fault-injection suite checks). Since schema v4
/// a job event is its own outbox entry (ADR 0012), so what can go wrong is
/// in the rows from before it and in `event_outbox` copies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventAudit {
    /// Rows in `job_events`.
    pub transitions: u64,
    /// Transitions that will never be published: a row from before
    /// schema v4 (no `txid`) with no outbox row of the same event id (not
    /// counting rows already pruned after delivery).
    pub missing: u64,
    /// Event ids that would be published twice: in two outbox rows, or in
    /// an outbox row and a `job_events` row published by its `txid`.
    pub duplicated: u64,
    /// Job outbox rows with a topic (not copies of a deleted job's
    /// events) whose event id is in no `job_events` row.
    pub orphans: u64,
}

impl Store {
    /// Compare `job_events` with the job events in `event_outbox`.
    pub async fn audit_events(&self) -> Result<EventAudit> {
        self.run("audit_events", || async move {
            let (transitions, missing, duplicated, orphans): (i64, i64, i64, i64) = sqlx::query_as(
                "SELECT (SELECT count(*) FROM job_events), \
                 (SELECT count(*) FROM job_events e WHERE e.txid IS NULL AND NOT EXISTS \
                    (SELECT 1 FROM event_outbox o WHERE o.event_id = e.event_id)), \
                 (SELECT count(*) FROM (SELECT event_id FROM event_outbox GROUP BY event_id HAVING count(*) > 1) d) \
                 + (SELECT count(*) FROM job_events e WHERE e.txid IS NOT NULL AND EXISTS \
                    (SELECT 1 FROM event_outbox o WHERE o.event_id = e.event_id)), \
                 (SELECT count(*) FROM event_outbox o WHERE o.job_id IS NOT NULL AND o.topic IS NOT NULL \
                    AND NOT EXISTS (SELECT 1 FROM job_events e WHERE e.event_id = o.event_id))",
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jq_160_a_held_event_holds_every_later_event_of_its_job() {
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        // In id order: a@10, b@11, a@12 (its predecessor is beyond), b@13.
        let rows = [(a, 10, false), (b, 11, false), (a, 12, true), (b, 13, false)];
        assert_eq!(settle_window(&rows, 20), 12);
        // a@15 is beyond the window (14), so a@12 after it waits; b@13 is
        // then beyond too, but b has nothing after it.
        let rows = [(a, 15, false), (b, 11, false), (a, 12, false), (b, 13, false)];
        assert_eq!(settle_window(&rows, 14), 12);
        // A chain: a@15 holds a@12 (window 12), so b@13 is beyond it and
        // holds b@11 after it (window 11).
        let rows = [(a, 15, false), (b, 13, false), (a, 12, false), (b, 11, false)];
        assert_eq!(settle_window(&rows, 14), 11, "b@13 >= 12 holds b@11 after it");
        // Nothing held: the window stays.
        let rows = [(a, 10, false), (b, 11, false)];
        assert_eq!(settle_window(&rows, 14), 14);
    }
}
