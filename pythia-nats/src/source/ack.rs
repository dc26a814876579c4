//! Acknowledgements: which message each offset is, and acking it once the
//! message and its outputs are done.
//!
//! A message's offset is a number this source gives each delivery, rising
//! for the life of the source (a message delivered again gets a new one).
//! [`InFlight`] maps each offset to the delivery's reply subject, where its
//! acks go. Acking sends the subject to the fetch task, which acks on the
//! wire in order with everything else it does, so a close never overtakes
//! an ack, and which fetches more once messages are acknowledged. A
//! JetStream ack is a publish to the message's reply subject and does not
//! depend on the connection it came on: it stays valid across a reconnect,
//! until `ack_wait` runs out.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use async_nats::jetstream::AckKind;
use async_nats::{Client, Subject};
use pythia_core::PartitionId;
use pythia_core::connector::Acker;
use tokio::sync::mpsc;

/// What the fetch task is asked to do.
pub(crate) enum Command {
    /// Acknowledge the message with this reply subject.
    Ack(Subject),
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

/// Sends `kind` for the delivery whose reply subject is `reply`; a failure
/// is the server's to resolve (it redelivers after `ack_wait`).
pub(crate) async fn send(client: &Client, reply: Subject, kind: AckKind) {
    if let Err(error) = client.publish(reply, kind.into()).await {
        tracing::debug!(%error, "ack not sent; the server will redeliver");
    }
}

/// The messages handed to the runtime and not yet acknowledged, by offset
/// (a handful, at most `nats.concurrency`: a sorted map is the cheap one).
#[derive(Default)]
pub(crate) struct InFlight {
    replies: Mutex<BTreeMap<i64, Subject>>,
}

impl std::fmt::Debug for InFlight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InFlight")
            .field("len", &self.len())
            .finish()
    }
}

impl InFlight {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<i64, Subject>> {
        self.replies.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records messages by offset, with the reply subjects they are acked
    /// on.
    pub(crate) fn extend(&self, held: impl IntoIterator<Item = (i64, Subject)>) {
        self.lock().extend(held);
    }

    /// The reply subjects of every held message, to report them in
    /// progress.
    pub(crate) fn all(&self) -> Vec<Subject> {
        self.lock().values().cloned().collect()
    }

    /// Takes every message, to give them back to the server.
    pub(crate) fn take_all(&self) -> Vec<Subject> {
        std::mem::take(&mut *self.lock()).into_values().collect()
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
    fn ack(&self, partition: &PartitionId, offset: i64) {
        self.ack_many(partition, &[offset]);
    }

    /// Takes the messages under one lock: the fetch task takes it too.
    fn ack_many(&self, _partition: &PartitionId, offsets: &[i64]) {
        let mut held = self.in_flight.lock();
        for offset in offsets {
            if let Some(reply) = held.remove(offset) {
                // The task is gone only once the source is closed.
                let _ = self.commands.send(Command::Ack(reply));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(offset: i64) -> Subject {
        Subject::from(format!("$JS.ACK.jobs.workers.1.{offset}.{offset}.0.0"))
    }

    #[test]
    fn each_message_is_acked_once_and_what_is_left_is_taken_back() {
        let in_flight = Arc::new(InFlight::default());
        let (tx, mut rx) = mpsc::unbounded_channel();
        let acks = NatsAcker::new(in_flight.clone(), tx);
        let subject = PartitionId::new("jobs", 0);
        in_flight.extend((1..=3).map(|offset| (offset, reply(offset))));
        assert_eq!(in_flight.len(), 3);
        assert_eq!(
            in_flight.all().len(),
            3,
            "all held are reported in progress"
        );
        acks.ack(&subject, 2);
        acks.ack(&subject, 2);
        assert!(matches!(rx.try_recv(), Ok(Command::Ack(r)) if r == reply(2)));
        assert!(
            rx.try_recv().is_err(),
            "a second ack of one message sends nothing"
        );
        assert_eq!(
            in_flight.all().len(),
            2,
            "an acked message is no longer reported"
        );
        assert_eq!(
            in_flight.take_all(),
            [reply(1), reply(3)],
            "given back at close"
        );
        acks.ack_many(&subject, &[1, 3]);
        assert!(rx.try_recv().is_err(), "given back, not acked");
        assert_eq!(in_flight.len(), 0);
    }
}
