//! Dead letters: where a message goes when it cannot be processed, and what it
//! carries there.
//!
//! A dead letter is the original message — key, payload and headers unchanged —
//! sent to the dead-letter topic with headers saying why. Its input offset
//! commits only once the dead letter is delivered, so nothing is lost: the
//! message is either processed, dead-lettered, or redelivered.
//!
//! A dead letter that cannot go out whole — larger than the producer's limit,
//! or refused by the broker as too large or invalid — goes out *reduced*: the
//! payload cut to a short prefix (or dropped, after a refusal), an oversize key
//! cut, with headers saying what was cut ([`header::TRUNCATED`]) and how large
//! it was; the reason and the original topic, partition and offset are always
//! kept, so the message can be found in its topic. If even the reduced dead
//! letter is refused, [`OnFailure`] decides: stop the worker, or skip the
//! message. Either way a poison message never sends a worker into a loop of
//! crashing on the same refusal unseen: it stops once with an error saying how
//! to get past, or it goes on.

use serde::Deserialize;

use crate::error::ConfigError;
pub use crate::error::FailureKind;

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
    /// What a reduced dead letter lost, comma-separated: `payload` (cut to
    /// a prefix, or dropped), `key` (cut), `headers` (the original message's
    /// headers dropped), `reason` (cut). Absent on a whole dead letter.
    pub const TRUNCATED: &str = "pythia.dlq.truncated";
    /// The original payload's size in bytes, when `payload` was cut.
    pub const ORIGINAL_SIZE: &str = "pythia.dlq.original_size";
    /// The original key's size in bytes, when `key` was cut.
    pub const ORIGINAL_KEY_SIZE: &str = "pythia.dlq.original_key_size";
    /// The prefix all of these share.
    pub const PREFIX: &str = "pythia.dlq.";
}

/// Dead letters, under `[worker.dead_letter]`.
///
/// ```toml
/// [worker.dead_letter]
/// enabled = true
/// topic = "{topic}.dlq"   # `{topic}` is the message's own topic
/// on_failure = "stop"     # stop | skip: a dead letter refused even reduced
/// create = false          # create missing dead-letter topics at start
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
    /// What happens to a message whose dead letter is refused even in its
    /// reduced form.
    pub on_failure: OnFailure,
    /// Whether a worker reaching brokers by address creates, at start, the
    /// missing dead-letter topic of each input with the input's partition
    /// count (the embedded broker always does). Off by default: many clusters
    /// refuse topic creation to workers, and a broker left to auto-create the
    /// topic gives it its default partition count.
    pub create: bool,
}

impl Default for DeadLetterConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            topic: "{topic}.dlq".to_owned(),
            on_failure: OnFailure::Stop,
            create: false,
        }
    }
}

/// What happens to a message whose dead letter the broker or the client
/// refused even reduced (`worker.dead_letter.on_failure`).
///
/// Only a refusal of the record itself counts: a dead letter lost to an
/// outage, a timeout or a shutdown stops the run as any undelivered output
/// does, and the message is redelivered after the restart.
///
/// ```
/// use pythia_core::dead_letter::OnFailure;
/// let mut config = pythia_core::DeadLetterConfig::default();
/// assert_eq!(config.on_failure, OnFailure::Stop);
/// config.on_failure = OnFailure::Skip; // worker.dead_letter.on_failure = "skip"
/// assert_eq!(config.on_failure.as_str(), "skip");
/// ```
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(try_from = "String")]
#[non_exhaustive]
pub enum OnFailure {
    /// The worker stops with an error naming the message and how to get past
    /// it; nothing at or after it in its partition is committed. The default:
    /// no message leaves its partition without a trace in the dead-letter
    /// topic unless the operator says so.
    #[default]
    Stop,
    /// The message is skipped: logged as an error, counted as `skipped` in
    /// `pythia_messages_total`, and committed. Its partition keeps flowing;
    /// the message stays in its topic until retention deletes it.
    Skip,
}

impl OnFailure {
    /// The value as written in configuration.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Skip => "skip",
        }
    }
}

impl TryFrom<String> for OnFailure {
    type Error = String;

    fn try_from(value: String) -> Result<Self, String> {
        [Self::Stop, Self::Skip]
            .into_iter()
            .find(|choice| choice.as_str().eq_ignore_ascii_case(value.trim()))
            .ok_or_else(|| {
                format!(
                    "`{value}` is not one of: stop (stop the worker, the default), skip (skip the message and count it)"
                )
            })
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

/// A message given up on, and why.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) kind: FailureKind,
    pub(crate) reason: String,
    pub(crate) attempts: u32,
}

/// What a lane does about a dead letter that was not delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Undelivered {
    /// Send it again, reduced.
    SendReduced,
    /// Skip the message: count it and commit past it.
    Skip,
    /// Stop the run, saying how to get past the message.
    Stop,
    /// Stop the run as for any undelivered output: the failure was not about
    /// this record (an outage, a timeout, a shutdown), so the message is
    /// redelivered after a restart and may go through then.
    Fail,
}

/// What follows a dead letter's failed delivery: `refused` says whether the
/// record itself was refused ([`SinkError::is_refused`]), `reduced` whether
/// it was already the reduced form.
///
/// [`SinkError::is_refused`]: crate::SinkError::is_refused
pub(crate) fn undelivered(refused: bool, reduced: bool, on_failure: OnFailure) -> Undelivered {
    match (refused, reduced, on_failure) {
        (false, _, _) => Undelivered::Fail,
        (true, false, _) => Undelivered::SendReduced,
        (true, true, OnFailure::Stop) => Undelivered::Stop,
        (true, true, OnFailure::Skip) => Undelivered::Skip,
    }
}

mod letter;

pub(crate) use letter::{Letter, letter, reference};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_dead_letter_is_sent_reduced_once_then_the_policy_decides() {
        use OnFailure::{Skip, Stop};
        // (refused, reduced already, on_failure, next)
        let table = [
            (true, false, Stop, Undelivered::SendReduced),
            (true, false, Skip, Undelivered::SendReduced),
            (true, true, Stop, Undelivered::Stop),
            (true, true, Skip, Undelivered::Skip),
            // Not about the record (an outage, a shutdown): never skipped.
            (false, false, Stop, Undelivered::Fail),
            (false, false, Skip, Undelivered::Fail),
            (false, true, Stop, Undelivered::Fail),
            (false, true, Skip, Undelivered::Fail),
        ];
        for (refused, reduced, on_failure, expected) in table {
            assert_eq!(
                undelivered(refused, reduced, on_failure),
                expected,
                "refused {refused}, reduced {reduced}, {on_failure:?}"
            );
        }
    }

    #[test]
    fn on_failure_reads_stop_or_skip_and_names_the_key_otherwise() {
        #[derive(Debug, Deserialize)]
        struct App {
            #[serde(default)]
            worker: crate::WorkerConfig,
        }
        let load = |value: &str| {
            crate::ConfigLoader::new()
                .no_file()
                .env([("PYTHIA_WORKER__DEAD_LETTER__ON_FAILURE", value)])
                .load::<App>()
        };
        assert_eq!(DeadLetterConfig::default().on_failure, OnFailure::Stop);
        assert_eq!(
            load("skip").unwrap().worker.dead_letter.on_failure,
            OnFailure::Skip
        );
        assert_eq!(
            load("stop").unwrap().worker.dead_letter.on_failure,
            OnFailure::Stop
        );
        let error = load("ignore").unwrap_err();
        assert_eq!(error.key(), "worker.dead_letter.on_failure", "{error}");
        assert!(error.to_string().contains("skip"), "{error}");
    }

    #[test]
    fn the_dead_letter_config_example_loads_and_shows_the_defaults() {
        let toml = crate::config::examples::toml_example(
            include_str!("dead_letter.rs"),
            "DeadLetterConfig",
        );
        assert!(toml.starts_with("[worker.dead_letter]\n"), "{toml}");
        let worker = crate::config::examples::load_worker(&toml, "dead_letter")
            .unwrap_or_else(|e| panic!("{e}\nin the example:\n{toml}"));
        assert_eq!(worker.dead_letter, DeadLetterConfig::default());
    }
}
