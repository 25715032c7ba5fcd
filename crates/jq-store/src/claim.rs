//! The claim (SPEC §4): hand due PENDING jobs to one worker, in dispatch
//! order, each exactly once.
//!
//! PostgreSQL alone guarantees single assignment (FR-015 jq+): candidates
//! are locked with `FOR UPDATE SKIP LOCKED`, so concurrent claimers — other
//! tasks or other server replicas — never see the same row, and the update is
//! guarded by the state read, as always. Per-queue caps (JQ-140) are taken
//! under the queue row's lock so they hold across replicas.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use jq_core::records::Assignment;
use jq_core::{BackoffPolicy, Command, DispatchKey, JobStatus};
use uuid::Uuid;

use crate::executor::{Order, Row, Verdict};
use crate::rows::{JOB_COLUMNS, JobRow, backoff, secs, u32_of};
use crate::{Result, Store};

#[derive(sqlx::FromRow)]
struct QueueCaps {
    name: String,
    concurrency_limit: Option<i32>,
    rate_limit_per_s: Option<f64>,
    rate_tokens: f64,
    elapsed_s: f64,
    default_timeout_s: Option<i32>,
    backoff_base_ms: i64,
    backoff_max_ms: i64,
}

impl QueueCaps {
    fn limited(&self) -> bool {
        self.concurrency_limit.is_some() || self.rate_limit_per_s.is_some()
    }

    /// Tokens available now: the bucket refills at `rate` per second up to
    /// one second's worth (at least 1), so bursts stay short.
    fn tokens_now(&self) -> Option<f64> {
        self.rate_limit_per_s.map(|rate| {
            let burst = rate.max(1.0);
            (self.rate_tokens + self.elapsed_s.max(0.0) * rate).min(burst)
        })
    }
}

/// A queue's caps, from `queues q`.
const CAPS_COLUMNS: &str = "q.name, q.concurrency_limit, q.rate_limit_per_s, q.rate_tokens, \
    extract(epoch FROM now() - q.rate_refilled_at)::float8 AS elapsed_s, q.default_timeout_s, \
    q.backoff_base_ms, q.backoff_max_ms";

/// The scan of one queue's candidates: the index `jobs_claim` in dispatch
/// order, stopping at the limit, skipping rows other claimers hold.
const CANDIDATES_SCAN: &str = "FROM jobs j \
     WHERE j.queue = $1 AND j.status = 'PENDING' AND j.phase = 0 AND j.not_before <= now() \
       AND (j.expires_at IS NULL OR j.expires_at > now()) \
     ORDER BY j.priority DESC, j.created_at, j.seq LIMIT $2 FOR UPDATE SKIP LOCKED";

/// One capped queue's candidates, read under its queue row's lock.
fn candidates_sql() -> String {
    format!("SELECT {JOB_COLUMNS} {CANDIDATES_SCAN}")
}

/// The claim's read, one round trip: every requested queue that is not
/// paused with its caps, the requested workers (`$2`) that are ONLINE,
/// locked FOR SHARE, and — for queues without caps — up to `$3` candidates
/// (one row each; a queue with none, or with caps, gives one row without).
/// Capped queues are scanned after their row lock, so that claimers on
/// several replicas take their jobs in dispatch order.
///
/// The workers are read (and locked) only on a row that may lead to a
/// claim: one with a candidate, or a capped queue. A claim that finds
/// nothing then locks nothing, so it is a read-only transaction whose
/// commit has no WAL to flush; such claims follow every wake-up that
/// finds its job already taken.
fn claim_sql() -> String {
    let capped = "(q.concurrency_limit IS NOT NULL OR q.rate_limit_per_s IS NOT NULL)";
    let scan = CANDIDATES_SCAN
        .replace("$1", "q.name")
        .replace("$2", &format!("CASE WHEN {capped} THEN 0 ELSE $3 END"));
    format!(
        "SELECT {CAPS_COLUMNS}, \
                CASE WHEN j.id IS NOT NULL OR {capped} THEN \
                    (SELECT coalesce(array_agg(w.id), '{{}}') FROM \
                        (SELECT id FROM workers WHERE id = ANY($2) AND status = 'ONLINE' ORDER BY id FOR SHARE) w) \
                END AS online, j.* \
         FROM queues q LEFT JOIN LATERAL (SELECT {JOB_COLUMNS} {scan}) j ON true \
         WHERE q.name = ANY($1) AND NOT q.paused"
    )
}

/// A row of [`claim_sql`]: a queue's caps, the workers ONLINE, and one
/// candidate if there is one.
struct ClaimRow {
    caps: QueueCaps,
    /// Set on rows that may lead to a claim (see [`claim_sql`]).
    online: Option<Vec<String>>,
    job: Option<JobRow>,
}

impl<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> for ClaimRow {
    fn from_row(row: &'r sqlx::postgres::PgRow) -> std::result::Result<Self, sqlx::Error> {
        use sqlx::Row;
        let id: Option<Uuid> = row.try_get("id")?;
        Ok(ClaimRow {
            caps: QueueCaps::from_row(row)?,
            online: row.try_get("online")?,
            job: id.map(|_| JobRow::from_row(row)).transpose()?,
        })
    }
}

/// What a claim gave each worker, and the verdicts of its write (reported
/// once it commits).
type Claimed = (Vec<(String, Assignment)>, Vec<Verdict>);

impl Store {
    /// The plan PostgreSQL uses for the claim scan (NFR-012 checks, and
    /// operators debugging a slow claim).
    pub async fn explain_claim(&self, queue: &str, limit: u32) -> Result<String> {
        let mut tx = self.pool.begin().await?;
        let lines: Vec<String> = sqlx::query_scalar(&format!("EXPLAIN {}", claim_sql()))
            .bind([queue])
            .bind(Vec::<String>::new())
            .bind(i64::from(limit))
            .fetch_all(&mut *tx)
            .await?;
        tx.rollback().await?;
        Ok(lines.join("\n"))
    }

    /// Claim up to `limit` due jobs from `queues` for `worker_id`, which
    /// must be ONLINE. Returns the assignments in dispatch order (FR-014).
    /// Paused queues give nothing (JQ-122); concurrency and rate limits cap
    /// what each queue gives (JQ-140).
    pub async fn claim(&self, worker_id: &str, queues: &[String], limit: u32) -> Result<Vec<Assignment>> {
        let wants = [(worker_id.to_string(), limit)];
        Ok(self
            .claim_for(&wants, queues)
            .await?
            .into_iter()
            .map(|(_, a)| a)
            .collect())
    }

    /// One claim for several workers serving the same `queues`: each
    /// `(worker, n)` gets at most `n` jobs, in dispatch order, dealt round
    /// robin — one transaction for all of them instead of one each
    /// (NFR-011: many workers on one server). Workers not ONLINE get none.
    pub async fn claim_for(
        &self,
        wants: &[(String, u32)],
        queues: &[String],
    ) -> Result<Vec<(String, Assignment)>> {
        if queues.is_empty() || wants.iter().all(|(_, n)| *n == 0) {
            return Ok(vec![]);
        }
        self.run("claim_jobs", || self.claim_tx(wants, queues)).await
    }

    async fn claim_tx(
        &self,
        wants: &[(String, u32)],
        queues: &[String],
    ) -> Result<Vec<(String, Assignment)>> {
        let mut conn = self.conn().await?;
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        let got = self.claim_in(&mut tx, wants, queues).await;
        // Committed or rolled back here, also when it gives nothing: its
        // read may have locked candidates.
        let got = crate::finish(tx, got).await;
        let (assigned, verdicts) = conn.settle(got)?;
        self.report_committed(&verdicts);
        Ok(assigned)
    }

    async fn claim_in(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
        wants: &[(String, u32)],
        queues: &[String],
    ) -> Result<Claimed> {
        let asked: u32 = wants.iter().map(|(_, n)| *n).sum();
        let ids: Vec<&str> = wants.iter().map(|(w, _)| w.as_str()).collect();
        // One statement: the candidates, their queues' caps and the workers
        // that are ONLINE (FOR SHARE: the heartbeat reaper's OFFLINE update
        // waits for this claim, then reclaims what it took — no job is left
        // on a dead worker). Caps are applied below; rows locked beyond
        // them are simply not claimed and unlock at commit.
        let rows: Vec<ClaimRow> = sqlx::query_as(&claim_sql())
            .bind(queues)
            .bind(&ids)
            .bind(i64::from(asked))
            .fetch_all(&mut **tx)
            .await?;
        let online: HashSet<String> = rows
            .iter()
            .find_map(|r| r.online.as_ref())
            .map_or_else(HashSet::new, |o| o.iter().cloned().collect());
        let mut slots: Vec<(&str, u32)> = wants
            .iter()
            .filter(|(w, n)| *n > 0 && online.contains(w))
            .map(|(w, n)| (w.as_str(), *n))
            .collect();
        let limit: u32 = slots.iter().map(|(_, n)| *n).sum();
        if limit == 0 {
            return Ok((vec![], vec![]));
        }
        let mut caps: Vec<QueueCaps> = vec![];
        let mut candidates: Vec<JobRow> = vec![];
        for r in rows {
            candidates.extend(r.job);
            if !caps.iter().any(|c| c.name == r.caps.name) {
                caps.push(r.caps);
            }
        }
        let limited: Vec<String> = caps
            .iter()
            .filter(|c| c.limited())
            .map(|c| c.name.clone())
            .collect();
        if !limited.is_empty() {
            // Re-read the capped queues under their row lock (name order:
            // no deadlocks between claimers), count what runs, then take
            // what each allows.
            let locked: Vec<QueueCaps> = sqlx::query_as(&format!(
                "SELECT {CAPS_COLUMNS} FROM queues q WHERE q.name = ANY($1) AND NOT q.paused ORDER BY q.name \
                 FOR NO KEY UPDATE"
            ))
            .bind(&limited)
            .fetch_all(&mut **tx)
            .await?;
            let counts: Vec<(String, i64)> = sqlx::query_as(
                "SELECT queue, count(*) FROM jobs WHERE queue = ANY($1) AND status IN ('ASSIGNED', 'RUNNING') \
                 AND phase = 1 GROUP BY queue",
            )
            .bind(&limited)
            .fetch_all(&mut **tx)
            .await?;
            let in_flight: HashMap<String, i64> = counts.into_iter().collect();
            for c in &locked {
                let mut room = i64::from(limit);
                if let Some(cl) = c.concurrency_limit {
                    room = room.min(i64::from(cl) - in_flight.get(&c.name).copied().unwrap_or(0));
                }
                if let Some(tokens) = c.tokens_now() {
                    room = room.min(tokens.floor() as i64);
                }
                if room <= 0 {
                    continue;
                }
                let rows: Vec<JobRow> = sqlx::query_as(&candidates_sql())
                    .bind(&c.name)
                    .bind(room)
                    .fetch_all(&mut **tx)
                    .await?;
                candidates.extend(rows);
            }
            caps.retain(|c| !c.limited());
            caps.extend(locked);
        }
        candidates.sort_by_key(|r| DispatchKey {
            priority: r.priority.clamp(0, 9) as u8,
            created_at_micros: r.created_at.timestamp_micros(),
            seq: r.seq,
        });
        candidates.truncate(limit as usize);

        // Deal the jobs, best first, round robin over the workers' room.
        let mut owners: Vec<&str> = Vec::with_capacity(candidates.len());
        let mut turn = 0;
        let n_slots = slots.len();
        while owners.len() < candidates.len() {
            let (w, room) = &mut slots[turn % n_slots];
            if *room > 0 {
                *room -= 1;
                owners.push(w);
            }
            turn += 1;
        }
        let policies: HashMap<&str, (Option<Duration>, BackoffPolicy)> = caps
            .iter()
            .map(|c| {
                let policy = (
                    secs(c.default_timeout_s),
                    backoff(c.backoff_base_ms, c.backoff_max_ms),
                );
                (c.name.as_str(), policy)
            })
            .collect();
        let work = candidates
            .iter()
            .zip(&owners)
            .map(|(r, w)| {
                let cmd = Command::Claim {
                    worker_id: w.to_string(),
                };
                (Row::of(r, policies[r.queue.as_str()].1), Order::new(cmd))
            })
            .collect();
        // Locked PENDING rows: every verdict is Applied. Anything else is
        // refused as an error, not handed out.
        let verdicts = self.execute_in(&mut **tx, work).await?;
        if let Some(k) = verdicts.iter().position(|v| v.applied_id().is_none()) {
            return Err(match &verdicts[k] {
                Verdict::Refused(e) => e.clone().into(),
                _ => crate::StoreError::Contention(candidates[k].id),
            });
        }

        // Spend the rate tokens of what each rate-limited queue gave.
        for c in caps.iter().filter(|c| c.rate_limit_per_s.is_some()) {
            let used = candidates.iter().filter(|r| r.queue == c.name).count() as f64;
            let left = c.tokens_now().unwrap_or(0.0) - used;
            sqlx::query("UPDATE queues SET rate_tokens = $2, rate_refilled_at = now() WHERE name = $1")
                .bind(&c.name)
                .bind(left.max(0.0))
                .execute(&mut **tx)
                .await?;
        }

        let assigned = candidates
            .into_iter()
            .zip(&verdicts)
            .zip(owners)
            .map(|((r, v), w)| {
                let Verdict::Applied { effects, .. } = v else {
                    unreachable!("checked above")
                };
                let (timeout, backoff) = policies[r.queue.as_str()];
                let a = Assignment {
                    timeout,
                    backoff,
                    job_id: r.id,
                    attempt: effects.next.attempt,
                    priority: r.priority.clamp(0, 9) as u8,
                    retries: u32_of(r.retries),
                    created_at: r.created_at,
                    payload: r.payload,
                    queue: r.queue,
                    state: effects.next.clone(),
                };
                debug_assert!(a.attempt > 0);
                (w.to_string(), a)
            })
            .collect();
        Ok((assigned, verdicts))
    }

    /// Number of jobs in a status, for gauges (`jq_job_queue_depth`).
    pub async fn depth_by_queue(&self) -> Result<Vec<(String, JobStatus, u64)>> {
        self.run("queue_depth", || async move {
            let rows: Vec<(String, String, i64)> = sqlx::query_as(DEPTH_SQL).fetch_all(&self.pool).await?;
            Ok(rows
                .into_iter()
                .map(|(q, s, n)| (q, crate::rows::status(&s), n as u64))
                .collect())
        })
        .await
    }
}

/// One count per partial index (`jobs_claim`, `jobs_in_flight_queue`,
/// `jobs_failed`), so the gauges never read terminal rows: one `status IN
/// (...)` scan read all 10 M rows of the big-table benchmark (570 ms, every
/// 2 s, on every server).
const DEPTH_SQL: &str = "\
    SELECT queue, 'PENDING' AS status, count(*) FROM jobs WHERE status = 'PENDING' AND phase = 0 GROUP BY queue \
    UNION ALL \
    SELECT queue, status::text, count(*) FROM jobs WHERE status IN ('ASSIGNED', 'RUNNING') AND phase = 1 GROUP BY queue, status \
    UNION ALL \
    SELECT queue, 'FAILED', count(*) FROM jobs WHERE status = 'FAILED' AND phase = 2 GROUP BY queue";

impl Store {
    /// The plan of the gauges' depth count (NFR-012 checks).
    pub async fn explain_depth(&self) -> Result<String> {
        let lines: Vec<String> = sqlx::query_scalar(&format!("EXPLAIN {DEPTH_SQL}"))
            .fetch_all(&self.pool)
            .await?;
        Ok(lines.join("\n"))
    }

    /// Tell every server listening (LISTEN jq_wake) that jobs may be ready
    /// (JQ-120: a submit on one replica wakes the others).
    pub async fn notify_wake(&self) -> Result<()> {
        self.run("notify_wake", || async move {
            sqlx::query("SELECT pg_notify('jq_wake', $1)")
                .bind(&*self.wake_tag)
                .execute(&self.pool)
                .await?;
            Ok(())
        })
        .await
    }

    /// A listener on the wake channel.
    pub async fn listen_wake(&self) -> Result<sqlx::postgres::PgListener> {
        let mut l = sqlx::postgres::PgListener::connect_with(&self.pool).await?;
        l.listen("jq_wake").await?;
        Ok(l)
    }

    /// Whether a wake notification came from this store (any of its
    /// handles): its sender woke its own dispatcher directly, so hearing it
    /// again would only run one more claim that finds nothing.
    pub fn own_wake(&self, n: &sqlx::postgres::PgNotification) -> bool {
        n.payload() == &*self.wake_tag
    }
}
