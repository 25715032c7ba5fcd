//! Issue 21 through the server: per-queue retention set and shown over
//! gRPC, refused with INVALID_ARGUMENT naming the field, and applied by
//! the retention service (a pruned job reads NOT_FOUND).

mod common;

use std::time::Duration;

use common::*;
use jq_proto::v1;
use tonic::Code;

#[tokio::test]
async fn fr_025_fr_035_queue_retention_is_set_shown_validated_and_applied() {
    let mut env = start_tuned(|cfg| {
        cfg.retention.interval_s = 1;
        cfg.retention.done_s = 7 * 24 * 3600;
    })
    .await;
    let q = env
        .admin
        .create_queue(v1::CreateQueueRequest {
            name: "audit".into(),
            settings: Some(v1::QueueSettings {
                retain_done_seconds: Some(3600),
                retain_dead_seconds: Some(30 * 86_400),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .queue
        .unwrap();
    assert_eq!(
        (q.retain_done_seconds, q.retain_dead_seconds),
        (3600, 30 * 86_400)
    );
    let d = env
        .admin
        .get_queue(v1::GetQueueRequest {
            name: "default".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .queue
        .unwrap();
    assert_eq!(
        (d.retain_done_seconds, d.retain_dead_seconds),
        (-1, -1),
        "the server's defaults"
    );

    let bad = env
        .admin
        .create_queue(v1::CreateQueueRequest {
            name: "bad".into(),
            settings: Some(v1::QueueSettings {
                retain_dead_seconds: Some(-5),
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().contains("retain_dead_seconds"), "{}", bad.message());
    let missing = env
        .admin
        .get_queue(v1::GetQueueRequest { name: "bad".into() })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound, "nothing was created");

    // A job of audit, done two hours ago: past its queue's hour.
    let mut w = FakeWorker::connect(env.server.grpc_addr, "w", &["audit"], 1).await;
    let id = env.submit(spec("audit", "{}")).await;
    let a = w.assignment().await;
    w.ack(&a).await.unwrap();
    w.report(&id, a.attempt, v1::Outcome::Succeeded).await.unwrap();
    env.wait_status(&id, v1::JobStatus::Done).await;
    sqlx::query("UPDATE jobs SET completed_at = now() - interval '2 hours' WHERE id = $1::uuid")
        .bind(&id)
        .execute(env.db.pool())
        .await
        .unwrap();
    let mut gone = None;
    for _ in 0..100 {
        match env.jobs.get_job(v1::GetJobRequest { job_id: id.clone() }).await {
            Err(e) => {
                gone = Some(e.code());
                break;
            }
            Ok(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    assert_eq!(gone, Some(Code::NotFound), "the retention service pruned it");
    env.server.shutdown().await;
}
