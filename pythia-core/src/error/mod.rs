//! The errors of the runtime, in one leaf module: why a worker stopped
//! ([`Error`]) and the errors it is made of, a bad configuration
//! ([`ConfigError`]), a failed `process` ([`ProcessError`]), an undelivered
//! output ([`SinkError`]), an endpoint that could not start
//! ([`EndpointError`]); and why a message was given up on ([`FailureKind`]).
//! The modules that raise them re-export them where they were.
//!
//! [`Error`] and [`EndpointError`] are here; the others have a file each:
//! `config.rs`, `process.rs` ([`ProcessError`], [`ErrorKind`],
//! [`FailureKind`]), `sink.rs` and `source.rs` ([`SourceError`]).

use std::net::SocketAddr;

use crate::message::PartitionId;

mod config;
mod process;
mod sink;
mod source;

pub use config::ConfigError;
pub use process::{ErrorKind, FailureKind, ProcessError};
pub use sink::SinkError;
pub use source::SourceError;

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
