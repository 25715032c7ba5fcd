//! Queues (SPEC §6): create, update, delete, pause/resume, stats.

use std::time::Duration;

use jq_core::QueueSettings;
use jq_core::records::{Queue, QueueStats};
use jq_core::submit::{Retention, validate_queue_name};
use jq_core::weights::PriorityWeights;

use crate::rows::{QUEUE_COLUMNS, QueueRow, retention_col, status};
use crate::{Result, Store, StoreError};

/// Changes to a queue's settings; `None` keeps the current value, and for
/// the optional settings `Some(None)` clears them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueuePatch {
    pub max_retries: Option<u32>,
    pub default_ttl: Option<Option<Duration>>,
    pub default_timeout: Option<Option<Duration>>,
    pub backoff_base: Option<Duration>,
    pub backoff_max: Option<Duration>,
    pub concurrency_limit: Option<Option<u32>>,
    pub rate_limit_per_second: Option<Option<f64>>,
    pub retain_done: Option<Retention>,
    pub retain_dead: Option<Retention>,
    pub priority_weights: Option<Option<PriorityWeights>>,
}

impl QueuePatch {
    pub fn apply(&self, s: &QueueSettings) -> QueueSettings {
        let mut s = s.clone();
        if let Some(v) = self.max_retries {
            s.max_retries = v;
        }
        if let Some(v) = self.default_ttl {
            s.default_ttl = v;
        }
        if let Some(v) = self.default_timeout {
            s.default_timeout = v;
        }
        if let Some(v) = self.backoff_base {
            s.backoff.base = v;
        }
        if let Some(v) = self.backoff_max {
            s.backoff.max = v;
        }
        if let Some(v) = self.concurrency_limit {
            s.concurrency_limit = v;
        }
        if let Some(v) = self.rate_limit_per_second {
            s.rate_limit_per_second = v;
        }
        if let Some(v) = self.retain_done {
            s.retain_done = v;
        }
        if let Some(v) = self.retain_dead {
            s.retain_dead = v;
        }
        if let Some(v) = &self.priority_weights {
            s.priority_weights = v.clone();
        }
        s
    }
}

fn secs_col(d: Option<Duration>) -> Option<i32> {
    d.map(|d| i32::try_from(d.as_secs()).unwrap_or(i32::MAX))
}

fn ms_col(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

type QueueQuery<'q> = sqlx::query::QueryAs<'q, sqlx::Postgres, QueueRow, sqlx::postgres::PgArguments>;

/// Bind the ten settings columns, in the order both statements use
/// ($2..$11 after the name).
fn bind_settings<'q>(q: QueueQuery<'q>, s: &QueueSettings) -> QueueQuery<'q> {
    q.bind(s.max_retries as i32)
        .bind(secs_col(s.default_ttl))
        .bind(secs_col(s.default_timeout))
        .bind(ms_col(s.backoff.base))
        .bind(ms_col(s.backoff.max))
        .bind(s.concurrency_limit.map(|c| c as i32))
        .bind(s.rate_limit_per_second)
        .bind(retention_col(s.retain_done))
        .bind(retention_col(s.retain_dead))
        .bind(s.priority_weights.as_ref().map(|w| w.to_string()))
}

/// A unique constraint refused the insert (a name already taken).
pub(crate) fn unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.code().as_deref() == Some("23505"))
}

impl Store {
    /// FR-025. `QueueExists` when taken.
    pub async fn create_queue(&self, name: &str, settings: &QueueSettings) -> Result<Queue> {
        validate_queue_name(name)?;
        settings.validate()?;
        self.run("create_queue", || async move {
            let sql = format!(
                "INSERT INTO queues (name, max_retries, default_ttl_s, default_timeout_s, backoff_base_ms, \
                 backoff_max_ms, concurrency_limit, rate_limit_per_s, retain_done_s, retain_dead_s, priority_weights) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
                 RETURNING {QUEUE_COLUMNS}"
            );
            let row = bind_settings(sqlx::query_as(&sql).bind(name), settings)
                .fetch_one(&self.pool)
                .await;
            match row {
                Ok(r) => Ok(r.into()),
                Err(e) if unique_violation(&e) => Err(StoreError::QueueExists(name.to_string())),
                Err(e) => Err(e.into()),
            }
        })
        .await
    }

    /// Create `name` with default settings unless it exists (FR-027).
    pub async fn ensure_queue(&self, name: &str) -> Result<()> {
        validate_queue_name(name)?;
        self.run("ensure_queue", || async move {
            sqlx::query("INSERT INTO queues (name) VALUES ($1) ON CONFLICT (name) DO NOTHING")
                .bind(name)
                .execute(&self.pool)
                .await?;
            Ok(())
        })
        .await
    }

    pub async fn update_queue(&self, name: &str, patch: &QueuePatch) -> Result<Queue> {
        validate_queue_name(name)?;
        self.run("update_queue", || async move {
            let mut tx = self.pool.begin().await?;
            let body = async {
                let row: Option<QueueRow> = sqlx::query_as(&format!(
                    "SELECT {QUEUE_COLUMNS} FROM queues WHERE name = $1 FOR NO KEY UPDATE"
                ))
                .bind(name)
                .fetch_optional(&mut *tx)
                .await?;
                let current: Queue = row
                    .ok_or_else(|| StoreError::QueueNotFound(name.to_string()))?
                    .into();
                let s = patch.apply(&current.settings);
                s.validate()?;
                let sql = format!(
                    "UPDATE queues SET max_retries = $2, default_ttl_s = $3, default_timeout_s = $4, \
                     backoff_base_ms = $5, backoff_max_ms = $6, concurrency_limit = $7, rate_limit_per_s = $8, \
                     retain_done_s = $9, retain_dead_s = $10, priority_weights = $11, \
                     priority_credit = CASE WHEN priority_weights IS NOT DISTINCT FROM $11 THEN priority_credit END, \
                     updated_at = now() WHERE name = $1 RETURNING {QUEUE_COLUMNS}"
                );
                let row: QueueRow = bind_settings(sqlx::query_as(&sql).bind(name), &s)
                    .fetch_one(&mut *tx)
                    .await?;
                Ok(row.into())
            }
            .await;
            crate::finish(tx, body).await
        })
        .await
    }

    /// FR-026: only an empty queue unless `force`, which deletes its jobs
    /// (and their history) too. Returns how many jobs went with it.
    pub async fn delete_queue(&self, name: &str, force: bool) -> Result<u64> {
        validate_queue_name(name)?;
        self.run("delete_queue", || async move {
            let mut tx = self.pool.begin().await?;
            let body = async {
                // FOR UPDATE waits for in-flight submits (they hold KEY SHARE)
                // and keeps new ones out until we are done.
                let found: Option<String> =
                    sqlx::query_scalar("SELECT name FROM queues WHERE name = $1 FOR UPDATE")
                        .bind(name)
                        .fetch_optional(&mut *tx)
                        .await?;
                if found.is_none() {
                    return Err(StoreError::QueueNotFound(name.to_string()));
                }
                let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE queue = $1")
                    .bind(name)
                    .fetch_one(&mut *tx)
                    .await?;
                if jobs > 0 && !force {
                    return Err(StoreError::QueueNotEmpty {
                        name: name.to_string(),
                        jobs: jobs as u64,
                    });
                }
                // Jobs go by cascade; their history explicitly (ADR 0008),
                // keeping what the relay has not yet published (ADR 0012).
                sqlx::query(&crate::outbox::keep_unpublished("e.queue = $1"))
                    .bind(name)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("DELETE FROM job_events WHERE queue = $1")
                    .bind(name)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("DELETE FROM queues WHERE name = $1")
                    .bind(name)
                    .execute(&mut *tx)
                    .await?;
                Ok(jobs as u64)
            }
            .await;
            crate::finish(tx, body).await
        })
        .await
    }

    pub async fn get_queue(&self, name: &str) -> Result<Queue> {
        validate_queue_name(name)?;
        self.run("get_queue", || async move {
            let row: Option<QueueRow> =
                sqlx::query_as(&format!("SELECT {QUEUE_COLUMNS} FROM queues WHERE name = $1"))
                    .bind(name)
                    .fetch_optional(&self.pool)
                    .await?;
            row.map(Queue::from)
                .ok_or_else(|| StoreError::QueueNotFound(name.to_string()))
        })
        .await
    }

    pub(crate) async fn require_queue(&self, name: &str) -> Result<()> {
        let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM queues WHERE name = $1)")
            .bind(name)
            .fetch_one(&self.pool)
            .await?;
        if exists {
            Ok(())
        } else {
            Err(StoreError::QueueNotFound(name.to_string()))
        }
    }

    pub async fn list_queues(&self) -> Result<Vec<Queue>> {
        self.run("list_queues", || async move {
            let rows: Vec<QueueRow> =
                sqlx::query_as(&format!("SELECT {QUEUE_COLUMNS} FROM queues ORDER BY name"))
                    .fetch_all(&self.pool)
                    .await?;
            Ok(rows.into_iter().map(Queue::from).collect())
        })
        .await
    }

    /// JQ-122: a paused queue dispatches nothing and loses nothing.
    pub async fn pause_queue(&self, name: &str) -> Result<Queue> {
        self.set_paused("pause_queue", name, true).await
    }

    /// JQ-122: the queue dispatches again, in the order it would have.
    pub async fn resume_queue(&self, name: &str) -> Result<Queue> {
        self.set_paused("resume_queue", name, false).await
    }

    async fn set_paused(&self, query_name: &'static str, name: &str, paused: bool) -> Result<Queue> {
        validate_queue_name(name)?;
        self.run(query_name, || async move {
            let row: Option<QueueRow> = sqlx::query_as(&format!(
                "UPDATE queues SET paused = $2, updated_at = now() WHERE name = $1 RETURNING {QUEUE_COLUMNS}"
            ))
            .bind(name)
            .bind(paused)
            .fetch_optional(&self.pool)
            .await?;
            row.map(Queue::from)
                .ok_or_else(|| StoreError::QueueNotFound(name.to_string()))
        })
        .await
    }

    /// FR-028: depth by status, total processed, mean processing time,
    /// error rate (failed attempts / finished attempts).
    pub async fn queue_stats(&self, name: &str) -> Result<QueueStats> {
        validate_queue_name(name)?;
        self.run("queue_stats", || async move {
            self.require_queue(name).await?;
            let mut st = QueueStats {
                queue: name.to_string(),
                ..Default::default()
            };
            let rows: Vec<(String, i64, i64, Option<f64>)> = sqlx::query_as(
                "SELECT status::text, count(*), \
                        count(*) FILTER (WHERE status = 'PENDING' AND not_before > now()), \
                        avg(extract(epoch FROM completed_at - started_at)::float8) FILTER (WHERE status = 'DONE') \
                 FROM jobs WHERE queue = $1 GROUP BY status",
            )
            .bind(name)
            .fetch_all(&self.pool)
            .await?;
            for (s, n, scheduled, avg) in rows {
                let n = n as u64;
                match status(&s) {
                    jq_core::JobStatus::Pending => {
                        st.pending = n;
                        st.scheduled = scheduled as u64;
                    }
                    jq_core::JobStatus::Assigned => st.assigned = n,
                    jq_core::JobStatus::Running => st.running = n,
                    jq_core::JobStatus::Done => {
                        st.done = n;
                        st.avg_processing_seconds = avg.unwrap_or(0.0);
                    }
                    jq_core::JobStatus::Failed => st.failed = n,
                    jq_core::JobStatus::DeadLettered => st.dead_lettered = n,
                }
            }
            st.total_processed = st.done + st.dead_lettered;
            let (failed, finished): (i64, i64) = sqlx::query_as(
                "SELECT count(*) FILTER (WHERE to_status IN ('FAILED', 'DEAD_LETTERED')), count(*) \
                 FROM job_events WHERE queue = $1 AND from_status = 'RUNNING'",
            )
            .bind(name)
            .fetch_one(&self.pool)
            .await?;
            st.error_rate = if finished > 0 { failed as f64 / finished as f64 } else { 0.0 };
            Ok(st)
        })
        .await
    }
}
