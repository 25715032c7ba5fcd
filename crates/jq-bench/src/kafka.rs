//! Reading back what the relay published, for the `events` scenario.

use std::time::{Duration, Instant};

use jq_proto::v1;
use prost::Message as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

/// Wait until the broker holds `want` messages on the topics under
/// `prefix`, ending `holder` once `hold` has passed since `since` (so a
/// relay that waits for it gets its events out then), and read them all.
/// Returns each job event's lag in ms (the message's timestamp less the
/// event's time), the span of the messages' timestamps in seconds, and
/// whether `holder` was still open when the last one had arrived.
pub async fn read_events(
    brokers: &str,
    prefix: &str,
    want: usize,
    mut holder: Option<jq_store::bench::HeldTransaction>,
    since: Instant,
    hold: Duration,
) -> anyhow::Result<(Vec<f64>, f64, bool)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("{prefix}bench"))
        .set("enable.auto.commit", "false")
        .create()?;
    let t0 = Instant::now();
    let parts = loop {
        if holder.is_some() && since.elapsed() >= hold {
            holder.take().unwrap().end().await?;
        }
        let md = consumer.fetch_metadata(None, Duration::from_secs(10))?;
        let mut parts = vec![];
        let mut held = 0i64;
        for t in md.topics().iter().filter(|t| t.name().starts_with(prefix)) {
            for p in t.partitions() {
                let (low, high) = consumer.fetch_watermarks(t.name(), p.id(), Duration::from_secs(10))?;
                held += high - low;
                parts.push((t.name().to_string(), p.id(), high));
            }
        }
        if held as usize >= want {
            break parts;
        }
        anyhow::ensure!(
            t0.elapsed() < hold + Duration::from_secs(300),
            "only {held} of {want} events reached the broker"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let open_at_end = match holder.as_mut() {
        Some(h) => h.holds_the_horizon().await?,
        None => false,
    };
    if let Some(h) = holder {
        h.end().await?;
    }
    let mut tpl = TopicPartitionList::new();
    for (topic, p, _) in &parts {
        tpl.add_partition_offset(topic, *p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let mut left: usize = parts.iter().map(|(_, _, h)| *h as usize).sum();
    let (mut lags, mut first, mut last) = (Vec::with_capacity(want), i64::MAX, i64::MIN);
    while left > 0 {
        let m = match consumer.poll(Duration::from_secs(30)) {
            Some(m) => m?,
            None => anyhow::bail!("the broker holds {left} messages it does not deliver"),
        };
        left -= 1;
        let Some(ts) = m.timestamp().to_millis() else {
            continue;
        };
        let Ok(e) = v1::LifecycleEvent::decode(m.payload().unwrap_or_default()) else {
            continue;
        };
        let Some(at) = e.occurred_at else { continue };
        let at_ms = at.seconds as f64 * 1000.0 + f64::from(at.nanos) / 1e6;
        lags.push(ts as f64 - at_ms);
        first = first.min(ts);
        last = last.max(ts);
    }
    Ok((lags, (last - first) as f64 / 1000.0, open_at_end))
}
