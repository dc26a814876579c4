//! A lane's message metrics: counted locally by the lane, and added to the
//! shared per-topic metrics in bulk.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use super::{Metrics, outcome};

impl Metrics {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
