//! The consumer thread: it applies the runtime's commands (pause, resume,
//! close), polls the consumer (which runs the rebalance callbacks), reads the
//! split partitions in turn, commits every `commit_interval`, and on close
//! makes the final commit and leaves the group.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc as std_mpsc;
use std::thread;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use pythia_core::{Message, PartitionId};
use rdkafka::TopicPartitionList;
use rdkafka::consumer::{BaseConsumer, Consumer};
use tokio::sync::oneshot;

use super::commit::Settled;
use super::convert::{convert, convert_fetched};
use super::rebalance::{QueueChange, SourceContext};
use crate::error::KafkaError;
use crate::queue::PartitionQueue;

/// How often the poller asks whether the member is in its group, until the
/// runtime has been told (see `SourceContext::report_joined`).
const JOIN_CHECK: Duration = Duration::from_millis(200);

/// Messages forwarded to the runtime per batch, at most.
const MAX_BATCH: usize = 1024;
/// Messages read from one partition's queue per pass, so partitions take turns.
const PER_PARTITION: usize = 256;
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

/// What the runtime asks of the poller.
pub(super) enum Command {
    Pause(Vec<PartitionId>),
    Resume(Vec<PartitionId>),
    Close(CloseRequest),
}

/// Asks the poller for the final commit by `deadline`; the result goes to `reply`.
pub(super) struct CloseRequest {
    pub(super) reply: oneshot::Sender<Result<(), pythia_core::Error>>,
    pub(super) deadline: Instant,
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

/// The consumer thread's state; [`Poller::run`] is its loop.
pub(super) struct Poller {
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
    pub(super) fn new(
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

    pub(super) fn run(mut self) {
        let mut last_commit = Instant::now();
        // Until the runtime knows the member is in the group, ask now and then.
        let mut next_join_check = Some(Instant::now());
        let reply = loop {
            match self.apply_commands() {
                Ok(()) => {}
                Err(reply) => break reply,
            }
            self.serve_commits(&mut last_commit);
            if next_join_check.is_some_and(|at| at <= Instant::now()) {
                next_join_check = (!self.consumer.context().report_joined(&self.consumer))
                    .then(|| Instant::now() + JOIN_CHECK);
            }
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use pythia_core::PartitionId;
    use pythia_core::connector::{Source, SourceEvent};
    use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

    use crate::config::Config;
    use crate::source::KafkaSource;

    /// The next batch of messages within `wait`, leaving other events.
    async fn messages(source: &mut KafkaSource, wait: Duration) -> Option<Vec<i64>> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, source.next()).await {
                Err(_) => return None,
                Ok(None) => panic!("the source closed"),
                Ok(Some(SourceEvent::Messages(batch))) => {
                    return Some(batch.iter().map(|m| m.offset()).collect());
                }
                Ok(Some(SourceEvent::Revoked(revocation))) => revocation.drained(),
                Ok(Some(_)) => {}
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_paused_partition_is_not_read_until_resumed_and_loses_nothing() {
        let loader = pythia_core::ConfigLoader::new()
            .no_file()
            .env::<&str, &str>([])
            .set("kafka.brokers", "embedded")
            .set("kafka.group", "poller")
            .set("kafka.topics", "poller.in")
            .set("kafka.embedded_partitions", 1);
        let mut config = Config::from_loader(loader).unwrap();
        let broker = config.start_embedded().unwrap().expect("embedded broker");
        let producer: ThreadedProducer<DefaultProducerContext> =
            config.kafka.base().create().unwrap();
        let send = |i: i64| {
            let payload = i.to_string();
            producer
                .send(BaseRecord::<[u8], [u8]>::to("poller.in").payload(payload.as_bytes()))
                .map_err(|(e, _)| e)
                .unwrap();
            producer.flush(Duration::from_secs(10)).unwrap();
        };

        let mut source = KafkaSource::new(&config, "poller").unwrap();
        let partition = PartitionId::new("poller.in", 0);
        send(0);
        assert_eq!(
            messages(&mut source, Duration::from_secs(30)).await,
            Some(vec![0])
        );

        source.pause(std::slice::from_ref(&partition));
        // The consumer thread applies the pause on its next turn.
        tokio::time::sleep(Duration::from_millis(300)).await;
        send(1);
        assert_eq!(
            messages(&mut source, Duration::from_secs(2)).await,
            None,
            "read while paused"
        );

        source.resume(std::slice::from_ref(&partition));
        assert_eq!(
            messages(&mut source, Duration::from_secs(30)).await,
            Some(vec![1])
        );
        source.close(Duration::from_secs(10)).await.unwrap();
        drop(broker);
    }
}
