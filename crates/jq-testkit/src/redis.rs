//! Redis for tests: one server per process, one key prefix per test.

use std::io::{Read, Write};
use std::time::Duration;

use tokio::sync::OnceCell;

use crate::Source;

#[derive(Debug, Clone)]
pub struct RedisServer {
    pub url: String,
    pub source: Source,
}

static SERVER: OnceCell<RedisServer> = OnceCell::const_new();
static CONTAINER: OnceCell<crate::docker::Running> = OnceCell::const_new();

const HOW_TO_FIX: &str = "no Redis for tests: set JQ_TEST_REDIS_URL=redis://host:port, start a Docker daemon, \
     or install redis-server (Debian: apt-get install redis-server)";

pub async fn server() -> &'static RedisServer {
    SERVER
        .get_or_init(|| async {
            let s = resolve().await.unwrap_or_else(|e| panic!("jq-testkit: {e}"));
            eprintln!("jq-testkit: Redis from {}", s.source);
            s
        })
        .await
}

async fn resolve() -> Result<RedisServer, String> {
    if let Ok(url) = std::env::var("JQ_TEST_REDIS_URL")
        && !url.trim().is_empty()
    {
        return Ok(RedisServer {
            url,
            source: Source::Env,
        });
    }
    if crate::docker::daemon_answers() {
        let c = CONTAINER
            .get_or_try_init(crate::docker::redis)
            .await
            .map_err(|e| format!("Docker answers but the Redis container failed: {e}"))?;
        return Ok(RedisServer {
            url: format!("redis://127.0.0.1:{}", c.port),
            source: Source::Container,
        });
    }
    match tokio::task::spawn_blocking(crate::local::redis)
        .await
        .map_err(|e| e.to_string())??
    {
        Some(port) => Ok(RedisServer {
            url: format!("redis://127.0.0.1:{port}"),
            source: Source::LocalBinary,
        }),
        None => Err(HOW_TO_FIX.to_string()),
    }
}

/// A Redis server and a key prefix of this test's own.
#[derive(Debug, Clone)]
pub struct TestRedis {
    pub url: String,
    /// e.g. `jqtest:1a2b…:`; pass as `redis.key_prefix`.
    pub prefix: String,
}

impl TestRedis {
    pub async fn new() -> TestRedis {
        let s = server().await;
        TestRedis {
            url: s.url.clone(),
            prefix: format!("jqtest:{}:", crate::unique()),
        }
    }

    /// host:port of the server.
    pub fn addr(&self) -> String {
        let rest = self.url.split("://").nth(1).unwrap_or(&self.url);
        rest.rsplit('@')
            .next()
            .unwrap_or(rest)
            .trim_end_matches('/')
            .to_string()
    }

    /// True when the server answers PING (plain TCP, no client needed).
    pub fn ping(&self) -> bool {
        let Ok(mut s) = std::net::TcpStream::connect(self.addr()) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        if s.write_all(b"PING\r\n").is_err() {
            return false;
        }
        let mut buf = [0u8; 16];
        let n = s.read(&mut buf).unwrap_or(0);
        // "+PONG" or "-NOAUTH" both prove a Redis is there.
        n > 0 && (buf.starts_with(b"+PONG") || buf.starts_with(b"-NOAUTH"))
    }
}
