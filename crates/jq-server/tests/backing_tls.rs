//! JQ-172: TLS to PostgreSQL, Redis and Kafka, against real TLS endpoints
//! on this machine with certificates the test makes (jq_testkit::pki): a
//! PostgreSQL cluster that accepts TLS only, `redis-server --tls-port`, and
//! librdkafka's mock cluster behind a TLS-terminating proxy. A wrong CA or
//! host name is a clear configuration error, and `--dry-run` says so.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use jq_config::ServerConfig;
use jq_proto::v1;
use jq_server::dry_run::{self, Check};
use jq_testkit::kafka::TlsKafka;
use jq_testkit::pki::Pki;
use jq_testkit::private::{PrivatePostgres, PrivateRedis};
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use uuid::Uuid;

fn base(url: String) -> ServerConfig {
    let mut c = ServerConfig::default();
    c.db.url = url;
    c.server.bind = "127.0.0.1".into();
    c.server.grpc_port = 0;
    c.server.health_port = 0;
    c.server.metrics_port = 0;
    c.redis.url = String::new();
    c
}

fn tls_postgres(pki: &Pki) -> PrivatePostgres {
    let pg = PrivatePostgres::start_tls(&pki.path("server.pem"), &pki.path("server.key"))
        .unwrap_or_else(|e| panic!("PostgreSQL with TLS: {e}"));
    pg.create_db("jq").unwrap();
    pg
}

#[tokio::test]
async fn jq_172_postgres_verify_full_with_the_ca_serves_and_a_wrong_ca_or_host_is_a_clear_error() {
    let pki = Pki::new(&["localhost"]);
    let pg = tls_postgres(&pki);
    let url = |host: &str, mode: &str| format!("postgres://postgres@{host}:{}/jq?sslmode={mode}", pg.port);

    // verify-full against the test's CA: the server starts and serves.
    let mut cfg = base(url("localhost", "verify-full"));
    cfg.db.tls_ca = pki.file("ca.pem");
    match dry_run::check_postgres(&cfg).await {
        Check::Ok(d) => assert!(d.contains("sslmode verify-full"), "{d}"),
        other => panic!("{other:?}"),
    }
    let server = jq_server::start(cfg).await.expect("starts over verify-full");
    let ch = channel(server.grpc_addr).await;
    let mut jobs = v1::job_service_client::JobServiceClient::new(ch);
    let id = jobs
        .submit_job(v1::SubmitJobRequest {
            job: Some(spec("default", "{}")),
        })
        .await
        .expect("a submit over TLS")
        .into_inner()
        .job_id;
    let got = jobs
        .get_job(v1::GetJobRequest { job_id: id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.job.unwrap().id, id);
    server.shutdown().await;

    // A CA that did not sign the server's certificate.
    let mut cfg = base(url("localhost", "verify-full"));
    cfg.db.tls_ca = pki.file("other-ca.pem");
    let e = jq_server::start(cfg.clone())
        .await
        .err()
        .expect("refuses to start")
        .to_string();
    assert!(
        e.contains("TLS to PostgreSQL failed") && e.contains("not retried"),
        "{e}"
    );
    assert!(
        e.to_lowercase().contains("certificate") || e.contains("UnknownIssuer"),
        "{e}"
    );
    match dry_run::check_postgres(&cfg).await {
        Check::Failed(d) => assert!(d.contains("TLS to PostgreSQL failed"), "{d}"),
        other => panic!("{other:?}"),
    }

    // The right CA, but a host name the certificate does not name.
    let mut cfg = base(url("127.0.0.1", "verify-full"));
    cfg.db.tls_ca = pki.file("ca.pem");
    let e = jq_server::start(cfg.clone())
        .await
        .err()
        .expect("refuses to start")
        .to_string();
    assert!(e.contains("TLS to PostgreSQL failed"), "{e}");
    assert!(
        e.contains("NotValidForName") || e.to_lowercase().contains("name"),
        "{e}"
    );

    // verify-ca checks the CA only: the same host then passes.
    // (verify-ca with this host would pass in libpq; sqlx 0.8.6 on rustls
    // 0.23.4x still checks the name, so it is as strict as verify-full:
    // ADR 0014.)
    cfg.db.url = url("localhost", "verify-ca");
    let c = dry_run::check_postgres(&cfg).await;
    assert!(matches!(c, Check::Ok(_)), "{c:?}");

    // require encrypts without verifying (libpq's meaning).
    let cfg = base(url("127.0.0.1", "require"));
    assert!(matches!(dry_run::check_postgres(&cfg).await, Check::Ok(_)));
}

#[tokio::test]
async fn jq_172_redis_over_tls_holds_the_dispatch_locks_and_a_wrong_ca_fails_clearly() {
    let pki = Pki::new(&["localhost"]);
    let redis = PrivateRedis::start_tls(&pki).unwrap();
    let mut rc = jq_config::server::Redis {
        url: redis.tls_url(),
        tls_ca: pki.file("ca.pem"),
        key_prefix: format!("jqtls-{}:", Uuid::new_v4().simple()),
        ..Default::default()
    };
    match dry_run::check_redis(&rc).await {
        Check::Ok(d) => assert!(d.contains("over TLS"), "{d}"),
        other => panic!("{other:?}"),
    }
    let metrics = Arc::new(jq_telemetry::ServerMetrics::new());
    let a = jq_server::locks::Locks::new(&rc, Duration::from_secs(30), metrics.clone()).unwrap();
    let b = jq_server::locks::Locks::new(&rc, Duration::from_secs(30), metrics.clone()).unwrap();
    let job = Uuid::new_v4();
    assert_eq!(a.acquire(&[job]).await, vec![true]);
    // The second guard works across servers: the lock is in Redis, over TLS.
    assert_eq!(b.acquire(&[job]).await, vec![false]);
    a.release(job).await;
    assert_eq!(b.acquire(&[job]).await, vec![true]);
    assert_eq!(metrics.redis_degraded.get(), 0, "never degraded");
    let mut conn = jq_server::locks::client(&rc)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let owner: String = redis::cmd("GET")
        .arg(b.key(job))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(owner, b.owner());

    rc.tls_ca = pki.file("other-ca.pem");
    match dry_run::check_redis(&rc).await {
        Check::Failed(d) => assert!(
            d.contains("over TLS") && d.to_lowercase().contains("certificate"),
            "{d}"
        ),
        other => panic!("{other:?}"),
    }
    // The plaintext scheme against a TLS-only port is refused too.
    rc.url = rc.url.replace("rediss://", "redis://");
    rc.tls_ca.clear();
    assert!(dry_run::check_redis(&rc).await.failed());
}

fn kafka_tls(cfg: &mut ServerConfig, k: &TlsKafka, ca: String) {
    cfg.kafka.brokers = k.brokers.clone();
    cfg.kafka.topic_prefix = format!("tls{}.", Uuid::new_v4().simple());
    cfg.kafka.security_protocol = "ssl".into();
    cfg.kafka.tls_ca = ca;
    cfg.kafka.partitions = 1;
    cfg.kafka.message_timeout_ms = 3000;
    // The mock cluster creates topics on first produce (no CreateTopics).
    cfg.kafka.create_topics = false;
}

#[tokio::test]
async fn jq_172_kafka_over_tls_delivers_events_end_to_end_and_a_wrong_ca_fails_clearly() {
    let pki = Pki::new(&["localhost"]);
    let k = TlsKafka::start(pki.rustls_server());
    let db = jq_testkit::TestDb::new().await;
    let mut cfg = config(&db);
    kafka_tls(&mut cfg, &k, pki.file("ca.pem"));
    match dry_run::check_kafka(&cfg).await {
        Check::Ok(d) => assert!(d.contains("security ssl"), "{d}"),
        other => panic!("{other:?}"),
    }
    let mut env = start_with(db, cfg.clone()).await;
    let id = env.submit(spec("default", "{}")).await;
    // The relay had it acknowledged by the broker, over TLS.
    let mut drained = false;
    for _ in 0..150 {
        let unsent: i64 = sqlx::query_scalar(
            "SELECT (SELECT count(*) FROM event_outbox WHERE sent_at IS NULL) \
                  + (SELECT count(*) FROM job_events e WHERE e.txid >= (SELECT greatest(high, published_below) FROM relay_cursor) OR e.txid = ANY ((SELECT pending FROM relay_cursor)::bigint[]))",
        )
        .fetch_one(env.db.pool())
        .await
        .unwrap();
        if unsent == 0 {
            drained = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(drained, "the relay never got its events acknowledged over TLS");
    // Read it back over TLS, as a consumer of MSK would.
    let mut cc = jq_server::relay::client_config(&cfg.kafka);
    cc.set("group.id", format!("{}t", cfg.kafka.topic_prefix))
        .set("enable.auto.commit", "false");
    let consumer: StreamConsumer = cc.create().unwrap();
    let topic = format!("{}job.submitted", cfg.kafka.topic_prefix);
    let mut got = None;
    // Every partition of the topic (the mock cluster makes several): the
    // event's key (its job id) chose one.
    let md = consumer
        .fetch_metadata(Some(&topic), Duration::from_secs(10))
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in md
        .topics()
        .iter()
        .filter(|t| t.name() == topic)
        .flat_map(|t| t.partitions())
    {
        tpl.add_partition_offset(&topic, p.id(), rdkafka::Offset::Beginning)
            .unwrap();
    }
    assert!(tpl.count() > 0, "the relay created {topic}");
    consumer.assign(&tpl).unwrap();
    while got.is_none() {
        let m = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
            .await
            .expect("the event arrives over TLS")
            .unwrap();
        if let jq_server::relay::Decoded::Job(e) =
            jq_server::relay::decode("job.submitted", m.payload().unwrap()).unwrap()
            && e.job_id == id
        {
            got = Some(e);
        }
    }
    assert_eq!(got.unwrap().to_status, v1::JobStatus::Pending as i32);
    env.server.shutdown().await;

    let mut wrong = cfg.clone();
    wrong.kafka.tls_ca = pki.file("other-ca.pem");
    match dry_run::check_kafka(&wrong).await {
        Check::Failed(d) => assert!(d.contains("TLS failed (ssl)"), "{d}"),
        other => panic!("{other:?}"),
    }
    // SASL over TLS: the mock cluster has no SASL, so the handshake is
    // refused — reported as an authentication failure, not a timeout.
    let mut sasl = cfg.clone();
    sasl.kafka.security_protocol = "sasl_ssl".into();
    sasl.kafka.sasl_mechanism = "SCRAM-SHA-512".into();
    sasl.kafka.sasl_username = "jq".into();
    sasl.kafka.sasl_password = "s3cret-sasl".into();
    match dry_run::check_kafka(&sasl).await {
        Check::Failed(d) => {
            assert!(d.contains("authentication failed (sasl_ssl)"), "{d}");
            assert!(!d.contains("s3cret-sasl"), "{d}");
        }
        other => panic!("{other:?}"),
    }
}
