//! Each maintenance service's `run_once` alone, on a real database: one
//! pass finds what is due, changes it, says how much, and a second pass
//! finds nothing left (FR-004, FR-016, FR-020, JQ-112, JQ-160, NFR-012).

use std::sync::Arc;
use std::time::Duration;

use jq_core::records::WorkerRegistration;
use jq_core::{JobStatus, NewJob, Schedule};
use jq_server::maintenance::Service;
use jq_server::maintenance::assignment_timeout::AssignmentTimeouts;
use jq_server::maintenance::dead_workers::DeadWorkers;
use jq_server::maintenance::gauges::Gauges;
use jq_server::maintenance::outbox_prune::OutboxPrune;
use jq_server::maintenance::statistics::Statistics;
use jq_server::maintenance::ttl_expiry::TtlExpiry;
use jq_server::registry::Registry;
use jq_store::Store;
use jq_store::retention::Publishing;
use jq_testkit::TestDb;

const EVERY: Duration = Duration::from_secs(1);

fn job(ttl: Option<Duration>) -> NewJob {
    NewJob {
        queue: "default".into(),
        payload: b"{}".to_vec(),
        priority: 0,
        max_retries: Some(0),
        ttl,
        schedule: Schedule::Now,
        idempotency_key: None,
    }
}

/// A worker `w` holding one claimed (ASSIGNED) job.
async fn assigned(store: &Store) -> uuid::Uuid {
    store
        .register_worker(&WorkerRegistration {
            id: "w".into(),
            hostname: "h".into(),
            concurrency: 1,
            queues: vec!["default".into()],
            version: "0".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let id = store.submit(job(None)).await.unwrap().job_id;
    let got = store.claim("w", &["default".into()], 1).await.unwrap();
    assert_eq!(got[0].job_id, id);
    id
}

#[tokio::test]
async fn fr_016_assignment_timeouts_run_once_fails_what_waited_too_long() {
    let db = TestDb::new().await;
    let store = db.store();
    let id = assigned(&store).await;
    let long = AssignmentTimeouts {
        store: store.clone(),
        timeout: Duration::from_secs(3600),
        every: EVERY,
    };
    assert_eq!(long.run_once().await.unwrap(), 0, "not yet due");
    let due = AssignmentTimeouts {
        timeout: Duration::ZERO,
        ..long
    };
    assert_eq!(due.run_once().await.unwrap(), 1);
    assert_eq!(due.run_once().await.unwrap(), 0, "nothing left");
    // No retries left: the timeout dead-letters it.
    assert_eq!(store.get_job(id).await.unwrap().status, JobStatus::DeadLettered);
}

#[tokio::test]
async fn fr_020_jq_112_dead_workers_run_once_marks_silent_workers_and_reclaims_their_jobs() {
    let db = TestDb::new().await;
    let store = db.store();
    let id = assigned(&store).await;
    let pass = DeadWorkers {
        store: store.clone(),
        registry: Registry::new(),
        timeout: Duration::from_secs(60),
        every: EVERY,
    };
    assert_eq!(pass.run_once().await.unwrap(), Default::default(), "w is alive");
    sqlx::query("UPDATE workers SET last_heartbeat_at = now() - interval '1 hour'")
        .execute(db.pool())
        .await
        .unwrap();
    let r = pass.run_once().await.unwrap();
    assert_eq!((r.workers_offline, r.jobs), (vec!["w".to_string()], vec![id]));
    assert_eq!(pass.run_once().await.unwrap(), Default::default());
    assert_eq!(store.get_job(id).await.unwrap().status, JobStatus::DeadLettered);
}

#[tokio::test]
async fn fr_004_ttl_expiry_run_once_dead_letters_what_expired_unstarted() {
    let db = TestDb::new().await;
    let store = db.store();
    let kept = store
        .submit(job(Some(Duration::from_secs(3600))))
        .await
        .unwrap()
        .job_id;
    let gone = store
        .submit(job(Some(Duration::from_secs(3600))))
        .await
        .unwrap()
        .job_id;
    let pass = TtlExpiry {
        store: store.clone(),
        every: EVERY,
    };
    assert_eq!(pass.run_once().await.unwrap(), 0);
    sqlx::query("UPDATE jobs SET expires_at = now() - interval '1 second' WHERE id = $1")
        .bind(gone)
        .execute(db.pool())
        .await
        .unwrap();
    assert_eq!(pass.run_once().await.unwrap(), 1);
    assert_eq!(pass.run_once().await.unwrap(), 0);
    assert_eq!(store.get_job(gone).await.unwrap().status, JobStatus::DeadLettered);
    assert_eq!(store.get_job(kept).await.unwrap().status, JobStatus::Pending);
}

#[tokio::test]
async fn jq_160_outbox_prune_run_once_deletes_sent_events_past_retention() {
    let db = TestDb::new().await;
    let store = db.store();
    assigned(&store).await; // registering queues a worker event
    let unsent = store.outbox_unsent(100).await.unwrap();
    assert!(!unsent.is_empty());
    let pass = OutboxPrune {
        store: store.clone(),
        retention: Duration::ZERO,
        publishing: Publishing::Kafka,
    };
    assert_eq!(pass.run_once().await.unwrap(), 0, "unsent events are kept");
    let ids: Vec<i64> = unsent.iter().map(|e| e.id).collect();
    store.outbox_mark_sent(&ids).await.unwrap();
    sqlx::query("UPDATE event_outbox SET sent_at = now() - interval '1 second'")
        .execute(db.pool())
        .await
        .unwrap();
    assert_eq!(pass.run_once().await.unwrap(), ids.len() as u64);
    assert_eq!(pass.run_once().await.unwrap(), 0);
}

/// With Kafka off nothing sends the outbox's worker events: past the
/// retention they go unsent (they used to stay forever).
#[tokio::test]
async fn jq_160_jq_151_outbox_prune_without_kafka_deletes_unsent_events_past_retention() {
    let db = TestDb::new().await;
    let store = db.store();
    assigned(&store).await; // registering queues a worker event
    let unsent = store.outbox_unsent(100).await.unwrap().len() as u64;
    assert!(unsent > 0);
    let pass = OutboxPrune {
        store: store.clone(),
        retention: Duration::from_secs(3600),
        publishing: Publishing::Off,
    };
    assert_eq!(
        pass.run_once().await.unwrap(),
        0,
        "within the retention they stay"
    );
    sqlx::query("UPDATE event_outbox SET occurred_at = now() - interval '2 hours'")
        .execute(db.pool())
        .await
        .unwrap();
    assert_eq!(pass.run_once().await.unwrap(), unsent);
    assert!(store.outbox_unsent(100).await.unwrap().is_empty());
    assert_eq!(pass.run_once().await.unwrap(), 0);
}

#[tokio::test]
async fn nfr_012_statistics_run_once_analyzes_a_table_grown_from_empty() {
    let db = TestDb::new().await;
    let store = db.store();
    let pass = Statistics { store: store.clone() };
    store
        .submit_many((0..1500).map(|_| job(None)).collect())
        .await
        .unwrap();
    // The statistics collector publishes row counts within about a second.
    let mut analyzed = vec![];
    for _ in 0..100 {
        analyzed = pass.run_once().await.unwrap();
        if analyzed.contains(&"jobs".to_string()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(analyzed.contains(&"jobs".to_string()), "{analyzed:?}");
    assert!(
        !pass.run_once().await.unwrap().contains(&"jobs".to_string()),
        "once"
    );
}

#[tokio::test]
async fn fr_040_gauges_run_once_sets_queue_depths_from_the_database() {
    let db = TestDb::new().await;
    let store = db.store();
    store.ensure_queue("default").await.unwrap();
    for _ in 0..3 {
        store.submit(job(None)).await.unwrap();
    }
    let metrics = Arc::new(jq_telemetry::ServerMetrics::new());
    let pass = Gauges::new(store.clone(), Registry::new(), metrics.clone(), Publishing::Kafka);
    assert_eq!(pass.run_once().await.unwrap(), 1, "one queue");
    let depth = |status: &str| metrics.queue_depth.with_label_values(&["default", status]).get();
    assert_eq!((depth("PENDING"), depth("RUNNING")), (3, 0));
    assert_eq!(
        metrics.outbox_backlog.get(),
        3,
        "three submitted events to publish"
    );
    // Without Kafka no relay runs: nothing waits, and nothing is counted.
    let off = Gauges::new(store, Registry::new(), metrics.clone(), Publishing::Off);
    off.run_once().await.unwrap();
    assert_eq!(metrics.outbox_backlog.get(), 0);
}

/// The queues the depth gauge shows series for.
fn depth_queues(metrics: &jq_telemetry::ServerMetrics) -> Vec<String> {
    use prometheus::core::Collector;
    let mut qs: Vec<String> = metrics.queue_depth.collect()[0]
        .get_metric()
        .iter()
        .flat_map(|m| {
            m.get_label()
                .iter()
                .filter(|l| l.name() == "queue")
                .map(|l| l.value().to_owned())
        })
        .collect();
    qs.sort();
    qs.dedup();
    qs
}

#[tokio::test]
async fn fr_040_gauges_overwrite_their_series_and_remove_only_a_deleted_queues() {
    let db = TestDb::new().await;
    let store = db.store();
    store.ensure_queue("default").await.unwrap();
    store.ensure_queue("gone").await.unwrap();
    store.submit(job(None)).await.unwrap();
    let metrics = Arc::new(jq_telemetry::ServerMetrics::new());
    let pass = Gauges::new(store.clone(), Registry::new(), metrics.clone(), Publishing::Off);
    pass.run_once().await.unwrap();
    assert_eq!(depth_queues(&metrics), ["default", "gone"]);
    store.delete_queue("gone", false).await.unwrap();
    store.submit(job(None)).await.unwrap();
    assert_eq!(pass.run_once().await.unwrap(), 1);
    // A series is overwritten in place, never emptied and refilled, so a
    // scrape during a pass cannot find it missing; the deleted queue's go.
    assert_eq!(depth_queues(&metrics), ["default"]);
    let depth = metrics
        .queue_depth
        .with_label_values(&["default", "PENDING"])
        .get();
    assert_eq!(depth, 2);
}

#[tokio::test]
async fn fr_035_retention_run_once_deletes_done_jobs_past_their_retention_and_keeps_dead_letters() {
    use jq_server::maintenance::retention::Retention;
    use jq_store::retention::Retentions;
    let db = TestDb::new().await;
    let store = db.store();
    let dead = assigned(&store).await;
    let pass_timeouts = AssignmentTimeouts {
        store: store.clone(),
        timeout: Duration::ZERO,
        every: EVERY,
    };
    assert_eq!(
        pass_timeouts.run_once().await.unwrap(),
        1,
        "dead-lettered: no retries"
    );
    let done = store.submit(job(None)).await.unwrap().job_id;
    sqlx::query(
        "UPDATE jobs SET status = 'DONE', attempt = 1, completed_at = now() - interval '2 days' WHERE id = $1",
    )
    .bind(done)
    .execute(db.pool())
    .await
    .unwrap();
    sqlx::query("UPDATE jobs SET completed_at = now() - interval '400 days' WHERE id = $1")
        .bind(dead)
        .execute(db.pool())
        .await
        .unwrap();
    let pass = Retention {
        store: store.clone(),
        server: Retentions {
            done: Duration::from_secs(24 * 3600),
            dead_lettered: Duration::ZERO,
        },
        publishing: Publishing::Off,
        every: EVERY,
    };
    assert_eq!(pass.run_once().await.unwrap(), 1);
    assert_eq!(pass.run_once().await.unwrap(), 0);
    assert!(store.get_job(done).await.is_err(), "pruned: NOT_FOUND");
    assert_eq!(store.get_job(dead).await.unwrap().status, JobStatus::DeadLettered);
}

#[tokio::test]
async fn fr_035_retention_run_once_works_off_more_than_one_batch_in_a_pass() {
    use jq_server::maintenance::retention::Retention;
    use jq_store::retention::{PRUNE_BATCH, Retentions};
    let db = TestDb::new().await;
    let store = db.store();
    store.ensure_queue("default").await.unwrap();
    let n = PRUNE_BATCH as u64 + 1500;
    store.bench_fill("default", n, 0, 10_000).await.unwrap();
    sqlx::query("UPDATE jobs SET completed_at = now() - interval '2 days'")
        .execute(db.pool())
        .await
        .unwrap();
    let pass = Retention {
        store,
        server: Retentions {
            done: Duration::from_secs(24 * 3600),
            dead_lettered: Duration::ZERO,
        },
        publishing: Publishing::Off,
        every: EVERY,
    };
    assert_eq!(
        pass.run_once().await.unwrap() as u64,
        n,
        "one pass, several batches"
    );
    assert_eq!(pass.run_once().await.unwrap(), 0);
}

#[tokio::test]
async fn jq_152_partitions_run_once_makes_what_is_missing_and_drops_what_expired() {
    use jq_server::maintenance::partitions::{Counts, Partitions};
    use jq_store::partitions::{DEFAULT_WIDTH, Span};
    use jq_store::retention::Retentions;
    let db = TestDb::new().await;
    let store = db.store();
    // The last partition ahead is missing, and one from a month ago (its
    // jobs long pruned) is still there.
    let last = store.event_partitions().await.unwrap();
    let last = last
        .iter()
        .rfind(|p| matches!(p.span, Span::Dated { .. }))
        .unwrap();
    sqlx::query(&format!("DROP TABLE {}", last.name))
        .execute(db.pool())
        .await
        .unwrap();
    let now: chrono::DateTime<chrono::Utc> = sqlx::query_scalar("SELECT now()")
        .fetch_one(db.pool())
        .await
        .unwrap();
    let old = store
        .ensure_event_partitions_at(DEFAULT_WIDTH, now - chrono::Duration::days(30))
        .await
        .unwrap();
    let pass = Partitions {
        store: store.clone(),
        server: Retentions {
            done: Duration::from_secs(7 * 24 * 3600),
            dead_lettered: Duration::ZERO,
        },
        width: DEFAULT_WIDTH,
        every: EVERY,
    };
    let counts = pass.run_once().await.unwrap();
    assert_eq!(counts.created, 1, "{counts:?}");
    // The month-old ones and the (empty) v4 partition.
    assert_eq!(counts.dropped, old.len() + 1, "{counts:?}");
    assert_eq!(counts.refiled, 0);
    assert_eq!(pass.run_once().await.unwrap(), Counts::default(), "once");
    let names: Vec<String> = store
        .event_partitions()
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert!(names.contains(&last.name));
    assert!(old.iter().all(|o| !names.contains(o)), "{names:?}");
}

/// ADR 0018: a pass rebuilds a phase index that went missing and drops an
/// index naming `status` that came back (an operator's restore, say) once
/// the grace is over; then there is nothing left to do.
#[tokio::test]
async fn jq_152_layout_run_once_builds_what_is_missing_and_drops_what_names_status() {
    use jq_server::maintenance::layout::Layout;
    let db = TestDb::new().await;
    let store = db.store();
    sqlx::query("DROP INDEX jobs_claim_phase")
        .execute(db.pool())
        .await
        .unwrap();
    sqlx::query("CREATE INDEX jobs_failed ON jobs (queue) WHERE status = 'FAILED'")
        .execute(db.pool())
        .await
        .unwrap();
    let pass = Layout {
        store: store.clone(),
        every: EVERY,
    };
    let step = pass.run_once().await.unwrap();
    assert_eq!(step.built, ["jobs_claim_phase"], "{step:?}");
    assert_eq!(step.dropped, ["jobs_failed"], "{step:?}");
    assert!(step.complete);
    let again = pass.run_once().await.unwrap();
    assert!(
        again.built.is_empty() && again.dropped.is_empty() && again.complete,
        "{again:?}"
    );
    let plan = store.explain_claim("default", 10).await.unwrap();
    assert!(plan.contains("jobs_claim_phase"), "{plan}");
}

/// A write transaction held open in another database of the server, and a
/// read-only one in this one: both hold the horizon back, both are named
/// (pid, database, state; the writer as such), the gauge shows the oldest,
/// and with a limit of zero the pass warns about them; with none it warns
/// about nothing. The status names the holder once it is past the limit.
#[tokio::test]
async fn nfr_012_long_transactions_holding_the_horizon_are_named() {
    use jq_server::maintenance::long_transactions::LongTransactions;
    use sqlx::Connection;
    let db = TestDb::new().await;
    let store = db.store();
    let mut writer = jq_testkit::OpenTransaction::begin(db.admin_url()).await.unwrap();
    let mut reader = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::query("BEGIN ISOLATION LEVEL REPEATABLE READ")
        .execute(&mut reader)
        .await
        .unwrap();
    let reader_pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut reader)
        .await
        .unwrap();
    let open = store.open_transactions(1000).await.unwrap();
    let w = open
        .iter()
        .find(|t| t.pid == Some(writer.pid))
        .expect("the writer is listed");
    assert_eq!(
        (w.database.as_deref(), w.wrote),
        (Some("postgres"), true),
        "{w:?}"
    );
    assert_eq!(w.state, "idle in transaction");
    let r = open
        .iter()
        .find(|t| t.pid == Some(reader_pid))
        .expect("the reader is listed");
    assert_eq!(
        (r.database.as_deref(), r.wrote),
        (Some(db.name.as_str()), false),
        "{r:?}"
    );
    assert!(open.windows(2).all(|p| p[0].age >= p[1].age), "oldest first");
    let text = w.to_string();
    assert!(
        text.starts_with(&format!(
            "pid {} in database \"postgres\" (application ",
            writer.pid
        )) && text.contains("idle in transaction, wrote) open "),
        "{text}"
    );

    let metrics = Arc::new(jq_telemetry::ServerMetrics::new());
    let pass = |warn_after| LongTransactions {
        store: store.clone(),
        metrics: metrics.clone(),
        warn_after,
    };
    assert!(
        pass(Some(Duration::ZERO)).run_once().await.unwrap() >= 2,
        "both warned about"
    );
    assert!(metrics.db_oldest_transaction.get() >= 0.0);
    assert_eq!(
        pass(None).run_once().await.unwrap(),
        0,
        "never, when switched off"
    );
    assert!(
        pass(Some(Duration::from_secs(365 * 24 * 3600)))
            .run_once()
            .await
            .unwrap()
            == 0,
        "none a year old"
    );

    // The status row, with a one-second limit: wait for the holder to pass it.
    let mut cfg = jq_config::ServerConfig::default();
    cfg.db.url = db.url.clone();
    cfg.db.long_transaction_warn_s = 1;
    let shared = jq_server::Shared::new(Arc::new(cfg)).unwrap();
    let mut row = shared.transactions_health().await;
    for _ in 0..100 {
        if row.state == "warning" && row.detail.contains(&format!("pid {}", writer.pid)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        row = shared.transactions_health().await;
    }
    assert_eq!(row.name, "transactions");
    assert_eq!(row.state, "warning", "{row:?}");
    assert!(row.detail.contains("vacuum cannot remove dead rows"), "{row:?}");
    assert!(writer.holds_the_horizon().await.unwrap());
    writer.end().await.unwrap();
    sqlx::query("ROLLBACK").execute(&mut reader).await.unwrap();
}
