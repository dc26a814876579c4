//! The `Sink` trait: where outputs go, and how their delivery is confirmed.

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;

use crate::message::Headers;

pub use crate::delivery::{Confirmation, Receipt};
pub use crate::error::SinkError;

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

/// A destination for outputs.
///
/// `send` enqueues the record, in order, and settles `receipt` once the broker
/// confirmed or refused it; the runtime acknowledges an input only when the
/// receipts of all its outputs are settled `Ok`. Every failure, including one
/// found before the record is enqueued, is reported through the receipt.
///
/// ```
/// use pythia_core::connector::{Receipt, Sink};
/// use pythia_core::{Record, SinkError};
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
