//! Why a test run failed, naming what was not committed.

use std::fmt;
use std::time::Duration;

use pythia_core::ConfigError;

use crate::embedded::EmbeddedError;
use crate::error::KafkaError;

/// An input partition not committed to its end.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Uncommitted {
    /// The input topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The group's committed offset, if it has one.
    pub committed: Option<i64>,
    /// The partition's high watermark: the offset idle needs committed.
    pub high: i64,
}

impl fmt::Display for Uncommitted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            topic,
            partition,
            committed,
            high,
        } = self;
        match committed {
            Some(committed) => write!(f, "{topic}/{partition} committed {committed} of {high}"),
            None => write!(f, "{topic}/{partition} committed nothing of {high}"),
        }
    }
}

fn list(uncommitted: &[Uncommitted]) -> String {
    let items: Vec<String> = uncommitted.iter().map(ToString::to_string).collect();
    items.join(", ")
}

/// Why a [`TestRun`](super::TestRun) failed.
///
/// ```
/// use pythia_kafka::testing::TestRunError;
/// # fn demo(error: TestRunError) {
/// match error {
///     TestRunError::Worker(error) => panic!("the worker failed: {error}"),
///     TestRunError::Timeout { uncommitted, .. } => {
///         for partition in uncommitted {
///             println!("{}/{} is at {:?} of {}", partition.topic, partition.partition, partition.committed, partition.high);
///         }
///     }
///     other => panic!("{other}"),
/// }
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TestRunError {
    /// The worker stopped with this error: the same as it would in production.
    #[error(transparent)]
    Worker(#[from] pythia_core::Error),
    /// The worker was not idle in time: these input partitions were not
    /// committed up to their high watermark.
    #[error(
        "the worker was not idle after {after:?}: {}; a message that never finishes holds back its partition's commit (raise the limit with TestRun::timeout if the worker is only slow)",
        list(.uncommitted)
    )]
    Timeout {
        /// The timeout.
        after: Duration,
        /// Where the commits fell short, when it passed.
        uncommitted: Vec<Uncommitted>,
    },
    /// The worker stopped without an error before it was idle (its source
    /// closed).
    #[error("the worker stopped before it was idle: {}", list(.uncommitted))]
    Stopped {
        /// Where the commits fell short.
        uncommitted: Vec<Uncommitted>,
    },
    /// The configuration is invalid (a key set with [`TestRun::config`](super::TestRun::config), or
    /// the worker's declaration).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// An input given to [`TestRun::input_json`](super::TestRun::input_json) did not encode.
    #[error("input {index} (counting from 0) did not encode as JSON: {source}")]
    InputJson {
        /// Its place among the inputs.
        index: usize,
        /// Why.
        source: serde_json::Error,
    },
    /// The embedded broker or a client of the kit's own failed.
    #[error(transparent)]
    Broker(#[from] KafkaError),
    /// A topic could not be read back.
    #[error("reading back `{topic}` failed: {reason}")]
    Read {
        /// The topic.
        topic: String,
        /// Why.
        reason: String,
    },
    /// [`Finished::outputs`](super::Finished::outputs) was asked for a topic the worker does not write.
    #[error("the worker writes no topic `{topic}`; its output and sink topics: {}", .known.join(", "))]
    UnknownTopic {
        /// The topic asked for.
        topic: String,
        /// The output and sink topics.
        known: Vec<String>,
    },
    /// An output is not JSON of the type asked for.
    #[error("output {topic}/{partition}@{offset} did not decode from JSON: {source}")]
    OutputJson {
        /// Its topic.
        topic: String,
        /// Its partition.
        partition: i32,
        /// Its offset.
        offset: i64,
        /// Why.
        source: serde_json::Error,
    },
}

impl From<EmbeddedError> for TestRunError {
    fn from(error: EmbeddedError) -> Self {
        Self::Broker(error.into())
    }
}

impl From<rdkafka::error::KafkaError> for TestRunError {
    fn from(error: rdkafka::error::KafkaError) -> Self {
        Self::Broker(error.into())
    }
}
