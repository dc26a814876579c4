//! The Kafka sink: an idempotent producer whose delivery reports settle the
//! receipts that gate commits.

use std::ffi::c_void;
use std::future::Future;
use std::ptr::NonNull;
use std::sync::Arc;
use std::time::Duration;

use pythia_core::{Confirmation, Receipt, Record, Sink, SinkError};
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
}

impl KafkaSink {
    /// A producer for `config.brokers`, sending records that name a sink to
    /// that sink's topic (`config.sinks`) and the others to `config.output_topic`.
    pub fn new(config: &KafkaConfig) -> Result<Self, KafkaError> {
        let producer: ThreadedProducer<Reports> = config
            .producer_client_config()?
            .create_with_context(Reports)?;
        let topics = Topics::new(&producer, config)?;
        Ok(Self {
            inner: Arc::new(Inner { topics, producer }),
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
        self.0.into_raw().as_ptr()
    }

    unsafe fn from_ptr(ptr: *mut c_void) -> Self {
        let ptr = NonNull::new(ptr).expect("a record's opaque is its receipt");
        // SAFETY: per the trait's contract, `ptr` came from `into_ptr`.
        Self(unsafe { Receipt::from_raw(ptr) })
    }
}

impl ClientContext for Reports {}

impl ProducerContext for Reports {
    type DeliveryOpaque = Pending;

    fn delivery(&self, report: &DeliveryResult<'_>, Pending(receipt): Pending) {
        receipt.settle(match report {
            Ok(_) => Ok(()),
            Err((error, message)) => Err(SinkError::Delivery {
                topic: message.topic().to_owned(),
                reason: error.to_string(),
            }),
        });
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
                receipt.settle(Err(SinkError::Delivery {
                    topic: topic.name().to_owned(),
                    reason: RdKafkaError::MessageProduction(code).to_string(),
                }));
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
