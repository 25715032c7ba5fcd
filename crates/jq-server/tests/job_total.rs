//! FR-040: `jq_job_total{queue,status}` counts every transition into a
//! status, whatever wrote it, so after any mix of paths it equals the
//! `job_events` rows by `to_status`. Before, it was incremented at three
//! ad-hoc sites and missed cancels, TTL expiries, timeouts, worker loss
//! and manual retries.

mod common;

use std::collections::BTreeMap;

use common::*;
use jq_proto::v1;

fn totals(metrics: &str) -> BTreeMap<(String, String), i64> {
    metrics
        .lines()
        .filter_map(|l| l.strip_prefix("jq_job_total{"))
        .filter_map(|l| {
            let (labels, value) = l.split_once("} ")?;
            let label = |name: &str| {
                labels
                    .split(',')
                    .find_map(|kv| kv.strip_prefix(&format!("{name}=\"")))
                    .map(|v| v.trim_end_matches('"').to_string())
            };
            Some(((label("queue")?, label("status")?), value.trim().parse().ok()?))
        })
        .filter(|(_, v)| *v > 0)
        .collect()
}

async fn queue(env: &mut Env, name: &str) {
    env.admin
        .create_queue(v1::CreateQueueRequest {
            name: name.into(),
            settings: Some(v1::QueueSettings {
                max_retries: Some(1),
                backoff_base_ms: Some(10),
                backoff_max_ms: Some(20),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn fr_040_jq_job_total_equals_the_job_events_by_status_after_every_kind_of_transition() {
    let mut env = start_tuned(|cfg| {
        cfg.scheduler.assignment_timeout_s = 1;
        cfg.scheduler.heartbeat_interval_s = 1;
        cfg.scheduler.worker_heartbeat_timeout_s = 600;
    })
    .await;
    for q in ["mix", "ttl", "lost"] {
        queue(&mut env, q).await;
    }

    // TTL: nobody serves queue ttl.
    let t = env
        .submit(v1::JobSpec {
            ttl_seconds: Some(1),
            ..spec("ttl", "{}")
        })
        .await;
    // Cancel while PENDING, then a manual retry of the dead letter.
    let x = env.submit(spec("mix", "{}")).await;
    env.jobs
        .cancel_job(v1::CancelJobRequest { job_id: x.clone() })
        .await
        .unwrap();
    env.jobs
        .retry_job(v1::RetryJobRequest { job_id: x.clone() })
        .await
        .unwrap();
    // Bulk: a, which first times out unacknowledged, and b, which fails
    // until it is dead-lettered.
    let ab = env
        .jobs
        .submit_jobs(v1::SubmitJobsRequest {
            jobs: vec![spec("mix", "\"a\""), spec("mix", "\"b\"")],
        })
        .await
        .unwrap()
        .into_inner()
        .results;
    let (a, b) = (ab[0].job_id.clone(), ab[1].job_id.clone());

    let mut w = FakeWorker::connect(env.server.grpc_addr, "w-mix", &["mix"], 1).await;
    let mut a_timed_out = false;
    let mut ended = 0;
    while ended < 3 {
        let job = w.assignment().await;
        let id = job.job_id.clone();
        if id == a && !a_timed_out {
            // Not acked: the assignment timeout fails it, then a retry.
            a_timed_out = true;
            continue;
        }
        w.ack(&job).await.unwrap();
        let outcome = if id == b {
            v1::Outcome::Failed
        } else {
            v1::Outcome::Succeeded
        };
        let r = w.report(&id, job.attempt, outcome).await.unwrap();
        if r.status != v1::JobStatus::Pending as i32 {
            ended += 1;
        }
    }

    // Worker loss: a new registration of the same id reclaims its job.
    let l = env.submit(spec("lost", "{}")).await;
    let mut lost = FakeWorker::connect(env.server.grpc_addr, "w-lost", &["lost"], 1).await;
    let first = lost.assignment().await;
    lost.ack(&first).await.unwrap();
    let mut again = FakeWorker::connect(env.server.grpc_addr, "w-lost", &["lost"], 1).await;
    let second = again.assignment().await;
    assert!(second.attempt > first.attempt);
    again.ack(&second).await.unwrap();
    again
        .report(&l, second.attempt, v1::Outcome::Succeeded)
        .await
        .unwrap();

    for (id, status) in [
        (&t, v1::JobStatus::DeadLettered),
        (&x, v1::JobStatus::Done),
        (&a, v1::JobStatus::Done),
        (&b, v1::JobStatus::DeadLettered),
        (&l, v1::JobStatus::Done),
    ] {
        env.wait_status(id, status).await;
    }
    let rows: Vec<(String, String, i64)> =
        sqlx::query_as("SELECT queue, to_status::text, count(*) FROM job_events GROUP BY 1, 2 ORDER BY 1, 2")
            .fetch_all(env.db.pool())
            .await
            .unwrap();
    let events: BTreeMap<(String, String), i64> = rows.into_iter().map(|(q, s, n)| ((q, s), n)).collect();
    let reasons: Vec<String> = sqlx::query_scalar("SELECT DISTINCT reason FROM job_events ORDER BY 1")
        .fetch_all(env.db.pool())
        .await
        .unwrap();
    for r in [
        "ASSIGNMENT_TIMEOUT",
        "CANCELLED",
        "MANUAL_RETRY",
        "RETRIES_EXHAUSTED",
        "RETRY_SCHEDULED",
        "TTL_EXPIRED",
        "WORKER_LOST",
    ] {
        assert!(
            reasons.iter().any(|x| x == r),
            "the scenario covers {r}: {reasons:?}"
        );
    }
    let (_, body) = http_get(env.server.metrics_addr, "/metrics").await;
    assert_eq!(
        totals(&body),
        events,
        "jq_job_total by (queue, status) vs job_events"
    );
    env.server.shutdown().await;
}

#[tokio::test]
async fn fr_040_jq_job_total_ignores_an_idempotent_repeat() {
    let mut env = start().await;
    let s = v1::JobSpec {
        idempotency_key: Some("once".into()),
        ..spec("default", "{}")
    };
    env.submit(s.clone()).await;
    env.submit(s).await;
    let (_, body) = http_get(env.server.metrics_addr, "/metrics").await;
    assert_eq!(
        totals(&body),
        BTreeMap::from([(("default".to_string(), "PENDING".to_string()), 1)])
    );
    env.server.shutdown().await;
}
