//! jq-server binary: parse flags, load configuration, run until SIGTERM or
//! SIGINT. Everything else is in the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use jq_config::ServerConfig;

/// jq control plane: takes submissions, dispatches jobs to workers, detects
/// dead workers and timed-out assignments, retries, dead-letters and
/// publishes lifecycle events.
#[derive(Parser, Debug)]
#[command(name = "jq-server", version = jq_server::VERSION, after_help = "\
Configuration: defaults < --config FILE < JQ_* environment (db.url -> JQ_DB_URL) < flags.
Secrets (JQ_DB_PASSWORD, JQ_REDIS_PASSWORD, JQ_KAFKA_SASL_PASSWORD, JQ_AUTH_TOKENS) come from the environment only.

Examples:
  jq-server --config /etc/jq/server.yaml
  JQ_DB_URL=postgres://jq@db/jq jq-server --grpc-port 50051
  jq-server --config server.yaml --dry-run
  jq-server --dev                 # everything in one process, for a first try")]
struct Args {
    /// YAML configuration file.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// gRPC port (server.grpc_port).
    #[arg(long)]
    grpc_port: Option<u16>,
    /// Prometheus /metrics port (server.metrics_port).
    #[arg(long)]
    metrics_port: Option<u16>,
    /// /healthz and /readyz port (server.health_port).
    #[arg(long)]
    health_port: Option<u16>,
    /// Listen address of every listener (server.bind). --dev binds
    /// 127.0.0.1 unless this or JQ_SERVER_BIND says otherwise.
    #[arg(long, value_name = "ADDR")]
    bind: Option<String>,
    /// Log level or filter, e.g. info or jq_server=debug (log.level).
    #[arg(long)]
    log_level: Option<String>,
    /// Validate the configuration, check PostgreSQL, Redis and Kafka, print
    /// a summary and exit (non-zero when anything configured fails).
    #[arg(long)]
    dry_run: bool,
    /// Try jq with one command: a private PostgreSQL in --data-dir (unless
    /// JQ_DB_URL is set), no Redis or Kafka, and a worker in this process.
    /// Not for production.
    #[arg(long, conflicts_with = "dry_run")]
    dev: bool,
    /// Data folder of --dev's PostgreSQL.
    #[arg(long, value_name = "DIR", default_value = ".jq-dev", requires = "dev")]
    data_dir: PathBuf,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let loaded = match jq_config::load::<ServerConfig>(args.config.as_deref(), std::env::vars()) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("jq-server: {e}");
            return ExitCode::from(2);
        }
    };
    let mut cfg = loaded.config;
    if args.dev {
        // Quiet, readable output unless asked otherwise.
        if std::env::var_os("JQ_LOG_FORMAT").is_none() {
            cfg.log.format = "text".into();
        }
        if std::env::var_os("JQ_LOG_LEVEL").is_none() && args.log_level.is_none() {
            cfg.log.level = "warn".into();
        }
        // JQ-173: dev mode runs any argv it is sent, with auth off; only
        // this machine may reach it unless the operator says otherwise.
        if std::env::var_os("JQ_SERVER_BIND").is_none() {
            cfg.server.bind = "127.0.0.1".into();
        }
    }
    if let Some(b) = args.bind {
        cfg.server.bind = b;
    }
    if let Some(p) = args.grpc_port {
        cfg.server.grpc_port = p;
    }
    if let Some(p) = args.metrics_port {
        cfg.server.metrics_port = p;
    }
    if let Some(p) = args.health_port {
        cfg.server.health_port = p;
    }
    if let Some(l) = args.log_level {
        cfg.log.level = l;
    }
    if let Err(e) = jq_telemetry::logging::init("jq-server", &cfg.log.level, &cfg.log.format) {
        eprintln!("jq-server: {e}");
        return ExitCode::from(2);
    }
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }
    if args.dry_run {
        let source = match &args.config {
            Some(p) => format!("valid ({})", p.display()),
            None => "valid (defaults and environment)".to_string(),
        };
        let (summary, ok) = jq_server::dry_run::run(&cfg, &source).await;
        print!("{summary}");
        return if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE };
    }
    if args.dev {
        return dev_mode(cfg, &args.data_dir, std::env::var_os("JQ_DB_URL").is_some()).await;
    }
    let running = match jq_server::start(cfg).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            eprintln!("jq-server: {e}");
            return ExitCode::FAILURE;
        }
    };
    wait_for_signal().await;
    tracing::info!("signal received; shutting down");
    running.shutdown().await;
    ExitCode::SUCCESS
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// `--dev`: everything in one process until a signal (see `jq_server::dev`).
async fn dev_mode(cfg: ServerConfig, data_dir: &std::path::Path, db_given: bool) -> ExitCode {
    match jq_server::dev::run(cfg, data_dir, db_given, wait_for_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("jq-server: {e}");
            ExitCode::FAILURE
        }
    }
}
