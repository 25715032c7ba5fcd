//! Print jq lifecycle events from Kafka, decoded (SPEC §9 consumer example).
//!
//! ```sh
//! cargo run -p jq-server --example events_tail -- localhost:9092 [topic-prefix] [--from-beginning]
//! ```

use futures::StreamExt;
use jq_server::relay::{Decoded, decode};
use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};

fn job_status(v: i32) -> String {
    jq_proto::job_status_from_proto(v).map_or("-".into(), |s| s.to_string())
}

fn worker_status(v: i32) -> String {
    jq_proto::worker_status_from_proto(v).map_or("-".into(), |s| s.to_string())
}

fn when(t: Option<prost_types::Timestamp>) -> String {
    t.as_ref()
        .and_then(jq_proto::from_timestamp)
        .map_or("-".into(), |t| {
            t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let brokers = args.first().cloned().unwrap_or_else(|| "localhost:9092".into());
    let prefix = args
        .get(1)
        .filter(|a| !a.starts_with("--"))
        .cloned()
        .unwrap_or_default();
    let from_start = args.iter().any(|a| a == "--from-beginning");
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", format!("jq-events-tail-{}", std::process::id()))
        .set(
            "auto.offset.reset",
            if from_start { "earliest" } else { "latest" },
        )
        .set("enable.auto.commit", "false")
        .create()?;
    let topics: Vec<String> = jq_core::events::ALL_TOPICS
        .iter()
        .map(|t| format!("{prefix}{t}"))
        .collect();
    consumer.subscribe(&topics.iter().map(String::as_str).collect::<Vec<_>>())?;
    let mut stream = consumer.stream();
    while let Some(m) = stream.next().await {
        let m = match m {
            Ok(m) => m,
            // A topic nothing was published to yet: keep listening.
            Err(e) if e.to_string().contains("UnknownTopicOrPartition") => continue,
            Err(e) => return Err(e.into()),
        };
        let logical = m.topic().strip_prefix(&prefix).unwrap_or(m.topic()).to_string();
        match decode(&logical, m.payload().unwrap_or_default()) {
            Ok(Decoded::Job(e)) => println!(
                "{} {:<18} job={} queue={} {}->{} reason={} attempt={} worker={} event={}",
                when(e.occurred_at),
                logical,
                e.job_id,
                e.queue,
                job_status(e.from_status),
                job_status(e.to_status),
                e.reason,
                e.attempt,
                e.worker_id,
                e.event_id
            ),
            Ok(Decoded::Worker(w)) => println!(
                "{} {:<18} worker={} status={} active={}/{} event={}",
                when(w.occurred_at),
                logical,
                w.worker_id,
                worker_status(w.status),
                w.active_jobs,
                w.concurrency,
                w.event_id
            ),
            Err(e) => eprintln!("undecodable message on {}: {e}", m.topic()),
        }
    }
    Ok(())
}
