//! # jq-telemetry
//!
//! What jq binaries expose about themselves: JSON logs (FR-041), the
//! Prometheus metrics of FR-040 with their exact names, and the `/healthz`,
//! `/readyz` (NFR-013) and `/metrics` (FR-039) HTTP endpoints. No business
//! rules live here.
//!
//! # Layout
//! - [`logging`]: tracing setup and the flat JSON line format.
//! - [`metrics`]: [`ServerMetrics`] and [`WorkerMetrics`] registries.
//! - [`http`]: health and metrics routers and a server with graceful stop.

pub mod http;
pub mod logging;
pub mod metrics;

pub use metrics::{ServerMetrics, WorkerMetrics};
