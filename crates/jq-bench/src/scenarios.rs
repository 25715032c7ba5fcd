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
