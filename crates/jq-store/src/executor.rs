//! The one way a lifecycle transition is written (SPEC §3, FR-010).
//!
//! Every write of a job's state — claim, ack, report, cancel, retry,
//! redrive, the reapers, worker loss, delivery failure — goes through
//! [`Store::execute`] (or [`Store::execute_in`] inside a transaction):
//! rows in, as read, each with its queue's backoff; one [`Order`] per row;
//! one [`Context`] per row, built by [`Store::context`]; one decision by
//! [`jq_core::transition`]; one guarded statement for the whole batch.
//! What each row ended as comes back as a [`Verdict`], in order: a refused
//! decision is returned, never dropped, and a row the guarded write did not
//! match is [`Verdict::Lost`], for the caller to read and decide again.
//!
//! The guard is every lifecycle column as the decision saw it (a
//! compare-and-set), and the statement is generated from one list of those
//! columns, [`state_columns!`]: a guard column is added there and nowhere
//! else. Only written jobs get their `job_events` rows, which are also the
//! outbox the relay publishes (ADR 0012).

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

use jq_core::input::job_text;
use jq_core::{
    BackoffPolicy, Command, Context, Decision, Effects, JobState, JobStatus, TransitionError, transition,
};
use sqlx::PgExecutor;
use uuid::Uuid;

use crate::marks::Start;
use crate::rows::{Candidate, JobRow, backoff};
use crate::{Result, Store};

/// A job as a decision needs it: its state (which also guards the write),
/// its queue and the queue's retry backoff.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    pub id: Uuid,
    pub queue: String,
    pub state: JobState,
    pub backoff: BackoffPolicy,
}

impl Row {
    pub fn of(job: &JobRow, backoff: BackoffPolicy) -> Row {
        Row {
            id: job.id,
            queue: job.queue.clone(),
            state: job.state(),
            backoff,
        }
    }
}

impl From<&Candidate> for Row {
    fn from(c: &Candidate) -> Row {
        Row::of(&c.job, backoff(c.backoff_base_ms, c.backoff_max_ms))
    }
}

/// What a write records beside the state.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) enum Record {
    #[default]
    Nothing,
    /// A worker's report: its result and error overwrite the job's, and the
    /// error is the detail of the first event.
    Report { result: Vec<u8>, error: Option<String> },
    /// An operator re-queued the job: the last attempt's error goes.
    ClearError,
}

/// A command for one row, and what its write records.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Order {
    pub cmd: Command,
    pub record: Record,
}

impl Order {
    pub fn new(cmd: Command) -> Order {
        Order {
            cmd,
            record: Record::Nothing,
        }
    }
}

/// What one row ended as.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Verdict {
    /// Decided and written; `effects.steps` are its events.
    Applied {
        id: Uuid,
        queue: String,
        before: JobState,
        effects: Effects,
        /// The row's place in the claim index: priority and FIFO key.
        at: (u8, Start),
    },
    /// The same report for the same attempt was applied before (JQ-110).
    AlreadyApplied { queue: String, before: JobState },
    /// The decider refused the command; nothing was written.
    Refused(TransitionError),
    /// The row was not in the state it was decided from (another writer
    /// got there first, or the same job came twice in one batch): nothing
    /// was written; read it again and decide again.
    Lost,
}

impl Verdict {
    pub fn applied_id(&self) -> Option<Uuid> {
        match self {
            Verdict::Applied { id, .. } => Some(*id),
            _ => None,
        }
    }
}

/// The ids of the applied rows. For callers whose selection implies the
/// command (reapers, redrive, worker loss): a refusal there means the
/// selection and the decider disagree, so each is logged as the invariant
/// breach it is; a lost row was changed by another replica's pass.
pub(crate) fn applied_ids(pass: &'static str, verdicts: &[Verdict]) -> Vec<Uuid> {
    for v in verdicts {
        if let Verdict::Refused(e) = v {
            tracing::warn!(pass, error = %e, "a selected job was refused by the decider; left as it is");
        }
    }
    verdicts.iter().filter_map(Verdict::applied_id).collect()
}

/// Declares the lifecycle columns once: the state a decision reads, the
/// SET of the write and its guard all come from this list.
macro_rules! state_columns {
    ($( $col:ident: $rust:ty, $sql:literal, $cast:literal, |$s:ident| $get:expr; )*) => {
        /// (column, array element type, cast to the column's type)
        const STATE_COLUMNS: &[(&str, &str, &str)] = &[$((stringify!($col), $sql, $cast),)*];

        /// The state columns' binds: the state after, then before.
        struct StateBinds<'a> {
            $($col: [Vec<$rust>; 2],)*
        }

        impl<'a> StateBinds<'a> {
            fn with_capacity(n: usize) -> Self {
                StateBinds { $($col: [Vec::with_capacity(n), Vec::with_capacity(n)],)* }
            }

            fn push(&mut self, next: &'a JobState, before: &'a JobState) {
                $(
                    self.$col[0].push({ let $s = next; $get });
                    self.$col[1].push({ let $s = before; $get });
                )*
            }

            fn bind<'q, O>(
                &'q self,
                mut q: sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments>,
            ) -> sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments> {
                $(q = q.bind(&self.$col[0]).bind(&self.$col[1]);)*
                q
            }
        }
    };
}

// `max_retries` is part of the state but fixed at submit, so neither set
// nor guarded.
state_columns! {
    status: &'a str, "text", "::job_status", |s| s.status.as_str();
    attempt: i32, "int", "", |s| s.attempt as i32;
    retries: i32, "int", "", |s| s.retries as i32;
    worker_id: Option<&'a str>, "text", "", |s| s.worker_id.as_deref();
    cancel_requested: bool, "bool", "", |s| s.cancel_requested;
    last_report_attempt: Option<i32>, "int", "", |s| s.last_report.map(|r| r.attempt as i32);
    last_report_kind: Option<&'a str>, "text", "", |s| s.last_report.map(|r| r.kind.as_str());
}

/// The other per-job inputs of the write, after the state columns.
const WRITE_COLUMNS: &[(&str, &str)] = &[
    ("id", "uuid"),
    ("delay_ms", "bigint"),
    ("clear_expiry", "bool"),
    ("set_result", "bool"),
    ("result", "bytea"),
    ("set_error", "bool"),
    ("error", "text"),
];

/// One row per event.
const EVENT_COLUMNS: &[(&str, &str)] = &[
    ("event_id", "uuid"),
    ("job_id", "uuid"),
    ("from_status", "text"),
    ("to_status", "text"),
    ("reason", "text"),
    ("worker_id", "text"),
    ("attempt", "int"),
    ("detail", "text"),
    ("ord", "int"),
];

/// The guarded write of a batch, generated once from the column lists.
/// Binds: each state column (after, before), then [`WRITE_COLUMNS`], then
/// [`EVENT_COLUMNS`].
fn guarded_write_sql() -> &'static str {
    static SQL: OnceLock<String> = OnceLock::new();
    SQL.get_or_init(|| {
        let mut n = 0;
        let mut param = |ty: &str| {
            n += 1;
            format!("${n}::{ty}[]")
        };
        let (mut args, mut names) = (vec![], vec![]);
        for (col, ty, _) in STATE_COLUMNS {
            args.push(param(ty));
            names.push(format!("to_{col}"));
            args.push(param(ty));
            names.push(format!("from_{col}"));
        }
        for (col, ty) in WRITE_COLUMNS {
            args.push(param(ty));
            names.push(col.to_string());
        }
        let (mut e_args, mut e_names) = (vec![], vec![]);
        for (col, ty) in EVENT_COLUMNS {
            e_args.push(param(ty));
            e_names.push(col.to_string());
        }
        let set: Vec<String> = STATE_COLUMNS
            .iter()
            .map(|(col, _, cast)| format!("{col} = i.to_{col}{cast}"))
            .collect();
        let guard: Vec<String> = STATE_COLUMNS
            .iter()
            .map(|(col, _, cast)| format!("j.{col} IS NOT DISTINCT FROM i.from_{col}{cast}"))
            .collect();
        format!(
            r#"
WITH input AS (
    SELECT * FROM unnest({args}) AS t({names})
), upd AS (
    UPDATE jobs j SET
        {set},
        phase = jobs_phase_of(i.to_status::job_status),
        -- A job made PENDING again is due from now at the earliest: its
        -- not_before after its created_at is what brings it to the
        -- claim's marks (ADR 0021).
        not_before = CASE WHEN i.delay_ms IS NOT NULL THEN now() + i.delay_ms * interval '1 millisecond'
                          WHEN i.to_status = 'PENDING' AND i.from_status <> 'PENDING' THEN now()
                          ELSE j.not_before END,
        expires_at = CASE WHEN i.clear_expiry THEN NULL ELSE j.expires_at END,
        result = CASE WHEN i.set_result THEN i.result ELSE j.result END,
        error = CASE WHEN i.set_error THEN i.error ELSE j.error END,
        assigned_at = CASE WHEN i.to_status = 'ASSIGNED' AND i.from_status <> 'ASSIGNED' THEN now()
                           ELSE j.assigned_at END,
        started_at = CASE WHEN i.to_status = 'RUNNING' AND i.from_status <> 'RUNNING' THEN now()
                          ELSE j.started_at END,
        completed_at = CASE WHEN i.to_status IN ('DONE', 'DEAD_LETTERED') AND i.from_status <> i.to_status THEN now()
                            WHEN i.to_status = 'PENDING' THEN NULL
                            ELSE j.completed_at END,
        updated_at = now()
    FROM input i
    WHERE j.id = i.id AND {guard}
    RETURNING j.id, j.queue, j.priority, j.created_at, j.seq
), ev AS (
    INSERT INTO job_events (event_id, job_id, queue, from_status, to_status, reason, worker_id, attempt, detail)
    SELECT e.event_id, e.job_id, u.queue, e.from_status::job_status, e.to_status::job_status, e.reason,
           e.worker_id, e.attempt, e.detail
    FROM unnest({e_args}) AS e({e_names})
    JOIN upd u ON u.id = e.job_id
    ORDER BY e.ord
)
SELECT id, priority, created_at, seq FROM upd"#,
            args = args.join(", "),
            names = names.join(", "),
            set = set.join(",\n        "),
            guard = guard.join(" AND "),
            e_args = e_args.join(", "),
            e_names = e_names.join(", "),
        )
    })
}

/// A written row: id, priority, created_at, seq.
type Written = (Uuid, i16, chrono::DateTime<chrono::Utc>, i64);

/// A decided row, ready to write.
struct Planned<'a> {
    row: &'a Row,
    record: &'a Record,
    effects: Effects,
}

impl Planned<'_> {
    /// The worker an event names: the one that held the attempt, or the one
    /// that just got it.
    fn event_worker(&self) -> Option<&str> {
        let (before, next) = (&self.row.state, &self.effects.next);
        if before.status.is_in_flight() {
            before.worker_id.as_deref()
        } else if next.status.is_in_flight() {
            next.worker_id.as_deref()
        } else {
            None
        }
    }
}

impl Store {
    /// The decision context of a row of a queue with `backoff`: the one
    /// place a [`Context`] is made.
    pub(crate) fn context(&self, backoff: BackoffPolicy) -> Context {
        Context {
            backoff,
            jitter_unit: self.jitter_unit(),
        }
    }

    /// Decide and write `work` on this handle's connection (pinned or
    /// pooled), committed as it returns; the applied steps go to the
    /// transition observer.
    pub(crate) async fn execute(&self, work: Vec<(Row, Order)>) -> Result<Vec<Verdict>> {
        if work.is_empty() {
            return Ok(vec![]);
        }
        let mut conn = self.conn().await?;
        let r = self.execute_in(&mut *conn, work).await;
        let verdicts = conn.settle(r)?;
        self.report_committed(&verdicts);
        Ok(verdicts)
    }

    /// Tell the transition observer about the applied transitions, once
    /// their write has committed.
    pub(crate) fn report_committed(&self, verdicts: &[Verdict]) {
        // A job made PENDING again here is claimable at once from this
        // server; the others find it through the deferred look (ADR 0021).
        for v in verdicts {
            if let Verdict::Applied {
                queue,
                before,
                effects,
                at,
                ..
            } = v
                && effects.next.status == JobStatus::Pending
                && before.status != JobStatus::Pending
            {
                self.marks.lower(&(queue.clone(), at.0), at.1);
            }
        }
        let Some(o) = &self.transitions else { return };
        for v in verdicts {
            if let Verdict::Applied {
                id,
                queue,
                before,
                effects,
                ..
            } = v
            {
                o.applied(&crate::Transition {
                    job_id: *id,
                    queue,
                    before,
                    effects,
                });
            }
        }
    }

    /// Decide and write `work` in `exec` (a transaction the caller commits,
    /// then passes the verdicts to [`Store::report_committed`]). One verdict
    /// per row, in order.
    pub(crate) async fn execute_in<'e>(
        &self,
        exec: impl PgExecutor<'e>,
        work: Vec<(Row, Order)>,
    ) -> Result<Vec<Verdict>> {
        let mut seen = HashSet::with_capacity(work.len());
        let mut planned = Vec::with_capacity(work.len());
        let mut planned_at = Vec::with_capacity(work.len());
        let mut verdicts: Vec<Option<Verdict>> = Vec::with_capacity(work.len());
        for (k, (row, order)) in work.iter().enumerate() {
            // Two rows of one job in one statement would both pass the
            // guard's read; the second is decided again after the first.
            if !seen.insert(row.id) {
                verdicts.push(Some(Verdict::Lost));
                continue;
            }
            verdicts.push(
                match transition(&row.state, &order.cmd, &self.context(row.backoff)) {
                    Err(e) => Some(Verdict::Refused(e)),
                    Ok(Decision::AlreadyApplied) => Some(Verdict::AlreadyApplied {
                        queue: row.queue.clone(),
                        before: row.state.clone(),
                    }),
                    Ok(Decision::Apply(effects)) => {
                        planned.push(Planned {
                            row,
                            record: &order.record,
                            effects,
                        });
                        planned_at.push(k);
                        None
                    }
                },
            );
        }
        let written: HashMap<Uuid, (u8, Start)> = Self::write(exec, &planned)
            .await?
            .into_iter()
            .map(|(id, p, created_at, seq)| (id, (p.clamp(0, 9) as u8, Start { created_at, seq })))
            .collect();
        for (p, k) in planned.into_iter().zip(planned_at) {
            verdicts[k] = Some(if let Some(at) = written.get(&p.row.id) {
                Verdict::Applied {
                    id: p.row.id,
                    queue: p.row.queue.clone(),
                    before: p.row.state.clone(),
                    effects: p.effects,
                    at: *at,
                }
            } else {
                Verdict::Lost
            });
        }
        Ok(verdicts
            .into_iter()
            .map(|v| v.expect("every row decided"))
            .collect())
    }

    /// The guarded write of decided rows; returns the ids it changed.
    async fn write<'e>(exec: impl PgExecutor<'e>, planned: &[Planned<'_>]) -> Result<Vec<Written>> {
        if planned.is_empty() {
            return Ok(vec![]);
        }
        let n = planned.len();
        let mut state = StateBinds::with_capacity(n);
        let mut id = Vec::with_capacity(n);
        let mut delay_ms = Vec::with_capacity(n);
        let mut clear_expiry = Vec::with_capacity(n);
        let mut set_result = Vec::with_capacity(n);
        let mut result: Vec<Option<&[u8]>> = Vec::with_capacity(n);
        let mut set_error = Vec::with_capacity(n);
        let mut error: Vec<Option<String>> = Vec::with_capacity(n);
        let mut e_id = vec![];
        let mut e_job = vec![];
        let mut e_from: Vec<Option<&str>> = vec![];
        let mut e_to = vec![];
        let mut e_reason = vec![];
        let mut e_worker = vec![];
        let mut e_attempt = vec![];
        let mut e_detail = vec![];
        let mut e_ord = vec![];
        for p in planned {
            let next = &p.effects.next;
            state.push(next, &p.row.state);
            id.push(p.row.id);
            delay_ms.push(p.effects.not_before.map(|d| d.as_millis() as i64));
            clear_expiry.push(p.effects.clear_expiry);
            // Job-produced text is stored whatever it holds (JQ-105).
            let (res, err, detail) = match p.record {
                Record::Nothing => (None, None, None),
                Record::Report { result, error } => {
                    let e = error.as_deref().map(|t| job_text(t).into_owned());
                    (Some(Some(result.as_slice())), Some(e.clone()), e)
                }
                Record::ClearError => (None, Some(None), None),
            };
            set_result.push(res.is_some());
            result.push(res.flatten());
            set_error.push(err.is_some());
            error.push(err.flatten());
            for (i, s) in p.effects.steps.iter().enumerate() {
                e_id.push(Uuid::new_v4());
                e_job.push(p.row.id);
                e_from.push(s.from.map(JobStatus::as_str));
                e_to.push(s.to.as_str());
                e_reason.push(s.reason.as_str());
                e_worker.push(p.event_worker());
                e_attempt.push(next.attempt as i32);
                e_detail.push(if i == 0 { detail.clone() } else { None });
                e_ord.push(e_ord.len() as i32);
            }
        }
        let q = state.bind(sqlx::query_as::<_, Written>(guarded_write_sql()));
        let written: Vec<Written> = q
            .bind(&id)
            .bind(&delay_ms)
            .bind(&clear_expiry)
            .bind(&set_result)
            .bind(&result)
            .bind(&set_error)
            .bind(&error)
            .bind(&e_id)
            .bind(&e_job)
            .bind(&e_from)
            .bind(&e_to)
            .bind(&e_reason)
            .bind(&e_worker)
            .bind(&e_attempt)
            .bind(&e_detail)
            .bind(&e_ord)
            .fetch_all(exec)
            .await?;
        Ok(written)
    }
}

#[cfg(test)]
mod tests {
    use jq_core::submit::{NewJob, Schedule};

    use super::*;
    use crate::StoreOptions;

    async fn store() -> (jq_testkit::TestDb, Store) {
        let db = jq_testkit::TestDb::new().await;
        let store = Store::connect(&db.url, &StoreOptions::default()).await.unwrap();
        (db, store)
    }

    fn claim(worker: &str) -> Order {
        Order::new(Command::Claim {
            worker_id: worker.into(),
        })
    }

    /// A new PENDING job of `default`.
    async fn submitted(store: &Store) -> Uuid {
        store
            .submit(NewJob {
                queue: "default".into(),
                payload: b"{}".to_vec(),
                priority: 0,
                max_retries: None,
                ttl: None,
                schedule: Schedule::Now,
                idempotency_key: None,
            })
            .await
            .unwrap()
            .job_id
    }

    async fn events(store: &Store, id: Uuid) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM job_events WHERE job_id = $1")
            .bind(id)
            .fetch_one(store.pool())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn fr_010_the_executor_returns_every_verdict_and_writes_only_what_it_applied() {
        let (_db, store) = store().await;
        let id = submitted(&store).await;
        let pending = store.load_row(id).await.unwrap();
        let before = events(&store, id).await;

        // The same job twice in one batch: the first is written, the second
        // is lost, not written twice.
        let v = store
            .execute(vec![(pending.clone(), claim("a")), (pending.clone(), claim("b"))])
            .await
            .unwrap();
        assert!(
            matches!(&v[0], Verdict::Applied { id: got, queue, .. } if *got == id && queue == "default"),
            "{v:?}"
        );
        assert_eq!(v[1], Verdict::Lost);
        let assigned = store.load_row(id).await.unwrap();
        assert_eq!(assigned.state.worker_id.as_deref(), Some("a"));
        assert_eq!(events(&store, id).await, before + 1);

        // Decided from a state the row has left: the guard refuses the write.
        let v = store.execute(vec![(pending, claim("b"))]).await.unwrap();
        assert_eq!(v, vec![Verdict::Lost]);
        assert_eq!(store.load_row(id).await.unwrap().state, assigned.state);

        // A command the decider refuses comes back as such; nothing written.
        let ack = Order::new(Command::Ack {
            worker_id: "b".into(),
            attempt: assigned.state.attempt,
        });
        let v = store.execute(vec![(assigned.clone(), ack)]).await.unwrap();
        assert!(matches!(&v[0], Verdict::Refused(_)), "{v:?}");
        assert_eq!(store.load_row(id).await.unwrap().state, assigned.state);
        assert_eq!(events(&store, id).await, before + 1);
    }

    /// Index entries and HOT updates of `jobs` in the current transaction.
    async fn hot_and_all(tx: &mut sqlx::PgConnection) -> (i64, i64) {
        sqlx::query_as(
            "SELECT pg_stat_get_xact_tuples_hot_updated('jobs'::regclass), \
                    pg_stat_get_xact_tuples_updated('jobs'::regclass)",
        )
        .fetch_one(tx)
        .await
        .unwrap()
    }

    /// ADR 0018: no index names a column the ack changes, so the ack is a
    /// HOT update (the row only); the claim and the completion, which
    /// change the phase, are not.
    #[tokio::test]
    async fn jq_152_the_ack_writes_the_row_and_no_index() {
        let (_db, store) = store().await;
        let id = submitted(&store).await;
        let mut tx = store.pool().begin().await.unwrap();
        let pending = store.load_row(id).await.unwrap();
        let v = store
            .execute_in(&mut *tx, vec![(pending, claim("w"))])
            .await
            .unwrap();
        let Verdict::Applied { effects, .. } = &v[0] else {
            panic!("{v:?}")
        };
        assert_eq!(hot_and_all(&mut tx).await, (0, 1), "the claim changes the phase");
        let assigned = Row {
            state: effects.next.clone(),
            ..store.load_row(id).await.unwrap()
        };
        let ack = Order::new(Command::Ack {
            worker_id: "w".into(),
            attempt: assigned.state.attempt,
        });
        let v = store.execute_in(&mut *tx, vec![(assigned, ack)]).await.unwrap();
        let Verdict::Applied { effects, .. } = &v[0] else {
            panic!("{v:?}")
        };
        assert_eq!(effects.next.status, JobStatus::Running);
        assert_eq!(hot_and_all(&mut tx).await, (1, 2), "the ack is a HOT update");
        let phase: i16 = sqlx::query_scalar("SELECT phase FROM jobs WHERE id = $1")
            .bind(id)
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        assert_eq!(phase, crate::layout::phase(JobStatus::Running));
    }

    #[test]
    fn fr_010_the_guarded_write_sets_and_guards_every_state_column() {
        let sql = guarded_write_sql();
        for (col, _, cast) in STATE_COLUMNS {
            assert!(sql.contains(&format!("{col} = i.to_{col}{cast}")), "SET of {col}");
            assert!(
                sql.contains(&format!("j.{col} IS NOT DISTINCT FROM i.from_{col}{cast}")),
                "guard of {col}"
            );
        }
        let params = 2 * STATE_COLUMNS.len() + WRITE_COLUMNS.len() + EVENT_COLUMNS.len();
        assert!(sql.contains(&format!("${params}::")) && !sql.contains(&format!("${}::", params + 1)));
    }
}
