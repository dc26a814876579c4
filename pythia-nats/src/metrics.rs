//! The consumer's series: what the server reports of the durable consumer,
//! and what this instance holds, was redelivered and gave up on, in the
//! naming scheme of the queue series of the RabbitMQ connector.
//!
//! | name | type | labels | what |
//! |---|---|---|---|
//! | `pythia_nats_consumer_pending` | gauge | `group`, `stream`, `consumer` | messages of the subject not yet delivered (`num_pending`) |
//! | `pythia_nats_consumer_ack_pending` | gauge | `group`, `stream`, `consumer` | messages delivered to any instance and not yet acknowledged (`num_ack_pending`) |
//! | `pythia_nats_consumer_redelivered` | gauge | `group`, `stream`, `consumer` | messages delivered more than once and not yet acknowledged (`num_redelivered`) |
//! | `pythia_nats_unacked_messages` | gauge | `group`, `stream`, `consumer` | messages this instance holds and has not acknowledged |
//! | `pythia_nats_redeliveries_total` | counter | `group`, `stream`, `consumer` | deliveries this instance got that the server had made before |
//! | `pythia_nats_given_up_total` | counter | `group`, `stream`, `consumer` | messages this instance dead-lettered (or terminated) unprocessed after `nats.max_deliver` deliveries |
//!
//! `group` is the worker's name, shared by its instances; each instance
//! reports the same server series, hence `max by (consumer)` over them. The
//! backlog for scaling is `max by (consumer) (pythia_nats_consumer_pending)
//! + max by (consumer) (pythia_nats_consumer_ack_pending)`.

use prometheus::{IntCounterVec, IntGaugeVec, Opts};
use pythia_core::Metrics;

/// `pythia_nats_consumer_pending`.
pub const CONSUMER_PENDING: &str = "pythia_nats_consumer_pending";
/// `pythia_nats_consumer_ack_pending`.
pub const CONSUMER_ACK_PENDING: &str = "pythia_nats_consumer_ack_pending";
/// `pythia_nats_consumer_redelivered`.
pub const CONSUMER_REDELIVERED: &str = "pythia_nats_consumer_redelivered";
/// `pythia_nats_unacked_messages`.
pub const UNACKED_MESSAGES: &str = "pythia_nats_unacked_messages";
/// `pythia_nats_redeliveries_total`.
pub const REDELIVERIES_TOTAL: &str = "pythia_nats_redeliveries_total";
/// `pythia_nats_given_up_total`.
pub const GIVEN_UP_TOTAL: &str = "pythia_nats_given_up_total";

/// Every series name above.
pub const ALL: &[&str] = &[
    CONSUMER_PENDING,
    CONSUMER_ACK_PENDING,
    CONSUMER_REDELIVERED,
    UNACKED_MESSAGES,
    REDELIVERIES_TOTAL,
    GIVEN_UP_TOTAL,
];

/// What the server reports of the consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct ConsumerState {
    pub(crate) pending: u64,
    pub(crate) ack_pending: usize,
    pub(crate) redelivered: usize,
}

/// What this instance counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct InstanceState {
    pub(crate) unacked: usize,
    /// Running totals.
    pub(crate) redeliveries: u64,
    pub(crate) given_up: u64,
}

/// The consumer's series, registered in a worker's [`Metrics`].
#[derive(Clone)]
pub(crate) struct ConsumerMetrics {
    labels: [String; 3],
    pending: IntGaugeVec,
    ack_pending: IntGaugeVec,
    redelivered: IntGaugeVec,
    unacked: IntGaugeVec,
    redeliveries: IntCounterVec,
    given_up: IntCounterVec,
}

impl ConsumerMetrics {
    /// Registers the series in `metrics`' registry, labelled with `group`,
    /// `stream` and `consumer`.
    pub(crate) fn register(
        metrics: &Metrics,
        group: &str,
        stream: &str,
        consumer: &str,
    ) -> Result<Self, prometheus::Error> {
        let names = &["group", "stream", "consumer"];
        let gauge = |name: &str, help: &str| IntGaugeVec::new(Opts::new(name, help), names);
        let counter = |name: &str, help: &str| IntCounterVec::new(Opts::new(name, help), names);
        let this = Self {
            labels: [group.to_owned(), stream.to_owned(), consumer.to_owned()],
            pending: gauge(
                CONSUMER_PENDING,
                "Messages not yet delivered to the consumer",
            )?,
            ack_pending: gauge(
                CONSUMER_ACK_PENDING,
                "Messages delivered to the consumer and not yet acknowledged",
            )?,
            redelivered: gauge(
                CONSUMER_REDELIVERED,
                "Messages delivered more than once and not yet acknowledged",
            )?,
            unacked: gauge(
                UNACKED_MESSAGES,
                "Messages this instance holds and has not acknowledged",
            )?,
            redeliveries: counter(
                REDELIVERIES_TOTAL,
                "Deliveries this instance got that the server had made before",
            )?,
            given_up: counter(
                GIVEN_UP_TOTAL,
                "Messages dead-lettered or terminated unprocessed after nats.max_deliver deliveries",
            )?,
        };
        let registry = metrics.registry();
        registry.register(Box::new(this.pending.clone()))?;
        registry.register(Box::new(this.ack_pending.clone()))?;
        registry.register(Box::new(this.redelivered.clone()))?;
        registry.register(Box::new(this.unacked.clone()))?;
        registry.register(Box::new(this.redeliveries.clone()))?;
        registry.register(Box::new(this.given_up.clone()))?;
        Ok(this)
    }

    fn labels(&self) -> [&str; 3] {
        [&self.labels[0], &self.labels[1], &self.labels[2]]
    }

    /// Records what the server reports of the consumer.
    pub(crate) fn set_consumer(&self, state: ConsumerState) {
        let labels = self.labels();
        let int = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.pending
            .with_label_values(&labels)
            .set(int(state.pending));
        self.ack_pending
            .with_label_values(&labels)
            .set(int(state.ack_pending as u64));
        self.redelivered
            .with_label_values(&labels)
            .set(int(state.redelivered as u64));
    }

    /// Records what this instance counts.
    pub(crate) fn set_instance(&self, state: InstanceState) {
        let labels = self.labels();
        self.unacked
            .with_label_values(&labels)
            .set(i64::try_from(state.unacked).unwrap_or(i64::MAX));
        for (counter, total) in [
            (&self.redeliveries, state.redeliveries),
            (&self.given_up, state.given_up),
        ] {
            let counter = counter.with_label_values(&labels);
            let seen = counter.get();
            if total > seen {
                counter.inc_by(total - seen);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_series_are_exported_with_group_stream_and_consumer() {
        let metrics = Metrics::new();
        let series = ConsumerMetrics::register(&metrics, "jobs", "JOBS", "jobs-workers").unwrap();
        series.set_consumer(ConsumerState {
            pending: 120,
            ack_pending: 8,
            redelivered: 2,
        });
        series.set_instance(InstanceState {
            unacked: 4,
            redeliveries: 3,
            given_up: 0,
        });
        series.set_instance(InstanceState {
            unacked: 3,
            redeliveries: 5,
            given_up: 1,
        });
        let text = metrics.encode();
        let labels = r#"{consumer="jobs-workers",group="jobs",stream="JOBS"}"#;
        for (name, value) in [
            (CONSUMER_PENDING, 120),
            (CONSUMER_ACK_PENDING, 8),
            (CONSUMER_REDELIVERED, 2),
            (UNACKED_MESSAGES, 3),
            (REDELIVERIES_TOTAL, 5),
            (GIVEN_UP_TOTAL, 1),
        ] {
            let line = format!("{name}{labels} {value}");
            assert!(text.contains(&line), "{line} not in\n{text}");
        }
        for name in ALL {
            assert!(text.contains(name));
        }
    }
}
