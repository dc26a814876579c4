//! A lane: the ordered, sequential processing of one partition.
//!
//! Each assigned partition gets a lane task. It decodes, processes and sends the
//! outputs of its messages one at a time, in offset order; deliveries complete in
//! the background and acknowledge the input when the receipts of all its
//! outputs are settled (see `delivery`).
//!
//! A message holds one of the run's `max_in_flight` permits while it is
//! processed, until its outputs are handed to the sink. Messages awaiting
//! delivery count against their partition's buffer instead, so the sink's
//! latency does not leave the handlers idle.

use std::collections::{HashMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::Poll;

use bytes::Bytes;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::codec::{Decode, Encode};
use crate::config::Ordering as MessageOrder;
use crate::dead_letter::{
    self, DeadLetterConfig, Failure, FailureKind, Letter, OnFailure, Undelivered,
};
use crate::delivery::{Delivered, Ledger, Outcome, Receipt};
use crate::error::Error;
use crate::message::{Message, PartitionId};
use crate::metrics::{Counted, LaneMetrics, Metrics};
use crate::panic::panic_text;
use crate::retry::RetryConfig;
use crate::sink::{Record, Sink};
use crate::source::Acker;
use crate::trace::{TraceParent, continue_trace};
use crate::worker::{Context, Output, Outputs, ProcessError, Repr, Worker};

/// What the runtime and a lane share about it.
#[derive(Debug, Default)]
pub(crate) struct LaneState {
    /// Messages dispatched to the lane and not yet acknowledged or dropped.
    held: AtomicUsize,
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
    pub(crate) failures: mpsc::UnboundedSender<Error>,
    pub(crate) processed: AtomicU64,
    /// Retries, dead letters and the payload size limit.
    pub(crate) policy: FailurePolicy,
    pub(crate) metrics: Option<Metrics>,
}

/// What happens to a message that cannot be processed.
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
        let metrics = (shared.metrics.as_ref())
            .map(|m| m.topic(shared.ctx.worker(), partition.topic()).lane());
        let one_at_a_time =
            shared.policy.ordering == MessageOrder::Partition && shared.policy.batch_size <= 1;
        let run = LaneTask {
            metrics,
            partition: partition.clone(),
            inbox: Inbox {
                rx,
                run: Vec::new().into_iter(),
            },
            state: state.clone(),
            stop: stop.clone(),
            ledger: Arc::new(Ledger::default()),
            letters: std::sync::Mutex::new(HashMap::new()),
            acks: std::sync::Mutex::new(Finished::default()),
            clock: HandlerClock::new(one_at_a_time),
            shared,
        };
        // A panic anywhere in the lane (codec, sink, a synchronous panic in
        // `process`) stops the run with an error instead of silently stalling.
        let task = tokio::spawn(async move {
            if let Err(panic) = AssertUnwindSafe(run.run()).catch_unwind().await {
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
    pub(crate) fn push(&self, run: Vec<Message<Option<Bytes>>>) {
        self.state.held.fetch_add(run.len(), Ordering::AcqRel);
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

/// A lane's incoming messages: runs of the partition's messages, taken one
/// at a time.
struct Inbox {
    rx: mpsc::UnboundedReceiver<Vec<Message<Option<Bytes>>>>,
    run: std::vec::IntoIter<Message<Option<Bytes>>>,
}

impl Inbox {
    /// An inbox that never yields.
    fn closed() -> Self {
        let (_, rx) = mpsc::unbounded_channel();
        Self {
            rx,
            run: Vec::new().into_iter(),
        }
    }

    /// Whether the current run has messages left.
    fn has_waiting(&self) -> bool {
        self.run.len() > 0
    }

    /// A message already waiting, without waiting for one.
    fn try_next(&mut self) -> Option<Message<Option<Bytes>>> {
        loop {
            if let Some(message) = self.run.next() {
                return Some(message);
            }
            self.run = self.rx.try_recv().ok()?.into_iter();
        }
    }

    /// The next message; `None` once the runtime dropped the lane. Safe to
    /// cancel: a message is taken only when it is returned.
    async fn recv(&mut self) -> Option<Message<Option<Bytes>>> {
        loop {
            if let Some(message) = self.run.next() {
                return Some(message);
            }
            self.run = self.rx.recv().await?.into_iter();
        }
    }
}

/// A message of the concurrent mode being processed, with its key slot.
type Started<'a> =
    Pin<Box<dyn std::future::Future<Output = (Option<Bytes>, Result<Handled, Error>)> + Send + 'a>>;

/// What a lane's loop does next.
enum Step {
    /// Take the next message.
    Next,
    /// Take no more; settle what is pending, then end.
    Stop,
    /// End now: the run failed (reported already).
    End,
}

/// What became of a message the lane took.
enum Handled {
    /// Sent (outputs or dead letter); acknowledged once delivered. With the
    /// permit it no longer needs.
    Sent(OwnedSemaphorePermit),
    /// Done with no outputs, acknowledged.
    Acked(OwnedSemaphorePermit),
    /// The lane was stopped while the message waited to be retried.
    Stopped,
    /// A delivery failed meanwhile; the run is stopping.
    Failed,
}

/// How one attempt at processing a message ended.
enum Attempt<O> {
    Done(Outputs<O>),
    Failed(ProcessError),
    /// The payload could not be decoded: no attempt was made.
    Undecodable(String),
    /// `process` panicked: the reason.
    Panicked(String),
}

enum Wait {
    Permit(OwnedSemaphorePermit),
    Stop,
    Fail,
}

struct LaneTask<W: Worker, K: Sink, A: Acker> {
    partition: PartitionId,
    inbox: Inbox,
    state: Arc<LaneState>,
    stop: CancellationToken,
    /// Where the sink settles the receipts of this lane's outputs.
    ledger: Arc<Ledger>,
    /// Dead letters awaiting delivery, by offset, with the reduced form to
    /// send if the broker refuses them (`None`: reduced already).
    letters: std::sync::Mutex<HashMap<i64, Option<Record>>>,
    /// Finished messages not yet handed to the acker (which takes a lock per
    /// call) nor counted: they go in bulk, once per run of messages (see
    /// `flush_acks`).
    acks: std::sync::Mutex<Finished>,
    /// Times handlers for the duration histogram.
    clock: HandlerClock,
    shared: Arc<Shared<W, K, A>>,
    metrics: Option<LaneMetrics>,
}

/// A lane's finished messages since its last `flush_acks`.
#[derive(Default)]
struct Finished {
    offsets: Vec<i64>,
    /// How many of them were dead-lettered, and skipped; the others were
    /// processed.
    dead_lettered: u64,
    skipped: u64,
}

/// Times handlers with one clock read each where it can: in an in-order
/// lane, a handler that starts right after the previous one ended (no wait
/// between them) starts at that end. The lane's own work in between, well
/// under a microsecond, is a rounding error next to the histogram's smallest
/// bucket (0.5 ms), while a clock read is a few percent of a pass-through
/// message's cost.
struct HandlerClock {
    /// Whether one handler's end may be the next one's start.
    chained: bool,
    epoch: std::time::Instant,
    /// The last handler's end, in nanoseconds since `epoch`; `UNSET` after a
    /// wait.
    last_end: AtomicU64,
}

impl HandlerClock {
    const UNSET: u64 = u64::MAX;

    fn new(chained: bool) -> Self {
        Self {
            chained,
            epoch: std::time::Instant::now(),
            last_end: AtomicU64::new(Self::UNSET),
        }
    }

    /// When the handler about to run starts.
    fn start(&self) -> std::time::Instant {
        // Only the lane's task uses its clock: a load and a store, rather
        // than a locked swap, take the last end.
        let last_end = self.last_end.load(Ordering::Relaxed);
        self.last_end.store(Self::UNSET, Ordering::Relaxed);
        match last_end {
            Self::UNSET => std::time::Instant::now(),
            nanos => self.epoch + std::time::Duration::from_nanos(nanos),
        }
    }

    /// A handler ended at `end`.
    fn ended(&self, end: std::time::Instant) {
        if self.chained {
            let nanos = u64::try_from((end - self.epoch).as_nanos()).unwrap_or(Self::UNSET);
            self.last_end.store(nanos, Ordering::Relaxed);
        }
    }

    /// The lane waits or does other work: the next handler reads the clock.
    fn break_chain(&self) {
        self.last_end.store(Self::UNSET, Ordering::Relaxed);
    }
}

impl<W: Worker, K: Sink, A: Acker> Drop for LaneTask<W, K, A> {
    fn drop(&mut self) {
        // However the lane ends (stopped, aborted, panicked), what it
        // finished is acknowledged.
        self.flush_acks();
    }
}

impl<W: Worker, K: Sink, A: Acker> LaneTask<W, K, A> {
    async fn run(self) {
        match self.shared.policy.ordering {
            MessageOrder::Partition if self.shared.policy.batch_size > 1 => {
                self.run_batched().await
            }
            MessageOrder::Partition => self.run_in_order().await,
            MessageOrder::Key | MessageOrder::None => self.run_concurrent().await,
        }
    }

    /// One message at a time, in offset order.
    async fn run_in_order(mut self) {
        let mut stopping = false;
        // One wait for the whole loop: a fresh one per message would register
        // with the token (a lock shared by every lane) each time.
        let stopped = self.stop.clone().cancelled_owned();
        tokio::pin!(stopped);
        // The last message's permit, kept for the next (see below).
        let mut kept: Option<OwnedSemaphorePermit> = None;
        loop {
            if !self.inbox.has_waiting() {
                self.flush_acks();
                self.clock.break_chain();
                // About to wait: the kept permit goes back.
                kept = None;
            }
            // The next message of a run already here is taken at once; the
            // select is for when the lane has something to wait for or to
            // settle first.
            let ready = !stopping
                && self.inbox.has_waiting()
                && !self.ledger.has_settled()
                && !self.state.is_stopping();
            let next = if ready { self.inbox.try_next() } else { None };
            let message = match next {
                Some(message) => message,
                None => tokio::select! {
                    biased;
                    () = self.ledger.ready(), if !self.ledger.is_idle() => {
                        self.clock.break_chain();
                        if !self.settle() {
                            return;
                        }
                        continue;
                    }
                    () = &mut stopped, if !stopping => { stopping = true; continue }
                    message = self.inbox.recv(), if !stopping => match message {
                        Some(message) => message,
                        None => { stopping = true; continue }
                    },
                    else => return,
                },
            };
            let permit = match kept.take() {
                Some(permit) => permit,
                None => match self.permit().await {
                    Wait::Permit(permit) => permit,
                    Wait::Stop => {
                        stopping = true;
                        continue;
                    }
                    Wait::Fail => return,
                },
            };
            let handled = self.handle(message, permit).await;
            let (step, permit) = self.absorb(handled);
            // Kept for the next message when it is already here and permits
            // are free, so that no other lane waits for this one: a release
            // and an acquire each touch the semaphore every lane shares.
            kept = permit.filter(|_| {
                self.inbox.has_waiting() && self.shared.permits.available_permits() > 0
            });
            match step {
                Step::Next => {}
                Step::Stop => stopping = true,
                Step::End => return,
            }
        }
    }

    /// Messages of different keys (`Ordering::Key`) or all messages
    /// (`Ordering::None`) processed concurrently; one key's messages stay in
    /// offset order. Acknowledgements may come out of order: the offset
    /// tracker commits only up to the first unfinished offset.
    async fn run_concurrent(mut self) {
        let by_key = self.shared.policy.ordering == MessageOrder::Key;
        let mut inbox = std::mem::replace(&mut self.inbox, Inbox::closed());
        let this = &self;
        let mut active: FuturesUnordered<Started<'_>> = FuturesUnordered::new();
        // Messages waiting for an earlier message of their key to finish.
        let mut waiting: HashMap<Option<Bytes>, VecDeque<Message<Option<Bytes>>>> = HashMap::new();
        let mut stopping = false;
        let stopped = self.stop.clone().cancelled_owned();
        tokio::pin!(stopped);
        loop {
            if !inbox.has_waiting() {
                this.flush_acks();
            }
            tokio::select! {
                biased;
                () = this.ledger.ready(), if !this.ledger.is_idle() => {
                    if !this.settle() {
                        return;
                    }
                }
                Some((key, result)) = active.next(), if !active.is_empty() => {
                    match this.absorb(result).0 {
                        Step::Next => {}
                        Step::Stop => stopping = true,
                        Step::End => return,
                    }
                    if by_key {
                        let next = waiting.get_mut(&key).and_then(VecDeque::pop_front);
                        match next {
                            Some(message) if !stopping => active.push(this.start(key, message)),
                            _ => {
                                waiting.remove(&key);
                            }
                        }
                    }
                }
                () = &mut stopped, if !stopping => stopping = true,
                message = inbox.recv(), if !stopping => {
                    let Some(message) = message else { stopping = true; continue };
                    if !by_key {
                        active.push(this.start(None, message));
                        continue;
                    }
                    let key = message.key.clone();
                    match waiting.get_mut(&key) {
                        // A message of this key is in flight: wait behind it.
                        Some(queue) => queue.push_back(message),
                        None => {
                            waiting.insert(key.clone(), VecDeque::new());
                            active.push(this.start(key, message));
                        }
                    }
                }
                // Stopping, with nothing in flight: queued messages are dropped
                // unacknowledged and redelivered to the partition's next owner.
                else => return,
            }
        }
    }

    /// Processes one message of the concurrent mode once a permit is free.
    fn start(&self, key: Option<Bytes>, message: Message<Option<Bytes>>) -> Started<'_> {
        Box::pin(async move {
            if self.stop.is_cancelled() {
                return (key, Ok(Handled::Stopped));
            }
            let permit = match self.shared.permits.clone().try_acquire_owned() {
                Ok(permit) => permit,
                Err(_) => tokio::select! {
                    () = self.stop.cancelled() => return (key, Ok(Handled::Stopped)),
                    permit = self.shared.permits.clone().acquire_owned() => match permit {
                        Ok(permit) => permit,
                        Err(_) => return (key, Ok(Handled::Failed)),
                    },
                },
            };
            // Deliveries are settled by the lane's loop.
            let result = self.handle(message, permit).await;
            (key, result)
        })
    }

    /// Up to `batch_size` messages at a time (or what arrived within
    /// `batch_timeout`), handed to `process_batch` together, in offset order.
    async fn run_batched(mut self) {
        let policy = &self.shared.policy;
        let (size, timeout) = (policy.batch_size, policy.batch_timeout);
        let mut stopping = false;
        let stopped = self.stop.clone().cancelled_owned();
        tokio::pin!(stopped);
        loop {
            if !self.inbox.has_waiting() {
                self.flush_acks();
            }
            tokio::select! {
                biased;
                () = self.ledger.ready(), if !self.ledger.is_idle() => {
                    if !self.settle() {
                        return;
                    }
                }
                () = &mut stopped, if !stopping => stopping = true,
                first = self.inbox.recv(), if !stopping => {
                    let Some(first) = first else { stopping = true; continue };
                    let mut batch = Vec::with_capacity(size);
                    batch.push(first);
                    // What is already here joins at once; only a batch that is
                    // still short waits, up to the timeout, for more.
                    batch.extend(std::iter::from_fn(|| self.inbox.try_next()).take(size - 1));
                    if batch.len() < size {
                        let deadline = tokio::time::sleep(timeout);
                        tokio::pin!(deadline);
                        while batch.len() < size {
                            tokio::select! {
                                biased;
                                () = &mut stopped => break,
                                next = self.inbox.recv() => match next {
                                    Some(message) => batch.push(message),
                                    None => break,
                                },
                                () = &mut deadline => break,
                            }
                        }
                    }
                    let permits = match self.permits(batch.len()).await {
                        Ok(permits) => permits,
                        Err(Wait::Fail) => return,
                        Err(_) => Vec::new(),
                    };
                    if permits.len() < batch.len() {
                        // Stopped before the batch could start: none of it ran.
                        stopping = true;
                        continue;
                    }
                    match self.handle_batch(batch, permits).await {
                        Step::Next => {}
                        Step::Stop => stopping = true,
                        Step::End => return,
                    }
                }
                else => return,
            }
        }
    }

    /// Decodes a batch, runs `process_batch` on what decoded, and sends each
    /// message's outputs or dead letter. A failed message gets the rest of its
    /// attempts one by one; a panicking batch is processed message by message.
    /// When the lane is stopped midway, the rest of the batch is dropped
    /// unacknowledged.
    async fn handle_batch(
        &self,
        batch: Vec<Message<Option<Bytes>>>,
        permits: Vec<OwnedSemaphorePermit>,
    ) -> Step {
        let policy = &self.shared.policy;
        let mut raws = Vec::with_capacity(batch.len());
        let mut decoded = Vec::with_capacity(batch.len());
        for (raw, permit) in batch.into_iter().zip(permits) {
            let size = raw.payload.as_ref().map_or(0, Bytes::len);
            let (kind, reason) = if let Some(limit) = policy.max_message_bytes.filter(|l| size > *l)
            {
                let reason =
                    format!("payload of {size} bytes exceeds worker.max_message_bytes = {limit}");
                (FailureKind::TooLarge, reason)
            } else {
                match raw.try_map_ref(|p| W::Codec::decode(p.as_ref())) {
                    Ok(message) => {
                        decoded.push(message);
                        raws.push((raw, permit));
                        continue;
                    }
                    Err(error) => (FailureKind::Decode, error.to_string()),
                }
            };
            let handled = self
                .give_up(raw, kind, reason, 0, permit, &tracing::Span::none())
                .await;
            match self.absorb(handled).0 {
                Step::Next => {}
                stop => return stop,
            }
        }
        if raws.is_empty() {
            return Step::Next;
        }
        let count = raws.len();
        let started = std::time::Instant::now();
        let result = self
            .run_handler(&tracing::Span::none(), || {
                self.shared.worker.process_batch(decoded, &self.shared.ctx)
            })
            .await;
        if let Some(metrics) = &self.metrics {
            metrics.observe_duration(started.elapsed().as_secs_f64() / count as f64);
        }
        let results: Vec<Option<Result<Outputs<W::Output>, ProcessError>>> = match result {
            Ok(results) if results.len() == count => results.into_iter().map(Some).collect(),
            Ok(results) => {
                self.fail(Error::Lane {
                    partition: self.partition.clone(),
                    reason: format!(
                        "process_batch returned {} results for {count} messages",
                        results.len()
                    ),
                });
                return Step::End;
            }
            Err(panic) => {
                tracing::warn!(
                    partition = %self.partition,
                    panic = %panic_text(&*panic),
                    "process_batch panicked; processing the batch message by message"
                );
                (0..count).map(|_| None).collect()
            }
        };
        for ((raw, permit), result) in raws.into_iter().zip(results) {
            let handled = match result {
                Some(Ok(outputs)) => {
                    // Each message of the batch is a step of its own trace:
                    // its span covers the sending of its outputs.
                    let span = self.message_span(raw.offset());
                    let trace = continue_trace(&span, raw.headers());
                    self.send(raw, outputs.into_repr(), 1, permit, trace.as_ref(), &span)
                        .await
                }
                Some(Err(error)) if error.is_permanent() || policy.retry.max_attempts <= 1 => {
                    let kind = if error.is_permanent() {
                        FailureKind::Permanent
                    } else {
                        FailureKind::Transient
                    };
                    self.give_up(
                        raw,
                        kind,
                        error.to_string(),
                        1,
                        permit,
                        &tracing::Span::none(),
                    )
                    .await
                }
                // The remaining attempts, one message at a time.
                Some(Err(error)) => {
                    tracing::warn!(message = %format_args!("{}@{}", self.partition, raw.offset()), %error, "batch item failed; retrying it alone");
                    self.handle_from(raw, permit, 1).await
                }
                None => self.handle_from(raw, permit, 0).await,
            };
            match self.absorb(handled).0 {
                Step::Next => {}
                stop => return stop,
            }
        }
        Step::Next
    }

    /// Files a handled message's result: what the lane does next, and the
    /// permit the message no longer needs, if it had one.
    fn absorb(&self, handled: Result<Handled, Error>) -> (Step, Option<OwnedSemaphorePermit>) {
        match handled {
            Ok(Handled::Sent(permit) | Handled::Acked(permit)) => (Step::Next, Some(permit)),
            // Unacknowledged: redelivered to whoever owns the partition next.
            Ok(Handled::Stopped) => (Step::Stop, None),
            Ok(Handled::Failed) => (Step::End, None),
            Err(error) => {
                self.fail(error);
                (Step::End, None)
            }
        }
    }

    /// Waits for a processing permit, settling this lane's deliveries meanwhile
    /// so that its delivered messages are acknowledged (and its partition
    /// resumes) while other partitions hold every permit.
    async fn permit(&self) -> Wait {
        // A free permit is taken at once; waiting registers with the stop token.
        if let Ok(permit) = self.shared.permits.clone().try_acquire_owned() {
            return Wait::Permit(permit);
        }
        self.flush_acks();
        self.clock.break_chain();
        loop {
            tokio::select! {
                biased;
                () = self.ledger.ready(), if !self.ledger.is_idle() => {
                    if !self.settle() {
                        return Wait::Fail;
                    }
                }
                () = self.stop.cancelled() => return Wait::Stop,
                permit = self.shared.permits.clone().acquire_owned() => {
                    // The semaphore closes only when the run is over.
                    return permit.map_or(Wait::Fail, Wait::Permit);
                }
            }
        }
    }

    /// Runs a handler — the future `start` makes — within `span`, catching a
    /// panic of it, also one while the future is made. If it has to wait, the
    /// lane's finished offsets and locally counted metrics are flushed first:
    /// neither is held back while a handler is slow or hung, and a handler
    /// that finishes at once costs no flush.
    ///
    /// Polls the handler in place, as `CatchUnwind` and `Instrumented` would
    /// around it, without their layers of state to move.
    async fn run_handler<F: std::future::Future>(
        &self,
        span: &tracing::Span,
        start: impl FnOnce() -> F,
    ) -> std::thread::Result<F::Output> {
        let future = span.in_scope(|| std::panic::catch_unwind(AssertUnwindSafe(start)))?;
        let mut future = std::pin::pin!(future);
        let mut flushed = false;
        std::future::poll_fn(|cx| {
            let poll = span.in_scope(|| {
                std::panic::catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(cx)))
            });
            match poll {
                Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
                Err(panic) => Poll::Ready(Err(panic)),
                Ok(Poll::Pending) => {
                    if !flushed {
                        flushed = true;
                        self.flush_acks();
                        if let Some(metrics) = &self.metrics {
                            metrics.flush();
                        }
                    }
                    Poll::Pending
                }
            }
        })
        .await
    }

    /// `n` permits, one per message of a batch: in one step when they are
    /// free, else one at a time as they come free (as single messages wait).
    async fn permits(&self, n: usize) -> Result<Vec<OwnedSemaphorePermit>, Wait> {
        let mut permits = Vec::with_capacity(n);
        let count = u32::try_from(n).unwrap_or(u32::MAX);
        if let Ok(mut all) = self.shared.permits.clone().try_acquire_many_owned(count) {
            while let Some(one) = all.split(1) {
                permits.push(one);
            }
            return Ok(permits);
        }
        while permits.len() < n {
            match self.permit().await {
                Wait::Permit(permit) => permits.push(permit),
                other => return Err(other),
            }
        }
        Ok(permits)
    }

    /// Acknowledges the messages whose outputs are now delivered; on a failed
    /// delivery reports it and returns false.
    fn settle(&self) -> bool {
        let mut resend = Vec::new();
        let settled = self.ledger.drain(|delivered| {
            let Delivered {
                offset,
                outcome,
                result,
            } = delivered;
            if outcome == Outcome::DeadLettered {
                return self.letter_settled(offset, result, &mut resend);
            }
            match result {
                Ok(()) => {
                    self.ack(offset, outcome);
                    true
                }
                Err(source) if source.is_refused() && self.shared.policy.dead_letter.is_some() => {
                    // The record itself was refused (too large for the
                    // topic, say): sending it again would fail again, so the
                    // message is dead-lettered, by reference.
                    resend.push((offset, self.refused_output(offset, &source)));
                    true
                }
                Err(source) => {
                    self.fail(Error::Delivery {
                        partition: self.partition.clone(),
                        offset,
                        source,
                    });
                    false
                }
            }
        });
        for (offset, record) in resend {
            self.resend(offset, record);
        }
        self.flush_acks();
        settled
    }

    /// Decodes and processes one message, retrying transient failures, and
    /// sends its outputs — or, when it cannot be processed, its dead letter.
    fn handle(
        &self,
        raw: Message<Option<Bytes>>,
        permit: OwnedSemaphorePermit,
    ) -> impl std::future::Future<Output = Result<Handled, Error>> + Send + '_ {
        // Not an `async fn` of its own: every layer of async state would be
        // one more copy of the message's whole future.
        self.handle_from(raw, permit, 0)
    }

    /// Like [`LaneTask::handle`] for a message that already failed `done` times.
    ///
    /// Every message's future is moved into place, so it is kept small: the
    /// message's span is entered around each poll of the handler and the sink
    /// instead of wrapping the whole future, and what follows a failed
    /// attempt is boxed.
    async fn handle_from(
        &self,
        raw: Message<Option<Bytes>>,
        permit: OwnedSemaphorePermit,
        done: u32,
    ) -> Result<Handled, Error> {
        let span = self.message_span(raw.offset());
        // W3C trace context: outputs continue the input's trace (through this
        // span when it is exported to OpenTelemetry).
        let trace = continue_trace(&span, raw.headers());
        let size = raw.payload.as_ref().map_or(0, Bytes::len);
        let limit = self.shared.policy.max_message_bytes;
        if let Some(limit) = limit.filter(|limit| size > *limit) {
            let reason =
                format!("payload of {size} bytes exceeds worker.max_message_bytes = {limit}");
            return self
                .give_up(raw, FailureKind::TooLarge, reason, 0, permit, &span)
                .await;
        }
        match self.attempt(&raw, &span).await {
            Attempt::Done(outputs) => match outputs.into_repr() {
                // Nothing to send: no sending future is made.
                Repr::None => Ok(self.acked(raw.offset(), permit)),
                outputs => {
                    self.send(raw, outputs, done + 1, permit, trace.as_ref(), &span)
                        .await
                }
            },
            failed => self.recover(raw, failed, done, permit, trace, span).await,
        }
    }

    /// The span of the message at `offset`; `trace_id` is recorded by
    /// `continue_trace`.
    fn message_span(&self, offset: i64) -> tracing::Span {
        tracing::debug_span!(
            "message",
            worker = %self.shared.ctx.worker(),
            topic = %self.partition.topic(),
            partition = self.partition.index(),
            offset,
            trace_id = tracing::field::Empty,
        )
    }

    /// One attempt at a message: decodes it afresh (`process` takes it) and
    /// runs `process` on it within the message's span.
    async fn attempt(
        &self,
        raw: &Message<Option<Bytes>>,
        span: &tracing::Span,
    ) -> Attempt<W::Output> {
        let message = match raw.try_map_ref(|p| W::Codec::decode(p.as_ref())) {
            Ok(message) => message,
            Err(error) => return Attempt::Undecodable(error.to_string()),
        };
        // The clock is read only for the duration histogram.
        let started = self.metrics.is_some().then(|| self.clock.start());
        let result = self
            .run_handler(span, || {
                self.shared.worker.process(message, &self.shared.ctx)
            })
            .await;
        if let (Some(metrics), Some(started)) = (&self.metrics, started) {
            let ended = std::time::Instant::now();
            metrics.observe_duration((ended - started).as_secs_f64());
            self.clock.ended(ended);
        }
        match result {
            Ok(Ok(outputs)) => Attempt::Done(outputs),
            Ok(Err(error)) => Attempt::Failed(error),
            Err(panic) => Attempt::Panicked(format!("process panicked: {}", panic_text(&*panic))),
        }
    }

    /// What follows a failed attempt: the retries of a transient failure,
    /// then the outputs or the dead letter. `done` attempts were made before
    /// the failed one. Boxed, as the rare path, so that it does not add to
    /// the size of every message's future.
    fn recover(
        &self,
        raw: Message<Option<Bytes>>,
        failed: Attempt<W::Output>,
        done: u32,
        permit: OwnedSemaphorePermit,
        trace: Option<TraceParent>,
        span: tracing::Span,
    ) -> Pin<Box<dyn std::future::Future<Output = Result<Handled, Error>> + Send + '_>> {
        let scope = span.clone();
        let recovery = async move {
            let policy = &self.shared.policy;
            let (mut failed, mut attempt, mut permit) = (failed, done, permit);
            loop {
                let error = match failed {
                    Attempt::Done(outputs) => {
                        let outputs = outputs.into_repr();
                        return self
                            .send(raw, outputs, attempt + 1, permit, trace.as_ref(), &span)
                            .await;
                    }
                    // Not an attempt at processing: the count stays.
                    Attempt::Undecodable(reason) => {
                        return self
                            .dead_letter(raw, FailureKind::Decode, reason, attempt, permit)
                            .await;
                    }
                    Attempt::Panicked(reason) => {
                        return self
                            .dead_letter(raw, FailureKind::Panic, reason, attempt + 1, permit)
                            .await;
                    }
                    Attempt::Failed(error) => error,
                };
                attempt += 1;
                if error.is_permanent() || attempt >= policy.retry.max_attempts {
                    let kind = if error.is_permanent() {
                        FailureKind::Permanent
                    } else {
                        FailureKind::Transient
                    };
                    return self
                        .dead_letter(raw, kind, error.to_string(), attempt, permit)
                        .await;
                }
                if let Some(metrics) = &self.metrics {
                    metrics.count(Counted::Retried);
                    metrics.flush();
                }
                let wait = policy.retry.jittered_backoff(attempt);
                tracing::warn!(
                    message = %format_args!("{}@{}", self.partition, raw.offset()),
                    attempt,
                    ?wait,
                    %error,
                    "process failed; retrying"
                );
                // Only this partition waits: the permit goes back meanwhile.
                drop(permit);
                permit = match self.retry_after(wait).await {
                    Wait::Permit(permit) => permit,
                    Wait::Stop => return Ok(Handled::Stopped),
                    Wait::Fail => return Ok(Handled::Failed),
                };
                failed = self.attempt(&raw, &span).await;
            }
        };
        Box::pin(recovery.instrument(scope))
    }

    /// Waits `wait` before a retry, settling deliveries meanwhile, then takes
    /// a permit again. Boxed, as the rare path, so that it does not add to the
    /// size of every message's future.
    fn retry_after(
        &self,
        wait: std::time::Duration,
    ) -> Pin<Box<dyn std::future::Future<Output = Wait> + Send + '_>> {
        Box::pin(async move {
            self.flush_acks();
            self.clock.break_chain();
            let deadline = tokio::time::Instant::now() + wait;
            loop {
                tokio::select! {
                    biased;
                    () = self.ledger.ready(), if !self.ledger.is_idle() => {
                        if !self.settle() {
                            return Wait::Fail;
                        }
                    }
                    () = self.stop.cancelled() => return Wait::Stop,
                    () = tokio::time::sleep_until(deadline) => break,
                }
            }
            self.permit().await
        })
    }

    /// Encodes and sends the outputs of a processed message.
    async fn send(
        &self,
        raw: Message<Option<Bytes>>,
        outputs: Repr<W::Output>,
        attempt: u32,
        permit: OwnedSemaphorePermit,
        trace: Option<&TraceParent>,
        span: &tracing::Span,
    ) -> Result<Handled, Error> {
        let offset = raw.offset();
        match outputs {
            Repr::None => Ok(self.acked(offset, permit)),
            Repr::One(output) => {
                let record = match self.record(output, trace) {
                    Ok(record) => record,
                    Err(reason) => {
                        return self
                            .give_up(raw, FailureKind::Encode, reason, attempt, permit, span)
                            .await;
                    }
                };
                let receipt = self.ledger.receipt(offset, Outcome::Processed, 1);
                self.send_record(record, receipt, span).await;
                span.in_scope(|| tracing::debug!(outputs = 1, "outputs sent"));
                Ok(Handled::Sent(permit))
            }
            Repr::Many(outputs) => {
                self.send_many(raw, outputs, attempt, permit, trace, span)
                    .await
            }
        }
    }

    /// Encodes and sends several outputs of a message. Boxed, so that it does
    /// not add to the size of every message's future; such a message
    /// allocates its outputs anyway.
    fn send_many<'a>(
        &'a self,
        raw: Message<Option<Bytes>>,
        outputs: Vec<Output<W::Output>>,
        attempt: u32,
        permit: OwnedSemaphorePermit,
        trace: Option<&'a TraceParent>,
        span: &'a tracing::Span,
    ) -> Pin<Box<dyn std::future::Future<Output = Result<Handled, Error>> + Send + 'a>> {
        Box::pin(async move {
            let offset = raw.offset();
            // All are encoded before any is sent: an output that cannot be
            // encoded dead-letters the message with none of its outputs sent.
            let mut records = Vec::with_capacity(outputs.len());
            for output in outputs {
                match self.record(output, trace) {
                    Ok(record) => records.push(record),
                    Err(reason) => {
                        return self
                            .dead_letter(raw, FailureKind::Encode, reason, attempt, permit)
                            .instrument(span.clone())
                            .await;
                    }
                }
            }
            let parts = u32::try_from(records.len()).unwrap_or(u32::MAX);
            for record in records {
                let receipt = self.ledger.receipt(offset, Outcome::Processed, parts);
                self.send_record(record, receipt, span).await;
            }
            span.in_scope(|| tracing::debug!(outputs = parts, "outputs sent"));
            Ok(Handled::Sent(permit))
        })
    }

    /// Hands one record to the sink within the message's span. Not an `async
    /// fn`: it adds no layer of state around the sink's own future.
    fn send_record<'a>(
        &'a self,
        record: Record,
        receipt: Receipt,
        span: &'a tracing::Span,
    ) -> impl std::future::Future<Output = ()> + Send + 'a {
        within(
            span,
            span.in_scope(|| self.shared.sink.send(record, receipt)),
        )
    }

    /// A message done with no outputs: acknowledged at once.
    fn acked(&self, offset: i64, permit: OwnedSemaphorePermit) -> Handled {
        self.ack(offset, Outcome::Processed);
        Handled::Acked(permit)
    }

    /// An output as a record, continuing the input's trace.
    fn record(
        &self,
        output: Output<W::Output>,
        trace: Option<&TraceParent>,
    ) -> Result<Record, String> {
        let payload = W::Codec::encode(&output.value)
            .map_err(|error| format!("an output could not be encoded: {error}"))?;
        let mut record = Record {
            topic: output.topic,
            sink: output.sink.or(W::SPEC.default_sink),
            key: output.key,
            payload: Some(payload),
            headers: output.headers,
        };
        if let Some(trace) = trace {
            trace.inject(&mut record.headers);
        }
        Ok(record)
    }

    /// Sends a message that cannot be processed to the dead-letter topic, or
    /// stops the run when dead letters are off. Boxed, as the rare path, so
    /// that it does not add to the size of every message's future.
    fn give_up(
        &self,
        raw: Message<Option<Bytes>>,
        kind: FailureKind,
        reason: String,
        attempts: u32,
        permit: OwnedSemaphorePermit,
        span: &tracing::Span,
    ) -> Pin<Box<dyn std::future::Future<Output = Result<Handled, Error>> + Send + '_>> {
        Box::pin(
            self.dead_letter(raw, kind, reason, attempts, permit)
                .instrument(span.clone()),
        )
    }

    async fn dead_letter(
        &self,
        raw: Message<Option<Bytes>>,
        kind: FailureKind,
        reason: String,
        attempts: u32,
        permit: OwnedSemaphorePermit,
    ) -> Result<Handled, Error> {
        let offset = raw.offset();
        let Some(config) = &self.shared.policy.dead_letter else {
            return Err(Error::Process {
                partition: self.partition.clone(),
                offset,
                kind,
                reason,
            });
        };
        let topic = config.topic_for(self.partition.topic());
        let failure = Failure {
            kind,
            reason,
            attempts,
        };
        let limit = self.shared.sink.max_record_bytes();
        let Letter { record, fallback } =
            dead_letter::letter(raw, topic, self.shared.ctx.worker(), &failure, limit);
        let topic = record.topic.as_deref().unwrap_or_default();
        match record.headers.get_str(dead_letter::header::TRUNCATED) {
            None => tracing::warn!(
                message = %format_args!("{}@{offset}", self.partition),
                %kind,
                attempts,
                reason = %failure.reason,
                dead_letter_topic = %topic,
                "dead-lettering message"
            ),
            Some(truncated) => tracing::warn!(
                message = %format_args!("{}@{offset}", self.partition),
                %kind,
                attempts,
                reason = %failure.reason,
                dead_letter_topic = %topic,
                truncated,
                limit,
                "dead-lettering message, reduced to fit the producer's limit"
            ),
        }
        lock(&self.letters).insert(offset, fallback);
        let receipt = self.ledger.receipt(offset, Outcome::DeadLettered, 1);
        self.shared.sink.send(record, receipt).await;
        Ok(Handled::Sent(permit))
    }

    /// A dead letter's delivery report: acknowledges the message, or decides
    /// what follows a failure (see [`dead_letter::undelivered`]); a reduced
    /// form to send is pushed to `resend`. Returns false when the run stops.
    fn letter_settled(
        &self,
        offset: i64,
        result: Result<(), crate::sink::SinkError>,
        resend: &mut Vec<(i64, Record)>,
    ) -> bool {
        let fallback = lock(&self.letters).remove(&offset).flatten();
        let source = match result {
            Ok(()) => {
                self.ack(offset, Outcome::DeadLettered);
                return true;
            }
            Err(source) => source,
        };
        let on_failure = (self.shared.policy.dead_letter.as_ref())
            .map_or(OnFailure::Stop, |config| config.on_failure);
        let message = format!("{}@{offset}", self.partition);
        match dead_letter::undelivered(source.is_refused(), fallback.is_none(), on_failure) {
            Undelivered::SendReduced => {
                tracing::warn!(%message, error = %source, "dead letter refused; sending it reduced");
                resend.extend(fallback.map(|record| (offset, record)));
                true
            }
            Undelivered::Skip => {
                tracing::error!(
                    %message,
                    error = %source,
                    "dead letter refused even reduced; skipping the message and committing past it (worker.dead_letter.on_failure = \"skip\")"
                );
                self.ack(offset, Outcome::Skipped);
                true
            }
            Undelivered::Stop => {
                self.fail(Error::DeadLetter {
                    partition: self.partition.clone(),
                    offset,
                    source,
                });
                false
            }
            Undelivered::Fail => {
                self.fail(Error::Delivery {
                    partition: self.partition.clone(),
                    offset,
                    source,
                });
                false
            }
        }
    }

    /// The dead letter of the message at `offset`, whose output the broker
    /// refused: a reference to the message (its payload is gone by now).
    fn refused_output(&self, offset: i64, source: &crate::sink::SinkError) -> Record {
        let config = (self.shared.policy.dead_letter.as_ref()).expect("checked by the caller");
        let failure = Failure {
            kind: FailureKind::OutputRefused,
            reason: format!("an output was refused by the broker: {source}"),
            attempts: 1,
        };
        let topic = config.topic_for(self.partition.topic());
        tracing::warn!(
            message = %format_args!("{}@{offset}", self.partition),
            error = %source,
            dead_letter_topic = %topic,
            "an output was refused; dead-lettering a reference to its message"
        );
        dead_letter::reference(
            self.partition.clone(),
            offset,
            topic,
            self.shared.ctx.worker(),
            &failure,
            self.shared.sink.max_record_bytes(),
        )
    }

    /// Sends the reduced dead letter of the message at `offset`, on a task of
    /// its own: a lane settles reports where it cannot wait for the sink.
    fn resend(&self, offset: i64, record: Record) {
        lock(&self.letters).insert(offset, None);
        let receipt = self.ledger.receipt(offset, Outcome::DeadLettered, 1);
        let sink = self.shared.sink.clone();
        tokio::spawn(async move { sink.send(record, receipt).await });
    }

    /// Records a finished message; it reaches the acker at the next
    /// [`LaneTask::flush_acks`].
    fn ack(&self, offset: i64, outcome: Outcome) {
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
    fn flush_acks(&self) {
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
        if held <= self.shared.resume_at && self.state.is_paused() {
            self.shared.wake.notify_one();
        }
    }

    fn fail(&self, error: Error) {
        if let Some(metrics) = &self.metrics {
            metrics.count(Counted::Error);
            metrics.flush();
        }
        // Logged once, by the runtime, which stops the run.
        let _ = self.shared.failures.send(error);
    }
}

/// Awaits `future` with `span` entered around each poll, as `Instrumented`
/// does, without a clone of the span.
async fn within<F: std::future::Future>(span: &tracing::Span, future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    std::future::poll_fn(|cx| span.in_scope(|| future.as_mut().poll(cx))).await
}

/// The most finished offsets a lane holds back from the acker.
const ACK_BATCH: usize = 256;

/// Locks a lane-local mutex; a panic while it was held left a valid vector.
fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::HandlerClock;
    use std::time::{Duration, Instant};

    /// A run over a stub source and sink: how dead letters the sink refuses
    /// are reduced, skipped or stop the run.
    mod dead_letters {
        use std::collections::{BTreeSet, VecDeque};
        use std::sync::{Arc, Mutex};
        use std::time::Duration;

        use bytes::Bytes;

        use crate::dead_letter::{OnFailure, header};
        use crate::{
            Acker, Context, Error, Message, Metrics, Outputs, PartitionId, Process, ProcessError,
            Receipt, Record, Runtime, Sink, SinkError, Source, SourceEvent, Utf8, Worker,
            WorkerConfig,
        };

        /// Takes UTF-8 text; anything else is poison.
        struct Text;

        impl Process for Text {
            type Input = String;
            type Output = ();

            async fn process(
                &self,
                _: Message<String>,
                _: &Context,
            ) -> Result<Outputs<()>, ProcessError> {
                Ok(Outputs::none())
            }
        }

        impl Worker for Text {
            type Codec = Utf8;
        }

        #[derive(Clone, Default)]
        struct Acks(Arc<Mutex<BTreeSet<i64>>>);

        impl Acker for Acks {
            fn ack(&self, _: &PartitionId, offset: i64) {
                self.0.lock().unwrap().insert(offset);
            }
        }

        struct Stub {
            events: VecDeque<SourceEvent>,
            acks: Acks,
        }

        impl Source for Stub {
            type Acker = Acks;

            fn acker(&self) -> Acks {
                self.acks.clone()
            }

            async fn next(&mut self) -> Option<SourceEvent> {
                match self.events.pop_front() {
                    Some(event) => Some(event),
                    None => std::future::pending().await,
                }
            }

            fn pause(&mut self, _: &[PartitionId]) {}

            fn resume(&mut self, _: &[PartitionId]) {}

            async fn close(self, _: Duration) -> Result<(), Error> {
                Ok(())
            }
        }

        /// A producer limit of 10,000 bytes; a "broker" that refuses
        /// payloads over 5,000 bytes and every record keyed `doomed`.
        #[derive(Default)]
        struct Picky {
            sent: Mutex<Vec<Record>>,
        }

        impl Sink for Picky {
            async fn send(&self, record: Record, receipt: Receipt) {
                let refused = record.payload.as_ref().is_some_and(|p| p.len() > 5_000)
                    || record.key.as_deref() == Some(b"doomed");
                self.sent.lock().unwrap().push(record);
                receipt.settle(if refused {
                    Err(SinkError::Refused {
                        topic: "t.dlq".into(),
                        reason: "Broker: Message size too large".into(),
                    })
                } else {
                    Ok(())
                });
            }

            fn max_record_bytes(&self) -> Option<usize> {
                Some(10_000)
            }
        }

        struct Ran {
            result: Result<crate::RunSummary, Error>,
            acks: BTreeSet<i64>,
            sent: Vec<Record>,
            metrics: String,
        }

        /// Each way a lane runs: in order, concurrently, by key, in batches.
        fn modes() -> [(crate::Ordering, usize); 4] {
            use crate::Ordering::{Key, None, Partition};
            [(Partition, 1), (None, 1), (Key, 1), (Partition, 4)]
        }

        async fn run(
            on_failure: OnFailure,
            (ordering, batch_size): (crate::Ordering, usize),
        ) -> Ran {
            let partition = PartitionId::new("t", 0);
            let poison = |size: usize| Some(Bytes::from(vec![0xff; size]));
            let messages: Vec<_> = [
                (None, Some(Bytes::from("ok"))),
                (None, poison(10)),           // whole
                (None, poison(20_000)),       // over the producer's limit: reduced first
                (None, poison(8_000)),        // refused by the broker, then reduced
                (Some("doomed"), poison(10)), // refused even reduced
                (None, Some(Bytes::from("ok"))),
            ]
            .into_iter()
            .enumerate()
            .map(|(offset, (key, payload))| {
                let message = Message::new(partition.clone(), offset as i64, payload);
                match key {
                    Some(key) => message.with_key(key),
                    None => message,
                }
            })
            .collect();
            let acks = Acks::default();
            let source = Stub {
                events: [
                    SourceEvent::Assigned(vec![partition.clone()]),
                    SourceEvent::Messages(messages),
                ]
                .into(),
                acks: acks.clone(),
            };
            let mut config = WorkerConfig::default();
            config.dead_letter.on_failure = on_failure;
            config.ordering = ordering;
            config.batch_size = batch_size;
            let sink = Arc::new(Picky::default());
            let metrics = Metrics::new();
            let runtime = Runtime::with_shared(config, "w", Arc::new(Text), source, sink.clone())
                .with_metrics(metrics.clone());
            let all_acked = {
                let acks = acks.clone();
                async move {
                    while acks.0.lock().unwrap().len() < 6 {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            };
            let result = tokio::time::timeout(Duration::from_secs(10), runtime.run(all_acked))
                .await
                .expect("the run ends");
            let acks = acks.0.lock().unwrap().clone();
            let sent = std::mem::take(&mut *sink.sent.lock().unwrap());
            Ran {
                result,
                acks,
                sent,
                metrics: metrics.encode(),
            }
        }

        fn truncated(record: &Record) -> Option<&str> {
            record.headers.get_str(header::TRUNCATED)
        }

        #[tokio::test]
        async fn refused_dead_letters_go_out_reduced_and_one_refused_even_so_is_skipped() {
            for mode in modes() {
                refused_and_skipped(mode).await;
            }
        }

        async fn refused_and_skipped(mode: (crate::Ordering, usize)) {
            let ran = run(OnFailure::Skip, mode).await;
            ran.result.expect("the run goes on");
            assert_eq!(ran.acks, (0..6).collect(), "every offset acknowledged");
            // Reduced forms after a refusal are sent on tasks of their own:
            // compared in offset order.
            let mut sent: Vec<(&str, Option<&str>, usize)> = ran
                .sent
                .iter()
                .map(|r| {
                    (
                        r.headers.get_str(header::OFFSET).unwrap(),
                        truncated(r),
                        r.payload.as_ref().map_or(0, Bytes::len),
                    )
                })
                .collect();
            sent.sort();
            assert_eq!(
                sent,
                [
                    ("1", None, 10),
                    ("2", Some("payload"), 4096),
                    ("3", None, 8_000),
                    ("3", Some("payload"), 0),
                    ("4", None, 10),
                    ("4", Some("payload"), 0),
                ],
                "{mode:?}"
            );
            for (outcome, count) in [("ok", 2), ("dead_lettered", 3), ("skipped", 1)] {
                let line = format!(r#"outcome="{outcome}",topic="t",worker="w"}} {count}"#);
                assert!(
                    ran.metrics.contains(&line),
                    "{mode:?}: {line}\n{}",
                    ran.metrics
                );
            }
        }

        #[tokio::test]
        async fn a_dead_letter_refused_even_reduced_stops_the_run_by_default_naming_the_way_past() {
            assert_eq!(
                WorkerConfig::default().dead_letter.on_failure,
                OnFailure::Stop
            );
            for mode in modes() {
                stopped(mode).await;
            }
        }

        async fn stopped(mode: (crate::Ordering, usize)) {
            let ran = run(OnFailure::Stop, mode).await;
            let error = ran.result.expect_err("the run stops");
            assert!(
                matches!(&error, Error::DeadLetter { offset: 4, source, .. } if source.is_refused()),
                "{error:?}"
            );
            let text = error.to_string();
            for needle in [
                "t/0@4",
                "worker.dead_letter.on_failure = \"skip\"",
                "--topic t:0 --to-offset 5",
            ] {
                assert!(text.contains(needle), "{needle:?} in {text}");
            }
            // Later messages may be done meanwhile; the offset tracker commits
            // none past the first unacknowledged one.
            assert!(
                !ran.acks.contains(&4),
                "{mode:?}: the message is not acknowledged"
            );
        }
    }

    #[test]
    fn a_chained_handler_starts_where_the_last_one_ended_unless_the_lane_waited() {
        let clock = HandlerClock::new(true);
        let end = Instant::now() + Duration::from_millis(3);
        clock.ended(end);
        assert_eq!(clock.start(), end, "back to back: no clock read");
        // Taken once: the start after it reads the clock.
        assert!(clock.start() < end);

        clock.ended(end);
        clock.break_chain();
        assert!(clock.start() < end, "after a wait the clock is read");
    }

    #[test]
    fn an_unchained_handler_always_reads_the_clock() {
        let clock = HandlerClock::new(false);
        let end = Instant::now() + Duration::from_millis(3);
        clock.ended(end);
        assert!(clock.start() < end);
    }
}
