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
    #[error("source failed: {0}")]
    Source(String),
    /// The metrics and health endpoint could not start.
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
}
