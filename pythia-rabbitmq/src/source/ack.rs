//! Acknowledgements: which delivery each message is, and acking it once the
//! message and its outputs are done.
//!
//! A message's offset is a number this source gives each delivery, rising
//! across reconnects; the broker's delivery tags start again at 1 on each
//! channel, so they cannot be offsets. [`InFlight`] maps each offset to its
//! delivery's acker (which knows its channel). Acking sends the acker to the
//! consume task, which acks on the wire in order with everything else it does
//! (so a close never overtakes an ack). A message whose channel is gone is
//! forgotten: the broker has put it back in the queue already.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use pythia_core::PartitionId;
use pythia_core::connector::Acker;
use tokio::sync::mpsc;

/// What the consume task is asked to do.
#[derive(Debug)]
pub(crate) enum Command {
    /// Acknowledge this delivery.
    Ack(lapin::Acker),
    /// Stop consuming (`basic.cancel`): the runtime paused the queue.
    Pause,
    /// Consume again.
    Resume,
    /// Stop consuming, send the acks before this, close; then answer, if
    /// asked to.
    Close(Option<tokio::sync::oneshot::Sender<()>>),
}

/// The deliveries handed to the runtime and not yet acknowledged.
#[derive(Debug, Default)]
pub(crate) struct InFlight {
    ackers: Mutex<HashMap<i64, lapin::Acker>>,
}

impl InFlight {
    fn lock(&self) -> MutexGuard<'_, HashMap<i64, lapin::Acker>> {
        self.ackers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records the delivery of the message at `offset`.
    pub(crate) fn insert(&self, offset: i64, acker: lapin::Acker) {
        self.lock().insert(offset, acker);
    }

    /// The acker of the message at `offset`, which is done; `None` if it was
    /// forgotten (its connection was lost) or acknowledged already.
    pub(crate) fn take(&self, offset: i64) -> Option<lapin::Acker> {
        self.lock().remove(&offset)
    }

    /// Forgets every delivery: their channel is gone and the broker requeued them.
    pub(crate) fn forget_all(&self) -> usize {
        let mut ackers = self.lock();
        let forgotten = ackers.len();
        ackers.clear();
        forgotten
    }

    /// Takes every delivery, to give them back to the broker.
    pub(crate) fn take_all(&self) -> Vec<lapin::Acker> {
        self.lock().drain().map(|(_, acker)| acker).collect()
    }

    /// Deliveries not yet acknowledged.
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}

/// Acknowledges finished messages of a [`RabbitSource`](crate::RabbitSource).
#[derive(Debug, Clone)]
pub struct RabbitAcker {
    in_flight: Arc<InFlight>,
    commands: mpsc::UnboundedSender<Command>,
}

impl RabbitAcker {
    pub(crate) fn new(in_flight: Arc<InFlight>, commands: mpsc::UnboundedSender<Command>) -> Self {
        Self {
            in_flight,
            commands,
        }
    }
}

impl Acker for RabbitAcker {
    fn ack(&self, _partition: &PartitionId, offset: i64) {
        if let Some(acker) = self.in_flight.take(offset) {
            // The task is gone only once the source is closed.
            let _ = self.commands.send(Command::Ack(acker));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acker() -> lapin::Acker {
        lapin::message::Delivery::mock(1, "".into(), "q".into(), false, Vec::new()).acker
    }

    #[test]
    fn each_delivery_is_acked_once_and_forgotten_ones_not_at_all() {
        let in_flight = Arc::new(InFlight::default());
        let (tx, mut rx) = mpsc::unbounded_channel();
        let acks = RabbitAcker::new(in_flight.clone(), tx);
        let queue = PartitionId::new("q", 0);
        for offset in 1..=3 {
            in_flight.insert(offset, acker());
        }
        assert_eq!(in_flight.len(), 3);
        acks.ack(&queue, 2);
        acks.ack(&queue, 2);
        assert!(matches!(rx.try_recv(), Ok(Command::Ack(_))));
        assert!(
            rx.try_recv().is_err(),
            "a second ack of one delivery sends nothing"
        );
        assert_eq!(in_flight.forget_all(), 2);
        acks.ack_many(&queue, &[1, 3]);
        assert!(
            rx.try_recv().is_err(),
            "deliveries of a lost channel are not acked"
        );
        assert_eq!(in_flight.len(), 0);
    }

    #[test]
    fn what_is_left_at_close_is_taken_to_be_given_back() {
        let in_flight = InFlight::default();
        in_flight.insert(7, acker());
        in_flight.insert(8, acker());
        assert_eq!(in_flight.take_all().len(), 2);
        assert_eq!(in_flight.len(), 0);
        assert!(in_flight.take(7).is_none());
    }
}
