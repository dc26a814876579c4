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
//! Commits are sent with their answers read back (see [`commit`]):
//! a commit the group refuses is sent again on the next round, and a point
//! counts as committed only once the broker accepted it. Revoke and final
//! commits wait for their answer with a deadline, never without a bound.
//!
//! Each assigned partition's messages are split into a queue of their own as
//! it is assigned, before librdkafka starts fetching it. Pausing a partition
//! then only stops reading its queue: what librdkafka already fetched stays
//! there (bounded by `queued.max.messages.kbytes` per partition, after which
//! librdkafka stops fetching it) and is read as soon
//! as the partition resumes. librdkafka's own pause would discard the fetched
//! messages and fetch them again, which under steady backpressure costs most
//! of the throughput.
//!
//! Each step has its file: [`poller`] runs the consumer thread (commands,
//! polling, pausing, the final commit), [`rebalance`] holds the consumer's
//! callbacks (assign, and revoke with its commit), [`convert`] copies
//! librdkafka's messages into the core's, and [`commit`] sends commits and
//! reads their answers.

mod commit;
mod convert;
mod poller;
mod rebalance;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc as std_mpsc};
use std::thread;
use std::time::{Duration, Instant};

use pythia_core::connector::{Acker, Identity, OffsetTracker, Source, SourceEvent};
use pythia_core::{Metrics, PartitionId};
use rdkafka::consumer::{BaseConsumer, Consumer};
use tokio::sync::{mpsc, oneshot};

use crate::config::Config;
use crate::error::KafkaError;
use commit::Committer;
use poller::{CloseRequest, Command, Poller};
use rebalance::{QUEUED_BATCHES, SourceContext, Waker};

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
    /// real addresses here: [`KafkaWorker::builder`](crate::KafkaWorker::builder) resolves `"embedded"` first.
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
            joined: AtomicBool::new(false),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_acker_marks_offsets_done_in_the_tracker_the_source_commits_from() {
        let tracker = Arc::new(OffsetTracker::new());
        let partition = PartitionId::new("orders", 0);
        tracker.received(&partition, [10, 11, 12]);
        let acker = KafkaAcker(tracker.clone());
        acker.ack(&partition, 11);
        assert_eq!(
            tracker.commit_point(&partition),
            Some(10),
            "10 is not done yet"
        );
        acker.ack_many(&partition, &[10, 12]);
        assert_eq!(tracker.commit_point(&partition), Some(13));
        assert_eq!(tracker.in_flight(&partition), 0);
    }
}
