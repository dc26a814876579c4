//! The runtime's error type.

use crate::config::ConfigError;
use crate::dead_letter::FailureKind;
use crate::endpoint::EndpointError;
use crate::message::PartitionId;
use crate::sink::SinkError;

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
    #[error("source failed: {0}")]
    Source(String),
    /// The metrics and health endpoint could not start.
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
}
