//! The Kafka source: a consumer-group member polled on its own thread.
//!
//! The poller thread owns the consumer. It forwards fetched messages to the
//! runtime, applies pause/resume, commits the tracker's commit points every
//! `commit_interval`, and runs the rebalance callback: on revoke it waits (up to
//! the revoke deadline) for the runtime to drain the partitions, commits them,
//! and only then lets librdkafka release them. Because the thread never waits on
//! the runtime outside a rebalance, the member keeps polling however slow the
//! handlers are, so it is never expelled by `max.poll.interval.ms`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc as std_mpsc};
use std::thread;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use pythia_core::offsets::OffsetTracker;
use pythia_core::{
    Acker, Header, Headers, Message, Metrics, PartitionId, Revocation, Source, SourceEvent,
};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaResult;
use rdkafka::message::{BorrowedMessage, Headers as _};
use rdkafka::{ClientContext, Message as _, Offset, TopicPartitionList};
use tokio::sync::{mpsc, oneshot};

use crate::config::Config;
use crate::error::KafkaError;

/// Messages forwarded to the runtime per batch, at most.
const MAX_BATCH: usize = 1024;
/// How long one poll waits when nothing is fetched; bounds command latency.
const POLL_WAIT: Duration = Duration::from_millis(20);
/// How long a final commit the group refuses for a moment is retried.
const FINAL_COMMIT_RETRY: Duration = Duration::from_secs(3);
/// Size of the blocks payloads and keys are copied into.
const ARENA_BLOCK: usize = 64 * 1024;

enum Command {
    Pause(Vec<PartitionId>),
    Resume(Vec<PartitionId>),
    Close(oneshot::Sender<Result<(), pythia_core::Error>>),
}

/// Acknowledges finished messages into the offset tracker.
#[derive(Clone, Debug)]
pub struct KafkaAcker(Arc<OffsetTracker>);

impl Acker for KafkaAcker {
    fn ack(&self, partition: &PartitionId, offset: i64) {
        self.0.done(partition, offset);
    }
}

/// A consumer-group member as a [`Source`].
pub struct KafkaSource {
    events: Option<mpsc::UnboundedReceiver<SourceEvent>>,
    commands: std_mpsc::Sender<Command>,
    tracker: Arc<OffsetTracker>,
    thread: Option<thread::JoinHandle<()>>,
}

impl KafkaSource {
    /// Joins the group of `config.kafka.group` and subscribes to `config.kafka.topics`.
    ///
    /// `member` names this member in client ids and logs. The brokers must be
    /// real addresses here: [`crate::run`] resolves `"embedded"` first.
    pub fn new(config: &Config, member: &str) -> Result<Self, KafkaError> {
        Self::with_metrics(config, member, None)
    }

    /// Like [`KafkaSource::new`], counting rebalances and failed commits in `metrics`.
    pub(crate) fn with_metrics(
        config: &Config,
        member: &str,
        metrics: Option<Metrics>,
    ) -> Result<Self, KafkaError> {
        let client = config.kafka.consumer_client_config(member)?;
        let tracker = Arc::new(OffsetTracker::new());
        let (events_tx, events) = mpsc::unbounded_channel();
        let context = SourceContext {
            events: events_tx,
            tracker: tracker.clone(),
            pending: Mutex::new(Vec::new()),
            closing: AtomicBool::new(false),
            metrics: metrics.map(|m| (m, config.kafka.group.clone().unwrap_or_default())),
            // The runtime releases a revocation by its deadline: revoke_timeout
            // while running, the shutdown deadline while draining. Wait a little
            // longer than either, so a partition is never handed over early.
            revoke_wait: config
                .worker
                .revoke_timeout
                .max(config.worker.shutdown_timeout)
                + Duration::from_secs(1),
        };
        let consumer: BaseConsumer<SourceContext> = client.create_with_context(context)?;
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
        let thread = thread::Builder::new()
            .name(format!("pythia-poll-{member}"))
            .spawn(move || Poller::new(consumer, commands_rx, commit_interval).run())
            .map_err(|e| KafkaError::Io(e.to_string()))?;
        Ok(Self {
            events: Some(events),
            commands,
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
        self.events.as_mut()?.recv().await
    }

    fn pause(&mut self, partitions: &[PartitionId]) {
        let _ = self.commands.send(Command::Pause(partitions.to_vec()));
    }

    fn resume(&mut self, partitions: &[PartitionId]) {
        let _ = self.commands.send(Command::Resume(partitions.to_vec()));
    }

    async fn close(mut self, timeout: Duration) -> Result<(), pythia_core::Error> {
        // A revoke callback waiting on the runtime sees the channel go away.
        drop(self.events.take());
        let (reply, replied) = oneshot::channel();
        if self.commands.send(Command::Close(reply)).is_err() {
            return Err(pythia_core::Error::Source(
                "consumer thread has stopped".into(),
            ));
        }
        let result = match tokio::time::timeout(timeout, replied).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(pythia_core::Error::Source(
                "consumer thread stopped before the final commit".into(),
            )),
            Err(_) => Err(pythia_core::Error::Source(format!(
                "final commit and leaving the group took longer than {timeout:?}"
            ))),
        };
        if let Some(thread) = self.thread.take() {
            // The thread exits right after replying; don't block the runtime on it.
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        result
    }
}

impl Drop for KafkaSource {
    fn drop(&mut self) {
        // Without close(): the thread sees the command channel disconnect, commits
        // what is finished and leaves the group.
        drop(self.events.take());
    }
}

/// The consumer's callbacks. They run on the poller thread.
struct SourceContext {
    events: mpsc::UnboundedSender<SourceEvent>,
    tracker: Arc<OffsetTracker>,
    /// Messages polled but not yet forwarded; flushed before any rebalance event
    /// so the runtime sees them in order.
    pending: Mutex<Vec<Message<Option<Bytes>>>>,
    closing: AtomicBool,
    revoke_wait: Duration,
    /// Where rebalances and failed commits are counted, with the group label.
    metrics: Option<(Metrics, String)>,
}

impl SourceContext {
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
        self.events.send(SourceEvent::Messages(batch)).is_ok()
    }

    fn send(&self, event: SourceEvent) {
        let _ = self.events.send(event);
    }

    fn count(&self, what: fn(&Metrics, &str)) {
        if let Some((metrics, group)) = &self.metrics {
            what(metrics, group);
        }
    }
}

impl ClientContext for SourceContext {}

impl ConsumerContext for SourceContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let partitions = partition_ids(tpl);
                if !partitions.is_empty() {
                    self.count(Metrics::rebalanced);
                    self.flush();
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
                commit(consumer, &commits, CommitMode::Sync, "revoke");
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

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        if let Err(error) = result {
            self.count(Metrics::commit_failed);
            // Ask for the same commit again on the next tick.
            self.tracker.forget_commits(partition_ids(offsets));
            tracing::warn!(%error, "offset commit failed; will retry");
        }
    }
}

/// Commits `(partition, offset)` pairs; returns whether the commit succeeded.
fn commit(
    consumer: &BaseConsumer<SourceContext>,
    commits: &[(PartitionId, i64)],
    mode: CommitMode,
    reason: &str,
) -> bool {
    if commits.is_empty() {
        return true;
    }
    let mut tpl = TopicPartitionList::with_capacity(commits.len());
    for (p, offset) in commits {
        if let Err(error) = tpl.add_partition_offset(p.topic(), p.index(), Offset::Offset(*offset))
        {
            tracing::warn!(%error, partition = %p, "cannot build commit");
        }
    }
    match consumer.commit(&tpl, mode) {
        Ok(()) => {
            if matches!(mode, CommitMode::Sync) {
                tracing::info!(reason, ?commits, "offsets committed");
            } else {
                tracing::debug!(reason, ?commits, "offsets commit sent");
            }
            true
        }
        Err(error) => {
            consumer.context().count(Metrics::commit_failed);
            tracing::warn!(%error, reason, "offset commit failed; messages after the last commit may be redelivered");
            false
        }
    }
}

/// The last commit before leaving. A commit the group refuses for a moment —
/// another member left at the same time, so this member's epoch went stale
/// (KIP-848), or the group is rebalancing — is retried after polling lets the
/// client catch up, for a few seconds.
fn final_commit(consumer: &BaseConsumer<SourceContext>, commits: &[(PartitionId, i64)]) -> bool {
    use rdkafka::error::KafkaError as RdKafkaError;
    use rdkafka::types::RDKafkaErrorCode as Code;
    let deadline = std::time::Instant::now() + FINAL_COMMIT_RETRY;
    loop {
        let error = match try_commit(consumer, commits, CommitMode::Sync) {
            Ok(()) => {
                if !commits.is_empty() {
                    tracing::info!(reason = "shutdown", ?commits, "offsets committed");
                }
                return true;
            }
            Err(error) => error,
        };
        let passing = matches!(
            error,
            RdKafkaError::ConsumerCommit(
                Code::StaleMemberEpoch
                    | Code::RebalanceInProgress
                    | Code::NotCoordinator
                    | Code::CoordinatorLoadInProgress
                    | Code::CoordinatorNotAvailable
                    | Code::RequestTimedOut
            )
        );
        if !passing || std::time::Instant::now() > deadline {
            consumer.context().count(Metrics::commit_failed);
            tracing::warn!(%error, reason = "shutdown", "offset commit failed; messages after the last commit may be redelivered");
            return false;
        }
        tracing::debug!(%error, "final commit refused for now; retrying");
        // Lets the client heartbeat and pick up its new epoch; messages fetched
        // meanwhile are not processed, so they stay uncommitted.
        let _ = consumer.poll(Duration::from_millis(100));
    }
}

fn try_commit(
    consumer: &BaseConsumer<SourceContext>,
    commits: &[(PartitionId, i64)],
    mode: CommitMode,
) -> Result<(), rdkafka::error::KafkaError> {
    if commits.is_empty() {
        return Ok(());
    }
    let mut tpl = TopicPartitionList::with_capacity(commits.len());
    for (p, offset) in commits {
        tpl.add_partition_offset(p.topic(), p.index(), Offset::Offset(*offset))?;
    }
    consumer.commit(&tpl, mode)
}

fn resume(consumer: &BaseConsumer<SourceContext>, tpl: &TopicPartitionList) {
    if tpl.count() > 0
        && let Err(error) = consumer.resume(tpl)
    {
        tracing::debug!(%error, "resume on rebalance");
    }
}

fn partition_ids(tpl: &TopicPartitionList) -> Vec<PartitionId> {
    tpl.elements()
        .iter()
        .map(|e| PartitionId::new(e.topic(), e.partition()))
        .collect()
}

struct Poller {
    consumer: BaseConsumer<SourceContext>,
    commands: std_mpsc::Receiver<Command>,
    commit_interval: Duration,
    /// Topic names, interned so each message shares one allocation.
    topics: HashMap<String, Arc<str>>,
    /// Where payloads and keys are copied out of librdkafka: one allocation
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
            if last_commit.elapsed() >= self.commit_interval {
                let commits = self.consumer.context().tracker.take_commits();
                commit(&self.consumer, &commits, CommitMode::Async, "interval");
                last_commit = Instant::now();
            }
            self.poll_batch();
            if !self.consumer.context().flush() {
                // The runtime stopped listening: it is closing (a close request
                // is queued or about to be) or the source was dropped.
                break self.close_request();
            }
        };
        self.close(reply);
    }

    /// Applies queued commands; `Err` carries the close request (or `None` when
    /// the source was dropped).
    #[allow(clippy::type_complexity)]
    fn apply_commands(
        &mut self,
    ) -> Result<(), Option<oneshot::Sender<Result<(), pythia_core::Error>>>> {
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
    fn close_request(&self) -> Option<oneshot::Sender<Result<(), pythia_core::Error>>> {
        loop {
            match self.commands.recv_timeout(Duration::from_secs(10)) {
                Ok(Command::Close(reply)) => return Some(reply),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
    }

    fn flow(&self, partitions: &[PartitionId], pause: bool) {
        // Only partitions still assigned can be paused or resumed.
        let assigned = match self.consumer.assignment() {
            Ok(tpl) => tpl,
            Err(_) => return,
        };
        let mut tpl = TopicPartitionList::new();
        for p in partitions {
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

    fn poll_batch(&mut self) {
        let mut wait = POLL_WAIT;
        for _ in 0..MAX_BATCH {
            match self.consumer.poll(wait) {
                Some(Ok(message)) => {
                    let message = convert(&message, &mut self.topics, &mut self.arena);
                    let context = self.consumer.context();
                    context
                        .pending
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(message);
                    wait = Duration::ZERO;
                }
                Some(Err(error)) => {
                    // Broker transport errors are retried by librdkafka itself.
                    tracing::warn!(%error, "consumer error");
                    return;
                }
                None => return,
            }
        }
    }

    fn close(self, reply: Option<oneshot::Sender<Result<(), pythia_core::Error>>>) {
        let context = self.consumer.context();
        context.closing.store(true, Ordering::Release);
        // Commit points only ever cover finished messages, so committing them is
        // safe even when the source was dropped without a clean close.
        // Removed from the tracker, so the revoke callback of the close below
        // has nothing left to commit after the member is gone.
        let commits = context.tracker.remove_all();
        let result = if final_commit(&self.consumer, &commits) {
            Ok(())
        } else {
            Err(pythia_core::Error::Source(
                "final offset commit failed; messages after the last commit will be redelivered"
                    .into(),
            ))
        };
        // Dropping the consumer closes it: revoke callback, leave the group.
        drop(self.consumer);
        tracing::info!("left the consumer group");
        if let Some(reply) = reply {
            let _ = reply.send(result);
        }
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
    let partition = PartitionId::new(topic, message.partition());
    let payload = message.payload().map(|p| copy(arena, p));
    let mut converted = Message::new(partition, message.offset(), payload);
    if let Some(key) = message.key() {
        converted = converted.with_key(copy(arena, key));
    }
    if let Some(headers) = message.headers() {
        converted = converted.with_headers(
            headers
                .iter()
                .map(|h| Header {
                    name: h.key.to_owned(),
                    value: h.value.map(Bytes::copy_from_slice),
                })
                .collect::<Headers>(),
        );
    }
    if let Some(ms) = message.timestamp().to_millis() {
        converted = converted.with_timestamp_ms(ms);
    }
    converted
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
