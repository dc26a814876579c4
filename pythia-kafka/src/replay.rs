//! Replaying dead letters: moving them back to the topic they came from, once
//! the cause is fixed.
//!
//! The replay reads a dead-letter topic as consumer group `group` up to the end
//! it had when the replay began, sends each message (key, payload and original
//! headers, without the `pythia.dlq.*` ones) back to its original topic (from
//! the `pythia.dlq.topic` header) or to a chosen topic, waits until every send
//! is confirmed, and only then commits. An interrupted replay starts again
//! where the last one committed: a dead letter may be replayed twice, never lost.
//!
//! A reduced dead letter (one with `pythia.dlq.truncated`: its payload, key or
//! headers were cut to fit) is not replayed, as it is not the original
//! message: it is skipped with a warning naming where the original is
//! (`pythia.dlq.topic`/`partition`/`offset`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use pythia_core::dead_letter::header;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{Header, Headers as _, Message as _, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::config::KafkaConfig;
use crate::error::KafkaError;

/// What to replay.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ReplayOptions {
    /// The dead-letter topic to read.
    pub dead_letter_topic: String,
    /// Send everything here instead of each message's original topic.
    pub to: Option<String>,
    /// The consumer group that remembers how far replays got.
    pub group: String,
    /// Replay at most this many messages.
    pub limit: Option<u64>,
    /// Count what would be replayed, without sending or committing anything.
    pub dry_run: bool,
    /// How long to wait for the broker in each step.
    pub timeout: Duration,
}

impl ReplayOptions {
    /// Replays `dead_letter_topic` to the original topics, as group `pythia-dlq-replay`.
    pub fn new(dead_letter_topic: impl Into<String>) -> Self {
        Self {
            dead_letter_topic: dead_letter_topic.into(),
            to: None,
            group: "pythia-dlq-replay".to_owned(),
            limit: None,
            dry_run: false,
            timeout: Duration::from_secs(30),
        }
    }
}

/// What a replay did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReplaySummary {
    /// Messages sent back, per target topic.
    pub replayed: BTreeMap<String, u64>,
    /// Messages left in place (and committed past, so they are not read
    /// again): those with no `pythia.dlq.topic` header and no `to`, and
    /// reduced dead letters (`pythia.dlq.truncated`), which are not the
    /// original message.
    pub skipped: u64,
}

impl ReplaySummary {
    /// Messages sent back in all.
    pub fn total(&self) -> u64 {
        self.replayed.values().sum()
    }
}

/// Replays the dead letters of `options.dead_letter_topic` on the cluster of
/// `kafka` (its brokers and security settings). Blocks the calling thread until
/// the replay is done (call it from `spawn_blocking` in async code).
///
/// ```no_run
/// # fn demo(kafka: &pythia_kafka::KafkaConfig) -> Result<(), pythia_kafka::KafkaError> {
/// let options = pythia_kafka::ReplayOptions::new("orders.dlq");
/// let summary = pythia_kafka::replay_dead_letters(kafka, &options)?;
/// println!("replayed {}", summary.total());
/// # Ok(()) }
/// ```
pub fn replay_dead_letters(
    kafka: &KafkaConfig,
    options: &ReplayOptions,
) -> Result<ReplaySummary, KafkaError> {
    let mut consumer_config: ClientConfig = kafka.base();
    consumer_config
        .set("group.id", &options.group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false");
    let consumer: BaseConsumer = consumer_config.create()?;
    let producer: FutureProducer = kafka.producer_client_config()?.create()?;
    let topic = options.dead_letter_topic.as_str();

    // Where to start (the group's commits) and where to stop (today's end).
    let metadata = consumer.fetch_metadata(Some(topic), options.timeout)?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        return Err(KafkaError::Replay(format!(
            "dead-letter topic `{topic}` does not exist or has no partitions"
        )));
    }
    let mut wanted = TopicPartitionList::new();
    for p in &partitions {
        wanted.add_partition(topic, *p);
    }
    let committed = consumer.committed_offsets(wanted, options.timeout)?;
    let mut start = TopicPartitionList::new();
    let mut ends = BTreeMap::new();
    for p in &partitions {
        let (low, high) = consumer.fetch_watermarks(topic, *p, options.timeout)?;
        let from = match committed.find_partition(topic, *p).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => o.max(low),
            _ => low,
        };
        if from < high {
            start.add_partition_offset(topic, *p, Offset::Offset(from))?;
            ends.insert(*p, high);
        }
    }
    let mut summary = ReplaySummary::default();
    if ends.is_empty() {
        return Ok(summary);
    }
    consumer.assign(&start)?;

    let mut next: BTreeMap<i32, i64> = BTreeMap::new();
    let mut deliveries = Vec::new();
    let mut idle_since = Instant::now();
    while !ends.is_empty()
        && options
            .limit
            .is_none_or(|l| summary.total() + summary.skipped < l)
    {
        let Some(result) = consumer.poll(Duration::from_millis(100)) else {
            if idle_since.elapsed() > options.timeout {
                return Err(KafkaError::Replay(format!(
                    "no dead letters arrived from `{topic}` within {:?}",
                    options.timeout
                )));
            }
            continue;
        };
        idle_since = Instant::now();
        let message = result?;
        let (partition, offset) = (message.partition(), message.offset());
        next.insert(partition, offset + 1);
        if ends.get(&partition).is_some_and(|end| offset + 1 >= *end) {
            ends.remove(&partition);
        }
        let value = |name: &str| {
            message.headers().and_then(|hs| {
                hs.iter()
                    .filter(|h| h.key == name)
                    .last()
                    .and_then(|h| h.value)
                    .map(|v| String::from_utf8_lossy(v).into_owned())
            })
        };
        if let Some(truncated) = value(header::TRUNCATED) {
            tracing::warn!(
                partition,
                offset,
                %truncated,
                original = %format_args!(
                    "{}/{}@{}",
                    value(header::TOPIC).unwrap_or_default(),
                    value(header::PARTITION).unwrap_or_default(),
                    value(header::OFFSET).unwrap_or_default()
                ),
                "reduced dead letter, not the original message; skipped: replay the original from its topic"
            );
            summary.skipped += 1;
            continue;
        }
        let original = value(header::TOPIC);
        let Some(target) = options.to.clone().or(original) else {
            tracing::warn!(
                partition,
                offset,
                "dead letter has no {} header; skipped",
                header::TOPIC
            );
            summary.skipped += 1;
            continue;
        };
        *summary.replayed.entry(target.clone()).or_default() += 1;
        if options.dry_run {
            continue;
        }
        let delivery = resend(&producer, &message, &target)?;
        deliveries.push((target, delivery));
    }
    confirm(deliveries)?;
    if !options.dry_run && !next.is_empty() {
        let mut commit = TopicPartitionList::new();
        for (partition, offset) in &next {
            commit.add_partition_offset(topic, *partition, Offset::Offset(*offset))?;
        }
        consumer.commit(&commit, CommitMode::Sync)?;
    }
    Ok(summary)
}

/// Sends `message` (key, payload, and its headers but the `pythia.dlq.*`
/// ones) to `target`; the returned future settles with the delivery.
fn resend(
    producer: &FutureProducer,
    message: &impl rdkafka::Message,
    target: &str,
) -> Result<DeliveryFuture, KafkaError> {
    let mut headers = OwnedHeaders::new();
    if let Some(hs) = message.headers() {
        for h in hs.iter().filter(|h| !h.key.starts_with(header::PREFIX)) {
            headers = headers.insert(Header {
                key: h.key,
                value: h.value,
            });
        }
    }
    let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(target).headers(headers);
    record.payload = message.payload();
    record.key = message.key();
    producer
        .send_result(record)
        .map_err(|(error, _)| KafkaError::Client(error))
}

/// Waits for every delivery; the first failure is the error.
fn confirm(deliveries: Vec<(String, DeliveryFuture)>) -> Result<(), KafkaError> {
    for (target, delivery) in deliveries {
        match futures::executor::block_on(delivery) {
            Ok(Ok(_)) => {}
            Ok(Err((error, _))) => {
                return Err(KafkaError::Replay(format!(
                    "replay to `{target}` failed, nothing committed: {error}"
                )));
            }
            Err(_) => {
                return Err(KafkaError::Replay(
                    "the producer closed during the replay".into(),
                ));
            }
        }
    }
    Ok(())
}

/// Replays the chosen dead letters of `dead_letter_topic`, each named by
/// `(partition, offset)`, to their original topics (or to `to`), and
/// returns once every send is confirmed. No consumer group is involved:
/// what `pythia dlq replay` will read next does not move. Reduced dead
/// letters and those with no original topic (and no `to`) are skipped, as
/// [`replay_dead_letters`] does.
///
/// ```no_run
/// # fn demo(kafka: &pythia_kafka::KafkaConfig) -> Result<(), pythia_kafka::KafkaError> {
/// use std::time::Duration;
/// let summary = pythia_kafka::replay_selected(kafka, "orders.dlq", &[(0, 41)], None, Duration::from_secs(10))?;
/// assert!(summary.total() + summary.skipped == 1);
/// # Ok(()) }
/// ```
///
/// # Errors
///
/// When a chosen dead letter does not exist or cannot be read within
/// `timeout` (then nothing is sent), or a send fails.
pub fn replay_selected(
    kafka: &KafkaConfig,
    dead_letter_topic: &str,
    chosen: &[(i32, i64)],
    to: Option<&str>,
    timeout: Duration,
) -> Result<ReplaySummary, KafkaError> {
    let mut consumer_config: ClientConfig = kafka.base();
    consumer_config
        .set("group.id", "pythia-dlq-select")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false");
    let consumer: BaseConsumer = consumer_config.create()?;
    let producer: FutureProducer = kafka.producer_client_config()?.create()?;
    // Read every chosen dead letter before sending any, so a missing one
    // fails the replay with nothing sent.
    let mut messages = Vec::with_capacity(chosen.len());
    for &(partition, offset) in chosen {
        let missing = || {
            KafkaError::Replay(format!(
                "dead letter {dead_letter_topic}/{partition}@{offset} does not exist; nothing replayed"
            ))
        };
        let (low, high) = consumer.fetch_watermarks(dead_letter_topic, partition, timeout)?;
        if offset < low || offset >= high {
            return Err(missing());
        }
        let mut at = TopicPartitionList::new();
        at.add_partition_offset(dead_letter_topic, partition, Offset::Offset(offset))?;
        consumer.assign(&at)?;
        let deadline = Instant::now() + timeout;
        let message = loop {
            if Instant::now() > deadline {
                return Err(KafkaError::Replay(format!(
                    "dead letter {dead_letter_topic}/{partition}@{offset} not read within {timeout:?}; nothing replayed"
                )));
            }
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) if m.partition() == partition && m.offset() == offset => {
                    break m.detach();
                }
                Some(Ok(m)) if m.partition() == partition && m.offset() > offset => {
                    return Err(missing());
                }
                Some(Err(error)) => return Err(error.into()),
                _ => {}
            }
        };
        messages.push(message);
    }
    let _ = consumer.unassign();
    let mut summary = ReplaySummary::default();
    let mut deliveries = Vec::new();
    for message in &messages {
        let value = |name: &str| {
            message.headers().and_then(|hs| {
                hs.iter()
                    .filter(|h| h.key == name)
                    .last()
                    .and_then(|h| h.value)
                    .map(|v| String::from_utf8_lossy(v).into_owned())
            })
        };
        let target = to.map(str::to_owned).or_else(|| value(header::TOPIC));
        match target {
            Some(target) if value(header::TRUNCATED).is_none() => {
                deliveries.push((target.clone(), resend(&producer, message, &target)?));
                *summary.replayed.entry(target).or_default() += 1;
            }
            _ => summary.skipped += 1,
        }
    }
    confirm(deliveries)?;
    Ok(summary)
}
