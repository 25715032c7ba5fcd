//! Statements only the load generator (`jq-bench`) uses: filling a table
//! with millions of rows for the big-table scenario and reading back the
//! timestamps latency is computed from. Kept here because all SQL is.

use chrono::{DateTime, Utc};

use crate::{Result, Store};

/// (created, assigned, started, completed) of one finished job: the
/// latency scenario's stages come from these database timestamps.
pub type Timeline = (
    DateTime<Utc>,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
);

impl Store {
    /// Insert `terminal` DONE and then `pending` PENDING jobs into `queue`
    /// with `generate_series`, `chunk` rows per statement.
    pub async fn bench_fill(&self, queue: &str, terminal: u64, pending: u64, chunk: u64) -> Result<()> {
        let total = terminal + pending;
        let mut from = 1u64;
        while from <= total {
            let to = (from + chunk - 1).min(total);
            sqlx::query(
                "INSERT INTO jobs (id, queue, status, priority, payload, max_retries, attempt, created_at, \
                 not_before, started_at, completed_at, updated_at) \
                 SELECT gen_random_uuid(), $1, \
                   (CASE WHEN g <= $4 THEN 'DONE' ELSE 'PENDING' END)::job_status, (g % 10)::smallint, \
                   '\\x7b7d'::bytea, 3, CASE WHEN g <= $4 THEN 1 ELSE 0 END, \
                   now() - make_interval(secs => ($5 - g)::double precision / 1000), now() - interval '1 day', \
                   CASE WHEN g <= $4 THEN now() END, CASE WHEN g <= $4 THEN now() END, now() \
                 FROM generate_series($2::bigint, $3::bigint) AS g",
            )
            .bind(queue)
            .bind(from as i64)
            .bind(to as i64)
            .bind(terminal as i64)
            .bind(total as i64)
            .execute(&self.pool)
            .await?;
            from = to + 1;
        }
        // Steady state, as a live 10 M-row table would be: vacuumed (hint
        // bits, visibility map) and analyzed, so autovacuum does not start
        // on it in the middle of the measurement.
        sqlx::query("VACUUM (ANALYZE) jobs").execute(&self.pool).await?;
        Ok(())
    }

    /// Timelines of every DONE job of `queue`.
    pub async fn bench_timelines(&self, queue: &str) -> Result<Vec<Timeline>> {
        Ok(sqlx::query_as(
            "SELECT created_at, assigned_at, started_at, completed_at FROM jobs WHERE queue = $1 AND status = 'DONE'",
        )
        .bind(queue)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Whether any job of `queue` is not yet finished (PENDING, ASSIGNED or
    /// RUNNING). Each probe stops at the first live entry of a partial
    /// index, so polling costs little; a `count(*)` here took 30 ms of the
    /// database's CPU per poll mid-burst and skewed the numbers.
    pub async fn bench_any_open(&self, queue: &str) -> Result<bool> {
        Ok(sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM jobs WHERE queue = $1 AND status = 'PENDING') \
                 OR EXISTS (SELECT 1 FROM jobs WHERE queue = $1 AND status IN ('ASSIGNED', 'RUNNING'))",
        )
        .bind(queue)
        .fetch_one(&self.pool)
        .await?)
    }
}

/// Drop (if present) and create database `name` on the server of
/// `admin_url`, for a clean run.
pub async fn recreate_database(admin_url: &str, name: &str) -> Result<()> {
    use sqlx::Connection;
    let mut c = sqlx::PgConnection::connect(admin_url).await?;
    sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .execute(&mut c)
        .await?;
    sqlx::query(&format!("CREATE DATABASE \"{name}\""))
        .execute(&mut c)
        .await?;
    Ok(())
}
