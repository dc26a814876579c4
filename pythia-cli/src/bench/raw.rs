//! The baselines: hand-written rdkafka loops, the best a plain consumer does.
//!
//! Both store each message's offset after handling it and commit the stored
//! offsets asynchronously every `commit_interval`, with the same client
//! properties Pythia uses.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, ClientContext, Message as _};

use super::progress::Progress;

/// Checks of the clock (commit, deadline) happen once per this many messages.
const CLOCK_EVERY: u64 = 256;

fn subscribe(consumer: &ClientConfig, topic: &str) -> anyhow::Result<BaseConsumer> {
    let consumer: BaseConsumer = consumer.create().context("creating the raw consumer")?;
    consumer.subscribe(&[topic])?;
    Ok(consumer)
}

/// Consumes until `progress` is finished: store offset per message, batched
/// asynchronous commits.
pub(crate) fn consume(
    consumer: &ClientConfig,
    topic: &str,
    commit_interval: Duration,
    timeout: Duration,
    progress: &Progress,
) -> anyhow::Result<()> {
    let consumer = subscribe(consumer, topic)?;
    let deadline = Instant::now() + timeout;
    let mut last_commit = Instant::now();
    let mut seen = 0u64;
    while !progress.is_finished() {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                std::hint::black_box(message.payload());
                consumer.store_offset_from_message(&message)?;
                progress.tick();
                seen += 1;
                if !seen.is_multiple_of(CLOCK_EVERY) {
                    continue;
                }
            }
            Some(Err(error)) => tracing::warn!(%error, "raw consumer error"),
            None => {}
        }
        if last_commit.elapsed() >= commit_interval {
            let _ = consumer.commit_consumer_state(CommitMode::Async);
            last_commit = Instant::now();
        }
        if Instant::now() > deadline {
            bail!("the raw consumer did not finish within {timeout:?}");
        }
    }
    let _ = consumer.commit_consumer_state(CommitMode::Sync);
    Ok(())
}

/// Ticks `progress` on every delivered record.
struct Delivered(Arc<Progress>);

impl ClientContext for Delivered {}

impl ProducerContext for Delivered {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => self.0.tick(),
            Err((error, _)) => tracing::warn!(%error, "raw pipeline delivery failed"),
        }
    }
}

/// Consumes, produces each payload to `output`, and counts a message done when
/// its output is delivered. Offsets are stored per message and committed after
/// a flush of the producer, so a commit never covers an undelivered output.
pub(crate) fn pipeline(
    consumer: &ClientConfig,
    producer: &ClientConfig,
    topic: &str,
    output: &str,
    commit_interval: Duration,
    timeout: Duration,
    progress: Arc<Progress>,
) -> anyhow::Result<()> {
    let consumer = subscribe(consumer, topic)?;
    let producer: ThreadedProducer<Delivered> = producer
        .create_with_context(Delivered(progress.clone()))
        .context("creating the raw producer")?;
    let deadline = Instant::now() + timeout;
    let mut last_commit = Instant::now();
    let mut seen = 0u64;
    while !progress.is_finished() {
        match consumer.poll(Duration::from_millis(20)) {
            Some(Ok(message)) => {
                let mut record: BaseRecord<'_, [u8], [u8]> =
                    BaseRecord::to(output).payload(message.payload().unwrap_or_default());
                loop {
                    match producer.send(record) {
                        Ok(()) => break,
                        Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                            record = back;
                            std::thread::sleep(Duration::from_millis(1));
                        }
                        Err((error, _)) => return Err(error).context("raw pipeline send"),
                    }
                }
                consumer.store_offset_from_message(&message)?;
                seen += 1;
                if !seen.is_multiple_of(CLOCK_EVERY) {
                    continue;
                }
            }
            Some(Err(error)) => tracing::warn!(%error, "raw consumer error"),
            None => {}
        }
        if last_commit.elapsed() >= commit_interval {
            producer.flush(Duration::from_secs(10))?;
            let _ = consumer.commit_consumer_state(CommitMode::Async);
            last_commit = Instant::now();
        }
        if Instant::now() > deadline {
            bail!("the raw pipeline did not finish within {timeout:?}");
        }
    }
    producer.flush(Duration::from_secs(10))?;
    let _ = consumer.commit_consumer_state(CommitMode::Sync);
    Ok(())
}
