//! Configuration loading: file, environment, secrets, validation.

use std::io::Write;

use jq_config::{ConfigError, ServerConfig, env_name, load, redacted};

fn file(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn fr_017_fr_043_defaults_are_the_specs() {
    let c = load::<ServerConfig>(None, vec![]).unwrap().config;
    assert_eq!(c.scheduler.batch_size, 100);
    assert_eq!(c.scheduler.interval_ms, 500);
    assert_eq!(c.scheduler.assignment_timeout_s, 60);
    assert_eq!(c.scheduler.heartbeat_interval_s, 5);
    assert_eq!(c.scheduler.worker_heartbeat_timeout_s, 30);
    assert_eq!(
        (c.server.grpc_port, c.server.health_port, c.server.metrics_port),
        (50051, 8080, 9090)
    );
    assert_eq!(c.server.max_payload_bytes, 1024 * 1024);
    assert_eq!((c.retry.backoff_base_ms, c.retry.backoff_max_ms), (5000, 300_000));
    assert_eq!(c.server.shutdown_grace_s, 30);
    assert_eq!(c.log.format, "json");
}

#[test]
fn fr_043_yaml_file_overrides_defaults_and_keeps_the_rest() {
    let f = file("scheduler:\n  batch_size: 250\ndb:\n  url: postgres://jq@db:5432/jq\n");
    let c = load::<ServerConfig>(Some(f.path()), vec![]).unwrap().config;
    assert_eq!(c.scheduler.batch_size, 250);
    assert_eq!(c.scheduler.interval_ms, 500);
    assert_eq!(c.db.url, "postgres://jq@db:5432/jq");
    // An empty file is all defaults.
    let f = file("");
    assert_eq!(
        load::<ServerConfig>(Some(f.path()), vec![]).unwrap().config,
        ServerConfig::default()
    );
}

#[test]
fn fr_043_unknown_keys_and_bad_yaml_are_clear_errors() {
    let f = file("scheduler:\n  batch_sise: 5\n");
    let e = load::<ServerConfig>(Some(f.path()), vec![])
        .unwrap_err()
        .to_string();
    assert!(e.contains("batch_sise") && e.contains("batch_size"), "{e}");
    let f = file("scheduler: [unclosed\n");
    let e = load::<ServerConfig>(Some(f.path()), vec![]).unwrap_err();
    assert!(matches!(e, ConfigError::Yaml { .. }), "{e}");
    let f = file("- just\n- a list\n");
    assert!(matches!(
        load::<ServerConfig>(Some(f.path()), vec![]),
        Err(ConfigError::Shape { .. })
    ));
    let missing = std::path::Path::new("/nonexistent/jq.yaml");
    let e = load::<ServerConfig>(Some(missing), vec![])
        .unwrap_err()
        .to_string();
    assert!(e.contains("/nonexistent/jq.yaml"), "{e}");
}

#[test]
fn fr_044_env_overrides_file_for_every_leaf_type() {
    assert_eq!(env_name("db.password"), "JQ_DB_PASSWORD");
    let f = file("scheduler:\n  batch_size: 250\n");
    let c = load::<ServerConfig>(
        Some(f.path()),
        env(&[
            ("JQ_SCHEDULER_BATCH_SIZE", "42"),
            ("JQ_SCHEDULER_ASSIGNMENT_TIMEOUT_S", "90"),
            ("JQ_KAFKA_CREATE_TOPICS", "false"),
            ("JQ_DB_URL", "postgres://other/jq"),
            ("JQ_REDIS_KEY_PREFIX", "123"),
            ("PATH", "/bin"),
        ]),
    )
    .unwrap()
    .config;
    assert_eq!(c.scheduler.batch_size, 42);
    assert_eq!(c.scheduler.assignment_timeout_s, 90);
    assert!(!c.kafka.create_topics);
    assert_eq!(c.db.url, "postgres://other/jq");
    assert_eq!(
        c.redis.key_prefix, "123",
        "strings stay strings even when numeric"
    );
}

#[test]
fn fr_044_bad_env_value_names_the_variable() {
    let e = load::<ServerConfig>(None, env(&[("JQ_SCHEDULER_BATCH_SIZE", "lots")]))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("JQ_SCHEDULER_BATCH_SIZE") && e.contains("whole number"),
        "{e}"
    );
}

#[test]
fn fr_044_typo_in_a_known_section_warns_other_jq_vars_are_quiet() {
    let l = load::<ServerConfig>(
        None,
        env(&[
            ("JQ_DB_URLL", "x"),
            ("JQ_SERVER_ADDR", "h:1"),
            ("JQ_TEST_DATABASE_URL", "y"),
        ]),
    )
    .unwrap();
    assert_eq!(l.warnings.len(), 2, "{:?}", l.warnings);
    assert!(l.warnings.iter().any(|w| w.contains("JQ_DB_URLL")));
    assert!(!l.warnings.iter().any(|w| w.contains("JQ_TEST_DATABASE_URL")));
}

#[test]
fn fr_045_secret_in_file_is_ignored_with_a_warning_env_secret_is_used() {
    let f = file("db:\n  password: hunter2\nauth:\n  tokens: admin:abc\n");
    let l = load::<ServerConfig>(Some(f.path()), vec![]).unwrap();
    assert_eq!(l.config.db.password, "");
    assert_eq!(l.config.auth.tokens, "");
    assert_eq!(l.warnings.len(), 2);
    assert!(l.warnings[0].contains("JQ_DB_PASSWORD"));
    assert!(
        l.warnings
            .iter()
            .all(|w| !w.contains("hunter2") && !w.contains("abc"))
    );
    let l = load::<ServerConfig>(Some(f.path()), env(&[("JQ_DB_PASSWORD", "s3cret")])).unwrap();
    assert_eq!(l.config.db.password, "s3cret");
}

#[test]
fn fr_045_redacted_summary_hides_secrets() {
    let l = load::<ServerConfig>(
        None,
        env(&[("JQ_DB_PASSWORD", "s3cret"), ("JQ_AUTH_TOKENS", "admin:tok")]),
    )
    .unwrap();
    let text = redacted(&l.config);
    assert!(
        !text.contains("s3cret") && !text.contains("tok\n") && !text.contains("admin:tok"),
        "{text}"
    );
    assert!(
        text.contains("password: '***'") || text.contains("password: \"***\""),
        "{text}"
    );
}

#[test]
fn fr_046_validation_lists_every_problem() {
    let f = file(
        "scheduler:\n  batch_size: 0\n  worker_heartbeat_timeout_s: 2\ntls:\n  enabled: true\nlog:\n  format: xml\n",
    );
    let ConfigError::Invalid(p) = load::<ServerConfig>(Some(f.path()), vec![]).unwrap_err() else {
        panic!()
    };
    assert_eq!(p.len(), 4, "{p:?}");
    let e = load::<ServerConfig>(
        None,
        env(&[("JQ_AUTH_ENABLED", "true"), ("JQ_AUTH_TOKENS", "root:x")]),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("unknown role") && !e.contains(":x"), "{e}");
}

#[test]
fn jq_170_token_list_parses_roles() {
    let t = jq_config::server::parse_tokens("admin:a, worker:b,submitter:c").unwrap();
    assert_eq!(
        t,
        vec![
            ("admin".into(), "a".into()),
            ("worker".into(), "b".into()),
            ("submitter".into(), "c".into())
        ]
    );
    assert!(jq_config::server::parse_tokens("admin:").is_err());
}

#[test]
fn fr_018_fr_021_fr_022_worker_defaults_env_and_validation() {
    use jq_config::WorkerConfig;
    let c = load::<WorkerConfig>(None, vec![]).unwrap().config;
    assert_eq!(c.worker.concurrency, 4);
    assert_eq!(c.worker.queues, vec!["default"]);
    assert_eq!((c.worker.metrics_port, c.worker.health_port), (9091, 8081));
    assert_eq!(c.worker.shutdown_grace_s, 60);
    let c = load::<WorkerConfig>(
        None,
        env(&[
            ("JQ_WORKER_QUEUES", "emails, reports"),
            ("JQ_EXEC_OUTPUT_CAP_BYTES", "1024"),
            ("JQ_AUTH_TOKEN", "t0k"),
        ]),
    )
    .unwrap()
    .config;
    assert_eq!(c.worker.queues, vec!["emails", "reports"]);
    assert_eq!(c.exec.output_cap_bytes, 1024);
    assert_eq!(c.auth.token, "t0k");
    assert!(!redacted(&c).contains("t0k"));
    let f = file("worker:\n  concurrency: 0\n  queues: []\ntls:\n  cert: c.pem\n");
    let e = load::<WorkerConfig>(Some(f.path()), vec![])
        .unwrap_err()
        .to_string();
    for want in ["worker.concurrency", "worker.queues", "tls.cert and tls.key"] {
        assert!(e.contains(want), "{want}: {e}");
    }
}

#[test]
fn jq_173_allowed_commands_are_names_or_absolute_paths() {
    use jq_config::WorkerConfig;
    let c = load::<WorkerConfig>(None, vec![]).unwrap().config;
    assert!(c.exec.allowed_commands.is_empty(), "default: any program");
    let c = load::<WorkerConfig>(
        None,
        env(&[("JQ_EXEC_ALLOWED_COMMANDS", "echo, /usr/bin/convert")]),
    )
    .unwrap()
    .config;
    assert_eq!(c.exec.allowed_commands, vec!["echo", "/usr/bin/convert"]);
    for bad in ["bin/echo", "./x"] {
        let e = load::<WorkerConfig>(None, env(&[("JQ_EXEC_ALLOWED_COMMANDS", bad)]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("exec.allowed_commands"), "{bad}: {e}");
    }
}

#[test]
fn jq_172_tls_settings_of_the_backing_services_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, "x").unwrap();
    let ca = ca.display().to_string();
    let c = load::<ServerConfig>(
        None,
        env(&[
            (
                "JQ_DB_URL",
                "postgres://jq@db.rds.amazonaws.com:5432/jq?sslmode=verify-full",
            ),
            ("JQ_DB_TLS_CA", &ca),
            ("JQ_REDIS_URL", "rediss://cache.amazonaws.com:6379"),
            ("JQ_REDIS_TLS_CA", &ca),
            ("JQ_KAFKA_BROKERS", "b-1.msk:9096"),
            ("JQ_KAFKA_SECURITY_PROTOCOL", "sasl_ssl"),
            ("JQ_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512"),
            ("JQ_KAFKA_SASL_USERNAME", "jq"),
            ("JQ_KAFKA_SASL_PASSWORD", "kafka-secret"),
            ("JQ_KAFKA_TLS_CA", &ca),
        ]),
    )
    .unwrap()
    .config;
    assert_eq!(c.db.sslmode(), "verify-full");
    assert_eq!(c.kafka.sasl_password, "kafka-secret");
    assert!(!redacted(&c).contains("kafka-secret"));
    let bad = |pairs: &[(&str, &str)]| load::<ServerConfig>(None, env(pairs)).unwrap_err().to_string();
    let e = bad(&[("JQ_DB_URL", "postgres://h/jq?sslmode=sometimes")]);
    assert!(e.contains("sslmode must be"), "{e}");
    let e = bad(&[
        ("JQ_DB_URL", "postgres://h/jq?sslmode=disable"),
        ("JQ_DB_TLS_CA", &ca),
    ]);
    assert!(e.contains("db.tls_ca and db.tls_cert need an sslmode"), "{e}");
    let e = bad(&[("JQ_REDIS_TLS_CA", &ca)]);
    assert!(e.contains("rediss://"), "{e}");
    let e = bad(&[("JQ_KAFKA_TLS_CA", &ca)]);
    assert!(e.contains("kafka.security_protocol ssl or sasl_ssl"), "{e}");
    let e = bad(&[("JQ_KAFKA_SASL_MECHANISM", "GSSAPI")]);
    assert!(e.contains("PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"), "{e}");
    let e = bad(&[("JQ_KAFKA_SECURITY_PROTOCOL", "sasl_ssl")]);
    assert!(e.contains("sasl_username"), "{e}");
    let e = bad(&[("JQ_DB_TLS_CERT", &ca)]);
    assert!(e.contains("db.tls_cert and db.tls_key go together"), "{e}");
    let e = bad(&[
        ("JQ_DB_URL", "postgres://h/jq?sslmode=require"),
        ("JQ_DB_TLS_CA", "/nonexistent/ca.pem"),
    ]);
    assert!(e.contains("is not a readable file"), "{e}");
}

#[test]
fn jq_152_partition_width_defaults_to_a_day_and_is_bounded() {
    let c = load::<ServerConfig>(None, vec![]).unwrap();
    assert_eq!(c.config.retention.partition_s, 24 * 3600);
    let c = load::<ServerConfig>(None, env(&[("JQ_RETENTION_PARTITION_S", "3600")])).unwrap();
    assert_eq!(c.config.retention.partition_s, 3600);
    for bad in ["59", "2678401"] {
        let e = load::<ServerConfig>(None, env(&[("JQ_RETENTION_PARTITION_S", bad)]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("retention.partition_s"), "{bad}: {e}");
    }
}
