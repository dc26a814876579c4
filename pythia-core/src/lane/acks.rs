//! What a lane reports to the runtime: its finished messages, handed to the
//! acker and counted in bulk, and the error that stops the run.

use std::sync::atomic::Ordering;

use super::LaneTask;
use crate::delivery::Outcome;
use crate::error::Error;
use crate::metrics::Counted;
use crate::sink::Sink;
use crate::source::Acker;
use crate::worker::Worker;

/// The most finished offsets a lane holds back from the acker.
pub(super) const ACK_BATCH: usize = 256;

/// A lane's finished messages since its last `flush_acks`.
#[derive(Default)]
pub(super) struct Finished {
    offsets: Vec<i64>,
    /// How many of them were dead-lettered, and skipped; the others were
    /// processed.
    dead_lettered: u64,
    skipped: u64,
}

impl<W: Worker, K: Sink, A: Acker> LaneTask<W, K, A> {
    /// Records a finished message; it reaches the acker at the next
    /// `flush_acks`.
    pub(super) fn ack(&self, offset: i64, outcome: Outcome) {
        let full = {
            let mut acks = lock(&self.acks);
            acks.offsets.push(offset);
            match outcome {
                Outcome::Processed => {}
                Outcome::DeadLettered => acks.dead_lettered += 1,
                Outcome::Skipped => acks.skipped += 1,
            }
            acks.offsets.len() >= ACK_BATCH
        };
        if full {
            self.flush_acks();
        }
    }

    /// Hands the finished offsets to the acker and releases their hold on the
    /// partition's buffer. Called whenever the lane is about to wait (its run
    /// of messages is done, a handler or a permit is pending), after each run
    /// of delivery reports, and when the lane ends.
    pub(super) fn flush_acks(&self) {
        let mut acks = lock(&self.acks);
        if acks.offsets.is_empty() {
            return;
        }
        self.shared.acker.ack_many(&self.partition, &acks.offsets);
        let n = acks.offsets.len();
        let dead_lettered = std::mem::take(&mut acks.dead_lettered);
        let skipped = std::mem::take(&mut acks.skipped);
        acks.offsets.clear();
        drop(acks);
        if let Some(metrics) = &self.metrics {
            metrics.count(Counted::Finished {
                processed: n as u64 - dead_lettered - skipped,
                dead_lettered,
                skipped,
            });
        }
        self.shared.processed.fetch_add(n as u64, Ordering::Relaxed);
        let held = self.state.held.fetch_sub(n, Ordering::AcqRel) - n;
        if held == 0
            && let Some(metrics) = &self.metrics
        {
            // Caught up: what was counted shows at the next scrape.
            metrics.flush();
        }
        if held <= self.shared.resume_at
            && self.state.waiting_bytes() <= self.shared.resume_bytes
            && self.state.is_paused()
        {
            self.shared.wake.notify_one();
        }
    }

    /// Reports an error that stops the run.
    pub(super) fn fail(&self, error: Error) {
        if let Some(metrics) = &self.metrics {
            metrics.count(Counted::Error);
            metrics.flush();
        }
        // Logged once, by the runtime, which stops the run.
        let _ = self.shared.failures.send(error);
    }
}

/// Locks a lane-local mutex; a panic while it was held left a valid value.
pub(super) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lane::stub;

    #[tokio::test]
    async fn finished_messages_reach_the_acker_in_bulk_when_flushed() {
        let stub = stub::lane(stub::policy());
        stub.task.state.held.store(3, Ordering::Relaxed);
        stub.task.ack(0, Outcome::Processed);
        stub.task.ack(1, Outcome::DeadLettered);
        stub.task.ack(2, Outcome::Skipped);
        assert_eq!(stub.acks.calls(), 0, "held back until a flush");
        stub.task.flush_acks();
        assert_eq!(stub.acks.offsets(), [0, 1, 2]);
        assert_eq!(stub.acks.calls(), 1, "in one call");
        assert_eq!(stub.task.state.held(), 0, "the buffer is released");
        assert_eq!(stub.task.shared.processed.load(Ordering::Relaxed), 3);
        stub.task.flush_acks();
        assert_eq!(stub.acks.calls(), 1, "nothing new: no call");
        let counted = stub.metrics.encode();
        for (outcome, count) in [("ok", 1), ("dead_lettered", 1), ("skipped", 1)] {
            let line = format!(r#"outcome="{outcome}",topic="t",worker="w"}} {count}"#);
            assert!(counted.contains(&line), "{line}\n{counted}");
        }
    }

    #[tokio::test]
    async fn a_full_batch_of_acks_is_flushed_at_once() {
        let stub = stub::lane(stub::policy());
        stub.task.state.held.store(ACK_BATCH + 1, Ordering::Relaxed);
        for offset in 0..ACK_BATCH as i64 {
            stub.task.ack(offset, Outcome::Processed);
        }
        assert_eq!(stub.acks.offsets().len(), ACK_BATCH);
        assert_eq!(stub.task.state.held(), 1);
    }

    #[tokio::test]
    async fn a_paused_partition_that_drained_to_its_resume_mark_wakes_the_runtime() {
        let stub = stub::lane(stub::policy());
        let woken = stub.task.shared.wake.clone();
        stub.task.state.held.store(2, Ordering::Relaxed);
        stub.task.state.set_paused(true);
        stub.task.ack(0, Outcome::Processed);
        stub.task.flush_acks();
        // `resume_at` is 1 in the stub: held 1 resumes.
        tokio::time::timeout(std::time::Duration::from_secs(1), woken.notified())
            .await
            .expect("woken");
    }

    #[tokio::test]
    async fn a_failure_is_counted_and_sent_to_the_runtime() {
        let mut stub = stub::lane(stub::policy());
        stub.task.fail(Error::Lane {
            partition: stub.task.partition.clone(),
            reason: "broken".into(),
        });
        assert!(matches!(
            stub.failures.try_recv(),
            Ok(Error::Lane { reason, .. }) if reason == "broken"
        ));
        let line = r#"outcome="error",topic="t",worker="w"} 1"#;
        assert!(stub.metrics.encode().contains(line));
    }
}
