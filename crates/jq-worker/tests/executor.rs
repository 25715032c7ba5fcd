//! JQ-130: the subprocess executor on real processes.

use std::time::Duration;

use jq_worker::executor::{ExecConfig, PayloadError, parse_payload, run};
use tokio::sync::watch;

fn cfg() -> ExecConfig {
    ExecConfig {
        inherited_env: ExecConfig::inherit(std::env::vars(), &["PATH"]),
        default_timeout: Duration::from_secs(30),
        kill_grace: Duration::from_millis(500),
        output_cap: 64 * 1024,
        allowed_commands: vec![],
    }
}

fn never() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    std::mem::forget(tx);
    rx
}

fn spec(json: &str) -> jq_worker::executor::SubprocessSpec {
    parse_payload(json.as_bytes()).unwrap()
}

/// State letter of a process in /proc, None when it is gone.
fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit(')').next()?.trim().chars().next()
}

#[tokio::test]
async fn jq_130_runs_an_argv_and_records_output_and_exit_code() {
    let r = run(&spec(r#"{"command":["echo","hi"]}"#), &cfg(), None, never())
        .await
        .unwrap();
    assert!(r.succeeded());
    assert_eq!(r.stdout.bytes, b"hi\n");
    let r = run(
        &spec(r#"{"command":["sh","-c","echo oops >&2; exit 3"]}"#),
        &cfg(),
        None,
        never(),
    )
    .await
    .unwrap();
    assert_eq!(r.exit_code, Some(3));
    assert_eq!(r.stderr.bytes, b"oops\n");
    assert!(!r.succeeded());
}

#[tokio::test]
async fn jq_130_no_shell_interpretation_of_arguments() {
    let r = run(
        &spec(r#"{"command":["echo","$HOME; rm -rf /"]}"#),
        &cfg(),
        None,
        never(),
    )
    .await
    .unwrap();
    assert_eq!(
        r.stdout.bytes, b"$HOME; rm -rf /\n",
        "arguments are passed verbatim"
    );
}

#[tokio::test]
async fn jq_130_environment_is_cleared_except_the_allowlist_and_the_payload() {
    let parent = vec![
        ("PATH".to_string(), std::env::var("PATH").unwrap()),
        ("JQ_DB_PASSWORD".to_string(), "server-secret".to_string()),
    ];
    let c = ExecConfig {
        inherited_env: ExecConfig::inherit(parent, &["PATH"]),
        ..cfg()
    };
    let r = run(
        &spec(r#"{"command":["env"],"env":{"GREETING":"hello"}}"#),
        &c,
        None,
        never(),
    )
    .await
    .unwrap();
    let env = String::from_utf8(r.stdout.bytes).unwrap();
    assert!(
        !env.contains("server-secret") && !env.contains("JQ_DB_PASSWORD"),
        "{env}"
    );
    assert!(env.contains("GREETING=hello"));
    assert!(env.lines().any(|l| l.starts_with("PATH=")));
}

#[tokio::test]
async fn jq_130_timeout_kills_the_whole_tree_even_children_ignoring_sigterm() {
    // The job starts a grandchild that ignores SIGTERM, prints its pid and waits.
    let s = spec(
        r#"{"command":["sh","-c","trap '' TERM; (trap '' TERM; exec sleep 1000) & echo $!; wait"],"timeout_s":1}"#,
    );
    let r = run(&s, &cfg(), None, never()).await.unwrap();
    assert!(r.timed_out);
    assert!(!r.succeeded());
    assert_eq!(
        r.signal,
        Some(libc::SIGKILL),
        "SIGTERM was ignored, SIGKILL ended it"
    );
    let pid: u32 = String::from_utf8(r.stdout.bytes).unwrap().trim().parse().unwrap();
    // Gone, or a zombie waiting for a reaper: either way not running.
    for _ in 0..50 {
        if matches!(proc_state(pid), None | Some('Z')) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("grandchild {pid} still running: {:?}", proc_state(pid));
}

#[tokio::test]
async fn jq_130_background_children_do_not_outlive_the_job() {
    let s = spec(r#"{"command":["sh","-c","sleep 1000 & echo $!"]}"#);
    let r = run(&s, &cfg(), None, never()).await.unwrap();
    assert_eq!(r.exit_code, Some(0));
    let pid: u32 = String::from_utf8(r.stdout.bytes).unwrap().trim().parse().unwrap();
    for _ in 0..50 {
        if matches!(proc_state(pid), None | Some('Z')) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("background child {pid} survived its job");
}

#[tokio::test]
async fn jq_130_output_is_capped_and_marked_truncated() {
    let c = ExecConfig {
        output_cap: 1000,
        ..cfg()
    };
    let r = run(
        &spec(r#"{"command":["head","-c","100000","/dev/zero"]}"#),
        &c,
        None,
        never(),
    )
    .await
    .unwrap();
    assert_eq!(r.stdout.bytes.len(), 1000);
    assert_eq!(r.stdout.dropped, 99_000);
    assert!(r.stdout.truncated());
    assert!(r.succeeded());
}

#[tokio::test]
async fn jq_113_cancel_kills_a_running_job() {
    let (tx, rx) = watch::channel(false);
    let c = cfg();
    let job = tokio::spawn(async move { run(&spec(r#"{"command":["sleep","1000"]}"#), &c, None, rx).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    tx.send(true).unwrap();
    let r = job.await.unwrap().unwrap();
    assert!(r.cancelled && !r.timed_out);
    assert_eq!(r.signal, Some(libc::SIGTERM));
}

#[tokio::test]
async fn jq_130_working_directory_and_payload_timeout_override() {
    let dir = std::env::temp_dir();
    let s = spec(&format!(
        r#"{{"command":["pwd"],"cwd":{:?}}}"#,
        dir.display().to_string()
    ));
    let r = run(&s, &cfg(), Some(Duration::from_secs(5)), never())
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8(r.stdout.bytes).unwrap().trim(),
        std::fs::canonicalize(&dir).unwrap().display().to_string()
    );
}

#[test]
fn jq_130_malformed_payloads_are_errors_not_crashes() {
    assert!(matches!(parse_payload(b"not json"), Err(PayloadError::Json(_))));
    assert_eq!(
        parse_payload(br#"{"command":[]}"#),
        Err(PayloadError::EmptyCommand)
    );
    assert_eq!(
        parse_payload(br#"{"command":[""]}"#),
        Err(PayloadError::EmptyCommand)
    );
    assert!(
        matches!(
            parse_payload(br#"{"command":"echo hi"}"#),
            Err(PayloadError::Json(_))
        ),
        "a string is not an argv"
    );
    assert!(matches!(
        parse_payload(br#"{"command":["x"],"env":{"A=B":"1"}}"#),
        Err(PayloadError::BadEnvName(_))
    ));
    assert!(
        matches!(
            parse_payload(br#"{"command":["x"],"shell":true}"#),
            Err(PayloadError::Json(_))
        ),
        "unknown keys refused"
    );
}

#[tokio::test]
async fn jq_130_missing_program_is_a_spawn_error() {
    let e = run(
        &spec(r#"{"command":["/nonexistent/program"]}"#),
        &cfg(),
        None,
        never(),
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("/nonexistent/program"));
}
