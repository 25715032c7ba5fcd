//! Periodic schedules (JQ-124, ADR 0019): stored definitions, and the
//! firing that turns due occurrences into jobs.
//!
//! No leader: any server's schedule service claims due rows with `FOR
//! UPDATE SKIP LOCKED`, and submits each occurrence's job in the same
//! transaction that moves `next_at` on, under the idempotency key
//! `schedule:<name>:<occurrence>`. A crash before the commit leaves both
//! undone (the next claimer fires the occurrence); a firing that somehow
//! runs twice finds the key and submits nothing.

use std::time::Duration;

use chrono::{DateTime, Utc};
use jq_core::cron::{CronSpec, Missed, Overlap, ScheduleDef, SchedulePatch, ScheduleRequest};
use uuid::Uuid;

use crate::queues::unique_violation;
use crate::{Result, Store, StoreError};

/// A stored schedule and where it stands.
#[derive(Debug, Clone)]
pub struct ScheduleRecord {
    pub def: ScheduleDef,
    pub paused: bool,
    /// The next occurrence; None while paused past its end, or for a
    /// pattern with no further occurrence.
    pub next_at: Option<DateTime<Utc>>,
    pub last_fired_at: Option<DateTime<Utc>>,
    pub last_job_id: Option<Uuid>,
    pub fires: u64,
    pub skipped: u64,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What one firing of one schedule did.
#[derive(Debug, Clone, PartialEq)]
pub struct Fired {
    pub schedule: String,
    pub queue: String,
    /// The occurrences submitted, with their jobs.
    pub jobs: Vec<(DateTime<Utc>, Uuid)>,
    /// Due occurrences not submitted: missed (policy `skip` or `once`),
    /// beyond the catch-up cap, overlapping (`overlap skip`), or whose
    /// queue is gone.
    pub skipped: u64,
    /// How late the oldest due occurrence was.
    pub lag: Duration,
}

const COLUMNS: &str = "name, cron, timezone, queue, priority, max_retries, ttl_s, payload, missed, overlap, \
    paused, next_at, last_fired_at, last_job_id, fires, skipped, last_error, created_at, updated_at";

#[derive(sqlx::FromRow)]
struct ScheduleRow {
    name: String,
    cron: String,
    timezone: String,
    queue: String,
    priority: i16,
    max_retries: Option<i32>,
    ttl_s: Option<i32>,
    payload: Vec<u8>,
    missed: String,
    overlap: String,
    paused: bool,
    next_at: Option<DateTime<Utc>>,
    last_fired_at: Option<DateTime<Utc>>,
    last_job_id: Option<Uuid>,
    fires: i64,
    skipped: i64,
    last_error: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl ScheduleRow {
    /// Rows are written only from checked definitions; one that no longer
    /// checks (a time zone dropped from a later tz database) is an error
    /// to report, not a panic.
    fn record(self) -> std::result::Result<ScheduleRecord, jq_core::ValidationError> {
        let spec = CronSpec::parse(&self.cron, &self.timezone)?;
        Ok(ScheduleRecord {
            def: ScheduleDef {
                spec,
                priority: self.priority.clamp(0, 9) as u8,
                max_retries: self.max_retries.map(|m| m.max(0) as u32),
                ttl: self.ttl_s.map(|t| Duration::from_secs(t.max(1) as u64)),
                missed: Missed::parse(&self.missed)?,
                overlap: Overlap::parse(&self.overlap)?,
                name: self.name,
                queue: self.queue,
                payload: self.payload,
            },
            paused: self.paused,
            next_at: self.next_at,
            last_fired_at: self.last_fired_at,
            last_job_id: self.last_job_id,
            fires: self.fires.max(0) as u64,
            skipped: self.skipped.max(0) as u64,
            last_error: self.last_error,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

/// A schedule's name is checked as a queue's is, before any SQL sees it
/// (JQ-105: a NUL would otherwise reach PostgreSQL).
fn check_name(name: &str) -> Result<()> {
    Ok(jq_core::cron::validate_schedule_name(name)?)
}

/// The jobs of a schedule's occurrences (`$1` ids, `$2` occurrences, `$3`
/// keys), with their `job.submitted` events (reason SCHEDULED, the
/// schedule's name as detail) and the dispatchers' wake-up. The queue is
/// joined, not foreign-keyed, so a deleted queue inserts nothing rather
/// than failing the firing of every other schedule.
static FIRE_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    FIRE_SQL_TEMPLATE.replace("$ANNOUNCE", &crate::marks::announce_sql("ins", "$10"))
});

/// [`FIRE_SQL`] before the wake-up's payload is filled in (ADR 0021).
const FIRE_SQL_TEMPLATE: &str = r#"
WITH input AS (
    SELECT * FROM unnest($1::uuid[], $2::timestamptz[], $3::text[]) AS t(id, at, key)
), ins AS (
    INSERT INTO jobs (id, queue, priority, payload, max_retries, idempotency_key, not_before, expires_at, scheduled_at)
    SELECT i.id, q.name, $5, $6, coalesce($7, q.max_retries), i.key, now(),
           now() + coalesce($8::bigint, q.default_ttl_s::bigint) * interval '1 second', i.at
    FROM input i JOIN queues q ON q.name = $4
    ON CONFLICT DO NOTHING
    RETURNING id, queue, scheduled_at, priority, created_at, seq, not_before
), ev AS (
    INSERT INTO job_events (event_id, job_id, queue, from_status, to_status, reason, attempt, detail)
    SELECT gen_random_uuid(), id, queue, NULL, 'PENDING', 'SCHEDULED', 0, $9 FROM ins
), wake AS (
    SELECT pg_notify('jq_wake', $ANNOUNCE) FROM (SELECT 1 FROM ins LIMIT 1) one
)
SELECT scheduled_at, id FROM ins WHERE (SELECT count(*) FROM wake) >= 0 ORDER BY scheduled_at"#;

impl Store {
    /// JQ-124. `ScheduleExists` when the name is taken, `QueueNotFound`
    /// when its queue does not exist.
    pub async fn create_schedule(&self, req: ScheduleRequest, max_payload: usize) -> Result<ScheduleRecord> {
        let def = req.validate(max_payload)?;
        let def = &def;
        self.run("create_schedule", || async move {
            let mut tx = self.pool.begin().await?;
            self.queue_exists(&mut tx, &def.queue).await?;
            let now = db_now(&mut tx).await?;
            let sql = format!(
                "INSERT INTO schedules (name, cron, timezone, queue, priority, max_retries, ttl_s, payload, \
                 missed, overlap, next_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING {COLUMNS}"
            );
            let row = bind_def(sqlx::query_as(&sql), def)
                .bind(def.spec.next_after(now))
                .fetch_one(&mut *tx)
                .await;
            let row = match row {
                Ok(r) => r,
                Err(e) if unique_violation(&e) => return Err(StoreError::ScheduleExists(def.name.clone())),
                Err(e) => return Err(e.into()),
            };
            tx.commit().await?;
            Ok(row.record()?)
        })
        .await
    }

    pub async fn get_schedule(&self, name: &str) -> Result<ScheduleRecord> {
        check_name(name)?;
        self.run("get_schedule", || async move {
            let row: Option<ScheduleRow> =
                sqlx::query_as(&format!("SELECT {COLUMNS} FROM schedules WHERE name = $1"))
                    .bind(name)
                    .fetch_optional(&self.pool)
                    .await?;
            Ok(row
                .ok_or_else(|| StoreError::ScheduleNotFound(name.to_string()))?
                .record()?)
        })
        .await
    }

    /// Every schedule, by name.
    pub async fn list_schedules(&self) -> Result<Vec<ScheduleRecord>> {
        self.run("list_schedules", || async move {
            let rows: Vec<ScheduleRow> =
                sqlx::query_as(&format!("SELECT {COLUMNS} FROM schedules ORDER BY name"))
                    .fetch_all(&self.pool)
                    .await?;
            Ok(rows
                .into_iter()
                .map(ScheduleRow::record)
                .collect::<std::result::Result<_, _>>()?)
        })
        .await
    }

    /// Change a schedule; a new pattern or zone computes `next_at` afresh
    /// from now.
    pub async fn update_schedule(
        &self,
        name: &str,
        patch: &SchedulePatch,
        max_payload: usize,
    ) -> Result<ScheduleRecord> {
        check_name(name)?;
        self.run("update_schedule", || async move {
            let mut tx = self.pool.begin().await?;
            let current = self.lock_schedule(&mut tx, name).await?;
            let def = patch.apply(current.def.request()).validate(max_payload)?;
            self.queue_exists(&mut tx, &def.queue).await?;
            let now = db_now(&mut tx).await?;
            let moved = def.spec.expr() != current.def.spec.expr() || def.spec.timezone() != current.def.spec.timezone();
            let next_at = if moved { def.spec.next_after(now) } else { current.next_at };
            let sql = format!(
                "UPDATE schedules SET name = $1, cron = $2, timezone = $3, queue = $4, priority = $5, max_retries = $6, \
                 ttl_s = $7, payload = $8, missed = $9, overlap = $10, next_at = $11, updated_at = now() \
                 WHERE name = $1 RETURNING {COLUMNS}"
            );
            let row = bind_def(sqlx::query_as(&sql), &def).bind(next_at).fetch_one(&mut *tx).await?;
            tx.commit().await?;
            Ok(row.record()?)
        })
        .await
    }

    /// Pause (nothing fires, nothing is lost but the occurrences while
    /// paused) or resume (from the next occurrence after now: a pause is
    /// not a missed run to catch up).
    pub async fn set_schedule_paused(&self, name: &str, paused: bool) -> Result<ScheduleRecord> {
        check_name(name)?;
        self.run("pause_schedule", || async move {
            let mut tx = self.pool.begin().await?;
            let current = self.lock_schedule(&mut tx, name).await?;
            let now = db_now(&mut tx).await?;
            let next_at = if paused || !current.paused {
                current.next_at
            } else {
                current.def.spec.next_after(now)
            };
            let row: ScheduleRow = sqlx::query_as(&format!(
                "UPDATE schedules SET paused = $2, next_at = $3, updated_at = now() WHERE name = $1 RETURNING {COLUMNS}"
            ))
            .bind(name)
            .bind(paused)
            .bind(next_at)
            .fetch_one(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(row.record()?)
        })
        .await
    }

    /// Delete a schedule. A firing that holds it finishes first (the row
    /// lock); none starts after. Its jobs stay.
    pub async fn delete_schedule(&self, name: &str) -> Result<()> {
        check_name(name)?;
        self.run("delete_schedule", || async move {
            let n = sqlx::query("DELETE FROM schedules WHERE name = $1")
                .bind(name)
                .execute(&self.pool)
                .await?
                .rows_affected();
            if n == 0 {
                return Err(StoreError::ScheduleNotFound(name.to_string()));
            }
            Ok(())
        })
        .await
    }

    /// Fire one occurrence now, off the pattern (an operator's "run it
    /// now"): its occurrence is the database's now; `next_at` stays.
    pub async fn trigger_schedule(&self, name: &str) -> Result<(DateTime<Utc>, Uuid)> {
        check_name(name)?;
        self.run("trigger_schedule", || async move {
            let mut tx = self.pool.begin().await?;
            let current = self.lock_schedule(&mut tx, name).await?;
            let now = db_now(&mut tx).await?;
            let jobs = self.insert_occurrences(&mut tx, &current.def, &[now]).await?;
            let Some(&(at, id)) = jobs.first() else {
                return Err(StoreError::QueueNotFound(current.def.queue.clone()));
            };
            sqlx::query(
                "UPDATE schedules SET last_fired_at = $2, last_job_id = $3, fires = fires + 1, last_error = NULL, \
                 updated_at = now() WHERE name = $1",
            )
            .bind(name)
            .bind(at)
            .bind(id)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            self.committed_submits([current.def.queue.as_str()]);
            Ok((at, id))
        })
        .await
    }

    /// Fire up to `limit` due schedules (JQ-124), each in the transaction
    /// that claimed it: the occurrences due between its `next_at` and the
    /// database's now, as its missed and overlap policies say, then
    /// `next_at` moved past now. Schedules another server is firing are
    /// skipped (SKIP LOCKED).
    pub async fn fire_due_schedules(&self, limit: u32) -> Result<Vec<Fired>> {
        self.fire_due_schedules_at(limit, None).await
    }

    /// [`Self::fire_due_schedules`] as if the clock read `clock` (tests of
    /// time-dependent behaviour inject theirs); `None` is the database's.
    pub async fn fire_due_schedules_at(
        &self,
        limit: u32,
        clock: Option<DateTime<Utc>>,
    ) -> Result<Vec<Fired>> {
        self.run("fire_schedules", || async move {
            let mut tx = self.pool.begin().await?;
            let rows: Vec<ScheduleRow> = sqlx::query_as(&format!(
                "SELECT {COLUMNS} FROM schedules WHERE NOT paused AND next_at <= coalesce($2, now()) \
                 ORDER BY next_at LIMIT $1 FOR UPDATE SKIP LOCKED"
            ))
            .bind(i64::from(limit))
            .bind(clock)
            .fetch_all(&mut *tx)
            .await?;
            if rows.is_empty() {
                tx.rollback().await?;
                return Ok(vec![]);
            }
            let now = match clock {
                Some(t) => t,
                None => db_now(&mut tx).await?,
            };
            let mut fired = vec![];
            for row in rows {
                let name = row.name.clone();
                let from = row.next_at.unwrap_or(now);
                let s = match row.record() {
                    Ok(s) => s,
                    Err(e) => {
                        // Not fireable: stop it and say why, rather than
                        // failing every firing after it.
                        self.schedule_error(&mut tx, &name, None, &e.to_string()).await?;
                        continue;
                    }
                };
                let due = s.def.spec.due(from, now, s.def.missed);
                let mut fire = due.fire.clone();
                let mut skipped = due.skipped as u64;
                if s.def.overlap == Overlap::Skip && !fire.is_empty() {
                    // At most one, and none while the last one's job runs.
                    let busy = match s.last_job_id {
                        None => false,
                        Some(id) => self.job_unfinished(&mut tx, id).await?,
                    };
                    let keep = usize::from(!busy);
                    skipped += (fire.len() - keep.min(fire.len())) as u64;
                    fire = fire.split_off(fire.len() - keep.min(fire.len()));
                }
                let jobs = self.insert_occurrences(&mut tx, &s.def, &fire).await?;
                let error = (jobs.len() < fire.len() && !self.queue_present(&mut tx, &s.def.queue).await?)
                    .then(|| format!("queue {} does not exist; occurrences are skipped", s.def.queue));
                if error.is_some() {
                    skipped += fire.len() as u64;
                }
                let last = jobs.last().copied();
                sqlx::query(
                    "UPDATE schedules SET next_at = $2, fires = fires + $3, skipped = skipped + $4, \
                     last_fired_at = coalesce($5, last_fired_at), last_job_id = coalesce($6, last_job_id), \
                     last_error = $7, updated_at = now() WHERE name = $1",
                )
                .bind(&name)
                .bind(due.next_at)
                .bind(jobs.len() as i64)
                .bind(skipped as i64)
                .bind(last.map(|l| l.0))
                .bind(last.map(|l| l.1))
                .bind(&error)
                .execute(&mut *tx)
                .await?;
                fired.push(Fired {
                    schedule: name,
                    queue: s.def.queue.clone(),
                    jobs,
                    skipped,
                    lag: (now - from).to_std().unwrap_or_default(),
                });
            }
            tx.commit().await?;
            // Counted as the submits they are (jq_job_total).
            self.committed_submits(
                fired
                    .iter()
                    .flat_map(|f| std::iter::repeat_n(f.queue.as_str(), f.jobs.len())),
            );
            Ok(fired)
        })
        .await
    }

    /// How far behind the most overdue schedule is (0 when none is due):
    /// `jq_schedule_lag_seconds`.
    pub async fn schedule_lag(&self) -> Result<Duration> {
        self.run("schedule_lag", || async move {
            let lag: Option<f64> = sqlx::query_scalar(
                "SELECT extract(epoch FROM now() - min(next_at))::float8 FROM schedules \
                 WHERE NOT paused AND next_at <= now()",
            )
            .fetch_one(&self.pool)
            .await?;
            Ok(Duration::from_secs_f64(lag.unwrap_or(0.0).max(0.0)))
        })
        .await
    }

    async fn lock_schedule(&self, tx: &mut sqlx::PgConnection, name: &str) -> Result<ScheduleRecord> {
        let row: Option<ScheduleRow> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM schedules WHERE name = $1 FOR UPDATE"
        ))
        .bind(name)
        .fetch_optional(&mut *tx)
        .await?;
        Ok(row
            .ok_or_else(|| StoreError::ScheduleNotFound(name.to_string()))?
            .record()?)
    }

    async fn queue_present(&self, tx: &mut sqlx::PgConnection, queue: &str) -> Result<bool> {
        Ok(
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM queues WHERE name = $1)")
                .bind(queue)
                .fetch_one(&mut *tx)
                .await?,
        )
    }

    async fn queue_exists(&self, tx: &mut sqlx::PgConnection, queue: &str) -> Result<()> {
        if self.queue_present(tx, queue).await? {
            Ok(())
        } else {
            Err(StoreError::QueueNotFound(queue.to_string()))
        }
    }

    async fn job_unfinished(&self, tx: &mut sqlx::PgConnection, id: Uuid) -> Result<bool> {
        Ok(sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM jobs WHERE id = $1 AND status NOT IN ('DONE', 'DEAD_LETTERED'))",
        )
        .bind(id)
        .fetch_one(&mut *tx)
        .await?)
    }

    async fn schedule_error(
        &self,
        tx: &mut sqlx::PgConnection,
        name: &str,
        next_at: Option<DateTime<Utc>>,
        error: &str,
    ) -> Result<()> {
        sqlx::query("UPDATE schedules SET next_at = $2, last_error = $3, updated_at = now() WHERE name = $1")
            .bind(name)
            .bind(next_at)
            .bind(error)
            .execute(&mut *tx)
            .await?;
        Ok(())
    }

    /// Submit the jobs of `occurrences` (see [`FIRE_SQL`]); an occurrence
    /// whose job exists already (its key) gives none.
    async fn insert_occurrences(
        &self,
        tx: &mut sqlx::PgConnection,
        def: &ScheduleDef,
        occurrences: &[DateTime<Utc>],
    ) -> Result<Vec<(DateTime<Utc>, Uuid)>> {
        if occurrences.is_empty() {
            return Ok(vec![]);
        }
        let ids: Vec<Uuid> = occurrences.iter().map(|_| Uuid::new_v4()).collect();
        let keys: Vec<String> = occurrences.iter().map(|o| def.occurrence_key(*o)).collect();
        Ok(sqlx::query_as(FIRE_SQL.as_str())
            .bind(&ids)
            .bind(occurrences)
            .bind(&keys)
            .bind(&def.queue)
            .bind(i16::from(def.priority))
            .bind(&def.payload)
            .bind(def.max_retries.map(|m| m as i32))
            .bind(def.ttl.map(|t| t.as_secs() as i64))
            .bind(&def.name)
            .bind(&*self.wake_tag)
            .fetch_all(&mut *tx)
            .await?)
    }
}

type RowQuery<'q> = sqlx::query::QueryAs<'q, sqlx::Postgres, ScheduleRow, sqlx::postgres::PgArguments>;

/// Bind `$1..$10`: the definition's columns in [`COLUMNS`] order.
fn bind_def<'q>(q: RowQuery<'q>, d: &'q ScheduleDef) -> RowQuery<'q> {
    q.bind(&d.name)
        .bind(d.spec.expr())
        .bind(d.spec.timezone())
        .bind(&d.queue)
        .bind(i16::from(d.priority))
        .bind(d.max_retries.map(|m| m as i32))
        .bind(d.ttl.map(|t| t.as_secs().min(i32::MAX as u64) as i32))
        .bind(&d.payload)
        .bind(d.missed.as_str())
        .bind(d.overlap.as_str())
}

async fn db_now(tx: &mut sqlx::PgConnection) -> Result<DateTime<Utc>> {
    Ok(sqlx::query_scalar("SELECT now()").fetch_one(&mut *tx).await?)
}
