//! A lane: the ordered processing of one partition.
//!
//! Each assigned partition gets a lane task. It decodes, processes and sends the
//! outputs of its messages in offset order; deliveries complete in the
//! background and acknowledge the input when the receipts of all its outputs
//! are settled (see `delivery`).
//!
//! A message holds one of the run's `max_in_flight` permits while it is
//! processed, until its outputs are handed to the sink. Messages awaiting
//! delivery count against their partition's buffer instead, so the sink's
//! latency does not leave the handlers idle.
//!
//! A file per stage; each calls only the files below it in this list, and
//! what goes back (a retry) goes back through `handle`'s loop:
//!
//! - `in_order`, `concurrent`, `batched`: the scheduling loop of each
//!   ordering, which takes messages and permits and drives each message;
//! - `inbox`: the partition's messages, as the runtime hands them over;
//! - `handle`: one message's way through the stages, and the loop that goes
//!   back to `attempt` while the failure policy (`crate::policy`) says retry;
//! - `attempt`: the size check, decoding, and `process`, timed by `clock`;
//! - `recover`: the policy's decision carried out: a wait before the next
//!   attempt, a dead letter, or the end of the run;
//! - `emit`: outputs encoded into records, carrying the trace, handed to the sink;
//! - `span`: the message's span, entered around each poll;
//! - `permits`: the run's processing permits;
//! - `wait`: waiting while settling deliveries, and giving up when stopped;
//! - `settle`: delivery reports, including dead letters' and refused outputs';
//! - `acks`: finished messages handed to the acker in bulk, and failures to
//!   the runtime.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use bytes::Bytes;
use futures::FutureExt;
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::context::Context;
use crate::dead_letter::{DeadLetterConfig, Failure};
use crate::delivery::Ledger;
use crate::error::Error;
use crate::message::{Message, PartitionId};
use crate::metrics::{LaneMetrics, Metrics};
use crate::panic::panic_text;
use crate::policy::{self, Decision};
use crate::retry::{self, RetryConfig};
use crate::sink::Sink;
use crate::source::Acker;
use crate::spec::MessageOrder;
use crate::worker::Worker;

mod acks;
mod attempt;
mod batched;
mod clock;
mod concurrent;
mod emit;
mod handle;
mod in_order;
mod inbox;
mod permits;
mod recover;
mod settle;
mod span;
mod wait;

use acks::Finished;
use clock::HandlerClock;
use inbox::Inbox;
pub(crate) use inbox::run_bytes;
use settle::Letters;

/// What the runtime and a lane share about it.
#[derive(Debug, Default)]
pub(crate) struct LaneState {
    /// Messages dispatched to the lane and not yet acknowledged or dropped.
    held: AtomicUsize,
    /// Bytes (payloads and keys) of the runs dispatched to the lane that it
    /// has not started on.
    waiting_bytes: AtomicUsize,
    /// Whether the runtime paused the partition's fetching.
    paused: AtomicBool,
    /// Whether the lane was asked to stop: its stop token, read without the
    /// token's lock.
    stopping: AtomicBool,
}

impl LaneState {
    pub(crate) fn held(&self) -> usize {
        self.held.load(Ordering::Acquire)
    }

    pub(crate) fn waiting_bytes(&self) -> usize {
        self.waiting_bytes.load(Ordering::Acquire)
    }

    /// Counts the bytes of a run dispatched to the lane.
    fn pushed(&self, bytes: usize) {
        self.waiting_bytes.fetch_add(bytes, Ordering::AcqRel);
    }

    /// Takes the bytes of a run the lane starts on off the count.
    fn taken(&self, bytes: usize) {
        self.waiting_bytes.fetch_sub(bytes, Ordering::AcqRel);
    }

    /// Whether a run of `messages` holding `bytes` fills the buffer, whose
    /// size is `(messages, bytes)`.
    pub(crate) fn would_fill(
        &self,
        messages: usize,
        bytes: usize,
        (most, most_bytes): (usize, usize),
    ) -> bool {
        self.held() + messages >= most || self.waiting_bytes() + bytes >= most_bytes
    }

    /// Whether a paused partition may resume: its buffer is at or below
    /// half, in messages and in bytes.
    pub(crate) fn may_resume(&self, resume_at: usize, resume_bytes: usize) -> bool {
        self.held() <= resume_at && self.waiting_bytes() <= resume_bytes
    }

    pub(crate) fn is_paused(&self) -> bool {
        self.paused.load(Ordering::Acquire)
    }

    pub(crate) fn set_paused(&self, paused: bool) {
        self.paused.store(paused, Ordering::Release);
    }

    fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }
}

/// What every lane of a run shares.
pub(crate) struct Shared<W, K, A> {
    pub(crate) worker: Arc<W>,
    pub(crate) sink: Arc<K>,
    pub(crate) acker: A,
    pub(crate) permits: Arc<Semaphore>,
    pub(crate) ctx: Context,
    /// Wakes the runtime to resume paused partitions.
    pub(crate) wake: Arc<Notify>,
    /// A held count at or below which a paused partition resumes.
    pub(crate) resume_at: usize,
    /// Waiting bytes at or below which a paused partition resumes.
    pub(crate) resume_bytes: usize,
    pub(crate) failures: mpsc::UnboundedSender<Error>,
    pub(crate) processed: AtomicU64,
    /// Retries, dead letters and the payload size limit.
    pub(crate) policy: FailurePolicy,
    pub(crate) metrics: Option<Metrics>,
    /// Where retries and delivered dead letters are reported.
    pub(crate) events: crate::events::Events,
}

/// What happens to a message that cannot be processed, and how messages are
/// scheduled.
#[derive(Debug, Clone)]
pub(crate) struct FailurePolicy {
    pub(crate) retry: RetryConfig,
    /// `None` when dead letters are off: a failure stops the run.
    pub(crate) dead_letter: Option<DeadLetterConfig>,
    pub(crate) max_message_bytes: Option<usize>,
    pub(crate) ordering: MessageOrder,
    pub(crate) batch_size: usize,
    pub(crate) batch_timeout: std::time::Duration,
}

impl FailurePolicy {
    /// What follows `failure`: the one failure policy ([`policy::decide`])
    /// with this run's settings and a fresh random draw for the jitter.
    fn decide(&self, failure: &Failure) -> Decision {
        policy::decide(
            failure.kind,
            failure.attempts,
            &self.retry,
            self.dead_letter.is_some(),
            retry::random_unit(),
        )
    }

    /// Why `raw` is refused for its size, if it is ([`policy::too_large`]).
    fn too_large(&self, raw: &Message<Option<Bytes>>) -> Option<String> {
        let size = raw.payload.as_ref().map_or(0, Bytes::len);
        policy::too_large(size, self.max_message_bytes)
    }
}

/// The runtime's handle on a running lane.
pub(crate) struct Lane {
    tx: mpsc::UnboundedSender<Vec<Message<Option<Bytes>>>>,
    pub(crate) state: Arc<LaneState>,
    stop: CancellationToken,
    /// Aborted on drop, so no lane outlives its runtime.
    task: Option<JoinHandle<()>>,
}

impl Drop for Lane {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

impl Lane {
    pub(crate) fn spawn<W, K, A>(partition: PartitionId, shared: Arc<Shared<W, K, A>>) -> Self
    where
        W: Worker,
        K: Sink,
        A: Acker,
    {
        let (tx, rx) = mpsc::unbounded_channel();
        let state = Arc::new(LaneState::default());
        let stop = CancellationToken::new();
        let failures = shared.failures.clone();
        let run = LaneTask::new(partition.clone(), shared, state.clone(), stop.clone());
        let inbox_state = state.clone();
        // A panic anywhere in the lane (codec, sink, a synchronous panic in
        // `process`) stops the run with an error instead of silently stalling.
        let task = tokio::spawn(async move {
            if let Err(panic) = AssertUnwindSafe(run.run(Inbox::counting(rx, inbox_state)))
                .catch_unwind()
                .await
            {
                let _ = failures.send(Error::Lane {
                    partition,
                    reason: format!("panicked: {}", panic_text(&*panic)),
                });
            }
        });
        Self {
            tx,
            state,
            stop,
            task: Some(task),
        }
    }

    /// Queues a run of the partition's messages, in offset order.
    pub(crate) fn push(&self, run: Vec<Message<Option<Bytes>>>, bytes: usize) {
        self.state.held.fetch_add(run.len(), Ordering::AcqRel);
        self.state.pushed(bytes);
        // The receiver lives until the task ends, which only happens after `stop`.
        let _ = self.tx.send(run);
    }

    /// Asks the lane to finish the message it is on, wait for pending deliveries,
    /// and drop the rest.
    pub(crate) fn stop(&self) {
        self.state.stopping.store(true, Ordering::Release);
        self.stop.cancel();
    }

    /// Stops the lane and waits for it, abandoning its work after `deadline`.
    /// Returns whether it finished in time.
    pub(crate) async fn finish(mut self, deadline: tokio::time::Instant) -> bool {
        self.stop();
        let Some(mut task) = self.task.take() else {
            return true;
        };
        match tokio::time::timeout_at(deadline, &mut task).await {
            Ok(_) => true,
            Err(_) => {
                task.abort();
                // Returns at the task's next await point.
                let _ = task.await;
                false
            }
        }
    }

    /// Abandons the lane at once.
    pub(crate) async fn abort(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

/// A lane's task: what its stages share.
struct LaneTask<W: Worker, K: Sink, A: Acker> {
    partition: PartitionId,
    state: Arc<LaneState>,
    stop: CancellationToken,
    /// Where the sink settles the receipts of this lane's outputs.
    ledger: Arc<Ledger>,
    /// Dead letters awaiting delivery.
    letters: Letters,
    /// Finished messages not yet handed to the acker (which takes a lock per
    /// call) nor counted: they go in bulk, once per run of messages (see
    /// `flush_acks`).
    acks: std::sync::Mutex<Finished>,
    /// Times handlers for the duration histogram.
    clock: HandlerClock,
    shared: Arc<Shared<W, K, A>>,
    metrics: Option<LaneMetrics>,
}

impl<W: Worker, K: Sink, A: Acker> Drop for LaneTask<W, K, A> {
    fn drop(&mut self) {
        // However the lane ends (stopped, aborted, panicked), what it
        // finished is acknowledged.
        self.flush_acks();
    }
}

impl<W: Worker, K: Sink, A: Acker> LaneTask<W, K, A> {
    fn new(
        partition: PartitionId,
        shared: Arc<Shared<W, K, A>>,
        state: Arc<LaneState>,
        stop: CancellationToken,
    ) -> Self {
        let metrics = (shared.metrics.as_ref())
            .map(|m| m.topic(shared.ctx.worker(), partition.topic()).lane());
        let one_at_a_time =
            shared.policy.ordering == MessageOrder::Partition && shared.policy.batch_size <= 1;
        Self {
            metrics,
            partition,
            state,
            stop,
            ledger: Arc::new(Ledger::default()),
            letters: Letters::default(),
            acks: std::sync::Mutex::new(Finished::default()),
            clock: HandlerClock::new(one_at_a_time),
            shared,
        }
    }

    /// Takes the partition's messages from `inbox` until the lane is stopped
    /// or fails, in the run's ordering.
    async fn run(self, inbox: Inbox) {
        match self.shared.policy.ordering {
            MessageOrder::Partition if self.shared.policy.batch_size > 1 => {
                self.run_batched(inbox).await
            }
            MessageOrder::Partition => self.run_in_order(inbox).await,
            MessageOrder::Key | MessageOrder::None => self.run_concurrent(inbox).await,
        }
    }
}

#[cfg(test)]
mod stub;

#[cfg(test)]
mod tests {
    use super::LaneState;

    #[test]
    fn a_buffer_fills_by_messages_or_by_bytes_and_resumes_below_half_of_both() {
        let state = LaneState::default();
        let limits = (10, 1000);
        assert!(!state.would_fill(9, 999, limits));
        assert!(state.would_fill(10, 0, limits), "by messages");
        assert!(
            state.would_fill(1, 1000, limits),
            "by bytes: one large message"
        );
        state.held.store(3, std::sync::atomic::Ordering::Relaxed);
        state.pushed(800);
        assert!(state.would_fill(1, 200, limits));
        assert!(!state.may_resume(5, 500), "800 bytes still wait");
        state.taken(400);
        assert!(state.may_resume(5, 500));
        assert!(!state.may_resume(2, 500), "3 messages held");
    }
}
