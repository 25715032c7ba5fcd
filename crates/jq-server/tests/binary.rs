//! The jq-server binary's flags: --help, --version, --dry-run (NFR-016,
//! NFR-017, FR-046).

use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_jq-server"))
}

#[test]
fn nfr_016_help_lists_the_flags_with_examples() {
    let out = bin().arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--config",
        "--grpc-port",
        "--metrics-port",
        "--health-port",
        "--log-level",
        "--dry-run",
        "--version",
        "Examples:",
    ] {
        assert!(text.contains(flag), "{flag} missing from --help");
    }
}

#[test]
fn nfr_017_version_is_semver_and_commit() {
    let out = bin().arg("--version").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let want = format!("jq-server {} (", env!("CARGO_PKG_VERSION"));
    assert!(text.starts_with(&want), "{text}");
    let commit = text.trim().trim_start_matches(&want).trim_end_matches(')');
    assert!(!commit.is_empty(), "{text}");
}

#[tokio::test]
async fn fr_046_dry_run_checks_dependencies_and_exits_by_result() {
    let db = jq_testkit::TestDb::new().await;
    let ok = bin()
        .args(["--dry-run", "--log-level", "error"])
        .env("JQ_DB_URL", &db.url)
        .env("JQ_REDIS_URL", "")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&ok.stdout);
    assert!(ok.status.success(), "{text}");
    assert!(
        text.contains("postgres  ok")
            && text.contains("redis     disabled")
            && text.contains("ready to start"),
        "{text}"
    );
    let bad = bin()
        .args(["--dry-run", "--log-level", "error"])
        .env("JQ_DB_URL", "postgres://postgres@127.0.0.1:1/none")
        .env("JQ_DB_ACQUIRE_TIMEOUT_MS", "300")
        .env("JQ_REDIS_URL", "")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&bad.stdout);
    assert_eq!(bad.status.code(), Some(1), "{text}");
    assert!(
        text.contains("postgres  FAILED") && text.contains("NOT ready"),
        "{text}"
    );
    // An invalid configuration is a usage error (exit 2) naming the problem.
    let invalid = bin()
        .arg("--dry-run")
        .env("JQ_SCHEDULER_BATCH_SIZE", "0")
        .output()
        .unwrap();
    assert_eq!(invalid.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&invalid.stderr).contains("scheduler.batch_size"));
}
