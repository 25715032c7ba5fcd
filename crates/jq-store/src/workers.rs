//! Workers (SPEC §5): register, heartbeat with leases, drain, shutdown,
//! deregister, list. Each change also queues a `worker.heartbeat` event.

use std::collections::HashSet;
use std::time::Duration;

use jq_core::events::TOPIC_WORKER_HEARTBEAT;
use jq_core::input::{stored_int4, validate_hostname, validate_version};
use jq_core::records::{Lease, Worker, WorkerRegistration};
use jq_core::submit::{validate_queue_name, validate_worker_id};
use jq_core::{Command, ValidationError, WorkerStatus};
use uuid::Uuid;

use crate::executor::{Order, Row, applied_ids};
use crate::rows::{JOB_COLUMNS, WORKER_COLUMNS, WorkerRow, worker_status};
use crate::{Result, Store, StoreError};

/// The server's answer to a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatOutcome {
    /// False: the worker is unknown or OFFLINE and must register again.
    pub registered: bool,
    pub status: Option<WorkerStatus>,
    /// Leases the worker holds that are no longer its own (reassigned,
    /// timed out, cancelled): it must stop them.
    pub stale: Vec<Lease>,
    /// Leases whose job an operator cancelled (JQ-113): kill and report.
    pub cancel: Vec<Lease>,
}

/// Which workers [`Store::list_workers`] lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerListing {
    /// ONLINE, DRAINING and STOPPING.
    Live,
    /// Also those OFFLINE (deregistered or declared dead).
    WithOffline,
}

/// Which of a worker's jobs (beyond the leases it keeps) are reclaimed.
#[derive(Debug, Clone, Copy)]
enum Reclaim {
    /// Every ASSIGNED or RUNNING job: a new incarnation registered.
    EveryHeldJob,
    /// RUNNING jobs started more than this long ago: the heartbeat's list.
    RunningStartedBefore(Duration),
}

/// Most queues one worker may serve.
pub const MAX_WORKER_QUEUES: usize = 1000;

/// Lease attempts are `integer` columns: refuse what they cannot hold.
fn check_leases(field: &'static str, leases: &[Lease]) -> Result<()> {
    for l in leases {
        stored_int4(field, l.attempt)?;
    }
    Ok(())
}

/// Queue a worker.heartbeat event in the same statement as the change.
const WORKER_EVENT: &str = "INSERT INTO event_outbox (event_id, topic, partition_key, worker_id, worker_status, \
    active_jobs, concurrency) SELECT gen_random_uuid(), $TOPIC, id, id, status, \
    (SELECT count(*) FROM jobs j WHERE j.worker_id = ch.id AND j.status IN ('ASSIGNED', 'RUNNING') AND j.phase = 1)::int, \
    concurrency FROM ch";

/// The active-jobs count of [`WORKER_EVENT`].
const ACTIVE_JOBS: &str = "(SELECT count(*) FROM jobs j WHERE j.worker_id = ch.id AND j.status IN ('ASSIGNED', 'RUNNING') AND j.phase = 1)::int";

fn with_event(change: &str, topic_param: &str) -> String {
    format!(
        "WITH ch AS ({change} RETURNING id, status, concurrency), ev AS ({}) SELECT status::text FROM ch",
        WORKER_EVENT.replace("$TOPIC", topic_param)
    )
}

impl Store {
    /// FR-018: register (or re-register) a worker as ONLINE (DRAINING when
    /// it says so). Jobs the id held that are not in `reg.keep` belong to a
    /// lost incarnation and are reclaimed at once (FR-020 without the
    /// wait); kept leases survive a reconnect.
    pub async fn register_worker(&self, reg: &WorkerRegistration) -> Result<Vec<Uuid>> {
        validate_worker_id(&reg.id)?;
        validate_hostname(&reg.hostname)?;
        validate_version(&reg.version)?;
        if reg.concurrency == 0 {
            return Err(ValidationError::invalid("concurrency", "must be at least 1").into());
        }
        stored_int4("concurrency", reg.concurrency)?;
        if reg.queues.is_empty() {
            return Err(ValidationError::invalid("queues", "at least one queue is required").into());
        }
        if reg.queues.len() > MAX_WORKER_QUEUES {
            return Err(ValidationError::invalid(
                "queues",
                format!(
                    "{} queues; a worker serves at most {MAX_WORKER_QUEUES}",
                    reg.queues.len()
                ),
            )
            .into());
        }
        for q in &reg.queues {
            validate_queue_name(q)?;
        }
        if !reg.queue_weights.is_empty() && reg.queue_weights.len() != reg.queues.len() {
            return Err(ValidationError::invalid(
                "queue_weights",
                format!(
                    "{} weights for {} queues: give one per queue, or none",
                    reg.queue_weights.len(),
                    reg.queues.len()
                ),
            )
            .into());
        }
        if let Some((q, w)) = reg
            .queues
            .iter()
            .zip(&reg.queue_weights)
            .find(|(_, w)| !(1..=jq_core::weights::MAX_WEIGHT).contains(*w))
        {
            return Err(ValidationError::invalid(
                "queue_weights",
                format!("queue {q}: weight {w} is not 1-{}", jq_core::weights::MAX_WEIGHT),
            )
            .into());
        }
        check_leases("in_flight", &reg.keep)?;
        self.run("register_worker", || async move {
            sqlx::query_scalar::<_, String>(&with_event(
                "INSERT INTO workers (id, hostname, concurrency, queues, version, status, queue_weights) \
                 VALUES ($1, $2, $3, $4, $5, $7::worker_status, $8) ON CONFLICT (id) DO UPDATE SET \
                 hostname = EXCLUDED.hostname, concurrency = EXCLUDED.concurrency, queues = EXCLUDED.queues, \
                 queue_weights = EXCLUDED.queue_weights, \
                 version = EXCLUDED.version, status = EXCLUDED.status, registered_at = now(), \
                 last_heartbeat_at = now()",
                "$6",
            ))
            .bind(&reg.id)
            .bind(&reg.hostname)
            .bind(reg.concurrency as i32)
            .bind(&reg.queues)
            .bind(&reg.version)
            .bind(TOPIC_WORKER_HEARTBEAT)
            .bind(if reg.draining {
                WorkerStatus::Draining.as_str()
            } else {
                WorkerStatus::Online.as_str()
            })
            .bind(
                (!reg.queue_weights.is_empty())
                    .then(|| reg.queue_weights.iter().map(|w| *w as i32).collect::<Vec<i32>>()),
            )
            .fetch_one(&self.pool)
            .await?;
            self.reclaim_worker_jobs(&reg.id, &reg.keep).await
        })
        .await
    }

    /// Jobs the worker id held before its new registration, except the
    /// `keep` leases -> WorkerLost.
    async fn reclaim_worker_jobs(&self, worker_id: &str, keep: &[Lease]) -> Result<Vec<Uuid>> {
        self.reclaim_where(worker_id, keep, Reclaim::EveryHeldJob).await
    }

    /// JQ-110's other half: a live worker that no longer lists a RUNNING
    /// job in its heartbeat has dropped it (e.g. its result was refused for
    /// a reason it could not retry). Without this the job would stay
    /// RUNNING forever, since the worker keeps heartbeating. Only jobs
    /// started more than `grace` ago count, so a heartbeat snapshot taken
    /// just before an ack does not reclaim the job it acked.
    pub async fn reclaim_unlisted(
        &self,
        worker_id: &str,
        listed: &[Lease],
        grace: Duration,
    ) -> Result<Vec<Uuid>> {
        validate_worker_id(worker_id)?;
        check_leases("in_flight", listed)?;
        self.run("reclaim_unlisted", || async move {
            self.reclaim_where(worker_id, listed, Reclaim::RunningStartedBefore(grace))
                .await
        })
        .await
    }

    async fn reclaim_where(&self, worker_id: &str, keep: &[Lease], which: Reclaim) -> Result<Vec<Uuid>> {
        let (status, started_before) = match which {
            Reclaim::EveryHeldJob => ("j.status IN ('ASSIGNED', 'RUNNING') AND j.phase = 1", None),
            Reclaim::RunningStartedBefore(grace) => ("j.status = 'RUNNING' AND j.phase = 1", Some(grace)),
        };
        let (ids, attempts): (Vec<Uuid>, Vec<i32>) =
            keep.iter().map(|l| (l.job_id, l.attempt as i32)).unzip();
        let rows: Vec<crate::rows::Candidate> = sqlx::query_as(&format!(
            "SELECT {JOB_COLUMNS}, q.backoff_base_ms, q.backoff_max_ms FROM jobs j JOIN queues q ON q.name = j.queue \
             WHERE j.worker_id = $1 AND {status} AND NOT EXISTS \
             (SELECT 1 FROM unnest($2::uuid[], $3::int[]) AS k(id, attempt) WHERE k.id = j.id AND k.attempt = j.attempt) \
             AND ($4::bigint IS NULL OR j.started_at < now() - make_interval(secs => $4::bigint / 1000.0))"
        ))
        .bind(worker_id)
        .bind(&ids)
        .bind(&attempts)
        .bind(started_before.map(|d| d.as_millis() as i64))
        .fetch_all(&self.pool)
        .await?;
        let work = rows
            .iter()
            .map(|c| {
                let cmd = Command::WorkerLost {
                    worker_id: worker_id.to_string(),
                    attempt: c.job.attempt as u32,
                };
                (Row::from(c), Order::new(cmd))
            })
            .collect();
        Ok(applied_ids("reclaim_worker_jobs", &self.execute(work).await?))
    }

    /// FR-019: record liveness and check the worker's leases (JQ-110).
    pub async fn heartbeat(&self, worker_id: &str, leases: &[Lease]) -> Result<HeartbeatOutcome> {
        validate_worker_id(worker_id)?;
        check_leases("in_flight", leases)?;
        self.run("worker_heartbeat", || async move {
            // The event's active jobs are the leases the worker lists: a
            // count of its in-flight entries would walk every job it ran
            // while a transaction pins the horizon (ADR 0021).
            let sql = with_event(
                "UPDATE workers SET last_heartbeat_at = now() WHERE id = $1 AND status <> 'OFFLINE'",
                "$2",
            )
            .replace(ACTIVE_JOBS, "$3::int");
            debug_assert!(sql.contains("$3::int"), "the heartbeat's event counts its leases");
            let status: Option<String> = sqlx::query_scalar(&sql)
            .bind(worker_id)
            .bind(TOPIC_WORKER_HEARTBEAT)
            .bind(i32::try_from(leases.len()).unwrap_or(i32::MAX))
            .fetch_optional(&self.pool)
            .await?;
            let Some(status) = status else {
                return Ok(HeartbeatOutcome {
                    registered: false,
                    status: None,
                    stale: leases.to_vec(),
                    cancel: vec![],
                });
            };
            let (ids, attempts): (Vec<Uuid>, Vec<i32>) = leases.iter().map(|l| (l.job_id, l.attempt as i32)).unzip();
            // Leases still valid, and those among them with a pending cancel.
            // By id only (the fence keeps the planner off the worker's
            // in-flight index, which holds an entry for every job the
            // worker ran while a transaction pins the horizon: ADR 0021).
            let held: Vec<(Uuid, i32, bool)> = sqlx::query_as(
                "SELECT j.id, j.attempt, j.cancel_requested FROM unnest($1::uuid[], $2::int[]) AS l(id, attempt) \
                 CROSS JOIN LATERAL (SELECT id, attempt, cancel_requested, worker_id, status, phase FROM jobs \
                                     WHERE id = l.id OFFSET 0) j \
                 WHERE j.attempt = l.attempt AND j.worker_id = $3 AND j.status IN ('ASSIGNED', 'RUNNING') AND j.phase = 1",
            )
            .bind(&ids)
            .bind(&attempts)
            .bind(worker_id)
            .fetch_all(&self.pool)
            .await?;
            let valid: HashSet<(Uuid, u32)> = held.iter().map(|(id, a, _)| (*id, *a as u32)).collect();
            let mut stale: Vec<Lease> = leases.iter().filter(|l| !valid.contains(&(l.job_id, l.attempt))).copied().collect();
            stale.sort();
            let mut cancel: Vec<Lease> = held
                .iter()
                .filter(|(_, _, c)| *c)
                .map(|(id, a, _)| Lease {
                    job_id: *id,
                    attempt: *a as u32,
                })
                .collect();
            cancel.sort();
            Ok(HeartbeatOutcome {
                registered: true,
                status: Some(worker_status(&status)),
                stale,
                cancel,
            })
        })
        .await
    }

    async fn set_worker_status(
        &self,
        query_name: &'static str,
        worker_id: &str,
        to: WorkerStatus,
    ) -> Result<Worker> {
        validate_worker_id(worker_id)?;
        self.run(query_name, || async move {
            let changed: Option<String> = sqlx::query_scalar(&with_event(
                "UPDATE workers SET status = $2::worker_status WHERE id = $1 AND status <> 'OFFLINE'",
                "$3",
            ))
            .bind(worker_id)
            .bind(to.as_str())
            .bind(TOPIC_WORKER_HEARTBEAT)
            .fetch_optional(&self.pool)
            .await?;
            if changed.is_none() {
                let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM workers WHERE id = $1)")
                    .bind(worker_id)
                    .fetch_one(&self.pool)
                    .await?;
                return Err(if exists {
                    StoreError::WorkerOffline(worker_id.to_string())
                } else {
                    StoreError::WorkerNotFound(worker_id.to_string())
                });
            }
            self.get_worker_inner(worker_id).await
        })
        .await
    }

    /// FR-023: finish running jobs, take no new ones.
    pub async fn drain_worker(&self, worker_id: &str) -> Result<Worker> {
        self.set_worker_status("drain_worker", worker_id, WorkerStatus::Draining)
            .await
    }

    /// FR-024: finish running jobs, then exit.
    pub async fn shutdown_worker(&self, worker_id: &str) -> Result<Worker> {
        self.set_worker_status("shutdown_worker", worker_id, WorkerStatus::Stopping)
            .await
    }

    /// NFR-015: the worker leaves; whatever it still held is reclaimed by
    /// the next dead-worker pass.
    pub async fn deregister_worker(&self, worker_id: &str) -> Result<()> {
        validate_worker_id(worker_id)?;
        self.run("deregister_worker", || async move {
            let changed: Option<String> = sqlx::query_scalar(&with_event(
                "UPDATE workers SET status = 'OFFLINE' WHERE id = $1",
                "$2",
            ))
            .bind(worker_id)
            .bind(TOPIC_WORKER_HEARTBEAT)
            .fetch_optional(&self.pool)
            .await?;
            changed
                .map(|_| ())
                .ok_or_else(|| StoreError::WorkerNotFound(worker_id.to_string()))
        })
        .await
    }

    async fn get_worker_inner(&self, worker_id: &str) -> Result<Worker> {
        let row: Option<WorkerRow> =
            sqlx::query_as(&format!("SELECT {WORKER_COLUMNS} FROM workers w WHERE w.id = $1"))
                .bind(worker_id)
                .fetch_optional(&self.pool)
                .await?;
        row.map(Worker::from)
            .ok_or_else(|| StoreError::WorkerNotFound(worker_id.to_string()))
    }

    pub async fn get_worker(&self, worker_id: &str) -> Result<Worker> {
        validate_worker_id(worker_id)?;
        self.run("get_worker", || self.get_worker_inner(worker_id)).await
    }

    pub async fn list_workers(&self, which: WorkerListing) -> Result<Vec<Worker>> {
        let include_offline = which == WorkerListing::WithOffline;
        self.run("list_workers", || async move {
            let rows: Vec<WorkerRow> = sqlx::query_as(&format!(
                "SELECT {WORKER_COLUMNS} FROM workers w WHERE $1 OR w.status <> 'OFFLINE' ORDER BY w.id"
            ))
            .bind(include_offline)
            .fetch_all(&self.pool)
            .await?;
            Ok(rows.into_iter().map(Worker::from).collect())
        })
        .await
    }
}
