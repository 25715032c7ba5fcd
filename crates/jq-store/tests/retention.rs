//! Retention (issue 21): finished jobs and their history are deleted once
//! their queue's retention has passed, and nothing else is. Time is moved
//! by shifting `completed_at` back, as the conformance suite moves it.

use std::time::Duration;

use jq_core::records::WorkerRegistration;
use jq_core::submit::Retention;
use jq_core::*;
use jq_store::partitions::{AHEAD, DEFAULT_WIDTH, Span};
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

/// What the relay publishes, window by window of `limit` (a window of
/// pruned history only is stepped over), once every event of `jobs` is
/// out. The horizon is cluster-wide: another test's open transaction
/// holds every window back until it ends, so this waits for that.
async fn publish_all(s: &Store, limit: u32, jobs: &[Uuid]) -> Vec<jq_core::records::OutboxEvent> {
    let mut want = 0;
    for id in jobs {
        want += s.job_events(*id).await.map_or(0, |e| e.len());
    }
    let mut out = Vec::new();
    for _ in 0..2000 {
        let w = s.job_events_window(limit).await.unwrap();
        if w.events.is_empty() && !w.held && w.next.is_none() {
            let mine = out
                .iter()
                .filter(|e: &&jq_core::records::OutboxEvent| jobs.iter().any(|j| e.key == j.to_string()));
            if mine.count() >= want {
                return out;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
            continue;
        }
        out.extend(w.events);
        s.job_events_published(w.next.as_ref().unwrap()).await.unwrap();
    }
    panic!("the windows never got to every event of {jobs:?}");
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
async fn jq_151_fr_011_done_jobs_past_the_retention_go_and_read_as_not_found() {
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
    assert!(
        matches!(s.job_events(old).await, Err(StoreError::JobNotFound(_))),
        "its history is no longer read (it leaves with its partition)"
    );
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
async fn jq_151_fr_035_dead_letters_are_kept_unless_their_queue_says_otherwise() {
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
    publish_all(&s, 1000, &[id]).await;
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
    assert!(s.outbox_backlog(Publishing::Kafka).await.unwrap() >= events(&db, id).await as u64);
    assert_eq!(
        s.outbox_backlog(Publishing::Off).await.unwrap(),
        0,
        "no relay runs: nothing waits to be published"
    );
    age(&db, id, WEEK + DAY).await;
    assert_eq!(s.prune_finished(SERVER, Publishing::Off).await.unwrap(), vec![id]);
    // Not moved to the outbox either, as deleting a job by hand does with
    // its unpublished events.
    let copies: i64 = sqlx::query_scalar("SELECT count(*) FROM event_outbox WHERE job_id = $1")
        .bind(id)
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(copies, 0, "pruned history is not copied anywhere");
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

// ---- JQ-152: history leaves by whole partitions (ADR 0017) ----

/// File `ids`' events as if written `ago` (in the partition of then).
async fn file_back(db: &TestDb, ids: &[Uuid], ago: Duration) {
    sqlx::query("UPDATE job_events SET bucket = now() - make_interval(secs => $2) WHERE job_id = ANY($1)")
        .bind(ids)
        .bind(ago.as_secs_f64())
        .execute(db.pool())
        .await
        .unwrap();
}

/// The partition each of `id`'s events is in.
async fn homes(db: &TestDb, id: Uuid) -> Vec<String> {
    sqlx::query_scalar("SELECT tableoid::regclass::text FROM job_events WHERE job_id = $1 ORDER BY id")
        .bind(id)
        .fetch_all(db.pool())
        .await
        .unwrap()
}

async fn db_now(db: &TestDb) -> chrono::DateTime<chrono::Utc> {
    sqlx::query_scalar("SELECT now()")
        .fetch_one(db.pool())
        .await
        .unwrap()
}

#[tokio::test]
async fn jq_152_partitions_are_made_ahead_once_whoever_asks() {
    let db = TestDb::new().await;
    let s = db.store();
    let parts = s.event_partitions().await.unwrap();
    let names: Vec<&str> = parts.iter().map(|p| p.name.as_str()).collect();
    assert!(
        names.contains(&"job_events_v4") && names.contains(&"job_events_kept"),
        "{names:?}"
    );
    let now = db_now(&db).await;
    let dated: Vec<_> = parts
        .iter()
        .filter_map(|p| match p.span {
            Span::Dated { from, to } => Some((from, to)),
            _ => None,
        })
        .collect();
    assert!(dated.iter().any(|(f, t)| *f <= now && now < *t), "now is covered");
    let horizon = now + chrono::Duration::days(i64::from(AHEAD));
    assert!(
        dated.iter().any(|(f, t)| *f <= horizon && horizon < *t),
        "and {AHEAD} days ahead"
    );
    assert!(
        s.ensure_event_partitions(DEFAULT_WIDTH).await.unwrap().is_empty(),
        "once"
    );

    // Two replicas at once, with minute-wide partitions: no error, no
    // partition twice (one waits for nothing: the other holds the lock).
    let other = db.store();
    let (a, b) = tokio::join!(
        s.ensure_event_partitions_at(Duration::from_secs(60), now - chrono::Duration::days(10)),
        other.ensure_event_partitions_at(Duration::from_secs(60), now - chrono::Duration::days(10)),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.len() + b.len(), AHEAD as usize + 1);
    let again = s
        .ensure_event_partitions_at(Duration::from_secs(60), now - chrono::Duration::days(10))
        .await
        .unwrap();
    assert!(again.is_empty());
    // Every job write still lands somewhere.
    s.submit(job("default", None)).await.unwrap();
}

#[tokio::test]
async fn jq_152_an_expired_partition_is_dropped_and_what_must_stay_is_refiled() {
    let db = TestDb::new().await;
    let s = db.store();
    let now = db_now(&db).await;
    s.ensure_event_partitions_at(DEFAULT_WIDTH, now - chrono::Duration::days(30))
        .await
        .unwrap();
    let pruned = finished(&s, "default", None, Outcome::Succeeded).await;
    let retained = finished(&s, "default", None, Outcome::Succeeded).await;
    let kept = finished(&s, "default", None, FAILED).await;
    let live = s
        .submit(NewJob {
            schedule: Schedule::At(now + chrono::Duration::days(60)),
            ..job("default", None)
        })
        .await
        .unwrap()
        .job_id;
    let all = [pruned, retained, kept, live];
    let before: Vec<usize> = {
        let mut v = Vec::new();
        for id in all {
            v.push(s.job_events(id).await.unwrap().len());
        }
        v
    };
    file_back(&db, &all, 30 * DAY).await;
    let old = homes(&db, pruned).await[0].clone();
    assert!(
        homes(&db, live).await.iter().all(|h| *h == old),
        "all in the old partition"
    );
    age(&db, pruned, WEEK + DAY).await;
    assert_eq!(
        s.prune_finished(SERVER, Publishing::Off).await.unwrap(),
        vec![pruned]
    );
    assert!(events(&db, pruned).await > 0, "history waits for its partition");

    let expired = s.expire_event_partitions(SERVER).await.unwrap();
    let gone: Vec<&str> = expired.iter().map(|e| e.name.as_str()).collect();
    assert!(gone.contains(&old.as_str()), "{gone:?}");
    let refiled: u64 = expired.iter().map(|e| e.refiled).sum();
    assert_eq!(
        refiled as usize,
        before[1] + before[2] + before[3],
        "three jobs' rows moved"
    );
    let parts = s.event_partitions().await.unwrap();
    assert!(!parts.iter().any(|p| p.name == old));
    assert!(
        parts.iter().any(|p| p.name == "job_events_kept"),
        "the kept partition is never dropped"
    );
    assert!(
        !parts
            .iter()
            .any(|p| matches!(p.span, Span::Dated { to, .. } if to + chrono::Duration::days(8) < now)),
        "nothing older than retention and one width is left: {parts:?}"
    );

    assert_eq!(
        events(&db, pruned).await,
        0,
        "a pruned job's history went with its partition"
    );
    for (i, id) in all.iter().enumerate().skip(1) {
        assert_eq!(
            s.job_events(*id).await.unwrap().len(),
            before[i],
            "{id}: nothing lost"
        );
    }
    assert!(
        homes(&db, kept).await.iter().all(|h| h == "job_events_kept"),
        "a kept dead letter's history"
    );
    for id in [retained, live] {
        assert!(
            homes(&db, id)
                .await
                .iter()
                .all(|h| h != "job_events_kept" && h.starts_with("job_events_2")),
            "re-filed into today's partition"
        );
    }
    assert!(
        s.expire_event_partitions(SERVER).await.unwrap().is_empty(),
        "once"
    );

    // A kept row leaves with its job, when its queue stops keeping it.
    s.update_queue(
        "default",
        &QueuePatch {
            retain_dead: Some(Retention::For(DAY)),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    age(&db, kept, 2 * DAY).await;
    assert_eq!(
        s.prune_finished(SERVER, Publishing::Off).await.unwrap(),
        vec![kept]
    );
    assert_eq!(events(&db, kept).await, 0);
}

#[tokio::test]
async fn jq_152_jq_160_unpublished_history_outlives_its_partition_and_is_published_in_order() {
    let db = TestDb::new().await;
    let s = db.store();
    let now = db_now(&db).await;
    s.ensure_event_partitions_at(DEFAULT_WIDTH, now - chrono::Duration::days(30))
        .await
        .unwrap();
    let id = finished(&s, "default", None, Outcome::Succeeded).await;
    let written: Vec<_> = s
        .job_events(id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event_id)
        .collect();
    file_back(&db, &[id], 30 * DAY).await;
    age(&db, id, WEEK + DAY).await;
    assert!(
        s.prune_finished(SERVER, Publishing::Kafka)
            .await
            .unwrap()
            .is_empty(),
        "unpublished: kept"
    );
    let expired = s.expire_event_partitions(SERVER).await.unwrap();
    assert!(
        expired.iter().any(|e| e.refiled as usize == written.len()),
        "{expired:?}"
    );

    let published: Vec<Uuid> = publish_all(&s, 1000, &[id])
        .await
        .into_iter()
        .filter(|e| e.key == id.to_string())
        .map(|e| e.event_id)
        .collect();
    assert_eq!(
        published, written,
        "each once, in order, from their new partition"
    );
    assert_eq!(
        s.prune_finished(SERVER, Publishing::Kafka).await.unwrap(),
        vec![id]
    );
}

#[tokio::test]
async fn jq_152_jq_160_a_job_pruned_while_kafka_was_off_is_never_published() {
    let db = TestDb::new().await;
    let s = db.store();
    let gone = finished(&s, "default", None, Outcome::Succeeded).await;
    age(&db, gone, WEEK + DAY).await;
    assert_eq!(
        s.prune_finished(SERVER, Publishing::Off).await.unwrap(),
        vec![gone]
    );
    let stays = finished(&s, "default", None, Outcome::Succeeded).await;
    // Kafka comes on later: the relay steps over the pruned job's history.
    let keys: Vec<String> = publish_all(&s, 2, &[stays])
        .await
        .into_iter()
        .map(|e| e.key)
        .collect();
    assert!(
        !keys.contains(&gone.to_string()),
        "pruned history is not published"
    );
    assert!(keys.contains(&stays.to_string()), "the rest is");
    let workers: i64 = sqlx::query_scalar("SELECT count(*) FROM event_outbox WHERE sent_at IS NULL")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(
        s.outbox_backlog(Publishing::Kafka).await.unwrap(),
        workers as u64,
        "no job event is backlog: only the worker's own events in the outbox"
    );
}

/// Schema v4 (and v5's retention), as a server of the previous version
/// left it.
async fn v4_database() -> TestDb {
    TestDb::before(20261203000000).await
}

/// A v4 server's write of one job and its first event.
const V4_SUBMIT: &str = "WITH j AS (INSERT INTO jobs (id, queue, payload, max_retries) \
     VALUES ($1, 'default', '\\x7b7d', 3) RETURNING id) \
     INSERT INTO job_events (event_id, job_id, queue, from_status, to_status, reason, attempt) \
     SELECT gen_random_uuid(), id, 'default', NULL, 'PENDING', 'submitted', 0 FROM j";

#[tokio::test]
async fn jq_152_nfr_020_v4_history_becomes_a_partition_and_a_v4_server_writes_on() {
    let db = v4_database().await;
    let old: Vec<Uuid> = (0..50).map(|_| Uuid::new_v4()).collect();
    for id in &old {
        sqlx::query(V4_SUBMIT).bind(id).execute(db.pool()).await.unwrap();
    }
    // A v4 server keeps writing, with its prepared statements, while the
    // upgrade runs; it must lose nothing.
    let writer = {
        let pool = db.pool().clone();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let mut ok = Vec::new();
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                let id = Uuid::new_v4();
                sqlx::query(V4_SUBMIT)
                    .bind(id)
                    .execute(&pool)
                    .await
                    .expect("a v4 write failed");
                ok.push(id);
            }
            ok
        });
        (stop, task)
    };
    let s = db.store();
    // As a server configured with hourly partitions migrates.
    let hour = Duration::from_secs(3600);
    s.migrate(hour).await.unwrap();
    let made: Vec<_> = s
        .event_partitions()
        .await
        .unwrap()
        .into_iter()
        .filter_map(|p| match p.span {
            Span::Dated { from, to } => Some((from, to)),
            _ => None,
        })
        .collect();
    assert_eq!(made.len(), 2, "the migration's own: now and the next");
    assert!(
        made.iter().all(|(f, t)| *t - *f == chrono::Duration::hours(1)),
        "{made:?}"
    );
    s.ensure_event_partitions(hour).await.unwrap();
    let submitted = s.submit(job("default", None)).await.unwrap().job_id;
    writer.0.store(true, std::sync::atomic::Ordering::Relaxed);
    let during = writer.1.await.unwrap();
    assert!(!during.is_empty());

    for id in old.iter().chain(&during).chain([&submitted]) {
        let ev = s.job_events(*id).await.unwrap();
        assert_eq!(ev.len(), 1, "{id}: its one event");
    }
    assert!(
        homes(&db, old[0]).await.iter().all(|h| h == "job_events_v4"),
        "v4 rows stay put"
    );
    assert!(
        homes(&db, submitted)
            .await
            .iter()
            .all(|h| h.starts_with("job_events_2")),
        "new rows in a dated partition"
    );
    let (n, distinct): (i64, i64) = sqlx::query_as("SELECT count(*), count(DISTINCT id) FROM job_events")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(n, distinct, "ids stay unique across the switch");
    assert_eq!(n as usize, old.len() + during.len() + 1);
    let first_new: i64 = sqlx::query_scalar("SELECT min(id) FROM job_events WHERE bucket > '1970-01-01'")
        .fetch_one(db.pool())
        .await
        .unwrap();
    let last_old: i64 = sqlx::query_scalar("SELECT max(id) FROM job_events_v4")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert!(first_new > last_old, "ids keep rising: per-job order is id order");
    let edit = sqlx::query("UPDATE job_events SET reason = 'x' WHERE job_id = $1")
        .bind(old[0])
        .execute(db.pool())
        .await;
    assert!(edit.is_err(), "events stay immutable");
    assert_eq!(s.audit_events().await.unwrap().missing, 0);
}
