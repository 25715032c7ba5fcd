//! The testkit itself: every service resolves and really answers.

use std::time::Duration;

use jq_testkit::{TestDb, TestKafka, TestRedis};
use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};

#[tokio::test]
async fn nfr_022_each_test_gets_its_own_migrated_database() {
    let a = TestDb::new().await;
    let b = TestDb::new().await;
    assert_ne!(a.name, b.name);
    // Migrated: the default queue is there (FR-027), in each.
    for db in [&a, &b] {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM queues WHERE name = 'default'")
            .fetch_one(db.pool())
            .await
            .unwrap();
        assert_eq!(n, 1);
    }
    // Isolated: a row in one is not in the other.
    sqlx::query("INSERT INTO queues (name) VALUES ('only-in-a')")
        .execute(a.pool())
        .await
        .unwrap();
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM queues WHERE name = 'only-in-a'")
        .fetch_one(b.pool())
        .await
        .unwrap();
    assert_eq!(n, 0);
    assert!(a.store().migrations_current().await.unwrap());
}

#[tokio::test]
async fn nfr_022_dropped_test_database_is_removed() {
    let db = TestDb::new().await;
    let name = db.name.clone();
    let admin = jq_testkit::postgres::server().await.admin_url.clone();
    drop(db);
    let mut c = <sqlx::PgConnection as sqlx::Connection>::connect(&admin)
        .await
        .unwrap();
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(&name)
        .fetch_one(&mut c)
        .await
        .unwrap();
    assert!(!exists, "{name} should be dropped");
}

#[tokio::test]
async fn nfr_022_redis_answers_with_a_private_prefix() {
    let a = TestRedis::new().await;
    let b = TestRedis::new().await;
    assert!(a.ping(), "redis at {} does not answer", a.url);
    assert_ne!(a.prefix, b.prefix);
    assert!(a.prefix.starts_with("jqtest:") && a.prefix.ends_with(':'));
}

#[tokio::test]
async fn nfr_022_kafka_broker_round_trips_a_message() {
    let k = TestKafka::new();
    let topic = format!("{}roundtrip", k.topic_prefix);
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &k.brokers)
        .set("message.timeout.ms", "10000")
        .create()
        .unwrap();
    producer
        .send(
            FutureRecord::to(&topic).key("job-1").payload("hello"),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &k.brokers)
        .set("group.id", format!("{}g", k.topic_prefix))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[&topic]).unwrap();
    let msg = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(msg.key(), Some(&b"job-1"[..]));
    assert_eq!(msg.payload(), Some(&b"hello"[..]));
}
