//! Where the claim starts in each (queue, priority) section of the claim
//! index (ADR 0021): past the entries of jobs already taken, which a
//! transaction open anywhere on the server keeps in the index (a scan can
//! neither skip nor mark them dead while it may still see them).
//!
//! A mark is a low-water mark on the FIFO key (`created_at`, `seq`): no
//! PENDING job that is due has a key below it, except one announced since.
//! Each server keeps its own, in memory; the claim advances them past what
//! it took and lowers them for what it locked and left. Everything else
//! that can leave a due PENDING job below a mark lowers it:
//! - a submit committing after a later-keyed one was claimed (its created_at
//!   is its transaction's start): the submit's `jq_wake` notification,
//!   sent by its commit, names each section's lowest key ([`Announcement`]);
//! - a job made PENDING again (retry, rescue, redrive) or submitted with a
//!   delay: its `not_before` lies after its `created_at`, and the claim's
//!   periodic look at the `jobs_deferred_phase` index lowers the marks of
//!   what fell due since;
//! - a notification missed while the LISTEN connection was down: every
//!   mark is forgotten on a reconnect;
//! - anything else (a claimer whose server died while it held rows: the
//!   other claims skipped them unseen and moved past): the sweep, every
//!   [`SWEEP_EVERY`] off the dispatch path, finds the lowest due key below
//!   each mark and lowers the mark to it, so such a job waits at most that
//!   long. (Forgetting the marks instead, as first built, made the next
//!   claims walk every dead entry the pin keeps: a stall of dispatch that
//!   grew with the pin's age.)

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

/// How often the sweep looks below the marks (see the module's last case).
pub const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// How often the sweep reads each section from its beginning rather than
/// from where the last one left off: for a row of a transaction older than
/// the last sweep (it started before, committed after), announced, then
/// held by a claimer whose server died — rare twice over, and found
/// within this.
pub const FULL_SWEEP_EVERY: Duration = Duration::from_secs(600);

/// How often the maintenance floors are forgotten: the assignment
/// reaper's and the dead-worker reaper's look at recently lost workers
/// only; their next pass reads everything.
pub const RESET_EVERY: Duration = Duration::from_secs(60);

/// How often the claim looks for deferred jobs that fell due.
pub const DEFERRED_EVERY: Duration = Duration::from_millis(250);

/// How far back each look at deferred jobs reaches before the previous one:
/// a job made PENDING with a `not_before` is seen if its transaction
/// commits within this of its `not_before`.
pub const DEFERRED_OVERLAP: Duration = Duration::from_secs(10);

/// The lowest key a section's scan starts from (inclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Start {
    pub created_at: DateTime<Utc>,
    pub seq: i64,
}

impl Start {
    /// The first key after `self`: `seq` is unique, so `(c, s + 1)` is the
    /// first key that can follow `(c, s)`.
    pub fn after(self) -> Start {
        Start {
            created_at: self.created_at,
            seq: self.seq.saturating_add(1),
        }
    }
}

/// A section of the claim index.
pub type Section = (String, u8);

/// A section the sweep reads: its mark and its floor.
pub type ToSweep = (Section, Start, Option<Start>);

/// When a sweep read the marks: (resets, lowerings) so far.
pub type SweepAt = (u64, u64);

#[derive(Debug, Default)]
struct Inner {
    /// Absent: scan the section from its beginning.
    at: HashMap<Section, Start>,
    /// Every lowering, numbered, newest last (at most [`LOG_LEN`]): a
    /// claim's advance takes in those made since its view, which may name
    /// jobs its scan could not see yet.
    log: VecDeque<(u64, Section, Start)>,
    seq: u64,
    /// Bumped by every reset: an advance from a view before it is dropped.
    resets: u64,
    /// When the assignment floor was last forgotten.
    floor_reset_at: Option<Instant>,
    /// Where the next sweep of each section starts: no due PENDING row
    /// below it can be left unannounced (see [`Marks::swept`]).
    swept: HashMap<Section, Start>,
    /// When a sweep last started from every section's beginning.
    full_sweep_at: Option<Instant>,
    deferred_at: Option<Instant>,
    /// The database's time of the last look at deferred jobs.
    deferred_db_time: Option<DateTime<Utc>>,
    /// `None`: [`DEFERRED_EVERY`].
    deferred_every: Option<Duration>,
    /// The assignment reaper's floor: no job ASSIGNED at or before it is
    /// still ASSIGNED past its timeout, except one a pass could not write.
    assigned_floor: Option<DateTime<Utc>>,
    /// When the dead-worker reaper last looked at every in-flight job.
    workers_full_at: Option<Instant>,
}

/// Lowerings kept for advances in flight (a few seconds of submits).
const LOG_LEN: usize = 8192;

/// One server's marks (shared by every handle of a store).
#[derive(Debug, Default)]
pub struct Marks {
    inner: Mutex<Inner>,
}

/// The marks a claim starts from, and the view they came from.
#[derive(Debug, Clone, Default)]
pub struct View {
    /// The last lowering and the resets when the view was taken.
    pub seq: u64,
    pub resets: u64,
    pub queues: Vec<String>,
    pub priorities: Vec<i16>,
    pub created_at: Vec<Option<DateTime<Utc>>>,
    pub seq_at: Vec<Option<i64>>,
}

impl Marks {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Where each priority of `queues` starts (`None`: from the beginning).
    pub fn view(&self, queues: &[String]) -> View {
        let g = self.lock();
        let mut v = View {
            seq: g.seq,
            resets: g.resets,
            ..View::default()
        };
        for q in queues {
            for p in (0..=9u8).rev() {
                let m = g.at.get(&(q.clone(), p));
                v.queues.push(q.clone());
                v.priorities.push(i16::from(p));
                v.created_at.push(m.map(|m| m.created_at));
                v.seq_at.push(m.map(|m| m.seq));
            }
        }
        v
    }

    /// Where `section` starts now.
    pub fn get(&self, section: &Section) -> Option<Start> {
        self.lock().at.get(section).copied()
    }

    /// After a claim that read `view`: each section's scan gave `seen`
    /// (every row it returned, locked) of which `taken` were claimed, a
    /// prefix in key order. The mark moves to the first row left, or past
    /// the last one taken — or lower, to any key announced since `view`
    /// (a job the claim's snapshot could not see). Dropped if the marks
    /// were reset since, or if the announcements since are no longer all
    /// kept.
    pub fn advance(&self, view: &View, moves: &[(Section, Start)]) {
        let mut g = self.lock();
        if g.resets != view.resets || g.log.front().is_some_and(|(n, _, _)| *n > view.seq + 1) {
            return;
        }
        for (s, to) in moves {
            let since = g
                .log
                .iter()
                .rev()
                .take_while(|(n, _, _)| *n > view.seq)
                .filter(|(_, ls, _)| ls == s)
                .map(|(_, _, at)| *at)
                .min();
            let next = since.map_or(*to, |l| l.min(*to));
            g.at.insert(s.clone(), next);
        }
    }

    /// A due PENDING job of `section` has key `at`: the section's scan must
    /// start at or before it. Returns whether the mark moved.
    pub fn lower(&self, section: &Section, at: Start) -> bool {
        let mut g = self.lock();
        g.seq += 1;
        let n = g.seq;
        g.log.push_back((n, section.clone(), at));
        if g.log.len() > LOG_LEN {
            g.log.pop_front();
        }
        if let Some(f) = g.swept.get_mut(section)
            && *f > at
        {
            *f = at;
        }
        match g.at.get_mut(section) {
            Some(m) if *m > at => {
                *m = at;
                true
            }
            _ => false,
        }
    }

    /// Forget every mark: the next claim of each section scans it from the
    /// beginning.
    pub fn reset(&self) {
        let mut g = self.lock();
        g.at.clear();
        g.swept.clear();
        g.resets += 1;
        g.assigned_floor = None;
        g.workers_full_at = None;
    }

    /// What the sweep looks at: each set mark, where the section's last
    /// sweep left its floor (`None`: the section's beginning), and the
    /// resets and lowerings so far.
    pub fn to_sweep(&self) -> (Vec<ToSweep>, SweepAt) {
        let mut g = self.lock();
        let now = Instant::now();
        if g.full_sweep_at
            .is_none_or(|t| now.duration_since(t) >= FULL_SWEEP_EVERY)
        {
            g.full_sweep_at = Some(now);
            g.swept.clear();
        }
        let v =
            g.at.iter()
                .map(|(s, m)| (s.clone(), *m, g.swept.get(s).copied()))
                .collect();
        (v, (g.resets, g.seq))
    }

    /// A sweep read `section` below `mark` (a snapshot taken after the
    /// mark was read) and lowered it to `found`, if anything: every due
    /// PENDING row it could see is now at or above the lower of the two,
    /// and a row below that can become due and PENDING again only through
    /// what announces it or the deferred look. So the next sweep starts
    /// there: it reads the dead entries of one interval, not of the whole
    /// pin. Every lowering since `at` (resets, lowerings) counts too, and
    /// later ones lower the floor with the mark ([`Marks::lower`]): a claim
    /// that scans from a lowered mark may skip rows a dying claimer holds
    /// there. Dropped if the marks were reset since.
    pub fn swept(&self, section: &Section, mark: Start, found: Option<Start>, at: SweepAt) {
        let mut g = self.lock();
        let (resets, seq) = at;
        if g.resets != resets || g.log.front().is_some_and(|(n, _, _)| *n > seq + 1) {
            return;
        }
        let since = g
            .log
            .iter()
            .rev()
            .take_while(|(n, _, _)| *n > seq)
            .filter(|(_, ls, _)| ls == section)
            .map(|(_, _, at)| *at)
            .min();
        let floor = [Some(mark), found, since]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(mark);
        g.swept.insert(section.clone(), floor);
    }

    /// Where the assignment reaper starts (`None`: from the beginning);
    /// forgotten with the marks and every [`RESET_EVERY`].
    pub fn assigned_floor(&self) -> Option<DateTime<Utc>> {
        let mut g = self.lock();
        let now = Instant::now();
        if g.floor_reset_at
            .is_none_or(|t| now.duration_since(t) >= RESET_EVERY)
        {
            g.floor_reset_at = Some(now);
            g.assigned_floor = None;
        }
        g.assigned_floor
    }

    pub fn set_assigned_floor(&self, floor: Option<DateTime<Utc>>) {
        self.lock().assigned_floor = floor;
    }

    /// Whether the dead-worker reaper should look at every in-flight job
    /// (every [`RESET_EVERY`]) rather than at recently lost workers only.
    pub fn workers_full_due(&self) -> bool {
        let mut g = self.lock();
        let now = Instant::now();
        if g.workers_full_at
            .is_some_and(|t| now.duration_since(t) < RESET_EVERY)
        {
            return false;
        }
        g.workers_full_at = Some(now);
        true
    }

    /// [`Marks::reset`], and the next claim looks at every deferred job.
    pub fn reset_all(&self) {
        self.reset();
        let mut g = self.lock();
        g.deferred_at = None;
        g.deferred_db_time = None;
    }

    /// Whether the claim should look for deferred jobs that fell due, and
    /// from which database time (`None`: from the beginning).
    pub fn deferred_due(&self) -> Option<Option<DateTime<Utc>>> {
        let mut g = self.lock();
        let now = Instant::now();
        let every = g.deferred_every.unwrap_or(DEFERRED_EVERY);
        if g.deferred_at.is_some_and(|t| now.duration_since(t) < every) {
            return None;
        }
        g.deferred_at = Some(now);
        let overlap = chrono::Duration::from_std(DEFERRED_OVERLAP).unwrap_or_default();
        Some(g.deferred_db_time.map(|t| t - overlap))
    }

    pub fn set_deferred_every(&self, every: Duration) {
        self.lock().deferred_every = Some(every);
    }

    /// The look at deferred jobs ran at the database's `db_time`.
    pub fn deferred_seen(&self, db_time: DateTime<Utc>) {
        self.lock().deferred_db_time = Some(db_time);
    }

    /// A look at deferred jobs failed: look again at the next claim.
    pub fn deferred_failed(&self) {
        self.lock().deferred_at = None;
    }
}

/// What a `jq_wake` notification says: the sender's tag, then one line per
/// section whose marks must come down to a key (`queue\tpriority\tmicros\t
/// seq`), or `*`: forget every mark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announcement<'a> {
    pub tag: &'a str,
    pub forget_all: bool,
    pub lower: Vec<(Section, Start)>,
}

/// Notifications longer than this announce `*` instead (PostgreSQL's limit
/// is 8000 bytes).
pub const ANNOUNCE_MAX: usize = 7000;

impl<'a> Announcement<'a> {
    pub fn parse(payload: &'a str) -> Announcement<'a> {
        let mut lines = payload.split('\n');
        let tag = lines.next().unwrap_or_default();
        let mut a = Announcement {
            tag,
            forget_all: false,
            lower: vec![],
        };
        for l in lines {
            if l == "*" {
                a.forget_all = true;
                continue;
            }
            let f: Vec<&str> = l.split('\t').collect();
            let [q, p, micros, seq] = f[..] else {
                // Unreadable (a newer sender?): be safe.
                a.forget_all = true;
                continue;
            };
            let parsed = (
                p.parse::<u8>(),
                micros
                    .parse::<i64>()
                    .ok()
                    .and_then(DateTime::from_timestamp_micros),
                seq.parse::<i64>(),
            );
            match parsed {
                (Ok(p), Some(created_at), Ok(seq)) if p <= 9 => {
                    a.lower.push(((q.to_string(), p), Start { created_at, seq }));
                }
                _ => a.forget_all = true,
            }
        }
        a
    }

    /// The payload: the tag, then the lines (or `*` past [`ANNOUNCE_MAX`]).
    pub fn render(tag: &str, lower: &[(Section, Start)]) -> String {
        let mut s = tag.to_string();
        for ((q, p), at) in lower {
            s.push_str(&format!(
                "\n{q}\t{p}\t{}\t{}",
                at.created_at.timestamp_micros(),
                at.seq
            ));
        }
        if s.len() > ANNOUNCE_MAX {
            format!("{tag}\n*")
        } else {
            s
        }
    }
}

/// The SQL of a notification's section lines, for a statement's CTE `src`
/// with columns `queue`, `priority`, `created_at`, `seq`, `not_before`:
/// the lowest key of each section among the rows that are due now (later
/// ones come through the deferred look). `$tag` is the tag's parameter.
pub(crate) fn announce_sql(src: &str, tag: &str) -> String {
    format!(
        "(SELECT CASE WHEN length(x) > {ANNOUNCE_MAX} THEN {tag} || E'\\n*' ELSE x END FROM \
           (SELECT {tag} || coalesce(string_agg(E'\\n' || queue || E'\\t' || priority || E'\\t' || \
               (extract(epoch FROM created_at) * 1000000)::int8 || E'\\t' || seq, ''), '') AS x FROM \
             (SELECT DISTINCT ON (queue, priority) queue, priority, created_at, seq FROM {src} \
              WHERE not_before <= created_at ORDER BY queue, priority, created_at, seq) l) a)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(c: i64, s: i64) -> Start {
        Start {
            created_at: DateTime::from_timestamp_micros(c).unwrap(),
            seq: s,
        }
    }

    fn sec(q: &str, p: u8) -> Section {
        (q.to_string(), p)
    }

    #[test]
    fn an_advance_from_an_old_view_never_raises_a_lowered_mark() {
        let m = Marks::default();
        let v = m.view(&["q".into()]);
        m.advance(&v, &[(sec("q", 5), at(100, 1))]);
        let v = m.view(&["q".into()]);
        assert_eq!(
            v.created_at[4],
            Some(at(100, 1).created_at),
            "priority 5 is the fifth"
        );
        // Lowered while a claim that read `v` runs.
        assert!(m.lower(&sec("q", 5), at(50, 1)));
        m.advance(&v, &[(sec("q", 5), at(200, 1))]);
        assert_eq!(m.get(&sec("q", 5)), Some(at(50, 1)));
        // A reset drops an advance from a view before it.
        let v = m.view(&["q".into()]);
        m.reset();
        m.advance(&v, &[(sec("q", 3), at(200, 1))]);
        assert_eq!(m.get(&sec("q", 3)), None);
        // Lowerings elsewhere do not hold a section back.
        let v = m.view(&["q".into()]);
        m.lower(&sec("r", 1), at(1, 1));
        m.advance(&v, &[(sec("q", 3), at(200, 1))]);
        assert_eq!(m.get(&sec("q", 3)), Some(at(200, 1)));
    }

    #[test]
    fn announcements_round_trip_and_fall_back_to_forgetting() {
        let lower = vec![(sec("emails", 9), at(1_700_000_000_123_456, 42))];
        let s = Announcement::render("tag", &lower);
        let a = Announcement::parse(&s);
        assert_eq!(a.tag, "tag");
        assert!(!a.forget_all);
        assert_eq!(a.lower, lower);
        assert_eq!(Announcement::parse("tag").lower, vec![]);
        assert!(Announcement::parse("tag\nq\t1\tx\t2").forget_all);
        let many: Vec<_> = (0..1000)
            .map(|i| (sec(&format!("queue-{i}"), 1), at(i, i)))
            .collect();
        assert!(Announcement::parse(&Announcement::render("t", &many)).forget_all);
    }

    /// The model: jobs of one section with keys, each pending (due or not)
    /// or taken. Claims scan from the mark as the database does (skipping
    /// rows not due and rows another claim holds), take a prefix, and
    /// advance; every way of making a job pending below the mark announces
    /// it (`lower`) or is found by the deferred look when it falls due.
    #[derive(Debug, Clone)]
    enum Op {
        /// A fresh submit; `skew` places its key before the newest one (a
        /// transaction that started earlier and committed later).
        Submit { skew: u8 },
        /// A claim of up to `n` from a view read before `interleave` other
        /// operations ran.
        Claim { n: u8, left: u8 },
        /// A taken job made pending again (retry, rescue, redrive), due
        /// now or later.
        Return { pick: u8, due: bool },
        /// Deferred jobs fall due; the deferred look lowers the marks.
        FallDue,
        /// Another claimer held the first `n` due rows while this claim
        /// scanned, then released some untaken (announcing them).
        Contended { n: u8 },
        /// Another claimer held the first `n` due rows while this claim
        /// scanned, then its server died: the rows are due again and
        /// nobody announces them.
        DeadClaimer { n: u8 },
        /// The sweep: the lowest due key below the mark lowers it.
        Sweep,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..4).prop_map(|skew| Op::Submit { skew }),
            (1u8..6, 0u8..3).prop_map(|(n, left)| Op::Claim { n, left }),
            (any::<u8>(), any::<bool>()).prop_map(|(pick, due)| Op::Return { pick, due }),
            Just(Op::FallDue),
            (1u8..4).prop_map(|n| Op::Contended { n }),
            (1u8..4).prop_map(|n| Op::DeadClaimer { n }),
            Just(Op::Sweep),
        ]
    }

    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    enum J {
        Due,
        Later,
        Taken,
    }

    /// Another claimer holds the first `n` due rows from the mark; a claim
    /// skips them (SKIP LOCKED), takes the next one if any and advances.
    /// Returns the held rows and whether it took one.
    fn claim_past_held(
        m: &Marks,
        s: &Section,
        jobs: &mut std::collections::BTreeMap<i64, J>,
        n: u8,
    ) -> (Vec<i64>, bool) {
        let v = m.view(&["q".into()]);
        let from = m.get(s).map_or(i64::MIN, |f| f.seq);
        let rows: Vec<i64> = jobs
            .range(from..)
            .filter(|(_, j)| **j == J::Due)
            .map(|(k, _)| *k)
            .collect();
        let held: Vec<i64> = rows.iter().copied().take(usize::from(n)).collect();
        let Some(mine) = rows.get(usize::from(n)).copied() else {
            return (held, false);
        };
        jobs.insert(mine, J::Taken);
        m.advance(&v, &[(s.clone(), at(mine, mine).after())]);
        (held, true)
    }

    proptest! {
        #[test]
        fn nfr_012_no_due_job_is_ever_below_the_mark(ops in prop::collection::vec(op(), 1..120)) {
            let m = Marks::default();
            let s = sec("q", 0);
            // key (micros) -> state; seq = micros.
            let mut jobs: std::collections::BTreeMap<i64, J> = Default::default();
            let mut next = 1000i64;
            // Due rows a dead claimer held, not announced: below the mark
            // until the next sweep.
            let mut orphans: std::collections::BTreeSet<i64> = Default::default();
            let scan = |jobs: &std::collections::BTreeMap<i64, J>, from: Option<Start>, skip: usize| {
                let from = from.map_or(i64::MIN, |f| f.seq);
                jobs.range(from..).filter(|(_, j)| **j == J::Due).map(|(k, _)| *k).skip(skip).collect::<Vec<_>>()
            };
            for o in ops {
                match o {
                    Op::Submit { skew } => {
                        next += 10;
                        let k = next - i64::from(skew) * 15;
                        if jobs.contains_key(&k) { continue; }
                        jobs.insert(k, J::Due);
                        // The submit's notification.
                        m.lower(&s, at(k, k));
                    }
                    Op::Claim { n, left } => {
                        let v = m.view(&["q".into()]);
                        let from = m.get(&s);
                        let rows = scan(&jobs, from, 0);
                        let seen: Vec<i64> = rows.iter().copied().take(usize::from(n)).collect();
                        let k = seen.len().saturating_sub(usize::from(left));
                        // FIFO: what is taken is the lowest due keys (but
                        // orphans below the mark, which wait for the sweep).
                        let below = |k: &i64| orphans.contains(k) && from.is_some_and(|m| *k < m.seq);
                        let all_due: Vec<i64> = jobs.iter().filter(|(k, j)| **j == J::Due && !below(k)).map(|(k, _)| *k).collect();
                        prop_assert_eq!(&seen[..], &all_due[..seen.len()], "the scan from the mark misses a due job");
                        for key in &seen[..k] { jobs.insert(*key, J::Taken); }
                        let to = if k < seen.len() { at(seen[k], seen[k]) } else if let Some(l) = seen.last() { at(*l, *l).after() } else { continue };
                        m.advance(&v, &[(s.clone(), to)]);
                        if k < seen.len() { m.lower(&s, at(seen[k], seen[k])); }
                    }
                    Op::Return { pick, due } => {
                        let taken: Vec<i64> = jobs.iter().filter(|(_, j)| **j == J::Taken).map(|(k, _)| *k).collect();
                        if taken.is_empty() { continue; }
                        let k = taken[usize::from(pick) % taken.len()];
                        if due {
                            jobs.insert(k, J::Due);
                            m.lower(&s, at(k, k));
                        } else {
                            jobs.insert(k, J::Later);
                        }
                    }
                    Op::FallDue => {
                        let later: Vec<i64> = jobs.iter().filter(|(_, j)| **j == J::Later).map(|(k, _)| *k).collect();
                        for k in later {
                            jobs.insert(k, J::Due);
                            m.lower(&s, at(k, k));
                        }
                    }
                    Op::Contended { n } => {
                        let (held, _) = claim_past_held(&m, &s, &mut jobs, n);
                        // The other claimer takes the first and releases the
                        // rest, announcing the lowest it left.
                        if let Some(first) = held.first() { jobs.insert(*first, J::Taken); }
                        if let Some(left) = held.get(1) { m.lower(&s, at(*left, *left)); }
                    }
                    Op::DeadClaimer { n } => {
                        let (held, took) = claim_past_held(&m, &s, &mut jobs, n);
                        if took {
                            orphans.extend(held);
                        }
                    }
                    Op::Sweep => {
                        // As `Store::sweep_marks`: from the section's floor
                        // up to its mark.
                        let (marked, when) = m.to_sweep();
                        for (sec, mark, floor) in marked {
                            let from = floor.map_or(i64::MIN, |f| f.seq);
                            prop_assert!(from <= mark.seq, "the floor {:?} is above the mark {:?}", floor, mark);
                            let low = jobs.range(from..mark.seq).find(|(_, j)| **j == J::Due).map(|(k, _)| at(*k, *k));
                            if let Some(l) = low {
                                m.lower(&sec, l);
                            }
                            m.swept(&sec, mark, low, when);
                        }
                        orphans.clear();
                    }
                }
                // The invariant: every due job is at or above the mark,
                // but a dead claimer's since the last sweep.
                if let Some(mark) = m.get(&s) {
                    let below = jobs.range(..mark.seq).find(|(k, j)| **j == J::Due && !orphans.contains(k));
                    prop_assert!(below.is_none(), "due job {:?} below the mark {:?}", below, mark);
                }
            }
        }
    }
}
