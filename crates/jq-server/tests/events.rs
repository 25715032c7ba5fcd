//! SPEC §9 against a Kafka-protocol broker (librdkafka mock cluster, or
//! JQ_TEST_KAFKA_BROKERS): every transition published exactly once,
//! decodable; broker outages stall nothing and lose nothing; two relaying
//! servers leave no gaps.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::*;
use jq_proto::v1;
use jq_server::relay::{Decoded, decode};
use jq_testkit::{TestDb, TestKafka};
use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{Offset, TopicPartitionList};
use uuid::Uuid;

fn kafka_config(db: &TestDb, k: &TestKafka) -> jq_config::ServerConfig {
    let mut cfg = config(db);
    cfg.kafka.brokers = k.brokers.clone();
    cfg.kafka.topic_prefix = k.topic_prefix.clone();
    cfg.kafka.partitions = 1;
    cfg.kafka.message_timeout_ms = 3000;
    // The mock cluster creates topics on first produce and does not
    // implement CreateTopics; a real broker gets them created.
    cfg.kafka.create_topics = k.mock().is_none();
    cfg
}

/// A consumer without a group to coordinate (partitions are assigned).
fn consumer(k: &TestKafka, group: &str) -> StreamConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", &k.brokers)
        .set("group.id", format!("{}{group}", k.topic_prefix))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap()
}

/// Every partition of every jq topic, as (topic, partition).
fn jq_partitions(consumer: &StreamConsumer, k: &TestKafka) -> Vec<(String, i32)> {
    let md = consumer.fetch_metadata(None, Duration::from_secs(10)).unwrap();
    md.topics()
        .iter()
        .filter(|t| t.name().starts_with(&k.topic_prefix))
        .flat_map(|t| t.partitions().iter().map(|p| (t.name().to_string(), p.id())))
        .collect()
}

/// Wait until the relay has had every outbox event acknowledged, then read
/// every jq topic from the beginning by explicit assignment (no consumer
/// group to coordinate) until `want` distinct job events arrived; returns
/// all job events received, duplicates included.
async fn consume(k: &TestKafka, want: usize, db: &TestDb) -> Vec<v1::LifecycleEvent> {
    let mut drained = false;
    for _ in 0..300 {
        let unsent = backlog(db).await;
        if unsent == 0 {
            drained = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(drained, "the relay never got every event acknowledged");
    let consumer = consumer(k, "test");
    let mut tpl = TopicPartitionList::new();
    for (topic, p) in jq_partitions(&consumer, k) {
        tpl.add_partition_offset(&topic, p, Offset::Beginning).unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut got = vec![];
    let mut ids = HashSet::new();
    while ids.len() < want {
        let m = match tokio::time::timeout(Duration::from_secs(30), consumer.recv()).await {
            Ok(Ok(m)) => m,
            Ok(Err(e)) => panic!("consumer error: {e}"),
            Err(_) => panic!(
                "only {} of {want} events arrived although all were acknowledged",
                ids.len()
            ),
        };
        let logical = m.topic().strip_prefix(&k.topic_prefix).unwrap().to_string();
        match decode(&logical, m.payload().unwrap()).expect("every message decodes") {
            Decoded::Job(e) => {
                assert_eq!(m.key(), Some(e.job_id.as_bytes()), "keyed by job id");
                ids.insert(e.event_id.clone());
                got.push(e);
            }
            Decoded::Worker(w) => assert_eq!(m.key(), Some(w.worker_id.as_bytes())),
        }
    }
    got
}

/// Events not yet acknowledged: unsent `event_outbox` rows, and job events
/// at or above the relay's cursor (ADR 0012).
async fn backlog(db: &TestDb) -> i64 {
    sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM event_outbox WHERE sent_at IS NULL) \
              + (SELECT count(*) FROM job_events e WHERE e.txid >= (SELECT greatest(high, published_below) FROM relay_cursor) OR e.txid = ANY ((SELECT pending FROM relay_cursor)::bigint[]))",
    )
    .fetch_one(db.pool())
    .await
    .unwrap()
}

async fn event_ids(db: &TestDb) -> Vec<(Uuid, Uuid, String)> {
    sqlx::query_as("SELECT event_id, job_id, reason FROM job_events ORDER BY id")
        .fetch_all(db.pool())
        .await
        .unwrap()
}

#[tokio::test]
async fn fr_036_fr_037_jq_160_every_transition_is_published_once_decodable_and_ordered() {
    let k = TestKafka::new();
    let db = TestDb::new().await;
    let cfg = kafka_config(&db, &k);
    let mut env = start_with(db, cfg).await;
    let mut w = FakeWorker::connect(env.server.grpc_addr, "w1", &["default"], 1).await;
    let job = run_jobs(&mut env, &mut w, 1).await.remove(0);
    let got = consume(&k, 4, &env.db).await;
    let mine: Vec<&v1::LifecycleEvent> = got.iter().filter(|e| e.job_id == job).collect();
    assert_eq!(mine.len(), 4, "exactly once each: {mine:?}");
    let mut by_time = mine.clone();
    by_time.sort_by_key(|e| e.occurred_at.map(|t| (t.seconds, t.nanos)));
    let reasons: Vec<&str> = by_time.iter().map(|e| e.reason.as_str()).collect();
    assert_eq!(reasons, ["SUBMITTED", "CLAIMED", "STARTED", "COMPLETED"]);
    let done = by_time[3];
    assert_eq!(
        (done.from_status, done.to_status),
        (v1::JobStatus::Running as i32, v1::JobStatus::Done as i32)
    );
    assert_eq!(
        (done.queue.as_str(), done.worker_id.as_str(), done.attempt),
        ("default", "w1", 1)
    );
    let db_ids: HashSet<String> = event_ids(&env.db)
        .await
        .into_iter()
        .map(|(e, _, _)| e.to_string())
        .collect();
    assert_eq!(
        mine.iter().map(|e| e.event_id.clone()).collect::<HashSet<_>>(),
        db_ids,
        "the same events as job_events"
    );
    // Marked sent (the cursor passed them); the backlog is empty.
    assert_eq!(backlog(&env.db).await, 0);
    env.server.shutdown().await;
}

#[tokio::test]
async fn fr_038_jq_161_broker_down_stalls_no_job_shows_the_lag_and_every_event_arrives_after_recovery() {
    let k = TestKafka::new();
    let Some(mock) = k.mock() else {
        eprintln!("JQ_TEST_KAFKA_BROKERS points at a real broker: outage simulation needs the mock cluster");
        return;
    };
    let db = TestDb::new().await;
    let cfg = kafka_config(&db, &k);
    let mut env = start_with(db, cfg).await;
    let mut w = FakeWorker::connect(env.server.grpc_addr, "w1", &["default"], 2).await;
    run_jobs(&mut env, &mut w, 2).await;
    mock.broker_down(1).unwrap();
    // Jobs keep flowing while Kafka is down.
    let during = run_jobs(&mut env, &mut w, 10).await;
    for id in &during {
        assert_eq!(env.job(id).await.status, v1::JobStatus::Done as i32);
    }
    let st = env
        .admin
        .get_system_status(v1::GetSystemStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(st.outbox_backlog > 0, "events wait in PostgreSQL");
    // Stay down past the delivery timeout, until failures are counted.
    let mut errors = 0.0;
    for _ in 0..60 {
        let (_, metrics) = http_get(env.server.metrics_addr, "/metrics").await;
        errors = metrics
            .lines()
            .filter(|l| l.starts_with("jq_kafka_publish_errors_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        if errors > 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(errors > 0.0, "publish errors are counted while Kafka is down");
    // JQ-161: the lag is a signal of its own, in status and /metrics.
    let status = |env: &mut Env| {
        let mut admin = env.admin.clone();
        async move {
            admin
                .get_system_status(v1::GetSystemStatusRequest {})
                .await
                .unwrap()
                .into_inner()
        }
    };
    let st = status(&mut env).await;
    assert!(st.outbox_lag_seconds > 0.0, "{st:?}");
    let (_, metrics) = http_get(env.server.metrics_addr, "/metrics").await;
    let gauge = |m: &str| {
        m.lines()
            .find_map(|l| l.strip_prefix("jq_outbox_lag_seconds "))
            .and_then(|v| v.parse::<f64>().ok())
            .expect("jq_outbox_lag_seconds is exported")
    };
    assert!(gauge(&metrics) > 0.0, "the gauge shows the wait");
    mock.broker_up(1).unwrap();
    let all = event_ids(&env.db).await;
    let got = consume(&k, all.len(), &env.db).await;
    let got_ids: HashSet<String> = got.iter().map(|e| e.event_id.clone()).collect();
    for (e, _, _) in &all {
        assert!(got_ids.contains(&e.to_string()), "event {e} never arrived");
    }
    assert_eq!(status(&mut env).await.outbox_lag_seconds, 0.0, "caught up");
    env.server.shutdown().await;
}

#[tokio::test]
async fn jq_160_two_relaying_servers_publish_every_event_once_without_gaps() {
    let k = TestKafka::new();
    let db = TestDb::new().await;
    let cfg = kafka_config(&db, &k);
    let b = jq_server::start(cfg.clone()).await.unwrap();
    let mut env = start_with(db, cfg).await;
    let mut w1 = FakeWorker::connect(env.server.grpc_addr, "w1", &["default"], 4).await;
    run_jobs(&mut env, &mut w1, 30).await;
    let all = event_ids(&env.db).await;
    assert_eq!(all.len(), 120);
    let got = consume(&k, all.len(), &env.db).await;
    let mut counts: HashMap<String, usize> = HashMap::new();
    for e in &got {
        *counts.entry(e.event_id.clone()).or_default() += 1;
    }
    for (e, _, _) in &all {
        assert_eq!(
            counts.get(&e.to_string()),
            Some(&1),
            "event {e}: no gap, no duplicate"
        );
    }
    b.shutdown().await;
    env.server.shutdown().await;
}

#[tokio::test]
async fn fr_042_status_reports_kafka_health_and_the_database_version() {
    let k = TestKafka::new();
    let db = TestDb::new().await;
    let cfg = kafka_config(&db, &k);
    let mut env = start_with(db, cfg).await;
    let st = env
        .admin
        .get_system_status(v1::GetSystemStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    let comp = |n: &str| st.components.iter().find(|c| c.name == n).unwrap().clone();
    assert_eq!(comp("kafka").state, "ok", "{:?}", comp("kafka"));
    assert!(
        comp("database").detail.starts_with("PostgreSQL "),
        "{:?}",
        comp("database")
    );
    env.server.shutdown().await;
    // A broker nobody answers on: degraded, not down (events wait).
    let db = TestDb::new().await;
    let mut cfg = config(&db);
    cfg.kafka.brokers = format!("127.0.0.1:{}", jq_testkit::free_port());
    cfg.kafka.create_topics = false;
    let mut env = start_with(db, cfg).await;
    let st = env
        .admin
        .get_system_status(v1::GetSystemStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    let kafka = st.components.iter().find(|c| c.name == "kafka").unwrap();
    assert_eq!(kafka.state, "degraded");
    assert!(kafka.detail.contains("events wait in the outbox"), "{kafka:?}");
    env.server.shutdown().await;
}

/// A server's shared state on a migrated database, for driving its relay
/// alone.
async fn relay_shared() -> (TestDb, TestKafka, std::sync::Arc<jq_server::Shared>) {
    let db = TestDb::new().await;
    let k = TestKafka::new();
    let shared =
        std::sync::Arc::new(jq_server::Shared::new(std::sync::Arc::new(kafka_config(&db, &k))).unwrap());
    shared
        .store
        .migrate(jq_store::partitions::DEFAULT_WIDTH)
        .await
        .unwrap();
    shared.store.ensure_queue("default").await.unwrap();
    (db, k, shared)
}

fn noop() -> jq_core::NewJob {
    jq_core::NewJob {
        queue: "default".into(),
        payload: b"{}".to_vec(),
        priority: 0,
        max_retries: None,
        ttl: None,
        schedule: jq_core::Schedule::Now,
        idempotency_key: None,
    }
}

/// Run the relay's passes until they have published `want` events, and
/// return how many they published. A pass that finds nothing yet is not
/// the end: the relay's horizon is cluster-wide, so another test's open
/// transaction can hold a window back for a while.
async fn published_by(relay: &mut jq_server::relay::Relay, want: usize) -> usize {
    use jq_server::relay::Progress;
    let mut published = 0;
    for pass in 0.. {
        assert!(pass < 300, "the relay published {published} of {want}");
        match relay.run_once().await {
            Progress::Published(n) => published += n,
            Progress::Idle if published >= want => break,
            // Held back by an open transaction, or a mock broker still
            // electing its leaders: try again.
            Progress::Idle | Progress::Stalled => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    published
}

/// The relay's pass alone (SPEC §9): one `run_once` publishes what the
/// outbox and `job_events` hold and says so; the next finds nothing.
#[tokio::test]
async fn jq_160_the_relay_run_once_publishes_the_backlog_then_idles() {
    use jq_server::relay::{Progress, Relay};
    let (db, _kafka, shared) = relay_shared().await;
    shared.store.submit_many(vec![noop(), noop()]).await.unwrap();
    let mut relay = Relay::new(shared.clone()).unwrap();
    let _lease = shared
        .store
        .try_relay_lease()
        .await
        .unwrap()
        .expect("the relay lease");
    let published = published_by(&mut relay, 2).await;
    assert_eq!(published, 2, "two submits, one event each");
    assert_eq!(backlog(&db).await, 0);
    assert_eq!(relay.run_once().await, Progress::Idle);
    shared.store.close().await;
}

/// Every job event the broker holds, read from the start of each jq topic's
/// partitions up to their high watermarks (all that was produced, so the
/// absence of an event is a fact, not a wait that ran out).
async fn everything_produced(k: &TestKafka) -> Vec<v1::LifecycleEvent> {
    let consumer = consumer(k, "all");
    let mut tpl = TopicPartitionList::new();
    let mut left = HashMap::new();
    for (topic, p) in jq_partitions(&consumer, k) {
        let (low, high) = consumer
            .fetch_watermarks(&topic, p, Duration::from_secs(10))
            .unwrap();
        if high > low {
            tpl.add_partition_offset(&topic, p, Offset::Beginning).unwrap();
            left.insert((topic, p), high);
        }
    }
    let mut got = vec![];
    if left.is_empty() {
        return got;
    }
    consumer.assign(&tpl).unwrap();
    while !left.is_empty() {
        let m = match tokio::time::timeout(Duration::from_secs(30), consumer.recv()).await {
            Ok(Ok(m)) => m,
            other => panic!("the broker holds messages it does not deliver: {other:?}"),
        };
        let part = (m.topic().to_string(), m.partition());
        if left.get(&part).is_some_and(|high| m.offset() + 1 >= *high) {
            left.remove(&part);
        }
        let logical = m.topic().strip_prefix(&k.topic_prefix).unwrap().to_string();
        if let Decoded::Job(e) = decode(&logical, m.payload().unwrap()).expect("every message decodes") {
            got.push(e);
        }
    }
    got
}

/// History pruned while Kafka was off (ADR 0017) is never published: when
/// Kafka comes on, the relay steps over the pruned job's events (its
/// cursor moves past them) and publishes the rest, and nothing is left as
/// backlog.
#[tokio::test]
async fn jq_152_jq_160_the_relay_steps_over_history_pruned_while_kafka_was_off() {
    use jq_server::relay::Relay;
    let (db, k, shared) = relay_shared().await;
    let store = &shared.store;
    let submit = || async { store.submit(noop()).await.unwrap().job_id };
    let before = submit().await;
    // Cancelled while PENDING: dead-lettered, two events; then a day old
    // and pruned by a one-second dead-letter retention with Kafka off.
    let gone = submit().await;
    store.cancel(gone).await.unwrap();
    sqlx::query("UPDATE jobs SET completed_at = now() - interval '1 day' WHERE id = $1")
        .bind(gone)
        .execute(db.pool())
        .await
        .unwrap();
    let retain = jq_store::retention::Retentions {
        done: Duration::from_secs(7 * 24 * 3600),
        dead_lettered: Duration::from_secs(1),
    };
    assert_eq!(
        store
            .prune_finished(retain, jq_store::retention::Publishing::Off)
            .await
            .unwrap(),
        vec![gone]
    );
    let after = submit().await;
    let pruned_events: i64 = sqlx::query_scalar("SELECT count(*) FROM job_events WHERE job_id = $1")
        .bind(gone)
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(
        pruned_events, 2,
        "the pruned job's history waits for its partition to go"
    );

    let mut relay = Relay::new(shared.clone()).unwrap();
    let _lease = store.try_relay_lease().await.unwrap().expect("the relay lease");
    let published = published_by(&mut relay, 2).await;
    assert_eq!(published, 2, "one event each for the jobs that remain");
    assert_eq!(backlog(&db).await, 0, "the cursor passed the pruned history");
    let mut jobs: Vec<String> = everything_produced(&k)
        .await
        .into_iter()
        .map(|e| e.job_id)
        .collect();
    jobs.sort();
    let mut want = vec![before.to_string(), after.to_string()];
    want.sort();
    assert_eq!(
        jobs, want,
        "each remaining job's event once, none of the pruned job's"
    );
    shared.store.close().await;
}

/// Every event of `ids`' jobs is among `got` exactly once: the four of
/// `run_jobs`' lifecycle. (One job's events are on four topics, so the
/// order they are consumed in says nothing; the order they are sent in is
/// the window's, proven by the store's tests.)
fn each_job_once(got: &[v1::LifecycleEvent], ids: &[String]) {
    for id in ids {
        let mut reasons: Vec<&str> = got
            .iter()
            .filter(|e| &e.job_id == id)
            .map(|e| e.reason.as_str())
            .collect();
        reasons.sort();
        assert_eq!(
            reasons,
            ["CLAIMED", "COMPLETED", "STARTED", "SUBMITTED"],
            "job {id}: each event once"
        );
    }
}

/// JQ-161 with the real server, relay and broker: while a write
/// transaction stays open — in another database of the server, then in
/// jq's own — jobs run and every one of their events reaches the broker
/// before it ends (the transaction outlives the test's whole
/// wait, so an event that waited for it would never arrive).
#[tokio::test]
async fn jq_161_events_arrive_while_a_write_transaction_stays_open_anywhere_on_the_server() {
    let k = TestKafka::new();
    let db = TestDb::new().await;
    let cfg = kafka_config(&db, &k);
    let mut env = start_with(db, cfg).await;
    let mut w = FakeWorker::connect(env.server.grpc_addr, "w1", &["default"], 4).await;
    let mut ran = vec![];
    for holder_url in [env.db.admin_url().to_string(), env.db.url.clone()] {
        let mut holder = jq_testkit::OpenTransaction::begin(&holder_url).await.unwrap();
        ran.extend(run_jobs(&mut env, &mut w, 20).await);
        let got = consume(&k, ran.len() * 4, &env.db).await;
        assert!(
            holder.holds_the_horizon().await.unwrap(),
            "{holder_url}: the events arrived while the horizon was pinned"
        );
        each_job_once(&got, &ran);
        holder.end().await.unwrap();
    }
    env.server.shutdown().await;
}

/// JQ-161 with two relaying servers (one holds the lease at a time) and
/// the horizon pinned throughout: every event once, none missing.
#[tokio::test]
async fn jq_161_two_servers_publish_every_event_once_while_the_horizon_is_pinned() {
    let k = TestKafka::new();
    let db = TestDb::new().await;
    let mut holder = jq_testkit::OpenTransaction::begin(db.admin_url()).await.unwrap();
    let cfg = kafka_config(&db, &k);
    let b = jq_server::start(cfg.clone()).await.unwrap();
    let mut env = start_with(db, cfg).await;
    let mut w1 = FakeWorker::connect(env.server.grpc_addr, "w1", &["default"], 4).await;
    let ids = run_jobs(&mut env, &mut w1, 30).await;
    let got = consume(&k, 120, &env.db).await;
    assert_eq!(got.len(), 120, "no duplicate without a crash");
    each_job_once(&got, &ids);
    assert!(holder.holds_the_horizon().await.unwrap());
    holder.end().await.unwrap();
    b.shutdown().await;
    env.server.shutdown().await;
}

/// JQ-161: a relay that dies after the broker acknowledged a window and
/// before it moved its position loses nothing: the next relay sends the
/// window again, the same events with the same `event_id`s (consumers
/// de-duplicate on it), and nothing else twice.
#[tokio::test]
async fn jq_161_a_relay_killed_between_send_and_cursor_update_resends_the_same_events() {
    use jq_server::relay::Relay;
    let (db, k, shared) = relay_shared().await;
    let mut holder = jq_testkit::OpenTransaction::begin(db.admin_url()).await.unwrap();
    shared
        .store
        .submit_many(vec![noop(), noop(), noop()])
        .await
        .unwrap();
    let lease = shared
        .store
        .try_relay_lease()
        .await
        .unwrap()
        .expect("the relay lease");
    let first = Relay::new(shared.clone()).unwrap();
    let window = shared.store.job_events_window(500).await.unwrap();
    assert_eq!(window.events.len(), 3, "{window:?}");
    let mut acked = vec![];
    for _ in 0..100 {
        // The mock broker may still be electing its leaders.
        acked = first.publish(&window.events).await;
        if acked.len() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(acked.len(), 3, "acknowledged");
    // Killed here: no cursor update, the lease goes with its connection.
    drop(first);
    drop(lease);
    shared.store.submit(noop()).await.unwrap();
    let mut second = Relay::new(shared.clone()).unwrap();
    let _lease = shared.store.try_relay_lease().await.unwrap().expect("taken over");
    assert_eq!(
        published_by(&mut second, 4).await,
        4,
        "the window again, and the new event"
    );
    assert_eq!(backlog(&db).await, 0);
    let got = everything_produced(&k).await;
    let mut counts: HashMap<String, usize> = HashMap::new();
    for e in &got {
        *counts.entry(e.event_id.clone()).or_default() += 1;
    }
    let resent: HashSet<String> = window.events.iter().map(|e| e.event_id.to_string()).collect();
    assert_eq!(counts.len(), 4, "every event arrived");
    for (id, n) in &counts {
        let want = if resent.contains(id) { 2 } else { 1 };
        assert_eq!(*n, want, "event {id}");
    }
    assert!(holder.holds_the_horizon().await.unwrap());
    holder.end().await.unwrap();
    shared.store.close().await;
}

/// JQ-161 across a PostgreSQL restart: a transaction that was pending when
/// the relay read (its event written, not committed) dies with the
/// server; the relay carries on after the restart, publishes every
/// committed event once and never the dead transaction's.
#[tokio::test]
async fn jq_161_postgres_restarted_with_a_pending_transaction_loses_nothing_and_publishes_no_aborted_event() {
    use jq_server::relay::Relay;
    use sqlx::Connection;
    let pg = jq_testkit::PrivatePostgres::start().unwrap();
    pg.create_db("jq").unwrap();
    let url = pg.url("jq");
    let k = TestKafka::new();
    let mut cfg = jq_config::ServerConfig::default();
    cfg.db.url = url.clone();
    cfg.kafka.brokers = k.brokers.clone();
    cfg.kafka.topic_prefix = k.topic_prefix.clone();
    cfg.kafka.partitions = 1;
    cfg.kafka.message_timeout_ms = 3000;
    cfg.kafka.create_topics = k.mock().is_none();
    let shared = std::sync::Arc::new(jq_server::Shared::new(std::sync::Arc::new(cfg)).unwrap());
    let store = &shared.store;
    store.migrate(jq_store::partitions::DEFAULT_WIDTH).await.unwrap();
    store.ensure_queue("default").await.unwrap();
    store.submit_many(vec![noop(), noop()]).await.unwrap();
    // A submit written by hand and never committed.
    let doomed_job = Uuid::new_v4();
    let mut doomed = sqlx::PgConnection::connect(&url).await.unwrap();
    for sql in [
        "BEGIN",
        "INSERT INTO jobs (id, queue, payload, max_retries) VALUES ($1, 'default', '\\x', 0)",
        "INSERT INTO job_events (event_id, job_id, queue, to_status, reason, attempt) \
         VALUES (gen_random_uuid(), $1, 'default', 'PENDING', 'SUBMITTED', 0)",
    ] {
        sqlx::query(sql)
            .bind(doomed_job)
            .execute(&mut doomed)
            .await
            .unwrap();
    }
    let xid: i64 = sqlx::query_scalar("SELECT pg_current_xact_id()::text::bigint")
        .fetch_one(&mut doomed)
        .await
        .unwrap();
    let mut relay = Relay::new(shared.clone()).unwrap();
    assert_eq!(published_by(&mut relay, 2).await, 2);
    // Still to be looked at: pending, or at or above `high` (a snapshot
    // lists only running ids below its xmax, the newest completed + 1).
    let rc = store.relay_cursor().await.unwrap();
    assert!(rc.pending.contains(&xid) || xid >= rc.high, "{rc:?}, xid {xid}");
    pg.restart().unwrap();
    drop(doomed);
    let mut after = 0;
    for _ in 0..100 {
        if store.submit_many(vec![noop(), noop()]).await.is_ok() {
            after = 2;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(after, 2, "PostgreSQL came back");
    assert_eq!(
        published_by(&mut relay, 2).await,
        2,
        "the new events, nothing else"
    );
    let got = everything_produced(&k).await;
    let ids: HashSet<String> = got.iter().map(|e| e.event_id.clone()).collect();
    assert_eq!((got.len(), ids.len()), (4, 4), "each committed event once");
    assert!(got.iter().all(|e| e.job_id != doomed_job.to_string()));
    let rc = store.relay_cursor().await.unwrap();
    assert!(
        !rc.pending.contains(&xid) && xid < rc.high,
        "{rc:?}: passed, {xid}"
    );
    store.close().await;
}
