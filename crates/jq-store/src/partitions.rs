//! The partitions of `job_events` (issue 21 item 2, ADR 0017). History is
//! range-partitioned by `bucket`, the time a row was filed, so retention
//! costs one partition at a time instead of one delete per event:
//!
//! - **Ahead.** [`Store::ensure_event_partitions`] creates the next
//!   partitions before any insert needs them, idempotently, from any
//!   replica (serialized by an advisory lock). There is no default
//!   partition: it would forbid `DETACH … CONCURRENTLY`.
//! - **Expiry.** [`Store::expire_event_partitions`] detaches and drops a
//!   partition once every job pruned by retention has had time to go. The
//!   events of jobs that still exist (running for long, delayed, within a
//!   longer retention, kept until deleted, or with events the relay has
//!   not yet published) are re-filed first: into the newest partitions, or
//!   into `job_events_kept` when their job is kept until deleted. The rest
//!   belong to pruned jobs and go with the partition.
//!
//! Two fixed partitions exist besides the dated ones: `job_events_v4` (the
//! history from before schema v5, expired like a partition that ended when
//! the first dated one began) and `job_events_kept` (bucket `infinity`,
//! never dropped; its rows go one by one with their jobs).

use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};
use uuid::Uuid;

use crate::conn::SessionLock;
use crate::retention::Retentions;
use crate::{Result, Store};

/// Advisory-lock key of the partition maintainer ("jqparts").
const PARTITIONS_LOCK: i64 = 0x006a_7170_6172_7473;

/// Partitions kept ready beyond the one that holds now.
pub const AHEAD: u32 = 3;

/// The default width of a partition (`retention.partition_s`).
pub const DEFAULT_WIDTH: Duration = Duration::from_secs(24 * 3600);

/// Job ids re-filed per statement when a partition expires.
const REFILE_BATCH: usize = 1000;

/// How long a DDL statement waits for its lock before giving up until the
/// next pass: a statement waiting for a lock makes every later one wait
/// behind it.
const DDL_LOCK_TIMEOUT: &str = "5s";

/// Name format of a dated partition's bounds (UTC).
const NAME_TIME: &str = "%Y%m%dt%H%M%S";

/// What one partition of `job_events` holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Span {
    /// Rows filed in `[from, to)`.
    Dated { from: DateTime<Utc>, to: DateTime<Utc> },
    /// The history from before schema v5.
    V4,
    /// Rows of jobs kept until deleted.
    Kept,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    pub name: String,
    pub span: Span,
    /// A `DETACH … CONCURRENTLY` was interrupted; the next pass finishes it.
    pub detaching: bool,
}

/// A partition that was dropped, and how many of its rows were re-filed
/// first because their job still exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expired {
    pub name: String,
    pub refiled: u64,
}

/// The name of the partition of `[from, to)`.
pub fn dated_name(from: DateTime<Utc>, to: DateTime<Utc>) -> String {
    format!("job_events_{}_{}", from.format(NAME_TIME), to.format(NAME_TIME))
}

fn parse_name(name: &str) -> Option<Span> {
    match name {
        "job_events_v4" => return Some(Span::V4),
        "job_events_kept" => return Some(Span::Kept),
        _ => {}
    }
    let (from, to) = name.strip_prefix("job_events_")?.split_once('_')?;
    let at = |s: &str| {
        NaiveDateTime::parse_from_str(s, NAME_TIME)
            .ok()
            .map(|t| t.and_utc())
    };
    Some(Span::Dated {
        from: at(from)?,
        to: at(to)?,
    })
}

/// The start of the `width`-aligned period (since the Unix epoch) that holds `at`.
fn align(at: DateTime<Utc>, width: Duration) -> DateTime<Utc> {
    let w = width.as_secs().max(1) as i64;
    let s = at.timestamp().div_euclid(w) * w;
    DateTime::from_timestamp(s, 0).unwrap_or(at)
}

/// The ranges to create so that the aligned period holding `at` and the
/// `AHEAD` after it are covered, given the dated partitions that exist:
/// each new one starts where an existing one ends (or at an aligned
/// start) and stops at the next existing one or the end of its aligned
/// period, so ranges never overlap and fall back into step, whatever
/// width another replica (or the migration) used.
fn missing(
    existing: &[(DateTime<Utc>, DateTime<Utc>)],
    width: Duration,
    at: DateTime<Utc>,
) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    let step =
        chrono::Duration::from_std(width.max(Duration::from_secs(1))).unwrap_or(chrono::Duration::days(1));
    let mut t = align(at, width);
    let end = t + step * (AHEAD as i32 + 1);
    let mut out = Vec::new();
    while t < end {
        if let Some((_, to)) = existing.iter().find(|(f, to)| *f <= t && t < *to) {
            t = *to;
            continue;
        }
        let next = existing.iter().map(|(f, _)| *f).filter(|f| *f > t).min();
        let period_end = align(t, width) + step;
        let to = next.map_or(period_end, |n| n.min(period_end));
        out.push((t, to));
        t = to;
    }
    out
}

/// The condition on `e.bucket` that selects the rows of `span`.
fn bucket_range(span: Span) -> String {
    match span {
        Span::Dated { from, to } => format!(
            "e.bucket >= '{}' AND e.bucket < '{}'",
            from.to_rfc3339(),
            to.to_rfc3339()
        ),
        Span::V4 => "e.bucket < '1970-01-01'".into(),
        Span::Kept => "e.bucket = 'infinity'".into(),
    }
}

impl Store {
    /// Every partition of `job_events`, dated ones by start; partitions
    /// jq did not name are left out (and alone).
    pub async fn event_partitions(&self) -> Result<Vec<Partition>> {
        self.run("event_partitions", || async move {
            let rows: Vec<(String, bool)> = sqlx::query_as(
                "SELECT c.relname::text, i.inhdetachpending FROM pg_inherits i \
                 JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'job_events'::regclass",
            )
            .fetch_all(&self.pool)
            .await?;
            let mut out: Vec<Partition> = rows
                .into_iter()
                .filter_map(|(name, detaching)| {
                    parse_name(&name).map(|span| Partition {
                        name,
                        span,
                        detaching,
                    })
                })
                .collect();
            out.sort_by_key(|p| match p.span {
                Span::V4 => (0, None),
                Span::Dated { from, .. } => (1, Some(from)),
                Span::Kept => (2, None),
            });
            Ok(out)
        })
        .await
    }

    /// Create the partitions `job_events` needs from now (the database's
    /// clock) on; returns the names created.
    pub async fn ensure_event_partitions(&self, width: Duration) -> Result<Vec<String>> {
        let now: DateTime<Utc> = sqlx::query_scalar("SELECT now()").fetch_one(&self.pool).await?;
        self.ensure_event_partitions_at(width, now).await
    }

    /// [`Store::ensure_event_partitions`] as if it were `at` (tests make a
    /// past partition with it). Nothing is created while another replica
    /// maintains the partitions; its pass does the same.
    pub async fn ensure_event_partitions_at(
        &self,
        width: Duration,
        at: DateTime<Utc>,
    ) -> Result<Vec<String>> {
        let mut lock = match self.try_session_lock(PARTITIONS_LOCK).await? {
            Some(l) => l,
            None => return Ok(Vec::new()),
        };
        let r = async {
            let existing: Vec<_> = self
                .event_partitions()
                .await?
                .into_iter()
                .filter_map(|p| match p.span {
                    Span::Dated { from, to } => Some((from, to)),
                    _ => None,
                })
                .collect();
            let mut created = Vec::new();
            for (from, to) in missing(&existing, width, at) {
                let name = dated_name(from, to);
                // A plain table attached afterwards: `CREATE TABLE …
                // PARTITION OF` would lock the parent against every
                // reader and writer, `ATTACH` only against other DDL.
                let mut tx = sqlx::Connection::begin(&mut *lock.conn).await?;
                sqlx::query(&format!("SET LOCAL lock_timeout = '{DDL_LOCK_TIMEOUT}'"))
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(&format!("CREATE TABLE {name} (LIKE job_events)"))
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(&format!(
                    "ALTER TABLE job_events ATTACH PARTITION {name} FOR VALUES FROM ('{}') TO ('{}')",
                    from.to_rfc3339(),
                    to.to_rfc3339()
                ))
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                tracing::info!(partition = %name, "job_events partition created");
                created.push(name);
            }
            Ok(created)
        }
        .await;
        lock.release(r).await
    }

    /// Drop the partitions of `job_events` whose rows all belong to jobs
    /// retention has deleted, after re-filing the rows of jobs that still
    /// exist. A partition expires when it ended longer ago than the longest
    /// finite retention of any queue, plus its own width (a grace for
    /// transactions that began inside it); with no finite retention no job
    /// is ever pruned and nothing expires.
    pub async fn expire_event_partitions(&self, server: Retentions) -> Result<Vec<Expired>> {
        let mut lock = match self.try_session_lock(PARTITIONS_LOCK).await? {
            Some(l) => l,
            None => return Ok(Vec::new()),
        };
        let r = self.expire_locked(&mut lock, server).await;
        lock.release(r).await
    }

    async fn expire_locked(&self, lock: &mut SessionLock, server: Retentions) -> Result<Vec<Expired>> {
        let secs = |d: Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
        let (now, longest): (DateTime<Utc>, Option<i64>) = sqlx::query_as(
            "SELECT now(), (SELECT max(s) FROM ( \
                 SELECT coalesce(retain_done_s, $1) AS s FROM queues \
                 UNION ALL SELECT coalesce(retain_dead_s, $2) FROM queues) x WHERE s > 0)",
        )
        .bind(secs(server.done))
        .bind(secs(server.dead_lettered))
        .fetch_one(&self.pool)
        .await?;
        let parts = self.event_partitions().await?;
        let mut out = Vec::new();
        // An interrupted detach is finished first, whatever the retention.
        for p in parts.iter().filter(|p| p.detaching) {
            self.drop_partition(lock, &p.name, true).await?;
            out.push(Expired {
                name: p.name.clone(),
                refiled: 0,
            });
        }
        let Some(longest) = longest else { return Ok(out) };
        let longest = chrono::Duration::seconds(longest.min(i64::from(i32::MAX)));
        let first_dated = parts.iter().find_map(|p| match p.span {
            Span::Dated { from, .. } => Some(from),
            _ => None,
        });
        for p in parts.iter().filter(|p| !p.detaching) {
            let (ended, width) = match p.span {
                Span::Dated { from, to } => (to, to - from),
                Span::V4 => (first_dated.unwrap_or(now), chrono::Duration::zero()),
                Span::Kept => continue,
            };
            if ended + longest + width > now {
                continue;
            }
            let refiled = self.refile(p, server).await?;
            self.drop_partition(lock, &p.name, false).await?;
            tracing::info!(partition = %p.name, refiled, "job_events partition expired and dropped");
            out.push(Expired {
                name: p.name.clone(),
                refiled,
            });
        }
        Ok(out)
    }

    /// Move the rows of `p` whose job still exists out of it. The jobs are
    /// found by a read (no transaction id, so the relay's window is not
    /// held back while it scans the partition), then moved in short
    /// batches; no row can arrive in `p` meanwhile, its range is past.
    async fn refile(&self, p: &Partition, server: Retentions) -> Result<u64> {
        let secs = |d: Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
        let jobs: Vec<Uuid> = sqlx::query_scalar(&format!(
            "SELECT DISTINCT e.job_id FROM {} e WHERE EXISTS (SELECT 1 FROM jobs j WHERE j.id = e.job_id)",
            p.name
        ))
        .fetch_all(&self.pool)
        .await?;
        let range = bucket_range(p.span);
        let sql = format!(
            "UPDATE job_events e SET bucket = CASE \
                 WHEN (j.status = 'DONE' AND coalesce(q.retain_done_s, $2) = 0) \
                   OR (j.status = 'DEAD_LETTERED' AND coalesce(q.retain_dead_s, $3) = 0) \
                 THEN 'infinity'::timestamptz ELSE now() END \
             FROM jobs j JOIN queues q ON q.name = j.queue \
             WHERE e.job_id = ANY($1) AND j.id = e.job_id AND {range}"
        );
        let mut moved = 0;
        for chunk in jobs.chunks(REFILE_BATCH) {
            moved += sqlx::query(&sql)
                .bind(chunk)
                .bind(secs(server.done))
                .bind(secs(server.dead_lettered))
                .execute(&self.pool)
                .await?
                .rows_affected();
        }
        Ok(moved)
    }

    /// Detach `name` without blocking readers and writers of `job_events`
    /// (or finish an interrupted detach), then drop it.
    async fn drop_partition(&self, lock: &mut SessionLock, name: &str, finalize: bool) -> Result<()> {
        sqlx::query(&format!("SET lock_timeout = '{DDL_LOCK_TIMEOUT}'"))
            .execute(&mut *lock.conn)
            .await?;
        // Not in a transaction block: CONCURRENTLY commits in two steps.
        let how = if finalize { "FINALIZE" } else { "CONCURRENTLY" };
        sqlx::query(&format!("ALTER TABLE job_events DETACH PARTITION {name} {how}"))
            .execute(&mut *lock.conn)
            .await?;
        sqlx::query(&format!("DROP TABLE {name}"))
            .execute(&mut *lock.conn)
            .await?;
        sqlx::query("RESET lock_timeout").execute(&mut *lock.conn).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn jq_152_partition_names_round_trip_their_range() {
        let (from, to) = (t("2026-12-03T00:00:00Z"), t("2026-12-04T00:00:00Z"));
        let name = dated_name(from, to);
        assert_eq!(name, "job_events_20261203t000000_20261204t000000");
        assert!(name.len() < 63, "PostgreSQL truncates longer names");
        assert_eq!(parse_name(&name), Some(Span::Dated { from, to }));
        assert_eq!(parse_name("job_events_v4"), Some(Span::V4));
        assert_eq!(parse_name("job_events_kept"), Some(Span::Kept));
        assert_eq!(parse_name("job_events_archive"), None);
    }

    #[test]
    fn jq_152_missing_ranges_cover_ahead_without_overlapping_what_exists() {
        let day = DEFAULT_WIDTH;
        let at = t("2026-12-03T10:00:00Z");
        // Nothing yet: today and three days ahead, aligned to midnight UTC.
        let all = missing(&[], day, at);
        assert_eq!(all.len(), 4);
        assert_eq!(all[0], (t("2026-12-03T00:00:00Z"), t("2026-12-04T00:00:00Z")));
        assert_eq!(all[3].1, t("2026-12-07T00:00:00Z"));
        // All there: nothing to do, again and again.
        assert!(missing(&all, day, at).is_empty());
        // Another replica made hourly ones for today's noon to 14:00: the
        // day is split around them, never overlapping.
        let hours = [(t("2026-12-03T12:00:00Z"), t("2026-12-03T14:00:00Z"))];
        let got = missing(&hours, day, at);
        assert_eq!(got[0], (t("2026-12-03T00:00:00Z"), t("2026-12-03T12:00:00Z")));
        assert_eq!(
            got[1],
            (t("2026-12-03T14:00:00Z"), t("2026-12-04T00:00:00Z")),
            "back in step"
        );
        assert_eq!(got[2], (t("2026-12-04T00:00:00Z"), t("2026-12-05T00:00:00Z")));
        for (i, a) in got.iter().enumerate() {
            for b in got.iter().skip(i + 1).chain(hours.iter()) {
                assert!(a.1 <= b.0 || b.1 <= a.0, "{a:?} overlaps {b:?}");
            }
        }
        // Narrow partitions (a soak's minute): as many, as narrow.
        let minute = Duration::from_secs(60);
        let got = missing(&[], minute, at);
        assert_eq!(got.len(), 4);
        assert_eq!(got[0], (t("2026-12-03T10:00:00Z"), t("2026-12-03T10:01:00Z")));
    }
}
