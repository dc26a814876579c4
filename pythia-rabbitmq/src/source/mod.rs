//! [`RabbitSource`]: a work queue as a Pythia source.
//!
//! The queue is one partition (the queue's name, index 0) that the runtime
//! processes without ordering (`worker.ordering = "none"` by default), so
//! the `prefetch` deliveries the broker sends are processed at the same
//! time; the broker's fair dispatch shares the queue between instances.
//! Each message is acknowledged (`basic.ack`) once it and its outputs are
//! done; what is not acknowledged when an instance dies or its connection
//! drops is delivered again, to it or to another instance.
//!
//! The files: `consume` (the task that owns the connection), `ack`
//! (offsets, in-flight deliveries and acks), `convert` (a delivery as a
//! message).

mod ack;
mod consume;
mod convert;

pub(crate) use ack::InFlight;
pub use ack::RabbitAcker;
pub(crate) use consume::Stats;

use std::sync::Arc;
use std::time::Duration;

use pythia_core::PartitionId;
use pythia_core::connector::{ConsumeTask, Health, Source, SourceEvent, TaskCommand};
use tokio::sync::{mpsc, oneshot};

use crate::config::Config;
use ack::Command;
use consume::Consume;

/// A RabbitMQ queue as a [`Source`]: deliveries in, acks back.
///
/// ```no_run
/// # async fn demo() -> Result<(), pythia_core::Error> {
/// use pythia_core::connector::{Health, Source, SourceEvent};
/// let config = pythia_rabbitmq::Config::from_loader(
///     pythia_core::ConfigLoader::new().no_file().set("rabbitmq.queue", "jobs"),
/// )?;
/// let mut source = pythia_rabbitmq::RabbitSource::new(&config, "jobs-1", Health::new());
/// if let Some(SourceEvent::Assigned(queue)) = source.next().await {
///     println!("consuming {queue:?}");
/// }
/// source.close(std::time::Duration::from_secs(5)).await?;
/// # Ok(()) }
/// ```
pub struct RabbitSource {
    queue: PartitionId,
    in_flight: Arc<InFlight>,
    stats: Arc<Stats>,
    /// The task that owns the connection, started by the first `next`.
    task: ConsumeTask<Consume, Command>,
}

impl RabbitSource {
    /// A source consuming `config.rabbitmq.queue` as a connection named
    /// `name`, reporting its connection state to `health` (readiness). It
    /// connects on the first [`Source::next`], and again whenever the
    /// connection is lost.
    pub fn new(config: &Config, name: &str, health: Health) -> Self {
        let queue = PartitionId::new(config.rabbitmq.queue_name(), 0);
        let (events_tx, events) = mpsc::unbounded_channel();
        let (commands, commands_rx) = mpsc::unbounded_channel();
        let in_flight = Arc::new(InFlight::default());
        let stats = Arc::new(Stats::default());
        let other_queues = config
            .dead_letter_queue()
            .into_iter()
            .filter(|_| config.rabbitmq.dead_letter_exchange.is_empty())
            .chain(config.rabbitmq.output_queues())
            .collect();
        let start = Consume {
            config: config.rabbitmq.clone(),
            other_queues,
            name: name.to_owned(),
            queue: queue.clone(),
            in_flight: in_flight.clone(),
            stats: stats.clone(),
            health,
            events: events_tx,
            commands: commands_rx,
            next_offset: 0,
            assigned: false,
            paused: false,
        };
        Self {
            queue,
            in_flight,
            stats,
            task: ConsumeTask::new(
                start,
                |consume| tokio::spawn(consume.run()),
                events,
                commands,
            ),
        }
    }

    /// Declares no output or dead-letter queue: for a worker whose outputs
    /// go to a sink other than its configuration's RabbitMQ publisher.
    pub(crate) fn without_output_queues(mut self) -> Self {
        if let Some(start) = self.task.unstarted_mut() {
            start.other_queues.clear();
        }
        self
    }

    /// The queue, as the partition the runtime sees.
    pub fn queue(&self) -> &PartitionId {
        &self.queue
    }

    /// Deliveries handed out and not yet acknowledged.
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

impl Source for RabbitSource {
    type Acker = RabbitAcker;

    fn acker(&self) -> RabbitAcker {
        RabbitAcker::new(self.in_flight.clone(), self.task.commands().clone())
    }

    /// Deliveries wait in the channel while paused; the prefetch bounds them.
    async fn next(&mut self) -> Option<SourceEvent> {
        self.task.next().await
    }

    /// Cancels the consumer: the broker stops sending this instance
    /// messages (they go to the others) until [`Source::resume`]. The runtime
    /// pauses when its buffer is full, and at the start of a shutdown.
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
                "RabbitMQ did not confirm the close in time; unacknowledged deliveries are redelivered"
            );
        }
        Ok(())
    }
}

impl std::fmt::Debug for RabbitSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitSource")
            .field("queue", &self.queue)
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
        source: &mut RabbitSource,
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
    async fn deliveries_are_held_to_the_prefetch_acked_and_resumed_after_a_pause() {
        let queue = format!("pythia-source-test-{}", std::process::id());
        let config = Config::from_loader(Config::spec_defaults(
            ConfigLoader::new().no_file().env([
                ("PYTHIA_RABBITMQ__QUEUE", queue.as_str()),
                ("PYTHIA_RABBITMQ__PREFETCH", "5"),
            ]),
            &WorkerSpec::UNNAMED,
        ))
        .unwrap();
        let connection = topology::connect(&config.rabbitmq, "pythia-source-test")
            .await
            .expect(
                "RabbitMQ must answer on 127.0.0.1:5672 (start it: service rabbitmq-server start)",
            );
        topology::ensure_queue(&connection, &queue, crate::QueueMode::Declare)
            .await
            .unwrap();
        let channel = connection.create_channel().await.unwrap();
        for i in 0..12 {
            channel
                .basic_publish(
                    "".into(),
                    queue.as_str().into(),
                    Default::default(),
                    i.to_string().as_bytes(),
                    Default::default(),
                )
                .await
                .unwrap();
        }
        let health = Health::new();
        let mut source = RabbitSource::new(&config, "pythia-source-test", health);
        let acks = source.acker();
        let first = tokio::time::timeout(WAIT, source.next()).await.unwrap();
        assert!(
            matches!(first, Some(SourceEvent::Assigned(ref q)) if q == &[source.queue().clone()])
        );

        // Unacknowledged, the instance holds at most the prefetch.
        let mut held = Vec::new();
        while held.len() < 5 {
            held.extend(next_messages(&mut source).await);
        }
        assert_eq!(held.len(), 5);
        assert!(
            tokio::time::timeout(Duration::from_millis(300), source.next())
                .await
                .is_err()
        );
        assert_eq!(source.unacked(), 5);

        // Paused: acks still go out, but nothing more is consumed.
        source.pause(&[source.queue().clone()]);
        for m in held.drain(..) {
            acks.ack(m.partition_id(), m.offset());
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            topology::depth(&channel, &queue).await.unwrap().consumers,
            0,
            "cancelled while paused"
        );

        // Resumed: the rest arrives.
        source.resume(&[source.queue().clone()]);
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
        let depth = topology::depth(&channel, &queue).await.unwrap();
        assert_eq!(
            (depth.ready, depth.consumers),
            (0, 0),
            "everything acknowledged, consumer gone"
        );
        for name in [queue.clone(), format!("{queue}.dlq")] {
            channel
                .queue_delete(name.as_str().into(), Default::default())
                .await
                .unwrap();
        }
        connection.close(200, "done".into()).await.unwrap();
    }
}
