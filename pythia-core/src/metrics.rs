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

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};
use tokio::sync::Semaphore;

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

/// The lag of one partition for a group, as read from the broker.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct PartitionLag {
    /// The topic.
    pub topic: String,
    /// The partition index.
    pub partition: i32,
    /// Oldest readable offset.
    pub low_watermark: i64,
    /// Offset the next message will get.
    pub high_watermark: i64,
    /// The group's committed offset, `None` before its first commit.
    pub committed: Option<i64>,
    /// Messages not yet committed (see [`lag`]).
    pub lag: i64,
    /// Age of the oldest uncommitted message in seconds; 0 without lag, `None`
    /// when it could not be read.
    pub lag_seconds: Option<f64>,
}

impl PartitionLag {
    /// A partition's lag from its watermarks and committed offset.
    ///
    /// ```
    /// use pythia_core::metrics::PartitionLag;
    /// let p = PartitionLag::new("orders", 0, 100, 250, Some(40));
    /// assert_eq!(p.lag, 150); // offsets 40..100 were deleted by retention
    /// ```
    pub fn new(
        topic: impl Into<String>,
        partition: i32,
        low_watermark: i64,
        high_watermark: i64,
        committed: Option<i64>,
    ) -> Self {
        Self {
            topic: topic.into(),
            partition,
            low_watermark,
            high_watermark,
            committed,
            lag: lag(low_watermark, high_watermark, committed),
            lag_seconds: None,
        }
    }

    /// The offset of the oldest message the group still has to process.
    pub fn next_offset(&self) -> i64 {
        self.committed
            .unwrap_or(self.low_watermark)
            .max(self.low_watermark)
    }
}

/// Messages between a committed offset and the high watermark that can still
/// be read: `high − max(committed, low)`, never below 0 and never above what
/// retention left (`high − low`). Before the first commit (`None`) the group
/// starts from the oldest readable message, so everything readable is lag.
///
/// ```
/// use pythia_core::metrics::lag;
/// assert_eq!(lag(0, 10, Some(4)), 6);
/// assert_eq!(lag(0, 10, None), 10);   // nothing committed yet
/// assert_eq!(lag(8, 10, Some(4)), 2); // 4..8 deleted by retention
/// assert_eq!(lag(0, 10, Some(12)), 0); // never negative
/// ```
pub fn lag(low: i64, high: i64, committed: Option<i64>) -> i64 {
    let low = low.max(0);
    let from = committed.unwrap_or(low).max(low);
    (high - from).max(0)
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

    /// Per-topic handles for one worker, resolved once so the message path only
    /// touches atomics.
    pub(crate) fn topic(&self, worker: &str, topic: &str) -> TopicMetrics {
        let m = &self.inner;
        TopicMetrics {
            ok: m.messages.with_label_values(&[worker, topic, outcome::OK]),
            error: m
                .messages
                .with_label_values(&[worker, topic, outcome::ERROR]),
            retried: m
                .messages
                .with_label_values(&[worker, topic, outcome::RETRIED]),
            dead_lettered: m
                .messages
                .with_label_values(&[worker, topic, outcome::DEAD_LETTERED]),
            skipped: m
                .messages
                .with_label_values(&[worker, topic, outcome::SKIPPED]),
            duration: m.process_duration.with_label_values(&[worker, topic]),
        }
    }

    /// Exports `pythia_worker_info` for copy `instance` of `worker`.
    pub(crate) fn worker_started(&self, worker: &str, instance: &str) {
        self.inner
            .worker_info
            .with_label_values(&[worker, instance, env!("CARGO_PKG_VERSION")])
            .set(1);
    }

    /// Reports `worker`'s in-flight count as `max` minus the free permits, read
    /// at scrape time, for as long as `permits` lives.
    pub(crate) fn watch_in_flight(&self, worker: &str, permits: &Arc<Semaphore>, max: usize) {
        let mut runs = self
            .inner
            .in_flight
            .runs
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        runs.push((worker.to_owned(), Arc::downgrade(permits), max));
    }

    /// Sets the partition gauges of `group` from `lag`.
    pub fn set_partition_lag(&self, group: &str, lag: &PartitionLag) {
        let m = &self.inner;
        let partition = lag.partition.to_string();
        let labels = [group, lag.topic.as_str(), partition.as_str()];
        m.lag.with_label_values(&labels).set(lag.lag);
        m.committed
            .with_label_values(&labels)
            .set(lag.committed.unwrap_or(-1));
        m.high.with_label_values(&labels).set(lag.high_watermark);
        m.low.with_label_values(&labels).set(lag.low_watermark);
        if let Some(seconds) = lag.lag_seconds {
            m.lag_seconds.with_label_values(&labels).set(seconds);
        }
    }

    /// Removes the partition gauges of a partition no longer reported (revoked).
    pub fn remove_partition(&self, group: &str, topic: &str, partition: i32) {
        let m = &self.inner;
        let partition = partition.to_string();
        let labels = [group, topic, partition.as_str()];
        let _ = m.lag.remove_label_values(&labels);
        let _ = m.lag_seconds.remove_label_values(&labels);
        let _ = m.committed.remove_label_values(&labels);
        let _ = m.high.remove_label_values(&labels);
        let _ = m.low.remove_label_values(&labels);
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

/// One worker's message metrics for one topic.
#[derive(Clone)]
pub(crate) struct TopicMetrics {
    pub(crate) ok: prometheus::IntCounter,
    pub(crate) error: prometheus::IntCounter,
    pub(crate) retried: prometheus::IntCounter,
    pub(crate) dead_lettered: prometheus::IntCounter,
    pub(crate) skipped: prometheus::IntCounter,
    pub(crate) duration: prometheus::Histogram,
}

impl TopicMetrics {
    /// Metrics for one lane, counted locally and added to these in bulk.
    pub(crate) fn lane(&self) -> LaneMetrics {
        LaneMetrics {
            local: Mutex::new(LocalTopicMetrics {
                ok: self.ok.local(),
                error: self.error.local(),
                retried: self.retried.local(),
                dead_lettered: self.dead_lettered.local(),
                skipped: self.skipped.local(),
                duration: self.duration.local(),
                unflushed: 0,
            }),
            durations: Durations::default(),
        }
    }
}

/// A lane's message metrics. Lanes on different threads updating one topic's
/// shared counters for every message would contend for their cache lines, so
/// each lane counts locally (behind a lock only it takes) and adds its counts
/// to the shared metrics every [`LaneMetrics::FLUSH_EVERY`] updates, whenever
/// it has caught up with its messages or waits on a handler or a retry, and
/// when it ends.
pub(crate) struct LaneMetrics {
    local: Mutex<LocalTopicMetrics>,
    /// Processing times not yet in `local`: the one update made for every
    /// message takes no lock.
    durations: Durations,
}

/// Processing times, in seconds, waiting to be observed in bulk. Written by
/// the lane's task alone, so plain loads and stores keep it: a second writer
/// could only lose times, never read or write out of bounds.
struct Durations {
    seconds: [AtomicU64; Durations::CAPACITY],
    len: AtomicUsize,
}

impl Default for Durations {
    fn default() -> Self {
        Self {
            seconds: std::array::from_fn(|_| AtomicU64::new(0)),
            len: AtomicUsize::new(0),
        }
    }
}

impl Durations {
    const CAPACITY: usize = 64;

    /// Adds one time; returns whether the buffer is now full.
    fn push(&self, seconds: f64) -> bool {
        let len = self.len.load(Ordering::Relaxed).min(Self::CAPACITY - 1);
        self.seconds[len].store(seconds.to_bits(), Ordering::Relaxed);
        self.len.store(len + 1, Ordering::Relaxed);
        len + 1 == Self::CAPACITY
    }

    /// Empties the buffer into `histogram`; returns how many it held.
    fn drain(&self, histogram: &prometheus::local::LocalHistogram) -> u32 {
        let len = self.len.load(Ordering::Relaxed).min(Self::CAPACITY);
        for time in &self.seconds[..len] {
            histogram.observe(f64::from_bits(time.load(Ordering::Relaxed)));
        }
        self.len.store(0, Ordering::Relaxed);
        len as u32
    }
}

struct LocalTopicMetrics {
    ok: prometheus::local::LocalIntCounter,
    error: prometheus::local::LocalIntCounter,
    retried: prometheus::local::LocalIntCounter,
    dead_lettered: prometheus::local::LocalIntCounter,
    skipped: prometheus::local::LocalIntCounter,
    duration: prometheus::local::LocalHistogram,
    unflushed: u32,
}

impl LocalTopicMetrics {
    fn flush_if_due(&mut self) {
        if self.unflushed >= LaneMetrics::FLUSH_EVERY {
            self.flush();
        }
    }

    fn flush(&mut self) {
        self.ok.flush();
        self.error.flush();
        self.retried.flush();
        self.dead_lettered.flush();
        self.skipped.flush();
        self.duration.flush();
        self.unflushed = 0;
    }
}

/// What one update of a lane's metrics counts.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Counted {
    /// Messages finished since the last count: processed, dead-lettered,
    /// and skipped.
    Finished {
        processed: u64,
        dead_lettered: u64,
        skipped: u64,
    },
    Error,
    Retried,
}

impl LaneMetrics {
    /// Updates held back at most before they are added to the shared metrics.
    pub(crate) const FLUSH_EVERY: u32 = 256;

    pub(crate) fn count(&self, what: Counted) {
        let mut local = self.lock();
        match what {
            Counted::Finished {
                processed,
                dead_lettered,
                skipped,
            } => {
                local.ok.inc_by(processed);
                local.dead_lettered.inc_by(dead_lettered);
                local.skipped.inc_by(skipped);
            }
            Counted::Error => local.error.inc(),
            Counted::Retried => local.retried.inc(),
        }
        local.unflushed += 1;
        local.flush_if_due();
    }

    /// Counts one processing time, in seconds: the one update made for every
    /// message, so it is buffered and takes the lock once per
    /// [`Durations::CAPACITY`] times.
    pub(crate) fn observe_duration(&self, seconds: f64) {
        if self.durations.push(seconds) {
            let mut local = self.lock();
            local.unflushed += self.durations.drain(&local.duration);
            local.flush_if_due();
        }
    }

    /// Adds what was counted to the shared metrics.
    pub(crate) fn flush(&self) {
        let mut local = self.lock();
        local.unflushed += self.durations.drain(&local.duration);
        if local.unflushed > 0 {
            local.flush();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LocalTopicMetrics> {
        // Each update is a plain increment: a poisoned lock holds valid counts.
        self.local.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for LaneMetrics {
    fn drop(&mut self) {
        self.flush();
    }
}

type InFlightRun = (String, Weak<Semaphore>, usize);

struct InFlight {
    gauge: IntGaugeVec,
    runs: Mutex<Vec<InFlightRun>>,
}

/// Reads the in-flight counts when scraped: no work on the message path.
struct InFlightCollector(Arc<InFlight>);

impl Collector for InFlightCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.0.gauge.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut runs = self.0.runs.lock().unwrap_or_else(|p| p.into_inner());
        runs.retain(|(worker, permits, max)| match permits.upgrade() {
            Some(permits) => {
                let held = max.saturating_sub(permits.available_permits());
                self.0.gauge.with_label_values(&[worker]).set(held as i64);
                true
            }
            None => {
                self.0.gauge.with_label_values(&[worker]).set(0);
                false
            }
        });
        self.0.gauge.collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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
    fn lane_counts_reach_the_shared_metrics_in_bulk() {
        let metrics = Metrics::new();
        let shared = metrics.topic("w", "t");
        let lane = shared.lane();
        let one = Counted::Finished {
            processed: 1,
            dead_lettered: 0,
            skipped: 0,
        };
        for _ in 0..LaneMetrics::FLUSH_EVERY - 1 {
            lane.count(one);
        }
        assert_eq!(shared.ok.get(), 0, "held back until a flush");
        lane.count(one);
        assert_eq!(shared.ok.get(), u64::from(LaneMetrics::FLUSH_EVERY));
        lane.count(Counted::Finished {
            processed: 2,
            dead_lettered: 1,
            skipped: 1,
        });
        lane.count(Counted::Retried);
        lane.observe_duration(0.25);
        lane.flush();
        assert_eq!(shared.ok.get(), u64::from(LaneMetrics::FLUSH_EVERY) + 2);
        assert_eq!(shared.dead_lettered.get(), 1);
        assert_eq!(shared.skipped.get(), 1);
        assert_eq!(shared.retried.get(), 1);
        assert_eq!(shared.duration.get_sample_count(), 1);
        assert_eq!(shared.duration.get_sample_sum(), 0.25);
        lane.count(Counted::Error);
        drop(lane);
        assert_eq!(shared.error.get(), 1, "a lane that ends flushes");
    }

    #[test]
    fn buffered_durations_reach_the_histogram_in_bulk_and_on_flush() {
        let metrics = Metrics::new();
        let topic = metrics.topic("w", "t");
        let lane = topic.lane();
        let capacity = Durations::CAPACITY as u64;
        for _ in 0..capacity - 1 {
            lane.observe_duration(0.001);
        }
        assert_eq!(topic.duration.get_sample_count(), 0, "buffered");
        // Full buffers move to the lane's histogram; every FLUSH_EVERY
        // updates they reach the shared one.
        let every = u64::from(LaneMetrics::FLUSH_EVERY);
        for _ in capacity - 1..every + 10 {
            lane.observe_duration(0.001);
        }
        assert_eq!(topic.duration.get_sample_count(), every);
        lane.flush();
        assert_eq!(topic.duration.get_sample_count(), every + 10);
        assert!((topic.duration.get_sample_sum() - (every + 10) as f64 * 0.001).abs() < 1e-9);
        lane.observe_duration(0.5);
        drop(lane);
        assert_eq!(
            topic.duration.get_sample_count(),
            every + 11,
            "a lane that ends flushes"
        );
    }

    #[test]
    fn in_flight_is_read_from_the_permits() {
        let metrics = Metrics::new();
        let permits = Arc::new(Semaphore::new(8));
        metrics.watch_in_flight("w", &permits, 8);
        let _held = permits.clone().try_acquire_many_owned(3).unwrap();
        assert!(
            metrics
                .encode()
                .contains(r#"pythia_in_flight_messages{worker="w"} 3"#)
        );
        drop(_held);
        drop(permits);
        assert!(
            metrics
                .encode()
                .contains(r#"pythia_in_flight_messages{worker="w"} 0"#)
        );
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

    #[test]
    fn removed_partitions_disappear() {
        let metrics = Metrics::new();
        metrics.set_partition_lag("g", &PartitionLag::new("t", 3, 0, 5, Some(1)));
        metrics.remove_partition("g", "t", 3);
        assert!(!metrics.encode().contains(r#"partition="3""#));
    }

    proptest! {
        #[test]
        fn lag_is_never_negative_nor_more_than_readable(
            low in 0i64..1000, len in 0i64..1000, committed in proptest::option::of(-5i64..3000)
        ) {
            let high = low + len;
            let lag = lag(low, high, committed);
            prop_assert!(lag >= 0);
            prop_assert!(lag <= high - low);
            if let Some(c) = committed.filter(|c| (low..=high).contains(c)) {
                prop_assert_eq!(lag, high - c);
            }
        }
    }
}
