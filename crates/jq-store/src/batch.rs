//! Group commit of worker calls: many acks or many results, from many
//! workers, decided and written in one round trip and one commit instead
//! of one each. The server gathers calls that arrive while the previous
//! batch is being written (no timer, so a lone call is not delayed).
//!
//! Same guarantees as the single-job path: every decision is
//! `jq_core::transition`'s, every write is guarded by status and attempt,
//! and a call that loses a race is decided again on its own.

use std::collections::HashSet;

use jq_core::{Command, Context, Decision, Effects, JobState, transition};
use uuid::Uuid;

use crate::rows::{JobRow, backoff};
use crate::transitions::{Planned, ReportOutcome, ResultReport};
use crate::{Result, Store, StoreError};

/// The state columns a decision needs (no payload or result bytes).
#[derive(sqlx::FromRow)]
struct StateRow {
    id: Uuid,
    queue: String,
    status: String,
    attempt: i32,
    retries: i32,
    max_retries: i32,
    worker_id: Option<String>,
    cancel_requested: bool,
    last_report_attempt: Option<i32>,
    last_report_kind: Option<String>,
    backoff_base_ms: i64,
    backoff_max_ms: i64,
}

impl StateRow {
    fn state(&self) -> JobState {
        // One conversion, shared with the full row.
        JobRow::state_of(
            &self.status,
            self.attempt,
            self.retries,
            self.max_retries,
            self.worker_id.clone(),
            self.cancel_requested,
            self.last_report_attempt,
            self.last_report_kind.as_deref(),
        )
    }
}

/// One call's decision inside a batch.
struct Item {
    id: Uuid,
    cmd: Command,
    result: Option<Vec<u8>>,
    error: Option<String>,
    is_report: bool,
}

/// What a call ended as: (queue, state before, effects if written).
type Decided = Result<(String, JobState, Option<Effects>)>;

impl Store {
    async fn act_many(&self, items: &[Item]) -> Vec<Decided> {
        let ids: Vec<Uuid> = items.iter().map(|i| i.id).collect();
        let rows: Vec<StateRow> = match sqlx::query_as(
            "SELECT j.id, j.queue, j.status::text AS status, j.attempt, j.retries, j.max_retries, j.worker_id, \
             j.cancel_requested, j.last_report_attempt, j.last_report_kind, q.backoff_base_ms, q.backoff_max_ms \
             FROM jobs j JOIN queues q ON q.name = j.queue WHERE j.id = ANY($1)",
        )
        .bind(&ids)
        .fetch_all(&self.pool)
        .await
        {
            Ok(r) => r,
            Err(e) => {
                let e = StoreError::from(e);
                return items.iter().map(|_| Err(e.clone_shallow())).collect();
            }
        };
        let by_id: std::collections::HashMap<Uuid, &StateRow> = rows.iter().map(|r| (r.id, r)).collect();
        let mut out: Vec<Option<Decided>> = (0..items.len()).map(|_| None).collect();
        let mut planned = vec![];
        let mut planned_at = vec![];
        let mut seen = HashSet::new();
        let mut later = vec![];
        for (k, it) in items.iter().enumerate() {
            // The same job twice in one batch: decide the second alone, after.
            if !seen.insert(it.id) {
                later.push(k);
                continue;
            }
            let Some(row) = by_id.get(&it.id) else {
                out[k] = Some(Err(StoreError::JobNotFound(it.id)));
                continue;
            };
            let ctx = Context {
                backoff: backoff(row.backoff_base_ms, row.backoff_max_ms),
                jitter_unit: self.jitter_unit(),
            };
            let before = row.state();
            match transition(&before, &it.cmd, &ctx) {
                Err(e) => out[k] = Some(Err(e.into())),
                Ok(Decision::AlreadyApplied) => out[k] = Some(Ok((row.queue.clone(), before, None))),
                Ok(Decision::Apply(effects)) => {
                    let mut p = Planned::new(it.id, before, effects);
                    if it.is_report {
                        p.result = Some(it.result.clone());
                        p.error = Some(it.error.clone());
                        p.detail = it.error.clone();
                    }
                    planned.push(p);
                    planned_at.push(k);
                }
            }
        }
        match Store::apply_planned(&self.pool, &planned).await {
            Ok(changed) => {
                let changed: HashSet<Uuid> = changed.into_iter().collect();
                for (p, k) in planned.into_iter().zip(planned_at) {
                    if changed.contains(&p.id) {
                        let queue = by_id[&p.id].queue.clone();
                        out[k] = Some(Ok((queue, p.before, Some(p.effects))));
                    } else {
                        // Lost a race: decide again, alone.
                        later.push(k);
                    }
                }
            }
            Err(e) => {
                for k in planned_at {
                    out[k] = Some(Err(e.clone_shallow()));
                }
            }
        }
        for k in later {
            out[k] = Some(self.act_one(&items[k]).await);
        }
        out.into_iter().map(|o| o.expect("every item decided")).collect()
    }

    async fn act_one(&self, it: &Item) -> Decided {
        let (result, error) = (it.result.clone(), it.error.clone());
        let is_report = it.is_report;
        let (before, effects) = self
            .act(it.id, &it.cmd, move |p| {
                if is_report {
                    p.result = Some(result.clone());
                    p.error = Some(error.clone());
                    p.detail = error.clone();
                }
            })
            .await?;
        let queue = self.get_job(it.id).await?.queue;
        Ok((queue, before, effects))
    }

    /// Many acks (ASSIGNED -> RUNNING) in one commit; one result per call,
    /// in order, each as [`Store::ack`] would have returned it.
    pub async fn ack_many(&self, calls: &[(String, Uuid, u32)]) -> Vec<Result<()>> {
        let items: Vec<Item> = calls
            .iter()
            .map(|(w, id, attempt)| Item {
                id: *id,
                cmd: Command::Ack {
                    worker_id: w.clone(),
                    attempt: *attempt,
                },
                result: None,
                error: None,
                is_report: false,
            })
            .collect();
        self.observed("ack_jobs", self.act_many(&items))
            .await
            .into_iter()
            .map(|r| r.map(|_| ()))
            .collect()
    }

    /// Many results in one commit; one outcome per report, in order, each
    /// as [`Store::report`] would have returned it (plus the queue).
    pub async fn report_many(&self, reports: &[ResultReport]) -> Vec<Result<(ReportOutcome, String)>> {
        let items: Vec<Item> = reports
            .iter()
            .map(|r| Item {
                id: r.job_id,
                cmd: Command::Report {
                    worker_id: r.worker_id.clone(),
                    attempt: r.attempt,
                    outcome: r.outcome,
                },
                result: Some(r.result.clone()),
                error: r.error.clone(),
                is_report: true,
            })
            .collect();
        self.observed("report_results", self.act_many(&items))
            .await
            .into_iter()
            .map(|r| r.map(|(queue, before, effects)| (ReportOutcome::of(&before, effects.as_ref()), queue)))
            .collect()
    }
}
