//! `jq-server` configuration. Defaults are the SPEC's; every key is
//! overridable by `JQ_<SECTION>_<KEY>` (see crate docs).

use serde::{Deserialize, Serialize};

use crate::Config;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub server: Listen,
    pub db: Db,
    pub redis: Redis,
    pub kafka: Kafka,
    pub scheduler: Scheduler,
    pub retry: Retry,
    pub retention: Retention,
    pub tls: Tls,
    pub auth: Auth,
    pub log: Log,
}

/// Listeners and request limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Listen {
    /// Address the listeners bind to.
    pub bind: String,
    pub grpc_port: u16,
    /// `/healthz` and `/readyz` (NFR-013).
    pub health_port: u16,
    /// `/metrics` (FR-039).
    pub metrics_port: u16,
    /// Largest gRPC message accepted or sent (JQ-104).
    pub max_message_bytes: u64,
    /// Largest job payload accepted (JQ-104).
    pub max_payload_bytes: u64,
    /// Longest graceful shutdown before exiting anyway (NFR-014).
    pub shutdown_grace_s: u64,
}

impl Default for Listen {
    fn default() -> Self {
        Listen {
            bind: "0.0.0.0".into(),
            grpc_port: 50051,
            health_port: 8080,
            metrics_port: 9090,
            max_message_bytes: 16 * 1024 * 1024,
            max_payload_bytes: 1024 * 1024,
            shutdown_grace_s: 30,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Db {
    /// PostgreSQL URL, without the password.
    pub url: String,
    /// Secret: `JQ_DB_PASSWORD` only.
    pub password: String,
    pub max_connections: u32,
    pub acquire_timeout_ms: u64,
    /// PEM CA file that signed the server certificate (libpq's
    /// `sslrootcert`); with `sslmode=verify-ca|verify-full` in `url`. Empty:
    /// the system's trust store.
    pub tls_ca: String,
    /// PEM client certificate and key files, for servers that ask for one.
    pub tls_cert: String,
    pub tls_key: String,
    /// Warn (log, `jq-ctl status`) about a transaction open on the
    /// PostgreSQL server longer than this: it holds vacuum back for every
    /// database. 0: never.
    pub long_transaction_warn_s: u64,
}

impl Default for Db {
    fn default() -> Self {
        Db {
            url: "postgres://postgres@127.0.0.1:5432/jq".into(),
            password: String::new(),
            max_connections: 16,
            acquire_timeout_ms: 5000,
            tls_ca: String::new(),
            tls_cert: String::new(),
            tls_key: String::new(),
            long_transaction_warn_s: 300,
        }
    }
}

impl Db {
    /// `sslmode` as the URL spells it (libpq's default: prefer).
    pub fn sslmode(&self) -> String {
        query_param(&self.url, "sslmode").unwrap_or_else(|| "prefer".into())
    }
}

/// A query parameter of a URL (no percent-decoding: the values here are
/// plain words).
fn query_param(url: &str, name: &str) -> Option<String> {
    let query = url.split_once('?')?.1;
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Redis {
    /// Empty: no Redis (single-instance mode; PostgreSQL still guarantees
    /// single assignment).
    pub url: String,
    /// Secret: `JQ_REDIS_PASSWORD` only.
    pub password: String,
    /// Prefix of every key jq writes.
    pub key_prefix: String,
    /// PEM CA file for a `rediss://` URL. Empty: the system's trust store.
    pub tls_ca: String,
    /// PEM client certificate and key files (Redis `tls-auth-clients`).
    pub tls_cert: String,
    pub tls_key: String,
}

impl Default for Redis {
    fn default() -> Self {
        Redis {
            url: "redis://127.0.0.1:6379".into(),
            password: String::new(),
            key_prefix: "jq:".into(),
            tls_ca: String::new(),
            tls_cert: String::new(),
            tls_key: String::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Kafka {
    /// Comma-separated bootstrap servers; empty: events stay in the outbox.
    pub brokers: String,
    /// Prepended to every topic name.
    pub topic_prefix: String,
    /// Create missing topics at start.
    pub create_topics: bool,
    pub partitions: u32,
    pub replication_factor: u32,
    /// plaintext, ssl, sasl_plaintext or sasl_ssl.
    pub security_protocol: String,
    /// PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.
    pub sasl_mechanism: String,
    pub sasl_username: String,
    /// Secret: `JQ_KAFKA_SASL_PASSWORD` only.
    pub sasl_password: String,
    /// Sent outbox rows are pruned after this long.
    pub outbox_retention_s: u64,
    /// How long the producer tries to deliver one event before reporting
    /// failure (the relay then retries it).
    pub message_timeout_ms: u64,
    /// PEM CA file for ssl and sasl_ssl. Empty: the system's trust store.
    pub tls_ca: String,
    /// PEM client certificate and key files (mTLS to the brokers).
    pub tls_cert: String,
    pub tls_key: String,
}

impl Default for Kafka {
    fn default() -> Self {
        Kafka {
            brokers: String::new(),
            topic_prefix: String::new(),
            create_topics: true,
            partitions: 3,
            replication_factor: 1,
            security_protocol: "plaintext".into(),
            sasl_mechanism: "PLAIN".into(),
            sasl_username: String::new(),
            sasl_password: String::new(),
            outbox_retention_s: 24 * 3600,
            message_timeout_ms: 30_000,
            tls_ca: String::new(),
            tls_cert: String::new(),
            tls_key: String::new(),
        }
    }
}

/// Dispatch and failure detection (FR-016, FR-017, FR-019, FR-020).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Scheduler {
    pub batch_size: u32,
    pub interval_ms: u64,
    pub assignment_timeout_s: u64,
    pub heartbeat_interval_s: u64,
    pub worker_heartbeat_timeout_s: u64,
    pub reaper_interval_ms: u64,
}

impl Default for Scheduler {
    fn default() -> Self {
        Scheduler {
            batch_size: 100,
            interval_ms: 500,
            assignment_timeout_s: 60,
            heartbeat_interval_s: 5,
            worker_heartbeat_timeout_s: 30,
            reaper_interval_ms: 1000,
        }
    }
}

/// Defaults for queues created without settings (FR-033).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Retry {
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    pub default_max_retries: u32,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            backoff_base_ms: 5000,
            backoff_max_ms: 300_000,
            default_max_retries: 3,
        }
    }
}

/// How long finished jobs and their history are kept, for queues that do
/// not set their own (issue 21). 0 keeps them until deleted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Retention {
    pub done_s: u64,
    /// FR-035: dead letters stay until deleted unless this is set.
    pub dead_lettered_s: u64,
    /// How often the pruner and the partition maintainer run.
    pub interval_s: u64,
    /// Width of a `job_events` partition: history leaves one partition at
    /// a time, up to about this much later than its retention says.
    pub partition_s: u64,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            done_s: 7 * 24 * 3600,
            dead_lettered_s: 0,
            interval_s: 60,
            partition_s: 24 * 3600,
        }
    }
}

/// mTLS for gRPC (FR-047). Off for local development.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Tls {
    pub enabled: bool,
    /// PEM certificate chain and key of the server.
    pub cert: String,
    pub key: String,
    /// PEM CA; when set, clients must present a certificate it signed.
    pub ca: String,
}

/// Bearer tokens with roles (JQ-170).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Auth {
    pub enabled: bool,
    /// Secret: `JQ_AUTH_TOKENS` only, as `role:token,role:token` with roles
    /// submitter, worker, admin.
    pub tokens: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Log {
    /// trace, debug, info, warn or error (or a tracing filter directive).
    pub level: String,
    /// json (FR-041) or text.
    pub format: String,
}

impl Default for Log {
    fn default() -> Self {
        Log {
            level: "info".into(),
            format: "json".into(),
        }
    }
}

/// Parse `role:token,…`; errors name the bad entry, never the token.
pub fn parse_tokens(s: &str) -> Result<Vec<(String, String)>, String> {
    s.split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .enumerate()
        .map(|(i, e)| match e.split_once(':') {
            Some((role, token)) if ["submitter", "worker", "admin"].contains(&role) && !token.is_empty() => {
                Ok((role.to_string(), token.to_string()))
            }
            Some((role, _)) if !["submitter", "worker", "admin"].contains(&role) => Err(format!(
                "auth.tokens entry #{}: unknown role {role:?} (submitter, worker, admin)",
                i + 1
            )),
            _ => Err(format!("auth.tokens entry #{}: expected role:token", i + 1)),
        })
        .collect()
}

impl Config for ServerConfig {
    const SECRETS: &'static [&'static str] = &[
        "db.password",
        "redis.password",
        "kafka.sasl_password",
        "auth.tokens",
    ];

    fn problems(&self) -> Vec<String> {
        let mut p = vec![];
        let mut check = |ok: bool, msg: &str| {
            if !ok {
                p.push(msg.to_string());
            }
        };
        let s = &self.scheduler;
        check(
            self.db.url.starts_with("postgres://") || self.db.url.starts_with("postgresql://"),
            "db.url must be a postgres:// URL",
        );
        check(
            self.db.max_connections >= 2,
            "db.max_connections must be at least 2",
        );
        check(
            self.redis.url.is_empty()
                || self.redis.url.starts_with("redis://")
                || self.redis.url.starts_with("rediss://"),
            "redis.url must be empty (no Redis) or a redis:// URL",
        );
        check(
            (1..=10_000).contains(&s.batch_size),
            "scheduler.batch_size must be between 1 and 10000",
        );
        check(s.interval_ms >= 10, "scheduler.interval_ms must be at least 10");
        check(
            s.assignment_timeout_s >= 1,
            "scheduler.assignment_timeout_s must be at least 1",
        );
        check(
            s.heartbeat_interval_s >= 1,
            "scheduler.heartbeat_interval_s must be at least 1",
        );
        check(
            s.worker_heartbeat_timeout_s > s.heartbeat_interval_s,
            "scheduler.worker_heartbeat_timeout_s must be longer than scheduler.heartbeat_interval_s",
        );
        check(
            s.reaper_interval_ms >= 10,
            "scheduler.reaper_interval_ms must be at least 10",
        );
        let r = &self.retention;
        // A hundred years, as jq_core::submit::MAX_RETENTION_S.
        let max = 100 * 365 * 24 * 3600;
        check(
            r.done_s <= max && r.dead_lettered_s <= max,
            "retention.done_s and retention.dead_lettered_s must be at most 3153600000 (100 years)",
        );
        check(r.interval_s >= 1, "retention.interval_s must be at least 1");
        // A minute to 31 days: narrower means thousands of partitions for
        // each read by job to visit, wider holds history that long extra.
        check(
            (60..=31 * 24 * 3600).contains(&r.partition_s),
            "retention.partition_s must be between 60 and 2678400 (31 days)",
        );
        check(
            self.retry.backoff_base_ms >= 1,
            "retry.backoff_base_ms must be at least 1",
        );
        check(
            self.retry.backoff_max_ms >= self.retry.backoff_base_ms,
            "retry.backoff_max_ms must be at least retry.backoff_base_ms",
        );
        check(
            self.server.max_payload_bytes >= 1,
            "server.max_payload_bytes must be at least 1",
        );
        check(
            self.server.max_message_bytes > self.server.max_payload_bytes,
            "server.max_message_bytes must be larger than server.max_payload_bytes",
        );
        check(self.kafka.partitions >= 1, "kafka.partitions must be at least 1");
        check(
            self.kafka.message_timeout_ms >= 1000,
            "kafka.message_timeout_ms must be at least 1000",
        );
        check(
            self.kafka.replication_factor >= 1,
            "kafka.replication_factor must be at least 1",
        );
        check(
            ["plaintext", "ssl", "sasl_plaintext", "sasl_ssl"]
                .contains(&self.kafka.security_protocol.as_str()),
            "kafka.security_protocol must be plaintext, ssl, sasl_plaintext or sasl_ssl",
        );
        check(
            ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"].contains(&self.kafka.sasl_mechanism.as_str()),
            "kafka.sasl_mechanism must be PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512",
        );
        let kafka_tls = ["ssl", "sasl_ssl"].contains(&self.kafka.security_protocol.as_str());
        check(
            kafka_tls || (self.kafka.tls_ca.is_empty() && self.kafka.tls_cert.is_empty()),
            "kafka.tls_ca and kafka.tls_cert need kafka.security_protocol ssl or sasl_ssl",
        );
        check(
            !self.kafka.security_protocol.starts_with("sasl") || !self.kafka.sasl_username.is_empty(),
            "kafka.security_protocol sasl_* needs kafka.sasl_username (and JQ_KAFKA_SASL_PASSWORD)",
        );
        let sslmode = self.db.sslmode();
        check(
            [
                "disable",
                "allow",
                "prefer",
                "require",
                "verify-ca",
                "verify-full",
            ]
            .contains(&sslmode.as_str()),
            "db.url sslmode must be disable, allow, prefer, require, verify-ca or verify-full",
        );
        check(
            sslmode != "disable" || (self.db.tls_ca.is_empty() && self.db.tls_cert.is_empty()),
            "db.tls_ca and db.tls_cert need an sslmode other than disable in db.url",
        );
        check(
            self.redis.url.starts_with("rediss://")
                || (self.redis.tls_ca.is_empty() && self.redis.tls_cert.is_empty()),
            "redis.tls_ca and redis.tls_cert need a rediss:// redis.url",
        );
        for (what, cert, key) in [
            ("db", &self.db.tls_cert, &self.db.tls_key),
            ("redis", &self.redis.tls_cert, &self.redis.tls_key),
            ("kafka", &self.kafka.tls_cert, &self.kafka.tls_key),
        ] {
            check(
                cert.is_empty() == key.is_empty(),
                &format!("{what}.tls_cert and {what}.tls_key go together"),
            );
        }
        for (what, path) in [
            ("db.tls_ca", &self.db.tls_ca),
            ("db.tls_cert", &self.db.tls_cert),
            ("db.tls_key", &self.db.tls_key),
            ("redis.tls_ca", &self.redis.tls_ca),
            ("redis.tls_cert", &self.redis.tls_cert),
            ("redis.tls_key", &self.redis.tls_key),
            ("kafka.tls_ca", &self.kafka.tls_ca),
            ("kafka.tls_cert", &self.kafka.tls_cert),
            ("kafka.tls_key", &self.kafka.tls_key),
        ] {
            check(
                path.is_empty() || std::path::Path::new(path).is_file(),
                &format!("{what} {path:?} is not a readable file"),
            );
        }
        check(
            !self.tls.enabled || (!self.tls.cert.is_empty() && !self.tls.key.is_empty()),
            "tls.enabled needs tls.cert and tls.key",
        );
        check(
            ["json", "text"].contains(&self.log.format.as_str()),
            "log.format must be json or text",
        );
        check(!self.log.level.trim().is_empty(), "log.level must not be empty");
        if self.auth.enabled {
            match parse_tokens(&self.auth.tokens) {
                Ok(t) if t.is_empty() => p.push("auth.enabled needs JQ_AUTH_TOKENS (role:token,…)".into()),
                Ok(_) => {}
                Err(e) => p.push(e),
            }
        }
        p
    }
}
