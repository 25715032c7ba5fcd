//! `jq-worker` configuration (SPEC §5, JQ-130). Every key is overridable by
//! `JQ_<SECTION>_<KEY>`; the token only by `JQ_AUTH_TOKEN`.

use serde::{Deserialize, Serialize};

use crate::Config;
use crate::server::Log;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerConfig {
    pub worker: WorkerSection,
    pub exec: Exec,
    pub tls: ClientTls,
    pub auth: ClientAuth,
    pub log: Log,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerSection {
    /// Stable worker id; empty: `<hostname>-<pid>`.
    pub id: String,
    /// `host:port` of jq-server (`https://` or a TLS CA turns TLS on).
    pub server_addr: String,
    /// Most jobs at once (FR-021).
    pub concurrency: u32,
    /// Queues to take jobs from (FR-022), each `name` or `name:weight`
    /// (JQ-123: with weights, slots fill in proportion while every queue
    /// has work; a queue without a weight has 1).
    pub queues: Vec<String>,
    /// Address the health and metrics listeners bind to.
    pub bind: String,
    pub metrics_port: u16,
    pub health_port: u16,
    /// How long SIGTERM waits for running jobs before leaving them to the
    /// server (NFR-015).
    pub shutdown_grace_s: u64,
    /// Reconnect backoff bounds (jittered, doubling).
    pub reconnect_min_ms: u64,
    pub reconnect_max_ms: u64,
}

impl Default for WorkerSection {
    fn default() -> Self {
        WorkerSection {
            id: String::new(),
            server_addr: "localhost:50051".into(),
            concurrency: 4,
            queues: vec!["default".into()],
            bind: "0.0.0.0".into(),
            metrics_port: 9091,
            health_port: 8081,
            shutdown_grace_s: 60,
            reconnect_min_ms: 200,
            reconnect_max_ms: 10_000,
        }
    }
}

/// Subprocess execution (JQ-130).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Exec {
    /// Variables a job inherits from the worker; the rest is cleared.
    pub env_allowlist: Vec<String>,
    /// Timeout when neither the payload nor the queue sets one.
    pub default_timeout_s: u64,
    /// Between SIGTERM and SIGKILL of the job's process group.
    pub kill_grace_s: u64,
    /// Bytes kept of stdout and of stderr each; the rest is dropped.
    pub output_cap_bytes: u64,
    /// Programs a payload may start (JQ-173): bare names, looked up on the
    /// worker's PATH, or absolute paths, matched exactly. Empty: any.
    pub allowed_commands: Vec<String>,
}

impl Default for Exec {
    fn default() -> Self {
        Exec {
            env_allowlist: ["PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR"]
                .map(String::from)
                .to_vec(),
            default_timeout_s: 3600,
            kill_grace_s: 10,
            output_cap_bytes: 64 * 1024,
            allowed_commands: vec![],
        }
    }
}

/// TLS towards the server (FR-047). Any CA or certificate turns TLS on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ClientTls {
    /// PEM CA that signed the server certificate.
    pub ca: String,
    /// PEM client certificate and key (mTLS).
    pub cert: String,
    pub key: String,
    /// Name to check the server certificate against (default: the host).
    pub domain: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ClientAuth {
    /// Secret: `JQ_AUTH_TOKEN` only. A token with the worker role (JQ-170).
    pub token: String,
}

impl Config for WorkerConfig {
    const SECRETS: &'static [&'static str] = &["auth.token"];

    fn problems(&self) -> Vec<String> {
        let mut p = vec![];
        let mut check = |ok: bool, msg: &str| {
            if !ok {
                p.push(msg.to_string());
            }
        };
        let w = &self.worker;
        check(
            !w.server_addr.trim().is_empty(),
            "worker.server_addr must not be empty",
        );
        check(
            (1..=10_000).contains(&w.concurrency),
            "worker.concurrency must be between 1 and 10000",
        );
        check(
            !w.queues.is_empty() && w.queues.iter().all(|q| !q.trim().is_empty()),
            "worker.queues must name at least one queue, none empty",
        );
        check(
            w.shutdown_grace_s >= 1,
            "worker.shutdown_grace_s must be at least 1",
        );
        check(
            w.reconnect_min_ms >= 10,
            "worker.reconnect_min_ms must be at least 10",
        );
        check(
            w.reconnect_max_ms >= w.reconnect_min_ms,
            "worker.reconnect_max_ms must be at least worker.reconnect_min_ms",
        );
        let e = &self.exec;
        check(
            e.default_timeout_s >= 1,
            "exec.default_timeout_s must be at least 1",
        );
        check(
            e.output_cap_bytes >= 1,
            "exec.output_cap_bytes must be at least 1",
        );
        check(
            e.allowed_commands
                .iter()
                .all(|c| !c.trim().is_empty() && (c.starts_with('/') || !c.contains('/'))),
            "exec.allowed_commands holds program names (no '/') or absolute paths, none empty",
        );
        check(
            self.tls.cert.is_empty() == self.tls.key.is_empty(),
            "tls.cert and tls.key go together",
        );
        check(
            ["json", "text"].contains(&self.log.format.as_str()),
            "log.format must be json or text",
        );
        check(!self.log.level.trim().is_empty(), "log.level must not be empty");
        p
    }
}
