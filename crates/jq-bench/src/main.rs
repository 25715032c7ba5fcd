//! jq-bench: run named scenarios, print one JSON line each and a table.

use std::path::PathBuf;

use clap::Parser;
use jq_bench::{Settings, scenarios};
use serde_json::Value;

/// jq load generator. Build in release first: `cargo build --release --bins`.
#[derive(Parser, Debug)]
#[command(
    name = "jq-bench",
    after_help = "\
Scenarios: submit-unary submit-bulk burst latency scale-workers big-table, or all;
soak runs only when named (it takes --minutes), and so do events (it
publishes to Kafka: librdkafka's mock cluster unless --kafka-brokers) and
pinned (the horizon held by an open transaction under a steady --rate).

Examples:
  cargo run --release -p jq-bench -- all
  cargo run --release -p jq-bench -- burst --jobs 50000 --workers 2
  cargo run --release -p jq-bench -- big-table --big-rows 10000000
  cargo run --release -p jq-bench -- soak --rate 2000 --minutes 20 --retention-s 120
  cargo run --release -p jq-bench -- events --jobs 20000 --hold-s 30
  cargo run --release -p jq-bench -- pinned --rate 400 --minutes 8 --hold-after-s 60 --hold-s 300"
)]
struct Args {
    /// Scenarios to run (default: all).
    scenarios: Vec<String>,
    /// PostgreSQL URL allowed to create databases (one per scenario).
    #[arg(
        long,
        env = "JQ_BENCH_DB_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    db_url: String,
    /// Redis for the server's dispatch locks; "" for none.
    #[arg(long, env = "JQ_BENCH_REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    /// jq-server binary (default: next to this one).
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// Jobs per submit and burst scenario.
    #[arg(long, default_value_t = 20_000)]
    jobs: usize,
    /// Concurrent clients of submit-unary.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Concurrent clients of submit-bulk, each sending its batches of 1,000
    /// one after another.
    #[arg(long, default_value_t = 1)]
    bulk_clients: usize,
    /// Workers of burst.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Slots per worker in burst and scale-workers.
    #[arg(long, default_value_t = 128)]
    worker_concurrency: u32,
    /// Offered rate of latency (jobs/s) and how long.
    #[arg(long, default_value_t = 500)]
    rate: u32,
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Rows in big-table (mostly DONE) and how many PENDING.
    #[arg(long, default_value_t = 10_000_000)]
    big_rows: u64,
    #[arg(long, default_value_t = 100_000)]
    big_pending: u64,
    /// How long soak offers its load (at --rate jobs/s), printing a line
    /// each minute.
    #[arg(long, default_value_t = 20)]
    minutes: u64,
    /// Soak with this retention of DONE jobs (the server's
    /// retention.done_s, pruned every few seconds, with `job_events`
    /// partitions half as wide, at least 60 s); without it, the server's
    /// default (7 days), so nothing is pruned during the run.
    #[arg(long)]
    retention_s: Option<u64>,
    /// events: how long the second pass holds a write transaction open on
    /// another database of the server (from before its burst); pinned: how
    /// long it is held.
    #[arg(long, default_value_t = 30)]
    hold_s: u64,
    /// pinned: when the write transaction is opened (seconds into the
    /// run), and the length of each printed window.
    #[arg(long, default_value_t = 60)]
    hold_after_s: u64,
    #[arg(long, default_value_t = 30)]
    window_s: u64,
    /// events: a Kafka-protocol broker to publish to (default: librdkafka's
    /// mock cluster in this process).
    #[arg(long)]
    kafka_brokers: Option<String>,
    /// Extra setting for the server, `JQ_NAME=value`; repeatable. For
    /// example `--server-env JQ_KAFKA_BROKERS=<brokers>` runs every
    /// scenario with the outbox relay publishing to Kafka.
    #[arg(long = "server-env", value_parser = env_pair)]
    server_env: Vec<(String, String)>,
}

fn env_pair(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if k.starts_with("JQ_") => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not JQ_NAME=value")),
    }
}

fn f(v: &Value, path: &str) -> String {
    let mut cur = v;
    for k in path.split('.') {
        cur = &cur[k];
    }
    match cur.as_f64() {
        Some(x) if x >= 100.0 => format!("{x:.0}"),
        Some(x) => format!("{x:.2}"),
        None => "-".into(),
    }
}

fn row(v: &Value) -> String {
    let name = v["scenario"].as_str().unwrap_or("?");
    let main = match name {
        "latency" => format!(
            "start p50 {} / p90 {} / p99 {} / max {} ms; done p50 {} / p99 {} ms; \
             p50 per stage: claimed {}, started {}, done {} ms",
            f(v, "submit_to_start.p50_ms"),
            f(v, "submit_to_start.p90_ms"),
            f(v, "submit_to_start.p99_ms"),
            f(v, "submit_to_start.max_ms"),
            f(v, "submit_to_done.p50_ms"),
            f(v, "submit_to_done.p99_ms"),
            f(v, "submit_to_assigned.p50_ms"),
            f(v, "assigned_to_started.p50_ms"),
            f(v, "started_to_done.p50_ms"),
        ),
        "events" | "events-held" => format!(
            "{} events at {}/s (drain {} jobs/s); publish lag p50 {} / p99 {} / max {} ms{}",
            v["events"],
            f(v, "events_per_s"),
            f(v, "jobs_per_s"),
            f(v, "lag_ms.p50_ms"),
            f(v, "lag_ms.p99_ms"),
            f(v, "lag_ms.max_ms"),
            if v["held_open_until_all_arrived"].as_bool() == Some(true) {
                "; all arrived while the transaction was open"
            } else {
                ""
            },
        ),
        "pinned" => {
            let w = v["windows"].as_array().cloned().unwrap_or_default();
            let max = |k: &str| {
                w.iter()
                    .filter_map(|x| x.pointer(k).and_then(Value::as_f64))
                    .fold(0.0_f64, f64::max)
            };
            format!(
                "{} windows at {}/s, held {} s from {} s: worst start p99 {:.1} ms, worst backlog {:.0}",
                w.len(),
                v["rate_per_s"],
                v["hold_s"],
                v["hold_after_s"],
                max("/submit_to_start/p99_ms"),
                max("/backlog"),
            )
        }
        "soak" => {
            let minutes = v["per_minute"].as_array().map_or(0, Vec::len);
            let last = &v["per_minute"][minutes.saturating_sub(1)];
            format!(
                "{} min at {}/s: last minute {} jobs/s done, start p99 {} ms; {} failed submits",
                minutes,
                v["rate_per_s"],
                f(last, "done_per_s"),
                f(last, "submit_to_start.p99_ms"),
                v["failed_submits"]
            )
        }
        "big-table" => format!(
            "claim 100: p50 {} / p95 {} ms ({} rows, {} pending)",
            f(v, "claim_100.p50_ms"),
            f(v, "claim_100.p95_ms"),
            v["rows"],
            v["pending"]
        ),
        _ => {
            let mut s = format!(
                "{} jobs/s ({} jobs in {} s)",
                f(v, "jobs_per_s"),
                v["jobs"],
                f(v, "seconds")
            );
            if let Some(c) = v.get("clients").filter(|_| name == "submit-bulk") {
                s.push_str(&format!(", {c} client(s)"));
            }
            if v.get("server_rss_mib").is_some() {
                s.push_str(&format!(", server RSS {} MiB", f(v, "server_rss_mib")));
            }
            s
        }
    };
    format!("{name:<16} {main}")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let server_bin = match a.server_bin {
        Some(p) => p,
        None => std::env::current_exe()?.with_file_name("jq-server"),
    };
    anyhow::ensure!(
        server_bin.is_file(),
        "{} not found: build it (cargo build --release --bins) or pass --server-bin",
        server_bin.display()
    );
    let s = Settings {
        admin_url: a.db_url,
        redis_url: a.redis_url,
        server_bin,
        server_env: a.server_env,
    };
    let all = [
        "submit-unary",
        "submit-bulk",
        "burst",
        "latency",
        "scale-workers",
        "big-table",
    ];
    let wanted: Vec<String> = if a.scenarios.is_empty() || a.scenarios.iter().any(|s| s == "all") {
        all.iter().map(|s| s.to_string()).collect()
    } else {
        a.scenarios
    };
    let mut results = vec![];
    for name in &wanted {
        let mut out = vec![];
        match name.as_str() {
            "submit-unary" => out.push(scenarios::submit_unary(&s, a.jobs, a.clients).await?),
            "submit-bulk" => out.push(scenarios::submit_bulk(&s, a.jobs * 5, 1000, a.bulk_clients).await?),
            "burst" => {
                out.push(scenarios::burst(&s, "burst", a.jobs, a.workers, a.worker_concurrency).await?)
            }
            "latency" => {
                out.push(scenarios::latency(&s, a.rate, a.seconds, a.workers, a.worker_concurrency).await?)
            }
            "scale-workers" => {
                for w in [1, 2, 4, 8] {
                    let v = scenarios::burst(&s, &format!("scale-{w}"), a.jobs / 2, w, a.worker_concurrency)
                        .await?;
                    out.push(v);
                }
                out.push(scenarios::many_workers(&s, 100, a.jobs / 2).await?);
            }
            "big-table" => out.push(scenarios::big_table(&s, a.big_rows, a.big_pending, 200).await?),
            "soak" => {
                let mut soak = s.clone();
                if let Some(r) = a.retention_s {
                    soak.server_env
                        .push(("JQ_RETENTION_DONE_S".into(), r.to_string()));
                    soak.server_env
                        .push(("JQ_RETENTION_INTERVAL_S".into(), r.clamp(1, 10).to_string()));
                    // Narrow partitions, so that history leaves within the
                    // run (two widths after the retention, ADR 0017).
                    soak.server_env.push((
                        "JQ_RETENTION_PARTITION_S".into(),
                        (r / 2).clamp(60, 24 * 3600).to_string(),
                    ));
                }
                let mut v =
                    scenarios::soak(&soak, a.rate, a.minutes, a.workers, a.worker_concurrency).await?;
                v["retention_s"] = serde_json::json!(a.retention_s);
                out.push(v)
            }
            "pinned" => out.push(
                scenarios::pinned(
                    &s,
                    a.rate,
                    a.minutes,
                    a.window_s,
                    a.hold_after_s,
                    a.hold_s,
                    a.workers,
                    a.worker_concurrency,
                )
                .await?,
            ),
            "events" => out.extend(
                scenarios::events(
                    &s,
                    a.jobs,
                    a.workers,
                    a.worker_concurrency,
                    a.hold_s,
                    a.kafka_brokers.clone(),
                )
                .await?,
            ),
            other => {
                anyhow::bail!("unknown scenario {other:?} (one of {all:?}, soak, events, pinned, or all)")
            }
        }
        for v in out {
            println!("{v}");
            results.push(v);
        }
    }
    println!();
    for v in &results {
        println!("{}", row(v));
    }
    Ok(())
}
