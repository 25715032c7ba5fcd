//! jq-worker against a real jq-server on real PostgreSQL (in-process, so
//! the tests can watch the worker's own state and use custom handlers).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use jq_proto::v1::{self, JobStatus, WorkerStatus};
use jq_worker::{HandlerError, Handlers, JobContext};
use tokio::sync::watch;

/// A handler that counts how many run at once and waits for a gate.
#[derive(Clone)]
struct Gate {
    now: Arc<AtomicUsize>,
    max: Arc<AtomicUsize>,
    started: Arc<AtomicUsize>,
    open: Arc<watch::Sender<bool>>,
}

impl Gate {
    fn new() -> Gate {
        Gate {
            now: Arc::default(),
            max: Arc::default(),
            started: Arc::default(),
            open: Arc::new(watch::channel(false).0),
        }
    }

    fn handlers(&self) -> Handlers {
        self.add_to(Handlers::builtin(), "gate")
    }

    fn add_to(&self, h: Handlers, name: &str) -> Handlers {
        let g = self.clone();
        h.with(name, move |_job: JobContext| {
            let g = g.clone();
            async move {
                let n = g.now.fetch_add(1, Ordering::SeqCst) + 1;
                g.max.fetch_max(n, Ordering::SeqCst);
                g.started.fetch_add(1, Ordering::SeqCst);
                let mut open = g.open.subscribe();
                let _ = open.wait_for(|o| *o).await;
                g.now.fetch_sub(1, Ordering::SeqCst);
                Ok::<_, HandlerError>(b"{\"gate\":\"passed\"}".to_vec())
            }
        })
    }

    fn release(&self) {
        self.open.send_replace(true);
    }
}

const GATE: &str = r#"{"handler":"gate"}"#;

#[tokio::test]
async fn fr_018_fr_029_acceptance_echo_hi_ends_done_with_hi_in_its_result() {
    let mut env = start().await;
    let w = jq_worker::start(
        worker_config(env.addr(), "w-echo", &["default"], 2),
        Handlers::builtin(),
    )
    .await
    .unwrap();
    let id = env.submit(job("default", r#"{"command":["echo","hi"]}"#)).await;
    let j = env.wait_status(&id, JobStatus::Done).await;
    let r = result_json(&j);
    assert_eq!(r["stdout"], "hi\n");
    assert_eq!(r["exit_code"], 0);
    assert_eq!(j.worker_id, "w-echo");
    assert_eq!(j.attempt, 1);
    // The in-process handlers answer too.
    let id = env
        .submit(job("default", r#"{"handler":"echo","input":{"x":[1,2]}}"#))
        .await;
    let j = env.wait_status(&id, JobStatus::Done).await;
    assert_eq!(result_json(&j), serde_json::json!({"x":[1,2]}));
    let id = env.submit(job("default", r#"{"handler":"noop"}"#)).await;
    assert!(env.wait_status(&id, JobStatus::Done).await.result.is_empty());
    // Registered as FR-018 asks.
    let me = env.worker("w-echo").await.unwrap();
    assert_eq!(
        (me.concurrency, me.queues.clone()),
        (2, vec!["default".to_string()])
    );
    assert_eq!(me.status, WorkerStatus::Online as i32);
    w.shutdown().await;
    env.wait_worker("w-echo", WorkerStatus::Offline).await;
}

#[tokio::test]
async fn fr_021_concurrency_limit_is_never_exceeded_as_observed_by_the_jobs() {
    let mut env = start().await;
    let gate = Gate::new();
    let w = jq_worker::start(
        worker_config(env.addr(), "w-c3", &["default"], 3),
        gate.handlers(),
    )
    .await
    .unwrap();
    let jobs = (0..30).map(|_| job("default", GATE)).collect();
    let ids: Vec<String> = env
        .api
        .jobs
        .submit_jobs(v1::SubmitJobsRequest { jobs })
        .await
        .unwrap()
        .into_inner()
        .results
        .into_iter()
        .map(|r| r.job_id)
        .collect();
    until("3 jobs running", || gate.now.load(Ordering::SeqCst) == 3).await;
    // While the gate is shut the three slots stay full: give a fourth every
    // chance to start (server cycles run every 100 ms) before checking.
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(gate.now.load(Ordering::SeqCst), 3);
    }
    assert_eq!(w.held_jobs(), 3, "the server sent only what fits");
    let (code, metrics) = http_get(w.metrics_addr, "/metrics").await;
    assert_eq!(code, 200);
    assert!(
        metrics.contains("jq_worker_job_concurrency{worker_id=\"w-c3\"} 3"),
        "{metrics}"
    );
    gate.release();
    for id in &ids {
        env.wait_status(id, JobStatus::Done).await;
    }
    assert_eq!(gate.started.load(Ordering::SeqCst), 30);
    assert_eq!(
        gate.max.load(Ordering::SeqCst),
        3,
        "never more than --concurrency"
    );
    // Acks and results went in batched calls (calls.rs), none one by one.
    let (_, server_metrics) = http_get(env.server.metrics_addr, "/metrics").await;
    let calls = |method: &str| {
        server_metrics
            .lines()
            .filter(|l| l.starts_with("jq_grpc_request_duration_seconds_count"))
            .filter(|l| l.contains(&format!("method=\"/jq.v1.WorkerService/{method}\"")))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum::<u64>()
    };
    assert!(
        calls("AckJobs") > 0 && calls("ReportResults") > 0,
        "{server_metrics}"
    );
    assert_eq!(calls("AckJob") + calls("ReportResult"), 0, "{server_metrics}");
    w.shutdown().await;
}

#[tokio::test]
async fn fr_022_a_worker_takes_only_jobs_from_its_queues() {
    let mut env = start().await;
    env.api
        .admin
        .create_queue(v1::CreateQueueRequest {
            name: "other".into(),
            settings: None,
        })
        .await
        .unwrap();
    let w1 = jq_worker::start(
        worker_config(env.addr(), "w-default", &["default"], 2),
        Handlers::builtin(),
    )
    .await
    .unwrap();
    let other = env.submit(job("other", r#"{"handler":"noop"}"#)).await;
    let mine = env.submit(job("default", r#"{"handler":"noop"}"#)).await;
    env.wait_status(&mine, JobStatus::Done).await;
    // Several dispatch cycles later the other queue's job is still waiting.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(env.job(&other).await.status, JobStatus::Pending as i32);
    let w2 = jq_worker::start(
        worker_config(env.addr(), "w-other", &["other"], 1),
        Handlers::builtin(),
    )
    .await
    .unwrap();
    let j = env.wait_status(&other, JobStatus::Done).await;
    assert_eq!(j.worker_id, "w-other");
    w1.shutdown().await;
    w2.shutdown().await;
}

#[tokio::test]
async fn jq_130_timeout_kills_the_whole_process_tree_and_fails_the_job() {
    let mut env = start().await;
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("grandchild.pid");
    let w = jq_worker::start(
        worker_config(env.addr(), "w-tmo", &["default"], 1),
        Handlers::builtin(),
    )
    .await
    .unwrap();
    // A child that starts a grandchild ignoring SIGTERM, then both sleep.
    let script = format!(
        "sh -c 'trap \"\" TERM; echo $$ > {p}; sleep 60' & sleep 60",
        p = pidfile.display()
    );
    let payload = serde_json::json!({"command": ["sh", "-c", script], "timeout_s": 1}).to_string();
    let id = env
        .submit(v1::JobSpec {
            max_retries: Some(0),
            ..job("default", &payload)
        })
        .await;
    let j = env.wait_status(&id, JobStatus::DeadLettered).await;
    assert!(j.error.contains("timed out"), "{}", j.error);
    assert_eq!(result_json(&j)["timed_out"], true);
    let pid: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
    until("the grandchild to be gone", || !alive(pid)).await;
    w.shutdown().await;
}

#[tokio::test]
async fn jq_130_output_beyond_the_cap_is_dropped_and_marked_truncated() {
    let mut env = start().await;
    let mut cfg = worker_config(env.addr(), "w-cap", &["default"], 1);
    cfg.exec.output_cap_bytes = 1000;
    let w = jq_worker::start(cfg, Handlers::builtin()).await.unwrap();
    let payload = r#"{"command":["sh","-c","yes x | head -c 100000; echo oops >&2; exit 3"]}"#;
    let id = env
        .submit(v1::JobSpec {
            max_retries: Some(0),
            ..job("default", payload)
        })
        .await;
    let j = env.wait_status(&id, JobStatus::DeadLettered).await;
    let r = result_json(&j);
    assert_eq!(r["stdout"].as_str().unwrap().len(), 1000);
    assert_eq!(r["stdout_truncated"], true);
    assert_eq!(r["stdout_dropped_bytes"], 99_000);
    assert_eq!(r["stderr"], "oops\n");
    assert_eq!(r["exit_code"], 3);
    assert!(j.error.contains("exited with code 3: oops"), "{}", j.error);
    w.shutdown().await;
}

#[tokio::test]
async fn jq_130_malformed_payload_fails_the_job_permanently_not_the_worker() {
    let mut env = start().await;
    let w = jq_worker::start(
        worker_config(env.addr(), "w-bad", &["default"], 1),
        Handlers::builtin(),
    )
    .await
    .unwrap();
    for (payload, why) in [
        ("not json", "payload is not JSON"),
        (r#"{"command":[]}"#, "non-empty array"),
        (r#"{"handler":"nope"}"#, "no handler named \"nope\""),
    ] {
        // Retries left, yet permanent errors are not retried.
        let id = env.submit(job("default", payload)).await;
        let j = env.wait_status(&id, JobStatus::DeadLettered).await;
        assert!(j.error.contains(why), "{payload}: {}", j.error);
        assert_eq!(j.attempt, 1, "{payload}: not retried");
    }
    let id = env.submit(job("default", r#"{"command":["true"]}"#)).await;
    env.wait_status(&id, JobStatus::Done).await;
    w.shutdown().await;
}

#[tokio::test]
async fn fr_023_drain_finishes_running_jobs_and_takes_no_new_ones() {
    let mut env = start().await;
    let gate = Gate::new();
    let w = jq_worker::start(
        worker_config(env.addr(), "w-drain", &["default"], 2),
        gate.handlers(),
    )
    .await
    .unwrap();
    let running = env.submit(job("default", GATE)).await;
    env.wait_status(&running, JobStatus::Running).await;
    env.api
        .admin
        .drain_worker(v1::DrainWorkerRequest {
            worker_id: "w-drain".into(),
        })
        .await
        .unwrap();
    until("the worker to know it is draining", || w.is_draining()).await;
    let waiting = env.submit(job("default", r#"{"handler":"noop"}"#)).await;
    gate.release();
    env.wait_status(&running, JobStatus::Done).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(env.job(&waiting).await.status, JobStatus::Pending as i32);
    assert_eq!(
        env.worker("w-drain").await.unwrap().status,
        WorkerStatus::Draining as i32
    );
    w.shutdown().await;
    env.wait_worker("w-drain", WorkerStatus::Offline).await;
}

#[tokio::test]
async fn fr_024_shutdown_finishes_the_running_job_then_deregisters_and_exits() {
    let mut env = start().await;
    let gate = Gate::new();
    let mut w = jq_worker::start(
        worker_config(env.addr(), "w-stop", &["default"], 1),
        gate.handlers(),
    )
    .await
    .unwrap();
    let id = env.submit(job("default", GATE)).await;
    env.wait_status(&id, JobStatus::Running).await;
    env.api
        .admin
        .shutdown_worker(v1::ShutdownWorkerRequest {
            worker_id: "w-stop".into(),
        })
        .await
        .unwrap();
    env.wait_worker("w-stop", WorkerStatus::Stopping).await;
    gate.release();
    w.wait().await;
    assert_eq!(env.job(&id).await.status, JobStatus::Done as i32);
    env.wait_worker("w-stop", WorkerStatus::Offline).await;
}

#[tokio::test]
async fn jq_113_cancel_of_a_running_job_kills_its_processes_and_dead_letters_it() {
    let mut env = start().await;
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("job.pid");
    let w = jq_worker::start(
        worker_config(env.addr(), "w-cancel", &["default"], 1),
        Handlers::builtin(),
    )
    .await
    .unwrap();
    let script = format!("echo $$ > {}; exec sleep 60", pidfile.display());
    let payload = serde_json::json!({"command": ["sh", "-c", script]}).to_string();
    let id = env.submit(job("default", &payload)).await;
    env.wait_status(&id, JobStatus::Running).await;
    until("the job to write its pid", || {
        std::fs::read_to_string(&pidfile).is_ok_and(|s| s.ends_with('\n'))
    })
    .await;
    let pid: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
    env.api
        .jobs
        .cancel_job(v1::CancelJobRequest { job_id: id.clone() })
        .await
        .unwrap();
    let j = env.wait_status(&id, JobStatus::DeadLettered).await;
    let last = env.events(&id).await.pop().unwrap();
    assert_eq!(last.reason, "CANCELLED");
    assert_eq!(last.from_status, JobStatus::Running as i32);
    assert_eq!(j.attempt, 1);
    until("the job's process to be gone", || !alive(pid)).await;
    // The worker carries on.
    let next = env.submit(job("default", r#"{"handler":"noop"}"#)).await;
    env.wait_status(&next, JobStatus::Done).await;
    w.shutdown().await;
}

#[tokio::test]
async fn fr_018_worker_reconnects_after_a_server_restart_and_its_running_job_survives() {
    let db = jq_testkit::TestDb::new().await;
    let port = jq_testkit::free_port();
    let server = jq_server::start(server_config(&db, port)).await.unwrap();
    let mut env = Env {
        api: jq_client::Target::new(server.grpc_addr.to_string())
            .connect_lazy()
            .unwrap(),
        server,
        db,
    };
    // Two jobs straddle the restart: `early` finishes while no server is
    // up (its report must wait), `late` is still running when the worker
    // registers again (its lease must be kept).
    let (early_gate, late_gate) = (Gate::new(), Gate::new());
    let handlers = late_gate.add_to(early_gate.add_to(Handlers::builtin(), "early"), "late");
    let w = jq_worker::start(worker_config(env.addr(), "w-re", &["default"], 2), handlers)
        .await
        .unwrap();
    let early = env.submit(job("default", r#"{"handler":"early"}"#)).await;
    let late = env.submit(job("default", r#"{"handler":"late"}"#)).await;
    env.wait_status(&early, JobStatus::Running).await;
    env.wait_status(&late, JobStatus::Running).await;

    let Env { db, server, api } = env;
    server.shutdown().await;
    until("the worker to notice", || !w.is_connected()).await;
    early_gate.release();
    let server = jq_server::start(server_config(&db, port)).await.unwrap();
    let mut env = Env { db, server, api };
    until("the worker to reconnect", || w.is_connected()).await;
    late_gate.release();

    for id in [&early, &late] {
        let j = env.wait_status(id, JobStatus::Done).await;
        assert_eq!(j.attempt, 1, "no attempt was lost to the restart");
        assert_eq!(result_json(&j), serde_json::json!({"gate":"passed"}));
    }
    let after = env
        .submit(job("default", r#"{"command":["echo","again"]}"#))
        .await;
    let j = env.wait_status(&after, JobStatus::Done).await;
    assert_eq!(result_json(&j)["stdout"], "again\n");
    let (code, _) = http_get(w.health_addr, "/readyz").await;
    assert_eq!(code, 200);
    w.shutdown().await;
}

#[tokio::test]
async fn fr_019_fr_020_heartbeats_follow_the_servers_interval_from_the_first_one() {
    // Shorter than the worker's built-in 5 s default interval.
    let mut env = start_heartbeats(1, 2).await;
    let w = jq_worker::start(
        worker_config(env.addr(), "w-hb", &["default"], 1),
        Handlers::builtin(),
    )
    .await
    .unwrap();
    let first = env.wait_worker("w-hb", WorkerStatus::Online).await.registered_at;
    // Idle for longer than the timeout: only heartbeats keep it ONLINE.
    // Declared dead, it would come back by registering again, so check it
    // never had to.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let now = env.worker("w-hb").await.unwrap();
    assert_eq!(now.status, WorkerStatus::Online as i32);
    assert_eq!(
        now.registered_at, first,
        "declared dead while alive, then re-registered"
    );
    let (_, metrics) = http_get(w.metrics_addr, "/metrics").await;
    assert!(metrics.contains("jq_worker_reconnects_total 0"), "{metrics}");
    w.shutdown().await;
}

#[tokio::test]
async fn jq_110_a_worker_cut_off_from_the_server_stops_its_jobs_before_they_are_handed_on() {
    let mut env = start_heartbeats(1, 4).await;
    let w = jq_worker::start(
        worker_config(env.addr(), "w-fence", &["default"], 1),
        Handlers::builtin(),
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("job.pid");
    let script = format!("echo $$ > {}; exec sleep 60", pidfile.display());
    let id = env
        .submit(job(
            "default",
            &serde_json::json!({"command": ["sh", "-c", script]}).to_string(),
        ))
        .await;
    env.wait_status(&id, JobStatus::Running).await;
    until("the job to write its pid", || {
        std::fs::read_to_string(&pidfile).is_ok_and(|s| s.ends_with('\n'))
    })
    .await;
    let pid: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
    // The server goes away for good: nobody accepts heartbeats any more.
    let Env { server, db: _db, .. } = env;
    server.shutdown().await;
    until("the cut-off worker to stop its job", || !alive(pid)).await;
    // The process is gone first; the attempt is let go of just after it
    // (output collected, nothing reported).
    until("the worker to let go of the attempt", || w.held_jobs() == 0).await;
    w.shutdown().await;
}

/// JQ-123: a worker started with `critical:3,default:1` fills its slots
/// three to one while both queues have work, deterministically; once
/// `critical` runs out its share goes to `default`. The weights are
/// registered and listed.
#[tokio::test]
async fn jq_123_weighted_queues_fill_a_workers_slots_in_proportion() {
    let mut env = start().await;
    let store = env.db.store();
    for q in ["critical", "default"] {
        store.ensure_queue(q).await.unwrap();
    }
    for (q, n) in [("default", 300), ("critical", 300)] {
        let jobs = (0..n).map(|_| job(q, r#"{"handler":"noop"}"#)).collect();
        env.api
            .jobs
            .submit_jobs(v1::SubmitJobsRequest { jobs })
            .await
            .unwrap();
    }
    let w = jq_worker::start(
        worker_config(env.addr(), "w-weighted", &["critical:3", "default:1"], 4),
        Handlers::builtin(),
    )
    .await
    .unwrap();
    let done = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM jobs WHERE status = 'DONE'")
            .fetch_one(env.db.pool())
            .await
            .unwrap()
    };
    for _ in 0..600 {
        if done().await == 600 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(done().await, 600, "every job ran");
    // The queues in dispatch order: the claims' events, drawn in order.
    let order: Vec<String> =
        sqlx::query_scalar("SELECT queue FROM job_events WHERE reason = 'CLAIMED' ORDER BY id")
            .fetch_all(env.db.pool())
            .await
            .unwrap();
    assert_eq!(order.len(), 600, "each job dispatched once");
    let last = order.iter().rposition(|q| q == "critical").unwrap();
    let both = &order[..=last];
    let share = 300.0 / both.len() as f64;
    assert!(
        (0.73..=0.77).contains(&share),
        "critical had {share:.3} of {}",
        both.len()
    );
    for (i, window) in both.chunks_exact(40).enumerate() {
        let c = window.iter().filter(|q| *q == "critical").count();
        assert!(
            (28..=32).contains(&c),
            "dispatches {}..: {c} of 40 critical",
            i * 40
        );
    }
    assert!(
        order[last + 1..].iter().all(|q| q == "default"),
        "then default alone"
    );
    let me = env.worker("w-weighted").await.unwrap();
    assert_eq!(
        (me.queues.clone(), me.queue_weights.clone()),
        (vec!["critical".to_string(), "default".to_string()], vec![3, 1])
    );
    w.shutdown().await;
}

/// JQ-123: a worker's queue weights are checked before it starts.
#[tokio::test]
async fn jq_123_a_bad_queue_weight_stops_the_worker_before_it_starts() {
    let env = start().await;
    let e = jq_worker::start(
        worker_config(env.addr(), "w-bad", &["critical:0", "default"], 1),
        Handlers::builtin(),
    )
    .await
    .err()
    .expect("refused");
    assert_eq!(
        e.to_string(),
        "worker.queues: \"critical\": weight \"0\" is not 1-1000 (e.g. critical:3,default:1)"
    );
}

/// JQ-124: a schedule's job knows its occurrence: `JQ_SCHEDULED_AT` for a
/// subprocess, `scheduled_at` in a handler's context; other jobs have none.
#[tokio::test]
async fn jq_124_a_scheduled_job_knows_its_occurrence() {
    let mut env = start().await;
    let seen = Arc::new(std::sync::Mutex::new(vec![]));
    let handlers = {
        let seen = seen.clone();
        Handlers::builtin().with("when", move |job: JobContext| {
            let seen = seen.clone();
            async move {
                seen.lock().unwrap().push(job.scheduled_at);
                Ok::<_, HandlerError>(Vec::new())
            }
        })
    };
    let w = jq_worker::start(worker_config(env.addr(), "w-sched", &["default"], 2), handlers)
        .await
        .unwrap();
    let admin = env.api.admin.clone();
    let fire = |name: &'static str, payload: &'static str| {
        let mut admin = admin.clone();
        async move {
            admin
                .create_schedule(v1::CreateScheduleRequest {
                    name: name.into(),
                    spec: Some(v1::ScheduleSpec {
                        cron: Some("@yearly".into()),
                        payload: Some(payload.as_bytes().to_vec()),
                        ..Default::default()
                    }),
                })
                .await
                .unwrap();
            admin
                .trigger_schedule(v1::ScheduleRef { name: name.into() })
                .await
                .unwrap()
                .into_inner()
        }
    };
    let sub = fire(
        "env",
        r#"{"command":["sh","-c","printf %s \"$JQ_SCHEDULED_AT\""]}"#,
    )
    .await;
    let occurrence = jq_proto::from_timestamp(sub.occurrence.as_ref().unwrap()).unwrap();
    let j = env.wait_status(&sub.job_id, JobStatus::Done).await;
    assert_eq!(
        result_json(&j)["stdout"],
        occurrence.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    let h = fire("ctx", r#"{"handler":"when"}"#).await;
    env.wait_status(&h.job_id, JobStatus::Done).await;
    let plain = env.submit(job("default", r#"{"handler":"when"}"#)).await;
    env.wait_status(&plain, JobStatus::Done).await;
    let occurrence = jq_proto::from_timestamp(h.occurrence.as_ref().unwrap()).unwrap();
    assert_eq!(*seen.lock().unwrap(), vec![Some(occurrence), None]);
    w.shutdown().await;
}
