//! In-process handlers: compiled-in Rust code a job can name instead of a
//! subprocess, for work that needs no isolation and must be cheap (the
//! `noop` handler is what benchmarks measure).
//!
//! A payload `{"handler": "echo", "input": {...}}` runs the handler named
//! `echo` with `input`; any other payload is a subprocess spec
//! ([`crate::executor`]). Build a worker with your own handlers:
//!
//! ```no_run
//! use jq_worker::handler::{HandlerError, Handlers, JobContext};
//!
//! let handlers = Handlers::builtin().with("resize", |job: JobContext| async move {
//!     let width = job.input["width"].as_u64().ok_or_else(|| HandlerError::permanent("width is required"))?;
//!     Ok(format!("{{\"resized_to\":{width}}}").into_bytes())
//! });
//! ```

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::watch;

/// What a handler sees of its job.
#[derive(Debug, Clone)]
pub struct JobContext {
    pub job_id: String,
    pub queue: String,
    /// Fencing token of this attempt (JQ-110).
    pub attempt: u32,
    /// Retries used before this attempt.
    pub retries: u32,
    /// The payload's `input` (JSON null when absent).
    pub input: serde_json::Value,
    /// The whole payload as submitted.
    pub payload: Vec<u8>,
    /// The occurrence a periodic schedule submitted it for (JQ-124).
    pub scheduled_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Flips to true when the attempt is cancelled or abandoned. A handler
    /// that never looks is simply dropped at its next await point.
    pub cancelled: watch::Receiver<bool>,
}

/// A failed attempt.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct HandlerError {
    pub message: String,
    /// False: retrying cannot help; the job is dead-lettered at once.
    pub retryable: bool,
}

impl HandlerError {
    /// A failure worth retrying (with backoff, up to max_retries).
    pub fn retryable(message: impl Into<String>) -> HandlerError {
        HandlerError {
            message: message.into(),
            retryable: true,
        }
    }

    /// A failure no retry will fix (bad input).
    pub fn permanent(message: impl Into<String>) -> HandlerError {
        HandlerError {
            message: message.into(),
            retryable: false,
        }
    }
}

pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<Vec<u8>, HandlerError>> + Send>>;

/// An in-process job handler. Implemented for every
/// `Fn(JobContext) -> impl Future<Output = Result<Vec<u8>, HandlerError>>`.
pub trait Handler: Send + Sync + 'static {
    /// Run one attempt; `Ok` carries the result payload (may be empty).
    fn call(&self, job: JobContext) -> HandlerFuture;
}

impl<F, Fut> Handler for F
where
    F: Fn(JobContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Vec<u8>, HandlerError>> + Send + 'static,
{
    fn call(&self, job: JobContext) -> HandlerFuture {
        Box::pin(self(job))
    }
}

/// Handlers by name.
#[derive(Clone, Default)]
pub struct Handlers {
    by_name: BTreeMap<String, Arc<dyn Handler>>,
}

impl std::fmt::Debug for Handlers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.by_name.keys()).finish()
    }
}

impl Handlers {
    /// No handlers: every job is a subprocess.
    pub fn empty() -> Handlers {
        Handlers::default()
    }

    /// The stock set: `noop` (returns nothing at once) and `echo` (returns
    /// its input as JSON).
    pub fn builtin() -> Handlers {
        Handlers::empty()
            .with("noop", |_job: JobContext| async { Ok(Vec::new()) })
            .with("echo", |job: JobContext| async move {
                Ok(serde_json::to_vec(&job.input).expect("a JSON value serializes"))
            })
    }

    /// Add (or replace) the handler called `name`.
    pub fn with(mut self, name: &str, h: impl Handler) -> Handlers {
        self.by_name.insert(name.to_string(), Arc::new(h));
        self
    }

    pub fn get(&self, name: &str) -> Option<Arc<dyn Handler>> {
        self.by_name.get(name).cloned()
    }

    pub fn names(&self) -> Vec<&str> {
        self.by_name.keys().map(String::as_str).collect()
    }
}
