//! The baselines Pythia is measured against by address: rdkafka loops a
//! user could write instead, each with librdkafka's defaults but one:
//! `fetch.queue.backoff.ms = 10`. Its 1000 ms default idles a consumer for a
//! second whenever its queue holds `queued.min.messages`, which held the poll
//! loop near 400k msg/s here: a baseline that slow would flatter Pythia.
//!
//! - [`classic`]: one `poll` per message, its offset stored once handled,
//!   auto-commit. The loop most Kafka consumers are.
//! - [`fastest`]: every partition's messages split into a queue of their own
//!   before joining, read a batch at a time (`rd_kafka_consume_batch_queue`),
//!   the last offset of each batch stored, auto-commit. No other thread, no
//!   allocation per message: the fastest consumer rdkafka allows.
//! - [`pipeline`]: the classic loop producing one record per message; an
//!   input's offset is stored only when its output's delivery is confirmed
//!   (delivery reports are served every 64 messages).

use std::collections::HashMap;
use std::ffi::CString;
use std::ptr::{self, NonNull};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use rdkafka::bindings as rd;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, ClientContext, Message as _, Offset, TopicPartitionList};

use super::progress::Progress;

/// Messages read from one partition's queue per call in [`fastest`].
const BATCH: usize = 1024;

/// The properties every baseline sets: where the brokers are (with the
/// connection's security settings), its group, reading from the start, and
/// the fetch backoff above. Offsets are stored by the loop once a message is
/// handled and committed by librdkafka's auto-commit; everything else is
/// librdkafka's default.
pub(crate) fn consumer_config(connection: &ClientConfig, group: &str) -> ClientConfig {
    let mut config = connection.clone();
    config
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.offset.store", "false")
        .set("fetch.queue.backoff.ms", "10");
    config
}

/// One `poll` per message, until `progress` is finished or `timeout`.
pub(crate) fn classic(
    config: &ClientConfig,
    topic: &str,
    timeout: Duration,
    progress: &Progress,
) -> anyhow::Result<()> {
    let consumer: BaseConsumer = config.create().context("creating the consumer")?;
    consumer.subscribe(&[topic])?;
    let deadline = Instant::now() + timeout;
    while !progress.is_finished() {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                std::hint::black_box(message.payload());
                consumer.store_offset_from_message(&message)?;
                progress.tick();
            }
            Some(Err(error)) => tracing::warn!(%error, "consumer error"),
            None if Instant::now() > deadline => {
                bail!("the classic loop did not finish within {timeout:?}")
            }
            None => {}
        }
    }
    Ok(())
}

/// A partition's queue, split off the consumer's before it joins.
struct Split {
    partition: i32,
    queue: NonNull<rd::rd_kafka_queue_t>,
}

impl Split {
    fn new(consumer: &BaseConsumer, topic: &str, partition: i32) -> anyhow::Result<Self> {
        let name = CString::new(topic)?;
        // SAFETY: a live consumer handle and a C string.
        let queue = unsafe {
            rd::rd_kafka_queue_get_partition(
                consumer.client().native_ptr(),
                name.as_ptr(),
                partition,
            )
        };
        let queue = NonNull::new(queue)
            .with_context(|| format!("librdkafka has no queue for {topic}/{partition}"))?;
        // SAFETY: a live queue. Forwarding it to nothing keeps the partition's
        // messages here when it is assigned later.
        unsafe { rd::rd_kafka_queue_forward(queue.as_ptr(), ptr::null_mut()) };
        Ok(Self { partition, queue })
    }

    /// Hands each waiting message's payload to `each` (at most [`BATCH`])
    /// and returns the count and the last offset.
    fn read(&self, each: &mut impl FnMut(&[u8])) -> (usize, i64) {
        let mut raw: [*mut rd::rd_kafka_message_t; BATCH] = [ptr::null_mut(); BATCH];
        // SAFETY: a live queue and room for BATCH pointers.
        let count = unsafe {
            rd::rd_kafka_consume_batch_queue(self.queue.as_ptr(), 0, raw.as_mut_ptr(), BATCH)
        };
        let count = usize::try_from(count).unwrap_or(0);
        let mut last = -1;
        let mut read = 0;
        for &message in &raw[..count] {
            // SAFETY: librdkafka handed these messages over; each is destroyed
            // once, after its fields are read.
            unsafe {
                let m = &*message;
                if m.err == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                    let payload = if m.payload.is_null() {
                        &[][..]
                    } else {
                        std::slice::from_raw_parts(m.payload as *const u8, m.len)
                    };
                    each(payload);
                    last = m.offset;
                    read += 1;
                }
                rd::rd_kafka_message_destroy(message);
            }
        }
        (read, last)
    }
}

impl Drop for Split {
    fn drop(&mut self) {
        // SAFETY: releases the handle taken in `new`, before the consumer goes.
        unsafe { rd::rd_kafka_queue_destroy(self.queue.as_ptr()) };
    }
}

/// Per-partition queues read in batches, until `progress` is finished or
/// `timeout`. `partitions` is the topic's partition count.
pub(crate) fn fastest(
    config: &ClientConfig,
    topic: &str,
    partitions: i32,
    timeout: Duration,
    progress: &Progress,
) -> anyhow::Result<()> {
    let consumer: BaseConsumer = config.create().context("creating the consumer")?;
    let splits = (0..partitions)
        .map(|p| Split::new(&consumer, topic, p))
        .collect::<anyhow::Result<Vec<_>>>()?;
    consumer.subscribe(&[topic])?;
    let deadline = Instant::now() + timeout;
    let mut each = |payload: &[u8]| {
        std::hint::black_box(payload);
    };
    while !progress.is_finished() {
        let mut read = 0;
        for split in &splits {
            let (count, last) = split.read(&mut each);
            if count > 0 {
                consumer.store_offset(topic, split.partition, last)?;
                progress.tick_many(count as u64);
                read += count;
            }
        }
        // Rebalances and errors arrive on the consumer's own queue.
        let wait = if read == 0 {
            Duration::from_millis(1)
        } else {
            Duration::ZERO
        };
        if let Some(Err(error)) = consumer.poll(wait) {
            tracing::warn!(%error, "consumer error");
        }
        if read == 0 && Instant::now() > deadline {
            bail!("the fastest loop did not finish within {timeout:?}");
        }
    }
    drop(splits);
    Ok(())
}

/// Notes each input whose output is delivered; the loop stores the
/// offsets noted (the highest per partition) every so often.
struct NoteDelivered {
    delivered: Mutex<HashMap<i32, i64>>,
    progress: Arc<Progress>,
}

impl ClientContext for NoteDelivered {}

impl ProducerContext for NoteDelivered {
    /// The input's partition (high 16 bits) and offset (low 48).
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, input: usize) {
        match result {
            Ok(_) => {
                let (partition, offset) = ((input >> 48) as i32, (input & OFFSET_MASK) as i64);
                let mut delivered = self.delivered.lock().unwrap_or_else(|p| p.into_inner());
                let noted = delivered.entry(partition).or_insert(offset);
                *noted = (*noted).max(offset);
                self.progress.tick();
            }
            Err((error, _)) => tracing::warn!(%error, "delivery failed"),
        }
    }
}

/// Stores the offsets after the inputs noted as delivered.
fn store_delivered(
    consumer: &BaseConsumer,
    topic: &str,
    context: &NoteDelivered,
) -> anyhow::Result<()> {
    let noted = std::mem::take(&mut *context.delivered.lock().unwrap_or_else(|p| p.into_inner()));
    if noted.is_empty() {
        return Ok(());
    }
    let mut positions = TopicPartitionList::new();
    for (partition, offset) in noted {
        positions.add_partition_offset(topic, partition, Offset::Offset(offset + 1))?;
    }
    consumer.store_offsets(&positions)?;
    Ok(())
}

const OFFSET_MASK: usize = (1 << 48) - 1;

/// The classic loop producing each payload to `output`.
pub(crate) fn pipeline(
    consumer: &ClientConfig,
    producer: &ClientConfig,
    topic: &str,
    output: &str,
    timeout: Duration,
    progress: Arc<Progress>,
) -> anyhow::Result<()> {
    let consumer: BaseConsumer = consumer.create().context("creating the consumer")?;
    consumer.subscribe(&[topic])?;
    let producer: BaseProducer<NoteDelivered> = producer
        .create_with_context(NoteDelivered {
            delivered: Mutex::new(HashMap::new()),
            progress: progress.clone(),
        })
        .context("creating the producer")?;
    let deadline = Instant::now() + timeout;
    let mut seen = 0u64;
    while !progress.is_finished() {
        let wait = if producer.in_flight_count() > 0 {
            Duration::ZERO
        } else {
            Duration::from_millis(100)
        };
        match consumer.poll(wait) {
            Some(Ok(message)) => {
                let input = ((message.partition() as usize) << 48)
                    | (message.offset() as usize & OFFSET_MASK);
                let mut record = BaseRecord::with_opaque_to(output, input)
                    .payload(message.payload().unwrap_or_default());
                loop {
                    match producer.send::<[u8], [u8]>(record) {
                        Ok(()) => break,
                        Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                            record = back;
                            producer.poll(Duration::from_millis(1));
                        }
                        Err((error, _)) => return Err(error).context("producing"),
                    }
                }
                seen += 1;
                if !seen.is_multiple_of(64) {
                    continue;
                }
            }
            Some(Err(error)) => tracing::warn!(%error, "consumer error"),
            None if Instant::now() > deadline => {
                bail!("the pipeline loop did not finish within {timeout:?}")
            }
            None => {}
        }
        // Delivery reports, then the offsets they allow to store.
        producer.poll(Duration::ZERO);
        store_delivered(&consumer, topic, producer.context())?;
    }
    producer.flush(Duration::from_secs(10))?;
    store_delivered(&consumer, topic, producer.context())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_baseline_sets_only_its_group_and_offset_handling() {
        let mut connection = ClientConfig::new();
        connection.set("bootstrap.servers", "b:9092");
        let config = consumer_config(&connection, "g");
        let set: Vec<(&str, &str)> = config.config_map().into_iter().collect();
        assert_eq!(
            set,
            [
                ("auto.offset.reset", "earliest"),
                ("bootstrap.servers", "b:9092"),
                ("enable.auto.offset.store", "false"),
                ("fetch.queue.backoff.ms", "10"),
                ("group.id", "g"),
            ]
        );
    }

    #[test]
    fn an_input_position_survives_the_delivery_opaque() {
        let (partition, offset) = (1023usize, 123_456_789_012usize);
        let input = (partition << 48) | (offset & OFFSET_MASK);
        assert_eq!(
            ((input >> 48) as i32, (input & OFFSET_MASK) as i64),
            (1023, 123_456_789_012)
        );
    }
}
