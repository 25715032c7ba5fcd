//! Validated inputs: queue names, job submissions, queue settings. Every
//! check a request must pass lives here, so the gRPC edge, the CLI and the
//! store agree on the rules and the messages.

use std::time::Duration;

use chrono::{DateTime, Datelike, Utc};

use crate::backoff::BackoffPolicy;
use crate::error::ValidationError;
use crate::input::{check_identifier, echo};

/// Default payload limit (JQ-104): 1 MiB.
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 1024 * 1024;
/// Most jobs one bulk submit may carry (JQ-102).
pub const MAX_BULK_SUBMIT: usize = 10_000;
/// Longest idempotency key accepted (JQ-101).
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 256;
/// Highest priority (FR-002); 0 is the lowest and the default.
pub const MAX_PRIORITY: u8 = 9;
/// Longest delay accepted for a delayed job: one year.
pub const MAX_DELAY: Duration = Duration::from_secs(366 * 24 * 3600);
/// `run_at` outside these years is a client's mistake (and beyond what
/// PostgreSQL's timestamptz holds at the far ends).
pub const MIN_RUN_AT_YEAR: i32 = 1970;
pub const MAX_RUN_AT_YEAR: i32 = 9999;
/// Largest max_retries accepted.
pub const MAX_RETRIES_LIMIT: u32 = 10_000;

/// Name of a queue: 1-128 of `[A-Za-z0-9._-]`, starting with a letter or
/// digit, so it is safe in metrics labels, topic names and shells.
pub fn validate_queue_name(name: &str) -> Result<(), ValidationError> {
    let ok_len = (1..=128).contains(&name.len());
    let ok_first = name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok_len && ok_first && ok_chars {
        Ok(())
    } else {
        Err(ValidationError::invalid(
            "queue",
            format!(
                "{} is not a valid queue name (1-128 characters of A-Z a-z 0-9 . _ -, starting with a letter or digit)",
                echo(name)
            ),
        ))
    }
}

/// A worker id: 1-255 printable characters without whitespace.
pub fn validate_worker_id(id: &str) -> Result<(), ValidationError> {
    if (1..=255).contains(&id.len()) && id.chars().all(|c| c.is_ascii_graphic()) {
        Ok(())
    } else {
        Err(ValidationError::invalid(
            "worker_id",
            format!(
                "{} is not a valid worker id (1-255 printable ASCII characters, no spaces)",
                echo(id)
            ),
        ))
    }
}

/// FR-002: 0-9, default 0.
pub fn validate_priority(p: Option<i32>) -> Result<u8, ValidationError> {
    match p {
        None => Ok(0),
        Some(v) if (0..=MAX_PRIORITY as i32).contains(&v) => Ok(v as u8),
        Some(v) => Err(ValidationError::invalid(
            "priority",
            format!("{v} is out of range: priority must be between 0 and 9 (9 is dispatched first)"),
        )),
    }
}

/// FR-003: >= 0 when given.
pub fn validate_max_retries(r: Option<i32>) -> Result<Option<u32>, ValidationError> {
    match r {
        None => Ok(None),
        Some(v) if (0..=MAX_RETRIES_LIMIT as i32).contains(&v) => Ok(Some(v as u32)),
        Some(v) => Err(ValidationError::invalid(
            "max_retries",
            format!("{v} is out of range: max_retries must be between 0 and {MAX_RETRIES_LIMIT}"),
        )),
    }
}

/// When a job may first run (JQ-103).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schedule {
    Now,
    /// Database-now + this.
    After(Duration),
    /// This wall-clock time (the caller's intent; past times mean now).
    At(DateTime<Utc>),
}

/// A job ready to be stored: every field checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewJob {
    pub queue: String,
    pub payload: Vec<u8>,
    pub priority: u8,
    /// None: the queue's default.
    pub max_retries: Option<u32>,
    /// None: the queue's default TTL.
    pub ttl: Option<Duration>,
    pub schedule: Schedule,
    pub idempotency_key: Option<String>,
}

/// A submission as it arrives, before checks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobRequest {
    pub queue: String,
    pub payload: Vec<u8>,
    pub priority: Option<i32>,
    pub max_retries: Option<i32>,
    pub ttl_seconds: Option<u32>,
    pub run_at: Option<DateTime<Utc>>,
    pub delay: Option<Duration>,
    pub idempotency_key: Option<String>,
}

impl JobRequest {
    /// Check every field (FR-002, FR-003, FR-004, JQ-101, JQ-103, JQ-104).
    /// The payload itself is never parsed (FR-007).
    pub fn validate(self, max_payload_bytes: usize) -> Result<NewJob, ValidationError> {
        validate_queue_name(&self.queue)?;
        if self.payload.len() > max_payload_bytes {
            return Err(ValidationError::TooLarge {
                field: "payload",
                actual: self.payload.len(),
                limit: max_payload_bytes,
            });
        }
        let priority = validate_priority(self.priority)?;
        let max_retries = validate_max_retries(self.max_retries)?;
        let ttl = match self.ttl_seconds {
            Some(0) => {
                return Err(ValidationError::invalid(
                    "ttl_seconds",
                    "must be at least 1 second when set",
                ));
            }
            other => other.map(|s| Duration::from_secs(s.into())),
        };
        let schedule = match (self.run_at, self.delay) {
            (Some(_), Some(_)) => {
                return Err(ValidationError::invalid(
                    "run_at",
                    "give either run_at or delay, not both",
                ));
            }
            (Some(at), None) if !(MIN_RUN_AT_YEAR..=MAX_RUN_AT_YEAR).contains(&at.year()) => {
                return Err(ValidationError::invalid(
                    "run_at",
                    format!("must be between the years {MIN_RUN_AT_YEAR} and {MAX_RUN_AT_YEAR}"),
                ));
            }
            (Some(at), None) => Schedule::At(at),
            (None, Some(d)) if d > MAX_DELAY => {
                return Err(ValidationError::invalid("delay", "must be at most one year"));
            }
            (None, Some(d)) if d.is_zero() => Schedule::Now,
            (None, Some(d)) => Schedule::After(d),
            (None, None) => Schedule::Now,
        };
        if let Some(k) = &self.idempotency_key {
            check_identifier("idempotency_key", k, 1, MAX_IDEMPOTENCY_KEY_LEN)?;
        }
        Ok(NewJob {
            queue: self.queue,
            payload: self.payload,
            priority,
            max_retries,
            ttl,
            schedule,
            idempotency_key: self.idempotency_key,
        })
    }
}

/// A bulk submit (JQ-102): 1..=10,000 jobs, all valid or none stored.
pub fn validate_bulk(
    reqs: Vec<JobRequest>,
    max_payload_bytes: usize,
) -> Result<Vec<NewJob>, ValidationError> {
    if reqs.is_empty() {
        return Err(ValidationError::invalid("jobs", "at least one job is required"));
    }
    if reqs.len() > MAX_BULK_SUBMIT {
        return Err(ValidationError::invalid(
            "jobs",
            format!("{} jobs in one call; the limit is {MAX_BULK_SUBMIT}", reqs.len()),
        ));
    }
    reqs.into_iter()
        .enumerate()
        .map(|(i, r)| {
            r.validate(max_payload_bytes).map_err(|e| match e {
                ValidationError::Invalid { field, message } => {
                    ValidationError::invalid(field, format!("job #{i}: {message}"))
                }
                other => other,
            })
        })
        .collect()
}

/// How long a queue keeps its finished jobs and their history (issue 21):
/// past it they are deleted, and read as NOT_FOUND.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Retention {
    /// The server's `retention.done_s` / `retention.dead_lettered_s`.
    #[default]
    ServerDefault,
    /// Kept until deleted.
    Forever,
    /// Deleted this long after the job finished.
    For(Duration),
}

impl Retention {
    /// The wire and column form: -1 (or NULL) the server's default, 0
    /// forever, n seconds.
    pub fn from_seconds(v: i64) -> Result<Retention, ValidationError> {
        match v {
            -1 => Ok(Retention::ServerDefault),
            0 => Ok(Retention::Forever),
            n if n > 0 => Ok(Retention::For(Duration::from_secs(n as u64))),
            n => Err(ValidationError::invalid(
                "retention",
                format!("{n} seconds: use -1 for the server's default, 0 to keep, or a positive number"),
            )),
        }
    }

    pub fn as_seconds(self) -> i64 {
        match self {
            Retention::ServerDefault => -1,
            Retention::Forever => 0,
            Retention::For(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        }
    }

    /// What applies, given the server's default (`0`: forever).
    pub fn resolve(self, server_default: Duration) -> Option<Duration> {
        match self {
            Retention::ServerDefault => (!server_default.is_zero()).then_some(server_default),
            Retention::Forever => None,
            Retention::For(d) => Some(d),
        }
    }
}

/// Longest retention: a hundred years, so database-side interval
/// arithmetic never overflows.
pub const MAX_RETENTION_S: u64 = 100 * 365 * 24 * 3600;

/// A queue's settings (FR-025, JQ-140).
#[derive(Debug, Clone, PartialEq)]
pub struct QueueSettings {
    pub max_retries: u32,
    pub default_ttl: Option<Duration>,
    pub default_timeout: Option<Duration>,
    pub backoff: BackoffPolicy,
    pub concurrency_limit: Option<u32>,
    pub rate_limit_per_second: Option<f64>,
    /// How long DONE jobs are kept.
    pub retain_done: Retention,
    /// How long DEAD_LETTERED jobs are kept (FR-035: by default, until
    /// deleted).
    pub retain_dead: Retention,
    /// Shares between priority bands; `None` is strict priority (FR-025).
    pub priority_weights: Option<crate::weights::PriorityWeights>,
}

impl Default for QueueSettings {
    fn default() -> Self {
        QueueSettings {
            max_retries: 3,
            default_ttl: None,
            default_timeout: None,
            backoff: BackoffPolicy::default(),
            concurrency_limit: None,
            rate_limit_per_second: None,
            retain_done: Retention::ServerDefault,
            retain_dead: Retention::ServerDefault,
            priority_weights: None,
        }
    }
}

impl QueueSettings {
    pub fn validate(&self) -> Result<(), ValidationError> {
        if self.max_retries > MAX_RETRIES_LIMIT {
            return Err(ValidationError::invalid(
                "max_retries",
                format!("must be at most {MAX_RETRIES_LIMIT}"),
            ));
        }
        if self.backoff.base.is_zero() {
            return Err(ValidationError::invalid(
                "backoff_base",
                "must be greater than zero",
            ));
        }
        if self.backoff.base > self.backoff.max {
            return Err(ValidationError::invalid(
                "backoff_max",
                "must be at least backoff_base",
            ));
        }
        if self.default_ttl.is_some_and(|d| d.is_zero()) {
            return Err(ValidationError::invalid(
                "default_ttl",
                "must be at least 1 second",
            ));
        }
        for (field, d) in [
            ("default_ttl", self.default_ttl),
            ("default_timeout", self.default_timeout),
        ] {
            if d.is_some_and(|d| d.as_secs() > crate::input::INT4_MAX) {
                return Err(ValidationError::invalid(
                    field,
                    format!("must be at most {} seconds", crate::input::INT4_MAX),
                ));
            }
        }
        if let Some(c) = self.concurrency_limit {
            crate::input::stored_int4("concurrency_limit", c)?;
        }
        if self.concurrency_limit == Some(0) {
            return Err(ValidationError::invalid(
                "concurrency_limit",
                "must be at least 1 when set",
            ));
        }
        if let Some(r) = self.rate_limit_per_second
            && !(r.is_finite() && r > 0.0)
        {
            return Err(ValidationError::invalid(
                "rate_limit_per_second",
                "must be a positive number when set",
            ));
        }
        for (field, r) in [
            ("retain_done", self.retain_done),
            ("retain_dead", self.retain_dead),
        ] {
            if let Retention::For(d) = r
                && d.as_secs() > MAX_RETENTION_S
            {
                return Err(ValidationError::invalid(
                    field,
                    format!("must be at most {MAX_RETENTION_S} seconds (100 years)"),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(queue: &str) -> JobRequest {
        JobRequest {
            queue: queue.into(),
            payload: b"{}".to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn fr_002_priority_defaults_to_zero_and_rejects_out_of_range() {
        assert_eq!(req("q").validate(100).unwrap().priority, 0);
        for p in 0..=9 {
            let r = JobRequest {
                priority: Some(p),
                ..req("q")
            };
            assert_eq!(r.validate(100).unwrap().priority, p as u8);
        }
        for p in [-1, 10, i32::MAX, i32::MIN] {
            let r = JobRequest {
                priority: Some(p),
                ..req("q")
            };
            let e = r.validate(100).unwrap_err();
            assert!(
                matches!(
                    e,
                    ValidationError::Invalid {
                        field: "priority",
                        ..
                    }
                ),
                "{e}"
            );
            assert!(e.to_string().contains("between 0 and 9"));
        }
    }

    #[test]
    fn fr_003_max_retries_must_not_be_negative() {
        let r = JobRequest {
            max_retries: Some(-1),
            ..req("q")
        };
        assert!(r.validate(100).is_err());
        let r = JobRequest {
            max_retries: Some(0),
            ..req("q")
        };
        assert_eq!(r.validate(100).unwrap().max_retries, Some(0));
        assert_eq!(req("q").validate(100).unwrap().max_retries, None);
    }

    #[test]
    fn fr_004_ttl_zero_is_rejected_and_positive_kept() {
        let r = JobRequest {
            ttl_seconds: Some(0),
            ..req("q")
        };
        assert!(r.validate(100).is_err());
        let r = JobRequest {
            ttl_seconds: Some(30),
            ..req("q")
        };
        assert_eq!(r.validate(100).unwrap().ttl, Some(Duration::from_secs(30)));
    }

    #[test]
    fn fr_007_payload_is_kept_verbatim_even_when_not_json() {
        let bytes = vec![0xff, 0x00, b'{', 0x80];
        let r = JobRequest {
            payload: bytes.clone(),
            ..req("q")
        };
        assert_eq!(r.validate(100).unwrap().payload, bytes);
    }

    #[test]
    fn jq_103_delay_and_run_at_are_exclusive() {
        let r = JobRequest {
            delay: Some(Duration::from_secs(5)),
            ..req("q")
        };
        assert_eq!(
            r.validate(100).unwrap().schedule,
            Schedule::After(Duration::from_secs(5))
        );
        let at = Utc::now();
        let r = JobRequest {
            run_at: Some(at),
            ..req("q")
        };
        assert_eq!(r.validate(100).unwrap().schedule, Schedule::At(at));
        let r = JobRequest {
            run_at: Some(at),
            delay: Some(Duration::from_secs(1)),
            ..req("q")
        };
        assert!(r.validate(100).is_err());
        let r = JobRequest {
            delay: Some(MAX_DELAY + Duration::from_secs(1)),
            ..req("q")
        };
        assert!(r.validate(100).is_err());
    }

    #[test]
    fn jq_104_oversize_payload_is_rejected_with_sizes_in_the_message() {
        let r = JobRequest {
            payload: vec![b'x'; 101],
            ..req("q")
        };
        let e = r.validate(100).unwrap_err();
        assert_eq!(
            e,
            ValidationError::TooLarge {
                field: "payload",
                actual: 101,
                limit: 100
            }
        );
        assert!(e.to_string().contains("101") && e.to_string().contains("100"));
    }

    #[test]
    fn jq_101_idempotency_key_length_is_bounded() {
        let r = JobRequest {
            idempotency_key: Some(String::new()),
            ..req("q")
        };
        assert!(r.validate(100).is_err());
        let r = JobRequest {
            idempotency_key: Some("k".repeat(MAX_IDEMPOTENCY_KEY_LEN + 1)),
            ..req("q")
        };
        assert!(r.validate(100).is_err());
        let r = JobRequest {
            idempotency_key: Some("order-42".into()),
            ..req("q")
        };
        assert_eq!(
            r.validate(100).unwrap().idempotency_key.as_deref(),
            Some("order-42")
        );
    }

    #[test]
    fn jq_102_bulk_is_bounded_and_names_the_bad_job() {
        assert!(validate_bulk(vec![], 100).is_err());
        assert!(validate_bulk(vec![req("q"); MAX_BULK_SUBMIT + 1], 100).is_err());
        assert_eq!(validate_bulk(vec![req("q"); 3], 100).unwrap().len(), 3);
        let bad = vec![
            req("q"),
            JobRequest {
                priority: Some(12),
                ..req("q")
            },
        ];
        let e = validate_bulk(bad, 100).unwrap_err().to_string();
        assert!(e.contains("job #1"), "{e}");
    }

    #[test]
    fn fr_006_queue_names_are_checked() {
        for ok in ["default", "emails.high", "a", "Q-1_x", &"x".repeat(128)] {
            assert!(validate_queue_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-x", ".x", "has space", "ü", &"x".repeat(129), "a/b"] {
            assert!(validate_queue_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn fr_018_worker_ids_are_checked() {
        assert!(validate_worker_id("host-1234").is_ok());
        assert!(validate_worker_id("").is_err());
        assert!(validate_worker_id("a b").is_err());
    }

    #[test]
    fn fr_025_queue_settings_validation() {
        assert!(QueueSettings::default().validate().is_ok());
        let bad = [
            QueueSettings {
                concurrency_limit: Some(0),
                ..Default::default()
            },
            QueueSettings {
                rate_limit_per_second: Some(f64::NAN),
                ..Default::default()
            },
            QueueSettings {
                rate_limit_per_second: Some(-1.0),
                ..Default::default()
            },
            QueueSettings {
                backoff: BackoffPolicy {
                    base: Duration::from_secs(10),
                    max: Duration::from_secs(5),
                },
                ..Default::default()
            },
            QueueSettings {
                default_ttl: Some(Duration::ZERO),
                ..Default::default()
            },
        ];
        for s in bad {
            assert!(s.validate().is_err(), "{s:?}");
        }
    }
}
