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
//! - [`reaper`]: assignment timeouts, dead workers, TTL, gauges.
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
pub mod posture;
pub mod reaper;
pub mod registry;
pub mod relay;
pub mod status;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use jq_config::ServerConfig;
use jq_proto::v1::admin_service_server::AdminServiceServer;
use jq_proto::v1::job_service_server::JobServiceServer;
use jq_proto::v1::worker_service_server::WorkerServiceServer;
use jq_store::{QueryObserver, Store, StoreOptions};
use jq_telemetry::ServerMetrics;
use jq_telemetry::http::Readiness;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

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

/// `jq_job_total{queue,status}`: one count per committed transition step
/// into `status`, whatever wrote it, so the metric equals the `job_events`
/// rows by `to_status`.
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
    stop: watch::Sender<bool>,
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
            let _ = self.stop.send(true);
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

/// rustls server config: our certificate, and when a CA is given, client
/// certificates signed by it are required (mTLS, FR-047).
fn tls_config(t: &jq_config::server::Tls) -> anyhow::Result<tonic::transport::ServerTlsConfig> {
    let read = |what: &str, path: &str| {
        std::fs::read(path).map_err(|e| anyhow::anyhow!("cannot read tls.{what} {path}: {e}"))
    };
    let identity = tonic::transport::Identity::from_pem(read("cert", &t.cert)?, read("key", &t.key)?);
    let mut c = tonic::transport::ServerTlsConfig::new().identity(identity);
    if !t.ca.is_empty() {
        c = c.client_ca_root(tonic::transport::Certificate::from_pem(read("ca", &t.ca)?));
    }
    Ok(c)
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
    s.store.migrate().await?;
    s.store.ensure_queue("default").await?;
    s.migrated.store(true, Ordering::Release);
    Ok(())
}

/// Batches of worker calls or submits written at once, and how many at a
/// time. One lane for acks and results together, one for submits: calls
/// that wait for the batch in flight form a bigger next batch, which costs
/// the database less than two small ones in parallel (burst +15 % over
/// four lanes; unary submit 0-8 % over two lanes; docs/benchmarks.md).
const BATCH_MAX: usize = 512;
const BATCH_LANES: usize = 1;
const SUBMIT_LANES: usize = 1;

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

/// Start the server on the configured (or OS-chosen, with port 0) ports.
pub async fn start(cfg: ServerConfig) -> anyhow::Result<Running> {
    let cfg = Arc::new(cfg);
    let metrics = Arc::new(ServerMetrics::new());
    for t in jq_core::events::ALL_TOPICS {
        metrics.kafka_publish_errors.with_label_values(&[t]).inc_by(0);
    }
    // Every FR-040 series exists from the start, even before (or without)
    // its first event, so dashboards and alerts see zeros, not gaps.
    for op in locks::OPERATIONS {
        metrics.redis_op_duration.with_label_values(&[op]);
    }
    metrics.redis_degraded.set(0);
    let opts = store_options(&cfg.db);
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
    let store = Store::connect_lazy(&cfg.db.url, &opts)?
        .with_observer(Arc::new(Observer(metrics.clone())))
        .with_transition_observer(effects.clone());
    // The lanes and the dispatcher each keep a connection (ADR 0010).
    let worker_calls = {
        let (store, effects) = (store.pinned(), effects.clone());
        batch::Batcher::spawn(BATCH_LANES, BATCH_MAX, move |calls: Vec<jq_store::WorkerCall>| {
            let (store, effects) = (store.clone(), effects.clone());
            async move {
                let out = store.worker_calls_many(&calls).await;
                // Started jobs' dispatch locks, released before the acks
                // are answered: one pipelined release for the batch.
                effects.release_locks().await;
                out
            }
        })
    };
    let submits = {
        let store = store.pinned();
        batch::Batcher::spawn(SUBMIT_LANES, BATCH_MAX, move |jobs: Vec<jq_core::NewJob>| {
            let store = store.clone();
            async move { store.submit_each(&jobs).await }
        })
    };
    let shared = Arc::new(Shared {
        store: store.clone(),
        registry,
        effects,
        metrics: metrics.clone(),
        cfg: cfg.clone(),
        locks,
        worker_calls,
        submits,
        wakes: Arc::new(WakeOthers {
            store: store.clone(),
            in_flight: AtomicBool::new(false),
            again: AtomicBool::new(false),
        }),
        migrated: AtomicBool::new(false),
    });

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
            store.close().await;
            return Err(anyhow::anyhow!("{e}"));
        }
        Err(e) => {
            tracing::warn!(error = %e, "database not ready at start; retrying in the background (readyz is false until then)")
        }
        Ok(()) => {}
    }

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = vec![];
    if !shared.migrated.load(Ordering::Acquire) {
        let s = shared.clone();
        let mut stop = stop_rx.clone();
        tasks.push(tokio::spawn(async move {
            while !s.migrated.load(Ordering::Acquire) {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                    _ = stop.changed() => return,
                }
                if let Err(e) = prepare(&s).await {
                    tracing::warn!(error = %e, "database still not ready");
                }
            }
            tracing::info!("database ready");
        }));
    }

    let sc = &cfg.scheduler;
    tasks.push(tokio::spawn(
        dispatcher::Dispatcher {
            store: shared.store.pinned(),
            shared: shared.clone(),
            batch_size: sc.batch_size,
            interval: Duration::from_millis(sc.interval_ms),
        }
        .run(stop_rx.clone()),
    ));
    let reap_every = Duration::from_millis(sc.reaper_interval_ms);
    let assignment_timeout = Duration::from_secs(sc.assignment_timeout_s);
    let hb_timeout = Duration::from_secs(sc.worker_heartbeat_timeout_s);
    {
        let s = shared.clone();
        tasks.push(tokio::spawn(reaper::every(
            "assignment_timeout",
            reap_every,
            stop_rx.clone(),
            move || {
                let s = s.clone();
                async move {
                    reaper::assignment_timeout::pass(&s, assignment_timeout).await;
                }
            },
        )));
        let s = shared.clone();
        tasks.push(tokio::spawn(reaper::every(
            "dead_workers",
            reap_every,
            stop_rx.clone(),
            move || {
                let s = s.clone();
                async move {
                    reaper::dead_workers::pass(&s, hb_timeout).await;
                }
            },
        )));
        let s = shared.clone();
        tasks.push(tokio::spawn(reaper::every(
            "ttl",
            reap_every,
            stop_rx.clone(),
            move || {
                let s = s.clone();
                async move {
                    reaper::ttl::pass(&s).await;
                }
            },
        )));
        let s = shared.clone();
        tasks.push(tokio::spawn(reaper::every(
            "gauges",
            Duration::from_secs(2),
            stop_rx.clone(),
            move || {
                let s = s.clone();
                async move { reaper::gauges::pass(&s).await }
            },
        )));
        let s = shared.clone();
        tasks.push(tokio::spawn(reaper::every(
            "statistics",
            Duration::from_secs(1),
            stop_rx.clone(),
            move || {
                let s = s.clone();
                async move { reaper::statistics::pass(&s).await }
            },
        )));
    }
    // SPEC §9: the outbox relay, when Kafka is configured.
    if !cfg.kafka.brokers.trim().is_empty() {
        let r = relay::Relay::new(shared.clone())?;
        tasks.push(tokio::spawn(r.run(stop_rx.clone())));
    }
    {
        let s = shared.clone();
        let retention = Duration::from_secs(cfg.kafka.outbox_retention_s);
        tasks.push(tokio::spawn(reaper::every(
            "outbox_prune",
            Duration::from_secs(60),
            stop_rx.clone(),
            move || {
                let s = s.clone();
                async move {
                    match s.store.outbox_prune(retention).await {
                        Ok(n) if n > 0 => tracing::debug!(pruned = n, "sent outbox events pruned"),
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, "outbox prune failed"),
                    }
                }
            },
        )));
    }
    // JQ-120: wake on submits made through other replicas.
    {
        let s = shared.clone();
        let mut stop = stop_rx.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let mut listener = match s.store.listen_wake().await {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::debug!(error = %e, "cannot LISTEN yet; retrying");
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_secs(2)) => continue,
                            _ = stop.changed() => return,
                        }
                    }
                };
                loop {
                    tokio::select! {
                        n = listener.recv() => match n {
                            Ok(n) if s.store.own_wake(&n) => {}
                            Ok(_) => s.registry.wake(),
                            Err(e) => {
                                tracing::debug!(error = %e, "LISTEN connection lost; reconnecting");
                                break;
                            }
                        },
                        _ = stop.changed() => return,
                    }
                }
            }
        }));
    }

    let health = jq_telemetry::http::health_router(Arc::new(Ready(shared.clone())));
    let metrics_router = jq_telemetry::http::server_metrics_router(metrics.clone());
    for (l, router) in [(health_l, health), (metrics_l, metrics_router)] {
        let mut stop = stop_rx.clone();
        tasks.push(tokio::spawn(async move {
            let signal = async move {
                let _ = stop.changed().await;
            };
            if let Err(e) = jq_telemetry::http::serve(l, router, signal).await {
                tracing::warn!(error = %e, "http server failed");
            }
        }));
    }

    let max = cfg.server.max_message_bytes as usize;
    let mut stop = stop_rx.clone();
    let tokens = if cfg.auth.enabled {
        let pairs = jq_config::server::parse_tokens(&cfg.auth.tokens).map_err(|e| anyhow::anyhow!(e))?;
        tracing::info!(tokens = pairs.len(), "bearer-token auth on");
        Some(grpc::auth::Tokens::new(pairs))
    } else {
        None
    };
    let mut builder = tonic::transport::Server::builder();
    if cfg.tls.enabled {
        builder = builder.tls_config(tls_config(&cfg.tls)?)?;
        tracing::info!(client_certs_required = !cfg.tls.ca.is_empty(), "TLS on");
    }
    // Standard grpc.health.v1 (Kubernetes gRPC probes) and reflection
    // (grpcurl) work without our protos.
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    for name in [
        "jq.v1.JobService",
        "jq.v1.WorkerService",
        "jq.v1.AdminService",
        "",
    ] {
        health_reporter
            .set_service_status(name, tonic_health::ServingStatus::Serving)
            .await;
    }
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(jq_proto::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let grpc = builder
        .layer(grpc::layer::RequestLayer {
            metrics: metrics.clone(),
        })
        .layer(grpc::auth::AuthLayer { tokens })
        .add_service(health_service)
        .add_service(reflection)
        .add_service(
            JobServiceServer::new(grpc::job::Jobs(shared.clone()))
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
        )
        .add_service(
            WorkerServiceServer::new(grpc::worker::Workers(shared.clone()))
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
        )
        .add_service(
            AdminServiceServer::new(grpc::admin::Admin(shared.clone()))
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
        )
        .serve_with_incoming_shutdown(
            // No Nagle: pushed assignments and small replies must leave at
            // once, not wait for the peer's delayed ACK (~40 ms per hop).
            tokio_stream::StreamExt::map(tokio_stream::wrappers::TcpListenerStream::new(grpc_l), |s| {
                s.and_then(|s| {
                    s.set_nodelay(true)?;
                    Ok(s)
                })
            }),
            async move {
                let _ = stop.changed().await;
            },
        );
    let grpc = tokio::spawn(grpc);
    tracing::info!(%grpc_addr, %health_addr, %metrics_addr, version = VERSION, "jq-server started");
    Ok(Running {
        grpc_addr,
        health_addr,
        metrics_addr,
        shared,
        stop: stop_tx,
        tasks,
        grpc,
    })
}
