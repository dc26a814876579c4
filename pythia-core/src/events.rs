//! What happens to a worker over its run, for whoever subscribes:
//! assignments, revocations, retries, dead letters, commits, the error that
//! ends a run.
//!
//! Events are rare next to messages (one per assignment, retry, dead letter
//! or accepted commit, never one per message), and building one is skipped
//! while nobody subscribes. A subscriber that falls more than
//! [`EVENT_BUFFER`] events behind misses the oldest (its receiver says how
//! many); the worker never waits for it.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;

use crate::error::FailureKind;
use crate::message::PartitionId;

/// Events a subscriber may lag behind before it misses the oldest.
pub const EVENT_BUFFER: usize = 1024;

/// A callback for each of a run's events, as a connector's builder takes it.
pub type Listener = Box<dyn Fn(&WorkerEvent) + Send + Sync>;

/// Calls each of `listeners` with each event `events` receives, until the
/// run's senders are gone; a listener that falls behind is told how many
/// events it missed, in a warning. Connectors spawn it beside a run.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use std::sync::{Arc, Mutex};
/// use pythia_core::events::{Events, Listener, WorkerEvent, call_listeners};
/// let events = Events::new();
/// let seen = Arc::new(Mutex::new(0));
/// let count = seen.clone();
/// let listener: Listener = Box::new(move |_| *count.lock().unwrap() += 1);
/// let calling = tokio::spawn(call_listeners(events.subscribe(), vec![listener]));
/// events.emit(|| WorkerEvent::Failed { error: "boom".into() });
/// drop(events);
/// calling.await.unwrap();
/// assert_eq!(*seen.lock().unwrap(), 1);
/// # });
/// ```
pub async fn call_listeners(
    mut events: broadcast::Receiver<WorkerEvent>,
    listeners: Vec<Listener>,
) {
    loop {
        match events.recv().await {
            Ok(event) => listeners.iter().for_each(|listen| listen(&event)),
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!(
                    missed,
                    "event listeners fell behind; the oldest events were dropped"
                );
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Something that happened to a worker.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum WorkerEvent {
    /// Partitions were assigned to this instance.
    Assigned {
        /// The partitions.
        partitions: Vec<PartitionId>,
    },
    /// Partitions are being taken from this instance (a rebalance, or the
    /// shutdown's hand-over): their in-flight messages finish, then commit.
    Revoked {
        /// The partitions.
        partitions: Vec<PartitionId>,
    },
    /// An attempt failed with a transient error; the message is tried again
    /// after `after`.
    Retrying {
        /// Where the message is.
        partition: PartitionId,
        /// Its offset.
        offset: i64,
        /// The attempts made so far.
        attempts: u32,
        /// The wait before the next one.
        after: Duration,
        /// The error.
        error: String,
    },
    /// A message was given up on and its dead letter sent; its offset
    /// commits once the dead letter is delivered.
    DeadLettered {
        /// Where the message is.
        partition: PartitionId,
        /// Its offset.
        offset: i64,
        /// Why.
        kind: FailureKind,
        /// The error text, as in the `pythia.dlq.reason` header.
        reason: String,
    },
    /// The broker accepted a commit: the partition's next message to read is
    /// at `offset`.
    Committed {
        /// The partition.
        partition: PartitionId,
        /// The committed offset.
        offset: i64,
    },
    /// The run ended with an error.
    Failed {
        /// The error, as the run returns it.
        error: String,
    },
}

/// Where a run sends its [`WorkerEvent`]s; clones share subscribers.
///
/// ```
/// use pythia_core::events::{Events, WorkerEvent};
/// use pythia_core::PartitionId;
///
/// let events = Events::new();
/// let mut seen = events.subscribe();
/// events.emit(|| WorkerEvent::Assigned { partitions: vec![PartitionId::new("orders", 0)] });
/// assert!(matches!(seen.try_recv(), Ok(WorkerEvent::Assigned { .. })));
/// ```
#[derive(Clone, Debug)]
pub struct Events {
    sender: Arc<broadcast::Sender<WorkerEvent>>,
}

impl Default for Events {
    fn default() -> Self {
        Self::new()
    }
}

impl Events {
    /// Events with no subscriber yet.
    pub fn new() -> Self {
        Self {
            sender: Arc::new(broadcast::channel(EVENT_BUFFER).0),
        }
    }

    /// A receiver of every event from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<WorkerEvent> {
        self.sender.subscribe()
    }

    /// Sends the event `make` builds, if anyone subscribes.
    pub fn emit(&self, make: impl FnOnce() -> WorkerEvent) {
        if self.sender.receiver_count() > 0 {
            let _ = self.sender.send(make());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_built_without_a_subscriber() {
        let events = Events::new();
        events.emit(|| unreachable!("built with nobody listening"));
        let mut first = events.subscribe();
        let mut second = events.clone().subscribe();
        events.emit(|| WorkerEvent::Failed { error: "x".into() });
        assert!(first.try_recv().is_ok() && second.try_recv().is_ok());
    }

    #[test]
    fn a_slow_subscriber_misses_the_oldest_and_is_told() {
        let events = Events::new();
        let mut slow = events.subscribe();
        for offset in 0..(EVENT_BUFFER as i64 + 5) {
            events.emit(|| WorkerEvent::Committed {
                partition: PartitionId::new("t", 0),
                offset,
            });
        }
        assert!(matches!(
            slow.try_recv(),
            Err(broadcast::error::TryRecvError::Lagged(5))
        ));
        assert!(matches!(
            slow.try_recv(),
            Ok(WorkerEvent::Committed { offset: 5, .. })
        ));
    }
}
