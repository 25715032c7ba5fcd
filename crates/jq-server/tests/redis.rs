//! FR-015 dispatch locks in real Redis; NFR-009 Redis loss loses no job.

mod common;

use std::time::Duration;

use common::*;
use jq_proto::v1;
use jq_testkit::{TestDb, TestRedis};
use redis::AsyncCommands;

/// Run `n` jobs and check every one ended DONE.
async fn run_and_check(env: &mut Env, w: &mut FakeWorker, n: usize) {
    for id in run_jobs(env, w, n).await {
        assert_eq!(env.job(&id).await.status, v1::JobStatus::Done as i32);
    }
}

async fn redis_conn(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// A server on a fresh database with its locks in a fresh Redis key space,
/// configured further by `tune`.
async fn start_locked(tune: impl FnOnce(&mut jq_config::ServerConfig)) -> (Env, TestRedis) {
    let db = TestDb::new().await;
    let r = TestRedis::new().await;
    let mut cfg = config(&db);
    cfg.redis.url = r.url.clone();
    cfg.redis.key_prefix = r.prefix.clone();
    tune(&mut cfg);
    (start_with(db, cfg).await, r)
}

#[tokio::test]
async fn fr_015_each_dispatch_takes_a_lock_released_when_the_job_starts() {
    let (mut env, r) = start_locked(|_| {}).await;
    let mut w = FakeWorker::connect(env.server.grpc_addr, "w1", &["default"], 1).await;
    let id = env.submit(spec("default", "{}")).await;
    let a = w.assignment().await;
    let key = format!("{}lock:job:{id}", r.prefix);
    let mut c = redis_conn(&r.url).await;
    let owner: Option<String> = c.get(&key).await.unwrap();
    assert_eq!(owner.as_deref(), Some(env.server.shared.locks.owner()));
    let ttl: i64 = c.pttl(&key).await.unwrap();
    assert!(ttl > 0 && ttl <= 60_000, "TTL is the assignment timeout: {ttl}");
    w.ack(&a).await.unwrap();
    let owner: Option<String> = c.get(&key).await.unwrap();
    assert_eq!(owner, None, "released by its owner once started");
    env.server.shutdown().await;
}

#[tokio::test]
async fn fr_015_a_job_locked_by_another_dispatcher_is_not_sent() {
    let (mut env, r) = start_locked(|cfg| cfg.scheduler.assignment_timeout_s = 1).await;
    env.admin
        .pause_queue(v1::PauseQueueRequest {
            name: "default".into(),
        })
        .await
        .unwrap();
    let id = env.submit(spec("default", "{}")).await;
    let key = format!("{}lock:job:{id}", r.prefix);
    let mut c = redis_conn(&r.url).await;
    let _: () = c.set_ex(&key, "another-server", 2).await.unwrap();
    let mut w = FakeWorker::connect(env.server.grpc_addr, "w1", &["default"], 1).await;
    env.admin
        .resume_queue(v1::ResumeQueueRequest {
            name: "default".into(),
        })
        .await
        .unwrap();
    // Claimed in PostgreSQL, but not sent while the foreign lock stands.
    assert!(w.next_within(Duration::from_millis(700)).await.is_none());
    // The other owner's lock was not touched by us.
    let owner: Option<String> = c.get(&key).await.unwrap();
    assert_eq!(owner.as_deref(), Some("another-server"));
    // Once it expires, the assignment timeout returns the job and it runs.
    let a = w.assignment().await;
    assert_eq!(a.job_id, id);
    assert!(a.attempt >= 2);
    env.server.shutdown().await;
}

/// The lock outlives the assignment it guarded when the worker is lost
/// before it acks: the effects hook releases it with the transition out of
/// ASSIGNED, so the retry is sent at once instead of after the lock's TTL
/// (the assignment timeout, here ten minutes).
#[tokio::test]
async fn fr_015_fr_020_a_job_taken_from_a_lost_worker_is_sent_again_without_waiting_out_its_lock() {
    let (mut env, r) = start_locked(|cfg| {
        cfg.scheduler.assignment_timeout_s = 600;
        cfg.scheduler.worker_heartbeat_timeout_s = 1;
        cfg.scheduler.reaper_interval_ms = 100;
    })
    .await;
    let mut lost = FakeWorker::connect(env.server.grpc_addr, "w-lost", &["default"], 1).await;
    let id = env.submit(spec("default", "{}")).await;
    let first = lost.assignment().await;
    let key = format!("{}lock:job:{id}", r.prefix);
    let mut c = redis_conn(&r.url).await;
    let ttl: i64 = c.pttl(&key).await.unwrap();
    assert!(ttl > 60_000, "locked for the assignment timeout: {ttl}");
    // w-lost never acks nor heartbeats again; w-alive keeps heartbeating.
    let mut alive = FakeWorker::connect(env.server.grpc_addr, "w-alive", &["default"], 1).await;
    let mut again = None;
    for _ in 0..100 {
        alive.heartbeat(vec![]).await;
        if let Some(v1::server_message::Kind::Assignment(a)) =
            alive.next_within(Duration::from_millis(300)).await
        {
            again = Some(a);
            break;
        }
    }
    let again = again.expect("the lost worker's job was sent to the live one");
    assert_eq!(again.job_id, id);
    assert!(again.attempt > first.attempt);
    env.server.shutdown().await;
}

#[tokio::test]
async fn nfr_009_redis_stopped_mid_run_loses_nothing_and_comes_back() {
    let mut redis = jq_testkit::PrivateRedis::start().unwrap();
    let db = TestDb::new().await;
    let mut cfg = config(&db);
    cfg.redis.url = redis.url();
    let mut env = start_with(db, cfg).await;
    let mut w = FakeWorker::connect(env.server.grpc_addr, "w1", &["default"], 4).await;
    run_and_check(&mut env, &mut w, 20).await;
    assert!(!env.server.shared.locks.degraded());
    redis.stop(); // Redis dies
    run_and_check(&mut env, &mut w, 20).await;
    assert!(
        env.server.shared.locks.degraded(),
        "the server noticed and carried on"
    );
    let (_, metrics) = http_get(env.server.metrics_addr, "/metrics").await;
    assert!(metrics.contains("jq_redis_degraded 1"));
    let st = env
        .admin
        .get_system_status(v1::GetSystemStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        st.components.iter().find(|c| c.name == "redis").unwrap().state,
        "degraded"
    );
    // Redis is back, empty (as after a flush): locks resume.
    redis.start_again().unwrap();
    run_and_check(&mut env, &mut w, 20).await;
    assert!(!env.server.shared.locks.degraded());
    let done: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE status = 'DONE'")
        .fetch_one(env.db.pool())
        .await
        .unwrap();
    assert_eq!(done, 60);
    env.server.shutdown().await;
}
