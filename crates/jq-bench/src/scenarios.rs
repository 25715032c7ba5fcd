//! The named scenarios. Each returns a JSON object; `main` prints it as a
//! line and collects the table.

use std::time::{Duration, Instant};

use jq_proto::v1;
use serde_json::{Value, json};

use crate::{Env, Settings, Stats, noop_spec};

const Q: &str = "default";

async fn pause(env: &mut Env) -> anyhow::Result<()> {
    env.clients
        .admin
        .pause_queue(v1::PauseQueueRequest { name: Q.into() })
        .await?;
    Ok(())
}

async fn resume(env: &mut Env) -> anyhow::Result<()> {
    env.clients
        .admin
        .resume_queue(v1::ResumeQueueRequest { name: Q.into() })
        .await?;
    Ok(())
}

async fn bulk_submit(env: &mut Env, n: usize, batch: usize) -> anyhow::Result<Duration> {
    let t0 = Instant::now();
    let mut left = n;
    while left > 0 {
        let k = left.min(batch);
        let jobs = (0..k).map(|_| noop_spec(Q)).collect();
        env.clients
            .jobs
            .submit_jobs(v1::SubmitJobsRequest { jobs })
            .await?;
        left -= k;
    }
    Ok(t0.elapsed())
}

/// `clients` concurrent clients, each submitting one job per call.
pub async fn submit_unary(s: &Settings, n: usize, clients: usize) -> anyhow::Result<Value> {
    let env = Env::start(s, "submit-unary").await?;
    let per = n / clients;
    let t0 = Instant::now();
    let mut tasks = vec![];
    for _ in 0..clients {
        let mut jobs = env.clients.jobs.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per);
            for _ in 0..per {
                let t = Instant::now();
                jobs.submit_job(v1::SubmitJobRequest {
                    job: Some(noop_spec(Q)),
                })
                .await?;
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            Ok::<_, tonic::Status>(lat)
        }));
    }
    let mut lat = vec![];
    for t in tasks {
        lat.extend(t.await??);
    }
    let secs = t0.elapsed().as_secs_f64();
    let done = per * clients;
    env.stop().await;
    Ok(json!({
        "scenario": "submit-unary", "jobs": done, "clients": clients, "seconds": secs,
        "jobs_per_s": done as f64 / secs, "call_latency": Stats::of(lat),
    }))
}

/// SubmitJobs in batches of `batch` from `clients` concurrent clients (on
/// one connection), each sending its next batch when the last returns.
pub async fn submit_bulk(s: &Settings, n: usize, batch: usize, clients: usize) -> anyhow::Result<Value> {
    let env = Env::start(s, "submit-bulk").await?;
    let clients = clients.max(1);
    let per = n / clients;
    let t0 = Instant::now();
    let mut tasks = vec![];
    for _ in 0..clients {
        let mut jobs = env.clients.jobs.clone();
        tasks.push(tokio::spawn(async move {
            let mut left = per;
            while left > 0 {
                let k = left.min(batch);
                let specs = (0..k).map(|_| noop_spec(Q)).collect();
                jobs.submit_jobs(v1::SubmitJobsRequest { jobs: specs }).await?;
                left -= k;
            }
            Ok::<_, tonic::Status>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let took = t0.elapsed().as_secs_f64();
    let done = per * clients;
    env.stop().await;
    Ok(json!({
        "scenario": "submit-bulk", "jobs": done, "batch": batch, "clients": clients, "seconds": took,
        "jobs_per_s": done as f64 / took,
    }))
}

/// `n` jobs submitted in bulk to a paused queue, then `workers` workers
/// (noop handler) drain it: time from resume to all DONE.
pub async fn burst(
    s: &Settings,
    name: &str,
    n: usize,
    workers: usize,
    concurrency: u32,
) -> anyhow::Result<Value> {
    let mut env = Env::start(s, name).await?;
    pause(&mut env).await?;
    bulk_submit(&mut env, n, 1000).await?;
    env.add_workers(workers, concurrency).await?;
    let t0 = Instant::now();
    resume(&mut env).await?;
    let took = env.wait_done(Q, n as u64, t0).await?.as_secs_f64();
    let rss = env.server_rss_mib();
    env.stop().await;
    Ok(json!({
        "scenario": name, "jobs": n, "workers": workers, "concurrency": concurrency, "seconds": took,
        "jobs_per_s": n as f64 / took, "server_rss_mib": rss,
    }))
}

/// Single submits at `rate` for `run_for`, in the background; the task
/// returns how many failed.
fn steady_submits(env: &Env, rate: u32, run_for: Duration) -> tokio::task::JoinHandle<u64> {
    let every = Duration::from_secs_f64(1.0 / rate as f64);
    let jobs = env.clients.jobs.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let end = Instant::now() + run_for;
        let mut sent = tokio::task::JoinSet::new();
        let mut failed = 0u64;
        while Instant::now() < end {
            tick.tick().await;
            let mut jobs = jobs.clone();
            sent.spawn(async move {
                jobs.submit_job(v1::SubmitJobRequest {
                    job: Some(noop_spec(Q)),
                })
                .await
            });
            // Reap finished submits as we go, so the set stays small.
            while let Some(r) = sent.try_join_next() {
                failed += u64::from(!matches!(r, Ok(Ok(_))));
            }
        }
        while let Some(r) = sent.join_next().await {
            failed += u64::from(!matches!(r, Ok(Ok(_))));
        }
        failed
    })
}

/// A fixed offered rate of single submits; submit->start and submit->done
/// from the database's own timestamps.
pub async fn latency(
    s: &Settings,
    rate: u32,
    seconds: u64,
    workers: usize,
    concurrency: u32,
) -> anyhow::Result<Value> {
    let mut env = Env::start(s, "latency").await?;
    env.add_workers(workers, concurrency).await?;
    let n = (rate as u64 * seconds) as usize;
    let every = Duration::from_secs_f64(1.0 / rate as f64);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = tokio::task::JoinSet::new();
    let t0 = Instant::now();
    for _ in 0..n {
        tick.tick().await;
        let mut jobs = env.clients.jobs.clone();
        tasks.spawn(async move {
            jobs.submit_job(v1::SubmitJobRequest {
                job: Some(noop_spec(Q)),
            })
            .await
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    let offered_for = t0.elapsed().as_secs_f64();
    env.wait_done(Q, n as u64, t0).await?;
    let tl = env.store.bench_timelines(Q).await?;
    let ms = |a: chrono::DateTime<chrono::Utc>, b: Option<chrono::DateTime<chrono::Utc>>| {
        b.map(|b| (b - a).num_microseconds().unwrap_or(0) as f64 / 1000.0)
    };
    let start: Vec<f64> = tl.iter().filter_map(|(c, _, s, _)| ms(*c, *s)).collect();
    let done: Vec<f64> = tl.iter().filter_map(|(c, _, _, d)| ms(*c, *d)).collect();
    // Where the start latency goes: the claim (submit -> assigned), then
    // the push and the worker's ack (assigned -> started).
    let claimed: Vec<f64> = tl.iter().filter_map(|(c, a, _, _)| ms(*c, *a)).collect();
    let acked: Vec<f64> = tl.iter().filter_map(|(_, a, s, _)| ms((*a)?, *s)).collect();
    let ran: Vec<f64> = tl.iter().filter_map(|(_, _, s, d)| ms((*s)?, *d)).collect();
    env.stop().await;
    Ok(json!({
        "scenario": "latency", "rate_per_s": rate, "jobs": n, "achieved_rate_per_s": n as f64 / offered_for,
        "workers": workers, "concurrency": concurrency, "submit_to_start": Stats::of(start), "submit_to_done": Stats::of(done),
        "submit_to_assigned": Stats::of(claimed), "assigned_to_started": Stats::of(acked),
        "started_to_done": Stats::of(ran),
    }))
}

/// NFR-011: `n` workers connected to one server, a burst through them,
/// and the server's RSS.
pub async fn many_workers(s: &Settings, workers: usize, jobs: usize) -> anyhow::Result<Value> {
    let mut v = burst(s, "workers-100", jobs, workers, 4).await?;
    v["scenario"] = json!(format!("{workers}-workers"));
    Ok(v)
}

/// NFR-012/NFR-003: claim 100 from a table of `rows` jobs (`pending` of
/// them PENDING, the rest DONE): p50/p95 of the claim statement.
pub async fn big_table(s: &Settings, rows: u64, pending: u64, claims: usize) -> anyhow::Result<Value> {
    let env = Env::start(s, "big-table").await?;
    let t0 = Instant::now();
    env.store.bench_fill(Q, rows - pending, pending, 500_000).await?;
    let fill = t0.elapsed().as_secs_f64();
    env.store
        .register_worker(&jq_core::records::WorkerRegistration {
            id: "bench-claimer".into(),
            hostname: "bench".into(),
            concurrency: 100,
            queues: vec![Q.into()],
            version: "bench".into(),
            ..Default::default()
        })
        .await?;
    let queues = vec![Q.to_string()];
    let mut lat = vec![];
    for _ in 0..claims {
        let t = Instant::now();
        let got = env.store.claim("bench-claimer", &queues, 100).await?;
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
        anyhow::ensure!(got.len() == 100, "claimed {} of 100", got.len());
    }
    let plan = env.store.explain_claim(Q, 100).await?;
    env.stop().await;
    Ok(json!({
        "scenario": "big-table", "rows": rows, "pending": pending, "fill_seconds": fill,
        "claim_100": Stats::of(lat),
        "plan_uses_jobs_claim_index": plan.contains("jobs_claim"),
    }))
}

/// Issue 21's soak: a constant offered load of `rate` jobs/s for `minutes`,
/// printing each minute what the database did with it — jobs finished,
/// submit→start p50/p99 of that minute's submits (and how many had not
/// started by its end), and the on-disk size and dead tuples of every jq
/// table — so growth and drift show while it runs. Minutes are cut on the
/// database's clock. Options for the server (a retention, say) come in
/// through `--server-env`.
pub async fn soak(
    s: &Settings,
    rate: u32,
    minutes: u64,
    workers: usize,
    concurrency: u32,
) -> anyhow::Result<Value> {
    let mut env = Env::start(s, "soak").await?;
    env.add_workers(workers, concurrency).await?;
    let submitter = steady_submits(&env, rate, Duration::from_secs(minutes * 60));
    let mut from = env.store.bench_now().await?;
    let mut per_minute = vec![];
    for minute in 1..=minutes {
        tokio::time::sleep(Duration::from_secs(60)).await;
        let to = env.store.bench_now().await?;
        let done = env.store.bench_done_between(Q, from, to).await?;
        let (started, waiting) = env.store.bench_start_window(Q, from, to).await?;
        let start = Stats::of(started);
        let tables = env.store.bench_table_sizes().await?;
        let secs = (to - from).num_milliseconds() as f64 / 1000.0;
        let mib = |b: i64| b as f64 / (1 << 20) as f64;
        let sizes: Vec<String> = tables
            .iter()
            .filter(|t| t.bytes > 64 * 1024)
            .map(|t| format!("{} {:.1} MiB ({} dead)", t.name, mib(t.bytes), t.dead_tuples))
            .collect();
        println!(
            "soak minute {minute:>3}: {:>6.0} jobs/s done, start p50 {:.2} / p99 {:.2} ms ({} not started), {}",
            done as f64 / secs,
            start.p50_ms,
            start.p99_ms,
            waiting,
            sizes.join(", ")
        );
        per_minute.push(json!({
            "minute": minute, "done_per_s": done as f64 / secs, "submit_to_start": start,
            "not_started": waiting,
            "tables": tables.iter().map(|t| json!({
                "name": t.name, "bytes": t.bytes, "index_bytes": t.index_bytes, "dead_tuples": t.dead_tuples,
            })).collect::<Vec<_>>(),
        }));
        from = to;
    }
    let failed = submitter.await?;
    env.stop().await;
    Ok(json!({
        "scenario": "soak", "rate_per_s": rate, "minutes": minutes, "workers": workers,
        "concurrency": concurrency, "failed_submits": failed, "per_minute": per_minute,
    }))
}

/// Publication lag (JQ-161): a burst of `n` jobs with the relay publishing
/// every event to a Kafka-protocol broker (librdkafka's mock cluster in this
/// process, or `brokers`), then the same with a write transaction held open
/// on another database of the server from before the burst, for up to
/// `hold_s` seconds. Per event, the lag is the broker's timestamp of its
/// message (set when the relay produced it) less the event's own time; the
/// events' rate is theirs over the span of those timestamps.
pub async fn events(
    s: &Settings,
    n: usize,
    workers: usize,
    concurrency: u32,
    hold_s: u64,
    brokers: Option<String>,
) -> anyhow::Result<Vec<Value>> {
    let mut out = vec![];
    for held in [false, true] {
        let mock = match &brokers {
            Some(_) => None,
            None => Some(rdkafka::mocking::MockCluster::new(1)?),
        };
        let bootstrap = match (&brokers, &mock) {
            (Some(b), _) => b.clone(),
            (None, Some(m)) => m.bootstrap_servers(),
            (None, None) => unreachable!(),
        };
        let prefix = format!("jqbench{}.", std::process::id() as u64 * 2 + u64::from(held));
        let mut s2 = s.clone();
        s2.server_env.extend([
            ("JQ_KAFKA_BROKERS".to_string(), bootstrap.clone()),
            ("JQ_KAFKA_TOPIC_PREFIX".to_string(), prefix.clone()),
            // The mock creates topics on first produce.
            (
                "JQ_KAFKA_CREATE_TOPICS".to_string(),
                brokers.is_some().to_string(),
            ),
        ]);
        let name = if held { "events-held" } else { "events" };
        let mut env = Env::start(&s2, name).await?;
        let holder = if held {
            Some(jq_store::bench::HeldTransaction::begin(&s.admin_url).await?)
        } else {
            None
        };
        let held_since = Instant::now();
        pause(&mut env).await?;
        bulk_submit(&mut env, n, 1000).await?;
        env.add_workers(workers, concurrency).await?;
        let t0 = Instant::now();
        resume(&mut env).await?;
        let drain = env.wait_done(Q, n as u64, t0).await?.as_secs_f64();
        // Four events a job: submitted, claimed, started, completed.
        let want = n * 4;
        let (lags, span, open_at_end) = crate::kafka::read_events(
            &bootstrap,
            &prefix,
            want,
            holder,
            held_since,
            Duration::from_secs(hold_s),
        )
        .await?;
        env.stop().await;
        let st = Stats::of(lags);
        out.push(json!({
            "scenario": name, "jobs": n, "workers": workers, "drain_seconds": drain,
            "jobs_per_s": n as f64 / drain, "events": st.n, "events_per_s": st.n as f64 / span.max(1e-3),
            "publish_span_seconds": span, "lag_ms": st,
            "held_open_until_all_arrived": open_at_end,
        }));
    }
    Ok(out)
}

/// Each statement's (count, seconds) so far, from the server's
/// `jq_db_query_duration_seconds` histogram.
fn statement_totals(metrics: &str) -> std::collections::BTreeMap<String, (f64, f64)> {
    let mut out: std::collections::BTreeMap<String, (f64, f64)> = Default::default();
    for line in metrics.lines() {
        let (series, value) = match line.rsplit_once(' ') {
            Some(p) => p,
            None => continue,
        };
        let Ok(v) = value.parse::<f64>() else { continue };
        let (is_sum, rest) = if let Some(r) = series.strip_prefix("jq_db_query_duration_seconds_sum{") {
            (true, r)
        } else if let Some(r) = series.strip_prefix("jq_db_query_duration_seconds_count{") {
            (false, r)
        } else {
            continue;
        };
        let Some(name) = rest
            .split(',')
            .find_map(|kv| kv.strip_prefix("query_name=\""))
            .map(|n| n.trim_end_matches(['}', '"']).to_string())
        else {
            continue;
        };
        let e = out.entry(name).or_default();
        if is_sum {
            e.1 = v;
        } else {
            e.0 = v;
        }
    }
    out
}

/// The horizon pinned under a steady load (the claim's cost against the
/// dead rows vacuum may not remove): single submits at `rate` for
/// `minutes`; from `hold_after_s` a write transaction stays open on
/// another database of the server for `hold_s`. Every `window_s`: jobs
/// done, submit→start p50/p99 of that window's submits, the backlog
/// (PENDING), dead tuples of `jobs`, and the mean time of each of the
/// server's statements in the window (`jq_db_query_duration_seconds`),
/// slowest first. Run it on a cluster with autovacuum on
/// (`benches/scripts/pinned.sh` starts a private one).
#[allow(clippy::too_many_arguments)]
pub async fn pinned(
    s: &Settings,
    rate: u32,
    minutes: u64,
    window_s: u64,
    hold_after_s: u64,
    hold_s: u64,
    workers: usize,
    concurrency: u32,
) -> anyhow::Result<Value> {
    let mut env = Env::start(s, "pinned").await?;
    env.add_workers(workers, concurrency).await?;
    let run_for = Duration::from_secs(minutes * 60);
    let submitter = steady_submits(&env, rate, run_for);
    let t0 = Instant::now();
    let mut holder: Option<jq_store::bench::HeldTransaction> = None;
    let mut held_since = None;
    let mut from = env.store.bench_now().await?;
    let mut before = statement_totals(&env.server_metrics().await?);
    let mut windows = vec![];
    let end = run_for + Duration::from_secs(window_s * 2);
    while t0.elapsed() < end {
        // Sleep to the window's end, opening or ending the hold on the way.
        let until = t0.elapsed() + Duration::from_secs(window_s);
        while t0.elapsed() < until {
            let at = t0.elapsed().as_secs();
            if holder.is_none() && held_since.is_none() && at >= hold_after_s {
                // On jq's own database, as the third-party harness holds it:
                // on another database the horizon is held only while some
                // backend of jq's has a snapshot, which a busy server has
                // most but not all of the time.
                holder = Some(jq_store::bench::HeldTransaction::begin(&env.db_url).await?);
                held_since = Some(Instant::now());
            }
            if let (Some(_), Some(since)) = (&holder, held_since)
                && since.elapsed() >= Duration::from_secs(hold_s)
            {
                holder.take().unwrap().end().await?;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let to = env.store.bench_now().await?;
        let done = env.store.bench_done_between(Q, from, to).await?;
        let (started, waiting) = env.store.bench_start_window(Q, from, to).await?;
        let start = Stats::of(started);
        let backlog = env.store.bench_backlog(Q).await?;
        let dead = env
            .store
            .bench_table_sizes()
            .await?
            .into_iter()
            .find(|t| t.name == "jobs")
            .map_or(0, |t| t.dead_tuples);
        let now = statement_totals(&env.server_metrics().await?);
        let mut means: Vec<(String, f64, f64)> = now
            .iter()
            .filter_map(|(name, (n, secs))| {
                let (n0, s0) = before.get(name).copied().unwrap_or_default();
                (n - n0 >= 1.0).then(|| (name.clone(), (secs - s0) / (n - n0) * 1000.0, n - n0))
            })
            .collect();
        means.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap());
        let secs = (to - from).num_milliseconds() as f64 / 1000.0;
        let held = match (&holder, held_since) {
            (Some(_), Some(since)) => format!("held {:>4}s", since.elapsed().as_secs()),
            _ => "         ".into(),
        };
        println!(
            "pinned t={:>5}s {held}: {:>5.0} jobs/s done, start p50 {:>8.2} / p99 {:>9.2} ms ({} not started), \
             backlog {backlog}, jobs dead {dead}; slowest: {}",
            t0.elapsed().as_secs(),
            done as f64 / secs,
            start.p50_ms,
            start.p99_ms,
            waiting,
            means
                .iter()
                .take(5)
                .map(|(n, ms, _)| format!("{n} {ms:.2} ms"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        windows.push(json!({
            "t_s": t0.elapsed().as_secs(), "held": holder.is_some(), "done_per_s": done as f64 / secs,
            "submit_to_start": start, "not_started": waiting, "backlog": backlog, "jobs_dead_tuples": dead,
            "statement_ms": means.iter().map(|(n, ms, c)| json!({"name": n, "mean_ms": ms, "count": c})).collect::<Vec<_>>(),
        }));
        before = now;
        from = to;
    }
    if let Some(h) = holder {
        h.end().await?;
    }
    let failed = submitter.await?;
    env.stop().await;
    Ok(json!({
        "scenario": "pinned", "rate_per_s": rate, "minutes": minutes, "hold_after_s": hold_after_s,
        "hold_s": hold_s, "workers": workers, "concurrency": concurrency, "failed_submits": failed,
        "windows": windows,
    }))
}
