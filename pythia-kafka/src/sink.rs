//! The Kafka sink: an idempotent producer whose delivery reports settle the
//! receipts that gate commits.

use std::ffi::c_void;
use std::future::Future;
use std::ptr::NonNull;
use std::sync::Arc;
use std::time::Duration;

use pythia_core::connector::{self, Confirmation, Receipt, Sink};
use pythia_core::{Record, SinkError};
use rdkafka::ClientContext;
use rdkafka::error::{KafkaError as RdKafkaError, RDKafkaErrorCode};
use rdkafka::message::Message as _;
use rdkafka::producer::{DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::util::IntoOpaque;

use crate::config::KafkaConfig;
use crate::error::KafkaError;
use crate::produce::{self, Enqueue, Headers, Topics};

/// Sends records to Kafka; each record's receipt is settled by the broker's
/// acknowledgement, from the producer's delivery-report thread.
///
/// ```no_run
/// use pythia_core::Record;
/// # async fn demo(config: &pythia_kafka::KafkaConfig) -> Result<(), Box<dyn std::error::Error>> {
/// let sink = pythia_kafka::KafkaSink::new(config)?;
/// let confirmation = sink.produce(Record::new("hello").with_topic("greetings")).await;
/// confirmation.await?; // the broker has it
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct KafkaSink {
    inner: Arc<Inner>,
}

struct Inner {
    /// Declared before the producer: the handles are released before the
    /// client is destroyed.
    topics: Topics,
    producer: ThreadedProducer<Reports>,
    /// The producer's `message.max.bytes`.
    max_record_bytes: usize,
}

/// librdkafka's default `message.max.bytes`.
const DEFAULT_MESSAGE_MAX_BYTES: usize = 1_000_000;

impl KafkaSink {
    /// A producer for `config.brokers`, sending records that name a sink to
    /// that sink's topic (`config.sinks`) and the others to `config.output_topic`.
    pub fn new(config: &KafkaConfig) -> Result<Self, KafkaError> {
        let client = config.producer_client_config()?;
        let max_record_bytes = client
            .get("message.max.bytes")
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(DEFAULT_MESSAGE_MAX_BYTES);
        let producer: ThreadedProducer<Reports> = client.create_with_context(Reports)?;
        let topics = Topics::new(&producer, config)?;
        Ok(Self {
            inner: Arc::new(Inner {
                topics,
                producer,
                max_record_bytes,
            }),
        })
    }

    /// Sends one record outside a worker: the returned confirmation resolves
    /// when the broker acknowledged (or refused) it. Records are enqueued in
    /// the order of the calls.
    pub async fn produce(&self, record: Record) -> Confirmation {
        let (receipt, confirmation) = Receipt::channel();
        self.send(record, receipt).await;
        confirmation
    }

    /// Waits until every queued record is delivered or `timeout` passes.
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        Ok(self.inner.producer.flush(timeout)?)
    }
}

impl std::fmt::Debug for KafkaSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (default_topic, sinks) = self.inner.topics.describe();
        f.debug_struct("KafkaSink")
            .field("default_topic", &default_topic)
            .field("sinks", &sinks)
            .finish_non_exhaustive()
    }
}

/// Settles each record's receipt from its delivery report.
struct Reports;

/// A record's receipt, carried by librdkafka as the record's opaque pointer.
struct Pending(Receipt);

/// `from_ptr` takes back what `into_ptr` made; librdkafka hands each
/// record's opaque to exactly one delivery report.
impl IntoOpaque for Pending {
    fn into_ptr(self) -> *mut c_void {
        connector::receipt_into_raw(self.0).as_ptr()
    }

    unsafe fn from_ptr(ptr: *mut c_void) -> Self {
        let ptr = NonNull::new(ptr).expect("a record's opaque is its receipt");
        // SAFETY: per the trait's contract, `ptr` came from `into_ptr`.
        Self(unsafe { connector::receipt_from_raw(ptr) })
    }
}

impl ClientContext for Reports {}

impl ProducerContext for Reports {
    type DeliveryOpaque = Pending;

    fn delivery(&self, report: &DeliveryResult<'_>, Pending(receipt): Pending) {
        receipt.settle(match report {
            Ok(_) => Ok(()),
            Err((error, message)) => Err(failure(
                message.topic(),
                error.rdkafka_error_code(),
                error.to_string(),
            )),
        });
    }
}

/// Whether librdkafka or the broker refused a record for what it is (too
/// large, or invalid): sent again unchanged, it fails the same way. Other
/// failures (timeouts, outages, a purge at shutdown) say nothing about the
/// record.
fn refuses_the_record(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::MessageSizeTooLarge
            | RDKafkaErrorCode::MessageBatchTooLarge
            | RDKafkaErrorCode::InvalidMessageSize
            | RDKafkaErrorCode::InvalidRecord
    )
}

/// A failed delivery to `topic` as the runtime sees it.
fn failure(topic: &str, code: Option<RDKafkaErrorCode>, reason: String) -> SinkError {
    let topic = topic.to_owned();
    if code.is_some_and(refuses_the_record) {
        SinkError::Refused { topic, reason }
    } else {
        SinkError::Delivery { topic, reason }
    }
}

impl KafkaSink {
    /// Enqueues `record` unless the client's queue is full, in which case the
    /// record and its receipt come back.
    fn try_send(&self, record: Record, receipt: Receipt) -> Option<(Record, Receipt)> {
        let inner = &*self.inner;
        let topic = match inner.topics.route(&inner.producer, &record) {
            Ok(topic) => topic,
            Err(error) => {
                receipt.settle(Err(error));
                return None;
            }
        };
        // librdkafka allocates a header list even when it stays empty.
        let headers = (!record.headers.is_empty()).then(|| {
            Headers::new(
                record
                    .headers
                    .iter()
                    .map(|h| (h.name.as_str(), h.value.as_deref())),
            )
        });
        let enqueue = Enqueue {
            payload: record.payload.as_deref(),
            key: record.key.as_deref(),
            headers,
        };
        match produce::enqueue(&inner.producer, &topic, enqueue, Pending(receipt)) {
            Ok(()) => None,
            Err((RDKafkaErrorCode::QueueFull, Pending(receipt))) => Some((record, receipt)),
            Err((code, Pending(receipt))) => {
                let reason = RdKafkaError::MessageProduction(code).to_string();
                receipt.settle(Err(failure(topic.name(), Some(code), reason)));
                None
            }
        }
    }

    /// Retries a record while the client's queue is full, waiting for
    /// deliveries to make room.
    async fn send_when_room(&self, mut full: (Record, Receipt)) {
        loop {
            tokio::time::sleep(Duration::from_millis(5)).await;
            match self.try_send(full.0, full.1) {
                Some(again) => full = again,
                None => return,
            }
        }
    }
}

impl Sink for KafkaSink {
    /// The producer's `message.max.bytes` (librdkafka's default: 1,000,000).
    fn max_record_bytes(&self) -> Option<usize> {
        Some(self.inner.max_record_bytes)
    }

    fn send(&self, record: Record, receipt: Receipt) -> impl Future<Output = ()> + Send {
        // Enqueued at once unless the queue is full: only then is there a
        // future with state to wait in (boxed, so that every record's future
        // stays small).
        let full = self.try_send(record, receipt);
        async move {
            if let Some(full) = full {
                Box::pin(self.send_when_room(full)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_records_future_stays_small() {
        // The runtime holds it inside every message's future, and moves
        // that whole future once per message.
        let config = crate::Config::from_loader(
            pythia_core::ConfigLoader::new()
                .no_file()
                .set("kafka.brokers", "127.0.0.1:9")
                .set("kafka.group", "g")
                .set("kafka.topics", "t"),
        )
        .unwrap();
        let sink = KafkaSink::new(&config.kafka).unwrap();
        let (receipt, _) = pythia_core::connector::Receipt::channel();
        let send = sink.send(Record::new("x"), receipt);
        let size = std::mem::size_of_val(&send);
        assert!(size <= 512, "KafkaSink::send's future is {size} bytes");
    }

    #[test]
    fn only_refusals_of_the_record_itself_count_as_refused() {
        use RDKafkaErrorCode::*;
        let table = [
            (MessageSizeTooLarge, true),
            (MessageBatchTooLarge, true),
            (InvalidMessageSize, true),
            (InvalidRecord, true),
            // The way to the broker, not the record: it may go through later.
            (MessageTimedOut, false),
            (PurgeQueue, false),
            (PurgeInflight, false),
            (BrokerTransportFailure, false),
            (AllBrokersDown, false),
            (UnknownTopicOrPartition, false),
            (NotLeaderForPartition, false),
            (TopicAuthorizationFailed, false),
            (InvalidMessage, false),
            (QueueFull, false),
        ];
        for (code, refused) in table {
            assert_eq!(refuses_the_record(code), refused, "{code:?}");
            let error = failure("t", Some(code), format!("{code}"));
            assert_eq!(error.is_refused(), refused, "{code:?}: {error}");
        }
        assert!(!failure("t", None, "dropped".into()).is_refused());
    }

    #[test]
    fn the_limit_is_the_producers_message_max_bytes() {
        let mut config = crate::KafkaConfig {
            brokers: Some("127.0.0.1:1".into()),
            ..crate::KafkaConfig::default()
        };
        let sink = KafkaSink::new(&config).unwrap();
        assert_eq!(sink.max_record_bytes(), Some(DEFAULT_MESSAGE_MAX_BYTES));
        config.producer.set("message.max.bytes", "2000000");
        let sink = KafkaSink::new(&config).unwrap();
        assert_eq!(sink.max_record_bytes(), Some(2_000_000));
    }
}
