//! The indexes of `jobs` (issue 21 item 3, ADR 0018). An update is HOT —
//! no index entries, the new row version on the same page — only when no
//! column an index names changes. The partial indexes used to name
//! `status`, so every transition wrote an entry into each of the table's
//! indexes. They now name `phase` (0 pending, 1 in flight, 2 failed, 3
//! done, 4 dead letter), which the ack (ASSIGNED -> RUNNING) leaves as it
//! is: the ack writes the row and nothing else.
//!
//! Migration `20261204000001_jobs_phase` adds the column (catalog-only)
//! and a trigger that keeps it in step with `status`; the next one sets it
//! on every row that is not done. [`Store::advance_layout`] then builds
//! the phase indexes with `CREATE INDEX CONCURRENTLY` (writes go on) and,
//! once all are valid and `jobs_layout.status_indexes_until` has passed,
//! drops the indexes that name `status` (`DROP INDEX CONCURRENTLY`).
//! Until then both exist, so every query that walks one says both its
//! status and its phase, and either index serves it.

use jq_core::JobStatus;

use crate::conn::SessionLock;
use crate::{Result, Store};

/// Advisory-lock key of the layout step ("jqlayout").
const LAYOUT_LOCK: i64 = 0x6a71_6c61_796f_7574;

/// (index, what it indexes, the index naming `status` it replaces)
pub const PHASE_INDEXES: &[(&str, &str, &str)] = &[
    (
        "jobs_claim_phase",
        "(queue, priority DESC, created_at, seq) WHERE phase = 0",
        "jobs_claim",
    ),
    (
        "jobs_in_flight_phase",
        "(worker_id) WHERE phase = 1",
        "jobs_in_flight",
    ),
    // Keyed by `assigned_at` after the queue (ADR 0021): with the queue
    // alone every entry of a queue is a duplicate, and while a transaction
    // pins the horizon each claim's insert into that one growing run of
    // duplicates cost more (a store probe: 4,000 job lifecycles 13 s, then
    // 19 s, flat at 9 s with this key). New entries now go to the end.
    (
        "jobs_in_flight_queue_phase",
        "(queue, assigned_at) WHERE phase = 1",
        "jobs_in_flight_queue",
    ),
    // RUNNING rows too (the reaper reads the status from the row): the
    // in-flight set is small, and an index of ASSIGNED alone would make
    // the ack write an entry again.
    (
        "jobs_assigned_at_phase",
        "(assigned_at) WHERE phase = 1",
        "jobs_assigned_at",
    ),
    // `phase < 1`, not `phase = 0` (ADR 0021): the TTL reaper's query says
    // the same, so the claim index (`phase = 0`) cannot serve it. When it
    // could, the planner took it — it costs no dead entry — and under a
    // pinned horizon the reaper walked every dead entry of every queue.
    (
        "jobs_expiry_due",
        "(expires_at) WHERE phase < 1 AND expires_at IS NOT NULL",
        "jobs_expiry",
    ),
    ("jobs_failed_phase", "(queue) WHERE phase = 2", "jobs_failed"),
    (
        "jobs_done_at_phase",
        "(queue, completed_at) WHERE phase = 3",
        "jobs_done_at",
    ),
    (
        "jobs_dead_at_phase",
        "(queue, completed_at) WHERE phase = 4",
        "jobs_dead_at",
    ),
    (
        "jobs_dead_letters_phase",
        "(queue, created_at, seq) WHERE phase = 4",
        "jobs_dead_letters",
    ),
];

/// Indexes added since the v5 layout, built the same way (concurrently,
/// by the layout step) but replacing none: (index, what it indexes).
pub const ADDED_INDEXES: &[(&str, &str)] = &[
    // ADR 0021: the claim's look at deferred jobs that fell due. Jobs
    // submitted to run at once have `not_before = created_at`, so the bulk
    // of jobs writes no entry here.
    (
        "jobs_deferred_phase",
        "(not_before) WHERE phase = 0 AND not_before > created_at",
    ),
];

/// Indexes of an earlier layout that one above replaces, dropped with the
/// indexes naming `status`.
pub const RETIRED_INDEXES: &[&str] = &["jobs_expiry_phase"];

/// A status's phase, as SQL's `jobs_phase_of` has it.
pub fn phase(s: JobStatus) -> i16 {
    match s {
        JobStatus::Pending => 0,
        JobStatus::Assigned | JobStatus::Running => 1,
        JobStatus::Failed => 2,
        JobStatus::Done => 3,
        JobStatus::DeadLettered => 4,
    }
}

/// What one step did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LayoutStep {
    /// Phase indexes built (or rebuilt after an interrupted build).
    pub built: Vec<String>,
    /// Indexes naming `status` dropped.
    pub dropped: Vec<String>,
    /// Every phase index is valid and no index names `status`.
    pub complete: bool,
}

impl Store {
    /// Build the phase indexes that are missing or were left invalid, then,
    /// once every one is valid and the grace has passed, drop the indexes
    /// they replace. Idempotent; any replica, one at a time (a replica that
    /// finds the lock taken does nothing). A build on a large table takes
    /// as long as a scan of it and waits for older transactions; writes go
    /// on meanwhile.
    pub async fn advance_layout(&self) -> Result<LayoutStep> {
        let Some(mut lock) = self.try_session_lock(LAYOUT_LOCK).await? else {
            return Ok(LayoutStep::default());
        };
        let r = self.advance_locked(&mut lock).await;
        lock.release(r).await
    }

    async fn advance_locked(&self, lock: &mut SessionLock) -> Result<LayoutStep> {
        let mut step = LayoutStep::default();
        let indexes = jobs_indexes(lock).await?;
        let all = PHASE_INDEXES
            .iter()
            .map(|(n, d, _)| (*n, *d))
            .chain(ADDED_INDEXES.iter().copied());
        for (name, def) in all {
            match indexes.iter().find(|(n, _, _)| n == name) {
                Some((_, true, built)) if same_columns(built, def) => continue,
                // Built by an earlier version with other columns: build the
                // new one beside it, then swap (the old one serves meanwhile).
                Some((_, true, _)) => {
                    let next = format!("{name}_next");
                    sqlx::query(&format!("DROP INDEX CONCURRENTLY IF EXISTS {next}"))
                        .execute(&mut *lock.conn)
                        .await?;
                    sqlx::query(&format!("CREATE INDEX CONCURRENTLY {next} ON jobs {def}"))
                        .execute(&mut *lock.conn)
                        .await?;
                    sqlx::query(&format!("DROP INDEX CONCURRENTLY {name}"))
                        .execute(&mut *lock.conn)
                        .await?;
                    sqlx::query(&format!("ALTER INDEX {next} RENAME TO {name}"))
                        .execute(&mut *lock.conn)
                        .await?;
                    tracing::info!(index = name, "rebuilt an index with its new columns");
                    step.built.push(name.to_string());
                    continue;
                }
                // Left by a build that was interrupted: never used, and in
                // the way of the next build.
                Some((_, false, _)) => {
                    sqlx::query(&format!("DROP INDEX CONCURRENTLY IF EXISTS {name}"))
                        .execute(&mut *lock.conn)
                        .await?;
                }
                None => {}
            }
            // Not in a transaction block: CONCURRENTLY commits in steps.
            sqlx::query(&format!(
                "CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} ON jobs {def}"
            ))
            .execute(&mut *lock.conn)
            .await?;
            tracing::info!(index = name, "built an index of the v5 layout");
            step.built.push(name.to_string());
        }
        let due: bool = sqlx::query_scalar("SELECT status_indexes_until <= now() FROM jobs_layout")
            .fetch_one(&mut *lock.conn)
            .await?;
        let indexes = jobs_indexes(lock).await?;
        let valid = PHASE_INDEXES
            .iter()
            .map(|(n, _, _)| *n)
            .chain(ADDED_INDEXES.iter().map(|(n, _)| *n))
            .all(|name| indexes.iter().any(|(n, ok, _)| n == name && *ok));
        let left: Vec<&str> = PHASE_INDEXES
            .iter()
            .map(|(_, _, old)| *old)
            .chain(RETIRED_INDEXES.iter().copied())
            .filter(|old| indexes.iter().any(|(n, _, _)| n == old))
            .collect();
        if valid && due {
            for old in left {
                sqlx::query(&format!("DROP INDEX CONCURRENTLY IF EXISTS {old}"))
                    .execute(&mut *lock.conn)
                    .await?;
                tracing::info!(index = old, "dropped an index of the v4 layout");
                step.dropped.push(old.to_string());
            }
            step.complete = true;
        }
        Ok(step)
    }
}

/// Whether an index built as `built` (`pg_get_indexdef`) has the columns
/// of `def` (ours: `(columns) WHERE …`).
fn same_columns(built: &str, def: &str) -> bool {
    let wanted = def.split(" WHERE ").next().unwrap_or(def).trim();
    built
        .split_once(" USING btree ")
        .map(|(_, rest)| rest.split(" WHERE ").next().unwrap_or(rest).trim())
        .is_some_and(|cols| cols == wanted)
}

/// The indexes of `jobs`, whether each is valid, and its definition.
async fn jobs_indexes(lock: &mut SessionLock) -> Result<Vec<(String, bool, String)>> {
    Ok(sqlx::query_as(
        "SELECT c.relname::text, i.indisvalid, pg_get_indexdef(i.indexrelid) FROM pg_index i \
         JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = 'jobs'::regclass",
    )
    .fetch_all(&mut *lock.conn)
    .await?)
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_index_is_rebuilt_only_when_its_columns_changed() {
        let built =
            "CREATE INDEX jobs_in_flight_queue_phase ON public.jobs USING btree (queue) WHERE (phase = 1)";
        assert!(!super::same_columns(
            built,
            "(queue, assigned_at) WHERE phase = 1"
        ));
        assert!(super::same_columns(built, "(queue) WHERE phase = 1"));
        let claim = "CREATE INDEX jobs_claim_phase ON public.jobs USING btree (queue, priority DESC, created_at, seq) WHERE (phase = 0)";
        assert!(super::same_columns(
            claim,
            "(queue, priority DESC, created_at, seq) WHERE phase = 0"
        ));
    }
}
