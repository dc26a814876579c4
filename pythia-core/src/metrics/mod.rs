//! Metrics: every metric Pythia exports, with its name and labels, in one place.
//!
//! The names are part of the public API (dashboards and alert rules use them):
//!
//! | name | type | labels | what |
//! |---|---|---|---|
//! | `pythia_messages_total` | counter | `worker`, `topic`, `outcome` | messages by outcome: `ok` (processed, outputs delivered, offset may be committed), `dead_lettered` (given up on and delivered to the dead-letter topic), `retried` (a failed attempt that will be retried; one per attempt), `skipped` (given up on, its dead letter refused even reduced, and committed: `worker.dead_letter.on_failure = "skip"`) or `error` (stopped the run) |
//! | `pythia_process_duration_seconds` | histogram | `worker`, `topic` | time spent in `process` per message |
//! | `pythia_in_flight_messages` | gauge | `worker` | messages processing, until their outputs are handed to the sink |
//! | `pythia_consumer_lag` | gauge | `group`, `topic`, `partition` | messages not yet committed: high watermark − max(committed offset, low watermark), never negative |
//! | `pythia_consumer_lag_seconds` | gauge | `group`, `topic`, `partition` | age of the oldest uncommitted message (0 when there is no lag) |
//! | `pythia_committed_offset` | gauge | `group`, `topic`, `partition` | the group's committed offset (−1 before the first commit) |
//! | `pythia_high_watermark` | gauge | `group`, `topic`, `partition` | offset of the next message to be written |
//! | `pythia_low_watermark` | gauge | `group`, `topic`, `partition` | oldest offset still readable (retention moves it) |
//! | `pythia_assigned_partitions` | gauge | `group` | partitions assigned to this member |
//! | `pythia_rebalances_total` | counter | `group` | assignment changes (assign or revoke) seen by this member |
//! | `pythia_commit_failures_total` | counter | `group` | offset commits the broker rejected or that could not be sent |
//! | `pythia_worker_info` | gauge, always 1 | `worker`, `instance_name`, `pythia_version` | which copy of which worker serves these metrics (see below) |
//!
//! No series carries the name of the copy of the worker (`worker.instance`)
//! as a label: Prometheus gives each scraped series an `instance` label of
//! its own (the target's address), and one more label on every series would
//! multiply them. `pythia_worker_info` carries it once per process; join it in
//! where it is wanted, e.g.
//! `pythia_in_flight_messages * on (instance, worker) group_left (instance_name) pythia_worker_info`.
//!
//! A worker exports the partition gauges for the partitions assigned to it, so
//! `sum by (group)` over all instances counts each partition once; the
//! standalone exporter (`pythia lag --serve`) exports every partition of the group.
//!
//! Here: the names, and [`Metrics`], which registers every metric. A lane's
//! counting (local, added to the shared metrics in bulk) is in `lane.rs`, the
//! partitions' lag and its gauges in `lag.rs`, the in-flight gauge, read at
//! scrape time, in `in_flight.rs`.

use std::sync::{Arc, Mutex};

use prometheus::core::Collector;
use prometheus::proto::MetricFamily;
use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

mod in_flight;
mod lag;
mod lane;

use in_flight::{InFlight, InFlightCollector};
pub use lag::{PartitionLag, lag};
pub(crate) use lane::{Counted, LaneMetrics};

/// `pythia_messages_total`.
pub const MESSAGES_TOTAL: &str = "pythia_messages_total";
/// `pythia_process_duration_seconds`.
pub const PROCESS_DURATION_SECONDS: &str = "pythia_process_duration_seconds";
/// `pythia_in_flight_messages`.
pub const IN_FLIGHT_MESSAGES: &str = "pythia_in_flight_messages";
/// `pythia_consumer_lag`.
pub const CONSUMER_LAG: &str = "pythia_consumer_lag";
/// `pythia_consumer_lag_seconds`.
pub const CONSUMER_LAG_SECONDS: &str = "pythia_consumer_lag_seconds";
/// `pythia_committed_offset`.
pub const COMMITTED_OFFSET: &str = "pythia_committed_offset";
/// `pythia_high_watermark`.
pub const HIGH_WATERMARK: &str = "pythia_high_watermark";
/// `pythia_low_watermark`.
pub const LOW_WATERMARK: &str = "pythia_low_watermark";
/// `pythia_assigned_partitions`.
pub const ASSIGNED_PARTITIONS: &str = "pythia_assigned_partitions";
/// `pythia_rebalances_total`.
pub const REBALANCES_TOTAL: &str = "pythia_rebalances_total";
/// `pythia_commit_failures_total`.
pub const COMMIT_FAILURES_TOTAL: &str = "pythia_commit_failures_total";
/// `pythia_worker_info`.
pub const WORKER_INFO: &str = "pythia_worker_info";

/// Every metric name above, for checks that dashboards and rules use real names.
pub const ALL: &[&str] = &[
    MESSAGES_TOTAL,
    PROCESS_DURATION_SECONDS,
    IN_FLIGHT_MESSAGES,
    CONSUMER_LAG,
    CONSUMER_LAG_SECONDS,
    COMMITTED_OFFSET,
    HIGH_WATERMARK,
    LOW_WATERMARK,
    ASSIGNED_PARTITIONS,
    REBALANCES_TOTAL,
    COMMIT_FAILURES_TOTAL,
    WORKER_INFO,
];

/// Outcome label values of `pythia_messages_total`.
pub mod outcome {
    /// Processed and acknowledged.
    pub const OK: &str = "ok";
    /// Failed; the run stopped on it (dead letters off, or an output not delivered).
    pub const ERROR: &str = "error";
    /// A failed attempt that will be retried (counted per attempt).
    pub const RETRIED: &str = "retried";
    /// Given up on and delivered to the dead-letter topic; its offset may be committed.
    pub const DEAD_LETTERED: &str = "dead_lettered";
    /// Given up on with no dead letter (refused even reduced, and
    /// `worker.dead_letter.on_failure = "skip"`); its offset may be committed.
    pub const SKIPPED: &str = "skipped";
}

/// Every Pythia metric, registered in one [`Registry`].
///
/// Cheap to clone; clones share the metrics.
///
/// ```
/// use pythia_core::metrics::{Metrics, PartitionLag};
/// let metrics = Metrics::new();
/// metrics.set_partition_lag("billing", &PartitionLag::new("orders", 0, 0, 10, Some(4)));
/// let text = metrics.encode();
/// assert!(text.contains(r#"pythia_consumer_lag{group="billing",partition="0",topic="orders"} 6"#));
/// ```
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    messages: IntCounterVec,
    process_duration: HistogramVec,
    in_flight: Arc<InFlight>,
    lag: IntGaugeVec,
    lag_seconds: GaugeVec,
    committed: IntGaugeVec,
    high: IntGaugeVec,
    low: IntGaugeVec,
    assigned: IntGaugeVec,
    rebalances: IntCounterVec,
    commit_failures: IntCounterVec,
    worker_info: IntGaugeVec,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

const PARTITION_LABELS: &[&str] = &["group", "topic", "partition"];

impl Metrics {
    /// Every metric, registered in a fresh registry.
    pub fn new() -> Self {
        let registry = Registry::new();
        let messages = IntCounterVec::new(
            Opts::new(MESSAGES_TOTAL, "Messages finished, by outcome."),
            &["worker", "topic", "outcome"],
        )
        .expect("valid metric");
        let process_duration = HistogramVec::new(
            HistogramOpts::new(
                PROCESS_DURATION_SECONDS,
                "Time spent in `process` per message.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0, 30.0,
            ]),
            &["worker", "topic"],
        )
        .expect("valid metric");
        let in_flight = Arc::new(InFlight {
            gauge: IntGaugeVec::new(
                Opts::new(
                    IN_FLIGHT_MESSAGES,
                    "Messages processing, until their outputs are handed to the sink.",
                ),
                &["worker"],
            )
            .expect("valid metric"),
            runs: Mutex::new(Vec::new()),
        });
        let partition_gauge = |name: &str, help: &str| {
            IntGaugeVec::new(Opts::new(name, help), PARTITION_LABELS).expect("valid metric")
        };
        let lag = partition_gauge(CONSUMER_LAG, "Messages not yet committed by the group.");
        let lag_seconds = GaugeVec::new(
            Opts::new(
                CONSUMER_LAG_SECONDS,
                "Age of the oldest message not yet committed by the group.",
            ),
            PARTITION_LABELS,
        )
        .expect("valid metric");
        let committed = partition_gauge(
            COMMITTED_OFFSET,
            "The group's committed offset (-1 before the first commit).",
        );
        let high = partition_gauge(HIGH_WATERMARK, "Offset of the next message written.");
        let low = partition_gauge(LOW_WATERMARK, "Oldest offset still readable.");
        let assigned = IntGaugeVec::new(
            Opts::new(ASSIGNED_PARTITIONS, "Partitions assigned to this member."),
            &["group"],
        )
        .expect("valid metric");
        let rebalances = IntCounterVec::new(
            Opts::new(REBALANCES_TOTAL, "Assignment changes seen by this member."),
            &["group"],
        )
        .expect("valid metric");
        let commit_failures = IntCounterVec::new(
            Opts::new(COMMIT_FAILURES_TOTAL, "Offset commits that failed."),
            &["group"],
        )
        .expect("valid metric");
        let worker_info = IntGaugeVec::new(
            Opts::new(
                WORKER_INFO,
                "Always 1: the worker and the copy of it (worker.instance) serving these metrics.",
            ),
            &["worker", "instance_name", "pythia_version"],
        )
        .expect("valid metric");
        let collectors: Vec<Box<dyn Collector>> = vec![
            Box::new(messages.clone()),
            Box::new(process_duration.clone()),
            Box::new(InFlightCollector(in_flight.clone())),
            Box::new(lag.clone()),
            Box::new(lag_seconds.clone()),
            Box::new(committed.clone()),
            Box::new(high.clone()),
            Box::new(low.clone()),
            Box::new(assigned.clone()),
            Box::new(rebalances.clone()),
            Box::new(commit_failures.clone()),
            Box::new(worker_info.clone()),
        ];
        for collector in collectors {
            registry.register(collector).expect("distinct metric names");
        }
        Self {
            inner: Arc::new(Inner {
                registry,
                messages,
                process_duration,
                in_flight,
                lag,
                lag_seconds,
                committed,
                high,
                low,
                assigned,
                rebalances,
                commit_failures,
                worker_info,
            }),
        }
    }

    /// The registry, to register an application's own metrics beside Pythia's.
    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    /// Everything in the registry, in the Prometheus text format.
    pub fn encode(&self) -> String {
        let families: Vec<MetricFamily> = self.inner.registry.gather();
        let mut out = Vec::new();
        // Writing to a Vec cannot fail, and gathered families are well formed.
        let _ = TextEncoder::new().encode(&families, &mut out);
        String::from_utf8(out).unwrap_or_default()
    }

    /// Exports `pythia_worker_info` for copy `instance` of `worker`.
    pub(crate) fn worker_started(&self, worker: &str, instance: &str) {
        self.inner
            .worker_info
            .with_label_values(&[worker, instance, env!("CARGO_PKG_VERSION")])
            .set(1);
    }

    /// Sets `pythia_assigned_partitions` of `group`.
    pub fn set_assigned(&self, group: &str, partitions: usize) {
        self.inner
            .assigned
            .with_label_values(&[group])
            .set(partitions as i64);
    }

    /// Counts one assignment change of `group`.
    pub fn rebalanced(&self, group: &str) {
        self.inner.rebalances.with_label_values(&[group]).inc();
    }

    /// Exports `group`'s rebalance and commit-failure counters at zero, so
    /// dashboards and alerts see them before the first of either.
    pub fn group_started(&self, group: &str) {
        let _ = self.inner.rebalances.with_label_values(&[group]);
        let _ = self.inner.commit_failures.with_label_values(&[group]);
    }

    /// Counts one failed offset commit of `group`.
    pub fn commit_failed(&self, group: &str) {
        self.inner.commit_failures.with_label_values(&[group]).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::Semaphore;

    #[test]
    fn every_metric_name_is_exported() {
        let metrics = Metrics::new();
        metrics.topic("w", "t").ok.inc();
        metrics.topic("w", "t").duration.observe(0.01);
        let mut lag = PartitionLag::new("t", 0, 0, 1, None);
        lag.lag_seconds = Some(1.5);
        metrics.set_partition_lag("g", &lag);
        let permits = Arc::new(Semaphore::new(4));
        metrics.watch_in_flight("w", &permits, 4);
        metrics.set_assigned("g", 1);
        metrics.rebalanced("g");
        metrics.commit_failed("g");
        metrics.worker_started("w", "host-1");
        let text = metrics.encode();
        for name in ALL {
            assert!(text.contains(&format!("# TYPE {name} ")), "{name} missing");
        }
    }

    #[test]
    fn the_info_gauge_names_the_copy_of_the_worker_without_an_instance_label() {
        let metrics = Metrics::new();
        metrics.worker_started("billing", "web-3-4711");
        let text = metrics.encode();
        let line = text
            .lines()
            .find(|l| l.starts_with(WORKER_INFO))
            .expect("the info series");
        assert_eq!(
            line,
            format!(
                r#"pythia_worker_info{{instance_name="web-3-4711",pythia_version="{}",worker="billing"}} 1"#,
                env!("CARGO_PKG_VERSION")
            )
        );
        assert!(
            !text.contains("instance=\""),
            "Prometheus sets `instance` itself: {text}"
        );
    }
}
