//! [`NatsSource`]: a JetStream durable pull consumer as a Pythia source.
//!
//! The subject is one partition (the subject, index 0) that the runtime
//! processes without ordering (`worker.ordering = "none"` by default), so
//! the up to `nats.concurrency` messages an instance holds are processed at
//! the same time; the instances share the durable consumer, and the server
//! hands each message to one of them. Each message is acknowledged (`+ACK`)
//! once it and its outputs are done, and reported in progress (`+WPI`)
//! meanwhile; what is not acknowledged within `ack_wait` when an instance
//! dies is delivered again, to another instance.
//!
//! The files: `fetch` (the task that pulls and acks), `pull` (its pull
//! requests), `ack` (offsets, held messages and acks), `progress` (progress
//! acks of held messages), `convert` (a JetStream message as a message),
//! `verdict` (what to do with a message delivered too often) and `give_up`
//! (its dead letter).

mod ack;
mod convert;
mod fetch;
mod give_up;
mod progress;
mod pull;
mod verdict;

pub(crate) use ack::InFlight;
pub use ack::NatsAcker;
pub(crate) use fetch::Stats;
pub use give_up::KIND as GIVEN_UP_KIND;

use std::sync::Arc;
use std::time::Duration;

use pythia_core::PartitionId;
use pythia_core::connector::{ConsumeTask, Health, Source, SourceEvent, TaskCommand};
use tokio::sync::{mpsc, oneshot};

use crate::config::Config;
use ack::Command;
use fetch::Fetch;

/// A JetStream consumer as a [`Source`]: messages in, acks back.
///
/// ```no_run
/// # async fn demo() -> Result<(), pythia_core::Error> {
/// use pythia_core::connector::{Health, Source, SourceEvent};
/// let config = pythia_nats::Config::from_loader(
///     pythia_core::ConfigLoader::new().no_file().set("nats.subject", "jobs"),
/// )?;
/// let mut source = pythia_nats::NatsSource::new(&config, "jobs-1", Health::new());
/// if let Some(SourceEvent::Assigned(subject)) = source.next().await {
///     println!("consuming {subject:?}");
/// }
/// source.close(std::time::Duration::from_secs(5)).await?;
/// # Ok(()) }
/// ```
pub struct NatsSource {
    subject: PartitionId,
    in_flight: Arc<InFlight>,
    stats: Arc<Stats>,
    /// The task that owns the connection, started by the first `next`.
    task: ConsumeTask<Fetch, Command>,
}

impl NatsSource {
    /// A source consuming `config.nats.subject` through its durable
    /// consumer, on a connection named `name`, reporting its connection
    /// state to `health` (readiness). It connects on the first
    /// [`Source::next`]; the client reconnects by itself after a loss.
    pub fn new(config: &Config, name: &str, health: Health) -> Self {
        let subject = PartitionId::new(config.nats.subject_name(), 0);
        let (events_tx, events) = mpsc::unbounded_channel();
        let (commands, commands_rx) = mpsc::unbounded_channel();
        let in_flight = Arc::new(InFlight::default());
        let stats = Arc::new(Stats::default());
        let start = Fetch {
            config: config.clone(),
            name: name.to_owned(),
            subject: subject.clone(),
            dead_letter: config.dead_letter_subject(),
            in_flight: in_flight.clone(),
            stats: stats.clone(),
            health,
            events: events_tx,
            commands: commands_rx,
            next_offset: 0,
            arrived: Vec::new(),
            paused: false,
        };
        Self {
            subject,
            in_flight,
            stats,
            task: ConsumeTask::new(start, |fetch| tokio::spawn(fetch.run()), events, commands),
        }
    }

    /// The subject, as the partition the runtime sees.
    pub fn subject(&self) -> &PartitionId {
        &self.subject
    }

    /// Messages handed out and not yet acknowledged.
    pub fn unacked(&self) -> usize {
        self.in_flight.len()
    }

    pub(crate) fn stats(&self) -> (Arc<Stats>, Arc<InFlight>) {
        (self.stats.clone(), self.in_flight.clone())
    }
}

impl TaskCommand for Command {
    fn pause() -> Self {
        Self::Pause
    }

    fn resume() -> Self {
        Self::Resume
    }

    fn close(done: oneshot::Sender<()>) -> Self {
        Self::Close(Some(done))
    }
}

impl Source for NatsSource {
    type Acker = NatsAcker;

    fn acker(&self) -> NatsAcker {
        NatsAcker::new(self.in_flight.clone(), self.task.commands().clone())
    }

    /// Messages wait in the channel while paused; `nats.concurrency` bounds
    /// them.
    async fn next(&mut self) -> Option<SourceEvent> {
        self.task.next().await
    }

    /// Stops sending pull requests until [`Source::resume`]; what the open
    /// request brings is still taken (at most `nats.concurrency` held). The
    /// runtime pauses when its buffer is full, and at the start of a
    /// shutdown.
    fn pause(&mut self, _partitions: &[PartitionId]) {
        self.task.pause();
    }

    fn resume(&mut self, _partitions: &[PartitionId]) {
        self.task.resume();
    }

    async fn close(self, timeout: Duration) -> Result<(), pythia_core::Error> {
        if !self.task.close(timeout).await {
            tracing::warn!(
                ?timeout,
                "NATS did not take the close in time; unacknowledged messages are redelivered after ack_wait"
            );
        }
        Ok(())
    }
}

impl std::fmt::Debug for NatsSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsSource")
            .field("subject", &self.subject)
            .field("unacked", &self.unacked())
            .field("paused", &self.task.is_paused())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pythia_core::connector::Acker;
    use pythia_core::{ConfigLoader, WorkerSpec};

    use crate::topology;

    const WAIT: Duration = Duration::from_secs(10);

    async fn next_messages(
        source: &mut NatsSource,
    ) -> Vec<pythia_core::Message<Option<bytes::Bytes>>> {
        loop {
            match tokio::time::timeout(WAIT, source.next())
                .await
                .expect("an event in time")
            {
                Some(SourceEvent::Messages(batch)) => return batch,
                Some(_) => {}
                None => panic!("the source ended"),
            }
        }
    }

    #[tokio::test]
    async fn messages_are_held_to_the_concurrency_acked_and_resumed_after_a_pause() {
        let subject = format!("pythia-source-test-{}", std::process::id());
        let config = Config::from_loader(Config::spec_defaults(
            ConfigLoader::new().no_file().env([
                ("PYTHIA_NATS__SUBJECT", subject.as_str()),
                ("PYTHIA_NATS__CONCURRENCY", "5"),
                ("PYTHIA_NATS__FETCH_WAIT", "200ms"),
            ]),
            &WorkerSpec::UNNAMED,
        ))
        .unwrap();
        let client = topology::connect(&config.nats, "pythia-source-test", None)
            .await
            .expect(
                "NATS with JetStream must answer on 127.0.0.1:4222 (start it: nats-server -js)",
            );
        let js = topology::jetstream(client);
        topology::consumer(&js, &config).await.unwrap();
        for i in 0..12 {
            js.publish(subject.clone(), i.to_string().into())
                .await
                .unwrap()
                .await
                .unwrap();
        }
        let mut source = NatsSource::new(&config, "pythia-source-test", Health::new());
        let acks = source.acker();
        let first = tokio::time::timeout(WAIT, source.next()).await.unwrap();
        assert!(
            matches!(first, Some(SourceEvent::Assigned(ref s)) if s == &[source.subject().clone()])
        );

        // Unacknowledged, the instance holds at most the concurrency.
        let mut held = Vec::new();
        while held.len() < 5 {
            held.extend(next_messages(&mut source).await);
        }
        assert_eq!(held.len(), 5);
        assert!(
            tokio::time::timeout(Duration::from_millis(600), source.next())
                .await
                .is_err()
        );
        assert_eq!(source.unacked(), 5);

        // Paused: acks still go out, but nothing more is fetched.
        source.pause(&[source.subject().clone()]);
        for m in held.drain(..) {
            acks.ack(m.partition_id(), m.offset());
        }
        tokio::time::sleep(Duration::from_millis(600)).await;
        let stream = js
            .get_stream_no_info(config.nats.stream_name())
            .await
            .unwrap();
        let info = stream.consumer_info(config.consumer_name()).await.unwrap();
        assert_eq!(
            (info.num_pending, info.num_ack_pending),
            (7, 0),
            "acked while paused, nothing more taken"
        );

        // Resumed: the rest arrives.
        source.resume(&[source.subject().clone()]);
        let mut seen = 5;
        while seen < 12 {
            let batch = next_messages(&mut source).await;
            seen += batch.len();
            for m in &batch {
                assert!(m.offset() >= 5, "offsets keep rising: {}", m.offset());
                acks.ack(m.partition_id(), m.offset());
            }
        }
        assert_eq!(seen, 12);
        source.close(WAIT).await.unwrap();
        let info = stream.consumer_info(config.consumer_name()).await.unwrap();
        assert_eq!(
            (info.num_pending, info.num_ack_pending),
            (0, 0),
            "all acknowledged"
        );
        for name in [
            config.nats.stream_name(),
            config.nats.dead_letter_stream_name(),
        ] {
            js.delete_stream(&name).await.unwrap();
        }
    }
}
