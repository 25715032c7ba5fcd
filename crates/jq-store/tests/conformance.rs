//! Level 2 of the test pyramid: the reference model's operation sequences
//! run against `jq-store` on real PostgreSQL. After every step the answer
//! and the whole database (jobs, workers, events, outbox) must equal the
//! model.
//!
//! Model time is in minutes; "advance the clock" shifts every stored
//! timestamp back by that many minutes, so production SQL keeps using
//! `now()` untouched. A case runs in well under a minute of real time, so
//! real time passing never crosses a boundary the model predicts.

use std::sync::OnceLock;
use std::time::Duration;

use jq_core::records::WorkerRegistration;
use jq_core::testing::{Expect, Model, ModelMachine, Op, Refusal};
use jq_core::*;
use jq_store::{CancelOutcome, ResultReport, Store, StoreError};
use jq_testkit::TestDb;
use proptest::prelude::*;
use proptest_state_machine::{StateMachineTest, prop_state_machine};
use uuid::Uuid;

const QUEUE: &str = "model";
const MIN: u64 = 60;

struct Shared {
    rt: tokio::runtime::Runtime,
    db: TestDb,
}

/// One database for the whole property run, reset per case.
fn shared() -> &'static Shared {
    static S: OnceLock<Shared> = OnceLock::new();
    S.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let db = rt.block_on(TestDb::new());
        Shared { rt, db }
    })
}

struct Sut {
    store: Store,
    ids: Vec<Uuid>,
    cfg: jq_core::testing::ModelConfig,
}

fn wid(w: usize) -> String {
    format!("w{w}")
}

fn refusal(e: StoreError) -> Expect {
    match e {
        StoreError::Transition(TransitionError::StaleAttempt { .. }) => Expect::Refused(Refusal::Stale),
        StoreError::Transition(TransitionError::NotOwner { .. }) => Expect::Refused(Refusal::NotOwner),
        StoreError::Transition(TransitionError::InvalidState { .. }) => {
            Expect::Refused(Refusal::InvalidState)
        }
        StoreError::Transition(TransitionError::ConflictingReport { .. }) => {
            Expect::Refused(Refusal::Conflict)
        }
        StoreError::WorkerOffline(_) => Expect::Refused(Refusal::InvalidState),
        other => panic!("unexpected store error: {other}"),
    }
}

impl Sut {
    fn block<T>(&self, f: impl Future<Output = T>) -> T {
        shared().rt.block_on(f)
    }

    fn pick(&self, job: usize) -> Option<(usize, Uuid)> {
        (!self.ids.is_empty()).then(|| {
            let i = job % self.ids.len();
            (i, self.ids[i])
        })
    }

    /// The credentials an operation presents, read from the database.
    fn creds(&self, id: Uuid, stale: bool) -> (String, u32) {
        let j = self.block(self.store.get_job(id)).unwrap();
        let attempt = jq_core::testing::presented_attempt(j.attempt, stale);
        (j.worker_id.unwrap_or_else(|| wid(0)), attempt)
    }

    fn indices(&self, ids: Vec<Uuid>) -> Vec<usize> {
        let mut v: Vec<usize> = ids
            .iter()
            .map(|id| self.ids.iter().position(|x| x == id).unwrap())
            .collect();
        v.sort();
        v
    }

    fn report(&self, job: usize, stale: bool, outcome: Outcome) -> Expect {
        let Some((_, id)) = self.pick(job) else {
            return Expect::NoJob;
        };
        let (worker_id, attempt) = self.creds(id, stale);
        let r = ResultReport {
            worker_id,
            job_id: id,
            attempt,
            outcome,
            result: b"{}".to_vec(),
            error: matches!(outcome, Outcome::Failed { .. }).then(|| "boom".to_string()),
        };
        match self.block(self.store.report(&r)) {
            Ok(o) if o.duplicate => Expect::Duplicate,
            Ok(_) => Expect::Ok,
            Err(e) => refusal(e),
        }
    }

    fn apply(&mut self, op: &Op) -> Expect {
        let s = self.store.clone();
        match *op {
            Op::Submit {
                priority,
                max_retries,
                delay,
                ttl,
            } => {
                let job = NewJob {
                    queue: QUEUE.into(),
                    payload: format!("{{\"n\":{}}}", self.ids.len()).into_bytes(),
                    priority,
                    max_retries: Some(max_retries),
                    ttl: ttl.map(|t| Duration::from_secs(t * MIN)),
                    schedule: if delay == 0 {
                        Schedule::Now
                    } else {
                        Schedule::After(Duration::from_secs(delay * MIN))
                    },
                    idempotency_key: None,
                };
                let sub = self.block(s.submit(job)).unwrap();
                assert!(!sub.already_existed);
                self.ids.push(sub.job_id);
                Expect::Ok
            }
            Op::Claim { worker, limit } => {
                let got = self
                    .block(s.claim(
                        &wid(worker % self.cfg.workers),
                        &[QUEUE.to_string()],
                        limit as u32,
                    ))
                    .unwrap();
                // Dispatch order is part of the contract: keep it.
                Expect::Claimed(
                    got.iter()
                        .map(|a| self.ids.iter().position(|x| *x == a.job_id).unwrap())
                        .collect(),
                )
            }
            Op::Ack { job, stale } => {
                let Some((_, id)) = self.pick(job) else {
                    return Expect::NoJob;
                };
                let (w, a) = self.creds(id, stale);
                match self.block(s.ack(&w, id, a)) {
                    Ok(()) => Expect::Ok,
                    Err(e) => refusal(e),
                }
            }
            Op::Complete { job, stale } => self.report(job, stale, Outcome::Succeeded),
            Op::Fail {
                job,
                stale,
                retryable,
            } => self.report(job, stale, Outcome::Failed { retryable }),
            Op::ReportCancelled { job } => self.report(job, false, Outcome::Cancelled),
            Op::DeliveryFailed { job } => {
                let Some((_, id)) = self.pick(job) else {
                    return Expect::NoJob;
                };
                let (w, a) = self.creds(id, false);
                match self.block(s.delivery_failed(&w, id, a)) {
                    Ok(()) => Expect::Ok,
                    Err(e) => refusal(e),
                }
            }
            Op::Cancel { job } => {
                let Some((_, id)) = self.pick(job) else {
                    return Expect::NoJob;
                };
                match self.block(s.cancel(id)) {
                    Ok(CancelOutcome::Cancelled { .. }) => Expect::Ok,
                    Ok(CancelOutcome::KillRequested { .. }) => Expect::CancelRequested,
                    Err(e) => refusal(e),
                }
            }
            Op::Retry { job } => {
                let Some((_, id)) = self.pick(job) else {
                    return Expect::NoJob;
                };
                match self.block(s.retry(id)) {
                    Ok(()) => Expect::Ok,
                    Err(e) => refusal(e),
                }
            }
            Op::Register { worker } => {
                self.block(s.register_worker(&registration(worker % self.cfg.workers)))
                    .unwrap();
                Expect::Ok
            }
            Op::Heartbeat { worker } => {
                let hb = self
                    .block(s.heartbeat(&wid(worker % self.cfg.workers), &[]))
                    .unwrap();
                Expect::Heartbeat {
                    registered: hb.registered,
                }
            }
            Op::Drain { worker } => match self.block(s.drain_worker(&wid(worker % self.cfg.workers))) {
                Ok(_) => Expect::Ok,
                Err(e) => refusal(e),
            },
            Op::Advance { minutes } => {
                self.block(shift_clock(s.pool(), minutes * MIN));
                // Keys moved behind the store's back (ADR 0021).
                s.forget_marks();
                Expect::Ok
            }
            Op::ReapAssignments => {
                let ids = self
                    .block(s.reap_assignment_timeouts(Duration::from_secs(self.cfg.assignment_timeout * MIN)))
                    .unwrap();
                Expect::Reaped(self.indices(ids))
            }
            Op::ReapWorkers => {
                let r = self
                    .block(s.reap_dead_workers(Duration::from_secs(self.cfg.heartbeat_timeout * MIN)))
                    .unwrap();
                Expect::Reaped(self.indices(r.jobs))
            }
            Op::ReapTtl => {
                let ids = self.block(s.reap_expired()).unwrap();
                Expect::Reaped(self.indices(ids))
            }
        }
    }
}

fn registration(w: usize) -> WorkerRegistration {
    WorkerRegistration {
        id: wid(w),
        hostname: "model-host".into(),
        concurrency: 4,
        queues: vec![QUEUE.into()],
        version: "test".into(),
        ..Default::default()
    }
}

/// Move the clock forward by moving every stored time back.
async fn shift_clock(pool: &sqlx::PgPool, secs: u64) {
    let i = format!("{secs} seconds");
    sqlx::query(
        "UPDATE jobs SET created_at = created_at - $1::interval, not_before = not_before - $1::interval, \
         expires_at = expires_at - $1::interval, assigned_at = assigned_at - $1::interval, \
         started_at = started_at - $1::interval, completed_at = completed_at - $1::interval, \
         updated_at = updated_at - $1::interval",
    )
    .bind(&i)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "UPDATE workers SET registered_at = registered_at - $1::interval, \
         last_heartbeat_at = last_heartbeat_at - $1::interval",
    )
    .bind(&i)
    .execute(pool)
    .await
    .unwrap();
}

#[derive(sqlx::FromRow, Debug)]
struct DbJob {
    id: Uuid,
    status: String,
    attempt: i32,
    retries: i32,
    worker_id: Option<String>,
    cancel_requested: bool,
    since_not_before: f64,
    since_expiry: Option<f64>,
    events: i64,
    outbox: i64,
    last_report_attempt: Option<i32>,
    last_report_kind: Option<String>,
}

struct StoreConformance;

impl StateMachineTest for StoreConformance {
    type SystemUnderTest = Sut;
    type Reference = ModelMachine;

    fn init_test(model: &Model) -> Sut {
        let sh = shared();
        let store = sh.db.store();
        sh.rt.block_on(async {
            sqlx::query("TRUNCATE jobs, job_events, event_outbox, workers")
                .execute(store.pool())
                .await
                .unwrap();
            sqlx::query("DELETE FROM queues WHERE name = $1")
                .bind(QUEUE)
                .execute(store.pool())
                .await
                .unwrap();
            let settings = QueueSettings {
                backoff: BackoffPolicy {
                    base: Duration::from_secs(model.cfg.backoff_base * MIN),
                    max: Duration::from_secs(model.cfg.backoff_max * MIN),
                },
                ..Default::default()
            };
            store.create_queue(QUEUE, &settings).await.unwrap();
            for w in 0..model.cfg.workers {
                store.register_worker(&registration(w)).await.unwrap();
            }
        });
        Sut {
            store,
            ids: vec![],
            cfg: model.cfg,
        }
    }

    fn apply(mut sut: Sut, model: &Model, op: Op) -> Sut {
        let got = sut.apply(&op);
        assert_eq!(got, model.last, "answer to {op:?}");
        sut
    }

    fn check_invariants(sut: &Sut, model: &Model) {
        let rows: Vec<DbJob> = sut
            .block(
                sqlx::query_as(
                    "SELECT id, status::text AS status, attempt, retries, worker_id, cancel_requested, \
                 floor(extract(epoch FROM now() - not_before) / 60)::float8 AS since_not_before, \
                 floor(extract(epoch FROM now() - expires_at) / 60)::float8 AS since_expiry, \
                 (SELECT count(*) FROM job_events e WHERE e.job_id = j.id) AS events, \
                 (SELECT count(*) FROM job_events e WHERE e.job_id = j.id AND e.txid IS NOT NULL) AS outbox, \
                 last_report_attempt, last_report_kind FROM jobs j",
                )
                .fetch_all(sut.store.pool()),
            )
            .unwrap();
        assert_eq!(rows.len(), model.jobs.len());
        for r in rows {
            let i = sut.ids.iter().position(|x| *x == r.id).unwrap();
            let m = &model.jobs[i];
            let ctx = format!("job {i} at minute {}: db {r:?} vs model {m:?}", model.now);
            assert_eq!(r.status, m.status.as_str(), "{ctx}");
            assert_eq!(r.attempt as u32, m.attempt, "{ctx}");
            assert_eq!(r.retries as u32, m.retries, "{ctx}");
            assert_eq!(r.worker_id, m.worker.map(wid), "{ctx}");
            assert_eq!(r.cancel_requested, m.cancel_requested, "{ctx}");
            assert_eq!(
                r.events,
                i64::from(m.events),
                "{ctx}: one job_events row per transition"
            );
            assert_eq!(r.outbox, r.events, "{ctx}: one outbox event per transition");
            assert_eq!(
                r.last_report_attempt.map(|a| a as u32),
                m.last_report.map(|l| l.0),
                "{ctx}"
            );
            assert_eq!(
                r.last_report_kind.as_deref(),
                m.last_report.map(|l| l.1.as_str()),
                "{ctx}"
            );
            if m.status == JobStatus::Pending {
                assert_eq!(
                    r.since_not_before as i64,
                    model.now as i64 - m.not_before as i64,
                    "{ctx}"
                );
            }
            assert_eq!(
                r.since_expiry.map(|v| v as i64),
                m.expires_at.map(|e| model.now as i64 - e as i64),
                "{ctx}"
            );
        }
        let workers: Vec<(String, String, f64)> = sut.block(
            sqlx::query_as(
                "SELECT id, status::text, floor(extract(epoch FROM now() - last_heartbeat_at) / 60)::float8 \
                 FROM workers ORDER BY id",
            )
            .fetch_all(sut.store.pool()),
        )
        .unwrap();
        assert_eq!(workers.len(), model.workers.len());
        for (w, (id, status, since)) in workers.into_iter().enumerate() {
            let m = &model.workers[w];
            assert_eq!(id, wid(w));
            assert_eq!(status, m.status.as_str(), "worker {w}");
            assert_eq!(since as u64, model.now - m.last_heartbeat, "worker {w}");
        }
    }
}

prop_state_machine! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        max_shrink_iters: 2048,
        failure_persistence: None,
        .. ProptestConfig::default()
    })]

    #[test]
    fn fr_010_fr_011_jq_110_store_matches_reference_model(sequential 1..40 => StoreConformance);
}
