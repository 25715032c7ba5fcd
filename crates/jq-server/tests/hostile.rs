//! JQ-105 at the gRPC edge: every request message of the three services,
//! with hostile field values (NUL and control characters, very long
//! strings, integers at their edges, missing fields, enum values out of
//! range), and the same messages with their encoded bytes corrupted. The
//! answer is never INTERNAL or UNKNOWN, a refusal's message stays short,
//! and a refusal leaves every table's row count unchanged.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::{Buf, BufMut};
use common::*;
use jq_proto::v1;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use prost::Message;
use tonic::Code;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;

// ---- values -------------------------------------------------------------

/// Mostly well-formed, so that a message often has exactly one hostile
/// field and the check of that field is what answers.
fn text() -> BoxedStrategy<String> {
    prop_oneof![
        6 => Just("default".to_string()),
        6 => "[a-z][a-z0-9._-]{0,12}",
        1 => Just(String::new()),
        1 => "[a-z]{0,4}".prop_map(|s| format!("{s}\0{s}")),
        1 => "[a-z]{0,4}".prop_map(|s| format!("{s}\u{1b}[31m\n\t{s}")),
        1 => Just("x".repeat(100_000)),
        1 => Just("q".repeat(129)),
        1 => Just("k".repeat(257)),
        1 => any::<String>(),
    ]
    .boxed()
}

fn job_id() -> BoxedStrategy<String> {
    prop_oneof![
        3 => any::<u128>().prop_map(|n| uuid::Uuid::from_u128(n).to_string()),
        2 => text(),
    ]
    .boxed()
}

fn u32_edge() -> BoxedStrategy<u32> {
    prop_oneof![
        12 => 1u32..20,
        1 => Just(0u32),
        1 => Just(i32::MAX as u32),
        1 => Just(i32::MAX as u32 + 1),
        1 => Just(u32::MAX),
        1 => any::<u32>(),
    ]
    .boxed()
}

fn i32_edge() -> BoxedStrategy<i32> {
    prop_oneof![
        12 => 0i32..10,
        1 => Just(i32::MIN),
        1 => Just(-1),
        1 => Just(10),
        1 => Just(i32::MAX),
        1 => any::<i32>(),
    ]
    .boxed()
}

/// Retentions: -1, 0 and seconds are meant; the rest must be refused.
fn i64_edge() -> BoxedStrategy<i64> {
    prop_oneof![
        8 => -1i64..5_000,
        1 => Just(i64::MIN),
        1 => Just(-2),
        1 => Just(3_153_600_000),
        1 => Just(3_153_600_001),
        1 => Just(i64::MAX),
        1 => any::<i64>(),
    ]
    .boxed()
}

fn u64_edge() -> BoxedStrategy<u64> {
    prop_oneof![
        12 => 0u64..5_000,
        1 => Just(i64::MAX as u64),
        1 => Just(u64::MAX),
        1 => any::<u64>(),
    ]
    .boxed()
}

fn f64_edge() -> BoxedStrategy<f64> {
    prop_oneof![
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(-1.0),
        Just(0.0),
        Just(1e308),
        0.1f64..1000.0,
        any::<f64>()
    ]
    .boxed()
}

fn timestamp() -> BoxedStrategy<Option<prost_types::Timestamp>> {
    let secs = prop_oneof![
        Just(i64::MIN),
        Just(-62_135_596_801i64),
        Just(0),
        1_700_000_000i64..1_900_000_000,
        Just(253_402_300_800),
        Just(i64::MAX),
        any::<i64>()
    ];
    let nanos = prop_oneof![
        Just(0),
        Just(-1),
        Just(999_999_999),
        Just(1_000_000_000),
        any::<i32>()
    ];
    prop::option::of((secs, nanos).prop_map(|(seconds, nanos)| prost_types::Timestamp { seconds, nanos }))
        .boxed()
}

fn payload() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        4 => prop::collection::vec(any::<u8>(), 0..64),
        1 => Just(vec![b'x'; 1024 * 1024 + 1]),
    ]
    .boxed()
}

fn lease() -> BoxedStrategy<v1::Lease> {
    (job_id(), u32_edge())
        .prop_map(|(job_id, attempt)| v1::Lease { job_id, attempt })
        .boxed()
}

fn spec() -> BoxedStrategy<v1::JobSpec> {
    (
        text(),
        payload(),
        prop::option::of(i32_edge()),
        prop::option::of(i32_edge()),
        prop::option::of(u32_edge()),
        timestamp(),
        prop::option::of(u64_edge()),
        prop::option::of(text()),
    )
        .prop_map(
            |(queue, payload, priority, max_retries, ttl_seconds, run_at, delay_ms, idempotency_key)| {
                v1::JobSpec {
                    queue,
                    payload,
                    priority,
                    max_retries,
                    ttl_seconds,
                    run_at,
                    delay_ms,
                    idempotency_key,
                }
            },
        )
        .boxed()
}

fn settings() -> BoxedStrategy<Option<v1::QueueSettings>> {
    let o = |s: BoxedStrategy<u32>| prop::option::of(s);
    prop::option::of(
        (
            o(u32_edge()),
            o(u32_edge()),
            o(u32_edge()),
            o(u32_edge()),
            o(u32_edge()),
            o(u32_edge()),
            prop::option::of(f64_edge()),
            prop::option::of(i64_edge()),
            prop::option::of(i64_edge()),
            prop::option::of(text()),
        )
            .prop_map(|(a, b, c, d, e, f, g, h, i, j)| v1::QueueSettings {
                max_retries: a,
                default_ttl_seconds: b,
                default_timeout_seconds: c,
                backoff_base_ms: d,
                backoff_max_ms: e,
                concurrency_limit: f,
                rate_limit_per_second: g,
                retain_done_seconds: h,
                retain_dead_seconds: i,
                priority_weights: j,
            }),
    )
    .boxed()
}

fn report() -> BoxedStrategy<v1::ReportResultRequest> {
    (
        text(),
        job_id(),
        u32_edge(),
        i32_edge(),
        payload(),
        text(),
        any::<bool>(),
        prop::option::of(i32_edge()),
        prop::option::of(i32_edge()),
        u64_edge(),
    )
        .prop_map(
            |(
                worker_id,
                job_id,
                attempt,
                outcome,
                result,
                error,
                retryable,
                exit_code,
                signal,
                duration_ms,
            )| {
                v1::ReportResultRequest {
                    worker_id,
                    job_id,
                    attempt,
                    outcome,
                    result,
                    error,
                    retryable,
                    exit_code,
                    signal,
                    duration_ms,
                }
            },
        )
        .boxed()
}

fn ack() -> BoxedStrategy<v1::AckJobRequest> {
    (text(), job_id(), u32_edge())
        .prop_map(|(worker_id, job_id, attempt)| v1::AckJobRequest {
            worker_id,
            job_id,
            attempt,
        })
        .boxed()
}

/// A registered worker's id never starts with this, so a stream it opens
/// is always refused: an open stream would let the dispatcher write
/// behind the test's back.
const STREAM_PREFIX: &str = "stream-";

fn not_a_stream_id(s: String) -> String {
    if s.starts_with(STREAM_PREFIX) {
        format!("r{s}")
    } else {
        s
    }
}

// ---- calls --------------------------------------------------------------

/// One request of any RPC of the three services.
#[derive(Debug, Clone)]
enum Call {
    SubmitJob(v1::SubmitJobRequest),
    SubmitJobs(v1::SubmitJobsRequest),
    GetJob(v1::GetJobRequest),
    ListJobs(v1::ListJobsRequest),
    GetJobEvents(v1::GetJobEventsRequest),
    CancelJob(v1::CancelJobRequest),
    RetryJob(v1::RetryJobRequest),
    RetryJobs(v1::RetryJobsRequest),
    DeleteJob(v1::DeleteJobRequest),
    WatchJob(v1::WatchJobRequest),
    Register(v1::RegisterRequest),
    Heartbeat(v1::HeartbeatRequest),
    StreamAssignments(v1::StreamAssignmentsRequest),
    AckJob(v1::AckJobRequest),
    ReportResult(v1::ReportResultRequest),
    AckJobs(v1::AckJobsRequest),
    ReportResults(v1::ReportResultsRequest),
    Deregister(v1::DeregisterRequest),
    CreateQueue(v1::CreateQueueRequest),
    UpdateQueue(v1::UpdateQueueRequest),
    DeleteQueue(v1::DeleteQueueRequest),
    GetQueue(v1::GetQueueRequest),
    ListQueues(v1::ListQueuesRequest),
    GetQueueStats(v1::GetQueueStatsRequest),
    PauseQueue(v1::PauseQueueRequest),
    ResumeQueue(v1::ResumeQueueRequest),
    ListWorkers(v1::ListWorkersRequest),
    DrainWorker(v1::DrainWorkerRequest),
    ShutdownWorker(v1::ShutdownWorkerRequest),
    GetSystemStatus(v1::GetSystemStatusRequest),
    CreateSchedule(v1::CreateScheduleRequest),
    UpdateSchedule(v1::UpdateScheduleRequest),
    GetSchedule(v1::ScheduleRef),
    ListSchedules(v1::ListSchedulesRequest),
    PauseSchedule(v1::ScheduleRef),
    ResumeSchedule(v1::ScheduleRef),
    DeleteSchedule(v1::ScheduleRef),
    TriggerSchedule(v1::ScheduleRef),
}

fn schedule_spec() -> BoxedStrategy<Option<v1::ScheduleSpec>> {
    let cron = prop_oneof![
        2 => text(),
        1 => Just("* * * * *".to_string()),
        1 => Just("0 25 * * *".to_string()),
        1 => Just("@hourly".to_string()),
    ];
    prop::option::of(
        (
            prop::option::of(cron),
            prop::option::of(prop_oneof![text(), Just("Europe/Berlin".to_string())]),
            prop::option::of(prop_oneof![text(), Just("default".to_string())]),
            prop::option::of(payload()),
            prop::option::of(i32_edge()),
            prop::option::of(i32_edge()),
            prop::option::of(u32_edge()),
            prop::option::of(text()),
            prop::option::of(text()),
        )
            .prop_map(
                |(cron, timezone, queue, payload, priority, max_retries, ttl_seconds, missed, overlap)| {
                    v1::ScheduleSpec {
                        cron,
                        timezone,
                        queue,
                        payload,
                        priority,
                        max_retries,
                        ttl_seconds,
                        missed,
                        overlap,
                    }
                },
            ),
    )
    .boxed()
}

fn call() -> BoxedStrategy<Call> {
    use Call::*;
    prop_oneof![
        prop::option::of(spec()).prop_map(|job| SubmitJob(v1::SubmitJobRequest { job })),
        prop_oneof![
            4 => prop::collection::vec(spec(), 0..4),
            1 => Just(vec![v1::JobSpec { queue: "default".into(), ..Default::default() }; 10_001]),
        ]
        .prop_map(|jobs| SubmitJobs(v1::SubmitJobsRequest { jobs })),
        job_id().prop_map(|job_id| GetJob(v1::GetJobRequest { job_id })),
        (text(), i32_edge(), u32_edge(), text(), any::<bool>()).prop_map(
            |(queue, status, limit, page_token, omit_payloads)| ListJobs(v1::ListJobsRequest {
                queue,
                status,
                limit,
                page_token,
                omit_payloads
            })
        ),
        job_id().prop_map(|job_id| GetJobEvents(v1::GetJobEventsRequest { job_id })),
        job_id().prop_map(|job_id| CancelJob(v1::CancelJobRequest { job_id })),
        job_id().prop_map(|job_id| RetryJob(v1::RetryJobRequest { job_id })),
        (text(), i32_edge(), u32_edge()).prop_map(|(queue, status, limit)| RetryJobs(v1::RetryJobsRequest {
            queue,
            status,
            limit
        })),
        job_id().prop_map(|job_id| DeleteJob(v1::DeleteJobRequest { job_id })),
        (job_id(), timestamp()).prop_map(|(job_id, since)| WatchJob(v1::WatchJobRequest { job_id, since })),
        (
            text(),
            text(),
            u32_edge(),
            prop_oneof![
                12 => prop::collection::vec(text(), 1..3),
                1 => Just(vec![]),
                1 => Just(vec!["default".to_string(); 1001]),
            ],
            text(),
            prop::collection::vec(lease(), 0..3),
            any::<bool>(),
            prop::collection::vec(u32_edge(), 0..3)
        )
            .prop_map(
                |(worker_id, hostname, concurrency, queues, version, in_flight, draining, queue_weights)| {
                    Register(v1::RegisterRequest {
                        worker_id: not_a_stream_id(worker_id),
                        hostname,
                        concurrency,
                        queues,
                        version,
                        in_flight,
                        draining,
                        queue_weights,
                    })
                }
            ),
        (text(), prop::collection::vec(lease(), 0..3))
            .prop_map(|(worker_id, in_flight)| Heartbeat(v1::HeartbeatRequest { worker_id, in_flight })),
        text().prop_map(|s| StreamAssignments(v1::StreamAssignmentsRequest {
            worker_id: format!("{STREAM_PREFIX}{s}")
        })),
        ack().prop_map(AckJob),
        report().prop_map(ReportResult),
        prop_oneof![
            4 => prop::collection::vec(ack(), 0..4),
            1 => Just(vec![v1::AckJobRequest::default(); 1001]),
        ]
        .prop_map(|acks| AckJobs(v1::AckJobsRequest { acks })),
        prop::collection::vec(report(), 0..4)
            .prop_map(|reports| ReportResults(v1::ReportResultsRequest { reports })),
        text().prop_map(|worker_id| Deregister(v1::DeregisterRequest { worker_id })),
        (text(), settings())
            .prop_map(|(name, settings)| CreateQueue(v1::CreateQueueRequest { name, settings })),
        (text(), settings())
            .prop_map(|(name, settings)| UpdateQueue(v1::UpdateQueueRequest { name, settings })),
        (text(), any::<bool>()).prop_map(|(name, force)| DeleteQueue(v1::DeleteQueueRequest { name, force })),
        text().prop_map(|name| GetQueue(v1::GetQueueRequest { name })),
        Just(ListQueues(v1::ListQueuesRequest {})),
        text().prop_map(|name| GetQueueStats(v1::GetQueueStatsRequest { name })),
        text().prop_map(|name| PauseQueue(v1::PauseQueueRequest { name })),
        text().prop_map(|name| ResumeQueue(v1::ResumeQueueRequest { name })),
        any::<bool>().prop_map(|include_offline| ListWorkers(v1::ListWorkersRequest { include_offline })),
        text().prop_map(|worker_id| DrainWorker(v1::DrainWorkerRequest { worker_id })),
        text().prop_map(|worker_id| ShutdownWorker(v1::ShutdownWorkerRequest { worker_id })),
        Just(GetSystemStatus(v1::GetSystemStatusRequest {})),
        (text(), schedule_spec())
            .prop_map(|(name, spec)| CreateSchedule(v1::CreateScheduleRequest { name, spec })),
        (text(), schedule_spec())
            .prop_map(|(name, spec)| UpdateSchedule(v1::UpdateScheduleRequest { name, spec })),
        text().prop_map(|name| GetSchedule(v1::ScheduleRef { name })),
        Just(ListSchedules(v1::ListSchedulesRequest {})),
        text().prop_map(|name| PauseSchedule(v1::ScheduleRef { name })),
        text().prop_map(|name| ResumeSchedule(v1::ScheduleRef { name })),
        text().prop_map(|name| DeleteSchedule(v1::ScheduleRef { name })),
        text().prop_map(|name| TriggerSchedule(v1::ScheduleRef { name })),
    ]
    .boxed()
}

impl Call {
    /// The method's path and the request's encoded bytes.
    fn wire(&self) -> (&'static str, Vec<u8>, bool) {
        use Call::*;
        let (path, bytes, streaming) = match self {
            SubmitJob(r) => ("/jq.v1.JobService/SubmitJob", r.encode_to_vec(), false),
            SubmitJobs(r) => ("/jq.v1.JobService/SubmitJobs", r.encode_to_vec(), false),
            GetJob(r) => ("/jq.v1.JobService/GetJob", r.encode_to_vec(), false),
            ListJobs(r) => ("/jq.v1.JobService/ListJobs", r.encode_to_vec(), false),
            GetJobEvents(r) => ("/jq.v1.JobService/GetJobEvents", r.encode_to_vec(), false),
            CancelJob(r) => ("/jq.v1.JobService/CancelJob", r.encode_to_vec(), false),
            RetryJob(r) => ("/jq.v1.JobService/RetryJob", r.encode_to_vec(), false),
            RetryJobs(r) => ("/jq.v1.JobService/RetryJobs", r.encode_to_vec(), false),
            DeleteJob(r) => ("/jq.v1.JobService/DeleteJob", r.encode_to_vec(), false),
            WatchJob(r) => ("/jq.v1.JobService/WatchJob", r.encode_to_vec(), true),
            Register(r) => ("/jq.v1.WorkerService/Register", r.encode_to_vec(), false),
            Heartbeat(r) => ("/jq.v1.WorkerService/Heartbeat", r.encode_to_vec(), false),
            StreamAssignments(r) => ("/jq.v1.WorkerService/StreamAssignments", r.encode_to_vec(), true),
            AckJob(r) => ("/jq.v1.WorkerService/AckJob", r.encode_to_vec(), false),
            ReportResult(r) => ("/jq.v1.WorkerService/ReportResult", r.encode_to_vec(), false),
            AckJobs(r) => ("/jq.v1.WorkerService/AckJobs", r.encode_to_vec(), false),
            ReportResults(r) => ("/jq.v1.WorkerService/ReportResults", r.encode_to_vec(), false),
            Deregister(r) => ("/jq.v1.WorkerService/Deregister", r.encode_to_vec(), false),
            CreateQueue(r) => ("/jq.v1.AdminService/CreateQueue", r.encode_to_vec(), false),
            UpdateQueue(r) => ("/jq.v1.AdminService/UpdateQueue", r.encode_to_vec(), false),
            DeleteQueue(r) => ("/jq.v1.AdminService/DeleteQueue", r.encode_to_vec(), false),
            GetQueue(r) => ("/jq.v1.AdminService/GetQueue", r.encode_to_vec(), false),
            ListQueues(r) => ("/jq.v1.AdminService/ListQueues", r.encode_to_vec(), false),
            GetQueueStats(r) => ("/jq.v1.AdminService/GetQueueStats", r.encode_to_vec(), false),
            PauseQueue(r) => ("/jq.v1.AdminService/PauseQueue", r.encode_to_vec(), false),
            ResumeQueue(r) => ("/jq.v1.AdminService/ResumeQueue", r.encode_to_vec(), false),
            ListWorkers(r) => ("/jq.v1.AdminService/ListWorkers", r.encode_to_vec(), false),
            DrainWorker(r) => ("/jq.v1.AdminService/DrainWorker", r.encode_to_vec(), false),
            ShutdownWorker(r) => ("/jq.v1.AdminService/ShutdownWorker", r.encode_to_vec(), false),
            GetSystemStatus(r) => ("/jq.v1.AdminService/GetSystemStatus", r.encode_to_vec(), false),
            CreateSchedule(r) => ("/jq.v1.AdminService/CreateSchedule", r.encode_to_vec(), false),
            UpdateSchedule(r) => ("/jq.v1.AdminService/UpdateSchedule", r.encode_to_vec(), false),
            GetSchedule(r) => ("/jq.v1.AdminService/GetSchedule", r.encode_to_vec(), false),
            ListSchedules(r) => ("/jq.v1.AdminService/ListSchedules", r.encode_to_vec(), false),
            PauseSchedule(r) => ("/jq.v1.AdminService/PauseSchedule", r.encode_to_vec(), false),
            ResumeSchedule(r) => ("/jq.v1.AdminService/ResumeSchedule", r.encode_to_vec(), false),
            DeleteSchedule(r) => ("/jq.v1.AdminService/DeleteSchedule", r.encode_to_vec(), false),
            TriggerSchedule(r) => ("/jq.v1.AdminService/TriggerSchedule", r.encode_to_vec(), false),
        };
        (path, bytes, streaming)
    }
}

/// A message's bytes sent as they are, so the test can send what no typed
/// client would (corrupted encodings, strings that are not UTF-8).
#[derive(Debug, Clone, Default)]
struct Raw;

impl Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;
    fn encoder(&mut self) -> Raw {
        Raw
    }
    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl Encoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, buf: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        buf.put_slice(&item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        let n = buf.remaining();
        Ok(Some(buf.copy_to_bytes(n).to_vec()))
    }
}

/// Send `bytes` to `path`; the code of the answer (for a stream, of its
/// opening: the stream is dropped at once).
async fn send(ch: &Channel, path: &'static str, bytes: Vec<u8>, streaming: bool) -> tonic::Status {
    let mut g = tonic::client::Grpc::new(ch.clone());
    g.ready().await.expect("channel ready");
    let path = http::uri::PathAndQuery::from_static(path);
    let req = tonic::Request::new(bytes);
    let res = if streaming {
        g.server_streaming(req, path, Raw).await.map(|_| ())
    } else {
        g.unary(req, path, Raw).await.map(|_| ())
    };
    match res {
        Ok(()) => tonic::Status::ok(""),
        Err(s) => s,
    }
}

/// Every table's row count.
async fn counts(db: &jq_testkit::TestDb) -> BTreeMap<String, i64> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables \
         WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY 1",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    let sql = tables
        .iter()
        .map(|t| format!("SELECT '{t}'::text, count(*) FROM \"{t}\""))
        .collect::<Vec<_>>()
        .join(" UNION ALL ");
    sqlx::query_as::<_, (String, i64)>(&sql)
        .fetch_all(db.pool())
        .await
        .unwrap()
        .into_iter()
        .collect()
}

/// Calls a well-behaved client makes, so the run also crosses the edge's
/// accepting side and the hostile calls meet queues, workers and jobs.
fn valid_call() -> BoxedStrategy<Call> {
    use Call::*;
    let name = "[a-z][a-z0-9]{0,6}";
    let good_spec = (0i32..=9, prop::option::of("[a-z0-9]{1,8}")).prop_map(|(p, key)| v1::JobSpec {
        queue: "default".into(),
        payload: b"{}".to_vec(),
        priority: Some(p),
        idempotency_key: key,
        ..Default::default()
    });
    prop_oneof![
        good_spec
            .clone()
            .prop_map(|j| SubmitJob(v1::SubmitJobRequest { job: Some(j) })),
        prop::collection::vec(good_spec, 1..5).prop_map(|jobs| SubmitJobs(v1::SubmitJobsRequest { jobs })),
        (name, 1u32..64).prop_map(|(id, concurrency)| Register(v1::RegisterRequest {
            worker_id: format!("w-{id}"),
            hostname: "host".into(),
            concurrency,
            queues: vec!["default".into()],
            version: "1.0".into(),
            ..Default::default()
        })),
        name.prop_map(|id| Heartbeat(v1::HeartbeatRequest {
            worker_id: format!("w-{id}"),
            in_flight: vec![]
        })),
        (0u32..50, any::<bool>()).prop_map(|(limit, omit_payloads)| ListJobs(v1::ListJobsRequest {
            queue: "default".into(),
            limit,
            omit_payloads,
            ..Default::default()
        })),
        name.prop_map(|n| CreateQueue(v1::CreateQueueRequest {
            name: format!("q-{n}"),
            settings: None
        })),
    ]
    .boxed()
}

/// Nothing may write behind the test's back: no maintenance pass and no
/// dispatch cycle runs while it does.
fn quiet(cfg: &mut jq_config::ServerConfig) {
    cfg.scheduler.interval_ms = 3_600_000;
    cfg.scheduler.reaper_interval_ms = 3_600_000;
}

/// A case: a call, and optionally bytes of its encoding to corrupt.
fn case() -> impl Strategy<Value = (Call, Vec<(usize, u8)>)> {
    (
        prop_oneof![3 => call(), 1 => valid_call()],
        prop_oneof![
            3 => Just(vec![]),
            1 => prop::collection::vec((any::<usize>(), 1u8..=255), 1..4),
        ],
    )
}

#[test]
fn jq_105_no_hostile_request_is_answered_internal_and_a_refusal_stores_nothing() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let env = rt.block_on(start_tuned(quiet));
    let ch = rt.block_on(channel(env.server.grpc_addr));
    let mut runner = TestRunner::new(Config {
        cases: 1200,
        failure_persistence: None,
        max_shrink_iters: 200,
        ..Config::default()
    });
    let seen: std::cell::RefCell<BTreeMap<String, usize>> = Default::default();
    let result = runner.run(&case(), |(call, flips)| {
        let (path, mut bytes, streaming) = call.wire();
        // Corrupt some bytes: strings stop being UTF-8, lengths lie.
        for (at, x) in &flips {
            if !bytes.is_empty() {
                let n = bytes.len();
                bytes[at % n] ^= x;
            }
        }
        rt.block_on(async {
            let before = counts(&env.db).await;
            let st = tokio::time::timeout(Duration::from_secs(30), send(&ch, path, bytes, streaming))
                .await
                .expect("an answer");
            *seen
                .borrow_mut()
                .entry(format!("{path} {:?}", st.code()))
                .or_default() += 1;
            prop_assert!(
                !matches!(st.code(), Code::Internal | Code::Unknown),
                "{path}: {:?} {}",
                st.code(),
                st.message()
            );
            if st.code() != Code::Ok {
                prop_assert!(
                    st.message().len() <= 2048,
                    "{path}: unbounded message of {} bytes",
                    st.message().len()
                );
                let after = counts(&env.db).await;
                prop_assert_eq!(
                    &before,
                    &after,
                    "{} refused with {:?} but changed rows",
                    path,
                    st.code()
                );
            }
            Ok(())
        })
    });
    rt.block_on(env.server.shutdown());
    if let Err(e) = result {
        panic!("{e}");
    }
    // The run reached both sides of the edge: refusals and acceptances.
    let seen = seen.into_inner();
    let ok = seen.iter().filter(|(k, _)| k.ends_with(" Ok")).count();
    let refused = seen
        .iter()
        .filter(|(k, _)| k.ends_with(" InvalidArgument"))
        .count();
    assert!(ok >= 8 && refused >= 25, "{seen:#?}");
}

// ---- one hostile field at a time ----------------------------------------

fn strs() -> Vec<String> {
    vec![
        String::new(),
        "a\0b".into(),
        "\0".into(),
        "esc\u{1b}[31m".into(),
        "new\nline".into(),
        "del\u{7f}".into(),
        "x".repeat(100_000),
        "q".repeat(129),
        "k".repeat(257),
        "ü-ö".into(),
        "has space".into(),
    ]
}

fn u32s() -> Vec<u32> {
    vec![0, i32::MAX as u32 + 1, u32::MAX]
}

fn i32s() -> Vec<i32> {
    vec![i32::MIN, -1, 10, 99, i32::MAX]
}

fn u64s() -> Vec<u64> {
    vec![i64::MAX as u64, u64::MAX]
}

fn f64s() -> Vec<f64> {
    vec![
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        -1.0,
        f64::MAX,
        f64::MIN_POSITIVE,
    ]
}

fn stamps() -> Vec<prost_types::Timestamp> {
    [
        (i64::MIN, 0),
        (-62_135_596_801, 0),
        (-210_866_803_200, 0),
        (253_402_300_800, 0),
        (9_224_318_016_000, 0),
        (i64::MAX, 0),
        (0, -1),
        (0, 1_000_000_000),
    ]
    .into_iter()
    .map(|(seconds, nanos)| prost_types::Timestamp { seconds, nanos })
    .collect()
}

/// `base` with one field set to each of `values`.
fn vary<R: Clone, V>(base: &R, values: Vec<V>, set: impl Fn(&mut R, V)) -> Vec<R> {
    values
        .into_iter()
        .map(|v| {
            let mut r = base.clone();
            set(&mut r, v);
            r
        })
        .collect()
}

/// Every field of every request message, one at a time, at each hostile
/// value of its type, the other fields well-formed.
fn one_field_at_a_time(job: &str) -> Vec<Call> {
    use Call::*;
    let mut c: Vec<Call> = vec![];
    let spec = v1::JobSpec {
        queue: "default".into(),
        payload: b"{}".to_vec(),
        ..Default::default()
    };
    let specs = {
        let mut v = vary(&spec, strs(), |r, s| r.queue = s);
        v.extend(vary(&spec, i32s(), |r, x| r.priority = Some(x)));
        v.extend(vary(&spec, i32s(), |r, x| r.max_retries = Some(x)));
        v.extend(vary(&spec, u32s(), |r, x| r.ttl_seconds = Some(x)));
        v.extend(vary(&spec, stamps(), |r, t| r.run_at = Some(t)));
        v.extend(vary(&spec, u64s(), |r, x| r.delay_ms = Some(x)));
        v.extend(vary(&spec, strs(), |r, s| r.idempotency_key = Some(s)));
        v.push(v1::JobSpec {
            payload: vec![0; 1024 * 1024 + 1],
            ..spec.clone()
        });
        v
    };
    for s in &specs {
        c.push(SubmitJob(v1::SubmitJobRequest { job: Some(s.clone()) }));
        c.push(SubmitJobs(v1::SubmitJobsRequest {
            jobs: vec![spec.clone(), s.clone()],
        }));
    }
    c.push(SubmitJob(v1::SubmitJobRequest { job: None }));
    c.push(SubmitJobs(v1::SubmitJobsRequest { jobs: vec![] }));
    for id in strs() {
        c.push(GetJob(v1::GetJobRequest { job_id: id.clone() }));
        c.push(GetJobEvents(v1::GetJobEventsRequest { job_id: id.clone() }));
        c.push(CancelJob(v1::CancelJobRequest { job_id: id.clone() }));
        c.push(RetryJob(v1::RetryJobRequest { job_id: id.clone() }));
        c.push(DeleteJob(v1::DeleteJobRequest { job_id: id.clone() }));
        c.push(WatchJob(v1::WatchJobRequest {
            job_id: id,
            since: None,
        }));
    }
    for t in stamps() {
        c.push(WatchJob(v1::WatchJobRequest {
            job_id: job.into(),
            since: Some(t),
        }));
    }
    let list = v1::ListJobsRequest {
        queue: "default".into(),
        limit: 5,
        ..Default::default()
    };
    c.extend(vary(&list, strs(), |r, s| r.queue = s).into_iter().map(ListJobs));
    c.extend(vary(&list, i32s(), |r, x| r.status = x).into_iter().map(ListJobs));
    c.extend(vary(&list, u32s(), |r, x| r.limit = x).into_iter().map(ListJobs));
    c.extend(
        vary(&list, strs(), |r, s| r.page_token = s)
            .into_iter()
            .map(ListJobs),
    );
    let retry = v1::RetryJobsRequest {
        queue: "default".into(),
        status: 0,
        limit: 5,
    };
    c.extend(
        vary(&retry, strs(), |r, s| r.queue = s)
            .into_iter()
            .map(RetryJobs),
    );
    c.extend(
        vary(&retry, i32s(), |r, x| r.status = x)
            .into_iter()
            .map(RetryJobs),
    );
    c.extend(
        vary(&retry, u32s(), |r, x| r.limit = x)
            .into_iter()
            .map(RetryJobs),
    );

    let lease = v1::Lease {
        job_id: job.into(),
        attempt: 1,
    };
    let leases = {
        let mut v = vary(&lease, strs(), |r, s| r.job_id = s);
        v.extend(vary(&lease, u32s(), |r, x| r.attempt = x));
        v
    };
    let reg = v1::RegisterRequest {
        worker_id: "w-hostile".into(),
        hostname: "host".into(),
        concurrency: 2,
        queues: vec!["default".into()],
        version: "1.0".into(),
        in_flight: vec![],
        draining: false,
        queue_weights: vec![],
    };
    let mut regs = vary(&reg, strs(), |r, s| r.worker_id = s);
    regs.extend(vary(&reg, u32s(), |r, x| r.queue_weights = vec![x]));
    regs.extend(vary(&reg, vec![vec![1, 2], vec![0]], |r, w| r.queue_weights = w));
    regs.extend(vary(&reg, strs(), |r, s| r.hostname = s));
    regs.extend(vary(&reg, u32s(), |r, x| r.concurrency = x));
    regs.extend(vary(&reg, strs(), |r, s| r.queues = vec!["default".into(), s]));
    regs.extend(vary(
        &reg,
        vec![vec![], vec!["default".to_string(); 1001]],
        |r, q| r.queues = q,
    ));
    regs.extend(vary(&reg, strs(), |r, s| r.version = s));
    regs.extend(vary(&reg, leases.clone(), |r, l| r.in_flight = vec![l]));
    c.extend(regs.into_iter().map(Register));
    let hb = v1::HeartbeatRequest {
        worker_id: "w-hostile".into(),
        in_flight: vec![],
    };
    c.extend(
        vary(&hb, strs(), |r, s| r.worker_id = s)
            .into_iter()
            .map(Heartbeat),
    );
    c.extend(
        vary(&hb, leases, |r, l| r.in_flight = vec![l])
            .into_iter()
            .map(Heartbeat),
    );
    for s in strs() {
        c.push(StreamAssignments(v1::StreamAssignmentsRequest {
            worker_id: format!("{STREAM_PREFIX}{s}"),
        }));
        c.push(Deregister(v1::DeregisterRequest {
            worker_id: format!("gone-{s}"),
        }));
        c.push(DrainWorker(v1::DrainWorkerRequest { worker_id: s.clone() }));
        c.push(ShutdownWorker(v1::ShutdownWorkerRequest { worker_id: s.clone() }));
        c.push(GetQueue(v1::GetQueueRequest { name: s.clone() }));
        c.push(GetQueueStats(v1::GetQueueStatsRequest { name: s.clone() }));
        c.push(PauseQueue(v1::PauseQueueRequest { name: s.clone() }));
        c.push(ResumeQueue(v1::ResumeQueueRequest { name: s.clone() }));
        c.push(DeleteQueue(v1::DeleteQueueRequest {
            name: s.clone(),
            force: false,
        }));
        c.push(CreateQueue(v1::CreateQueueRequest {
            name: s.clone(),
            settings: None,
        }));
        c.push(UpdateQueue(v1::UpdateQueueRequest {
            name: s,
            settings: None,
        }));
    }
    let ack = v1::AckJobRequest {
        worker_id: "w-hostile".into(),
        job_id: job.into(),
        attempt: 1,
    };
    let mut acks = vary(&ack, strs(), |r, s| r.worker_id = s);
    acks.extend(vary(&ack, strs(), |r, s| r.job_id = s));
    acks.extend(vary(&ack, u32s(), |r, x| r.attempt = x));
    for a in &acks {
        c.push(AckJob(a.clone()));
        c.push(AckJobs(v1::AckJobsRequest {
            acks: vec![ack.clone(), a.clone()],
        }));
    }
    c.push(AckJobs(v1::AckJobsRequest {
        acks: vec![ack.clone(); 1001],
    }));
    let rep = v1::ReportResultRequest {
        worker_id: "w-hostile".into(),
        job_id: job.into(),
        attempt: 1,
        outcome: v1::Outcome::Failed as i32,
        result: b"{}".to_vec(),
        error: "boom".into(),
        retryable: true,
        exit_code: Some(1),
        signal: None,
        duration_ms: 5,
    };
    let mut reps = vary(&rep, strs(), |r, s| r.worker_id = s);
    reps.extend(vary(&rep, strs(), |r, s| r.job_id = s));
    reps.extend(vary(&rep, u32s(), |r, x| r.attempt = x));
    reps.extend(vary(&rep, i32s(), |r, x| r.outcome = x));
    reps.extend(vary(&rep, strs(), |r, s| r.error = s));
    reps.extend(vary(&rep, i32s(), |r, x| r.exit_code = Some(x)));
    reps.extend(vary(&rep, i32s(), |r, x| r.signal = Some(x)));
    reps.extend(vary(&rep, u64s(), |r, x| r.duration_ms = x));
    for r in &reps {
        c.push(ReportResult(r.clone()));
        c.push(ReportResults(v1::ReportResultsRequest {
            reports: vec![r.clone()],
        }));
    }
    let settings = v1::QueueSettings::default();
    let mut sets = vary(&settings, u32s(), |r, x| r.max_retries = Some(x));
    sets.extend(vary(&settings, u32s(), |r, x| r.default_ttl_seconds = Some(x)));
    sets.extend(vary(&settings, u32s(), |r, x| {
        r.default_timeout_seconds = Some(x)
    }));
    sets.extend(vary(&settings, u32s(), |r, x| r.backoff_base_ms = Some(x)));
    sets.extend(vary(&settings, u32s(), |r, x| r.backoff_max_ms = Some(x)));
    sets.extend(vary(&settings, u32s(), |r, x| r.concurrency_limit = Some(x)));
    sets.extend(vary(&settings, f64s(), |r, x| r.rate_limit_per_second = Some(x)));
    sets.extend(vary(&settings, strs(), |r, x| r.priority_weights = Some(x)));
    for (i, s) in sets.into_iter().enumerate() {
        c.push(CreateQueue(v1::CreateQueueRequest {
            name: format!("hostile-{i}"),
            settings: Some(s.clone()),
        }));
        c.push(UpdateQueue(v1::UpdateQueueRequest {
            name: "default".into(),
            settings: Some(s),
        }));
    }
    c.push(ListQueues(v1::ListQueuesRequest {}));
    c.push(ListWorkers(v1::ListWorkersRequest {
        include_offline: true,
    }));
    c.push(GetSystemStatus(v1::GetSystemStatusRequest {}));
    let sched = v1::ScheduleSpec {
        cron: Some("0 3 * * *".into()),
        timezone: Some("Europe/Berlin".into()),
        queue: Some("default".into()),
        payload: Some(b"{}".to_vec()),
        ..Default::default()
    };
    let mut specs = vary(&sched, strs(), |r, s| r.cron = Some(s));
    specs.extend(vary(&sched, strs(), |r, s| r.timezone = Some(s)));
    specs.extend(vary(&sched, strs(), |r, s| r.queue = Some(s)));
    specs.extend(vary(&sched, strs(), |r, s| r.missed = Some(s)));
    specs.extend(vary(&sched, strs(), |r, s| r.overlap = Some(s)));
    specs.extend(vary(&sched, i32s(), |r, x| r.priority = Some(x)));
    specs.extend(vary(&sched, i32s(), |r, x| r.max_retries = Some(x)));
    specs.extend(vary(&sched, u32s(), |r, x| r.ttl_seconds = Some(x)));
    specs.extend(vary(&sched, vec![vec![0u8; 2 * 1024 * 1024]], |r, p| {
        r.payload = Some(p)
    }));
    for (i, spec) in specs.into_iter().enumerate() {
        c.push(CreateSchedule(v1::CreateScheduleRequest {
            name: format!("hostile-{i}"),
            spec: Some(spec.clone()),
        }));
        c.push(UpdateSchedule(v1::UpdateScheduleRequest {
            name: "hostile-0".into(),
            spec: Some(spec),
        }));
    }
    for name in strs() {
        c.push(CreateSchedule(v1::CreateScheduleRequest {
            name: name.clone(),
            spec: Some(sched.clone()),
        }));
        for call in [
            GetSchedule,
            PauseSchedule,
            ResumeSchedule,
            DeleteSchedule,
            TriggerSchedule,
        ] {
            c.push(call(v1::ScheduleRef { name: name.clone() }));
        }
    }
    c.push(ListSchedules(v1::ListSchedulesRequest {}));
    c
}

#[tokio::test]
async fn jq_105_every_field_of_every_request_refuses_each_hostile_value_alone() {
    let mut env = start_tuned(quiet).await;
    let ch = channel(env.server.grpc_addr).await;
    // A job and a worker for the calls to meet.
    let (path, bytes, _) = Call::Register(v1::RegisterRequest {
        worker_id: "w-hostile".into(),
        hostname: "host".into(),
        concurrency: 2,
        queues: vec!["default".into()],
        ..Default::default()
    })
    .wire();
    assert_eq!(send(&ch, path, bytes, false).await.code(), Code::Ok);
    let job = env.submit(common::spec("default", "{}")).await;
    let calls = one_field_at_a_time(&job);
    let mut failures = vec![];
    let mut refused = 0;
    for call in &calls {
        let (path, bytes, streaming) = call.wire();
        let before = counts(&env.db).await;
        let st = send(&ch, path, bytes, streaming).await;
        let what = || {
            let mut d = format!("{call:?}");
            d.truncate(300);
            format!("{path} {:?} {:.200}: {d}", st.code(), st.message())
        };
        if matches!(st.code(), Code::Internal | Code::Unknown) {
            failures.push(what());
        }
        if st.code() != Code::Ok {
            refused += 1;
            if st.message().len() > 2048 {
                failures.push(format!(
                    "unbounded message ({} bytes): {}",
                    st.message().len(),
                    what()
                ));
            }
            if counts(&env.db).await != before {
                failures.push(format!("refused but changed rows: {}", what()));
            }
        }
    }
    env.server.shutdown().await;
    assert!(
        failures.is_empty(),
        "{} of {} calls:\n{}",
        failures.len(),
        calls.len(),
        failures.join("\n")
    );
    assert!(refused > calls.len() / 2, "{refused} of {} refused", calls.len());
}
