//! The outbox relay (SPEC §9, JQ-160): publishes outbox events to Kafka as
//! protobuf messages (events.proto), key = job id (worker id for worker
//! events) so one job's events keep their order within a topic.
//!
//! - Exactly one relay in the cluster publishes at a time (the store's
//!   `RelayLease`, an advisory lock); others wait to take over.
//! - Events are enqueued in order on an idempotent producer and marked
//!   sent only after the broker acknowledged them: an `event_outbox` row
//!   when it and every row before it were acknowledged, a window of
//!   `job_events` (the relay's position moves) when all of it was (ADR
//!   0012, 0020). Nothing is skipped and one job's events keep their
//!   order; a committed event does not wait for other transactions on the
//!   PostgreSQL server, however long they stay open (JQ-161).
//! - Kafka down: jobs keep flowing (the relay is off the critical path),
//!   errors are counted per topic, the backlog is exported, and everything
//!   is delivered, in order, when Kafka returns (FR-038). At-least-once:
//!   consumers de-duplicate on `event_id`.

use std::sync::Arc;
use std::time::Duration;

use jq_core::records::{EventBody, OutboxEvent};
use jq_proto::v1;
use jq_proto::{job_status_to_proto, timestamp, worker_status_to_proto};
use prost::Message;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use tokio_util::sync::CancellationToken;

use crate::Shared;

const BATCH: u32 = 500;
/// The widest window of job events read at once.
const MAX_WINDOW: u32 = 64 * BATCH;
/// How long the relay waits when there is nothing to publish.
const IDLE: Duration = Duration::from_millis(200);

/// librdkafka settings shared by producer, admin and consumers.
pub fn client_config(k: &jq_config::server::Kafka) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &k.brokers)
        .set("security.protocol", &k.security_protocol);
    if k.security_protocol.starts_with("sasl") {
        c.set("sasl.mechanisms", &k.sasl_mechanism)
            .set("sasl.username", &k.sasl_username)
            .set("sasl.password", &k.sasl_password);
    }
    if k.security_protocol.ends_with("ssl") {
        // Without a CA file librdkafka (OpenSSL) uses the system's store;
        // the broker's name is always verified.
        c.set("ssl.endpoint.identification.algorithm", "https");
        // No CA file: the well-known system bundles (a nix image's OpenSSL
        // has no default directory of its own).
        if k.tls_ca.is_empty() {
            c.set("ssl.ca.location", "probe");
        }
        for (key, path) in [
            ("ssl.ca.location", &k.tls_ca),
            ("ssl.certificate.location", &k.tls_cert),
            ("ssl.key.location", &k.tls_key),
        ] {
            if !path.is_empty() {
                c.set(key, path);
            }
        }
    }
    c
}

/// The wire form of an outbox event.
pub fn encode(e: &OutboxEvent) -> Vec<u8> {
    match &e.body {
        EventBody::Job {
            job_id,
            queue,
            from,
            to,
            reason,
            worker_id,
            attempt,
            detail,
        } => v1::LifecycleEvent {
            event_id: e.event_id.to_string(),
            job_id: job_id.to_string(),
            queue: queue.clone(),
            from_status: from.map(|s| job_status_to_proto(s) as i32).unwrap_or(0),
            to_status: job_status_to_proto(*to) as i32,
            occurred_at: Some(timestamp(e.occurred_at)),
            worker_id: worker_id.clone().unwrap_or_default(),
            reason: reason.clone(),
            attempt: *attempt,
            detail: detail.clone().unwrap_or_default(),
        }
        .encode_to_vec(),
        EventBody::Worker {
            worker_id,
            status,
            active_jobs,
            concurrency,
        } => v1::WorkerHeartbeatEvent {
            event_id: e.event_id.to_string(),
            worker_id: worker_id.clone(),
            status: worker_status_to_proto(*status) as i32,
            active_jobs: *active_jobs,
            concurrency: *concurrency,
            occurred_at: Some(timestamp(e.occurred_at)),
        }
        .encode_to_vec(),
    }
}

/// What one relay pass ([`Relay::run_once`]) did, which says when to run
/// the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Published this many events, and more may be waiting: go again now.
    Published(usize),
    /// Nothing to publish: wait a little.
    Idle,
    /// Kafka or the database failed; nothing is lost (unmarked events are
    /// sent again): wait a second.
    Stalled,
}

pub struct Relay {
    pub shared: Arc<Shared>,
    producer: FutureProducer,
    prefix: String,
    /// How many `job_events` rows the next window reads.
    window: u32,
}

impl Relay {
    pub fn new(shared: Arc<Shared>) -> anyhow::Result<Relay> {
        let k = &shared.cfg.kafka;
        let producer: FutureProducer = client_config(k)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("message.timeout.ms", k.message_timeout_ms.to_string())
            .set("linger.ms", "5")
            .create()?;
        let prefix = k.topic_prefix.clone();
        Ok(Relay {
            shared,
            producer,
            prefix,
            window: BATCH,
        })
    }

    /// Create missing topics (many brokers do not auto-create them).
    pub async fn ensure_topics(&self) {
        let k = &self.shared.cfg.kafka;
        let admin: AdminClient<DefaultClientContext> = match client_config(k).create() {
            Ok(a) => a,
            Err(e) => return tracing::warn!(error = %e, "kafka admin client"),
        };
        let names: Vec<String> = jq_core::events::ALL_TOPICS
            .iter()
            .map(|t| format!("{}{t}", self.prefix))
            .collect();
        let topics: Vec<NewTopic> = names
            .iter()
            .map(|n| {
                NewTopic::new(
                    n,
                    k.partitions as i32,
                    TopicReplication::Fixed(k.replication_factor as i32),
                )
            })
            .collect();
        let opts = AdminOptions::new()
            .operation_timeout(Some(Duration::from_secs(5)))
            .request_timeout(Some(Duration::from_secs(5)));
        tracing::info!(topics = names.len(), "ensuring kafka topics exist");
        // Bounded: a broker that never answers must not hold up the relay.
        let res = tokio::time::timeout(Duration::from_secs(10), admin.create_topics(&topics, &opts)).await;
        let Ok(res) = res else {
            return tracing::warn!("kafka topic creation timed out; relying on broker auto-creation");
        };
        match res {
            Ok(results) => {
                for r in results {
                    match r {
                        Ok(t) => tracing::info!(topic = %t, "kafka topic created"),
                        Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                        Err((t, code)) => tracing::warn!(topic = %t, ?code, "cannot create kafka topic"),
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot create kafka topics; relying on broker auto-creation")
            }
        }
    }

    /// Publish `batch` in order; returns the ids of the acknowledged prefix.
    pub async fn publish(&self, batch: &[OutboxEvent]) -> Vec<i64> {
        let mut pending = Vec::with_capacity(batch.len());
        for e in batch {
            let topic = format!("{}{}", self.prefix, e.topic);
            let payload = encode(e);
            let record = FutureRecord::to(&topic).key(&e.key).payload(&payload);
            match self.producer.send_result(record) {
                Ok(f) => pending.push((e, topic, f)),
                Err((err, _)) => {
                    self.shared
                        .metrics
                        .kafka_publish_errors
                        .with_label_values(&[&e.topic])
                        .inc();
                    tracing::warn!(topic = %topic, error = %err, "cannot enqueue event");
                    break;
                }
            }
        }
        let mut acked = vec![];
        let mut broken = false;
        for (e, topic, f) in pending {
            // Await every enqueued delivery, but only a gap-free prefix counts.
            let ok = matches!(f.await, Ok(Ok(_)));
            if !ok {
                self.shared
                    .metrics
                    .kafka_publish_errors
                    .with_label_values(&[&e.topic])
                    .inc();
                if !broken {
                    tracing::warn!(topic = %topic, event_id = %e.event_id, "kafka did not acknowledge an event; will retry");
                }
                broken = true;
            }
            if ok && !broken {
                acked.push(e.id);
            }
        }
        acked
    }

    /// Publish until `shutdown`, whenever this server holds the relay
    /// lease (one relay across replicas).
    pub async fn run(mut self, shutdown: CancellationToken) {
        if self.shared.cfg.kafka.create_topics {
            self.ensure_topics().await;
        }
        let pause = |d: Duration| {
            let shutdown = shutdown.clone();
            async move {
                tokio::select! {
                    _ = tokio::time::sleep(d) => false,
                    _ = shutdown.cancelled() => true,
                }
            }
        };
        'lease: while !shutdown.is_cancelled() {
            let mut lease = match self.shared.store.try_relay_lease().await {
                Ok(Some(l)) => l,
                Ok(None) | Err(_) => {
                    pause(Duration::from_secs(2)).await;
                    continue;
                }
            };
            tracing::info!("this server is the outbox relay");
            while !shutdown.is_cancelled() {
                if !lease.alive().await {
                    tracing::warn!("lost the relay lease; trying to take it again");
                    continue 'lease;
                }
                let wait = match self.run_once().await {
                    Progress::Published(_) => continue,
                    Progress::Idle => IDLE,
                    Progress::Stalled => Duration::from_secs(1),
                };
                if pause(wait).await {
                    break 'lease;
                }
            }
        }
        tracing::info!("outbox relay stopped");
    }

    /// One pass, under the lease: first `event_outbox` (worker events,
    /// events from before schema v4 and deleted jobs' events), then the
    /// committed `job_events` not yet published (ADR 0020).
    pub async fn run_once(&mut self) -> Progress {
        let s = self.shared.clone();
        let batch = match s.store.outbox_unsent(BATCH).await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the outbox");
                return Progress::Stalled;
            }
        };
        if !batch.is_empty() {
            let acked = self.publish(&batch).await;
            if let Err(e) = s.store.outbox_mark_sent(&acked).await {
                tracing::warn!(error = %e, "cannot mark events sent; they will be sent again");
            }
            if acked.len() < batch.len() {
                return Progress::Stalled;
            }
            if batch.len() == BATCH as usize {
                // Older events first: drain the outbox.
                return Progress::Published(acked.len());
            }
        }
        let window = match s.store.job_events_window(self.window).await {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read job events");
                return Progress::Stalled;
            }
        };
        if window.held {
            // Held back: widen the window until the earlier event of the
            // same job falls inside it; past the widest, read all that
            // has committed (nothing beyond it can hold an event back).
            self.window = match self.window {
                MAX_WINDOW.. => u32::MAX,
                w => (w * 2).min(MAX_WINDOW),
            };
            return if batch.is_empty() {
                Progress::Idle
            } else {
                Progress::Published(batch.len())
            };
        }
        self.window = BATCH;
        // Nothing read: the position stays. (Read, but no events: the
        // window held only the history of jobs pruned while Kafka was
        // off, and the position steps over it.)
        let Some(next) = window.next else {
            return if batch.is_empty() {
                Progress::Idle
            } else {
                Progress::Published(batch.len())
            };
        };
        let acked = self.publish(&window.events).await;
        if acked.len() < window.events.len() {
            return Progress::Stalled;
        }
        if let Err(e) = s.store.job_events_published(&next).await {
            tracing::warn!(error = %e, "cannot move the relay cursor; events will be sent again");
        }
        Progress::Published(batch.len() + acked.len())
    }
}

/// A decoded event, as `events_tail` prints it.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    Job(v1::LifecycleEvent),
    Worker(v1::WorkerHeartbeatEvent),
}

/// Decode a message from topic `logical` (prefix stripped).
pub fn decode(logical: &str, bytes: &[u8]) -> Result<Decoded, prost::DecodeError> {
    if logical == jq_core::events::TOPIC_WORKER_HEARTBEAT {
        v1::WorkerHeartbeatEvent::decode(bytes).map(Decoded::Worker)
    } else {
        v1::LifecycleEvent::decode(bytes).map(Decoded::Job)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use jq_core::JobStatus;
    use uuid::Uuid;

    #[test]
    fn jq_172_kafka_security_settings_reach_the_client() {
        let k = jq_config::server::Kafka {
            brokers: "b-1.msk:9096".into(),
            security_protocol: "sasl_ssl".into(),
            sasl_mechanism: "SCRAM-SHA-512".into(),
            sasl_username: "jq".into(),
            sasl_password: "pw".into(),
            tls_ca: "/etc/jq/msk-ca.pem".into(),
            ..Default::default()
        };
        let c = client_config(&k);
        for (key, want) in [
            ("security.protocol", "sasl_ssl"),
            ("sasl.mechanisms", "SCRAM-SHA-512"),
            ("sasl.username", "jq"),
            ("sasl.password", "pw"),
            ("ssl.ca.location", "/etc/jq/msk-ca.pem"),
            ("ssl.endpoint.identification.algorithm", "https"),
        ] {
            assert_eq!(c.get(key), Some(want), "{key}");
        }
        // librdkafka accepts them: it was built with TLS and SCRAM.
        c.create_native_config().expect("librdkafka takes every setting");
        let plain = client_config(&jq_config::server::Kafka::default());
        assert_eq!(plain.get("ssl.ca.location"), None);
        assert_eq!(plain.get("sasl.password"), None);
        let ssl = client_config(&jq_config::server::Kafka {
            security_protocol: "ssl".into(),
            ..Default::default()
        });
        assert_eq!(ssl.get("ssl.ca.location"), Some("probe"));
    }

    #[test]
    fn jq_172_librdkafka_is_built_with_tls_and_sasl_scram() {
        let native = ClientConfig::new().create_native_config().unwrap();
        let features = native.get("builtin.features").unwrap();
        for f in ["ssl", "sasl_plain", "sasl_scram"] {
            assert!(features.split(',').any(|x| x == f), "{f} missing from {features}");
        }
    }

    #[test]
    fn fr_036_fr_037_outbox_event_round_trips_through_protobuf() {
        let e = OutboxEvent {
            id: 7,
            event_id: Uuid::new_v4(),
            topic: "job.completed".into(),
            key: "k".into(),
            occurred_at: Utc::now(),
            body: EventBody::Job {
                job_id: Uuid::new_v4(),
                queue: "default".into(),
                from: Some(JobStatus::Running),
                to: JobStatus::Done,
                reason: "COMPLETED".into(),
                worker_id: Some("w1".into()),
                attempt: 2,
                detail: None,
            },
        };
        let Decoded::Job(m) = decode("job.completed", &encode(&e)).unwrap() else {
            panic!()
        };
        assert_eq!(m.event_id, e.event_id.to_string());
        assert_eq!(m.job_id, e.job_id().unwrap().to_string());
        assert_eq!(
            (m.from_status, m.to_status),
            (v1::JobStatus::Running as i32, v1::JobStatus::Done as i32)
        );
        assert_eq!(
            (m.reason.as_str(), m.worker_id.as_str(), m.attempt),
            ("COMPLETED", "w1", 2)
        );
    }
}
