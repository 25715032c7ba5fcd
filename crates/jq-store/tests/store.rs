//! jq-store against real PostgreSQL, one database per test, one test per
//! SPEC behaviour the store carries.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use jq_core::records::{Assignment, Lease, WorkerRegistration};
use jq_core::weights::{PriorityWeights, RoundRobin};
use jq_core::*;
use jq_store::queues::QueuePatch;
use jq_store::retention::Publishing;
use jq_store::{
    CallOutcome, CancelOutcome, Expected, ListFilter, ResultReport, Store, StoreError, StoreOptions,
    WorkerCall,
};
use jq_testkit::{OpenTransaction, TestDb};
use uuid::Uuid;

async fn setup() -> (TestDb, Store) {
    let db = TestDb::new().await;
    let store = db.store();
    (db, store)
}

fn job(queue: &str) -> NewJob {
    NewJob {
        queue: queue.into(),
        payload: b"{\"task\":1}".to_vec(),
        priority: 0,
        max_retries: None,
        ttl: None,
        schedule: Schedule::Now,
        idempotency_key: None,
    }
}

fn prio(p: u8) -> NewJob {
    NewJob {
        priority: p,
        ..job("default")
    }
}

async fn worker(store: &Store, id: &str, queues: &[&str]) {
    store
        .register_worker(&WorkerRegistration {
            id: id.into(),
            hostname: "test-host".into(),
            concurrency: 4,
            queues: queues.iter().map(|q| q.to_string()).collect(),
            version: "0.0.0-test".into(),
            ..Default::default()
        })
        .await
        .unwrap();
}

fn q(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

async fn shift(store: &Store, secs: i64) {
    let i = format!("{secs} seconds");
    for sql in [
        "UPDATE jobs SET created_at = created_at - $1::interval, not_before = not_before - $1::interval, \
         expires_at = expires_at - $1::interval, assigned_at = assigned_at - $1::interval, \
         started_at = started_at - $1::interval",
        "UPDATE workers SET last_heartbeat_at = last_heartbeat_at - $1::interval",
        "UPDATE queues SET rate_refilled_at = rate_refilled_at - $1::interval",
    ] {
        sqlx::query(sql).bind(&i).execute(store.pool()).await.unwrap();
    }
    // Keys moved behind the store's back (ADR 0021).
    store.forget_marks();
}

fn report(worker: &str, id: Uuid, attempt: u32, outcome: Outcome) -> ResultReport {
    ResultReport {
        worker_id: worker.into(),
        job_id: id,
        attempt,
        outcome,
        result: b"ok".to_vec(),
        error: matches!(outcome, Outcome::Failed { .. }).then(|| "exit status 1".into()),
    }
}

/// Job events waiting for the relay, with their topics: `job_events` is
/// the outbox of job events (ADR 0012, 0020).
async fn to_publish(store: &Store) -> Vec<jq_core::records::OutboxEvent> {
    let waiting = count(
        store,
        "SELECT count(*) FROM job_events e WHERE e.txid >= (SELECT greatest(high, published_below) FROM relay_cursor) \
         OR e.txid = ANY ((SELECT pending FROM relay_cursor)::bigint[])",
    )
    .await as usize;
    for _ in 0..1200 {
        let w = store.job_events_window(1_000_000).await.unwrap();
        if w.events.len() == waiting {
            return w.events;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("job events never all became publishable");
}

async fn topic_count(store: &Store, topic: &str) -> usize {
    to_publish(store)
        .await
        .iter()
        .filter(|e| e.topic == topic)
        .count()
}

async fn count(store: &Store, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(store.pool()).await.unwrap()
}

/// Claim + ack + run one job on `w`; returns its attempt.
async fn start(store: &Store, w: &str) -> (Uuid, u32) {
    let a = store.claim(w, &q(&["default"]), 1).await.unwrap().remove(0);
    store.ack(w, a.job_id, a.attempt).await.unwrap();
    (a.job_id, a.attempt)
}

#[tokio::test]
async fn fr_001_fr_005_fr_007_submit_stores_opaque_payload_and_returns_uuid_v4() {
    let (_db, s) = setup().await;
    let payload = vec![0u8, 159, 146, 150, b'{'];
    let sub = s
        .submit(NewJob {
            payload: payload.clone(),
            ..job("default")
        })
        .await
        .unwrap();
    assert_eq!(sub.job_id.get_version_num(), 4);
    assert!(!sub.already_existed);
    let j = s.get_job(sub.job_id).await.unwrap();
    assert_eq!(j.payload, payload);
    assert_eq!(j.status, JobStatus::Pending);
    assert_eq!((j.priority, j.attempt, j.retries, j.max_retries), (0, 0, 0, 3));
}

#[tokio::test]
async fn fr_006_unknown_queue_is_not_found_and_nothing_is_stored() {
    let (_db, s) = setup().await;
    let err = s
        .submit_many(vec![job("default"), job("nope")])
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::QueueNotFound(q) if q == "nope"),
        "{err}"
    );
    assert_eq!(count(&s, "SELECT count(*) FROM jobs").await, 0);
    assert_eq!(count(&s, "SELECT count(*) FROM job_events").await, 0);
    assert_eq!(count(&s, "SELECT count(*) FROM event_outbox").await, 0);
}

#[tokio::test]
async fn fr_003_max_retries_defaults_to_the_queue_and_can_be_overridden() {
    let (_db, s) = setup().await;
    s.create_queue(
        "q7",
        &QueueSettings {
            max_retries: 7,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let a = s.submit(job("q7")).await.unwrap();
    let b = s
        .submit(NewJob {
            max_retries: Some(0),
            ..job("q7")
        })
        .await
        .unwrap();
    assert_eq!(s.get_job(a.job_id).await.unwrap().max_retries, 7);
    assert_eq!(s.get_job(b.job_id).await.unwrap().max_retries, 0);
}

#[tokio::test]
async fn jq_101_idempotent_submit_returns_the_first_job() {
    let (_db, s) = setup().await;
    let keyed = || NewJob {
        idempotency_key: Some("order-42".into()),
        ..job("default")
    };
    let first = s.submit(keyed()).await.unwrap();
    let again = s.submit(keyed()).await.unwrap();
    assert_eq!(again.job_id, first.job_id);
    assert!(again.already_existed && !first.already_existed);
    // Within one bulk call too, and other keys still insert.
    let bulk = s
        .submit_many(vec![
            keyed(),
            NewJob {
                idempotency_key: Some("x".into()),
                ..job("default")
            },
            keyed(),
        ])
        .await
        .unwrap();
    assert_eq!(bulk[0].job_id, first.job_id);
    assert_eq!(bulk[2].job_id, first.job_id);
    assert!(!bulk[1].already_existed);
    // Keys are per queue.
    s.create_queue("other", &QueueSettings::default()).await.unwrap();
    let other = s
        .submit(NewJob {
            queue: "other".into(),
            ..keyed()
        })
        .await
        .unwrap();
    assert_ne!(other.job_id, first.job_id);
    assert_eq!(count(&s, "SELECT count(*) FROM jobs").await, 3);
    assert_eq!(
        count(&s, "SELECT count(*) FROM job_events").await,
        3,
        "no event for a duplicate"
    );
}

#[tokio::test]
async fn jq_101_concurrent_submits_with_one_key_create_one_job() {
    let (_db, s) = setup().await;
    let mut tasks = vec![];
    for _ in 0..8 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.submit(NewJob {
                idempotency_key: Some("same".into()),
                ..job("default")
            })
            .await
            .unwrap()
        }));
    }
    let mut ids = HashSet::new();
    for t in tasks {
        ids.insert(t.await.unwrap().job_id);
    }
    assert_eq!(ids.len(), 1);
    assert_eq!(count(&s, "SELECT count(*) FROM jobs").await, 1);
}

#[tokio::test]
async fn fr_001_group_committed_submits_answer_each_job_as_if_alone() {
    let (_db, s) = setup().await;
    let keyed = || NewJob {
        idempotency_key: Some("k".into()),
        ..job("default")
    };
    // One batch of independent submits: an unknown queue fails only its
    // own job, the others are stored, and a key repeated inside the batch
    // resolves to the first job as two separate calls would.
    let out = s
        .submit_each(&[job("default"), keyed(), job("nope"), keyed(), job("default")])
        .await;
    assert_eq!(out.len(), 5);
    assert!(
        matches!(&out[2], Err(StoreError::QueueNotFound(q)) if q == "nope"),
        "{:?}",
        out[2]
    );
    let ok: Vec<&jq_store::Submitted> = out.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(ok.len(), 4);
    let (first, dup) = (out[1].as_ref().unwrap(), out[3].as_ref().unwrap());
    assert_eq!(dup.job_id, first.job_id);
    assert!(!first.already_existed && dup.already_existed);
    assert_eq!(count(&s, "SELECT count(*) FROM jobs").await, 3);
    assert_eq!(count(&s, "SELECT count(*) FROM job_events").await, 3);
    assert_eq!(to_publish(&s).await.len(), 3);
    // All good: one transaction, every job stored.
    let out = s.submit_each(&[job("default"), job("default")]).await;
    assert!(out.iter().all(|r| r.is_ok()));
    assert_eq!(count(&s, "SELECT count(*) FROM jobs").await, 5);
    // Nothing to store is nothing to do.
    assert!(s.submit_each(&[]).await.is_empty());
}

#[tokio::test]
async fn jq_120_a_submit_notifies_jq_wake_with_its_commit_and_a_refused_one_does_not() {
    let (_db, s) = setup().await;
    let mut l = s.listen_wake().await.unwrap();
    assert!(matches!(
        s.submit(job("nope")).await,
        Err(StoreError::QueueNotFound(_))
    ));
    s.submit(job("default")).await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(10), l.recv())
        .await
        .expect("a notification")
        .unwrap();
    assert_eq!(n.channel(), "jq_wake");
    // Exactly one: the refused submit sent none.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), l.recv())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn nfr_012_statistics_of_a_table_grown_from_empty_are_refreshed_once() {
    let (_db, s) = setup().await;
    let reltuples = || async {
        sqlx::query_scalar::<_, f32>("SELECT reltuples FROM pg_class WHERE oid = 'jobs'::regclass")
            .fetch_one(s.pool())
            .await
            .unwrap()
    };
    assert!(reltuples().await <= 0.0, "never analyzed yet");
    s.submit_many((0..3000).map(|_| job("default")).collect())
        .await
        .unwrap();
    // The statistics collector publishes counts within about a second.
    let mut refreshed = vec![];
    for _ in 0..100 {
        refreshed = s.refresh_statistics().await.unwrap();
        if refreshed.contains(&"jobs".to_string()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(refreshed.contains(&"jobs".to_string()), "{refreshed:?}");
    assert!(reltuples().await >= 2500.0);
    // Up to date now: not analyzed again until it doubles.
    assert!(
        !s.refresh_statistics()
            .await
            .unwrap()
            .contains(&"jobs".to_string())
    );
}

#[tokio::test]
async fn jq_102_bulk_submit_of_ten_thousand_is_one_transaction() {
    let (_db, s) = setup().await;
    let jobs: Vec<NewJob> = (0..10_000)
        .map(|i| NewJob {
            payload: format!("{i}").into_bytes(),
            ..job("default")
        })
        .collect();
    let res = s.submit_many(jobs).await.unwrap();
    assert_eq!(res.len(), 10_000);
    assert_eq!(res.iter().map(|r| r.job_id).collect::<HashSet<_>>().len(), 10_000);
    assert_eq!(count(&s, "SELECT count(*) FROM jobs").await, 10_000);
    assert_eq!(topic_count(&s, "job.submitted").await, 10_000);
    // All-or-nothing: one bad queue at the end rejects all.
    let mut bad: Vec<NewJob> = (0..500).map(|_| job("default")).collect();
    bad.push(job("missing"));
    assert!(s.submit_many(bad).await.is_err());
    assert_eq!(count(&s, "SELECT count(*) FROM jobs").await, 10_000);
}

#[tokio::test]
async fn jq_103_delayed_job_is_not_claimed_until_due() {
    let (_db, s) = setup().await;
    worker(&s, "w", &["default"]).await;
    let later = s
        .submit(NewJob {
            schedule: Schedule::After(Duration::from_secs(3600)),
            ..job("default")
        })
        .await
        .unwrap();
    let at = chrono::Utc::now() + chrono::Duration::hours(2);
    let at_job = s
        .submit(NewJob {
            schedule: Schedule::At(at),
            ..job("default")
        })
        .await
        .unwrap();
    assert!(s.claim("w", &q(&["default"]), 10).await.unwrap().is_empty());
    let stats = s.queue_stats("default").await.unwrap();
    assert_eq!((stats.pending, stats.scheduled), (2, 2));
    shift(&s, 3601).await;
    let got = s.claim("w", &q(&["default"]), 10).await.unwrap();
    assert_eq!(
        got.iter().map(|a| a.job_id).collect::<Vec<_>>(),
        vec![later.job_id]
    );
    shift(&s, 3600).await;
    let got = s.claim("w", &q(&["default"]), 10).await.unwrap();
    assert_eq!(got[0].job_id, at_job.job_id);
}

#[tokio::test]
async fn fr_004_ttl_expiry_dead_letters_unstarted_jobs_only() {
    let (_db, s) = setup().await;
    worker(&s, "w", &["default"]).await;
    let ttl = Some(Duration::from_secs(30));
    let waiting = s
        .submit(NewJob {
            ttl,
            ..job("default")
        })
        .await
        .unwrap();
    let (started, _) = {
        let sub = s
            .submit(NewJob {
                ttl,
                priority: 9,
                ..job("default")
            })
            .await
            .unwrap();
        let a = s.claim("w", &q(&["default"]), 1).await.unwrap().remove(0);
        assert_eq!(a.job_id, sub.job_id);
        s.ack("w", a.job_id, a.attempt).await.unwrap();
        (a.job_id, a.attempt)
    };
    assert!(s.reap_expired().await.unwrap().is_empty());
    shift(&s, 31).await;
    // Past its TTL the job is no longer claimable even before the reaper runs.
    assert!(s.claim("w", &q(&["default"]), 10).await.unwrap().is_empty());
    assert_eq!(s.reap_expired().await.unwrap(), vec![waiting.job_id]);
    let j = s.get_job(waiting.job_id).await.unwrap();
    assert_eq!(j.status, JobStatus::DeadLettered);
    let ev = s.job_events(waiting.job_id).await.unwrap();
    assert_eq!(ev.last().unwrap().reason(), Some(Reason::TtlExpired));
    assert_eq!(
        s.get_job(started).await.unwrap().status,
        JobStatus::Running,
        "a started job has no TTL"
    );
    // A queue default TTL applies to jobs submitted without one.
    s.create_queue(
        "ttlq",
        &QueueSettings {
            default_ttl: Some(Duration::from_secs(60)),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let d = s.submit(job("ttlq")).await.unwrap();
    let j = s.get_job(d.job_id).await.unwrap();
    assert_eq!((j.expires_at.unwrap() - j.not_before).num_seconds(), 60);
}

#[tokio::test]
async fn fr_014_claim_order_is_priority_desc_then_fifo() {
    let (_db, s) = setup().await;
    worker(&s, "w", &["default"]).await;
    let mut ids = vec![];
    for p in [0u8, 5, 9, 5, 0, 9] {
        ids.push(s.submit(prio(p)).await.unwrap().job_id);
    }
    // And a bulk batch: one transaction, same created_at, still FIFO.
    let bulk = s.submit_many(vec![prio(7), prio(7), prio(7)]).await.unwrap();
    let got: Vec<Uuid> = s
        .claim("w", &q(&["default"]), 100)
        .await
        .unwrap()
        .iter()
        .map(|a| a.job_id)
        .collect();
    let want = vec![
        ids[2],
        ids[5],
        bulk[0].job_id,
        bulk[1].job_id,
        bulk[2].job_id,
        ids[1],
        ids[3],
        ids[0],
        ids[4],
    ];
    assert_eq!(got, want);
}

#[tokio::test]
async fn fr_015_nfr_008_concurrent_claimers_never_assign_a_job_twice() {
    let (_db, s) = setup().await;
    s.submit_many((0..600).map(|i| prio((i % 10) as u8)).collect())
        .await
        .unwrap();
    for w in 0..8 {
        worker(&s, &format!("w{w}"), &["default"]).await;
    }
    let mut tasks = vec![];
    for w in 0..8 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = vec![];
            loop {
                let got = s.claim(&format!("w{w}"), &q(&["default"]), 7).await.unwrap();
                if got.is_empty() {
                    break;
                }
                mine.extend(got.into_iter().map(|a| (a.job_id, a.attempt)));
            }
            mine
        }));
    }
    let mut all = vec![];
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let unique: HashSet<Uuid> = all.iter().map(|(id, _)| *id).collect();
    assert_eq!(all.len(), 600, "every job claimed exactly once");
    assert_eq!(unique.len(), 600);
    assert!(all.iter().all(|(_, a)| *a == 1));
    assert_eq!(
        count(&s, "SELECT count(*) FROM job_events WHERE reason = 'CLAIMED'").await,
        600
    );
    assert_eq!(
        count(&s, "SELECT count(*) FROM jobs WHERE status = 'ASSIGNED'").await,
        600
    );
}

#[tokio::test]
async fn fr_010_fr_011_jq_160_full_life_writes_one_event_per_transition_which_is_also_its_outbox_entry() {
    let (_db, s) = setup().await;
    worker(&s, "w", &["default"]).await;
    let id = s.submit(job("default")).await.unwrap().job_id;
    let (_, a) = start(&s, "w").await;
    s.report(&report("w", id, a, Outcome::Succeeded)).await.unwrap();
    let ev = s.job_events(id).await.unwrap();
    let path: Vec<_> = ev.iter().map(|e| (e.from, e.to, e.reason.as_str())).collect();
    assert_eq!(
        path,
        vec![
            (None, JobStatus::Pending, "SUBMITTED"),
            (Some(JobStatus::Pending), JobStatus::Assigned, "CLAIMED"),
            (Some(JobStatus::Assigned), JobStatus::Running, "STARTED"),
            (Some(JobStatus::Running), JobStatus::Done, "COMPLETED"),
        ]
    );
    assert_eq!(ev[1].worker_id.as_deref(), Some("w"));
    assert_eq!(ev[3].attempt, 1);
    let topics: Vec<(Uuid, String)> = to_publish(&s)
        .await
        .into_iter()
        .filter(|e| e.job_id() == Some(id))
        .map(|e| (e.event_id, e.topic))
        .collect();
    assert_eq!(
        topics.iter().map(|t| t.1.as_str()).collect::<Vec<_>>(),
        vec!["job.submitted", "job.assigned", "job.started", "job.completed"]
    );
    assert_eq!(
        topics.iter().map(|t| t.0).collect::<Vec<_>>(),
        ev.iter().map(|e| e.event_id).collect::<Vec<_>>()
    );
    let j = s.get_job(id).await.unwrap();
    assert_eq!(j.result.as_deref(), Some(&b"ok"[..]));
    assert!(j.started_at.is_some() && j.completed_at.is_some() && j.assigned_at.is_some());
    // job_events rows are immutable.
    assert!(
        sqlx::query("UPDATE job_events SET reason = 'X'")
            .execute(s.pool())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn jq_110_stale_attempt_cannot_ack_complete_or_fail_and_changes_nothing() {
    let (_db, s) = setup().await;
    worker(&s, "old", &["default"]).await;
    let id = s.submit(job("default")).await.unwrap().job_id;
    let (_, a1) = start(&s, "old").await;
    // The old worker is declared dead; the job is retried on another.
    shift(&s, 31).await;
    s.reap_dead_workers(Duration::from_secs(30)).await.unwrap();
    sqlx::query("UPDATE jobs SET not_before = now()")
        .execute(s.pool())
        .await
        .unwrap();
    worker(&s, "new", &["default"]).await;
    let (_, a2) = start(&s, "new").await;
    assert_eq!(a2, a1 + 1);
    let before = count(&s, "SELECT count(*) FROM job_events").await;
    for outcome in [
        Outcome::Succeeded,
        Outcome::Failed { retryable: true },
        Outcome::Cancelled,
    ] {
        let err = s.report(&report("old", id, a1, outcome)).await.unwrap_err();
        assert!(
            matches!(err, StoreError::Transition(TransitionError::StaleAttempt { presented, current }) if presented == a1 && current == a2),
            "{err}"
        );
    }
    assert!(matches!(
        s.ack("old", id, a1).await,
        Err(StoreError::Transition(TransitionError::StaleAttempt { .. }))
    ));
    // The attempt number alone is not enough: it must be the holder.
    assert!(matches!(
        s.report(&report("old", id, a2, Outcome::Succeeded)).await,
        Err(StoreError::Transition(TransitionError::NotOwner { .. }))
    ));
    assert_eq!(count(&s, "SELECT count(*) FROM job_events").await, before);
    let j = s.get_job(id).await.unwrap();
    assert_eq!(
        (j.status, j.attempt, j.worker_id.as_deref()),
        (JobStatus::Running, a2, Some("new"))
    );
    // The newer attempt's result stands.
    s.report(&report("new", id, a2, Outcome::Succeeded))
        .await
        .unwrap();
    assert_eq!(s.get_job(id).await.unwrap().status, JobStatus::Done);
    // A zombie can never overwrite a terminal state.
    assert!(
        s.report(&report("old", id, a1, Outcome::Failed { retryable: true }))
            .await
            .is_err()
    );
    assert_eq!(s.get_job(id).await.unwrap().status, JobStatus::Done);
}

#[tokio::test]
async fn jq_110_result_reporting_is_idempotent_per_attempt() {
    let (_db, s) = setup().await;
    worker(&s, "w", &["default"]).await;
    let id = s.submit(job("default")).await.unwrap().job_id;
    let (_, a) = start(&s, "w").await;
    let r = report("w", id, a, Outcome::Succeeded);
    let first = s.report(&r).await.unwrap();
    let second = s.report(&r).await.unwrap();
    assert!(!first.duplicate && second.duplicate);
    assert_eq!(second.status, JobStatus::Done);
    assert_eq!(count(&s, "SELECT count(*) FROM job_events").await, 4);
    let conflict = s
        .report(&report("w", id, a, Outcome::Failed { retryable: true }))
        .await
        .unwrap_err();
    assert!(matches!(
        conflict,
        StoreError::Transition(TransitionError::ConflictingReport { .. })
    ));
}

#[tokio::test]
async fn fr_033_fr_034_failures_retry_with_backoff_then_dead_letter() {
    let (_db, s) = setup().await;
    s.update_queue(
        "default",
        &QueuePatch {
            backoff_base: Some(Duration::from_secs(5)),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    worker(&s, "w", &["default"]).await;
    let id = s
        .submit(NewJob {
            max_retries: Some(2),
            ..job("default")
        })
        .await
        .unwrap()
        .job_id;
    let mut delays = vec![];
    for round in 0..3 {
        let (_, a) = start(&s, "w").await;
        let out = s
            .report(&report("w", id, a, Outcome::Failed { retryable: true }))
            .await
            .unwrap();
        let j = s.get_job(id).await.unwrap();
        if round < 2 {
            assert_eq!(out.status, JobStatus::Pending);
            assert_eq!(j.error.as_deref(), Some("exit status 1"));
            delays.push((j.not_before - j.updated_at).num_seconds());
            // Held back until not_before.
            assert!(s.claim("w", &q(&["default"]), 1).await.unwrap().is_empty());
            shift(&s, 3600).await;
        } else {
            assert_eq!(out.status, JobStatus::DeadLettered);
        }
    }
    assert_eq!(delays, vec![5, 10], "base 5 s doubling, zero jitter in tests");
    let ev = s.job_events(id).await.unwrap();
    assert_eq!(ev.last().unwrap().reason(), Some(Reason::RetriesExhausted));
    assert_eq!(topic_count(&s, "job.dead-lettered").await, 1);
    assert_eq!(topic_count(&s, "job.failed").await, 3);
}

#[tokio::test]
async fn fr_012_cancel_pending_and_assigned_and_refuse_terminal() {
    let (_db, s) = setup().await;
    worker(&s, "w", &["default"]).await;
    let pending = s.submit(job("default")).await.unwrap().job_id;
    assert_eq!(
        s.cancel(pending).await.unwrap(),
        CancelOutcome::Cancelled { notify: None }
    );
    let assigned = s.submit(job("default")).await.unwrap().job_id;
    let a = s.claim("w", &q(&["default"]), 1).await.unwrap().remove(0);
    assert_eq!(a.job_id, assigned);
    assert_eq!(
        s.cancel(assigned).await.unwrap(),
        CancelOutcome::Cancelled {
            notify: Some(("w".into(), a.attempt))
        }
    );
    for id in [pending, assigned] {
        let j = s.get_job(id).await.unwrap();
        assert_eq!(j.status, JobStatus::DeadLettered);
        assert_eq!(
            s.job_events(id).await.unwrap().last().unwrap().reason(),
            Some(Reason::Cancelled)
        );
    }
    let err = s.cancel(pending).await.unwrap_err();
    assert!(matches!(
        err,
        StoreError::Transition(TransitionError::InvalidState {
            status: JobStatus::DeadLettered,
            ..
        })
    ));
    assert!(matches!(
        s.cancel(Uuid::new_v4()).await,
        Err(StoreError::JobNotFound(_))
    ));
    // The late ack of the cancelled assignment is refused.
    assert!(s.ack("w", assigned, a.attempt).await.is_err());
}

#[tokio::test]
async fn jq_113_cancel_running_job_goes_through_the_worker() {
    let (_db, s) = setup().await;
    worker(&s, "w", &["default"]).await;
    let id = s.submit(job("default")).await.unwrap().job_id;
    let (_, a) = start(&s, "w").await;
    assert_eq!(
        s.cancel(id).await.unwrap(),
        CancelOutcome::KillRequested {
            worker_id: "w".into(),
            attempt: a
        }
    );
    assert_eq!(s.get_job(id).await.unwrap().status, JobStatus::Running);
    // The heartbeat repeats the request until the worker confirms.
    let hb = s
        .heartbeat(
            "w",
            &[Lease {
                job_id: id,
                attempt: a,
            }],
        )
        .await
        .unwrap();
    assert_eq!(
        hb.cancel,
        vec![Lease {
            job_id: id,
            attempt: a
        }]
    );
    assert!(hb.stale.is_empty());
    s.report(&report("w", id, a, Outcome::Cancelled)).await.unwrap();
    let j = s.get_job(id).await.unwrap();
    assert_eq!(j.status, JobStatus::DeadLettered);
    assert!(!j.cancel_requested);
    let last = s.job_events(id).await.unwrap().pop().unwrap();
    assert_eq!(
        (last.from, last.to, last.reason()),
        (
            Some(JobStatus::Running),
            JobStatus::DeadLettered,
            Some(Reason::Cancelled)
        )
    );
}

#[tokio::test]
async fn fr_013_jq_150_manual_and_bulk_retry_reset_retries() {
    let (_db, s) = setup().await;
    worker(&s, "w", &["default"]).await;
    let ids: Vec<Uuid> = s
        .submit_many(
            (0..5)
                .map(|_| NewJob {
                    max_retries: Some(0),
                    ..job("default")
                })
                .collect(),
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.job_id)
        .collect();
    for _ in 0..5 {
        let (id, a) = start(&s, "w").await;
        s.report(&report("w", id, a, Outcome::Failed { retryable: true }))
            .await
            .unwrap();
    }
    let dead = s
        .list_jobs(&ListFilter {
            status: Some(JobStatus::DeadLettered),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(dead.jobs.len(), 5, "FR-035: dead letters stay and are listable");
    s.retry(ids[0]).await.unwrap();
    let j = s.get_job(ids[0]).await.unwrap();
    assert_eq!((j.status, j.retries, j.error), (JobStatus::Pending, 0, None));
    assert!(matches!(
        s.retry(ids[0]).await,
        Err(StoreError::Transition(TransitionError::InvalidState { .. }))
    ));
    let moved = s.retry_many("default", JobStatus::DeadLettered, 3).await.unwrap();
    assert_eq!(moved, ids[1..4].to_vec(), "oldest first, at most the limit");
    let rest = s
        .retry_many("default", JobStatus::DeadLettered, 100)
        .await
        .unwrap();
    assert_eq!(rest, vec![ids[4]]);
    assert!(matches!(
        s.retry_many("nope", JobStatus::DeadLettered, 1).await,
        Err(StoreError::QueueNotFound(_))
    ));
    assert!(s.retry_many("default", JobStatus::Running, 1).await.is_err());
    assert_eq!(
        count(&s, "SELECT count(*) FROM jobs WHERE status = 'PENDING'").await,
        5
    );
}

#[tokio::test]
async fn fr_016_assignment_timeout_returns_the_job_for_retry() {
    let (_db, s) = setup().await;
    worker(&s, "w", &["default"]).await;
    let id = s.submit(job("default")).await.unwrap().job_id;
    s.claim("w", &q(&["default"]), 1).await.unwrap();
    assert!(
        s.reap_assignment_timeouts(Duration::from_secs(60))
            .await
            .unwrap()
            .is_empty()
    );
    shift(&s, 61).await;
    assert_eq!(
        s.reap_assignment_timeouts(Duration::from_secs(60)).await.unwrap(),
        vec![id]
    );
    let j = s.get_job(id).await.unwrap();
    assert_eq!((j.status, j.retries, j.worker_id), (JobStatus::Pending, 1, None));
    let reasons: Vec<_> = s
        .job_events(id)
        .await
        .unwrap()
        .iter()
        .map(|e| e.reason.clone())
        .collect();
    assert_eq!(
        reasons[2..],
        ["ASSIGNMENT_TIMEOUT".to_string(), "RETRY_SCHEDULED".to_string()]
    );
}

#[tokio::test]
async fn fr_020_jq_112_dead_worker_goes_offline_and_its_jobs_are_retried_then_dead_lettered() {
    let (_db, s) = setup().await;
    let id = s
        .submit(NewJob {
            max_retries: Some(1),
            ..job("default")
        })
        .await
        .unwrap()
        .job_id;
    for round in 0..2 {
        let w = format!("w{round}");
        worker(&s, &w, &["default"]).await;
        sqlx::query("UPDATE jobs SET not_before = now()")
            .execute(s.pool())
            .await
            .unwrap();
        start(&s, &w).await;
        shift(&s, 31).await;
        let r = s.reap_dead_workers(Duration::from_secs(30)).await.unwrap();
        assert!(r.workers_offline.contains(&w));
        assert_eq!(r.jobs, vec![id]);
    }
    let j = s.get_job(id).await.unwrap();
    assert_eq!(
        j.status,
        JobStatus::DeadLettered,
        "worker deaths count against max_retries"
    );
    assert_eq!(s.get_worker("w0").await.unwrap().status, WorkerStatus::Offline);
    let hb = s.heartbeat("w0", &[]).await.unwrap();
    assert!(!hb.registered, "an OFFLINE worker must register again");
}

#[tokio::test]
async fn jq_111_undelivered_assignment_goes_straight_back_to_pending() {
    let (_db, s) = setup().await;
    worker(&s, "w", &["default"]).await;
    let id = s
        .submit(NewJob {
            max_retries: Some(0),
            ..job("default")
        })
        .await
        .unwrap()
        .job_id;
    let a = s.claim("w", &q(&["default"]), 1).await.unwrap().remove(0);
    s.delivery_failed("w", id, a.attempt).await.unwrap();
    let j = s.get_job(id).await.unwrap();
    assert_eq!((j.status, j.retries), (JobStatus::Pending, 0));
    let again = s.claim("w", &q(&["default"]), 1).await.unwrap();
    assert_eq!(again[0].job_id, id, "claimable at once, no timeout wait");
    assert_eq!(again[0].attempt, a.attempt + 1);
}

#[tokio::test]
async fn jq_122_paused_queue_dispatches_nothing_and_loses_nothing() {
    let (_db, s) = setup().await;
    worker(&s, "w", &["default"]).await;
    s.submit_many((0..3).map(|_| job("default")).collect())
        .await
        .unwrap();
    assert!(s.pause_queue("default").await.unwrap().paused);
    assert!(s.claim("w", &q(&["default"]), 10).await.unwrap().is_empty());
    // Submitting into a paused queue still works.
    s.submit(job("default")).await.unwrap();
    assert!(!s.resume_queue("default").await.unwrap().paused);
    assert_eq!(s.claim("w", &q(&["default"]), 10).await.unwrap().len(), 4);
    assert!(matches!(
        s.pause_queue("nope").await,
        Err(StoreError::QueueNotFound(_))
    ));
}

#[tokio::test]
async fn jq_140_queue_concurrency_limit_holds_across_workers() {
    let (_db, s) = setup().await;
    s.create_queue(
        "lim",
        &QueueSettings {
            concurrency_limit: Some(3),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    s.submit_many((0..10).map(|_| job("lim")).collect())
        .await
        .unwrap();
    worker(&s, "a", &["lim"]).await;
    worker(&s, "b", &["lim"]).await;
    let a = s.claim("a", &q(&["lim"]), 10).await.unwrap();
    let b = s.claim("b", &q(&["lim"]), 10).await.unwrap();
    assert_eq!(a.len() + b.len(), 3);
    assert!(b.is_empty());
    // Finishing one frees one slot.
    s.ack("a", a[0].job_id, a[0].attempt).await.unwrap();
    s.report(&report("a", a[0].job_id, a[0].attempt, Outcome::Succeeded))
        .await
        .unwrap();
    assert_eq!(s.claim("b", &q(&["lim"]), 10).await.unwrap().len(), 1);
}

#[tokio::test]
async fn jq_140_queue_rate_limit_spends_tokens() {
    let (_db, s) = setup().await;
    s.create_queue(
        "rate",
        &QueueSettings {
            rate_limit_per_second: Some(5.0),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    s.submit_many((0..50).map(|_| job("rate")).collect())
        .await
        .unwrap();
    worker(&s, "w", &["rate"]).await;
    // The bucket fills at 5/s up to one second's worth.
    shift(&s, 10).await;
    assert_eq!(s.claim("w", &q(&["rate"]), 50).await.unwrap().len(), 5);
    assert_eq!(s.claim("w", &q(&["rate"]), 50).await.unwrap().len(), 0);
    shift(&s, 1).await;
    assert_eq!(s.claim("w", &q(&["rate"]), 50).await.unwrap().len(), 5);
    // Limits can be cleared again.
    s.update_queue(
        "rate",
        &QueuePatch {
            rate_limit_per_second: Some(None),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(s.claim("w", &q(&["rate"]), 100).await.unwrap().len(), 40);
}

#[tokio::test]
async fn fr_022_claim_takes_only_the_requested_queues() {
    let (_db, s) = setup().await;
    s.create_queue("emails", &QueueSettings::default()).await.unwrap();
    s.create_queue("reports", &QueueSettings::default())
        .await
        .unwrap();
    s.submit_many(vec![job("emails"), job("reports"), job("default")])
        .await
        .unwrap();
    worker(&s, "w", &["emails"]).await;
    let got = s.claim("w", &q(&["emails"]), 10).await.unwrap();
    assert_eq!(
        got.iter().map(|a| a.queue.as_str()).collect::<Vec<_>>(),
        vec!["emails"]
    );
}

#[tokio::test]
async fn fr_023_fr_024_drained_or_stopping_workers_get_no_jobs() {
    let (_db, s) = setup().await;
    s.submit(job("default")).await.unwrap();
    worker(&s, "d", &["default"]).await;
    worker(&s, "x", &["default"]).await;
    assert_eq!(s.drain_worker("d").await.unwrap().status, WorkerStatus::Draining);
    assert_eq!(
        s.shutdown_worker("x").await.unwrap().status,
        WorkerStatus::Stopping
    );
    assert!(s.claim("d", &q(&["default"]), 1).await.unwrap().is_empty());
    assert!(s.claim("x", &q(&["default"]), 1).await.unwrap().is_empty());
    let hb = s.heartbeat("d", &[]).await.unwrap();
    assert_eq!(hb.status, Some(WorkerStatus::Draining));
    assert!(matches!(
        s.drain_worker("ghost").await,
        Err(StoreError::WorkerNotFound(_))
    ));
    s.deregister_worker("x").await.unwrap();
    assert!(matches!(
        s.drain_worker("x").await,
        Err(StoreError::WorkerOffline(_))
    ));
}

#[tokio::test]
async fn fr_018_fr_019_register_heartbeat_and_stale_leases() {
    let (_db, s) = setup().await;
    worker(&s, "w", &["default"]).await;
    let w = s.get_worker("w").await.unwrap();
    assert_eq!(
        (w.status, w.concurrency, w.queues.clone()),
        (WorkerStatus::Online, 4, q(&["default"]))
    );
    let id = s.submit(job("default")).await.unwrap().job_id;
    let a = s.claim("w", &q(&["default"]), 1).await.unwrap().remove(0);
    let ghost = Lease {
        job_id: Uuid::new_v4(),
        attempt: 1,
    };
    let old = Lease {
        job_id: id,
        attempt: a.attempt + 5,
    };
    let hb = s
        .heartbeat(
            "w",
            &[
                Lease {
                    job_id: id,
                    attempt: a.attempt,
                },
                ghost,
                old,
            ],
        )
        .await
        .unwrap();
    assert!(hb.registered);
    let mut want = vec![ghost, old];
    want.sort();
    assert_eq!(hb.stale, want);
    assert_eq!(s.get_worker("w").await.unwrap().active_jobs, 1);
    assert_eq!(
        count(
            &s,
            "SELECT count(*) FROM event_outbox WHERE topic = 'worker.heartbeat'"
        )
        .await,
        2
    );
    // Bad registrations are refused and change nothing.
    for bad in [
        WorkerRegistration {
            id: "".into(),
            hostname: "h".into(),
            concurrency: 1,
            queues: q(&["default"]),
            version: "".into(),
            ..Default::default()
        },
        WorkerRegistration {
            id: "v".into(),
            hostname: "h".into(),
            concurrency: 0,
            queues: q(&["default"]),
            version: "".into(),
            ..Default::default()
        },
        WorkerRegistration {
            id: "v".into(),
            hostname: "h".into(),
            concurrency: 1,
            queues: vec![],
            version: "".into(),
            ..Default::default()
        },
    ] {
        assert!(matches!(
            s.register_worker(&bad).await,
            Err(StoreError::Invalid(_))
        ));
    }
    assert_eq!(
        s.list_workers(jq_store::WorkerListing::WithOffline)
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn nfr_015_re_registration_and_deregistration_reclaim_leftover_jobs() {
    let (_db, s) = setup().await;
    worker(&s, "w", &["default"]).await;
    let id = s.submit(job("default")).await.unwrap().job_id;
    start(&s, "w").await;
    // Same id registers again (a restarted process): the old attempt is lost.
    let reclaimed = s
        .register_worker(&WorkerRegistration {
            id: "w".into(),
            hostname: "h".into(),
            concurrency: 2,
            queues: q(&["default"]),
            version: "".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(reclaimed, vec![id]);
    assert_eq!(s.get_job(id).await.unwrap().status, JobStatus::Pending);
    // A deregistered worker's leftovers go back on the next pass.
    sqlx::query("UPDATE jobs SET not_before = now()")
        .execute(s.pool())
        .await
        .unwrap();
    start(&s, "w").await;
    s.deregister_worker("w").await.unwrap();
    let r = s.reap_dead_workers(Duration::from_secs(30)).await.unwrap();
    assert_eq!(r.jobs, vec![id]);
    assert!(r.workers_offline.is_empty(), "it was already offline");
}

#[tokio::test]
async fn fr_018_reconnecting_worker_keeps_the_leases_it_still_runs_and_stays_draining() {
    let (_db, s) = setup().await;
    worker(&s, "w", &["default"]).await;
    s.submit(job("default")).await.unwrap();
    s.submit(job("default")).await.unwrap();
    let kept = start(&s, "w").await;
    let lost = start(&s, "w").await;
    s.drain_worker("w").await.unwrap();
    // The server restarted; the worker still runs `kept` but not `lost`.
    let reclaimed = s
        .register_worker(&WorkerRegistration {
            id: "w".into(),
            hostname: "h".into(),
            concurrency: 2,
            queues: q(&["default"]),
            keep: vec![Lease {
                job_id: kept.0,
                attempt: kept.1,
            }],
            draining: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(reclaimed, vec![lost.0]);
    assert_eq!(s.get_job(kept.0).await.unwrap().status, JobStatus::Running);
    assert_eq!(s.get_job(lost.0).await.unwrap().status, JobStatus::Pending);
    assert_eq!(s.get_worker("w").await.unwrap().status, WorkerStatus::Draining);
    // A lease with an old attempt is not kept.
    let stale = s
        .register_worker(&WorkerRegistration {
            id: "w".into(),
            concurrency: 2,
            queues: q(&["default"]),
            keep: vec![Lease {
                job_id: kept.0,
                attempt: kept.1 + 1,
            }],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(stale, vec![kept.0]);
    assert_eq!(s.get_worker("w").await.unwrap().status, WorkerStatus::Online);
}

#[tokio::test]
async fn fr_025_fr_026_fr_027_queue_lifecycle() {
    let (_db, s) = setup().await;
    assert!(s.list_queues().await.unwrap().iter().any(|q| q.name == "default"));
    let settings = QueueSettings {
        max_retries: 5,
        default_ttl: Some(Duration::from_secs(600)),
        ..Default::default()
    };
    let created = s.create_queue("emails", &settings).await.unwrap();
    assert_eq!(created.settings, settings);
    assert!(matches!(
        s.create_queue("emails", &settings).await,
        Err(StoreError::QueueExists(_))
    ));
    assert!(matches!(
        s.create_queue("bad name", &settings).await,
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        s.create_queue(
            "x",
            &QueueSettings {
                concurrency_limit: Some(0),
                ..Default::default()
            }
        )
        .await,
        Err(StoreError::Invalid(_))
    ));
    s.submit(job("emails")).await.unwrap();
    let err = s.delete_queue("emails", false).await.unwrap_err();
    assert!(matches!(err, StoreError::QueueNotEmpty { jobs: 1, .. }), "{err}");
    assert_eq!(s.delete_queue("emails", true).await.unwrap(), 1);
    assert!(matches!(
        s.get_queue("emails").await,
        Err(StoreError::QueueNotFound(_))
    ));
    assert_eq!(count(&s, "SELECT count(*) FROM jobs").await, 0);
    // Its jobs' history went with them (explicitly: ADR 0008).
    assert_eq!(
        count(&s, "SELECT count(*) FROM job_events WHERE queue = 'emails'").await,
        0
    );
    assert!(matches!(
        s.delete_queue("emails", true).await,
        Err(StoreError::QueueNotFound(_))
    ));
    s.ensure_queue("default").await.unwrap();
    s.create_queue("empty", &QueueSettings::default()).await.unwrap();
    assert_eq!(s.delete_queue("empty", false).await.unwrap(), 0);
}

/// A refused queue delete or update has let go of the queue row by the
/// time its caller hears back. The store runs on a runtime of its own that
/// is not driven between the calls, so sqlx's release task (which would
/// roll back a dropped transaction a moment later) cannot hide a lock the
/// call itself left behind.
#[test]
fn fr_026_a_refused_queue_delete_or_update_holds_no_lock_once_it_returns() {
    let rt = own_runtime();
    let (db, s) = rt.block_on(async {
        let (db, s) = setup().await;
        s.create_queue("emails", &QueueSettings::default()).await.unwrap();
        s.submit(job("emails")).await.unwrap();
        (db, s)
    });
    let err = rt.block_on(s.delete_queue("emails", false)).unwrap_err();
    assert!(matches!(err, StoreError::QueueNotEmpty { .. }), "{err}");
    assert!(
        lockable(&db.url, QUEUE_ROW),
        "the refused delete still locks the queue"
    );
    let bad = QueuePatch {
        concurrency_limit: Some(Some(0)),
        ..Default::default()
    };
    let err = rt.block_on(s.update_queue("emails", &bad)).unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err}");
    assert!(
        lockable(&db.url, QUEUE_ROW),
        "the refused update still locks the queue"
    );
}

/// The same for a claim that gives nothing: its read locked candidates
/// before it learned that its worker is draining.
#[test]
fn fr_023_a_claim_that_gives_nothing_holds_no_lock_once_it_returns() {
    let rt = own_runtime();
    let (db, s) = rt.block_on(async {
        let (db, s) = setup().await;
        s.submit(job("default")).await.unwrap();
        worker(&s, "d", &["default"]).await;
        s.drain_worker("d").await.unwrap();
        (db, s)
    });
    let got = rt.block_on(s.claim("d", &q(&["default"]), 3)).unwrap();
    assert!(got.is_empty());
    assert!(
        lockable(
            &db.url,
            "SELECT id FROM jobs WHERE status = 'PENDING' FOR UPDATE NOWAIT"
        ),
        "the empty claim still locks the job it read"
    );
}

const QUEUE_ROW: &str = "SELECT name FROM queues WHERE name = 'emails' FOR UPDATE NOWAIT";

/// A runtime that runs only while the test blocks on it: between calls
/// nothing it spawned (such as sqlx's release of a connection) gets to run.
fn own_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Whether another session can take the locks of `sql` (a `NOWAIT` read)
/// at once.
fn lockable(url: &str, sql: &str) -> bool {
    use sqlx::Connection;
    let rt = own_runtime();
    rt.block_on(async {
        let mut c = sqlx::PgConnection::connect(url).await.unwrap();
        let locked = sqlx::query(sql).fetch_all(&mut c).await;
        let _ = c.close().await;
        locked.is_ok()
    })
}

#[tokio::test]
async fn fr_028_queue_stats_match_what_happened() {
    let (_db, s) = setup().await;
    worker(&s, "w", &["default"]).await;
    s.submit_many(
        (0..6)
            .map(|_| NewJob {
                max_retries: Some(0),
                ..job("default")
            })
            .collect(),
    )
    .await
    .unwrap();
    // 3 succeed, 1 fails for good, 1 is running, 1 waits.
    for i in 0..5 {
        let (id, a) = start(&s, "w").await;
        match i {
            0..=2 => {
                s.report(&report("w", id, a, Outcome::Succeeded)).await.unwrap();
            }
            3 => {
                s.report(&report("w", id, a, Outcome::Failed { retryable: true }))
                    .await
                    .unwrap();
            }
            _ => {}
        }
    }
    sqlx::query("UPDATE jobs SET started_at = completed_at - interval '2 seconds' WHERE status = 'DONE'")
        .execute(s.pool())
        .await
        .unwrap();
    let st = s.queue_stats("default").await.unwrap();
    assert_eq!((st.pending, st.running, st.done, st.dead_lettered), (1, 1, 3, 1));
    assert_eq!(st.total_processed, 4);
    assert!(
        (st.avg_processing_seconds - 2.0).abs() < 0.01,
        "{}",
        st.avg_processing_seconds
    );
    assert!(
        (st.error_rate - 0.25).abs() < 1e-9,
        "1 failed of 4 finished attempts: {}",
        st.error_rate
    );
    assert!(matches!(
        s.queue_stats("nope").await,
        Err(StoreError::QueueNotFound(_))
    ));
}

#[tokio::test]
async fn fr_032_list_is_cursor_paginated_newest_first() {
    let (_db, s) = setup().await;
    let ids: Vec<Uuid> = s
        .submit_many((0..45).map(|_| job("default")).collect())
        .await
        .unwrap()
        .iter()
        .map(|r| r.job_id)
        .collect();
    let mut seen = vec![];
    let mut token = None;
    let mut pages = vec![];
    loop {
        let page = s
            .list_jobs(&ListFilter {
                limit: Some(20),
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
        pages.push(page.jobs.len());
        seen.extend(page.jobs.iter().map(|j| j.id));
        // New jobs arriving mid-way do not shift later pages.
        s.submit(job("default")).await.unwrap();
        match page.next_page_token {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    assert_eq!(pages, vec![20, 20, 5]);
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 45);
    assert_eq!(
        seen.iter().collect::<HashSet<_>>(),
        ids.iter().collect::<HashSet<_>>()
    );
    let f = ListFilter {
        queue: Some("default".into()),
        status: Some(JobStatus::Done),
        ..Default::default()
    };
    assert!(s.list_jobs(&f).await.unwrap().jobs.is_empty());
    let light = s
        .list_jobs(&ListFilter {
            omit_payloads: true,
            limit: Some(1),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(light.jobs[0].payload.is_empty());
    let bad = s
        .list_jobs(&ListFilter {
            page_token: Some("garbage".into()),
            ..Default::default()
        })
        .await;
    assert!(matches!(bad, Err(StoreError::Invalid(_))));
}

#[tokio::test]
async fn fr_032_list_runs_newest_first_in_submission_order() {
    let (_db, s) = setup().await;
    // Jobs of one bulk submit share created_at: only the submission order
    // (seq) tells them apart.
    let mut submitted: Vec<Uuid> = vec![];
    for _ in 0..3 {
        let bulk = s
            .submit_many((0..7).map(|_| job("default")).collect())
            .await
            .unwrap();
        submitted.extend(bulk.iter().map(|r| r.job_id));
        submitted.push(s.submit(job("default")).await.unwrap().job_id);
    }
    let mut listed = vec![];
    let mut token = None;
    loop {
        let page = s
            .list_jobs(&ListFilter {
                queue: Some("default".into()),
                limit: Some(5),
                page_token: token,
                ..Default::default()
            })
            .await
            .unwrap();
        listed.extend(page.jobs.iter().map(|j| j.id));
        token = page.next_page_token;
        if token.is_none() {
            break;
        }
    }
    submitted.reverse();
    assert_eq!(listed, submitted);
    let all = s
        .list_jobs(&ListFilter {
            limit: Some(1000),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(all.jobs.iter().map(|j| j.id).collect::<Vec<_>>(), submitted);
}

#[tokio::test]
async fn fr_032_listing_pages_read_an_index_in_order_not_a_sort() {
    let (db, s) = setup().await;
    s.ensure_queue("other").await.unwrap();
    // A rare queue is where the per-queue index matters: read in order
    // through the all-queue index it would be a scan of the whole table.
    for _ in 0..4 {
        s.submit_many((0..1000).map(|_| job("default")).collect())
            .await
            .unwrap();
    }
    s.submit_many((0..50).map(|_| job("other")).collect())
        .await
        .unwrap();
    sqlx::query("ANALYZE jobs").execute(db.pool()).await.unwrap();
    // The shapes list_jobs builds: all queues, and one queue, after a cursor.
    for (sql, index) in [
        (
            "SELECT id FROM jobs j WHERE true AND j.seq < 5000 ORDER BY j.seq DESC LIMIT 21",
            "jobs_list",
        ),
        (
            "SELECT id FROM jobs j WHERE true AND j.queue = 'other' AND j.seq < 5000 ORDER BY j.seq DESC LIMIT 21",
            "jobs_queue_list",
        ),
    ] {
        let plan: Vec<String> = sqlx::query_scalar(&format!("EXPLAIN {sql}"))
            .fetch_all(db.pool())
            .await
            .unwrap();
        let plan = plan.join("\n");
        assert!(
            plan.contains(&format!("Index Scan Backward using {index} ")),
            "{sql}:\n{plan}"
        );
        assert!(!plan.contains("Sort"), "{sql}:\n{plan}");
    }
}

#[tokio::test]
async fn fr_031_fr_035_events_of_unknown_job_and_deleting_dead_letters() {
    let (_db, s) = setup().await;
    assert!(matches!(
        s.job_events(Uuid::new_v4()).await,
        Err(StoreError::JobNotFound(_))
    ));
    let id = s.submit(job("default")).await.unwrap().job_id;
    assert!(matches!(
        s.delete_job(id).await,
        Err(StoreError::JobNotTerminal(_))
    ));
    s.cancel(id).await.unwrap();
    let other = s.submit(job("default")).await.unwrap().job_id;
    s.delete_job(id).await.unwrap();
    assert!(matches!(s.get_job(id).await, Err(StoreError::JobNotFound(_))));
    // Its history went with it, nobody else's (ADR 0008: no cascade).
    assert!(matches!(s.job_events(id).await, Err(StoreError::JobNotFound(_))));
    assert_eq!(
        count(
            &s,
            &format!("SELECT count(*) FROM job_events WHERE job_id = '{id}'")
        )
        .await,
        0
    );
    assert_eq!(s.job_events(other).await.unwrap().len(), 1);
    // Its events not yet published move to event_outbox and are still
    // published, in order, with their topics.
    let kept = s.outbox_unsent(10).await.unwrap();
    assert_eq!(
        kept.iter()
            .map(|e| (e.job_id(), e.topic.as_str()))
            .collect::<Vec<_>>(),
        vec![(Some(id), "job.submitted"), (Some(id), "job.dead-lettered")]
    );
    assert_eq!(to_publish(&s).await.len(), 1, "the other job's event");
    // Once published, a deleted job's events are not kept.
    s.outbox_mark_sent(&kept.iter().map(|e| e.id).collect::<Vec<_>>())
        .await
        .unwrap();
    let gone = s.submit(job("default")).await.unwrap().job_id;
    s.cancel(gone).await.unwrap();
    let w = window_when(&s, |w| {
        w.events.iter().filter(|e| e.job_id() == Some(gone)).count() == 2
    })
    .await;
    s.job_events_published(w.next.as_ref().unwrap()).await.unwrap();
    s.delete_job(gone).await.unwrap();
    assert!(s.outbox_unsent(10).await.unwrap().is_empty());
    assert_eq!(s.outbox_backlog(Publishing::Kafka).await.unwrap(), 0);
}

#[tokio::test]
async fn nfr_012_claim_scans_the_pending_index_not_the_table() {
    let (_db, s) = setup().await;
    // Mostly terminal rows, a few pending: the plan must use jobs_claim.
    sqlx::query(
        "INSERT INTO jobs (id, queue, status, payload, max_retries, completed_at) \
         SELECT gen_random_uuid(), 'default', 'DONE', '\\x00', 3, now() FROM generate_series(1, 50000)",
    )
    .execute(s.pool())
    .await
    .unwrap();
    s.submit_many((0..200).map(|_| job("default")).collect())
        .await
        .unwrap();
    sqlx::query("ANALYZE jobs").execute(s.pool()).await.unwrap();
    let plan = s.explain_claim("default", 100).await.unwrap();
    assert!(plan.contains("jobs_claim"), "{plan}");
    assert!(!plan.contains("Seq Scan"), "{plan}");
    // A weighted queue's band scans walk the same index (FR-025).
    let w = PriorityWeights::parse("9:8,5:3,0:1").unwrap();
    let plan = s.explain_weighted_claim("default", &w, 100).await.unwrap();
    assert!(plan.contains("jobs_claim"), "{plan}");
    assert!(!plan.contains("Seq Scan on jobs"), "{plan}");
    // The depth gauges (every 2 s on every server) stay off terminal rows.
    let plan = s.explain_depth().await.unwrap();
    assert!(!plan.contains("Seq Scan on jobs"), "{plan}");
    let depth = s.depth_by_queue().await.unwrap();
    assert_eq!(depth, vec![("default".to_string(), JobStatus::Pending, 200)]);
}

#[tokio::test]
async fn nfr_005_unreachable_database_is_an_error_after_retries() {
    let opts = StoreOptions {
        acquire_timeout: Duration::from_millis(200),
        ..Default::default()
    };
    let s = Store::connect_lazy("postgres://postgres@127.0.0.1:1/nothing", &opts).unwrap();
    let err = s.submit(job("default")).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
}

#[tokio::test]
async fn nfr_009_store_survives_killed_connections() {
    let (db, s) = setup().await;
    let id = s.submit(job("default")).await.unwrap().job_id;
    // Kill every backend of this database behind the pool's back.
    let admin = jq_testkit::postgres::server().await.admin_url.clone();
    let mut c = <sqlx::PgConnection as sqlx::Connection>::connect(&admin)
        .await
        .unwrap();
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()")
        .bind(&db.name)
        .execute(&mut c)
        .await
        .unwrap();
    assert_eq!(s.get_job(id).await.unwrap().id, id);
}

#[tokio::test]
async fn fr_040_observer_hears_named_queries() {
    struct Obs(std::sync::Mutex<Vec<&'static str>>);
    impl jq_store::QueryObserver for Obs {
        fn observe(&self, name: &'static str, _: Duration, _: bool) {
            self.0.lock().unwrap().push(name);
        }
    }
    let (_db, s) = setup().await;
    let obs = Arc::new(Obs(Default::default()));
    let s = s.with_observer(obs.clone());
    s.submit(job("default")).await.unwrap();
    s.list_queues().await.unwrap();
    assert_eq!(*obs.0.lock().unwrap(), vec!["submit_jobs", "list_queues"]);
}

#[tokio::test]
async fn jq_160_outbox_is_read_in_order_marked_sent_and_pruned_after_retention() {
    let (_db, s) = setup().await;
    // event_outbox now holds worker events and deleted jobs' unpublished
    // events (ADR 0012): three deleted jobs give two rows each.
    for _ in 0..3 {
        let id = s.submit(job("default")).await.unwrap().job_id;
        s.cancel(id).await.unwrap();
        s.delete_job(id).await.unwrap();
    }
    let unsent = s.outbox_unsent(10).await.unwrap();
    assert_eq!(unsent.len(), 6);
    assert!(unsent.windows(2).all(|w| w[0].id < w[1].id), "oldest first");
    assert!(unsent.iter().all(|e| e.key == e.job_id().unwrap().to_string()));
    assert_eq!(unsent.iter().filter(|e| e.topic == "job.submitted").count(), 3);
    let ids: Vec<i64> = unsent.iter().map(|e| e.id).collect();
    s.outbox_mark_sent(&ids[..4]).await.unwrap();
    assert_eq!(s.outbox_unsent(10).await.unwrap().len(), 2);
    assert_eq!(s.outbox_backlog(Publishing::Kafka).await.unwrap(), 2);
    // Nothing is pruned before the retention has passed, unsent never.
    assert_eq!(
        s.outbox_prune(Duration::from_secs(3600), Publishing::Kafka)
            .await
            .unwrap(),
        0
    );
    sqlx::query("UPDATE event_outbox SET sent_at = sent_at - interval '2 hours' WHERE sent_at IS NOT NULL")
        .execute(s.pool())
        .await
        .unwrap();
    assert_eq!(
        s.outbox_prune(Duration::from_secs(3600), Publishing::Kafka)
            .await
            .unwrap(),
        4
    );
    assert_eq!(count(&s, "SELECT count(*) FROM event_outbox").await, 2);
    // One relay at a time.
    let lease = s.try_relay_lease().await.unwrap();
    assert!(lease.is_some());
    assert!(s.try_relay_lease().await.unwrap().is_none());
    drop(lease);
    let mut again = None;
    for _ in 0..50 {
        again = s.try_relay_lease().await.unwrap();
        if again.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(again.is_some(), "a dropped lease frees the relay role");
}

/// A transaction on a connection of its own, with a transaction id
/// assigned now (so the order of ids is the test's to choose).
async fn open_tx(db: &TestDb) -> (sqlx::PgConnection, i64) {
    use sqlx::Connection;
    let mut c = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut c).await.unwrap();
    let xid: i64 = sqlx::query_scalar("SELECT pg_current_xact_id()::text::bigint")
        .fetch_one(&mut c)
        .await
        .unwrap();
    (c, xid)
}

/// A job row with no history, for events written by hand (the window
/// never publishes events whose job is gone).
async fn bare_job(db: &TestDb, id: Uuid) {
    sqlx::query("INSERT INTO jobs (id, queue, payload, max_retries) VALUES ($1, 'default', '\\x', 0)")
        .bind(id)
        .execute(db.pool())
        .await
        .unwrap();
}

/// Write a job event by hand in `c`'s transaction; returns its id.
async fn event_in(c: &mut sqlx::PgConnection, job: Uuid, to: &str) -> i64 {
    sqlx::query_scalar(
        "INSERT INTO job_events (event_id, job_id, queue, from_status, to_status, reason, attempt) \
         VALUES (gen_random_uuid(), $1, 'default', CASE WHEN $2 = 'PENDING' THEN NULL ELSE 'PENDING'::job_status END, \
                 $2::job_status, 'TEST', 0) RETURNING id",
    )
    .bind(job)
    .bind(to)
    .fetch_one(c)
    .await
    .unwrap()
}

/// The next window once `ready` holds for it (a transaction of the test's
/// own that has just committed is seen by the next read).
async fn window_when(s: &Store, ready: impl Fn(&jq_store::EventWindow) -> bool) -> jq_store::EventWindow {
    for _ in 0..1200 {
        let w = s.job_events_window(100).await.unwrap();
        if ready(&w) {
            return w;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the window never got ready");
}

async fn commit(mut c: sqlx::PgConnection) {
    sqlx::query("COMMIT").execute(&mut c).await.unwrap();
}

#[tokio::test]
async fn jq_160_jq_161_a_late_commit_is_published_when_it_commits_and_holds_nothing_back() {
    let (db, s) = setup().await;
    let early = s.submit(job("default")).await.unwrap().job_id;
    // A transaction that began writing before the next submit and commits
    // after it: its event has the smaller id but becomes visible later.
    let late_job = Uuid::new_v4();
    bare_job(&db, late_job).await;
    let (mut slow, slow_xid) = open_tx(&db).await;
    let late_event = event_in(&mut slow, late_job, "PENDING").await;
    let after = s.submit(job("default")).await.unwrap().job_id;
    let w = window_when(&s, |w| w.events.len() >= 2).await;
    // JQ-161: `after` does not wait for the running transaction.
    assert_eq!(
        w.events.iter().map(|e| e.job_id().unwrap()).collect::<Vec<_>>(),
        vec![early, after]
    );
    assert_eq!(w.events[0].topic, "job.submitted");
    let next = w.next.clone().unwrap();
    assert!(
        next.pending.contains(&slow_xid),
        "{next:?}: the running one is pending"
    );
    assert!(next.below <= slow_xid, "{next:?}");
    s.job_events_published(&next).await.unwrap();
    assert_eq!(s.relay_cursor().await.unwrap(), next);
    assert_eq!(
        s.outbox_backlog(Publishing::Kafka).await.unwrap(),
        0,
        "the running one is not visible, so not yet waiting"
    );
    assert!(s.job_events_window(100).await.unwrap().events.is_empty());
    commit(slow).await;
    let w = window_when(&s, |w| !w.events.is_empty()).await;
    assert_eq!(
        w.events
            .iter()
            .map(|e| (e.id, e.job_id().unwrap()))
            .collect::<Vec<_>>(),
        vec![(late_event, late_job)],
        "the late commit alone, once"
    );
    s.job_events_published(w.next.as_ref().unwrap()).await.unwrap();
    assert_eq!(s.outbox_backlog(Publishing::Kafka).await.unwrap(), 0);
    assert!(s.job_events_window(100).await.unwrap().events.is_empty());
    // A window never splits one transaction's events, however many.
    s.submit_many((0..50).map(|_| job("default")).collect())
        .await
        .unwrap();
    let w = s.job_events_window(10).await.unwrap();
    assert_eq!(w.events.len(), 50, "limit 10");
}

#[tokio::test]
async fn jq_160_the_relay_window_reads_the_txid_index_not_the_whole_history() {
    let (db, s) = setup().await;
    s.submit_many((0..2000).map(|_| job("default")).collect())
        .await
        .unwrap();
    for t in ["jobs", "job_events"] {
        sqlx::query(&format!("ANALYZE {t}"))
            .execute(db.pool())
            .await
            .unwrap();
    }
    let plan = s.explain_job_events_window().await.unwrap();
    // The partition that holds the rows (JQ-152) is read by its `txid`
    // index; the empty ones cost nothing whatever they do.
    let full: String = sqlx::query_scalar(
        "SELECT tableoid::regclass::text FROM job_events GROUP BY 1 ORDER BY count(*) DESC LIMIT 1",
    )
    .fetch_one(db.pool())
    .await
    .unwrap();
    let reads: Vec<&str> = plan
        .lines()
        .filter(|l| l.contains(&format!(" on {full} e")))
        .collect();
    assert!(!reads.is_empty(), "{plan}");
    assert!(reads.iter().all(|l| l.contains("_txid_idx on ")), "{plan}");
    // Whether each event's job is gone: one probe each, not a hash of
    // every job.
    assert!(!plan.contains("Seq Scan on jobs"), "{plan}");
}

#[tokio::test]
async fn jq_160_jq_161_one_jobs_events_keep_their_order_when_the_later_one_has_the_older_transaction() {
    let (db, s) = setup().await;
    let j = Uuid::new_v4();
    bare_job(&db, j).await;
    // Transaction ids in the order older < middle < newer.
    let (mut older, _) = open_tx(&db).await;
    let (middle, _) = open_tx(&db).await;
    let (mut newer, _) = open_tx(&db).await;
    // The newer transaction writes the job's first event and commits; the
    // older one writes its second event (as a transition that waited for
    // the job's row lock would) and commits.
    let first = event_in(&mut newer, j, "PENDING").await;
    commit(newer).await;
    let second = event_in(&mut older, j, "ASSIGNED").await;
    commit(older).await;
    // `middle` still runs and holds the horizon: both events are committed
    // and go now (JQ-161), in their order.
    let w = window_when(&s, |w| !w.events.is_empty()).await;
    assert_eq!(
        w.events.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![first, second]
    );
    assert_eq!(
        w.events.iter().map(|e| e.topic.as_str()).collect::<Vec<_>>(),
        vec!["job.submitted", "job.assigned"]
    );
    // A window cut after the older transaction holds the second event
    // back (its predecessor lies beyond): never out of order.
    let cut = s.job_events_window(1).await.unwrap();
    assert!(cut.held && cut.events.is_empty(), "{cut:?}");
    s.job_events_published(w.next.as_ref().unwrap()).await.unwrap();
    assert!(s.job_events_window(100).await.unwrap().events.is_empty());
    commit(middle).await;
}

/// JQ-161: a write transaction held open elsewhere on the server (in
/// another database, then in this one) holds no committed event back,
/// however long it stays open (here: the whole test); and a window read
/// but never marked published (a relay that died between the broker's
/// acknowledgement and its cursor update) is read again: the same events,
/// the same ids, nothing lost.
#[tokio::test]
async fn jq_161_an_open_transaction_anywhere_on_the_server_holds_no_event_back() {
    let (db, s) = setup().await;
    for holder_url in [db.admin_url().to_string(), db.url.clone()] {
        let mut holder = OpenTransaction::begin(&holder_url).await.unwrap();
        let ids: Vec<Uuid> = s
            .submit_many((0..20).map(|_| job("default")).collect())
            .await
            .unwrap()
            .into_iter()
            .map(|x| x.job_id)
            .collect();
        let w = window_when(&s, |w| !w.events.is_empty()).await;
        assert_eq!(
            w.events.iter().map(|e| e.job_id().unwrap()).collect::<Vec<_>>(),
            ids,
            "{holder_url}: every event, in order, while the holder is open"
        );
        assert!(
            holder.holds_the_horizon().await.unwrap(),
            "the horizon is pinned meanwhile"
        );
        let next = w.next.clone().unwrap();
        assert!(next.pending.contains(&holder.xid), "{next:?}");
        assert!(next.below <= holder.xid, "{next:?}");
        // Not marked published: read again, the same events.
        let again = s.job_events_window(100).await.unwrap();
        assert_eq!(
            again.events.iter().map(|e| e.event_id).collect::<Vec<_>>(),
            w.events.iter().map(|e| e.event_id).collect::<Vec<_>>()
        );
        s.job_events_published(&next).await.unwrap();
        assert_eq!(s.outbox_pending(Publishing::Kafka).await.unwrap().events, 0);
        assert!(s.job_events_window(100).await.unwrap().events.is_empty());
        holder.end().await.unwrap();
    }
}

/// JQ-161: a transaction that was running when the relay read is pending;
/// if it aborts, its events are never published, and it leaves the
/// pending set.
#[tokio::test]
async fn jq_161_an_aborted_transactions_events_are_never_published() {
    let (db, s) = setup().await;
    let j = Uuid::new_v4();
    bare_job(&db, j).await;
    let (mut doomed, xid) = open_tx(&db).await;
    event_in(&mut doomed, j, "PENDING").await;
    let after = s.submit(job("default")).await.unwrap().job_id;
    let w = window_when(&s, |w| !w.events.is_empty()).await;
    assert_eq!(
        w.events.iter().map(|e| e.job_id().unwrap()).collect::<Vec<_>>(),
        vec![after]
    );
    assert!(w.next.as_ref().unwrap().pending.contains(&xid));
    s.job_events_published(w.next.as_ref().unwrap()).await.unwrap();
    sqlx::query("ROLLBACK").execute(&mut doomed).await.unwrap();
    let later = s.submit(job("default")).await.unwrap().job_id;
    let w = window_when(&s, |w| !w.events.is_empty()).await;
    assert_eq!(
        w.events.iter().map(|e| e.job_id().unwrap()).collect::<Vec<_>>(),
        vec![later],
        "the aborted event never"
    );
    let next = w.next.unwrap();
    assert!(!next.pending.contains(&xid), "{next:?}");
    s.job_events_published(&next).await.unwrap();
    assert_eq!(s.outbox_pending(Publishing::Kafka).await.unwrap().events, 0);
    assert!(s.job_events_window(100).await.unwrap().events.is_empty());
}

/// `jq_outbox_lag_seconds`: the age of the oldest committed event not yet
/// published; 0 once everything is.
#[tokio::test]
async fn jq_161_outbox_lag_is_the_age_of_the_oldest_unpublished_event() {
    let (db, s) = setup().await;
    assert_eq!(
        s.outbox_pending(Publishing::Kafka).await.unwrap().lag,
        Duration::ZERO
    );
    let id = s.submit(job("default")).await.unwrap().job_id;
    // History is immutable (a trigger): aged by hand with triggers off.
    let mut tx = db.pool().begin().await.unwrap();
    sqlx::query("SET LOCAL session_replication_role = replica")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("UPDATE job_events SET occurred_at = now() - interval '90 seconds' WHERE job_id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let p = s.outbox_pending(Publishing::Kafka).await.unwrap();
    assert_eq!(p.events, 1);
    assert!(
        p.lag >= Duration::from_secs(90) && p.lag < Duration::from_secs(3600),
        "{p:?}"
    );
    assert_eq!(
        s.outbox_pending(Publishing::Off).await.unwrap(),
        jq_store::OutboxPending::default(),
        "nothing is published without Kafka, so nothing is late"
    );
    let w = window_when(&s, |w| !w.events.is_empty()).await;
    s.job_events_published(w.next.as_ref().unwrap()).await.unwrap();
    assert_eq!(
        s.outbox_pending(Publishing::Kafka).await.unwrap().lag,
        Duration::ZERO
    );
}

#[tokio::test]
async fn fr_011_jq_160_audit_finds_every_transition_with_exactly_one_event() {
    let (db, s) = setup().await;
    worker(&s, "w", &["default"]).await;
    for _ in 0..3 {
        s.submit(job("default")).await.unwrap();
    }
    let (id, attempt) = start(&s, "w").await;
    s.report(&ResultReport {
        worker_id: "w".into(),
        job_id: id,
        attempt,
        outcome: Outcome::Succeeded,
        result: vec![],
        error: None,
    })
    .await
    .unwrap();
    let a = s.audit_events().await.unwrap();
    assert_eq!(a.transitions, 3 + 3, "3 submitted, claimed, started, completed");
    assert_eq!((a.missing, a.duplicated, a.orphans), (0, 0, 0));
    // The audit sees a lost and a doubled event (made by hand): a row as
    // written before schema v4 (no txid) without its outbox copy, and an
    // outbox copy of an event the relay publishes from job_events.
    sqlx::query(
        "INSERT INTO job_events (event_id, job_id, queue, to_status, reason, attempt, txid) \
         VALUES (gen_random_uuid(), gen_random_uuid(), 'default', 'PENDING', 'SUBMITTED', 0, NULL)",
    )
    .execute(db.pool())
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO event_outbox (event_id, topic, partition_key, job_id) \
         SELECT event_id, 'job.submitted', job_id::text, job_id FROM job_events WHERE txid IS NOT NULL LIMIT 1",
    )
    .execute(db.pool())
    .await
    .unwrap();
    let a = s.audit_events().await.unwrap();
    assert_eq!((a.missing, a.duplicated, a.orphans), (1, 1, 0));
}

#[tokio::test]
async fn jq_110_running_job_a_live_worker_no_longer_lists_is_reclaimed_after_the_grace() {
    let (db, s) = setup().await;
    worker(&s, "w", &["default"]).await;
    s.submit(job("default")).await.unwrap();
    s.submit(job("default")).await.unwrap();
    let listed = start(&s, "w").await;
    let dropped = start(&s, "w").await;
    let lease = Lease {
        job_id: listed.0,
        attempt: listed.1,
    };
    // Just started: even an unlisted job is left alone (ack/heartbeat race).
    let grace = Duration::from_secs(10);
    assert!(s.reclaim_unlisted("w", &[lease], grace).await.unwrap().is_empty());
    sqlx::query("UPDATE jobs SET started_at = started_at - interval '11 seconds'")
        .execute(db.pool())
        .await
        .unwrap();
    assert_eq!(
        s.reclaim_unlisted("w", &[lease], grace).await.unwrap(),
        vec![dropped.0]
    );
    assert_eq!(s.get_job(listed.0).await.unwrap().status, JobStatus::Running);
    let j = s.get_job(dropped.0).await.unwrap();
    assert_eq!(
        (j.status, j.retries),
        (JobStatus::Pending, 1),
        "a lost attempt counts (JQ-112)"
    );
}

#[tokio::test]
async fn jq_110_group_commit_of_acks_and_results_decides_each_call_alone() {
    let (_db, s) = setup().await;
    worker(&s, "a", &["default"]).await;
    worker(&s, "b", &["default"]).await;
    for _ in 0..6 {
        s.submit(job("default")).await.unwrap();
    }
    let qa = q(&["default"]);
    let for_a = s.claim("a", &qa, 3).await.unwrap();
    let for_b = s.claim("b", &qa, 3).await.unwrap();
    // One batch: a's three acks, b's first with a stale attempt, b's
    // second twice, and a job that does not exist.
    let ghost = Uuid::new_v4();
    let mut calls: Vec<(String, Uuid, u32)> = for_a
        .iter()
        .map(|x| ("a".to_string(), x.job_id, x.attempt))
        .collect();
    calls.push(("b".into(), for_b[0].job_id, for_b[0].attempt + 1));
    calls.push(("b".into(), for_b[1].job_id, for_b[1].attempt));
    calls.push(("b".into(), for_b[1].job_id, for_b[1].attempt));
    calls.push(("b".into(), ghost, 1));
    let out = s.ack_many(&calls).await;
    assert!(out[..3].iter().all(|r| r.is_ok()), "{out:?}");
    assert!(
        matches!(
            out[3],
            Err(StoreError::Transition(TransitionError::StaleAttempt { .. }))
        ),
        "{:?}",
        out[3]
    );
    assert!(out[4].is_ok(), "{out:?}");
    // Decided after the first, like a second `ack` call would be.
    assert!(
        matches!(
            out[5],
            Err(StoreError::Transition(TransitionError::InvalidState { .. }))
        ),
        "{out:?}"
    );
    assert!(matches!(out[6], Err(StoreError::JobNotFound(id)) if id == ghost));
    for x in &for_a {
        assert_eq!(s.get_job(x.job_id).await.unwrap().status, JobStatus::Running);
    }
    assert_eq!(
        s.get_job(for_b[0].job_id).await.unwrap().status,
        JobStatus::Assigned,
        "the stale ack changed nothing"
    );
    // Results: success, failure with retries left, a duplicate, one from
    // the wrong worker.
    let rep = |w: &str, x: &Assignment, outcome| ResultReport {
        worker_id: w.into(),
        job_id: x.job_id,
        attempt: x.attempt,
        outcome,
        result: b"r".to_vec(),
        error: matches!(outcome, Outcome::Failed { .. }).then(|| "boom".into()),
    };
    let reports = vec![
        rep("a", &for_a[0], Outcome::Succeeded),
        rep("a", &for_a[1], Outcome::Failed { retryable: true }),
        rep("a", &for_a[0], Outcome::Succeeded),
        rep("b", &for_a[2], Outcome::Succeeded),
    ];
    let out = s.report_many(&reports).await;
    let (o0, queue) = out[0].as_ref().unwrap();
    assert_eq!(
        (o0.status, o0.duplicate, queue.as_str()),
        (JobStatus::Done, false, "default")
    );
    assert_eq!(
        out[1].as_ref().unwrap().0.status,
        JobStatus::Pending,
        "retry scheduled"
    );
    assert!(out[2].as_ref().unwrap().0.duplicate);
    assert!(
        matches!(
            out[3],
            Err(StoreError::Transition(TransitionError::NotOwner { .. }))
        ),
        "{:?}",
        out[3]
    );
    let done = s.get_job(for_a[0].job_id).await.unwrap();
    assert_eq!(done.result.as_deref(), Some(&b"r"[..]));
    assert_eq!(
        s.get_job(for_a[2].job_id).await.unwrap().status,
        JobStatus::Running
    );
    // Every written transition has its event, exactly once.
    let a = s.audit_events().await.unwrap();
    assert_eq!((a.missing, a.duplicated, a.orphans), (0, 0, 0));
    let events = s.job_events(for_a[0].job_id).await.unwrap();
    assert_eq!(events.iter().filter(|e| e.to == JobStatus::Done).count(), 1);
}

#[tokio::test]
async fn jq_110_a_call_decided_from_an_expected_state_is_written_only_if_the_row_is_in_it() {
    let (_db, s) = setup().await;
    worker(&s, "a", &["default"]).await;
    for _ in 0..2 {
        s.submit(job("default")).await.unwrap();
    }
    let got = s.claim("a", &q(&["default"]), 2).await.unwrap();
    let (x, y) = (&got[0], &got[1]);
    assert_eq!(
        (x.state.status, x.state.attempt, x.state.worker_id.as_deref()),
        (JobStatus::Assigned, x.attempt, Some("a")),
        "the claim hands out the state it left"
    );
    let expect = |state: &JobState| {
        Some(Expected {
            state: state.clone(),
            queue: "default".into(),
            backoff: x.backoff,
        })
    };
    let ack = |a: &Assignment, expected| WorkerCall::Ack {
        worker_id: "a".into(),
        job_id: a.job_id,
        attempt: a.attempt,
        expected,
    };
    // Right expectations: ack, then success, each from the state before.
    let out = s.worker_calls_many(&[ack(x, expect(&x.state))]).await;
    let Ok(CallOutcome::Acked { state: running }) = &out[0] else {
        panic!("{out:?}")
    };
    assert_eq!(running.status, JobStatus::Running);
    let report = ResultReport {
        worker_id: "a".into(),
        job_id: x.job_id,
        attempt: x.attempt,
        outcome: Outcome::Succeeded,
        result: b"r".to_vec(),
        error: None,
    };
    let out = s
        .worker_calls_many(&[WorkerCall::Report {
            report,
            expected: expect(running),
        }])
        .await;
    assert!(
        matches!(&out[0], Ok(CallOutcome::Reported { outcome, queue })
            if outcome.status == JobStatus::Done && !outcome.duplicate && queue == "default"),
        "{out:?}"
    );
    let done = s.get_job(x.job_id).await.unwrap();
    assert_eq!(
        (done.status, done.result.as_deref()),
        (JobStatus::Done, Some(&b"r"[..]))
    );
    // A wrong expectation in a column the decision copies (retries): the
    // guarded write refuses it and the call is decided from the row.
    let mut wrong = y.state.clone();
    wrong.retries = 2;
    let out = s.worker_calls_many(&[ack(y, expect(&wrong))]).await;
    assert!(
        matches!(&out[0], Ok(CallOutcome::Acked { state }) if state.retries == 0),
        "{out:?}"
    );
    let row = s.get_job(y.job_id).await.unwrap();
    assert_eq!((row.status, row.retries), (JobStatus::Running, 0));
    // A stale expectation (the claim's, after the ack): refused as the
    // row's state says, and nothing written twice.
    let out = s.worker_calls_many(&[ack(y, expect(&y.state))]).await;
    assert!(
        matches!(
            out[0],
            Err(StoreError::Transition(TransitionError::InvalidState { .. }))
        ),
        "{out:?}"
    );
    let events = s.job_events(y.job_id).await.unwrap();
    assert_eq!(events.iter().filter(|e| e.to == JobStatus::Running).count(), 1);
    let a = s.audit_events().await.unwrap();
    assert_eq!((a.missing, a.duplicated, a.orphans), (0, 0, 0));
}

#[tokio::test]
async fn jq_121_nfr_011_one_claim_deals_jobs_to_several_workers_within_their_room() {
    let (_db, s) = setup().await;
    for w in ["a", "b", "gone"] {
        worker(&s, w, &["default"]).await;
    }
    s.deregister_worker("gone").await.unwrap();
    for p in 0..10 {
        s.submit(NewJob {
            priority: (p % 10) as u8,
            ..job("default")
        })
        .await
        .unwrap();
    }
    let wants = vec![
        ("a".to_string(), 2),
        ("b".to_string(), 5),
        ("gone".to_string(), 3),
    ];
    let got = s.claim_for(&wants, &q(&["default"])).await.unwrap();
    assert_eq!(got.len(), 7, "a's 2 and b's 5; an offline worker gets none");
    let per = |w: &str| got.iter().filter(|(o, _)| o == w).count();
    assert_eq!((per("a"), per("b"), per("gone")), (2, 5, 0));
    // The best seven went out, and each is held by the worker it was dealt to.
    let prios: Vec<u8> = got.iter().map(|(_, a)| a.priority).collect();
    let mut sorted = prios.clone();
    sorted.sort_unstable_by(|x, y| y.cmp(x));
    assert_eq!(prios, sorted);
    assert_eq!(prios.last(), Some(&3));
    for (w, a) in &got {
        let j = s.get_job(a.job_id).await.unwrap();
        assert_eq!(
            (j.status, j.worker_id.as_deref()),
            (JobStatus::Assigned, Some(w.as_str()))
        );
    }
}

/// A pinned handle (the server's submit and worker-call lanes and its
/// dispatcher) does every operation on the one connection it keeps:
/// submit, claim, a read-less ack and a read-decide-write ack.
#[tokio::test]
async fn nfr_001_a_pinned_handle_serves_submit_claim_and_calls_on_one_connection() {
    let (_db, s) = setup().await;
    let p = s.pinned();
    assert!(p.is_pinned(), "a pool of 8 pins");
    let pid = p.backend_pid().await.unwrap();
    worker(&s, "a", &["default"]).await;
    p.submit_each(&[job("default"), job("default")]).await;
    let got = p
        .claim_for(&[("a".to_string(), 2)], &q(&["default"]))
        .await
        .unwrap();
    assert_eq!(got.len(), 2);
    let ack = |a: &Assignment, expected| WorkerCall::Ack {
        worker_id: "a".into(),
        job_id: a.job_id,
        attempt: a.attempt,
        expected,
    };
    let (x, y) = (&got[0].1, &got[1].1);
    let expected = Some(Expected::of(x));
    let out = p.worker_calls_many(&[ack(x, expected), ack(y, None)]).await;
    assert!(
        out.iter().all(|o| matches!(o, Ok(CallOutcome::Acked { .. }))),
        "{out:?}"
    );
    assert_eq!(
        p.backend_pid().await.unwrap(),
        pid,
        "every operation on the kept connection"
    );
    assert_ne!(
        s.backend_pid().await.unwrap(),
        pid,
        "the plain handle does not take it"
    );
}

/// NFR-005: the kept connection dies between operations (PostgreSQL
/// restarted, an operator ended the backend): the next submit is retried on
/// a fresh connection and lands; nothing is lost or doubled.
#[tokio::test]
async fn nfr_005_a_pinned_connection_that_dies_is_replaced_and_the_submit_lands() {
    let (_db, s) = setup().await;
    let p = s.pinned();
    let pid = p.backend_pid().await.unwrap();
    let ended: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .fetch_one(s.pool())
        .await
        .unwrap();
    assert!(ended);
    let out = p.submit_each(&[job("default")]).await;
    let id = out[0].as_ref().expect("the submit lands").job_id;
    assert_eq!(s.get_job(id).await.unwrap().status, JobStatus::Pending);
    let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs")
        .fetch_one(s.pool())
        .await
        .unwrap();
    assert_eq!(pending, 1);
    assert_ne!(p.backend_pid().await.unwrap(), pid, "a new connection is kept");
}

/// Small pools don't pin: three lanes keeping a connection each would
/// leave the reapers and reads of a two-connection pool nothing.
#[tokio::test]
async fn nfr_001_a_pool_smaller_than_eight_does_not_pin() {
    let db = TestDb::new().await;
    let small = Store::connect_lazy(
        &db.url,
        &StoreOptions {
            max_connections: jq_store::MIN_POOL_TO_PIN - 1,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(!small.pinned().is_pinned());
    let default = Store::connect_lazy(&db.url, &StoreOptions::default()).unwrap();
    assert!(default.pinned().is_pinned(), "the default pool (16) pins");
}

/// JQ-120: every submit wakes the dispatchers, and most wakes find the job
/// already taken. Such a claim reads and locks nothing, so it is a
/// read-only transaction (no WAL to flush at commit); one that finds a job
/// locks its worker's row FOR SHARE as before (against the heartbeat
/// reaper).
#[tokio::test]
async fn jq_120_a_claim_that_finds_no_job_locks_no_worker_row() {
    let (_db, s) = setup().await;
    worker(&s, "a", &["default"]).await;
    let locker = || async {
        sqlx::query_scalar::<_, String>("SELECT xmax::text FROM workers WHERE id = 'a'")
            .fetch_one(s.pool())
            .await
            .unwrap()
    };
    assert_eq!(locker().await, "0");
    let got = s
        .claim_for(&[("a".to_string(), 4)], &q(&["default"]))
        .await
        .unwrap();
    assert!(got.is_empty());
    assert_eq!(locker().await, "0", "the empty claim locked the worker row");
    s.submit(job("default")).await.unwrap();
    let got = s
        .claim_for(&[("a".to_string(), 4)], &q(&["default"]))
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_ne!(
        locker().await,
        "0",
        "a claim that takes a job locks its worker row"
    );
}

/// JQ-120: a submit's notification is known as its own by the store that
/// sent it (and its pinned handles), which woke its dispatcher directly,
/// and as news by every other store (another replica).
#[tokio::test]
async fn jq_120_a_stores_own_wake_is_told_apart_from_another_replicas() {
    let (db, s) = setup().await;
    let other = db.store();
    let mut l = s.listen_wake().await.unwrap();
    s.pinned().submit(job("default")).await.unwrap();
    let n = l.recv().await.unwrap();
    assert!(s.own_wake(&n) && s.pinned().own_wake(&n));
    assert!(!other.own_wake(&n));
    other.notify_wake().await.unwrap();
    let n = l.recv().await.unwrap();
    assert!(!s.own_wake(&n) && other.own_wake(&n));
}

/// NFR-014: closing the pool (graceful shutdown) gets back the connections
/// that pinned handles keep, though the handles live on (the server's
/// batch lanes end after the pool is closed). Without that the close waits
/// for them forever; the 30 s bound only turns a hang into a failure.
#[tokio::test]
async fn nfr_014_closing_the_store_takes_back_pinned_connections() {
    let (_db, s) = setup().await;
    let p = s.pinned();
    p.submit(job("default")).await.unwrap();
    assert!(p.backend_pid().await.is_ok());
    let closed = tokio::time::timeout(Duration::from_secs(30), s.close()).await;
    assert!(closed.is_ok(), "close waited for the pinned connection");
    assert!(
        p.submit(job("default")).await.is_err(),
        "a closed store takes no work"
    );
}

/// NFR-002 (measured, never asserted as a speed): the soak scenario's
/// statements read the right jobs — finished ones by their DONE time, a
/// window's submits with their start latency or as not yet started — and
/// the table sizes of every jq table.
#[tokio::test]
async fn nfr_002_the_soak_reads_each_minutes_jobs_and_the_table_sizes() {
    let (_db, s) = setup().await;
    worker(&s, "w", &["default"]).await;
    let t0 = s.bench_now().await.unwrap();
    for _ in 0..3 {
        s.submit(job("default")).await.unwrap();
    }
    let a = s.claim("w", &q(&["default"]), 1).await.unwrap().remove(0);
    s.ack("w", a.job_id, a.attempt).await.unwrap();
    s.report(&ResultReport {
        worker_id: "w".into(),
        job_id: a.job_id,
        attempt: a.attempt,
        outcome: Outcome::Succeeded,
        result: vec![],
        error: None,
    })
    .await
    .unwrap();
    let t1 = s.bench_now().await.unwrap();
    assert_eq!(s.bench_done_between("default", t0, t1).await.unwrap(), 1);
    assert_eq!(
        s.bench_done_between("default", t1, t1).await.unwrap(),
        0,
        "an empty window"
    );
    let (started, waiting) = s.bench_start_window("default", t0, t1).await.unwrap();
    assert_eq!((started.len(), waiting), (1, 2));
    assert!(started[0] >= 0.0);
    let sizes = s.bench_table_sizes().await.unwrap();
    let jobs = sizes.iter().find(|t| t.name == "jobs").expect("jobs is listed");
    assert!(jobs.bytes >= jobs.index_bytes && jobs.index_bytes > 0);
    assert!(sizes.iter().any(|t| t.name == "job_events"));
    assert!(sizes.iter().all(|t| !t.name.starts_with("_sqlx")));
}

/// NFR-012: the server warns when autovacuum is off; the store reads the
/// setting as PostgreSQL reports it.
#[tokio::test]
async fn nfr_012_the_store_reads_whether_autovacuum_runs() {
    let (db, s) = setup().await;
    let setting: String = sqlx::query_scalar("SHOW autovacuum")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(s.autovacuum_on().await.unwrap(), setting == "on");
}

/// The priorities of a queue's jobs in the order they were dispatched:
/// the claims' events, whose ids are drawn under the queue row's lock.
async fn dispatch_order(s: &Store, queue: &str) -> Vec<i16> {
    sqlx::query_scalar(
        "SELECT j.priority FROM job_events e JOIN jobs j ON j.id = e.job_id \
         WHERE e.reason = 'CLAIMED' AND e.queue = $1 ORDER BY e.id",
    )
    .bind(queue)
    .fetch_all(s.pool())
    .await
    .unwrap()
}

/// 10,000 priority-9 and 1,000 priority-0 jobs in `q`, claimed `size` at a
/// time by two replicas (a store each, one worker each) at once until none
/// is left; the priorities in dispatch order.
async fn claimed_by_two_replicas(db: &TestDb, queue: &str, size: u32) -> Vec<i16> {
    let a = db.store();
    let b = Store::connect_lazy(&db.url, &StoreOptions::default()).unwrap();
    let at = |p: u8| NewJob {
        priority: p,
        ..job(queue)
    };
    // The low band first, so FIFO alone would favour it.
    a.submit_many((0..1_000).map(|_| at(0)).collect()).await.unwrap();
    for _ in 0..5 {
        a.submit_many((0..2_000).map(|_| at(9)).collect()).await.unwrap();
    }
    let mut tasks = vec![];
    for (s, w) in [(a.clone(), "replica-a"), (b, "replica-b")] {
        worker(&s, w, &[queue]).await;
        let queues = q(&[queue]);
        tasks.push(tokio::spawn(async move {
            let mut n = 0;
            loop {
                let got = s.claim(w, &queues, size).await.unwrap();
                if got.is_empty() {
                    return n;
                }
                n += got.len();
            }
        }));
    }
    let mut n = 0;
    for t in tasks {
        n += t.await.unwrap();
    }
    assert_eq!(n, 11_000, "every job dispatched once");
    dispatch_order(&a, queue).await
}

/// FR-025: with `9:9,0:1`, while both bands have work, band 0 gets one
/// dispatch in ten — cluster-wide (two replicas continue one round-robin
/// through the queue row), at claim sizes 1 and 100, and spread out (every
/// hundred dispatches hold their ten).
#[tokio::test]
async fn fr_025_weighted_bands_share_dispatches_across_replicas_at_claim_sizes_1_and_100() {
    let db = TestDb::new().await;
    let s = db.store();
    for size in [100u32, 1] {
        let queue = format!("weighted-{size}");
        let w = PriorityWeights::parse("9:9,0:1").unwrap();
        let settings = QueueSettings {
            priority_weights: Some(w.clone()),
            ..Default::default()
        };
        let created = s.create_queue(&queue, &settings).await.unwrap();
        assert_eq!(created.settings.priority_weights, Some(w));
        let order = claimed_by_two_replicas(&db, &queue, size).await;
        let last_low = order.iter().rposition(|p| *p == 0).unwrap();
        let both = &order[..=last_low];
        let share = 1_000.0 / both.len() as f64;
        assert!(
            (0.08..=0.12).contains(&share),
            "size {size}: band 0 had {share:.3} of {}",
            both.len()
        );
        for (i, window) in both.chunks_exact(100).enumerate() {
            let low = window.iter().filter(|p| **p == 0).count();
            assert!(
                (8..=12).contains(&low),
                "size {size}: dispatches {}..: {low} of 100",
                i * 100
            );
        }
        // Within a band: priority first, then FIFO — the rest is band 9.
        assert!(order[last_low + 1..].iter().all(|p| *p == 9));
    }
}

/// FR-025: without weights a queue is strict: no priority-0 job is
/// dispatched while priority-9 jobs wait.
#[tokio::test]
async fn fr_025_without_weights_the_low_band_waits_for_the_high_one() {
    let db = TestDb::new().await;
    db.store()
        .create_queue("strict", &QueueSettings::default())
        .await
        .unwrap();
    let order = claimed_by_two_replicas(&db, "strict", 100).await;
    // Each claim is strict; two at once can overlap only at the band's
    // end: one replica's claim skips the last high jobs the other's holds
    // (SKIP LOCKED) and takes low ones, whose events may precede the
    // other's by id. So none before the last two claims of the high band,
    // at most one claim's worth among them (seen once: 100 in the first
    // 10,000).
    assert_eq!(order[..9_800].iter().filter(|p| **p == 0).count(), 0, "0 %");
    assert!(order[..10_000].iter().filter(|p| **p == 0).count() <= 100);
}

/// FR-025: a band without work gives its share away at once, and weights
/// sit beside caps (JQ-140: the concurrency limit still bounds the claim).
/// A change of weights starts the round-robin afresh.
#[tokio::test]
async fn fr_025_an_empty_band_gives_its_share_away_and_caps_still_hold() {
    let (_db, s) = setup().await;
    let settings = QueueSettings {
        priority_weights: Some(PriorityWeights::parse("9:1,5:1,0:1").unwrap()),
        concurrency_limit: Some(7),
        ..Default::default()
    };
    s.create_queue("mixed", &settings).await.unwrap();
    let at = |p: u8| NewJob {
        priority: p,
        ..job("mixed")
    };
    // Band 5-8 is empty; band 0-4 holds priorities 4 and 1.
    let mut jobs: Vec<NewJob> = (0..5).map(|_| at(9)).collect();
    jobs.extend((0..5).map(|_| at(1)));
    jobs.extend((0..5).map(|_| at(4)));
    s.submit_many(jobs).await.unwrap();
    worker(&s, "w", &["mixed"]).await;
    let got = s.claim("w", &q(&["mixed"]), 100).await.unwrap();
    let prios: Vec<u8> = got.iter().map(|a| a.priority).collect();
    // Seven (the cap), alternating between the two bands with work, and
    // within band 0-4 priority 4 before priority 1.
    assert_eq!(prios, [9, 4, 9, 4, 9, 4, 9], "{prios:?}");
    let credit: Option<Vec<i64>> =
        sqlx::query_scalar("SELECT priority_credit FROM queues WHERE name = 'mixed'")
            .fetch_one(s.pool())
            .await
            .unwrap();
    assert!(credit.is_some(), "the round-robin's state is stored");
    s.update_queue(
        "mixed",
        &QueuePatch {
            priority_weights: Some(Some(PriorityWeights::parse("9:2,0:1").unwrap())),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let credit: Option<Vec<i64>> =
        sqlx::query_scalar("SELECT priority_credit FROM queues WHERE name = 'mixed'")
            .fetch_one(s.pool())
            .await
            .unwrap();
    assert_eq!(credit, None, "new weights, new sequence");
    // Clearing the weights makes the queue strict again.
    let q2 = s
        .update_queue(
            "mixed",
            &QueuePatch {
                priority_weights: Some(None),
                concurrency_limit: Some(None),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(q2.settings.priority_weights, None);
    let rest: Vec<u8> = s
        .claim("w", &q(&["mixed"]), 100)
        .await
        .unwrap()
        .iter()
        .map(|a| a.priority)
        .collect();
    assert_eq!(rest, [9, 4, 4, 1, 1, 1, 1, 1]);
}

/// JQ-123: one claim for a worker with queue weights shares its jobs
/// between the queues by the round-robin, continued from claim to claim; a
/// queue held back by its cap (JQ-140) or without work gives its share to
/// the others.
#[tokio::test]
async fn jq_123_queue_weights_share_claims_and_caps_still_hold() {
    let (_db, s) = setup().await;
    for q in ["a", "b"] {
        s.create_queue(q, &QueueSettings::default()).await.unwrap();
        s.submit_many((0..20).map(|_| job(q)).collect()).await.unwrap();
    }
    worker(&s, "w", &["a", "b"]).await;
    let queues = q(&["a", "b"]);
    let of = |got: &[(String, jq_core::records::Assignment)]| -> String {
        got.iter()
            .map(|(_, a)| a.queue.as_str())
            .collect::<Vec<_>>()
            .join("")
    };
    let wants = |n: u32| vec![("w".to_string(), n)];
    let (got, rr) = s
        .claim_weighted(&wants(8), &queues, &[3, 1], &RoundRobin::default())
        .await
        .unwrap();
    assert_eq!(of(&got), "aabaaaba", "six to two, spread out");
    // One at a time, the sequence continues where the claim of 8 left it.
    let mut rr = rr;
    let mut one_by_one = String::new();
    for _ in 0..8 {
        let (got, next) = s.claim_weighted(&wants(1), &queues, &[3, 1], &rr).await.unwrap();
        one_by_one += &of(&got);
        rr = next;
    }
    assert_eq!(one_by_one, "aabaaaba");
    // `a` capped at what runs now plus two: two of `a`, the rest `b`.
    let running = 12;
    s.update_queue(
        "a",
        &QueuePatch {
            concurrency_limit: Some(Some(running + 2)),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let (got, rr) = s.claim_weighted(&wants(8), &queues, &[3, 1], &rr).await.unwrap();
    assert_eq!(of(&got).matches('a').count(), 2, "{}", of(&got));
    assert_eq!(got.len(), 8, "work-conserving: {}", of(&got));
    // `b` has 20 - 4 - 6 = 10 left and `a` none it may run: all `b`.
    let (got, _) = s.claim_weighted(&wants(8), &queues, &[3, 1], &rr).await.unwrap();
    assert_eq!(of(&got), "bbbbbbbb");
    // Registered weights are one per queue, 1-1000.
    for (weights, says) in [
        (vec![3], "1 weights for 2 queues"),
        (vec![3, 0], "queue b: weight 0 is not 1-1000"),
    ] {
        let reg = WorkerRegistration {
            id: "w2".into(),
            hostname: "h".into(),
            concurrency: 1,
            queues: queues.clone(),
            queue_weights: weights,
            version: "1".into(),
            ..Default::default()
        };
        let e = s.register_worker(&reg).await.unwrap_err();
        assert!(
            matches!(e, StoreError::Invalid(_)) && e.to_string().contains(says),
            "{e}"
        );
    }
    assert!(matches!(
        s.get_worker("w2").await,
        Err(StoreError::WorkerNotFound(_))
    ));
}
