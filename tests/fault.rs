//! Fault injection (issue 6): each scenario runs a few hundred jobs on the
//! real binaries, breaks something mid-run, and ends with the same checks
//! (`jq_tests::check`): every job terminal, DONE = submitted - expected
//! dead letters, no two executions of one job overlapping in time, every
//! transition with exactly one outbox event. The jobs log their own
//! executions (job, attempt, worker, start, end) to an append-only file.

use std::collections::HashSet;
use std::time::Duration;

use jq_core::WorkerStatus;
use jq_testkit::TestDb;
use jq_tests::*;
use serde_json::json;

/// A database, a server tuned for quick failure detection, and retries
/// that back off in milliseconds rather than seconds.
async fn scene(extra: &[(&str, &str)]) -> (TestDb, Server) {
    let db = TestDb::new().await;
    let mut env = Server::fast_env(&db.url);
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let server = Server::start("server", env).await;
    fast_retries(&server.addr()).await;
    (db, server)
}

async fn fast_retries(addr: &str) {
    ctl(
        addr,
        &[
            "queue",
            "update",
            "default",
            "--backoff-base",
            "100ms",
            "--backoff-max",
            "500ms",
            "--max-retries",
            "5",
        ],
    )
    .await
    .ok();
}

/// Poll the execution log until `worker` has an execution that started
/// and has not ended.
async fn wait_busy(log: &ExecLog, worker: &str) {
    until(
        &format!("{worker} to be mid-job"),
        Duration::from_secs(60),
        || async { log.read().iter().any(|e| e.worker == worker && e.end.is_none()) },
    )
    .await;
}

async fn wait_done(s: &jq_store::Store, n: u64) {
    until(&format!("{n} jobs DONE"), Duration::from_secs(120), || async {
        counts(s)
            .await
            .get(&jq_core::JobStatus::Done)
            .copied()
            .unwrap_or(0)
            >= n
    })
    .await;
}

fn report(name: &str, v: &Verdict) {
    eprintln!(
        "[fault] {name}: submitted={} done={} dead_lettered={} executions={} re-runs={} transitions={} (each with one outbox event) lost/failed attempts={:?}",
        v.submitted, v.done, v.dead, v.executions, v.reruns, v.transitions, v.failures
    );
}

#[tokio::test]
async fn fault_nfr_007_sigkill_a_worker_mid_job_reruns_its_jobs_elsewhere() {
    let (db, server) = scene(&[]).await;
    let s = store(&db.url).await;
    let log = ExecLog::new();
    let mut kills = Kills::default();
    let mut a = Worker::start(&server.addr(), "fault-a", 4).await;
    let _b = Worker::start(&server.addr(), "fault-b", 4).await;
    let ids = submit_many(&server.addr(), &vec![log.payload(150); 200], json!({})).await;
    wait_done(&s, 30).await;
    wait_busy(&log, "fault-a").await;
    // Recorded once it is dead: a job started in the instant before the
    // kill must still count as cut by it.
    a.kill9_and_wait().await;
    kills.record("fault-a");
    let v = check(&s, &log, &kills, &ids, 0).await;
    let cut: Vec<Exec> = log
        .read()
        .into_iter()
        .filter(|e| e.worker == "fault-a" && e.end.is_none())
        .collect();
    assert!(!cut.is_empty(), "fault-a was killed mid-job");
    for e in &cut {
        let j = s.get_job(e.job.parse().unwrap()).await.unwrap();
        assert_eq!(j.worker_id.as_deref(), Some("fault-b"), "re-run elsewhere: {j:?}");
        assert!(j.attempt > e.attempt);
    }
    assert!(v.reruns >= cut.len());
    report("SIGKILL worker", &v);
}

#[tokio::test]
async fn fault_jq_110_sigstopped_worker_past_its_heartbeat_timeout_has_its_late_results_refused() {
    // A stopped worker cannot stop its jobs (they are not stopped with it),
    // so the timeout must be well beyond a job's run time even when the
    // machine is loaded: 150 ms jobs, 10 s timeout.
    let (db, server) = scene(&[("JQ_SCHEDULER_WORKER_HEARTBEAT_TIMEOUT_S", "10")]).await;
    let s = store(&db.url).await;
    let log = ExecLog::new();
    let kills = Kills::default();
    let a = Worker::start(&server.addr(), "stop-a", 4).await;
    let _b = Worker::start(&server.addr(), "stop-b", 4).await;
    let ids = submit_many(&server.addr(), &vec![log.payload(150); 200], json!({})).await;
    wait_done(&s, 30).await;
    wait_busy(&log, "stop-a").await;
    a.sigstop();
    let frozen: HashSet<(String, u32)> = log
        .read()
        .into_iter()
        .filter(|e| e.worker == "stop-a" && e.end.is_none())
        .map(|e| (e.job, e.attempt))
        .collect();
    // Past the heartbeat timeout the server declares it dead and moves on.
    until(
        "stop-a to be declared OFFLINE",
        Duration::from_secs(60),
        || async {
            s.get_worker("stop-a")
                .await
                .is_ok_and(|w| w.status == WorkerStatus::Offline)
        },
    )
    .await;
    a.sigcont();
    // It may have been frozen between an ack and the start of that job,
    // which then starts on waking (its result is refused like the others):
    // let every run of it end before the log is read.
    until("stop-a's runs to end", Duration::from_secs(30), || async {
        log.read().iter().all(|e| e.worker != "stop-a" || e.end.is_some())
    })
    .await;
    let v = check(&s, &log, &kills, &ids, 0).await;
    // Its attempts finished while it was frozen (the job processes ran on),
    // and their late reports were refused: a newer attempt's result stands.
    for (job, attempt) in &frozen {
        let j = s.get_job(job.parse().unwrap()).await.unwrap();
        assert!(
            j.attempt > *attempt,
            "job {job}: attempt {attempt} must not be the one that counted"
        );
        let events = s.job_events(j.id).await.unwrap();
        assert!(
            !events
                .iter()
                .any(|e| e.attempt == *attempt && e.to == jq_core::JobStatus::Done),
            "job {job}: the frozen attempt's result was refused: {events:?}"
        );
    }
    assert!(!frozen.is_empty());
    // Each late attempt is dropped by the worker one of two ways: a result
    // it sends is refused by the server, or, when the fence stops the
    // attempt before the worker has reaped its finished process (a race
    // with tokio's SIGCHLD handling on waking), it is abandoned unreported.
    // Either way it did not count (asserted above).
    until(
        "stop-a to log how it dropped its late attempts",
        Duration::from_secs(30),
        || async {
            !grep(&a.log, "result refused").is_empty() || !grep(&a.log, "attempt abandoned").is_empty()
        },
    )
    .await;
    report("SIGSTOP worker past heartbeat timeout", &v);
}

#[tokio::test]
async fn fault_nfr_008_two_servers_one_killed_mid_run_the_other_carries_on() {
    let db = TestDb::new().await;
    let one = Server::start("server-1", Server::fast_env(&db.url)).await;
    let mut two = Server::start("server-2", Server::fast_env(&db.url)).await;
    fast_retries(&one.addr()).await;
    let s = store(&db.url).await;
    let log = ExecLog::new();
    let kills = Kills::default();
    let _a = Worker::start(&one.addr(), "two-a", 4).await;
    let _b = Worker::start(&two.addr(), "two-b", 4).await;
    let ids = submit_many(&one.addr(), &vec![log.payload(50); 300], json!({})).await;
    wait_done(&s, 60).await;
    two.kill9();
    // two-b lost its server: its jobs are reclaimed by server-1's reaper
    // after the heartbeat timeout and run on two-a.
    let v = check(&s, &log, &kills, &ids, 0).await;
    report("two servers, one SIGKILLed", &v);
}

#[tokio::test]
async fn fault_nfr_009_redis_stopped_then_flushed_and_restarted_processing_continues() {
    let mut redis = jq_testkit::PrivateRedis::start().unwrap();
    let url = redis.url();
    let (db, server) = scene(&[("JQ_REDIS_URL", &url)]).await;
    let s = store(&db.url).await;
    let log = ExecLog::new();
    let kills = Kills::default();
    let _a = Worker::start(&server.addr(), "redis-a", 4).await;
    let _b = Worker::start(&server.addr(), "redis-b", 4).await;
    let ids = submit_many(&server.addr(), &vec![log.payload(30); 300], json!({})).await;
    wait_done(&s, 50).await;
    redis.stop();
    wait_done(&s, 150).await;
    redis.start_again().unwrap(); // empty: as after FLUSHALL
    let v = check(&s, &log, &kills, &ids, 0).await;
    assert!(
        !grep(&server.log, "Redis").is_empty(),
        "the server noticed Redis going away"
    );
    report("Redis stopped, flushed, restarted", &v);
}

#[tokio::test]
async fn fault_fr_038_kafka_down_then_up_processing_continues_and_every_event_arrives() {
    use rdkafka::consumer::{Consumer, StreamConsumer};
    use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
    let k = jq_testkit::TestKafka::new();
    let Some(mock) = k.mock() else {
        eprintln!("JQ_TEST_KAFKA_BROKERS points at a real broker: the outage needs the mock cluster");
        return;
    };
    let (db, server) = scene(&[
        ("JQ_KAFKA_BROKERS", &k.brokers),
        ("JQ_KAFKA_TOPIC_PREFIX", &k.topic_prefix),
        ("JQ_KAFKA_CREATE_TOPICS", "false"),
        ("JQ_KAFKA_PARTITIONS", "1"),
        ("JQ_KAFKA_MESSAGE_TIMEOUT_MS", "2000"),
    ])
    .await;
    let s = store(&db.url).await;
    let log = ExecLog::new();
    let kills = Kills::default();
    let _a = Worker::start(&server.addr(), "kafka-a", 4).await;
    let ids = submit_many(&server.addr(), &vec![log.payload(20); 200], json!({})).await;
    wait_done(&s, 40).await;
    mock.broker_down(1).unwrap();
    wait_done(&s, 120).await;
    let (_, metrics) = http_get(server.metrics, "/metrics").await;
    mock.broker_up(1).unwrap();
    let v = check(&s, &log, &kills, &ids, 0).await;
    until("the outbox to drain", Duration::from_secs(120), || async {
        s.outbox_backlog(jq_store::retention::Publishing::Kafka)
            .await
            .is_ok_and(|n| n == 0)
    })
    .await;
    // Read every topic from the start and find every job event.
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &k.brokers)
        .set("group.id", format!("{}fault", k.topic_prefix))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let md = consumer.fetch_metadata(None, Duration::from_secs(10)).unwrap();
    let mut tpl = TopicPartitionList::new();
    for t in md
        .topics()
        .iter()
        .filter(|t| t.name().starts_with(&k.topic_prefix))
    {
        for p in t.partitions() {
            tpl.add_partition_offset(t.name(), p.id(), Offset::Beginning)
                .unwrap();
        }
    }
    consumer.assign(&tpl).unwrap();
    let mut seen = HashSet::new();
    while (seen.len() as u64) < v.transitions {
        let m = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
            .await
            .unwrap_or_else(|_| panic!("only {} of {} events arrived", seen.len(), v.transitions))
            .unwrap();
        let logical = m.topic().strip_prefix(&k.topic_prefix).unwrap().to_string();
        if let jq_server::relay::Decoded::Job(e) =
            jq_server::relay::decode(&logical, m.payload().unwrap()).unwrap()
        {
            seen.insert(e.event_id);
        }
    }
    assert_eq!(seen.len() as u64, v.transitions);
    assert!(
        metrics.contains("jq_kafka_publish_errors_total{"),
        "errors were counted during the outage"
    );
    report("Kafka broker down then up", &v);
}

#[tokio::test]
async fn fault_postgres_restarted_mid_run_everything_recovers_by_itself() {
    let pg = jq_testkit::PrivatePostgres::start().unwrap();
    pg.create_db("jq").unwrap();
    let url = pg.url("jq");
    let server = Server::start("server", Server::fast_env(&url)).await;
    fast_retries(&server.addr()).await;
    let s = store(&url).await;
    let log = ExecLog::new();
    let kills = Kills::default();
    let _a = Worker::start(&server.addr(), "pg-a", 4).await;
    let _b = Worker::start(&server.addr(), "pg-b", 4).await;
    let ids = submit_many(&server.addr(), &vec![log.payload(30); 200], json!({})).await;
    wait_done(&s, 50).await;
    pg.restart().unwrap();
    let v = check(&s, &log, &kills, &ids, 0).await;
    report("PostgreSQL restarted", &v);
}

#[tokio::test]
async fn fault_jq_112_a_poison_job_that_kills_its_worker_ends_dead_lettered() {
    let (db, server) = scene(&[]).await;
    let s = store(&db.url).await;
    let log = ExecLog::new();
    let mut kills = Kills::default();
    let mut w = Worker::start(&server.addr(), "poison-w", 2).await;
    let mut ids = submit_many(&server.addr(), &vec![log.payload(20); 100], json!({})).await;
    let poison = ctl(
        &server.addr(),
        &["job", "submit", "--max-retries", "2", &log.poison().to_string()],
    )
    .await
    .ok()
    .stdout
    .trim()
    .to_string();
    ids.push(poison.clone());
    // A supervisor (systemd, Kubernetes) restarts the worker each time.
    let mut restarts = 0;
    loop {
        let j = s.get_job(poison.parse().unwrap()).await.unwrap();
        if j.status.is_terminal() {
            break;
        }
        if w.exited() {
            kills.record("poison-w");
            restarts += 1;
            assert!(restarts <= 10, "the poison job is retried without end");
            w.restart();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let v = check(&s, &log, &kills, &ids, 1).await;
    let j = s.get_job(poison.parse().unwrap()).await.unwrap();
    assert_eq!(j.status, jq_core::JobStatus::DeadLettered);
    assert_eq!(
        j.attempt, 3,
        "max_retries 2: three attempts, each lost with its worker"
    );
    assert_eq!(restarts, 3);
    report("poison job kills its worker", &v);
}

#[tokio::test]
async fn fault_nfr_014_nfr_015_sigterm_server_and_worker_with_jobs_in_flight() {
    let (db, mut server) = scene(&[]).await;
    let s = store(&db.url).await;
    let log = ExecLog::new();
    let kills = Kills::default();
    let mut a = Worker::start(&server.addr(), "term-a", 4).await;
    let ids = submit_many(&server.addr(), &vec![log.payload(100); 200], json!({})).await;
    wait_done(&s, 20).await;
    wait_busy(&log, "term-a").await;
    // NFR-014: the server exits cleanly within 30 s with jobs in flight...
    let (st, took) = server.terminate(Duration::from_secs(30)).await;
    assert!(st.success(), "{st:?}");
    eprintln!("[fault] server SIGTERM -> exit 0 in {took:?}");
    // ...and every job finishes once it is back.
    server.restart().await;
    wait_done(&s, 120).await;
    // NFR-015: a worker exits cleanly within 60 s, its running jobs done.
    wait_busy(&log, "term-a").await;
    let (st, took) = a.terminate(Duration::from_secs(60)).await;
    assert!(st.success(), "{st:?}");
    eprintln!("[fault] worker SIGTERM -> exit 0 in {took:?}");
    let _b = Worker::start(&server.addr(), "term-b", 4).await;
    let v = check(&s, &log, &kills, &ids, 0).await;
    assert!(
        log.read().iter().all(|e| e.worker != "term-a" || e.end.is_some()),
        "term-a finished what it started"
    );
    report("SIGTERM server and worker", &v);
}
