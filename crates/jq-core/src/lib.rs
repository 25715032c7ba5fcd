//! # jq-core
//!
//! The pure domain of jq: no I/O, no async, no database. Everything here is
//! decided from its inputs alone, so it is unit- and property-tested in
//! isolation and every other crate defers to it.
//!
//! # Layout
//! - [`lifecycle`]: job states and the single [`transition`] function (SPEC §3).
//! - [`backoff`]: retry delays (FR-033).
//! - [`ordering`]: dispatch order (FR-014).
//! - [`submit`]: validation of submissions and queue settings (§2, §6).
//! - [`events`]: topic of each transition (§9).
//! - [`input`]: hostile-input checks, bounded echoes, storable job text (JQ-105).
//! - [`page`]: list cursors (FR-032).
//! - [`records`]: plain data of stored jobs, queues, workers, events.
//! - [`weights`]: priority bands, worker queue weights and their round-robin
//!   (FR-025, JQ-123).
//! - [`cron`]: periodic schedules' patterns, zones and occurrences (JQ-124).
//! - `testing` (feature): the reference model shared by the model tests.

pub mod backoff;
pub mod cron;
pub mod error;
pub mod events;
pub mod input;
pub mod lifecycle;
pub mod ordering;
pub mod page;
pub mod records;
pub mod status;
pub mod submit;
#[cfg(feature = "testing")]
pub mod testing;
pub mod weights;

pub use backoff::BackoffPolicy;
pub use error::{ParseError, ValidationError};
pub use lifecycle::{
    Command, Context, Decision, Effects, JobState, LastReport, Outcome, Reason, ReportKind, Step,
    TransitionError, is_allowed, transition,
};
pub use ordering::DispatchKey;
pub use page::PageToken;
pub use status::{JobStatus, WorkerStatus};
pub use submit::{JobRequest, NewJob, QueueSettings, Schedule};
