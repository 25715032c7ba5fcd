//! Store errors: typed for what callers act on, opaque for the rest.

use jq_core::input::Echo;
use jq_core::{TransitionError, ValidationError};
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("job {0} not found")]
    JobNotFound(Uuid),
    #[error("queue {} not found", Echo(.0))]
    QueueNotFound(String),
    #[error("queue {} already exists", Echo(.0))]
    QueueExists(String),
    #[error("schedule {} not found", Echo(.0))]
    ScheduleNotFound(String),
    #[error("schedule {} already exists", Echo(.0))]
    ScheduleExists(String),
    #[error(
        "queue {} still has {jobs} job(s); delete them first or use force",
        Echo(name)
    )]
    QueueNotEmpty { name: String, jobs: u64 },
    #[error("worker {} not found", Echo(.0))]
    WorkerNotFound(String),
    #[error("worker {} is offline", Echo(.0))]
    WorkerOffline(String),
    #[error("job {0} is not in a terminal state; cancel it first")]
    JobNotTerminal(Uuid),
    /// The lifecycle refused the command (wrong state, stale attempt, …).
    #[error(transparent)]
    Transition(#[from] TransitionError),
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// Kept losing races on one job; the caller may try again.
    #[error("job {0} is changing too fast; try again")]
    Contention(Uuid),
    /// The database refused a value of the request (a data exception or
    /// a CHECK constraint): input that slipped past validation. Nothing was
    /// written; the code says which rule.
    #[error("a value in the request is outside what the database stores (SQLSTATE {0})")]
    Refused(String),
    /// TLS to PostgreSQL failed: a certificate that does not verify (CA,
    /// host name), a server without TLS where `sslmode` requires it, an
    /// unreadable key. A configuration error, never retried.
    #[error(
        "TLS to PostgreSQL failed: {0} (check sslmode in db.url, db.tls_ca and the server's certificate; not retried)"
    )]
    Tls(String),
    /// Transient database errors persisted through every retry.
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
}

/// The database refused a value (SQLSTATE class 22, data exception, or
/// 23514, check_violation): the request's fault, never a retry.
pub fn refused_value(e: &sqlx::Error) -> Option<String> {
    match e {
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            // A check violation names its constraint; "no partition of
            // relation found for row" (same code) is the schema's failure,
            // not the request's.
            (code.starts_with("22") || (code == "23514" && db.constraint().is_some()))
                .then(|| code.into_owned())
        }
        _ => None,
    }
}

/// TLS failed while connecting (ADR 0014): sqlx reports a handshake that
/// rustls refused as an I/O error of kind InvalidData, and the rest
/// (no TLS on the server, unreadable files) as `Tls` or `Configuration`.
pub fn is_tls_failure(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Tls(_) | sqlx::Error::Configuration(_) => true,
        sqlx::Error::Io(io) => io.kind() == std::io::ErrorKind::InvalidData,
        _ => false,
    }
}

/// Errors worth retrying: the connection broke or the database asked us to.
pub fn is_transient(e: &sqlx::Error) -> bool {
    if is_tls_failure(e) {
        return false;
    }
    match e {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut => true,
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            // serialization_failure, deadlock_detected, connection exceptions,
            // admin/crash shutdown, cannot_connect_now, too_many_connections.
            matches!(&*code, "40001" | "40P01" | "57P01" | "57P02" | "57P03" | "53300")
                || code.starts_with("08")
        }
        _ => false,
    }
}

impl StoreError {
    /// A copy for each call of a batch that failed as a whole. Database
    /// errors cannot be cloned; their text is kept, and so is whether they
    /// were transient (UNAVAILABLE, worth retrying).
    pub(crate) fn clone_shallow(&self) -> StoreError {
        let text = |e: &dyn std::fmt::Display| sqlx::Error::Protocol(e.to_string());
        match self {
            StoreError::JobNotFound(id) => StoreError::JobNotFound(*id),
            StoreError::QueueNotFound(q) => StoreError::QueueNotFound(q.clone()),
            StoreError::QueueExists(q) => StoreError::QueueExists(q.clone()),
            StoreError::ScheduleNotFound(q) => StoreError::ScheduleNotFound(q.clone()),
            StoreError::ScheduleExists(q) => StoreError::ScheduleExists(q.clone()),
            StoreError::QueueNotEmpty { name, jobs } => StoreError::QueueNotEmpty {
                name: name.clone(),
                jobs: *jobs,
            },
            StoreError::WorkerNotFound(w) => StoreError::WorkerNotFound(w.clone()),
            StoreError::WorkerOffline(w) => StoreError::WorkerOffline(w.clone()),
            StoreError::JobNotTerminal(id) => StoreError::JobNotTerminal(*id),
            StoreError::Transition(t) => StoreError::Transition(t.clone()),
            StoreError::Invalid(v) => StoreError::Invalid(v.clone()),
            StoreError::Contention(id) => StoreError::Contention(*id),
            StoreError::Refused(c) => StoreError::Refused(c.clone()),
            StoreError::Tls(t) => StoreError::Tls(t.clone()),
            StoreError::Unavailable(e) => StoreError::Unavailable(text(e)),
            StoreError::Database(e) if is_transient(e) => StoreError::Unavailable(text(e)),
            StoreError::Database(e) => StoreError::Database(text(e)),
            StoreError::Migration(e) => StoreError::Database(text(e)),
        }
    }
}
