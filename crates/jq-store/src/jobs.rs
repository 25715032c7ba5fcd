//! Submitting and reading jobs (SPEC §2, §7).

use std::collections::HashMap;

use jq_core::events::submitted_step;
use jq_core::records::{Job, JobEvent};
use jq_core::{JobStatus, NewJob, PageToken, Schedule, ValidationError};
use sqlx::{Postgres, QueryBuilder};
use uuid::Uuid;

use crate::rows::{EventRow, JOB_COLUMNS, JobRow};
use crate::{Result, Store, StoreError};

/// The submit statement (see [`Store::submit_tx`]). `ON CONFLICT DO NOTHING`
/// answers a repeated idempotency key, and a retry of a submit whose commit
/// went unanswered, without an error.
static SUBMIT_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    SUBMIT_SQL_TEMPLATE.replace("$ANNOUNCE", &crate::marks::announce_sql("ins", "$13"))
});

/// [`SUBMIT_SQL`] before the wake-up's payload is filled in: the tag and
/// each section's lowest new key (ADR 0021).
const SUBMIT_SQL_TEMPLATE: &str = r#"
WITH input AS (
    SELECT * FROM unnest($1::uuid[], $2::text[], $3::smallint[], $4::bytea[], $5::int[], $6::text[],
                         $7::bigint[], $8::timestamptz[], $9::bigint[], $10::int[])
        AS t(id, queue, priority, payload, max_retries, idempotency_key, delay_ms, run_at, ttl_ms, ord)
), prepared AS (
    SELECT i.*, coalesce(i.max_retries, q.max_retries) AS eff_max_retries,
           CASE WHEN i.run_at IS NOT NULL THEN greatest(i.run_at, now())
                WHEN i.delay_ms IS NOT NULL THEN now() + i.delay_ms * interval '1 millisecond'
                ELSE now() END AS nb,
           coalesce(i.ttl_ms, q.default_ttl_s::bigint * 1000) AS eff_ttl_ms
    FROM input i LEFT JOIN queues q ON q.name = i.queue
), ins AS (
    -- A missing queue gets a placeholder max_retries so that the foreign
    -- key, not NOT NULL, is what refuses it.
    INSERT INTO jobs (id, queue, priority, payload, max_retries, idempotency_key, not_before, expires_at)
    SELECT id, queue, priority, payload, coalesce(eff_max_retries, 0), idempotency_key, nb,
           CASE WHEN eff_ttl_ms IS NULL THEN NULL ELSE nb + eff_ttl_ms * interval '1 millisecond' END
    FROM prepared ORDER BY ord
    ON CONFLICT DO NOTHING
    RETURNING id, queue, priority, created_at, seq, not_before
), ev AS (
    INSERT INTO job_events (event_id, job_id, queue, from_status, to_status, reason, attempt)
    SELECT gen_random_uuid(), id, queue, NULL, $11::job_status, $12, 0 FROM ins
), wake AS (
    -- JQ-120: wake every server's dispatcher, sent by the commit itself.
    SELECT pg_notify('jq_wake', $ANNOUNCE) FROM (SELECT 1 FROM ins LIMIT 1) one
)
-- (The uncorrelated subquery runs once, so the notify is sent.)
SELECT id FROM ins WHERE (SELECT count(*) FROM wake) >= 0"#;

/// [`SUBMIT_SQL`] without `ON CONFLICT`, for a first try with no
/// idempotency keys: nothing can conflict then (the ids are new UUIDv4s),
/// and the speculative insertion `ON CONFLICT` needs cost about 15 % of
/// the `jobs` insert (psql, 5,000 rows: 67-77 ms against 58-60 ms).
static SUBMIT_SQL_PLAIN: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| SUBMIT_SQL.replace("    ON CONFLICT DO NOTHING\n", ""));

fn is_foreign_key(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.code().as_deref() == Some("23503"))
}

/// The answer to one submitted job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Submitted {
    pub job_id: Uuid,
    /// The idempotency key matched an existing job (JQ-101).
    pub already_existed: bool,
}

/// Filters of `job list` (FR-032).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListFilter {
    pub queue: Option<String>,
    pub status: Option<JobStatus>,
    /// Page size; clamped to 1..=1000, default 20.
    pub limit: Option<u32>,
    pub page_token: Option<String>,
    /// Leave payload and result out (smaller pages).
    pub omit_payloads: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ListPage {
    pub jobs: Vec<Job>,
    /// None on the last page.
    pub next_page_token: Option<String>,
}

impl Store {
    /// Submit one job (FR-001..FR-005, JQ-101, JQ-103). Submits notify
    /// `jq_wake` in their own statement when they add a job.
    pub async fn submit(&self, job: NewJob) -> Result<Submitted> {
        let mut v = self.submit_many(vec![job]).await?;
        Ok(v.remove(0))
    }

    /// Submit jobs in one all-or-nothing transaction (JQ-102): every queue
    /// must exist; each new job gets its `job_events` row (also its outbox
    /// entry, ADR 0012).
    pub async fn submit_many(&self, jobs: Vec<NewJob>) -> Result<Vec<Submitted>> {
        self.submit_all(&jobs).await
    }

    /// Group commit of independent submissions (many clients' single
    /// submits): one transaction for all of them, each answered as
    /// [`Store::submit`] would have answered it alone. When the batch is
    /// refused for a reason that wrote nothing and may concern only some
    /// jobs (an unknown queue), each job is submitted again on its own, so
    /// one bad request never fails the others.
    pub async fn submit_each(&self, jobs: &[NewJob]) -> Vec<Result<Submitted>> {
        match self.submit_all(jobs).await {
            Ok(v) => v.into_iter().map(Ok).collect(),
            Err(StoreError::QueueNotFound(_)) if jobs.len() > 1 => {
                let mut out = Vec::with_capacity(jobs.len());
                for j in jobs {
                    out.push(
                        self.submit_all(std::slice::from_ref(j))
                            .await
                            .map(|mut v| v.remove(0)),
                    );
                }
                out
            }
            Err(e) => jobs.iter().map(|_| Err(e.clone_shallow())).collect(),
        }
    }

    async fn submit_all(&self, jobs: &[NewJob]) -> Result<Vec<Submitted>> {
        if jobs.is_empty() {
            return Ok(vec![]);
        }
        // Ids are fixed before the first try, so a retry after an unknown
        // commit outcome finds its own rows instead of inserting twice.
        let ids: Vec<Uuid> = jobs.iter().map(|_| Uuid::new_v4()).collect();
        let ids = &ids;
        // Retries keep `ON CONFLICT`: an earlier try may have committed.
        let keyed = jobs.iter().any(|j| j.idempotency_key.is_some());
        let tries = std::sync::atomic::AtomicU32::new(0);
        let tries = &tries;
        let submitted = self
            .run("submit_jobs", move || {
                let retry = tries.fetch_add(1, std::sync::atomic::Ordering::Relaxed) > 0;
                self.submit_tx(jobs, ids, keyed || retry)
            })
            .await?;
        self.committed_submits(
            jobs.iter()
                .zip(&submitted)
                .filter(|(_, s)| !s.already_existed)
                .map(|(j, _)| j.queue.as_str()),
        );
        Ok(submitted)
    }

    /// One statement, so one round trip and one commit: the insert is
    /// all-or-nothing by itself, and the foreign key to `queues` refuses the
    /// whole statement when a queue is missing (or deleted meanwhile; the
    /// key check locks the queue row against a concurrent delete).
    ///
    /// `guarded`: insert with `ON CONFLICT DO NOTHING` ([`SUBMIT_SQL`]).
    async fn submit_tx(&self, jobs: &[NewJob], ids: &[Uuid], guarded: bool) -> Result<Vec<Submitted>> {
        let n = jobs.len();
        let mut q = Vec::with_capacity(n);
        let mut prio = Vec::with_capacity(n);
        let mut payload = Vec::with_capacity(n);
        let mut max_retries = Vec::with_capacity(n);
        let mut key = Vec::with_capacity(n);
        let mut delay_ms = Vec::with_capacity(n);
        let mut run_at = Vec::with_capacity(n);
        let mut ttl_ms = Vec::with_capacity(n);
        let mut ord = Vec::with_capacity(n);
        for (i, j) in jobs.iter().enumerate() {
            q.push(j.queue.as_str());
            prio.push(i16::from(j.priority));
            payload.push(j.payload.as_slice());
            max_retries.push(j.max_retries.map(|m| m as i32));
            key.push(j.idempotency_key.as_deref());
            let (d, at) = match j.schedule {
                Schedule::Now => (None, None),
                Schedule::After(d) => (Some(d.as_millis() as i64), None),
                Schedule::At(t) => (None, Some(t)),
            };
            delay_ms.push(d);
            run_at.push(at);
            ttl_ms.push(j.ttl.map(|t| t.as_millis() as i64));
            ord.push(i as i32);
        }
        let step = submitted_step();
        let mut conn = self.conn().await?;
        let sql: &str = if guarded { &SUBMIT_SQL } else { &SUBMIT_SQL_PLAIN };
        let inserted: std::result::Result<Vec<Uuid>, sqlx::Error> = sqlx::query_scalar(sql)
            .bind(ids)
            .bind(&q)
            .bind(&prio)
            .bind(&payload)
            .bind(&max_retries)
            .bind(&key)
            .bind(&delay_ms)
            .bind(&run_at)
            .bind(&ttl_ms)
            .bind(&ord)
            .bind(step.to.as_str())
            .bind(step.reason.as_str())
            .bind(&*self.wake_tag)
            .fetch_all(&mut *conn)
            .await;
        let inserted = conn.settle(inserted);
        drop(conn);
        let inserted = match inserted {
            Ok(v) => v,
            Err(e) if is_foreign_key(&e) => {
                return Err(self.missing_queue(jobs, e).await);
            }
            Err(e) => return Err(e.into()),
        };

        let inserted: std::collections::HashSet<Uuid> = inserted.into_iter().collect();
        // Rows not inserted: an idempotency key matched (return the first
        // job), or this very call committed before a retry (our own id).
        let keyed: Vec<(String, String)> = jobs
            .iter()
            .zip(ids)
            .filter(|(_, id)| !inserted.contains(id))
            .filter_map(|(j, _)| j.idempotency_key.clone().map(|k| (j.queue.clone(), k)))
            .collect();
        let mut existing: HashMap<(String, String), Uuid> = HashMap::new();
        if !keyed.is_empty() {
            let (kq, kk): (Vec<String>, Vec<String>) = keyed.into_iter().unzip();
            let rows: Vec<(Uuid, String, String)> = sqlx::query_as(
                "SELECT j.id, j.queue, j.idempotency_key FROM jobs j \
                 JOIN unnest($1::text[], $2::text[]) AS k(queue, key) \
                   ON j.queue = k.queue AND j.idempotency_key = k.key",
            )
            .bind(&kq)
            .bind(&kk)
            .fetch_all(&self.pool)
            .await?;
            existing = rows.into_iter().map(|(id, q, k)| ((q, k), id)).collect();
        }

        Ok(jobs
            .iter()
            .zip(ids)
            .map(|(j, &id)| {
                if inserted.contains(&id) {
                    return Submitted {
                        job_id: id,
                        already_existed: false,
                    };
                }
                match j
                    .idempotency_key
                    .as_ref()
                    .and_then(|k| existing.get(&(j.queue.clone(), k.clone())))
                {
                    Some(&first) if first != id => Submitted {
                        job_id: first,
                        already_existed: true,
                    },
                    _ => Submitted {
                        job_id: id,
                        already_existed: false,
                    },
                }
            })
            .collect())
    }

    /// The error for a submit the queue foreign key refused: the first
    /// queue of `jobs` that does not exist.
    async fn missing_queue(&self, jobs: &[NewJob], refused: sqlx::Error) -> StoreError {
        let mut queues: Vec<&str> = jobs.iter().map(|j| j.queue.as_str()).collect();
        queues.sort_unstable();
        queues.dedup();
        let found: Vec<String> = match sqlx::query_scalar("SELECT name FROM queues WHERE name = ANY($1)")
            .bind(&queues)
            .fetch_all(&self.pool)
            .await
        {
            Ok(f) => f,
            Err(e) => return e.into(),
        };
        match queues.iter().find(|q| !found.iter().any(|f| f == *q)) {
            Some(q) => StoreError::QueueNotFound(q.to_string()),
            // Deleted and re-created in between: say what happened.
            None => refused.into(),
        }
    }

    /// One job (FR-030).
    pub async fn get_job(&self, id: Uuid) -> Result<Job> {
        self.run("get_job", || async move {
            let row: Option<JobRow> =
                sqlx::query_as(&format!("SELECT {JOB_COLUMNS} FROM jobs j WHERE j.id = $1"))
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?;
            row.map(JobRow::into_job).ok_or(StoreError::JobNotFound(id))
        })
        .await
    }

    /// Jobs newest first, filtered and cursor-paginated (FR-032, FR-035).
    pub async fn list_jobs(&self, f: &ListFilter) -> Result<ListPage> {
        let limit = f.limit.unwrap_or(20).clamp(1, 1000) as i64;
        if let Some(q) = &f.queue {
            jq_core::submit::validate_queue_name(q)?;
        }
        let after =
            match f.page_token.as_deref().filter(|t| !t.is_empty()) {
                Some(t) => Some(PageToken::decode(t).map_err(|e| {
                    StoreError::Invalid(ValidationError::invalid("page_token", e.to_string()))
                })?),
                None => None,
            };
        self.run("list_jobs", || async move {
            let cols = if f.omit_payloads {
                JOB_COLUMNS
                    .replace("j.payload", "''::bytea AS payload")
                    .replace("j.result", "NULL::bytea AS result")
            } else {
                JOB_COLUMNS.to_string()
            };
            let mut qb: QueryBuilder<Postgres> =
                QueryBuilder::new(format!("SELECT {cols} FROM jobs j WHERE true"));
            if let Some(q) = &f.queue {
                qb.push(" AND j.queue = ").push_bind(q);
            }
            if let Some(s) = f.status {
                qb.push(" AND j.status = ")
                    .push_bind(s.as_str())
                    .push("::job_status");
            }
            if let Some(t) = after {
                qb.push(" AND j.seq < ").push_bind(t.seq);
            }
            // Submission order, newest first: `jobs_list` or, with a queue,
            // `jobs_queue_list` read backwards (schema v3, ADR 0011).
            qb.push(" ORDER BY j.seq DESC LIMIT ").push_bind(limit + 1);
            let mut rows: Vec<JobRow> = qb.build_query_as().fetch_all(&self.pool).await?;
            let more = rows.len() as i64 > limit;
            rows.truncate(limit as usize);
            let next_page_token = more.then(|| {
                let last = rows.last().expect("a full page has a last row");
                PageToken { seq: last.seq }.encode()
            });
            Ok(ListPage {
                jobs: rows.into_iter().map(JobRow::into_job).collect(),
                next_page_token,
            })
        })
        .await
    }

    /// A job's transitions in order (FR-031).
    pub async fn job_events(&self, id: Uuid) -> Result<Vec<JobEvent>> {
        self.run("job_events", || async move {
            let rows: Vec<EventRow> = sqlx::query_as(
                "SELECT event_id, job_id, queue, from_status::text AS from_status, to_status::text AS to_status, \
                 reason, worker_id, attempt, detail, occurred_at FROM job_events \
                 WHERE job_id = $1 AND EXISTS (SELECT 1 FROM jobs WHERE id = $1) ORDER BY id",
            )
            .bind(id)
            .fetch_all(&self.pool)
            .await?;
            if rows.is_empty() {
                // Every job has its submission event; none means no job
                // (a pruned job's history stays until its partition goes,
                // unread).
                let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM jobs WHERE id = $1)")
                    .bind(id)
                    .fetch_one(&self.pool)
                    .await?;
                if !exists {
                    return Err(StoreError::JobNotFound(id));
                }
            }
            Ok(rows.into_iter().map(JobEvent::from).collect())
        })
        .await
    }

    /// Delete a DONE or DEAD_LETTERED job and its history (FR-035). Its
    /// events not yet published are kept in `event_outbox` until they are.
    pub async fn delete_job(&self, id: Uuid) -> Result<()> {
        self.run("delete_job", || async move {
            // The job and its history together (no cascade: ADR 0008).
            let deleted: i64 = sqlx::query_scalar(&format!(
                "WITH j AS (DELETE FROM jobs WHERE id = $1 AND status IN ('DONE', 'DEAD_LETTERED') RETURNING id), \
                 k AS ({}), \
                 e AS (DELETE FROM job_events WHERE job_id IN (SELECT id FROM j)) \
                 SELECT count(*) FROM j",
                crate::outbox::keep_unpublished("e.job_id IN (SELECT id FROM j)")
            ))
            .bind(id)
            .fetch_one(&self.pool)
            .await?;
            if deleted == 1 {
                return Ok(());
            }
            let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM jobs WHERE id = $1)")
                .bind(id)
                .fetch_one(&self.pool)
                .await?;
            Err(if exists {
                StoreError::JobNotTerminal(id)
            } else {
                StoreError::JobNotFound(id)
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jq_101_only_the_unguarded_submit_lacks_on_conflict() {
        assert!(SUBMIT_SQL.contains("ON CONFLICT DO NOTHING"));
        assert!(!SUBMIT_SQL_PLAIN.contains("ON CONFLICT"));
        assert_eq!(
            SUBMIT_SQL_PLAIN.len(),
            SUBMIT_SQL.len() - "    ON CONFLICT DO NOTHING\n".len()
        );
    }
}
