//! JQ-125: the schedules' daylight-saving rule against an independent
//! oracle. The oracle walks instants one step (a minute, a second for six
//! fields) at a time, reads each one's wall time from the zone database,
//! and matches it with a cron matcher of its own (no `croner`): an
//! occurrence is what the rule in ADR 0019 says, stated here directly:
//!
//! - a pattern whose hour field starts with `*` fires at every instant
//!   whose wall time matches (skipped wall times never, repeated ones on
//!   both passes);
//! - any other fires at an instant whose wall time matches and is seen for
//!   the first time (the first pass), and once at the first instant after
//!   a spring-forward whose skipped wall times include a match.
//!
//! `next_after`, `latest_at_or_before` and `due` are compared with it over
//! generated patterns, around every change of 2026–2030 in zones with
//! 1-hour, 30-minute and unusual shifts.

use std::collections::BTreeSet;
use std::sync::OnceLock;

use chrono::{DateTime, Datelike, NaiveDateTime, Offset, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use jq_core::cron::{CronSpec, MAX_CATCH_UP, Missed};
use proptest::prelude::*;

const ZONES: [&str; 9] = [
    "Europe/Berlin",
    "America/New_York",
    "Australia/Lord_Howe",
    "America/Santiago",
    "Africa/Casablanca",
    "Pacific/Chatham",
    "America/St_Johns",
    "Asia/Tehran",
    "Europe/Dublin",
];

// ---- the oracle's own cron matcher ----

struct Field {
    values: BTreeSet<u32>,
    star: bool,
}

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const DAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

fn value(s: &str, names: &[&str], first: u32) -> u32 {
    names
        .iter()
        .position(|n| n.eq_ignore_ascii_case(s))
        .map(|i| i as u32 + first)
        .unwrap_or_else(|| s.parse().unwrap_or_else(|_| panic!("oracle: {s:?}")))
}

fn field(text: &str, lo: u32, hi: u32, names: &[&str], first: u32) -> Field {
    let mut values = BTreeSet::new();
    for item in text.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => (r, s.parse::<u32>().unwrap()),
            None => (item, 1),
        };
        let (a, b) = if range == "*" {
            (lo, hi)
        } else if let Some((a, b)) = range.split_once('-') {
            (value(a, names, first), value(b, names, first))
        } else {
            let a = value(range, names, first);
            (a, a)
        };
        values.extend((a..=b).step_by(step as usize));
    }
    Field {
        values,
        star: text.starts_with('*'),
    }
}

struct Pattern {
    second: Field,
    minute: Field,
    hour: Field,
    dom: Field,
    month: Field,
    dow: Field,
    /// Seconds field given: the oracle steps a second at a time.
    six: bool,
}

impl Pattern {
    fn parse(text: &str) -> Pattern {
        let text = match text {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            t => t,
        };
        let mut f: Vec<&str> = text.split_whitespace().collect();
        let six = f.len() == 6;
        if !six {
            f.insert(0, "0");
        }
        let mut dow = field(f[5], 0, 7, &DAYS, 0);
        if dow.values.remove(&7) {
            dow.values.insert(0);
        }
        Pattern {
            second: field(f[0], 0, 59, &[], 0),
            minute: field(f[1], 0, 59, &[], 0),
            hour: field(f[2], 0, 23, &[], 0),
            dom: field(f[3], 1, 31, &[], 0),
            month: field(f[4], 1, 12, &MONTHS, 1),
            dow,
            six,
        }
    }

    fn matches(&self, w: NaiveDateTime) -> bool {
        let dom = self.dom.values.contains(&w.day());
        let dow = self.dow.values.contains(&w.weekday().num_days_from_sunday());
        // Vixie: both days restricted means either; else both.
        let day = if self.dom.star || self.dow.star {
            dom && dow
        } else {
            dom || dow
        };
        day && self.second.values.contains(&w.second())
            && self.minute.values.contains(&w.minute())
            && self.hour.values.contains(&w.hour())
            && self.month.values.contains(&w.month())
    }

    fn step(&self) -> i64 {
        if self.six { 1 } else { 60 }
    }
}

fn wall(tz: Tz, secs: i64) -> NaiveDateTime {
    tz.timestamp_opt(secs, 0).unwrap().naive_local()
}

/// The oracle: occurrences in `[from, to]` (seconds), by the rule.
fn oracle(p: &Pattern, tz: Tz, from: i64, to: i64) -> Vec<i64> {
    let step = p.step();
    let catch_up = !p.hour.star;
    // Wall times seen before `from`: enough to know a first pass.
    let mut seen_max = (from - 6 * 3600..from)
        .step_by(step as usize)
        .map(|s| wall(tz, s))
        .max()
        .unwrap();
    let mut previous = wall(tz, from - step);
    let mut out = vec![];
    let mut i = from;
    while i <= to {
        let w = wall(tz, i);
        let mut fire = false;
        // Wall times jumped over (spring-forward).
        let mut g = previous + chrono::Duration::seconds(step);
        while catch_up && g < w {
            if p.matches(g) {
                fire = true;
                break;
            }
            g += chrono::Duration::seconds(step);
        }
        if p.matches(w) && (!catch_up || w > seen_max) {
            fire = true;
        }
        if fire {
            out.push(i);
        }
        seen_max = seen_max.max(w);
        previous = w;
        i += step;
    }
    out
}

// ---- the changes of 2026–2030, from the zone database ----

fn offset(tz: Tz, secs: i64) -> i32 {
    tz.offset_from_utc_datetime(&DateTime::from_timestamp(secs, 0).unwrap().naive_utc())
        .fix()
        .local_minus_utc()
}

/// Each zone's changes (seconds) from 2026 to 2030, found hour by hour
/// and narrowed to the second.
fn changes() -> &'static Vec<(Tz, Vec<i64>)> {
    static CHANGES: OnceLock<Vec<(Tz, Vec<i64>)>> = OnceLock::new();
    CHANGES.get_or_init(|| {
        let start = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap().timestamp();
        let end = Utc.with_ymd_and_hms(2031, 1, 1, 0, 0, 0).unwrap().timestamp();
        ZONES
            .iter()
            .map(|name| {
                let tz: Tz = name.parse().unwrap();
                let mut found = vec![];
                let mut h = start;
                while h < end {
                    if offset(tz, h) != offset(tz, h + 3600) {
                        let (mut lo, mut hi) = (h, h + 3600);
                        while hi - lo > 1 {
                            let mid = (lo + hi) / 2;
                            if offset(tz, mid) == offset(tz, h) {
                                lo = mid;
                            } else {
                                hi = mid;
                            }
                        }
                        found.push(hi);
                    }
                    h += 3600;
                }
                (tz, found)
            })
            .collect()
    })
}

#[test]
fn jq_125_the_oracle_sees_every_change() {
    for (tz, found) in changes() {
        let expected = match tz.name() {
            // No daylight saving since 2022.
            "Asia/Tehran" => 0,
            // Two a year, or around Ramadan for Morocco (two a year, one
            // year three or none: at least 8 in five years).
            "Africa/Casablanca" => found.len().max(8),
            _ => 10,
        };
        assert_eq!(found.len(), expected, "{}: {found:?}", tz.name());
    }
}

// ---- generated patterns ----

fn list(max: u32, near: std::ops::RangeInclusive<u32>) -> BoxedStrategy<String> {
    let v = prop_oneof![2 => near.clone(), 1 => 0..=max];
    let lo = near.clone();
    prop_oneof![
        2 => Just("*".to_string()),
        2 => v.clone().prop_map(|a| a.to_string()),
        2 => prop::collection::btree_set(v.clone(), 2..4)
            .prop_map(|s| s.iter().map(u32::to_string).collect::<Vec<_>>().join(",")),
        1 => (lo.clone(), 0..=3u32).prop_map(move |(a, d)| format!("{a}-{}", (a + d).min(max))),
        1 => (1..=max / 2).prop_map(|s| format!("*/{s}")),
        1 => (lo.clone(), 1..=4u32, 2..=5u32)
            .prop_map(move |(a, d, s)| format!("{a}-{}/{s}", (a + d * s).min(max))),
        1 => (lo, 0..=2u32, v)
            .prop_map(move |(a, d, c)| format!("{a}-{},{c}", (a + d).min(max))),
    ]
    .boxed()
}

fn pattern() -> impl Strategy<Value = String> {
    let minute = prop_oneof![
        3 => list(59, 0..=59),
        1 => prop_oneof![Just("0"), Just("30"), Just("15,45"), Just("0,30"), Just("45")]
            .prop_map(str::to_string),
    ];
    // Hours where the zones change (0-4) come up often.
    let hour = list(23, 0..=4);
    let dom = prop_oneof![
        6 => Just("*".to_string()),
        1 => Just("1-31".to_string()),
        1 => prop::collection::btree_set(1..=31u32, 1..4)
            .prop_map(|s| s.iter().map(u32::to_string).collect::<Vec<_>>().join(",")),
    ];
    let month = prop_oneof![
        6 => Just("*"),
        1 => Just("MAR-NOV"),
        1 => Just("3,4,9,10"),
        1 => Just("JAN-DEC"),
        1 => Just("OCT,MAR,APR,SEP,FEB,NOV"),
    ];
    let dow = prop_oneof![
        6 => Just("*"),
        1 => Just("SUN"),
        1 => Just("0,6"),
        1 => Just("7"),
        1 => Just("SAT,SUN"),
        1 => Just("FRI-SAT"),
        1 => Just("MON-FRI"),
    ];
    let second = prop_oneof![Just("0"), Just("*/15"), Just("0,30"), Just("10-20/5"), Just("59")];
    let five = (minute, hour, dom, month, dow).prop_map(|(mi, h, d, mo, w)| format!("{mi} {h} {d} {mo} {w}"));
    prop_oneof![
        12 => five.clone(),
        3 => (second, five).prop_map(|(s, f)| format!("{s} {f}")),
        1 => prop_oneof![Just("@daily"), Just("@hourly"), Just("@weekly"), Just("@midnight"), Just("@monthly")]
            .prop_map(str::to_string),
    ]
}

/// Equal lists, or the first difference with its wall times.
fn same(got: &[i64], want: &[i64], tz: Tz, what: impl Fn() -> String) -> Result<(), TestCaseError> {
    if got == want {
        return Ok(());
    }
    let i = got.iter().zip(want).take_while(|(a, b)| a == b).count();
    let show = |v: &[i64]| {
        v.iter()
            .skip(i.saturating_sub(2))
            .take(5)
            .map(|s| tz.timestamp_opt(*s, 0).unwrap().format("%F %T%:z").to_string())
            .collect::<Vec<_>>()
    };
    Err(TestCaseError::fail(format!(
        "{}: {} vs {} occurrences, first difference at {i}: got {:?}, oracle {:?}",
        what(),
        got.len(),
        want.len(),
        show(got),
        show(want)
    )))
}

fn utc(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(secs, 0).unwrap()
}

/// Zone, change (or, without one, an instant in 2026–2030), and an offset
/// within the window for the spot checks.
fn around_a_change() -> impl Strategy<Value = (usize, usize, i64, u32)> {
    (
        0..ZONES.len(),
        0..16usize,
        -1_000_000i64..1_000_000,
        0..1_000_000_000u32,
    )
}

fn check(expr: &str, zone: usize, which: usize, spot: i64, nanos: u32) -> Result<(), TestCaseError> {
    let (tz, found) = &changes()[zone];
    let tz = *tz;
    let p = Pattern::parse(expr);
    let spec = CronSpec::parse(expr, tz.name()).map_err(|e| TestCaseError::fail(format!("{expr}: {e}")))?;
    let center = if found.is_empty() {
        Utc.with_ymd_and_hms(2026 + (which % 5) as i32, 3, 29, 1, 0, 0)
            .unwrap()
            .timestamp()
    } else {
        found[which % found.len()]
    };
    // A day either side for minutes; three hours for seconds.
    let half = if p.six { 3 * 3600 } else { 26 * 3600 };
    let (from, to) = (center - half, center + half);
    let expected = oracle(&p, tz, from, to);
    let ctx = || format!("{expr:?} in {}, change at {}", tz.name(), utc(center));

    // Forward from the window's start: the same occurrences, in order.
    let mut got = vec![];
    let mut t = utc(from - 1);
    while let Some(n) = spec.next_after(t) {
        if n > utc(to) {
            break;
        }
        got.push(n.timestamp());
        prop_assert!(n > t, "{}: next_after({t}) = {n} is not after it", ctx());
        t = n;
    }
    same(&got, &expected, tz, || format!("next_after chain, {}", ctx()))?;

    // Backward from the window's end.
    let mut back = vec![];
    let mut t = utc(to);
    while let Some(l) = spec.latest_at_or_before(t) {
        if l < utc(from) {
            break;
        }
        back.push(l.timestamp());
        prop_assert!(l <= t, "{}: latest_at_or_before({t}) = {l}", ctx());
        t = l - chrono::Duration::nanoseconds(1);
    }
    back.reverse();
    same(&back, &expected, tz, || {
        format!("latest_at_or_before chain, {}", ctx())
    })?;

    // Any instant, with a fraction of a second: the neighbours.
    let at = (center + spot % half).clamp(from + 1, to - 1);
    let t = utc(at) + chrono::Duration::nanoseconds(i64::from(nanos));
    let after = expected.iter().find(|o| utc(**o) > t);
    if let Some(o) = after {
        prop_assert_eq!(spec.next_after(t), Some(utc(*o)), "next_after({}), {}", t, ctx());
    }
    let before = expected.iter().rev().find(|o| utc(**o) <= t);
    if let Some(o) = before {
        prop_assert_eq!(
            spec.latest_at_or_before(t),
            Some(utc(*o)),
            "latest_at_or_before({}), {}",
            t,
            ctx()
        );
    }

    // A firing at `t` for a schedule due since `due_from`: every occurrence
    // between (the newest hundred), and the next one after `t`.
    let due_from = utc((at - half / 2).max(from));
    if let (Some(first), Some(_)) = (expected.iter().find(|o| utc(**o) >= due_from), after) {
        let d = spec.due(utc(*first), t, Missed::All);
        let mut want: Vec<DateTime<Utc>> = expected
            .iter()
            .map(|o| utc(*o))
            .filter(|o| *o >= utc(*first) && *o <= t)
            .collect();
        let extra = want.len().saturating_sub(MAX_CATCH_UP);
        want.drain(..extra);
        prop_assert_eq!(&d.fire, &want, "due({}, {}), {}", first, t, ctx());
        prop_assert_eq!(d.next_at, after.map(|o| utc(*o)), "due's next_at, {}", ctx());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 600, ..ProptestConfig::default() })]

    #[test]
    fn jq_125_occurrences_match_an_enumeration_of_wall_times(
        expr in pattern(),
        (zone, which, spot, nanos) in around_a_change(),
    ) {
        check(&expr, zone, which, spot, nanos)?;
    }
}

/// Every zone, every change, the patterns and the ones that show
/// each side of the rule: the whole grid, not a sample.
#[test]
fn jq_125_every_change_of_2026_to_2030_with_the_named_patterns() {
    for expr in [
        "0,30 2 * * *",
        "30 2 * * *",
        "15,45 1-3 * * *",
        "23 0-20/2 * * *",
        "*/15 2 * * *",
        "0 * * * *",
        "30 * * * *",
        "*/30 * * * *",
        "45 */2 * * *",
        "0 0 * * *",
        "@daily",
        "0,30 0-3 * * SUN",
        "0 30 2 * * *",
    ] {
        for zone in 0..ZONES.len() {
            for which in 0..changes()[zone].1.len().max(1) {
                check(expr, zone, which, 0, 0).unwrap();
            }
        }
    }
}
