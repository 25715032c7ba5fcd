//! The claim under a pinned horizon (NFR-012 whatever else runs on the
//! database; ADR 0021): a transaction held open keeps every dead entry of
//! the claim index, and the claim must not walk them; jobs made PENDING
//! below where the claim starts must still be found.

use std::time::Duration;

use jq_core::records::WorkerRegistration;
use jq_core::*;
use jq_store::{ResultReport, Store};
use jq_testkit::TestDb;
use uuid::Uuid;

const Q: &str = "default";

fn job() -> NewJob {
    NewJob {
        queue: Q.into(),
        payload: b"{}".to_vec(),
        priority: 0,
        max_retries: Some(3),
        ttl: None,
        schedule: Schedule::Now,
        idempotency_key: None,
    }
}

async fn worker(s: &Store, id: &str) {
    s.register_worker(&WorkerRegistration {
        id: id.into(),
        hostname: "h".into(),
        concurrency: 1000,
        queues: vec![Q.into()],
        version: "0".into(),
        ..Default::default()
    })
    .await
    .unwrap();
}

/// A database and a store with worker "w" registered.
async fn one_worker() -> (TestDb, Store) {
    let db = TestDb::new().await;
    let s = db.store();
    worker(&s, "w").await;
    (db, s)
}

fn queues() -> Vec<String> {
    vec![Q.to_string()]
}

/// Submit `n` jobs and run each through claim, ack and success.
async fn lifecycles(s: &Store, w: &str, n: usize) {
    for chunk in (0..n).collect::<Vec<_>>().chunks(200) {
        s.submit_many(chunk.iter().map(|_| job()).collect())
            .await
            .unwrap();
        let got = s.claim(w, &queues(), chunk.len() as u32).await.unwrap();
        assert_eq!(got.len(), chunk.len());
        let acks: Vec<_> = got.iter().map(|a| (w.to_string(), a.job_id, a.attempt)).collect();
        for r in s.ack_many(&acks).await {
            r.unwrap();
        }
        let reports: Vec<_> = got
            .iter()
            .map(|a| ResultReport {
                worker_id: w.into(),
                job_id: a.job_id,
                attempt: a.attempt,
                outcome: Outcome::Succeeded,
                result: vec![],
                error: None,
            })
            .collect();
        for r in s.report_many(&reports).await {
            r.unwrap();
        }
    }
}

/// Shared buffers the claim's plan touched (its top node's total).
async fn claim_buffers(s: &Store) -> u64 {
    buffers(&s.explain_analyze_claim(Q, 10).await.unwrap())
}

#[tokio::test]
async fn nfr_012_the_claim_reads_a_bounded_number_of_pages_whatever_the_dead_count() {
    let (db, s) = one_worker().await;
    // A write transaction left open on the same database, as a report or
    // a migration would be.
    let mut pin = db.pool().begin().await.unwrap();
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut *pin)
        .await
        .unwrap();
    lifecycles(&s, "w", 400).await;
    s.submit(job()).await.unwrap();
    let few = claim_buffers(&s).await;
    lifecycles(&s, "w", 12_000).await;
    s.submit(job()).await.unwrap();
    let many = claim_buffers(&s).await;
    // The same claim from the beginning of the index walks every dead
    // entry: the test's horizon is pinned indeed.
    s.forget_marks();
    let from_start = claim_buffers(&s).await;
    pin.rollback().await.unwrap();
    eprintln!("buffers: {few} after 400 lifecycles, {many} after 12,400, {from_start} from the start");
    assert!(
        from_start > 5 * many,
        "the pinned index holds the dead entries: {from_start} vs {many}"
    );
    assert!(
        many <= few + 8,
        "the claim reads as much after 12,400 lifecycles as after 400: {many} vs {few}"
    );
}

#[tokio::test]
async fn nfr_012_marks_advance_while_the_servers_own_announcements_flow() {
    // The server's LISTEN loop hears every submit's announcement, its own
    // included, while its claims run: the marks must still move up.
    let (db, s) = one_worker().await;
    let mut listener = s.listen_wake().await.unwrap();
    let hearing = s.clone();
    let heard = tokio::spawn(async move {
        let mut n = 0u64;
        while let Ok(Ok(note)) = tokio::time::timeout(Duration::from_secs(2), listener.recv()).await {
            hearing.heard_wake(&note);
            n += 1;
        }
        n
    });
    let mut pin = db.pool().begin().await.unwrap();
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut *pin)
        .await
        .unwrap();
    // Single submits, each announced, each claimed at once.
    for _ in 0..300 {
        s.submit(job()).await.unwrap();
        s.claim("w", &queues(), 1).await.unwrap();
    }
    s.submit(job()).await.unwrap();
    let few = claim_buffers(&s).await;
    for _ in 0..3_000 {
        s.submit(job()).await.unwrap();
        s.claim("w", &queues(), 1).await.unwrap();
    }
    s.submit(job()).await.unwrap();
    let many = claim_buffers(&s).await;
    pin.rollback().await.unwrap();
    let heard = heard.await.unwrap();
    eprintln!("buffers: {few} after 300, {many} after 3,300; {heard} notifications heard");
    assert!(heard >= 3_000, "the announcements were heard meanwhile: {heard}");
    assert!(many <= few + 8, "{many} vs {few}");
}

/// Two servers, `a` and `b`: `a`'s marks have passed `old`'s key (it took
/// a later job), then `b` makes `old` PENDING and due again in some way;
/// `a` must still claim it, first (FIFO).
struct Pair {
    db: TestDb,
    a: Store,
    b: Store,
}

async fn pair() -> Pair {
    let db = TestDb::new().await;
    let (a, b) = (db.store(), db.store());
    a.look_at_deferred_every(Duration::ZERO);
    b.look_at_deferred_every(Duration::ZERO);
    worker(&a, "wa").await;
    worker(&a, "wb").await;
    Pair { db, a, b }
}

impl Pair {
    /// `old` claimed by `wb` through `b`, then a later job taken by `a`,
    /// then one more left pending: `a`'s mark is past `old`.
    async fn old_in_flight(&self) -> (Uuid, u32) {
        let old = self.a.submit(job()).await.unwrap().job_id;
        let got = self.b.claim("wb", &queues(), 1).await.unwrap();
        assert_eq!(got[0].job_id, old);
        let later = self.a.submit(job()).await.unwrap().job_id;
        let got = self.a.claim("wa", &queues(), 1).await.unwrap();
        assert_eq!(got[0].job_id, later);
        self.a.submit(job()).await.unwrap();
        (old, got_attempt(&self.b, old).await)
    }

    /// `b`'s worker acks `old` and reports it failed.
    async fn b_runs_and_fails(&self, old: Uuid, attempt: u32, retryable: bool) {
        self.b.ack("wb", old, attempt).await.unwrap();
        self.b
            .report(&ResultReport {
                worker_id: "wb".into(),
                job_id: old,
                attempt,
                outcome: Outcome::Failed { retryable },
                result: vec![],
                error: Some("failed".into()),
            })
            .await
            .unwrap();
    }

    async fn a_claims_first(&self, want: Uuid, how: &str) {
        let got = self.a.claim("wa", &queues(), 1).await.unwrap();
        assert_eq!(
            got.first().map(|a| a.job_id),
            Some(want),
            "{how}: the job below the mark comes first"
        );
    }
}

async fn got_attempt(s: &Store, id: Uuid) -> u32 {
    s.get_job(id).await.unwrap().attempt
}

async fn due_now(s: &Store, id: Uuid) {
    // Time passes until the job is due; its key stays.
    sqlx::query("UPDATE jobs SET not_before = now() WHERE id = $1")
        .bind(id)
        .execute(s.pool())
        .await
        .unwrap();
}

#[tokio::test]
async fn nfr_012_a_retry_elsewhere_below_the_mark_is_found_when_due() {
    let p = pair().await;
    let (old, attempt) = p.old_in_flight().await;
    p.b_runs_and_fails(old, attempt, true).await;
    due_now(&p.b, old).await;
    p.a_claims_first(old, "retry").await;
}

#[tokio::test]
async fn nfr_012_a_rescued_or_redriven_job_below_the_mark_is_found() {
    let p = pair().await;
    let (old, attempt) = p.old_in_flight().await;
    // The assignment was never delivered: PENDING again at once.
    p.b.delivery_failed("wb", old, attempt).await.unwrap();
    p.a_claims_first(old, "rescue").await;

    let p = pair().await;
    let (old, attempt) = p.old_in_flight().await;
    p.b_runs_and_fails(old, attempt, false).await;
    p.b.retry(old).await.unwrap();
    p.a_claims_first(old, "redrive").await;
}

#[tokio::test]
async fn nfr_012_a_delayed_job_passed_over_is_found_when_due() {
    let p = pair().await;
    let delayed =
        p.b.submit(NewJob {
            schedule: Schedule::After(Duration::from_secs(3600)),
            ..job()
        })
        .await
        .unwrap()
        .job_id;
    let later = p.b.submit(job()).await.unwrap().job_id;
    let got = p.a.claim("wa", &queues(), 5).await.unwrap();
    assert_eq!(got.iter().map(|a| a.job_id).collect::<Vec<_>>(), vec![later]);
    p.a.submit(job()).await.unwrap();
    due_now(&p.a, delayed).await;
    p.a_claims_first(delayed, "delay").await;
}

#[tokio::test]
async fn nfr_012_a_submit_committing_after_a_later_one_was_claimed_is_announced() {
    let p = pair().await;
    let mut listener = p.a.listen_wake().await.unwrap();
    // `slow`'s transaction starts first (its created_at) but waits on an
    // uncommitted job with the same idempotency key.
    let mut holder = p.db.pool().begin().await.unwrap();
    sqlx::query(
        "INSERT INTO jobs (id, queue, priority, payload, max_retries, idempotency_key) \
         VALUES (gen_random_uuid(), $1, 0, '\\x7b7d', 0, 'k')",
    )
    .bind(Q)
    .execute(&mut *holder)
    .await
    .unwrap();
    let b = p.b.clone();
    let slow = tokio::spawn(async move {
        b.submit(NewJob {
            idempotency_key: Some("k".into()),
            ..job()
        })
        .await
    });
    // Wait until the slow submit is blocked on the holder's row.
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%INSERT INTO jobs%'",
        )
        .fetch_one(p.a.pool())
        .await
        .unwrap();
        if waiting > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let later = p.a.submit(job()).await.unwrap().job_id;
    let got = p.a.claim("wa", &queues(), 1).await.unwrap();
    assert_eq!(got[0].job_id, later);
    holder.rollback().await.unwrap();
    let slow = slow.await.unwrap().unwrap().job_id;
    let ks: Vec<(Uuid, chrono::DateTime<chrono::Utc>)> =
        sqlx::query_as("SELECT id, created_at FROM jobs WHERE id = ANY($1) ORDER BY created_at")
            .bind(vec![slow, later])
            .fetch_all(p.a.pool())
            .await
            .unwrap();
    assert_eq!(ks[0].0, slow, "the slow submit's key is the older one");
    // Take in every notification so far, the slow submit's last (it
    // committed last); a quiet listener ends the wait.
    while let Ok(n) = tokio::time::timeout(Duration::from_secs(1), listener.recv()).await {
        p.a.heard_wake(&n.unwrap());
    }
    p.a_claims_first(slow, "skewed submit").await;
}

#[tokio::test]
async fn nfr_012_the_look_at_deferred_jobs_reads_their_own_index() {
    let db = TestDb::new().await;
    let s = db.store();
    // A queue with a backlog of jobs to run at once, and a few delayed.
    for _ in 0..10 {
        s.submit_many((0..500).map(|_| job()).collect()).await.unwrap();
    }
    sqlx::query("ANALYZE jobs").execute(db.pool()).await.unwrap();
    let plan = s.explain_deferred().await.unwrap();
    assert!(plan.contains("jobs_deferred_phase"), "{plan}");
    // Jobs submitted to run at once have no entry there; a delayed one has.
    s.submit(job()).await.unwrap();
    s.submit(NewJob {
        schedule: Schedule::After(Duration::from_secs(60)),
        ..job()
    })
    .await
    .unwrap();
    let deferred: i64 =
        sqlx::query_scalar("SELECT count(*) FROM jobs WHERE phase = 0 AND not_before > created_at")
            .fetch_one(db.pool())
            .await
            .unwrap();
    assert_eq!(deferred, 1);
}

#[tokio::test]
async fn nfr_012_assignments_made_after_the_reapers_floor_still_time_out() {
    let (_db, s) = one_worker().await;
    // Assigned before the first pass, and still within its timeout.
    let early = s.submit(job()).await.unwrap().job_id;
    s.claim("w", &queues(), 1).await.unwrap();
    assert!(
        s.reap_assignment_timeouts(Duration::from_secs(3600))
            .await
            .unwrap()
            .is_empty()
    );
    // That pass saw every due assignment and moved its floor; one made
    // after it, and the early one, time out all the same.
    let late = s.submit(job()).await.unwrap().job_id;
    s.claim("w", &queues(), 1).await.unwrap();
    let mut reaped = s.reap_assignment_timeouts(Duration::ZERO).await.unwrap();
    reaped.sort();
    let mut want = vec![early, late];
    want.sort();
    assert_eq!(reaped, want);
}

#[tokio::test]
async fn nfr_012_rows_a_dead_claimer_held_below_the_mark_are_found_by_the_sweep() {
    let (db, s) = one_worker().await;
    let held = s.submit(job()).await.unwrap().job_id;
    let next = s.submit(job()).await.unwrap().job_id;
    let last = s.submit(job()).await.unwrap().job_id;
    // Another server's claim locks `held`, then its server dies: its
    // transaction ends without a commit and without an announcement.
    let mut dead = db.pool().begin().await.unwrap();
    sqlx::query("SELECT id FROM jobs WHERE id = $1 FOR UPDATE")
        .bind(held)
        .execute(&mut *dead)
        .await
        .unwrap();
    let got = s.claim("w", &queues(), 1).await.unwrap();
    assert_eq!(got[0].job_id, next, "the held row is skipped unseen");
    dead.rollback().await.unwrap();
    // The mark passed `held`: the claims go on without it...
    let got = s.claim("w", &queues(), 1).await.unwrap();
    assert_eq!(got[0].job_id, last);
    // ...until the sweep finds it below the mark.
    let lowered = s.sweep_marks().await.unwrap();
    assert_eq!(lowered, vec![(Q.to_string(), 0u8)]);
    let got = s.claim("w", &queues(), 1).await.unwrap();
    assert_eq!(got.first().map(|a| a.job_id), Some(held));
    // Nothing below the marks now: the sweep lowers nothing.
    assert_eq!(s.sweep_marks().await.unwrap(), vec![]);
}

/// Shared buffers a plan's top node touched.
fn buffers(plan: &str) -> u64 {
    let line = plan
        .lines()
        .find(|l| l.trim_start().starts_with("Buffers:"))
        .unwrap_or_else(|| panic!("no buffers in {plan}"));
    ["hit=", "read="]
        .iter()
        .filter_map(|k| line.split(k).nth(1))
        .map(|v| v.split_whitespace().next().unwrap().parse::<u64>().unwrap())
        .sum()
}

#[tokio::test]
async fn nfr_012_the_ttl_reaper_reads_a_bounded_number_of_pages_whatever_the_dead_count() {
    let (db, s) = one_worker().await;
    // As in `jq-bench pinned`: no job has a time to live, a few wait, and
    // the horizon is pinned (the planner then found the claim index the
    // cheapest way to the expiry test: it counts no dead entry).
    s.submit_many((0..8).map(|_| job()).collect()).await.unwrap();
    let mut pin = db.pool().begin().await.unwrap();
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut *pin)
        .await
        .unwrap();
    lifecycles(&s, "w", 400).await;
    sqlx::query("ANALYZE jobs").execute(db.pool()).await.unwrap();
    let few = buffers(&s.explain_analyze_reap_expired().await.unwrap());
    lifecycles(&s, "w", 12_000).await;
    sqlx::query("ANALYZE jobs").execute(db.pool()).await.unwrap();
    let plan = s.explain_analyze_reap_expired().await.unwrap();
    let many = buffers(&plan);
    pin.rollback().await.unwrap();
    eprintln!("buffers: {few} after 400 lifecycles, {many} after 12,400\n{plan}");
    assert!(many <= few + 8, "{many} vs {few}: {plan}");
    // The planner may prefer the claim index, which costs no dead entry
    // (it did in `jq-bench pinned`, at 0.35 s a pass): the query must not
    // allow it. Without the expiry index, nothing but the table is left.
    let mut tx = db.pool().begin().await.unwrap();
    sqlx::query("DROP INDEX jobs_expiry_due")
        .execute(&mut *tx)
        .await
        .unwrap();
    let lines: Vec<String> = sqlx::query_scalar(&jq_store::reaper::explain_reap_expired_sql(false))
        .fetch_all(&mut *tx)
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    let plan = lines.join("\n");
    assert!(!plan.contains("jobs_claim_phase"), "{plan}");
}

#[tokio::test]
async fn nfr_012_the_sweep_reads_only_what_came_since_the_last_one() {
    let (db, s) = one_worker().await;
    let first = s.submit(job()).await.unwrap().job_id;
    let _second = s.submit(job()).await.unwrap().job_id;
    let third = s.submit(job()).await.unwrap().job_id;
    let got = s.claim("w", &queues(), 1).await.unwrap();
    assert_eq!(got[0].job_id, first);
    // Nothing below the mark: the sweep leaves its floor at the mark.
    assert_eq!(s.sweep_marks().await.unwrap(), vec![]);
    // A row moved below that floor behind the store's back (nothing
    // announces it): the next sweep does not read that far down, which is
    // what keeps it from walking every dead entry of a long pin.
    sqlx::query("UPDATE jobs SET created_at = created_at - interval '1 hour' WHERE id = $1")
        .bind(third)
        .execute(db.pool())
        .await
        .unwrap();
    assert_eq!(s.sweep_marks().await.unwrap(), vec![]);
    // Forgetting the marks (what an operator's SQL calls for) finds it.
    s.forget_marks();
    let got = s.claim("w", &queues(), 1).await.unwrap();
    assert_eq!(got[0].job_id, third);
}
