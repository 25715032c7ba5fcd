//! Retention (issue 21): finished jobs and their history are deleted once
//! their queue's retention has passed, and nothing else is. Time is moved
//! by shifting `completed_at` back, as the conformance suite moves it.

use std::time::Duration;

use jq_core::records::WorkerRegistration;
use jq_core::submit::Retention;
use jq_core::*;
use jq_store::queues::QueuePatch;
use jq_store::retention::{Publishing, Retentions};
use jq_store::{ResultReport, Store, StoreError};
use jq_testkit::TestDb;
use uuid::Uuid;

const WEEK: Duration = Duration::from_secs(7 * 24 * 3600);
const SERVER: Retentions = Retentions {
    done: WEEK,
    dead_lettered: Duration::ZERO,
};

fn job(queue: &str, key: Option<&str>) -> NewJob {
    NewJob {
        queue: queue.into(),
        payload: b"{}".to_vec(),
        priority: 0,
        max_retries: Some(0),
        ttl: None,
        schedule: Schedule::Now,
        idempotency_key: key.map(str::to_string),
    }
}

/// Submit, claim, start and report one job of `queue`.
async fn finished(s: &Store, queue: &str, key: Option<&str>, outcome: Outcome) -> Uuid {
    let id = s.submit(job(queue, key)).await.unwrap().job_id;
    s.register_worker(&WorkerRegistration {
        id: "w".into(),
        hostname: "h".into(),
        concurrency: 100,
        queues: vec![queue.into()],
        version: "0".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let a = s.claim("w", &[queue.into()], 1).await.unwrap().remove(0);
    assert_eq!(a.job_id, id);
    s.ack("w", id, a.attempt).await.unwrap();
    s.report(&ResultReport {
        worker_id: "w".into(),
        job_id: id,
        attempt: a.attempt,
        outcome,
        result: vec![],
        error: None,
    })
    .await
    .unwrap();
    id
}

/// Make `id` look finished `ago`.
async fn age(db: &TestDb, id: Uuid, ago: Duration) {
    sqlx::query("UPDATE jobs SET completed_at = now() - make_interval(secs => $2) WHERE id = $1")
        .bind(id)
        .bind(ago.as_secs_f64())
        .execute(db.pool())
        .await
        .unwrap();
}

async fn events(db: &TestDb, id: Uuid) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM job_events WHERE job_id = $1")
        .bind(id)
        .fetch_one(db.pool())
        .await
        .unwrap()
}

const FAILED: Outcome = Outcome::Failed { retryable: false };
const DAY: Duration = Duration::from_secs(24 * 3600);

#[tokio::test]
async fn fr_011_done_jobs_past_the_retention_go_with_their_history_and_read_as_not_found() {
    let db = TestDb::new().await;
    let s = db.store();
    let old = finished(&s, "default", Some("k"), Outcome::Succeeded).await;
    let young = finished(&s, "default", None, Outcome::Succeeded).await;
    let pending = s.submit(job("default", None)).await.unwrap().job_id;
    age(&db, old, WEEK + DAY).await;
    age(&db, young, WEEK - DAY).await;
    assert!(events(&db, old).await > 0);

    assert_eq!(
        s.prune_finished(SERVER, Publishing::Off).await.unwrap(),
        vec![old]
    );
    assert!(matches!(s.get_job(old).await, Err(StoreError::JobNotFound(_))));
    assert_eq!(events(&db, old).await, 0, "its history went with it");
    assert_eq!(s.get_job(young).await.unwrap().status, JobStatus::Done);
    assert_eq!(s.get_job(pending).await.unwrap().status, JobStatus::Pending);
    assert!(
        s.prune_finished(SERVER, Publishing::Off)
            .await
            .unwrap()
            .is_empty(),
        "once"
    );

    // JQ-101: the key is free again once its job is gone.
    let again = s.submit(job("default", Some("k"))).await.unwrap();
    assert!(!again.already_existed);
    assert_ne!(again.job_id, old);
}

#[tokio::test]
async fn fr_035_dead_letters_are_kept_unless_their_queue_says_otherwise() {
    let db = TestDb::new().await;
    let s = db.store();
    s.create_queue("short", &QueueSettings::default()).await.unwrap();
    let kept = finished(&s, "default", None, FAILED).await;
    let dropped = finished(&s, "short", None, FAILED).await;
    for id in [kept, dropped] {
        assert_eq!(s.get_job(id).await.unwrap().status, JobStatus::DeadLettered);
        age(&db, id, 400 * DAY).await;
    }
    assert!(
        s.prune_finished(SERVER, Publishing::Off)
            .await
            .unwrap()
            .is_empty(),
        "FR-035: kept by default"
    );

    let q = s
        .update_queue(
            "short",
            &QueuePatch {
                retain_dead: Some(Retention::For(30 * DAY)),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(q.settings.retain_dead, Retention::For(30 * DAY));
    assert_eq!(
        s.prune_finished(SERVER, Publishing::Off).await.unwrap(),
        vec![dropped]
    );
    assert_eq!(s.get_job(kept).await.unwrap().status, JobStatus::DeadLettered);
}

#[tokio::test]
async fn fr_025_a_queue_keeps_or_drops_its_done_jobs_against_the_server_default() {
    let db = TestDb::new().await;
    let s = db.store();
    let forever = QueueSettings {
        retain_done: Retention::Forever,
        ..Default::default()
    };
    let hourly = QueueSettings {
        retain_done: Retention::For(Duration::from_secs(3600)),
        ..Default::default()
    };
    s.create_queue("archive", &forever).await.unwrap();
    s.create_queue("hourly", &hourly).await.unwrap();
    assert_eq!(
        s.get_queue("archive").await.unwrap().settings.retain_done,
        Retention::Forever
    );
    let a = finished(&s, "archive", None, Outcome::Succeeded).await;
    let h = finished(&s, "hourly", None, Outcome::Succeeded).await;
    age(&db, a, 400 * DAY).await;
    age(&db, h, Duration::from_secs(7200)).await;
    assert_eq!(s.prune_finished(SERVER, Publishing::Off).await.unwrap(), vec![h]);
    assert_eq!(s.get_job(a).await.unwrap().status, JobStatus::Done);

    // Back to the server's default: a week.
    s.update_queue(
        "archive",
        &QueuePatch {
            retain_done: Some(Retention::ServerDefault),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(s.prune_finished(SERVER, Publishing::Off).await.unwrap(), vec![a]);
}

#[tokio::test]
async fn jq_160_while_kafka_is_on_no_event_is_pruned_before_it_was_published() {
    let db = TestDb::new().await;
    let s = db.store();
    let id = finished(&s, "default", None, Outcome::Succeeded).await;
    age(&db, id, WEEK + DAY).await;
    assert!(
        s.prune_finished(SERVER, Publishing::Kafka)
            .await
            .unwrap()
            .is_empty(),
        "its events are unpublished"
    );
    assert_eq!(s.get_job(id).await.unwrap().status, JobStatus::Done);

    // The relay publishes every window; then the job goes.
    loop {
        let w = s.job_events_window(1000).await.unwrap();
        if w.events.is_empty() && !w.held {
            break;
        }
        s.job_events_published(w.upto).await.unwrap();
    }
    assert_eq!(
        s.prune_finished(SERVER, Publishing::Kafka).await.unwrap(),
        vec![id]
    );
}

#[tokio::test]
async fn jq_160_with_kafka_off_pruned_history_leaves_no_backlog() {
    let db = TestDb::new().await;
    let s = db.store();
    let id = finished(&s, "default", None, Outcome::Succeeded).await;
    let before = s.outbox_backlog().await.unwrap();
    let mine = events(&db, id).await as u64;
    assert!(
        mine > 0 && before >= mine,
        "nothing publishes, so every event is backlog"
    );
    age(&db, id, WEEK + DAY).await;
    assert_eq!(s.prune_finished(SERVER, Publishing::Off).await.unwrap(), vec![id]);
    // What is left is the worker's own event, not the job's history moved
    // to the outbox (as deleting a job by hand does with unpublished events).
    assert_eq!(
        s.outbox_backlog().await.unwrap(),
        before - mine,
        "pruned history is not copied anywhere"
    );
}

#[test]
fn fr_025_retention_settings_are_validated_and_round_trip_their_wire_form() {
    for r in [Retention::ServerDefault, Retention::Forever, Retention::For(DAY)] {
        assert_eq!(Retention::from_seconds(r.as_seconds()).unwrap(), r);
    }
    assert!(Retention::from_seconds(-2).is_err());
    let too_long = QueueSettings {
        retain_dead: Retention::For(Duration::from_secs(jq_core::submit::MAX_RETENTION_S + 1)),
        ..Default::default()
    };
    assert!(too_long.validate().is_err());
    assert_eq!(Retention::ServerDefault.resolve(WEEK), Some(WEEK));
    assert_eq!(Retention::ServerDefault.resolve(Duration::ZERO), None);
    assert_eq!(Retention::Forever.resolve(WEEK), None);
}
