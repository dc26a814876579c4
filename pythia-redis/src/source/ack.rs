//! Acknowledgements: which entry or element each message is, and
//! acknowledging it once the message and its outputs are done.
//!
//! A message's offset is a number this source gives each delivery, rising
//! across reconnects. [`InFlight`] maps each offset to its [`Handle`]: the
//! entry id (stream mode) or the element (list mode). Both outlive a lost
//! connection (the entry stays in this consumer's pending list, the element
//! in its processing list), so nothing is forgotten on a reconnect: acks
//! wait and are sent on the next connection.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use pythia_core::PartitionId;
use pythia_core::connector::Acker;
use tokio::sync::mpsc;

/// What identifies a delivery to the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Handle {
    /// A stream entry id.
    Entry(String),
    /// A list element, as taken.
    Element(Vec<u8>),
}

/// What the consume task is asked to do.
#[derive(Debug)]
pub(crate) enum Command {
    /// Acknowledge this delivery.
    Ack(Handle),
    /// Stop taking new messages: the runtime paused the input.
    Pause,
    /// Take messages again.
    Resume,
    /// Stop taking, send the acks before this, give back what is left, and
    /// answer, if asked to.
    Close(Option<tokio::sync::oneshot::Sender<()>>),
}

/// The deliveries handed to the runtime and not yet acknowledged.
#[derive(Debug, Default)]
pub(crate) struct InFlight {
    handles: Mutex<HashMap<i64, Handle>>,
}

impl InFlight {
    fn lock(&self) -> MutexGuard<'_, HashMap<i64, Handle>> {
        self.handles.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records the delivery of the message at `offset`.
    pub(crate) fn insert(&self, offset: i64, handle: Handle) {
        self.lock().insert(offset, handle);
    }

    /// The handle of the message at `offset`, which is done; `None` if it
    /// was acknowledged already.
    pub(crate) fn take(&self, offset: i64) -> Option<Handle> {
        self.lock().remove(&offset)
    }

    /// Every handle still held, to renew them.
    pub(crate) fn handles(&self) -> Vec<Handle> {
        self.lock().values().cloned().collect()
    }

    /// Takes every handle, to give them back at a close.
    pub(crate) fn take_all(&self) -> Vec<Handle> {
        self.lock().drain().map(|(_, handle)| handle).collect()
    }

    /// Deliveries not yet acknowledged.
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}

/// Acknowledges finished messages of a [`RedisSource`](crate::RedisSource).
#[derive(Debug, Clone)]
pub struct RedisAcker {
    in_flight: Arc<InFlight>,
    commands: mpsc::UnboundedSender<Command>,
}

impl RedisAcker {
    pub(crate) fn new(in_flight: Arc<InFlight>, commands: mpsc::UnboundedSender<Command>) -> Self {
        Self {
            in_flight,
            commands,
        }
    }
}

impl Acker for RedisAcker {
    fn ack(&self, _partition: &PartitionId, offset: i64) {
        if let Some(handle) = self.in_flight.take(offset) {
            // The task is gone only once the source is closed.
            let _ = self.commands.send(Command::Ack(handle));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_delivery_is_acked_once() {
        let in_flight = Arc::new(InFlight::default());
        let (tx, mut rx) = mpsc::unbounded_channel();
        let acks = RedisAcker::new(in_flight.clone(), tx);
        let input = PartitionId::new("jobs", 0);
        in_flight.insert(1, Handle::Entry("1-0".into()));
        in_flight.insert(2, Handle::Element(b"x".to_vec()));
        assert_eq!(in_flight.len(), 2);
        acks.ack(&input, 2);
        acks.ack(&input, 2);
        assert!(matches!(rx.try_recv(), Ok(Command::Ack(Handle::Element(e))) if e == b"x"));
        assert!(rx.try_recv().is_err(), "a second ack sends nothing");
        assert_eq!(in_flight.handles(), [Handle::Entry("1-0".into())]);
        assert_eq!(in_flight.take_all().len(), 1);
        assert_eq!(in_flight.len(), 0);
    }
}
