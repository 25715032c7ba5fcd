//! # jq-testkit
//!
//! Test-only provisioning of the real services jq's tests talk to. Each
//! service is resolved in this order, and the first use in a process prints
//! one line saying which source it used:
//!
//! 1. an address from the environment: `JQ_TEST_DATABASE_URL`,
//!    `JQ_TEST_REDIS_URL`, `JQ_TEST_KAFKA_BROKERS` (CI, `nix develop`);
//! 2. testcontainers, when a Docker daemon answers (PostgreSQL, Redis);
//! 3. local binaries — `initdb`/`postgres`, `redis-server` — started once in
//!    a shared temp folder on a free port (as an unprivileged user when run
//!    as root, since PostgreSQL refuses root); for Kafka, librdkafka's
//!    in-process mock cluster, which speaks the real protocol on real
//!    sockets;
//! 4. otherwise a panic with one line naming what to install or set.
//!
//! Every test gets its own database cloned from a migrated template
//! ([`TestDb`]) and its own Redis key prefix ([`TestRedis`]), so tests run in
//! parallel without sharing rows or keys.
//!
//! # Layout
//! - [`postgres`]: PostgreSQL resolution, template and per-test databases.
//! - [`redis`]: Redis resolution and key prefixes.
//! - [`kafka`]: broker resolution (env or mock cluster).
//! - [`private`]: a PostgreSQL or Redis a test owns alone, to restart or
//!   wipe mid-run (fault injection).
//! - [`bins`]: the jq binaries for black-box tests.
//! - `local`, `docker`: starting local binaries / containers.

pub mod bins;
mod docker;
pub mod kafka;
mod local;
pub mod pki;
pub mod postgres;
pub mod private;
pub mod redis;

pub use jq_store::bench::HeldTransaction as OpenTransaction;
pub use kafka::TestKafka;
pub use postgres::TestDb;
pub use private::{PrivatePostgres, PrivateRedis};
pub use redis::TestRedis;

/// Where a service came from, for the one-line notice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Env,
    Container,
    LocalBinary,
    MockCluster,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Source::Env => "environment",
            Source::Container => "testcontainers",
            Source::LocalBinary => "local binaries",
            Source::MockCluster => "librdkafka mock cluster",
        })
    }
}

/// A free TCP port on 127.0.0.1 (racy by nature; callers retry on clash).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// Short random suffix for names.
pub(crate) fn unique() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..16].to_string()
}
