//! Every view in every format, from fixed inputs and a fixed "now", so a
//! change to what operators or scripts see shows up in review.

use chrono::{DateTime, Utc};
use jq_ctl::cli::Format;
use jq_ctl::output::*;
use jq_proto::v1;

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-28T12:00:00Z")
        .unwrap()
        .to_utc()
}

fn ts(s: &str) -> Option<prost_types::Timestamp> {
    let t = DateTime::parse_from_rfc3339(s).unwrap();
    Some(prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    })
}

fn done_job() -> v1::Job {
    v1::Job {
        id: "3f0c2a4e-8d1b-4e7a-9c55-0b1d2e3f4a5b".into(),
        queue: "default".into(),
        status: v1::JobStatus::Done as i32,
        priority: 5,
        payload: br#"{"command":["echo","hi"]}"#.to_vec(),
        result: br#"{"exit_code":0,"stdout":"hi\n","stderr":"","timed_out":false}"#.to_vec(),
        attempt: 1,
        retries: 0,
        max_retries: 3,
        worker_id: "worker-a".into(),
        created_at: ts("2026-11-28T11:55:00Z"),
        not_before: ts("2026-11-28T11:55:00Z"),
        assigned_at: ts("2026-11-28T11:55:00.010Z"),
        started_at: ts("2026-11-28T11:55:00.020Z"),
        completed_at: ts("2026-11-28T11:55:01Z"),
        updated_at: ts("2026-11-28T11:55:01Z"),
        has_result: true,
        ..Default::default()
    }
}

fn dead_job() -> v1::Job {
    v1::Job {
        id: "9a1b2c3d-0000-4000-8000-000000000002".into(),
        queue: "emails".into(),
        status: v1::JobStatus::DeadLettered as i32,
        priority: 0,
        payload: format!(r#"{{"command":["send-mail","{}"]}}"#, "x".repeat(300)).into_bytes(),
        error: "\"send-mail\" exited with code 75: SMTP 451 try again later".into(),
        attempt: 4,
        retries: 3,
        max_retries: 3,
        idempotency_key: "order-42".into(),
        created_at: ts("2026-11-27T09:00:00Z"),
        not_before: ts("2026-11-27T09:10:00Z"),
        expires_at: ts("2026-11-29T09:00:00Z"),
        updated_at: ts("2026-11-27T09:30:00Z"),
        ..Default::default()
    }
}

fn binary_job() -> v1::Job {
    v1::Job {
        id: "9a1b2c3d-0000-4000-8000-000000000003".into(),
        queue: "default".into(),
        status: v1::JobStatus::Pending as i32,
        payload: vec![0xff, 0x00, 0x10],
        max_retries: 3,
        created_at: ts("2026-11-28T11:59:58Z"),
        ..Default::default()
    }
}

fn events() -> Vec<v1::JobEvent> {
    let ev = |from: v1::JobStatus, to: v1::JobStatus, reason: &str, worker: &str, at: &str, detail: &str| {
        v1::JobEvent {
            event_id: format!("e-{reason}"),
            job_id: "3f0c2a4e-8d1b-4e7a-9c55-0b1d2e3f4a5b".into(),
            queue: "default".into(),
            from_status: from as i32,
            to_status: to as i32,
            reason: reason.into(),
            worker_id: worker.into(),
            attempt: if reason == "SUBMITTED" { 0 } else { 1 },
            occurred_at: ts(at),
            detail: detail.into(),
        }
    };
    use v1::JobStatus::*;
    vec![
        ev(Unspecified, Pending, "SUBMITTED", "", "2026-11-28T11:55:00Z", ""),
        ev(
            Pending,
            Assigned,
            "CLAIMED",
            "worker-a",
            "2026-11-28T11:55:00.010Z",
            "",
        ),
        ev(
            Assigned,
            Running,
            "STARTED",
            "worker-a",
            "2026-11-28T11:55:00.020Z",
            "",
        ),
        ev(Running, Done, "COMPLETED", "worker-a", "2026-11-28T11:55:01Z", ""),
    ]
}

fn queue(name: &str, paused: bool) -> v1::Queue {
    v1::Queue {
        name: name.into(),
        max_retries: 3,
        default_ttl_seconds: if paused { Some(3600) } else { None },
        default_timeout_seconds: if paused { Some(600) } else { None },
        backoff_base_ms: 5000,
        backoff_max_ms: 300_000,
        concurrency_limit: if paused { Some(10) } else { None },
        rate_limit_per_second: if paused { Some(2.5) } else { None },
        paused,
        created_at: ts("2026-11-01T00:00:00Z"),
        retain_done_seconds: if paused { 3600 } else { -1 },
        retain_dead_seconds: if paused { 30 * 86_400 } else { 0 },
        priority_weights: if paused {
            "9:8,5:3,0:1".into()
        } else {
            String::new()
        },
    }
}

fn stats() -> v1::QueueStats {
    v1::QueueStats {
        queue: "default".into(),
        pending: 12,
        assigned: 2,
        running: 4,
        done: 1500,
        failed: 0,
        dead_lettered: 3,
        total_processed: 1503,
        avg_processing_seconds: 0.0423,
        error_rate: 0.0125,
        scheduled: 5,
    }
}

fn workers() -> Vec<v1::Worker> {
    vec![
        v1::Worker {
            id: "worker-a".into(),
            hostname: "node-1".into(),
            concurrency: 8,
            queues: vec!["default".into(), "emails".into()],
            queue_weights: vec![1, 3],
            status: v1::WorkerStatus::Online as i32,
            registered_at: ts("2026-11-28T10:00:00Z"),
            last_heartbeat_at: ts("2026-11-28T11:59:57Z"),
            active_jobs: 3,
            version: "0.1.0 (abc123def456)".into(),
        },
        v1::Worker {
            id: "worker-b".into(),
            hostname: "node-2".into(),
            concurrency: 4,
            queues: vec!["default".into()],
            queue_weights: vec![],
            status: v1::WorkerStatus::Draining as i32,
            registered_at: ts("2026-11-28T10:00:00Z"),
            last_heartbeat_at: ts("2026-11-28T11:59:59Z"),
            active_jobs: 1,
            version: "0.1.0 (abc123def456)".into(),
        },
    ]
}

fn system() -> SystemView {
    SystemView::new(
        "localhost:50051".into(),
        v1::GetSystemStatusResponse {
            server_version: "0.1.0 (abc123def456)".into(),
            components: vec![
                v1::ComponentHealth {
                    name: "postgres".into(),
                    state: "ok".into(),
                    detail: "PostgreSQL 15".into(),
                },
                v1::ComponentHealth {
                    name: "redis".into(),
                    state: "ok".into(),
                    detail: "127.0.0.1:6379".into(),
                },
                v1::ComponentHealth {
                    name: "kafka".into(),
                    state: "disabled".into(),
                    detail: "no kafka.brokers; events stay in the outbox".into(),
                },
                v1::ComponentHealth {
                    name: "security".into(),
                    state: "warning".into(),
                    detail: "listening on 0.0.0.0 without authentication (auth.enabled): anyone who can reach this address can submit jobs and drive workers".into(),
                },
            ],
            active_workers: 2,
            queues: vec![stats()],
            outbox_backlog: 17,
            outbox_lag_seconds: 2.5,
        },
    )
}

/// Snapshot `v` in all three formats.
fn all<V: View>(name: &str, v: &V) {
    let style = Style::plain(now());
    for (f, ext) in [
        (Format::Table, "table"),
        (Format::Json, "json"),
        (Format::Yaml, "yaml"),
    ] {
        insta::assert_snapshot!(format!("{name}.{ext}"), render(v, f, &style));
    }
}

#[test]
fn fr_030_job_status() {
    all("job_status_done", &JobView::from(done_job()));
    all("job_status_dead_lettered", &JobView::from(dead_job()));
    all("job_status_binary_payload", &JobView::from(binary_job()));
    let full = Style {
        full: true,
        ..Style::plain(now())
    };
    insta::assert_snapshot!(
        "job_status_dead_lettered_full.table",
        render(&JobView::from(dead_job()), Format::Table, &full)
    );
}

#[test]
fn fr_032_job_list() {
    all(
        "job_list",
        &JobList {
            jobs: vec![done_job(), dead_job(), binary_job()]
                .into_iter()
                .map(JobView::from)
                .collect(),
            next_page_token: Some("eyJjIjoiMjAyNi0xMS0yNyJ9".into()),
        },
    );
    all(
        "job_list_empty",
        &JobList {
            jobs: vec![],
            next_page_token: None,
        },
    );
}

#[test]
fn fr_031_job_logs_and_watch_lines() {
    let evs: Vec<EventView> = events().into_iter().map(EventView::from).collect();
    all(
        "job_logs",
        &JobLogs {
            job_id: "3f0c2a4e-8d1b-4e7a-9c55-0b1d2e3f4a5b".into(),
            events: evs.clone(),
        },
    );
    let lines: String = evs.iter().map(|e| e.line(&Style::plain(now()))).collect();
    insta::assert_snapshot!("job_watch.table", lines);
}

#[test]
fn fr_008_jq_102_submit_prints_only_ids() {
    all(
        "job_submit",
        &Submitted {
            job_ids: vec!["3f0c2a4e-8d1b-4e7a-9c55-0b1d2e3f4a5b".into()],
            already_existed: vec![],
        },
    );
    all(
        "job_submit_bulk",
        &Submitted {
            job_ids: vec![
                "9a1b2c3d-0000-4000-8000-000000000001".into(),
                "9a1b2c3d-0000-4000-8000-000000000002".into(),
            ],
            already_existed: vec!["9a1b2c3d-0000-4000-8000-000000000002".into()],
        },
    );
}

#[test]
fn fr_012_fr_013_jq_150_cancel_and_retry() {
    all(
        "job_cancel",
        &Cancelled {
            job_id: "3f0c2a4e-8d1b-4e7a-9c55-0b1d2e3f4a5b".into(),
            status: "DEAD_LETTERED".into(),
            cancel_requested: false,
        },
    );
    all(
        "job_cancel_running",
        &Cancelled {
            job_id: "3f0c2a4e-8d1b-4e7a-9c55-0b1d2e3f4a5b".into(),
            status: "RUNNING".into(),
            cancel_requested: true,
        },
    );
    all(
        "job_retry",
        &Retried {
            job_ids: vec!["3f0c2a4e-8d1b-4e7a-9c55-0b1d2e3f4a5b".into()],
        },
    );
    all(
        "job_retry_bulk",
        &Retried {
            job_ids: vec![
                "9a1b2c3d-0000-4000-8000-000000000001".into(),
                "9a1b2c3d-0000-4000-8000-000000000002".into(),
            ],
        },
    );
    let mut data = serde_json::Map::new();
    data.insert(
        "deleted_job_id".into(),
        "3f0c2a4e-8d1b-4e7a-9c55-0b1d2e3f4a5b".into(),
    );
    all(
        "job_delete",
        &Done {
            message: "job 3f0c2a4e-8d1b-4e7a-9c55-0b1d2e3f4a5b deleted".into(),
            data,
        },
    );
}

#[test]
fn fr_025_fr_026_fr_028_jq_122_queues() {
    all(
        "queue_list",
        &QueueList {
            queues: vec![queue("default", false).into(), queue("emails", true).into()],
        },
    );
    all("queue_create", &QueueView::from(queue("emails", true)));
    all("queue_stats", &StatsView::from(stats()));
    let mut data = serde_json::Map::new();
    data.insert("deleted_queue".into(), "old".into());
    data.insert("deleted_jobs".into(), 12.into());
    all(
        "queue_delete",
        &Done {
            message: "queue old deleted (12 jobs deleted)".into(),
            data,
        },
    );
}

#[test]
fn fr_023_fr_024_workers() {
    all(
        "worker_list",
        &WorkerList {
            workers: workers().into_iter().map(WorkerView::from).collect(),
        },
    );
    all("worker_list_empty", &WorkerList { workers: vec![] });
    all("worker_drain", &WorkerView::from(workers().remove(1)));
}

#[test]
fn fr_042_nfr_017_status_and_version() {
    all("status", &system());
    all(
        "version",
        &VersionView {
            client: "0.1.0 (abc123def456)".into(),
            server: Some("0.1.0 (abc123def456)".into()),
            server_error: None,
        },
    );
    all(
        "version_unreachable",
        &VersionView {
            client: "0.1.0 (abc123def456)".into(),
            server: None,
            server_error: Some("cannot reach jq-server at localhost:50051: Connection refused".into()),
        },
    );
}

fn schedule(name: &str, paused: bool) -> v1::Schedule {
    v1::Schedule {
        name: name.into(),
        cron: "0 3 * * *".into(),
        timezone: "Europe/Berlin".into(),
        queue: "reports".into(),
        payload: br#"{"handler":"report","input":{"days":1}}"#.to_vec(),
        priority: 5,
        max_retries: if paused { None } else { Some(2) },
        ttl_seconds: if paused { None } else { Some(3600) },
        missed: "once".into(),
        overlap: if paused { "skip".into() } else { "allow".into() },
        paused,
        next_at: ts("2026-11-29T02:00:00Z"),
        last_fired_at: if paused { None } else { ts("2026-11-28T02:00:00Z") },
        last_job_id: if paused {
            String::new()
        } else {
            "0f8fad5b-d9cb-469f-a165-70867728950e".into()
        },
        fires: if paused { 0 } else { 12 },
        skipped: if paused { 0 } else { 1 },
        last_error: if paused {
            "queue reports does not exist; occurrences are skipped".into()
        } else {
            String::new()
        },
        created_at: ts("2026-11-01T00:00:00Z"),
    }
}

#[test]
fn jq_124_schedules() {
    all("schedule_get", &ScheduleView::from(schedule("nightly", false)));
    all(
        "schedule_get_paused",
        &ScheduleView::from(schedule("weekly", true)),
    );
    all(
        "schedule_list",
        &ScheduleList {
            schedules: vec![
                ScheduleView::from(schedule("nightly", false)),
                ScheduleView::from(schedule("weekly", true)),
            ],
        },
    );
}
