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

use std::collections::HashMap;

use jq_core::records::Assignment;
use jq_core::{BackoffPolicy, Command, Effects, JobState, Outcome};
use uuid::Uuid;

use crate::executor::{Order, Row, Verdict};
use crate::rows::{JobRow, backoff};
use crate::transitions::{ReportOutcome, ResultReport};
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

impl From<&StateRow> for Row {
    fn from(r: &StateRow) -> Row {
        Row {
            id: r.id,
            queue: r.queue.clone(),
            state: r.state(),
            backoff: backoff(r.backoff_base_ms, r.backoff_max_ms),
        }
    }
}

/// One call inside a batch.
struct Item {
    id: Uuid,
    order: Order,
    expected: Option<Expected>,
}

impl Item {
    /// The expected state, if this call may be decided from it: acks and
    /// successes, whose decisions the guarded write fully checks.
    fn speculable(&self) -> Option<&Expected> {
        match self.order.cmd {
            Command::Ack { .. }
            | Command::Report {
                outcome: Outcome::Succeeded,
                ..
            } => self.expected.as_ref(),
            _ => None,
        }
    }
}

/// What a call ended as: (queue, state before, effects if written).
type Decided = Result<(String, JobState, Option<Effects>)>;

impl Store {
    /// Decide every call: from its expected state where it has one, else
    /// from a read of its row; a call that lost a race is decided again,
    /// alone.
    async fn execute_calls(&self, items: &[Item]) -> Vec<Decided> {
        let mut out: Vec<Option<Decided>> = (0..items.len()).map(|_| None).collect();
        // Expected states: anything but a clean write is left to the read,
        // which answers from the row itself.
        let (at, work): (Vec<usize>, Vec<(Row, Order)>) = items
            .iter()
            .enumerate()
            .filter_map(|(k, it)| {
                let exp = it.speculable()?;
                let row = Row {
                    id: it.id,
                    queue: exp.queue.clone(),
                    state: exp.state.clone(),
                    backoff: exp.backoff,
                };
                Some((k, (row, it.order.clone())))
            })
            .unzip();
        self.settle_into(&mut out, &at, self.execute(work).await, |_| None);

        let rest: Vec<usize> = (0..items.len()).filter(|k| out[*k].is_none()).collect();
        if !rest.is_empty() {
            let ids: Vec<Uuid> = rest.iter().map(|k| items[*k].id).collect();
            match self.read_states(&ids).await {
                Err(e) => {
                    for k in &rest {
                        out[*k] = Some(Err(e.clone_shallow()));
                    }
                }
                Ok(rows) => {
                    let by_id: HashMap<Uuid, &StateRow> = rows.iter().map(|r| (r.id, r)).collect();
                    let mut at = vec![];
                    let mut work = vec![];
                    for k in rest {
                        let it = &items[k];
                        match by_id.get(&it.id) {
                            None => out[k] = Some(Err(StoreError::JobNotFound(it.id))),
                            Some(r) => {
                                at.push(k);
                                work.push((Row::from(*r), it.order.clone()));
                            }
                        }
                    }
                    self.settle_into(&mut out, &at, self.execute(work).await, |v| match v {
                        Verdict::AlreadyApplied { queue, before } => Some(Ok((queue, before, None))),
                        Verdict::Refused(e) => Some(Err(e.into())),
                        _ => None,
                    });
                }
            }
        }
        for k in 0..items.len() {
            if out[k].is_none() {
                out[k] = Some(self.execute_one(items[k].id, &items[k].order).await);
            }
        }
        out.into_iter().map(|o| o.expect("every item decided")).collect()
    }

    /// Put the verdicts of the calls at `at` into `out`: applied ones as
    /// written, the others as `other` says (`None`: decide later).
    fn settle_into(
        &self,
        out: &mut [Option<Decided>],
        at: &[usize],
        verdicts: Result<Vec<Verdict>>,
        other: impl Fn(Verdict) -> Option<Decided>,
    ) {
        match verdicts {
            Err(e) => {
                for k in at {
                    out[*k] = Some(Err(e.clone_shallow()));
                }
            }
            Ok(verdicts) => {
                for (k, v) in at.iter().zip(verdicts) {
                    out[*k] = match v {
                        Verdict::Applied {
                            queue,
                            before,
                            effects,
                            ..
                        } => Some(Ok((queue, before, Some(effects)))),
                        v => other(v),
                    };
                }
            }
        }
    }

    /// The decision columns of `ids`, with their queues' backoff.
    async fn read_states(&self, ids: &[Uuid]) -> Result<Vec<StateRow>> {
        let mut conn = self.conn().await?;
        let rows = sqlx::query_as(
            "SELECT j.id, j.queue, j.status::text AS status, j.attempt, j.retries, j.max_retries, \
             j.worker_id, j.cancel_requested, j.last_report_attempt, j.last_report_kind, q.backoff_base_ms, \
             q.backoff_max_ms FROM jobs j JOIN queues q ON q.name = j.queue WHERE j.id = ANY($1)",
        )
        .bind(ids)
        .fetch_all(&mut *conn)
        .await;
        Ok(conn.settle(rows)?)
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
            .observed("worker_calls", self.execute_calls(&items))
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
    /// The queue's retry backoff as the claim read it.
    pub backoff: BackoffPolicy,
}

impl Expected {
    /// What a claim's assignment left.
    pub fn of(a: &Assignment) -> Expected {
        Expected {
            state: a.state.clone(),
            queue: a.queue.clone(),
            backoff: a.backoff,
        }
    }
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
                order: Order::new(Command::Ack {
                    worker_id: worker_id.clone(),
                    attempt: *attempt,
                }),
                expected: expected.clone(),
            },
            WorkerCall::Report { report, expected } => Item {
                id: report.job_id,
                order: report.order(),
                expected: expected.clone(),
            },
        }
    }
}
