//! The v5 layout of `jobs` (issue 21 item 3, ADR 0018): the indexes name
//! `phase`, not `status`, and an existing database gets there online.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use jq_core::JobStatus;
use jq_core::records::WorkerRegistration;
use jq_store::layout::{ADDED_INDEXES, PHASE_INDEXES, phase};
use jq_store::partitions::DEFAULT_WIDTH;
use jq_testkit::TestDb;
use uuid::Uuid;

/// Schema as the previous version left it (before `jobs.phase`).
async fn previous_database() -> TestDb {
    TestDb::before(20261204000000).await
}

/// A job in `status` as the previous version writes it (no `phase`).
async fn previous_job(pool: &sqlx::PgPool, status: &str) -> Uuid {
    let id = Uuid::new_v4();
    let held = matches!(status, "ASSIGNED" | "RUNNING");
    sqlx::query(
        "INSERT INTO jobs (id, queue, status, payload, max_retries, attempt, worker_id, completed_at) \
         VALUES ($1, 'default', $2::job_status, '\\x7b7d', 3, $3, $4, \
                 CASE WHEN $2 IN ('DONE', 'DEAD_LETTERED') THEN now() END)",
    )
    .bind(id)
    .bind(status)
    .bind(if held { 1 } else { 0 })
    .bind(held.then_some("w"))
    .execute(pool)
    .await
    .unwrap();
    id
}

/// One job's whole life as the previous version's statements write it.
async fn previous_lifecycle(pool: &sqlx::PgPool) -> Uuid {
    let id = previous_job(pool, "PENDING").await;
    for set in [
        "status = 'ASSIGNED', worker_id = 'w', attempt = 1, assigned_at = now()",
        "status = 'RUNNING', started_at = now()",
        "status = 'DONE', completed_at = now()",
    ] {
        sqlx::query(&format!(
            "UPDATE jobs SET {set}, updated_at = now() WHERE id = $1"
        ))
        .bind(id)
        .execute(pool)
        .await
        .expect("a write of the previous version failed");
    }
    id
}

async fn index_names(db: &TestDb) -> Vec<String> {
    sqlx::query_scalar("SELECT indexname::text FROM pg_indexes WHERE tablename = 'jobs' ORDER BY 1")
        .fetch_all(db.pool())
        .await
        .unwrap()
}

/// Rows whose phase is not their status's.
async fn out_of_step(db: &TestDb) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM jobs WHERE phase <> jobs_phase_of(status)")
        .fetch_one(db.pool())
        .await
        .unwrap()
}

#[tokio::test]
async fn jq_152_nfr_020_the_phase_layout_comes_online_while_a_previous_server_writes_on() {
    let db = previous_database().await;
    let statuses = [
        "PENDING",
        "ASSIGNED",
        "RUNNING",
        "FAILED",
        "DONE",
        "DEAD_LETTERED",
    ];
    let mut before: HashMap<&str, Vec<Uuid>> = HashMap::new();
    for s in statuses {
        for _ in 0..20 {
            before
                .entry(s)
                .or_default()
                .push(previous_job(db.pool(), s).await);
        }
    }
    // A server of the previous version goes on through the upgrade.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (pool, stop) = (db.pool().clone(), stop.clone());
        tokio::spawn(async move {
            let mut done = vec![];
            while !stop.load(Ordering::Relaxed) {
                done.push(previous_lifecycle(&pool).await);
            }
            done
        })
    };
    let s = db.store();
    s.migrate(DEFAULT_WIDTH).await.unwrap();
    // A build that was interrupted left an invalid index behind.
    let failed = sqlx::query("CREATE INDEX CONCURRENTLY jobs_failed_phase ON jobs ((1 / (phase - phase)))")
        .execute(db.pool())
        .await;
    assert!(failed.is_err(), "the broken build fails");
    let step = s.advance_layout().await.unwrap();
    assert_eq!(
        step.built.len(),
        PHASE_INDEXES.len() + ADDED_INDEXES.len(),
        "{step:?}"
    );
    assert!(step.built.contains(&"jobs_failed_phase".to_string()), "rebuilt");
    assert!(
        step.dropped.is_empty() && !step.complete,
        "a database with jobs keeps the old indexes for the grace: {step:?}"
    );
    let both = index_names(&db).await;
    for (new, _, old) in PHASE_INDEXES {
        assert!(
            both.contains(&new.to_string()) && both.contains(&old.to_string()),
            "{both:?}"
        );
    }
    let invalid: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_index WHERE indrelid = 'jobs'::regclass AND NOT indisvalid",
    )
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!(invalid, 0);
    stop.store(true, Ordering::Relaxed);
    let during = writer.await.unwrap();
    assert!(!during.is_empty());
    assert_eq!(
        out_of_step(&db).await,
        0,
        "every row's phase, old, new and written meanwhile"
    );

    // The grace is over: the old indexes go, and everything still works.
    sqlx::query("UPDATE jobs_layout SET status_indexes_until = now()")
        .execute(db.pool())
        .await
        .unwrap();
    let step = s.advance_layout().await.unwrap();
    assert!(step.complete && step.built.is_empty(), "{step:?}");
    assert_eq!(step.dropped.len(), PHASE_INDEXES.len());
    let after = index_names(&db).await;
    for (new, _, old) in PHASE_INDEXES {
        assert!(
            after.contains(&new.to_string()) && !after.contains(&old.to_string()),
            "{after:?}"
        );
    }
    let step = s.advance_layout().await.unwrap();
    assert_eq!(
        (step.built.len(), step.dropped.len(), step.complete),
        (0, 0, true),
        "idempotent"
    );

    // The previous version's rows, read by this one through the new indexes.
    let depth: HashMap<(String, JobStatus), u64> = s
        .depth_by_queue()
        .await
        .unwrap()
        .into_iter()
        .map(|(q, st, n)| ((q, st), n))
        .collect();
    for (st, n) in [
        (JobStatus::Pending, 20),
        (JobStatus::Assigned, 20),
        (JobStatus::Running, 20),
        (JobStatus::Failed, 20),
    ] {
        assert_eq!(depth.get(&("default".into(), st)), Some(&n), "{st:?}: {depth:?}");
    }
    s.register_worker(&WorkerRegistration {
        id: "w2".into(),
        hostname: "h".into(),
        concurrency: 100,
        queues: vec!["default".into()],
        version: "0".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let claimed: Vec<Uuid> = s
        .claim("w2", &["default".into()], 100)
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.job_id)
        .collect();
    let mut want = before["PENDING"].clone();
    want.sort();
    let mut got = claimed.clone();
    got.sort();
    assert_eq!(got, want, "the legacy pending jobs, and only they");
    let dead = s
        .retry_many("default", JobStatus::DeadLettered, 100)
        .await
        .unwrap();
    assert_eq!(dead.len(), 20, "the legacy dead letters are found for redrive");
    // And the previous version's writes keep their phase after the switch.
    previous_lifecycle(db.pool()).await;
    assert_eq!(out_of_step(&db).await, 0);
}

#[test]
fn jq_152_phases_match_the_database_function_and_the_index_predicates() {
    use JobStatus::*;
    assert_eq!(phase(Assigned), phase(Running), "the ack keeps the phase");
    let distinct: std::collections::HashSet<i16> = [Pending, Assigned, Failed, Done, DeadLettered]
        .iter()
        .map(|s| phase(*s))
        .collect();
    assert_eq!(distinct.len(), 5, "every other status apart");
    for (name, def, old) in PHASE_INDEXES {
        assert!(
            def.contains("WHERE phase = ") || def.contains("WHERE phase < "),
            "{name}"
        );
        assert!(!def.contains("status"), "{name} must not name status");
        assert!(name.starts_with(old), "{name} replaces {old}");
    }
}

#[tokio::test]
async fn jq_152_phase_of_every_status_is_the_same_in_rust_and_sql() {
    let db = TestDb::new().await;
    for s in [
        JobStatus::Pending,
        JobStatus::Assigned,
        JobStatus::Running,
        JobStatus::Failed,
        JobStatus::Done,
        JobStatus::DeadLettered,
    ] {
        let sql: i16 = sqlx::query_scalar("SELECT jobs_phase_of($1::job_status)")
            .bind(s.as_str())
            .fetch_one(db.pool())
            .await
            .unwrap();
        assert_eq!(sql, phase(s), "{s:?}");
    }
    // A new database has the final layout at once (no jobs to protect).
    let names = index_names(&db).await;
    for (new, _, old) in PHASE_INDEXES {
        assert!(
            names.contains(&new.to_string()) && !names.contains(&old.to_string()),
            "{names:?}"
        );
    }
}

#[tokio::test]
async fn jq_152_a_replica_that_finds_the_layout_step_taken_leaves_it() {
    let db = previous_database().await;
    previous_job(db.pool(), "PENDING").await;
    let s = db.store();
    s.migrate(DEFAULT_WIDTH).await.unwrap();
    let mut other = db.pool().acquire().await.unwrap();
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(0x6a71_6c61_796f_7574_i64)
        .execute(&mut *other)
        .await
        .unwrap();
    let step = s.advance_layout().await.unwrap();
    assert_eq!(
        step,
        Default::default(),
        "nothing done while another replica works"
    );
    sqlx::query("SELECT pg_advisory_unlock_all()")
        .execute(&mut *other)
        .await
        .unwrap();
    assert_eq!(
        s.advance_layout().await.unwrap().built.len(),
        PHASE_INDEXES.len() + ADDED_INDEXES.len()
    );
}
