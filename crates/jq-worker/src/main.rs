//! jq-worker binary: parse flags, load configuration, run until SIGTERM,
//! SIGINT or the server's Shutdown, then stop gracefully (NFR-015).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use jq_config::WorkerConfig;
use jq_worker::Handlers;

/// jq worker: registers with jq-server, runs jobs (subprocess argv or a
/// built-in handler) within its concurrency limit and reports results.
#[derive(Parser, Debug)]
#[command(name = "jq-worker", version = jq_worker::VERSION, after_help = "\
Payloads: {\"command\":[\"prog\",\"arg\"],\"env\":{..},\"timeout_s\":N,\"cwd\":\"dir\"} runs a subprocess (argv only, no shell,
cleared environment plus exec.env_allowlist, own process group); {\"handler\":\"echo\",\"input\":..} runs a built-in
handler (noop, echo).

Configuration: defaults < --config FILE < JQ_* environment (worker.concurrency -> JQ_WORKER_CONCURRENCY) < flags.
The token comes from JQ_AUTH_TOKEN only.

Signals: SIGTERM/SIGINT stop taking work, let running jobs finish (worker.shutdown_grace_s, 60 s), deregister, exit 0.

Examples:
  jq-worker --server-addr localhost:50051 --queues default,emails --concurrency 8
  jq-worker --config /etc/jq/worker.yaml --worker-id worker-a")]
struct Args {
    /// YAML configuration file.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// jq-server address, host:port or https://host:port (worker.server_addr).
    #[arg(long, env = "JQ_SERVER_ADDR")]
    server_addr: Option<String>,
    /// Stable worker id (worker.id; default <hostname>-<pid>).
    #[arg(long)]
    worker_id: Option<String>,
    /// Most jobs run at once (worker.concurrency, default 4).
    #[arg(long)]
    concurrency: Option<u32>,
    /// Comma-separated queues to take jobs from (worker.queues, default
    /// "default"); `critical:3,default:1` fills the slots in proportion
    /// while both have work (JQ-123).
    #[arg(long, value_delimiter = ',')]
    queues: Option<Vec<String>>,
    /// Prometheus /metrics port (worker.metrics_port, default 9091).
    #[arg(long)]
    metrics_port: Option<u16>,
    /// /healthz and /readyz port (worker.health_port, default 8081).
    #[arg(long)]
    health_port: Option<u16>,
    /// Log level or filter, e.g. info or jq_worker=debug (log.level).
    #[arg(long)]
    log_level: Option<String>,
    /// PEM CA of the server certificate (tls.ca); turns TLS on.
    #[arg(long, value_name = "FILE")]
    tls_ca: Option<String>,
    /// PEM client certificate for mTLS (tls.cert).
    #[arg(long, value_name = "FILE")]
    tls_cert: Option<String>,
    /// PEM client key for mTLS (tls.key).
    #[arg(long, value_name = "FILE")]
    tls_key: Option<String>,
}

impl Args {
    fn apply(self, c: &mut WorkerConfig) {
        let set = |dst: &mut String, v: Option<String>| {
            if let Some(v) = v {
                *dst = v;
            }
        };
        set(&mut c.worker.server_addr, self.server_addr);
        set(&mut c.worker.id, self.worker_id);
        set(&mut c.log.level, self.log_level);
        set(&mut c.tls.ca, self.tls_ca);
        set(&mut c.tls.cert, self.tls_cert);
        set(&mut c.tls.key, self.tls_key);
        if let Some(n) = self.concurrency {
            c.worker.concurrency = n;
        }
        if let Some(q) = self.queues {
            c.worker.queues = q.into_iter().map(|q| q.trim().to_string()).collect();
        }
        if let Some(p) = self.metrics_port {
            c.worker.metrics_port = p;
        }
        if let Some(p) = self.health_port {
            c.worker.health_port = p;
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let loaded = match jq_config::load::<WorkerConfig>(args.config.as_deref(), std::env::vars()) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("jq-worker: {e}");
            return ExitCode::from(2);
        }
    };
    let mut cfg = loaded.config;
    args.apply(&mut cfg);
    // Flags can break what the file and environment got right.
    let problems = jq_config::Config::problems(&cfg);
    if !problems.is_empty() {
        eprintln!(
            "jq-worker: invalid configuration:\n  - {}",
            problems.join("\n  - ")
        );
        return ExitCode::from(2);
    }
    if let Err(e) = jq_telemetry::logging::init("jq-worker", &cfg.log.level, &cfg.log.format) {
        eprintln!("jq-worker: {e}");
        return ExitCode::from(2);
    }
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }
    let mut running = match jq_worker::start(cfg, Handlers::builtin()).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            eprintln!("jq-worker: {e}");
            return ExitCode::from(if matches!(e, jq_worker::WorkerError::Client(_)) {
                2
            } else {
                1
            });
        }
    };
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping gracefully"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: stopping gracefully"),
        _ = running.wait() => {}
    }
    running.shutdown().await;
    ExitCode::SUCCESS
}
