//! Periodic schedules (JQ-124, ADR 0019): cron patterns in an IANA time
//! zone, their occurrences, and which of them a firing submits. Pure: the
//! store passes the database's clock in, so tests inject theirs.
//!
//! Patterns are Vixie-cron (5 fields, or 6 with seconds first, and the
//! `@hourly` … nicknames), parsed by `croner`. Daylight saving: a local
//! time skipped at spring-forward fires once, right after the change (02:30
//! becomes 03:00); a local time that occurs twice at fall-back fires once,
//! on its first pass (croner alone would fire the second pass too).

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, LocalResult, TimeZone, Utc};
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
        let cron = parser()
            .parse(text)
            .map_err(|e| invalid_cron(format!("{}: {e}", Echo(text))))?;
        let spec = CronSpec {
            expr: text.to_string(),
            tz,
            cron,
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

    /// Whether `t` is the second pass of a local time repeated at a
    /// fall-back (it fired on its first).
    fn second_pass(&self, t: DateTime<Tz>) -> bool {
        match self.tz.from_local_datetime(&t.naive_local()) {
            LocalResult::Ambiguous(first, _) => first != t,
            _ => false,
        }
    }

    /// The first occurrence strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut at = t.with_timezone(&self.tz);
        // A repeated hour holds at most 3,600 second-pass occurrences.
        for _ in 0..4_000 {
            at = self.cron.find_next_occurrence(&at, false).ok()?;
            if !self.second_pass(at) {
                return Some(at.with_timezone(&Utc));
            }
        }
        None
    }

    /// The latest occurrence at or before `t`.
    pub fn latest_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut at = t.with_timezone(&self.tz);
        let mut inclusive = true;
        for _ in 0..4_000 {
            at = self.cron.find_previous_occurrence(&at, inclusive).ok()?;
            inclusive = false;
            if !self.second_pass(at) {
                return Some(at.with_timezone(&Utc));
            }
        }
        None
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

    #[test]
    fn jq_124_a_time_skipped_at_spring_forward_fires_once_right_after() {
        // Berlin, 29 March 2026: 02:00 CET becomes 03:00 CEST.
        let from = "2026-03-28T23:00:00Z";
        assert_eq!(
            walk(&berlin("30 2 * * *"), from, 2),
            ["29 03:00+02:00", "30 02:30+02:00"]
        );
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
    }

    #[test]
    fn jq_124_a_repeated_hour_fires_once() {
        // Berlin, 25 October 2026: 03:00 CEST becomes 02:00 CET.
        let from = "2026-10-24T22:00:00Z";
        assert_eq!(
            walk(&berlin("30 2 * * *"), from, 2),
            ["25 02:30+02:00", "26 02:30+01:00"]
        );
        assert_eq!(
            walk(&berlin("0 * * * *"), from, 4),
            [
                "25 01:00+02:00",
                "25 02:00+02:00",
                "25 03:00+01:00",
                "25 04:00+01:00"
            ]
        );
        assert_eq!(
            walk(&berlin("*/30 * * * *"), from, 5),
            [
                "25 00:30+02:00",
                "25 01:00+02:00",
                "25 01:30+02:00",
                "25 02:00+02:00",
                "25 02:30+02:00"
            ]
        );
        assert_eq!(
            walk(&berlin("*/30 * * * *"), "2026-10-25T00:45:00Z", 1),
            ["25 03:00+01:00"]
        );
        // Backwards too: the second pass is not an occurrence.
        let spec = berlin("0 * * * *");
        assert_eq!(
            spec.latest_at_or_before(at("2026-10-25T01:30:00Z")),
            Some(at("2026-10-25T00:00:00Z")),
            "02:00 CET (01:00Z) is the second pass of 02:00"
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
