//! The `Sink` trait: where outputs go, and how their delivery is confirmed.

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;

use crate::message::Headers;

pub use crate::delivery::{Confirmation, Receipt};

/// An encoded output, ready for a sink.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Record {
    /// Target topic; `None` for the named sink's topic, else the default topic.
    pub topic: Option<Arc<str>>,
    /// The named sink the record goes to; `None` for the default.
    pub sink: Option<&'static str>,
    /// The key, if any.
    pub key: Option<Bytes>,
    /// The encoded payload; `None` for a null payload (a dead letter keeps its
    /// original's).
    pub payload: Option<Bytes>,
    /// Headers to send.
    pub headers: Headers,
}

impl Record {
    /// A record for the default topic with this payload.
    ///
    /// ```
    /// let record = pythia_core::Record::new("hello").with_key("k").with_topic("greetings");
    /// assert_eq!(record.topic.as_deref(), Some("greetings"));
    /// ```
    pub fn new(payload: impl Into<Bytes>) -> Self {
        Self {
            topic: None,
            sink: None,
            key: None,
            payload: Some(payload.into()),
            headers: Headers::new(),
        }
    }

    /// Sets the key.
    pub fn with_key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Sets the named sink.
    pub fn with_sink(mut self, sink: &'static str) -> Self {
        self.sink = Some(sink);
        self
    }

    /// Sets the target topic.
    pub fn with_topic(mut self, topic: impl Into<Arc<str>>) -> Self {
        self.topic = Some(topic.into());
        self
    }

    /// Sets the headers.
    pub fn with_headers(mut self, headers: Headers) -> Self {
        self.headers = headers;
        self
    }
}

/// Why an output was not delivered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SinkError {
    /// The output names no topic and the sink has no default topic.
    #[error(
        "output has no topic: set the worker's output topic (kafka.output_topic) or call Output::to_topic"
    )]
    NoTopic,
    /// The output names a sink the worker does not declare.
    #[error(
        "output names the sink `{sink}`, which has no topic: declare it with #[pythia(sinks({sink} = \"topic\"))] or set kafka.sinks.{sink}"
    )]
    UnknownSink {
        /// The sink's name.
        sink: String,
    },
    /// The broker refused the record or did not confirm it in time.
    #[error("delivery to `{topic}` failed: {reason}")]
    Delivery {
        /// The target topic.
        topic: String,
        /// The broker's or client's reason.
        reason: String,
    },
    /// The sink dropped the record's [`Receipt`] without settling it.
    #[error("the sink dropped an output without reporting its delivery")]
    Dropped,
    /// The client or the broker refused the record itself (too large, or
    /// invalid): sent again unchanged it would fail the same way. A dead
    /// letter refused so is sent again reduced (see
    /// [`dead_letter`](crate::dead_letter)).
    #[error(
        "`{topic}` refused the record: {reason}; raise the limit (the producer's message.max.bytes, the topic's max.message.bytes) or send smaller records"
    )]
    Refused {
        /// The target topic.
        topic: String,
        /// The broker's or client's reason, with its error code.
        reason: String,
    },
}

impl SinkError {
    /// Whether the record itself was refused ([`SinkError::Refused`]), as
    /// opposed to a failure of the way to the broker (an outage, a timeout,
    /// a shutdown) after which the same record may well go through.
    ///
    /// ```
    /// use pythia_core::SinkError;
    /// let refused = SinkError::Refused {
    ///     topic: "orders.dlq".into(),
    ///     reason: "Broker: Message size too large".into(),
    /// };
    /// assert!(refused.is_refused());
    /// assert!(!SinkError::Dropped.is_refused());
    /// ```
    pub fn is_refused(&self) -> bool {
        matches!(self, Self::Refused { .. })
    }
}

/// A destination for outputs.
///
/// `send` enqueues the record, in order, and settles `receipt` once the broker
/// confirmed or refused it; the runtime acknowledges an input only when the
/// receipts of all its outputs are settled `Ok`. Every failure, including one
/// found before the record is enqueued, is reported through the receipt.
///
/// ```
/// use pythia_core::{Receipt, Record, Sink, SinkError};
///
/// /// Accepts records for the topic `audit` at once, refuses the rest.
/// struct AuditOnly;
///
/// impl Sink for AuditOnly {
///     async fn send(&self, record: Record, receipt: Receipt) {
///         match record.topic.as_deref() {
///             Some("audit") => receipt.settle(Ok(())),
///             _ => receipt.settle(Err(SinkError::NoTopic)),
///         }
///     }
/// }
///
/// # futures::executor::block_on(async {
/// let (receipt, confirmation) = Receipt::channel();
/// AuditOnly.send(Record::new("x").with_topic("audit"), receipt).await;
/// assert!(confirmation.await.is_ok());
/// # });
/// ```
pub trait Sink: Send + Sync + 'static {
    /// Enqueues `record`, waiting for room if the client's queue is full, and
    /// settles `receipt` with its delivery.
    fn send(&self, record: Record, receipt: Receipt) -> impl Future<Output = ()> + Send;

    /// The largest record the sink accepts, in bytes of key, payload and
    /// headers, when it knows (a Kafka producer's `message.max.bytes`). Dead
    /// letters that would exceed it are sent reduced rather than refused.
    /// `None`, the default: no known limit.
    fn max_record_bytes(&self) -> Option<usize> {
        None
    }
}

/// The sink of a worker that produces no outputs: any output is an error.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoSink;

impl Sink for NoSink {
    async fn send(&self, _record: Record, receipt: Receipt) {
        receipt.settle(Err(SinkError::NoTopic));
    }
}
