//! jq-server over real gRPC against real PostgreSQL, with a fake worker.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use jq_proto::v1::{self, server_message::Kind};
use tonic::Code;

#[tokio::test]
async fn fr_001_fr_005_fr_030_submit_then_get_over_grpc() {
    let mut env = start().await;
    let id = env.submit(spec("default", "{\"n\":1}")).await;
    assert_eq!(uuid::Uuid::parse_str(&id).unwrap().get_version_num(), 4);
    let j = env.job(&id).await;
    assert_eq!(j.queue, "default");
    assert_eq!(j.status, v1::JobStatus::Pending as i32);
    assert_eq!(j.payload, b"{\"n\":1}");
    assert!(j.created_at.is_some());
    env.server.shutdown().await;
}

#[tokio::test]
async fn fr_002_fr_006_jq_104_bad_submissions_are_refused_and_store_nothing() {
    let mut env = start().await;
    let bad_prio = v1::JobSpec {
        priority: Some(10),
        ..spec("default", "{}")
    };
    let e = env
        .jobs
        .submit_job(v1::SubmitJobRequest { job: Some(bad_prio) })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("priority"), "{}", e.message());
    let e = env
        .jobs
        .submit_job(v1::SubmitJobRequest {
            job: Some(spec("nope", "{}")),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert!(e.message().contains("nope"));
    let big = v1::JobSpec {
        payload: vec![b'x'; 1024 * 1024 + 1],
        ..spec("default", "")
    };
    let e = env
        .jobs
        .submit_job(v1::SubmitJobRequest { job: Some(big) })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("payload"), "{}", e.message());
    // Bulk: one bad job rejects all.
    let e = env
        .jobs
        .submit_jobs(v1::SubmitJobsRequest {
            jobs: vec![
                spec("default", "{}"),
                v1::JobSpec {
                    priority: Some(-1),
                    ..spec("default", "{}")
                },
            ],
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = env
        .jobs
        .get_job(v1::GetJobRequest {
            job_id: "not-a-uuid".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs")
        .fetch_one(env.db.pool())
        .await
        .unwrap();
    assert_eq!(n, 0, "nothing partial stored");
    env.server.shutdown().await;
}

#[tokio::test]
async fn fr_001_concurrent_single_submits_share_commits_but_keep_their_own_answers() {
    let env = start().await;
    // Many clients at once: the server writes them in batches, yet a bad
    // queue fails only its own call and every good call gets its own job.
    let mut tasks = vec![];
    for i in 0..60 {
        let mut jobs = env.jobs.clone();
        let queue = if i % 10 == 3 { "nope" } else { "default" };
        tasks.push(tokio::spawn(async move {
            jobs.submit_job(v1::SubmitJobRequest {
                job: Some(spec(queue, &format!("{{\"i\":{i}}}"))),
            })
            .await
            .map(|r| r.into_inner().job_id)
        }));
    }
    let mut ids = HashSet::new();
    for (i, t) in tasks.into_iter().enumerate() {
        match t.await.unwrap() {
            Ok(id) => {
                assert_ne!(i % 10, 3, "job {i} went to a queue that does not exist");
                ids.insert(id);
            }
            Err(e) => {
                assert_eq!(i % 10, 3, "job {i}: {e}");
                assert_eq!(e.code(), Code::NotFound);
                assert!(e.message().contains("nope"), "{}", e.message());
            }
        }
    }
    assert_eq!(ids.len(), 54);
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs")
        .fetch_one(env.db.pool())
        .await
        .unwrap();
    assert_eq!(n, 54);
    env.server.shutdown().await;
}

#[tokio::test]
async fn fr_010_fr_031_job_runs_through_a_worker_to_done() {
    let mut env = start().await;
    let mut w = FakeWorker::connect(env.server.grpc_addr, "w1", &["default"], 2).await;
    let id = env.submit(spec("default", "{\"cmd\":\"noop\"}")).await;
    let a = w.assignment().await;
    assert_eq!(
        (a.job_id.as_str(), a.attempt, a.queue.as_str()),
        (id.as_str(), 1, "default")
    );
    assert_eq!(a.payload, b"{\"cmd\":\"noop\"}");
    w.ack(&a).await.unwrap();
    let r = w
        .report(&a.job_id, a.attempt, v1::Outcome::Succeeded)
        .await
        .unwrap();
    assert_eq!(r.status, v1::JobStatus::Done as i32);
    let j = env.job(&id).await;
    assert_eq!(j.result, b"{\"ok\":true}");
    let ev = env
        .jobs
        .get_job_events(v1::GetJobEventsRequest { job_id: id.clone() })
        .await
        .unwrap()
        .into_inner()
        .events;
    let reasons: Vec<&str> = ev.iter().map(|e| e.reason.as_str()).collect();
    assert_eq!(reasons, vec!["SUBMITTED", "CLAIMED", "STARTED", "COMPLETED"]);
    env.server.shutdown().await;
}

#[tokio::test]
async fn jq_110_stale_attempt_report_is_aborted_and_changes_nothing() {
    let mut env = start().await;
    let mut w = FakeWorker::connect(env.server.grpc_addr, "w1", &["default"], 1).await;
    let id = env.submit(spec("default", "{}")).await;
    let a = w.assignment().await;
    w.ack(&a).await.unwrap();
    let e = w
        .report(&id, a.attempt + 1, v1::Outcome::Succeeded)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Aborted, "{}", e.message());
    let e = w.report(&id, 0, v1::Outcome::Failed).await.unwrap_err();
    assert_eq!(e.code(), Code::Aborted);
    assert_eq!(env.job(&id).await.status, v1::JobStatus::Running as i32);
    // The right attempt works, and a repeat is an idempotent duplicate.
    w.report(&id, a.attempt, v1::Outcome::Succeeded).await.unwrap();
    assert!(
        w.report(&id, a.attempt, v1::Outcome::Succeeded)
            .await
            .unwrap()
            .duplicate
    );
    env.server.shutdown().await;
}

#[tokio::test]
async fn jq_110_batched_acks_and_results_answer_each_item_as_its_single_call() {
    let mut env = start().await;
    let mut w = FakeWorker::connect(env.server.grpc_addr, "w1", &["default"], 3).await;
    let mut ids = vec![];
    for i in 0..3 {
        ids.push(env.submit(spec("default", &format!("{{\"i\":{i}}}"))).await);
    }
    let mut got = vec![];
    for _ in 0..3 {
        got.push(w.assignment().await);
    }
    let ack = |a: &v1::Assignment, attempt: u32| v1::AckJobRequest {
        worker_id: "w1".into(),
        job_id: a.job_id.clone(),
        attempt,
    };
    // Two good acks, one with a stale attempt, one malformed id.
    let r = w
        .client
        .ack_jobs(v1::AckJobsRequest {
            acks: vec![
                ack(&got[0], got[0].attempt),
                ack(&got[1], got[1].attempt + 1),
                ack(&got[2], got[2].attempt),
                v1::AckJobRequest {
                    job_id: "not-a-uuid".into(),
                    ..ack(&got[0], 1)
                },
            ],
        })
        .await
        .unwrap()
        .into_inner()
        .results;
    let codes: Vec<Code> = r.iter().map(|s| Code::from_i32(s.code)).collect();
    assert_eq!(
        codes,
        [Code::Ok, Code::Aborted, Code::Ok, Code::InvalidArgument],
        "{r:?}"
    );
    assert_eq!(
        env.job(&got[0].job_id).await.status,
        v1::JobStatus::Running as i32
    );
    assert_eq!(
        env.job(&got[1].job_id).await.status,
        v1::JobStatus::Assigned as i32
    );
    assert_eq!(
        env.job(&got[2].job_id).await.status,
        v1::JobStatus::Running as i32
    );
    let report = |a: &v1::Assignment, attempt: u32| v1::ReportResultRequest {
        worker_id: "w1".into(),
        job_id: a.job_id.clone(),
        attempt,
        outcome: v1::Outcome::Succeeded as i32,
        result: b"{}".to_vec(),
        ..Default::default()
    };
    // A good result, the same result again (an idempotent duplicate), a
    // result for a job that is not running.
    let r = w
        .client
        .report_results(v1::ReportResultsRequest {
            reports: vec![
                report(&got[0], got[0].attempt),
                report(&got[0], got[0].attempt),
                report(&got[1], got[1].attempt),
            ],
        })
        .await
        .unwrap()
        .into_inner()
        .results;
    assert_eq!(r.len(), 3);
    let ok = |i: usize| r[i].status.as_ref().map(|s| s.code) == Some(Code::Ok as i32);
    assert!(ok(0) && ok(1), "{r:?}");
    let first = r[0].response.as_ref().unwrap();
    let second = r[1].response.as_ref().unwrap();
    assert_eq!(first.status, v1::JobStatus::Done as i32);
    // Same batch, same job: the second is decided after the first.
    assert!(!first.duplicate && second.duplicate, "{r:?}");
    assert!(!ok(2) && r[2].response.is_none(), "{r:?}");
    assert_eq!(env.job(&got[0].job_id).await.status, v1::JobStatus::Done as i32);
    assert_eq!(
        env.job(&got[1].job_id).await.status,
        v1::JobStatus::Assigned as i32
    );
    // Too many in one call is refused whole.
    let e = w
        .client
        .ack_jobs(v1::AckJobsRequest {
            acks: vec![ack(&got[1], got[1].attempt); 1001],
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(
        env.job(&got[1].job_id).await.status,
        v1::JobStatus::Assigned as i32
    );
    env.server.shutdown().await;
}

#[tokio::test]
async fn jq_111_assignment_on_a_dropped_stream_goes_back_to_pending() {
    let mut env = start().await;
    let mut w = FakeWorker::connect(env.server.grpc_addr, "w1", &["default"], 1).await;
    let id = env.submit(spec("default", "{}")).await;
    let a = w.assignment().await;
    assert_eq!(a.job_id, id);
    drop(w); // the worker vanishes before acknowledging
    let j = env.wait_status(&id, v1::JobStatus::Pending).await;
    assert_eq!((j.attempt, j.retries), (1, 0), "returned at once, no retry used");
    // A new worker gets it as the next attempt.
    let mut w2 = FakeWorker::connect(env.server.grpc_addr, "w2", &["default"], 1).await;
    let a2 = w2.assignment().await;
    assert_eq!((a2.job_id.as_str(), a2.attempt), (id.as_str(), 2));
    env.server.shutdown().await;
}

#[tokio::test]
async fn fr_021_jq_121_never_more_jobs_than_the_worker_concurrency() {
    let mut env = start().await;
    let mut w = FakeWorker::connect(env.server.grpc_addr, "w1", &["default"], 2).await;
    for i in 0..5 {
        env.submit(spec("default", &format!("{i}"))).await;
    }
    let a1 = w.assignment().await;
    let _a2 = w.assignment().await;
    // Several dispatcher cycles pass; nothing more may arrive.
    assert!(
        w.next_within(Duration::from_millis(800)).await.is_none(),
        "a third job exceeded concurrency 2"
    );
    let assigned: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE status = 'ASSIGNED'")
        .fetch_one(env.db.pool())
        .await
        .unwrap();
    assert_eq!(assigned, 2);
    // Finishing one frees exactly one slot.
    w.ack(&a1).await.unwrap();
    w.report(&a1.job_id, a1.attempt, v1::Outcome::Succeeded)
        .await
        .unwrap();
    let _a3 = w.assignment().await;
    assert!(w.next_within(Duration::from_millis(800)).await.is_none());
    env.server.shutdown().await;
}

#[tokio::test]
async fn fr_022_worker_only_gets_its_queues() {
    let mut env = start().await;
    env.admin
        .create_queue(v1::CreateQueueRequest {
            name: "emails".into(),
            settings: None,
        })
        .await
        .unwrap();
    let mut w = FakeWorker::connect(env.server.grpc_addr, "w1", &["emails"], 4).await;
    env.submit(spec("default", "{}")).await;
    let mine = env.submit(spec("emails", "{}")).await;
    assert_eq!(w.assignment().await.job_id, mine);
    assert!(w.next_within(Duration::from_millis(600)).await.is_none());
    env.server.shutdown().await;
}

#[tokio::test]
async fn jq_122_paused_queue_dispatches_nothing_until_resumed() {
    let mut env = start().await;
    env.admin
        .pause_queue(v1::PauseQueueRequest {
            name: "default".into(),
        })
        .await
        .unwrap();
    let mut w = FakeWorker::connect(env.server.grpc_addr, "w1", &["default"], 4).await;
    let id = env.submit(spec("default", "{}")).await;
    assert!(w.next_within(Duration::from_millis(800)).await.is_none());
    env.admin
        .resume_queue(v1::ResumeQueueRequest {
            name: "default".into(),
        })
        .await
        .unwrap();
    assert_eq!(w.assignment().await.job_id, id);
    env.server.shutdown().await;
}

#[tokio::test]
async fn fr_012_jq_113_cancel_of_a_running_job_reaches_the_worker() {
    let mut env = start().await;
    let mut w = FakeWorker::connect(env.server.grpc_addr, "w1", &["default"], 1).await;
    let id = env.submit(spec("default", "{}")).await;
    let a = w.assignment().await;
    w.ack(&a).await.unwrap();
    let r = env
        .jobs
        .cancel_job(v1::CancelJobRequest { job_id: id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert!(r.cancel_requested);
    match w.next().await {
        Kind::CancelJob(c) => assert_eq!((c.job_id.as_str(), c.attempt), (id.as_str(), a.attempt)),
        other => panic!("expected a cancel, got {other:?}"),
    }
    // Also repeated in the heartbeat answer (for workers on other replicas).
    let hb = w
        .heartbeat(vec![v1::Lease {
            job_id: id.clone(),
            attempt: a.attempt,
        }])
        .await;
    assert_eq!(hb.cancel.len(), 1);
    w.report(&id, a.attempt, v1::Outcome::Cancelled).await.unwrap();
    let j = env.job(&id).await;
    assert_eq!(j.status, v1::JobStatus::DeadLettered as i32);
    // Cancelling again is a precondition failure.
    let e = env
        .jobs
        .cancel_job(v1::CancelJobRequest { job_id: id })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    env.server.shutdown().await;
}

#[tokio::test]
async fn fr_023_fr_024_drain_and_shutdown_are_pushed_to_the_worker() {
    let mut env = start().await;
    let mut w = FakeWorker::connect(env.server.grpc_addr, "w1", &["default"], 1).await;
    let r = env
        .admin
        .drain_worker(v1::DrainWorkerRequest {
            worker_id: "w1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.worker.unwrap().status, v1::WorkerStatus::Draining as i32);
    assert!(matches!(w.next().await, Kind::Drain(_)));
    // A draining worker gets no new jobs.
    env.submit(spec("default", "{}")).await;
    assert!(w.next_within(Duration::from_millis(600)).await.is_none());
    env.admin
        .shutdown_worker(v1::ShutdownWorkerRequest {
            worker_id: "w1".into(),
        })
        .await
        .unwrap();
    assert!(matches!(w.next().await, Kind::Shutdown(_)));
    let e = env
        .admin
        .drain_worker(v1::DrainWorkerRequest {
            worker_id: "ghost".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    env.server.shutdown().await;
}

#[tokio::test]
async fn fr_020_silent_worker_goes_offline_and_its_job_is_retried() {
    let db = jq_testkit::TestDb::new().await;
    let mut cfg = config(&db);
    cfg.scheduler.heartbeat_interval_s = 1;
    cfg.scheduler.worker_heartbeat_timeout_s = 2;
    let mut env = start_with(db, cfg).await;
    let mut w = FakeWorker::connect(env.server.grpc_addr, "w1", &["default"], 1).await;
    let id = env.submit(spec("default", "{}")).await;
    let a = w.assignment().await;
    w.ack(&a).await.unwrap();
    // No heartbeats: after the timeout the job fails into retry.
    let j = env.wait_status(&id, v1::JobStatus::Pending).await;
    assert_eq!(j.retries, 1);
    let ws = env
        .admin
        .list_workers(v1::ListWorkersRequest {
            include_offline: true,
        })
        .await
        .unwrap()
        .into_inner()
        .workers;
    assert_eq!(ws[0].status, v1::WorkerStatus::Offline as i32);
    // The zombie's late result is refused.
    let e = w
        .report(&id, a.attempt, v1::Outcome::Succeeded)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Aborted);
    let hb = w.heartbeat(vec![]).await;
    assert!(!hb.registered, "the worker is told to register again");
    env.server.shutdown().await;
}

#[tokio::test]
async fn fr_016_unacknowledged_assignment_times_out() {
    let db = jq_testkit::TestDb::new().await;
    let mut cfg = config(&db);
    cfg.scheduler.assignment_timeout_s = 1;
    let mut env = start_with(db, cfg).await;
    let mut w = FakeWorker::connect(env.server.grpc_addr, "w1", &["default"], 1).await;
    let id = env.submit(spec("default", "{}")).await;
    let a = w.assignment().await;
    let j = env.wait_status(&id, v1::JobStatus::Pending).await;
    assert_eq!(j.retries, 1);
    // The late ack of the timed-out attempt is refused: stale (ABORTED) when
    // the job was already re-dispatched, wrong state otherwise.
    let code = w.ack(&a).await.unwrap_err().code();
    assert!(
        matches!(code, Code::Aborted | Code::FailedPrecondition),
        "{code:?}"
    );
    env.server.shutdown().await;
}

/// FR-025 over gRPC: weights are stored in canonical form and shown; a
/// fault is INVALID_ARGUMENT naming it, and changes nothing.
#[tokio::test]
async fn fr_025_priority_weights_are_validated_shown_and_cleared_over_grpc() {
    let mut env = start().await;
    let weights = |w: &str| {
        Some(v1::QueueSettings {
            priority_weights: Some(w.into()),
            ..Default::default()
        })
    };
    let q = env
        .admin
        .create_queue(v1::CreateQueueRequest {
            name: "bands".into(),
            settings: weights("5:3, 0:1 ,9:8"),
        })
        .await
        .unwrap()
        .into_inner()
        .queue
        .unwrap();
    assert_eq!(q.priority_weights, "9:8,5:3,0:1");
    for (bad, says) in [
        ("9:0,0:1", "priority_weights: band 9: weight \"0\" is not 1-1000"),
        ("9:8", "add a band 0"),
        ("3:1,3:1,0:1", "band 3 is given twice"),
        ("10:1,0:1", "band \"10\": a priority is 0-9"),
        ("9=1", "is not LOWEST_PRIORITY:WEIGHT"),
    ] {
        let e = env
            .admin
            .update_queue(v1::UpdateQueueRequest {
                name: "bands".into(),
                settings: weights(bad),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{bad}");
        assert!(e.message().contains(says), "{bad}: {}", e.message());
        let e = env
            .admin
            .create_queue(v1::CreateQueueRequest {
                name: "never".into(),
                settings: weights(bad),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{bad}");
    }
    let get = |name: &str| {
        let mut admin = env.admin.clone();
        let name = name.to_string();
        async move { admin.get_queue(v1::GetQueueRequest { name }).await }
    };
    let q = get("bands").await.unwrap().into_inner().queue.unwrap();
    assert_eq!(
        q.priority_weights, "9:8,5:3,0:1",
        "a refused update changes nothing"
    );
    assert_eq!(get("never").await.unwrap_err().code(), Code::NotFound);
    let q = env
        .admin
        .update_queue(v1::UpdateQueueRequest {
            name: "bands".into(),
            settings: weights(""),
        })
        .await
        .unwrap()
        .into_inner()
        .queue
        .unwrap();
    assert_eq!(q.priority_weights, "", "cleared: strict priority");
    env.server.shutdown().await;
}

#[tokio::test]
async fn fr_025_to_fr_028_fr_042_queue_admin_and_system_status_over_grpc() {
    let mut env = start().await;
    let q = env
        .admin
        .create_queue(v1::CreateQueueRequest {
            name: "reports".into(),
            settings: Some(v1::QueueSettings {
                max_retries: Some(7),
                default_ttl_seconds: Some(60),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .queue
        .unwrap();
    assert_eq!((q.max_retries, q.default_ttl_seconds), (7, Some(60)));
    let e = env
        .admin
        .create_queue(v1::CreateQueueRequest {
            name: "reports".into(),
            settings: None,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists);
    let e = env
        .admin
        .create_queue(v1::CreateQueueRequest {
            name: "bad name".into(),
            settings: None,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    env.submit(spec("reports", "{}")).await;
    let st = env
        .admin
        .get_queue_stats(v1::GetQueueStatsRequest {
            name: "reports".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .stats
        .unwrap();
    assert_eq!(st.pending, 1);
    let e = env
        .admin
        .delete_queue(v1::DeleteQueueRequest {
            name: "reports".into(),
            force: false,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    let d = env
        .admin
        .delete_queue(v1::DeleteQueueRequest {
            name: "reports".into(),
            force: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(d.deleted_jobs, 1);
    let names: Vec<String> = env
        .admin
        .list_queues(v1::ListQueuesRequest {})
        .await
        .unwrap()
        .into_inner()
        .queues
        .into_iter()
        .map(|q| q.name)
        .collect();
    assert_eq!(names, vec!["default"], "FR-027: default exists");
    let status = env
        .admin
        .get_system_status(v1::GetSystemStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(status.server_version.starts_with(env!("CARGO_PKG_VERSION")));
    assert_eq!(
        status
            .components
            .iter()
            .find(|c| c.name == "database")
            .unwrap()
            .state,
        "ok"
    );
    env.server.shutdown().await;
}

#[tokio::test]
async fn fr_032_list_jobs_pages_over_grpc() {
    let mut env = start().await;
    let jobs: Vec<v1::JobSpec> = (0..25).map(|i| spec("default", &i.to_string())).collect();
    env.jobs
        .submit_jobs(v1::SubmitJobsRequest { jobs })
        .await
        .unwrap();
    let p1 = env
        .jobs
        .list_jobs(v1::ListJobsRequest {
            limit: 20,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(p1.jobs.len(), 20);
    let p2 = env
        .jobs
        .list_jobs(v1::ListJobsRequest {
            limit: 20,
            page_token: p1.next_page_token,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(p2.jobs.len(), 5);
    assert!(p2.next_page_token.is_empty());
    env.server.shutdown().await;
}

#[tokio::test]
async fn fr_039_fr_040_nfr_013_metrics_and_health_endpoints() {
    let mut env = start().await;
    let mut w = FakeWorker::connect(env.server.grpc_addr, "w1", &["default"], 1).await;
    let id = env.submit(spec("default", "{}")).await;
    let a = w.assignment().await;
    w.ack(&a).await.unwrap();
    w.report(&id, a.attempt, v1::Outcome::Succeeded).await.unwrap();
    // Let the gauges refresh once.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (code, body) = http_get(env.server.metrics_addr, "/metrics").await;
    assert_eq!(code, 200);
    for name in [
        "jq_job_queue_depth{",
        "jq_job_processing_duration_seconds_bucket{",
        "jq_job_total{",
        "jq_worker_active_count ",
        "jq_worker_job_concurrency{",
        "jq_grpc_request_duration_seconds_bucket{",
        "jq_scheduler_cycle_duration_seconds_bucket{",
        "jq_scheduler_jobs_assigned_total{",
        "jq_kafka_publish_errors_total{",
        "jq_db_query_duration_seconds_bucket{",
        "jq_outbox_backlog ",
        "jq_job_submit_to_start_seconds_bucket{",
    ] {
        assert!(body.contains(name), "{name} missing from /metrics");
    }
    assert!(body.contains("method=\"/jq.v1.JobService/SubmitJob\",status_code=\"OK\""));
    assert!(body.contains("jq_job_total{queue=\"default\",status=\"DONE\"} 1"));
    let (code, _) = http_get(env.server.health_addr, "/healthz").await;
    assert_eq!(code, 200);
    let (code, body) = http_get(env.server.health_addr, "/readyz").await;
    assert_eq!((code, body.trim()), (200, "ready"));
    env.server.shutdown().await;
}

#[tokio::test]
async fn nfr_013_readyz_is_false_while_the_database_is_unreachable() {
    let db = jq_testkit::TestDb::new().await;
    let mut cfg = config(&db);
    cfg.db.url = "postgres://postgres@127.0.0.1:1/none".into();
    cfg.db.acquire_timeout_ms = 200;
    let server = jq_server::start(cfg).await.unwrap();
    let (code, _) = http_get(server.health_addr, "/healthz").await;
    assert_eq!(code, 200, "alive");
    let (code, body) = http_get(server.health_addr, "/readyz").await;
    assert_eq!(code, 503, "{body}");
    // Calls fail with UNAVAILABLE, not INTERNAL.
    let mut jobs = jq_proto::v1::job_service_client::JobServiceClient::new(channel(server.grpc_addr).await);
    let e = jobs
        .submit_job(v1::SubmitJobRequest {
            job: Some(spec("default", "{}")),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{}", e.message());
    server.shutdown().await;
}

#[tokio::test]
async fn nfr_014_graceful_shutdown_ends_worker_streams() {
    let env = start().await;
    let mut w = FakeWorker::connect(env.server.grpc_addr, "w1", &["default"], 1).await;
    env.server.shutdown().await;
    assert!(
        w.next_within(Duration::from_secs(5)).await.is_none(),
        "the stream ended"
    );
}

#[tokio::test]
async fn request_id_is_taken_from_metadata_and_echoed() {
    let mut env = start().await;
    let mut req = tonic::Request::new(v1::ListQueuesRequest {});
    req.metadata_mut()
        .insert("x-request-id", "req-42".parse().unwrap());
    let res = env.admin.list_queues(req).await.unwrap();
    assert_eq!(res.metadata().get("x-request-id").unwrap(), "req-42");
    let res = env.admin.list_queues(v1::ListQueuesRequest {}).await.unwrap();
    assert!(
        !res.metadata().get("x-request-id").unwrap().is_empty(),
        "generated when absent"
    );
    env.server.shutdown().await;
}

#[tokio::test]
async fn nfr_008_fr_015_two_servers_dispatch_2000_jobs_without_duplicates() {
    let db = jq_testkit::TestDb::new().await;
    let cfg = config(&db);
    let a = jq_server::start(cfg.clone()).await.unwrap();
    let b = jq_server::start(cfg).await.unwrap();
    let mut workers = vec![];
    for (i, addr) in [a.grpc_addr, a.grpc_addr, b.grpc_addr, b.grpc_addr]
        .into_iter()
        .enumerate()
    {
        let mut w = FakeWorker::connect(addr, &format!("w{i}"), &["default"], 8).await;
        workers.push(tokio::spawn(async move {
            let mut runs = vec![];
            let mut last_beat = std::time::Instant::now();
            while let Some(Kind::Assignment(a)) = w.next_within(Duration::from_secs(5)).await {
                // Heartbeat like a real worker, or a slow run gets reaped.
                if last_beat.elapsed() > Duration::from_secs(2) {
                    w.heartbeat(vec![]).await;
                    last_beat = std::time::Instant::now();
                }
                w.ack(&a).await.unwrap();
                w.report(&a.job_id, a.attempt, v1::Outcome::Succeeded)
                    .await
                    .unwrap();
                runs.push((a.job_id, a.attempt));
            }
            runs
        }));
    }
    let mut jobs = jq_proto::v1::job_service_client::JobServiceClient::new(channel(a.grpc_addr).await);
    for chunk in 0..4 {
        let specs = (0..500)
            .map(|i| spec("default", &format!("{chunk}-{i}")))
            .collect();
        jobs.submit_jobs(v1::SubmitJobsRequest { jobs: specs })
            .await
            .unwrap();
    }
    let mut runs = vec![];
    for w in workers {
        runs.extend(w.await.unwrap());
    }
    let ids: HashSet<&String> = runs.iter().map(|(id, _)| id).collect();
    assert_eq!(runs.len(), 2000, "every job ran exactly once");
    assert_eq!(ids.len(), 2000);
    assert!(
        runs.iter().all(|(_, attempt)| *attempt == 1),
        "no job was dispatched twice"
    );
    let done: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE status = 'DONE'")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(done, 2000);
    let claimed: i64 = sqlx::query_scalar("SELECT count(*) FROM job_events WHERE reason = 'CLAIMED'")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(claimed, 2000);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn fr_040_exposition_passes_promtool_check_metrics() {
    let mut env = start().await;
    let mut w = FakeWorker::connect(env.server.grpc_addr, "w1", &["default"], 1).await;
    let id = env.submit(spec("default", "{}")).await;
    let a = w.assignment().await;
    w.ack(&a).await.unwrap();
    w.report(&id, a.attempt, v1::Outcome::Succeeded).await.unwrap();
    let (_, body) = http_get(env.server.metrics_addr, "/metrics").await;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool on PATH (Debian package prometheus; .ci/run installs it)");
    use std::io::Write;
    child.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // SPEC FR-040 fixes the name jq_worker_active_count, which promtool's
    // naming lint dislikes (a gauge ending in _count); that one lint is
    // accepted (ADR 0005), anything else fails the test.
    let spec_name_lint =
        "jq_worker_active_count non-histogram and non-summary metrics should not have \"_count\" suffix";
    let complaints: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && *l != spec_name_lint)
        .collect();
    assert!(complaints.is_empty(), "promtool: {complaints:?}");
    assert!(
        text.contains("jq_worker_active_count"),
        "the accepted lint is the only output: {text}"
    );
    env.server.shutdown().await;
}

#[tokio::test]
async fn jq_104_oversize_grpc_message_is_refused_with_a_clear_status() {
    let db = jq_testkit::TestDb::new().await;
    let mut cfg = config(&db);
    cfg.server.max_payload_bytes = 1024;
    cfg.server.max_message_bytes = 64 * 1024;
    let mut env = start_with(db, cfg).await;
    let huge = v1::JobSpec {
        payload: vec![b'x'; 128 * 1024],
        ..spec("default", "")
    };
    let e = env
        .jobs
        .submit_job(v1::SubmitJobRequest { job: Some(huge) })
        .await
        .unwrap_err();
    // gRPC's convention for a message over the limit (JQ-104), with the
    // limit in the message.
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(e.message().contains("65536"), "{}", e.message());
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs")
        .fetch_one(env.db.pool())
        .await
        .unwrap();
    assert_eq!(n, 0);
    env.server.shutdown().await;
}

#[tokio::test]
async fn jq_120_a_submit_on_one_replica_wakes_the_dispatcher_of_another() {
    let db = jq_testkit::TestDb::new().await;
    let mut cfg = config(&db);
    // The interval safety net is far away: only the wake-up can deliver.
    cfg.scheduler.interval_ms = 60_000;
    let a = jq_server::start(cfg.clone()).await.unwrap();
    let b = jq_server::start(cfg).await.unwrap();
    let mut w = FakeWorker::connect(b.grpc_addr, "on-b", &["default"], 1).await;
    // Let B's first cycle (on connect) pass with nothing to do.
    assert!(w.next_within(Duration::from_millis(300)).await.is_none());
    let mut jobs = jq_proto::v1::job_service_client::JobServiceClient::new(channel(a.grpc_addr).await);
    let id = jobs
        .submit_job(v1::SubmitJobRequest {
            job: Some(spec("default", "{}")),
        })
        .await
        .unwrap()
        .into_inner()
        .job_id;
    let got = w.next_within(Duration::from_secs(20)).await;
    assert!(
        matches!(&got, Some(Kind::Assignment(x)) if x.job_id == id),
        "B was not woken: {got:?}"
    );
    a.shutdown().await;
    b.shutdown().await;
}

/// FR-017 / JQ-120: one wake-up claims in batches of `batch_size` and
/// cycles again at once while a claim gets all it asked for, so a bulk
/// submit bigger than a batch is delivered without waiting for the
/// interval; the cycle that gets less ends the round.
#[tokio::test]
async fn fr_017_jq_120_a_wake_keeps_claiming_while_claims_fill_their_batch() {
    let db = jq_testkit::TestDb::new().await;
    let mut cfg = config(&db);
    cfg.scheduler.interval_ms = 60_000;
    cfg.scheduler.batch_size = 2;
    let mut env = start_with(db, cfg).await;
    let mut w = FakeWorker::connect(env.server.grpc_addr, "w", &["default"], 8).await;
    assert!(w.next_within(Duration::from_millis(300)).await.is_none());
    let jobs: Vec<v1::JobSpec> = (0..5).map(|i| spec("default", &i.to_string())).collect();
    env.jobs
        .submit_jobs(v1::SubmitJobsRequest { jobs })
        .await
        .unwrap();
    for k in 0..5 {
        let got = w.next_within(Duration::from_secs(20)).await;
        assert!(
            matches!(got, Some(Kind::Assignment(_))),
            "assignment {k}: {got:?}"
        );
    }
    env.server.shutdown().await;
}

#[tokio::test]
async fn nfr_020_fr_027_server_migrates_an_empty_database_on_start() {
    let admin = jq_testkit::postgres::server().await.admin_url.clone();
    let name = format!("jq_empty_{}", uuid::Uuid::new_v4().simple());
    let mut c = <sqlx::PgConnection as sqlx::Connection>::connect(&admin)
        .await
        .unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut c)
        .await
        .unwrap();
    let url = {
        let o: sqlx::postgres::PgConnectOptions = admin.parse().unwrap();
        sqlx::ConnectOptions::to_url_lossy(&o.database(&name)).to_string()
    };
    let db = jq_testkit::TestDb::new().await;
    let mut cfg = config(&db);
    cfg.db.url = url;
    let server = jq_server::start(cfg).await.unwrap();
    let (code, _) = http_get(server.health_addr, "/readyz").await;
    assert_eq!(code, 200, "migrated and ready");
    let mut admin_client =
        jq_proto::v1::admin_service_client::AdminServiceClient::new(channel(server.grpc_addr).await);
    let queues = admin_client
        .list_queues(v1::ListQueuesRequest {})
        .await
        .unwrap()
        .into_inner()
        .queues;
    assert_eq!(
        queues.iter().map(|q| q.name.as_str()).collect::<Vec<_>>(),
        vec!["default"]
    );
    server.shutdown().await;
    sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .execute(&mut c)
        .await
        .unwrap();
}

#[tokio::test]
async fn fr_031_watch_job_streams_every_transition_until_terminal() {
    let mut env = start().await;
    let id = env.submit(spec("default", "{}")).await;
    let mut watch = env
        .jobs
        .watch_job(v1::WatchJobRequest {
            job_id: id.clone(),
            since: None,
        })
        .await
        .unwrap()
        .into_inner();
    let mut w = FakeWorker::connect(env.server.grpc_addr, "w1", &["default"], 1).await;
    let a = w.assignment().await;
    w.ack(&a).await.unwrap();
    w.report(&id, a.attempt, v1::Outcome::Succeeded).await.unwrap();
    let mut reasons = vec![];
    while let Some(e) = tokio::time::timeout(Duration::from_secs(15), watch.message())
        .await
        .unwrap()
        .unwrap()
    {
        reasons.push(e.reason);
    }
    assert_eq!(
        reasons,
        ["SUBMITTED", "CLAIMED", "STARTED", "COMPLETED"],
        "and the stream ends at the terminal state"
    );
    let e = env
        .jobs
        .watch_job(v1::WatchJobRequest {
            job_id: uuid::Uuid::new_v4().to_string(),
            since: None,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    env.server.shutdown().await;
}

#[tokio::test]
async fn fr_004_ttl_reaper_dead_letters_a_job_nobody_started() {
    let mut env = start().await;
    let id = env
        .submit(v1::JobSpec {
            ttl_seconds: Some(1),
            ..spec("default", "{}")
        })
        .await;
    // No worker: the job waits past its TTL and the reaper dead-letters it.
    env.wait_status(&id, v1::JobStatus::DeadLettered).await;
    let ev = env
        .jobs
        .get_job_events(v1::GetJobEventsRequest { job_id: id })
        .await
        .unwrap()
        .into_inner()
        .events;
    assert_eq!(ev.last().unwrap().reason, "TTL_EXPIRED");
    env.server.shutdown().await;
}

fn schedule_spec(cron: &str) -> Option<v1::ScheduleSpec> {
    Some(v1::ScheduleSpec {
        cron: Some(cron.into()),
        payload: Some(br#"{"handler":"noop"}"#.to_vec()),
        missed: Some("all".into()),
        ..Default::default()
    })
}

fn at(t: &Option<prost_types::Timestamp>) -> chrono::DateTime<chrono::Utc> {
    jq_proto::from_timestamp(t.as_ref().unwrap()).unwrap()
}

/// JQ-124: two servers on one database and a secondly schedule for 20 s:
/// every occurrence from the first to the one before `next_at` has exactly
/// one job, whichever server fired it; its `job.submitted` event says
/// SCHEDULED and names the schedule; the fires are counted.
#[tokio::test]
async fn jq_124_two_servers_fire_a_secondly_schedule_once_per_occurrence() {
    let mut a = start().await;
    let b = jq_server::start(config(&a.db)).await.unwrap();
    let mut admin_b = v1::admin_service_client::AdminServiceClient::new(channel(b.grpc_addr).await);
    let created = a
        .admin
        .create_schedule(v1::CreateScheduleRequest {
            name: "tick".into(),
            spec: schedule_spec("* * * * * *"),
        })
        .await
        .unwrap()
        .into_inner()
        .schedule
        .unwrap();
    assert_eq!(
        (created.cron.as_str(), created.timezone.as_str()),
        ("* * * * * *", "UTC")
    );
    tokio::time::sleep(Duration::from_secs(20)).await;
    // Paused through the other server; it waits for a firing in progress.
    let paused = admin_b
        .pause_schedule(v1::ScheduleRef { name: "tick".into() })
        .await
        .unwrap()
        .into_inner()
        .schedule
        .unwrap();
    assert!(paused.paused);
    let occurrences: Vec<chrono::DateTime<chrono::Utc>> = sqlx::query_scalar(
        "SELECT j.scheduled_at FROM jobs j JOIN job_events e ON e.job_id = j.id \
         WHERE e.reason = 'SCHEDULED' AND e.detail = 'tick' ORDER BY j.scheduled_at",
    )
    .fetch_all(a.db.pool())
    .await
    .unwrap();
    let (first, next) = (at(&created.next_at), at(&paused.next_at));
    let want: Vec<_> = (0..(next - first).num_seconds())
        .map(|i| first + chrono::Duration::seconds(i))
        .collect();
    assert!(!want.is_empty());
    assert_eq!(
        occurrences, want,
        "one job per occurrence, none missing, none twice"
    );
    assert_eq!(paused.fires, want.len() as u64);
    assert_eq!(paused.skipped, 0);
    // The job says where it came from.
    let job = paused.last_job_id.clone();
    let events = a
        .jobs
        .get_job_events(v1::GetJobEventsRequest { job_id: job })
        .await
        .unwrap()
        .into_inner()
        .events;
    assert_eq!(
        (events[0].reason.as_str(), events[0].detail.as_str()),
        ("SCHEDULED", "tick")
    );
    let fires = |text: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with("jq_schedule_fires_total{schedule=\"tick\"}"))
            .and_then(|l| l.rsplit(' ').next())
            .map_or(0.0, |v| v.parse().unwrap())
    };
    let (_, ma) = http_get(a.server.metrics_addr, "/metrics").await;
    let (_, mb) = http_get(b.metrics_addr, "/metrics").await;
    assert_eq!(
        fires(&ma) + fires(&mb),
        want.len() as f64,
        "counted by whichever fired"
    );
    assert!(ma.contains("jq_schedule_lag_seconds"));
    b.shutdown().await;
    a.server.shutdown().await;
}

/// JQ-124 over gRPC: refusals name the fault and store nothing; get,
/// list, update, resume, trigger and delete.
#[tokio::test]
async fn jq_124_schedule_admin_over_grpc() {
    let mut env = start().await;
    for (cron, tz, code, says) in [
        (
            "0 25 * * *",
            "",
            Code::InvalidArgument,
            "cron: field 2 (hour) \"25\"",
        ),
        ("0 3 * *", "", Code::InvalidArgument, "has 4 fields"),
        (
            "0 3 * * *",
            "Europe/Nowhere",
            Code::InvalidArgument,
            "timezone: \"Europe/Nowhere\"",
        ),
    ] {
        let e = env
            .admin
            .create_schedule(v1::CreateScheduleRequest {
                name: "bad".into(),
                spec: Some(v1::ScheduleSpec {
                    timezone: Some(tz.into()),
                    ..schedule_spec(cron).unwrap()
                }),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), code, "{cron}");
        assert!(e.message().contains(says), "{cron}: {}", e.message());
    }
    let e = env
        .admin
        .create_schedule(v1::CreateScheduleRequest {
            name: "bad".into(),
            spec: Some(v1::ScheduleSpec {
                queue: Some("missing".into()),
                ..schedule_spec("@daily").unwrap()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let list = env
        .admin
        .list_schedules(v1::ListSchedulesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(list.schedules.is_empty(), "nothing stored");
    let mk = v1::CreateScheduleRequest {
        name: "nightly".into(),
        spec: Some(v1::ScheduleSpec {
            timezone: Some("Europe/Berlin".into()),
            ..schedule_spec("0 3 * * *").unwrap()
        }),
    };
    env.admin.create_schedule(mk.clone()).await.unwrap();
    assert_eq!(
        env.admin.create_schedule(mk).await.unwrap_err().code(),
        Code::AlreadyExists
    );
    let u = env
        .admin
        .update_schedule(v1::UpdateScheduleRequest {
            name: "nightly".into(),
            spec: Some(v1::ScheduleSpec {
                overlap: Some("skip".into()),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .schedule
        .unwrap();
    assert_eq!(
        (u.overlap.as_str(), u.cron.as_str(), u.timezone.as_str()),
        ("skip", "0 3 * * *", "Europe/Berlin")
    );
    let e = env
        .admin
        .update_schedule(v1::UpdateScheduleRequest {
            name: "nightly".into(),
            spec: Some(v1::ScheduleSpec {
                missed: Some("twice".into()),
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("missed: \"twice\""), "{}", e.message());
    let t = env
        .admin
        .trigger_schedule(v1::ScheduleRef {
            name: "nightly".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let job = env.job(&t.job_id).await;
    assert_eq!(job.queue, "default");
    let got = env
        .admin
        .get_schedule(v1::ScheduleRef {
            name: "nightly".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .schedule
        .unwrap();
    assert_eq!((got.fires, got.last_job_id.as_str()), (1, t.job_id.as_str()));
    env.admin
        .delete_schedule(v1::ScheduleRef {
            name: "nightly".into(),
        })
        .await
        .unwrap();
    let nightly = || v1::ScheduleRef {
        name: "nightly".into(),
    };
    let mut admin = env.admin.clone();
    for r in [
        admin.get_schedule(nightly()).await.map(|_| ()),
        admin.delete_schedule(nightly()).await.map(|_| ()),
        admin.trigger_schedule(nightly()).await.map(|_| ()),
        admin.resume_schedule(nightly()).await.map(|_| ()),
    ] {
        assert_eq!(r.unwrap_err().code(), Code::NotFound);
    }
    env.server.shutdown().await;
}
