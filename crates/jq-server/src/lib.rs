//! # jq-server
//!
//! The control plane: gRPC `JobService`, `WorkerService` and
//! `AdminService`; the push dispatcher; the reapers; health and metrics
//! endpoints. It never runs job payloads.
//!
//! [`start`] binds everything (port 0 works, for tests) and returns a
//! [`Running`] handle; `main.rs` only parses flags and waits for a signal.
//!
//! # Layout
//! - [`grpc`]: the three services and the request layer (request ids,
//!   gRPC metrics).
//! - [`registry`]: workers connected to this server and their streams.
//! - [`dispatcher`]: claims for free capacity and pushes assignments.
//! - [`locks`]: Redis per-job dispatch locks (a second guard).
//! - [`batch`] (from jq-client): group commit of acks, results and submits.
//! - [`effects`]: what every committed transition means beyond the
//!   database (metrics, locks, registry, cancel notices).
//! - [`maintenance`]: one service per pass (timeouts, dead workers, TTL,
//!   gauges, statistics, outbox pruning), each with `run_once`.
//! - [`relay`]: the outbox relay to Kafka and the event decoder.
//! - [`status`], [`convert`]: errors and records at the wire edge.
//! - [`dry_run`]: `--dry-run` checks (FR-046).
//! - [`dev`]: the private PostgreSQL behind `--dev`.

pub use jq_client::batch;
pub mod convert;
pub mod dev;
pub mod dispatcher;
pub mod dry_run;
pub mod effects;
pub mod grpc;
pub mod locks;
pub mod maintenance;
pub mod posture;
pub mod registry;
pub mod relay;
pub mod status;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use jq_config::ServerConfig;
use jq_store::{QueryObserver, Store, StoreOptions};
use jq_telemetry::ServerMetrics;
use jq_telemetry::http::Readiness;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::registry::Registry;

/// Semver and git commit (NFR-017).
pub const VERSION: &str = jq_config::VERSION;

/// State every service and background task shares.
pub struct Shared {
    pub store: Store,
    pub registry: Arc<Registry>,
    /// What every committed transition means outside PostgreSQL.
    pub effects: Arc<effects::Effects>,
    pub metrics: Arc<ServerMetrics>,
    pub cfg: Arc<ServerConfig>,
    pub locks: Arc<locks::Locks>,
    /// Group commit of workers' acks and results, together.
    pub worker_calls: batch::Batcher<jq_store::WorkerCall, jq_store::Result<jq_store::CallOutcome>>,
    /// Group commit of single submits from many clients.
    pub submits: batch::Batcher<jq_core::NewJob, jq_store::Result<jq_store::Submitted>>,
    /// Cross-replica wakes, coalesced (one NOTIFY in flight at a time).
    wakes: Arc<WakeOthers>,
    migrated: AtomicBool,
}

/// `NOTIFY jq_wake` for other replicas, at most one in flight: submits
/// arriving meanwhile are covered by one more NOTIFY after it, instead of
/// one database round trip each.
struct WakeOthers {
    store: Store,
    in_flight: AtomicBool,
    again: AtomicBool,
}

impl WakeOthers {
    fn wake(self: &Arc<Self>) {
        if self.in_flight.swap(true, Ordering::AcqRel) {
            self.again.store(true, Ordering::Release);
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                me.again.store(false, Ordering::Release);
                if let Err(e) = me.store.notify_wake().await {
                    tracing::debug!(error = %e, "wake notification failed; other replicas rely on their interval");
                }
                if me.again.load(Ordering::Acquire) {
                    continue;
                }
                me.in_flight.store(false, Ordering::Release);
                // A submit between the check and the store above.
                if me.again.load(Ordering::Acquire) && !me.in_flight.swap(true, Ordering::AcqRel) {
                    continue;
                }
                break;
            }
        });
    }
}

impl Shared {
    /// Metrics, dispatch locks, the registry, the effects hook, the store
    /// (which reports every committed transition to the hook) and the
    /// group-commit lanes. Connects lazily: nothing here waits for a
    /// backing service.
    /// Whether a relay publishes to Kafka (`kafka.brokers` set).
    pub fn publishing(&self) -> jq_store::retention::Publishing {
        if self.cfg.kafka.brokers.trim().is_empty() {
            jq_store::retention::Publishing::Off
        } else {
            jq_store::retention::Publishing::Kafka
        }
    }

    /// `db.long_transaction_warn_s` (0: never).
    pub fn long_transaction_warn(&self) -> Option<Duration> {
        match self.cfg.db.long_transaction_warn_s {
            0 => None,
            s => Some(Duration::from_secs(s)),
        }
    }

    /// The "transactions" row of the status: the oldest transaction that
    /// holds the database server's horizon back, a warning once it is
    /// older than `db.long_transaction_warn_s`.
    pub async fn transactions_health(&self) -> jq_proto::v1::ComponentHealth {
        let (state, detail) = match self.store.open_transactions(5).await {
            Err(e) => ("warning", format!("cannot read pg_stat_activity: {e}")),
            Ok(open) => {
                let old = maintenance::long_transactions::too_old(&open, self.long_transaction_warn());
                match (old.first(), open.first()) {
                    (Some(t), _) => (
                        "warning",
                        format!(
                            "{t}{}: vacuum cannot remove dead rows in any database while it is open, \
                             and claims slow down; end it",
                            match old.len() {
                                1 => String::new(),
                                n => format!(" (and {} more past the limit)", n - 1),
                            }
                        ),
                    ),
                    (None, Some(t)) => ("ok", format!("oldest open: {t}")),
                    (None, None) => ("ok", "none open".into()),
                }
            }
        };
        jq_proto::v1::ComponentHealth {
            name: "transactions".into(),
            state: state.into(),
            detail,
        }
    }

    pub fn new(cfg: Arc<ServerConfig>) -> anyhow::Result<Shared> {
        let metrics = Arc::new(ServerMetrics::new());
        for t in jq_core::events::ALL_TOPICS {
            metrics.kafka_publish_errors.with_label_values(&[t]).inc_by(0);
        }
        // Every FR-040 series exists from the start, even before (or
        // without) its first event, so dashboards and alerts see zeros.
        for op in locks::OPERATIONS {
            metrics.redis_op_duration.with_label_values(&[op]);
        }
        metrics.redis_degraded.set(0);
        let locks = Arc::new(locks::Locks::new(
            &cfg.redis,
            Duration::from_secs(cfg.scheduler.assignment_timeout_s),
            metrics.clone(),
        )?);
        let registry = Registry::new();
        let effects = Arc::new(effects::Effects::new(
            metrics.clone(),
            registry.clone(),
            locks.clone(),
        ));
        let store = Store::connect_lazy(&cfg.db.url, &store_options(&cfg.db))?
            .with_observer(Arc::new(Observer(metrics.clone())))
            .with_transition_observer(effects.clone());
        Ok(Shared {
            // The lanes and the dispatcher each keep a connection (ADR 0010).
            worker_calls: grpc::worker::lane(store.pinned(), effects.clone()),
            submits: grpc::job::lane(store.pinned()),
            wakes: Arc::new(WakeOthers {
                store: store.clone(),
                in_flight: AtomicBool::new(false),
                again: AtomicBool::new(false),
            }),
            store,
            registry,
            effects,
            metrics,
            cfg,
            locks,
            migrated: AtomicBool::new(false),
        })
    }

    /// New work may be claimable: wake this server now and the others
    /// through PostgreSQL (JQ-120).
    pub fn submitted(&self) {
        self.registry.wake();
        self.wakes.wake();
    }

    /// New jobs were inserted: the insert itself notified the other
    /// replicas (`Store::submit_many`), so only this server is woken here.
    pub fn inserted(&self) {
        self.registry.wake();
    }

    pub async fn redis_health(&self) -> jq_proto::v1::ComponentHealth {
        let (state, detail) = match dry_run::check_redis(&self.cfg.redis).await {
            dry_run::Check::Ok(_) if self.locks.degraded() => (
                "degraded",
                "dispatch locks failing; running on PostgreSQL alone".into(),
            ),
            dry_run::Check::Ok(d) => ("ok", d),
            dry_run::Check::Disabled(d) => ("disabled", d),
            dry_run::Check::Failed(d) => ("degraded", format!("{d}; running on PostgreSQL alone")),
        };
        jq_proto::v1::ComponentHealth {
            name: "redis".into(),
            state: state.into(),
            detail,
        }
    }
}

struct Observer(Arc<ServerMetrics>);

impl QueryObserver for Observer {
    fn observe(&self, query_name: &'static str, elapsed: Duration, _ok: bool) {
        self.0
            .db_query_duration
            .with_label_values(&[query_name])
            .observe(elapsed.as_secs_f64());
    }
}

struct Ready(Arc<Shared>);

impl Readiness for Ready {
    fn check(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + '_>> {
        Box::pin(async move {
            if !self.0.migrated.load(Ordering::Acquire) {
                return Err("migrations have not run yet".into());
            }
            self.0.store.ping().await.map_err(|e| format!("database: {e}"))
        })
    }
}

/// A started server.
pub struct Running {
    pub grpc_addr: SocketAddr,
    pub health_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub shared: Arc<Shared>,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    grpc: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl Running {
    /// Graceful shutdown (NFR-014): stop the dispatcher and reapers, end the
    /// assignment streams, let in-flight RPCs finish, stop HTTP, close the
    /// pool. Bounded by `server.shutdown_grace_s`.
    pub async fn shutdown(self) {
        let grace = Duration::from_secs(self.shared.cfg.server.shutdown_grace_s);
        let shared = self.shared.clone();
        let work = async move {
            self.shutdown.cancel();
            shared.registry.close_all();
            for t in self.tasks {
                let _ = t.await;
            }
            match self.grpc.await {
                Ok(Err(e)) => tracing::warn!(error = %e, "gRPC server ended with an error"),
                Err(e) => tracing::warn!(error = %e, "gRPC server task failed"),
                Ok(Ok(())) => {}
            }
            shared.store.close().await;
        };
        if tokio::time::timeout(grace, work).await.is_err() {
            tracing::warn!(
                grace_s = grace.as_secs(),
                "graceful shutdown took too long; exiting anyway"
            );
        } else {
            tracing::info!("shut down cleanly");
        }
    }
}

async fn bind(host: &str, port: u16) -> anyhow::Result<TcpListener> {
    TcpListener::bind((host, port))
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {host}:{port}: {e}"))
}

/// Migrate and make sure `default` exists; readiness waits for this.
async fn prepare(s: &Shared) -> Result<(), jq_store::StoreError> {
    // First a plain statement, so that a connection that cannot be made
    // (TLS, above all) says why in the store's own terms.
    s.store.ping().await?;
    let width = Duration::from_secs(s.cfg.retention.partition_s);
    s.store.migrate(width).await?;
    // Partitions for now and ahead before serving: the maintainer's first
    // pass is an interval away, and the migration made only two days'.
    s.store.ensure_event_partitions(width).await?;
    // The phase indexes before serving (on a new or small database this is
    // instant; an upgrade of a large one builds them concurrently, writes
    // going on, while readiness says false). The indexes they replace go
    // later, once the grace for servers of the previous version is over.
    s.store.advance_layout().await?;
    s.store.ensure_queue("default").await?;
    if !s.store.autovacuum_on().await? {
        tracing::warn!(
            "PostgreSQL runs with autovacuum off: the dead rows every job leaves are never reclaimed, \
             so jobs and job_events grow and dispatch slows; turn it on (autovacuum = on)"
        );
    }
    s.migrated.store(true, Ordering::Release);
    Ok(())
}

/// Batches of worker calls or submits written at once, and how many at a
/// time. One lane for acks and results together, one for submits: calls
/// that wait for the batch in flight form a bigger next batch, which costs
/// the database less than two small ones in parallel (burst +15 % over
/// four lanes; unary submit 0-8 % over two lanes; docs/benchmarks.md).
pub(crate) const BATCH_MAX: usize = 512;
pub(crate) const BATCH_LANES: usize = 1;
pub(crate) const SUBMIT_LANES: usize = 1;

/// How to reach PostgreSQL: pool size, the environment's password, the TLS
/// files (`db.tls_*`; the URL's `sslmode` says whether they are used).
pub fn store_options(db: &jq_config::server::Db) -> StoreOptions {
    let path = |p: &str| (!p.is_empty()).then(|| std::path::PathBuf::from(p));
    StoreOptions {
        max_connections: db.max_connections,
        min_connections: 0,
        acquire_timeout: Duration::from_millis(db.acquire_timeout_ms),
        password: (!db.password.is_empty()).then(|| db.password.clone()),
        tls: jq_store::TlsFiles {
            ca: path(&db.tls_ca),
            cert: path(&db.tls_cert),
            key: path(&db.tls_key),
        },
    }
}

/// Start the server on the configured (or OS-chosen, with port 0) ports:
/// the shared state, the listeners, the database, then each part as a task
/// under one shutdown token.
pub async fn start(cfg: ServerConfig) -> anyhow::Result<Running> {
    let shared = Arc::new(Shared::new(Arc::new(cfg))?);
    let cfg = shared.cfg.clone();
    let grpc_l = bind(&cfg.server.bind, cfg.server.grpc_port).await?;
    let health_l = bind(&cfg.server.bind, cfg.server.health_port).await?;
    let metrics_l = bind(&cfg.server.bind, cfg.server.metrics_port).await?;
    let (grpc_addr, health_addr, metrics_addr) = (
        grpc_l.local_addr()?,
        health_l.local_addr()?,
        metrics_l.local_addr()?,
    );
    if let posture::Posture::Exposed { .. } = posture::of(&cfg) {
        let (_, detail) = posture::of(&cfg).component(&grpc_addr.to_string());
        tracing::warn!(security = "exposed", "{detail}");
    }
    match prepare(&shared).await {
        // A certificate that does not verify will not mend by waiting:
        // refuse to start, saying why (ADR 0014).
        Err(e @ jq_store::StoreError::Tls(_)) => {
            shared.store.close().await;
            return Err(anyhow::anyhow!("{e}"));
        }
        Err(e) => {
            tracing::warn!(error = %e, "database not ready at start; retrying in the background (readyz is false until then)")
        }
        Ok(()) => {}
    }

    let shutdown = CancellationToken::new();
    let mut tasks = vec![];
    let mut spawn = |f: std::pin::Pin<Box<dyn Future<Output = ()> + Send>>| tasks.push(tokio::spawn(f));
    if !shared.migrated.load(Ordering::Acquire) {
        spawn(Box::pin(prepare_until_ready(shared.clone(), shutdown.clone())));
    }
    spawn(Box::pin(
        dispatcher::Dispatcher::new(&shared).run(shutdown.clone()),
    ));
    spawn(Box::pin(dispatcher::listen_for_wakes(
        shared.clone(),
        shutdown.clone(),
    )));
    for service in maintenance_services(&shared) {
        spawn(service(shutdown.clone()));
    }
    // SPEC §9: the outbox relay, when Kafka is configured.
    if !cfg.kafka.brokers.trim().is_empty() {
        spawn(Box::pin(relay::Relay::new(shared.clone())?.run(shutdown.clone())));
    }
    let health = jq_telemetry::http::health_router(Arc::new(Ready(shared.clone())));
    let metrics_router = jq_telemetry::http::server_metrics_router(shared.metrics.clone());
    for (l, router) in [(health_l, health), (metrics_l, metrics_router)] {
        let stop = shutdown.clone().cancelled_owned();
        spawn(Box::pin(async move {
            if let Err(e) = jq_telemetry::http::serve(l, router, stop).await {
                tracing::warn!(error = %e, "http server failed");
            }
        }));
    }
    let grpc = tokio::spawn(grpc::server(shared.clone(), grpc_l, shutdown.clone()).await?);
    tracing::info!(%grpc_addr, %health_addr, %metrics_addr, version = VERSION, "jq-server started");
    Ok(Running {
        grpc_addr,
        health_addr,
        metrics_addr,
        shared,
        shutdown,
        tasks,
        grpc,
    })
}

/// A maintenance service, ready to run until its shutdown token.
type Spawnable = Box<dyn FnOnce(CancellationToken) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>>>;

fn service<S: maintenance::Service>(s: S) -> Spawnable {
    Box::new(move |shutdown| Box::pin(maintenance::run(s, shutdown)))
}

/// Every maintenance pass this server runs (each replica runs them all).
fn maintenance_services(shared: &Shared) -> Vec<Spawnable> {
    use maintenance::*;
    let sc = &shared.cfg.scheduler;
    let every = Duration::from_millis(sc.reaper_interval_ms);
    let store = || shared.store.clone();
    vec![
        service(assignment_timeout::AssignmentTimeouts {
            store: store(),
            timeout: Duration::from_secs(sc.assignment_timeout_s),
            every,
        }),
        service(dead_workers::DeadWorkers {
            store: store(),
            registry: shared.registry.clone(),
            timeout: Duration::from_secs(sc.worker_heartbeat_timeout_s),
            every,
        }),
        service(ttl_expiry::TtlExpiry {
            store: store(),
            every,
        }),
        service(gauges::Gauges::new(
            store(),
            shared.registry.clone(),
            shared.metrics.clone(),
            shared.publishing(),
        )),
        service(statistics::Statistics { store: store() }),
        service(marks_sweep::MarksSweep { store: store() }),
        service(long_transactions::LongTransactions {
            store: store(),
            metrics: shared.metrics.clone(),
            warn_after: shared.long_transaction_warn(),
        }),
        service(schedules::Schedules {
            store: store(),
            metrics: shared.metrics.clone(),
            registry: shared.registry.clone(),
        }),
        service(outbox_prune::OutboxPrune {
            store: store(),
            retention: Duration::from_secs(shared.cfg.kafka.outbox_retention_s),
            publishing: shared.publishing(),
        }),
        service(retention::Retention {
            store: store(),
            server: retentions(&shared.cfg),
            publishing: shared.publishing(),
            every: Duration::from_secs(shared.cfg.retention.interval_s),
        }),
        service(partitions::Partitions {
            store: store(),
            server: retentions(&shared.cfg),
            width: Duration::from_secs(shared.cfg.retention.partition_s),
            every: Duration::from_secs(shared.cfg.retention.interval_s),
        }),
        service(layout::Layout {
            store: store(),
            every: Duration::from_secs(shared.cfg.retention.interval_s),
        }),
    ]
}

/// The server's default retentions (`retention.*`).
fn retentions(cfg: &ServerConfig) -> jq_store::retention::Retentions {
    jq_store::retention::Retentions {
        done: Duration::from_secs(cfg.retention.done_s),
        dead_lettered: Duration::from_secs(cfg.retention.dead_lettered_s),
    }
}

/// The database was not ready at start: try again every two seconds until
/// it is (readiness says false meanwhile).
async fn prepare_until_ready(s: Arc<Shared>, shutdown: CancellationToken) {
    while !s.migrated.load(Ordering::Acquire) {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = shutdown.cancelled() => return,
        }
        if let Err(e) = prepare(&s).await {
            tracing::warn!(error = %e, "database still not ready");
        }
    }
    tracing::info!("database ready");
}
