//! End-to-end (NFR-023): the three real binaries as child processes on
//! free ports, driven only through `jq-ctl`; one test per SPEC §14
//! acceptance item. Item 8 ("all tests pass") is CI itself.

use std::collections::HashSet;
use std::time::Duration;

use jq_testkit::TestDb;
use jq_tests::*;
use serde_json::{Value, json};

async fn system() -> (TestDb, Server) {
    let db = TestDb::new().await;
    let server = Server::start("server", Server::fast_env(&db.url)).await;
    (db, server)
}

async fn status_of(addr: &str, id: &str) -> Value {
    ctl(addr, &["job", "status", id, "-o", "json"]).await.ok().json()
}

async fn wait_for(addr: &str, id: &str, status: &str) -> Value {
    let mut last = Value::Null;
    for _ in 0..1200 {
        last = status_of(addr, id).await;
        if last["status"] == status {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("job {id} never reached {status}: {last}");
}

/// A queue that retries within 50-100 ms, and a worker serving only it.
async fn fast_retry_queue_with_worker(a: &str, queue: &str, worker: &str, slots: u32) -> Worker {
    ctl(
        a,
        &[
            "queue",
            "create",
            queue,
            "--backoff-base",
            "50ms",
            "--backoff-max",
            "100ms",
        ],
    )
    .await
    .ok();
    Worker::start_with(a, worker, slots, vec![("JQ_WORKER_QUEUES".into(), queue.into())]).await
}

#[tokio::test]
async fn e2e_1_submit_via_jq_ctl_and_watch_pending_running_done() {
    let (_db, server) = system().await;
    let a = server.addr();
    let _w = Worker::start(&a, "e2e-w1", 2).await;
    let id = ctl(&a, &["job", "submit", r#"{"command":["echo","hi"]}"#])
        .await
        .ok()
        .stdout;
    let id = id.trim();
    let watch = ctl(&a, &["job", "watch", id]).await.ok().stdout;
    let path: Vec<&str> = watch
        .lines()
        .map(|l| l.split("-> ").nth(1).unwrap().split_whitespace().next().unwrap())
        .collect();
    assert_eq!(path, ["PENDING", "ASSIGNED", "RUNNING", "DONE"], "{watch}");
    let j = status_of(&a, id).await;
    assert_eq!(j["result"]["stdout"], "hi\n");
}

#[tokio::test]
async fn e2e_2_kill_9_a_worker_mid_job_and_the_job_reruns_elsewhere() {
    let (_db, server) = system().await;
    let a = server.addr();
    let log = ExecLog::new();
    let mut w1 = Worker::start(&a, "e2e-kill-1", 1).await;
    let id = ctl(&a, &["job", "submit", &log.payload(2000).to_string()])
        .await
        .ok()
        .stdout;
    let id = id.trim().to_string();
    let j = wait_for(&a, &id, "RUNNING").await;
    assert_eq!(j["worker_id"], "e2e-kill-1");
    w1.kill9();
    let _w2 = Worker::start(&a, "e2e-kill-2", 1).await;
    // No operator action: the heartbeat timeout returns it and w2 runs it.
    let j = wait_for(&a, &id, "DONE").await;
    assert_eq!(j["worker_id"], "e2e-kill-2");
    assert_eq!(j["attempt"], 2);
    let logs = ctl(&a, &["job", "logs", &id, "-o", "json"]).await.ok().json();
    let reasons: Vec<&str> = logs["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["reason"].as_str().unwrap())
        .collect();
    assert!(reasons.contains(&"WORKER_LOST"), "{reasons:?}");
}

#[tokio::test]
async fn e2e_3_a_job_failing_max_retries_times_ends_dead_lettered_and_is_listed() {
    let (_db, server) = system().await;
    let a = server.addr();
    let _w = fast_retry_queue_with_worker(&a, "flaky", "e2e-fail", 2).await;
    let id = ctl(
        &a,
        &[
            "job",
            "submit",
            "-q",
            "flaky",
            "--max-retries",
            "2",
            r#"{"command":["sh","-c","echo boom >&2; exit 7"]}"#,
        ],
    )
    .await
    .ok()
    .stdout;
    let id = id.trim();
    let j = wait_for(&a, id, "DEAD_LETTERED").await;
    assert_eq!((j["attempt"].clone(), j["retries"].clone()), (json!(3), json!(2)));
    assert!(
        j["error"].as_str().unwrap().contains("exited with code 7: boom"),
        "{j}"
    );
    let listed = ctl(&a, &["job", "list", "--status", "DEAD_LETTERED", "-o", "json"])
        .await
        .ok()
        .json();
    let ids: Vec<&str> = listed["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [id]);
    let table = ctl(&a, &["job", "list", "--status", "DEAD_LETTERED"])
        .await
        .ok()
        .stdout;
    assert!(table.contains(id) && table.contains("DEAD_LETTERED"), "{table}");
}

/// JQ-105: a job whose stderr holds a NUL keeps its own outcome. Before,
/// the report was refused (PostgreSQL text cannot hold NUL), the worker
/// dropped it, and the job ended WORKER_LOST with no result.
#[tokio::test]
async fn jq_105_e2e_a_job_writing_a_nul_to_stderr_is_dead_lettered_by_its_own_failures() {
    let (_db, server) = system().await;
    let a = server.addr();
    let _w = fast_retry_queue_with_worker(&a, "nul", "e2e-nul", 1).await;
    let id = ctl(
        &a,
        &[
            "job",
            "submit",
            "-q",
            "nul",
            "--max-retries",
            "1",
            r#"{"command":["sh","-c","printf 'bad\\000byte' >&2; exit 2"]}"#,
        ],
    )
    .await
    .ok()
    .stdout;
    let id = id.trim();
    let j = wait_for(&a, id, "DEAD_LETTERED").await;
    assert_eq!(
        (j["attempt"].clone(), j["retries"].clone()),
        (json!(2), json!(1)),
        "{j}"
    );
    // The result holds the bytes as they were (JSON escapes the NUL) ...
    assert_eq!(j["result"]["exit_code"], 2, "{j}");
    assert_eq!(j["result"]["stderr"], "bad\u{0}byte", "{j}");
    // ... and the error line stores it replaced (ADR 0013).
    let e = j["error"].as_str().unwrap();
    assert!(e.contains("exited with code 2: bad\u{FFFD}byte"), "{e}");
    let logs = ctl(&a, &["job", "logs", id, "-o", "json"]).await.ok().json();
    let reasons: Vec<&str> = logs["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["reason"].as_str().unwrap())
        .collect();
    assert!(!reasons.contains(&"WORKER_LOST"), "{reasons:?}");
    assert_eq!(reasons.last(), Some(&"RETRIES_EXHAUSTED"), "{reasons:?}");
}

#[tokio::test]
async fn e2e_4_two_servers_at_once_no_job_runs_twice_concurrently_none_lost() {
    let db = TestDb::new().await;
    let one = Server::start("server-1", Server::fast_env(&db.url)).await;
    let two = Server::start("server-2", Server::fast_env(&db.url)).await;
    let log = ExecLog::new();
    let _ws: Vec<Worker> = vec![
        Worker::start(&one.addr(), "e2e-two-a", 4).await,
        Worker::start(&one.addr(), "e2e-two-b", 4).await,
        Worker::start(&two.addr(), "e2e-two-c", 4).await,
        Worker::start(&two.addr(), "e2e-two-d", 4).await,
    ];
    // Submissions go to both servers.
    let mut ids = submit_many(&one.addr(), &vec![log.payload(10); 150], json!({})).await;
    ids.extend(submit_many(&two.addr(), &vec![log.payload(10); 150], json!({})).await);
    let s = store(&db.url).await;
    let v = check(&s, &log, &Kills::default(), &ids, 0).await;
    assert_eq!(v.reruns, 0, "nothing failed, so every job ran exactly once");
    let workers: HashSet<String> = log.read().into_iter().map(|e| e.worker).collect();
    assert!(workers.len() >= 3, "both servers dispatched: {workers:?}");
}

#[tokio::test]
async fn e2e_5_queue_stats_numbers_match_what_happened() {
    let (_db, server) = system().await;
    let a = server.addr();
    ctl(&a, &["queue", "create", "stats", "--max-retries", "0"])
        .await
        .ok();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("jobs.ndjson");
    let mut lines = String::new();
    for _ in 0..8 {
        lines.push_str(&json!({"queue": "stats", "payload": {"command": ["true"]}}).to_string());
        lines.push('\n');
    }
    for _ in 0..2 {
        lines.push_str(&json!({"queue": "stats", "payload": {"command": ["false"]}}).to_string());
        lines.push('\n');
    }
    for _ in 0..3 {
        lines.push_str(
            &json!({"queue": "stats", "payload": {"command": ["true"]}, "delay_ms": 3_600_000}).to_string(),
        );
        lines.push('\n');
    }
    std::fs::write(&file, lines).unwrap();
    let ids: Vec<String> = ctl(&a, &["job", "submit", "--file", file.to_str().unwrap()])
        .await
        .ok()
        .stdout
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(ids.len(), 13);
    let _w = Worker::start_with(
        &a,
        "e2e-stats",
        4,
        vec![("JQ_WORKER_QUEUES".into(), "stats".into())],
    )
    .await;
    for id in &ids[..8] {
        wait_for(&a, id, "DONE").await;
    }
    for id in &ids[8..10] {
        wait_for(&a, id, "DEAD_LETTERED").await;
    }
    let st = ctl(&a, &["queue", "stats", "stats", "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(st["done"], 8);
    assert_eq!(st["dead_lettered"], 2);
    assert_eq!(st["pending"], 3);
    assert_eq!(st["scheduled"], 3);
    assert_eq!(st["total_processed"], 10);
    assert_eq!(
        (st["running"].clone(), st["assigned"].clone()),
        (json!(0), json!(0))
    );
    // 2 failed attempts of 10 finished attempts.
    assert!((st["error_rate"].as_f64().unwrap() - 0.2).abs() < 1e-9, "{st}");
    assert!(st["avg_processing_seconds"].as_f64().unwrap() > 0.0);
}

#[tokio::test]
async fn e2e_6_every_fr_040_metric_is_scrapeable() {
    let (_db, server) = system().await;
    let a = server.addr();
    let _w = Worker::start(&a, "e2e-metrics", 2).await;
    let id = ctl(&a, &["job", "submit", r#"{"handler":"noop"}"#])
        .await
        .ok()
        .stdout;
    wait_for(&a, id.trim(), "DONE").await;
    let mut body = String::new();
    for _ in 0..100 {
        body = http_get(server.metrics, "/metrics").await.1;
        if body.contains("jq_worker_job_concurrency{") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for name in [
        "jq_job_queue_depth{",
        "jq_job_processing_duration_seconds_bucket{",
        "jq_job_total{",
        "jq_worker_active_count ",
        "jq_worker_job_concurrency{",
        "jq_grpc_request_duration_seconds_bucket{",
        "jq_scheduler_cycle_duration_seconds_bucket{",
        "jq_scheduler_jobs_assigned_total{",
        "jq_kafka_publish_errors_total",
        "jq_db_query_duration_seconds_bucket{",
        "jq_redis_operation_duration_seconds",
    ] {
        assert!(body.contains(name), "{name} missing from /metrics:\n{body}");
    }
}

#[tokio::test]
async fn e2e_7_the_system_starts_and_jq_ctl_status_says_healthy() {
    // In place of compose (no Docker here): the same three binaries.
    let (_db, server) = system().await;
    let a = server.addr();
    let _w = Worker::start(&a, "e2e-status", 2).await;
    let mut st = Value::Null;
    for _ in 0..200 {
        st = ctl(&a, &["status", "-o", "json"]).await.ok().json();
        if st["active_workers"] == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(st["healthy"], true, "{st}");
    assert_eq!(st["active_workers"], 1, "{st}");
    let table = ctl(&a, &["status"]).await.ok().stdout;
    assert!(table.contains("Health:          ok"), "{table}");
}

/// The README's quickstart: one command, nothing else running.
#[tokio::test]
async fn e2e_quickstart_jq_server_dev_runs_a_job_with_nothing_else_set_up() {
    use std::process::Stdio;
    let dir = tempfile::tempdir().unwrap();
    let grpc = jq_testkit::free_port();
    let mut dev = tokio::process::Command::new(jq_testkit::bins::binary("jq-server"))
        .current_dir(dir.path())
        .env_remove("JQ_DB_URL")
        .args([
            "--dev",
            "--grpc-port",
            &grpc.to_string(),
            "--health-port",
            "0",
            "--metrics-port",
            "0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let addr = format!("127.0.0.1:{grpc}");
    let mut up = false;
    for _ in 0..600 {
        if ctl(&addr, &["status", "-o", "json"]).await.code == 0 {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(up, "jq-server --dev never answered");
    // JQ-173: dev mode runs any argv with auth off, so it binds loopback.
    let st = ctl(&addr, &["status", "-o", "json"]).await.ok().json();
    let security = st["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "security")
        .cloned()
        .unwrap_or_default();
    assert_eq!(security["state"], "ok", "{st}");
    assert!(security["detail"].as_str().unwrap().contains("127.0.0.1"), "{st}");
    let id = ctl(&addr, &["job", "submit", r#"{"command":["echo","hi"]}"#])
        .await
        .ok()
        .stdout;
    let j = wait_for(&addr, id.trim(), "DONE").await;
    assert_eq!(j["worker_id"], "dev-worker");
    assert_eq!(j["result"]["stdout"], "hi\n");
    assert!(
        dir.path().join(".jq-dev/postgres/PG_VERSION").exists(),
        "its data folder"
    );
    // Ctrl-C stops everything, PostgreSQL included.
    unsafe {
        libc::kill(dev.id().unwrap() as i32, libc::SIGINT);
    }
    let out = tokio::time::timeout(Duration::from_secs(60), dev.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(out.success(), "{out:?}");
    let mut banner = String::new();
    use tokio::io::AsyncReadExt;
    dev.stdout
        .take()
        .unwrap()
        .read_to_string(&mut banner)
        .await
        .unwrap();
    assert!(
        banner.contains("running in dev mode") && banner.contains("job submit"),
        "{banner}"
    );
    assert!(banner.contains(&format!("gRPC 127.0.0.1:{grpc}")), "{banner}");
    assert!(
        !dir.path().join(".jq-dev/postgres/postmaster.pid").exists(),
        "PostgreSQL stopped"
    );
}

#[tokio::test]
async fn e2e_quickstart_without_postgresql_binaries_names_what_to_install() {
    let dir = tempfile::tempdir().unwrap();
    let out = tokio::process::Command::new(jq_testkit::bins::binary("jq-server"))
        .current_dir(dir.path())
        .env_remove("JQ_DB_URL")
        .env("JQ_DEV_PG_BINDIR", dir.path())
        .args(["--dev", "--grpc-port", &jq_testkit::free_port().to_string()])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("initdb, pg_ctl") && e.contains("apt-get install postgresql") && e.contains("JQ_DB_URL"),
        "{e}"
    );
}
