//! The claim (SPEC §4): hand due PENDING jobs to one worker, in dispatch
//! order, each exactly once.
//!
//! PostgreSQL alone guarantees single assignment (FR-015 jq+): candidates
//! are locked with `FOR UPDATE SKIP LOCKED`, so concurrent claimers — other
//! tasks or other server replicas — never see the same row, and the update is
//! guarded by the state read, as always. Per-queue caps (JQ-140) are taken
//! under the queue row's lock so they hold across replicas.

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;
use std::time::Duration;

use jq_core::records::Assignment;
use jq_core::weights::{PriorityWeights, RoundRobin};
use jq_core::{BackoffPolicy, Command, DispatchKey, JobStatus};
use uuid::Uuid;

use crate::executor::{Order, Row, Verdict};
use crate::marks::{Announcement, Section, Start, View};
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
    priority_weights: Option<String>,
    priority_credit: Option<Vec<i64>>,
}

impl QueueCaps {
    /// Claimed under the queue row's lock: caps and priority weights hold
    /// cluster-wide only when claimers of the queue take turns.
    fn serialized(&self) -> bool {
        self.concurrency_limit.is_some() || self.rate_limit_per_s.is_some() || self.priority_weights.is_some()
    }

    fn weights(&self) -> Option<PriorityWeights> {
        self.priority_weights.as_deref().and_then(crate::rows::weights)
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
    q.backoff_base_ms, q.backoff_max_ms, q.priority_weights, q.priority_credit";

/// The scan of one section (queue `m.queue`, priority `m.priority`) of the
/// claim index in FIFO order, from the section's mark (ADR 0021: past the
/// entries of jobs already taken), stopping at the limit, skipping rows
/// other claimers hold. `m` is a row of [`MARKS`].
const SECTION_SCAN: &str = "FROM jobs j \
     WHERE j.queue = m.queue AND j.priority = m.priority AND j.status = 'PENDING' AND j.phase = 0 \
       AND (j.created_at, j.seq) >= (coalesce(m.c, '-infinity'::timestamptz), coalesce(m.s, '-9223372036854775808'::int8)) \
       AND j.not_before <= now() AND (j.expires_at IS NULL OR j.expires_at > now()) \
     ORDER BY j.created_at, j.seq LIMIT $LIMIT FOR UPDATE SKIP LOCKED";

/// The sections' marks ([`crate::marks::View`]), from parameters `$M..$M+3`.
const MARKS: &str =
    "unnest($M::text[], $M1::int2[], $M2::timestamptz[], $M3::int8[]) AS m(queue, priority, c, s)";

/// A queue's candidates: every section's scan, from its mark, each up to
/// `limit`; `queue` names the queue, `also` narrows the sections, and the
/// marks are parameters from `$first`.
fn sections(queue: &str, also: &str, limit: &str, first: u32) -> String {
    let marks = MARKS
        .replace("$M3", &format!("${}", first + 3))
        .replace("$M2", &format!("${}", first + 2))
        .replace("$M1", &format!("${}", first + 1))
        .replace("$M", &format!("${first}"));
    let scan = SECTION_SCAN.replace("$LIMIT", limit);
    format!(
        "SELECT j.* FROM (SELECT * FROM {marks} WHERE m.queue = {queue}{also}) m \
         CROSS JOIN LATERAL (SELECT {JOB_COLUMNS} {scan}) j"
    )
}

/// One capped queue's candidates (`$1`, up to `$2` per priority), read
/// under its queue row's lock; marks from `$3`.
fn candidates_sql() -> String {
    sections("$1", "", "$2", 3)
}

/// A weighted queue's candidates, read under its queue row's lock: up to
/// `$4` per priority of each band with work (`$2` lowest, `$3` highest
/// priority, highest band first), in dispatch order; marks from `$5`.
fn band_candidates_sql() -> String {
    let scan = sections("$1", " AND m.priority BETWEEN b.lo AND b.hi", "$4", 5);
    format!(
        "SELECT b.band - 1 AS band, j.* FROM unnest($2::int4[], $3::int4[]) WITH ORDINALITY AS b(lo, hi, band) \
         CROSS JOIN LATERAL ({scan}) j"
    )
}

static CLAIM_SQL: LazyLock<String> = LazyLock::new(claim_sql);
static CANDIDATES_SQL: LazyLock<String> = LazyLock::new(candidates_sql);
static BAND_CANDIDATES_SQL: LazyLock<String> = LazyLock::new(band_candidates_sql);

/// A row of [`band_candidates_sql`].
struct BandRow {
    band: usize,
    job: JobRow,
}

impl<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> for BandRow {
    fn from_row(row: &'r sqlx::postgres::PgRow) -> std::result::Result<Self, sqlx::Error> {
        use sqlx::Row;
        let band: i64 = row.try_get("band")?;
        Ok(BandRow {
            band: usize::try_from(band).unwrap_or(0),
            job: JobRow::from_row(row)?,
        })
    }
}

/// What one queue offers a claim, in the order it should be handed out:
/// dispatch order, or for a weighted queue the round-robin's order. The
/// claim takes from the lanes' heads, best first, so a lane always gives a
/// prefix of what it offered.
struct Lane {
    queue: String,
    rows: std::collections::VecDeque<JobRow>,
    /// Set for a weighted queue: what it needs to store the round-robin's
    /// credit after the picks actually handed out.
    weighted: Option<WeightedLane>,
}

struct WeightedLane {
    queue: String,
    weights: PriorityWeights,
    start: RoundRobin,
    available: Vec<usize>,
}

fn key(r: &JobRow) -> DispatchKey {
    DispatchKey {
        priority: r.priority.clamp(0, 9) as u8,
        created_at_micros: r.created_at.timestamp_micros(),
        seq: r.seq,
    }
}

/// Up to `limit` rows from the lanes, always the best head next (FR-014
/// across queues), with how many each lane gave.
fn merge(lanes: &mut [Lane], limit: usize) -> (Vec<JobRow>, Vec<usize>) {
    let mut out = Vec::with_capacity(limit);
    let mut taken = vec![0; lanes.len()];
    while out.len() < limit {
        let best = lanes
            .iter()
            .enumerate()
            .filter_map(|(i, l)| l.rows.front().map(|r| (i, key(r))))
            .min_by_key(|(_, k)| *k);
        let Some((i, _)) = best else { break };
        out.extend(lanes[i].rows.pop_front());
        taken[i] += 1;
    }
    (out, taken)
}

/// Up to `limit` rows shared between the queues by the workers' weights
/// (JQ-123, `weights[i]` for `queues[i]`): the round-robin over the queues
/// whose lanes have rows, each pick the lane's head. Returns the rows, how
/// many each lane gave, and the round-robin's state after them.
fn share(
    lanes: &mut [Lane],
    queues: &[String],
    weights: &[u32],
    rr: &RoundRobin,
    limit: usize,
) -> (Vec<JobRow>, Vec<usize>, RoundRobin) {
    let lane_of: Vec<Option<usize>> = queues
        .iter()
        .map(|q| lanes.iter().position(|l| &l.queue == q))
        .collect();
    let available: Vec<usize> = lane_of
        .iter()
        .map(|l| l.map_or(0, |i| lanes[i].rows.len()))
        .collect();
    let mut rr = RoundRobin::resume(rr.credit.clone(), queues.len());
    let mut out = Vec::with_capacity(limit);
    let mut taken = vec![0; lanes.len()];
    for q in rr.plan(weights, &available, limit) {
        let i = lane_of[q].expect("a queue with rows has a lane");
        out.extend(lanes[i].rows.pop_front());
        taken[i] += 1;
    }
    (out, taken, rr)
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
    let capped = "(q.concurrency_limit IS NOT NULL OR q.rate_limit_per_s IS NOT NULL OR q.priority_weights IS NOT NULL)";
    let scan = sections("q.name", "", &format!("CASE WHEN {capped} THEN 0 ELSE $3 END"), 4);
    format!(
        "SELECT {CAPS_COLUMNS}, \
                CASE WHEN j.id IS NOT NULL OR {capped} THEN \
                    (SELECT coalesce(array_agg(w.id), '{{}}') FROM \
                        (SELECT id FROM workers WHERE id = ANY($2) AND status = 'ONLINE' ORDER BY id FOR SHARE) w) \
                END AS online, j.* \
         FROM queues q LEFT JOIN LATERAL ({scan}) j ON true \
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

/// Sections and where their marks go.
type Moves = Vec<(Section, Start)>;

/// A row a claim's scan returned (and locked): its section, key and id.
struct Seen {
    section: Section,
    at: Start,
    id: Uuid,
}

impl Seen {
    fn of(r: &JobRow) -> Seen {
        Seen {
            section: (r.queue.clone(), r.priority.clamp(0, 9) as u8),
            at: Start {
                created_at: r.created_at,
                seq: r.seq,
            },
            id: r.id,
        }
    }
}

/// Where each section's mark goes after a claim that saw `seen` and took
/// `taken` (a prefix of each section's rows in key order): to the first
/// row left, or past the last one taken. The first is also returned as
/// what to announce: the row was locked, and claims elsewhere may have
/// passed it.
fn marks_after(seen: &[Seen], taken: &HashSet<Uuid>) -> (Moves, Moves) {
    let mut by_section: HashMap<&Section, (Option<Start>, Option<Start>)> = HashMap::new();
    for s in seen {
        let e = by_section.entry(&s.section).or_default();
        if taken.contains(&s.id) {
            e.0 = e.0.max(Some(s.at));
        } else {
            e.1 = Some(e.1.map_or(s.at, |l: Start| l.min(s.at)));
        }
    }
    let mut moves = vec![];
    let mut left = vec![];
    for (section, (last_taken, first_left)) in by_section {
        match (first_left, last_taken) {
            (Some(l), _) => {
                moves.push((section.clone(), l));
                left.push((section.clone(), l));
            }
            (None, Some(t)) => moves.push((section.clone(), t.after())),
            (None, None) => {}
        }
    }
    left.sort();
    (moves, left)
}

/// Bind a view's marks as the next four parameters.
fn bind_view<'q, O>(
    q: sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments>,
    v: &'q View,
) -> sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments> {
    q.bind(&v.queues)
        .bind(&v.priorities)
        .bind(&v.created_at)
        .bind(&v.seq_at)
}

impl Store {
    /// The plan PostgreSQL uses for the claim scan (NFR-012 checks, and
    /// operators debugging a slow claim).
    pub async fn explain_claim(&self, queue: &str, limit: u32) -> Result<String> {
        let view = self.marks.view(&[queue.to_string()]);
        let mut tx = self.pool.begin().await?;
        let sql = format!("EXPLAIN {}", *CLAIM_SQL);
        let q = sqlx::query_as::<_, (String,)>(&sql)
            .bind([queue])
            .bind(Vec::<String>::new())
            .bind(i64::from(limit));
        let lines: Vec<(String,)> = bind_view(q, &view).fetch_all(&mut *tx).await?;
        let lines: Vec<String> = lines.into_iter().map(|(l,)| l).collect();
        tx.rollback().await?;
        Ok(lines.join("\n"))
    }

    /// The claim of `queue` run under `EXPLAIN (ANALYZE, BUFFERS)` from
    /// this store's marks, and rolled back: what it reads (NFR-012 checks
    /// under a pinned horizon, ADR 0021).
    pub async fn explain_analyze_claim(&self, queue: &str, limit: u32) -> Result<String> {
        let view = self.marks.view(&[queue.to_string()]);
        let sql = format!("EXPLAIN (ANALYZE, BUFFERS) {}", *CLAIM_SQL);
        let mut tx = self.pool.begin().await?;
        let q = sqlx::query_as::<_, (String,)>(&sql)
            .bind([queue])
            .bind(Vec::<String>::new())
            .bind(i64::from(limit));
        let lines: Vec<(String,)> = bind_view(q, &view).fetch_all(&mut *tx).await?;
        tx.rollback().await?;
        Ok(lines.into_iter().map(|(l,)| l).collect::<Vec<_>>().join("\n"))
    }

    /// How often this store's claims look at deferred jobs that fell due
    /// (default [`crate::marks::DEFERRED_EVERY`]; tests use zero).
    pub fn look_at_deferred_every(&self, every: Duration) {
        self.marks.set_deferred_every(every);
    }

    /// The plan of a weighted queue's band scan (NFR-012 checks), for the
    /// bands of `weights`.
    pub async fn explain_weighted_claim(
        &self,
        queue: &str,
        weights: &PriorityWeights,
        limit: u32,
    ) -> Result<String> {
        let lows: Vec<i32> = weights.bands().iter().map(|b| i32::from(b.lowest)).collect();
        let highs: Vec<i32> = weights.bands().iter().map(|b| i32::from(b.highest)).collect();
        let view = self.marks.view(&[queue.to_string()]);
        let mut tx = self.pool.begin().await?;
        let sql = format!("EXPLAIN {}", *BAND_CANDIDATES_SQL);
        let q = sqlx::query_as::<_, (String,)>(&sql)
            .bind(queue)
            .bind(&lows)
            .bind(&highs)
            .bind(i64::from(limit));
        let lines: Vec<(String,)> = bind_view(q, &view).fetch_all(&mut *tx).await?;
        let lines: Vec<String> = lines.into_iter().map(|(l,)| l).collect();
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
        self.look_at_deferred().await;
        let (got, _) = self
            .run("claim_jobs", || self.claim_tx(wants, queues, None))
            .await?;
        Ok(got)
    }

    /// [`Store::claim_for`] with the workers' queue weights (JQ-123, one
    /// per queue): the claim's jobs are shared between the queues that have
    /// work by the smooth weighted round-robin continued from `shares`, and
    /// a queue with fewer gives the rest to the others. Returns the
    /// round-robin's state after the jobs handed out, for the next claim.
    pub async fn claim_weighted(
        &self,
        wants: &[(String, u32)],
        queues: &[String],
        weights: &[u32],
        shares: &RoundRobin,
    ) -> Result<(Vec<(String, Assignment)>, RoundRobin)> {
        if queues.is_empty() || wants.iter().all(|(_, n)| *n == 0) {
            return Ok((vec![], shares.clone()));
        }
        self.look_at_deferred().await;
        let (got, after) = self
            .run("claim_jobs", || {
                self.claim_tx(wants, queues, Some((weights, shares)))
            })
            .await?;
        Ok((got, after.unwrap_or_else(|| shares.clone())))
    }

    async fn claim_tx(
        &self,
        wants: &[(String, u32)],
        queues: &[String],
        shares: Option<(&[u32], &RoundRobin)>,
    ) -> Result<(Vec<(String, Assignment)>, Option<RoundRobin>)> {
        let view = self.marks.view(queues);
        let mut conn = self.conn().await?;
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        let got = self.claim_in(&mut tx, wants, queues, shares, &view).await;
        // Committed or rolled back here, also when it gives nothing: its
        // read may have locked candidates.
        let got = crate::finish(tx, got).await;
        match conn.settle(got) {
            Ok(((assigned, verdicts), after, (moves, left))) => {
                self.marks.advance(&view, &moves);
                // Rows left are announced to every server by the commit;
                // this server's other claims in flight take them in now.
                for (section, at) in &left {
                    self.marks.lower(section, *at);
                }
                self.report_committed(&verdicts);
                Ok((assigned, after))
            }
            Err(e) => {
                // Rows this claim locked are PENDING again, and claims
                // elsewhere may have passed them: every server forgets its
                // marks (ADR 0021). Best effort: a server that missed this
                // finds them at its next sweep (`SWEEP_EVERY`).
                self.marks.reset();
                let forget = Announcement::render(&self.wake_tag, &[]) + "\n*";
                let notify = sqlx::query("SELECT pg_notify('jq_wake', $1)")
                    .bind(forget)
                    .execute(&self.pool);
                let _ = tokio::time::timeout(Duration::from_secs(1), notify).await;
                Err(e)
            }
        }
    }

    async fn claim_in(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
        wants: &[(String, u32)],
        queues: &[String],
        shares: Option<(&[u32], &RoundRobin)>,
        view: &View,
    ) -> Result<(Claimed, Option<RoundRobin>, (Moves, Moves))> {
        let asked: u32 = wants.iter().map(|(_, n)| *n).sum();
        let ids: Vec<&str> = wants.iter().map(|(w, _)| w.as_str()).collect();
        // One statement: the candidates, their queues' caps and the workers
        // that are ONLINE (FOR SHARE: the heartbeat reaper's OFFLINE update
        // waits for this claim, then reclaims what it took — no job is left
        // on a dead worker). Caps are applied below; rows locked beyond
        // them are simply not claimed and unlock at commit.
        let q = sqlx::query_as(CLAIM_SQL.as_str())
            .bind(queues)
            .bind(&ids)
            .bind(i64::from(asked));
        let rows: Vec<ClaimRow> = bind_view(q, view).fetch_all(&mut **tx).await?;
        // Every row the scans return is locked until commit: the marks move
        // past what is taken and stop at what is left.
        let mut seen: Vec<Seen> = rows.iter().filter_map(|r| r.job.as_ref()).map(Seen::of).collect();
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
            let moves = self.settle_marks(tx, &seen, &HashSet::new()).await?;
            return Ok(((vec![], vec![]), None, moves));
        }
        let mut caps: Vec<QueueCaps> = vec![];
        let mut plain: Vec<JobRow> = vec![];
        for r in rows {
            plain.extend(r.job);
            if !caps.iter().any(|c| c.name == r.caps.name) {
                caps.push(r.caps);
            }
        }
        let mut lanes: Vec<Lane> = vec![];
        let serialized: Vec<String> = caps
            .iter()
            .filter(|c| c.serialized())
            .map(|c| c.name.clone())
            .collect();
        if !serialized.is_empty() {
            // Re-read those queues under their row lock (name order: no
            // deadlocks between claimers), count what runs, then take what
            // each allows.
            let locked: Vec<QueueCaps> = sqlx::query_as(&format!(
                "SELECT {CAPS_COLUMNS} FROM queues q WHERE q.name = ANY($1) AND NOT q.paused ORDER BY q.name \
                 FOR NO KEY UPDATE"
            ))
            .bind(&serialized)
            .fetch_all(&mut **tx)
            .await?;
            let capped: Vec<&str> = locked
                .iter()
                .filter(|c| c.concurrency_limit.is_some())
                .map(|c| c.name.as_str())
                .collect();
            let in_flight: HashMap<String, i64> = if capped.is_empty() {
                HashMap::new()
            } else {
                let counts: Vec<(String, i64)> = sqlx::query_as(
                    "SELECT queue, count(*) FROM jobs WHERE queue = ANY($1) AND status IN ('ASSIGNED', 'RUNNING') \
                     AND phase = 1 GROUP BY queue",
                )
                .bind(&capped)
                .fetch_all(&mut **tx)
                .await?;
                counts.into_iter().collect()
            };
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
                let lane = match c.weights() {
                    None => {
                        let q = sqlx::query_as(CANDIDATES_SQL.as_str()).bind(&c.name).bind(room);
                        let mut rows: Vec<JobRow> = bind_view(q, view).fetch_all(&mut **tx).await?;
                        seen.extend(rows.iter().map(Seen::of));
                        rows.sort_by_key(key);
                        Lane {
                            queue: c.name.clone(),
                            rows: rows.into(),
                            weighted: None,
                        }
                    }
                    Some(weights) => {
                        let (lane, scanned) = self.weighted_lane(tx, c, weights, room, view).await?;
                        seen.extend(scanned);
                        lane
                    }
                };
                lanes.push(lane);
            }
            caps.retain(|c| !c.serialized());
            caps.extend(locked);
        }
        // The queues without caps: a lane each, in dispatch order.
        plain.sort_by_key(key);
        for r in plain {
            match lanes.iter_mut().find(|l| l.queue == r.queue) {
                Some(l) => l.rows.push_back(r),
                None => lanes.push(Lane {
                    queue: r.queue.clone(),
                    rows: vec![r].into(),
                    weighted: None,
                }),
            }
        }
        let (candidates, taken, after) = match shares {
            None => {
                let (c, t) = merge(&mut lanes, limit as usize);
                (c, t, None)
            }
            Some((weights, rr)) => {
                let (c, t, rr) = share(&mut lanes, queues, weights, rr, limit as usize);
                (c, t, Some(rr))
            }
        };
        // The round-robin's credit after what each weighted queue gave.
        let mut credit: HashMap<String, Vec<i64>> = HashMap::new();
        for (lane, k) in lanes.iter().zip(&taken) {
            if let Some(w) = &lane.weighted
                && *k > 0
            {
                let mut rr = w.start.clone();
                rr.plan(&w.weights.weights(), &w.available, *k);
                credit.insert(w.queue.clone(), rr.credit);
            }
        }

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
        let taken: HashSet<Uuid> = candidates.iter().map(|r| r.id).collect();
        let moves = self.settle_marks(tx, &seen, &taken).await?;
        // Locked PENDING rows: every verdict is Applied. Anything else is
        // refused as an error, not handed out.
        let verdicts = self.execute_in(&mut **tx, work).await?;
        if let Some(k) = verdicts.iter().position(|v| v.applied_id().is_none()) {
            return Err(match &verdicts[k] {
                Verdict::Refused(e) => e.clone().into(),
                _ => crate::StoreError::Contention(candidates[k].id),
            });
        }

        // Spend the rate tokens of what each rate-limited queue gave, and
        // store where each weighted queue's round-robin stands.
        for c in &caps {
            let tokens = c.tokens_now().map(|t| {
                let used = candidates.iter().filter(|r| r.queue == c.name).count() as f64;
                (t - used).max(0.0)
            });
            let credit = credit.remove(&c.name);
            if tokens.is_none() && credit.is_none() {
                continue;
            }
            sqlx::query(
                "UPDATE queues SET rate_tokens = coalesce($2, rate_tokens), \
                 rate_refilled_at = CASE WHEN $2 IS NULL THEN rate_refilled_at ELSE now() END, \
                 priority_credit = coalesce($3, priority_credit) WHERE name = $1",
            )
            .bind(&c.name)
            .bind(tokens)
            .bind(credit)
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
                    scheduled_at: r.scheduled_at,
                    payload: r.payload,
                    queue: r.queue,
                    state: effects.next.clone(),
                };
                debug_assert!(a.attempt > 0);
                (w.to_string(), a)
            })
            .collect();
        Ok(((assigned, verdicts), after, moves))
    }

    /// The marks' moves after a claim (see [`marks_after`]); rows locked
    /// and left are announced to every server by this transaction's commit.
    async fn settle_marks(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
        seen: &[Seen],
        taken: &HashSet<Uuid>,
    ) -> Result<(Moves, Moves)> {
        let (moves, left) = marks_after(seen, taken);
        if !left.is_empty() {
            sqlx::query("SELECT pg_notify('jq_wake', $1)")
                .bind(Announcement::render(&self.wake_tag, &left))
                .execute(&mut **tx)
                .await?;
        }
        Ok((moves, left))
    }

    /// A weighted queue's offer (FR-025): up to `room` candidates per band
    /// with work, ordered by the smooth weighted round-robin continued from
    /// the credit stored with the queue (read under its row lock, so every
    /// replica continues the same sequence).
    async fn weighted_lane(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
        c: &QueueCaps,
        weights: PriorityWeights,
        room: i64,
        view: &View,
    ) -> Result<(Lane, Vec<Seen>)> {
        let bands = weights.bands();
        let lows: Vec<i32> = bands.iter().map(|b| i32::from(b.lowest)).collect();
        let highs: Vec<i32> = bands.iter().map(|b| i32::from(b.highest)).collect();
        let q = sqlx::query_as(BAND_CANDIDATES_SQL.as_str())
            .bind(&c.name)
            .bind(&lows)
            .bind(&highs)
            .bind(room);
        let rows: Vec<BandRow> = bind_view(q, view).fetch_all(&mut **tx).await?;
        let scanned = rows.iter().map(|r| Seen::of(&r.job)).collect();
        let mut per_band: Vec<Vec<JobRow>> = (0..bands.len()).map(|_| vec![]).collect();
        for r in rows {
            if let Some(b) = per_band.get_mut(r.band) {
                b.push(r.job);
            }
        }
        for b in &mut per_band {
            b.sort_by_key(key);
        }
        let available: Vec<usize> = per_band.iter().map(Vec::len).collect();
        let start = RoundRobin::resume(c.priority_credit.clone().unwrap_or_default(), bands.len());
        let plan = start.clone().plan(&weights.weights(), &available, room as usize);
        let mut per_band: Vec<std::collections::VecDeque<JobRow>> =
            per_band.into_iter().map(Into::into).collect();
        let rows = plan.iter().filter_map(|b| per_band[*b].pop_front()).collect();
        Ok((
            Lane {
                queue: c.name.clone(),
                rows,
                weighted: Some(WeightedLane {
                    queue: c.name.clone(),
                    weights,
                    start,
                    available,
                }),
            },
            scanned,
        ))
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

/// Deferred jobs due since `$1` (`NULL`: ever), the lowest key of each
/// section, through `jobs_deferred_phase` (only jobs whose `not_before`
/// lies after their `created_at` have an entry), and the database's time.
const DEFERRED_SQL: &str = "\
    WITH due AS (SELECT queue, priority, created_at, seq FROM jobs \
        WHERE phase = 0 AND not_before > created_at AND not_before > coalesce($1, '-infinity'::timestamptz) \
          AND not_before <= now() OFFSET 0), \
    d AS (SELECT DISTINCT ON (queue, priority) queue, priority, created_at, seq FROM due \
        ORDER BY queue, priority, created_at, seq) \
    SELECT now(), coalesce(array_agg(queue), '{}'), coalesce(array_agg(priority), '{}'), \
           coalesce(array_agg(created_at), '{}'), coalesce(array_agg(seq), '{}') FROM d";

/// Each marked section's lowest due PENDING key below its mark (the
/// claim's predicate), from where its last sweep left off (`NULL`: the
/// index's start).
const SWEEP_SQL: &str = "\
    SELECT m.queue, m.priority, j.created_at, j.seq \
    FROM unnest($1::text[], $2::int2[], $3::timestamptz[], $4::int8[], $5::timestamptz[], $6::int8[]) \
        AS m(queue, priority, c, s, fc, fs) \
    CROSS JOIN LATERAL (SELECT created_at, seq FROM jobs \
        WHERE queue = m.queue AND priority = m.priority AND status = 'PENDING' AND phase = 0 \
          AND (created_at, seq) < (m.c, m.s) \
          AND (created_at, seq) >= (coalesce(m.fc, '-infinity'::timestamptz), coalesce(m.fs, '-9223372036854775808'::int8)) \
          AND not_before <= now() AND (expires_at IS NULL OR expires_at > now()) \
        ORDER BY created_at, seq LIMIT 1) j";

type DeferredRow = (
    chrono::DateTime<chrono::Utc>,
    Vec<String>,
    Vec<i16>,
    Vec<chrono::DateTime<chrono::Utc>>,
    Vec<i64>,
);

impl Store {
    /// The plan of the look at deferred jobs (NFR-012 checks).
    pub async fn explain_deferred(&self) -> Result<String> {
        let lines: Vec<String> = sqlx::query_scalar(&format!("EXPLAIN {DEFERRED_SQL}"))
            .bind(None::<chrono::DateTime<chrono::Utc>>)
            .fetch_all(&self.pool)
            .await?;
        Ok(lines.join("\n"))
    }

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
        Announcement::parse(n.payload()).tag == &*self.wake_tag
    }

    /// Take in what a wake notification announces (ADR 0021): sections
    /// whose marks must come down, or forget them all. Returns whether a
    /// mark moved, so that the dispatcher claims again even on its own
    /// notification (a submit that committed after a later one was taken).
    pub fn heard_wake(&self, n: &sqlx::postgres::PgNotification) -> bool {
        let a = Announcement::parse(n.payload());
        if a.forget_all {
            self.marks.reset();
            return true;
        }
        let mut moved = false;
        for (section, at) in &a.lower {
            moved |= self.marks.lower(section, *at);
        }
        moved
    }

    /// Forget every mark and look at every deferred job at the next claim:
    /// notifications may have been missed (the LISTEN connection was
    /// lost), or jobs' keys were changed behind the store's back (an
    /// operator's SQL; tests that move the clock by rewriting rows).
    pub fn forget_marks(&self) {
        self.marks.reset_all();
    }

    /// Look below every mark for a due PENDING job and lower the mark to
    /// the lowest found (ADR 0021: rows a claimer held when its server
    /// died, which the other claims skipped unseen). Off the dispatch
    /// path: its cost grows with the dead entries a pinned horizon keeps
    /// below the marks. Returns the sections lowered.
    pub async fn sweep_marks(&self) -> Result<Vec<Section>> {
        let (marked, at) = self.marks.to_sweep();
        if marked.is_empty() {
            return Ok(vec![]);
        }
        let queues: Vec<&str> = marked.iter().map(|((q, _), _, _)| q.as_str()).collect();
        let priorities: Vec<i16> = marked.iter().map(|((_, p), _, _)| i16::from(*p)).collect();
        let created: Vec<chrono::DateTime<chrono::Utc>> =
            marked.iter().map(|(_, m, _)| m.created_at).collect();
        let seqs: Vec<i64> = marked.iter().map(|(_, m, _)| m.seq).collect();
        let from_created: Vec<Option<chrono::DateTime<chrono::Utc>>> =
            marked.iter().map(|(_, _, f)| f.map(|f| f.created_at)).collect();
        let from_seq: Vec<Option<i64>> = marked.iter().map(|(_, _, f)| f.map(|f| f.seq)).collect();
        let found: Vec<(String, i16, chrono::DateTime<chrono::Utc>, i64)> = self
            .run("sweep_marks", || async {
                Ok(sqlx::query_as(SWEEP_SQL)
                    .bind(&queues)
                    .bind(&priorities)
                    .bind(&created)
                    .bind(&seqs)
                    .bind(&from_created)
                    .bind(&from_seq)
                    .fetch_all(&self.pool)
                    .await?)
            })
            .await?;
        let found: HashMap<Section, Start> = found
            .into_iter()
            .map(|(q, p, created_at, seq)| ((q, p.clamp(0, 9) as u8), Start { created_at, seq }))
            .collect();
        let mut lowered = vec![];
        for (section, mark, _) in &marked {
            let low = found.get(section).copied();
            if let Some(at) = low
                && self.marks.lower(section, at)
            {
                lowered.push(section.clone());
            }
            self.marks.swept(section, *mark, low, at);
        }
        lowered.sort();
        Ok(lowered)
    }

    /// Lower the marks of deferred jobs (submitted with a delay, backing
    /// off, made PENDING again) that fell due since the last look, at most
    /// every [`crate::marks::DEFERRED_EVERY`] (ADR 0021).
    pub(crate) async fn look_at_deferred(&self) {
        let Some(since) = self.marks.deferred_due() else {
            return;
        };
        let got = self
            .run("claim_deferred", || async move {
                let r: DeferredRow = sqlx::query_as(DEFERRED_SQL)
                    .bind(since)
                    .fetch_one(&self.pool)
                    .await?;
                Ok(r)
            })
            .await;
        match got {
            Ok((at, queues, priorities, created_at, seq)) => {
                for (((q, p), c), s) in queues.into_iter().zip(priorities).zip(created_at).zip(seq) {
                    let section = (q, p.clamp(0, 9) as u8);
                    self.marks.lower(
                        &section,
                        Start {
                            created_at: c,
                            seq: s,
                        },
                    );
                }
                self.marks.deferred_seen(at);
            }
            Err(e) => {
                tracing::debug!(error = %e, "looking at deferred jobs failed; the next claim looks again");
                self.marks.deferred_failed();
            }
        }
    }
}
