//! # jq-worker
//!
//! The data plane. This first part is the safe subprocess executor
//! (JQ-130); the stream client, heartbeats, handlers and the binary follow
//! (issue 4).
//!
//! # Layout
//! - [`executor`]: payload parsing and safe subprocess execution.

pub mod executor;
