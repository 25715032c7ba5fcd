//! The real `jq-worker` binary as a child process against an in-process
//! jq-server: signals, exit codes, the environment a job sees.

mod common;

use std::process::Stdio;

use common::*;
use jq_proto::v1::{JobStatus, WorkerStatus};
use tokio::process::{Child, Command};

fn worker_cmd(env: &Env, id: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_jq-worker"));
    c.args(["--server-addr", &env.addr().to_string(), "--worker-id", id])
        .args(["--metrics-port", "0", "--health-port", "0", "--concurrency", "1"])
        .env("JQ_WORKER_BIND", "127.0.0.1")
        .env("JQ_WORKER_RECONNECT_MIN_MS", "50")
        .env("JQ_LOG_FORMAT", "text")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    c
}

fn sigterm(child: &Child) {
    // SAFETY: signalling our own child by pid.
    unsafe {
        libc::kill(child.id().unwrap() as i32, libc::SIGTERM);
    }
}

#[tokio::test]
async fn jq_130_a_job_sees_only_the_allowlisted_environment() {
    let mut env = start().await;
    let mut child = worker_cmd(&env, "bin-env")
        .env("JQ_DB_PASSWORD", "server-secret-123")
        .env("AWS_SECRET_ACCESS_KEY", "aws-secret-456")
        .env("LANG", "C.UTF-8")
        .spawn()
        .unwrap();
    let payload = r#"{"command":["env"],"env":{"FROM_PAYLOAD":"yes"}}"#;
    let id = env.submit(job("default", payload)).await;
    let j = env.wait_status(&id, JobStatus::Done).await;
    let out = result_json(&j)["stdout"].as_str().unwrap().to_string();
    assert!(
        !out.contains("server-secret-123") && !out.contains("JQ_DB_PASSWORD"),
        "{out}"
    );
    assert!(!out.contains("aws-secret-456"), "{out}");
    assert!(out.contains("FROM_PAYLOAD=yes"), "{out}");
    assert!(out.contains("LANG=C.UTF-8"), "allowlisted variables pass: {out}");
    assert!(out.contains("PATH="), "{out}");
    // NFR-006: the job knows which job and attempt it is.
    assert!(out.contains(&format!("JQ_JOB_ID={id}\n")), "{out}");
    assert!(
        out.contains("JQ_JOB_ATTEMPT=1\n") && out.contains("JQ_JOB_QUEUE=default\n"),
        "{out}"
    );
    assert!(out.contains("JQ_WORKER_ID=bin-env\n"), "{out}");
    sigterm(&child);
    assert!(child.wait().await.unwrap().success());
}

#[tokio::test]
async fn nfr_015_sigterm_lets_the_running_job_finish_then_exits_0() {
    let mut env = start().await;
    let mut child = worker_cmd(&env, "bin-term").spawn().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let go = dir.path().join("go");
    // Runs until the test creates the file: it must outlive the SIGTERM.
    let script = format!(
        "while [ ! -e {} ]; do sleep 0.05; done; echo finished",
        go.display()
    );
    let payload = serde_json::json!({"command": ["sh", "-c", script]}).to_string();
    let id = env.submit(job("default", &payload)).await;
    env.wait_status(&id, JobStatus::Running).await;
    sigterm(&child);
    // Its one slot is busy, so nothing new can reach it before the signal;
    // after it, the worker takes nothing new while it finishes.
    let later = env.submit(job("default", r#"{"handler":"noop"}"#)).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(child.try_wait().unwrap().is_none(), "still finishing its job");
    std::fs::write(&go, b"").unwrap();
    let status = child.wait().await.unwrap();
    assert!(status.success(), "{status:?}");
    let j = env.wait_status(&id, JobStatus::Done).await;
    assert_eq!(result_json(&j)["stdout"], "finished\n");
    assert_eq!(env.job(&later).await.status, JobStatus::Pending as i32);
    env.wait_worker("bin-term", WorkerStatus::Offline).await;
}

#[tokio::test]
async fn nfr_015_a_job_still_running_at_the_deadline_is_left_for_the_server_to_reclaim() {
    let mut env = start().await;
    let mut child = worker_cmd(&env, "bin-deadline")
        .env("JQ_WORKER_SHUTDOWN_GRACE_S", "1")
        .spawn()
        .unwrap();
    let id = env.submit(job("default", r#"{"command":["sleep","60"]}"#)).await;
    env.wait_status(&id, JobStatus::Running).await;
    sigterm(&child);
    let status = child.wait().await.unwrap();
    assert!(status.success(), "{status:?}");
    env.wait_worker("bin-deadline", WorkerStatus::Offline).await;
    // Reclaimed by the server: FAILED (worker lost) then back to PENDING.
    let mut seen = false;
    for _ in 0..200 {
        let events = env.events(&id).await;
        if events.iter().any(|e| e.to_status == JobStatus::Failed as i32) {
            seen = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(seen, "{:?}", env.events(&id).await);
    let j = env.job(&id).await;
    assert!(
        [JobStatus::Pending as i32, JobStatus::Failed as i32].contains(&j.status),
        "{j:?}"
    );
}

#[tokio::test]
async fn nfr_016_nfr_017_help_version_and_bad_flags() {
    let out = Command::new(env!("CARGO_BIN_EXE_jq-worker"))
        .arg("--version")
        .output()
        .await
        .unwrap();
    let v = String::from_utf8(out.stdout).unwrap();
    assert!(
        v.starts_with(&format!("jq-worker {} (", env!("CARGO_PKG_VERSION"))),
        "{v}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_jq-worker"))
        .arg("--help")
        .output()
        .await
        .unwrap();
    let h = String::from_utf8(out.stdout).unwrap();
    for want in [
        "--server-addr",
        "--concurrency",
        "--queues",
        "Examples:",
        "SIGTERM",
    ] {
        assert!(h.contains(want), "{want}: {h}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_jq-worker"))
        .args(["--concurrency", "0"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let e = String::from_utf8(out.stderr).unwrap();
    assert!(
        e.contains("worker.concurrency must be between 1 and 10000"),
        "{e}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_jq-worker"))
        .args(["--server-addr", "grpc://nope"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8(out.stderr)
            .unwrap()
            .contains("invalid server address")
    );
}

#[tokio::test]
async fn nfr_007_a_killed_worker_takes_its_running_job_process_with_it() {
    let mut env = start().await;
    let mut child = worker_cmd(&env, "bin-kill9").spawn().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("job.pid");
    let script = format!("echo $$ > {}; exec sleep 60", pidfile.display());
    let payload = serde_json::json!({"command": ["sh", "-c", script]}).to_string();
    let id = env.submit(job("default", &payload)).await;
    env.wait_status(&id, JobStatus::Running).await;
    until("the job to write its pid", || {
        std::fs::read_to_string(&pidfile).is_ok_and(|s| s.ends_with('\n'))
    })
    .await;
    let pid: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
    assert!(alive(pid));
    child.kill().await.unwrap(); // SIGKILL: no cleanup code runs
    until("the orphaned job process to die with its worker", || !alive(pid)).await;
}
