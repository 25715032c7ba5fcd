//! Periodic schedules (JQ-124, ADR 0019): cron patterns in an IANA time
//! zone, their occurrences, and which of them a firing submits. Pure: the
//! store passes the database's clock in, so tests inject theirs.
//!
//! Patterns are Vixie-cron (5 fields, or 6 with seconds first, and the
//! `@hourly` … nicknames), parsed by `croner`, which matches wall times
//! only: how a wall time maps to instants across a daylight-saving change
//! is decided here, by Vixie cron's rule ([`DstRule`]): a pattern whose
//! hour field names hours fires each matching wall time once (skipped ones
//! together at the first instant after the change, a repeated one on its
//! first pass); one whose hour field is a wildcard runs on the clock.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, LocalResult, NaiveDateTime, Offset, TimeZone, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds};

use crate::error::ValidationError;
use crate::input::Echo;

/// Most occurrences one firing submits when several are due (a catch-up
/// after every server was down); the oldest beyond it are skipped.
pub const MAX_CATCH_UP: usize = 100;

/// An occurrence is *missed* once it is later than this, or later than the
/// gap to its next occurrence, whichever is shorter: a minutely schedule
/// fired 20 s late is on time, a secondly one 2 s late is not.
pub const MISFIRE_GRACE_S: i64 = 60;

/// A parsed pattern in its zone.
#[derive(Debug, Clone)]
pub struct CronSpec {
    expr: String,
    tz: Tz,
    cron: croner::Cron,
    rule: DstRule,
}

/// How a pattern meets a daylight-saving change (ADR 0019, "Daylight
/// saving"): Vixie cron's rule, decided by the hour field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DstRule {
    /// The hour field names hours (`2`, `1-3`, `0-20/2`, `9,17`, and the
    /// nicknames but `@hourly`): each matching wall time fires once. A
    /// repeated one fires on its first pass; the skipped ones of one
    /// spring-forward fire together, once, at the first instant after the
    /// change.
    CatchUp,
    /// The hour field is a wildcard (`*`, `*/2`, `@hourly`): a frequency,
    /// not a time of day. It runs on the clock: a skipped wall time does
    /// not occur, a repeated one occurs on both passes, so the gaps between
    /// runs in real time stay what they are on other days.
    OnTheClock,
}

/// A daylight-saving change: its instant and the wall times just before
/// and at it (`before < after` at spring-forward, `after < before` at
/// fall-back).
struct Change {
    at: DateTime<Utc>,
    before: NaiveDateTime,
    after: NaiveDateTime,
}

/// A matching wall time found by a scan: its occurrence (the first pass,
/// or the change's instant if it was skipped and catches up) and, if it is
/// repeated, its second pass.
struct Hit {
    at: DateTime<Utc>,
    second: Option<DateTime<Utc>>,
}

impl Hit {
    fn one(i: DateTime<Tz>) -> Hit {
        Hit {
            at: i.with_timezone(&Utc),
            second: None,
        }
    }

    fn two(a: DateTime<Tz>, b: DateTime<Tz>) -> Hit {
        Hit {
            at: a.with_timezone(&Utc),
            second: Some(b.with_timezone(&Utc)),
        }
    }

    fn caught_up(at: DateTime<Utc>) -> Hit {
        Hit { at, second: None }
    }
}

#[derive(Clone, Copy)]
enum Dir {
    Forward,
    Back,
}

fn instant(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(secs, 0).expect("a time zone change is within chrono's range")
}

/// The first second in `(lo, hi]` where `pred` holds, given it fails at
/// `lo`, holds at `hi` and changes once between them.
fn first_where(mut lo: i64, mut hi: i64, pred: impl Fn(i64) -> bool) -> i64 {
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if pred(mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    hi
}

/// The hour field of a pattern (nicknames: `@hourly` is a wildcard, the
/// others name hour 0).
fn dst_rule_of(text: &str) -> DstRule {
    let fields: Vec<&str> = text.split_whitespace().collect();
    let hour = match fields.len() {
        5 => fields[1],
        6 => fields[2],
        _ if text.eq_ignore_ascii_case("@hourly") => "*",
        _ => "0",
    };
    if hour.starts_with('*') {
        DstRule::OnTheClock
    } else {
        DstRule::CatchUp
    }
}

const FIVE: [&str; 5] = ["minute", "hour", "day of month", "month", "day of week"];
const SIX: [&str; 6] = ["second", "minute", "hour", "day of month", "month", "day of week"];
const NICKNAMES: [&str; 7] = [
    "@yearly",
    "@annually",
    "@monthly",
    "@weekly",
    "@daily",
    "@midnight",
    "@hourly",
];

fn parser() -> CronParser {
    CronParser::builder().seconds(Seconds::Optional).build()
}

fn invalid_cron(message: String) -> ValidationError {
    ValidationError::invalid("cron", message)
}

impl CronSpec {
    /// Parse `expr` in `timezone` (an IANA name, e.g. `Europe/Berlin`;
    /// empty is UTC). A fault names its field by position and name.
    pub fn parse(expr: &str, timezone: &str) -> Result<CronSpec, ValidationError> {
        let tz = match timezone.trim() {
            "" => Tz::UTC,
            name => Tz::from_str(name).map_err(|_| {
                ValidationError::invalid(
                    "timezone",
                    format!(
                        "{} is not an IANA time zone (e.g. Europe/Berlin, UTC)",
                        Echo(name)
                    ),
                )
            })?,
        };
        let text = expr.trim();
        if text.starts_with('@') {
            if !NICKNAMES.iter().any(|n| n.eq_ignore_ascii_case(text)) {
                return Err(invalid_cron(format!(
                    "{} is not one of {}",
                    Echo(text),
                    NICKNAMES.join(", ")
                )));
            }
        } else {
            let fields: Vec<&str> = text.split_whitespace().collect();
            let names: &[&str] = match fields.len() {
                5 => &FIVE,
                6 => &SIX,
                n => {
                    return Err(invalid_cron(format!(
                        "{} has {n} fields; give 5 (minute hour day-of-month month day-of-week) \
                         or 6 (a second first)",
                        Echo(text)
                    )));
                }
            };
            // Each field alone among wildcards, so the error names it.
            for (i, f) in fields.iter().enumerate() {
                let mut probe = vec!["*"; fields.len()];
                probe[i] = f;
                if let Err(e) = parser().parse(&probe.join(" ")) {
                    return Err(invalid_cron(format!(
                        "field {} ({}) {}: {e}",
                        i + 1,
                        names[i],
                        Echo(f)
                    )));
                }
            }
        }
        // croner knows neither alias: the same patterns by their other name.
        let canonical = match text.to_ascii_lowercase().as_str() {
            "@midnight" => "@daily".to_string(),
            "@annually" => "@yearly".to_string(),
            _ => text.to_string(),
        };
        let cron = parser()
            .parse(&canonical)
            .map_err(|e| invalid_cron(format!("{}: {e}", Echo(text))))?;
        let spec = CronSpec {
            expr: text.to_string(),
            tz,
            cron,
            rule: dst_rule_of(text),
        };
        // A pattern that never matches (30 February) is refused now, not
        // found out at its first firing.
        if spec.next_after(Utc::now()).is_none() {
            return Err(invalid_cron(format!("{} never occurs", Echo(text))));
        }
        Ok(spec)
    }

    pub fn expr(&self) -> &str {
        &self.expr
    }

    pub fn timezone(&self) -> &str {
        self.tz.name()
    }

    /// Whether a skipped local time catches up at the change (see
    /// [`DstRule`]).
    pub fn dst_rule(&self) -> DstRule {
        self.rule
    }

    /// The wall clock reading of `t` in the schedule's zone.
    fn wall(&self, t: DateTime<Utc>) -> NaiveDateTime {
        t.with_timezone(&self.tz).naive_local()
    }

    fn wall_at(&self, secs: i64) -> NaiveDateTime {
        self.wall(instant(secs))
    }

    fn offset_at(&self, secs: i64) -> i32 {
        self.tz
            .offset_from_utc_datetime(&instant(secs).naive_utc())
            .fix()
            .local_minus_utc()
    }

    /// The next wall time the pattern matches after `w` (or at it).
    fn next_wall(&self, w: NaiveDateTime, inclusive: bool) -> Option<NaiveDateTime> {
        self.cron.find_next_occurrence(&w, inclusive).ok()
    }

    fn previous_wall(&self, w: NaiveDateTime, inclusive: bool) -> Option<NaiveDateTime> {
        self.cron.find_previous_occurrence(&w, inclusive).ok()
    }

    /// The later instant of a repeated wall time.
    fn second_pass(&self, w: NaiveDateTime) -> Option<DateTime<Utc>> {
        self.tz
            .from_local_datetime(&w)
            .latest()
            .map(|i| i.with_timezone(&Utc))
    }

    /// The fall-back that repeats the wall time whose passes are `a` and
    /// `b`: the wall times it repeats.
    fn band(&self, a: DateTime<Utc>, b: DateTime<Utc>) -> Change {
        let after = self.offset_at(b.timestamp());
        let at = first_where(a.timestamp(), b.timestamp(), |s| self.offset_at(s) == after);
        self.change(at)
    }

    /// The spring-forward that skips wall time `w`: the wall times it skips.
    fn gap(&self, w: NaiveDateTime) -> Change {
        // Offsets lie within -12 h and +14 h: the change is between these.
        let x = w.and_utc().timestamp();
        let at = first_where(x - 15 * 3600, x + 13 * 3600, |s| self.wall_at(s) > w);
        self.change(at)
    }

    fn change(&self, at: i64) -> Change {
        Change {
            at: instant(at),
            // The wall time just before the change, one second on.
            before: self.wall_at(at - 1) + chrono::Duration::seconds(1),
            after: self.wall_at(at),
        }
    }

    /// The occurrence of the first matching wall time after `floor` (or at
    /// it), by its first pass or, catching up, its change's instant;
    /// `Back`: the last one before it.
    fn scan(&self, dir: Dir, mut floor: NaiveDateTime, mut inclusive: bool) -> Option<Hit> {
        loop {
            let w = match dir {
                Dir::Forward => self.next_wall(floor, inclusive),
                Dir::Back => self.previous_wall(floor, inclusive),
            }?;
            match self.tz.from_local_datetime(&w) {
                LocalResult::Single(i) => return Some(Hit::one(i)),
                LocalResult::Ambiguous(a, b) => return Some(Hit::two(a, b)),
                LocalResult::None => {
                    let gap = self.gap(w);
                    if self.rule == DstRule::CatchUp {
                        return Some(Hit::caught_up(gap.at));
                    }
                    // On the clock: step over the skipped wall times.
                    (floor, inclusive) = match dir {
                        Dir::Forward => (gap.after, true),
                        Dir::Back => (gap.before, false),
                    };
                }
            }
        }
    }

    fn scan_forward(&self, floor: NaiveDateTime, inclusive: bool) -> Option<Hit> {
        self.scan(Dir::Forward, floor, inclusive)
    }

    fn scan_backward(&self, floor: NaiveDateTime, inclusive: bool) -> Option<Hit> {
        self.scan(Dir::Back, floor, inclusive)
    }

    /// The first occurrence strictly after `t` (the rule: [`DstRule`]).
    ///
    /// An occurrence is found by its wall time; the instants of wall times
    /// are in their order except for the second pass of a repeated hour,
    /// which comes after the first pass of every wall time up to the end
    /// of the repeated hour: only then does the search look at two
    /// candidates.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let w = self.wall(t);
        let LocalResult::Ambiguous(a, b) = self.tz.from_local_datetime(&w) else {
            return self.scan_forward(w, false).map(|h| h.at);
        };
        let (a, b) = (a.with_timezone(&Utc), b.with_timezone(&Utc));
        let band = self.band(a, b);
        if t == b {
            // In the second pass: the first pass's wall times are behind.
            if self.rule == DstRule::OnTheClock
                && let Some(w2) = self.next_wall(w, false).filter(|w2| *w2 < band.before)
            {
                return self.second_pass(w2);
            }
            return self.scan_forward(band.before, true).map(|h| h.at);
        }
        // In the first pass: the rest of it, then (on the clock) the second.
        let first = self.scan_forward(w, false);
        let second = match self.rule {
            DstRule::OnTheClock => self
                .next_wall(band.after, true)
                .filter(|w2| *w2 < band.before)
                .and_then(|w2| self.second_pass(w2)),
            DstRule::CatchUp => None,
        };
        match (first.map(|h| h.at), second) {
            (Some(f), Some(s)) => Some(f.min(s)),
            (f, s) => f.or(s),
        }
    }

    /// The latest occurrence at or before `t`.
    pub fn latest_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let w = self.wall(t);
        if let LocalResult::Ambiguous(a, b) = self.tz.from_local_datetime(&w) {
            let (a, b) = (a.with_timezone(&Utc), b.with_timezone(&Utc));
            if t == b {
                // In the second pass: every first pass is behind.
                let band = self.band(a, b);
                if self.rule == DstRule::OnTheClock
                    && let Some(w2) = self.previous_wall(w, true).filter(|w2| *w2 >= band.after)
                {
                    return self.second_pass(w2);
                }
                return self.scan_backward(band.before, false).map(|h| h.at);
            }
        }
        let hit = self.scan_backward(w, true)?;
        Some(match hit.second {
            // Past a repeated hour, on the clock, its last match's second
            // pass is the latest.
            Some(s) if self.rule == DstRule::OnTheClock && s <= t => s,
            _ => hit.at,
        })
    }

    /// What a firing at `now` does for a schedule whose next occurrence
    /// was `from`: the occurrences to submit (oldest first), how many due
    /// ones it skips (at least; a long outage is not counted to its end),
    /// and the next occurrence after `now`.
    pub fn due(&self, from: DateTime<Utc>, now: DateTime<Utc>, missed: Missed) -> Due {
        // Newest first, back to `from`, one beyond the cap to know more
        // were due.
        let mut due = vec![];
        let mut at = self.latest_at_or_before(now);
        while let Some(o) = at {
            if o < from || due.len() > MAX_CATCH_UP {
                break;
            }
            due.push(o);
            at = self.latest_at_or_before(o - chrono::Duration::nanoseconds(1));
        }
        let more = due.len() > MAX_CATCH_UP;
        let total = due.len();
        let grace = |o: DateTime<Utc>| {
            let gap = self
                .next_after(o)
                .map_or(MISFIRE_GRACE_S, |n| (n - o).num_seconds().max(1));
            chrono::Duration::seconds(gap.min(MISFIRE_GRACE_S))
        };
        let (on_time, late): (Vec<_>, Vec<_>) = due.into_iter().partition(|o| now - *o <= grace(*o));
        let mut fire = on_time;
        match missed {
            Missed::Skip => {}
            Missed::Once => {
                if fire.is_empty() {
                    fire.extend(late.first().copied());
                }
            }
            Missed::All => fire.extend(late),
        }
        fire.truncate(MAX_CATCH_UP);
        fire.reverse();
        Due {
            skipped: total - fire.len() + usize::from(more),
            fire,
            next_at: self.next_after(now),
        }
    }
}

/// The outcome of [`CronSpec::due`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    pub fire: Vec<DateTime<Utc>>,
    pub skipped: usize,
    pub next_at: Option<DateTime<Utc>>,
}

/// What a firing does with occurrences missed while no server ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Missed {
    /// None of them.
    Skip,
    /// One job for all of them (the latest).
    #[default]
    Once,
    /// Each, up to [`MAX_CATCH_UP`].
    All,
}

/// Whether an occurrence fires while the previous one's job is unfinished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overlap {
    #[default]
    Allow,
    /// Skipped (and counted) until that job is DONE or DEAD_LETTERED.
    Skip,
}

macro_rules! text_enum {
    ($t:ty, $field:literal, $($v:ident => $s:literal),+) => {
        impl $t {
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$v => $s),+ }
            }

            pub fn parse(s: &str) -> Result<Self, ValidationError> {
                match s.trim().to_ascii_lowercase().as_str() {
                    $($s => Ok(Self::$v),)+
                    _ => Err(ValidationError::invalid(
                        $field,
                        format!("{} is not one of {}", Echo(s), [$($s),+].join(", ")),
                    )),
                }
            }
        }

        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

text_enum!(Missed, "missed", Skip => "skip", Once => "once", All => "all");
text_enum!(Overlap, "overlap", Allow => "allow", Skip => "skip");

/// A schedule as it arrives (RPC or CLI), before checks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScheduleRequest {
    pub name: String,
    pub cron: String,
    /// IANA name; empty is UTC.
    pub timezone: String,
    pub queue: String,
    pub payload: Vec<u8>,
    pub priority: Option<i32>,
    pub max_retries: Option<i32>,
    pub ttl_seconds: Option<u32>,
    /// skip|once|all; empty is once.
    pub missed: String,
    /// allow|skip; empty is allow.
    pub overlap: String,
}

/// Changes to a schedule; `None` keeps the current value. `max_retries`
/// and `ttl_seconds` of `Some(None)` go back to the queue's default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SchedulePatch {
    pub cron: Option<String>,
    pub timezone: Option<String>,
    pub queue: Option<String>,
    pub payload: Option<Vec<u8>>,
    pub priority: Option<i32>,
    pub max_retries: Option<Option<i32>>,
    pub ttl_seconds: Option<Option<u32>>,
    pub missed: Option<String>,
    pub overlap: Option<String>,
}

/// A checked schedule: its pattern and the job each occurrence submits.
#[derive(Debug, Clone)]
pub struct ScheduleDef {
    pub name: String,
    pub spec: CronSpec,
    pub queue: String,
    pub payload: Vec<u8>,
    pub priority: u8,
    /// None: the queue's default.
    pub max_retries: Option<u32>,
    /// None: the queue's default TTL.
    pub ttl: Option<std::time::Duration>,
    pub missed: Missed,
    pub overlap: Overlap,
}

/// A schedule's name follows the rules of a queue's, under its own field.
pub fn validate_schedule_name(name: &str) -> Result<(), ValidationError> {
    crate::submit::validate_queue_name(name).map_err(|e| match e {
        ValidationError::Invalid { message, .. } => ValidationError::invalid("name", message),
        other => other,
    })
}

impl ScheduleRequest {
    /// Check every field: the name as a queue name is checked, the job as
    /// a submit is (FR-002 … JQ-104), the pattern and zone by [`CronSpec`].
    pub fn validate(self, max_payload_bytes: usize) -> Result<ScheduleDef, ValidationError> {
        validate_schedule_name(&self.name)?;
        let job = crate::submit::JobRequest {
            queue: self.queue,
            payload: self.payload,
            priority: self.priority,
            max_retries: self.max_retries,
            ttl_seconds: self.ttl_seconds,
            ..Default::default()
        }
        .validate(max_payload_bytes)?;
        let spec = CronSpec::parse(&self.cron, &self.timezone)?;
        let or = |s: &str, d: &'static str| {
            if s.trim().is_empty() {
                d.to_string()
            } else {
                s.to_string()
            }
        };
        Ok(ScheduleDef {
            name: self.name,
            spec,
            queue: job.queue,
            payload: job.payload,
            priority: job.priority,
            max_retries: job.max_retries,
            ttl: job.ttl,
            missed: Missed::parse(&or(&self.missed, "once"))?,
            overlap: Overlap::parse(&or(&self.overlap, "allow"))?,
        })
    }
}

impl ScheduleDef {
    /// The request this was made from, for patching.
    pub fn request(&self) -> ScheduleRequest {
        ScheduleRequest {
            name: self.name.clone(),
            cron: self.spec.expr().to_string(),
            timezone: self.spec.timezone().to_string(),
            queue: self.queue.clone(),
            payload: self.payload.clone(),
            priority: Some(i32::from(self.priority)),
            max_retries: self.max_retries.map(|m| m as i32),
            ttl_seconds: self.ttl.map(|t| t.as_secs().min(u64::from(u32::MAX)) as u32),
            missed: self.missed.to_string(),
            overlap: self.overlap.to_string(),
        }
    }

    /// The idempotency key of an occurrence's job: one job per (schedule,
    /// occurrence), whoever fires it and however often.
    pub fn occurrence_key(&self, at: DateTime<Utc>) -> String {
        format!(
            "schedule:{}:{}",
            self.name,
            at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
        )
    }
}

impl SchedulePatch {
    pub fn apply(&self, r: ScheduleRequest) -> ScheduleRequest {
        let mut r = r;
        let set = |dst: &mut String, v: &Option<String>| {
            if let Some(v) = v {
                *dst = v.clone();
            }
        };
        set(&mut r.cron, &self.cron);
        set(&mut r.timezone, &self.timezone);
        set(&mut r.queue, &self.queue);
        set(&mut r.missed, &self.missed);
        set(&mut r.overlap, &self.overlap);
        if let Some(p) = &self.payload {
            r.payload = p.clone();
        }
        if let Some(p) = self.priority {
            r.priority = Some(p);
        }
        if let Some(m) = self.max_retries {
            r.max_retries = m;
        }
        if let Some(t) = self.ttl_seconds {
            r.ttl_seconds = t;
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn berlin(expr: &str) -> CronSpec {
        CronSpec::parse(expr, "Europe/Berlin").unwrap()
    }

    /// The occurrences after `from`, as local times with their offsets.
    fn walk(spec: &CronSpec, from: &str, n: usize) -> Vec<String> {
        let mut t = at(from);
        (0..n)
            .map(|_| {
                t = spec.next_after(t).unwrap();
                t.with_timezone(&spec.tz).format("%d %H:%M%:z").to_string()
            })
            .collect()
    }

    fn zoned(expr: &str, tz: &str) -> CronSpec {
        CronSpec::parse(expr, tz).unwrap()
    }

    /// The occurrences after `from` in zone `tz`, as UTC instants. The
    /// expected values below were worked out by hand from the zone
    /// database (Python's zoneinfo printed each change), not by this code.
    fn utc_walk(expr: &str, tz: &str, from: &str, n: usize) -> Vec<DateTime<Utc>> {
        let spec = zoned(expr, tz);
        let mut t = at(from);
        (0..n)
            .map(|_| {
                t = spec.next_after(t).unwrap();
                t
            })
            .collect()
    }

    fn ats(v: &[&str]) -> Vec<DateTime<Utc>> {
        v.iter().map(|s| at(s)).collect()
    }

    #[test]
    fn jq_125_the_rule_is_read_from_the_hour_field() {
        for (expr, rule) in [
            ("30 2 * * *", DstRule::CatchUp),
            ("0,30 2 * * *", DstRule::CatchUp),
            ("15,45 1-3 * * *", DstRule::CatchUp),
            ("23 0-20/2 * * *", DstRule::CatchUp),
            ("*/15 2 * * *", DstRule::CatchUp),
            ("0 0 2 * * *", DstRule::CatchUp),
            ("@daily", DstRule::CatchUp),
            ("@weekly", DstRule::CatchUp),
            ("0 * * * *", DstRule::OnTheClock),
            ("*/30 * * * *", DstRule::OnTheClock),
            ("0 */2 * * *", DstRule::OnTheClock),
            ("*/10 * * * * *", DstRule::OnTheClock),
            ("@hourly", DstRule::OnTheClock),
        ] {
            assert_eq!(zoned(expr, "").dst_rule(), rule, "{expr}");
        }
    }

    #[test]
    fn jq_124_jq_125_a_time_skipped_at_spring_forward_fires_once_right_after() {
        // Berlin, 29 March 2026: 02:00 CET becomes 03:00 CEST.
        let from = "2026-03-28T23:00:00Z";
        assert_eq!(
            walk(&berlin("30 2 * * *"), from, 2),
            ["29 03:00+02:00", "30 02:30+02:00"]
        );
        // On the clock: 02:00 and 02:30 do not occur; 03:00 does.
        assert_eq!(
            walk(&berlin("0 * * * *"), from, 3),
            ["29 01:00+01:00", "29 03:00+02:00", "29 04:00+02:00"]
        );
        assert_eq!(
            walk(&berlin("*/30 * * * *"), from, 4),
            [
                "29 00:30+01:00",
                "29 01:00+01:00",
                "29 01:30+01:00",
                "29 03:00+02:00"
            ]
        );
        assert_eq!(
            walk(&berlin("30 * * * *"), from, 3),
            ["29 00:30+01:00", "29 01:30+01:00", "29 03:30+02:00"],
            "an hourly pattern keeps its hour apart in real time"
        );
    }

    /// The failing cases: lists, ranges and steps in the hour lost
    /// the skipped occurrences.
    #[test]
    fn jq_125_regression_lists_ranges_and_steps_catch_up_at_spring_forward() {
        // `0,30 2`: after the 28th's 02:30, the 29th's two runs fire once
        // at the change, then the 30th's.
        for (tz, from, change, next_day) in [
            (
                "Europe/Berlin",
                "2026-03-28T01:30:00Z",
                "2026-03-29T01:00:00Z",
                "2026-03-30T00:00:00Z",
            ),
            (
                "America/New_York",
                "2026-03-07T07:30:00Z",
                "2026-03-08T07:00:00Z",
                "2026-03-09T06:00:00Z",
            ),
            (
                "America/St_Johns",
                "2026-03-07T06:00:00Z",
                "2026-03-08T05:30:00Z",
                "2026-03-09T04:30:00Z",
            ),
            // Morocco leaves Ramadan time (+00) for +01 at 02:00 on the 22nd.
            (
                "Africa/Casablanca",
                "2026-03-21T02:30:00Z",
                "2026-03-22T02:00:00Z",
                "2026-03-23T01:00:00Z",
            ),
        ] {
            let next_half = at(next_day) + chrono::Duration::minutes(30);
            assert_eq!(
                utc_walk("0,30 2 * * *", tz, from, 3),
                vec![at(change), at(next_day), next_half],
                "0,30 2 * * * in {tz}"
            );
        }
        // `15,45 1-3`: the skipped quarter-hours fire once at the change.
        for (tz, from, expect) in [
            // 02:00 CET -> 03:00 CEST (01:00Z): 01:15, 01:45, [02:15 02:45], 03:15.
            (
                "Europe/Berlin",
                "2026-03-28T23:50:00Z",
                &[
                    "2026-03-29T00:15:00Z",
                    "2026-03-29T00:45:00Z",
                    "2026-03-29T01:00:00Z",
                    "2026-03-29T01:15:00Z",
                ][..],
            ),
            // 01:00 GMT -> 02:00 BST (01:00Z): [01:15 01:45], 02:15.
            (
                "Europe/London",
                "2026-03-29T00:50:00Z",
                &[
                    "2026-03-29T01:00:00Z",
                    "2026-03-29T01:15:00Z",
                    "2026-03-29T01:45:00Z",
                ][..],
            ),
            (
                "Europe/Dublin",
                "2026-03-29T00:50:00Z",
                &[
                    "2026-03-29T01:00:00Z",
                    "2026-03-29T01:15:00Z",
                    "2026-03-29T01:45:00Z",
                ][..],
            ),
            // 02:00 EST -> 03:00 EDT (07:00Z).
            (
                "America/New_York",
                "2026-03-08T06:50:00Z",
                &[
                    "2026-03-08T07:00:00Z",
                    "2026-03-08T07:15:00Z",
                    "2026-03-08T07:45:00Z",
                ][..],
            ),
            // Lord Howe, 4 October: 02:00 +10:30 -> 02:30 +11 (15:30Z on
            // the 3rd): 01:45, [02:15], 02:30's catch-up, 02:45.
            (
                "Australia/Lord_Howe",
                "2026-10-03T15:00:00Z",
                &[
                    "2026-10-03T15:15:00Z",
                    "2026-10-03T15:30:00Z",
                    "2026-10-03T15:45:00Z",
                ][..],
            ),
        ] {
            assert_eq!(
                utc_walk("15,45 1-3 * * *", tz, from, expect.len()),
                ats(expect),
                "15,45 1-3 in {tz}"
            );
        }
        // `23 0-20/2`: 02:23 (00:23 in Santiago) fires at the change.
        for (tz, from, expect) in [
            (
                "Europe/Berlin",
                "2026-03-28T23:30:00Z",
                &["2026-03-29T01:00:00Z", "2026-03-29T02:23:00Z"][..],
            ),
            (
                "America/New_York",
                "2026-03-08T05:30:00Z",
                &[
                    "2026-03-08T05:23:00Z",
                    "2026-03-08T07:00:00Z",
                    "2026-03-08T08:23:00Z",
                ][1..],
            ),
            // Santiago, 6 September: 00:00 -04 -> 01:00 -03 (04:00Z); the
            // 5th's last run was 20:23 -04.
            (
                "America/Santiago",
                "2026-09-06T01:00:00Z",
                &["2026-09-06T04:00:00Z", "2026-09-06T05:23:00Z"][..],
            ),
            // Lord Howe: 02:23 is skipped (02:00 +10:30 -> 02:30 +11), 04:23 +11.
            (
                "Australia/Lord_Howe",
                "2026-10-03T14:00:00Z",
                &["2026-10-03T15:30:00Z", "2026-10-03T17:23:00Z"][..],
            ),
        ] {
            assert_eq!(
                utc_walk("23 0-20/2 * * *", tz, from, expect.len()),
                ats(expect),
                "23 0-20/2 in {tz}"
            );
        }
    }

    #[test]
    fn jq_124_jq_125_a_repeated_hour_fires_once_for_fixed_hours_and_twice_on_the_clock() {
        // Berlin, 25 October 2026: 03:00 CEST becomes 02:00 CET.
        let from = "2026-10-24T22:00:00Z";
        assert_eq!(
            walk(&berlin("30 2 * * *"), from, 2),
            ["25 02:30+02:00", "26 02:30+01:00"]
        );
        assert_eq!(
            walk(&berlin("0,30 2 * * *"), from, 3),
            ["25 02:00+02:00", "25 02:30+02:00", "26 02:00+01:00"]
        );
        assert_eq!(
            walk(&berlin("*/20 2 * * *"), from, 4),
            [
                "25 02:00+02:00",
                "25 02:20+02:00",
                "25 02:40+02:00",
                "26 02:00+01:00"
            ],
            "a fixed hour with a minute wildcard fires the first pass only"
        );
        assert_eq!(
            walk(&berlin("0 * * * *"), from, 4),
            [
                "25 01:00+02:00",
                "25 02:00+02:00",
                "25 02:00+01:00",
                "25 03:00+01:00"
            ]
        );
        assert_eq!(
            walk(&berlin("*/30 * * * *"), from, 8),
            [
                "25 00:30+02:00",
                "25 01:00+02:00",
                "25 01:30+02:00",
                "25 02:00+02:00",
                "25 02:30+02:00",
                "25 02:00+01:00",
                "25 02:30+01:00",
                "25 03:00+01:00"
            ]
        );
        // From inside each pass.
        let hourly = berlin("0 * * * *");
        assert_eq!(
            hourly.next_after(at("2026-10-25T00:30:00Z")),
            Some(at("2026-10-25T01:00:00Z")),
            "02:30 CEST: next is 02:00 CET"
        );
        assert_eq!(
            hourly.next_after(at("2026-10-25T01:30:00Z")),
            Some(at("2026-10-25T02:00:00Z")),
            "02:30 CET: next is 03:00 CET"
        );
        assert_eq!(
            berlin("30 2 * * *").next_after(at("2026-10-25T01:10:00Z")),
            Some(at("2026-10-26T01:30:00Z")),
            "02:10 CET, a fixed hour: 02:30 CET is the second pass"
        );
        // Backwards too.
        assert_eq!(
            hourly.latest_at_or_before(at("2026-10-25T01:30:00Z")),
            Some(at("2026-10-25T01:00:00Z")),
            "on the clock, 02:00 CET (01:00Z) is an occurrence"
        );
        assert_eq!(
            hourly.latest_at_or_before(at("2026-10-25T00:59:59Z")),
            Some(at("2026-10-25T00:00:00Z"))
        );
        let fixed = berlin("0,30 2 * * *");
        assert_eq!(
            fixed.latest_at_or_before(at("2026-10-25T01:45:00Z")),
            Some(at("2026-10-25T00:30:00Z")),
            "a fixed hour: 02:30 CET (01:30Z) is the second pass of 02:30"
        );
    }

    #[test]
    fn jq_124_five_and_six_fields_nicknames_and_zones() {
        let utc = |e: &str| CronSpec::parse(e, "").unwrap();
        assert_eq!(
            utc("*/5 * * * *").next_after(at("2026-12-03T10:01:00Z")),
            Some(at("2026-12-03T10:05:00Z"))
        );
        assert_eq!(
            utc("*/10 * * * * *").next_after(at("2026-12-03T10:01:00Z")),
            Some(at("2026-12-03T10:01:10Z")),
            "six fields: seconds first"
        );
        assert_eq!(
            utc("@hourly").next_after(at("2026-12-03T10:01:00Z")),
            Some(at("2026-12-03T11:00:00Z"))
        );
        // Every nickname the parser names (two were refused by croner).
        for (nick, next) in [
            ("@yearly", "2027-01-01T00:00:00Z"),
            ("@annually", "2027-01-01T00:00:00Z"),
            ("@monthly", "2027-01-01T00:00:00Z"),
            ("@weekly", "2026-12-06T00:00:00Z"),
            ("@daily", "2026-12-04T00:00:00Z"),
            ("@MIDNIGHT", "2026-12-04T00:00:00Z"),
            ("@hourly", "2026-12-03T11:00:00Z"),
        ] {
            assert_eq!(
                utc(nick).next_after(at("2026-12-03T10:01:00Z")),
                Some(at(next)),
                "{nick}"
            );
        }
        let tokyo = CronSpec::parse("0 9 * * MON-FRI", "Asia/Tokyo").unwrap();
        assert_eq!(
            tokyo.next_after(at("2026-12-04T01:00:00Z")),
            Some(at("2026-12-07T00:00:00Z")),
            "Friday 10:00 in Tokyo: next is Monday 09:00"
        );
        assert_eq!(tokyo.timezone(), "Asia/Tokyo");
    }

    #[test]
    fn jq_124_a_bad_expression_or_zone_names_the_position_of_the_fault() {
        for (expr, tz, field, says) in [
            ("*/5 * * *", "", "cron", "has 4 fields"),
            ("* * * * * * *", "", "cron", "has 7 fields"),
            ("61 * * * *", "", "cron", "field 1 (minute) \"61\""),
            ("0 25 * * *", "", "cron", "field 2 (hour) \"25\""),
            ("0 0 32 * *", "", "cron", "field 3 (day of month) \"32\""),
            ("0 0 * 13 *", "", "cron", "field 4 (month) \"13\""),
            ("0 0 * * 9", "", "cron", "field 5 (day of week) \"9\""),
            ("0 */0 * * * *", "", "cron", "field 2 (minute) \"*/0\""),
            ("@fortnightly", "", "cron", "is not one of @yearly"),
            ("0 0 30 2 *", "", "cron", "never occurs"),
            (
                "0 * * * *",
                "Europe/Berln",
                "timezone",
                "\"Europe/Berln\" is not an IANA time zone",
            ),
        ] {
            let e = CronSpec::parse(expr, tz).unwrap_err().to_string();
            assert!(
                e.starts_with(&format!("{field}: ")) && e.contains(says),
                "{expr:?}: {e}"
            );
        }
    }

    #[test]
    fn jq_124_missed_occurrences_follow_the_policy_and_the_cap() {
        let spec = CronSpec::parse("0 * * * *", "").unwrap();
        // Down from 09:10 to 12:30: 10:00, 11:00 and 12:00 were missed.
        let (from, now) = (at("2026-12-03T10:00:00Z"), at("2026-12-03T12:30:00Z"));
        let next = Some(at("2026-12-03T13:00:00Z"));
        assert_eq!(
            spec.due(from, now, Missed::Skip),
            Due {
                fire: vec![],
                skipped: 3,
                next_at: next
            }
        );
        assert_eq!(
            spec.due(from, now, Missed::Once),
            Due {
                fire: vec![at("2026-12-03T12:00:00Z")],
                skipped: 2,
                next_at: next
            }
        );
        assert_eq!(spec.due(from, now, Missed::All).fire.len(), 3);
        // On time (within the grace) fires under every policy.
        let now = at("2026-12-03T10:00:20Z");
        for m in [Missed::Skip, Missed::Once, Missed::All] {
            assert_eq!(spec.due(from, now, m).fire, [from], "{m}");
        }
        // A secondly schedule two seconds late has missed one.
        let secs = CronSpec::parse("* * * * * *", "").unwrap();
        let d = secs.due(
            at("2026-12-03T10:00:00Z"),
            at("2026-12-03T10:00:02Z"),
            Missed::Skip,
        );
        assert_eq!(d.fire, [at("2026-12-03T10:00:01Z"), at("2026-12-03T10:00:02Z")]);
        // A week of a minutely schedule: the newest hundred.
        let minutely = CronSpec::parse("* * * * *", "").unwrap();
        let d = minutely.due(
            at("2026-11-26T12:00:00Z"),
            at("2026-12-03T12:00:30Z"),
            Missed::All,
        );
        assert_eq!(d.fire.len(), MAX_CATCH_UP);
        assert_eq!(d.fire.last(), Some(&at("2026-12-03T12:00:00Z")));
        assert!(d.skipped >= 1);
        assert_eq!(Missed::parse(" ALL "), Ok(Missed::All));
        assert!(
            Missed::parse("twice")
                .unwrap_err()
                .to_string()
                .starts_with("missed: ")
        );
        assert!(
            Overlap::parse("never")
                .unwrap_err()
                .to_string()
                .contains("allow, skip")
        );
    }

    #[test]
    fn jq_124_a_schedule_request_is_checked_like_a_submit() {
        let ok = ScheduleRequest {
            name: "nightly-report".into(),
            cron: "0 3 * * *".into(),
            timezone: "Europe/Berlin".into(),
            queue: "default".into(),
            payload: b"{}".to_vec(),
            ..Default::default()
        };
        let d = ok.clone().validate(1024).unwrap();
        assert_eq!(
            (d.missed, d.overlap, d.priority),
            (Missed::Once, Overlap::Allow, 0)
        );
        assert_eq!(d.request().validate(1024).unwrap().spec.expr(), "0 3 * * *");
        assert_eq!(
            d.occurrence_key(at("2026-12-04T02:00:00Z")),
            "schedule:nightly-report:2026-12-04T02:00:00.000000Z"
        );
        for (bad, says) in [
            (
                ScheduleRequest {
                    name: "no spaces".into(),
                    ..ok.clone()
                },
                "name: ",
            ),
            (
                ScheduleRequest {
                    priority: Some(10),
                    ..ok.clone()
                },
                "priority",
            ),
            (
                ScheduleRequest {
                    queue: "".into(),
                    ..ok.clone()
                },
                "queue",
            ),
            (
                ScheduleRequest {
                    payload: vec![0; 2000],
                    ..ok.clone()
                },
                "payload is 2000 bytes",
            ),
            (
                ScheduleRequest {
                    missed: "twice".into(),
                    ..ok.clone()
                },
                "missed: ",
            ),
            (
                ScheduleRequest {
                    overlap: "x".into(),
                    ..ok.clone()
                },
                "overlap: ",
            ),
            (
                ScheduleRequest {
                    cron: "0 3 * *".into(),
                    ..ok.clone()
                },
                "cron: ",
            ),
        ] {
            let e = bad.validate(1024).unwrap_err().to_string();
            assert!(e.contains(says), "{says}: {e}");
        }
        let patched = SchedulePatch {
            cron: Some("@hourly".into()),
            max_retries: Some(Some(2)),
            ..Default::default()
        }
        .apply(ok.clone());
        assert_eq!(
            (patched.cron.as_str(), patched.max_retries, patched.queue.as_str()),
            ("@hourly", Some(2), "default")
        );
    }
}
