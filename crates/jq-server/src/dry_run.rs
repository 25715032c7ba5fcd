//! `jq-server --dry-run` (FR-046): validate the configuration, try every
//! configured dependency, print a summary, and say by exit code whether
//! the server could run. Configured services must answer; unconfigured
//! ones are reported as disabled.

use std::fmt::Write as _;
use std::time::Duration;

use jq_config::ServerConfig;
use jq_config::server::Redis;
use jq_store::{Store, StoreOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    Ok(String),
    Disabled(String),
    Failed(String),
}

impl Check {
    pub fn failed(&self) -> bool {
        matches!(self, Check::Failed(_))
    }
}

pub async fn check_postgres(cfg: &ServerConfig) -> Check {
    let opts = StoreOptions {
        max_connections: 2,
        acquire_timeout: Duration::from_millis(cfg.db.acquire_timeout_ms),
        password: (!cfg.db.password.is_empty()).then(|| cfg.db.password.clone()),
        ..Default::default()
    };
    let store = match Store::connect(&cfg.db.url, &opts).await {
        Ok(s) => s,
        Err(e) => return Check::Failed(e.to_string()),
    };
    let version = store.server_version().await.unwrap_or_default();
    let migrations = match store.migrations_current().await {
        Ok(true) => "migrations up to date".to_string(),
        Ok(false) => "migrations pending (applied at start)".to_string(),
        Err(_) => "no migrations applied yet (applied at start)".to_string(),
    };
    store.close().await;
    Check::Ok(format!("PostgreSQL {version}; {migrations}"))
}

/// host:port of a redis:// URL.
fn redis_addr(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let hostport = rest.rsplit('@').next()?.split('/').next()?;
    Some(if hostport.contains(':') {
        hostport.to_string()
    } else {
        format!("{hostport}:6379")
    })
}

/// RESP PING (with AUTH when a password is configured).
pub async fn check_redis(cfg: &Redis) -> Check {
    if cfg.url.is_empty() {
        return Check::Disabled("no redis.url; single-instance locking on PostgreSQL".into());
    }
    let Some(addr) = redis_addr(&cfg.url) else {
        return Check::Failed(format!("cannot parse redis.url {:?}", cfg.url));
    };
    let attempt = async {
        let mut s = tokio::net::TcpStream::connect(&addr).await?;
        if !cfg.password.is_empty() {
            let p = &cfg.password;
            s.write_all(format!("*2\r\n$4\r\nAUTH\r\n${}\r\n{p}\r\n", p.len()).as_bytes())
                .await?;
            let mut buf = [0u8; 64];
            let n = s.read(&mut buf).await?;
            if !buf[..n].starts_with(b"+OK") {
                return Ok::<_, std::io::Error>(Err("authentication failed".to_string()));
            }
        }
        s.write_all(b"*1\r\n$4\r\nPING\r\n").await?;
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).await?;
        Ok(if buf[..n].starts_with(b"+PONG") {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&buf[..n]).trim().to_string())
        })
    };
    match tokio::time::timeout(Duration::from_secs(3), attempt).await {
        Ok(Ok(Ok(()))) => Check::Ok(addr),
        Ok(Ok(Err(why))) => Check::Failed(format!("{addr}: {why}")),
        Ok(Err(e)) => Check::Failed(format!("{addr}: {e}")),
        Err(_) => Check::Failed(format!("{addr}: no answer within 3 s")),
    }
}

pub async fn check_kafka(cfg: &ServerConfig) -> Check {
    if cfg.kafka.brokers.trim().is_empty() {
        return Check::Disabled("no kafka.brokers; events stay in the outbox".into());
    }
    for b in cfg
        .kafka
        .brokers
        .split(',')
        .map(str::trim)
        .filter(|b| !b.is_empty())
    {
        if let Ok(Ok(_)) =
            tokio::time::timeout(Duration::from_secs(3), tokio::net::TcpStream::connect(b)).await
        {
            return Check::Ok(format!("broker {b} reachable"));
        }
    }
    Check::Failed(format!("no broker of {} reachable", cfg.kafka.brokers))
}

/// Run every check; returns the printable summary and whether all passed.
pub async fn run(cfg: &ServerConfig, config_source: &str) -> (String, bool) {
    let checks = [
        ("config", Check::Ok(config_source.to_string())),
        ("postgres", check_postgres(cfg).await),
        ("redis", check_redis(&cfg.redis).await),
        ("kafka", check_kafka(cfg).await),
    ];
    let mut out = format!("jq-server {} dry run\n", crate::VERSION);
    let mut ok = true;
    for (name, c) in &checks {
        let (state, detail) = match c {
            Check::Ok(d) => ("ok", d),
            Check::Disabled(d) => ("disabled", d),
            Check::Failed(d) => ("FAILED", d),
        };
        ok &= !c.failed();
        let _ = writeln!(out, "  {name:<9} {state:<9} {detail}");
    }
    let _ = writeln!(
        out,
        "  listen    grpc {}:{}  health :{}  metrics :{}",
        cfg.server.bind, cfg.server.grpc_port, cfg.server.health_port, cfg.server.metrics_port
    );
    let _ = writeln!(
        out,
        "{}",
        if ok {
            "result: ready to start"
        } else {
            "result: NOT ready (see FAILED above)"
        }
    );
    (out, ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fr_046_redis_url_parsing() {
        assert_eq!(
            redis_addr("redis://127.0.0.1:6379").as_deref(),
            Some("127.0.0.1:6379")
        );
        assert_eq!(
            redis_addr("redis://:pw@cache:7000/2").as_deref(),
            Some("cache:7000")
        );
        assert_eq!(redis_addr("redis://cache").as_deref(), Some("cache:6379"));
        assert_eq!(redis_addr("nonsense"), None);
    }
}
