//! Maintenance passes run by every server replica (SPEC FR-004, FR-016,
//! FR-020, JQ-112). Each selects candidates by database time, decides each
//! job with `jq_core::transition`, and writes guarded by status and
//! attempt — so replicas running the same pass at once change each job at
//! most once.

use std::time::Duration;

use jq_core::Command;

use crate::executor::{Order, Row, applied_ids};
use crate::rows::{JOB_COLUMNS, JobRow};
use crate::{Result, Store};

/// What a reaper pass changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReapReport {
    /// Workers marked OFFLINE by this pass.
    pub workers_offline: Vec<String>,
    /// Jobs this pass moved.
    pub jobs: Vec<uuid::Uuid>,
}

use crate::rows::Candidate;

/// Expired PENDING jobs, through `jobs_expiry_due` in `expires_at` order
/// (ADR 0021). Every phase test says `phase < 1` so that no other partial
/// index can serve it: with `phase = 0` the planner walked the claim index
/// (it counts no dead entry), and under a pinned horizon the TTL reaper
/// went 0.4 → 104 ms in 10 minutes with no TTL job at all. The ids come
/// first (an init plan), the rows by primary key.
const EXPIRED: &str = "j.id = ANY(ARRAY(SELECT id FROM jobs WHERE phase < 1 AND expires_at IS NOT NULL \
     AND expires_at <= now() ORDER BY expires_at LIMIT 1000)) AND j.status = 'PENDING' AND j.phase < 1";

/// `EXPLAIN` of the TTL reaper's candidates, for tests that run it where
/// they choose (in a transaction that dropped an index, say).
pub fn explain_reap_expired_sql(analyze: bool) -> String {
    let how = if analyze { "(ANALYZE, BUFFERS) " } else { "" };
    format!("EXPLAIN {how}SELECT j.id FROM jobs j JOIN queues q ON q.name = j.queue WHERE {EXPIRED}")
}

/// Most jobs one pass handles; the next pass takes the rest.
const REAP_BATCH: i64 = 1000;

/// How far before the timeout the assignment reaper's floor stays: an
/// assignment's `assigned_at` is its claim's start, and the claim commits
/// within this.
const FLOOR_MARGIN: Duration = Duration::from_secs(30);

impl Store {
    async fn reap_with(
        &self,
        pass: &'static str,
        filter: &str,
        binds: &[f64],
        cmd: impl Fn(&JobRow) -> Command,
    ) -> Result<Vec<uuid::Uuid>> {
        Ok(self.reap_counted(pass, filter, binds, cmd).await?.0)
    }

    /// The in-flight jobs of `workers`, through their in-flight index.
    async fn reap_by_workers(
        &self,
        workers: &[String],
        cmd: impl Fn(&JobRow) -> Command,
    ) -> Result<Vec<uuid::Uuid>> {
        let sql = format!(
            "SELECT {JOB_COLUMNS}, q.backoff_base_ms, q.backoff_max_ms FROM jobs j JOIN queues q ON q.name = j.queue \
             WHERE j.worker_id = ANY($1) AND j.status IN ('ASSIGNED', 'RUNNING') AND j.phase = 1 LIMIT {REAP_BATCH}"
        );
        let rows: Vec<Candidate> = sqlx::query_as(&sql).bind(workers).fetch_all(&self.pool).await?;
        let work = rows
            .iter()
            .map(|c| (Row::from(c), Order::new(cmd(&c.job))))
            .collect();
        Ok(applied_ids("reap_workers", &self.execute(work).await?))
    }

    /// [`Store::reap_with`], and whether it saw every candidate (fewer
    /// than a batch).
    async fn reap_counted(
        &self,
        pass: &'static str,
        filter: &str,
        binds: &[f64],
        cmd: impl Fn(&JobRow) -> Command,
    ) -> Result<(Vec<uuid::Uuid>, bool)> {
        let sql = format!(
            "SELECT {JOB_COLUMNS}, q.backoff_base_ms, q.backoff_max_ms FROM jobs j JOIN queues q ON q.name = j.queue \
             WHERE {filter} LIMIT {REAP_BATCH}"
        );
        let mut query = sqlx::query_as::<_, Candidate>(&sql);
        for b in binds {
            query = query.bind(b);
        }
        let rows = query.fetch_all(&self.pool).await?;
        let complete = (rows.len() as i64) < REAP_BATCH;
        // A candidate that changed since the select is lost at the guarded
        // write: another replica's pass got it.
        let work = rows
            .iter()
            .map(|c| (Row::from(c), Order::new(cmd(&c.job))))
            .collect();
        Ok((applied_ids(pass, &self.execute(work).await?), complete))
    }

    /// FR-016: ASSIGNED for longer than `timeout` -> FAILED -> retry logic.
    ///
    /// From a floor (ADR 0021): a pass that handled every job due moves it
    /// to the database's time minus the timeout and a margin, so the next
    /// pass reads only the assignments made since, not every dead entry a
    /// pinned horizon keeps in `jobs_assigned_at_phase`.
    pub async fn reap_assignment_timeouts(&self, timeout: Duration) -> Result<Vec<uuid::Uuid>> {
        self.run("reap_assignments", || async move {
            let floor = self.marks.assigned_floor();
            let now: chrono::DateTime<chrono::Utc> = sqlx::query_scalar("SELECT now()").fetch_one(&self.pool).await?;
            let from = floor.map_or(0.0, |f| f.timestamp_micros() as f64 / 1e6);
            let (ids, complete) = self
                .reap_counted(
                    "reap_assignments",
                    "j.status = 'ASSIGNED' AND j.phase = 1 AND j.assigned_at <= now() - $1 * interval '1 second' \
                     AND j.assigned_at > to_timestamp($2) ORDER BY j.assigned_at",
                    &[timeout.as_secs_f64(), from],
                    |j| Command::AssignmentTimeout {
                        attempt: j.attempt as u32,
                    },
                )
                .await?;
            if complete {
                let margin = chrono::Duration::from_std(timeout + FLOOR_MARGIN).unwrap_or_default();
                self.marks.set_assigned_floor(Some(now - margin));
            }
            Ok(ids)
        })
        .await
    }

    /// FR-020: workers silent for `timeout` go OFFLINE; every ASSIGNED or
    /// RUNNING job of an OFFLINE worker -> FAILED -> retry logic (JQ-112),
    /// or DEAD_LETTERED when its cancel was pending (JQ-113). Jobs of
    /// workers that deregistered are reclaimed by the same query (NFR-015).
    ///
    /// The jobs are looked up by the lost workers' ids (ADR 0021: not by a
    /// walk of every in-flight entry, which a pinned horizon makes as long
    /// as the jobs run since): workers this pass found silent and those
    /// last heard within the hour (deregistered, or found by another
    /// replica); every in-flight job once a minute, for anything older.
    pub async fn reap_dead_workers(&self, timeout: Duration) -> Result<ReapReport> {
        self.run("reap_workers", || async move {
            let workers_offline: Vec<String> = sqlx::query_scalar(
                r#"
WITH dead AS (
    UPDATE workers SET status = 'OFFLINE'
    WHERE status <> 'OFFLINE' AND last_heartbeat_at <= now() - $1 * interval '1 second'
    RETURNING id, status, concurrency
), ob AS (
    INSERT INTO event_outbox (event_id, topic, partition_key, worker_id, worker_status, active_jobs, concurrency)
    SELECT gen_random_uuid(), $2, id, id, status, 0, concurrency FROM dead
)
SELECT id FROM dead ORDER BY id"#,
            )
            .bind(timeout.as_secs_f64())
            .bind(jq_core::events::TOPIC_WORKER_HEARTBEAT)
            .fetch_all(&self.pool)
            .await?;
            let lost = |j: &JobRow| Command::WorkerLost {
                worker_id: j.worker_id.clone().unwrap_or_default(),
                attempt: j.attempt as u32,
            };
            let jobs = if self.marks.workers_full_due() {
                self.reap_with(
                    "reap_workers",
                    "j.status IN ('ASSIGNED', 'RUNNING') AND j.phase = 1 AND EXISTS \
                     (SELECT 1 FROM workers w WHERE w.id = j.worker_id AND w.status = 'OFFLINE')",
                    &[],
                    lost,
                )
                .await?
            } else {
                // `deregister` and this pass set OFFLINE; a deregistered
                // worker's last heartbeat is recent too.
                let mut recent: Vec<String> = sqlx::query_scalar(
                    "SELECT id FROM workers WHERE status = 'OFFLINE' AND last_heartbeat_at > now() - interval '1 hour' \
                     ORDER BY id",
                )
                .fetch_all(&self.pool)
                .await?;
                recent.extend(workers_offline.iter().cloned());
                if recent.is_empty() {
                    vec![]
                } else {
                    self.reap_by_workers(&recent, lost).await?
                }
            };
            Ok(ReapReport { workers_offline, jobs })
        })
        .await
    }

    /// FR-004: PENDING past `expires_at` -> DEAD_LETTERED (TTL_EXPIRED).
    pub async fn reap_expired(&self) -> Result<Vec<uuid::Uuid>> {
        self.run("reap_expired", || async move {
            self.reap_with("reap_expired", EXPIRED, &[], |_| Command::TtlExpired)
                .await
        })
        .await
    }

    /// The TTL reaper's plan, run (NFR-012 checks).
    pub async fn explain_analyze_reap_expired(&self) -> Result<String> {
        let lines: Vec<String> = sqlx::query_scalar(&explain_reap_expired_sql(true))
            .fetch_all(&self.pool)
            .await?;
        Ok(lines.join("\n"))
    }
}

/// Tables the hot statements read by plan (inserts need no statistics):
/// `jobs` and each partition of `job_events` (a partitioned table has no
/// statistics of its own that autovacuum keeps, and every new partition
/// starts empty: the fresh-install case, once per partition width).
const PLANNED_TABLES: &str = "(s.relname = 'jobs' OR s.relid IN \
     (SELECT inhrelid FROM pg_inherits WHERE inhparent = 'job_events'::regclass))";

impl Store {
    /// ANALYZE the planned tables that hold more than twice the rows their
    /// statistics say (and at least 1,000). Why: a table that grows fast
    /// from empty — a fresh install's first burst — keeps its "empty"
    /// statistics until autovacuum's next round (a minute by default), and
    /// the cached plans of the hot statements scan it sequentially all that
    /// while (at 500 jobs/s this tripled the database's CPU). Counting rows,
    /// not changes, keeps a busy queue's constant updates from triggering
    /// it: a handful of runs over a table's life; steady tables are left to
    /// autovacuum. ANALYZE also makes every server re-plan against the new
    /// statistics.
    pub async fn refresh_statistics(&self) -> Result<Vec<String>> {
        self.run("refresh_statistics", || async move {
            let stale: Vec<String> = sqlx::query_scalar(&format!(
                "SELECT s.relname::text FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid \
                 WHERE s.schemaname = current_schema() AND {PLANNED_TABLES} \
                   AND s.n_live_tup >= 1000 AND s.n_live_tup > 2 * greatest(c.reltuples, 0)"
            ))
            .fetch_all(&self.pool)
            .await?;
            for t in &stale {
                // Another replica analyzing the same table: skip, not wait.
                sqlx::query(&format!("ANALYZE (SKIP_LOCKED) {t}"))
                    .execute(&self.pool)
                    .await?;
            }
            Ok(stale)
        })
        .await
    }
}
