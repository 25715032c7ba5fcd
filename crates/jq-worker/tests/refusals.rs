//! JQ-105, the worker's side: a refused result is read by its code. A
//! server fault (INTERNAL) is retried like an unreachable server; only
//! ABORTED and FAILED_PRECONDITION end the attempt quietly; any other
//! refusal ends it without retries. The server here is a scripted
//! WorkerService (the point is the worker's reaction to each answer; the
//! real server never answers INTERNAL, see crates/jq-server/tests/hostile.rs).

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jq_proto::v1;
use jq_proto::v1::worker_service_server::{WorkerService, WorkerServiceServer};
use tokio_stream::{Stream, StreamExt};
use tonic::{Code, Request, Response, Status};

/// Answers to the result of the one job it hands out, in order; the last
/// one repeats. Records every report it gets.
#[derive(Clone)]
struct Scripted {
    answers: Arc<Mutex<VecDeque<Code>>>,
    reports: Arc<Mutex<Vec<Code>>>,
    job_id: String,
}

type Out = Pin<Box<dyn Stream<Item = Result<v1::ServerMessage, Status>> + Send>>;

impl Scripted {
    fn answer(&self) -> Code {
        let mut a = self.answers.lock().unwrap();
        let code = if a.len() > 1 { a.pop_front().unwrap() } else { a[0] };
        self.reports.lock().unwrap().push(code);
        code
    }

    fn reply(&self, code: Code) -> v1::ReportResultsItem {
        v1::ReportResultsItem {
            status: Some(v1::CallStatus {
                code: code as i32,
                message: format!("scripted {code:?}"),
            }),
            response: (code == Code::Ok).then_some(v1::ReportResultResponse {
                status: v1::JobStatus::Done as i32,
                duplicate: false,
            }),
        }
    }
}

#[tonic::async_trait]
impl WorkerService for Scripted {
    async fn register(
        &self,
        _: Request<v1::RegisterRequest>,
    ) -> Result<Response<v1::RegisterResponse>, Status> {
        Ok(Response::new(v1::RegisterResponse {
            heartbeat_interval_ms: 1000,
            heartbeat_timeout_ms: 60_000,
            server_version: "scripted".into(),
        }))
    }

    async fn heartbeat(
        &self,
        _: Request<v1::HeartbeatRequest>,
    ) -> Result<Response<v1::HeartbeatResponse>, Status> {
        Ok(Response::new(v1::HeartbeatResponse {
            stale: vec![],
            status: v1::WorkerStatus::Online as i32,
            registered: true,
            cancel: vec![],
        }))
    }

    type StreamAssignmentsStream = Out;

    async fn stream_assignments(
        &self,
        _: Request<v1::StreamAssignmentsRequest>,
    ) -> Result<Response<Out>, Status> {
        let one = v1::ServerMessage {
            kind: Some(v1::server_message::Kind::Assignment(v1::Assignment {
                job_id: self.job_id.clone(),
                queue: "default".into(),
                attempt: 1,
                payload: br#"{"handler":"noop"}"#.to_vec(),
                ..Default::default()
            })),
        };
        // One assignment, then an open stream.
        let s = tokio_stream::iter([Ok::<_, Status>(one)]).chain(tokio_stream::pending());
        Ok(Response::new(Box::pin(s)))
    }

    async fn ack_job(&self, _: Request<v1::AckJobRequest>) -> Result<Response<v1::AckJobResponse>, Status> {
        Ok(Response::new(v1::AckJobResponse {}))
    }

    async fn report_result(
        &self,
        _: Request<v1::ReportResultRequest>,
    ) -> Result<Response<v1::ReportResultResponse>, Status> {
        match self.answer() {
            Code::Ok => Ok(Response::new(v1::ReportResultResponse {
                status: v1::JobStatus::Done as i32,
                duplicate: false,
            })),
            c => Err(Status::new(c, format!("scripted {c:?}"))),
        }
    }

    async fn ack_jobs(
        &self,
        r: Request<v1::AckJobsRequest>,
    ) -> Result<Response<v1::AckJobsResponse>, Status> {
        let n = r.into_inner().acks.len();
        Ok(Response::new(v1::AckJobsResponse {
            results: vec![
                v1::CallStatus {
                    code: 0,
                    message: String::new()
                };
                n
            ],
        }))
    }

    async fn report_results(
        &self,
        r: Request<v1::ReportResultsRequest>,
    ) -> Result<Response<v1::ReportResultsResponse>, Status> {
        let results = r
            .into_inner()
            .reports
            .iter()
            .map(|_| self.reply(self.answer()))
            .collect();
        Ok(Response::new(v1::ReportResultsResponse { results }))
    }

    async fn deregister(
        &self,
        _: Request<v1::DeregisterRequest>,
    ) -> Result<Response<v1::DeregisterResponse>, Status> {
        Ok(Response::new(v1::DeregisterResponse {}))
    }
}

/// Run a worker against a server answering its one result with `answers`
/// (the last repeating) until `done` holds for the codes it recorded.
async fn run(answers: &[Code], done: impl Fn(&[Code]) -> bool) -> Vec<Code> {
    let fake = Scripted {
        answers: Arc::new(Mutex::new(answers.iter().copied().collect())),
        reports: Arc::default(),
        job_id: uuid::Uuid::new_v4().to_string(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let serve = tonic::transport::Server::builder()
        .add_service(WorkerServiceServer::new(fake.clone()))
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
    let server = tokio::spawn(serve);
    let mut cfg = jq_config::WorkerConfig::default();
    cfg.worker.server_addr = addr.to_string();
    cfg.worker.id = "w-refusals".into();
    cfg.worker.bind = "127.0.0.1".into();
    cfg.worker.health_port = 0;
    cfg.worker.metrics_port = 0;
    let worker = jq_worker::start(cfg, jq_worker::Handlers::builtin())
        .await
        .unwrap();
    let mut seen = vec![];
    for _ in 0..600 {
        seen = fake.reports.lock().unwrap().clone();
        if done(&seen) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A little longer, so a retry that should not happen would show.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let seen_after = fake.reports.lock().unwrap().clone();
    worker.shutdown().await;
    server.abort();
    assert!(done(&seen), "{seen:?}");
    seen_after
}

#[tokio::test]
async fn jq_105_a_result_answered_internal_is_retried_until_the_server_takes_it() {
    let seen = run(&[Code::Internal, Code::Internal, Code::Unknown, Code::Ok], |s| {
        s.last() == Some(&Code::Ok)
    })
    .await;
    assert_eq!(seen, [Code::Internal, Code::Internal, Code::Unknown, Code::Ok]);
}

#[tokio::test]
async fn jq_105_only_aborted_and_failed_precondition_end_the_attempt_quietly() {
    for code in [Code::Aborted, Code::FailedPrecondition, Code::InvalidArgument] {
        let seen = run(&[code], |s| !s.is_empty()).await;
        assert_eq!(seen, [code], "{code:?} is final: sent once, never retried");
    }
}
