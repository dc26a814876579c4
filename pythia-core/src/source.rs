//! The `Source` trait: where messages and assignment changes come from.
//!
//! A source owns the broker connection. It hands the runtime a stream of
//! [`SourceEvent`]s and takes back acknowledgements through its [`Acker`]: a Kafka
//! source turns them into committed offsets, a queue source into per-message acks.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;

use crate::message::{Message, PartitionId};

/// Something the runtime must react to.
#[derive(Debug)]
#[non_exhaustive]
pub enum SourceEvent {
    /// Messages, in fetch order. Messages of one partition are in offset order.
    Messages(Vec<Message<Option<Bytes>>>),
    /// Partitions were assigned to this member. An empty list says the
    /// member is in its group with nothing (or nothing new) assigned; a
    /// source sends one when it joins without partitions, so the run counts
    /// as running (and ready) while it stands by.
    Assigned(Vec<PartitionId>),
    /// Partitions are being taken away. The runtime stops dispatching them, lets
    /// their in-flight messages finish (up to its deadline), then calls
    /// [`Revocation::drained`]; the source commits and releases them after that.
    Revoked(Revocation),
    /// Partitions were lost without a clean hand-over (e.g. the session expired):
    /// their offsets can no longer be committed, so in-flight work is abandoned.
    Lost(Vec<PartitionId>),
}

/// A pending revocation: the partitions, and what to call once they are drained.
pub struct Revocation {
    partitions: Vec<PartitionId>,
    on_drained: Box<dyn FnOnce() + Send>,
}

impl Revocation {
    /// A revocation of `partitions`; `on_drained` runs when the runtime has
    /// finished (or abandoned) their in-flight messages. If the runtime drops the
    /// revocation instead (it is shutting down), `on_drained` never runs; a
    /// source waiting on a channel sees it disconnect.
    ///
    /// ```
    /// use pythia_core::PartitionId;
    /// use pythia_core::connector::Revocation;
    /// let (tx, rx) = std::sync::mpsc::channel();
    /// let revocation = Revocation::new(vec![PartitionId::new("orders", 0)], move || {
    ///     let _ = tx.send(());
    /// });
    /// revocation.drained();
    /// assert!(rx.recv().is_ok());
    /// ```
    pub fn new(partitions: Vec<PartitionId>, on_drained: impl FnOnce() + Send + 'static) -> Self {
        Self {
            partitions,
            on_drained: Box::new(on_drained),
        }
    }

    /// The partitions being revoked.
    pub fn partitions(&self) -> &[PartitionId] {
        &self.partitions
    }

    /// Tells the source that no message of these partitions is in flight any more.
    pub fn drained(self) {
        (self.on_drained)();
    }
}

impl std::fmt::Debug for Revocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Revocation")
            .field("partitions", &self.partitions)
            .finish_non_exhaustive()
    }
}

/// Marks messages done. Cheap to clone; called from many lanes at once.
pub trait Acker: Clone + Send + Sync + 'static {
    /// The message at `offset` of `partition` is processed and all its outputs
    /// are delivered.
    fn ack(&self, partition: &PartitionId, offset: i64);

    /// Several messages of `partition` are done: [`Acker::ack`] for each, in
    /// one call, which an acknowledger that takes a lock per call overrides.
    fn ack_many(&self, partition: &PartitionId, offsets: &[i64]) {
        for &offset in offsets {
            self.ack(partition, offset);
        }
    }
}

/// A broker connection that yields messages for the runtime.
///
/// Flow control is by partition: the runtime pauses partitions whose lanes are
/// full, and the source must keep serving its protocol (heartbeats, polls) while
/// they are paused.
pub trait Source: Send + 'static {
    /// The acknowledgement handle for this source.
    type Acker: Acker;

    /// A handle the lanes use to acknowledge finished messages.
    fn acker(&self) -> Self::Acker;

    /// The next event; `None` once the source has stopped for good.
    fn next(&mut self) -> impl Future<Output = Option<SourceEvent>> + Send;

    /// Stops fetching these partitions (membership is kept).
    fn pause(&mut self, partitions: &[PartitionId]);

    /// Resumes fetching these partitions where they left off.
    fn resume(&mut self, partitions: &[PartitionId]);

    /// Commits everything acknowledged, leaves the group and releases the
    /// connection, within `timeout`.
    fn close(self, timeout: Duration) -> impl Future<Output = Result<(), crate::Error>> + Send;
}
