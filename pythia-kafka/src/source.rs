//! The Kafka source: a consumer-group member polled on its own thread.
//!
//! The poller thread owns the consumer. It forwards fetched messages to the
//! runtime, applies pause/resume, commits the tracker's commit points every
//! `commit_interval`, and runs the rebalance callback: on revoke it waits (up to
//! the revoke deadline) for the runtime to drain the partitions, commits them,
//! and only then lets librdkafka release them. Because the thread never waits on
//! the runtime outside a rebalance, the member keeps polling however slow the
//! handlers are, so it is never expelled by `max.poll.interval.ms`.
//!
//! Commits are sent with their answers read back (see [`crate::commit`]):
//! a commit the group refuses is sent again on the next round, and a point
//! counts as committed only once the broker accepted it. Revoke and final
//! commits wait for their answer with a deadline, never without a bound.
//!
//! Each assigned partition's messages are split into a queue of their own as
//! it is assigned, before librdkafka starts fetching it. Pausing a partition
//! then only stops reading its queue: what librdkafka already fetched stays
//! there (bounded by `queued.min.messages` and `queued.max.messages.kbytes`
//! per partition, after which librdkafka stops fetching it) and is read as soon
//! as the partition resumes. librdkafka's own pause would discard the fetched
//! messages and fetch them again, which under steady backpressure costs most
//! of the throughput.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, mpsc as std_mpsc};
use std::thread;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use pythia_core::offsets::OffsetTracker;
use pythia_core::runtime::Identity;
use pythia_core::{
    Acker, Header, Headers, Message, Metrics, PartitionId, Revocation, Source, SourceEvent,
};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::{BorrowedMessage, Headers as _};
use rdkafka::{ClientContext, Message as _, TopicPartitionList};
use tokio::sync::{mpsc, oneshot};

use crate::commit::{Committer, Settled};
use crate::config::Config;
use crate::error::KafkaError;
use crate::queue::{Fetched, PartitionQueue};

/// Messages forwarded to the runtime per batch, at most.
const MAX_BATCH: usize = 1024;
/// Messages read from one partition's queue per pass, so partitions take turns.
const PER_PARTITION: usize = 256;
/// Batches handed to the runtime and not yet taken, at most, before the
/// poller stops reading partitions until the runtime catches up. The runtime
/// pauses a partition whose lane holds `worker.partition_buffer` messages; with
/// the poller this close behind, the pause takes effect a few hundred messages
/// later rather than after all it could fetch meanwhile (19,000 of a
/// partition, with a buffer of 1,000, when it was not held back).
const QUEUED_BATCHES: usize = 2;
/// How long the poller sleeps when nothing is fetched. Fetched messages and
/// commands wake it at once; this bounds how late it serves other events.
/// Kept short because rebalance events do not always wake it: a cooperative
/// revoke served ~20 ms late can find the group already in its next round,
/// which refuses the revoke's commit, so the next owner repeats the
/// partitions' messages since the last accepted commit. A shorter sleep makes
/// that rarer on the embedded broker; it does not rule it out.
const POLL_WAIT: Duration = Duration::from_millis(2);
/// How long the final commit may take when the source is dropped without
/// `close`.
const DROP_COMMIT_WAIT: Duration = Duration::from_secs(3);
/// How long a revoke waits for its commit's answer. The group waits for the
/// revoke meanwhile; a refused or late commit costs only duplicates, since
/// the next owner starts from the last accepted commit.
const REVOKE_COMMIT_WAIT: Duration = Duration::from_secs(5);
/// Size of the blocks payloads and keys are copied into.
const ARENA_BLOCK: usize = 64 * 1024;

enum Command {
    Pause(Vec<PartitionId>),
    Resume(Vec<PartitionId>),
    Close(CloseRequest),
}

/// Asks the poller for the final commit by `deadline`; the result goes to `reply`.
struct CloseRequest {
    reply: oneshot::Sender<Result<(), pythia_core::Error>>,
    deadline: Instant,
}

/// Wakes the poller thread when it sleeps for want of messages.
#[derive(Clone, Default)]
struct Waker(Arc<OnceLock<thread::Thread>>);

impl Waker {
    fn wake(&self) {
        if let Some(thread) = self.0.get() {
            thread.unpark();
        }
    }
}

/// A change of the partitions read from their own queues, made by the
/// rebalance callback and applied by the poller.
enum QueueChange {
    Split(PartitionId, PartitionQueue),
    Removed(Vec<PartitionId>),
}

/// Acknowledges finished messages into the offset tracker.
#[derive(Clone, Debug)]
pub struct KafkaAcker(Arc<OffsetTracker>);

impl Acker for KafkaAcker {
    fn ack(&self, partition: &PartitionId, offset: i64) {
        self.0.done(partition, offset);
    }

    fn ack_many(&self, partition: &PartitionId, offsets: &[i64]) {
        self.0.done_many(partition, offsets);
    }
}

/// A consumer-group member as a [`Source`].
pub struct KafkaSource {
    events: Option<mpsc::UnboundedReceiver<SourceEvent>>,
    /// Batches of messages sent by the poller and not yet taken.
    queued: Arc<AtomicUsize>,
    commands: std_mpsc::Sender<Command>,
    waker: Waker,
    tracker: Arc<OffsetTracker>,
    thread: Option<thread::JoinHandle<()>>,
}

impl KafkaSource {
    /// Joins the group of `config.kafka.group` and subscribes to `config.kafka.topics`.
    ///
    /// `member` names this member in client ids and logs. The brokers must be
    /// real addresses here: [`crate::run`] resolves `"embedded"` first.
    pub fn new(config: &Config, member: &str) -> Result<Self, KafkaError> {
        Self::with_metrics(config, member, None, None)
    }

    /// Like [`KafkaSource::new`], counting rebalances and failed commits in
    /// `metrics`, and recording in `identity` the member id the group gives.
    pub(crate) fn with_metrics(
        config: &Config,
        member: &str,
        metrics: Option<Metrics>,
        identity: Option<Identity>,
    ) -> Result<Self, KafkaError> {
        let client = config.kafka.consumer_client_config(member)?;
        let tracker = Arc::new(OffsetTracker::new());
        let (events_tx, events) = mpsc::unbounded_channel();
        let waker = Waker::default();
        let queued = Arc::new(AtomicUsize::new(0));
        let context = SourceContext {
            events: events_tx,
            queued: queued.clone(),
            tracker: tracker.clone(),
            pending: Mutex::new(Vec::new()),
            changes: Mutex::new(Vec::new()),
            waker: waker.clone(),
            closing: AtomicBool::new(false),
            committer: Mutex::new(None),
            metrics: metrics.map(|m| (m, config.kafka.group.clone().unwrap_or_default())),
            identity,
            // The runtime releases a revocation by its deadline: revoke_timeout
            // while running, the shutdown deadline while draining. Wait a little
            // longer than either, so a partition is never handed over early.
            revoke_wait: config
                .worker
                .revoke_timeout
                .max(config.worker.shutdown_timeout)
                + Duration::from_secs(1),
        };
        let mut consumer: BaseConsumer<SourceContext> = client.create_with_context(context)?;
        let counted = consumer.context().metrics.clone();
        if let Some((metrics, group)) = &counted {
            metrics.group_started(group);
        }
        let committer = Committer::new(&consumer, move || {
            if let Some((metrics, group)) = &counted {
                metrics.commit_failed(group);
            }
        })
        .ok_or_else(|| KafkaError::Io("librdkafka refused to create a commit queue".into()))?;
        *consumer.context().committer() = Some(committer);
        // Rebalance events and the messages of partitions that could not be
        // split arrive on the consumer's own queue.
        let wake = waker.clone();
        consumer.set_nonempty_callback(move || wake.wake());
        let topics: Vec<&str> = config.kafka.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics)?;
        tracing::info!(
            group = config.kafka.group.as_deref().unwrap_or_default(),
            ?topics,
            protocol = client.get("group.protocol").unwrap_or("classic"),
            "subscribed"
        );
        let (commands, commands_rx) = std_mpsc::channel();
        let commit_interval = config.kafka.commit_interval;
        let thread_waker = waker.clone();
        let thread = thread::Builder::new()
            .name(format!("pythia-poll-{member}"))
            .spawn(move || {
                let _ = thread_waker.0.set(thread::current());
                Poller::new(consumer, commands_rx, commit_interval).run()
            })
            .map_err(|e| KafkaError::Io(e.to_string()))?;
        Ok(Self {
            events: Some(events),
            queued,
            commands,
            waker,
            tracker,
            thread: Some(thread),
        })
    }

    /// The tracker of this member's in-flight offsets.
    pub fn tracker(&self) -> &Arc<OffsetTracker> {
        &self.tracker
    }
}

impl Source for KafkaSource {
    type Acker = KafkaAcker;

    fn acker(&self) -> KafkaAcker {
        KafkaAcker(self.tracker.clone())
    }

    async fn next(&mut self) -> Option<SourceEvent> {
        let event = self.events.as_mut()?.recv().await;
        if let Some(SourceEvent::Messages(_)) = event
            && self.queued.fetch_sub(1, Ordering::AcqRel) >= QUEUED_BATCHES
        {
            // The poller may be waiting for room.
            self.waker.wake();
        }
        event
    }

    fn pause(&mut self, partitions: &[PartitionId]) {
        let _ = self.commands.send(Command::Pause(partitions.to_vec()));
        self.waker.wake();
    }

    fn resume(&mut self, partitions: &[PartitionId]) {
        let _ = self.commands.send(Command::Resume(partitions.to_vec()));
        self.waker.wake();
    }

    async fn close(mut self, timeout: Duration) -> Result<(), pythia_core::Error> {
        // A revoke callback waiting on the runtime sees the channel go away.
        drop(self.events.take());
        let started = Instant::now();
        let deadline = started + timeout;
        // The commit gets most of the time; leaving the group the rest.
        let commit_deadline = deadline - (timeout / 4).min(Duration::from_secs(2));
        let (reply, replied) = oneshot::channel();
        let request = CloseRequest {
            reply,
            deadline: commit_deadline,
        };
        if self.commands.send(Command::Close(request)).is_err() {
            return Err(pythia_core::Error::Source(pythia_core::SourceError::new(
                "consumer thread has stopped",
            )));
        }
        self.waker.wake();
        // The poller answers once it knows, and never later than its
        // deadline: give it a moment more before calling it stuck.
        let result = match tokio::time::timeout(timeout + Duration::from_secs(1), replied).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(pythia_core::Error::Source(pythia_core::SourceError::new(
                "consumer thread stopped before the final commit",
            ))),
            Err(_) => Err(pythia_core::Error::Source(
                pythia_core::SourceError::retriable(format!(
                    "final offset commit did not finish within {timeout:?}; messages after the last commit will be redelivered"
                )),
            )),
        };
        if let Some(thread) = self.thread.take() {
            // Leaving the group: bounded, as the commit is already settled.
            // A member that cannot leave in time is noticed by the group
            // after its session timeout.
            let left = deadline.saturating_duration_since(Instant::now());
            let join = tokio::task::spawn_blocking(move || thread.join());
            if tokio::time::timeout(left.max(Duration::from_millis(500)), join)
                .await
                .is_err()
            {
                tracing::warn!(
                    after = ?started.elapsed(),
                    "leaving the consumer group did not finish in time; the group notices after its session timeout"
                );
            }
        }
        result
    }
}

impl Drop for KafkaSource {
    fn drop(&mut self) {
        // Without close(): the thread sees the command channel disconnect, commits
        // what is finished and leaves the group.
        drop(self.events.take());
        self.waker.wake();
    }
}

/// The consumer's callbacks. They run on the poller thread.
struct SourceContext {
    events: mpsc::UnboundedSender<SourceEvent>,
    tracker: Arc<OffsetTracker>,
    /// Messages polled but not yet forwarded; flushed before any rebalance event
    /// so the runtime sees them in order.
    pending: Mutex<Vec<Message<Option<Bytes>>>>,
    /// Batches sent and not yet taken by the runtime (`QUEUED_BATCHES`).
    queued: Arc<AtomicUsize>,
    closing: AtomicBool,
    /// Queues split or dropped by rebalances, for the poller to pick up.
    changes: Mutex<Vec<QueueChange>>,
    waker: Waker,
    revoke_wait: Duration,
    /// Where rebalances and failed commits are counted, with the group label.
    metrics: Option<(Metrics, String)>,
    /// Where the member id goes, for the worker's `Context` and logs.
    identity: Option<Identity>,
    /// Sends commits and reads their answers; taken out (and its queue
    /// destroyed) before the consumer is.
    committer: Mutex<Option<Committer>>,
}

impl SourceContext {
    fn committer(&self) -> std::sync::MutexGuard<'_, Option<Committer>> {
        self.committer.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn flush(&self) -> bool {
        let batch = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()));
        if batch.is_empty() {
            return true;
        }
        // One tracker lock per run of same-partition messages, not per message.
        for run in batch.chunk_by(|a, b| a.partition_id() == b.partition_id()) {
            self.tracker
                .received(run[0].partition_id(), run.iter().map(|m| m.offset()));
        }
        self.queued.fetch_add(1, Ordering::AcqRel);
        self.events.send(SourceEvent::Messages(batch)).is_ok()
    }

    /// Whether the runtime has taken enough of the batches sent for more
    /// partitions to be read.
    fn has_room(&self) -> bool {
        self.queued.load(Ordering::Acquire) < QUEUED_BATCHES
    }

    fn send(&self, event: SourceEvent) {
        let _ = self.events.send(event);
    }

    fn count(&self, what: fn(&Metrics, &str)) {
        if let Some((metrics, group)) = &self.metrics {
            what(metrics, group);
        }
    }

    /// Gives each newly assigned partition a queue of its own. Called before
    /// librdkafka starts fetching them, so none of their messages go to the
    /// consumer's queue first. A partition that cannot be split (never seen in
    /// practice) keeps using the consumer's queue and librdkafka's pause.
    fn split(&self, consumer: &BaseConsumer<SourceContext>, partitions: &[PartitionId]) {
        if self.closing.load(Ordering::Acquire) {
            // Nothing is read any more, and queues must not outlive the consumer.
            return;
        }
        let mut changes = self.changes.lock().unwrap_or_else(|p| p.into_inner());
        for p in partitions {
            let waker = self.waker.clone();
            match PartitionQueue::split(consumer, p.topic(), p.index(), move || waker.wake()) {
                Some(queue) => changes.push(QueueChange::Split(p.clone(), queue)),
                None => {
                    tracing::warn!(partition = %p, "cannot read the partition from its own queue; pausing it will refetch")
                }
            }
        }
    }

    fn unsplit(&self, partitions: &[PartitionId]) {
        self.changes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(QueueChange::Removed(partitions.to_vec()));
    }
}

impl ClientContext for SourceContext {}

impl ConsumerContext for SourceContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let partitions = partition_ids(tpl);
                if !partitions.is_empty() {
                    // Before the assignment is reported: the runtime logs it with the id.
                    if let (Some(identity), Some(id)) = (&self.identity, member_id(consumer)) {
                        identity.set_member_id(&id);
                    }
                    self.count(Metrics::rebalanced);
                    self.flush();
                    self.split(consumer, &partitions);
                    self.send(SourceEvent::Assigned(partitions));
                }
            }
            Rebalance::Revoke(tpl) => {
                let partitions = partition_ids(tpl);
                if partitions.is_empty() {
                    return;
                }
                self.count(Metrics::rebalanced);
                self.flush();
                // librdkafka keeps a partition's pause across unassign/assign:
                // clear it, or a partition paused now stays paused if it returns.
                resume(consumer, tpl);
                if consumer.assignment_lost() {
                    tracing::warn!(
                        ?partitions,
                        "assignment lost; uncommitted messages will be redelivered to the new owner"
                    );
                    self.tracker.remove(&partitions);
                    self.unsplit(&partitions);
                    self.send(SourceEvent::Lost(partitions));
                    return;
                }
                if !self.closing.load(Ordering::Acquire) {
                    let (tx, rx) = std_mpsc::channel();
                    let revocation = Revocation::new(partitions.clone(), move || {
                        let _ = tx.send(());
                    });
                    if self.events.send(SourceEvent::Revoked(revocation)).is_ok() {
                        match rx.recv_timeout(self.revoke_wait) {
                            Ok(()) | Err(std_mpsc::RecvTimeoutError::Disconnected) => {}
                            Err(std_mpsc::RecvTimeoutError::Timeout) => {
                                tracing::warn!(
                                    ?partitions,
                                    "runtime did not drain revoked partitions in time"
                                );
                            }
                        }
                    }
                }
                let commits = self.tracker.remove(&partitions);
                // Busy only while the final commit polls on close, when
                // nothing is left to commit here.
                if let Ok(mut committer) = self.committer.try_lock()
                    && let Some(committer) = committer.as_mut()
                {
                    let deadline = Instant::now() + REVOKE_COMMIT_WAIT;
                    committer.commit_and_wait(
                        consumer,
                        &self.tracker,
                        &commits,
                        deadline,
                        "revoke",
                        None,
                    );
                }
                self.unsplit(&partitions);
            }
            Rebalance::Error(error) => tracing::warn!(%error, "rebalance error"),
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            // A fresh assignment starts flowing, whatever state it was left in.
            resume(consumer, tpl);
        }
    }
}

/// The last commit before leaving: what the broker has not accepted yet,
/// sent again while the group refuses it for a moment (another member
/// joined or left at the same time, so this member's epoch or generation
/// went stale, or the group is rebalancing) until `deadline`. Polling between
/// tries lets the client rejoin and pick up its new generation; messages
/// fetched meanwhile are not processed, so they stay uncommitted.
fn final_commit(
    consumer: &BaseConsumer<SourceContext>,
    commits: &[(PartitionId, i64)],
    deadline: Instant,
) -> Result<(), pythia_core::Error> {
    let context = consumer.context();
    let mut guard = context.committer();
    let Some(committer) = guard.as_mut() else {
        return Ok(());
    };
    // Backs off from 100 ms to 1 s between tries: a group that is
    // rebalancing refuses every commit until it is done, and polling lets
    // the member take part meanwhile.
    let mut wait = Duration::from_millis(100);
    let mut poll = || {
        let until = (Instant::now() + wait).min(deadline);
        while Instant::now() < until {
            let _ = consumer.poll(Duration::from_millis(100).min(until - Instant::now()));
        }
        wait = (wait * 2).min(Duration::from_secs(1));
    };
    match committer.commit_and_wait(
        consumer,
        &context.tracker,
        commits,
        deadline,
        "shutdown",
        Some(&mut poll),
    ) {
        Settled::Accepted => Ok(()),
        Settled::Failed(code) => {
            let error = code.map_or_else(|| "no answer in time".to_owned(), |e| format!("{e:?}"));
            let uncommitted: Vec<String> = commits
                .iter()
                .map(|(p, offset)| format!("{p} from offset {offset}"))
                .collect();
            tracing::error!(
                %error,
                ?uncommitted,
                "final offset commit failed; these messages will be redelivered to the partitions' next owner"
            );
            Err(KafkaError::FinalCommit {
                code,
                uncommitted: uncommitted.join(", "),
            }
            .into())
        }
    }
}

fn resume(consumer: &BaseConsumer<SourceContext>, tpl: &TopicPartitionList) {
    if tpl.count() > 0
        && let Err(error) = consumer.resume(tpl)
    {
        tracing::debug!(%error, "resume on rebalance");
    }
}

/// The member id the group gave this consumer, once it has one.
fn member_id(consumer: &BaseConsumer<SourceContext>) -> Option<String> {
    let client = consumer.client().native_ptr();
    // SAFETY: the handle lives as long as `consumer`. librdkafka asks its
    // main thread for the id and waits for the answer (called here, on the
    // poller thread, the wait ends), then returns a copy we own, or null.
    let id = unsafe { rdkafka_sys::rd_kafka_memberid(client) };
    if id.is_null() {
        return None;
    }
    // SAFETY: a non-null id is a NUL-terminated string, live until freed below.
    let text = unsafe { std::ffi::CStr::from_ptr(id) }
        .to_string_lossy()
        .into_owned();
    // SAFETY: `id` came from librdkafka on this handle and is freed once.
    unsafe { rdkafka_sys::rd_kafka_mem_free(client, id.cast()) };
    (!text.is_empty()).then_some(text)
}

fn partition_ids(tpl: &TopicPartitionList) -> Vec<PartitionId> {
    tpl.elements()
        .iter()
        .map(|e| PartitionId::new(e.topic(), e.partition()))
        .collect()
}

/// A partition read from its own queue.
struct Split {
    partition: PartitionId,
    queue: PartitionQueue,
    paused: bool,
    /// Where this partition's payloads and keys are copied: a block shared
    /// only by one partition's messages has its reference count touched by
    /// that partition's lane alone, not by lanes on other threads.
    arena: BytesMut,
}

struct Poller {
    /// The assigned partitions with queues of their own. Declared before the
    /// consumer, so they are dropped first even on a panic.
    splits: Vec<Split>,
    consumer: BaseConsumer<SourceContext>,
    commands: std_mpsc::Receiver<Command>,
    commit_interval: Duration,
    /// Which split partition reads first in the next pass.
    turn: usize,
    /// Messages read in the current pass.
    batch: Vec<Message<Option<Bytes>>>,
    /// Topic names, interned so each message shares one allocation.
    topics: HashMap<String, Arc<str>>,
    /// Where payloads and keys of the consumer's own queue are copied out of
    /// librdkafka (split partitions have arenas of their own): one allocation
    /// per block rather than per message, and cloning a payload (as the `Raw`
    /// codec does) only counts a reference.
    arena: BytesMut,
}

impl Poller {
    fn new(
        consumer: BaseConsumer<SourceContext>,
        commands: std_mpsc::Receiver<Command>,
        commit_interval: Duration,
    ) -> Self {
        Self {
            consumer,
            commands,
            commit_interval,
            splits: Vec::new(),
            turn: 0,
            batch: Vec::with_capacity(MAX_BATCH),
            topics: HashMap::new(),
            arena: BytesMut::new(),
        }
    }

    fn run(mut self) {
        let mut last_commit = Instant::now();
        let reply = loop {
            match self.apply_commands() {
                Ok(()) => {}
                Err(reply) => break reply,
            }
            self.serve_commits(&mut last_commit);
            let fetched = self.poll_batch();
            if !self.consumer.context().flush() {
                // The runtime stopped listening: it is closing (a close request
                // is queued or about to be) or the source was dropped.
                break self.close_request();
            }
            if fetched == 0 {
                // Woken early by a fetched message, a command or an event.
                thread::park_timeout(POLL_WAIT);
            }
        };
        self.close(reply);
    }

    /// Reads commit answers that arrived, and every `commit_interval` sends
    /// the commit points neither accepted nor awaiting an answer — a refused
    /// commit among them, so it is retried once per interval, not per poll.
    fn serve_commits(&mut self, last_commit: &mut Instant) {
        let context = self.consumer.context();
        let mut committer = context.committer();
        let Some(committer) = committer.as_mut() else {
            return;
        };
        committer.serve(&context.tracker);
        if last_commit.elapsed() >= self.commit_interval {
            committer.commit_due(&self.consumer, &context.tracker);
            *last_commit = Instant::now();
        }
    }

    /// Applies queued commands; `Err` carries the close request (or `None` when
    /// the source was dropped).
    fn apply_commands(&mut self) -> Result<(), Option<CloseRequest>> {
        loop {
            match self.commands.try_recv() {
                Ok(Command::Pause(partitions)) => self.flow(&partitions, true),
                Ok(Command::Resume(partitions)) => self.flow(&partitions, false),
                Ok(Command::Close(reply)) => return Err(Some(reply)),
                Err(std_mpsc::TryRecvError::Empty) => return Ok(()),
                Err(std_mpsc::TryRecvError::Disconnected) => return Err(None),
            }
        }
    }

    /// Waits for the close request after the runtime stopped taking events.
    fn close_request(&self) -> Option<CloseRequest> {
        loop {
            match self.commands.recv_timeout(Duration::from_secs(10)) {
                Ok(Command::Close(reply)) => return Some(reply),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
    }

    fn flow(&mut self, partitions: &[PartitionId], pause: bool) {
        self.apply_changes();
        // A split partition pauses by not being read; the others (and only
        // those still assigned) through librdkafka.
        let mut unsplit = Vec::new();
        for p in partitions {
            match self.splits.iter_mut().find(|s| &s.partition == p) {
                Some(split) => split.paused = pause,
                None => unsplit.push(p),
            }
        }
        if unsplit.is_empty() {
            return;
        }
        let assigned = match self.consumer.assignment() {
            Ok(tpl) => tpl,
            Err(_) => return,
        };
        let mut tpl = TopicPartitionList::new();
        for p in unsplit {
            if assigned.find_partition(p.topic(), p.index()).is_some() {
                tpl.add_partition(p.topic(), p.index());
            }
        }
        if tpl.count() == 0 {
            return;
        }
        let result = if pause {
            self.consumer.pause(&tpl)
        } else {
            self.consumer.resume(&tpl)
        };
        if let Err(error) = result {
            tracing::warn!(%error, pause, "could not change partition flow");
        }
    }

    /// Picks up the queues rebalances split off or dropped.
    fn apply_changes(&mut self) {
        let changes = std::mem::take(
            &mut *self
                .consumer
                .context()
                .changes
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        for change in changes {
            match change {
                QueueChange::Split(partition, queue) => {
                    self.splits.retain(|s| s.partition != partition);
                    self.splits.push(Split {
                        partition,
                        queue,
                        paused: false,
                        arena: BytesMut::new(),
                    });
                }
                QueueChange::Removed(partitions) => {
                    self.splits.retain(|s| !partitions.contains(&s.partition));
                }
            }
        }
    }

    /// Serves the consumer's events, then reads the partitions that are not
    /// paused, each in turn. Returns how many messages were read.
    fn poll_batch(&mut self) -> usize {
        let mut fetched = 0;
        // Rebalance callbacks run in here. Messages of unsplit partitions go
        // straight to the pending list, which the callbacks flush first.
        while fetched < MAX_BATCH {
            match self.consumer.poll(Duration::ZERO) {
                Some(Ok(message)) => {
                    let message = convert(&message, &mut self.topics, &mut self.arena);
                    let context = self.consumer.context();
                    context
                        .pending
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(message);
                    fetched += 1;
                }
                Some(Err(error)) => {
                    // Broker transport errors are retried by librdkafka itself.
                    tracing::warn!(%error, "consumer error");
                    break;
                }
                None => break,
            }
        }
        self.apply_changes();
        let count = if self.consumer.context().has_room() {
            self.splits.len()
        } else {
            0
        };
        for i in 0..count {
            let split = &mut self.splits[(self.turn + i) % count];
            if split.paused {
                continue;
            }
            let batch = &mut self.batch;
            let (partition, arena) = (&split.partition, &mut split.arena);
            split
                .queue
                .read(PER_PARTITION, |message| match message.error() {
                    None => batch.push(convert_fetched(partition, message, arena)),
                    Some(error) => {
                        tracing::warn!(%error, %partition, "consumer error");
                    }
                });
            if fetched + self.batch.len() >= MAX_BATCH {
                break;
            }
        }
        self.turn = self.turn.wrapping_add(1);
        fetched += self.batch.len();
        if !self.batch.is_empty() {
            let context = self.consumer.context();
            let mut pending = context.pending.lock().unwrap_or_else(|p| p.into_inner());
            if pending.is_empty() {
                std::mem::swap(&mut *pending, &mut self.batch);
            } else {
                pending.append(&mut self.batch);
            }
        }
        fetched
    }

    fn close(self, request: Option<CloseRequest>) {
        let context = self.consumer.context();
        context.closing.store(true, Ordering::Release);
        // Commit points only ever cover finished messages, so committing them is
        // safe even when the source was dropped without a clean close.
        // Removed from the tracker, so the revoke callback of the close below
        // has nothing left to commit after the member is gone. Only what the
        // broker has not accepted yet is sent.
        let commits = context.tracker.remove_all();
        let deadline = request.as_ref().map_or_else(
            || Instant::now() + DROP_COMMIT_WAIT,
            |request| request.deadline,
        );
        let result = final_commit(&self.consumer, &commits, deadline);
        // Its queue goes before the consumer.
        drop(context.committer().take());
        // Answer now: leaving the group below is bounded by the caller.
        if let Some(request) = request {
            let _ = request.reply.send(result);
        }
        // The queues hold the consumer: drop them first, so that dropping the
        // consumer closes it (revoke callback, leave the group).
        drop(self.splits);
        context
            .changes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        drop(self.consumer);
        tracing::info!("left the consumer group");
    }
}

/// Copies `bytes` into the arena's current block (starting a new block when
/// it is full) and returns them as a shared slice of it.
fn copy(arena: &mut BytesMut, bytes: &[u8]) -> Bytes {
    if arena.capacity() - arena.len() < bytes.len() {
        // A block still referenced by messages is never reused: this starts a new one.
        *arena = BytesMut::with_capacity(ARENA_BLOCK.max(bytes.len()));
    }
    arena.extend_from_slice(bytes);
    arena.split().freeze()
}

/// Copies a message of the consumer's own queue out of librdkafka.
fn convert(
    message: &BorrowedMessage<'_>,
    topics: &mut HashMap<String, Arc<str>>,
    arena: &mut BytesMut,
) -> Message<Option<Bytes>> {
    let topic = match topics.get(message.topic()) {
        Some(topic) => topic.clone(),
        None => {
            let topic: Arc<str> = message.topic().into();
            topics.insert(message.topic().to_owned(), topic.clone());
            topic
        }
    };
    let headers = message.headers().map(|headers| {
        headers
            .iter()
            .map(|h| header(h.key, h.value))
            .collect::<Headers>()
    });
    assemble(
        PartitionId::new(topic, message.partition()),
        message.offset(),
        (message.payload(), message.key()),
        headers,
        message.timestamp().to_millis(),
        arena,
    )
}

/// Copies a message of a partition's own queue out of librdkafka.
fn convert_fetched(
    partition: &PartitionId,
    message: &Fetched<'_>,
    arena: &mut BytesMut,
) -> Message<Option<Bytes>> {
    let mut headers: Option<Vec<Header>> = None;
    message.headers(|name, value| headers.get_or_insert_default().push(header(name, value)));
    assemble(
        partition.clone(),
        message.offset(),
        (message.payload(), message.key()),
        headers.map(Headers::from_iter),
        message.timestamp_ms(),
        arena,
    )
}

fn header(name: &str, value: Option<&[u8]>) -> Header {
    Header {
        name: name.to_owned(),
        value: value.map(Bytes::copy_from_slice),
    }
}

fn assemble(
    partition: PartitionId,
    offset: i64,
    (payload, key): (Option<&[u8]>, Option<&[u8]>),
    headers: Option<Headers>,
    timestamp_ms: Option<i64>,
    arena: &mut BytesMut,
) -> Message<Option<Bytes>> {
    let mut message = Message::new(partition, offset, payload.map(|p| copy(arena, p)));
    if let Some(key) = key {
        message = message.with_key(copy(arena, key));
    }
    if let Some(headers) = headers {
        message = message.with_headers(headers);
    }
    if let Some(ms) = timestamp_ms {
        message = message.with_timestamp_ms(ms);
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_share_blocks_and_keep_their_bytes() {
        let mut arena = BytesMut::new();
        let a = copy(&mut arena, b"first");
        let b = copy(&mut arena, b"second");
        let big = vec![7u8; ARENA_BLOCK + 1];
        let c = copy(&mut arena, &big);
        let d = copy(&mut arena, b"");
        assert_eq!(
            (&a[..], &b[..], &d[..]),
            (&b"first"[..], &b"second"[..], &b""[..])
        );
        assert_eq!(c.len(), ARENA_BLOCK + 1);
        // Neighbours in one block: `b` starts where `a` ends.
        assert_eq!(a.as_ptr().wrapping_add(a.len()), b.as_ptr());
        drop(a);
        assert_eq!(&b[..], b"second", "a slice outlives its neighbours");
    }
}
