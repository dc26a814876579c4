//! The consumer's callbacks: what the member does when the group assigns or
//! revokes partitions.
//!
//! [`SourceContext`] is the consumer's context; its callbacks run on the
//! poller thread, inside `poll`. On assign it gives each new partition a
//! queue of its own; on revoke it waits (up to the revoke deadline) for the
//! runtime to drain the partitions, commits them and waits for the answer,
//! and only then lets librdkafka release them. It also holds what the
//! callbacks share with the poller: messages not yet forwarded, the queue
//! changes, the committer, and the [`Waker`] of the poller thread.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, mpsc as std_mpsc};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use pythia_core::connector::{Identity, OffsetTracker, Revocation, SourceEvent};
use pythia_core::{Message, Metrics, PartitionId};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::{ClientContext, TopicPartitionList};
use tokio::sync::mpsc;

use super::commit::Committer;
use crate::queue::PartitionQueue;

/// Batches handed to the runtime and not yet taken, at most, before the
/// poller stops reading partitions until the runtime catches up. The runtime
/// pauses a partition whose lane holds `worker.partition_buffer` messages; with
/// the poller this close behind, the pause takes effect a few hundred messages
/// later rather than after all it could fetch meanwhile (19,000 of a
/// partition, with a buffer of 1,000, when it was not held back).
pub(super) const QUEUED_BATCHES: usize = 2;
/// How long a revoke waits for its commit's answer. The group waits for the
/// revoke meanwhile; a refused or late commit costs only duplicates, since
/// the next owner starts from the last accepted commit.
const REVOKE_COMMIT_WAIT: Duration = Duration::from_secs(5);

/// Wakes the poller thread when it sleeps for want of messages.
#[derive(Clone, Default)]
pub(super) struct Waker(pub(super) Arc<OnceLock<thread::Thread>>);

impl Waker {
    pub(super) fn wake(&self) {
        if let Some(thread) = self.0.get() {
            thread.unpark();
        }
    }
}

/// A change of the partitions read from their own queues, made by the
/// rebalance callback and applied by the poller.
pub(super) enum QueueChange {
    Split(PartitionId, PartitionQueue),
    Removed(Vec<PartitionId>),
}

/// The consumer's callbacks. They run on the poller thread.
pub(super) struct SourceContext {
    pub(super) events: mpsc::UnboundedSender<SourceEvent>,
    pub(super) tracker: Arc<OffsetTracker>,
    /// Messages polled but not yet forwarded; flushed before any rebalance event
    /// so the runtime sees them in order.
    pub(super) pending: Mutex<Vec<Message<Option<Bytes>>>>,
    /// Batches sent and not yet taken by the runtime (`QUEUED_BATCHES`).
    pub(super) queued: Arc<AtomicUsize>,
    pub(super) closing: AtomicBool,
    /// Whether the runtime has been told the member is in the group (by an
    /// assignment, or by [`SourceContext::report_joined`]).
    pub(super) joined: AtomicBool,
    /// Queues split or dropped by rebalances, for the poller to pick up.
    pub(super) changes: Mutex<Vec<QueueChange>>,
    pub(super) waker: Waker,
    pub(super) revoke_wait: Duration,
    /// Where rebalances and failed commits are counted, with the group label.
    pub(super) metrics: Option<(Metrics, String)>,
    /// Where the member id goes, for the worker's `Context` and logs.
    pub(super) identity: Option<Identity>,
    /// Sends commits and reads their answers; taken out (and its queue
    /// destroyed) before the consumer is.
    pub(super) committer: Mutex<Option<Committer>>,
}

impl SourceContext {
    pub(super) fn committer(&self) -> std::sync::MutexGuard<'_, Option<Committer>> {
        self.committer.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn flush(&self) -> bool {
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
    pub(super) fn has_room(&self) -> bool {
        self.queued.load(Ordering::Acquire) < QUEUED_BATCHES
    }

    /// Tells the runtime the member is in the group when it is and nothing
    /// has said so yet: a member given no partitions hears no assignment on
    /// the KIP-848 protocol (the classic one calls the rebalance callback
    /// with an empty list). In the group means a generation (classic) or a
    /// member epoch (KIP-848) above zero. Returns whether it has been told.
    pub(super) fn report_joined(&self, consumer: &BaseConsumer<SourceContext>) -> bool {
        if self.joined.load(Ordering::Acquire) {
            return true;
        }
        if self.closing.load(Ordering::Acquire) || generation(consumer) <= 0 {
            return false;
        }
        self.announce_joined(consumer);
        true
    }

    /// Tells the runtime the member is in the group with no partitions: an
    /// empty assignment, which readiness waits for (extra instances stand by).
    fn announce_joined(&self, consumer: &BaseConsumer<SourceContext>) {
        self.record_member_id(consumer);
        self.joined.store(true, Ordering::Release);
        self.send(SourceEvent::Assigned(Vec::new()));
    }

    fn record_member_id(&self, consumer: &BaseConsumer<SourceContext>) {
        if let (Some(identity), Some(id)) = (&self.identity, member_id(consumer)) {
            identity.set_member_id(&id);
        }
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
                if partitions.is_empty() {
                    // In the group with nothing (new) assigned: news only the
                    // first time, when readiness waits for it.
                    if !self.joined.load(Ordering::Acquire) {
                        self.announce_joined(consumer);
                    }
                    return;
                }
                // Before the assignment is reported: the runtime logs it with the id.
                self.record_member_id(consumer);
                self.count(Metrics::rebalanced);
                self.flush();
                self.split(consumer, &partitions);
                self.joined.store(true, Ordering::Release);
                self.send(SourceEvent::Assigned(partitions));
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

/// The group generation (classic) or member epoch (KIP-848) the consumer
/// holds: -1 or 0 until it is in the group.
fn generation(consumer: &BaseConsumer<SourceContext>) -> i32 {
    let client = consumer.client().native_ptr();
    // SAFETY: the handle lives as long as `consumer`; librdkafka answers from
    // its group thread with a copy we own, or null without a group.
    let metadata = unsafe { rdkafka_sys::rd_kafka_consumer_group_metadata(client) };
    if metadata.is_null() {
        return -1;
    }
    // SAFETY: `metadata` is the non-null copy above, read once, then freed once.
    unsafe {
        let generation = rdkafka_sys::rd_kafka_consumer_group_metadata_generation_id(metadata);
        rdkafka_sys::rd_kafka_consumer_group_metadata_destroy(metadata);
        generation
    }
}

fn partition_ids(tpl: &TopicPartitionList) -> Vec<PartitionId> {
    tpl.elements()
        .iter()
        .map(|e| PartitionId::new(e.topic(), e.partition()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_list_becomes_partition_ids_in_its_order() {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition("orders", 3);
        tpl.add_partition("refunds", 0);
        tpl.add_partition("orders", 1);
        assert_eq!(
            partition_ids(&tpl),
            [
                PartitionId::new("orders", 3),
                PartitionId::new("refunds", 0),
                PartitionId::new("orders", 1)
            ]
        );
        assert!(partition_ids(&TopicPartitionList::new()).is_empty());
    }
}
