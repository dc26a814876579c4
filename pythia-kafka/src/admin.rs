//! Topic administration at start: a worker reaching brokers by address creates
//! the dead-letter topics it will write to, with their input's partitions.
//!
//! Left to broker auto-creation, a dead-letter topic gets the broker's default
//! partition count (`num.partitions`; 4 on librdkafka's mock) whatever its
//! input has, and only when the first dead letter arrives. Created here it
//! mirrors its input. It is a convenience, never a condition: a cluster that
//! refuses topic creation (ACLs, no CreateTopics support) gets a warning
//! saying what to create, and the worker runs on.

use std::collections::BTreeMap;
use std::time::Duration;

use pythia_core::DeadLetterConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;

use crate::config::KafkaConfig;

/// How long the metadata request and the creation may take, each.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The dead-letter topics to create: that of each input topic that exists,
/// when it does not exist yet, with the input's partition count (the largest
/// of its inputs' when several inputs share one dead-letter topic). `existing`
/// maps the cluster's topics to their partition counts.
pub(crate) fn missing_dead_letter_topics(
    inputs: &[String],
    dead_letter: &DeadLetterConfig,
    existing: &BTreeMap<String, i32>,
) -> Vec<(String, i32)> {
    let mut missing: BTreeMap<String, i32> = BTreeMap::new();
    for input in inputs {
        let Some(&partitions) = existing.get(input) else {
            continue;
        };
        let topic = dead_letter.topic_for(input);
        if existing.contains_key(&topic) {
            continue;
        }
        let entry = missing.entry(topic).or_insert(partitions);
        *entry = (*entry).max(partitions);
    }
    missing.into_iter().collect()
}

/// What a worker needs to create its dead-letter topics at start.
pub(crate) struct DeadLetterTopics {
    kafka: KafkaConfig,
    dead_letter: DeadLetterConfig,
}

impl DeadLetterTopics {
    /// For a worker reaching brokers by address with dead letters on and
    /// `worker.dead_letter.create` set; `None` otherwise (the embedded broker
    /// creates its topics itself).
    pub(crate) fn new(kafka: &KafkaConfig, dead_letter: &DeadLetterConfig) -> Option<Self> {
        (dead_letter.enabled && dead_letter.create && !kafka.is_embedded()).then(|| Self {
            kafka: kafka.clone(),
            dead_letter: dead_letter.clone(),
        })
    }

    /// Creates the missing dead-letter topics of existing inputs; any failure
    /// is logged as a warning and the worker goes on.
    pub(crate) async fn ensure(self) {
        if let Err(error) = self.try_ensure().await {
            tracing::warn!(
                %error,
                "could not check the dead-letter topics; the broker auto-creates a missing one with its default partition count (num.partitions) at the first dead letter, or refuses it: create each with its input's partitions"
            );
        }
    }

    async fn try_ensure(self) -> Result<(), String> {
        let admin: AdminClient<DefaultClientContext> = self
            .kafka
            .base()
            .set("log_level", "3")
            .create()
            .map_err(|e| format!("cannot create an admin client: {e}"))?;
        // All topics: asking for missing ones by name could auto-create them.
        // On a thread of its own, not tokio's blocking pool, which a runtime
        // waits for when it shuts down.
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("pythia-admin".into())
            .spawn(move || {
                let metadata = admin.inner().fetch_metadata(None, TIMEOUT);
                let _ = tx.send((admin, metadata));
            })
            .map_err(|e| format!("cannot start the admin thread: {e}"))?;
        let (admin, metadata) = rx
            .await
            .map_err(|_| "the metadata request ended without an answer".to_owned())?;
        let metadata = metadata.map_err(|e| format!("metadata request failed: {e}"))?;
        let existing: BTreeMap<String, i32> = metadata
            .topics()
            .iter()
            .filter(|t| t.error().is_none())
            .map(|t| (t.name().to_owned(), t.partitions().len() as i32))
            .collect();
        let missing = missing_dead_letter_topics(&self.kafka.topics, &self.dead_letter, &existing);
        if missing.is_empty() {
            return Ok(());
        }
        let new: Vec<NewTopic<'_>> = missing
            .iter()
            // The broker's default replication factor.
            .map(|(name, partitions)| NewTopic::new(name, *partitions, TopicReplication::Fixed(-1)))
            .collect();
        let options = AdminOptions::new()
            .request_timeout(Some(TIMEOUT))
            .operation_timeout(Some(TIMEOUT));
        let results = tokio::time::timeout(TIMEOUT + TIMEOUT, admin.create_topics(&new, &options))
            .await
            .map_err(|_| "topic creation timed out".to_owned())?
            .map_err(|e| format!("topic creation failed: {e}"))?;
        for ((name, partitions), result) in missing.iter().zip(results) {
            match result {
                Ok(_) => tracing::info!(
                    topic = %name,
                    partitions,
                    "created the dead-letter topic with its input's partition count"
                ),
                // Another instance was first.
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((_, code)) => tracing::warn!(
                    topic = %name,
                    partitions,
                    error = %code,
                    "could not create the dead-letter topic; create it with its input's partition count, else the broker auto-creates it with its default (num.partitions) at the first dead letter, or refuses it"
                ),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(template: &str) -> DeadLetterConfig {
        let mut config = DeadLetterConfig::default();
        config.topic = template.to_owned();
        config
    }

    #[test]
    fn a_missing_dead_letter_topic_of_an_existing_input_is_created_like_its_input() {
        type Case<'a> = (
            &'a str,
            &'a str,
            &'a [&'a str],
            &'a [(&'a str, i32)],
            &'a [(&'a str, i32)],
        );
        // (case, template, inputs, existing topics, expected creations)
        let table: [Case<'_>; 6] = [
            (
                "dead-letter topic missing",
                "{topic}.dlq",
                &["orders"],
                &[("orders", 8)],
                &[("orders.dlq", 8)],
            ),
            (
                "dead-letter topic exists: left as it is",
                "{topic}.dlq",
                &["orders"],
                &[("orders", 8), ("orders.dlq", 4)],
                &[],
            ),
            (
                "input missing: nothing to mirror",
                "{topic}.dlq",
                &["orders"],
                &[],
                &[],
            ),
            (
                "only the missing ones",
                "{topic}.dlq",
                &["orders", "refunds", "ghost"],
                &[("orders", 8), ("refunds", 3), ("refunds.dlq", 3)],
                &[("orders.dlq", 8)],
            ),
            (
                "a shared dead-letter topic gets the most partitions",
                "failed",
                &["orders", "refunds"],
                &[("orders", 8), ("refunds", 12)],
                &[("failed", 12)],
            ),
            (
                "a shared dead-letter topic that exists",
                "failed",
                &["orders", "refunds"],
                &[("orders", 8), ("refunds", 12), ("failed", 1)],
                &[],
            ),
        ];
        for (case, template, inputs, existing, expected) in table {
            let inputs: Vec<String> = inputs.iter().map(|t| t.to_string()).collect();
            let existing: BTreeMap<String, i32> =
                existing.iter().map(|(t, n)| (t.to_string(), *n)).collect();
            let expected: Vec<(String, i32)> =
                expected.iter().map(|(t, n)| (t.to_string(), *n)).collect();
            assert_eq!(
                missing_dead_letter_topics(&inputs, &config(template), &existing),
                expected,
                "{case}"
            );
        }
    }

    #[test]
    fn only_a_worker_reaching_brokers_by_address_asked_to_creates_them() {
        let mut kafka = KafkaConfig {
            brokers: Some("kafka:9092".into()),
            ..KafkaConfig::default()
        };
        let mut dead_letter = DeadLetterConfig::default();
        assert!(
            DeadLetterTopics::new(&kafka, &dead_letter).is_none(),
            "off by default"
        );
        dead_letter.create = true;
        assert!(DeadLetterTopics::new(&kafka, &dead_letter).is_some());
        dead_letter.enabled = false;
        assert!(DeadLetterTopics::new(&kafka, &dead_letter).is_none());
        dead_letter.enabled = true;
        kafka.brokers = Some(crate::EMBEDDED.into());
        assert!(DeadLetterTopics::new(&kafka, &dead_letter).is_none());
    }
}
