//! The real `jq-ctl` binary against a real jq-server (and a real
//! jq-worker) on real PostgreSQL: stdout, stderr and exit codes, for what
//! works and for what an operator gets wrong.

use std::net::SocketAddr;
use std::time::Duration;

use jq_config::{ServerConfig, WorkerConfig};
use jq_testkit::TestDb;
use jq_worker::Handlers;
use serde_json::Value;

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout))
    }
}

async fn ctl(addr: &str, args: &[&str]) -> Out {
    ctl_stdin(addr, args, None).await
}

async fn ctl_stdin(addr: &str, args: &[&str], stdin: Option<&str>) -> Out {
    use tokio::io::AsyncWriteExt;
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_jq-ctl"));
    cmd.args(["--server-addr", addr])
        .args(args)
        .env_remove("JQ_SERVER_ADDR")
        .env_remove("JQ_TOKEN")
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(s) = stdin {
        input.write_all(s.as_bytes()).await.unwrap();
    }
    drop(input);
    let o = child.wait_with_output().await.unwrap();
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8(o.stdout).unwrap(),
        stderr: String::from_utf8(o.stderr).unwrap(),
    }
}

struct Env {
    _db: TestDb,
    server: jq_server::Running,
    addr: String,
}

async fn start() -> Env {
    let db = TestDb::new().await;
    let mut c = ServerConfig::default();
    c.db.url = db.url.clone();
    c.server.bind = "127.0.0.1".into();
    c.server.grpc_port = 0;
    c.server.health_port = 0;
    c.server.metrics_port = 0;
    c.redis.url = String::new();
    c.scheduler.interval_ms = 100;
    c.scheduler.reaper_interval_ms = 100;
    c.scheduler.heartbeat_interval_s = 1;
    let server = jq_server::start(c).await.unwrap();
    Env {
        addr: server.grpc_addr.to_string(),
        server,
        _db: db,
    }
}

async fn worker(addr: SocketAddr, id: &str) -> jq_worker::RunningWorker {
    let mut c = WorkerConfig::default();
    c.worker.server_addr = addr.to_string();
    c.worker.id = id.into();
    c.worker.bind = "127.0.0.1".into();
    c.worker.health_port = 0;
    c.worker.metrics_port = 0;
    c.worker.concurrency = 2;
    jq_worker::start(c, Handlers::builtin()).await.unwrap()
}

fn assert_ok(o: &Out) {
    assert_eq!(o.code, 0, "stdout: {}\nstderr: {}", o.stdout, o.stderr);
}

/// Poll `job status -o json` until the status matches (bounded).
async fn wait_status(addr: &str, id: &str, status: &str) -> Value {
    let mut last = Value::Null;
    for _ in 0..400 {
        let o = ctl(addr, &["job", "status", id, "-o", "json"]).await;
        assert_ok(&o);
        last = o.json();
        if last["status"] == status {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("job {id} never reached {status}: {last}");
}

#[tokio::test]
async fn fr_008_fr_030_fr_031_submit_watch_status_logs_through_the_binary() {
    let env = start().await;
    let a = &env.addr;
    let w = worker(env.server.grpc_addr, "ctl-w").await;
    let o = ctl(
        a,
        &[
            "job",
            "submit",
            "--queue",
            "default",
            "--priority",
            "7",
            r#"{"command":["echo","hi"]}"#,
        ],
    )
    .await;
    assert_ok(&o);
    let id = o.stdout.trim().to_string();
    assert_eq!(
        o.stdout,
        format!("{id}\n"),
        "stdout is the id and nothing else (FR-008)"
    );
    assert!(uuid::Uuid::parse_str(&id).is_ok());

    // watch follows the job to its end and exits 0.
    let o = ctl(a, &["job", "watch", &id]).await;
    assert_ok(&o);
    let lines: Vec<&str> = o.stdout.lines().collect();
    assert!(
        lines.first().unwrap().contains("-> PENDING  SUBMITTED"),
        "{}",
        o.stdout
    );
    assert!(
        lines.iter().any(|l| l.contains("ASSIGNED -> RUNNING  STARTED")),
        "{}",
        o.stdout
    );
    assert!(
        lines.last().unwrap().contains("RUNNING -> DONE  COMPLETED"),
        "{}",
        o.stdout
    );

    let j = wait_status(a, &id, "DONE").await;
    assert_eq!(j["priority"], 7);
    assert_eq!(j["result"]["stdout"], "hi\n");
    assert_eq!(j["payload"]["command"][0], "echo");
    assert!(j["started_at"].is_string() && j["completed_at"].is_string());

    let o = ctl(a, &["job", "status", &id]).await;
    assert_ok(&o);
    for want in [
        "Status:",
        "DONE",
        "Payload:",
        r#"{"command":["echo","hi"]}"#,
        "Result:",
        "retries used 0 of 3",
    ] {
        assert!(o.stdout.contains(want), "{want}: {}", o.stdout);
    }
    let o = ctl(a, &["job", "logs", &id, "-o", "yaml"]).await;
    assert_ok(&o);
    let reasons: Vec<&str> = o
        .stdout
        .lines()
        .filter_map(|l| l.trim().strip_prefix("reason: "))
        .collect();
    assert_eq!(reasons, ["SUBMITTED", "CLAIMED", "STARTED", "COMPLETED"]);
    w.shutdown().await;
}

#[tokio::test]
async fn jq_102_bulk_submit_from_ndjson_and_fr_032_list_pages() {
    let env = start().await;
    let a = &env.addr;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("jobs.ndjson");
    let text: String = (0..25)
        .map(|i| format!("{{\"payload\":{{\"n\":{i}}},\"priority\":{}}}\n", i % 10))
        .collect();
    std::fs::write(&file, text).unwrap();
    let o = ctl(a, &["job", "submit", "--file", file.to_str().unwrap()]).await;
    assert_ok(&o);
    assert_eq!(o.stdout.lines().count(), 25);
    // From stdin too.
    let o = ctl_stdin(
        a,
        &["job", "submit", "--file", "-"],
        Some("{\"payload\":\"text\"}\n"),
    )
    .await;
    assert_ok(&o);
    assert_eq!(o.stdout.lines().count(), 1);

    let o = ctl(a, &["job", "list", "--limit", "20", "-o", "json"]).await;
    assert_ok(&o);
    let page = o.json();
    assert_eq!(page["jobs"].as_array().unwrap().len(), 20);
    let token = page["next_page_token"].as_str().unwrap().to_string();
    let o = ctl(
        a,
        &[
            "job",
            "list",
            "--limit",
            "20",
            "--page-token",
            &token,
            "-o",
            "json",
        ],
    )
    .await;
    assert_ok(&o);
    assert_eq!(o.json()["jobs"].as_array().unwrap().len(), 6);
    assert!(o.json()["next_page_token"].is_null());
    let o = ctl(a, &["job", "list", "--status", "PENDING", "--limit", "5"]).await;
    assert_ok(&o);
    assert!(o.stdout.starts_with("ID "), "{}", o.stdout);
    assert!(o.stdout.contains("More: --page-token "), "{}", o.stdout);
    let o = ctl(a, &["queue", "stats", "default", "-o", "json"]).await;
    assert_ok(&o);
    assert_eq!(o.json()["pending"], 26);
}

#[tokio::test]
async fn fr_025_fr_026_fr_028_jq_122_queue_commands() {
    let env = start().await;
    let a = &env.addr;
    let o = ctl(
        a,
        &[
            "queue",
            "create",
            "emails",
            "--max-retries",
            "5",
            "--ttl",
            "1h",
            "--rate-limit",
            "2.5",
        ],
    )
    .await;
    assert_ok(&o);
    assert!(
        o.stdout.contains("emails") && o.stdout.contains("1h") && o.stdout.contains("2.5/s"),
        "{}",
        o.stdout
    );
    let o = ctl(a, &["queue", "create", "emails"]).await;
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(o.stderr.contains("ALREADY_EXISTS"), "{}", o.stderr);
    let o = ctl(a, &["queue", "pause", "emails", "-o", "json"]).await;
    assert_ok(&o);
    assert_eq!(o.json()["paused"], true);
    let o = ctl(a, &["queue", "list"]).await;
    assert_ok(&o);
    assert!(
        o.stdout
            .lines()
            .any(|l| l.starts_with("emails") && l.contains("paused")),
        "{}",
        o.stdout
    );
    let o = ctl(a, &["queue", "resume", "emails", "-o", "yaml"]).await;
    assert_ok(&o);
    assert!(o.stdout.contains("paused: false"), "{}", o.stdout);
    let o = ctl(
        a,
        &["queue", "update", "emails", "--max-retries", "1", "-o", "json"],
    )
    .await;
    assert_ok(&o);
    assert_eq!(
        (
            o.json()["max_retries"].clone(),
            o.json()["default_ttl_seconds"].clone()
        ),
        (1.into(), 3600.into())
    );

    let id = ctl(a, &["job", "submit", "-q", "emails", "{}"]).await.stdout;
    assert!(!id.trim().is_empty());
    let o = ctl(a, &["queue", "delete", "emails"]).await;
    assert_eq!(o.code, 1);
    assert!(
        o.stderr.contains("FAILED_PRECONDITION") && o.stderr.contains("--force"),
        "{}",
        o.stderr
    );
    let o = ctl(a, &["queue", "delete", "emails", "--force"]).await;
    assert_ok(&o);
    assert_eq!(o.stdout, "queue emails deleted (1 jobs deleted)\n");
    let o = ctl(a, &["queue", "stats", "emails"]).await;
    assert_eq!(o.code, 1);
    assert!(
        o.stderr.contains("NOT_FOUND") && o.stderr.contains("jq-ctl queue list"),
        "{}",
        o.stderr
    );
}

/// FR-025: priority weights are set, shown and cleared by `queue
/// create|update|get`; a fault is named before anything is sent.
#[tokio::test]
async fn fr_025_queue_priority_weights_through_the_binary() {
    let env = start().await;
    let a = &env.addr;
    let o = ctl(
        a,
        &[
            "queue",
            "create",
            "reports",
            "--priority-weights",
            " 0:1, 9:8,5:3",
        ],
    )
    .await;
    assert_ok(&o);
    assert!(
        o.stdout.contains("PRIORITY") && o.stdout.contains("9:8,5:3,0:1"),
        "{}",
        o.stdout
    );
    let o = ctl(a, &["queue", "get", "reports", "-o", "json"]).await;
    assert_ok(&o);
    assert_eq!(o.json()["priority_weights"], "9:8,5:3,0:1", "canonical form");
    for (bad, says) in [
        ("9:0,0:1", "band 9: weight \"0\" is not 1-1000"),
        ("9:8,5:3", "add a band 0"),
        ("9:1,9:2,0:1", "band 9 is given twice"),
        ("12:1,0:1", "a priority is 0-9"),
    ] {
        let o = ctl(a, &["queue", "update", "reports", "--priority-weights", bad]).await;
        assert_eq!(o.code, 2, "{bad}: {}", o.stderr);
        assert!(
            o.stderr.contains("priority_weights") && o.stderr.contains(says),
            "{bad}: {}",
            o.stderr
        );
    }
    let o = ctl(a, &["queue", "get", "reports", "-o", "yaml"]).await;
    assert!(
        o.stdout.contains("priority_weights: 9:8,5:3,0:1"),
        "unchanged: {}",
        o.stdout
    );
    let o = ctl(
        a,
        &[
            "queue",
            "update",
            "reports",
            "--priority-weights",
            "strict",
            "-o",
            "json",
        ],
    )
    .await;
    assert_ok(&o);
    assert_eq!(o.json()["priority_weights"], "");
    let o = ctl(a, &["queue", "get", "reports"]).await;
    assert!(
        o.stdout
            .lines()
            .any(|l| l.starts_with("reports") && l.trim_end().ends_with("strict")),
        "{}",
        o.stdout
    );
}

/// JQ-124: `jq-ctl schedule …` end to end, table/json/yaml.
#[tokio::test]
async fn jq_124_schedule_commands() {
    let env = start().await;
    let a = &env.addr;
    let o = ctl(
        a,
        &[
            "schedule",
            "create",
            "nightly",
            "--cron",
            "0 3 * * *",
            "--timezone",
            "Europe/Berlin",
            "-p",
            "5",
            "--max-retries",
            "2",
            "--ttl",
            "1h",
            "--missed",
            "skip",
            r#"{"handler":"noop"}"#,
        ],
    )
    .await;
    assert_ok(&o);
    assert!(
        o.stdout.contains("nightly") && o.stdout.contains("Europe/Berlin") && o.stdout.contains("0 3 * * *"),
        "{}",
        o.stdout
    );
    let o = ctl(a, &["schedule", "get", "nightly", "-o", "json"]).await;
    assert_ok(&o);
    let j = o.json();
    assert_eq!(
        (
            j["priority"].clone(),
            j["max_retries"].clone(),
            j["ttl_seconds"].clone()
        ),
        (5.into(), 2.into(), 3600.into())
    );
    assert_eq!(
        (j["missed"].clone(), j["overlap"].clone()),
        ("skip".into(), "allow".into())
    );
    assert_eq!(j["payload"]["handler"], "noop");
    let o = ctl(a, &["schedule", "create", "bad", "--cron", "0 3 * 13 *", "{}"]).await;
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(
        o.stderr.contains("INVALID_ARGUMENT") && o.stderr.contains("field 4 (month)"),
        "{}",
        o.stderr
    );
    let o = ctl(a, &["schedule", "create", "bad", "{}"]).await;
    assert_eq!(o.code, 2, "{}", o.stderr);
    let o = ctl(
        a,
        &[
            "schedule",
            "update",
            "nightly",
            "--overlap",
            "skip",
            "--max-retries",
            "default",
            "-o",
            "yaml",
        ],
    )
    .await;
    assert_ok(&o);
    assert!(
        o.stdout.contains("overlap: skip") && o.stdout.contains("max_retries: null"),
        "{}",
        o.stdout
    );
    let o = ctl(a, &["schedule", "pause", "nightly", "-o", "json"]).await;
    assert_eq!(o.json()["paused"], true);
    let o = ctl(a, &["schedule", "list"]).await;
    assert!(
        o.stdout
            .lines()
            .any(|l| l.starts_with("nightly") && l.contains("paused")),
        "{}",
        o.stdout
    );
    let o = ctl(a, &["schedule", "resume", "nightly", "-o", "json"]).await;
    assert_eq!(o.json()["paused"], false);
    let o = ctl(a, &["schedule", "trigger", "nightly", "-o", "json"]).await;
    assert_ok(&o);
    let id = o.json()["job_id"].as_str().unwrap().to_string();
    let o = ctl(a, &["job", "status", &id, "-o", "json"]).await;
    assert_eq!(o.json()["priority"], 5);
    let o = ctl(a, &["schedule", "delete", "nightly"]).await;
    assert_eq!(o.stdout, "schedule nightly deleted\n");
    let o = ctl(a, &["schedule", "get", "nightly"]).await;
    assert_eq!(o.code, 1);
    assert!(
        o.stderr.contains("NOT_FOUND") && o.stderr.contains("jq-ctl schedule list"),
        "{}",
        o.stderr
    );
}

#[tokio::test]
async fn fr_012_fr_013_jq_150_cancel_retry_and_redrive() {
    let env = start().await;
    let a = &env.addr;
    // No worker: jobs stay PENDING, so cancel is immediate.
    let ids: Vec<String> = ctl_stdin(
        a,
        &["job", "submit", "--file", "-"],
        Some("{\"payload\":1}\n{\"payload\":2}\n{\"payload\":3}\n"),
    )
    .await
    .stdout
    .lines()
    .map(String::from)
    .collect();
    for id in &ids {
        let o = ctl(a, &["job", "cancel", id]).await;
        assert_ok(&o);
        assert_eq!(o.stdout, format!("job {id}: cancelled (DEAD_LETTERED)\n"));
    }
    let o = ctl(a, &["job", "cancel", &ids[0]]).await;
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains("FAILED_PRECONDITION"), "{}", o.stderr);
    let o = ctl(a, &["job", "retry", &ids[0]]).await;
    assert_ok(&o);
    assert_eq!(
        o.stdout,
        format!("job {}: back to PENDING (retry count reset)\n", ids[0])
    );
    let o = ctl(
        a,
        &[
            "job",
            "retry",
            "--queue",
            "default",
            "--status",
            "DEAD_LETTERED",
            "-o",
            "json",
        ],
    )
    .await;
    assert_ok(&o);
    let mut moved: Vec<String> = serde_json::from_value(o.json()["job_ids"].clone()).unwrap();
    moved.sort();
    let mut want = ids[1..].to_vec();
    want.sort();
    assert_eq!(moved, want);
    let o = ctl(a, &["job", "list", "--status", "PENDING", "-o", "json"]).await;
    assert_eq!(o.json()["jobs"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn fr_023_fr_024_fr_042_workers_and_status() {
    let env = start().await;
    let a = &env.addr;
    let mut w = worker(env.server.grpc_addr, "ctl-w2").await;
    let mut listed = Value::Null;
    for _ in 0..200 {
        listed = ctl(a, &["worker", "list", "-o", "json"]).await.json();
        if listed["workers"].as_array().is_some_and(|v| !v.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(listed["workers"][0]["id"], "ctl-w2");
    assert_eq!(listed["workers"][0]["status"], "ONLINE");
    let o = ctl(a, &["status"]).await;
    assert_ok(&o);
    for want in ["reachable", "Health:", "database", "ok", "QUEUE", "default"] {
        assert!(o.stdout.contains(want), "{want}: {}", o.stdout);
    }
    let o = ctl(a, &["status", "-o", "json"]).await;
    assert_eq!(
        (o.json()["healthy"].clone(), o.json()["active_workers"].clone()),
        (true.into(), 1.into())
    );
    let o = ctl(a, &["worker", "drain", "ctl-w2"]).await;
    assert_ok(&o);
    assert!(o.stdout.contains("DRAINING"), "{}", o.stdout);
    let o = ctl(a, &["worker", "shutdown", "ctl-w2", "-o", "json"]).await;
    assert_ok(&o);
    assert_eq!(o.json()["status"], "STOPPING");
    w.wait().await;
    let o = ctl(a, &["worker", "list"]).await;
    assert_eq!(o.stdout, "No workers.\n");
    let o = ctl(a, &["worker", "list", "--all"]).await;
    assert!(o.stdout.contains("OFFLINE"), "{}", o.stdout);
    let o = ctl(a, &["worker", "drain", "nobody"]).await;
    assert_eq!(o.code, 1);
    assert!(
        o.stderr.contains("NOT_FOUND") && o.stderr.contains("worker list --all"),
        "{}",
        o.stderr
    );
}

#[tokio::test]
async fn fr_006_fr_002_bad_input_gets_one_clear_line_and_the_documented_exit_code() {
    let env = start().await;
    let a = &env.addr;
    let dir = tempfile::tempdir().unwrap();
    // Unknown queue: server-side NOT_FOUND -> 1, nothing on stdout.
    let o = ctl(a, &["job", "submit", "--queue", "nope", "{}"]).await;
    assert_eq!(o.code, 1);
    assert_eq!(o.stdout, "");
    assert_eq!(o.stderr.lines().count(), 1, "{}", o.stderr);
    assert!(
        o.stderr
            .starts_with("error: queue \"nope\" not found (NOT_FOUND); see `jq-ctl queue list`"),
        "{}",
        o.stderr
    );
    // Bad job id: usage -> 2, nothing sent.
    let o = ctl(a, &["job", "status", "not-a-uuid"]).await;
    assert_eq!(o.code, 2);
    assert!(
        o.stderr.contains("\"not-a-uuid\" is not a job id"),
        "{}",
        o.stderr
    );
    // Well-formed but unknown id: NOT_FOUND -> 1.
    let o = ctl(a, &["job", "status", "3f0c2a4e-8d1b-4e7a-9c55-0b1d2e3f4a5b"]).await;
    assert_eq!(o.code, 1);
    assert!(
        o.stderr.contains("NOT_FOUND") && o.stderr.contains("jq-ctl job list"),
        "{}",
        o.stderr
    );
    // Invalid priority: usage -> 2.
    let o = ctl(a, &["job", "submit", "--priority", "10", "{}"]).await;
    assert_eq!(o.code, 2);
    assert!(o.stderr.contains("10 is not in 0..=9"), "{}", o.stderr);
    // Bad JSON file: usage -> 2, naming the line, and nothing submitted.
    let file = dir.path().join("bad.ndjson");
    std::fs::write(&file, "{\"payload\":1}\n{\"payload\":2,}\n").unwrap();
    let o = ctl(a, &["job", "submit", "--file", file.to_str().unwrap()]).await;
    assert_eq!(o.code, 2);
    assert!(
        o.stderr.contains("bad.ndjson line 2") && o.stderr.contains("nothing was submitted"),
        "{}",
        o.stderr
    );
    let o = ctl(a, &["job", "submit", "--file", "/nonexistent/jobs.ndjson"]).await;
    assert_eq!(o.code, 2);
    assert!(
        o.stderr.contains("cannot read /nonexistent/jobs.ndjson"),
        "{}",
        o.stderr
    );
    assert_eq!(
        ctl(a, &["job", "list", "-o", "json"]).await.json()["jobs"],
        serde_json::json!([])
    );
    // One bad spec in a bulk file the server refuses: nothing stored.
    std::fs::write(&file, "{\"payload\":1}\n{\"payload\":2,\"queue\":\"nope\"}\n").unwrap();
    let o = ctl(a, &["job", "submit", "--file", file.to_str().unwrap()]).await;
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert_eq!(
        ctl(a, &["job", "list", "-o", "json"]).await.json()["jobs"],
        serde_json::json!([])
    );
    // Missing payload, unknown command: usage.
    assert_eq!(ctl(a, &["job", "submit"]).await.code, 2);
    assert_eq!(ctl(a, &["jobz"]).await.code, 2);
}

#[tokio::test]
async fn nfr_004_unreachable_or_silent_server_exits_3() {
    // Nothing listens on this port.
    let port = jq_testkit::free_port();
    let addr = format!("127.0.0.1:{port}");
    let o = ctl(&addr, &["status"]).await;
    assert_eq!(o.code, 3);
    assert!(
        o.stderr.contains(&format!("cannot reach jq-server at {addr}")),
        "{}",
        o.stderr
    );
    assert!(o.stderr.contains("--server-addr"), "{}", o.stderr);
    // Something accepts connections but never speaks gRPC.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let saddr = silent.local_addr().unwrap().to_string();
    let hold = tokio::spawn(async move {
        let mut held = vec![];
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let o = ctl(&saddr, &["job", "list", "--timeout", "500ms"]).await;
    assert_eq!(o.code, 3, "{}", o.stderr);
    assert!(
        o.stderr.contains("--timeout") || o.stderr.contains("cannot reach"),
        "{}",
        o.stderr
    );
    hold.abort();
    // Bad address: usage.
    let o = ctl("grpc://h:1", &["status"]).await;
    assert_eq!(o.code, 2);
    assert!(o.stderr.contains("invalid server address"), "{}", o.stderr);
}

#[tokio::test]
async fn nfr_016_nfr_017_help_and_version() {
    let env = start().await;
    let o = ctl(&env.addr, &["--version"]).await;
    assert_ok(&o);
    let lines: Vec<&str> = o.stdout.lines().collect();
    assert_eq!(lines[0], format!("jq-ctl {}", jq_ctl::VERSION));
    assert!(lines[1].starts_with("jq-server 0.1.0 ("), "{}", o.stdout);
    let port = jq_testkit::free_port();
    let o = ctl(&format!("127.0.0.1:{port}"), &["version"]).await;
    assert_ok(&o);
    assert!(o.stdout.contains("jq-server unreachable"), "{}", o.stdout);
    let o = ctl(&env.addr, &["--help"]).await;
    assert_ok(&o);
    assert!(
        o.stdout.contains("Exit codes:") && o.stdout.contains("3  cannot reach"),
        "{}",
        o.stdout
    );
    for sub in [
        &["job", "submit", "--help"][..],
        &["job", "watch", "--help"],
        &["queue", "create", "--help"],
        &["worker", "drain", "--help"],
        &["status", "--help"],
    ] {
        let o = ctl(&env.addr, sub).await;
        assert_ok(&o);
        assert!(o.stdout.contains("Example"), "{sub:?}: {}", o.stdout);
    }
}
