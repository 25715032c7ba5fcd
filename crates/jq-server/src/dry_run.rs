//! `jq-server --dry-run` (FR-046): validate the configuration, try every
//! configured dependency, print a summary, and say by exit code whether
//! the server could run. Configured services must answer; unconfigured
//! ones are reported as disabled.

use std::fmt::Write as _;
use std::time::Duration;

use jq_config::ServerConfig;
use jq_config::server::Redis;
use jq_store::{Store, StoreOptions};
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::types::RDKafkaErrorCode;

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
        ..crate::store_options(&cfg.db)
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
    Check::Ok(format!(
        "PostgreSQL {version}; {migrations}; sslmode {}",
        cfg.db.sslmode()
    ))
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

/// Connect as the dispatch locks will (same client: password, TLS) and
/// PING.
pub async fn check_redis(cfg: &Redis) -> Check {
    if cfg.url.is_empty() {
        return Check::Disabled("no redis.url; single-instance locking on PostgreSQL".into());
    }
    let Some(addr) = redis_addr(&cfg.url) else {
        return Check::Failed("cannot parse redis.url".into());
    };
    let tls = if cfg.url.starts_with("rediss://") {
        " over TLS"
    } else {
        ""
    };
    let client = match crate::locks::client(cfg) {
        Ok(c) => c,
        Err(e) => return Check::Failed(format!("{addr}: {e}")),
    };
    let attempt = async {
        let mut conn = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<String>(&mut conn).await
    };
    match tokio::time::timeout(Duration::from_secs(5), attempt).await {
        Ok(Ok(pong)) if pong == "PONG" => Check::Ok(format!("{addr}{tls}")),
        Ok(Ok(other)) => Check::Failed(format!("{addr}: PING answered {other:?}")),
        Ok(Err(e)) => Check::Failed(format!("{addr}{tls}: {e}")),
        Err(_) => Check::Failed(format!("{addr}{tls}: no answer within 5 s")),
    }
}

/// librdkafka's own account of what went wrong (TLS handshake, SASL
/// authentication), which a failed metadata request alone does not carry.
#[derive(Default)]
struct Errors(std::sync::Mutex<Vec<(rdkafka::error::KafkaError, String)>>);

impl rdkafka::ClientContext for Errors {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        self.0.lock().unwrap().push((error, reason.to_string()));
    }

    /// A failed TLS handshake or SASL exchange is logged (facility FAIL,
    /// with the reason) before, or instead of, an error callback.
    fn log(&self, level: RDKafkaLogLevel, fac: &str, msg: &str) {
        if (level as i32) <= (RDKafkaLogLevel::Warning as i32) {
            let code = if msg.contains("SASL") || msg.contains("uthenticat") {
                RDKafkaErrorCode::Authentication
            } else if msg.contains("SSL") || msg.contains("certificate") {
                RDKafkaErrorCode::SSL
            } else {
                return;
            };
            self.0
                .lock()
                .unwrap()
                .push((rdkafka::error::KafkaError::Global(code), format!("{fac}: {msg}")));
        }
    }
}

impl rdkafka::producer::ProducerContext for Errors {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &rdkafka::message::DeliveryResult<'_>, _: ()) {}
}

/// Fetch cluster metadata with the configured security settings.
pub async fn check_kafka(cfg: &ServerConfig) -> Check {
    let k = &cfg.kafka;
    if k.brokers.trim().is_empty() {
        return Check::Disabled("no kafka.brokers; events stay in the outbox".into());
    }
    let mut c = crate::relay::client_config(k);
    c.set("socket.timeout.ms", "5000")
        .set_log_level(RDKafkaLogLevel::Warning);
    // A producer, because its poll delivers librdkafka's logs and errors
    // (they go to its main queue).
    let producer: rdkafka::producer::BaseProducer<Errors> = match c.create_with_context(Errors::default()) {
        Ok(p) => p,
        Err(e) => return Check::Failed(format!("kafka settings refused: {e}")),
    };
    let fetched = tokio::task::spawn_blocking(move || {
        use rdkafka::producer::Producer;
        let md = producer.client().fetch_metadata(None, Duration::from_secs(5));
        producer.poll(Duration::from_millis(100));
        let errors = std::mem::take(&mut *producer.context().0.lock().unwrap());
        (md.map(|m| m.brokers().len()), errors)
    })
    .await;
    let (md, errors) = match fetched {
        Ok(r) => r,
        Err(e) => return Check::Failed(format!("metadata request did not finish: {e}")),
    };
    let proto = &k.security_protocol;
    match md {
        Ok(n) => Check::Ok(format!("{n} broker(s), security {proto}")),
        Err(e) => {
            let auth = errors.iter().find(|(e, _)| {
                matches!(
                    e.rdkafka_error_code(),
                    Some(RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SaslAuthenticationFailed)
                )
            });
            let tls = errors
                .iter()
                .find(|(e, _)| matches!(e.rdkafka_error_code(), Some(RDKafkaErrorCode::SSL)));
            match (auth, tls, errors.last()) {
                (Some((_, why)), _, _) => Check::Failed(format!("authentication failed ({proto}): {why}")),
                (None, Some((_, why)), _) => Check::Failed(format!("TLS failed ({proto}): {why}")),
                (None, None, Some((_, why))) => Check::Failed(format!("{e}: {why}")),
                (None, None, None) => Check::Failed(format!("{e} (brokers {})", k.brokers)),
            }
        }
    }
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
