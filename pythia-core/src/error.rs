//! The errors of the runtime, in one leaf module: why a worker stopped
//! ([`Error`]) and the errors it is made of, a bad configuration
//! ([`ConfigError`]), a failed `process` ([`ProcessError`]), an undelivered
//! output ([`SinkError`]), an endpoint that could not start
//! ([`EndpointError`]); and why a message was given up on ([`FailureKind`]).
//! The modules that raise them re-export them where they were.

use std::fmt;
use std::net::SocketAddr;

use crate::message::PartitionId;

/// Why a worker stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A message could not be processed (it did not decode, `process` failed
    /// or panicked, an output did not encode) and dead letters are off.
    #[error(
        "message {partition}@{offset} failed ({kind}): {reason}; it and later offsets of its partition were not committed"
    )]
    Process {
        /// Where the message is.
        partition: PartitionId,
        /// Its offset.
        offset: i64,
        /// What kind of failure.
        kind: FailureKind,
        /// The error text.
        reason: String,
    },
    /// An output was not delivered, so its input was not committed.
    #[error(
        "output of message {partition}@{offset} was not delivered: {source}; it and later offsets of its partition were not committed"
    )]
    Delivery {
        /// Where the input message is.
        partition: PartitionId,
        /// Its offset.
        offset: i64,
        /// Why.
        source: SinkError,
    },
    /// A message's dead letter was refused even reduced, and
    /// `worker.dead_letter.on_failure = "stop"`.
    #[error(
        "message {partition}@{offset} could not be dead-lettered, even reduced: {source}; it and later offsets of its partition were not committed. to get past it, set worker.dead_letter.on_failure = \"skip\" (PYTHIA_WORKER__DEAD_LETTER__ON_FAILURE=skip) to skip and count such messages, or move the group's committed offset of {partition} to {next} (kafka-consumer-groups.sh --reset-offsets --group <group> --topic {topic}:{index} --to-offset {next} --execute), or fix the dead-letter topic so that it takes the record (its max.message.bytes, cleanup.policy, ACLs)",
        next = .offset + 1,
        topic = .partition.topic(),
        index = .partition.index(),
    )]
    DeadLetter {
        /// Where the message is.
        partition: PartitionId,
        /// Its offset.
        offset: i64,
        /// Why its reduced dead letter was refused.
        source: SinkError,
    },
    /// A partition's lane failed outside `process` (a panic in a codec or sink).
    #[error(
        "processing of {partition} failed: {reason}; its uncommitted messages will be redelivered"
    )]
    Lane {
        /// The partition.
        partition: PartitionId,
        /// What happened.
        reason: String,
    },
    /// The broker connection failed in a way the source cannot recover from.
    /// The connector's own error is inside, with its code: see
    /// [`SourceError::downcast_ref`].
    #[error("source failed: {0}")]
    Source(SourceError),
    /// The metrics and health endpoint could not start.
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
}

impl Error {
    /// Whether running again unchanged cannot help: the configuration is
    /// wrong, the endpoint cannot bind, or the connector says its error is
    /// fatal (for Kafka: librdkafka's fatal errors, authentication and
    /// authorization failures).
    ///
    /// ```
    /// use pythia_core::{ConfigError, Error};
    /// let error = Error::from(ConfigError::invalid("worker.max_in_flight", "must be positive"));
    /// assert!(error.is_fatal() && !error.is_retriable());
    /// ```
    pub fn is_fatal(&self) -> bool {
        match self {
            Self::Config(_) | Self::Endpoint(_) => true,
            Self::Source(e) => e.is_fatal(),
            Self::DeadLetter { .. } => true,
            Self::Process { .. } | Self::Delivery { .. } | Self::Lane { .. } => false,
        }
    }

    /// Whether running again may well succeed: the connector says its error
    /// is transient (a broker outage, a timeout), or an output was not
    /// delivered for a reason other than a refusal of the record.
    pub fn is_retriable(&self) -> bool {
        match self {
            Self::Source(e) => e.is_retriable(),
            Self::Delivery { source, .. } => !source.is_refused(),
            _ => false,
        }
    }

    /// The connector's error, when the source failed.
    pub fn source_error(&self) -> Option<&SourceError> {
        match self {
            Self::Source(e) => Some(e),
            _ => None,
        }
    }
}

/// Why a source failed: the connector's own error, kept whole (with its
/// code), and whether it is fatal or retriable.
///
/// ```
/// use pythia_core::SourceError;
/// #[derive(Debug, thiserror::Error)]
/// #[error("broker said no (code {0})")]
/// struct BrokerError(i32);
///
/// let error = SourceError::retriable(BrokerError(7));
/// assert!(error.is_retriable() && !error.is_fatal());
/// assert_eq!(error.downcast_ref::<BrokerError>().map(|e| e.0), Some(7));
/// assert_eq!(error.to_string(), "broker said no (code 7)");
/// ```
pub struct SourceError {
    error: Box<dyn std::error::Error + Send + Sync + 'static>,
    fatal: bool,
    retriable: bool,
}

impl SourceError {
    /// An error neither known to be fatal nor retriable.
    pub fn new(error: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>) -> Self {
        Self {
            error: error.into(),
            fatal: false,
            retriable: false,
        }
    }

    /// An error that running again unchanged cannot fix.
    pub fn fatal(error: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>) -> Self {
        Self {
            fatal: true,
            ..Self::new(error)
        }
    }

    /// An error that may go away by itself (an outage, a timeout).
    pub fn retriable(error: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>) -> Self {
        Self {
            retriable: true,
            ..Self::new(error)
        }
    }

    /// Whether running again unchanged cannot help.
    pub fn is_fatal(&self) -> bool {
        self.fatal
    }

    /// Whether running again may succeed.
    pub fn is_retriable(&self) -> bool {
        self.retriable
    }

    /// The connector's error as its own type, e.g. `pythia_kafka::KafkaError`
    /// with its librdkafka code.
    pub fn downcast_ref<T: std::error::Error + 'static>(&self) -> Option<&T> {
        self.error.downcast_ref::<T>()
    }

    /// The connector's error.
    pub fn get_ref(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.error
    }
}

impl fmt::Display for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.error, f)
    }
}

impl fmt::Debug for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SourceError")
            .field("error", &self.error)
            .field("fatal", &self.fatal)
            .field("retriable", &self.retriable)
            .finish()
    }
}

impl std::error::Error for SourceError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.error.source()
    }
}

/// A configuration problem, naming the key and what is allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A key that no setting has.
    #[error("unknown configuration key `{key}`: {allowed}")]
    UnknownKey {
        /// The full dotted key.
        key: String,
        /// The keys allowed at that level.
        allowed: String,
    },
    /// A key whose value has the wrong type or is out of range.
    #[error("invalid value for `{key}`: {reason}")]
    InvalidValue {
        /// The full dotted key.
        key: String,
        /// What is wrong and what is allowed.
        reason: String,
    },
    /// A required key that is not set.
    #[error("missing configuration key `{key}`: {hint}")]
    Missing {
        /// The full dotted key.
        key: String,
        /// How to set it.
        hint: String,
    },
    /// The config file could not be read or parsed.
    #[error("cannot read config file `{path}`: {reason}")]
    File {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
}

impl ConfigError {
    /// The key the error is about (the file path for a file error).
    pub fn key(&self) -> &str {
        match self {
            Self::UnknownKey { key, .. }
            | Self::InvalidValue { key, .. }
            | Self::Missing { key, .. } => key,
            Self::File { path, .. } => path,
        }
    }

    /// An invalid-value error.
    pub fn invalid(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidValue {
            key: key.into(),
            reason: reason.into(),
        }
    }

    /// A missing-key error.
    pub fn missing(key: impl Into<String>, hint: impl Into<String>) -> Self {
        Self::Missing {
            key: key.into(),
            hint: hint.into(),
        }
    }
}

/// Whether retrying a failed message could help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// May succeed on another attempt (a timeout, an unavailable dependency).
    Transient,
    /// Will fail every time (invalid data, a violated invariant).
    Permanent,
}

/// The error a worker's `process` returns.
///
/// Any `std::error::Error` converts into it with `?` (as a transient error);
/// [`ProcessError::permanent`] marks an error that retrying cannot fix.
///
/// ```
/// use pythia_core::ProcessError;
/// fn parse(s: &str) -> Result<u64, ProcessError> {
///     let n: u64 = s.parse()?; // ParseIntError -> ProcessError
///     if n == 0 {
///         return Err(ProcessError::permanent("amount must be positive"));
///     }
///     Ok(n)
/// }
/// assert!(parse("x").is_err());
/// assert!(parse("0").unwrap_err().is_permanent());
/// ```
pub struct ProcessError {
    kind: ErrorKind,
    inner: Box<dyn std::error::Error + Send + Sync + 'static>,
}

impl ProcessError {
    /// A transient error with this message.
    pub fn msg(message: impl fmt::Display) -> Self {
        Self {
            kind: ErrorKind::Transient,
            inner: message.to_string().into(),
        }
    }

    /// A permanent error with this message or cause.
    pub fn permanent(cause: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>) -> Self {
        Self {
            kind: ErrorKind::Permanent,
            inner: cause.into(),
        }
    }

    /// Whether the error is transient or permanent.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Whether retrying cannot help.
    pub fn is_permanent(&self) -> bool {
        self.kind == ErrorKind::Permanent
    }

    /// The underlying error.
    pub fn into_inner(self) -> Box<dyn std::error::Error + Send + Sync + 'static> {
        self.inner
    }
}

/// Any error converts with `?` into a transient `ProcessError`: a
/// `std::error::Error`, an `anyhow::Error`, a `String` or a `&str`.
///
/// ```
/// use pythia_core::ProcessError;
/// fn lookup(id: u64) -> anyhow::Result<u64> {
///     anyhow::ensure!(id != 0, "no such order");
///     Ok(id * 10)
/// }
/// fn process(id: u64) -> Result<u64, ProcessError> {
///     Ok(lookup(id)?)
/// }
/// assert_eq!(process(0).unwrap_err().to_string(), "no such order");
/// assert!(!process(0).unwrap_err().is_permanent());
/// ```
impl<E> From<E> for ProcessError
where
    E: Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
{
    fn from(error: E) -> Self {
        Self {
            kind: ErrorKind::Transient,
            inner: error.into(),
        }
    }
}

impl fmt::Display for ProcessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.inner, f)?;
        let mut source = self.inner.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

impl fmt::Debug for ProcessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessError")
            .field("kind", &self.kind)
            .field("error", &self.inner)
            .finish()
    }
}

/// Why a message was given up on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailureKind {
    /// The payload did not decode into the worker's input type.
    Decode,
    /// The payload is larger than `worker.max_message_bytes`.
    TooLarge,
    /// `process` failed with a transient error on every attempt.
    Transient,
    /// `process` failed with a permanent error.
    Permanent,
    /// `process` panicked.
    Panic,
    /// An output of `process` could not be encoded.
    Encode,
    /// The broker refused an output of `process` as a record (too large for
    /// the topic, invalid): the message was processed but cannot be
    /// completed. Its dead letter names it; it is still in its topic.
    OutputRefused,
}

impl FailureKind {
    /// The value of the `pythia.dlq.kind` header.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Decode => "decode",
            Self::TooLarge => "too_large",
            Self::Transient => "transient",
            Self::Permanent => "permanent",
            Self::Panic => "panic",
            Self::Encode => "encode",
            Self::OutputRefused => "output_refused",
        }
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
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

/// The endpoint could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EndpointError {
    /// The address could not be bound.
    #[error(
        "cannot serve metrics on {address} (set by {setting}): {source}; choose a free port or turn the server off"
    )]
    Bind {
        /// The address asked for.
        address: SocketAddr,
        /// The setting that asked for it, e.g. `metrics.address`.
        setting: String,
        /// The operating system's answer.
        source: std::io::Error,
    },
}
