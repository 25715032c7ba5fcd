//! Group commit of worker calls: many acks or many results, from many
//! workers, decided and written in one round trip and one commit instead
//! of one each. The server gathers calls that arrive while the previous
//! batch is being written (no timer, so a lone call is not delayed).
//!
//! Same guarantees as the single-job path: every decision is
//! `jq_core::transition`'s, every write is guarded by the state it was
//! decided from, and a call that loses a race is decided again.
//!
//! A call may come with the state the caller expects (the server keeps
//! what its claim, then the ack, left for each attempt it handed out): an
//! ack or a success is then decided from that state without reading the
//! row, and the guarded write is the check. One statement instead of two
//! per batch; a call whose expectation was wrong falls back to the read.

use std::collections::HashSet;

use jq_core::{Command, Context, Decision, Effects, JobState, Outcome, transition};
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
    expected: Option<Expected>,
}

impl Item {
    /// The expected state, if this call may be decided from it: acks and
    /// successes only, whose decisions need nothing else (no backoff).
    fn speculable(&self) -> Option<&Expected> {
        match self.cmd {
            Command::Ack { .. }
            | Command::Report {
                outcome: Outcome::Succeeded,
                ..
            } => self.expected.as_ref(),
            _ => None,
        }
    }

    fn plan(&self, before: JobState, effects: Effects) -> Planned {
        let mut p = Planned::new(self.id, before, effects);
        if self.is_report {
            p.result = Some(self.result.clone());
            p.error = Some(self.error.clone());
            p.detail = self.error.clone();
        }
        p
    }
}

/// What a call ended as: (queue, state before, effects if written).
type Decided = Result<(String, JobState, Option<Effects>)>;

impl Store {
    async fn act_many(&self, items: &[Item]) -> Vec<Decided> {
        let mut out: Vec<Option<Decided>> = (0..items.len()).map(|_| None).collect();
        self.act_expected(items, &mut out).await;
        let rest: Vec<usize> = (0..items.len()).filter(|k| out[*k].is_none()).collect();
        if !rest.is_empty() {
            let sub: Vec<&Item> = rest.iter().map(|k| &items[*k]).collect();
            for (k, d) in rest.into_iter().zip(self.act_read(&sub).await) {
                out[k] = Some(d);
            }
        }
        out.into_iter().map(|o| o.expect("every item decided")).collect()
    }

    /// Decide the calls that carry an expected state from it and write them
    /// in one statement; leave the rest (and any whose row was not in that
    /// state) undecided.
    async fn act_expected(&self, items: &[Item], out: &mut [Option<Decided>]) {
        let mut planned = vec![];
        let mut planned_at = vec![];
        let mut seen = HashSet::new();
        for (k, it) in items.iter().enumerate() {
            let Some(exp) = it.speculable() else { continue };
            if !seen.insert(it.id) {
                continue;
            }
            // Anything but a clean decision is left to the read path, which
            // answers from the row itself.
            if let Ok(Decision::Apply(effects)) = transition(&exp.state, &it.cmd, &Context::default()) {
                planned.push(it.plan(exp.state.clone(), effects));
                planned_at.push(k);
            }
        }
        if planned.is_empty() {
            return;
        }
        match self.apply_planned_here(&planned).await {
            Ok(changed) => {
                let changed: HashSet<Uuid> = changed.into_iter().collect();
                for (p, k) in planned.into_iter().zip(planned_at) {
                    if changed.contains(&p.id) {
                        let queue = items[k].expected.as_ref().expect("speculable").queue.clone();
                        out[k] = Some(Ok((queue, p.before, Some(p.effects))));
                    }
                }
            }
            Err(e) => {
                for k in planned_at {
                    out[k] = Some(Err(e.clone_shallow()));
                }
            }
        }
    }

    /// Read the jobs' states, decide every call, write in one statement.
    async fn act_read(&self, items: &[&Item]) -> Vec<Decided> {
        let ids: Vec<Uuid> = items.iter().map(|i| i.id).collect();
        let read = async {
            let mut conn = self.conn().await?;
            let rows = sqlx::query_as(
                "SELECT j.id, j.queue, j.status::text AS status, j.attempt, j.retries, j.max_retries, \
                 j.worker_id, j.cancel_requested, j.last_report_attempt, j.last_report_kind, q.backoff_base_ms, \
                 q.backoff_max_ms FROM jobs j JOIN queues q ON q.name = j.queue WHERE j.id = ANY($1)",
            )
            .bind(&ids)
            .fetch_all(&mut *conn)
            .await;
            conn.settle(rows).map_err(StoreError::from)
        };
        let rows: Vec<StateRow> = match read.await {
            Ok(r) => r,
            Err(e) => {
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
                    planned.push(it.plan(before, effects));
                    planned_at.push(k);
                }
            }
        }
        match self.apply_planned_here(&planned).await {
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
            out[k] = Some(self.act_one(items[k]).await);
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

    /// Acks and results together, from many workers, in one read and one
    /// commit; one outcome per call, in order, each as [`Store::ack`] or
    /// [`Store::report`] would have returned it. At moderate load a batch
    /// of either kind alone holds one or two calls, and every statement
    /// and commit costs about the same whatever it carries, so sharing the
    /// batch halves them (docs/benchmarks.md, session 5).
    pub async fn worker_calls_many(&self, calls: &[WorkerCall]) -> Vec<Result<CallOutcome>> {
        // A call that cannot be stored is refused alone: it must not fail
        // the statement it would share with other clients' calls.
        let checked: Vec<Result<()>> = calls.iter().map(WorkerCall::check).collect();
        let valid: Vec<usize> = (0..calls.len()).filter(|k| checked[*k].is_ok()).collect();
        let items: Vec<Item> = valid.iter().map(|k| calls[*k].item()).collect();
        let mut decided = self
            .observed("worker_calls", self.act_many(&items))
            .await
            .into_iter();
        let mut checked = checked.into_iter();
        calls
            .iter()
            .map(|c| {
                match checked.next().expect("one check per call") {
                    Err(e) => Err(e),
                    Ok(()) => decided.next().expect("one decision per valid call"),
                }
                .map(|(queue, before, effects)| match c {
                    WorkerCall::Ack { .. } => CallOutcome::Acked {
                        state: effects.map_or(before, |e| e.next),
                    },
                    WorkerCall::Report { .. } => CallOutcome::Reported {
                        outcome: ReportOutcome::of(&before, effects.as_ref()),
                        queue,
                    },
                })
            })
            .collect()
    }

    /// Many acks (ASSIGNED -> RUNNING) in one commit; one result per call,
    /// in order, each as [`Store::ack`] would have returned it.
    pub async fn ack_many(&self, calls: &[(String, Uuid, u32)]) -> Vec<Result<()>> {
        let calls: Vec<WorkerCall> = calls
            .iter()
            .map(|(w, id, attempt)| WorkerCall::Ack {
                worker_id: w.clone(),
                job_id: *id,
                attempt: *attempt,
                expected: None,
            })
            .collect();
        self.worker_calls_many(&calls)
            .await
            .into_iter()
            .map(|r| r.map(|_| ()))
            .collect()
    }

    /// Many results in one commit; one outcome per report, in order, each
    /// as [`Store::report`] would have returned it (plus the queue).
    pub async fn report_many(&self, reports: &[ResultReport]) -> Vec<Result<(ReportOutcome, String)>> {
        let calls: Vec<WorkerCall> = reports
            .iter()
            .map(|r| WorkerCall::Report {
                report: r.clone(),
                expected: None,
            })
            .collect();
        self.worker_calls_many(&calls)
            .await
            .into_iter()
            .map(|r| {
                r.map(|o| match o {
                    CallOutcome::Reported { outcome, queue } => (outcome, queue),
                    CallOutcome::Acked { .. } => unreachable!("a report's outcome is Reported"),
                })
            })
            .collect()
    }
}

/// A worker's call on one job, for [`Store::worker_calls_many`].
/// `expected`: the job's state as the caller last left it, if it knows.
#[derive(Debug, Clone, PartialEq)]
pub enum WorkerCall {
    /// ASSIGNED -> RUNNING by the holder of `attempt` (JQ-110).
    Ack {
        worker_id: String,
        job_id: Uuid,
        attempt: u32,
        expected: Option<Expected>,
    },
    /// The attempt's result (FR-029).
    Report {
        report: ResultReport,
        expected: Option<Expected>,
    },
}

/// A job's state (and queue) as a claim or an ack left it.
#[derive(Debug, Clone, PartialEq)]
pub struct Expected {
    pub state: JobState,
    pub queue: String,
}

/// What a [`WorkerCall`] ended as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallOutcome {
    /// The job's state after the ack.
    Acked { state: JobState },
    /// The job's status afterwards (or a duplicate), and its queue.
    Reported { outcome: ReportOutcome, queue: String },
}

impl WorkerCall {
    /// What the statement could not hold (JQ-105): a worker id it must
    /// not compare, an attempt beyond `integer`.
    fn check(&self) -> Result<()> {
        let (worker_id, attempt) = match self {
            WorkerCall::Ack {
                worker_id, attempt, ..
            } => (worker_id, *attempt),
            WorkerCall::Report { report, .. } => (&report.worker_id, report.attempt),
        };
        jq_core::submit::validate_worker_id(worker_id)?;
        jq_core::input::stored_int4("attempt", attempt)?;
        Ok(())
    }

    fn item(&self) -> Item {
        match self {
            WorkerCall::Ack {
                worker_id,
                job_id,
                attempt,
                expected,
            } => Item {
                id: *job_id,
                cmd: Command::Ack {
                    worker_id: worker_id.clone(),
                    attempt: *attempt,
                },
                result: None,
                error: None,
                is_report: false,
                expected: expected.clone(),
            },
            WorkerCall::Report { report: r, expected } => Item {
                id: r.job_id,
                cmd: Command::Report {
                    worker_id: r.worker_id.clone(),
                    attempt: r.attempt,
                    outcome: r.outcome,
                },
                result: Some(r.result.clone()),
                error: r.error.clone(),
                is_report: true,
                expected: expected.clone(),
            },
        }
    }
}
