//! A real jq-server (in-process, real PostgreSQL) for the worker to talk
//! to, and the client calls the tests make as an operator would.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use jq_client::{Clients, Target};
use jq_config::{ServerConfig, WorkerConfig};
use jq_proto::v1;
use jq_server::Running;
use jq_testkit::TestDb;

pub fn server_config(db: &TestDb, port: u16) -> ServerConfig {
    let mut c = ServerConfig::default();
    c.db.url = db.url.clone();
    c.server.bind = "127.0.0.1".into();
    c.server.grpc_port = port;
    c.server.health_port = 0;
    c.server.metrics_port = 0;
    c.redis.url = String::new();
    c.scheduler.interval_ms = 100;
    c.scheduler.reaper_interval_ms = 100;
    // Heartbeat answers carry cancels and stale leases: keep them quick.
    c.scheduler.heartbeat_interval_s = 1;
    c
}

pub fn worker_config(addr: SocketAddr, id: &str, queues: &[&str], concurrency: u32) -> WorkerConfig {
    let mut c = WorkerConfig::default();
    c.worker.server_addr = addr.to_string();
    c.worker.id = id.into();
    c.worker.queues = queues.iter().map(|q| q.to_string()).collect();
    c.worker.concurrency = concurrency;
    c.worker.bind = "127.0.0.1".into();
    c.worker.health_port = 0;
    c.worker.metrics_port = 0;
    c.worker.reconnect_min_ms = 50;
    c.worker.reconnect_max_ms = 500;
    c.exec.kill_grace_s = 1;
    c
}

pub struct Env {
    pub db: TestDb,
    pub server: Running,
    pub api: Clients,
}

pub async fn start() -> Env {
    let db = TestDb::new().await;
    let cfg = server_config(&db, 0);
    start_with(db, cfg).await
}

/// A server on `db` with `cfg`, and an operator's clients for it.
pub async fn start_with(db: TestDb, cfg: ServerConfig) -> Env {
    let server = jq_server::start(cfg).await.unwrap();
    let api = Target::new(server.grpc_addr.to_string()).connect().await.unwrap();
    Env { db, server, api }
}

/// A server with its own heartbeat interval and timeout (seconds).
pub async fn start_heartbeats(interval_s: u64, timeout_s: u64) -> Env {
    let db = TestDb::new().await;
    let mut cfg = server_config(&db, 0);
    cfg.scheduler.heartbeat_interval_s = interval_s;
    cfg.scheduler.worker_heartbeat_timeout_s = timeout_s;
    start_with(db, cfg).await
}

pub fn job(queue: &str, payload: &str) -> v1::JobSpec {
    v1::JobSpec {
        queue: queue.into(),
        payload: payload.as_bytes().to_vec(),
        ..Default::default()
    }
}

impl Env {
    pub fn addr(&self) -> SocketAddr {
        self.server.grpc_addr
    }

    pub async fn submit(&mut self, spec: v1::JobSpec) -> String {
        self.api
            .jobs
            .submit_job(v1::SubmitJobRequest { job: Some(spec) })
            .await
            .unwrap()
            .into_inner()
            .job_id
    }

    pub async fn job(&mut self, id: &str) -> v1::Job {
        self.api
            .jobs
            .get_job(v1::GetJobRequest { job_id: id.into() })
            .await
            .unwrap()
            .into_inner()
            .job
            .unwrap()
    }

    /// Bounded wait for a status; a condition, not a speed assertion.
    pub async fn wait_status(&mut self, id: &str, status: v1::JobStatus) -> v1::Job {
        let mut last = None;
        for _ in 0..600 {
            let j = self.job(id).await;
            if j.status == status as i32 {
                return j;
            }
            last = Some(j);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("job {id} never reached {status:?}; last {last:?}");
    }

    pub async fn events(&mut self, id: &str) -> Vec<v1::JobEvent> {
        self.api
            .jobs
            .get_job_events(v1::GetJobEventsRequest { job_id: id.into() })
            .await
            .unwrap()
            .into_inner()
            .events
    }

    pub async fn worker(&mut self, id: &str) -> Option<v1::Worker> {
        self.api
            .admin
            .list_workers(v1::ListWorkersRequest {
                include_offline: true,
            })
            .await
            .unwrap()
            .into_inner()
            .workers
            .into_iter()
            .find(|w| w.id == id)
    }

    pub async fn wait_worker(&mut self, id: &str, status: v1::WorkerStatus) -> v1::Worker {
        for _ in 0..600 {
            if let Some(w) = self.worker(id).await
                && w.status == status as i32
            {
                return w;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "worker {id} never reached {status:?}: {:?}",
            self.worker(id).await
        );
    }
}

/// Poll `f` until true (bounded).
pub async fn until(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..600 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for {what}");
}

pub fn result_json(j: &v1::Job) -> serde_json::Value {
    serde_json::from_slice(&j.result).unwrap_or_else(|e| panic!("result is not JSON ({e}): {:?}", j.result))
}

/// True while a process with this pid exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s
            .rsplit_once(')')
            .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
            .unwrap_or(false),
        Err(_) => false,
    }
}

pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: t\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.unwrap();
    let code = buf
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (
        code,
        buf.split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default(),
    )
}
