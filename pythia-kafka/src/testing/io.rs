//! The kit's own clients: producing the inputs, watching the group's
//! commits until the worker is idle, and reading every topic back.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use pythia_core::{Header, Headers, Message, PartitionId};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers as _, Message as _, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use super::error::{TestRunError, Uncommitted};
use super::{Input, POLL_INTERVAL, READER_GROUP, REQUEST_TIMEOUT, Topics};
use crate::config::{Config, KafkaConfig};
use crate::error::KafkaError;

/// The dead-letter topics of the worker's inputs, if dead letters are on.
pub(super) fn dead_letter_topics(config: &Config) -> Vec<String> {
    let dead_letter = &config.worker.dead_letter;
    let mut topics: Vec<String> = (config.kafka.topics.iter())
        .filter(|_| dead_letter.enabled)
        .map(|input| dead_letter.topic_for(input))
        .collect();
    topics.sort();
    topics.dedup();
    topics
}

/// Produces every input, in order, and waits until all are delivered.
pub(super) async fn produce(
    kafka: &KafkaConfig,
    topics: &Topics,
    inputs: Vec<Input>,
) -> Result<(), TestRunError> {
    let producer: FutureProducer = kafka
        .base()
        .set("enable.idempotence", "true")
        .set("linger.ms", "1")
        .create()?;
    let mut turn: BTreeMap<&str, i32> = BTreeMap::new();
    let mut deliveries = Vec::with_capacity(inputs.len());
    for input in &inputs {
        let topic = input.topic.as_deref().unwrap_or(&topics.first_input);
        let partition = match (input.partition, &input.key) {
            (Some(partition), _) => Some(partition),
            (None, Some(_)) => None,
            (None, None) => {
                let next = turn.entry(topic).or_default();
                let partition = *next;
                *next = (*next + 1) % topics.partitions.get(topic).copied().unwrap_or(1);
                Some(partition)
            }
        };
        let mut record = FutureRecord::<[u8], [u8]>::to(topic);
        if let Some(partition) = partition {
            record = record.partition(partition);
        }
        if let Some(key) = &input.key {
            record = record.key(key.as_ref());
        }
        if let Some(payload) = &input.payload {
            record = record.payload(payload.as_ref());
        }
        if !input.headers.is_empty() {
            let headers = input.headers.iter().fold(OwnedHeaders::new(), |all, h| {
                all.insert(rdkafka::message::Header {
                    key: &h.name,
                    value: h.value.as_deref(),
                })
            });
            record = record.headers(headers);
        }
        let delivery = producer.send_result(record).map_err(|(error, _)| error)?;
        deliveries.push(delivery);
    }
    for delivery in deliveries {
        match delivery.await {
            Ok(Ok(_)) => {}
            Ok(Err((error, _))) => return Err(error.into()),
            Err(_canceled) => return Err(rdkafka::error::KafkaError::Canceled.into()),
        }
    }
    Ok(())
}

/// Polls the group's commits until every input partition is committed to
/// its end, or `timeout` passes.
pub(super) async fn wait_until_idle(
    probe: &Arc<Probe>,
    timeout: Duration,
) -> Result<(), TestRunError> {
    let deadline = Instant::now() + timeout;
    loop {
        let uncommitted = probe.clone().uncommitted().await?;
        if uncommitted.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(TestRunError::Timeout {
                after: timeout,
                uncommitted,
            });
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Reads the group's committed offsets and the inputs' watermarks with a
/// consumer configured in the worker's group that never joins it.
pub(super) struct Probe {
    consumer: BaseConsumer,
    /// Every partition of every input topic.
    inputs: Vec<(String, i32)>,
}

impl Probe {
    pub(super) fn new(kafka: &KafkaConfig) -> Result<Self, KafkaError> {
        let consumer: BaseConsumer = kafka
            .base()
            .set("group.id", kafka.group.as_deref().unwrap_or_default())
            .set("enable.auto.commit", "false")
            .create()?;
        let inputs = (kafka.topics.iter())
            .flat_map(|topic| (0..kafka.embedded_partitions).map(move |p| (topic.clone(), p)))
            .collect();
        Ok(Self { consumer, inputs })
    }

    /// The input partitions whose committed offset is short of their high
    /// watermark; one with nothing committed counts from its low watermark.
    pub(super) async fn uncommitted(self: Arc<Self>) -> Result<Vec<Uncommitted>, TestRunError> {
        blocking(move || {
            let committed = self.read_committed()?;
            let mut behind = Vec::new();
            for (topic, partition) in &self.inputs {
                let (low, high) =
                    (self.consumer).fetch_watermarks(topic, *partition, REQUEST_TIMEOUT)?;
                let at = committed.get(&(topic.clone(), *partition)).copied();
                if at.unwrap_or(low) < high {
                    behind.push(Uncommitted {
                        topic: topic.clone(),
                        partition: *partition,
                        committed: at,
                        high,
                    });
                }
            }
            Ok(behind)
        })
        .await
    }

    pub(super) async fn committed(
        self: Arc<Self>,
    ) -> Result<BTreeMap<(String, i32), i64>, TestRunError> {
        blocking(move || self.read_committed()).await
    }

    fn read_committed(&self) -> Result<BTreeMap<(String, i32), i64>, TestRunError> {
        let mut tpl = TopicPartitionList::new();
        for (topic, partition) in &self.inputs {
            tpl.add_partition(topic, *partition);
        }
        let committed = self.consumer.committed_offsets(tpl, REQUEST_TIMEOUT)?;
        Ok(committed
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(offset) => Some(((e.topic().to_owned(), e.partition()), offset)),
                _ => None,
            })
            .collect())
    }
}

/// Runs blocking client calls off the runtime's threads; a panic in them
/// is the caller's.
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, TestRunError> + Send + 'static,
) -> Result<T, TestRunError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result,
        Err(error) => std::panic::resume_unwind(error.into_panic()),
    }
}

/// Records read back, by topic.
pub(super) type ByTopic = BTreeMap<String, Vec<Message<Option<Bytes>>>>;

/// Every record of `topics`, each topic's in partition and offset order,
/// read by a consumer assigned each partition from its low to its high
/// watermark.
pub(super) fn read_topics(kafka: &KafkaConfig, topics: &[String]) -> Result<ByTopic, TestRunError> {
    let consumer: BaseConsumer = kafka
        .base()
        .set("group.id", READER_GROUP)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("fetch.wait.max.ms", "10")
        .create()?;
    let mut read = ByTopic::new();
    let mut ends = BTreeMap::new();
    let mut tpl = TopicPartitionList::new();
    for topic in topics {
        read.insert(topic.clone(), Vec::new());
        let metadata = consumer.fetch_metadata(Some(topic), REQUEST_TIMEOUT)?;
        let partitions = metadata
            .topics()
            .first()
            .map_or(0, |t| t.partitions().len());
        for partition in 0..partitions as i32 {
            let (low, high) = consumer.fetch_watermarks(topic, partition, REQUEST_TIMEOUT)?;
            if high > low {
                tpl.add_partition_offset(topic, partition, Offset::Offset(low))?;
                ends.insert((topic.clone(), partition), high);
            }
        }
    }
    if ends.is_empty() {
        return Ok(read);
    }
    consumer.assign(&tpl)?;
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    while !ends.is_empty() {
        if Instant::now() > deadline {
            let ((topic, _), _) = ends.first_key_value().expect("not empty");
            return Err(TestRunError::Read {
                topic: topic.clone(),
                reason: format!("not read to the end within {REQUEST_TIMEOUT:?}; left: {ends:?}"),
            });
        }
        let Some(polled) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let message = polled?;
        let place = (message.topic().to_owned(), message.partition());
        if ends
            .get(&place)
            .is_some_and(|high| message.offset() + 1 >= *high)
        {
            ends.remove(&place);
        }
        let headers = message.headers().map(|headers| {
            (headers.iter())
                .map(|h| Header {
                    name: h.key.to_owned(),
                    value: h.value.map(Bytes::copy_from_slice),
                })
                .collect::<Headers>()
        });
        let mut copy = Message::new(
            PartitionId::new(place.0.as_str(), place.1),
            message.offset(),
            message.payload().map(Bytes::copy_from_slice),
        )
        .with_headers(headers.unwrap_or_default());
        if let Some(key) = message.key() {
            copy = copy.with_key(Bytes::copy_from_slice(key));
        }
        if let Some(ms) = message.timestamp().to_millis() {
            copy = copy.with_timestamp_ms(ms);
        }
        read.entry(place.0).or_default().push(copy);
    }
    for records in read.values_mut() {
        records.sort_by_key(|m| (m.partition(), m.offset()));
    }
    Ok(read)
}
