//! What a finished run left on the broker: outputs, dead letters, commits.

use std::collections::BTreeMap;

use bytes::Bytes;
use pythia_core::dead_letter::header;
use pythia_core::events::WorkerEvent;
use pythia_core::{Headers, Message, RunSummary};
use serde::de::DeserializeOwned;

use super::error::TestRunError;

/// What a finished test run left on the broker, read back with clients of
/// the kit's own.
#[derive(Debug, Clone)]
pub struct Finished {
    pub(super) summary: RunSummary,
    pub(super) outputs: BTreeMap<String, Vec<Message<Bytes>>>,
    pub(super) dead_letters: Vec<DeadLetter>,
    pub(super) committed: BTreeMap<(String, i32), i64>,
    pub(super) events: Vec<WorkerEvent>,
}

impl Finished {
    /// The worker's events over the run, in order: assignments, retries,
    /// dead letters, accepted commits.
    pub fn events(&self) -> &[WorkerEvent] {
        &self.events
    }

    /// What the worker's run returned: messages processed, abandoned.
    pub fn summary(&self) -> &RunSummary {
        &self.summary
    }

    /// The records on output or sink topic `topic`, in the order they were
    /// written: key, payload (empty for a null one), headers, and where each
    /// is (`msg.partition()`, `msg.offset()`).
    ///
    /// # Errors
    ///
    /// [`TestRunError::UnknownTopic`] when the worker has no output or sink
    /// topic called `topic`; the error lists those it has.
    ///
    /// ```
    /// # fn demo(run: &pythia_kafka::testing::Finished) -> Result<(), pythia_kafka::testing::TestRunError> {
    /// let audit = run.outputs("orders.audit")?;
    /// assert_eq!(audit[0].key_str(), Some("order-1"));
    /// assert_eq!(audit[0].headers().get_str("tenant"), Some("acme"));
    /// assert_eq!(audit[0].payload().as_ref(), b"audited order-1");
    /// # Ok(()) }
    /// ```
    pub fn outputs(&self, topic: &str) -> Result<&[Message<Bytes>], TestRunError> {
        self.outputs
            .get(topic)
            .map(Vec::as_slice)
            .ok_or_else(|| TestRunError::UnknownTopic {
                topic: topic.to_owned(),
                known: self.outputs.keys().cloned().collect(),
            })
    }

    /// The payloads on output or sink topic `topic`, decoded from JSON, in
    /// the order they were written.
    ///
    /// # Errors
    ///
    /// [`TestRunError::UnknownTopic`] as for [`Finished::outputs`];
    /// [`TestRunError::OutputJson`] naming the first record that is not JSON
    /// of type `T`.
    pub fn outputs_json<T: DeserializeOwned>(&self, topic: &str) -> Result<Vec<T>, TestRunError> {
        (self.outputs(topic)?.iter())
            .map(|msg| {
                serde_json::from_slice(msg.payload()).map_err(|source| TestRunError::OutputJson {
                    topic: topic.to_owned(),
                    partition: msg.partition(),
                    offset: msg.offset(),
                    source,
                })
            })
            .collect()
    }

    /// The dead letters of every input topic, in the order of the original
    /// messages (topic, partition, offset). Empty when dead letters are off.
    pub fn dead_letters(&self) -> &[DeadLetter] {
        &self.dead_letters
    }

    /// The group's committed offset of each input partition, as
    /// `(topic, partition) → offset` (the next offset to read), read from
    /// the broker after the worker stopped. A partition the group never
    /// committed (one without messages may be such) is absent.
    pub fn committed(&self) -> &BTreeMap<(String, i32), i64> {
        &self.committed
    }
}

/// A dead letter read back from a dead-letter topic: where its message was,
/// why it was given up on, and the message itself.
///
/// ```
/// # fn demo(run: &pythia_kafka::testing::Finished) {
/// let dead = &run.dead_letters()[0];
/// assert_eq!((dead.topic.as_str(), dead.partition, dead.offset), ("orders", 0, 2));
/// assert_eq!((dead.kind.as_str(), dead.attempts), ("permanent", 1));
/// assert!(dead.reason.contains("orders are closed"));
/// assert_eq!(dead.payload.as_deref(), Some(&br#"{"id":3}"#[..]));
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeadLetter {
    /// The topic of the original message.
    pub topic: String,
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// The kind of failure (`pythia.dlq.kind`): `decode`, `too_large`,
    /// `transient`, `permanent`, `panic`, `encode`, `output_refused`.
    pub kind: String,
    /// What went wrong, as text (`pythia.dlq.reason`).
    pub reason: String,
    /// How many times `process` ran (0 when the payload never decoded).
    pub attempts: u32,
    /// The original key.
    pub key: Option<Bytes>,
    /// The original payload (`None` for a null one; a prefix of it when the
    /// dead letter was reduced, see `pythia.dlq.truncated`).
    pub payload: Option<Bytes>,
    /// Every header of the dead letter: the original's, then Pythia's
    /// `pythia.dlq.*` ([`pythia_core::dead_letter::header`]).
    pub headers: Headers,
}

impl DeadLetter {
    pub(super) fn parse(record: Message<Option<Bytes>>) -> Result<Self, TestRunError> {
        let headers = record.headers().clone();
        let missing = |name: &str| TestRunError::Read {
            topic: record.topic().to_owned(),
            reason: format!(
                "the record at {}@{} has no valid `{name}` header: not a dead letter of Pythia's",
                record.partition_id(),
                record.offset()
            ),
        };
        let text = |name: &str| headers.get_str(name).ok_or_else(|| missing(name));
        let number = |name: &str| text(name)?.parse::<i64>().map_err(|_| missing(name));
        Ok(Self {
            topic: text(header::TOPIC)?.to_owned(),
            partition: i32::try_from(number(header::PARTITION)?)
                .map_err(|_| missing(header::PARTITION))?,
            offset: number(header::OFFSET)?,
            kind: text(header::KIND)?.to_owned(),
            reason: text(header::REASON)?.to_owned(),
            attempts: u32::try_from(number(header::ATTEMPTS)?)
                .map_err(|_| missing(header::ATTEMPTS))?,
            key: record.key().map(Bytes::copy_from_slice),
            payload: record.payload().clone(),
            headers,
        })
    }
}
