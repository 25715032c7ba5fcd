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
        let m = m?;
        let logical = m.topic().strip_prefix(&prefix).unwrap_or(m.topic()).to_string();
        match decode(&logical, m.payload().unwrap_or_default()) {
            Ok(Decoded::Job(e)) => println!(
                "{} {:<18} job={} queue={} {}->{} reason={} attempt={} worker={} event={}",
                e.occurred_at.map(|t| t.seconds).unwrap_or(0),
                logical,
                e.job_id,
                e.queue,
                e.from_status,
                e.to_status,
                e.reason,
                e.attempt,
                e.worker_id,
                e.event_id
            ),
            Ok(Decoded::Worker(w)) => println!(
                "{} {:<18} worker={} status={} active={}/{} event={}",
                w.occurred_at.map(|t| t.seconds).unwrap_or(0),
                logical,
                w.worker_id,
                w.status,
                w.active_jobs,
                w.concurrency,
                w.event_id
            ),
            Err(e) => eprintln!("undecodable message on {}: {e}", m.topic()),
        }
    }
    Ok(())
}
