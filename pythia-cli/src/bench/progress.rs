//! The clock of one benchmark run: messages done, first and last.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use pythia_kafka::core::PartitionId;
use pythia_kafka::core::connector::{Acker, Source, SourceEvent};

use tokio::sync::Notify;

use super::alloc;
use super::usage::Usage;

/// Counts finished messages of one run and times the run between the first and
/// the last; also snapshots the allocation counter in the steady middle.
pub(crate) struct Progress {
    target: u64,
    done: AtomicU64,
    first: OnceLock<Instant>,
    last: OnceLock<Instant>,
    /// Allocation counts at messages `marks.0` and `marks.1`.
    marks: (u64, u64),
    allocations: [AtomicU64; 2],
    finished: Notify,
    /// The process's resource use when the last message was done.
    usage: OnceLock<Usage>,
}

/// A worker's source (Kafka or RabbitMQ), with every acknowledgement
/// counted: a message is done when the worker acknowledges it.
pub(crate) struct Counted<S> {
    pub(crate) inner: S,
    pub(crate) progress: Arc<Progress>,
}

#[derive(Clone)]
pub(crate) struct CountedAcker<A> {
    inner: A,
    progress: Arc<Progress>,
}

impl<A: Acker> Acker for CountedAcker<A> {
    fn ack(&self, partition: &PartitionId, offset: i64) {
        self.inner.ack(partition, offset);
        self.progress.tick();
    }

    fn ack_many(&self, partition: &PartitionId, offsets: &[i64]) {
        self.inner.ack_many(partition, offsets);
        self.progress.tick_many(offsets.len() as u64);
    }
}

impl<S: Source> Source for Counted<S> {
    type Acker = CountedAcker<S::Acker>;

    fn acker(&self) -> Self::Acker {
        CountedAcker {
            inner: self.inner.acker(),
            progress: self.progress.clone(),
        }
    }

    async fn next(&mut self) -> Option<SourceEvent> {
        self.inner.next().await
    }

    fn pause(&mut self, partitions: &[PartitionId]) {
        self.inner.pause(partitions);
    }

    fn resume(&mut self, partitions: &[PartitionId]) {
        self.inner.resume(partitions);
    }

    async fn close(self, timeout: Duration) -> Result<(), pythia_kafka::core::Error> {
        self.inner.close(timeout).await
    }
}

/// What one run measured.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Measured {
    pub(crate) msgs_per_s: f64,
    /// Allocations per message between the 10th and the 90th percentile message.
    pub(crate) allocs_per_msg: f64,
}

impl Progress {
    /// A run of `target` messages.
    pub(crate) fn new(target: u64) -> Self {
        Self {
            target,
            done: AtomicU64::new(0),
            first: OnceLock::new(),
            last: OnceLock::new(),
            marks: ((target / 10).max(1), (target * 9 / 10).max(2)),
            allocations: [AtomicU64::new(0), AtomicU64::new(0)],
            finished: Notify::new(),
            usage: OnceLock::new(),
        }
    }

    /// One more message is done.
    #[inline]
    pub(crate) fn tick(&self) {
        self.tick_many(1);
    }

    /// `k` more messages are done.
    #[inline]
    pub(crate) fn tick_many(&self, k: u64) {
        let before = self.done.fetch_add(k, Ordering::Relaxed);
        let now = before + k;
        let passed = |mark: u64| before < mark && mark <= now;
        if before == 0 {
            let _ = self.first.set(Instant::now());
        }
        if passed(self.marks.0) {
            self.allocations[0].store(alloc::allocations(), Ordering::Relaxed);
        }
        if passed(self.marks.1) {
            self.allocations[1].store(alloc::allocations(), Ordering::Relaxed);
        }
        if passed(self.target) {
            let _ = self.last.set(Instant::now());
            let _ = self.usage.set(Usage::now());
            self.finished.notify_one();
        }
    }

    /// Whether every message is done.
    pub(crate) fn is_finished(&self) -> bool {
        self.last.get().is_some()
    }

    /// Resolves when every message is done.
    pub(crate) async fn finished(&self) {
        if !self.is_finished() {
            self.finished.notified().await;
        }
    }

    /// The process's resource use when the last message was done.
    pub(crate) fn usage(&self) -> Option<Usage> {
        self.usage.get().copied()
    }

    /// The run's figures, once finished.
    pub(crate) fn measured(&self) -> Option<Measured> {
        let (first, last) = (self.first.get()?, self.last.get()?);
        let span = last
            .saturating_duration_since(*first)
            .max(Duration::from_micros(1));
        let allocations = self.allocations[1]
            .load(Ordering::Relaxed)
            .saturating_sub(self.allocations[0].load(Ordering::Relaxed));
        Some(Measured {
            msgs_per_s: (self.target - 1) as f64 / span.as_secs_f64(),
            allocs_per_msg: allocations as f64 / (self.marks.1 - self.marks.0) as f64,
        })
    }
}
