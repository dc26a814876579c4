//! The queue's series: its depth, what this instance holds unacknowledged,
//! and its redeliveries, in the naming scheme of the Kafka lag series.
//!
//! | name | type | labels | what |
//! |---|---|---|---|
//! | `pythia_queue_messages_ready` | gauge | `group`, `queue` | messages waiting in the queue, as the broker reports them (a passive `queue.declare`); delivered but unacknowledged messages are not in it |
//! | `pythia_queue_unacked_messages` | gauge | `group`, `queue` | deliveries this instance holds and has not acknowledged (in progress, or waiting for their outputs' confirms) |
//! | `pythia_queue_consumers` | gauge | `group`, `queue` | consumers of the queue, as the broker reports them |
//! | `pythia_queue_redeliveries_total` | counter | `group`, `queue` | deliveries this instance got with the redelivered flag |
//!
//! `group` is the worker's name, shared by its instances. The backlog for
//! scaling counts the messages in progress too: `max by (queue)
//! (pythia_queue_messages_ready) + sum by (queue) (pythia_queue_unacked_messages)`
//! (each instance reports the same `messages_ready`, hence `max`).

use prometheus::{IntCounterVec, IntGaugeVec, Opts};
use pythia_core::Metrics;

/// `pythia_queue_messages_ready`.
pub const QUEUE_MESSAGES_READY: &str = "pythia_queue_messages_ready";
/// `pythia_queue_unacked_messages`.
pub const QUEUE_UNACKED_MESSAGES: &str = "pythia_queue_unacked_messages";
/// `pythia_queue_consumers`.
pub const QUEUE_CONSUMERS: &str = "pythia_queue_consumers";
/// `pythia_queue_redeliveries_total`.
pub const QUEUE_REDELIVERIES_TOTAL: &str = "pythia_queue_redeliveries_total";

/// Every series name above.
pub const ALL: &[&str] = &[
    QUEUE_MESSAGES_READY,
    QUEUE_UNACKED_MESSAGES,
    QUEUE_CONSUMERS,
    QUEUE_REDELIVERIES_TOTAL,
];

/// The queue's series, registered in a worker's [`Metrics`].
#[derive(Clone)]
pub(crate) struct QueueMetrics {
    ready: IntGaugeVec,
    unacked: IntGaugeVec,
    consumers: IntGaugeVec,
    redeliveries: IntCounterVec,
}

impl QueueMetrics {
    /// Registers the series in `metrics`' registry.
    pub(crate) fn register(metrics: &Metrics) -> Result<Self, prometheus::Error> {
        let labels = &["group", "queue"];
        let gauge = |name: &str, help: &str| IntGaugeVec::new(Opts::new(name, help), labels);
        let this = Self {
            ready: gauge(
                QUEUE_MESSAGES_READY,
                "Messages ready in the queue (not counting unacknowledged ones)",
            )?,
            unacked: gauge(
                QUEUE_UNACKED_MESSAGES,
                "Deliveries this instance has not acknowledged yet",
            )?,
            consumers: gauge(QUEUE_CONSUMERS, "Consumers of the queue")?,
            redeliveries: IntCounterVec::new(
                Opts::new(
                    QUEUE_REDELIVERIES_TOTAL,
                    "Deliveries received with the redelivered flag",
                ),
                labels,
            )?,
        };
        let registry = metrics.registry();
        registry.register(Box::new(this.ready.clone()))?;
        registry.register(Box::new(this.unacked.clone()))?;
        registry.register(Box::new(this.consumers.clone()))?;
        registry.register(Box::new(this.redeliveries.clone()))?;
        Ok(this)
    }

    /// Records what the broker reports of the queue.
    pub(crate) fn set_depth(&self, group: &str, queue: &str, ready: u32, consumers: u32) {
        self.ready
            .with_label_values(&[group, queue])
            .set(i64::from(ready));
        self.consumers
            .with_label_values(&[group, queue])
            .set(i64::from(consumers));
    }

    /// Records this instance's unacknowledged deliveries and its redeliveries
    /// so far (a running total).
    pub(crate) fn set_instance(&self, group: &str, queue: &str, unacked: usize, redeliveries: u64) {
        self.unacked
            .with_label_values(&[group, queue])
            .set(i64::try_from(unacked).unwrap_or(i64::MAX));
        let counter = self.redeliveries.with_label_values(&[group, queue]);
        let seen = counter.get();
        if redeliveries > seen {
            counter.inc_by(redeliveries - seen);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_series_are_exported_with_group_and_queue() {
        let metrics = Metrics::new();
        let queue = QueueMetrics::register(&metrics).unwrap();
        queue.set_depth("jobs-worker", "jobs", 120, 2);
        queue.set_instance("jobs-worker", "jobs", 10, 3);
        queue.set_instance("jobs-worker", "jobs", 7, 5);
        let text = metrics.encode();
        for line in [
            r#"pythia_queue_messages_ready{group="jobs-worker",queue="jobs"} 120"#,
            r#"pythia_queue_consumers{group="jobs-worker",queue="jobs"} 2"#,
            r#"pythia_queue_unacked_messages{group="jobs-worker",queue="jobs"} 7"#,
            r#"pythia_queue_redeliveries_total{group="jobs-worker",queue="jobs"} 5"#,
        ] {
            assert!(text.contains(line), "{line} not in\n{text}");
        }
        for name in ALL {
            assert!(text.contains(name));
        }
    }
}
