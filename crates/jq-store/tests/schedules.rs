//! Periodic schedules (JQ-124) against real PostgreSQL: firing, missed and
//! overlap policies, pause, delete, and exactly one job per occurrence.
//! Outages are made by moving `next_at` back, so no test waits for a clock.

use chrono::{DateTime, Duration, Timelike, Utc};
use jq_core::cron::{CronSpec, SchedulePatch, ScheduleRequest};
use jq_store::{Store, StoreError};
use jq_testkit::TestDb;

const MAX: usize = 1024 * 1024;

fn req(name: &str, cron: &str) -> ScheduleRequest {
    ScheduleRequest {
        name: name.into(),
        cron: cron.into(),
        queue: "default".into(),
        payload: br#"{"handler":"noop"}"#.to_vec(),
        ..Default::default()
    }
}

async fn set_next(s: &Store, name: &str, at: DateTime<Utc>) {
    sqlx::query("UPDATE schedules SET next_at = $2 WHERE name = $1")
        .bind(name)
        .bind(at)
        .execute(s.pool())
        .await
        .unwrap();
}

async fn db_now(s: &Store) -> DateTime<Utc> {
    sqlx::query_scalar("SELECT now()")
        .fetch_one(s.pool())
        .await
        .unwrap()
}

/// The occurrences the schedule's jobs were submitted for, oldest first.
async fn jobs_of(s: &Store, name: &str) -> Vec<DateTime<Utc>> {
    sqlx::query_scalar(
        "SELECT j.scheduled_at FROM jobs j JOIN job_events e ON e.job_id = j.id \
         WHERE e.reason = 'SCHEDULED' AND e.detail = $1 ORDER BY j.scheduled_at",
    )
    .bind(name)
    .fetch_all(s.pool())
    .await
    .unwrap()
}

/// An hourly schedule whose last three occurrences are all at least half
/// an hour old, and `next_at` set to the first of them: every server was
/// down across three occurrences.
async fn three_missed(s: &Store, name: &str, missed: &str) -> Vec<DateTime<Utc>> {
    let now = db_now(s).await;
    let minute = (now.minute() + 30) % 60;
    let cron = format!("{minute} * * * *");
    s.create_schedule(
        ScheduleRequest {
            missed: missed.into(),
            ..req(name, &cron)
        },
        MAX,
    )
    .await
    .unwrap();
    let spec = CronSpec::parse(&cron, "").unwrap();
    let last = spec.latest_at_or_before(now).unwrap();
    let occ = vec![last - Duration::hours(2), last - Duration::hours(1), last];
    set_next(s, name, occ[0]).await;
    occ
}

#[tokio::test]
async fn jq_124_missed_occurrences_follow_skip_once_and_all() {
    let db = TestDb::new().await;
    let s = db.store();
    for (policy, fired) in [("skip", 0..0), ("once", 2..3), ("all", 0..3)] {
        let name = format!("missed-{policy}");
        let occ = three_missed(&s, &name, policy).await;
        let f = s.fire_due_schedules(10).await.unwrap();
        assert_eq!(f.len(), 1, "{policy}");
        assert_eq!(f[0].skipped, 3 - fired.len() as u64, "{policy}");
        assert_eq!(jobs_of(&s, &name).await, occ[fired.clone()], "{policy}");
        let r = s.get_schedule(&name).await.unwrap();
        assert!(
            r.next_at.unwrap() > db_now(&s).await,
            "{policy}: next_at moved past now"
        );
        assert_eq!((r.fires, r.skipped), (fired.len() as u64, 3 - fired.len() as u64));
        // Nothing more is due.
        assert!(s.fire_due_schedules(10).await.unwrap().is_empty(), "{policy}");
    }
}

/// The job of an occurrence carries it, and its `job.submitted` event says
/// SCHEDULED with the schedule's name; firing the same occurrence again
/// (as after a crash that lost the `next_at` update) submits nothing.
#[tokio::test]
async fn jq_124_one_job_per_occurrence_even_when_fired_twice() {
    let db = TestDb::new().await;
    let s = db.store();
    let occ = three_missed(&s, "twice", "all").await;
    let first = s.fire_due_schedules(10).await.unwrap();
    assert_eq!(first[0].jobs.len(), 3);
    assert_eq!(first[0].jobs.iter().map(|j| j.0).collect::<Vec<_>>(), occ);
    set_next(&s, "twice", occ[0]).await;
    let again = s.fire_due_schedules(10).await.unwrap();
    assert_eq!(again[0].jobs, vec![], "the keys were taken");
    assert_eq!(jobs_of(&s, "twice").await, occ);
    let key: String = sqlx::query_scalar("SELECT idempotency_key FROM jobs WHERE id = $1")
        .bind(first[0].jobs[0].1)
        .fetch_one(s.pool())
        .await
        .unwrap();
    assert_eq!(
        key,
        format!(
            "schedule:twice:{}",
            occ[0].to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
        )
    );
}

/// Two replicas firing a secondly schedule at once, 90 occurrences due:
/// each fired once, none lost.
#[tokio::test]
async fn jq_124_concurrent_firings_submit_each_occurrence_once() {
    let db = TestDb::new().await;
    let a = db.store();
    let b = Store::connect_lazy(&db.url, &Default::default()).unwrap();
    a.create_schedule(
        ScheduleRequest {
            missed: "all".into(),
            ..req("secondly", "* * * * * *")
        },
        MAX,
    )
    .await
    .unwrap();
    let now = db_now(&a).await;
    let from = now.with_nanosecond(0).unwrap() - Duration::seconds(30);
    set_next(&a, "secondly", from).await;
    let fire = |s: Store| {
        tokio::spawn(async move {
            let mut n = 0;
            for _ in 0..20 {
                for f in s.fire_due_schedules(10).await.unwrap() {
                    n += f.jobs.len();
                }
            }
            n
        })
    };
    let (x, y) = (fire(a.clone()), fire(b));
    let fired = x.await.unwrap() + y.await.unwrap();
    let got = jobs_of(&a, "secondly").await;
    assert_eq!(got.len(), fired, "every submitted job is counted once");
    let mut unique = got.clone();
    unique.dedup();
    assert_eq!(unique, got, "no occurrence twice");
    assert_eq!(got[0], from, "none lost from the first");
    for w in got.windows(2) {
        assert_eq!(w[1] - w[0], Duration::seconds(1), "no gap: {w:?}");
    }
}

#[tokio::test]
async fn jq_124_a_paused_schedule_fires_nothing_and_resumes_from_now() {
    let db = TestDb::new().await;
    let s = db.store();
    let occ = three_missed(&s, "paused", "all").await;
    let r = s.set_schedule_paused("paused", true).await.unwrap();
    assert!(r.paused);
    assert!(s.fire_due_schedules(10).await.unwrap().is_empty());
    let r = s.set_schedule_paused("paused", false).await.unwrap();
    assert!(!r.paused);
    assert!(r.next_at.unwrap() > occ[2], "a pause is not caught up");
    assert!(s.fire_due_schedules(10).await.unwrap().is_empty());
    assert!(jobs_of(&s, "paused").await.is_empty());
}

/// A delete waits for a firing that holds the schedule; once it is gone
/// nothing fires. Its name is free again.
#[tokio::test]
async fn jq_124_delete_while_due() {
    let db = TestDb::new().await;
    let s = db.store();
    three_missed(&s, "doomed", "all").await;
    // A firing in progress elsewhere: the row is held.
    let mut holder = s.pool().begin().await.unwrap();
    sqlx::query("SELECT 1 FROM schedules WHERE name = 'doomed' FOR UPDATE")
        .execute(&mut *holder)
        .await
        .unwrap();
    assert!(
        s.fire_due_schedules(10).await.unwrap().is_empty(),
        "held: skipped, not waited for"
    );
    let deleting = {
        let s = s.clone();
        tokio::spawn(async move { s.delete_schedule("doomed").await })
    };
    holder.rollback().await.unwrap();
    deleting.await.unwrap().unwrap();
    assert!(s.fire_due_schedules(10).await.unwrap().is_empty());
    assert!(jobs_of(&s, "doomed").await.is_empty());
    assert!(matches!(
        s.delete_schedule("doomed").await,
        Err(StoreError::ScheduleNotFound(_))
    ));
    assert!(matches!(
        s.get_schedule("doomed").await,
        Err(StoreError::ScheduleNotFound(_))
    ));
}

/// Overlap skip: no new occurrence while the previous one's job is not
/// terminal. Trigger fires one now, without moving `next_at`.
#[tokio::test]
async fn jq_124_overlap_skip_waits_for_the_previous_job_and_trigger_fires_now() {
    let db = TestDb::new().await;
    let s = db.store();
    s.create_schedule(
        ScheduleRequest {
            overlap: "skip".into(),
            missed: "all".into(),
            ..req("single", "* * * * * *")
        },
        MAX,
    )
    .await
    .unwrap();
    let next = s.get_schedule("single").await.unwrap().next_at.unwrap();
    let (at, job) = s.trigger_schedule("single").await.unwrap();
    assert!((db_now(&s).await - at).num_seconds().abs() < 60);
    let r = s.get_schedule("single").await.unwrap();
    assert_eq!((r.next_at, r.last_job_id, r.fires), (Some(next), Some(job), 1));
    // Two occurrences due, but the triggered job is still PENDING.
    let second = |t: DateTime<Utc>| t.with_nanosecond(0).unwrap() - Duration::seconds(1);
    set_next(&s, "single", second(db_now(&s).await)).await;
    let f = s.fire_due_schedules(10).await.unwrap();
    assert_eq!(f[0].jobs.len(), 0, "overlapping: skipped");
    assert!(f[0].skipped >= 2, "{f:?}");
    sqlx::query("UPDATE jobs SET status = 'DONE' WHERE id = $1")
        .bind(job)
        .execute(s.pool())
        .await
        .unwrap();
    set_next(&s, "single", second(db_now(&s).await)).await;
    let f = s.fire_due_schedules(10).await.unwrap();
    assert_eq!(f[0].jobs.len(), 1, "the previous job finished: one, not one each");
}

#[tokio::test]
async fn jq_124_create_update_and_refusals() {
    let db = TestDb::new().await;
    let s = db.store();
    let r = s
        .create_schedule(
            ScheduleRequest {
                timezone: "Europe/Berlin".into(),
                ..req("report", "0 3 * * *")
            },
            MAX,
        )
        .await
        .unwrap();
    assert_eq!(
        (r.def.spec.expr(), r.def.spec.timezone()),
        ("0 3 * * *", "Europe/Berlin")
    );
    assert!(matches!(
        s.create_schedule(req("report", "@daily"), MAX).await,
        Err(StoreError::ScheduleExists(_))
    ));
    assert!(matches!(
        s.create_schedule(
            ScheduleRequest {
                queue: "nope".into(),
                ..req("x", "@daily")
            },
            MAX
        )
        .await,
        Err(StoreError::QueueNotFound(_))
    ));
    let e = s.create_schedule(req("y", "0 25 * * *"), MAX).await.unwrap_err();
    assert!(
        matches!(e, StoreError::Invalid(_)) && e.to_string().contains("field 2 (hour)"),
        "{e}"
    );
    let u = s
        .update_schedule(
            "report",
            &SchedulePatch {
                cron: Some("*/5 * * * *".into()),
                priority: Some(7),
                ..Default::default()
            },
            MAX,
        )
        .await
        .unwrap();
    assert_eq!((u.def.spec.expr(), u.def.priority), ("*/5 * * * *", 7));
    assert!(
        u.next_at.unwrap() - db_now(&s).await <= Duration::minutes(5),
        "next_at follows the new pattern"
    );
    let bad = s
        .update_schedule(
            "report",
            &SchedulePatch {
                timezone: Some("Mars/Olympus".into()),
                ..Default::default()
            },
            MAX,
        )
        .await
        .unwrap_err();
    assert!(bad.to_string().contains("timezone: \"Mars/Olympus\""), "{bad}");
    assert_eq!(
        s.get_schedule("report").await.unwrap().def.spec.timezone(),
        "Europe/Berlin",
        "unchanged"
    );
    assert_eq!(s.list_schedules().await.unwrap().len(), 1);
}

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// Every whole UTC hour in `(from, to]`: an hourly schedule in Berlin
/// (whole-hour offsets) runs on the clock, so it fires each of them.
fn utc_hours(from: &str, to: &str) -> Vec<DateTime<Utc>> {
    let (mut t, to) = (utc(from), utc(to));
    let mut out = vec![];
    while t < to {
        t += Duration::hours(1);
        out.push(t);
    }
    out
}

/// JQ-125 on the firing path: a server running through Berlin's two
/// changes of 2026, its clock injected and firing every five minutes,
/// submits exactly the occurrences the rule names (worked out by hand
/// below), and the schedule's next (what `schedule get` shows) follows it.
#[tokio::test]
async fn jq_125_a_server_running_through_both_changes_fires_what_the_rule_names() {
    let db = TestDb::new().await;
    let s = db.store();
    let berlin = |name: &str, cron: &str, missed: &str| ScheduleRequest {
        timezone: "Europe/Berlin".into(),
        missed: missed.into(),
        ..req(name, cron)
    };
    for (window, from, to, twice, twice_next) in [
        (
            "spring",
            "2026-03-27T23:00:00Z",
            "2026-03-30T03:00:00Z",
            // 28th 02:00 and 02:30 CET; the 29th's 02:00 and 02:30 do not
            // exist: one run at 03:00 CEST; the 30th's in CEST.
            &[
                "2026-03-28T01:00:00Z",
                "2026-03-28T01:30:00Z",
                "2026-03-29T01:00:00Z",
                "2026-03-30T00:00:00Z",
                "2026-03-30T00:30:00Z",
            ][..],
            "2026-03-31T00:00:00Z",
        ),
        (
            "autumn",
            "2026-10-24T22:00:00Z",
            "2026-10-26T03:00:00Z",
            // 25th: 02:00 and 02:30 CEST, not again in CET; 26th in CET.
            &[
                "2026-10-25T00:00:00Z",
                "2026-10-25T00:30:00Z",
                "2026-10-26T01:00:00Z",
                "2026-10-26T01:30:00Z",
            ][..],
            "2026-10-27T01:00:00Z",
        ),
    ] {
        let (fixed, hourly) = (format!("twice-{window}"), format!("hourly-{window}"));
        for (name, cron) in [(&fixed, "0,30 2 * * *"), (&hourly, "0 * * * *")] {
            let r = berlin(name, cron, "once");
            s.create_schedule(r.clone(), MAX).await.unwrap();
            let spec = CronSpec::parse(&r.cron, &r.timezone).unwrap();
            set_next(&s, name, spec.next_after(utc(from)).unwrap()).await;
        }
        let mut clock = utc(from);
        while clock < utc(to) {
            clock += Duration::minutes(5);
            s.fire_due_schedules_at(50, Some(clock)).await.unwrap();
        }
        assert_eq!(
            jobs_of(&s, &fixed).await,
            twice.iter().map(|t| utc(t)).collect::<Vec<_>>(),
            "0,30 2 * * *, {window}"
        );
        let r = s.get_schedule(&fixed).await.unwrap();
        assert_eq!((r.next_at, r.skipped), (Some(utc(twice_next)), 0), "{window}");
        assert_eq!(
            jobs_of(&s, &hourly).await,
            utc_hours(from, to),
            "0 * * * *, {window}"
        );
    }

    // Down through the spring night, every missed occurrence wanted: the
    // two skipped times are one occurrence, so one job.
    s.create_schedule(berlin("down", "0,30 2 * * *", "all"), MAX)
        .await
        .unwrap();
    set_next(&s, "down", utc("2026-03-29T01:00:00Z")).await;
    s.fire_due_schedules_at(50, Some(utc("2026-03-29T05:00:00Z")))
        .await
        .unwrap();
    assert_eq!(jobs_of(&s, "down").await, [utc("2026-03-29T01:00:00Z")]);
    let r = s.get_schedule("down").await.unwrap();
    assert_eq!((r.next_at, r.fires), (Some(utc("2026-03-30T00:00:00Z")), 1));
}
