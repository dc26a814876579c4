//! Dead letters: where a message goes when it cannot be processed, and what it
//! carries there.
//!
//! A dead letter is the original message — key, payload and headers unchanged —
//! sent to the dead-letter topic with headers saying why. Its input offset
//! commits only once the dead letter is delivered, so nothing is lost: the
//! message is either processed, dead-lettered, or redelivered.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use serde::Deserialize;

use crate::config::ConfigError;
use crate::message::Message;
use crate::sink::Record;

/// The headers a dead letter carries besides the original ones.
pub mod header {
    /// What went wrong, as text.
    pub const REASON: &str = "pythia.dlq.reason";
    /// The kind of failure: see [`FailureKind`](super::FailureKind).
    pub const KIND: &str = "pythia.dlq.kind";
    /// How many times `process` ran (0 when the payload never decoded).
    pub const ATTEMPTS: &str = "pythia.dlq.attempts";
    /// The worker that gave up.
    pub const WORKER: &str = "pythia.dlq.worker";
    /// The topic the message came from.
    pub const TOPIC: &str = "pythia.dlq.topic";
    /// Its partition.
    pub const PARTITION: &str = "pythia.dlq.partition";
    /// Its offset.
    pub const OFFSET: &str = "pythia.dlq.offset";
    /// Its create time, in milliseconds since the Unix epoch, if it had one.
    pub const TIMESTAMP: &str = "pythia.dlq.timestamp";
    /// The prefix all of these share.
    pub const PREFIX: &str = "pythia.dlq.";
}

/// Dead letters, under `[worker.dead_letter]`.
///
/// ```toml
/// [worker.dead_letter]
/// enabled = true
/// topic = "{topic}.dlq"   # `{topic}` is the message's own topic
/// ```
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct DeadLetterConfig {
    /// Whether failed messages go to the dead-letter topic. When off, a message
    /// that cannot be processed stops the worker, uncommitted.
    pub enabled: bool,
    /// The dead-letter topic; `{topic}` stands for the message's topic.
    pub topic: String,
}

impl Default for DeadLetterConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            topic: "{topic}.dlq".to_owned(),
        }
    }
}

impl DeadLetterConfig {
    /// Checks the topic template.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.enabled && self.topic.trim().is_empty() {
            return Err(ConfigError::invalid(
                "worker.dead_letter.topic",
                "names no topic: write e.g. \"{topic}.dlq\" or \"orders.failed\", or set worker.dead_letter.enabled = false",
            ));
        }
        Ok(())
    }

    /// The dead-letter topic of messages from `topic`.
    ///
    /// ```
    /// let config = pythia_core::DeadLetterConfig::default();
    /// assert_eq!(config.topic_for("orders"), "orders.dlq");
    /// ```
    pub fn topic_for(&self, topic: &str) -> String {
        self.topic.replace("{topic}", topic)
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
        }
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A message given up on, and why.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) kind: FailureKind,
    pub(crate) reason: String,
    pub(crate) attempts: u32,
}

/// The dead letter of `message`: its key, payload and headers, to `topic`, with
/// the `pythia.dlq.*` headers appended.
pub(crate) fn record(
    message: Message<Option<Bytes>>,
    topic: String,
    worker: &str,
    failure: &Failure,
) -> Record {
    let mut headers = message.headers;
    headers.append(header::REASON, failure.reason.clone());
    headers.append(header::KIND, failure.kind.as_str());
    headers.append(header::ATTEMPTS, failure.attempts.to_string());
    headers.append(header::WORKER, worker.to_owned());
    headers.append(header::TOPIC, message.partition.topic().to_owned());
    headers.append(header::PARTITION, message.partition.index().to_string());
    headers.append(header::OFFSET, message.offset.to_string());
    if let Some(ts) = message.timestamp_ms.get() {
        headers.append(header::TIMESTAMP, ts.to_string());
    }
    Record {
        topic: Some(Arc::from(topic)),
        sink: None,
        key: message.key,
        payload: message.payload,
        headers,
    }
}
