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

/// One table of the soak's size report.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TableSize {
    pub name: String,
    /// Heap, indexes and TOAST.
    pub bytes: i64,
    pub index_bytes: i64,
    pub dead_tuples: i64,
}

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
                 not_before, started_at, completed_at, updated_at, phase) \
                 SELECT gen_random_uuid(), $1, \
                   (CASE WHEN g <= $4 THEN 'DONE' ELSE 'PENDING' END)::job_status, (g % 10)::smallint, \
                   '\\x7b7d'::bytea, 3, CASE WHEN g <= $4 THEN 1 ELSE 0 END, \
                   now() - make_interval(secs => ($5 - g)::double precision / 1000), now() - interval '1 day', \
                   CASE WHEN g <= $4 THEN now() END, CASE WHEN g <= $4 THEN now() END, now(), \
                   (CASE WHEN g <= $4 THEN 3 ELSE 0 END)::smallint \
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
            "SELECT created_at, assigned_at, started_at, completed_at FROM jobs WHERE queue = $1 AND status = 'DONE' AND phase = 3",
        )
        .bind(queue)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The database's clock (the soak's minutes are cut on it, as every
    /// timestamp it reads is the database's).
    pub async fn bench_now(&self) -> Result<DateTime<Utc>> {
        Ok(sqlx::query_scalar("SELECT now()").fetch_one(&self.pool).await?)
    }

    /// Of the jobs of `queue` submitted in `[from, to)`: the submit→start
    /// latency (ms) of each that has started, and how many have not.
    pub async fn bench_start_window(
        &self,
        queue: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<(Vec<f64>, i64)> {
        let rows: Vec<(Option<f64>,)> = sqlx::query_as(
            "SELECT (extract(epoch FROM started_at - created_at) * 1000)::float8 FROM jobs \
             WHERE queue = $1 AND created_at >= $2 AND created_at < $3",
        )
        .bind(queue)
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await?;
        let waiting = rows.iter().filter(|(ms,)| ms.is_none()).count() as i64;
        Ok((rows.into_iter().filter_map(|(ms,)| ms).collect(), waiting))
    }

    /// Jobs of `queue` waiting to be claimed (PENDING), whether due or not.
    pub async fn bench_backlog(&self, queue: &str) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "SELECT count(*) FROM jobs WHERE queue = $1 AND status = 'PENDING' AND phase = 0",
        )
        .bind(queue)
        .fetch_one(&self.pool)
        .await?)
    }

    /// Jobs of `queue` that reached DONE in `[from, to)`.
    pub async fn bench_done_between(
        &self,
        queue: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "SELECT count(*) FROM jobs WHERE queue = $1 AND status = 'DONE' AND phase = 3 AND completed_at >= $2 AND completed_at < $3",
        )
        .bind(queue)
        .bind(from)
        .bind(to)
        .fetch_one(&self.pool)
        .await?)
    }

    /// Each jq table's size on disk (heap, indexes and TOAST) and its dead
    /// tuples as the statistics collector last counted them; a partitioned
    /// table's are the sums over its partitions.
    pub async fn bench_table_sizes(&self) -> Result<Vec<TableSize>> {
        Ok(sqlx::query_as(
            "SELECT r.relname::text AS name, sum(pg_total_relation_size(c.oid))::bigint AS bytes, \
                    sum(pg_indexes_size(c.oid))::bigint AS index_bytes, \
                    sum(coalesce(s.n_dead_tup, 0))::bigint AS dead_tuples \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             JOIN pg_class r ON r.oid = coalesce(pg_partition_root(c.oid), c.oid) \
             LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid \
             WHERE n.nspname = current_schema() AND c.relkind = 'r' AND c.relname NOT LIKE '\\_sqlx%' \
             GROUP BY r.relname ORDER BY r.relname",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Whether any job of `queue` is not yet finished (PENDING, ASSIGNED or
    /// RUNNING). Each probe stops at the first live entry of a partial
    /// index, so polling costs little; a `count(*)` here took 30 ms of the
    /// database's CPU per poll mid-burst and skewed the numbers.
    pub async fn bench_any_open(&self, queue: &str) -> Result<bool> {
        Ok(sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM jobs WHERE queue = $1 AND status = 'PENDING' AND phase = 0) \
                 OR EXISTS (SELECT 1 FROM jobs WHERE queue = $1 AND status IN ('ASSIGNED', 'RUNNING') AND phase = 1)",
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

/// A write transaction held open on a database, as a migration, a batch
/// import or a forgotten psql session holds one: it pins the server's
/// transaction horizon (`pg_snapshot_xmin`) for every database until it
/// ends (JQ-161's tests and the `events` scenario). Rolled back by
/// [`HeldTransaction::end`], or when dropped (its connection closes).
pub struct HeldTransaction {
    conn: sqlx::PgConnection,
    /// Its transaction id.
    pub xid: i64,
    /// Its backend's process id.
    pub pid: i32,
}

impl HeldTransaction {
    /// `BEGIN`, a write, and stay open.
    pub async fn begin(url: &str) -> Result<HeldTransaction> {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(url).await?;
        for sql in [
            "BEGIN",
            "CREATE TEMP TABLE held_open (n int)",
            "INSERT INTO held_open VALUES (1)",
        ] {
            sqlx::query(sql).execute(&mut conn).await?;
        }
        let (xid, pid) = sqlx::query_as("SELECT pg_current_xact_id()::text::bigint, pg_backend_pid()")
            .fetch_one(&mut conn)
            .await?;
        Ok(HeldTransaction { conn, xid, pid })
    }

    /// Still open, and still holding the server's horizon at or below its
    /// id (so a relay that waited for the horizon would wait now).
    pub async fn holds_the_horizon(&mut self) -> Result<bool> {
        let (xid, xmin): (i64, i64) = sqlx::query_as(
            "SELECT pg_current_xact_id()::text::bigint, pg_snapshot_xmin(pg_current_snapshot())::text::bigint",
        )
        .fetch_one(&mut self.conn)
        .await?;
        Ok(xid == self.xid && xmin <= self.xid)
    }

    /// Roll it back.
    pub async fn end(mut self) -> Result<()> {
        use sqlx::Connection;
        sqlx::query("ROLLBACK").execute(&mut self.conn).await?;
        self.conn.close().await?;
        Ok(())
    }
}
