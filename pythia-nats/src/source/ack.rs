//! Acknowledgements: which message each offset is, and acking it once the
//! message and its outputs are done.
//!
//! A message's offset is a number this source gives each delivery, rising
//! for the life of the source (a message delivered again gets a new one).
//! [`InFlight`] maps each offset to the message's JetStream acker. Acking
//! sends the acker to the fetch task, which acks on the wire in order with
//! everything else it does, so a close never overtakes an ack, and which
//! fetches more once messages are acknowledged. A JetStream ack is a publish
//! to the message's reply subject and does not depend on the connection it
//! came on: it stays valid across a reconnect, until `ack_wait` runs out.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use async_nats::jetstream::message::Acker as JetStreamAcker;
use pythia_core::PartitionId;
use pythia_core::connector::Acker;
use tokio::sync::mpsc;

/// What the fetch task is asked to do.
pub(crate) enum Command {
    /// Acknowledge this message.
    Ack(Arc<JetStreamAcker>),
    /// Stop fetching: the runtime's buffer is full, or it drains.
    Pause,
    /// Fetch again.
    Resume,
    /// Stop fetching, send the acks before this, give back what is not done;
    /// then answer, if asked to.
    Close(Option<tokio::sync::oneshot::Sender<()>>),
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Ack(_) => "Ack",
            Self::Pause => "Pause",
            Self::Resume => "Resume",
            Self::Close(_) => "Close",
        })
    }
}

/// The messages handed to the runtime and not yet acknowledged.
#[derive(Default)]
pub(crate) struct InFlight {
    ackers: Mutex<HashMap<i64, Arc<JetStreamAcker>>>,
}

impl std::fmt::Debug for InFlight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InFlight")
            .field("len", &self.len())
            .finish()
    }
}

impl InFlight {
    fn lock(&self) -> MutexGuard<'_, HashMap<i64, Arc<JetStreamAcker>>> {
        self.ackers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records the message at `offset`.
    pub(crate) fn insert(&self, offset: i64, acker: Arc<JetStreamAcker>) {
        self.lock().insert(offset, acker);
    }

    /// The acker of the message at `offset`, which is done; `None` if it was
    /// acknowledged already.
    pub(crate) fn take(&self, offset: i64) -> Option<Arc<JetStreamAcker>> {
        self.lock().remove(&offset)
    }

    /// The ackers of every held message, to report them in progress.
    pub(crate) fn all(&self) -> Vec<Arc<JetStreamAcker>> {
        self.lock().values().cloned().collect()
    }

    /// Takes every message, to give them back to the server.
    pub(crate) fn take_all(&self) -> Vec<Arc<JetStreamAcker>> {
        self.lock().drain().map(|(_, acker)| acker).collect()
    }

    /// Messages not yet acknowledged.
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}

/// Acknowledges finished messages of a [`NatsSource`](crate::NatsSource).
#[derive(Debug, Clone)]
pub struct NatsAcker {
    in_flight: Arc<InFlight>,
    commands: mpsc::UnboundedSender<Command>,
}

impl NatsAcker {
    pub(crate) fn new(in_flight: Arc<InFlight>, commands: mpsc::UnboundedSender<Command>) -> Self {
        Self {
            in_flight,
            commands,
        }
    }
}

impl Acker for NatsAcker {
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

    async fn acker() -> Arc<JetStreamAcker> {
        let client = async_nats::connect(crate::DEFAULT_URL)
            .await
            .expect("NATS must answer on 127.0.0.1:4222 (start it: nats-server -js)");
        Arc::new(JetStreamAcker::new(
            async_nats::jetstream::new(client),
            None,
        ))
    }

    #[tokio::test]
    async fn each_message_is_acked_once_and_what_is_left_is_taken_back() {
        let in_flight = Arc::new(InFlight::default());
        let (tx, mut rx) = mpsc::unbounded_channel();
        let acks = NatsAcker::new(in_flight.clone(), tx);
        let subject = PartitionId::new("jobs", 0);
        for offset in 1..=3 {
            in_flight.insert(offset, acker().await);
        }
        assert_eq!(in_flight.len(), 3);
        assert_eq!(
            in_flight.all().len(),
            3,
            "all held are reported in progress"
        );
        acks.ack(&subject, 2);
        acks.ack(&subject, 2);
        assert!(matches!(rx.try_recv(), Ok(Command::Ack(_))));
        assert!(
            rx.try_recv().is_err(),
            "a second ack of one message sends nothing"
        );
        assert_eq!(
            in_flight.all().len(),
            2,
            "an acked message is no longer reported"
        );
        assert_eq!(in_flight.take_all().len(), 2, "given back at close");
        acks.ack_many(&subject, &[1, 3]);
        assert!(rx.try_recv().is_err(), "given back, not acked");
        assert_eq!(in_flight.len(), 0);
    }
}
