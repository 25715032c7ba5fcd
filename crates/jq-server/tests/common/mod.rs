//! Shared helpers: a server on a test database and a fake worker that
//! speaks the WorkerService protocol.
#![allow(dead_code)]

use std::time::Duration;

use jq_config::ServerConfig;
use jq_proto::v1::admin_service_client::AdminServiceClient;
use jq_proto::v1::job_service_client::JobServiceClient;
use jq_proto::v1::worker_service_client::WorkerServiceClient;
use jq_proto::v1::{self, server_message::Kind};
use jq_server::Running;
use jq_testkit::TestDb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::Channel;

pub fn config(db: &TestDb) -> ServerConfig {
    let mut c = ServerConfig::default();
    c.db.url = db.url.clone();
    c.server.bind = "127.0.0.1".into();
    c.server.grpc_port = 0;
    c.server.health_port = 0;
    c.server.metrics_port = 0;
    c.redis.url = String::new();
    c.scheduler.interval_ms = 100;
    c.scheduler.reaper_interval_ms = 100;
    c
}

pub struct Env {
    pub db: TestDb,
    pub server: Running,
    pub jobs: JobServiceClient<Channel>,
    pub admin: AdminServiceClient<Channel>,
}

pub async fn channel(addr: std::net::SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

pub async fn start_with(db: TestDb, cfg: ServerConfig) -> Env {
    let server = jq_server::start(cfg).await.unwrap();
    let ch = channel(server.grpc_addr).await;
    Env {
        db,
        jobs: JobServiceClient::new(ch.clone()),
        admin: AdminServiceClient::new(ch),
        server,
    }
}

/// A server on a fresh database with `tune` applied to the test config.
pub async fn start_tuned(tune: impl FnOnce(&mut ServerConfig)) -> Env {
    let db = TestDb::new().await;
    let mut cfg = config(&db);
    tune(&mut cfg);
    start_with(db, cfg).await
}

pub async fn start() -> Env {
    let db = TestDb::new().await;
    let cfg = config(&db);
    start_with(db, cfg).await
}

pub fn spec(queue: &str, payload: &str) -> v1::JobSpec {
    v1::JobSpec {
        queue: queue.into(),
        payload: payload.as_bytes().to_vec(),
        ..Default::default()
    }
}

impl Env {
    pub async fn submit(&mut self, s: v1::JobSpec) -> String {
        self.jobs
            .submit_job(v1::SubmitJobRequest { job: Some(s) })
            .await
            .unwrap()
            .into_inner()
            .job_id
    }

    pub async fn job(&mut self, id: &str) -> v1::Job {
        self.jobs
            .get_job(v1::GetJobRequest { job_id: id.into() })
            .await
            .unwrap()
            .into_inner()
            .job
            .unwrap()
    }

    /// Wait (bounded) until the job reaches `status`; panics with the last
    /// state otherwise. A condition wait, not a speed assertion.
    pub async fn wait_status(&mut self, id: &str, status: v1::JobStatus) -> v1::Job {
        let mut last = None;
        for _ in 0..300 {
            let j = self.job(id).await;
            if j.status == status as i32 {
                return j;
            }
            last = Some(j);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("job {id} never reached {status:?}; last {last:?}");
    }
}

pub struct FakeWorker {
    pub id: String,
    pub client: WorkerServiceClient<Channel>,
    pub stream: tonic::Streaming<v1::ServerMessage>,
}

impl FakeWorker {
    pub async fn connect(
        addr: std::net::SocketAddr,
        id: &str,
        queues: &[&str],
        concurrency: u32,
    ) -> FakeWorker {
        let mut client = WorkerServiceClient::new(channel(addr).await);
        client
            .register(v1::RegisterRequest {
                worker_id: id.into(),
                hostname: "fake".into(),
                concurrency,
                queues: queues.iter().map(|q| q.to_string()).collect(),
                version: "test".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        let stream = client
            .stream_assignments(v1::StreamAssignmentsRequest { worker_id: id.into() })
            .await
            .unwrap()
            .into_inner();
        FakeWorker {
            id: id.into(),
            client,
            stream,
        }
    }

    /// Next message, or None if none arrives within `wait`.
    pub async fn next_within(&mut self, wait: Duration) -> Option<Kind> {
        match tokio::time::timeout(wait, self.stream.message()).await {
            Ok(Ok(Some(m))) => m.kind,
            Ok(Ok(None)) | Ok(Err(_)) => None,
            Err(_) => None,
        }
    }

    pub async fn next(&mut self) -> Kind {
        self.next_within(Duration::from_secs(15))
            .await
            .expect("a message from the server")
    }

    pub async fn assignment(&mut self) -> v1::Assignment {
        loop {
            if let Kind::Assignment(a) = self.next().await {
                return a;
            }
        }
    }

    pub async fn ack(&mut self, a: &v1::Assignment) -> Result<(), tonic::Status> {
        self.client
            .ack_job(v1::AckJobRequest {
                worker_id: self.id.clone(),
                job_id: a.job_id.clone(),
                attempt: a.attempt,
            })
            .await
            .map(|_| ())
    }

    pub async fn report(
        &mut self,
        job_id: &str,
        attempt: u32,
        outcome: v1::Outcome,
    ) -> Result<v1::ReportResultResponse, tonic::Status> {
        self.client
            .report_result(v1::ReportResultRequest {
                worker_id: self.id.clone(),
                job_id: job_id.into(),
                attempt,
                outcome: outcome as i32,
                result: b"{\"ok\":true}".to_vec(),
                retryable: true,
                duration_ms: 5,
                ..Default::default()
            })
            .await
            .map(|r| r.into_inner())
    }

    pub async fn heartbeat(&mut self, in_flight: Vec<v1::Lease>) -> v1::HeartbeatResponse {
        self.client
            .heartbeat(v1::HeartbeatRequest {
                worker_id: self.id.clone(),
                in_flight,
            })
            .await
            .unwrap()
            .into_inner()
    }
}

/// Submit `n` jobs in bulk and run each to success on `w`; returns their
/// ids in submission order.
pub async fn run_jobs(env: &mut Env, w: &mut FakeWorker, n: usize) -> Vec<String> {
    let jobs = (0..n).map(|i| spec("default", &i.to_string())).collect();
    let ids: Vec<String> = env
        .jobs
        .submit_jobs(v1::SubmitJobsRequest { jobs })
        .await
        .unwrap()
        .into_inner()
        .results
        .into_iter()
        .map(|r| r.job_id)
        .collect();
    for _ in 0..n {
        let a = w.assignment().await;
        w.ack(&a).await.unwrap();
        w.report(&a.job_id, a.attempt, v1::Outcome::Succeeded)
            .await
            .unwrap();
    }
    ids
}

/// Plain HTTP GET; returns (status, body).
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.unwrap();
    let status = buf
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}
