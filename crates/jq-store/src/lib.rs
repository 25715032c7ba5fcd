//! # jq-store
//!
//! The PostgreSQL repository of jq and the only crate with SQL in it.
//!
//! Every state change goes through [`jq_core::transition`], and only through
//! the `executor`, which carries out its [`Effects`](jq_core::Effects) in one
//! atomic statement that updates the job *only if* it is still in the state
//! the decision was made on (every lifecycle column it read), and writes one
//! `job_events` row per step,
//! which is also the step's outbox entry (ADR 0012). A lost race therefore
//! changes nothing and is simply decided again.
//! All times come from the database clock (`now()`).
//!
//! # Layout
//! - [`jobs`]: submit (single/bulk, idempotency, delay, TTL), get, list, events, delete.
//! - `executor`: the one writer of a job's lifecycle: decide each row, one guarded statement, verdicts out.
//! - [`transitions`]: single-job ack, report, cancel, retry, redrive, delivery failure.
//! - [`claim`]: batch claim with `FOR UPDATE SKIP LOCKED`, pause, JQ-140 limits.
//! - [`batch`]: group commit of many workers' acks and results.
//! - [`bench`]: bulk fill and timelines for `jq-bench` only.
//! - [`reaper`]: assignment timeouts, dead workers, TTL expiry.
//! - [`retention`]: finished jobs deleted once their queue's retention has passed.
//! - [`partitions`]: `job_events` partitions created ahead, dropped once expired.
//! - [`queues`]: queue CRUD, stats, pause/resume.
//! - [`workers`]: register, heartbeat, drain, shutdown, deregister, list.
//! - [`outbox`]: the relay's side of the transactional outbox.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::ConnectOptions;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

pub mod activity;
pub mod batch;
pub mod bench;
pub mod claim;
mod conn;
mod error;
mod executor;
pub mod jobs;
pub mod layout;
pub mod marks;
pub mod outbox;
pub mod partitions;
pub mod queues;
pub mod reaper;
pub mod retention;
mod rows;
pub mod schedules;
pub mod transitions;
pub mod workers;

pub use batch::{CallOutcome, Expected, WorkerCall};
pub use conn::MIN_POOL_TO_PIN;
pub use error::{StoreError, is_tls_failure, is_transient, refused_value};
pub use jobs::{ListFilter, ListPage, Submitted};
pub use jq_core::Step;
pub use outbox::{EventAudit, EventWindow, OutboxPending, RelayCursor, RelayLease};
pub use reaper::ReapReport;
pub use transitions::{CancelOutcome, ReportOutcome, ResultReport};
pub use workers::{HeartbeatOutcome, WorkerListing};

/// Result of every store call.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Embedded migrations from `migrations/` (NFR-020).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations");

/// End a transaction by its body's result: commit on success, roll back on
/// error, before the caller hears back. A dropped sqlx transaction is
/// rolled back by a task after its connection is released, so its row
/// locks outlive the call for a moment: a claim made right after one that
/// gave nothing skipped the jobs it had locked (the conformance test found
/// it), and a refused `queue delete` briefly blocks submits to the queue.
pub(crate) async fn finish<T>(tx: sqlx::Transaction<'_, sqlx::Postgres>, body: Result<T>) -> Result<T> {
    match body {
        Ok(v) => {
            tx.commit().await?;
            Ok(v)
        }
        Err(e) => {
            // The connection is closed by sqlx if even this fails.
            let _ = tx.rollback().await;
            Err(e)
        }
    }
}

/// Hears how long each named store operation took, for
/// `jq_db_query_duration_seconds{query_name}` (FR-040) without this crate
/// knowing about metrics.
pub trait QueryObserver: Send + Sync {
    fn observe(&self, query_name: &'static str, elapsed: Duration, ok: bool);
}

/// Hears every transition once its write has committed, whatever wrote it
/// (submit, claim, worker call, reaper, operator): the one place where a
/// server carries out what a transition means outside PostgreSQL —
/// `jq_job_total{queue,status}` (FR-040), dispatch locks, its registry of
/// assignments, cancel notices.
pub trait TransitionObserver: Send + Sync {
    /// New jobs of `queue`, each one step (submitted -> PENDING).
    fn submitted(&self, queue: &str, step: &jq_core::Step);
    /// A job's applied transition.
    fn applied(&self, t: &Transition<'_>);
}

/// A committed transition of one job, as [`TransitionObserver::applied`]
/// hears it. `effects.steps` may be empty (a cancel request on a RUNNING
/// job changes only `cancel_requested`).
#[derive(Debug, Clone, Copy)]
pub struct Transition<'a> {
    pub job_id: uuid::Uuid,
    pub queue: &'a str,
    pub before: &'a jq_core::JobState,
    pub effects: &'a jq_core::Effects,
}

/// Source of jitter for retry backoff: a number in [0, 1).
pub type JitterSource = Arc<dyn Fn() -> f64 + Send + Sync>;

/// How to connect.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub max_connections: u32,
    pub min_connections: u32,
    pub acquire_timeout: Duration,
    /// Password from the environment only (FR-045); overrides one in the URL.
    pub password: Option<String>,
    /// TLS files beyond what the URL says (`sslmode`, `sslrootcert`…).
    pub tls: TlsFiles,
}

/// PEM files for TLS to PostgreSQL (`db.tls_ca`, `db.tls_cert`,
/// `db.tls_key`); each overrides its libpq URL parameter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: Option<std::path::PathBuf>,
    pub cert: Option<std::path::PathBuf>,
    pub key: Option<std::path::PathBuf>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            max_connections: 16,
            min_connections: 0,
            acquire_timeout: Duration::from_secs(5),
            password: None,
            tls: TlsFiles::default(),
        }
    }
}

/// Handle to the database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: PgPool,
    jitter: JitterSource,
    observer: Option<Arc<dyn QueryObserver>>,
    transitions: Option<Arc<dyn TransitionObserver>>,
    /// Set on `pinned` handles: the connection they keep.
    pinned: Option<conn::Pinned>,
    /// The slots of every pinned handle of this store (`close`).
    pins: conn::Pins,
    /// The payload of this store's `jq_wake` notifications (`own_wake`).
    wake_tag: Arc<str>,
    /// Where the claim starts in each section of the claim index (ADR 0021).
    marks: Arc<marks::Marks>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("pool", &self.pool)
            .finish_non_exhaustive()
    }
}

/// A pooled (or pinned) connection idle longer than this is pinged before reuse.
pub(crate) const PING_IDLE_AFTER: Duration = Duration::from_secs(1);

/// Transient errors are retried this many times (4 tries in all).
const TRANSIENT_RETRIES: u32 = 3;

impl Store {
    /// Connect lazily: the pool opens connections on demand, so a server can
    /// start (and report not-ready) while PostgreSQL is still coming up.
    pub fn connect_lazy(url: &str, opts: &StoreOptions) -> Result<Store> {
        let mut conn: PgConnectOptions = url.parse().map_err(StoreError::Database)?;
        if let Some(pw) = &opts.password {
            conn = conn.password(pw);
        }
        if let Some(ca) = &opts.tls.ca {
            conn = conn.ssl_root_cert(ca);
        }
        if let Some(cert) = &opts.tls.cert {
            conn = conn.ssl_client_cert(cert);
        }
        if let Some(key) = &opts.tls.key {
            conn = conn.ssl_client_key(key);
        }
        conn = conn.log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_millis(500));
        // Every statement here is written for its index whatever the
        // parameters (ids, one queue, a limit), so one plan per prepared
        // statement is right. Left to choose, PostgreSQL kept re-planning
        // the array-parameter statements on every call: planning was a
        // third of the database's time per job at 500 jobs/s. Plans are
        // rebuilt when statistics change (`refresh_statistics`).
        // JIT compiles a plan whose estimated cost is high, and generic
        // plans over CTEs can be estimated at millions of rows: the relay's
        // window read (4 ms) spent 200-270 ms compiling. Short statements
        // like these never gain from it.
        conn = conn.options([("plan_cache_mode", "force_generic_plan"), ("jit", "off")]);
        // A connection handed out again within a second is not pinged first:
        // sqlx's default test costs a round trip per operation (half of a
        // single-statement submit's). One that broke anyway fails its
        // statement with a connection error, which `run` retries.
        let pool = PgPoolOptions::new()
            .max_connections(opts.max_connections)
            .min_connections(opts.min_connections)
            .acquire_timeout(opts.acquire_timeout)
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for > PING_IDLE_AFTER {
                        sqlx::Connection::ping(conn).await?;
                    }
                    Ok(true)
                })
            })
            .connect_lazy_with(conn);
        Ok(Store::from_pool(pool))
    }

    /// Connect and check the database answers.
    pub async fn connect(url: &str, opts: &StoreOptions) -> Result<Store> {
        let store = Store::connect_lazy(url, opts)?;
        store.ping().await?;
        Ok(store)
    }

    pub fn from_pool(pool: PgPool) -> Store {
        Store {
            pool,
            jitter: Arc::new(rand::random::<f64>),
            observer: None,
            transitions: None,
            pinned: None,
            pins: Arc::default(),
            wake_tag: uuid::Uuid::new_v4().simple().to_string().into(),
            marks: Arc::default(),
        }
    }

    /// Replace the jitter source (tests use a constant for exact backoff).
    pub fn with_jitter(mut self, jitter: JitterSource) -> Store {
        self.jitter = jitter;
        self
    }

    pub fn with_transition_observer(mut self, observer: Arc<dyn TransitionObserver>) -> Store {
        self.transitions = Some(observer);
        self
    }

    /// Tell the transition observer about new jobs of these queues.
    pub(crate) fn committed_submits<'a>(&self, queues: impl IntoIterator<Item = &'a str>) {
        let Some(o) = &self.transitions else { return };
        let created = jq_core::Step {
            from: None,
            to: jq_core::JobStatus::Pending,
            reason: jq_core::Reason::Submitted,
        };
        for q in queues {
            o.submitted(q, &created);
        }
    }

    pub fn with_observer(mut self, observer: Arc<dyn QueryObserver>) -> Store {
        self.observer = Some(observer);
        self
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Apply pending migrations (NFR-020). Safe to run from several servers
    /// at once: sqlx serialises them with an advisory lock. `partition`
    /// is the width of the first `job_events` partitions, should schema v5
    /// be created now (`retention.partition_s`).
    pub async fn migrate(&self, partition: Duration) -> Result<()> {
        let mut conn = self.pool.acquire().await?;
        sqlx::query(&format!("SET jq.partition_s = '{}'", partition.as_secs().max(1)))
            .execute(&mut *conn)
            .await?;
        let r = MIGRATOR
            .run_direct(&mut *conn)
            .await
            .map_err(StoreError::Migration);
        // Not handed on with the setting, nor after a failed migration.
        conn.close_on_drop();
        r
    }

    /// True when every embedded migration has been applied (readiness).
    pub async fn migrations_current(&self) -> Result<bool> {
        let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::Database)?;
        Ok(MIGRATOR.iter().all(|m| applied.contains(&m.version)))
    }

    pub async fn ping(&self) -> Result<()> {
        self.run("ping", || async move {
            sqlx::query("SELECT 1").execute(&self.pool).await?;
            Ok(())
        })
        .await
    }

    /// Close the pool (graceful shutdown, NFR-014), with the connections
    /// that pinned handles keep: the close waits for every connection.
    pub async fn close(&self) {
        // Marks the pool closed at once, so no handle pins a new connection
        // after its old one is taken back; then waits for every connection.
        let closed = self.pool.close();
        self.unpin_all().await;
        closed.await;
    }

    /// Whether autovacuum runs. Without it the dead tuples of every
    /// transition and prune are never reclaimed: tables and indexes grow
    /// and the hot path slows (seen on a test machine, docs/benchmarks.md).
    pub async fn autovacuum_on(&self) -> Result<bool> {
        self.run("autovacuum_on", || async move {
            let v: String = sqlx::query_scalar("SELECT current_setting('autovacuum')")
                .fetch_one(&self.pool)
                .await?;
            Ok(v == "on")
        })
        .await
    }

    /// PostgreSQL's version string (status and `--dry-run` show it).
    pub async fn server_version(&self) -> Result<String> {
        self.run("server_version", || async move {
            Ok(sqlx::query_scalar("SHOW server_version")
                .fetch_one(&self.pool)
                .await?)
        })
        .await
    }

    fn jitter_unit(&self) -> f64 {
        (self.jitter)()
    }

    /// Run `op`, retrying transient database errors (connection loss,
    /// serialization failure, deadlock) with backoff, and report its time.
    /// Every operation is written so that a retry after an unknown commit
    /// outcome is harmless (fixed ids, guarded updates).
    async fn run<T, F, Fut>(&self, name: &'static str, mut op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let start = Instant::now();
        let mut tries = 0;
        let res = loop {
            match op().await {
                Err(StoreError::Database(e)) if is_transient(&e) => {
                    if tries == TRANSIENT_RETRIES {
                        break Err(StoreError::Unavailable(e));
                    }
                    tries += 1;
                    let wait = Duration::from_millis(25 << tries).mul_f64(1.0 + self.jitter_unit());
                    tracing::warn!(query_name = name, attempt = tries, error = %e, "transient database error; retrying");
                    tokio::time::sleep(wait).await;
                }
                // A certificate that does not verify, or a server without
                // TLS where it is required, will not mend by waiting.
                Err(StoreError::Database(e)) if is_tls_failure(&e) => {
                    break Err(StoreError::Tls(e.to_string()));
                }
                Err(StoreError::Database(e)) if refused_value(&e).is_some() => {
                    tracing::warn!(query_name = name, error = %e, "the database refused a value of the request");
                    break Err(StoreError::Refused(refused_value(&e).unwrap_or_default()));
                }
                other => break other,
            }
        };
        if let Some(o) = &self.observer {
            o.observe(name, start.elapsed(), res.is_ok());
        }
        res
    }

    /// Time a batch operation (its items carry their own errors).
    async fn observed<T>(
        &self,
        name: &'static str,
        op: impl Future<Output = Vec<Result<T>>>,
    ) -> Vec<Result<T>> {
        let start = Instant::now();
        let res = op.await;
        if let Some(o) = &self.observer {
            o.observe(name, start.elapsed(), res.iter().all(|r| r.is_ok()));
        }
        res
    }
}
