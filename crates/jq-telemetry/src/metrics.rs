//! The server's Prometheus registry. Names and labels are part of the
//! contract (SPEC FR-040); dashboards and alerts depend on them.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Buckets for fast operations (DB, Redis, gRPC, scheduler): 0.5 ms .. 10 s.
const FAST: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Buckets for job run times: 10 ms .. 1 h.
const JOBS: &[f64] = &[
    0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];

/// The text exposition format of a registry.
fn exposition(registry: &Registry) -> String {
    let mut buf = vec![];
    TextEncoder::new()
        .encode(&registry.gather(), &mut buf)
        .expect("text encoding");
    String::from_utf8(buf).expect("utf-8")
}

pub struct ServerMetrics {
    registry: Registry,
    pub queue_depth: IntGaugeVec,
    pub processing_duration: HistogramVec,
    pub job_total: IntCounterVec,
    pub worker_active: IntGauge,
    pub worker_concurrency: IntGaugeVec,
    pub grpc_duration: HistogramVec,
    pub scheduler_cycle: Histogram,
    pub scheduler_assigned: IntCounterVec,
    pub kafka_publish_errors: IntCounterVec,
    pub db_query_duration: HistogramVec,
    pub redis_op_duration: HistogramVec,
    /// jq+: outbox rows not yet acknowledged by Kafka.
    pub outbox_backlog: IntGauge,
    /// Age of the oldest transaction holding the database server's horizon.
    pub db_oldest_transaction: prometheus::Gauge,
    /// JQ-161: age of the oldest committed event not yet published.
    pub outbox_lag: prometheus::Gauge,
    /// jq+: time from submission to a worker starting the job.
    pub submit_to_start: Histogram,
    /// jq+: whether the server runs without Redis (1) or with it (0).
    pub redis_degraded: IntGauge,
    /// jq+: jobs periodic schedules submitted (JQ-124).
    pub schedule_fires: IntCounterVec,
    /// jq+: how late the most overdue schedule is (0 when none is due).
    pub schedule_lag: prometheus::Gauge,
}

fn hist(name: &str, help: &str, buckets: &[f64]) -> HistogramOpts {
    HistogramOpts::new(name, help).buckets(buckets.to_vec())
}

impl ServerMetrics {
    pub fn new() -> ServerMetrics {
        let r = Registry::new();
        let m = ServerMetrics {
            queue_depth: IntGaugeVec::new(
                Opts::new("jq_job_queue_depth", "Jobs per queue and status."),
                &["queue", "status"],
            )
            .unwrap(),
            processing_duration: HistogramVec::new(
                hist(
                    "jq_job_processing_duration_seconds",
                    "Run time of finished attempts.",
                    JOBS,
                ),
                &["queue"],
            )
            .unwrap(),
            job_total: IntCounterVec::new(
                Opts::new(
                    "jq_job_total",
                    "Transitions into a status, per queue: one per job_events row.",
                ),
                &["queue", "status"],
            )
            .unwrap(),
            worker_active: IntGauge::new("jq_worker_active_count", "Workers connected to this server.")
                .unwrap(),
            worker_concurrency: IntGaugeVec::new(
                Opts::new(
                    "jq_worker_job_concurrency",
                    "Jobs in flight per connected worker.",
                ),
                &["worker_id"],
            )
            .unwrap(),
            grpc_duration: HistogramVec::new(
                hist("jq_grpc_request_duration_seconds", "gRPC request duration.", FAST),
                &["method", "status_code"],
            )
            .unwrap(),
            scheduler_cycle: Histogram::with_opts(hist(
                "jq_scheduler_cycle_duration_seconds",
                "Duration of one dispatcher cycle.",
                FAST,
            ))
            .unwrap(),
            scheduler_assigned: IntCounterVec::new(
                Opts::new("jq_scheduler_jobs_assigned_total", "Jobs assigned to workers."),
                &["queue"],
            )
            .unwrap(),
            kafka_publish_errors: IntCounterVec::new(
                Opts::new(
                    "jq_kafka_publish_errors_total",
                    "Failed Kafka publishes per topic.",
                ),
                &["topic"],
            )
            .unwrap(),
            db_query_duration: HistogramVec::new(
                hist(
                    "jq_db_query_duration_seconds",
                    "Duration of store operations.",
                    FAST,
                ),
                &["query_name"],
            )
            .unwrap(),
            redis_op_duration: HistogramVec::new(
                hist(
                    "jq_redis_operation_duration_seconds",
                    "Duration of Redis operations.",
                    FAST,
                ),
                &["operation"],
            )
            .unwrap(),
            outbox_backlog: IntGauge::new("jq_outbox_backlog", "Outbox events not yet published to Kafka.")
                .unwrap(),
            db_oldest_transaction: prometheus::Gauge::new(
                "jq_db_oldest_transaction_seconds",
                "Age of the oldest transaction open on the PostgreSQL server that holds its horizon back (0 when none).",
            )
            .unwrap(),
            outbox_lag: prometheus::Gauge::new(
                "jq_outbox_lag_seconds",
                "Age of the oldest committed event not yet published to Kafka (0 when none is waiting).",
            )
            .unwrap(),
            submit_to_start: Histogram::with_opts(hist(
                "jq_job_submit_to_start_seconds",
                "Time from submission to a worker starting the job.",
                FAST,
            ))
            .unwrap(),
            redis_degraded: IntGauge::new(
                "jq_redis_degraded",
                "1 while Redis is unreachable and the server runs on PostgreSQL alone.",
            )
            .unwrap(),
            schedule_fires: IntCounterVec::new(
                Opts::new("jq_schedule_fires_total", "Jobs submitted by periodic schedules."),
                &["schedule"],
            )
            .unwrap(),
            schedule_lag: prometheus::Gauge::new(
                "jq_schedule_lag_seconds",
                "How long the most overdue periodic schedule has been due (0 when none is).",
            )
            .unwrap(),
            registry: r,
        };
        let reg = &m.registry;
        reg.register(Box::new(m.queue_depth.clone())).unwrap();
        reg.register(Box::new(m.processing_duration.clone())).unwrap();
        reg.register(Box::new(m.job_total.clone())).unwrap();
        reg.register(Box::new(m.worker_active.clone())).unwrap();
        reg.register(Box::new(m.worker_concurrency.clone())).unwrap();
        reg.register(Box::new(m.grpc_duration.clone())).unwrap();
        reg.register(Box::new(m.scheduler_cycle.clone())).unwrap();
        reg.register(Box::new(m.scheduler_assigned.clone())).unwrap();
        reg.register(Box::new(m.kafka_publish_errors.clone())).unwrap();
        reg.register(Box::new(m.db_query_duration.clone())).unwrap();
        reg.register(Box::new(m.redis_op_duration.clone())).unwrap();
        reg.register(Box::new(m.outbox_backlog.clone())).unwrap();
        reg.register(Box::new(m.outbox_lag.clone())).unwrap();
        reg.register(Box::new(m.db_oldest_transaction.clone())).unwrap();
        reg.register(Box::new(m.submit_to_start.clone())).unwrap();
        reg.register(Box::new(m.redis_degraded.clone())).unwrap();
        reg.register(Box::new(m.schedule_fires.clone())).unwrap();
        reg.register(Box::new(m.schedule_lag.clone())).unwrap();
        m
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        exposition(&self.registry)
    }
}

impl Default for ServerMetrics {
    fn default() -> Self {
        ServerMetrics::new()
    }
}

/// A worker's own registry (FR-039). `jq_worker_job_concurrency` has the
/// same name and label as the server's view of it (FR-040), measured here
/// at the source.
pub struct WorkerMetrics {
    registry: Registry,
    /// Jobs running now, labelled with this worker's id.
    pub job_concurrency: IntGauge,
    /// Configured concurrency, for "how full is it" dashboards.
    pub capacity: IntGauge,
    /// Attempts finished, by queue and outcome (succeeded, failed,
    /// cancelled, abandoned).
    pub jobs: IntCounterVec,
    pub job_duration: HistogramVec,
    /// 1 while the assignment stream is open.
    pub connected: IntGauge,
    pub reconnects: IntCounter,
    /// Result reports retried because the server was unreachable.
    pub report_retries: IntCounter,
}

impl WorkerMetrics {
    pub fn new(worker_id: &str) -> WorkerMetrics {
        let r = Registry::new();
        let labelled = |name: &str, help: &str| {
            IntGauge::with_opts(Opts::new(name, help).const_label("worker_id", worker_id)).unwrap()
        };
        let m = WorkerMetrics {
            job_concurrency: labelled("jq_worker_job_concurrency", "Jobs this worker is running."),
            capacity: labelled("jq_worker_capacity", "Most jobs this worker runs at once."),
            jobs: IntCounterVec::new(
                Opts::new("jq_worker_jobs_total", "Attempts finished by this worker."),
                &["queue", "outcome"],
            )
            .unwrap(),
            job_duration: HistogramVec::new(
                hist(
                    "jq_worker_job_duration_seconds",
                    "Run time of attempts on this worker.",
                    JOBS,
                ),
                &["queue"],
            )
            .unwrap(),
            connected: IntGauge::new(
                "jq_worker_connected",
                "1 while the assignment stream to the server is open.",
            )
            .unwrap(),
            reconnects: IntCounter::new(
                "jq_worker_reconnects_total",
                "Times the worker registered again after losing the server.",
            )
            .unwrap(),
            report_retries: IntCounter::new(
                "jq_worker_report_retries_total",
                "Result reports retried while the server was unreachable.",
            )
            .unwrap(),
            registry: r,
        };
        let reg = &m.registry;
        reg.register(Box::new(m.job_concurrency.clone())).unwrap();
        reg.register(Box::new(m.capacity.clone())).unwrap();
        reg.register(Box::new(m.jobs.clone())).unwrap();
        reg.register(Box::new(m.job_duration.clone())).unwrap();
        reg.register(Box::new(m.connected.clone())).unwrap();
        reg.register(Box::new(m.reconnects.clone())).unwrap();
        reg.register(Box::new(m.report_retries.clone())).unwrap();
        m
    }

    pub fn render(&self) -> String {
        exposition(&self.registry)
    }
}
