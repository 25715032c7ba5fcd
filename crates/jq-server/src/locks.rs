//! Per-job dispatch locks in Redis (FR-015): `{prefix}lock:job:<job_id>`,
//! `SET NX PX` with the assignment timeout, value = this server's instance
//! id, released only by its owner (compare-and-delete script).
//!
//! A second guard, never the first: PostgreSQL's claim already guarantees
//! single assignment (NFR-008/009). When Redis is unreachable the server
//! keeps dispatching on PostgreSQL alone, says so once in the log and in
//! `jq_redis_degraded`, and picks Redis up again when it returns. Losing
//! Redis loses no job.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use jq_telemetry::ServerMetrics;
use redis::aio::ConnectionManager;
use uuid::Uuid;

/// Longest a Redis call may hold up a dispatcher cycle.
const OP_TIMEOUT: Duration = Duration::from_millis(500);

const RELEASE: &str =
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end";

/// `operation` labels of `jq_redis_operation_duration_seconds`.
pub const OPERATIONS: [&str; 2] = ["lock_acquire", "lock_release"];
pub struct Locks {
    conn: Option<ConnectionManager>,
    prefix: String,
    owner: String,
    ttl: Duration,
    metrics: Arc<ServerMetrics>,
    degraded: AtomicBool,
    release: redis::Script,
}

/// A client for `cfg.url` with its password and, for `rediss://`, its TLS
/// files (`redis.tls_ca`, `redis.tls_cert`/`tls_key`; without a CA the
/// system's trust store). The dispatch locks and `--dry-run` both use it,
/// so the check tries exactly what the server will.
pub fn client(cfg: &jq_config::server::Redis) -> anyhow::Result<redis::Client> {
    let mut info: redis::ConnectionInfo = redis::IntoConnectionInfo::into_connection_info(cfg.url.as_str())?;
    if !cfg.password.is_empty() {
        let settings = info.redis_settings().clone().set_password(&cfg.password);
        info = info.set_redis_settings(settings);
    }
    if !cfg.url.starts_with("rediss://") {
        return Ok(redis::Client::open(info)?);
    }
    let read = |what: &str, path: &str| -> anyhow::Result<Option<Vec<u8>>> {
        if path.is_empty() {
            return Ok(None);
        }
        std::fs::read(path)
            .map(Some)
            .map_err(|e| anyhow::anyhow!("cannot read redis.{what} {path}: {e}"))
    };
    let root_cert = read("tls_ca", &cfg.tls_ca)?;
    let client_tls = match (read("tls_cert", &cfg.tls_cert)?, read("tls_key", &cfg.tls_key)?) {
        (Some(client_cert), Some(client_key)) => Some(redis::ClientTlsConfig {
            client_cert,
            client_key,
        }),
        _ => None,
    };
    Ok(redis::Client::build_with_tls(
        info,
        redis::TlsCertificates {
            client_tls,
            root_cert,
        },
    )?)
}

impl Locks {
    /// `cfg.url` empty: no Redis at all (single-instance mode by choice).
    pub fn new(
        cfg: &jq_config::server::Redis,
        ttl: Duration,
        metrics: Arc<ServerMetrics>,
    ) -> anyhow::Result<Locks> {
        let prefix = &cfg.key_prefix;
        let conn = if cfg.url.is_empty() {
            None
        } else {
            let client = client(cfg)?;
            let cfg = redis::aio::ConnectionManagerConfig::new()
                .set_connection_timeout(Some(OP_TIMEOUT))
                .set_response_timeout(Some(OP_TIMEOUT))
                .set_number_of_retries(1);
            Some(ConnectionManager::new_lazy_with_config(client, cfg)?)
        };
        Ok(Locks {
            conn,
            prefix: prefix.to_string(),
            owner: format!("{}:{}", hostname(), Uuid::new_v4().simple()),
            ttl,
            metrics,
            degraded: AtomicBool::new(false),
            release: redis::Script::new(RELEASE),
        })
    }

    pub fn key(&self, job: Uuid) -> String {
        format!("{}lock:job:{job}", self.prefix)
    }

    pub fn owner(&self) -> &str {
        &self.owner
    }

    fn observe(&self, op: &str, start: Instant) {
        self.metrics
            .redis_op_duration
            .with_label_values(&[op])
            .observe(start.elapsed().as_secs_f64());
    }

    fn health(&self, ok: bool, error: Option<&redis::RedisError>) {
        let was = self.degraded.swap(!ok, Ordering::AcqRel);
        self.metrics.redis_degraded.set(i64::from(!ok));
        match (was, ok) {
            (false, false) => tracing::warn!(
                error = %error.map(|e| e.to_string()).unwrap_or_else(|| "timeout".into()),
                "Redis unreachable: dispatching on PostgreSQL alone (single assignment still guaranteed)"
            ),
            (true, true) => tracing::info!("Redis reachable again: dispatch locks back on"),
            _ => {}
        }
    }

    /// Take the locks of `jobs` in one pipelined round trip. `true` for a
    /// job we may dispatch: locked by us, or Redis is unavailable.
    pub async fn acquire(&self, jobs: &[Uuid]) -> Vec<bool> {
        let Some(conn) = &self.conn else {
            return vec![true; jobs.len()];
        };
        if jobs.is_empty() {
            return vec![];
        }
        let mut pipe = redis::pipe();
        for j in jobs {
            pipe.cmd("SET")
                .arg(self.key(*j))
                .arg(&self.owner)
                .arg("NX")
                .arg("PX")
                .arg(self.ttl.as_millis() as u64);
        }
        let start = Instant::now();
        let mut c = conn.clone();
        let res = tokio::time::timeout(OP_TIMEOUT, pipe.query_async::<Vec<Option<String>>>(&mut c)).await;
        self.observe(OPERATIONS[0], start);
        match res {
            Ok(Ok(v)) => {
                self.health(true, None);
                v.into_iter().map(|r| r.is_some()).collect()
            }
            Ok(Err(e)) => {
                self.health(false, Some(&e));
                vec![true; jobs.len()]
            }
            Err(_) => {
                self.health(false, None);
                vec![true; jobs.len()]
            }
        }
    }

    /// Release our lock of `job` (no-op when another owner holds it).
    pub async fn release(&self, job: Uuid) {
        let Some(conn) = &self.conn else { return };
        if self.degraded.load(Ordering::Acquire) {
            return;
        }
        let start = Instant::now();
        let mut c = conn.clone();
        let mut inv = self.release.key(self.key(job));
        inv.arg(&self.owner);
        let res = tokio::time::timeout(OP_TIMEOUT, inv.invoke_async::<i64>(&mut c)).await;
        self.observe(OPERATIONS[1], start);
        match res {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => self.health(false, Some(&e)),
            Err(_) => self.health(false, None),
        }
    }

    /// Release our locks of `jobs` in one pipelined round trip (the batch
    /// of acks that started them).
    pub async fn release_many(&self, jobs: &[Uuid]) {
        let Some(conn) = &self.conn else { return };
        if jobs.is_empty() || self.degraded.load(Ordering::Acquire) {
            return;
        }
        let mut pipe = redis::pipe();
        for j in jobs {
            pipe.cmd("EVAL")
                .arg(RELEASE)
                .arg(1)
                .arg(self.key(*j))
                .arg(&self.owner)
                .ignore();
        }
        let start = Instant::now();
        let mut c = conn.clone();
        let res = tokio::time::timeout(OP_TIMEOUT, pipe.query_async::<()>(&mut c)).await;
        self.observe(OPERATIONS[1], start);
        match res {
            Ok(Ok(())) => {}
            Ok(Err(e)) => self.health(false, Some(&e)),
            Err(_) => self.health(false, None),
        }
    }

    pub fn degraded(&self) -> bool {
        self.conn.is_some() && self.degraded.load(Ordering::Acquire)
    }
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .unwrap_or_else(|| "jq-server".into())
}
