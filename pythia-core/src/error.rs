//! The runtime's error type.

use crate::codec::{DecodeError, EncodeError};
use crate::config::ConfigError;
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
    /// A payload did not decode into the worker's input type.
    #[error(
        "message {partition}@{offset} could not be decoded: {source}; it and later offsets of its partition were not committed"
    )]
    Decode {
        /// Where the message is.
        partition: PartitionId,
        /// Its offset.
        offset: i64,
        /// Why.
        source: DecodeError,
    },
    /// The worker's `process` returned an error or panicked.
    #[error(
        "process failed for message {partition}@{offset}: {reason}; it and later offsets of its partition were not committed"
    )]
    Process {
        /// Where the message is.
        partition: PartitionId,
        /// Its offset.
        offset: i64,
        /// The error text.
        reason: String,
    },
    /// An output could not be encoded.
    #[error("output of message {partition}@{offset} could not be encoded: {source}")]
    Encode {
        /// Where the input message is.
        partition: PartitionId,
        /// Its offset.
        offset: i64,
        /// Why.
        source: EncodeError,
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
