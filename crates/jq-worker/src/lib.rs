//! # jq-worker
//!
//! The data plane (SPEC §5): registers with jq-server, receives
//! assignments on a server stream, runs each as a safe subprocess (JQ-130)
//! or an in-process [`handler::Handler`], reports results fenced by their
//! attempt (JQ-110), heartbeats its leases, honours drain, shutdown and
//! cancel, and reconnects by itself. `main.rs` only parses flags and waits
//! for a signal; a custom worker binary calls [`start`] with its own
//! [`Handlers`].
//!
//! # Layout
//! - [`worker`]: the connection loop, heartbeats, slots, graceful stop.
//! - [`job`]: one attempt: payload routing, timeout, stop, report shape.
//! - [`handler`]: the public handler trait and the stock `noop`/`echo`.
//! - [`executor`]: payload parsing and safe subprocess execution.
//! - `wire`: the protobuf edge; inside it, only `jq-core` types.
//! - `calls`: acks and results sent in batches (`AckJobs`, `ReportResults`).

mod calls;
pub mod executor;
pub mod handler;
pub mod job;
mod wire;
pub mod worker;

pub use handler::{Handler, HandlerError, Handlers, JobContext};
pub use worker::{RunningWorker, VERSION, WorkerError, default_worker_id, start};
