//! Runnable Pythia workers: see the files beside this one, and run them with
//! `cargo run --release --example <name>`.
//!
//! This library holds what the examples' `main` functions share to drive a
//! demo: producing input and counting what landed in output topics. The
//! workers themselves are in the example files.

#![forbid(unsafe_code)]

use std::time::{Duration, Instant};

use anyhow::Context as _;
use pythia_kafka::KafkaSink;
use pythia_kafka::core::Record;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

/// Sends `records` and waits until the broker confirmed every one.
pub async fn produce(
    sink: &KafkaSink,
    records: impl IntoIterator<Item = Record>,
) -> anyhow::Result<u64> {
    let mut confirmations = Vec::new();
    for record in records {
        confirmations.push(sink.produce(record).await);
    }
    let produced = confirmations.len() as u64;
    for confirmation in confirmations {
        confirmation.await?;
    }
    Ok(produced)
}

/// How many messages `topic` holds: the sum of its partitions' high watermarks.
pub fn message_count(brokers: &str, topic: &str) -> anyhow::Result<i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    let timeout = Duration::from_secs(10);
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .with_context(|| format!("metadata of `{topic}`"))?;
    let partitions = metadata
        .topics()
        .first()
        .map(|t| t.partitions().len())
        .unwrap_or(0);
    let mut total = 0;
    for partition in 0..partitions as i32 {
        total += consumer.fetch_watermarks(topic, partition, timeout)?.1;
    }
    Ok(total)
}

/// Waits until `done` holds, checking every few milliseconds, for at most `limit`.
pub async fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    while !done() {
        anyhow::ensure!(Instant::now() < deadline, "not done within {limit:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}
