//! # jq-bench
//!
//! The load generator (issue 8). Each scenario starts a fresh database, a
//! real `jq-server` child process (so its RSS is its own) and, where the
//! scenario needs them, workers in this process running the stock `noop`
//! handler over real gRPC connections. Results are one JSON line each plus
//! a table; `docs/benchmarks.md` records them.
//!
//! # Layout
//! - [`Env`]: database, server process, clients, workers for one scenario.
//! - [`scenarios`]: the named scenarios.
//! - [`Stats`]: percentiles of a sample.
//! - [`kafka`]: reading back what the relay published (the `events` scenario).

pub mod kafka;
pub mod scenarios;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use jq_client::{Clients, Target};
use jq_proto::v1;
use jq_store::{Store, StoreOptions};
use tokio::process::{Child, Command};

/// What every scenario needs to know.
#[derive(Debug, Clone)]
pub struct Settings {
    /// A PostgreSQL URL with rights to create databases.
    pub admin_url: String,
    /// Redis for the server's dispatch locks; empty for none.
    pub redis_url: String,
    /// The jq-server binary to run.
    pub server_bin: PathBuf,
    /// Extra JQ_* settings for the server.
    pub server_env: Vec<(String, String)>,
}

/// A percentile summary in milliseconds.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Stats {
    pub n: usize,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Stats {
    pub fn of(mut ms: Vec<f64>) -> Stats {
        ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let at = |q: f64| {
            if ms.is_empty() {
                return 0.0;
            }
            let i = ((ms.len() as f64 - 1.0) * q).round() as usize;
            ms[i]
        };
        Stats {
            n: ms.len(),
            p50_ms: at(0.50),
            p90_ms: at(0.90),
            p95_ms: at(0.95),
            p99_ms: at(0.99),
            max_ms: at(1.0),
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// One scenario's world.
pub struct Env {
    pub db_url: String,
    pub store: Store,
    pub server: Child,
    pub addr: String,
    /// The server's `/metrics` port.
    pub metrics_port: u16,
    pub clients: Clients,
    pub workers: Vec<jq_worker::RunningWorker>,
}

impl Env {
    pub async fn start(s: &Settings, name: &str) -> anyhow::Result<Env> {
        let db = format!("jq_bench_{}", name.replace('-', "_"));
        jq_store::bench::recreate_database(&s.admin_url, &db).await?;
        let (base, _) = s
            .admin_url
            .rsplit_once('/')
            .ok_or_else(|| anyhow::anyhow!("admin URL has no database"))?;
        let db_url = format!("{base}/{db}");
        let port = free_port();
        let metrics_port = free_port();
        let server = Command::new(&s.server_bin)
            .env("JQ_DB_URL", &db_url)
            .env("JQ_REDIS_URL", &s.redis_url)
            .env("JQ_LOG_LEVEL", "warn")
            .env("JQ_SERVER_BIND", "127.0.0.1")
            .envs(s.server_env.iter().cloned())
            .args([
                "--grpc-port",
                &port.to_string(),
                "--health-port",
                "0",
                "--metrics-port",
                &metrics_port.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot start {}: {e}", s.server_bin.display()))?;
        let addr = format!("127.0.0.1:{port}");
        let target = Target {
            request_timeout: Some(Duration::from_secs(60)),
            ..Target::new(addr.clone())
        };
        let t0 = Instant::now();
        let clients = loop {
            if let Ok(mut c) = target.connect().await
                && c.admin
                    .get_system_status(v1::GetSystemStatusRequest {})
                    .await
                    .is_ok()
            {
                break c;
            }
            if t0.elapsed() > Duration::from_secs(60) {
                anyhow::bail!("jq-server did not come up on {addr}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let store = Store::connect(&db_url, &StoreOptions::default()).await?;
        Ok(Env {
            db_url,
            store,
            server,
            addr,
            metrics_port,
            clients,
            workers: vec![],
        })
    }

    /// Start `n` in-process workers with `concurrency` slots each.
    pub async fn add_workers(&mut self, n: usize, concurrency: u32) -> anyhow::Result<()> {
        for i in 0..n {
            let mut c = jq_config::WorkerConfig::default();
            c.worker.server_addr = self.addr.clone();
            c.worker.id = format!("bench-w{}", self.workers.len() + i);
            c.worker.concurrency = concurrency;
            c.worker.bind = "127.0.0.1".into();
            c.worker.health_port = 0;
            c.worker.metrics_port = 0;
            self.workers
                .push(jq_worker::start(c, jq_worker::Handlers::builtin()).await?);
        }
        // Until the server knows them all.
        let t0 = Instant::now();
        loop {
            let st = self
                .clients
                .admin
                .get_system_status(v1::GetSystemStatusRequest {})
                .await?;
            if st.into_inner().active_workers as usize >= self.workers.len() {
                return Ok(());
            }
            if t0.elapsed() > Duration::from_secs(60) {
                anyhow::bail!("workers did not all connect");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The server's `/metrics` text.
    pub async fn server_metrics(&self) -> anyhow::Result<String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut c = tokio::net::TcpStream::connect(("127.0.0.1", self.metrics_port)).await?;
        c.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .await?;
        let mut body = String::new();
        c.read_to_string(&mut body).await?;
        Ok(body
            .split_once("\r\n\r\n")
            .map_or(body.clone(), |(_, b)| b.to_string()))
    }

    /// Resident set size of the server process, in MiB.
    pub fn server_rss_mib(&self) -> f64 {
        let Some(pid) = self.server.id() else {
            return 0.0;
        };
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|kb| kb.parse::<f64>().ok())
            })
            .map(|kb| kb / 1024.0)
            .unwrap_or(0.0)
    }

    pub async fn stop(mut self) {
        for w in self.workers.drain(..) {
            w.shutdown().await;
        }
        let _ = self.server.kill().await;
    }

    /// Wait until no job of `queue` is open (all `n` submitted are
    /// finished); the elapsed time since `since`.
    pub async fn wait_done(&self, queue: &str, n: u64, since: Instant) -> anyhow::Result<Duration> {
        loop {
            if !self.store.bench_any_open(queue).await? {
                let took = since.elapsed();
                let done = self.store.bench_timelines(queue).await?.len() as u64;
                anyhow::ensure!(done == n, "{done} of {n} jobs DONE");
                return Ok(took);
            }
            if since.elapsed() > Duration::from_secs(600) {
                anyhow::bail!("jobs did not finish within 10 minutes");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The payload every benchmark job carries: the in-process no-op handler.
pub const NOOP: &[u8] = br#"{"handler":"noop"}"#;

pub fn noop_spec(queue: &str) -> v1::JobSpec {
    v1::JobSpec {
        queue: queue.into(),
        payload: NOOP.to_vec(),
        ..Default::default()
    }
}
